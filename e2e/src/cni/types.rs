//! The CNI protocol's JSON (spec 1.0.0) as the runtime side reads and writes it: network
//! configuration lists, the success result and the error result. Small own types: the
//! crates.io CNI crates are plugin-side frameworks (`cni-plugin` 0.2, 2021), not a
//! runtime's view.
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Protocol version this driver speaks (what Debian's plugins 1.1.1 report as current).
pub const CNI_VERSION: &str = "1.0.0";

/// A network configuration list (`.conflist`): plugins run in order on ADD, reversed on DEL.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ConfList {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    pub plugins: Vec<Map<String, Value>>,
}

impl ConfList {
    /// The `type` of plugin `i` (its executable's name in `CNI_PATH`).
    pub fn plugin_type(&self, i: usize) -> Option<&str> {
        self.plugins.get(i)?.get("type")?.as_str()
    }

    /// The configuration one plugin gets on stdin: its object plus the list's `name` and
    /// `cniVersion`, and `prevResult` when there is one.
    pub fn plugin_config(&self, i: usize, prev_result: Option<&Value>) -> Value {
        let mut conf = self.plugins[i].clone();
        conf.insert("cniVersion".into(), self.cni_version.clone().into());
        conf.insert("name".into(), self.name.clone().into());
        if let Some(prev) = prev_result {
            conf.insert("prevResult".into(), prev.clone());
        }
        Value::Object(conf)
    }
}

/// An interface a plugin created or configured; `sandbox` is set for the ones inside the
/// container's namespace.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address given to an interface (`interface` indexes `interfaces`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IpConfig {
    #[serde(default)]
    pub interface: Option<usize>,
    /// CIDR notation, e.g. `10.244.0.10/24`.
    pub address: String,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Route {
    pub dst: String,
    #[serde(default)]
    pub gw: Option<IpAddr>,
}

/// The success result of ADD (and the `prevResult` of the next plugin).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

impl CniResult {
    /// The first IPv4 address on the interface named `ifname` inside the sandbox, with its
    /// prefix length.
    pub fn ipv4_of(&self, ifname: &str) -> Option<(Ipv4Addr, u8)> {
        self.ips.iter().find_map(|ip| {
            let iface = self.interfaces.get(ip.interface?)?;
            if iface.name != ifname || iface.sandbox.is_none() {
                return None;
            }
            let (addr, len) = parse_cidr(&ip.address)?;
            match addr {
                IpAddr::V4(v4) => Some((v4, len)),
                IpAddr::V6(_) => None,
            }
        })
    }

    /// The interfaces created outside the sandbox (the host end of a veth).
    pub fn host_interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.interfaces.iter().filter(|i| i.sandbox.is_none())
    }
}

/// `a.b.c.d/len` → (address, len).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    Some((addr.parse().ok()?, len.parse().ok()?))
}

/// The error result a plugin prints on failure.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct ErrorResult {
    pub code: u32,
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

/// The answer of `CNI_COMMAND=VERSION`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct VersionResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions", default)]
    pub supported_versions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result as `ptp` 1.1.1 prints it.
    const PTP_RESULT: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"veth1a2b3c4d","mac":"4a:1e:0b:00:00:01"},{"name":"eth0","mac":"4a:1e:0b:00:00:02","sandbox":"/run/netns/x"}],"ips":[{"interface":1,"address":"10.244.0.10/24","gateway":"10.244.0.1"}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;

    #[test]
    fn result_yields_pod_address_and_host_veth() {
        let r: CniResult = serde_json::from_str(PTP_RESULT).unwrap();
        assert_eq!(r.ipv4_of("eth0"), Some((Ipv4Addr::new(10, 244, 0, 10), 24)));
        assert_eq!(r.ipv4_of("lo"), None);
        let host: Vec<_> = r.host_interfaces().map(|i| i.name.as_str()).collect();
        assert_eq!(host, ["veth1a2b3c4d"]);
        assert_eq!(r.routes[0].gw, None);
    }

    #[test]
    fn plugin_config_carries_list_name_version_and_prev_result() {
        let list: ConfList = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","name":"kindnet","plugins":[{"type":"ptp"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        assert_eq!(list.plugin_type(1), Some("portmap"));
        let prev: Value = serde_json::from_str(PTP_RESULT).unwrap();
        let c = list.plugin_config(1, Some(&prev));
        assert_eq!(c["name"], "kindnet");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["type"], "portmap");
        assert_eq!(c["prevResult"]["ips"][0]["address"], "10.244.0.10/24");
        assert!(list.plugin_config(0, None).get("prevResult").is_none());
    }

    #[test]
    fn error_result_parses() {
        let e: ErrorResult =
            serde_json::from_str(r#"{"code":11,"msg":"failed to open netns","details":""}"#)
                .unwrap();
        assert_eq!(e.code, 11);
    }
}
