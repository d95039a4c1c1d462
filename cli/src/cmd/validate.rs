//! `meshwork validate DIR`: parse and validate manifests offline.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use meshwork_api::Store;
use meshwork_controlplane::source::dir::list_manifests;
use serde::Serialize;

use crate::output::{print_structured, Format};

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

#[derive(Serialize)]
struct Report {
    objects: usize,
    errors: Vec<String>,
    warnings: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.dir.is_dir() {
        anyhow::bail!("{}: not a directory", args.dir.display());
    }
    let mut store = Store::new();
    for path in list_manifests(&args.dir)? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        store.apply_file(&path, &text, &args.namespace);
    }
    let report = Report {
        objects: store.objects().count(),
        errors: store.errors().iter().map(|e| e.to_string()).collect(),
        warnings: store.warnings().iter().map(|e| e.to_string()).collect(),
    };
    match args.output {
        Format::Human => {
            for e in &report.errors {
                println!("error   {e}");
            }
            for w in &report.warnings {
                println!("warning {w}");
            }
            println!(
                "{} object(s) valid, {} error(s), {} warning(s)",
                report.objects,
                report.errors.len(),
                report.warnings.len()
            );
        }
        f => print_structured(f, &report)?,
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
