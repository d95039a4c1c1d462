//! `meshwork exec POD -- CMD…`: runs a command as a pod of the running local mesh. Netns
//! mode: in the pod's network namespace (`ip netns exec`, with the Services' names in its
//! hosts file), so the pod's ztunnel captures its connections. Loopback mode: with the
//! pod's SOCKS5 entry in the usual proxy variables (`ALL_PROXY=socks5h://<ns>%2F<pod>:x@…`)
//! and, for `curl`, `--interface <pod address>`, so the connection leaves from the pod's
//! own address and policies on source addresses (`ipBlocks`) see the pod.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::Context;

use super::state::{self, PodState};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pod (`name` or `namespace/name`).
    pub pod: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    #[arg(long, env = "MESHWORK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// A command line and the extra environment it runs with.
pub type Invocation = (Vec<String>, Vec<(String, String)>);

/// The command line that runs `cmd` as pod `p`, and its extra environment.
pub fn command_for(p: &PodState, cmd: &[String]) -> anyhow::Result<Invocation> {
    let mut env = vec![
        ("POD_NAME".to_string(), p.name.clone()),
        ("POD_NAMESPACE".to_string(), p.namespace.clone()),
        ("POD_IP".to_string(), p.ip.clone()),
    ];
    if let Some(netns) = &p.netns {
        let mut argv = vec!["ip".into(), "netns".into(), "exec".into(), netns.clone()];
        argv.extend(cmd.iter().cloned());
        return Ok((argv, env));
    }
    let socks = p.socks.as_ref().with_context(|| {
        format!(
            "pod {} has neither a network namespace nor a SOCKS5 entry",
            p.name
        )
    })?;
    let proxy = format!("socks5h://{}%2F{}:x@{socks}", p.namespace, p.name);
    for k in [
        "ALL_PROXY",
        "all_proxy",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
    ] {
        env.push((k.to_string(), proxy.clone()));
    }
    let mut argv = cmd.to_vec();
    let is_curl = argv
        .first()
        .and_then(|c| std::path::Path::new(c).file_name())
        .is_some_and(|n| n == "curl");
    if is_curl {
        argv.splice(1..1, ["--interface".to_string(), p.ip.clone()]);
    }
    Ok((argv, env))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = state::state_dir(args.state_dir.as_deref());
    let s = state::read(&dir)?;
    let pod = s.pod(&args.pod)?;
    let (argv, env) = command_for(pod, &args.command)?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).envs(env);
    if pod.netns.is_none() {
        cmd.env_remove("NO_PROXY").env_remove("no_proxy");
    }
    let status = cmd
        .status()
        .with_context(|| format!("running {}", argv.join(" ")))?;
    Ok(match status.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(128),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(netns: Option<&str>, socks: Option<&str>) -> PodState {
        PodState {
            name: "web-0".into(),
            namespace: "shop".into(),
            ip: "127.9.8.10".into(),
            node: "node-0".into(),
            runs: "testapp".into(),
            ports: vec![8080],
            netns: netns.map(String::from),
            socks: socks.map(String::from),
        }
    }

    fn cmd(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn netns_runs_in_the_pods_namespace() {
        let (argv, env) = command_for(
            &pod(Some("r1-web-0"), None),
            &cmd(&["curl", "-s", "http://cart:8080/"]),
        )
        .unwrap();
        assert_eq!(
            argv,
            cmd(&[
                "ip",
                "netns",
                "exec",
                "r1-web-0",
                "curl",
                "-s",
                "http://cart:8080/"
            ])
        );
        assert!(env.contains(&("POD_NAME".into(), "web-0".into())));
    }

    #[test]
    fn loopback_uses_the_pods_socks_entry_and_address() {
        let (argv, env) = command_for(
            &pod(None, Some("127.9.8.1:4100")),
            &cmd(&["/usr/bin/curl", "http://cart:8080/"]),
        )
        .unwrap();
        assert_eq!(
            argv,
            cmd(&[
                "/usr/bin/curl",
                "--interface",
                "127.9.8.10",
                "http://cart:8080/"
            ])
        );
        assert!(env.contains(&(
            "ALL_PROXY".into(),
            "socks5h://shop%2Fweb-0:x@127.9.8.1:4100".into()
        )));
        let (argv, _) =
            command_for(&pod(None, Some("127.9.8.1:4100")), &cmd(&["wget", "x"])).unwrap();
        assert_eq!(argv, cmd(&["wget", "x"]));
        assert!(command_for(&pod(None, None), &cmd(&["x"])).is_err());
    }
}
