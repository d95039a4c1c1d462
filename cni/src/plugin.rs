//! The CNI side of the plugin (spec 0.4.0 and 1.0.0): its network configuration, the
//! runtime's environment and the four commands. Chained after the pod network's plugins,
//! it never changes the network: ADD hands the pod's namespace to the ztunnel and, once the
//! ztunnel has answered, returns the previous result unchanged.
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use meshwork_runtime::netns::NetNs;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::agent::{self, AddRequest, AgentError, AgentReply, AgentRequest, DelRequest, PodRef};

/// The plugin's `type` (its executable's name in the CNI bin directory).
pub const PLUGIN_TYPE: &str = "meshwork-cni";
/// Spec versions this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0"];
/// Namespaces never enrolled unless configured otherwise.
pub const DEFAULT_EXCLUDE: &[&str] = &["kube-system"];
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 10;
/// DEL never waits longer than this for the ztunnel.
const DEL_TIMEOUT: Duration = Duration::from_secs(5);

/// CNI error codes (spec "Error codes").
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
}

/// A failed command, printed as the CNI error result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniFailure {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniFailure {
    pub fn new(code: u32, msg: impl Into<String>) -> CniFailure {
        CniFailure {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    fn details(mut self, d: impl Into<String>) -> CniFailure {
        self.details = d.into();
        self
    }

    /// The error result (spec: `cniVersion`, `code`, `msg`, `details`).
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

/// The plugin's network configuration (its entry of the conflist, with `name`,
/// `cniVersion` and `prevResult` added by the runtime).
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub agent_socket: PathBuf,
    pub exclude_namespaces: Vec<String>,
    pub timeout: Duration,
    pub log_file: Option<PathBuf>,
    pub prev_result: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConf {
    cni_version: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "type")]
    plugin_type: String,
    agent_socket: Option<PathBuf>,
    exclude_namespaces: Option<Vec<String>>,
    timeout_seconds: Option<u64>,
    log_file: Option<PathBuf>,
    prev_result: Option<Value>,
    // Keys a runtime may add to any plugin's configuration; not used here.
    #[serde(default, rename = "args")]
    _args: Option<Value>,
    #[serde(default, rename = "capabilities")]
    _capabilities: Option<Value>,
    #[serde(default, rename = "runtimeConfig")]
    _runtime_config: Option<Value>,
    #[serde(default, rename = "disableCheck")]
    _disable_check: Option<Value>,
    #[serde(default, rename = "dns")]
    _dns: Option<Value>,
}

impl NetConf {
    /// Parses the configuration on stdin; errors name the field (code 6 for JSON that does
    /// not decode, 7 for a bad value, 1 for an unsupported `cniVersion`).
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniFailure> {
        let de = &mut serde_json::Deserializer::from_slice(stdin);
        let raw: RawConf = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let code = if inner.is_syntax() || inner.is_eof() {
                code::DECODE
            } else {
                code::INVALID_CONFIG
            };
            let msg = if path == "." {
                format!("meshwork-cni configuration: {inner}")
            } else {
                format!("meshwork-cni configuration: {path}: {inner}")
            };
            CniFailure::new(code, msg)
        })?;
        if !SUPPORTED_VERSIONS.contains(&raw.cni_version.as_str()) {
            return Err(CniFailure::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "meshwork-cni configuration: cniVersion {:?} is not supported (supported: {})",
                    raw.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        if raw.plugin_type != PLUGIN_TYPE {
            return Err(CniFailure::new(
                code::INVALID_CONFIG,
                format!(
                    "meshwork-cni configuration: type: {:?}, expected {PLUGIN_TYPE:?}",
                    raw.plugin_type
                ),
            ));
        }
        let timeout_seconds = raw.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS);
        if timeout_seconds == 0 || timeout_seconds > 600 {
            return Err(CniFailure::new(
                code::INVALID_CONFIG,
                format!("meshwork-cni configuration: timeoutSeconds: {timeout_seconds} is not within 1..=600"),
            ));
        }
        let agent_socket = raw
            .agent_socket
            .unwrap_or_else(|| PathBuf::from(agent::DEFAULT_SOCKET));
        if !agent_socket.is_absolute() {
            return Err(CniFailure::new(
                code::INVALID_CONFIG,
                format!(
                    "meshwork-cni configuration: agentSocket: {} is not an absolute path",
                    agent_socket.display()
                ),
            ));
        }
        Ok(NetConf {
            cni_version: raw.cni_version,
            name: raw.name,
            agent_socket,
            exclude_namespaces: raw
                .exclude_namespaces
                .unwrap_or_else(|| DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect()),
            timeout: Duration::from_secs(timeout_seconds),
            log_file: raw.log_file,
            prev_result: raw.prev_result,
        })
    }
}

/// The runtime's `CNI_*` environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniEnv {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
}

impl CniEnv {
    pub fn from_env() -> CniEnv {
        let var = |k| std::env::var(k).unwrap_or_default();
        CniEnv {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
        }
    }

    fn require(&self, name: &str, value: &str) -> Result<(), CniFailure> {
        if value.is_empty() {
            return Err(CniFailure::new(
                code::INVALID_ENV,
                format!("{name} is not set"),
            ));
        }
        Ok(())
    }
}

/// `CNI_ARGS`: `K=V;K2=V2`.
pub fn parse_args(args: &str) -> Result<BTreeMap<String, String>, CniFailure> {
    let mut out = BTreeMap::new();
    for pair in args.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(CniFailure::new(
                code::INVALID_ENV,
                format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
            ));
        };
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// What the plugin does with a sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Kubernetes pod the ztunnel decides about.
    Pod(PodRef),
    /// No `K8S_POD_NAMESPACE`/`K8S_POD_NAME`: not a Kubernetes pod; left alone.
    NotKubernetes,
    /// A pod in an excluded namespace; left alone.
    Excluded(String),
}

pub fn target(args: &BTreeMap<String, String>, exclude: &[String]) -> Target {
    let get = |k: &str| args.get(k).filter(|v| !v.is_empty()).cloned();
    let (Some(namespace), Some(name)) = (get("K8S_POD_NAMESPACE"), get("K8S_POD_NAME")) else {
        return Target::NotKubernetes;
    };
    if exclude.contains(&namespace) {
        return Target::Excluded(namespace);
    }
    Target::Pod(PodRef {
        namespace,
        name,
        uid: get("K8S_POD_UID").unwrap_or_default(),
    })
}

/// The addresses of a result's `ips` (`address` is CIDR notation in 0.4.0 and 1.0.0).
fn result_ips(prev: &Value) -> Result<Vec<String>, CniFailure> {
    let Some(ips) = prev.get("ips") else {
        return Ok(Vec::new());
    };
    let ips = ips
        .as_array()
        .ok_or_else(|| CniFailure::new(code::INVALID_CONFIG, "prevResult.ips: not an array"))?;
    ips.iter()
        .enumerate()
        .map(|(i, ip)| {
            ip.get("address")
                .and_then(Value::as_str)
                .filter(|a| agent::parse_cidr(a).is_some())
                .map(str::to_string)
                .ok_or_else(|| {
                    CniFailure::new(
                        code::INVALID_CONFIG,
                        format!("prevResult.ips[{i}].address: missing or not an address/prefix"),
                    )
                })
        })
        .collect()
}

/// Sends one request to the agent (the real [`agent::send`], or a stand-in in tests).
pub type Sender<'a> = &'a dyn Fn(
    &std::path::Path,
    &AgentRequest,
    Option<std::os::fd::BorrowedFd<'_>>,
    Duration,
) -> Result<AgentReply, AgentError>;

/// Runs one CNI command. `Ok(Some(v))` is printed on stdout, `Ok(None)` prints nothing.
/// `log` receives one line per decision.
pub fn run(
    env: &CniEnv,
    stdin: &[u8],
    send: Sender<'_>,
    log: &mut dyn FnMut(&str),
) -> Result<Option<Value>, CniFailure> {
    match env.command.as_str() {
        "VERSION" => Ok(Some(json!({
            "cniVersion": SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1],
            "supportedVersions": SUPPORTED_VERSIONS,
        }))),
        "ADD" => {
            let conf = NetConf::parse(stdin)?;
            add(&conf, env, send, log).map(Some)
        }
        "DEL" => {
            let conf = NetConf::parse(stdin)?;
            del(&conf, env, send, log);
            Ok(None)
        }
        "CHECK" => {
            NetConf::parse(stdin)?;
            Ok(None)
        }
        other => Err(CniFailure::new(
            code::INVALID_ENV,
            format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, VERSION"),
        )),
    }
}

fn add(
    conf: &NetConf,
    env: &CniEnv,
    send: Sender<'_>,
    log: &mut dyn FnMut(&str),
) -> Result<Value, CniFailure> {
    let prev = conf.prev_result.clone().ok_or_else(|| {
        CniFailure::new(
            code::INVALID_CONFIG,
            "meshwork-cni must be chained after the network plugin: no prevResult",
        )
    })?;
    env.require("CNI_CONTAINERID", &env.container_id)?;
    let args = parse_args(&env.args)?;
    let pod = match target(&args, &conf.exclude_namespaces) {
        Target::Pod(p) => p,
        Target::NotKubernetes => {
            log(&format!(
                "ADD {}: not a Kubernetes pod (no K8S_POD_NAMESPACE/K8S_POD_NAME): passed through",
                env.container_id
            ));
            return Ok(prev);
        }
        Target::Excluded(ns) => {
            log(&format!(
                "ADD {}: namespace {ns} is excluded: passed through",
                env.container_id
            ));
            return Ok(prev);
        }
    };
    env.require("CNI_NETNS", &env.netns)?;
    env.require("CNI_IFNAME", &env.ifname)?;
    let shown = format!("{}/{}", pod.namespace, pod.name);
    let netns = NetNs::open(&env.netns).map_err(|e| {
        CniFailure::new(
            code::IO_FAILURE,
            format!("pod {shown}: cannot open its network namespace"),
        )
        .details(e.to_string())
    })?;
    let request = AgentRequest::Add(AddRequest {
        container_id: env.container_id.clone(),
        netns: env.netns.clone(),
        ifname: env.ifname.clone(),
        pod,
        ips: result_ips(&prev)?,
    });
    let socket = conf.agent_socket.display();
    match send(
        &conf.agent_socket,
        &request,
        Some(netns.as_fd()),
        conf.timeout,
    ) {
        Ok(AgentReply::Enrolled) => {
            log(&format!("ADD {}: pod {shown} enrolled", env.container_id));
            Ok(prev)
        }
        Ok(AgentReply::NotCaptured) => {
            log(&format!(
                "ADD {}: pod {shown} not captured (not in the mesh)",
                env.container_id
            ));
            Ok(prev)
        }
        Ok(AgentReply::Error(e)) => {
            let f = CniFailure::new(
                code::TRY_AGAIN_LATER,
                format!("ztunnel at {socket} could not enroll pod {shown}; the runtime will retry"),
            )
            .details(e);
            log(&format!("ADD {}: {f}", env.container_id));
            Err(f)
        }
        Ok(AgentReply::Removed) => {
            let f = CniFailure::new(
                code::TRY_AGAIN_LATER,
                format!("ztunnel at {socket} answered \"removed\" to the add of pod {shown}"),
            );
            log(&format!("ADD {}: {f}", env.container_id));
            Err(f)
        }
        Err(e) => {
            let f = CniFailure::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "ztunnel node agent at {socket} unavailable: pod {shown} is not started uncaptured; the runtime will retry"
                ),
            )
            .details(e.to_string());
            log(&format!("ADD {}: {f}", env.container_id));
            Err(f)
        }
    }
}

/// Best effort: the ztunnel also forgets a pod whose namespace is gone, so a failed `del`
/// is logged, never an error (a failing DEL would block the sandbox's removal).
fn del(conf: &NetConf, env: &CniEnv, send: Sender<'_>, log: &mut dyn FnMut(&str)) {
    let args = match parse_args(&env.args) {
        Ok(a) => a,
        Err(e) => {
            log(&format!("DEL {}: {e}: nothing sent", env.container_id));
            return;
        }
    };
    let Target::Pod(pod) = target(&args, &conf.exclude_namespaces) else {
        return;
    };
    if env.container_id.is_empty() {
        log("DEL: CNI_CONTAINERID not set: nothing sent");
        return;
    }
    let shown = format!("{}/{}", pod.namespace, pod.name);
    let request = AgentRequest::Del(DelRequest {
        container_id: env.container_id.clone(),
        pod,
    });
    let timeout = conf.timeout.min(DEL_TIMEOUT);
    match send(&conf.agent_socket, &request, None, timeout) {
        Ok(r) => log(&format!("DEL {}: pod {shown}: {r:?}", env.container_id)),
        Err(e) => log(&format!(
            "DEL {}: pod {shown}: {e} (ignored: DEL is best effort)",
            env.container_id
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    const PREV: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/proc/self/ns/net"}],"ips":[{"interface":0,"address":"10.244.0.10/24","gateway":"10.244.0.1"}]}"#;

    fn conf(extra: &str) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"kindnet","type":"meshwork-cni"{extra},"prevResult":{PREV}}}"#
        )
    }

    fn env(command: &str, args: &str) -> CniEnv {
        CniEnv {
            command: command.into(),
            container_id: "c1".into(),
            netns: "/proc/self/ns/net".into(),
            ifname: "eth0".into(),
            args: args.into(),
        }
    }

    const POD_ARGS: &str =
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart;K8S_POD_UID=u1";

    #[test]
    fn config_defaults_and_keys() {
        let c = NetConf::parse(conf("").as_bytes()).unwrap();
        assert_eq!(c.agent_socket, PathBuf::from(agent::DEFAULT_SOCKET));
        assert_eq!(c.exclude_namespaces, ["kube-system"]);
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.log_file, None);
        assert!(c.prev_result.is_some());
        let c = NetConf::parse(
            conf(r#","agentSocket":"/run/x.sock","excludeNamespaces":[],"timeoutSeconds":3,"logFile":"/tmp/l","runtimeConfig":{},"capabilities":{}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.agent_socket, PathBuf::from("/run/x.sock"));
        assert!(c.exclude_namespaces.is_empty());
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.log_file, Some(PathBuf::from("/tmp/l")));
    }

    #[test]
    fn config_errors_name_the_field() {
        for (extra, code, field) in [
            (r#","agentSocet":"/x""#, code::INVALID_CONFIG, "agentSocet"),
            (
                r#","timeoutSeconds":"3""#,
                code::INVALID_CONFIG,
                "timeoutSeconds",
            ),
            (
                r#","timeoutSeconds":0"#,
                code::INVALID_CONFIG,
                "timeoutSeconds",
            ),
            (
                r#","agentSocket":"rel.sock""#,
                code::INVALID_CONFIG,
                "agentSocket",
            ),
            (
                r#","excludeNamespaces":"a""#,
                code::INVALID_CONFIG,
                "excludeNamespaces",
            ),
        ] {
            let e = NetConf::parse(conf(extra).as_bytes()).unwrap_err();
            assert_eq!(e.code, code, "{extra}: {e}");
            assert!(e.msg.contains(field), "{extra}: {e}");
        }
        let e = NetConf::parse(b"{").unwrap_err();
        assert_eq!(e.code, code::DECODE);
        let e = NetConf::parse(br#"{"cniVersion":"0.3.1","type":"meshwork-cni"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","type":"ptp"}"#).unwrap_err();
        assert!(e.msg.contains("type"), "{e}");
        assert!(NetConf::parse(br#"{"cniVersion":"0.4.0","type":"meshwork-cni"}"#).is_ok());
    }

    #[test]
    fn args_and_targets() {
        let a = parse_args(POD_ARGS).unwrap();
        let ex = vec!["kube-system".to_string()];
        assert_eq!(
            target(&a, &ex),
            Target::Pod(PodRef {
                namespace: "shop".into(),
                name: "cart".into(),
                uid: "u1".into()
            })
        );
        let a = parse_args("K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns").unwrap();
        assert_eq!(target(&a, &ex), Target::Excluded("kube-system".into()));
        assert_eq!(target(&parse_args("").unwrap(), &ex), Target::NotKubernetes);
        assert!(parse_args("a=b;c").unwrap_err().msg.contains("\"c\""));
    }

    /// A request the stand-in agent got, and whether a descriptor came with it.
    type Call = (AgentRequest, bool);

    struct Calls(RefCell<Vec<Call>>);

    fn run_with(
        e: &CniEnv,
        stdin: &str,
        reply: Result<AgentReply, fn(&std::path::Path) -> AgentError>,
    ) -> (Result<Option<Value>, CniFailure>, Vec<Call>) {
        let calls = Calls(RefCell::new(Vec::new()));
        let send = |p: &std::path::Path,
                    r: &AgentRequest,
                    fd: Option<std::os::fd::BorrowedFd<'_>>,
                    _t: Duration| {
            calls.0.borrow_mut().push((r.clone(), fd.is_some()));
            match &reply {
                Ok(r) => Ok(r.clone()),
                Err(f) => Err(f(p)),
            }
        };
        let out = run(e, stdin.as_bytes(), &send, &mut |_| {});
        (out, calls.0.into_inner())
    }

    fn unreachable(p: &std::path::Path) -> AgentError {
        AgentError::Connect {
            socket: p.to_path_buf(),
            source: std::io::ErrorKind::NotFound.into(),
        }
    }

    #[test]
    fn add_passes_prev_result_through_once_the_agent_answers() {
        let prev: Value = serde_json::from_str(PREV).unwrap();
        for reply in [AgentReply::Enrolled, AgentReply::NotCaptured] {
            let (out, calls) = run_with(&env("ADD", POD_ARGS), &conf(""), Ok(reply));
            assert_eq!(out.unwrap(), Some(prev.clone()));
            let [(AgentRequest::Add(a), true)] = calls.as_slice() else {
                panic!("{calls:?}")
            };
            assert_eq!(a.ips, ["10.244.0.10/24"]);
            assert_eq!(a.pod.name, "cart");
            assert_eq!(a.container_id, "c1");
        }
    }

    #[test]
    fn add_fails_with_try_again_when_the_agent_is_down_or_refuses() {
        let (out, _) = run_with(&env("ADD", POD_ARGS), &conf(""), Err(unreachable));
        let e = out.unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert!(e.msg.contains(agent::DEFAULT_SOCKET), "{e}");
        assert!(e.msg.contains("shop/cart"), "{e}");
        let (out, _) = run_with(
            &env("ADD", POD_ARGS),
            &conf(""),
            Ok(AgentReply::Error("no capture".into())),
        );
        let e = out.unwrap_err();
        assert_eq!(e.code, code::TRY_AGAIN_LATER);
        assert_eq!(e.details, "no capture");
        let json = e.to_json("1.0.0");
        assert_eq!(json["code"], 11);
        assert_eq!(json["cniVersion"], "1.0.0");
    }

    #[test]
    fn add_leaves_excluded_and_non_kubernetes_sandboxes_alone() {
        for args in ["", "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns"] {
            let (out, calls) = run_with(&env("ADD", args), &conf(""), Err(unreachable));
            assert!(out.unwrap().is_some());
            assert!(calls.is_empty(), "{args}");
        }
        // Without prevResult the plugin is misconfigured.
        let bare = r#"{"cniVersion":"1.0.0","name":"n","type":"meshwork-cni"}"#;
        let (out, _) = run_with(&env("ADD", POD_ARGS), bare, Ok(AgentReply::Enrolled));
        assert!(out.unwrap_err().msg.contains("prevResult"));
    }

    #[test]
    fn del_is_best_effort_and_check_version_pass() {
        let (out, calls) = run_with(&env("DEL", POD_ARGS), &conf(""), Err(unreachable));
        assert_eq!(out.unwrap(), None);
        assert!(matches!(calls.as_slice(), [(AgentRequest::Del(_), false)]));
        let (out, calls) = run_with(&env("CHECK", POD_ARGS), &conf(""), Err(unreachable));
        assert_eq!(out.unwrap(), None);
        assert!(calls.is_empty());
        let (out, _) = run_with(&env("VERSION", ""), "", Err(unreachable));
        let v = out.unwrap().unwrap();
        assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0"]));
        let (out, _) = run_with(&env("STATUS", ""), "", Err(unreachable));
        assert_eq!(out.unwrap_err().code, code::INVALID_ENV);
    }
}
