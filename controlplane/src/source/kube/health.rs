//! Kinds the Kubernetes source cannot watch, reported rather than fatal: a `403` on one
//! kind (RBAC missing for it) must not keep the rest of the config from publishing. The
//! reports are shown with the config errors (`/debug/errors`, `meshwork errors`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use ::kube::core::ApiResource;
use ::kube::runtime::watcher;

/// The current reports, by kind.
#[derive(Debug, Clone, Default)]
pub struct SourceHealth {
    reports: Arc<RwLock<BTreeMap<String, String>>>,
}

impl SourceHealth {
    /// One line per kind that cannot be watched, naming it and the HTTP status.
    pub fn reports(&self) -> Vec<String> {
        let r = self.reports.read().unwrap_or_else(|e| e.into_inner());
        r.values().cloned().collect()
    }

    pub fn set(&self, kind: &str, report: String) {
        let mut r = self.reports.write().unwrap_or_else(|e| e.into_inner());
        r.insert(kind.to_string(), report);
    }

    pub fn clear(&self, kind: &str) {
        let mut r = self.reports.write().unwrap_or_else(|e| e.into_inner());
        r.remove(kind);
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

/// The report for `resource` failing with `(code, message)`.
pub fn report(resource: &ApiResource, code: u16, message: &str) -> String {
    let reason = hyper::StatusCode::from_u16(code)
        .ok()
        .and_then(|c| c.canonical_reason())
        .unwrap_or("");
    format!(
        "Kubernetes source: cannot list/watch {} ({} {}): HTTP {code} {reason}: {message}; \
         its objects are left out of the config until this is fixed",
        resource.kind, resource.api_version, resource.plural
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kube::resources::watched;

    #[test]
    fn reports_name_the_kind_and_the_status() {
        let ar = watched("AuthorizationPolicy").unwrap().preferred();
        let r = report(&ar, 403, "forbidden: no RBAC");
        assert!(r.contains("AuthorizationPolicy"), "{r}");
        assert!(r.contains("HTTP 403 Forbidden"), "{r}");
        let h = SourceHealth::default();
        h.set("AuthorizationPolicy", r.clone());
        assert_eq!(h.reports(), [r]);
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
