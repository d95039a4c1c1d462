//! Metrics plugins define (`proxy_define_metric`): counters, gauges and histograms, exported
//! with the proxy's own on `/metrics` through [`PluginMetrics`]'s collector.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Histogram bucket bounds (the recorded values' unit is the plugin's).
const BUCKETS: [u64; 12] = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn from_raw(v: i32) -> Option<Kind> {
        Some(match v {
            0 => Kind::Counter,
            1 => Kind::Gauge,
            2 => Kind::Histogram,
            _ => return None,
        })
    }
}

/// One metric's value as exported; `buckets` are cumulative `(le, count)` pairs.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub kind: Kind,
    pub value: i64,
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: u64,
}

#[derive(Debug)]
struct Metric {
    name: String,
    kind: Kind,
    value: i64,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: u64,
}

/// Every metric the proxy's plugins defined: one store for all instances of all plugins,
/// so that a metric defined by each worker's instance is one series, as in Envoy.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    inner: Mutex<(Vec<Metric>, HashMap<String, u32>)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricError {
    #[error("no metric with id {0}")]
    NotFound(u32),
    #[error("metric {name:?} is a {kind:?}; that operation needs another kind")]
    WrongKind { name: String, kind: Kind },
}

impl PluginMetrics {
    /// The id of the metric `name`, defined when new. Redefining with another kind keeps the
    /// first kind (Envoy does the same).
    pub fn define(&self, kind: Kind, name: &str) -> u32 {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = g.1.get(name) {
            return *id;
        }
        let id = g.0.len() as u32;
        g.0.push(Metric {
            name: name.to_string(),
            kind,
            value: 0,
            buckets: [0; BUCKETS.len()],
            count: 0,
            sum: 0,
        });
        g.1.insert(name.to_string(), id);
        id
    }

    pub fn increment(&self, id: u32, by: i64) -> Result<(), MetricError> {
        self.with(id, |m| match m.kind {
            Kind::Counter if by < 0 => Err(MetricError::WrongKind {
                name: m.name.clone(),
                kind: m.kind,
            }),
            Kind::Counter | Kind::Gauge => {
                m.value = m.value.saturating_add(by);
                Ok(())
            }
            Kind::Histogram => Err(MetricError::WrongKind {
                name: m.name.clone(),
                kind: m.kind,
            }),
        })
    }

    pub fn record(&self, id: u32, v: u64) -> Result<(), MetricError> {
        self.with(id, |m| {
            match m.kind {
                Kind::Counter | Kind::Gauge => m.value = v.min(i64::MAX as u64) as i64,
                Kind::Histogram => {
                    for (i, b) in BUCKETS.iter().enumerate() {
                        if v <= *b {
                            m.buckets[i] += 1;
                        }
                    }
                    m.count += 1;
                    m.sum = m.sum.saturating_add(v);
                }
            }
            Ok(())
        })
    }

    /// A counter's or gauge's value; a histogram's count.
    pub fn get(&self, id: u32) -> Result<u64, MetricError> {
        self.with(id, |m| {
            Ok(match m.kind {
                Kind::Histogram => m.count,
                _ => m.value.max(0) as u64,
            })
        })
    }

    fn with<R>(
        &self,
        id: u32,
        f: impl FnOnce(&mut Metric) -> Result<R, MetricError>,
    ) -> Result<R, MetricError> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let m = g.0.get_mut(id as usize).ok_or(MetricError::NotFound(id))?;
        f(m)
    }

    /// Every metric's current value, for an exporter.
    pub fn samples(&self) -> Vec<Sample> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.iter()
            .map(|m| Sample {
                name: prometheus_name(&m.name),
                kind: m.kind,
                value: m.value,
                buckets: BUCKETS
                    .iter()
                    .zip(m.buckets.iter())
                    .map(|(b, n)| (*b as f64, *n))
                    .collect(),
                count: m.count,
                sum: m.sum,
            })
            .collect()
    }

    /// The metrics in the Prometheus text format, names made Prometheus-safe.
    pub fn render(&self) -> String {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for m in &g.0 {
            let name = prometheus_name(&m.name);
            // promtool wants every family described.
            let _ = writeln!(out, "# HELP {name} Defined by a WasmPlugin.");
            match m.kind {
                Kind::Counter => {
                    let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", m.value);
                }
                Kind::Gauge => {
                    let _ = writeln!(out, "# TYPE {name} gauge\n{name} {}", m.value);
                }
                Kind::Histogram => {
                    let _ = writeln!(out, "# TYPE {name} histogram");
                    for (i, b) in BUCKETS.iter().enumerate() {
                        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", m.buckets[i]);
                    }
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", m.count);
                    let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", m.sum, m.count);
                }
            }
        }
        out
    }
}

/// `name` with every character Prometheus does not allow replaced by `_`.
pub fn prometheus_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) || s.is_empty() {
        s.insert(0, '_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_histograms() {
        let m = PluginMetrics::default();
        let c = m.define(Kind::Counter, "auth.denied");
        assert_eq!(m.define(Kind::Gauge, "auth.denied"), c);
        m.increment(c, 2).unwrap();
        assert!(m.increment(c, -1).is_err());
        let g = m.define(Kind::Gauge, "inflight");
        m.increment(g, 3).unwrap();
        m.increment(g, -1).unwrap();
        let h = m.define(Kind::Histogram, "latency_ms");
        m.record(h, 7).unwrap();
        m.record(h, 700).unwrap();
        assert!(m.increment(h, 1).is_err());
        assert_eq!(
            (m.get(c).unwrap(), m.get(g).unwrap(), m.get(h).unwrap()),
            (2, 2, 2)
        );
        assert_eq!(m.get(99), Err(MetricError::NotFound(99)));
        let text = m.render();
        assert!(text.contains("auth_denied 2\n"), "{text}");
        assert!(text.contains("inflight 2\n"), "{text}");
        assert!(text.contains("latency_ms_bucket{le=\"10\"} 1\n"), "{text}");
        assert!(
            text.contains("latency_ms_bucket{le=\"1000\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("latency_ms_sum 707\n"), "{text}");
    }
}
