//! A container runtime's side of CNI: runs the real plugin executables of a network
//! configuration list the way containerd's libcni does. ADD runs the plugins in order,
//! each getting the previous one's result as `prevResult`; CHECK and DEL give every plugin
//! the cached ADD result, DEL in reverse order. Plugins run in the *runtime's* network
//! namespace (here: a node's), the container's is named by `CNI_NETNS`.
mod types;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
pub use types::{
    parse_cidr, CniResult, ConfList, ErrorResult, Interface, IpConfig, Route, VersionResult,
    CNI_VERSION,
};

use crate::netns;

/// Where Debian's `containernetworking-plugins` installs the plugins.
pub const DEFAULT_CNI_PATH: &str = "/usr/lib/cni";

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("CNI plugin {plugin} {command}: error {code}: {msg}{details}")]
    Plugin {
        plugin: String,
        command: &'static str,
        code: u32,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} {command}: cannot run {path}: {source}")]
    Exec {
        plugin: String,
        command: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} {command}: {status} without a CNI error; stdout {stdout:?}, stderr {stderr:?}")]
    Failed {
        plugin: String,
        command: &'static str,
        status: std::process::ExitStatus,
        stdout: String,
        stderr: String,
    },
    #[error("CNI plugin {plugin} {command}: bad result: {reason}")]
    BadResult {
        plugin: String,
        command: &'static str,
        reason: String,
    },
    #[error("CNI network {network}: plugin {index} has no \"type\"")]
    NoType { network: String, index: usize },
    #[error("CNI network {network}: entering runtime namespace: {reason}")]
    Runtime { network: String, reason: String },
}

/// One container's attachment to a network, as a runtime caches it between ADD and DEL.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS` (e.g. `K8S_POD_NAMESPACE=...;K8S_POD_NAME=...`).
    pub args: String,
    /// The last plugin's result, raw (passed on as `prevResult`) and parsed.
    pub raw_result: Value,
    pub result: CniResult,
}

/// A network configuration list and where its plugins run.
#[derive(Clone, Debug)]
pub struct CniNetwork {
    pub conf: ConfList,
    /// Directories of the plugin executables (`CNI_PATH`): one directory, or several
    /// joined by `:` (searched in order, as libcni does; e.g. a test's own plugin in front
    /// of Debian's).
    pub cni_path: PathBuf,
    /// Named namespace the runtime (and so every plugin) runs in.
    pub runtime_netns: String,
}

struct Invocation<'a> {
    command: &'static str,
    container_id: &'a str,
    netns: &'a Path,
    ifname: &'a str,
    args: &'a str,
}

impl CniNetwork {
    /// ADD: runs every plugin in order and returns the attachment with the final result.
    /// If a plugin fails, the whole list gets a DEL (as containerd tears down a failed
    /// sandbox setup), so nothing is left half-configured.
    pub fn add(
        &self,
        container_id: &str,
        netns: &Path,
        ifname: &str,
        args: &str,
    ) -> Result<Attachment, CniError> {
        let inv = Invocation {
            command: "ADD",
            container_id,
            netns,
            ifname,
            args,
        };
        let mut prev: Option<Value> = None;
        for i in 0..self.conf.plugins.len() {
            match self.invoke(i, &inv, prev.as_ref()) {
                Ok(out) => prev = Some(out),
                Err(e) => {
                    let del = Invocation {
                        command: "DEL",
                        ..inv
                    };
                    for j in (0..self.conf.plugins.len()).rev() {
                        if let Err(d) = self.invoke(j, &del, prev.as_ref()) {
                            tracing::warn!(error = %d, "DEL after a failed ADD");
                        }
                    }
                    return Err(e);
                }
            }
        }
        let raw_result = prev.unwrap_or_else(|| empty_result(&self.conf.cni_version));
        let plugin = self
            .conf
            .plugin_type(self.conf.plugins.len().saturating_sub(1));
        let result =
            serde_json::from_value(raw_result.clone()).map_err(|e| CniError::BadResult {
                plugin: plugin.unwrap_or("-").to_string(),
                command: "ADD",
                reason: e.to_string(),
            })?;
        Ok(Attachment {
            container_id: container_id.to_string(),
            netns: netns.to_path_buf(),
            ifname: ifname.to_string(),
            args: args.to_string(),
            raw_result,
            result,
        })
    }

    /// CHECK: every plugin in order, each with the cached ADD result.
    pub fn check(&self, a: &Attachment) -> Result<(), CniError> {
        let inv = self.invocation("CHECK", a);
        for i in 0..self.conf.plugins.len() {
            self.invoke(i, &inv, Some(&a.raw_result))?;
        }
        Ok(())
    }

    /// DEL: every plugin in reverse order, each with the cached ADD result. Every plugin
    /// runs even if an earlier one failed; the first error is returned.
    pub fn del(&self, a: &Attachment) -> Result<(), CniError> {
        let inv = self.invocation("DEL", a);
        let mut first = None;
        for i in (0..self.conf.plugins.len()).rev() {
            if let Err(e) = self.invoke(i, &inv, Some(&a.raw_result)) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// `CNI_COMMAND=VERSION` of plugin `i`.
    pub fn version(&self, i: usize) -> Result<VersionResult, CniError> {
        let inv = Invocation {
            command: "VERSION",
            container_id: "",
            netns: Path::new(""),
            ifname: "",
            args: "",
        };
        let out = self.invoke(i, &inv, None)?;
        let plugin = self.conf.plugin_type(i).unwrap_or("-").to_string();
        serde_json::from_value(out).map_err(|e| CniError::BadResult {
            plugin,
            command: "VERSION",
            reason: e.to_string(),
        })
    }

    fn invocation<'a>(&self, command: &'static str, a: &'a Attachment) -> Invocation<'a> {
        Invocation {
            command,
            container_id: &a.container_id,
            netns: &a.netns,
            ifname: &a.ifname,
            args: &a.args,
        }
    }

    /// Runs plugin `i` with the CNI environment and its configuration on stdin; its stdout
    /// is the result (ADD/VERSION), empty (CHECK/DEL), or an error result on failure.
    fn invoke(&self, i: usize, inv: &Invocation, prev: Option<&Value>) -> Result<Value, CniError> {
        let plugin = self
            .conf
            .plugin_type(i)
            .ok_or_else(|| CniError::NoType {
                network: self.conf.name.clone(),
                index: i,
            })?
            .to_string();
        let path = self.find_plugin(&plugin);
        let stdin = self.conf.plugin_config(i, prev).to_string();
        let mut cmd = Command::new(&path);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", inv.command)
            .env("CNI_CONTAINERID", inv.container_id)
            .env("CNI_NETNS", inv.netns)
            .env("CNI_IFNAME", inv.ifname)
            .env("CNI_ARGS", inv.args)
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        netns::enter_before_exec(&mut cmd, &self.runtime_netns).map_err(|e| CniError::Runtime {
            network: self.conf.name.clone(),
            reason: e.to_string(),
        })?;
        let exec_err = |source| CniError::Exec {
            plugin: plugin.clone(),
            command: inv.command,
            path: path.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(exec_err)?;
        if let Some(mut s) = child.stdin.take() {
            // A plugin that exits early closes its stdin: its own error says why.
            let _ = s.write_all(stdin.as_bytes());
        }
        let out = child.wait_with_output().map_err(exec_err)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(match serde_json::from_str::<ErrorResult>(&stdout) {
                Ok(e) => CniError::Plugin {
                    plugin,
                    command: inv.command,
                    code: e.code,
                    msg: e.msg,
                    details: if e.details.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", e.details)
                    },
                },
                Err(_) => CniError::Failed {
                    plugin,
                    command: inv.command,
                    status: out.status,
                    stdout,
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                },
            });
        }
        match inv.command {
            "ADD" | "VERSION" => serde_json::from_str(&stdout).map_err(|e| CniError::BadResult {
                plugin,
                command: inv.command,
                reason: format!("{e}: {stdout:?}"),
            }),
            _ => Ok(Value::Null),
        }
    }
}

impl CniNetwork {
    /// The first `CNI_PATH` directory holding `plugin` (the first directory when none
    /// does: the exec error then names that path).
    fn find_plugin(&self, plugin: &str) -> PathBuf {
        let dirs: Vec<PathBuf> = std::env::split_paths(&self.cni_path).collect();
        dirs.iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                dirs.first()
                    .map_or_else(|| plugin.into(), |d| d.join(plugin))
            })
    }
}

fn empty_result(version: &str) -> Value {
    serde_json::json!({ "cniVersion": version })
}
