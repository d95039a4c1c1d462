//! Which Gateways get a waypoint, and whether they are valid.
//!
//! A Gateway with `gatewayClassName: istio-waypoint` is a waypoint. It is accepted when its
//! name can name a Service (DNS-1035 label) and every listener is HBONE on port 15008 (what
//! `istioctl waypoint apply` writes: listener `mesh`, port 15008, protocol HBONE).

use std::path::Path;

use serde_json::Value;

use crate::source::kube::pseudo;

/// The Gateway class of waypoints.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";
/// The port and protocol of a waypoint listener.
pub const HBONE_PORT: u64 = 15008;
pub const HBONE_PROTOCOL: &str = "HBONE";

/// `(namespace, name)` of a Gateway.
pub type GatewayKey = (String, String);

/// A waypoint Gateway as read from the watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaypointGateway {
    pub namespace: String,
    pub name: String,
    /// The version the Gateway was watched at (for the owner reference and status path).
    pub api_version: String,
    pub uid: String,
    pub generation: Option<i64>,
}

impl WaypointGateway {
    pub fn key(&self) -> GatewayKey {
        (self.namespace.clone(), self.name.clone())
    }
}

/// Why a waypoint Gateway is not accepted: the `Accepted=False` reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Gateway API reason: `ListenersNotValid` or `Invalid`.
    pub reason: &'static str,
    pub message: String,
}

/// A waypoint Gateway read from a pseudo-file: valid or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub gateway: WaypointGateway,
    pub rejection: Option<Rejection>,
}

/// The waypoint Gateway in `k8s://Gateway/<ns>/<name>`; `None` for other paths and for
/// Gateways of other classes (or unreadable text: the store reports those).
pub fn observe(path: &Path, text: &str) -> Option<Observed> {
    let (kind, namespace, name) = pseudo::parse_path(path)?;
    if kind != "Gateway" {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    if v["spec"]["gatewayClassName"].as_str() != Some(WAYPOINT_CLASS) {
        return None;
    }
    let gateway = WaypointGateway {
        namespace: namespace.unwrap_or_default().to_string(),
        name: name.to_string(),
        api_version: v["apiVersion"]
            .as_str()
            .unwrap_or("gateway.networking.k8s.io/v1")
            .to_string(),
        uid: v["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        generation: v["metadata"]["generation"].as_i64(),
    };
    let rejection = validate(&gateway, &v["spec"]);
    Some(Observed { gateway, rejection })
}

fn validate(gw: &WaypointGateway, spec: &Value) -> Option<Rejection> {
    if let Err(why) = dns1035_label(&gw.name) {
        return Some(Rejection {
            reason: "Invalid",
            message: format!(
                "metadata.name {:?} cannot name the waypoint's Service: {why}",
                gw.name
            ),
        });
    }
    if gw.uid.is_empty() {
        return Some(Rejection {
            reason: "Invalid",
            message: "metadata.uid is missing: cannot own the waypoint's resources".into(),
        });
    }
    let listeners = spec["listeners"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if listeners.is_empty() {
        return Some(Rejection {
            reason: "ListenersNotValid",
            message: format!(
                "spec.listeners: a waypoint needs a listener with port {HBONE_PORT} and protocol {HBONE_PROTOCOL}"
            ),
        });
    }
    let mut problems = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        let protocol = l["protocol"].as_str().unwrap_or_default();
        if protocol != HBONE_PROTOCOL {
            problems.push(format!(
                "spec.listeners[{i}].protocol: {protocol:?} is not supported by a waypoint (want {HBONE_PROTOCOL})"
            ));
        }
        let port = l["port"].as_u64();
        if port != Some(HBONE_PORT) {
            problems.push(format!(
                "spec.listeners[{i}].port: {} is not supported by a waypoint (want {HBONE_PORT})",
                l["port"]
            ));
        }
    }
    (!problems.is_empty()).then(|| Rejection {
        reason: "ListenersNotValid",
        message: problems.join("; "),
    })
}

/// RFC 1035 label: what a Service name must be.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters".into());
    }
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter".into());
    }
    if s.ends_with('-') {
        return Err("must not end with '-'".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{c:?} is not allowed (lowercase letters, digits, '-')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gw(class: &str, listeners: Value) -> (std::path::PathBuf, String) {
        (
            "k8s://Gateway/production/waypoint".into(),
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                   "metadata": {"name": "waypoint", "namespace": "production", "uid": "u-1", "generation": 3},
                   "spec": {"gatewayClassName": class, "listeners": listeners}})
            .to_string(),
        )
    }

    #[test]
    fn waypoint_gateway_is_observed_with_its_owner_fields() {
        let (p, t) = gw(
            "istio-waypoint",
            json!([{"name": "mesh", "port": 15008, "protocol": "HBONE"}]),
        );
        let o = observe(&p, &t).unwrap();
        assert_eq!(o.rejection, None);
        assert_eq!(o.gateway.uid, "u-1");
        assert_eq!(o.gateway.generation, Some(3));
        assert_eq!(o.gateway.api_version, "gateway.networking.k8s.io/v1");
        assert_eq!(o.gateway.key(), ("production".into(), "waypoint".into()));
    }

    #[test]
    fn other_classes_and_kinds_are_not_waypoints() {
        let (p, t) = gw("istio", json!([]));
        assert_eq!(observe(&p, &t), None);
        assert_eq!(
            observe(Path::new("k8s://HTTPRoute/production/waypoint"), &t),
            None
        );
    }

    #[test]
    fn bad_listeners_name_the_field() {
        let (p, t) = gw(
            "istio-waypoint",
            json!([{"name": "http", "port": 80, "protocol": "HTTP"}]),
        );
        let r = observe(&p, &t).unwrap().rejection.unwrap();
        assert_eq!(r.reason, "ListenersNotValid");
        assert!(
            r.message.contains("spec.listeners[0].protocol"),
            "{}",
            r.message
        );
        assert!(
            r.message.contains("spec.listeners[0].port: 80"),
            "{}",
            r.message
        );
        let (p, t) = gw("istio-waypoint", json!([]));
        let r = observe(&p, &t).unwrap().rejection.unwrap();
        assert!(r.message.starts_with("spec.listeners:"), "{}", r.message);
    }

    #[test]
    fn names_that_cannot_name_a_service_are_invalid() {
        assert!(dns1035_label("waypoint").is_ok());
        assert!(dns1035_label("wp-2").is_ok());
        assert!(dns1035_label("2wp").is_err());
        assert!(dns1035_label("wp.a").is_err());
        assert!(dns1035_label("wp-").is_err());
        assert!(dns1035_label(&"a".repeat(64)).is_err());
        let p: std::path::PathBuf = "k8s://Gateway/production/my.waypoint".into();
        let t = json!({"metadata": {"uid": "u"}, "spec": {"gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}})
        .to_string();
        let r = observe(&p, &t).unwrap().rejection.unwrap();
        assert_eq!(r.reason, "Invalid");
        assert!(r.message.contains("metadata.name"), "{}", r.message);
    }
}
