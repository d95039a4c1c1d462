//! The waypoint process: configuration, certificate, listeners.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use meshwork_hbone::{H2Settings, Pool, PoolSettings, Server, HBONE_PORT};
use meshwork_identity::tls::{server_config, RotatingCert};
use meshwork_identity::{SpiffeId, TrustBundle};
use meshwork_model::client::{self, ConfigHandle, Subscription};
use meshwork_model::endpoint::ControlPlane;
use meshwork_model::flags::ControlPlaneFlags;
use meshwork_model::pb::config::ProxyKind;
use meshwork_model::token::TokenSource;
use meshwork_runtime::drain::{accept_until, Drain};
use meshwork_runtime::log::{LineSink, Stream};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::{validate, WaypointId};
use crate::process::admin::{Admin, Listen, Scope};
use crate::process::certs::{keep_renewed, CaClient, Source};
use crate::process::hbone::{HboneConnector, WaypointHandler};
use crate::process::server::{serve_connection, ServerLimits};
use crate::process::shutdown;
use crate::request::conn::ConnContext;
use crate::request::service::{L7Service, Options};
use crate::telemetry::access_log::AccessLog;
use crate::upstream::connector::{Connector, TcpConnector};

/// `--log-format`: the runtime's log line format, for both proxies.
pub use meshwork_runtime::log::Format as LogFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Upstream {
    /// HBONE to the endpoint's node (the mesh).
    Hbone,
    /// Plain TCP to the endpoint address (development, benchmarks).
    Plain,
}

#[derive(Debug, Clone, Parser)]
#[command(name = "waypoint", about = "Meshwork waypoint: per-namespace L7 proxy")]
pub struct Args {
    /// Read the config from this file (protobuf ConfigUpdate) instead of the control plane.
    #[arg(long, env = "MESHWORK_STATIC_CONFIG")]
    pub static_config: Option<PathBuf>,
    #[command(flatten)]
    pub control: ControlPlaneFlags,
    /// The waypoint Gateway as `<namespace>/<name>` (or use --namespace and --name).
    #[arg(long, env = "MESHWORK_GATEWAY")]
    pub gateway: Option<String>,
    /// Namespace of the waypoint Gateway.
    #[arg(long, env = "MESHWORK_WAYPOINT_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of the waypoint Gateway.
    #[arg(long, env = "MESHWORK_WAYPOINT_NAME", default_value = "waypoint")]
    pub name: String,
    /// Service account the waypoint runs as (its SPIFFE identity).
    #[arg(long, env = "MESHWORK_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    #[arg(long, env = "MESHWORK_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    #[arg(long, env = "MESHWORK_TOKEN", default_value = "")]
    pub token: String,
    #[arg(long, env = "MESHWORK_TOKEN_FILE", alias = "node-token-file")]
    pub token_file: Option<PathBuf>,
    /// Extra roots to trust for the CA's answer.
    #[arg(long, env = "MESHWORK_CA_ROOTS_FILE")]
    pub ca_roots_file: Option<PathBuf>,
    /// Load the certificate from this directory instead of asking the CA.
    #[arg(long, env = "MESHWORK_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 86_400)]
    pub cert_ttl_secs: u64,
    /// HBONE listener.
    #[arg(long, env = "MESHWORK_HBONE_ADDR", default_value = "0.0.0.0:15008")]
    pub hbone_addr: SocketAddr,
    /// Optional plaintext HTTP listener (no peer identity), for local use and benchmarks.
    #[arg(long, env = "MESHWORK_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Admin (`/config_dump`, `/clusters`, `/certs`, and the endpoints below): loopback, as
    /// Envoy's; `off` for none.
    #[arg(long, env = "MESHWORK_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: Listen,
    /// Prometheus `/metrics` only; `off` for none.
    #[arg(long, env = "MESHWORK_METRICS_ADDR", default_value = "0.0.0.0:15020")]
    pub metrics_addr: Listen,
    /// Readiness probe `/healthz/ready` only; `off` for none.
    #[arg(long, env = "MESHWORK_READINESS_ADDR", default_value = "0.0.0.0:15021")]
    pub readiness_addr: Listen,
    #[arg(long, env = "MESHWORK_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,
    #[arg(long, value_enum, default_value = "hbone")]
    pub upstream: Upstream,
    /// Run without a certificate (only with --upstream plain and --http-addr).
    #[arg(long, default_value_t = false)]
    pub insecure: bool,
    #[arg(long, default_value_t = false)]
    pub no_access_log: bool,
    #[arg(long, default_value_t = 60 * 1024)]
    pub max_header_bytes: usize,
    /// On SIGTERM, how long to keep serving the requests and tunnels in flight (Istio's
    /// `terminationDrainDuration`). Readiness fails and the listeners close at once; the
    /// process exits as soon as nothing is in flight, or when this period ends.
    #[arg(
        long,
        env = "MESHWORK_TERMINATION_DRAIN_DURATION",
        default_value = shutdown::DEFAULT_DRAIN,
        value_parser = shutdown::parse_duration
    )]
    pub termination_drain_duration: Duration,
    /// A request whose body sends nothing for this long is ended with 408 (Envoy's
    /// `stream_idle_timeout`; 0 disables it).
    #[arg(
        long,
        env = "MESHWORK_STREAM_IDLE_TIMEOUT",
        default_value = "5m",
        value_parser = shutdown::parse_duration
    )]
    pub stream_idle_timeout: Duration,
    /// Send trace spans (OTLP/gRPC) here, `host:port` or URL, instead of the Telemetry
    /// provider's service.
    #[arg(long, env = "MESHWORK_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Where WasmPlugin modules fetched over https/oci are kept, by digest (default: a
    /// `meshwork-wasm` directory under the temporary directory).
    #[arg(long, env = "MESHWORK_WASM_CACHE_DIR")]
    pub wasm_cache_dir: Option<PathBuf>,
}

impl Args {
    /// Where the token comes from: --token-file (re-read for every CSR and config-stream
    /// connect, as the kubelet rotates it) when given, else --token. The file must be
    /// readable at startup.
    fn token(&self) -> anyhow::Result<TokenSource> {
        let source = TokenSource::from_flags(&self.token, self.token_file.as_deref());
        source
            .current()
            .map_err(|e| anyhow::anyhow!("--token-file: {e}"))?;
        Ok(source)
    }

    /// The Gateway this waypoint implements: `--gateway ns/name`, else `--namespace`/`--name`.
    pub fn waypoint(&self) -> anyhow::Result<WaypointId> {
        if let Some(g) = &self.gateway {
            let (ns, name) = g
                .split_once('/')
                .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
                .ok_or_else(|| anyhow::anyhow!("--gateway {g:?}: want <namespace>/<name>"))?;
            return Ok(WaypointId {
                namespace: ns.to_string(),
                name: name.to_string(),
            });
        }
        let namespace = self.namespace.clone().ok_or_else(|| {
            anyhow::anyhow!("name the waypoint with --gateway ns/name or --namespace")
        })?;
        Ok(WaypointId {
            namespace,
            name: self.name.clone(),
        })
    }

    fn identity(&self, w: &WaypointId) -> anyhow::Result<SpiffeId> {
        let sa = self
            .service_account
            .clone()
            .unwrap_or_else(|| w.name.clone());
        SpiffeId::new(self.trust_domain.clone(), w.namespace.clone(), sa)
            .map_err(|e| anyhow::anyhow!("waypoint identity: {e}"))
    }
}

impl Args {
    /// The config stream's and the CA's addresses, with the control plane's TLS roots.
    fn control_plane_endpoints(&self) -> anyhow::Result<(ControlPlane, ControlPlane)> {
        Ok((self.control.config_endpoint()?, self.control.ca_endpoint()?))
    }
}

/// Runs the waypoint until SIGTERM/SIGINT, then drains (see [`shutdown`]).
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.insecure && (args.upstream != Upstream::Plain || args.http_addr.is_none()) {
        anyhow::bail!("--insecure needs --upstream plain and --http-addr");
    }
    let token = args.token()?;
    let waypoint = args.waypoint()?;
    let (control_plane, ca_endpoint) = args.control_plane_endpoints()?;
    let identity = args.identity(&waypoint)?;
    let config: ConfigHandle = match &args.static_config {
        Some(path) => ConfigHandle::fixed(meshwork_model::static_config::load(
            path,
            crate::config::validate,
        )?),
        None => client::spawn(
            control_plane,
            Subscription {
                kind: ProxyKind::Waypoint,
                namespace: waypoint.namespace.clone(),
                name: waypoint.name.clone(),
                proxy_id: format!("waypoint~{}~{}", waypoint.namespace, waypoint.name),
                token: token.clone(),
                ..Default::default()
            },
            Some(Arc::new(validate)),
        ),
    };

    let ready = Arc::new(AtomicBool::new(false));
    let cert = if args.insecure {
        None
    } else {
        let extra_roots = match &args.ca_roots_file {
            Some(p) => {
                let pem = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("reading --ca-roots-file {}: {e}", p.display()))?;
                Some(TrustBundle::from_pem("--ca-roots-file", &pem)?)
            }
            None => None,
        };
        let source = Arc::new(match &args.cert_dir {
            Some(d) => Source::Dir(d.clone()),
            None => Source::Ca(CaClient::new(
                ca_endpoint,
                token,
                Duration::from_secs(args.cert_ttl_secs),
                extra_roots,
            )?),
        });
        let first = source.initial(&identity, 30).await?;
        info!(%identity, serial = first.serial(), "waypoint certificate loaded");
        let cert = RotatingCert::new(first);
        tokio::spawn(keep_renewed(
            source,
            identity.clone(),
            cert.clone(),
            crate::process::certs::mesh_roots(config.watch()),
        ));
        Some(cert)
    };
    ready.store(true, Ordering::Release);

    let connector: Arc<dyn Connector> = match (args.upstream, &cert) {
        (Upstream::Plain, _) => Arc::new(TcpConnector),
        (Upstream::Hbone, Some(cert)) => Arc::new(HboneConnector::new(
            Pool::new(PoolSettings::default()),
            cert.clone(),
            HBONE_PORT,
        )),
        (Upstream::Hbone, None) => anyhow::bail!("--upstream hbone needs a certificate"),
    };
    let mut registry = Registry::default();
    meshwork_metrics::register_log_drops(&mut registry);
    // The guard is held until the waypoint stops: dropping it writes the queued lines.
    let (access_log, _access_guard) = if args.no_access_log {
        (AccessLog::Off, None)
    } else {
        let (sink, guard) =
            LineSink::new(Stream::Stdout, "waypoint-access").context("opening the access log")?;
        (AccessLog::Sink(sink), Some(guard))
    };
    let svc = L7Service::new(
        config.clone(),
        connector,
        Options {
            waypoint,
            access_log,
            stream_idle_timeout: args.stream_idle_timeout,
            tracing: crate::telemetry::tracing::TracingOptions {
                otlp_endpoint: args.otlp_endpoint.clone(),
                ..Default::default()
            },
            wasm: crate::wasm::WasmOptions {
                // One plugin instance per worker thread of this runtime, as Envoy has one VM
                // per worker.
                workers: tokio::runtime::Handle::current()
                    .metrics()
                    .num_workers()
                    .max(1),
                cache_dir: Some(
                    args.wasm_cache_dir
                        .clone()
                        .unwrap_or_else(|| std::env::temp_dir().join("meshwork-wasm")),
                ),
                ..Default::default()
            },
            ..Default::default()
        },
        &mut registry,
    );
    let drain = Drain::new();
    let limits = Arc::new(ServerLimits {
        max_header_bytes: args.max_header_bytes,
        drain: drain.clone(),
        ..Default::default()
    });

    let admin = Admin {
        registry: Arc::new(registry),
        config: config.clone(),
        ready: ready.clone(),
        service: Some(svc.clone()),
        cert: cert.clone(),
    };
    for (flag, Listen(addr), scope) in [
        ("--admin-addr", args.admin_addr, Scope::Admin),
        ("--metrics-addr", args.metrics_addr, Scope::Metrics),
        ("--readiness-addr", args.readiness_addr, Scope::Readiness),
    ] {
        let Some(addr) = addr else { continue };
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding {flag} {addr}: {e}"))?;
        tokio::spawn(admin.clone().serve(l, scope));
    }

    if let Some(addr) = args.http_addr {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding --http-addr {addr}: {e}"))?;
        info!(%addr, "plaintext HTTP listener");
        let svc = svc.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            // Dropping the listener when the drain starts refuses new connections.
            while let Some((s, peer)) = accept_until(&l, "http", &limits.drain).await {
                let _ = meshwork_runtime::socket::tune(&s);
                let svc = svc.clone();
                let limits = limits.clone();
                limits.drain.clone().spawn(async move {
                    let ctx = ConnContext {
                        source_identity: None,
                        source: Some(peer),
                        destination: None,
                    };
                    serve_connection(s, svc, ctx, &limits).await;
                });
            }
        });
    }

    if let Some(cert) = &cert {
        let roots = cert.current().roots().clone();
        let tls = server_config(&roots, cert.clone())?;
        let l = TcpListener::bind(args.hbone_addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding --hbone-addr {}: {e}", args.hbone_addr))?;
        info!(addr = %args.hbone_addr, "HBONE listener");
        let handler = WaypointHandler {
            service: svc.clone(),
            limits: limits.clone(),
            identity: identity.clone(),
        };
        let drain = drain.clone();
        tokio::spawn(async move {
            let server = Server::new(H2Settings::default());
            while let Some((s, peer)) = accept_until(&l, "hbone", &drain).await {
                let _ = meshwork_runtime::socket::tune(&s);
                let local = s.local_addr().unwrap_or(peer);
                let (server, tls, handler, goaway) =
                    (server.clone(), tls.clone(), handler.clone(), drain.token());
                // The HBONE connection sends GOAWAY when the drain starts and ends once its
                // tunnels have.
                drain.spawn(async move {
                    if let Err(e) = server.serve_tls(s, tls, peer, local, handler, goaway).await {
                        warn!("HBONE connection: {e}");
                    }
                });
            }
        });
    }

    shutdown::signal().await;
    shutdown::drain(&drain, &ready, args.termination_drain_duration).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Args {
        Args::try_parse_from(["waypoint"].iter().chain(extra)).unwrap()
    }

    #[test]
    fn gateway_flag_and_chart_args() {
        let a = parse(&[
            "--control-plane=http://cp:15010",
            "--gateway=production/waypoint",
            "--node-token-file=/tmp/token",
            "--log-format=json",
        ]);
        let w = a.waypoint().unwrap();
        assert_eq!(
            (w.namespace.as_str(), w.name.as_str()),
            ("production", "waypoint")
        );
        assert_eq!(
            a.token_file.as_deref(),
            Some(std::path::Path::new("/tmp/token"))
        );
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(
            a.identity(&w).unwrap().to_string(),
            "spiffe://cluster.local/ns/production/sa/waypoint"
        );
        let b = parse(&["--namespace", "shop", "--name", "wp"]);
        assert_eq!(b.waypoint().unwrap().name, "wp");
        for bad in ["production", "/x", "a/", "a/b/c"] {
            assert!(parse(&["--gateway", bad]).waypoint().is_err(), "{bad}");
        }
        assert!(parse(&[]).waypoint().is_err());
        // Admin on loopback; metrics and readiness on the pod IP, each on its own listener.
        let d = parse(&[]);
        assert_eq!(
            d.admin_addr,
            Listen(Some("127.0.0.1:15000".parse().unwrap()))
        );
        assert_eq!(
            d.metrics_addr,
            Listen(Some("0.0.0.0:15020".parse().unwrap()))
        );
        assert_eq!(
            d.readiness_addr,
            Listen(Some("0.0.0.0:15021".parse().unwrap()))
        );
        assert_eq!(parse(&["--metrics-addr", "off"]).metrics_addr, Listen(None));
        assert_eq!(parse(&[]).otlp_endpoint, None);
        assert_eq!(
            parse(&[]).termination_drain_duration,
            Duration::from_secs(5)
        );
        assert_eq!(
            parse(&["--termination-drain-duration", "1.5s"]).termination_drain_duration,
            Duration::from_millis(1500)
        );
        assert!(
            Args::try_parse_from(["waypoint", "--termination-drain-duration", "soon"]).is_err()
        );
        assert_eq!(parse(&[]).stream_idle_timeout, Duration::from_secs(300));
        assert_eq!(
            parse(&["--stream-idle-timeout", "0s"]).stream_idle_timeout,
            Duration::ZERO
        );
        assert_eq!(
            parse(&["--otlp-endpoint", "127.0.0.1:4317"])
                .otlp_endpoint
                .as_deref(),
            Some("127.0.0.1:4317")
        );
    }
}
