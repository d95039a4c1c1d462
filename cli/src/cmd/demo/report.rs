//! What the demo observed, as one JSON document or a short human report.

use serde::Serialize;

/// A pattern's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failed,
}

/// One of the five patterns: observed facts as lines, plus structured numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub pattern: u8,
    pub title: &'static str,
    pub status: Status,
    pub lines: Vec<String>,
    /// Why something expected did not happen.
    pub problems: Vec<String>,
    pub data: serde_json::Value,
}

impl Section {
    pub fn new(pattern: u8, title: &'static str) -> Self {
        Section {
            pattern,
            title,
            status: Status::Ok,
            lines: Vec::new(),
            problems: Vec::new(),
            data: serde_json::json!({}),
        }
    }

    pub fn line(&mut self, l: String) {
        self.lines.push(l);
    }

    /// Records `what` and fails the section unless `ok`.
    pub fn expect(&mut self, ok: bool, what: String) {
        if !ok {
            self.status = Status::Failed;
            self.problems.push(what);
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub mode_reason: String,
    pub duration_ms: u64,
    pub sections: Vec<Section>,
    pub ok: bool,
}

impl Report {
    pub fn new(mode: String, mode_reason: String, sections: Vec<Section>, ms: u64) -> Self {
        let ok = sections.iter().all(|s| s.status != Status::Failed);
        Report {
            mode,
            mode_reason,
            duration_ms: ms,
            sections,
            ok,
        }
    }

    /// The human report.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.sections {
            let mark = match s.status {
                Status::Ok => "ok",
                Status::Failed => "FAILED",
            };
            out.push_str(&format!("[{}] {} — {mark}\n", s.pattern, s.title));
            for l in &s.lines {
                out.push_str(&format!("    {l}\n"));
            }
            for p in &s.problems {
                out.push_str(&format!("    problem: {p}\n"));
            }
        }
        out.push_str(&format!(
            "{} in {:.1}s\n",
            if self.ok {
                "all observed behaviour matches the seed manifests"
            } else {
                "some behaviour did NOT match the seed manifests (see problems above)"
            },
            self.duration_ms as f64 / 1000.0
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_section_fails_the_report() {
        let mut a = Section::new(1, "enrolment");
        a.line("x".into());
        a.expect(true, "fine".into());
        let b = Section::new(4, "tracing");
        let r = Report::new("loopback".into(), "why".into(), vec![a.clone(), b], 1500);
        assert!(r.ok);
        let text = r.render();
        assert!(text.contains("[4] tracing — ok"), "{text}");
        assert!(text.contains("    x\n"), "{text}");
        a.expect(false, "canary went to v1".into());
        let r = Report::new("loopback".into(), "why".into(), vec![a], 10);
        assert!(!r.ok);
        assert!(r.render().contains("problem: canary went to v1"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["sections"][0]["status"], "failed");
    }
}
