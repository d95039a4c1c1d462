//! [`ScrapeJudge`]: the built-in metrics judged without Prometheus, from the waypoints'
//! own `/metrics` (Prometheus text). Each measurement scrapes every endpoint and compares
//! with the previous scrape of the same check, so the window is "since the last step"
//! (the analysis interval) rather than the metric's `interval`; the first measurement of
//! a check uses the counters since the waypoints started.
//!
//! Series are those of the target (`destination_workload_namespace`,
//! `destination_workload`) reported by a waypoint (`reporter="waypoint"`) or, for
//! Istio-style proxies, `reporter="destination"`. MetricTemplates need Prometheus.

use meshwork_runtime::sync::LockExt;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use hyper::Method;

use super::http::HttpClient;
use super::judge::{Judge, JudgeError, Measurement};
use super::spec::Builtin;

/// Cumulative counts of one target: requests, 5xx, and duration buckets (`le` → count).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub requests: f64,
    pub errors: f64,
    pub buckets: BTreeMap<Le, f64>,
}

/// A histogram bound, ordered numerically (`+Inf` last).
#[derive(Debug, Clone, Copy)]
pub struct Le(pub f64);
impl PartialEq for Le {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}
impl Eq for Le {}
impl PartialOrd for Le {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Le {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

impl Totals {
    fn minus(&self, before: &Totals) -> Totals {
        // A waypoint restart resets its counters: fall back to the new cumulative values.
        if self.requests < before.requests {
            return self.clone();
        }
        Totals {
            requests: self.requests - before.requests,
            errors: (self.errors - before.errors).max(0.0),
            buckets: self
                .buckets
                .iter()
                .map(|(le, v)| {
                    (
                        *le,
                        (v - before.buckets.get(le).copied().unwrap_or(0.0)).max(0.0),
                    )
                })
                .collect(),
        }
    }

    /// Percentage of non-5xx responses.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| (self.requests - self.errors) / self.requests * 100.0)
    }

    /// The `q` quantile from the buckets, interpolated inside the bucket as Prometheus'
    /// `histogram_quantile` does.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.iter().next_back().map(|(_, v)| *v)?;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut prev_le = 0.0;
        let mut prev_count = 0.0;
        for (le, count) in &self.buckets {
            if *count >= rank {
                if le.0.is_infinite() {
                    return Some(prev_le);
                }
                let in_bucket = count - prev_count;
                if in_bucket <= 0.0 {
                    return Some(le.0);
                }
                return Some(prev_le + (le.0 - prev_le) * (rank - prev_count) / in_bucket);
            }
            prev_le = le.0;
            prev_count = *count;
        }
        None
    }
}

/// Parses `name{a="b",...} value` lines (no escapes beyond `\"` and `\\` in values).
fn parse_line(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (n, v) = line.split_once(' ')?;
            return Some((
                n,
                BTreeMap::new(),
                v.split_whitespace().next()?.parse().ok()?,
            ));
        }
    };
    let mut labels = BTreeMap::new();
    let mut s = rest;
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            let value = after.split_whitespace().next()?.parse().ok()?;
            return Some((name, labels, value));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_string();
        let mut chars = s[eq + 1..].char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false
                }
                (true, c) => {
                    value.push(c);
                    escaped = false
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        let end = end?;
        labels.insert(key, value);
        s = &s[eq + 1 + end + 1..];
    }
}

/// The target's totals in one `/metrics` text (only `destination_version` = `version`
/// when given).
pub fn totals_of(text: &str, namespace: &str, target: &str, version: Option<&str>) -> Totals {
    let mut t = Totals::default();
    for line in text.lines() {
        let Some((name, labels, value)) = parse_line(line) else {
            continue;
        };
        let ours = matches!(
            labels.get("reporter").map(String::as_str),
            Some("waypoint" | "destination")
        ) && labels
            .get("destination_workload_namespace")
            .map(String::as_str)
            == Some(namespace)
            && labels.get("destination_workload").map(String::as_str) == Some(target)
            && version
                .is_none_or(|v| labels.get("destination_version").map(String::as_str) == Some(v));
        if !ours {
            continue;
        }
        match name {
            "istio_requests_total" => {
                t.requests += value;
                if labels
                    .get("response_code")
                    .is_some_and(|c| c.starts_with('5'))
                {
                    t.errors += value;
                }
            }
            "istio_request_duration_milliseconds_bucket" => {
                let le = match labels.get("le").map(String::as_str) {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => match v.parse() {
                        Ok(v) => v,
                        Err(_) => continue,
                    },
                    None => continue,
                };
                *t.buckets.entry(Le(le)).or_default() += value;
            }
            _ => {}
        }
    }
    t
}

pub struct ScrapeJudge {
    /// `http://HOST:PORT/metrics` of each waypoint.
    pub endpoints: Vec<String>,
    pub timeout: Duration,
    client: HttpClient,
    previous: Mutex<BTreeMap<(String, String, String, String), Totals>>,
}

impl ScrapeJudge {
    pub fn new(endpoints: Vec<String>) -> Self {
        ScrapeJudge {
            endpoints,
            timeout: Duration::from_secs(5),
            client: HttpClient::default(),
            previous: Mutex::new(BTreeMap::new()),
        }
    }

    async fn scrape(&self, m: &Measurement) -> Result<Totals, JudgeError> {
        let mut sum = Totals::default();
        for url in &self.endpoints {
            let (status, body) = self
                .client
                .send(Method::GET, url, None, self.timeout)
                .await
                .map_err(|message| JudgeError::Query {
                    metric: m.metric.clone(),
                    address: url.clone(),
                    message,
                })?;
            if !status.is_success() {
                return Err(JudgeError::Query {
                    metric: m.metric.clone(),
                    address: url.clone(),
                    message: format!("HTTP {status}"),
                });
            }
            let t = totals_of(
                &String::from_utf8_lossy(&body),
                &m.namespace,
                &m.target,
                m.canary_version.as_deref(),
            );
            sum.requests += t.requests;
            sum.errors += t.errors;
            for (le, v) in t.buckets {
                *sum.buckets.entry(le).or_default() += v;
            }
        }
        Ok(sum)
    }
}

impl Judge for ScrapeJudge {
    fn measure<'a>(&'a self, m: &'a Measurement) -> BoxFuture<'a, Result<f64, JudgeError>> {
        Box::pin(async move {
            let Some(builtin) = m.builtin else {
                return Err(JudgeError::Unsupported {
                    metric: m.metric.clone(),
                    message: "MetricTemplates need a Prometheus (--canary-prometheus)".into(),
                });
            };
            let now = self.scrape(m).await?;
            // Per version too: a new revision's window starts with its own pods.
            let id = (
                m.namespace.clone(),
                m.target.clone(),
                m.metric.clone(),
                m.canary_version.clone().unwrap_or_default(),
            );
            let window = {
                let mut prev = self.previous.lock_or_recover();
                let w = match prev.get(&id) {
                    Some(before) => now.minus(before),
                    None => now.clone(),
                };
                prev.insert(id, now);
                w
            };
            let value = match builtin {
                Builtin::SuccessRate => window.success_rate(),
                Builtin::Duration => window.quantile(0.99),
            };
            value.ok_or_else(|| JudgeError::NoValues {
                metric: m.metric.clone(),
                target: format!("{}.{}", m.target, m.namespace),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE istio_requests_total counter
istio_requests_total{reporter="waypoint",destination_workload="web",destination_workload_namespace="shop",destination_version="v1",response_code="200"} 80
istio_requests_total{reporter="waypoint",destination_workload="web",destination_workload_namespace="shop",destination_version="v2",response_code="200"} 10
istio_requests_total{reporter="waypoint",destination_workload="web",destination_workload_namespace="shop",destination_version="v2",response_code="503"} 10
istio_requests_total{reporter="waypoint",destination_workload="web-primary",destination_workload_namespace="shop",response_code="503"} 1000
istio_request_duration_milliseconds_bucket{reporter="waypoint",destination_workload="web",destination_workload_namespace="shop",le="10"} 50
istio_request_duration_milliseconds_bucket{reporter="waypoint",destination_workload="web",destination_workload_namespace="shop",le="100"} 99
istio_request_duration_milliseconds_bucket{reporter="waypoint",destination_workload="web",destination_workload_namespace="shop",le="+Inf"} 100
"#;

    #[test]
    fn totals_success_rate_and_p99() {
        let t = totals_of(TEXT, "shop", "web", None);
        assert_eq!((t.requests, t.errors), (100.0, 10.0));
        assert_eq!(t.success_rate(), Some(90.0));
        // rank 99 lands at the top of the (10, 100] bucket.
        assert_eq!(t.quantile(0.99), Some(100.0));
        // rank 50 of 100: the top of the first bucket.
        assert_eq!(t.quantile(0.5), Some(10.0));
        let before = Totals {
            requests: 50.0,
            errors: 10.0,
            buckets: [
                (Le(10.0), 40.0),
                (Le(100.0), 40.0),
                (Le(f64::INFINITY), 40.0),
            ]
            .into(),
        };
        let d = t.minus(&before);
        assert_eq!(d.success_rate(), Some(100.0));
        // 60 new requests: 10 at ≤10ms, 59 at ≤100ms, 60 in all; p99 rank 59.4 → +Inf
        // bucket's lower bound.
        assert_eq!(d.quantile(0.99), Some(100.0));
        assert_eq!(totals_of(TEXT, "shop", "nope", None).success_rate(), None);
        // Only the canary's version: the v1 pods of the same workload are left out.
        let v2 = totals_of(TEXT, "shop", "web", Some("v2"));
        assert_eq!((v2.requests, v2.errors), (20.0, 10.0));
        assert_eq!(v2.success_rate(), Some(50.0));
    }

    #[test]
    fn label_values_with_escapes() {
        let (n, l, v) = parse_line(r#"m{a="x\"y",b="c,d}"} 2.5"#).unwrap();
        assert_eq!((n, v), ("m", 2.5));
        assert_eq!(l["a"], "x\"y");
        assert_eq!(l["b"], "c,d}");
    }
}
