//! `meshwork rollout status|promote|abort NAME [-n NS]`: the canaries the control plane
//! runs (Flagger's `Canary`), through its admin endpoint (`/debug/canaries`,
//! `POST /canary/promote|abort`).

use std::process::ExitCode;

use anyhow::anyhow;

use crate::admin_client::{get_json, post_json};
use crate::output::{print_structured, Format};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
    /// Control plane admin address.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:15014",
        env = "MESHWORK_ADMIN"
    )]
    pub admin: String,
    /// Namespace of the Canary.
    #[arg(long, short, global = true, default_value = "default")]
    pub namespace: String,
    #[arg(long, short, global = true, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Phase, weight, failed checks, the last checks' values and decision (all canaries of
    /// the namespace without NAME).
    Status { name: Option<String> },
    /// Promotes a running canary now, skipping the rest of its analysis and its gates.
    Promote { name: String },
    /// Rolls a running canary back now: all traffic to the primary.
    Abort { name: String },
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One line per canary: what `status` prints for people.
pub fn human_line(c: &serde_json::Value) -> String {
    let s = &c["status"];
    let mut line = format!(
        "{}/{}  {}  weight {}  failed checks {}",
        c["namespace"].as_str().unwrap_or(""),
        c["name"].as_str().unwrap_or(""),
        s["phase"].as_str().unwrap_or("?"),
        s["canaryWeight"],
        s["failedChecks"],
    );
    if s["iterations"].as_u64().unwrap_or(0) > 0 {
        line.push_str(&format!("  iterations {}", s["iterations"]));
    }
    for check in c["lastChecks"].as_array().into_iter().flatten() {
        let value = check["value"]
            .as_f64()
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "-".into());
        let mark = if check["passed"].as_bool() == Some(true) {
            "ok"
        } else {
            "FAIL"
        };
        line.push_str(&format!(
            "\n    {} = {value} ({mark})",
            check["metric"].as_str().unwrap_or("")
        ));
    }
    if let Some(d) = c["lastDecision"].as_str().filter(|d| !d.is_empty()) {
        line.push_str(&format!("\n    last decision: {d}"));
    }
    if let Some(e) = c["error"].as_str() {
        line.push_str(&format!("\n    error: {e}"));
    }
    line
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ns = &args.namespace;
    match &args.action {
        Action::Status { name } => {
            let all = get_json(&args.admin, "/debug/canaries").await?;
            let list: Vec<serde_json::Value> = all["canaries"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c["namespace"].as_str() == Some(ns))
                .filter(|c| {
                    name.as_deref()
                        .is_none_or(|n| c["name"].as_str() == Some(n))
                })
                .collect();
            if let (Some(n), true) = (name, list.is_empty()) {
                return Err(anyhow!("canary {ns}/{n} not found"));
            }
            match args.output {
                Format::Human => {
                    for c in &list {
                        println!("{}", human_line(c));
                    }
                    if list.is_empty() {
                        println!("no canaries in namespace {ns}");
                    }
                }
                f => print_structured(f, &list)?,
            }
            let failed = list
                .iter()
                .any(|c| c["status"]["phase"].as_str() == Some("Failed"));
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Action::Promote { name } | Action::Abort { name } => {
            let verb = if matches!(args.action, Action::Promote { .. }) {
                "promote"
            } else {
                "abort"
            };
            let path = format!(
                "/canary/{verb}?namespace={}&name={}",
                encode(ns),
                encode(name)
            );
            let answer = post_json(&args.admin, &path).await?;
            match args.output {
                Format::Human => println!(
                    "{verb} of canary {ns}/{name} accepted: carried out at its next step (now)"
                ),
                f => print_structured(f, &answer)?,
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_shows_weight_checks_and_decision() {
        let c = serde_json::json!({
            "namespace": "shop", "name": "web",
            "status": {"phase": "Progressing", "canaryWeight": 20, "failedChecks": 1, "iterations": 0},
            "lastChecks": [
                {"metric": "request-success-rate", "value": 99.5, "passed": true},
                {"metric": "request-duration", "value": null, "passed": false, "error": "no values"}
            ],
            "lastDecision": "advance canary weight 20"
        });
        assert_eq!(
            human_line(&c),
            "shop/web  Progressing  weight 20  failed checks 1\n    request-success-rate = 99.50 (ok)\n    request-duration = - (FAIL)\n    last decision: advance canary weight 20"
        );
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
