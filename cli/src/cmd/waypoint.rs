//! `meshwork waypoint apply|list|delete`: waypoints as `istioctl waypoint` manages them —
//! a Gateway of class `istio-waypoint` per waypoint, from which the control plane creates
//! the Deployment and Service — either in a Kubernetes cluster (current kubeconfig) or, with
//! `--dir`, in the control plane's watched YAML directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;

use super::waypoint_dir::{self as dir, FileChange};
use super::waypoint_kube as kube_mode;
use super::waypoint_manifest::{self as manifest, check_name, WaypointFor, LABEL_USE_WAYPOINT};
use crate::output::{print_structured, Format};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Subcommand, Debug)]
pub enum Sub {
    /// Creates or updates a waypoint Gateway (the control plane deploys it).
    Apply(ApplyArgs),
    /// Lists waypoint Gateways.
    List(ListArgs),
    /// Deletes a waypoint Gateway (its Deployment and Service go with it).
    Delete(DeleteArgs),
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// Namespace of the waypoint (Kubernetes: default the kubeconfig's namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Name of the waypoint Gateway.
    #[arg(long, default_value = "waypoint")]
    pub name: String,
    /// Traffic the waypoint handles (label istio.io/waypoint-for).
    #[arg(long = "for", value_enum, default_value = "service")]
    pub for_: WaypointFor,
    /// Also label the namespace istio.io/use-waypoint=<name>, so its services use it.
    #[arg(long)]
    pub enroll_namespace: bool,
    /// Write into this watched YAML directory instead of a Kubernetes cluster.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print what would be applied; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Kubernetes: wait until the control plane reports the Gateway Programmed.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, e.g. 90s, 2m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<meshwork_api::Duration>()
        .map(|d| d.0)
        .map_err(|e| e.to_string())
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this namespace (default: every namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Format,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Name of the waypoint Gateway.
    #[arg(default_value = "waypoint")]
    pub name: String,
    /// Namespace of the waypoint (Kubernetes: default the kubeconfig's namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print what would be deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Apply(a) => apply(a).await,
        Sub::List(a) => list(a).await,
        Sub::Delete(a) => delete(a).await,
    }
}

/// The namespace: given, else (Kubernetes) the kubeconfig's; `--dir` needs it given.
fn namespace_for_dir(ns: Option<String>) -> anyhow::Result<String> {
    let ns = ns.context("--namespace (-n) is required with --dir")?;
    check_name("namespace", &ns)?;
    Ok(ns)
}

fn namespace_for_kube(ns: Option<String>, client: &kube::Client) -> anyhow::Result<String> {
    let ns = ns.unwrap_or_else(|| client.default_namespace().to_string());
    check_name("namespace", &ns)?;
    Ok(ns)
}

fn objects(ns: &str, a: &ApplyArgs) -> Vec<Value> {
    let mut objs = vec![manifest::gateway(ns, &a.name, a.for_)];
    if a.enroll_namespace {
        objs.push(manifest::namespace_enrollment(ns, &a.name));
    }
    objs
}

fn print_objects(format: Format, objs: &[Value]) -> anyhow::Result<()> {
    match format {
        Format::Json => print_structured(format, &objs),
        _ => {
            for o in objs {
                println!("---");
                print!("{}", serde_yaml_ng::to_string(o)?);
            }
            Ok(())
        }
    }
}

async fn apply(a: ApplyArgs) -> anyhow::Result<ExitCode> {
    check_name("name", &a.name)?;
    let ns;
    let mut programmed: Option<Vec<String>> = None;
    if let Some(d) = &a.dir {
        ns = namespace_for_dir(a.namespace.clone())?;
        let changes = dir::plan_apply(d, &ns, &a.name, a.for_, a.enroll_namespace)?;
        if a.dry_run {
            return dry_run_files(a.output, &ns, &a, &changes);
        }
        dir::execute(&changes)?;
        match a.output {
            Format::Human => {
                for c in &changes {
                    println!("wrote {}", c.path().display());
                }
            }
            f => print_objects(f, &objects(&ns, &a))?,
        }
    } else {
        let client = kube_mode::client().await?;
        ns = namespace_for_kube(a.namespace.clone(), &client)?;
        let objs = objects(&ns, &a);
        if a.dry_run {
            print_objects(a.output, &objs)?;
            return Ok(ExitCode::SUCCESS);
        }
        let applied = kube_mode::apply(&client, &ns, &objs).await?;
        if a.wait {
            programmed = Some(kube_mode::wait_programmed(&client, &ns, &a.name, a.timeout).await?);
        }
        if !matches!(a.output, Format::Human) {
            print_objects(a.output, &applied)?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    if matches!(a.output, Format::Human) {
        println!("waypoint {ns}/{} applied", a.name);
        if a.enroll_namespace {
            println!("namespace {ns} labelled {LABEL_USE_WAYPOINT}={}", a.name);
        }
        if let Some(addresses) = programmed {
            println!(
                "waypoint {ns}/{} programmed, address {}",
                a.name,
                addresses.join(",")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn dry_run_files(
    format: Format,
    ns: &str,
    a: &ApplyArgs,
    changes: &[FileChange],
) -> anyhow::Result<ExitCode> {
    match format {
        Format::Human => {
            for c in changes {
                match c {
                    FileChange::Write(p, text) => {
                        println!("# would write {}", p.display());
                        print!("{text}");
                    }
                    FileChange::Remove(p) => println!("# would remove {}", p.display()),
                }
            }
        }
        f => print_objects(f, &objects(ns, a))?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    if let Some(ns) = &a.namespace {
        check_name("namespace", ns)?;
    }
    let rows: Vec<[String; 4]>;
    if let Some(d) = &a.dir {
        let found = dir::list(d, a.namespace.as_deref())?;
        if !matches!(a.output, Format::Human) {
            print_structured(a.output, &found)?;
            return Ok(ExitCode::SUCCESS);
        }
        rows = found
            .into_iter()
            .map(|w| [w.namespace, w.name, w.for_, w.file.display().to_string()])
            .collect();
        print_table(["NAMESPACE", "NAME", "FOR", "FILE"], &rows);
    } else {
        let client = kube_mode::client().await?;
        let found = kube_mode::list(&client, a.namespace.as_deref()).await?;
        if !matches!(a.output, Format::Human) {
            print_structured(a.output, &found)?;
            return Ok(ExitCode::SUCCESS);
        }
        rows = found
            .into_iter()
            .map(|w| {
                let programmed = if w.programmed.is_empty() {
                    "Unknown".into()
                } else {
                    w.programmed
                };
                [
                    w.namespace,
                    w.name,
                    w.for_,
                    format!("{programmed} {}", w.addresses.join(",")),
                ]
            })
            .collect();
        print_table(["NAMESPACE", "NAME", "FOR", "PROGRAMMED ADDRESS"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(header: [&str; 4], rows: &[[String; 4]]) {
    if rows.is_empty() {
        println!("no waypoints");
        return;
    }
    let mut w = header.map(str::len);
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    println!(
        "{:<a$}  {:<b$}  {:<c$}  {}",
        header[0],
        header[1],
        header[2],
        header[3],
        a = w[0],
        b = w[1],
        c = w[2]
    );
    for r in rows {
        println!(
            "{:<a$}  {:<b$}  {:<c$}  {}",
            r[0],
            r[1],
            r[2],
            r[3].trim_end(),
            a = w[0],
            b = w[1],
            c = w[2]
        );
    }
}

async fn delete(a: DeleteArgs) -> anyhow::Result<ExitCode> {
    check_name("name", &a.name)?;
    if let Some(d) = &a.dir {
        let ns = namespace_for_dir(a.namespace)?;
        let change = dir::plan_delete(d, &ns, &a.name)?;
        match (&change, a.dry_run) {
            (FileChange::Remove(p), true) => println!("# would remove {}", p.display()),
            (FileChange::Write(p, text), true) => {
                println!("# would write {}", p.display());
                print!("{text}");
            }
            (_, false) => {
                dir::execute(std::slice::from_ref(&change))?;
                println!(
                    "waypoint {ns}/{} deleted ({})",
                    a.name,
                    change.path().display()
                );
            }
        }
    } else {
        let client = kube_mode::client().await?;
        let ns = namespace_for_kube(a.namespace, &client)?;
        if a.dry_run {
            println!("would delete Gateway {ns}/{}", a.name);
        } else {
            kube_mode::delete(&client, &ns, &a.name).await?;
            println!("waypoint {ns}/{} deleted", a.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
