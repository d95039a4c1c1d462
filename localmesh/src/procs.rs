//! A local mesh's child processes: located next to `meshwork` (else on PATH), logs to files in
//! the run directory, killed and reaped when the [`Procs`] set is dropped.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// The binaries a local mesh needs.
pub const BINARIES: [&str; 4] = ["controlplane", "ztunnel", "waypoint", "meshwork-testapp"];

/// Finds `name` in `$MESHWORK_BIN_DIR`, next to the running executable (or its parent
/// when running from `target/<profile>/deps`), then on PATH.
pub fn locate(name: &str) -> Result<PathBuf, Error> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("MESHWORK_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        if dir.file_name().is_some_and(|n| n == "deps") {
            dirs.extend(dir.parent().map(Path::to_path_buf));
        }
        dirs.push(dir);
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingBinary {
            name: name.to_string(),
            searched: dirs
                .iter()
                .take(3)
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// One running child.
pub struct Proc {
    pub name: String,
    child: Child,
    pub stderr: PathBuf,
}

impl Proc {
    /// The child exited already: its status and the tail of its stderr.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{} exited ({status}): {}",
                self.name,
                tail(&self.stderr, 3)
            )),
            _ => None,
        }
    }
}

/// Last `n` non-empty lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Every child a mesh started; dropping it kills them all.
#[derive(Default)]
pub struct Procs {
    list: Vec<Proc>,
}

impl Procs {
    /// Starts `bin args…` with stdout/stderr in `log_dir/<name>.{out,err}`.
    pub fn spawn(
        &mut self,
        name: &str,
        bin: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Result<&mut Proc, Error> {
        self.spawn_env(name, bin, args, &[], log_dir)
    }

    /// As [`Procs::spawn`] with extra environment variables.
    pub fn spawn_env(
        &mut self,
        name: &str,
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> Result<&mut Proc, Error> {
        let stdout = log_dir.join(format!("{name}.out"));
        let stderr = log_dir.join(format!("{name}.err"));
        let open = |p: &Path| {
            File::create(p).map_err(|source| Error::Io {
                path: p.to_path_buf(),
                error: source,
            })
        };
        let mut cmd = Command::new(bin);
        // SAFETY: prctl(2) only, which is async-signal-safe: if `meshwork` dies without
        // cleaning up (SIGKILL), the kernel sends the child SIGTERM.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(open(&stdout)?)
            .stderr(open(&stderr)?)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .map_err(|source| Error::Spawn {
                name: name.to_string(),
                path: bin.to_path_buf(),
                error: source,
            })?;
        self.list.push(Proc {
            name: name.to_string(),
            child,
            stderr,
        });
        Ok(self.list.last_mut().expect("just pushed"))
    }

    /// The first child that died, if any.
    pub fn first_exited(&mut self) -> Option<String> {
        self.list.iter_mut().find_map(Proc::exited)
    }

    /// SIGTERM everyone, give them a moment, then SIGKILL whoever is left.
    pub fn shutdown(&mut self) {
        for p in &self.list {
            if let Ok(pid) = i32::try_from(p.child.id()) {
                // SAFETY: plain kill(2) on a pid we spawned and have not reaped yet.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for p in &mut self.list {
            while Instant::now() < deadline {
                if matches!(p.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.list.clear();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_it() {
        let e = locate("meshwork-no-such-binary").unwrap_err();
        assert!(e.to_string().contains("meshwork-no-such-binary"), "{e}");
    }

    #[test]
    fn children_are_reaped_on_drop_and_exits_are_seen() {
        let dir = tempfile::tempdir().unwrap();
        let mut procs = Procs::default();
        let sh = PathBuf::from("/bin/sh");
        procs
            .spawn(
                "sleeper",
                &sh,
                &["-c".into(), "sleep 30".into()],
                dir.path(),
            )
            .unwrap();
        procs
            .spawn(
                "quitter",
                &sh,
                &["-c".into(), "echo bye >&2".into()],
                dir.path(),
            )
            .unwrap();
        let mut seen = None;
        for _ in 0..100 {
            seen = procs.first_exited();
            if seen.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let seen = seen.unwrap();
        assert!(seen.contains("quitter") && seen.contains("bye"), "{seen}");
        let started = Instant::now();
        drop(procs);
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
