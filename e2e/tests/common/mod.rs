//! Process binaries run as plain processes on loopback: started with a pipe as stdout and
//! an empty static config, driven with one-shot HTTP requests, stopped with SIGTERM.
#![allow(dead_code)]

pub mod mesh_suite;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

/// A process whose stdout is a pipe we hold; killed if the test ends early.
pub struct Process {
    child: Child,
    stdout: Option<std::io::PipeReader>,
    dir: PathBuf,
}

impl Process {
    /// Starts `cmd` with stdout to a pipe nobody reads yet, in a scratch directory that
    /// holds an empty static config (no workloads, nothing to certify).
    pub fn start(name: &str, build: impl FnOnce(&Path) -> Command) -> Process {
        let dir = std::env::temp_dir().join(format!("mw-proxy-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        std::fs::write(dir.join("config.pb"), b"").unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let mut cmd = build(&dir);
        cmd.env("RUST_LOG", "info")
            .stdout(writer)
            .stderr(Stdio::null());
        let child = cmd.spawn().unwrap();
        drop(cmd); // our copy of the pipe's write end
        Process {
            child,
            stdout: Some(reader),
            dir,
        }
    }

    /// Starts reading stdout: the number of lines containing `needle`, once the process
    /// has exited.
    pub fn count_lines(&mut self, needle: &'static str) -> JoinHandle<usize> {
        let reader = self.stdout.take().unwrap();
        std::thread::spawn(move || {
            BufReader::new(reader)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.contains(needle))
                .count()
        })
    }

    /// SIGTERM, then waits (10 s at most) for the process to drain and exit.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on the child this test spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let exited = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(exited, "the process did not exit on SIGTERM");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port for a process this test starts. Taken below the kernel's ephemeral
/// range (32768+): a port the kernel picked (`bind(:0)`) may be handed out again as the
/// source port of another test's connection before the process binds it. Tests of one
/// binary step through the range; binaries start at offsets of their pid; a port that
/// does not bind now is skipped.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const BASE: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (BASE + start.wrapping_add(n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {BASE}..{}", BASE + SPAN);
}

/// One request on its own connection: the answer's status line, or `None` when the
/// connection fails or no full answer comes within 10 s (a hang detector, not a timing
/// assertion).
pub fn request(port: u16, method: &str, host: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

pub fn wait_answering(port: u16, path: &str) {
    let up = (0..200).any(|_| {
        let ok = request(port, "GET", "proxy", path).is_some();
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    assert!(up, "nothing answered on port {port}");
}

/// `n` requests, each of which must be answered with `status`.
pub fn drive(port: u16, n: usize, method: &str, host: &str, path: &str, status: &str) {
    for i in 0..n {
        let answer = request(port, method, host, path);
        assert!(
            answer.as_deref().is_some_and(|a| a.starts_with(status)),
            "request {i} to port {port} got {answer:?}"
        );
    }
}

/// The waypoint binary on loopback with the empty static config of `dir`: plaintext HTTP
/// on `http`, admin on `admin`, one worker thread. No routes, so every request is
/// answered 404 (`NR`) and access-logged.
pub fn waypoint(bin: &Path, dir: &Path, http: u16, admin: u16) -> Command {
    let mut c = Command::new(bin);
    c.arg("--static-config")
        .arg(dir.join("config.pb"))
        .args(["--insecure", "--upstream", "plain"])
        .args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--metrics-addr", "off", "--readiness-addr", "off"])
        .args(["--namespace", "production", "--name", "waypoint"])
        .args(["--worker-threads", "1"]);
    c
}

/// The ztunnel binary on loopback with the empty static config of `dir` (no workloads):
/// an HBONE listener on `hbone`, admin on `admin`, nothing else, one data-path thread.
pub fn ztunnel(bin: &Path, dir: &Path, hbone: u16, admin: u16) -> Command {
    let mut c = Command::new(bin);
    c.args(["--node", "n0", "--static-config"])
        .arg(dir.join("config.pb"))
        .arg("--cert-dir")
        .arg(dir.join("certs"))
        .args(["--outbound-addr", "off", "--socks5-addr", "off"])
        .args(["--inbound-plain-addr", "off"])
        .args(["--hbone-addr", &format!("127.0.0.1:{hbone}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .args(["--metrics-addr", "off", "--readiness-addr", "off"])
        .args(["--worker-threads", "1", "--drain-timeout", "1s"]);
    c
}
