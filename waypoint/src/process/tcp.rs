//! TCP passthrough for non-HTTP traffic reaching the waypoint: L4 authorization with the
//! destination's policies, then a byte copy to an endpoint (TCP routes, else the service).

use meshwork_authz::{evaluate, RequestContext};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info};

use crate::request::conn::ConnContext;
use crate::request::routing::pick_weighted;
use crate::request::service::L7Service;
use crate::upstream::cluster;

#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    #[error("no service for destination {0:?}")]
    NoService(Option<std::net::SocketAddr>),
    #[error("connection denied by authorization policy: {0}")]
    Denied(String),
    #[error("no healthy endpoint for {0}")]
    NoEndpoint(String),
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Proxies one non-HTTP stream; returns bytes (sent upstream, sent back).
pub async fn proxy_tcp<S>(
    svc: &L7Service,
    mut io: S,
    ctx: &ConnContext,
) -> Result<(u64, u64), TcpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = svc.config();
    let snap = cfg.snapshot.clone();
    let dst = ctx.destination;
    let service = dst
        .and_then(|d| snap.service_by_vip(d.ip()))
        .cloned()
        .ok_or(TcpError::NoService(dst))?;
    let port = dst.map(|d| d.port()).unwrap_or(0);
    let policies = cfg.policies(&svc.options().waypoint, &service);
    let actx = RequestContext {
        source_principal: ctx.source_identity.clone(),
        source_ip: ctx.source.map(|s| s.ip()),
        destination_ip: dst.map(|d| d.ip()),
        destination_port: port,
        ..Default::default()
    };
    let d = evaluate(policies.iter().map(|p| p.as_ref()), &actx);
    if !d.allowed {
        info!(reason = %d.reason, "tcp: denied");
        return Err(TcpError::Denied(d.reason));
    }
    // TCP routes: the first whose port matches (0 = any).
    let route = cfg.route(&service);
    let tcp_dest = route
        .and_then(|r| {
            r.config
                .tcp
                .iter()
                .find(|t| t.port == 0 || t.port == u32::from(port))
        })
        .and_then(|t| pick_weighted(&t.route, &mut rand::rng()).cloned())
        .and_then(|w| w.destination);
    let (target_svc, subset, dport) = match &tcp_dest {
        Some(dest) => {
            let s = snap
                .service_by_host(&dest.host, &service.namespace)
                .cloned()
                .ok_or(TcpError::NoService(dst))?;
            let p = if dest.port != 0 {
                dest.port as u16
            } else {
                port
            };
            (s, dest.subset.clone(), p)
        }
        None => (service.clone(), String::new(), port),
    };
    let rc = snap.route(&target_svc.namespace, &target_svc.hostname);
    let (_, labels) = cluster::traffic_policy(rc, &subset);
    let eps = cluster::endpoints(&snap, &target_svc, dport, labels);
    let ep = eps
        .get(rand::random_range(0..eps.len().max(1)))
        .cloned()
        .ok_or_else(|| TcpError::NoEndpoint(target_svc.hostname.clone()))?;
    let mut up = svc
        .connector()
        .connect(&ep.target())
        .await
        .map_err(|source| TcpError::Connect {
            addr: ep.addr,
            source,
        })?;
    debug!(upstream = %ep.addr, "tcp: proxying");
    let copied = tokio::io::copy_bidirectional(&mut io, &mut up)
        .await
        .unwrap_or_default();
    Ok(copied)
}
