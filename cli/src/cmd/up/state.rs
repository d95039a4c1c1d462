//! What a running `meshwork up` leaves in its state directory for `down`, `status`,
//! `exec` and `logs`: `state.json` (written once the mesh answers, removed at teardown),
//! `up.log` (the background process's output), `traces.jsonl` (every span the OTLP
//! receiver got, one JSON object a line), `prometheus/` (the local Prometheus'
//! configuration, log and storage) and `grafana-dashboard.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("no local mesh is running (no {0}); start one with `meshwork up DIR`")]
    NotRunning(PathBuf),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a meshwork up state file: {error}")]
    Parse {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("no pod {pod} in the running mesh (pods: {known})")]
    NoPod { pod: String, known: String },
}

/// One pod of the running mesh.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodState {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    pub node: String,
    /// `testapp`, `command`, `idle` or `waypoint`.
    pub runs: String,
    pub ports: Vec<u16>,
    /// Netns mode: its network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Loopback mode: the SOCKS5 entry of its node's ztunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socks: Option<String>,
}

/// A Service and its cluster IP (netns mode).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceState {
    pub namespace: String,
    pub name: String,
    pub vip: String,
}

/// A proxy's metrics endpoint, forwarded to a loopback port of the host by the running
/// `meshwork up` (`meshwork top` and `graph` scrape these when given no `--targets`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetricsState {
    /// `ztunnel-<node>`, or `<namespace>/<waypoint pod>`.
    pub name: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl MetricsState {
    /// As `meshwork top --targets` takes it, `NAME=ADDR` (a waypoint's name, `NS/NAME`,
    /// names its workload in the graph; a ztunnel's only labels its row).
    pub fn target(&self) -> String {
        format!("{}={}", self.name, self.addr)
    }
}

/// The Prometheus `meshwork up` runs, scraping every [`MetricsState`] address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PrometheusState {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub pid: u32,
    /// Its configuration, log and storage (inside the state directory).
    pub dir: PathBuf,
}

/// `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub pid: u32,
    /// `netns` or `loopback`.
    pub mode: String,
    pub dir: PathBuf,
    /// Milliseconds from `meshwork up` to the mesh answering.
    pub up_ms: u64,
    pub location: String,
    pub nodes: Vec<String>,
    pub pods: Vec<PodState>,
    pub services: Vec<ServiceState>,
    pub control_plane_admin: String,
    pub otlp_receiver: String,
    /// Process name → its log files.
    pub logs: BTreeMap<String, Vec<PathBuf>>,
    /// Netns mode: `/etc/netns/<netns>` directories written (hosts files) to remove.
    #[serde(default)]
    pub etc_netns: Vec<PathBuf>,
    /// Every proxy's metrics endpoint, forwarded to the host's loopback.
    #[serde(default)]
    pub metrics: Vec<MetricsState>,
    /// The Prometheus scraping them (absent with `--no-prometheus` or without the
    /// `prometheus` binary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusState>,
    /// Why there is no Prometheus (`--no-prometheus`, no binary, not ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_skipped: Option<String>,
    /// The Grafana dashboard (charts/dashboards/meshwork.json) written to the state
    /// directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<PathBuf>,
    /// The last edit of the directory the running mesh took, or could not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_edit: Option<EditState>,
}

/// An edit of the directory, as the running mesh took it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EditState {
    /// When it was taken (ms since the epoch).
    pub at_ms: u64,
    /// What changed (`changed a.yaml; removed b.yaml`), or why it was not taken.
    pub summary: String,
    /// Whether it runs: false when the directory did not read.
    pub applied: bool,
    /// The control plane's validation errors and warnings after it (`meshwork errors`).
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl State {
    pub fn pod(&self, name: &str) -> Result<&PodState, StateError> {
        self.pods
            .iter()
            .find(|p| p.name == name || format!("{}/{}", p.namespace, p.name) == name)
            .ok_or_else(|| StateError::NoPod {
                pod: name.to_string(),
                known: self
                    .pods
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// The state directory: `--state-dir`, else `$MESHWORK_STATE_DIR`, else
/// `/run/meshwork/up` for root, `$XDG_RUNTIME_DIR/meshwork/up`, `/tmp/meshwork-up-<uid>`.
pub fn state_dir(given: Option<&Path>) -> PathBuf {
    if let Some(d) = given {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os("MESHWORK_STATE_DIR") {
        return PathBuf::from(d);
    }
    // SAFETY: getuid(2) cannot fail.
    let uid = unsafe { libc::getuid() };
    if uid == 0 {
        return PathBuf::from("/run/meshwork/up");
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(d).join("meshwork/up");
    }
    std::env::temp_dir().join(format!("meshwork-up-{uid}"))
}

pub fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

pub fn read(dir: &Path) -> Result<State, StateError> {
    let path = state_file(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StateError::NotRunning(path))
        }
        Err(error) => return Err(StateError::Io { path, error }),
    };
    serde_json::from_str(&text).map_err(|error| StateError::Parse { path, error })
}

/// Writes `state.json` atomically (a reader never sees half a file).
pub fn write(dir: &Path, state: &State) -> Result<(), StateError> {
    let path = state_file(dir);
    let tmp = dir.join(".state.json.tmp");
    let text = serde_json::to_string_pretty(state).expect("state serializes");
    std::fs::write(&tmp, text).map_err(|error| StateError::Io {
        path: tmp.clone(),
        error,
    })?;
    std::fs::rename(&tmp, &path).map_err(|error| StateError::Io { path, error })
}

/// Whether process `pid` runs (a zombie waiting for a parent that never reaps it, as
/// under some container inits, does not count).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: `pid (comm) S ...`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            pid: std::process::id(),
            mode: "loopback".into(),
            dir: "/m".into(),
            up_ms: 1234,
            location: "on 127.1.2.0/24".into(),
            nodes: vec!["node-0".into()],
            pods: vec![PodState {
                name: "web-0".into(),
                namespace: "shop".into(),
                ip: "127.1.2.10".into(),
                node: "node-0".into(),
                runs: "testapp".into(),
                ports: vec![8080],
                netns: None,
                socks: Some("127.1.2.1:4000".into()),
            }],
            services: vec![],
            control_plane_admin: "127.0.0.1:1".into(),
            otlp_receiver: "127.0.0.1:2".into(),
            logs: BTreeMap::new(),
            etc_netns: vec![],
            metrics: vec![
                MetricsState {
                    name: "ztunnel-node-0".into(),
                    addr: "127.0.0.1:3".into(),
                },
                MetricsState {
                    name: "shop/waypoint-0".into(),
                    addr: "127.0.0.1:4".into(),
                },
            ],
            prometheus: Some(PrometheusState {
                url: "http://127.0.0.1:19090".into(),
                pid: 9,
                dir: "/m/prometheus".into(),
            }),
            prometheus_skipped: None,
            dashboard: Some("/m/grafana-dashboard.json".into()),
            last_edit: None,
        }
    }

    #[test]
    fn state_round_trips_and_finds_pods() {
        let d = tempfile::tempdir().unwrap();
        let e = read(d.path()).unwrap_err();
        assert!(matches!(e, StateError::NotRunning(_)), "{e}");
        write(d.path(), &state()).unwrap();
        let s = read(d.path()).unwrap();
        assert_eq!(s, state());
        assert_eq!(s.pod("shop/web-0").unwrap().ip, "127.1.2.10");
        let e = s.pod("cart-0").unwrap_err().to_string();
        assert!(e.contains("cart-0") && e.contains("web-0"), "{e}");
        assert!(alive(std::process::id()));
        let targets: Vec<String> = s.metrics.iter().map(MetricsState::target).collect();
        assert_eq!(
            targets,
            ["ztunnel-node-0=127.0.0.1:3", "shop/waypoint-0=127.0.0.1:4"]
        );
        std::fs::write(state_file(d.path()), "{").unwrap();
        assert!(matches!(
            read(d.path()).unwrap_err(),
            StateError::Parse { .. }
        ));
    }

    #[test]
    fn state_dir_prefers_the_flag() {
        assert_eq!(state_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
    }
}
