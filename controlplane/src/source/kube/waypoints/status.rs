//! The status the controller writes on a waypoint Gateway: `Accepted` and `Programmed`
//! conditions and, once the Service exists, `status.addresses`.

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

/// One condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn ok(reason: &str, message: impl Into<String>) -> Self {
        Cond {
            status: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn failed(reason: &str, message: impl Into<String>) -> Self {
        Cond {
            status: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// A Gateway address (`IPAddress` or `Hostname`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub type_: &'static str,
    pub value: String,
}

/// The status of one waypoint Gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayStatus {
    pub accepted: Cond,
    pub programmed: Cond,
    pub addresses: Vec<Address>,
    pub observed_generation: Option<i64>,
}

impl GatewayStatus {
    /// The `{"status": …}` of the status subresource at `now` (applied server-side).
    pub fn patch(&self, now: Timestamp) -> Value {
        let cond = |t: &str, c: &Cond| {
            let mut v = json!({
                "type": t,
                "status": if c.status { "True" } else { "False" },
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": now.to_string(),
            });
            if let Some(g) = self.observed_generation {
                v["observedGeneration"] = json!(g);
            }
            v
        };
        let addresses: Vec<Value> = self
            .addresses
            .iter()
            .map(|a| json!({"type": a.type_, "value": a.value}))
            .collect();
        json!({"status": {
            "conditions": [cond("Accepted", &self.accepted), cond("Programmed", &self.programmed)],
            "addresses": addresses,
        }})
    }
}

/// The addresses of an applied Service: its cluster IPs, else its DNS name (headless).
pub fn service_addresses(service: &Value, namespace: &str, name: &str) -> Vec<Address> {
    let mut ips: Vec<String> = service["spec"]["clusterIPs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if ips.is_empty() {
        ips.extend(service["spec"]["clusterIP"].as_str().map(String::from));
    }
    ips.retain(|ip| !ip.is_empty() && ip != "None");
    if ips.is_empty() {
        return vec![Address {
            type_: "Hostname",
            value: format!("{name}.{namespace}.svc.cluster.local"),
        }];
    }
    ips.into_iter()
        .map(|value| Address {
            type_: "IPAddress",
            value,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_has_both_conditions_and_addresses() {
        let s = GatewayStatus {
            accepted: Cond::ok("Accepted", "accepted"),
            programmed: Cond::failed("NoResources", "applying Deployment p/w: boom"),
            addresses: vec![],
            observed_generation: Some(4),
        };
        let now: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        let p = s.patch(now);
        assert_eq!(p["status"]["conditions"][0]["type"], "Accepted");
        assert_eq!(p["status"]["conditions"][0]["status"], "True");
        assert_eq!(p["status"]["conditions"][1]["status"], "False");
        assert_eq!(p["status"]["conditions"][1]["reason"], "NoResources");
        assert_eq!(p["status"]["conditions"][1]["observedGeneration"], 4);
        assert_eq!(p["status"]["addresses"], json!([]));
    }

    #[test]
    fn addresses_are_cluster_ips_or_the_service_name() {
        let svc =
            json!({"spec": {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "fd00::7"]}});
        let a = service_addresses(&svc, "p", "w");
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].type_, a[1].value.as_str()), ("IPAddress", "fd00::7"));
        let a = service_addresses(&json!({"spec": {"clusterIP": "None"}}), "p", "w");
        assert_eq!(a[0].type_, "Hostname");
        assert_eq!(a[0].value, "w.p.svc.cluster.local");
    }
}
