//! Test helper (`meshwork_e2e::socklb::connect_in_cgroup`): `mw-cgroup-connect <cgroup dir>
//! <netns path> <ip:port>` moves itself into the cgroup, enters the network namespace,
//! connects (3 s), prints `local=…`, `peer=…`, reads one line (3 s) and prints `line=…`.
//! A socket belongs to its creating process's cgroup, so cgroup programs (a socket-LB,
//! `mw_pod_connect4`) see this connect as a pod's in that cgroup would be seen.
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cgroup, netns, dst] = args.as_slice() else {
        return Err("usage: mw-cgroup-connect <cgroup dir> <netns path> <ip:port>".into());
    };
    let dst: SocketAddr = dst.parse().map_err(|e| format!("{dst}: {e}"))?;
    // "0": the writing process itself.
    std::fs::write(format!("{cgroup}/cgroup.procs"), b"0")
        .map_err(|e| format!("joining cgroup {cgroup}: {e}"))?;
    let ns = std::fs::File::open(netns).map_err(|e| format!("{netns}: {e}"))?;
    // SAFETY: setns on a namespace descriptor; this process is single-threaded.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "setns {netns}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let t = Duration::from_secs(3);
    let s = TcpStream::connect_timeout(&dst, t).map_err(|e| format!("connect {dst}: {e}"))?;
    println!("local={}", s.local_addr().map_err(|e| e.to_string())?);
    println!("peer={}", s.peer_addr().map_err(|e| e.to_string())?);
    s.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("reading from {dst}: {e}"))?;
    println!("line={}", line.trim_end());
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        println!("error={e}");
        std::process::exit(1);
    }
}
