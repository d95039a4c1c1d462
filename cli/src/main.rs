//! `meshwork`: the command line for people running the mesh.

mod admin_client;
mod cmd;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "meshwork",
    version,
    about = "Meshwork service mesh command line"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Checks a directory of manifests offline, as the control plane would apply it.
    Validate(cmd::validate::Args),
    /// Finds configuration mistakes in a directory of manifests (dangling subsets, L7 policies without a waypoint, ...).
    Analyze(cmd::analyze::Args),
    /// Shows the validation errors and warnings of a running control plane.
    Errors(cmd::errors::Args),
    /// Brings up the whole mesh locally, drives the seed patterns and reports what it saw.
    Demo(cmd::demo::Args),
    /// Runs a directory of manifests on this machine, in the background (control plane, ztunnels, waypoints, pods).
    Up(cmd::up::Args),
    /// Stops the local mesh `meshwork up` started and removes everything it created.
    Down(cmd::up::StateArgs),
    /// Shows the local mesh `meshwork up` started: mode, pods, services, where things are.
    Status(cmd::up::StatusArgs),
    /// Runs a command as a pod of the local mesh: `meshwork exec POD -- curl …`.
    Exec(cmd::up::exec::Args),
    /// Forwards a loopback port of this machine to a pod's port: `meshwork port-forward POD [LOCAL:]PORT`.
    PortForward(cmd::up::port_forward::Args),
    /// Prints a log of the local mesh: a pod, `controlplane`, `ztunnel[-NODE]`, `waypoint[-NS]`.
    Logs(cmd::up::logs::Args),
    /// Authorization tools: `authz check` decides a request as the data path would.
    Authz(cmd::authz::Args),
    /// Shows what a running ztunnel or waypoint holds, read from its admin endpoint.
    ProxyConfig(cmd::proxy_config::Args),
    /// Waypoints: `apply -n NS` creates one (a Gateway the control plane deploys), `list`, `delete`.
    Waypoint(cmd::waypoint::Args),
    /// Live traffic per service and edge (rps, success, p50/p99, mTLS) from the proxies' metrics.
    Top(cmd::observe::TopArgs),
    /// Serves a local web page with the live service graph from the proxies' metrics.
    Graph(cmd::observe::GraphArgs),
    /// Canaries run by the control plane (Flagger's Canary): `status`, `promote`, `abort`.
    Rollout(cmd::rollout::Args),
    /// Prints the version.
    Version,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(a) => cmd::validate::run(a),
        Command::Analyze(a) => cmd::analyze::run(a),
        Command::Errors(a) => cmd::errors::run(a).await,
        Command::Demo(a) => cmd::demo::run(a).await,
        Command::Up(a) => cmd::up::run(a).await,
        Command::Down(a) => cmd::up::down(a),
        Command::Status(a) => cmd::up::status(a),
        Command::Exec(a) => cmd::up::exec::run(a),
        Command::PortForward(a) => cmd::up::port_forward::run(a).await,
        Command::Logs(a) => cmd::up::logs::run(a),
        Command::Authz(a) => cmd::authz::run(a).await,
        Command::ProxyConfig(a) => cmd::proxy_config::run(a).await,
        Command::Waypoint(a) => cmd::waypoint::run(a).await,
        Command::Top(a) => cmd::observe::top(a).await,
        Command::Graph(a) => cmd::observe::graph(a).await,
        Command::Rollout(a) => cmd::rollout::run(a).await,
        Command::Version => {
            // Build with MESHWORK_GIT_COMMIT=$(git rev-parse --short HEAD) to record the commit.
            match option_env!("MESHWORK_GIT_COMMIT").filter(|c| !c.is_empty()) {
                Some(commit) => println!("meshwork {} ({commit})", env!("CARGO_PKG_VERSION")),
                None => println!("meshwork {}", env!("CARGO_PKG_VERSION")),
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One clear line, no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
