//! Outbound: a local workload's connection (captured on 15001 or via SOCKS5) routed to
//! its destination over HBONE (pod or waypoint), or passed through for destinations
//! outside the mesh.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use meshwork_hbone::{ClientError, H2Stream, PoolKey};
use meshwork_model::pb::config::Workload;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::access_log::Record;
use crate::certs::CertError;
use crate::inbound::finish;
use crate::metrics::{Peers, Reporter, TcpSeries};
use crate::proxy::Proxy;
use crate::redirect::RedirectMode;
use crate::relay::{relay, relay_h2, Bytes};
use crate::scope::Scope;
use crate::state::{workload_ref, Route, State, StateError, Target};

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("no local workload for source {peer} (set --local-workload or a SOCKS5 username <ns>/<name>)")]
    NoSource { peer: SocketAddr },
    #[error("source workload {workload} is not on node {node}")]
    SourceNotLocal { workload: String, node: String },
    #[error("workload {workload} named by the SOCKS5 username does not exist")]
    UnknownSource { workload: String },
    #[error(
        "SOCKS5 username {workload:?} refused: a username may name the source workload only \
         when this ztunnel captures no traffic (--redirect off)"
    )]
    UsernameWithCapture { workload: String },
    #[error("SOCKS5 relays to mesh destinations only; {target} is not a service or workload of the mesh")]
    NotMesh { target: String },
    #[error(transparent)]
    Route(Box<StateError>),
    #[error(transparent)]
    Cert(Box<CertError>),
    #[error(transparent)]
    Hbone(Box<ClientError>),
    #[error("resolving {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("connecting to {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
}

/// How a connection reached the ztunnel: this decides what may name its source and where
/// it may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// Captured from a pod: the source is the workload owning the client's address.
    Captured,
    /// The SOCKS5 entry (local development): the source may be named by the username, and
    /// only mesh destinations are reachable.
    Socks5 { username: Option<&'a str> },
}

impl<'a> Entry<'a> {
    fn username(self) -> Option<&'a str> {
        match self {
            Entry::Socks5 { username } => username.filter(|u| !u.is_empty()),
            Entry::Captured => None,
        }
    }
}

pub enum Upstream {
    Hbone(H2Stream),
    Tcp(TcpStream),
}

/// An established upstream, ready to relay.
pub struct Opened {
    pub upstream: Upstream,
    rec: Record,
    labels: TcpSeries,
    start: Instant,
}

fn source_workload(
    proxy: &Proxy,
    cur: &crate::proxy::Current,
    peer: SocketAddr,
    entry: Entry<'_>,
    scope: &Scope,
) -> Result<Workload, OutboundError> {
    let st = &cur.state;
    if let Some(name) = entry.username() {
        return named_source(st, proxy.cfg.redirect, name).cloned();
    }
    let w = if scope.pod_scope().is_some() {
        // In a pod's namespace the source is that pod (checked by the listener).
        scope
            .local_workload(st, peer.ip())
            .ok_or(OutboundError::NoSource { peer })?
    } else if let Some(w) = st.workload_by_ip(peer.ip()) {
        w
    } else if let Some(w) = proxy
        .cfg
        .local_workload
        .as_deref()
        .and_then(|r| st.workload_by_ref(r))
    {
        w
    } else {
        return Err(OutboundError::NoSource { peer });
    };
    local(st, w)
}

/// The source named by a SOCKS5 username. A username is a claim nothing proves: any local
/// process could make it. It is honoured only where every local process is trusted anyway
/// (no capture: a developer's machine or a test), and only for this node's workloads.
fn named_source<'s>(
    st: &'s State,
    redirect: RedirectMode,
    name: &str,
) -> Result<&'s Workload, OutboundError> {
    if redirect != RedirectMode::Off {
        return Err(OutboundError::UsernameWithCapture {
            workload: name.to_string(),
        });
    }
    let w = st
        .workload_by_ref(name)
        .ok_or_else(|| OutboundError::UnknownSource {
            workload: name.to_string(),
        })?;
    local(st, w).map(|_| w)
}

fn local(st: &State, w: &Workload) -> Result<Workload, OutboundError> {
    if !st.is_local(w) {
        return Err(OutboundError::SourceNotLocal {
            workload: workload_ref(w),
            node: st.node.clone(),
        });
    }
    Ok(w.clone())
}

/// HBONE request headers naming the original client (RFC 7239 `forwarded`).
///
/// No trace context (`traceparent`, `baggage`) is sent: the application's connection is
/// plain TCP and the ztunnel does not parse HTTP, so it has none to propagate (see
/// [`crate::tracecontext`]).
fn forwarded(peer: SocketAddr) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(v) = meshwork_hbone::forwarded::header_value(peer).parse() {
        headers.insert(meshwork_hbone::forwarded::HEADER, v);
    }
    headers
}

/// Resolves and connects the upstream for a connection from `peer` to `target`.
pub async fn open(
    proxy: &Arc<Proxy>,
    peer: SocketAddr,
    entry: Entry<'_>,
    target: Target,
    scope: &Scope,
) -> Result<Opened, (OutboundError, Record)> {
    let start = Instant::now();
    let mut rec = Record {
        direction: "outbound",
        src_addr: Some(peer),
        dst_addr: target.to_string(),
        decision: "allow".into(),
        ..Default::default()
    };
    let cur = proxy.current();
    let src = match source_workload(proxy, &cur, peer, entry, scope) {
        Ok(w) => w,
        Err(e) => return Err((e, rec)),
    };
    rec.src_workload = Some(workload_ref(&src));
    let src_id = match cur.state.identity(&src) {
        Ok(id) => id,
        Err(e) => return Err((e.into(), rec)),
    };
    rec.src_identity = Some(src_id.to_string());
    let route = match cur.state.route(&src, &target, &proxy.rr) {
        Ok(r) => r,
        Err(e) => return Err((e.into(), rec)),
    };
    match route {
        Route::Hbone {
            hbone_addr,
            authority,
            identity,
            workload,
            service,
            via_waypoint,
        } => {
            rec.via = if via_waypoint {
                "hbone-waypoint"
            } else {
                "hbone"
            };
            rec.dst_identity = Some(identity.to_string());
            rec.dst_workload = workload.as_deref().map(workload_ref);
            rec.dst_service = service.as_deref().map(|s| s.hostname.clone());
            rec.dst_addr = authority.clone();
            let labels = TcpSeries::new(
                Reporter::Source,
                &Peers {
                    source: Some(&src),
                    source_principal: Some(src_id.to_string()),
                    destination: workload.as_deref(),
                    destination_principal: Some(identity.to_string()),
                    service: service.as_deref(),
                    mtls: true,
                },
                "",
            );
            drop(cur);
            let tls = match proxy.certs.client_config(&src_id, &identity) {
                Ok(t) => t,
                Err(e) => return Err((e.into(), rec)),
            };
            let key = PoolKey {
                src_identity: src_id.to_string(),
                dst: hbone_addr,
                dst_identity: identity.to_string(),
                from: scope.dial_from(),
            };
            match proxy
                .pool()
                .connect(&key, || tls, &authority, forwarded(peer))
                .await
            {
                Ok(s) => Ok(Opened {
                    upstream: Upstream::Hbone(s),
                    rec,
                    labels,
                    start,
                }),
                Err(e) => {
                    proxy.metrics.refused(labels.with_flags("UF"));
                    Err((e.into(), rec))
                }
            }
        }
        Route::Passthrough { target } if entry != Entry::Captured && !known(&cur, &target) => {
            Err((
                OutboundError::NotMesh {
                    target: target.to_string(),
                },
                rec,
            ))
        }
        Route::Passthrough { target } => {
            rec.via = "passthrough";
            let labels = TcpSeries::new(
                Reporter::Source,
                &Peers {
                    source: Some(&src),
                    source_principal: Some(src_id.to_string()),
                    ..Default::default()
                },
                "",
            );
            drop(cur);
            let addr = match &target {
                Target::Addr(a) => *a,
                Target::Host(h, p) => match tokio::net::lookup_host((h.as_str(), *p)).await {
                    Ok(mut it) => match it.next() {
                        Some(a) => a,
                        None => {
                            let e = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
                            return Err((
                                OutboundError::Resolve {
                                    host: h.clone(),
                                    source: e,
                                },
                                rec,
                            ));
                        }
                    },
                    Err(source) => {
                        return Err((
                            OutboundError::Resolve {
                                host: h.clone(),
                                source,
                            },
                            rec,
                        ))
                    }
                },
            };
            match scope.connect(addr, None, proxy.cfg.connect_timeout).await {
                Ok(s) => Ok(Opened {
                    upstream: Upstream::Tcp(s),
                    rec,
                    labels,
                    start,
                }),
                Err(source) => Err((
                    OutboundError::Connect {
                        target: target.to_string(),
                        source,
                    },
                    rec,
                )),
            }
        }
    }
}

/// Whether a passthrough target is a workload of the mesh's model (one without capture):
/// addresses and names the model does not know are outside the mesh.
fn known(cur: &crate::proxy::Current, target: &Target) -> bool {
    match target {
        Target::Addr(a) => cur.state.workload_by_ip(a.ip()).is_some(),
        Target::Host(..) => false,
    }
}

/// Relays `down` over an opened upstream until either side finishes.
pub async fn run<D>(proxy: &Arc<Proxy>, down: D, opened: Opened)
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let Opened {
        upstream,
        mut rec,
        labels,
        start,
    } = opened;
    let counters = proxy.metrics.open(labels);
    let totals = Arc::new(Bytes::default());
    let cancel = proxy.force_close.clone();
    let end = match upstream {
        Upstream::Hbone(s) => {
            relay_h2(down, s, true, totals.clone(), Some(&counters), &cancel).await
        }
        Upstream::Tcp(s) => relay(down, s, totals.clone(), Some(&counters), &cancel).await,
    };
    counters.close();
    finish(&mut rec, &totals, end, start);
    proxy.access.log(&rec);
}

pub fn log_failure(proxy: &Proxy, e: &OutboundError, mut rec: Record) {
    tracing::warn!(src = ?rec.src_addr, dst = %rec.dst_addr, error = %e, "outbound connection failed");
    rec.error = Some(e.to_string());
    rec.decision = "deny".into();
    proxy.access.log(&rec);
}

/// A captured connection whose original destination is `dst`.
pub async fn handle_captured(
    proxy: Arc<Proxy>,
    sock: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    scope: Scope,
) {
    // An in-pod listener serves its own pod's connections only.
    if !scope.owns(peer.ip()) {
        tracing::warn!(%peer, %dst, "outbound: refusing a connection whose source is not this listener's pod");
        return;
    }
    match open(&proxy, peer, Entry::Captured, Target::Addr(dst), &scope).await {
        Ok(opened) => run(&proxy, sock, opened).await,
        Err((e, rec)) => log_failure(&proxy, &e, rec),
    }
}

impl From<StateError> for OutboundError {
    fn from(e: StateError) -> Self {
        OutboundError::Route(Box::new(e))
    }
}

impl From<CertError> for OutboundError {
    fn from(e: CertError) -> Self {
        OutboundError::Cert(Box::new(e))
    }
}

impl From<ClientError> for OutboundError {
    fn from(e: ClientError) -> Self {
        OutboundError::Hbone(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{snapshot, workload};

    #[test]
    fn a_username_names_only_this_nodes_workloads_and_only_without_capture() {
        let st = State::new(
            snapshot(
                vec![
                    workload("prod", "client", "n1", "10.0.0.1"),
                    workload("prod", "server", "n2", "10.0.0.2"),
                ],
                vec![],
            ),
            "n1",
            15008,
        );
        let w = named_source(&st, RedirectMode::Off, "prod/client").unwrap();
        assert_eq!(w.name, "client");
        assert!(matches!(
            named_source(&st, RedirectMode::Off, "prod/server"),
            Err(OutboundError::SourceNotLocal { .. })
        ));
        assert!(matches!(
            named_source(&st, RedirectMode::Off, "prod/ghost"),
            Err(OutboundError::UnknownSource { .. })
        ));
        let e = named_source(&st, RedirectMode::Ebpf, "prod/client").unwrap_err();
        assert!(matches!(e, OutboundError::UsernameWithCapture { .. }));
        assert!(e.to_string().contains("--redirect off"), "{e}");
    }
}
