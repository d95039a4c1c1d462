//! HBONE: inbound CONNECT handling and the outbound connector.
//!
//! Each inbound CONNECT names a service `VIP:port`; the tunneled stream carries HTTP/1.1 or
//! HTTP/2 (detected from the first bytes) served by the [`L7Service`] with the peer's verified
//! identity, or other TCP, passed through with L4 authorization.

mod outbound;

pub use outbound::HboneConnector;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::StatusCode;
use meshwork_hbone::{ConnectHandler, ConnectRequest, Responder};
use tracing::debug;

use crate::server::{serve_connection, ServerLimits};
use crate::service::{ConnContext, L7Service};
use crate::sniff::{detect, Detected};
use crate::tcp::proxy_tcp;

/// How long a tunneled stream may stay silent before it is treated as TCP.
const DETECT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// The waypoint's CONNECT handler.
#[derive(Clone)]
pub struct WaypointHandler {
    pub service: L7Service,
    pub limits: Arc<ServerLimits>,
}

/// The original client address from a `Forwarded: for=<ip>` header, as Istio's HBONE sends.
fn forwarded_for(headers: &http::HeaderMap) -> Option<IpAddr> {
    let v = headers.get("forwarded")?.to_str().ok()?;
    v.split([';', ','])
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("for"))
        .and_then(|(_, ip)| {
            ip.trim_matches('"')
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()
        })
}

/// The client address to act on: the `forwarded` one only when the workload at that
/// address runs as the identity the tunnel authenticated (the source ztunnel presents the
/// client pod's own identity), so a mesh peer cannot borrow another pod's address to pass
/// `source.ipBlocks` or to take its labels; else the tunnel's source address.
fn vouched_source(
    snap: &meshwork_model::Snapshot,
    forwarded: Option<IpAddr>,
    peer: &meshwork_identity::SpiffeId,
    peer_addr: IpAddr,
) -> IpAddr {
    snap.vouched_workload(forwarded, peer)
        .map_or(peer_addr, |(ip, _)| ip)
}

impl ConnectHandler for WaypointHandler {
    async fn handle(&self, req: ConnectRequest, responder: Responder) {
        let Ok(destination) = req.authority.parse::<SocketAddr>() else {
            debug!(authority = %req.authority, "HBONE CONNECT target is not ip:port");
            responder.refuse(StatusCode::BAD_REQUEST);
            return;
        };
        let source_ip = vouched_source(
            &self.service.config().snapshot,
            forwarded_for(&req.headers),
            &req.conn.peer_identity,
            req.conn.peer_addr.ip(),
        );
        let ctx = ConnContext {
            source_identity: Some(req.conn.peer_identity.to_string()),
            source: Some(SocketAddr::new(source_ip, 0)),
            destination: Some(destination),
        };
        let stream = match responder.accept() {
            Ok(s) => s,
            Err(e) => {
                debug!("HBONE accept failed: {e}");
                return;
            }
        };
        match detect(stream, DETECT_TIMEOUT).await {
            Ok((Detected::Http, s)) => {
                serve_connection(s, self.service.clone(), ctx, &self.limits).await;
            }
            Ok((Detected::Tcp, s)) => match proxy_tcp(&self.service, s, &ctx).await {
                Ok((up, down)) => debug!(up, down, "tcp passthrough done"),
                Err(e) => tracing::info!(authority = %req.authority, "tcp passthrough: {e}"),
            },
            Err(e) => debug!("HBONE stream failed before detection: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_address_needs_the_matching_identity() {
        use meshwork_model::keys::make_resource;
        use meshwork_model::pb::config::{resource, Workload};
        use meshwork_model::Kind;
        let mut res = std::collections::BTreeMap::new();
        for (name, ip, sa) in [("client", "10.0.0.5", "client"), ("other", "10.0.0.6", "")] {
            let key = Kind::Workload.key("prod", name);
            let w = Workload {
                name: name.into(),
                namespace: "prod".into(),
                addresses: vec![ip.into()],
                service_account: sa.into(),
                ..Default::default()
            };
            let r = make_resource(key.clone(), resource::Kind::Workload(w));
            res.insert(key, Arc::new(r));
        }
        let snap = meshwork_model::Snapshot::new(1, res);
        let id = |ns, sa| meshwork_identity::SpiffeId::new("cluster.local", ns, sa).unwrap();
        let tunnel: IpAddr = "10.9.9.9".parse().unwrap();
        let at = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let client = id("prod", "client");
        assert_eq!(
            vouched_source(&snap, at("10.0.0.5"), &client, tunnel),
            at("10.0.0.5").unwrap()
        );
        // Another pod's address, an unknown address, or no header: the tunnel's source.
        assert_eq!(
            vouched_source(&snap, at("10.0.0.6"), &client, tunnel),
            tunnel
        );
        assert_eq!(
            vouched_source(&snap, at("10.1.1.1"), &client, tunnel),
            tunnel
        );
        assert_eq!(vouched_source(&snap, None, &client, tunnel), tunnel);
        // An empty service account is "default".
        let dflt = id("prod", "default");
        assert_eq!(
            vouched_source(&snap, at("10.0.0.6"), &dflt, tunnel),
            at("10.0.0.6").unwrap()
        );
        assert_eq!(
            vouched_source(&snap, at("10.0.0.5"), &id("dev", "client"), tunnel),
            tunnel
        );
    }

    #[test]
    fn forwarded_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(forwarded_for(&h), None);
        h.insert("forwarded", "for=10.1.2.3".parse().unwrap());
        assert_eq!(forwarded_for(&h), Some("10.1.2.3".parse().unwrap()));
        h.insert("forwarded", "proto=http;for=\"[fd00::1]\"".parse().unwrap());
        assert_eq!(forwarded_for(&h), Some("fd00::1".parse().unwrap()));
    }
}
