//! WasmPlugin → model `WasmPlugin`.
//!
//! Scope as for Telemetry and AuthorizationPolicy: `targetRef(s)` → TARGET_REF, a
//! `selector` → WORKLOAD_SELECTOR, otherwise the root namespace → GLOBAL and any other
//! namespace → NAMESPACE. `url` is normalised as Istio reads it (a reference without a
//! scheme is an OCI image); `pluginConfig` becomes compact JSON (map keys as strings, as
//! `kubectl` sends YAML); `imagePullSecret` is resolved by the caller into `pull_auth`
//! with [`pull_auth_for`].

use meshwork_api::extensions::{
    EnvValueSource, FailStrategy, PluginPhase, PluginType, PullPolicy, WasmPlugin,
};
use meshwork_api::Object;
use meshwork_model::pb::config::{
    PolicyScope, WasmEnvVar, WasmFailStrategy, WasmPhase, WasmPlugin as Model, WasmPluginType,
    WasmPullPolicy, WasmTrafficSelector,
};
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

use super::authz::target_ref;

/// A reference without a scheme is an OCI image (Istio).
pub fn normalize_url(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("oci://{url}")
    }
}

/// The registry host (`host[:port]`) of an `oci://` url, for matching pull credentials.
pub fn registry_of(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("oci://")?;
    let first = rest.split('/').next()?;
    if rest.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
        Some(first)
    } else {
        Some("index.docker.io")
    }
}

/// YAML as JSON, map keys as strings.
fn to_json(v: &Yaml) -> Json {
    match v {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(*b),
        Yaml::Number(n) => serde_json::to_value(n).unwrap_or(Json::Null),
        Yaml::String(s) => Json::String(s.clone()),
        Yaml::Sequence(items) => Json::Array(items.iter().map(to_json).collect()),
        Yaml::Mapping(m) => Json::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        other => serde_yaml_ng::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Tagged(t) => to_json(&t.value),
    }
}

/// Translates one WasmPlugin; `pull_auth` is what its `imagePullSecret` resolved to.
pub fn wasm_plugin(
    obj: &Object,
    w: &WasmPlugin,
    root_namespace: &str,
    pull_auth: Option<String>,
) -> Model {
    let refs = w.all_target_refs();
    let scope = if !refs.is_empty() {
        PolicyScope::TargetRef
    } else if w.selector.is_some() {
        PolicyScope::WorkloadSelector
    } else if obj.namespace == root_namespace {
        PolicyScope::Global
    } else {
        PolicyScope::Namespace
    };
    let plugin_config_json = match &w.plugin_config {
        None | Some(Yaml::Null) => String::new(),
        Some(v) => to_json(v).to_string(),
    };
    Model {
        name: obj.name.clone(),
        namespace: obj.namespace.clone(),
        scope: scope as i32,
        selector: w
            .selector
            .as_ref()
            .map(|s| s.match_labels.clone())
            .unwrap_or_default(),
        target_refs: refs.iter().map(|r| target_ref(r, &obj.namespace)).collect(),
        url: normalize_url(&w.url),
        sha256: w.sha256.to_ascii_lowercase(),
        image_pull_policy: match w.image_pull_policy.unwrap_or_default() {
            PullPolicy::Unspecified => WasmPullPolicy::PullUnspecified,
            PullPolicy::IfNotPresent => WasmPullPolicy::IfNotPresent,
            PullPolicy::Always => WasmPullPolicy::Always,
        } as i32,
        image_pull_secret: w.image_pull_secret.clone().unwrap_or_default(),
        pull_auth: pull_auth.unwrap_or_default(),
        plugin_name: w.plugin_name.clone().unwrap_or_default(),
        phase: match w.phase.unwrap_or_default() {
            PluginPhase::Unspecified => WasmPhase::PhaseUnspecified,
            PluginPhase::Authn => WasmPhase::Authn,
            PluginPhase::Authz => WasmPhase::Authz,
            PluginPhase::Stats => WasmPhase::Stats,
        } as i32,
        priority: w.priority.unwrap_or(0),
        plugin_config_json,
        // FAIL_RELOAD: fail closed; the waypoint re-instantiates a failed plugin anyway.
        fail_strategy: match w.fail_strategy.unwrap_or_default() {
            FailStrategy::FailClose | FailStrategy::FailReload => WasmFailStrategy::FailClose,
            FailStrategy::FailOpen => WasmFailStrategy::FailOpen,
        } as i32,
        r#match: w
            .match_
            .iter()
            .map(|m| WasmTrafficSelector {
                mode: m.mode.unwrap_or_default().as_str().to_string(),
                ports: m.ports.iter().map(|p| p.number).collect(),
            })
            .collect(),
        env: w
            .vm_config
            .iter()
            .flat_map(|vm| vm.env.iter())
            .map(|e| WasmEnvVar {
                name: e.name.clone(),
                value_from: match e.value_from.unwrap_or_default() {
                    EnvValueSource::Inline => "INLINE",
                    EnvValueSource::Host => "HOST",
                }
                .to_string(),
                value: e.value.clone().unwrap_or_default(),
            })
            .collect(),
        r#type: match w.type_.unwrap_or_default() {
            PluginType::Unspecified => WasmPluginType::WasmTypeUnspecified,
            PluginType::Http => WasmPluginType::WasmHttp,
            PluginType::Network => WasmPluginType::WasmNetwork,
        } as i32,
    }
}

/// Why a pull secret gave no credentials. Never carries secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PullSecretError {
    #[error("not a .dockerconfigjson document")]
    Format,
    #[error("no credentials for registry {0}")]
    NoEntry(String),
}

/// Registry keys of a docker config as hosts: `https://index.docker.io/v1/` and
/// `docker.io` are Docker Hub's `index.docker.io`.
fn config_host(key: &str) -> &str {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k);
    match k {
        "docker.io" | "registry-1.docker.io" => "index.docker.io",
        other => other,
    }
}

/// The `Authorization` value for `registry` from a `.dockerconfigjson` document:
/// `Basic <auth>` (or of `username:password`), or `Bearer <registrytoken>`.
pub fn pull_auth_for(dockerconfigjson: &[u8], registry: &str) -> Result<String, PullSecretError> {
    let doc: Json =
        serde_json::from_slice(dockerconfigjson).map_err(|_| PullSecretError::Format)?;
    let auths = doc
        .get("auths")
        .and_then(Json::as_object)
        .ok_or(PullSecretError::Format)?;
    let want = config_host(registry);
    let entry = auths
        .iter()
        .find(|(k, _)| config_host(k) == want)
        .map(|(_, v)| v)
        .ok_or_else(|| PullSecretError::NoEntry(registry.to_string()))?;
    let field = |k: &str| {
        entry
            .get(k)
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(t) = field("registrytoken") {
        return Ok(format!("Bearer {t}"));
    }
    if let Some(a) = field("auth") {
        return Ok(format!("Basic {a}"));
    }
    match (field("username"), field("password")) {
        (Some(u), Some(p)) => Ok(format!("Basic {}", base64(format!("{u}:{p}").as_bytes()))),
        _ => Err(PullSecretError::NoEntry(registry.to_string())),
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_api::{parse_file, Spec};

    fn translate(yaml: &str, root: &str) -> Model {
        let parsed = parse_file("t.yaml".as_ref(), yaml, "shop");
        let errors: Vec<_> = parsed.errors().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let obj = parsed.objects().next().unwrap();
        let Spec::WasmPlugin(w) = &obj.spec else {
            panic!("not a WasmPlugin")
        };
        wasm_plugin(obj, w, root, None)
    }

    const HEAD: &str =
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: auth\n";

    #[test]
    fn fields_and_scope() {
        let m = translate(
            &format!(
                "{HEAD}spec:\n  targetRefs:\n  - kind: Gateway\n    group: gateway.networking.k8s.io\n    name: waypoint\n  url: ghcr.io/org/auth:v1\n  sha256: {}\n  imagePullPolicy: Always\n  pluginName: root\n  phase: AUTHZ\n  priority: 10\n  failStrategy: FAIL_OPEN\n  pluginConfig:\n    header: x-auth\n    1: one\n    list: [1, true, null]\n  match:\n  - mode: SERVER\n    ports: [{{number: 8080}}]\n  vmConfig:\n    env:\n    - name: A\n      value: a\n    - name: POD_NAME\n      valueFrom: HOST\n  type: HTTP\n",
                "ab".repeat(32)
            ),
            "istio-system",
        );
        assert_eq!(m.scope, PolicyScope::TargetRef as i32);
        assert_eq!(m.target_refs[0].namespace, "shop");
        assert_eq!(m.url, "oci://ghcr.io/org/auth:v1");
        assert_eq!(m.image_pull_policy, WasmPullPolicy::Always as i32);
        assert_eq!(m.phase, WasmPhase::Authz as i32);
        assert_eq!(m.priority, 10);
        assert_eq!(m.fail_strategy, WasmFailStrategy::FailOpen as i32);
        assert_eq!(
            m.plugin_config_json,
            r#"{"1":"one","header":"x-auth","list":[1,true,null]}"#
        );
        assert_eq!(m.r#match[0].mode, "SERVER");
        assert_eq!(m.r#match[0].ports, [8080]);
        assert_eq!(m.env[0].value_from, "INLINE");
        assert_eq!(m.env[1].value_from, "HOST");
        assert_eq!(m.r#type, WasmPluginType::WasmHttp as i32);

        let global = translate(
            &format!("{HEAD}  namespace: istio-system\nspec:\n  url: file:///p.wasm\n"),
            "istio-system",
        );
        assert_eq!(global.scope, PolicyScope::Global as i32);
        assert_eq!(global.url, "file:///p.wasm");
        assert!(global.plugin_config_json.is_empty());
        let ns = translate(
            &format!("{HEAD}spec:\n  url: file:///p.wasm\n"),
            "istio-system",
        );
        assert_eq!(ns.scope, PolicyScope::Namespace as i32);
        let sel = translate(
            &format!(
                "{HEAD}spec:\n  url: file:///p.wasm\n  selector:\n    matchLabels: {{app: web}}\n"
            ),
            "istio-system",
        );
        assert_eq!(sel.scope, PolicyScope::WorkloadSelector as i32);
        assert_eq!(sel.selector["app"], "web");
    }

    #[test]
    fn pull_secrets_resolve_per_registry() {
        let cfg = br#"{"auths":{"ghcr.io":{"auth":"dXNlcjpwYXNz"},"https://index.docker.io/v1/":{"username":"u","password":"p"},"tok.io":{"registrytoken":"t"}}}"#;
        assert_eq!(pull_auth_for(cfg, "ghcr.io").unwrap(), "Basic dXNlcjpwYXNz");
        assert_eq!(pull_auth_for(cfg, "index.docker.io").unwrap(), "Basic dTpw");
        assert_eq!(pull_auth_for(cfg, "tok.io").unwrap(), "Bearer t");
        assert_eq!(
            pull_auth_for(cfg, "quay.io").unwrap_err(),
            PullSecretError::NoEntry("quay.io".into())
        );
        assert_eq!(
            pull_auth_for(b"{}", "ghcr.io").unwrap_err(),
            PullSecretError::Format
        );
        assert_eq!(registry_of("oci://ghcr.io/org/p:v1"), Some("ghcr.io"));
        assert_eq!(registry_of("oci://org/p"), Some("index.docker.io"));
        assert_eq!(registry_of("https://h/p.wasm"), None);
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
