//! Inbound HBONE (15008): mTLS with the destination pod's identity, CONNECT to a local
//! workload, L4 authorization, then a relay to the pod.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use meshwork_hbone::{forwarded, ConnectHandler, ConnectRequest, Responder, Server};
use meshwork_identity::SpiffeId;
use tokio::net::TcpStream;

use crate::access_log::Record;
use crate::metrics::{Peers, Reporter, TcpSeries};
use crate::policy::ConnAttrs;
use crate::proxy::Proxy;
use crate::relay::{relay_h2, Bytes, RelayEnd};
use crate::scope::Scope;
use crate::sockets;
use crate::state::workload_ref;
use crate::tracecontext;

/// Serves one accepted TCP connection on an HBONE listener.
pub async fn serve(proxy: Arc<Proxy>, sock: TcpStream, peer: SocketAddr, scope: Scope) {
    let Ok(local) = sock.local_addr() else { return };
    // The certificate to present is the identity of the pod the connection was sent to.
    let identity = {
        let cur = proxy.current();
        // TPROXY: the local address is the pod's; REDIRECT: ask for the original destination.
        let pod_ip = if cur.state.local_workload_by_ip(local.ip()).is_some() {
            local.ip()
        } else {
            sockets::original_dst(&sock)
                .map(|a| a.ip())
                .unwrap_or(local.ip())
        };
        // An in-pod listener serves its own pod only.
        match scope.local_workload(&cur.state, pod_ip) {
            Some(w) => match cur.state.identity(w) {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!(%peer, %local, error = %e, "hbone: refusing connection");
                    return;
                }
            },
            None => {
                tracing::warn!(%peer, %local, "hbone: refusing connection to an address that is not a local workload");
                return;
            }
        }
    };
    let tls = match proxy.certs.server_config(&identity) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(%peer, %local, error = %e, "hbone: refusing connection");
            return;
        }
    };
    let handler = Inbound {
        proxy: proxy.clone(),
        presented: identity,
        scope,
    };
    let server = Server::new(proxy.h2.clone());
    if let Err(e) = server
        .serve_tls(sock, tls, peer, local, handler, proxy.stop_accept.clone())
        .await
    {
        tracing::warn!(error = %e, "hbone connection refused or failed");
    }
}

#[derive(Clone)]
struct Inbound {
    proxy: Arc<Proxy>,
    presented: SpiffeId,
    scope: Scope,
}

impl ConnectHandler for Inbound {
    async fn handle(&self, req: ConnectRequest, responder: Responder) {
        let proxy = &self.proxy;
        let _task = proxy.tracker.token();
        let start = Instant::now();
        let peer_id = req.conn.peer_identity.clone();
        let mut rec = Record {
            direction: "inbound",
            src_addr: Some(req.conn.peer_addr),
            dst_addr: req.authority.clone(),
            src_identity: Some(peer_id.to_string()),
            via: "hbone",
            trace: tracecontext::for_access_log(&req.headers, &req.authority),
            ..Default::default()
        };
        let refuse = |rec: &mut Record, status: StatusCode, why: String, responder: Responder| {
            tracing::warn!(src = %req.conn.peer_addr, identity = %peer_id, authority = %req.authority, %status, reason = %why, "hbone: CONNECT refused");
            responder.refuse(status);
            rec.decision = format!("deny: {why}");
            rec.duration = start.elapsed();
            proxy.access.log(rec);
        };
        let Ok(dst) = req.authority.parse::<SocketAddr>() else {
            refuse(
                &mut rec,
                StatusCode::BAD_REQUEST,
                "authority is not ip:port".into(),
                responder,
            );
            return;
        };
        let cur = proxy.current();
        let Some(w) = self.scope.local_workload(&cur.state, dst.ip()) else {
            refuse(
                &mut rec,
                StatusCode::BAD_REQUEST,
                format!("{dst} is not a workload on this node"),
                responder,
            );
            return;
        };
        let w = w.clone();
        let dst_identity = cur.state.identity(&w).ok();
        rec.dst_workload = Some(workload_ref(&w));
        rec.dst_identity = dst_identity.as_ref().map(|i| i.to_string());
        if dst_identity.as_ref() != Some(&self.presented) {
            refuse(
                &mut rec,
                StatusCode::BAD_REQUEST,
                format!(
                    "{dst} belongs to {}, not to the identity this connection authenticated",
                    workload_ref(&w)
                ),
                responder,
            );
            return;
        }
        // The source pod for labels and logs: by the connection's source address (preserved
        // in production) or the `forwarded` client address, kept only when that workload
        // runs as the authenticated identity.
        let forwarded = forwarded::client(&req.headers);
        let candidates = [Some(req.conn.peer_addr.ip()), forwarded.map(|f| f.ip)];
        let (src_ip, src_w) = cur
            .state
            .snapshot
            .vouched_workload(candidates.into_iter().flatten(), &peer_id)
            .map(|(ip, w)| (Some(ip), Some(w.clone())))
            .unwrap_or_default();
        rec.src_workload = src_w.as_ref().map(workload_ref);
        let peers = Peers {
            source: src_w.as_ref(),
            source_principal: Some(peer_id.to_string()),
            destination: Some(&w),
            destination_principal: rec.dst_identity.clone(),
            service: None,
            mtls: true,
        };
        // Policy and the access log see the client pod's address (`source.ipBlocks` names
        // pods, as in Istio), the tunnel's source only when no workload behind it is
        // vouched for.
        let client_addr = match forwarded.filter(|f| Some(f.ip) == src_ip) {
            Some(f) => f.addr_or(req.conn.peer_addr.port()),
            None => req.conn.peer_addr,
        };
        rec.src_addr = Some(client_addr);
        let attrs = ConnAttrs {
            src_identity: Some(peer_id.clone()),
            src_addr: client_addr,
            // The original client named by `forwarded` is trusted only from this pod's waypoint.
            remote_ip: cur
                .state
                .waypoint_of(&w)
                .and_then(|gw| cur.state.waypoint_identity(&gw).ok())
                .filter(|wp| wp == &peer_id)
                .and(forwarded.map(|f| f.ip)),
            dst,
            dst_workload: workload_ref(&w),
        };
        let verdict = cur.authz.check(&cur.state, &attrs);
        if !verdict.allowed {
            proxy
                .metrics
                .refused(TcpSeries::new(Reporter::Destination, &peers, "DENY"));
            refuse(
                &mut rec,
                StatusCode::UNAUTHORIZED,
                verdict.reason,
                responder,
            );
            return;
        }
        rec.decision = format!("allow: {}", verdict.reason);
        // Transparent: the pod sees the client pod's own address when the connection's
        // identity vouches for it (the source node's ztunnel dials from the node), else
        // the tunnel's source address. Replies from the pod (an enrolled source) are
        // captured back to this socket by the redirection.
        let source_ip = proxy.cfg.transparent_inbound.then(|| client_addr.ip());
        let upstream = match self
            .scope
            .connect(dst, source_ip, proxy.cfg.connect_timeout)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                proxy
                    .metrics
                    .refused(TcpSeries::new(Reporter::Destination, &peers, "UF"));
                refuse(
                    &mut rec,
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("connecting to {dst}: {e}"),
                    responder,
                );
                return;
            }
        };
        let Ok(tunnel) = responder.accept() else {
            return;
        };
        let counters = proxy
            .metrics
            .open(TcpSeries::new(Reporter::Destination, &peers, ""));
        drop(cur);
        let reg = proxy.registry.register(attrs, &proxy.force_close);
        let totals = Arc::new(Bytes::default());
        let end = relay_h2(
            upstream,
            tunnel,
            false,
            totals.clone(),
            Some(&counters),
            &reg.cancel,
        )
        .await;
        counters.close();
        finish(&mut rec, &totals, end, start);
        proxy.access.log(&rec);
    }
}

pub(crate) fn finish(rec: &mut Record, totals: &Bytes, end: RelayEnd, start: Instant) {
    use std::sync::atomic::Ordering;
    rec.sent = totals.sent.load(Ordering::Relaxed);
    rec.received = totals.received.load(Ordering::Relaxed);
    rec.duration = start.elapsed();
    match end {
        RelayEnd::Done => {}
        RelayEnd::Error(e) => rec.error = Some(e.to_string()),
        RelayEnd::Cancelled => rec.error = Some("closed by proxy (policy change or drain)".into()),
    }
}
