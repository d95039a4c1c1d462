//! Captured plaintext inbound (15006): refused under STRICT mTLS, otherwise authorized
//! as an unauthenticated peer and relayed to the pod.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use meshwork_model::pb::config::{MtlsMode, Workload};
use tokio::net::TcpStream;

use crate::access_log::Record;
use crate::inbound::finish;
use crate::metrics::{Peers, Reporter, TcpSeries};
use crate::policy::{Authorizer, ConnAttrs, Verdict};
use crate::proxy::Proxy;
use crate::relay::{relay, Bytes};
use crate::scope::Scope;
use crate::state::{workload_ref, State};

/// Handles one captured plaintext connection to `dst`.
pub async fn handle(
    proxy: Arc<Proxy>,
    sock: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    scope: Scope,
) {
    let start = Instant::now();
    let mut rec = Record {
        direction: "inbound",
        src_addr: Some(peer),
        dst_addr: dst.to_string(),
        via: "plaintext",
        ..Default::default()
    };
    let cur = proxy.current();
    // An in-pod listener serves its own pod only.
    let Some(w) = scope.local_workload(&cur.state, dst.ip()).cloned() else {
        tracing::warn!(%peer, %dst, "plaintext inbound: destination is not a workload on this node");
        rec.decision = "deny: not a local workload".into();
        proxy.access.log(&rec);
        return;
    };
    rec.dst_workload = Some(workload_ref(&w));
    rec.dst_identity = cur.state.identity(&w).ok().map(|i| i.to_string());
    let src_w = cur.state.workload_by_ip(peer.ip()).cloned();
    rec.src_workload = src_w.as_ref().map(workload_ref);
    let peers = Peers {
        source: src_w.as_ref(),
        destination: Some(&w),
        destination_principal: rec.dst_identity.clone(),
        ..Default::default()
    };
    let (attrs, verdict) = match decide(&cur.state, &cur.authz, &w, peer, dst) {
        Decision::Strict => {
            tracing::warn!(%peer, %dst, workload = %workload_ref(&w), "plaintext refused: STRICT mTLS");
            proxy
                .metrics
                .refused(TcpSeries::new(Reporter::Destination, &peers, "DENY"));
            rec.decision = "deny: STRICT mTLS requires HBONE".into();
            proxy.access.log(&rec);
            return;
        }
        Decision::Policy(d) => *d,
    };
    if !verdict.allowed {
        tracing::warn!(%peer, %dst, reason = %verdict.reason, "plaintext refused by policy");
        proxy
            .metrics
            .refused(TcpSeries::new(Reporter::Destination, &peers, "DENY"));
        rec.decision = format!("deny: {}", verdict.reason);
        proxy.access.log(&rec);
        return;
    }
    rec.decision = format!("allow: {}", verdict.reason);
    let source_ip = proxy.cfg.transparent_inbound.then(|| peer.ip());
    let upstream = match scope
        .connect(dst, source_ip, proxy.cfg.connect_timeout)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            proxy
                .metrics
                .refused(TcpSeries::new(Reporter::Destination, &peers, "UF"));
            rec.error = Some(e.to_string());
            proxy.access.log(&rec);
            return;
        }
    };
    let counters = proxy
        .metrics
        .open(TcpSeries::new(Reporter::Destination, &peers, ""));
    drop(cur);
    let reg = proxy.registry.register(attrs, &proxy.force_close);
    let totals = Arc::new(Bytes::default());
    let end = relay(sock, upstream, totals.clone(), Some(&counters), &reg.cancel).await;
    counters.close();
    finish(&mut rec, &totals, end, start);
    proxy.access.log(&rec);
}

/// The destination ztunnel's decision on captured plaintext from `peer` to workload `w` at
/// `dst`, before any connection is made.
pub enum Decision {
    /// STRICT mTLS on the port: plaintext is refused before any policy.
    Strict,
    /// The L4 policy verdict for an unauthenticated peer (a workload served by a waypoint
    /// admits only the waypoint).
    Policy(Box<(ConnAttrs, Verdict)>),
}

/// Decides captured plaintext to `w` (see [`Decision`]).
pub fn decide(
    state: &State,
    authz: &Authorizer,
    w: &Workload,
    peer: SocketAddr,
    dst: SocketAddr,
) -> Decision {
    if State::mtls_mode(w, dst.port()) == MtlsMode::Strict {
        return Decision::Strict;
    }
    let attrs = ConnAttrs {
        src_identity: None,
        src_addr: peer,
        remote_ip: None,
        dst,
        dst_workload: workload_ref(w),
    };
    let verdict = authz.check(state, &attrs);
    Decision::Policy(Box::new((attrs, verdict)))
}
