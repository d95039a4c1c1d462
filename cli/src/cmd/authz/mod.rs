//! `meshwork authz check`: would this request be allowed, where is it decided, and by which
//! policy and rule.
//!
//! Exit status: 0 allowed, 1 denied (at any enforcement point), 2 bad input (unknown
//! workload or service, unreadable manifests, unreachable control plane).

mod load;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::output::{print_structured, Format};

use meshwork_authz::explain::{check, Query, Report};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: AuthzCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum AuthzCommand {
    /// Decides one request as the data path would (exit 0 allow, 1 deny, 2 bad input).
    Check(CheckArgs),
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Source workload, `<namespace>/<workload>`.
    #[arg(long)]
    pub from: String,
    /// Destination: a service host (FQDN or alias as the source would resolve it) or
    /// `<namespace>/<workload>`.
    #[arg(long)]
    pub to: String,
    /// Destination port (default: the service's first port).
    #[arg(long)]
    pub port: Option<u16>,
    /// HTTP method (default GET; only a waypoint sees it).
    #[arg(long)]
    pub method: Option<String>,
    /// HTTP path (default /).
    #[arg(long)]
    pub path: Option<String>,
    /// HTTP request header `name=value`; repeatable.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Directory of manifests, translated offline.
    #[arg(
        conflicts_with = "controlplane",
        required_unless_present = "controlplane"
    )]
    pub dir: Option<PathBuf>,
    /// Admin address of a running control plane (reads its `/debug/model`).
    #[arg(long)]
    pub controlplane: Option<String>,
    /// Namespace for manifests that name none (offline mode).
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        AuthzCommand::Check(a) => run_check(a).await,
    }
}

async fn run_check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let snap = match (&a.dir, &a.controlplane) {
        (Some(dir), _) => load::from_dir(dir, &a.namespace)?,
        (None, Some(url)) => load::from_controlplane(url).await?,
        (None, None) => anyhow::bail!("give a manifest DIR or --controlplane URL"),
    };
    let q = Query {
        from: a.from,
        to: a.to,
        port: a.port,
        method: a.method,
        path: a.path,
        headers: a.headers,
    };
    let report = check(&snap, &q)?;
    match a.output {
        Format::Human => print!("{}", human(&report)),
        f => print_structured(f, &report)?,
    }
    Ok(if report.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn human(r: &Report) -> String {
    let mut s = format!(
        "{} {} ({}) -> {} port {} {} {}\n",
        if r.allowed { "ALLOW" } else { "DENY" },
        r.source,
        r.source_identity
            .as_deref()
            .unwrap_or("plaintext: not in the mesh"),
        r.destination,
        r.port,
        r.method,
        r.path,
    );
    for v in &r.verdicts {
        let decided = match (&v.policy, v.rule) {
            (Some(p), Some(rule)) => format!("{p} rule {rule}"),
            (Some(p), None) => p.clone(),
            _ => "-".to_string(),
        };
        s.push_str(&format!(
            "  {:<5} {} at {}\n        decided by: {decided}\n        reason: {}\n",
            if v.allowed { "allow" } else { "deny" },
            v.destination,
            v.enforced_by,
            v.reason,
        ));
        if !v.applicable.is_empty() {
            s.push_str(&format!("        policies: {}\n", v.applicable.join(", ")));
        }
    }
    s
}
