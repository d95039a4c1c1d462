//! Istio / protobuf-JSON durations: `"10s"`, `"1.5s"`, `"100ms"`, `"1m"`, `"1h"`, `"1h30m"`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration \"{0}\": empty")]
    Empty(String),
    #[error("invalid duration \"{input}\": missing unit after \"{number}\" (use ns, us, ms, s, m or h, e.g. \"10s\")")]
    MissingUnit { input: String, number: String },
    #[error("invalid duration \"{input}\": unknown unit \"{unit}\" (use ns, us, ms, s, m or h)")]
    UnknownUnit { input: String, unit: String },
    #[error(
        "invalid duration \"{0}\": expected a number followed by a unit, e.g. \"10s\" or \"1.5s\""
    )]
    Malformed(String),
    #[error("invalid duration \"{0}\": negative durations are not allowed")]
    Negative(String),
    #[error("invalid duration \"{0}\": too large")]
    Overflow(String),
}

/// A non-negative duration as written in Istio resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    /// Whole milliseconds (rounded down).
    pub fn as_millis(&self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
    pub fn as_std(&self) -> std::time::Duration {
        self.0
    }
}

fn unit_nanos(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return None,
    })
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(DurationError::Empty(input.to_string()));
        }
        if s.starts_with('-') {
            return Err(DurationError::Negative(input.to_string()));
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        let mut total_nanos = 0f64;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let number = &rest[..num_len];
            if number.is_empty() || number == "." || number.matches('.').count() > 1 {
                return Err(DurationError::Malformed(input.to_string()));
            }
            let value: f64 = number
                .parse()
                .map_err(|_| DurationError::Malformed(input.to_string()))?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            if unit.is_empty() {
                return Err(DurationError::MissingUnit {
                    input: input.to_string(),
                    number: number.to_string(),
                });
            }
            let mult = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
                input: input.to_string(),
                unit: unit.to_string(),
            })?;
            total_nanos += value * mult;
            rest = &rest[unit_len..];
        }
        if !total_nanos.is_finite() || total_nanos > (u64::MAX as f64) {
            return Err(DurationError::Overflow(input.to_string()));
        }
        Ok(Duration(std::time::Duration::from_nanos(
            total_nanos.round() as u64,
        )))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos.is_multiple_of(1_000_000_000) {
            write!(f, "{}s", nanos / 1_000_000_000)
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}ms", nanos / 1_000_000)
        } else {
            write!(f, "{}s", self.0.as_secs_f64())
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"10s\", \"1.5s\" or \"100ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u64 {
        s.parse::<Duration>().unwrap().as_millis()
    }

    #[test]
    fn parses_istio_forms() {
        assert_eq!(ms("10s"), 10_000);
        assert_eq!(ms("1.5s"), 1_500);
        assert_eq!(ms("100ms"), 100);
        assert_eq!(ms("1m"), 60_000);
        assert_eq!(ms("1h"), 3_600_000);
        assert_eq!(ms("1h30m"), 5_400_000);
        assert_eq!(ms("0.001s"), 1);
        assert_eq!(ms("0s"), 0);
    }

    #[test]
    fn rejects_bad_input_with_reason() {
        let e = "10".parse::<Duration>().unwrap_err();
        assert!(e.to_string().contains("missing unit"), "{e}");
        let e = "10x".parse::<Duration>().unwrap_err();
        assert!(e.to_string().contains("unknown unit \"x\""), "{e}");
        assert!(matches!(
            "-1s".parse::<Duration>(),
            Err(DurationError::Negative(_))
        ));
        assert!(matches!(
            "".parse::<Duration>(),
            Err(DurationError::Empty(_))
        ));
        assert!(matches!(
            "s".parse::<Duration>(),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            "1..2s".parse::<Duration>(),
            Err(DurationError::Malformed(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        for s in ["10s", "150ms", "1.5s"] {
            let d: Duration = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }
    }
}
