//! The DaemonSet's installer (`install --watch --uninstall-on-exit`): it puts the plugin
//! back when the CNI rewrites its list, and on SIGTERM (the DaemonSet is deleted) takes it
//! out, so the node's pods stop waiting for a ztunnel that is gone.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-cni");

fn plugin_types(file: &Path) -> Vec<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Installer(Child);

impl Drop for Installer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_watching_installer_restores_the_plugin_and_removes_it_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, conf) = (dir.path().join("bin"), dir.path().join("net.d"));
    std::fs::create_dir_all(&conf).unwrap();
    let list = conf.join("05-cilium.conflist");
    let cilium = json!({"cniVersion":"0.3.1","name":"cilium","plugins":[{"type":"cilium-cni"}]});
    std::fs::write(&list, cilium.to_string()).unwrap();
    let mut inst = Installer(
        Command::new(BIN)
            .env_remove("CNI_COMMAND")
            .args(["install", "--watch", "--uninstall-on-exit", "--interval", "1"])
            .arg("--cni-bin-dir")
            .arg(&bin)
            .arg("--cni-conf-dir")
            .arg(&conf)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the plugin in the list", || {
        plugin_types(&list) == ["cilium-cni", "meshwork-cni"]
    });
    assert!(bin.join("meshwork-cni").exists());
    // The CNI's agent rewrites its list at start: the plugin comes back.
    std::fs::write(&list, cilium.to_string()).unwrap();
    wait_until("the plugin restored", || {
        plugin_types(&list) == ["cilium-cni", "meshwork-cni"]
    });
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(inst.0.id() as i32, libc::SIGTERM) }, 0);
    let status = inst.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(plugin_types(&list), ["cilium-cni"]);
    assert!(!bin.join("meshwork-cni").exists());
}
