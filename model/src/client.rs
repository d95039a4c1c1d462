//! The subscription client every proxy uses to follow the control plane.
//!
//! It opens `MeshConfig.Stream`, announces who it is and what it already holds, applies
//! each update to a copy of the current [`Snapshot`], asks the proxy's validator whether
//! the result is usable, then publishes it and ACKs — or keeps the last good snapshot and
//! NACKs with the validator's reason. When the stream breaks it reconnects with
//! exponential backoff and resumes from what it holds; meanwhile the proxy keeps serving
//! from the last snapshot. The token is taken from its [`TokenSource`] on every
//! (re)connect, so a rotated token file is presented at the next subscription.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::endpoint::{ConnectError, ControlPlane};
use crate::pb::config::{
    mesh_config_client::MeshConfigClient, proxy_message, Ack, ConfigUpdate, ProxyKind,
    ProxyMessage, Subscribe,
};
use crate::snapshot::Snapshot;
use crate::token::{TokenError, TokenSource};

/// Who a proxy is, as told to the control plane.
#[derive(Debug, Clone, Default)]
pub struct Subscription {
    pub kind: ProxyKind,
    /// ztunnel: node name.
    pub node: String,
    /// waypoint: its Gateway.
    pub namespace: String,
    pub name: String,
    pub proxy_id: String,
    /// Read on every (re)connect.
    pub token: TokenSource,
}

/// Decides whether a candidate snapshot may replace the current one.
pub type Validator = Arc<dyn Fn(&Snapshot) -> Result<(), String> + Send + Sync>;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("invalid control plane address {0:?}: {1}")]
    Endpoint(String, String),
    #[error("cannot connect to the control plane at {0}: {1}")]
    Connect(String, String),
    #[error("control plane refused the subscription: {0}")]
    Refused(String),
    #[error("config stream broke: {0}")]
    Stream(String),
    #[error("timed out after {0:?} waiting for the first config update")]
    Timeout(Duration),
    #[error("no token to subscribe with: {0}")]
    Token(#[from] TokenError),
}

/// Connection state, for readiness and the admin view.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub connected: bool,
    /// At least one update has been applied since the process started.
    pub synced: bool,
    pub last_error: Option<String>,
    /// Updates ACKed / NACKed since start.
    pub acks: u64,
    pub nacks: u64,
}

/// A handle on the followed configuration. Cheap to clone.
#[derive(Clone)]
pub struct ConfigHandle {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    status: watch::Receiver<Status>,
}

impl ConfigHandle {
    /// The current snapshot (the last one that passed validation).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that wakes on each new snapshot.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Waits until the first update has been applied.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<Arc<Snapshot>, ClientError> {
        let mut st = self.status.clone();
        tokio::time::timeout(timeout, st.wait_for(|s| s.synced))
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
            .map_err(|_| ClientError::Stream("client task ended".into()))?;
        Ok(self.snapshot())
    }

    /// A handle over a fixed snapshot (tests, offline tools).
    pub fn fixed(snapshot: Snapshot) -> ConfigHandle {
        let (_tx, rx) = watch::channel(Arc::new(snapshot));
        let (_stx, srx) = watch::channel(Status {
            synced: true,
            ..Default::default()
        });
        ConfigHandle {
            snapshot: rx,
            status: srx,
        }
    }

    /// A handle whose snapshot the caller publishes (in-process wiring and tests).
    pub fn manual(initial: Snapshot) -> (watch::Sender<Arc<Snapshot>>, ConfigHandle) {
        let (tx, rx) = watch::channel(Arc::new(initial));
        let (_stx, srx) = watch::channel(Status {
            synced: true,
            ..Default::default()
        });
        (
            tx,
            ConfigHandle {
                snapshot: rx,
                status: srx,
            },
        )
    }
}

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts following the control plane at `endpoint` (e.g. `https://cp:15012` with the mesh
/// root, or `http://127.0.0.1:15010` on the same host; see [`crate::endpoint`]).
pub fn spawn(
    endpoint: impl Into<ControlPlane>,
    sub: Subscription,
    validator: Option<Validator>,
) -> ConfigHandle {
    let endpoint: ControlPlane = endpoint.into();
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
    let (status_tx, status_rx) = watch::channel(Status::default());
    tokio::spawn(async move {
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let before = status_tx.borrow().acks + status_tx.borrow().nacks;
            let result = run_stream(&endpoint, &sub, &snap_tx, &status_tx, &validator).await;
            let progressed = status_tx.borrow().acks + status_tx.borrow().nacks > before;
            status_tx.send_modify(|s| {
                s.connected = false;
                if let Err(e) = &result {
                    s.last_error = Some(e.to_string());
                }
            });
            if snap_tx.is_closed() {
                return;
            }
            match result {
                Ok(()) => info!(%endpoint, "config stream closed by the control plane"),
                Err(e) => {
                    warn!(%endpoint, error = %e, retry_in = ?backoff, "config stream unavailable")
                }
            }
            if progressed {
                backoff = INITIAL_BACKOFF;
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    ConfigHandle {
        snapshot: snap_rx,
        status: status_rx,
    }
}

/// Spreads reconnects of many proxies (±25%), without a RNG dependency.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(factor)
}

async fn run_stream(
    endpoint: &ControlPlane,
    sub: &Subscription,
    snap_tx: &watch::Sender<Arc<Snapshot>>,
    status_tx: &watch::Sender<Status>,
    validator: &Option<Validator>,
) -> Result<(), ClientError> {
    let token = sub.token.current()?;
    let channel = endpoint
        .connect(|e| {
            e.connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
        })
        .await
        .map_err(|e| match e {
            ConnectError::Endpoint(e) => ClientError::Endpoint(endpoint.to_string(), e.to_string()),
            ConnectError::Transport(e) => {
                ClientError::Connect(endpoint.to_string(), source_chain(&e))
            }
        })?;
    let mut client = MeshConfigClient::new(channel)
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024);

    let (out_tx, out_rx) = mpsc::channel(16);
    let known = snap_tx.borrow().versions();
    let hello = ProxyMessage {
        msg: Some(proxy_message::Msg::Subscribe(Subscribe {
            kind: sub.kind as i32,
            node: sub.node.clone(),
            namespace: sub.namespace.clone(),
            name: sub.name.clone(),
            proxy_id: sub.proxy_id.clone(),
            known,
            token,
            accepts_parts: true,
        })),
    };
    // The channel has room: this cannot block.
    let _ = out_tx.send(hello).await;
    let mut inbound = client
        .stream(ReceiverStream::new(out_rx))
        .await
        .map_err(|s| ClientError::Refused(format!("{}: {}", s.code(), s.message())))?
        .into_inner();
    status_tx.send_modify(|s| {
        s.connected = true;
        s.last_error = None;
    });
    info!(%endpoint, kind = ?sub.kind, node = %sub.node, "subscribed to the control plane");

    let mut parts: Option<ConfigUpdate> = None;
    loop {
        let update = match inbound.message().await {
            Ok(Some(u)) => u,
            Ok(None) => return Ok(()),
            Err(s) => {
                return Err(ClientError::Stream(format!(
                    "{}: {}",
                    s.code(),
                    s.message()
                )))
            }
        };
        let Some(update) = assemble(&mut parts, update) else {
            continue;
        };
        let ack = apply_update(update, snap_tx, status_tx, validator);
        if out_tx.send(ack).await.is_err() {
            return Err(ClientError::Stream("outbound half closed".into()));
        }
    }
}

/// Collects an update sent in parts; the whole update once its last part is in.
fn assemble(parts: &mut Option<ConfigUpdate>, part: ConfigUpdate) -> Option<ConfigUpdate> {
    let mut whole = match parts.take() {
        Some(mut acc) if acc.nonce == part.nonce => {
            acc.resources.extend(part.resources);
            acc.removed.extend(part.removed);
            acc.more = part.more;
            acc
        }
        // A new nonce starts a new update (the parts of an earlier one are dropped).
        _ => part,
    };
    if whole.more {
        *parts = Some(whole);
        return None;
    }
    whole.more = false;
    Some(whole)
}

fn apply_update(
    update: ConfigUpdate,
    snap_tx: &watch::Sender<Arc<Snapshot>>,
    status_tx: &watch::Sender<Status>,
    validator: &Option<Validator>,
) -> ProxyMessage {
    let ConfigUpdate {
        nonce,
        version,
        resources,
        removed,
        ..
    } = update;
    let (upserts, removals) = (resources.len(), removed.len());
    let next = snap_tx.borrow().apply(version, resources, &removed);
    let verdict = match validator {
        Some(v) => v(&next),
        None => Ok(()),
    };
    let error = match verdict {
        Ok(()) => {
            debug!(version, upserts, removals, "applied config update");
            snap_tx.send_replace(Arc::new(next));
            status_tx.send_modify(|s| {
                s.synced = true;
                s.acks += 1;
            });
            String::new()
        }
        Err(e) => {
            warn!(version, error = %e, "rejected config update; keeping the last good config");
            status_tx.send_modify(|s| s.nacks += 1);
            e
        }
    };
    ProxyMessage {
        msg: Some(proxy_message::Msg::Ack(Ack { nonce, error })),
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
