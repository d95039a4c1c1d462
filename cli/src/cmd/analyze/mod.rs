//! `meshwork analyze DIR`: finds configuration mistakes that are valid YAML but do not do
//! what the author meant (dangling subsets, L7 policies ztunnel cannot enforce, ...).
//!
//! Loads the directory like `meshwork validate` (same Store, `-n` default namespace),
//! translates it with the control plane's [`Translator`](meshwork_controlplane::translate::Translator)
//! and runs each check in [`checks`]. Exit code: 1 when any finding is an error, 0
//! otherwise, 2 for bad input.

mod checks;
mod context;
mod finding;

use std::path::PathBuf;
use std::process::ExitCode;

use meshwork_api::Store;
use meshwork_controlplane::source::dir::{list_manifests, DirError};
use serde::Serialize;

use crate::output::{print_structured, Format};
use context::Context;
use finding::{Finding, Severity};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of manifests (read recursively, like `kubectl apply -f DIR`).
    pub dir: PathBuf,
    /// Namespace for resources that name none.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
}

/// Why a directory could not be analyzed.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("listing {0}: {1}")]
    List(PathBuf, #[source] DirError),
    #[error("reading {0}: {1}")]
    Read(PathBuf, #[source] std::io::Error),
}

#[derive(Serialize)]
struct Summary {
    objects: usize,
    errors: usize,
    warnings: usize,
    infos: usize,
}

#[derive(Serialize)]
struct Report {
    findings: Vec<Finding>,
    summary: Summary,
}

/// Loads `dir` into a store (`namespace` for namespace-less resources).
pub fn load(dir: &std::path::Path, namespace: &str) -> Result<Store, AnalyzeError> {
    if !dir.is_dir() {
        return Err(AnalyzeError::NotADirectory(dir.to_path_buf()));
    }
    let mut store = Store::new();
    let files = list_manifests(dir).map_err(|e| AnalyzeError::List(dir.to_path_buf(), e))?;
    for path in files {
        let text =
            std::fs::read_to_string(&path).map_err(|e| AnalyzeError::Read(path.clone(), e))?;
        store.apply_file(&path, &text, namespace);
    }
    Ok(store)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = load(&args.dir, &args.namespace)?;
    let objects = store.len();
    let ctx = Context::new(store);
    let findings = checks::run_all(&ctx);
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    let summary = Summary {
        objects,
        errors: count(Severity::Error),
        warnings: count(Severity::Warning),
        infos: count(Severity::Info),
    };
    let failed = summary.errors > 0;
    match args.output {
        Format::Human => {
            for f in &findings {
                println!("{f}");
            }
            println!(
                "{} object(s) analyzed: {} error(s), {} warning(s), {} info",
                summary.objects, summary.errors, summary.warnings, summary.infos
            );
        }
        f => print_structured(f, &Report { findings, summary })?,
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
