//! A running demo mesh, whichever mode brought it up: what the patterns drive traffic
//! through and read the mesh's own reports from.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::collector::Collector;
use super::connect::Dial;
use super::http::{self, Request, Via};
use super::loopback::Loopback;
use super::netns::Netns;
use super::topology::{pod_named, Placement, APP_PORT};
use super::DemoError;

/// The mode-specific part of a running mesh.
pub enum Backend {
    Loopback(Loopback),
    Netns(Netns),
}

/// A running demo mesh. Dropping it stops every process and removes everything it created.
pub struct Mesh {
    pub placement: Placement,
    pub control_plane_admin: Dial,
    /// Demo node (`node-a`, `node-b`) → its ztunnel's metrics endpoint.
    pub ztunnel_metrics: BTreeMap<String, Dial>,
    pub waypoint_admin: Dial,
    /// The OTLP/gRPC collector the waypoint exports its spans to.
    pub collector: Collector,
    pub backend: Backend,
}

impl Mesh {
    /// The log of process `name` (`controlplane`, `waypoint`, `ztunnel-<demo node>`, or a
    /// pod name); `stream` is `out` or `err`. In netns mode both streams share one file.
    pub fn log(&self, name: &str, stream: &str) -> PathBuf {
        match &self.backend {
            Backend::Loopback(l) => l.log(name, stream),
            Backend::Netns(n) => n.log(name),
        }
    }

    /// Source `pod` calling service `host` on port 8080: through its node's ztunnel's SOCKS5
    /// entry on loopback; in netns mode the app's own connection to the service VIP from
    /// the pod's namespace, captured by the eBPF redirection.
    pub fn via(&self, pod: &str, host: &str) -> Via {
        match &self.backend {
            Backend::Loopback(l) => l.via(pod_named(pod), host),
            Backend::Netns(n) => n.via(pod_named(pod), host),
        }
    }

    /// The app of `pod`, bypassing the mesh (for the operator's fault switch).
    pub fn direct(&self, pod: &str) -> Via {
        match &self.backend {
            Backend::Loopback(_) => Via::direct(SocketAddr::new(
                self.placement.pod_ip(pod_named(pod)),
                APP_PORT,
            )),
            Backend::Netns(n) => n.direct(pod_named(pod)),
        }
    }

    /// Plaintext from `from` (a pod outside the mesh) straight to `to`'s app port, as the
    /// destination node's capture sees it; only netns mode has capture (None on loopback).
    pub fn plaintext(&self, from: &str, to: &str) -> Option<Via> {
        match &self.backend {
            Backend::Loopback(_) => None,
            Backend::Netns(n) => Some(n.plaintext(
                pod_named(from),
                SocketAddr::new(self.placement.pod_ip(pod_named(to)), APP_PORT),
            )),
        }
    }

    /// Demo node → its ztunnel's admin endpoint serving `/redirect` (the eBPF capture's
    /// enrolled pods and counters); empty on loopback, where nothing is captured.
    pub fn redirect_endpoints(&self) -> Vec<(String, Dial)> {
        match &self.backend {
            Backend::Loopback(_) => Vec::new(),
            Backend::Netns(n) => n.redirect_endpoints(),
        }
    }

    /// Where the mesh runs, for the progress line.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Loopback(l) => format!("on 127.{}.{}.0/24", l.net.a, l.net.b),
            Backend::Netns(n) => n.location(),
        }
    }

    /// What `--keep` tells the user to try.
    pub fn keep_banner(&self) -> String {
        match &self.backend {
            Backend::Loopback(l) => l.keep_banner(self),
            Backend::Netns(n) => n.keep_banner(self),
        }
    }
}

/// Whether `GET path` answers 200.
pub async fn get_ok(via: &Via, path: &str) -> bool {
    http::send(via, &Request::get(path), Duration::from_secs(2))
        .await
        .is_ok_and(|r| r.status == 200)
}

/// Whether `GET path` gets any HTTP answer.
pub async fn answers(via: &Via, path: &str) -> bool {
    http::send(via, &Request::get(path), Duration::from_secs(3))
        .await
        .is_ok()
}

/// Polls `check` until true (bounded by `timeout`), failing early when `died` names a
/// child process that exited.
pub async fn wait_until<D, F, Fut>(
    what: &str,
    timeout: Duration,
    mut died: D,
    mut check: F,
) -> Result<(), DemoError>
where
    D: FnMut() -> Option<String>,
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(died) = died() {
            return Err(DemoError::ChildDied(died));
        }
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DemoError::NotReady {
                what: what.to_string(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_until_true_or_timeout_or_a_death() {
        let mut n = 0;
        wait_until(
            "x",
            Duration::from_secs(5),
            || None,
            || {
                n += 1;
                let done = n >= 3;
                async move { done }
            },
        )
        .await
        .unwrap();
        assert_eq!(n, 3);
        let e = wait_until("thing", Duration::from_secs(1), || None, || async { false })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("thing not ready"), "{e}");
        let e = wait_until(
            "y",
            Duration::from_secs(1),
            || Some("ztunnel exited (1)".into()),
            || async { true },
        )
        .await
        .unwrap_err();
        assert!(matches!(e, DemoError::ChildDied(_)), "{e}");
    }
}
