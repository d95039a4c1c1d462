//! Prometheus text format (0.0.4) helpers: converting prometheus-client's OpenMetrics
//! output, and a validator with the checks `promtool check metrics` applies, so tests catch
//! malformed output without promtool installed.

use std::collections::{HashMap, HashSet};

/// Content type of [`from_openmetrics`]' output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text → Prometheus text: counter families are named with their `_total`
/// samples, and the `# EOF` marker is dropped.
pub fn from_openmetrics(text: &str) -> String {
    let counters: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, t)| *t == "counter")
        .map(|(n, _)| n)
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            (counters.contains(name) && !name.ends_with("_total"))
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpositionError {
    #[error("line {line}: {reason}: {text:?}")]
    Line {
        line: usize,
        reason: &'static str,
        text: String,
    },
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `{a="x",b="y"}` (escapes `\\`, `\"`, `\n`); returns the label names.
fn parse_labels(s: &str) -> Option<Vec<String>> {
    let inner = s.strip_prefix('{')?.strip_suffix('}')?;
    let mut names = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        if !valid_label_name(name) {
            return None;
        }
        names.push(name.to_string());
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()? {
                    (_, '\\' | '"' | 'n') => {}
                    _ => return None,
                },
                (i, '"') => break i,
                (_, '\n') => return None,
                _ => {}
            }
        };
        rest = &after[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.is_empty() {
            return None;
        }
    }
    Some(names)
}

fn split_sample(line: &str) -> Option<(&str, Option<&str>, &str)> {
    if let Some(open) = line.find('{') {
        let close = line.rfind('}')?;
        Some((
            &line[..open],
            Some(&line[open..=close]),
            line[close + 1..].trim(),
        ))
    } else {
        let (name, value) = line.split_once(' ')?;
        Some((name, None, value.trim()))
    }
}

/// Checks text-format syntax and the promtool lint rules that apply to our metrics:
/// names and labels well formed, TYPE before samples and at most once, HELP at most once,
/// counters named `*_total`, numeric values, no duplicate series or label names.
pub fn validate(text: &str) -> Result<(), ExpositionError> {
    let err = |line: usize, reason: &'static str, text: &str| ExpositionError::Line {
        line: line + 1,
        reason,
        text: text.to_string(),
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut series: HashSet<String> = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest
                .split_once(' ')
                .ok_or_else(|| err(i, "TYPE without type", line))?;
            if !valid_name(name) {
                return Err(err(i, "invalid metric name", line));
            }
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                return Err(err(i, "unknown metric type", line));
            }
            if ty == "counter" && !name.ends_with("_total") {
                return Err(err(i, "counter name must end in _total", line));
            }
            if types.insert(name.to_string(), ty.to_string()).is_some() {
                return Err(err(i, "second TYPE line for metric", line));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !valid_name(name) {
                return Err(err(i, "invalid metric name", line));
            }
            if !helps.insert(name.to_string()) {
                return Err(err(i, "second HELP line for metric", line));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, labels, value) =
            split_sample(line).ok_or_else(|| err(i, "malformed sample", line))?;
        if !valid_name(name) {
            return Err(err(i, "invalid metric name", line));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s).filter(|f| {
                    types
                        .get(*f)
                        .is_some_and(|t| t == "histogram" || t == "summary")
                })
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(err(i, "sample without a preceding TYPE", line));
        }
        if let Some(l) = labels {
            let names = parse_labels(l).ok_or_else(|| err(i, "malformed labels", line))?;
            let unique: HashSet<&String> = names.iter().collect();
            if unique.len() != names.len() {
                return Err(err(i, "duplicate label name", line));
            }
        }
        let v = value.split(' ').next().unwrap_or("");
        if v.parse::<f64>().is_err() && !["+Inf", "-Inf", "NaN"].contains(&v) {
            return Err(err(i, "value is not a number", line));
        }
        if !series.insert(format!("{name}{}", labels.unwrap_or(""))) {
            return Err(err(i, "duplicate series", line));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_openmetrics_counters() {
        let om = "# HELP a_b Things.\n# TYPE a_b counter\na_b_total{x=\"1\"} 3\n# EOF\n";
        let t = from_openmetrics(om);
        assert_eq!(
            t,
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 3\n"
        );
        validate(&t).unwrap();
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            ("# TYPE a counter\na 1\n", "_total"),
            ("a_total 1\n", "preceding TYPE"),
            (
                "# TYPE a_total counter\na_total{x=\"1} 1\n",
                "malformed labels",
            ),
            (
                "# TYPE a_total counter\na_total{x=\"1\",x=\"2\"} 1\n",
                "duplicate label",
            ),
            ("# TYPE a_total counter\na_total x\n", "not a number"),
            (
                "# TYPE a_total counter\na_total 1\na_total 2\n",
                "duplicate series",
            ),
            (
                "# TYPE a_total counter\n# TYPE a_total counter\n",
                "second TYPE",
            ),
            ("# TYPE 1a gauge\n", "invalid metric name"),
        ];
        for (text, want) in cases {
            let e = validate(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        validate("# TYPE g gauge\ng{a=\"q\\\"uote\"} 1.5\n").unwrap();
    }
}
