//! The Prometheus text exposition format (0.0.4), as the proxies serve it on `/metrics`:
//! samples with their label sets, `# HELP`/`# TYPE` lines and comments skipped.

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name as written (`istio_requests_total`, `..._bucket`).
    pub name: String,
    /// Labels in the order written, values unescaped.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// `name{labels}` exactly as written: the series' identity between two scrapes of
    /// the same target.
    pub series: String,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("metrics text line {line}: {reason}: {text:?}")]
    Line {
        line: usize,
        reason: &'static str,
        text: String,
    },
}

/// Parses every sample of `text` whose metric name `keep` accepts (others are skipped
/// without parsing their labels). Blank lines and `#` lines are ignored.
pub fn parse_filtered(text: &str, keep: impl Fn(&str) -> bool) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason| ParseError::Line {
            line: i + 1,
            reason,
            text: raw.to_string(),
        };
        let name_end = line
            .find(|c: char| c == '{' || c.is_ascii_whitespace())
            .ok_or_else(|| err("sample without a value"))?;
        let name = &line[..name_end];
        if name.is_empty() {
            return Err(err("sample without a metric name"));
        }
        if !keep(name) {
            continue;
        }
        let (labels, rest_at) = if line[name_end..].starts_with('{') {
            let (labels, used) =
                parse_labels(&line[name_end + 1..]).ok_or_else(|| err("malformed labels"))?;
            (labels, name_end + 1 + used)
        } else {
            (Vec::new(), name_end)
        };
        let series = line[..rest_at].to_string();
        let value_text = line[rest_at..]
            .split_ascii_whitespace()
            .next()
            .ok_or_else(|| err("sample without a value"))?;
        let value = parse_value(value_text).ok_or_else(|| err("value is not a number"))?;
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
            series,
        });
    }
    Ok(out)
}

/// Parses every sample of `text`.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    parse_filtered(text, |_| true)
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses `a="x",b="y"}` (after the opening brace); returns the labels and the bytes used,
/// the closing brace included.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, usize)> {
    let bytes = s.as_bytes();
    let mut labels = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if *bytes.get(i)? == b'}' {
            return Some((labels, i + 1));
        }
        let eq = i + s[i..].find('=')?;
        let name = s[i..eq].trim();
        if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return None;
        }
        if *bytes.get(eq + 1)? != b'"' {
            return None;
        }
        let mut value = String::new();
        let mut j = eq + 2;
        loop {
            // Copy up to the next quote or backslash in one go (both are ASCII, so the
            // slice ends on a character boundary).
            let run = bytes[j..].iter().position(|b| *b == b'"' || *b == b'\\')?;
            value.push_str(&s[j..j + run]);
            j += run;
            if bytes[j] == b'"' {
                break;
            }
            match *bytes.get(j + 1)? {
                b'n' => value.push('\n'),
                b'\\' => value.push('\\'),
                b'"' => value.push('"'),
                _ => return None,
            }
            j += 2;
        }
        labels.push((name.to_string(), value));
        i = j + 1;
        match *bytes.get(i)? {
            b',' => i += 1,
            b'}' => return Some((labels, i + 1)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_labels_and_special_values() {
        let text = "# HELP x_total X.\n# TYPE x_total counter\n\
                    x_total{a=\"1\",b=\"q\\\"u\\\\o\\nte\"} 3\n\
                    h_bucket{le=\"+Inf\"} 7.0\nplain 1.5e3 1700000000000\n\
                    g{} NaN\nneg -Inf\nu{a=\"é,}\"} 2\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 6);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].label("a"), Some("1"));
        assert_eq!(s[0].label("b"), Some("q\"u\\o\nte"));
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[0].series, "x_total{a=\"1\",b=\"q\\\"u\\\\o\\nte\"}");
        assert_eq!(s[1].label("le"), Some("+Inf"));
        assert_eq!(s[1].value, 7.0);
        assert_eq!((s[2].name.as_str(), s[2].value), ("plain", 1500.0));
        assert!(s[2].labels.is_empty());
        assert!(s[3].value.is_nan());
        assert_eq!(s[4].value, f64::NEG_INFINITY);
        assert_eq!(s[5].label("a"), Some("é,}"));
    }

    #[test]
    fn filter_skips_other_families() {
        let text = "a_total{x=\"1\"} 1\nb_total{x=\"2\"} 2\n";
        let s = parse_filtered(text, |n| n.starts_with("b")).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "b_total");
    }

    #[test]
    fn rejects_malformed_lines_naming_the_line() {
        for (text, want) in [
            ("a{x=\"1} 1\n", "malformed labels"),
            ("a{x=1} 1\n", "malformed labels"),
            ("ok 1\na{x=\"1\"}\n", "line 2: sample without a value"),
            ("a abc\n", "not a number"),
            ("a\n", "without a value"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
