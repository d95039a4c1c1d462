//! A local Prometheus (the Debian `prometheus` binary) scraping the proxies: its
//! configuration written from a list of targets, started on a loopback port with its
//! storage in a temporary directory (or one the caller names), waited for until ready, queried, and stopped cleanly
//! (SIGTERM, then SIGKILL after a grace period).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::graph::Target;
use crate::scrape;

#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error("no `prometheus` binary on PATH (Debian: apt-get install prometheus)")]
    NotInstalled,
    #[error("refusing to bind Prometheus on {addr}: not a loopback address")]
    NotLoopback { addr: SocketAddr },
    #[error("target {url}: not an http://host:port/path URL")]
    Target { url: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("prometheus on {addr} exited before it was ready ({status}); its log ends:\n{log}")]
    Exited {
        addr: SocketAddr,
        status: ExitStatus,
        log: String,
    },
    #[error("prometheus on {addr} not ready within {limit:?}; its log ends:\n{log}")]
    NotReady {
        addr: SocketAddr,
        limit: Duration,
        log: String,
    },
    #[error("query {expr:?}: {reason}")]
    Query { expr: String, reason: String },
    #[error("stopping prometheus (pid {pid}): {source}")]
    Stop { pid: u32, source: std::io::Error },
}

/// One scrape job: `host:port` targets sharing a metrics path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub name: String,
    pub metrics_path: String,
    pub targets: Vec<String>,
}

impl Job {
    /// Jobs `<prefix>` (or `<prefix>-N` for further paths) from targets' URLs, one per path.
    pub fn from_targets(prefix: &str, targets: &[Target]) -> Result<Vec<Job>, PrometheusError> {
        let mut jobs: Vec<Job> = Vec::new();
        for t in targets {
            let rest = t
                .url
                .strip_prefix("http://")
                .ok_or_else(|| PrometheusError::Target { url: t.url.clone() })?;
            let (host, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/metrics"),
            };
            if host.is_empty() || path.contains('?') {
                return Err(PrometheusError::Target { url: t.url.clone() });
            }
            match jobs.iter_mut().find(|j| j.metrics_path == path) {
                Some(j) => j.targets.push(host.to_string()),
                None => {
                    let name = if jobs.is_empty() {
                        prefix.to_string()
                    } else {
                        format!("{prefix}-{}", jobs.len())
                    };
                    jobs.push(Job {
                        name,
                        metrics_path: path.to_string(),
                        targets: vec![host.to_string()],
                    });
                }
            }
        }
        Ok(jobs)
    }
}

/// A complete `prometheus.yml` (JSON, which is YAML) scraping `jobs` every `interval`.
pub fn scrape_config(jobs: &[Job], interval: Duration) -> String {
    let secs = |d: Duration| format!("{}ms", d.as_millis().max(1));
    let timeout = interval.min(Duration::from_secs(10));
    let scrape_configs: Vec<Value> = jobs
        .iter()
        .map(|j| {
            json!({
                "job_name": j.name,
                "metrics_path": j.metrics_path,
                "scrape_interval": secs(interval),
                "scrape_timeout": secs(timeout),
                "static_configs": [{"targets": j.targets}],
            })
        })
        .collect();
    let config = json!({
        "global": {"scrape_interval": secs(interval), "evaluation_interval": secs(interval)},
        "scrape_configs": scrape_configs,
    });
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// `prometheus` on PATH.
pub fn find_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Defaults to `prometheus` on PATH.
    pub binary: Option<PathBuf>,
    pub listen: SocketAddr,
    pub allow_remote: bool,
    pub scrape_interval: Duration,
}

/// A running Prometheus; dropping it kills it (prefer [`Prometheus::stop`]).
pub struct Prometheus {
    child: Option<Child>,
    /// Configuration, log and storage (`data/`).
    dir: PathBuf,
    /// Removed with the Prometheus when [`Prometheus::start`] chose the directory.
    _temp: Option<tempfile::TempDir>,
    pub addr: SocketAddr,
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Prometheus {
    /// Writes the configuration into a temporary directory (removed with the returned
    /// value) and starts Prometheus (not yet ready: see [`Self::wait_ready`]).
    pub fn start(jobs: &[Job], opts: &Options) -> Result<Prometheus, PrometheusError> {
        let temp = tempfile::Builder::new()
            .prefix("meshwork-prometheus-")
            .tempdir()
            .map_err(|source| PrometheusError::Write {
                path: std::env::temp_dir(),
                source,
            })?;
        let mut p = Self::spawn(jobs, opts, temp.path(), false)?;
        p._temp = Some(temp);
        Ok(p)
    }

    /// As [`Self::start`], with the configuration, log and storage in `dir` (created,
    /// left in place); Prometheus gets SIGTERM when the calling thread exits, so a
    /// long-lived owner that dies without stopping it does not leave it behind.
    pub fn start_in(
        jobs: &[Job],
        opts: &Options,
        dir: &Path,
    ) -> Result<Prometheus, PrometheusError> {
        std::fs::create_dir_all(dir).map_err(|source| PrometheusError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        Self::spawn(jobs, opts, dir, true)
    }

    fn spawn(
        jobs: &[Job],
        opts: &Options,
        dir: &Path,
        die_with_parent: bool,
    ) -> Result<Prometheus, PrometheusError> {
        if !opts.listen.ip().is_loopback() && !opts.allow_remote {
            return Err(PrometheusError::NotLoopback { addr: opts.listen });
        }
        let binary = match &opts.binary {
            Some(b) => b.clone(),
            None => find_binary().ok_or(PrometheusError::NotInstalled)?,
        };
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, scrape_config(jobs, opts.scrape_interval)).map_err(|source| {
            PrometheusError::Write {
                path: config.clone(),
                source,
            }
        })?;
        let log_path = dir.join("prometheus.log");
        let log = std::fs::File::create(&log_path).map_err(|source| PrometheusError::Write {
            path: log_path.clone(),
            source,
        })?;
        let mut cmd = Command::new(&binary);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={}", opts.listen))
            .arg("--storage.tsdb.retention.time=2h")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if die_with_parent {
            // SAFETY: prctl(2) only, async-signal-safe, in the child before exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .map_err(|source| PrometheusError::Spawn { binary, source })?;
        Ok(Prometheus {
            child: Some(child),
            dir: dir.to_path_buf(),
            _temp: None,
            addr: opts.listen,
        })
    }

    /// The process id of the running Prometheus.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("prometheus.yml")
    }

    /// The last lines of Prometheus' log.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.join("prometheus.log"), 20)
    }

    /// Polls `/-/ready` until it answers 200.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<(), PrometheusError> {
        let deadline = Instant::now() + limit;
        let url = format!("{}/-/ready", self.url());
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(PrometheusError::Exited {
                        addr: self.addr,
                        status,
                        log: self.log_tail(),
                    });
                }
            }
            if let Ok((200, _)) = scrape::get(&url, Duration::from_secs(2)).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(PrometheusError::NotReady {
                    addr: self.addr,
                    limit,
                    log: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// An instant query: the `data.result` array.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, PrometheusError> {
        let err = |reason: String| PrometheusError::Query {
            expr: expr.to_string(),
            reason,
        };
        let url = format!("{}/api/v1/query?query={}", self.url(), percent_encode(expr));
        let (status, body) = scrape::get(&url, Duration::from_secs(10))
            .await
            .map_err(|e| err(e.to_string()))?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| err(format!("HTTP {status}, not JSON: {e}")))?;
        if v["status"] != "success" {
            return Err(err(format!("HTTP {status}: {v}")));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// Sends SIGTERM and waits up to `grace` for a clean exit, then kills it.
    pub fn stop(mut self, grace: Duration) -> Result<ExitStatus, PrometheusError> {
        let mut child = match self.child.take() {
            Some(c) => c,
            None => unreachable!("the child is only taken here"),
        };
        let pid = child.id();
        // SAFETY: signalling our own child by its pid; it has not been reaped yet.
        if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } != 0 {
            return Err(PrometheusError::Stop {
                pid,
                source: std::io::Error::last_os_error(),
            });
        }
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    let _ = child.kill();
                    return child
                        .wait()
                        .map_err(|source| PrometheusError::Stop { pid, source });
                }
                Err(source) => return Err(PrometheusError::Stop { pid, source }),
            }
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_group_targets_by_path() {
        let t: Vec<Target> = [
            "127.0.0.1:15020",
            "http://127.0.0.1:15021/metrics",
            "http://127.0.0.1:9/stats/prometheus",
        ]
        .iter()
        .map(|s| Target::parse(s))
        .collect();
        let jobs = Job::from_targets("mesh", &t).unwrap();
        assert_eq!(
            jobs,
            vec![
                Job {
                    name: "mesh".into(),
                    metrics_path: "/metrics".into(),
                    targets: vec!["127.0.0.1:15020".into(), "127.0.0.1:15021".into()],
                },
                Job {
                    name: "mesh-1".into(),
                    metrics_path: "/stats/prometheus".into(),
                    targets: vec!["127.0.0.1:9".into()],
                },
            ]
        );
        let bad = Job::from_targets("x", &[Target::parse("https://a:1/m")]).unwrap_err();
        assert!(bad.to_string().contains("https://a:1/m"), "{bad}");
    }

    #[test]
    fn config_is_yaml_prometheus_reads() {
        let jobs = vec![Job {
            name: "j".into(),
            metrics_path: "/metrics".into(),
            targets: vec!["127.0.0.1:1".into()],
        }];
        let v: Value = serde_json::from_str(&scrape_config(&jobs, Duration::from_secs(1))).unwrap();
        assert_eq!(v["scrape_configs"][0]["scrape_interval"], "1000ms");
        assert_eq!(
            v["scrape_configs"][0]["static_configs"][0]["targets"][0],
            "127.0.0.1:1"
        );
    }

    #[test]
    fn encodes_queries() {
        assert_eq!(
            percent_encode("sum(rate(x{a=\"b\"}[1m]))"),
            "sum%28rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29%29"
        );
    }

    #[test]
    fn refuses_non_loopback() {
        let opts = Options {
            binary: Some("/bin/true".into()),
            listen: "0.0.0.0:9090".parse().unwrap(),
            allow_remote: false,
            scrape_interval: Duration::from_secs(1),
        };
        assert!(matches!(
            Prometheus::start(&[], &opts),
            Err(PrometheusError::NotLoopback { .. })
        ));
    }
}
