//! The example plugins of `examples/wasm-plugins`, built for tests: `cargo build --target
//! wasm32-wasip1 --release` on that workspace, into `wasm-plugins/` under the calling test's
//! target directory. Cargo does nothing when they are up to date; its lock serialises tests
//! that build at once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The example plugins' workspace.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/wasm-plugins")
        .canonicalize()
        .expect("examples/wasm-plugins exists")
}

/// The target directory of the running test binary (`<target>/debug/deps/<test>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// Builds the examples once per process; the directory holding `<name>.wasm`.
pub fn build() -> Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = target_dir().join("wasm-plugins");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .current_dir(workspace())
                .args(["build", "--release", "--target", "wasm32-wasip1", "--target-dir"])
                .arg(&target)
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .output()
                .map_err(|e| format!("running cargo: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "building examples/wasm-plugins failed (is the wasm32-wasip1 target installed? scripts/setup adds it):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(target.join("wasm32-wasip1/release"))
        })
        .clone()
}

/// The path of example plugin `name` (`auth_header`, `rewrite`, `callout`, `trap`).
pub fn plugin(name: &str) -> PathBuf {
    match build() {
        Ok(dir) => dir.join(format!("{name}.wasm")),
        Err(e) => panic!("{e}"),
    }
}
