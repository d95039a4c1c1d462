//! `meshwork-cni`: run by the container runtime (CNI_COMMAND set) it is the chained CNI
//! plugin; run by hand (or by the DaemonSet's init container) it installs or removes
//! itself on the node.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use meshwork_cni::{agent, install, plugin};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "meshwork-cni",
    about = "Meshwork's chained CNI plugin: hands each new pod's network namespace to the node's ztunnel. Without CNI_COMMAND: install or remove it on a node."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Copy this binary into the CNI bin directory and add the plugin at the end of the
    /// node's primary network configuration list (idempotent).
    Install {
        #[arg(long, default_value = "/host/opt/cni/bin")]
        cni_bin_dir: PathBuf,
        #[arg(long, default_value = "/host/etc/cni/net.d")]
        cni_conf_dir: PathBuf,
        /// The ztunnel's node-agent socket as the host sees it.
        #[arg(long)]
        agent_socket: Option<String>,
        /// Namespaces whose pods are never handed to the ztunnel (comma-separated).
        #[arg(long, value_delimiter = ',')]
        exclude_namespaces: Option<Vec<String>>,
        #[arg(long)]
        timeout_seconds: Option<u64>,
        /// Where the plugin logs its decisions on the host.
        #[arg(long)]
        log_file: Option<String>,
        /// Keep running and re-apply whenever the configuration changes (e.g. a network
        /// plugin's agent rewrites its list); check every `--interval` seconds.
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value_t = 5)]
        interval: u64,
        /// With `--watch`: on SIGTERM or SIGINT, remove the plugin and its binary before
        /// exiting, so the node's pods no longer wait for a ztunnel that is gone
        /// (uninstall). During an upgrade the new installer puts it back within
        /// `--interval`; pods started in between are found by the ztunnel's scan.
        #[arg(long)]
        uninstall_on_exit: bool,
        /// With `--uninstall-on-exit`: `<namespace>/<name>` of the DaemonSet this installer
        /// belongs to. On a signal the Kubernetes API is asked whether it still exists:
        /// only when it is gone or being deleted (an uninstall) is the plugin removed; on
        /// a restart or an upgrade, or when the API cannot tell, everything stays (the
        /// pods stay captured: fail closed). Without it every signal uninstalls.
        #[arg(long)]
        owner_daemonset: Option<String>,
        /// Where the decision (`uninstall` or `restart`) is written for the ztunnel of the
        /// same pod, which releases every pod's capture on `uninstall`.
        #[arg(long)]
        stop_decision_file: Option<PathBuf>,
        /// CA of the API server (default: the service account's).
        #[arg(
            long,
            default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
        )]
        api_ca_file: PathBuf,
        /// Token presented to the API server (default: the service account's).
        #[arg(
            long,
            default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
        )]
        api_token_file: PathBuf,
    },
    /// Remove the plugin from every network configuration list of the directory and its
    /// binary (idempotent).
    Uninstall {
        #[arg(long, default_value = "/host/opt/cni/bin")]
        cni_bin_dir: PathBuf,
        #[arg(long, default_value = "/host/etc/cni/net.d")]
        cni_conf_dir: PathBuf,
    },
}

fn main() {
    if std::env::var_os("CNI_COMMAND").is_some() {
        std::process::exit(cni_main());
    }
    if let Err(e) = tool_main() {
        eprintln!("meshwork-cni: {e:#}");
        std::process::exit(1);
    }
}

/// The plugin: result or error JSON on stdout, exit 0 or 1.
fn cni_main() -> i32 {
    let env = plugin::CniEnv::from_env();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let peek: Option<Value> = serde_json::from_slice(&stdin).ok();
    let log_file = peek
        .as_ref()
        .and_then(|v| v.get("logFile")?.as_str().map(PathBuf::from));
    let version = peek
        .as_ref()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| plugin::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.0.0".to_string());
    let mut log = |line: &str| {
        if let Some(path) = &log_file {
            append_log(path, line);
        }
    };
    let send: plugin::Sender<'_> = &agent::send;
    let out = match read {
        Err(e) => Err(plugin::CniFailure::new(
            plugin::code::IO_FAILURE,
            format!("reading the configuration on stdin: {e}"),
        )),
        Ok(_) => plugin::run(&env, &stdin, send, &mut log),
    };
    let mut stdout = std::io::stdout().lock();
    match out {
        Ok(Some(v)) => {
            let _ = writeln!(stdout, "{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            log(&format!("{} failed: {e}", env.command));
            let _ = writeln!(stdout, "{}", e.to_json(&version));
            1
        }
    }
}

fn append_log(path: &Path, line: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut f) = f {
        let _ = writeln!(
            f,
            "{}.{:03} meshwork-cni[{}] {line}",
            now.as_secs(),
            now.subsec_millis(),
            std::process::id()
        );
    }
}

fn tool_main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Install {
            cni_bin_dir,
            cni_conf_dir,
            agent_socket,
            exclude_namespaces,
            timeout_seconds,
            log_file,
            watch,
            interval,
            uninstall_on_exit,
            owner_daemonset,
            stop_decision_file,
            api_ca_file,
            api_token_file,
        } => {
            let settings = install::PluginSettings {
                agent_socket,
                exclude_namespaces,
                timeout_seconds,
                log_file,
            };
            let own = std::env::current_exe().context("locating this binary")?;
            let apply = || -> anyhow::Result<()> {
                let r = install::install(&own, &cni_bin_dir, &cni_conf_dir, &settings)?;
                if r.config_changed {
                    println!(
                        "meshwork-cni: installed {} and added to {}",
                        r.binary.display(),
                        r.config.as_deref().unwrap_or(Path::new("-")).display()
                    );
                }
                Ok(())
            };
            if !watch {
                apply()?;
                println!("meshwork-cni: installed");
                return Ok(());
            }
            // Re-apply on every change of the directory (polled: works on any filesystem,
            // including hostPath mounts where inotify may miss the host's writes).
            let signals = stop_signals::block()?;
            loop {
                if let Err(e) = apply() {
                    eprintln!("meshwork-cni: {e:#}");
                }
                if let Some(sig) = signals.wait(Duration::from_secs(interval.max(1))) {
                    let uninstalling = uninstall_on_exit
                        && match owner_daemonset.as_deref() {
                            None => true,
                            Some(owner) => owner_gone(owner, &api_ca_file, &api_token_file),
                        };
                    if let Some(f) = &stop_decision_file {
                        let decision = if uninstalling { "uninstall" } else { "restart" };
                        write_decision(f, decision)?;
                    }
                    if uninstalling {
                        let r = install::uninstall(&cni_bin_dir, &cni_conf_dir)?;
                        println!(
                            "meshwork-cni: signal {sig}: uninstalling, removed from {}",
                            r.config.as_deref().unwrap_or(Path::new("-")).display()
                        );
                    } else {
                        println!("meshwork-cni: signal {sig}: restart, the plugin stays");
                    }
                    return Ok(());
                }
            }
        }
        Cmd::Uninstall {
            cni_bin_dir,
            cni_conf_dir,
        } => {
            let r = install::uninstall(&cni_bin_dir, &cni_conf_dir)?;
            match r.config {
                Some(c) => println!("meshwork-cni: removed from {}", c.display()),
                None => println!("meshwork-cni: not in any configuration"),
            }
            Ok(())
        }
    }
}

/// SIGTERM and SIGINT, blocked and waited for (no handler, no extra thread).
mod stop_signals {
    use std::time::Duration;

    pub struct Signals(libc::sigset_t);

    /// Blocks SIGTERM and SIGINT for the process (called before any other thread).
    pub fn block() -> std::io::Result<Signals> {
        // SAFETY: a zeroed sigset_t initialised by sigemptyset; pthread_sigmask on the
        // only thread.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            Ok(Signals(set))
        }
    }

    impl Signals {
        /// The signal that arrived within `timeout`, if any.
        pub fn wait(&self, timeout: Duration) -> Option<i32> {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs() as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as _,
            };
            // SAFETY: a valid, initialised set and timespec.
            let sig = unsafe { libc::sigtimedwait(&self.0, std::ptr::null_mut(), &ts) };
            (sig > 0).then_some(sig)
        }
    }
}

/// Whether the installer's DaemonSet (`namespace/name`) is gone or being deleted. Anything
/// the API cannot answer counts as "still there": the plugin and the pods' capture stay.
fn owner_gone(owner: &str, ca_file: &Path, token_file: &Path) -> bool {
    let Some((ns, name)) = owner.split_once('/') else {
        eprintln!("meshwork-cni: --owner-daemonset {owner:?}: expected <namespace>/<name>; keeping the plugin");
        return false;
    };
    let Some(mut api) = meshwork_cni::owner::ApiServer::in_cluster() else {
        eprintln!(
            "meshwork-cni: not in a cluster (no KUBERNETES_SERVICE_HOST); keeping the plugin"
        );
        return false;
    };
    api.ca_file = ca_file.to_path_buf();
    api.token_file = token_file.to_path_buf();
    match api.daemonset(ns, name) {
        Ok(meshwork_cni::owner::Owner::Gone) => true,
        Ok(meshwork_cni::owner::Owner::Present) => false,
        Err(e) => {
            eprintln!("meshwork-cni: {e}; keeping the plugin");
            false
        }
    }
}

fn write_decision(file: &Path, decision: &str) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, decision).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}
