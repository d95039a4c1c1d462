//! The plugin chained after Debian's reference plugins (`ptp` + `host-local`, `loopback`),
//! run through the e2e harness's runtime-side CNI driver exactly as containerd runs a
//! conflist, against a real `AgentServer` standing in for the ztunnel (root; skipped
//! otherwise). Every namespace lives in a test-made "node" namespace and a "pod" namespace
//! inside it; both are deleted at the end, with every link in them.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_cni::agent::{AgentReply, AgentRequest, AgentServer, Incoming};
use meshwork_e2e::cni::{Attachment, CniError, CniNetwork, ConfList, DEFAULT_CNI_PATH};
use meshwork_e2e::names::new_run_id;
use meshwork_e2e::netns::{delete_netns, ip, ip_in, netns_path};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-cni");
const POD_ARGS: &str =
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart;K8S_POD_UID=uid-1;K8S_POD_INFRA_CONTAINER_ID=c1";

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let plugins = Path::new(DEFAULT_CNI_PATH).join("ptp").exists();
    if !(root && plugins) {
        eprintln!("skipped: needs root and {DEFAULT_CNI_PATH}/ptp");
    }
    root && plugins
}

/// How the stand-in ztunnel answers.
#[derive(Clone)]
enum Behaviour {
    Reply(AgentReply),
    /// Takes the request and never answers.
    Hang,
}

/// What the agent received: the request and the inode of the namespace it got.
type Seen = Arc<Mutex<Vec<(AgentRequest, Option<u64>)>>>;

struct Agent {
    seen: Seen,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Agent {
    fn start(path: &Path, behaviour: Behaviour) -> Agent {
        let seen: Seen = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (p, s) = (path.to_path_buf(), seen.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let server = AgentServer::bind(&p).unwrap();
                ready_tx.send(()).unwrap();
                let mut held: Vec<Incoming> = Vec::new();
                let serve = async {
                    loop {
                        let inc = match server.next().await {
                            Ok(i) => i,
                            Err(e) => panic!("agent: {e}"),
                        };
                        let inode = inc.netns.as_ref().map(|n| n.inode());
                        s.lock().unwrap().push((inc.request.clone(), inode));
                        match &behaviour {
                            Behaviour::Reply(r) => inc.reply(r.clone()).await.unwrap(),
                            Behaviour::Hang => held.push(inc),
                        }
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        ready.recv().unwrap();
        Agent {
            seen,
            stop: Some(stop),
            thread: Some(thread),
            path: path.to_path_buf(),
        }
    }

    fn seen(&self) -> Vec<(AgentRequest, Option<u64>)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Agent {
    /// The ztunnel goes away with its socket.
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.thread.take().unwrap().join();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A node namespace (where the plugins run), a pod namespace, the chained network and
/// containerd's loopback network.
struct Node {
    node: String,
    pod: String,
    dir: tempfile::TempDir,
    network: CniNetwork,
    loopback: CniNetwork,
}

impl Node {
    fn new(timeout_seconds: u64) -> Node {
        let run = new_run_id();
        let (node, pod) = (format!("{run}-node"), format!("{run}-pod"));
        ip(&["netns", "add", &node]).unwrap();
        ip(&["netns", "add", &pod]).unwrap();
        ip_in(&node, &["link", "set", "lo", "up"]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // The plugin's own directory first, then Debian's (CNI_PATH with two entries).
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(BIN, bin.join("meshwork-cni")).unwrap();
        let cni_path = std::env::join_paths([bin.as_path(), Path::new(DEFAULT_CNI_PATH)]).unwrap();
        let conf: ConfList = serde_json::from_value(json!({
            "cniVersion": "1.0.0",
            "name": "kindnet",
            "plugins": [
                {
                    "type": "ptp",
                    "ipMasq": false,
                    "mtu": 1500,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": dir.path().join("ipam"),
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "ranges": [[{ "subnet": "10.250.3.0/24" }]]
                    }
                },
                {
                    "type": "meshwork-cni",
                    "agentSocket": dir.path().join("run/cni.sock"),
                    "timeoutSeconds": timeout_seconds,
                    "logFile": dir.path().join("cni.log"),
                }
            ]
        }))
        .unwrap();
        let loopback: ConfList = serde_json::from_value(json!({
            "cniVersion": "1.0.0", "name": "cni-loopback", "plugins": [{ "type": "loopback" }]
        }))
        .unwrap();
        let net = |conf| CniNetwork {
            conf,
            cni_path: PathBuf::from(&cni_path),
            runtime_netns: node.clone(),
        };
        Node {
            network: net(conf),
            loopback: net(loopback),
            node,
            pod,
            dir,
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/cni.sock")
    }

    fn add(&self, args: &str) -> Result<Attachment, CniError> {
        self.network.add("c1", &netns_path(&self.pod), "eth0", args)
    }

    fn pod_inode(&self) -> u64 {
        std::fs::metadata(netns_path(&self.pod)).unwrap().ino()
    }

    /// host-local's leases (one file per address) of the network.
    fn leases(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path().join("ipam/kindnet"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn node_links(&self) -> String {
        let out = ip_in(&self.node, &["-o", "link"]).unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cni.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        delete_netns(&self.pod);
        delete_netns(&self.node);
    }
}

fn expect_try_again(r: Result<Attachment, CniError>) -> (String, String) {
    match r {
        Err(CniError::Plugin {
            plugin,
            command,
            code,
            msg,
            details,
        }) => {
            assert_eq!(
                (plugin.as_str(), command, code),
                ("meshwork-cni", "ADD", 11)
            );
            (msg, details)
        }
        other => panic!("expected CNI error 11 from meshwork-cni, got {other:?}"),
    }
}

#[test]
fn add_hands_the_pods_own_namespace_and_addresses_to_the_agent() {
    if !can_run() {
        return;
    }
    let n = Node::new(5);
    let agent = Agent::start(&n.socket(), Behaviour::Reply(AgentReply::Enrolled));
    let v = n.network.version(1).unwrap();
    assert_eq!(v.supported_versions, ["0.4.0", "1.0.0"]);
    let lo = n
        .loopback
        .add("c1", &netns_path(&n.pod), "lo", POD_ARGS)
        .unwrap();
    let a = n.add(POD_ARGS).unwrap();
    // The chain's result is ptp's, passed through unchanged.
    let (ip, len) = a
        .result
        .ipv4_of("eth0")
        .expect("eth0 address in the result");
    assert_eq!(a.result.host_interfaces().count(), 1, "{:?}", a.result);
    let seen = agent.seen();
    let [(AgentRequest::Add(req), Some(inode))] = seen.as_slice() else {
        panic!("{seen:?}")
    };
    // The descriptor received is the pod's namespace, not the node's (where the plugin ran).
    assert_eq!(*inode, n.pod_inode());
    assert_ne!(
        *inode,
        std::fs::metadata(netns_path(&n.node)).unwrap().ino()
    );
    assert_eq!(req.ips, [format!("{ip}/{len}")]);
    assert_eq!(
        (
            req.pod.namespace.as_str(),
            req.pod.name.as_str(),
            req.pod.uid.as_str()
        ),
        ("shop", "cart", "uid-1")
    );
    assert_eq!(
        (req.container_id.as_str(), req.ifname.as_str()),
        ("c1", "eth0")
    );
    assert_eq!(req.netns, netns_path(&n.pod).display().to_string());
    n.network.check(&a).unwrap();
    // DEL reaches the agent too, and the whole chain is torn down.
    n.network.del(&a).unwrap();
    n.loopback.del(&lo).unwrap();
    let seen = agent.seen();
    assert!(
        matches!(&seen[1], (AgentRequest::Del(d), None) if d.pod.name == "cart" && d.container_id == "c1"),
        "{seen:?}"
    );
    assert!(n.leases().is_empty(), "{:?}", n.leases());
    assert!(n.log().contains("pod shop/cart enrolled"), "{}", n.log());
}

#[test]
fn add_fails_with_try_again_while_the_agent_is_down_and_the_retry_succeeds() {
    if !can_run() {
        return;
    }
    let n = Node::new(5);
    let (msg, details) = expect_try_again(n.add(POD_ARGS));
    assert!(msg.contains(&n.socket().display().to_string()), "{msg}");
    assert!(msg.contains("shop/cart"), "{msg}");
    assert!(details.contains("cannot connect"), "{details}");
    // The runtime's DEL after the failed ADD left nothing: no lease, no veth.
    assert!(n.leases().is_empty(), "{:?}", n.leases());
    let links = n.node_links();
    assert_eq!(links.lines().count(), 1, "{links}");
    // The ztunnel comes up; the runtime's retry (a new ADD) goes through.
    let agent = Agent::start(&n.socket(), Behaviour::Reply(AgentReply::NotCaptured));
    let a = n.add(POD_ARGS).unwrap();
    assert!(a.result.ipv4_of("eth0").is_some());
    assert_eq!(agent.seen().len(), 1);
    n.network.del(&a).unwrap();
}

#[test]
fn add_fails_when_the_agent_refuses_or_does_not_answer_in_time() {
    if !can_run() {
        return;
    }
    let n = Node::new(1);
    {
        let agent = Agent::start(
            &n.socket(),
            Behaviour::Reply(AgentReply::Error("no capture for you".into())),
        );
        let (msg, details) = expect_try_again(n.add(POD_ARGS));
        assert!(msg.contains("shop/cart"), "{msg}");
        assert_eq!(details, " (no capture for you)");
        assert_eq!(agent.seen().len(), 2, "add, then the runtime's del");
    }
    let _agent = Agent::start(&n.socket(), Behaviour::Hang);
    let started = std::time::Instant::now();
    let (_, details) = expect_try_again(n.add(POD_ARGS));
    assert!(details.contains("timed out"), "{details}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(n.leases().is_empty(), "{:?}", n.leases());
}

#[test]
fn excluded_namespaces_and_non_pods_never_reach_the_agent() {
    if !can_run() {
        return;
    }
    let n = Node::new(5);
    let agent = Agent::start(&n.socket(), Behaviour::Reply(AgentReply::Enrolled));
    for args in [
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-1;K8S_POD_UID=u",
        "",
    ] {
        let a = n.add(args).unwrap();
        assert!(a.result.ipv4_of("eth0").is_some());
        n.network.del(&a).unwrap();
    }
    assert!(agent.seen().is_empty(), "{:?}", agent.seen());
    assert!(
        n.log().contains("namespace kube-system is excluded"),
        "{}",
        n.log()
    );
}

#[test]
fn del_succeeds_while_the_agent_is_down() {
    if !can_run() {
        return;
    }
    let n = Node::new(5);
    let agent = Agent::start(&n.socket(), Behaviour::Reply(AgentReply::Enrolled));
    let a = n.add(POD_ARGS).unwrap();
    drop(agent);
    n.network.del(&a).unwrap();
    assert!(n.leases().is_empty(), "{:?}", n.leases());
    assert!(
        n.log().contains("ignored: DEL is best effort"),
        "{}",
        n.log()
    );
}

#[test]
fn install_and_uninstall_round_trip_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, conf) = (dir.path().join("opt/cni/bin"), dir.path().join("net.d"));
    std::fs::create_dir_all(&conf).unwrap();
    let original = json!({"cniVersion":"1.0.0","name":"kindnet","plugins":[{"type":"ptp"},{"type":"portmap","capabilities":{"portMappings":true}}]});
    std::fs::write(conf.join("10-kindnet.conflist"), original.to_string()).unwrap();
    std::fs::write(
        conf.join("20-later.conf"),
        r#"{"cniVersion":"1.0.0","name":"x","type":"bridge"}"#,
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .env_remove("CNI_COMMAND")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    let dirs = [
        "--cni-bin-dir",
        bin.to_str().unwrap(),
        "--cni-conf-dir",
        conf.to_str().unwrap(),
    ];
    let install: Vec<&str> = [
        &["install"][..],
        &dirs[..],
        &[
            "--agent-socket",
            "/run/mw.sock",
            "--exclude-namespaces",
            "kube-system,istio-system",
        ][..],
    ]
    .concat();
    run(&install);
    let list = conf.join("10-kindnet.conflist");
    let first = std::fs::read(&list).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(
        v["plugins"][2],
        json!({"type":"meshwork-cni","agentSocket":"/run/mw.sock","excludeNamespaces":["kube-system","istio-system"]})
    );
    assert_eq!(
        std::fs::read(bin.join("meshwork-cni")).unwrap(),
        std::fs::read(BIN).unwrap()
    );
    run(&install);
    assert_eq!(
        std::fs::read(&list).unwrap(),
        first,
        "second install changed the list"
    );
    // The later file is not the primary one: untouched.
    assert!(conf.join("20-later.conf").exists());
    let uninstall: Vec<&str> = [&["uninstall"][..], &dirs[..]].concat();
    run(&uninstall);
    run(&uninstall);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&list).unwrap()).unwrap();
    assert_eq!(v, original);
    assert!(!bin.join("meshwork-cni").exists());
    // Malformed JSON: a clear error naming the file, non-zero exit.
    std::fs::write(conf.join("05-bad.conflist"), "{\"plugins\":").unwrap();
    let out = std::process::Command::new(BIN)
        .args(&install)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("05-bad.conflist"), "{err}");
}
