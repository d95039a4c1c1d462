//! `meshwork port-forward POD [LOCAL:]PORT`: a loopback port of the host joined to a
//! port of a pod of the running local mesh, until Ctrl-C. Netns mode: the connection is
//! opened from inside the pod's network namespace to its `127.0.0.1:PORT` (straight to
//! the app, as `kubectl port-forward` does, without passing the mesh); loopback mode: to
//! the pod's own `127.a.b.x:PORT`.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use meshwork_localmesh::connect::Dial;
use meshwork_localmesh::forward::{Forwarder, MAX_CONNECTIONS};

use super::state::{self, PodState};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pod (`name` or `namespace/name`).
    pub pod: String,
    /// `PORT` (the same port on 127.0.0.1) or `LOCAL:PORT` (`0:PORT`: any free port).
    pub ports: String,
    #[arg(long, env = "MESHWORK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `[LOCAL:]PORT` → (local, remote).
pub fn parse_ports(spec: &str) -> anyhow::Result<(u16, u16)> {
    let port = |s: &str, what: &str| {
        s.trim()
            .parse::<u16>()
            .with_context(|| format!("port-forward {spec}: {what} port {s:?} is not a port number"))
    };
    let (local, remote) = match spec.split_once(':') {
        Some((l, r)) => (port(l, "local")?, port(r, "pod")?),
        None => {
            let p = port(spec, "pod")?;
            (p, p)
        }
    };
    anyhow::ensure!(remote != 0, "port-forward {spec}: the pod port cannot be 0");
    Ok((local, remote))
}

/// Where a connection to `port` of pod `p` is opened.
pub fn dial_for(p: &PodState, port: u16) -> anyhow::Result<Dial> {
    if let Some(netns) = &p.netns {
        return Ok(Dial::Netns {
            netns: netns.clone(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        });
    }
    let ip =
        p.ip.parse()
            .with_context(|| format!("pod {}: address {:?} is not an IP", p.name, p.ip))?;
    Ok(Dial::Here(SocketAddr::new(ip, port)))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (local, remote) = parse_ports(&args.ports)?;
    let dir = state::state_dir(args.state_dir.as_deref());
    let s = state::read(&dir)?;
    let pod = s.pod(&args.pod)?;
    if !pod.ports.is_empty() && !pod.ports.contains(&remote) {
        eprintln!(
            "warning: pod {} declares no port {remote} (ports: {:?})",
            pod.name, pod.ports
        );
    }
    let dial = dial_for(pod, remote)?;
    let f = Forwarder::start(local, dial, MAX_CONNECTIONS).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "Forwarding from {} -> {}/{} port {remote} ({}); Ctrl-C stops",
            f.addr(),
            pod.namespace,
            pod.name,
            f.dial()
        )?;
        out.flush()?;
    }
    tokio::signal::ctrl_c().await?;
    drop(f);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(netns: Option<&str>) -> PodState {
        PodState {
            name: "web-0".into(),
            namespace: "shop".into(),
            ip: "127.1.2.10".into(),
            node: "node-0".into(),
            runs: "testapp".into(),
            ports: vec![8080],
            netns: netns.map(String::from),
            socks: None,
        }
    }

    #[test]
    fn ports_parse_and_errors_name_the_part() {
        assert_eq!(parse_ports("8080").unwrap(), (8080, 8080));
        assert_eq!(parse_ports("9000:8080").unwrap(), (9000, 8080));
        assert_eq!(parse_ports("0:8080").unwrap(), (0, 8080));
        let e = parse_ports("x:8080").unwrap_err().to_string();
        assert!(e.contains("local port \"x\""), "{e}");
        let e = parse_ports("9000:99999").unwrap_err().to_string();
        assert!(e.contains("pod port"), "{e}");
        assert!(parse_ports("0").is_err());
    }

    #[test]
    fn dials_the_pod_address_or_from_inside_its_namespace() {
        assert_eq!(
            dial_for(&pod(None), 8080).unwrap(),
            Dial::Here("127.1.2.10:8080".parse().unwrap())
        );
        assert_eq!(
            dial_for(&pod(Some("mw-pod-web-0")), 8080).unwrap(),
            Dial::Netns {
                netns: "mw-pod-web-0".into(),
                addr: "127.0.0.1:8080".parse().unwrap()
            }
        );
    }
}
