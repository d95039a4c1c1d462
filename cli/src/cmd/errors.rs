//! `meshwork errors`: validation errors of a running control plane.

use std::process::ExitCode;

use crate::admin_client::get_json;
use crate::output::{print_structured, Format};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Control plane admin address.
    #[arg(long, default_value = "http://127.0.0.1:15014", env = "MESHWORK_ADMIN")]
    pub admin: String,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
}

/// The errors and warnings of a `/debug/errors` report.
pub fn lists(report: &serde_json::Value) -> (Vec<String>, Vec<String>) {
    let list = |k: &str| -> Vec<String> {
        report[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    (list("errors"), list("warnings"))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = get_json(&args.admin, "/debug/errors").await?;
    let (errors, warnings) = lists(&report);
    match args.output {
        Format::Human => {
            for e in &errors {
                println!("error   {e}");
            }
            for w in &warnings {
                println!("warning {w}");
            }
            println!("{} error(s), {} warning(s)", errors.len(), warnings.len());
        }
        f => print_structured(f, &report)?,
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
