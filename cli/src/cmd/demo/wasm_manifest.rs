//! The manifests of the demo's Wasm pattern (pattern 7, `patterns/wasm.rs`): a Service of
//! the demo's own and the WasmPlugins attached to it, written beside the seed manifests
//! before the mesh starts (so `mesh.rs` needs them without depending on the patterns).

use std::path::{Path, PathBuf};

use super::topology::{APP_PORT, NAMESPACE};

/// The demo's Service that the plugins attach to (selects the order-service pods).
pub const SERVICE: &str = "order-wasm";
/// The header and value the auth-header plugin is configured to accept.
pub const API_KEY_HEADER: &str = "x-api-key";
pub const API_KEY: &str = "demo-key";
/// Where the example plugins are, when not next to the binary.
pub const DIR_ENV: &str = "MESHWORK_DEMO_WASM_DIR";

/// The directory of the built example plugins: `$MESHWORK_DEMO_WASM_DIR`, else
/// `<target>/wasm-plugins/wasm32-wasip1/release` for a `meshwork` at `<target>/<profile>/`
/// (where `scripts/demo` and the tests build them). None when `auth_header.wasm` and
/// `trap.wasm` are not both there.
pub fn plugin_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os(DIR_ENV) {
        Some(d) => PathBuf::from(d),
        None => std::env::current_exe()
            .ok()?
            .parent()?
            .parent()?
            .join("wasm-plugins/wasm32-wasip1/release"),
    };
    let dir = dir.canonicalize().ok()?;
    ["auth_header", "trap"]
        .iter()
        .all(|p| dir.join(format!("{p}.wasm")).is_file())
        .then_some(dir)
}

/// `(file name, YAML)`: the [`SERVICE`] and, when the plugins are built, the two
/// WasmPlugins attached to it.
pub fn manifest(plugins: Option<&Path>) -> (String, String) {
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {SERVICE}\n  namespace: {NAMESPACE}\n\
spec:\n  selector:\n    app: order-service\n  ports:\n    - name: http\n      port: {port}\n      targetPort: {port}\n",
        port = APP_PORT,
    );
    if let Some(dir) = plugins {
        let target = format!(
            "  targetRefs:\n    - kind: Service\n      group: \"\"\n      name: {SERVICE}\n"
        );
        y.push_str(&format!(
            "---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: api-key\n  namespace: {NAMESPACE}\n\
spec:\n{target}  url: file://{auth}\n  phase: AUTHN\n  failStrategy: FAIL_CLOSE\n  pluginConfig:\n    header: {API_KEY_HEADER}\n    values: [{API_KEY}]\n",
            auth = dir.join("auth_header.wasm").display(),
        ));
        y.push_str(&format!(
            "---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: trap\n  namespace: {NAMESPACE}\n\
spec:\n{target}  url: file://{trap}\n  failStrategy: FAIL_CLOSE\n",
            trap = dir.join("trap.wasm").display(),
        ));
    }
    ("00-demo-wasm.yaml".to_string(), y)
}
