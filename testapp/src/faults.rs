//! Failure injection: a process-wide setting (flags, `POST /admin/fail`) and per-request
//! headers `x-testapp-fail: <code>` and `x-testapp-delay-ms: <ms>`.
use std::sync::Mutex;
use std::time::Duration;

pub const HEADER_FAIL: &str = "x-testapp-fail";
pub const HEADER_DELAY: &str = "x-testapp-delay-ms";
/// Upper bound of any injected delay.
pub const MAX_DELAY: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultError {
    #[error("{field}: {value:?} is not a valid status code (100-599)")]
    Code { field: &'static str, value: String },
    #[error("{field}: {value:?} is not a rate between 0 and 1")]
    Rate { field: &'static str, value: String },
    #[error("{field}: {value:?} is not a delay in milliseconds (at most 120000)")]
    Delay { field: &'static str, value: String },
    #[error("unknown query parameter {0:?} (expected rate, code, delay_ms)")]
    UnknownParam(String),
}

/// The standing fault setting.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultConfig {
    /// Fraction of requests (0..=1) answered with `code`.
    pub rate: f64,
    pub code: u16,
    /// Delay added to every request.
    pub delay: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            rate: 0.0,
            code: 503,
            delay: Duration::ZERO,
        }
    }
}

pub fn parse_code(field: &'static str, v: &str) -> Result<u16, FaultError> {
    match v.trim().parse::<u16>() {
        Ok(c) if (100..=599).contains(&c) => Ok(c),
        _ => Err(FaultError::Code {
            field,
            value: v.to_string(),
        }),
    }
}

pub fn parse_rate(field: &'static str, v: &str) -> Result<f64, FaultError> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(FaultError::Rate {
            field,
            value: v.to_string(),
        }),
    }
}

pub fn parse_delay(field: &'static str, v: &str) -> Result<Duration, FaultError> {
    match v.trim().parse::<u64>() {
        Ok(ms) if Duration::from_millis(ms) <= MAX_DELAY => Ok(Duration::from_millis(ms)),
        _ => Err(FaultError::Delay {
            field,
            value: v.to_string(),
        }),
    }
}

impl FaultConfig {
    /// Applies `rate=..&code=..&delay_ms=..` on top of `self` (missing keys keep their value).
    pub fn with_query(mut self, query: &str) -> Result<Self, FaultError> {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "rate" => self.rate = parse_rate("rate", v)?,
                "code" => self.code = parse_code("code", v)?,
                "delay_ms" => self.delay = parse_delay("delay_ms", v)?,
                other => return Err(FaultError::UnknownParam(other.to_string())),
            }
        }
        Ok(self)
    }
}

/// Shared, runtime-changeable fault setting.
#[derive(Debug, Default)]
pub struct Faults {
    cfg: Mutex<FaultConfig>,
}

impl Faults {
    pub fn new(cfg: FaultConfig) -> Self {
        Self {
            cfg: Mutex::new(cfg),
        }
    }

    pub fn get(&self) -> FaultConfig {
        *self.cfg.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, cfg: FaultConfig) {
        *self.cfg.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
    }
}

/// What to do with one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pub delay: Duration,
    /// `Some(code)`: answer with this injected failure.
    pub fail: Option<u16>,
}

/// Decides for a request given the standing setting, the request's fault headers and a
/// uniform sample in [0, 1).
pub fn decide(
    cfg: FaultConfig,
    fail_header: Option<&str>,
    delay_header: Option<&str>,
    sample: f64,
) -> Result<Decision, FaultError> {
    let mut delay = cfg.delay;
    if let Some(d) = delay_header {
        delay += parse_delay(HEADER_DELAY, d)?;
    }
    let fail = match fail_header {
        Some(code) => Some(parse_code(HEADER_FAIL, code)?),
        None if sample < cfg.rate => Some(cfg.code),
        None => None,
    };
    Ok(Decision {
        delay: delay.min(MAX_DELAY),
        fail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_override_and_rate_uses_sample() {
        let cfg = FaultConfig {
            rate: 0.5,
            code: 500,
            delay: Duration::from_millis(10),
        };
        let d = decide(cfg, Some("503"), Some("200"), 0.9).unwrap();
        assert_eq!(d.fail, Some(503));
        assert_eq!(d.delay, Duration::from_millis(210));
        assert_eq!(decide(cfg, None, None, 0.4).unwrap().fail, Some(500));
        assert_eq!(decide(cfg, None, None, 0.6).unwrap().fail, None);
        assert_eq!(
            decide(FaultConfig::default(), None, None, 0.0)
                .unwrap()
                .fail,
            None
        );
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let e = decide(FaultConfig::default(), Some("abc"), None, 0.0).unwrap_err();
        assert!(e.to_string().contains(HEADER_FAIL));
        let e = decide(FaultConfig::default(), None, Some("-1"), 0.0).unwrap_err();
        assert!(e.to_string().contains(HEADER_DELAY));
        let e = FaultConfig::default().with_query("rate=2").unwrap_err();
        assert!(e.to_string().contains("rate"));
        let e = FaultConfig::default().with_query("code=700").unwrap_err();
        assert!(e.to_string().contains("code"));
        let e = FaultConfig::default().with_query("bogus=1").unwrap_err();
        assert!(e.to_string().contains("bogus"));
    }

    #[test]
    fn query_updates_only_given_keys() {
        let c = FaultConfig::default()
            .with_query("rate=0.25&delay_ms=30")
            .unwrap();
        assert_eq!(c.rate, 0.25);
        assert_eq!(c.code, 503);
        assert_eq!(c.delay, Duration::from_millis(30));
        let c = c.with_query("rate=0").unwrap();
        assert_eq!(c.rate, 0.0);
    }
}
