//! kube-proxy's iptables mode, written for a node namespace: the same chains and rule
//! shapes kube-proxy's iptables proxier writes for ClusterIP services (nat:
//! `KUBE-SERVICES` → `KUBE-SVC-*` → `KUBE-SEP-*` DNAT with `statistic` random balancing,
//! `KUBE-MARK-MASQ` / `KUBE-POSTROUTING` masquerade; filter: `KUBE-FORWARD`, and a REJECT
//! for a service without endpoints). Applied with `iptables-restore --noflush` like
//! kube-proxy does; the `iptables` found in PATH is used (Debian 12: iptables-nft).
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::topology::{Node, Pod, Service};
use crate::{netns, HarnessError};

/// kube-proxy's default masquerade bit (`--iptables-masquerade-bit=14`).
pub const MASQ_MARK: &str = "0x4000/0x4000";

/// One port of a ClusterIP service with its ready endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// `namespace/name:port-name`, as kube-proxy names it in comments and chain hashes.
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

/// `KUBE-SVC-<16 base32>` / `KUBE-SEP-<16 base32>`: a stable hash of the service port (and
/// endpoint), like kube-proxy's (which uses SHA-256; any stable hash keeps the shape).
fn chain(prefix: &str, key: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let fnv = |seed: u64| {
        key.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    let bits = (u128::from(a) << 64) | u128::from(b);
    let name: String = (0..16)
        .map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize] as char)
        .collect();
    format!("{prefix}-{name}")
}

pub fn svc_chain(s: &ServicePort) -> String {
    chain("KUBE-SVC", &format!("{}tcp", s.name))
}

pub fn sep_chain(s: &ServicePort, ep: (Ipv4Addr, u16)) -> String {
    chain("KUBE-SEP", &format!("{}tcp{}:{}", s.name, ep.0, ep.1))
}

/// The `iptables-restore` input for `services`; pod traffic from outside `cluster_cidr`
/// to a VIP is marked for masquerade (kube-proxy's `--cluster-cidr` local detector).
pub fn restore_input(cluster_cidr: &str, services: &[ServicePort]) -> String {
    let mut nat = String::from("*nat\n");
    for c in [
        "KUBE-SERVICES",
        "KUBE-MARK-MASQ",
        "KUBE-POSTROUTING",
        "KUBE-NODEPORTS",
    ] {
        let _ = writeln!(nat, ":{c} - [0:0]");
    }
    let mut filter = String::from("*filter\n:KUBE-SERVICES - [0:0]\n:KUBE-FORWARD - [0:0]\n");
    for s in services.iter().filter(|s| !s.endpoints.is_empty()) {
        let _ = writeln!(nat, ":{} - [0:0]", svc_chain(s));
        for ep in &s.endpoints {
            let _ = writeln!(nat, ":{} - [0:0]", sep_chain(s, *ep));
        }
    }
    let _ = writeln!(
        nat,
        "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK} -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"
    );
    for s in services {
        let svc = svc_chain(s);
        let (vip, port, name) = (s.vip, s.port, &s.name);
        let comment = format!("\"{name} cluster IP\"");
        if s.endpoints.is_empty() {
            let _ = writeln!(
                filter,
                "-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment \"{name} has no endpoints\" -m tcp --dport {port} -j REJECT --reject-with icmp-port-unreachable"
            );
            continue;
        }
        let _ = writeln!(
            nat,
            "-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment {comment} -m tcp --dport {port} -j {svc}\n\
             -A {svc} ! -s {cluster_cidr} -d {vip}/32 -p tcp -m comment --comment {comment} -m tcp --dport {port} -j KUBE-MARK-MASQ"
        );
        let n = s.endpoints.len();
        for (i, ep) in s.endpoints.iter().enumerate() {
            let sep = sep_chain(s, *ep);
            let to = format!("{}:{}", ep.0, ep.1);
            let stat = if i + 1 < n {
                format!(
                    " -m statistic --mode random --probability {:.11}",
                    1.0 / (n - i) as f64
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                nat,
                "-A {svc} -m comment --comment \"{name} -> {to}\"{stat} -j {sep}\n\
                 -A {sep} -s {}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ\n\
                 -A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT --to-destination {to}",
                ep.0
            );
        }
    }
    let _ = writeln!(
        nat,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\nCOMMIT"
    );
    let _ = writeln!(
        filter,
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n\
         -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK} -j ACCEPT\n\
         -A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT"
    );
    nat + &filter
}

/// A jump from a built-in chain into one of kube-proxy's: `-m comment --comment <comment>
/// -j <target>`, for new connections only (`-m conntrack --ctstate NEW` first) where
/// `new_only`.
struct Jump {
    table: &'static str,
    builtin: &'static str,
    new_only: bool,
    comment: &'static str,
    target: &'static str,
}

impl Jump {
    const fn new(
        table: &'static str,
        builtin: &'static str,
        new_only: bool,
        comment: &'static str,
        target: &'static str,
    ) -> Self {
        Jump {
            table,
            builtin,
            new_only,
            comment,
            target,
        }
    }

    /// The rule's match and target arguments, as `iptables -C/-I <builtin>` take them.
    fn rule(&self) -> Vec<&'static str> {
        let mut rule = Vec::with_capacity(10);
        if self.new_only {
            rule.extend(["-m", "conntrack", "--ctstate", "NEW"]);
        }
        rule.extend([
            "-m",
            "comment",
            "--comment",
            self.comment,
            "-j",
            self.target,
        ]);
        rule
    }
}

const SERVICE_PORTALS: &str = "kubernetes service portals";

/// Jumps from the built-in chains into kube-proxy's.
const JUMPS: &[Jump] = &[
    Jump::new("nat", "PREROUTING", false, SERVICE_PORTALS, "KUBE-SERVICES"),
    Jump::new("nat", "OUTPUT", false, SERVICE_PORTALS, "KUBE-SERVICES"),
    Jump::new(
        "nat",
        "POSTROUTING",
        false,
        "kubernetes postrouting rules",
        "KUBE-POSTROUTING",
    ),
    Jump::new(
        "filter",
        "FORWARD",
        false,
        "kubernetes forwarding rules",
        "KUBE-FORWARD",
    ),
    Jump::new("filter", "FORWARD", true, SERVICE_PORTALS, "KUBE-SERVICES"),
    Jump::new("filter", "OUTPUT", true, SERVICE_PORTALS, "KUBE-SERVICES"),
];

/// kube-proxy's chains for the fixture's `services` (backends named by pod) in every node.
pub fn install_services(
    nodes: &[Node],
    pods: &[Pod],
    services: &[Service],
    cluster_cidr: &str,
) -> Result<(), HarnessError> {
    let ports: Vec<ServicePort> = services
        .iter()
        .map(|s| ServicePort {
            name: format!("default/{}:http", s.name),
            vip: s.vip,
            port: s.port,
            endpoints: s
                .backends
                .iter()
                .filter_map(|b| pods.iter().find(|p| &p.name == b))
                .map(|p| (p.ip, s.target_port))
                .collect(),
        })
        .collect();
    for n in nodes {
        apply(&n.netns, cluster_cidr, &ports)?;
    }
    Ok(())
}

/// Writes the rules into `netns`: chains with `iptables-restore --noflush` (other
/// writers' chains, e.g. portmap's, stay), then the jumps, each inserted once.
pub fn apply(
    netns: &str,
    cluster_cidr: &str,
    services: &[ServicePort],
) -> Result<(), HarnessError> {
    let input = restore_input(cluster_cidr, services);
    let mut cmd = Command::new("iptables-restore");
    cmd.args(["-w", "--noflush"]).stdin(Stdio::piped());
    netns::enter_before_exec(&mut cmd, netns)?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HarnessError::Command {
            command: "iptables-restore".into(),
            reason: e.to_string(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| HarnessError::Command {
            command: "iptables-restore".into(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            command: format!("iptables-restore in {netns}"),
            reason: format!(
                "{}: {}\ninput:\n{input}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    for jump in JUMPS {
        let (table, builtin, rule) = (jump.table, jump.builtin, jump.rule());
        let present = netns::exec_in(
            netns,
            Command::new("iptables")
                .args(["-w", "-t", table, "-C", builtin])
                .args(&rule),
        );
        if present.is_err() {
            netns::exec_in(
                netns,
                Command::new("iptables")
                    .args(["-w", "-t", table, "-I", builtin])
                    .args(&rule),
            )?;
        }
    }
    Ok(())
}

/// `iptables-save` of a namespace (for tests and diagnostics).
pub fn save(netns: &str) -> Result<String, HarnessError> {
    let out = netns::exec_in(netns, Command::new("iptables-save").arg("-c"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(endpoints: Vec<(Ipv4Addr, u16)>) -> ServicePort {
        ServicePort {
            name: "production/orders:http".into(),
            vip: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            endpoints,
        }
    }

    #[test]
    fn chain_names_are_stable_and_kube_shaped() {
        let s = svc(vec![]);
        let c = svc_chain(&s);
        assert_eq!(c, svc_chain(&s.clone()));
        assert_eq!(c.len(), "KUBE-SVC-".len() + 16);
        let ep = (Ipv4Addr::new(10, 244, 0, 10), 8080);
        let other = (Ipv4Addr::new(10, 244, 0, 11), 8080);
        assert_ne!(sep_chain(&s, ep), sep_chain(&s, other));
    }

    #[test]
    fn endpoints_are_balanced_with_decreasing_probabilities() {
        let eps = vec![
            (Ipv4Addr::new(10, 244, 0, 10), 8080),
            (Ipv4Addr::new(10, 244, 1, 10), 8080),
            (Ipv4Addr::new(10, 244, 1, 11), 8080),
        ];
        let s = svc(eps.clone());
        let text = restore_input("10.244.0.0/16", std::slice::from_ref(&s));
        let svc = svc_chain(&s);
        let jumps: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {svc} -m comment")))
            .collect();
        assert_eq!(jumps.len(), 3, "{text}");
        assert!(
            jumps[0].contains("--probability 0.33333333333"),
            "{}",
            jumps[0]
        );
        assert!(
            jumps[1].contains("--probability 0.50000000000"),
            "{}",
            jumps[1]
        );
        assert!(!jumps[2].contains("statistic"), "{}", jumps[2]);
        for ep in eps {
            let dnat = format!("-A {} -p tcp -m comment --comment \"production/orders:http\" -m tcp -j DNAT --to-destination {}:{}", sep_chain(&s, ep), ep.0, ep.1);
            assert!(text.contains(&dnat), "{text}");
        }
        assert!(text.contains(&format!("-A {svc} ! -s 10.244.0.0/16 -d 10.96.0.10/32")));
        // The nodeport jump stays last in nat's KUBE-SERVICES.
        let nat = text.split("*filter").next().unwrap();
        let last = nat
            .lines()
            .rfind(|l| l.starts_with("-A KUBE-SERVICES"))
            .unwrap();
        assert!(last.contains("KUBE-NODEPORTS"), "{last}");
    }

    #[test]
    fn jumps_match_kube_proxys_rules() {
        let new_conn = JUMPS
            .iter()
            .find(|j| j.table == "filter" && j.builtin == "OUTPUT")
            .unwrap();
        assert_eq!(
            new_conn.rule(),
            [
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-m",
                "comment",
                "--comment",
                "kubernetes service portals",
                "-j",
                "KUBE-SERVICES"
            ]
        );
        let postrouting = JUMPS.iter().find(|j| j.builtin == "POSTROUTING").unwrap();
        assert_eq!(
            postrouting.rule(),
            [
                "-m",
                "comment",
                "--comment",
                "kubernetes postrouting rules",
                "-j",
                "KUBE-POSTROUTING"
            ]
        );
    }

    #[test]
    fn a_service_without_endpoints_is_rejected_in_filter() {
        let text = restore_input("10.244.0.0/16", &[svc(vec![])]);
        let filter = text.split("*filter").nth(1).unwrap();
        assert!(filter.contains("-d 10.96.0.10/32 -p tcp"), "{filter}");
        assert!(filter.contains("REJECT"), "{filter}");
        assert!(!text.contains(":KUBE-SVC-"), "{text}");
    }
}
