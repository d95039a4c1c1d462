//! Validation conformance against Istio's own test data (see `tests/conformance/README.md`).
//!
//! Every fixture under `tests/conformance/fixtures/` is one manifest with Istio's verdict
//! (`# expect: valid|invalid|warning`). This test runs each through [`parse_file`] (typed
//! parsing plus semantic validation), prints a table per kind and overall, and fails on
//! any false rejection (Istio accepts, Meshwork refuses) or when agreement falls below [`AGREEMENT_FLOOR`].
//!
//! Print the table: `cargo test -p meshwork-api --test conformance -- --nocapture`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshwork_api::{parse_file, Kind};

/// Agreement on supported kinds, in tenths of a percent. Ratchet: raise it to the measured
/// value whenever validation improves; never lower it.
const AGREEMENT_FLOOR: u32 = 1000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    Valid,
    Invalid,
    Warning,
}

struct Case {
    path: PathBuf,
    expect: Expect,
    kind: String,
    text: String,
}

#[derive(Default)]
struct Row {
    cases: u32,
    agree: u32,
    false_accept: u32,
    false_reject: u32,
    warn_expected: u32,
    warn_matched: u32,
}

fn fixtures(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            fixtures(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
}

fn load(path: PathBuf) -> Case {
    let text = std::fs::read_to_string(&path).unwrap();
    let header = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("# {key}: ")))
            .map(str::trim)
    };
    let expect = match header("expect") {
        Some("valid") => Expect::Valid,
        Some("invalid") => Expect::Invalid,
        Some("warning") => Expect::Warning,
        other => panic!("{}: bad or missing `# expect:` ({other:?})", path.display()),
    };
    let api_version = text
        .lines()
        .find_map(|l| l.strip_prefix("apiVersion:"))
        .unwrap_or_default()
        .trim()
        .to_string();
    let kind = text
        .lines()
        .find_map(|l| l.strip_prefix("kind:"))
        .unwrap_or_default()
        .trim()
        .to_string();
    let supported = Kind::from_kind_str(&kind)
        .is_some_and(|k| k.api_versions().contains(&api_version.as_str()));
    Case {
        path,
        expect,
        kind: if supported { kind } else { String::new() },
        text,
    }
}

#[test]
fn istio_validation_conformance() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/fixtures");
    let mut paths = Vec::new();
    fixtures(&root, &mut paths);
    paths.sort();
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut sources: BTreeMap<String, Row> = BTreeMap::new();
    let mut skipped = 0;
    let mut disagreements = Vec::new();
    // MESHWORK_CONFORMANCE_WHY=1 prints every case's verdict and Meshwork's reasons, to
    // review that agreement is for the right reason.
    let why = std::env::var_os("MESHWORK_CONFORMANCE_WHY").is_some();
    for case in paths.into_iter().map(load) {
        if case.kind.is_empty() {
            skipped += 1;
            continue;
        }
        let parsed = parse_file(&case.path, &case.text, "default");
        let errors: Vec<String> = parsed.errors().map(|e| e.to_string()).collect();
        let warned = parsed
            .warnings()
            .any(|w| w.message != "unknown field (ignored)");
        let accepted = errors.is_empty();
        let source = case
            .path
            .strip_prefix(&root)
            .ok()
            .and_then(|p| p.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        let count = |r: &mut Row| {
            r.cases += 1;
            match (case.expect, accepted) {
                (Expect::Invalid, false) | (Expect::Valid | Expect::Warning, true) => r.agree += 1,
                (Expect::Invalid, true) => r.false_accept += 1,
                (Expect::Valid | Expect::Warning, false) => r.false_reject += 1,
            }
            if case.expect == Expect::Warning {
                r.warn_expected += 1;
                r.warn_matched += u32::from(accepted && warned);
            }
        };
        count(rows.entry(case.kind.clone()).or_default());
        count(rows.entry("all".to_string()).or_default());
        count(sources.entry(source).or_default());
        let rel = case.path.strip_prefix(&root).unwrap().display().to_string();
        if why {
            let warnings: Vec<String> = parsed
                .warnings()
                .filter(|w| w.message != "unknown field (ignored)")
                .map(|w| w.to_string())
                .collect();
            println!(
                "{rel}: expect {:?}, {}{}",
                case.expect,
                if accepted {
                    "accepted".to_string()
                } else {
                    format!("rejected: {}", errors.join("; "))
                },
                if warnings.is_empty() {
                    String::new()
                } else {
                    format!(" | warned: {}", warnings.join("; "))
                }
            );
        }
        match (case.expect, accepted) {
            (Expect::Invalid, true) => disagreements.push(format!("false accept: {rel}")),
            (Expect::Valid | Expect::Warning, false) => {
                disagreements.push(format!("FALSE REJECT: {rel}: {}", errors.join("; ")))
            }
            _ => {}
        }
    }
    let all = rows.remove("all").unwrap_or_default();
    println!("\n| kind | cases | agree | false accept | false reject | warnings matched |");
    println!("|---|---:|---:|---:|---:|---:|");
    let line = |k: &str, r: &Row| {
        println!(
            "| {k} | {} | {} ({:.1}%) | {} | {} | {}/{} |",
            r.cases,
            r.agree,
            f64::from(r.agree) * 100.0 / f64::from(r.cases.max(1)),
            r.false_accept,
            r.false_reject,
            r.warn_matched,
            r.warn_expected
        )
    };
    for (k, r) in &rows {
        line(k, r);
    }
    line("**all**", &all);
    println!("\n| source | cases | agree | false accept | false reject | warnings matched |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (k, r) in &sources {
        line(k, r);
    }
    println!("\n{skipped} fixtures of kinds Meshwork does not support were skipped.\n");
    for d in &disagreements {
        println!("{d}");
    }
    assert_eq!(all.false_reject, 0, "false rejections: see the list above");
    let agreement = all.agree * 1000 / all.cases.max(1);
    assert!(
        agreement >= AGREEMENT_FLOOR,
        "agreement {agreement}‰ fell below the floor {AGREEMENT_FLOOR}‰"
    );
}
