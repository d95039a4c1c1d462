//! What `meshwork waypoint apply` writes, as `istioctl waypoint apply` does: a Gateway of
//! class `istio-waypoint` with one listener `mesh` (port 15008, HBONE) and the label
//! `istio.io/waypoint-for`; with `--enroll-namespace`, the namespace label
//! `istio.io/use-waypoint=<name>`.

use clap::ValueEnum;
use serde_json::{json, Value};
use thiserror::Error;

pub const WAYPOINT_CLASS: &str = "istio-waypoint";
pub const LABEL_WAYPOINT_FOR: &str = "istio.io/waypoint-for";
pub const LABEL_USE_WAYPOINT: &str = "istio.io/use-waypoint";
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";

/// Which traffic the waypoint handles (`istio.io/waypoint-for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WaypointFor {
    Service,
    Workload,
    All,
    None,
}

impl WaypointFor {
    pub fn label(self) -> &'static str {
        match self {
            WaypointFor::Service => "service",
            WaypointFor::Workload => "workload",
            WaypointFor::All => "all",
            WaypointFor::None => "none",
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{what} {value:?} is not valid: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: String,
    },
}

/// A namespace or waypoint name: an RFC 1035 label (it names a Service).
pub fn check_name(what: &'static str, value: &str) -> Result<(), NameError> {
    let err = |why: &str| NameError::Invalid {
        what,
        value: value.to_string(),
        why: why.to_string(),
    };
    if value.is_empty() || value.len() > 63 {
        return Err(err("must be 1 to 63 characters"));
    }
    if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(err("must start with a lowercase letter"));
    }
    if value.ends_with('-') {
        return Err(err("must not end with '-'"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(err("only lowercase letters, digits and '-' are allowed"));
    }
    Ok(())
}

/// The waypoint Gateway.
pub fn gateway(namespace: &str, name: &str, for_: WaypointFor) -> Value {
    json!({
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "Gateway",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_WAYPOINT_FOR: for_.label()},
        },
        "spec": {
            "gatewayClassName": WAYPOINT_CLASS,
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    })
}

/// The namespace label enrolling `namespace` in waypoint `name` (apply configuration).
pub fn namespace_enrollment(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {LABEL_USE_WAYPOINT: name}},
    })
}

/// Whether a Gateway object (JSON) is a waypoint.
pub fn is_waypoint(v: &Value) -> bool {
    v["kind"] == "Gateway" && v["spec"]["gatewayClassName"] == WAYPOINT_CLASS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_matches_istioctl() {
        let g = gateway("production", "waypoint", WaypointFor::Service);
        assert_eq!(g["spec"]["gatewayClassName"], "istio-waypoint");
        assert_eq!(
            g["spec"]["listeners"],
            json!([{"name": "mesh", "port": 15008, "protocol": "HBONE"}])
        );
        assert_eq!(g["metadata"]["labels"]["istio.io/waypoint-for"], "service");
        assert!(is_waypoint(&g));
        assert_eq!(
            gateway("p", "w", WaypointFor::All)["metadata"]["labels"]["istio.io/waypoint-for"],
            "all"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("name", "waypoint").is_ok());
        let e = check_name("name", "Way_point").unwrap_err().to_string();
        assert!(e.contains("name \"Way_point\""), "{e}");
        assert!(check_name("namespace", "").is_err());
        assert!(check_name("namespace", "a-").is_err());
        assert!(check_name("namespace", "1a").is_err());
    }
}
