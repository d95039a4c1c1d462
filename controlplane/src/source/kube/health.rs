//! Kinds the Kubernetes source cannot watch, reported rather than fatal: a `403` on one
//! kind (RBAC missing for it) must not keep the rest of the config from publishing. The
//! reports are shown with the config errors (`/debug/errors`, `meshwork errors`), and a
//! policy kind that cannot be read makes the engine fail closed mesh-wide (see
//! [`crate::engine::Engine::with_source_health`]): its policies may exist unseen.

use meshwork_runtime::sync::RwLockExt;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ::kube::core::ApiResource;
use ::kube::runtime::watcher;

/// How bad a report is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    /// The kind was never listed: objects of it may exist that the config lacks.
    Missing,
    /// The kind was listed, then could not be watched: its objects are as last listed.
    Stale,
    /// Degraded but complete.
    Warning,
}

/// The current reports, by kind.
#[derive(Debug, Clone, Default)]
pub struct SourceHealth {
    reports: Arc<RwLock<BTreeMap<String, (Severity, String)>>>,
    /// Bumped on every change of the reports.
    changes: Arc<AtomicU64>,
}

impl SourceHealth {
    /// Counts the changes of the reports (to notice one).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// The error report of `kind` when it cannot be watched (objects of it may exist that
    /// the config lacks).
    pub fn unreadable(&self, kind: &str) -> Option<String> {
        let r = self.reports.read_or_recover();
        r.get(kind)
            .filter(|(s, _)| *s == Severity::Missing)
            .map(|(_, t)| t.clone())
    }

    /// Every report, errors and warnings.
    pub fn reports(&self) -> Vec<String> {
        let r = self.reports.read_or_recover();
        r.values().map(|(_, t)| t.clone()).collect()
    }

    /// One line per kind that cannot be watched (its objects are missing from the
    /// config), naming it and the HTTP status.
    pub fn errors(&self) -> Vec<String> {
        self.filtered(|s| s != Severity::Warning)
    }

    /// Degraded but complete (the CRDs are polled instead of watched).
    pub fn warnings(&self) -> Vec<String> {
        self.filtered(|s| s == Severity::Warning)
    }

    fn filtered(&self, keep: impl Fn(Severity) -> bool) -> Vec<String> {
        let r = self.reports.read_or_recover();
        r.values()
            .filter(|(s, _)| keep(*s))
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Reports `kind` as never listed: an error, and [`Self::unreadable`].
    pub fn set(&self, kind: &str, report: String) {
        self.put(kind, Some((Severity::Missing, report)));
    }

    /// Reports `kind` as listed before but not watchable now: an error.
    pub fn set_stale(&self, kind: &str, report: String) {
        self.put(kind, Some((Severity::Stale, report)));
    }

    fn put(&self, kind: &str, report: Option<(Severity, String)>) {
        let mut r = self.reports.write_or_recover();
        let before = match report {
            Some(rep) => r.insert(kind.to_string(), rep.clone()) != Some(rep),
            None => r.remove(kind).is_some(),
        };
        if before {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Reports a degraded but complete source about `kind`: a warning.
    pub fn warn(&self, kind: &str, report: String) {
        self.put(kind, Some((Severity::Warning, report)));
    }

    pub fn clear(&self, kind: &str) {
        self.put(kind, None);
    }
}

/// The API server's answer in a watch error: `(code, message)`. `None` for transport
/// errors and for `410 Gone` (the watcher's ordinary relist).
pub fn api_status(e: &watcher::Error) -> Option<(u16, String)> {
    let status = match e {
        watcher::Error::InitialListFailed(k)
        | watcher::Error::WatchStartFailed(k)
        | watcher::Error::WatchFailed(k) => match k {
            ::kube::Error::Api(s) => (s.code, s.message.clone()),
            _ => return None,
        },
        watcher::Error::WatchError(s) => (s.code, s.message.clone()),
        watcher::Error::NoResourceVersion => return None,
    };
    (status.0 != 410).then_some(status)
}

/// The report for `resource` failing with `(code, message)`: `consequence` says what it
/// means for the config.
pub fn report(resource: &ApiResource, code: u16, message: &str, consequence: &str) -> String {
    let reason = hyper::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("");
    format!(
        "Kubernetes source: cannot list/watch {} ({} {}): HTTP {code} {reason}: {message}; \
         {consequence}",
        resource.kind, resource.api_version, resource.plural
    )
}

/// The consequence of a kind that cannot be watched.
pub const LEFT_OUT: &str = "its objects are left out of the config until this is fixed";
/// The consequence of a kind that cannot be watched after it was listed.
pub const STALE: &str = "its objects stay as last listed until this is fixed";
/// The consequence of CRDs that cannot be watched.
pub const POLLED: &str = "Istio and Gateway API kinds are found by polling API discovery \
     every 30s instead (CRDs installed or removed are noticed that much later)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kube::resources::watched;

    #[test]
    fn reports_name_the_kind_and_the_status() {
        let ar = watched("AuthorizationPolicy").unwrap().preferred();
        let r = report(&ar, 403, "forbidden: no RBAC", LEFT_OUT);
        assert!(r.contains("AuthorizationPolicy"), "{r}");
        assert!(r.contains("HTTP 403 Forbidden"), "{r}");
        let h = SourceHealth::default();
        h.set("AuthorizationPolicy", r.clone());
        assert_eq!(h.errors(), std::slice::from_ref(&r));
        assert_eq!(h.unreadable("AuthorizationPolicy"), Some(r.clone()));
        let n = h.changes();
        h.set("AuthorizationPolicy", r.clone());
        assert_eq!(h.changes(), n, "the same report again is no change");
        h.warn("CustomResourceDefinition", "polled".into());
        assert_eq!(h.warnings(), ["polled"]);
        assert_eq!(h.unreadable("CustomResourceDefinition"), None);
        h.set_stale("PeerAuthentication", "stale".into());
        assert_eq!(
            h.unreadable("PeerAuthentication"),
            None,
            "listed before: kept"
        );
        assert!(h.errors().contains(&"stale".to_string()));
        h.clear("PeerAuthentication");
        assert_eq!(h.reports().len(), 2);
        h.clear("CustomResourceDefinition");
        h.clear("AuthorizationPolicy");
        assert!(h.reports().is_empty());
    }

    #[test]
    fn gone_and_transport_errors_are_not_reports() {
        let gone = ::kube::core::Status::failure("too old", "Expired").with_code(410);
        assert_eq!(
            api_status(&watcher::Error::WatchError(Box::new(gone))),
            None
        );
        assert_eq!(api_status(&watcher::Error::NoResourceVersion), None);
        let forbidden = ::kube::core::Status::failure("no", "Forbidden").with_code(403);
        assert_eq!(
            api_status(&watcher::Error::InitialListFailed(::kube::Error::Api(
                Box::new(forbidden)
            ))),
            Some((403, "no".into()))
        );
    }
}
