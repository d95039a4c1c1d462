//! Helpers shared by the cli's integration tests that run the workspace binaries.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The workspace binaries the demo starts, next to the `meshwork` binary.
const BINARIES: [&str; 4] = ["controlplane", "ztunnel", "waypoint", "meshwork-testapp"];

/// The directory holding `meshwork` and every workspace binary (fails naming the missing one).
pub fn bin_dir() -> PathBuf {
    let meshwork = Path::new(env!("CARGO_BIN_EXE_meshwork"));
    let dir = meshwork.parent().expect("target dir").to_path_buf();
    for b in BINARIES {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: the demo needs every workspace binary; run `cargo test --workspace` \
             (or `cargo build --workspace --bins` before `cargo test -p meshwork-cli`)",
            dir.join(b).display()
        );
    }
    dir
}

/// An external tool from PATH; fails (never skips) when it is not installed.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: run scripts/setup (it installs the Debian packages \
                 the tests need: prometheus for promtool and prometheus, curl)"
            )
        })
}

/// A child process stopped when the guard drops: SIGTERM (so it cleans up), then SIGKILL
/// if it has not exited within 10 s.
pub struct Guard(Child);

impl Guard {
    pub fn new(child: Child) -> Self {
        Guard(child)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill(2) on our own child's pid; it has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
