//! `meshwork logs NAME`: the log of a pod, `controlplane`, `ztunnel` (every node's, or
//! `ztunnel-<node>`) or `waypoint` (every waypoint's, or `waypoint-<namespace>`) of the
//! running local mesh.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::state::{self, State};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A pod name, `controlplane`, `ztunnel[-<node>]` or `waypoint[-<namespace>]`.
    pub name: String,
    #[arg(long, env = "MESHWORK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// The log names `name` stands for.
pub fn resolve(s: &State, name: &str) -> Vec<String> {
    if s.logs.contains_key(name) {
        return vec![name.to_string()];
    }
    if let Some((ns, pod)) = name.split_once('/') {
        if s.pods.iter().any(|p| p.namespace == ns && p.name == pod) {
            return vec![pod.to_string()];
        }
    }
    let prefix = format!("{name}-");
    match name {
        "ztunnel" => s
            .logs
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect(),
        "waypoint" => s
            .pods
            .iter()
            .filter(|p| p.runs == "waypoint")
            .map(|p| p.name.clone())
            .collect(),
        _ => Vec::new(),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = state::state_dir(args.state_dir.as_deref());
    let s = state::read(&dir)?;
    let names = resolve(&s, &args.name);
    if names.is_empty() {
        anyhow::bail!(
            "no log named {} (known: {})",
            args.name,
            s.logs.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let mut out = std::io::stdout().lock();
    for name in &names {
        for file in &s.logs[name] {
            if names.len() > 1 || s.logs[name].len() > 1 {
                writeln!(out, "==> {name}: {} <==", file.display())?;
            }
            let text = std::fs::read_to_string(file).unwrap_or_default();
            out.write_all(text.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::super::state::PodState;
    use super::*;

    #[test]
    fn names_resolve_to_logs() {
        let pod = |name: &str, runs: &str| PodState {
            name: name.into(),
            namespace: "shop".into(),
            ip: String::new(),
            node: "node-0".into(),
            runs: runs.into(),
            ports: vec![],
            netns: None,
            socks: None,
        };
        let mut s: State = serde_json::from_value(serde_json::json!({
            "pid": 1, "mode": "loopback", "dir": "/d", "up_ms": 1, "location": "",
            "nodes": ["node-0", "node-1"], "pods": [], "services": [],
            "control_plane_admin": "", "otlp_receiver": "", "logs": {}
        }))
        .unwrap();
        s.pods = vec![
            pod("web-0", "testapp"),
            pod("waypoint-waypoint", "waypoint"),
        ];
        for k in [
            "controlplane",
            "ztunnel-node-0",
            "ztunnel-node-1",
            "web-0",
            "waypoint-waypoint",
            "waypoint-shop",
        ] {
            s.logs.insert(k.into(), vec![]);
        }
        assert_eq!(resolve(&s, "ztunnel"), ["ztunnel-node-0", "ztunnel-node-1"]);
        assert_eq!(resolve(&s, "ztunnel-node-1"), ["ztunnel-node-1"]);
        assert_eq!(resolve(&s, "waypoint"), ["waypoint-waypoint"]);
        assert_eq!(resolve(&s, "waypoint-shop"), ["waypoint-shop"]);
        assert_eq!(resolve(&s, "shop/web-0"), ["web-0"]);
        assert!(resolve(&s, "nope").is_empty());
    }
}
