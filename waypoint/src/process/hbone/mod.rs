//! HBONE: inbound CONNECT handling and the outbound connector.
//!
//! Each inbound CONNECT names a service `VIP:port` or a pod `ip:port` bound to this waypoint
//! (anything else, and any hop back into a waypoint, is refused before the tunnel opens: see
//! [`admission`](crate::process::admission)); the tunneled stream carries HTTP/1.1 or HTTP/2 (detected
//! from the first bytes) served by the [`L7Service`] with the peer's verified identity, or
//! other TCP, passed through with L4 authorization.

mod outbound;

pub use outbound::HboneConnector;

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use meshwork_hbone::forwarded::{self, ForwardedFor};
use meshwork_hbone::{ConnectHandler, ConnectRequest, Responder};
use meshwork_identity::SpiffeId;
use tracing::debug;

use crate::process::admission::{self, Connect, Me, Refusal};
use crate::process::server::{serve_connection, ServerLimits};
use crate::process::sniff::{detect, Detected};
use crate::process::tcp::proxy_tcp;
use crate::request::conn::ConnContext;
use crate::request::service::L7Service;
use crate::telemetry::access_log::Entry;

/// How long a tunneled stream may stay silent before it is treated as TCP.
const DETECT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// The waypoint's CONNECT handler.
#[derive(Clone)]
pub struct WaypointHandler {
    pub service: L7Service,
    pub limits: Arc<ServerLimits>,
    /// The identity this waypoint runs as: tunnels from it are loops.
    pub identity: SpiffeId,
}

/// The client to act on: the one named by `forwarded` only when the workload at that
/// address runs as the identity the tunnel authenticated (the source ztunnel presents the
/// client pod's own identity), so a mesh peer cannot borrow another pod's address to pass
/// `source.ipBlocks` or to take its labels; else the tunnel's source address.
fn vouched_source(
    snap: &meshwork_model::Snapshot,
    forwarded: Option<ForwardedFor>,
    peer: &meshwork_identity::SpiffeId,
    peer_addr: SocketAddr,
) -> SocketAddr {
    forwarded
        .filter(|f| snap.vouched_workload([f.ip], peer).is_some())
        .map_or(peer_addr, |f| f.addr_or(peer_addr.port()))
}

impl WaypointHandler {
    /// One access log line for a refused CONNECT (no request inside was read).
    fn log_refusal(&self, req: &ConnectRequest, refusal: &Refusal) {
        let log = &self.service.options().access_log;
        if !log.enabled() {
            return;
        }
        log.write(&Entry {
            start_time: crate::telemetry::access_log::humantime(std::time::SystemTime::now()),
            method: "CONNECT".into(),
            protocol: "HTTP/2".into(),
            response_code: refusal.status().as_u16(),
            response_flags: refusal.flag().into(),
            response_code_details: refusal.details().into(),
            authority: req.authority.clone(),
            downstream_remote_address: req.conn.peer_addr.to_string(),
            source_principal: req.conn.peer_identity.to_string(),
            ..Default::default()
        });
    }
}

impl ConnectHandler for WaypointHandler {
    async fn handle(&self, req: ConnectRequest, responder: Responder) {
        // A tunnel in flight keeps a draining waypoint up until it ends.
        let _in_flight = self.limits.drain.hold();
        let Ok(destination) = req.authority.parse::<SocketAddr>() else {
            debug!(authority = %req.authority, "HBONE CONNECT target is not ip:port");
            responder.refuse(StatusCode::BAD_REQUEST);
            return;
        };
        let cfg = self.service.config();
        let me = Me {
            waypoint: &self.service.options().waypoint,
            identity: &self.identity,
        };
        let connect = Connect {
            destination,
            local: req.conn.local_addr,
            peer: &req.conn.peer_identity,
        };
        if let Err(refusal) = admission::admit(&cfg.snapshot, me, connect) {
            debug!("HBONE CONNECT refused: {refusal}");
            self.log_refusal(&req, &refusal);
            responder.refuse(refusal.status());
            return;
        }
        let source = vouched_source(
            &cfg.snapshot,
            forwarded::client(&req.headers),
            &req.conn.peer_identity,
            req.conn.peer_addr,
        );
        // Not held for the tunnel's life: a long tunnel must not pin an old config.
        drop(cfg);
        let ctx = ConnContext {
            source_identity: Some(req.conn.peer_identity.to_string()),
            source: Some(source),
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
        let tunnel: SocketAddr = "10.9.9.9:40000".parse().unwrap();
        let named = |s: &str, port| {
            Some(ForwardedFor {
                ip: s.parse().unwrap(),
                port,
            })
        };
        let client = id("prod", "client");
        assert_eq!(
            vouched_source(&snap, named("10.0.0.5", Some(45678)), &client, tunnel),
            "10.0.0.5:45678".parse().unwrap()
        );
        assert_eq!(
            vouched_source(&snap, named("10.0.0.5", None), &client, tunnel),
            "10.0.0.5:40000".parse().unwrap()
        );
        // Another pod's address, an unknown address, or no header: the tunnel's source.
        for other in [named("10.0.0.6", Some(1)), named("10.1.1.1", None), None] {
            assert_eq!(vouched_source(&snap, other, &client, tunnel), tunnel);
        }
        // An empty service account is "default".
        let dflt = id("prod", "default");
        assert_eq!(
            vouched_source(&snap, named("10.0.0.6", Some(7)), &dflt, tunnel),
            "10.0.0.6:7".parse().unwrap()
        );
        assert_eq!(
            vouched_source(&snap, named("10.0.0.5", None), &id("dev", "client"), tunnel),
            tunnel
        );
    }
}
