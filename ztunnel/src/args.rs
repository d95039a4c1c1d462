//! Command-line / environment arguments of a ztunnel (`Config`), as the waypoint's
//! `process::run::Args`.
//!
//! Every listener address is configurable (`off` disables a listener) so several ztunnels
//! can share a machine on distinct 127.0.0.x addresses in tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use meshwork_model::endpoint::ControlPlane;
use meshwork_model::flags::{ControlPlaneFlags, FlagError};
use meshwork_model::token::{TokenError, TokenSource};

use crate::redirect::RedirectMode;

/// A listener address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid listen address {value:?}: expected ip:port or \"off\"")]
    Listen { value: String },
    #[error("invalid duration {value:?}: expected e.g. 500ms, 10s, 5m, 24h")]
    Duration { value: String },
    #[error("--node-token-file: {0}")]
    TokenFile(TokenError),
    #[error(
        "--socks5-addr {addr}: the SOCKS5 entry is for local development and must listen on a \
         loopback address (e.g. 127.0.0.1:15080)"
    )]
    Socks5NotLoopback { addr: SocketAddr },
    #[error(transparent)]
    ControlPlane(#[from] FlagError),
}

impl FromStr for Listen {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Listen(None));
        }
        s.parse()
            .map(|a| Listen(Some(a)))
            .map_err(|_| ConfigError::Listen {
                value: s.to_string(),
            })
    }
}

/// Parses `500ms`, `10s`, `5m`, `24h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let err = || ConfigError::Duration {
        value: s.to_string(),
    };
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| err())?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(err()),
    })
}

/// `--log-format`: the runtime's log line format, for both proxies.
pub use meshwork_runtime::log::Format as LogFormat;

/// ztunnel configuration.
#[derive(Debug, Clone, Parser)]
#[command(name = "ztunnel", about = "Meshwork node proxy: L4 mTLS over HBONE")]
pub struct Config {
    #[command(flatten)]
    pub control: ControlPlaneFlags,
    /// Node this ztunnel serves: workloads with this node are local.
    #[arg(long, env = "MESHWORK_NODE")]
    pub node: String,
    /// Bearer token proving the node to the control plane and CA.
    #[arg(long, env = "MESHWORK_NODE_TOKEN", default_value = "")]
    pub node_token: String,
    /// File holding the node token (takes precedence over --node-token).
    #[arg(long, env = "MESHWORK_NODE_TOKEN_FILE")]
    pub node_token_file: Option<PathBuf>,
    /// PEM roots to trust besides the root the CA returns (root migration).
    #[arg(long, env = "MESHWORK_CA_ROOTS_FILE")]
    pub ca_roots_file: Option<PathBuf>,
    /// Use certificates from this directory (`<ns>/<sa>/{key,cert-chain,root-cert}.pem`)
    /// instead of the CA.
    #[arg(long, env = "MESHWORK_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Serve a fixed config (a protobuf-encoded `meshwork.config.v1.ConfigUpdate`) instead
    /// of following the control plane.
    #[arg(long, env = "MESHWORK_STATIC_CONFIG")]
    pub static_config: Option<PathBuf>,
    /// Requested workload certificate lifetime.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub cert_ttl: Duration,

    /// Captured outbound traffic (REDIRECT / TPROXY).
    #[arg(long, env = "MESHWORK_OUTBOUND_ADDR", default_value = "0.0.0.0:15001")]
    pub outbound_addr: Listen,
    /// SOCKS5 entry for local development (off by default; a loopback address only, e.g.
    /// 127.0.0.1:15080). It relays to mesh destinations only; a SOCKS5 username naming the
    /// source workload is honoured only with `--redirect off` and for workloads of this
    /// node (see `crate::socks5`).
    #[arg(long, env = "MESHWORK_SOCKS5_ADDR", default_value = "off")]
    pub socks5_addr: Listen,
    /// Captured plaintext inbound traffic.
    #[arg(
        long,
        env = "MESHWORK_INBOUND_PLAIN_ADDR",
        default_value = "0.0.0.0:15006"
    )]
    pub inbound_plain_addr: Listen,
    /// HBONE listeners (repeatable). In loopback setups, list the local pods' addresses.
    #[arg(
        long = "hbone-addr",
        env = "MESHWORK_HBONE_ADDRS",
        value_delimiter = ',',
        default_value = "0.0.0.0:15008"
    )]
    pub hbone_addrs: Vec<SocketAddr>,
    /// Port of the HBONE listener on destination pods' addresses.
    #[arg(long, default_value_t = meshwork_hbone::HBONE_PORT)]
    pub hbone_port: u16,
    /// Admin server: /config_dump, /certs, /logging.
    #[arg(long, env = "MESHWORK_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: Listen,
    /// Prometheus /metrics.
    #[arg(long, env = "MESHWORK_METRICS_ADDR", default_value = "0.0.0.0:15020")]
    pub metrics_addr: Listen,
    /// /healthz/ready.
    #[arg(long, env = "MESHWORK_READINESS_ADDR", default_value = "0.0.0.0:15021")]
    pub readiness_addr: Listen,

    /// Workload (`<ns>/<name>`) used as the source of SOCKS5 / loopback connections whose
    /// source address is not a workload address.
    #[arg(long, env = "MESHWORK_LOCAL_WORKLOAD")]
    pub local_workload: Option<String>,
    /// Bind inbound connections to pods to the original client IP (IP_TRANSPARENT, needs
    /// CAP_NET_ADMIN).
    #[arg(long, env = "MESHWORK_TRANSPARENT_INBOUND", default_value_t = false)]
    pub transparent_inbound: bool,

    /// Traffic capture: `off` (nothing captured by this process: loopback, SOCKS5) or
    /// `ebpf` (load or adopt the node's TC programs, attach the uplink, and keep the
    /// captured pods of this node enrolled; needs root / CAP_NET_ADMIN+CAP_BPF and the
    /// node network namespace).
    #[arg(long, env = "MESHWORK_REDIRECT", value_enum, default_value = "off")]
    pub redirect: RedirectMode,
    /// Uplink the redirection attaches to (default: the IPv4 default route's device).
    #[arg(long, env = "MESHWORK_REDIRECT_UPLINK")]
    pub redirect_uplink: Option<String>,
    /// Root of the BPF pins (on a bpffs; its parent is mounted as one if needed). The
    /// node's pins are `<root>/<node>/`.
    #[arg(
        long,
        env = "MESHWORK_REDIRECT_PIN_ROOT",
        default_value = "/sys/fs/bpf/meshwork"
    )]
    pub redirect_pin_root: PathBuf,
    /// skb mark of captured packets (pick bits your CNI does not use).
    #[arg(long, env = "MESHWORK_REDIRECT_MARK", default_value = "0x1000", value_parser = crate::redirect::parse_mark)]
    pub redirect_mark: u32,
    /// Routing table of the `local 0.0.0.0/0 dev lo` route for marked packets.
    #[arg(long, env = "MESHWORK_REDIRECT_TABLE", default_value_t = 19799)]
    pub redirect_table: u32,
    /// `--redirect inpod`: the node-agent socket the CNI plugin hands pods to (a hostPath
    /// shared with the node; created mode 0600).
    #[arg(
        long,
        env = "MESHWORK_CNI_SOCKET",
        default_value = "/var/run/meshwork/cni.sock"
    )]
    pub cni_socket: PathBuf,
    /// `--redirect inpod`: where each handed-over pod's netns path is recorded, so a
    /// restarted ztunnel finds the pods again (a hostPath).
    #[arg(
        long,
        env = "MESHWORK_INPOD_STATE_DIR",
        default_value = "/var/run/meshwork/pods"
    )]
    pub inpod_state_dir: PathBuf,
    /// `--redirect inpod`: the container runtime's directory of pod network namespaces
    /// (containerd, CRI-O: `/var/run/netns`), scanned for captured pods that were never
    /// handed over (pods older than the mesh, lost records). Empty: no scan.
    #[arg(
        long,
        env = "MESHWORK_INPOD_NETNS_DIR",
        default_value = "/var/run/netns"
    )]
    pub inpod_netns_dir: PathBuf,
    /// `--redirect inpod`: how long a CNI ADD waits for the pod to appear in the config
    /// before failing (the runtime then retries).
    #[arg(long, env = "MESHWORK_INPOD_ENROLL_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub inpod_enroll_timeout: Duration,
    /// `--redirect inpod`: the cgroup v2 directory holding the pods (host's, mounted into
    /// the container), where `mw_pod_connect4` keeps the service address a root-cgroup
    /// socket-LB (Cilium's kube-proxy replacement) rewrites at `connect()`. Default: the
    /// kubelet's `kubepods.slice` or `kubepods` if present; empty: off.
    #[arg(long, env = "MESHWORK_INPOD_POD_CGROUP")]
    pub inpod_pod_cgroup: Option<PathBuf>,
    /// `--redirect inpod`: the node's own addresses (the chart passes `status.hostIPs`):
    /// never captured as destinations; as sources (kubelet probes) they reach pods
    /// directly, as in Istio.
    #[arg(long = "node-ip", env = "MESHWORK_NODE_IPS", value_delimiter = ',')]
    pub node_ips: Vec<std::net::IpAddr>,
    /// `--redirect inpod`: where the node agent (the chart's cni-installer container)
    /// writes, when this pod is stopped, whether the mesh is being uninstalled from the
    /// node (`uninstall`: every pod's capture is released) or not (`restart`: the pods stay
    /// captured). Read after the drain, waiting up to 5 s for it.
    #[arg(long, env = "MESHWORK_INPOD_STOP_DECISION_FILE")]
    pub inpod_stop_decision_file: Option<PathBuf>,

    /// Data-path threads, each a single-threaded runtime with its own listeners (shared
    /// with SO_REUSEPORT) and HBONE pool, so a connection never changes thread. 0: one per
    /// CPU (the binary); a library caller passing 0 serves on its own runtime.
    #[arg(long, env = "MESHWORK_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// Log and access-log format.
    #[arg(long, env = "MESHWORK_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,
    /// Disable per-connection access log lines.
    #[arg(long, default_value_t = false)]
    pub no_access_log: bool,
    /// On SIGTERM, how long open connections may take to finish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// TCP connect deadline (pods, HBONE peers, passthrough).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// HBONE streams per pooled connection before another is opened; each connection's
    /// receive window covers all its streams, so a stream whose reader stalls never
    /// stalls the others.
    #[arg(long, default_value_t = meshwork_hbone::DEFAULT_MAX_STREAMS_PER_CONN)]
    pub max_streams_per_conn: usize,
    /// Close pooled HBONE connections idle this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub pool_idle_timeout: Duration,
}

impl Config {
    /// Defaults for `node`, every listener as in production. Tests override addresses.
    pub fn for_node(node: &str) -> Config {
        Config::parse_from(["ztunnel", "--node", node])
    }

    /// Loopback-friendly defaults: every listener (SOCKS5 included: `ip` must be a loopback
    /// address) on `ip` with an OS-chosen port, except HBONE which must use `hbone_port` on
    /// the local pods' addresses (listed by the caller).
    pub fn loopback(node: &str, ip: std::net::IpAddr) -> Config {
        let any = |ip| Listen(Some(SocketAddr::new(ip, 0)));
        Config {
            outbound_addr: any(ip),
            socks5_addr: any(ip),
            inbound_plain_addr: any(ip),
            hbone_addrs: vec![],
            admin_addr: any(ip),
            metrics_addr: any(ip),
            readiness_addr: any(ip),
            ..Config::for_node(node)
        }
    }

    /// Refuses settings that would expose an entry meant for local use: a SOCKS5 listener
    /// on a non-loopback address.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(addr) = self.socks5_addr.0 {
            if !addr.ip().is_loopback() {
                return Err(ConfigError::Socks5NotLoopback { addr });
            }
        }
        Ok(())
    }

    /// The config stream's address, with the control plane's TLS roots.
    pub fn control_plane_endpoint(&self) -> Result<ControlPlane, ConfigError> {
        Ok(self.control.config_endpoint()?)
    }

    /// The CA's address (`--ca-address`, else the control plane's).
    pub fn ca_endpoint(&self) -> Result<ControlPlane, ConfigError> {
        Ok(self.control.ca_endpoint()?)
    }

    /// Where the node token comes from: --node-token-file (re-read on every use, as the
    /// kubelet rotates it) when given, else --node-token. The file must be readable now,
    /// so a wrong path fails at startup rather than at the first renewal.
    pub fn token(&self) -> Result<TokenSource, ConfigError> {
        let source = TokenSource::from_flags(&self.node_token, self.node_token_file.as_deref());
        source.current().map_err(ConfigError::TokenFile)?;
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_token_file_is_checked_at_startup_and_reread_later() {
        let dir = std::env::temp_dir().join(format!("ztunnel-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let mut cfg = Config::for_node("node-a");
        cfg.node_token = "literal".into();
        assert_eq!(cfg.token().unwrap().current().unwrap(), "literal");
        cfg.node_token_file = Some(path.clone());
        let e = cfg.token().unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "--node-token-file: reading the token file {}: ",
                path.display()
            )),
            "{e}"
        );
        std::fs::write(&path, "one\n").unwrap();
        let source = cfg.token().unwrap();
        std::fs::write(&path, "two\n").unwrap();
        assert_eq!(source.current().unwrap(), "two");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn listen_off_and_flags() {
        let c = Config::parse_from([
            "ztunnel",
            "--node",
            "n1",
            "--socks5-addr",
            "off",
            "--hbone-addr",
            "127.0.0.2:15008,127.0.0.3:15008",
            "--log-format",
            "json",
        ]);
        assert_eq!(c.socks5_addr, Listen(None));
        assert_eq!(
            Config::for_node("n1").socks5_addr,
            Listen(None),
            "off by default"
        );
        assert_eq!(c.hbone_addrs.len(), 2);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.outbound_addr.0.unwrap().port(), 15001);
        let e = "1.2.3".parse::<Listen>().unwrap_err();
        assert!(e.to_string().contains("1.2.3"));
    }

    #[test]
    fn socks5_only_on_loopback() {
        let mut c = Config::for_node("n1");
        assert!(c.validate().is_ok());
        for ok in ["127.0.0.1:15080", "127.77.0.1:0", "[::1]:15080"] {
            c.socks5_addr = ok.parse().unwrap();
            assert!(c.validate().is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0:15080", "10.1.2.3:15080", "[::]:15080"] {
            c.socks5_addr = bad.parse().unwrap();
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains("loopback"), "{bad}: {e}");
        }
    }
}
