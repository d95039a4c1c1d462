//! Installing the plugin on a node: its binary into the CNI bin directory and its entry at
//! the end of the node's primary network configuration list, as kubelet/containerd pick it
//! (the lexicographically first `.conflist`/`.conf`/`.json` file of the conf directory).
//! Everything is idempotent and every file is replaced atomically (written under a
//! temporary name, then renamed), so a runtime reading the directory never sees half a file.
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::plugin::PLUGIN_TYPE;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {field}: {reason}")]
    Malformed {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("no CNI network configuration (*.conflist, *.conf, *.json) in {dir}: is the node's network plugin installed yet?")]
    NoConfig { dir: PathBuf },
    #[error("cannot convert {from} to a list: {to} already exists")]
    Exists { from: PathBuf, to: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `install` writes into the plugin's entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PluginSettings {
    pub agent_socket: Option<String>,
    pub exclude_namespaces: Option<Vec<String>>,
    pub timeout_seconds: Option<u64>,
    pub log_file: Option<String>,
}

impl PluginSettings {
    /// The conflist entry (keys left out take the plugin's defaults).
    pub fn entry(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("type".into(), PLUGIN_TYPE.into());
        if let Some(s) = &self.agent_socket {
            m.insert("agentSocket".into(), s.clone().into());
        }
        if let Some(e) = &self.exclude_namespaces {
            m.insert("excludeNamespaces".into(), e.clone().into());
        }
        if let Some(t) = self.timeout_seconds {
            m.insert("timeoutSeconds".into(), t.into());
        }
        if let Some(l) = &self.log_file {
            m.insert("logFile".into(), l.clone().into());
        }
        m
    }
}

/// The network configuration file the runtime uses: the lexicographically first file with
/// a CNI extension (libcni's `ConfFiles` order, which kubelet and containerd follow).
pub fn primary_config(dir: &Path) -> Result<Option<PathBuf>, InstallError> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
        .collect();
    files.sort();
    Ok(files.into_iter().next())
}

fn is_list(path: &Path, v: &Value) -> bool {
    path.extension().and_then(|e| e.to_str()) == Some("conflist") || v.get("plugins").is_some()
}

/// A single-plugin configuration (`.conf`) as a list of one plugin: `cniVersion` and
/// `name` move to the list, everything else stays in the plugin.
pub fn conf_to_conflist(path: &Path, conf: Value) -> Result<Value, InstallError> {
    let Value::Object(mut plugin) = conf else {
        return Err(malformed(path, ".", "not a JSON object"));
    };
    let version = plugin
        .remove("cniVersion")
        .ok_or_else(|| malformed(path, "cniVersion", "missing"))?;
    let name = plugin
        .remove("name")
        .ok_or_else(|| malformed(path, "name", "missing"))?;
    if !plugin.get("type").is_some_and(Value::is_string) {
        return Err(malformed(path, "type", "missing or not a string"));
    }
    let mut list = Map::new();
    list.insert("cniVersion".into(), version);
    list.insert("name".into(), name);
    list.insert("plugins".into(), Value::Array(vec![Value::Object(plugin)]));
    Ok(Value::Object(list))
}

fn malformed(path: &Path, field: &str, reason: &str) -> InstallError {
    InstallError::Malformed {
        path: path.to_path_buf(),
        field: field.into(),
        reason: reason.into(),
    }
}

fn plugins_mut<'a>(path: &Path, list: &'a mut Value) -> Result<&'a mut Vec<Value>, InstallError> {
    let obj = list
        .as_object_mut()
        .ok_or_else(|| malformed(path, ".", "not a JSON object"))?;
    let plugins = obj
        .get_mut("plugins")
        .ok_or_else(|| malformed(path, "plugins", "missing"))?
        .as_array_mut()
        .ok_or_else(|| malformed(path, "plugins", "not an array"))?;
    for (i, p) in plugins.iter().enumerate() {
        if !p.get("type").is_some_and(Value::is_string) {
            return Err(malformed(
                path,
                &format!("plugins[{i}].type"),
                "missing or not a string",
            ));
        }
    }
    Ok(plugins)
}

fn is_ours(p: &Value) -> bool {
    p.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

/// Puts `entry` last in the list's `plugins`, replacing any earlier entry of ours. Returns
/// whether the list changed.
pub fn insert_plugin(
    path: &Path,
    list: &mut Value,
    entry: Map<String, Value>,
) -> Result<bool, InstallError> {
    let plugins = plugins_mut(path, list)?;
    let entry = Value::Object(entry);
    if plugins.last() == Some(&entry) && plugins.iter().filter(|p| is_ours(p)).count() == 1 {
        return Ok(false);
    }
    plugins.retain(|p| !is_ours(p));
    plugins.push(entry);
    Ok(true)
}

/// Removes every entry of ours. Returns whether the list changed.
pub fn remove_plugin(path: &Path, list: &mut Value) -> Result<bool, InstallError> {
    let plugins = plugins_mut(path, list)?;
    let before = plugins.len();
    plugins.retain(|p| !is_ours(p));
    Ok(plugins.len() != before)
}

fn read_json(path: &Path) -> Result<Value, InstallError> {
    let text = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&text).map_err(|source| InstallError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.meshwork-tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        InstallError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    })
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("a JSON value serializes");
    out.push(b'\n');
    out
}

/// What `install`/`uninstall` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub binary: PathBuf,
    pub config: Option<PathBuf>,
    /// Whether the configuration file was rewritten.
    pub config_changed: bool,
}

/// Copies `own_binary` to `<bin_dir>/meshwork-cni` and puts the plugin's entry last in the
/// primary configuration of `conf_dir` (a `.conf` is rewritten as a `.conflist` of the same
/// stem, the `.conf` removed). Running it again changes nothing.
pub fn install(
    own_binary: &Path,
    bin_dir: &Path,
    conf_dir: &Path,
    settings: &PluginSettings,
) -> Result<Report, InstallError> {
    let binary = bin_dir.join(PLUGIN_TYPE);
    let bytes = fs::read(own_binary).map_err(io_err(own_binary))?;
    if fs::read(&binary).ok().as_deref() != Some(&bytes[..]) {
        fs::create_dir_all(bin_dir).map_err(io_err(bin_dir))?;
        write_atomic(&binary, &bytes, 0o755)?;
    }
    let config_changed;
    let path = primary_config(conf_dir)?.ok_or_else(|| InstallError::NoConfig {
        dir: conf_dir.to_path_buf(),
    })?;
    let v = read_json(&path)?;
    let config = if is_list(&path, &v) {
        let mut list = v;
        config_changed = insert_plugin(&path, &mut list, settings.entry())?;
        if config_changed {
            write_atomic(&path, &encode(&list), 0o644)?;
        }
        path
    } else {
        let mut list = conf_to_conflist(&path, v)?;
        insert_plugin(&path, &mut list, settings.entry())?;
        let to = path.with_extension("conflist");
        if to.exists() {
            return Err(InstallError::Exists { from: path, to });
        }
        write_atomic(&to, &encode(&list), 0o644)?;
        fs::remove_file(&path).map_err(io_err(&path))?;
        config_changed = true;
        to
    };
    Ok(Report {
        binary,
        config: Some(config),
        config_changed,
    })
}

/// Removes the plugin's entry from every configuration list of `conf_dir` that has one
/// (not only the primary: the primary may have changed since `install`), then the binary.
pub fn uninstall(bin_dir: &Path, conf_dir: &Path) -> Result<Report, InstallError> {
    let mut changed = None;
    if conf_dir.exists() {
        let mut files: Vec<PathBuf> = fs::read_dir(conf_dir)
            .map_err(io_err(conf_dir))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                !name.starts_with('.')
                    && matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("conflist" | "conf" | "json")
                    )
            })
            .collect();
        files.sort();
        for path in files {
            let mut v = read_json(&path)?;
            if !is_list(&path, &v) {
                continue;
            }
            if remove_plugin(&path, &mut v)? {
                write_atomic(&path, &encode(&v), 0o644)?;
                changed.get_or_insert(path);
            }
        }
    }
    let binary = bin_dir.join(PLUGIN_TYPE);
    match fs::remove_file(&binary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&binary)(e)),
    }
    Ok(Report {
        binary,
        config_changed: changed.is_some(),
        config: changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> PluginSettings {
        PluginSettings {
            agent_socket: Some("/var/run/meshwork/cni.sock".into()),
            exclude_namespaces: Some(vec!["kube-system".into(), "istio-system".into()]),
            ..Default::default()
        }
    }

    fn kindnet() -> Value {
        json!({"cniVersion":"1.0.0","name":"kindnet","plugins":[{"type":"ptp"},{"type":"portmap"}]})
    }

    #[test]
    fn insert_appends_once_updates_and_remove_restores() {
        let p = Path::new("10-kindnet.conflist");
        let mut v = kindnet();
        assert!(insert_plugin(p, &mut v, settings().entry()).unwrap());
        assert_eq!(v["plugins"][2]["type"], "meshwork-cni");
        assert_eq!(v["plugins"][2]["excludeNamespaces"][1], "istio-system");
        let once = v.clone();
        assert!(!insert_plugin(p, &mut v, settings().entry()).unwrap());
        assert_eq!(v, once);
        // Changed settings replace the entry, still last and single.
        let mut s = settings();
        s.timeout_seconds = Some(3);
        assert!(insert_plugin(p, &mut v, s.entry()).unwrap());
        assert_eq!(v["plugins"].as_array().unwrap().len(), 3);
        assert_eq!(v["plugins"][2]["timeoutSeconds"], 3);
        // An entry that is not last (another plugin was appended after it) moves to the end.
        v["plugins"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type":"bandwidth"}));
        assert!(insert_plugin(p, &mut v, s.entry()).unwrap());
        assert_eq!(v["plugins"][3]["type"], "meshwork-cni");
        assert_eq!(v["plugins"][2]["type"], "bandwidth");
        assert!(remove_plugin(p, &mut v).unwrap());
        assert!(!remove_plugin(p, &mut v).unwrap());
        assert_eq!(v["plugins"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn conf_becomes_a_list_of_one() {
        let p = Path::new("10-bridge.conf");
        let conf = json!({"cniVersion":"0.4.0","name":"bridge","type":"bridge","ipam":{"type":"host-local"}});
        let list = conf_to_conflist(p, conf).unwrap();
        assert_eq!(
            list,
            json!({"cniVersion":"0.4.0","name":"bridge","plugins":[{"type":"bridge","ipam":{"type":"host-local"}}]})
        );
        let e = conf_to_conflist(p, json!({"cniVersion":"1.0.0","name":"x"})).unwrap_err();
        assert!(e.to_string().contains("10-bridge.conf: type"), "{e}");
    }

    #[test]
    fn malformed_lists_name_file_and_field() {
        let p = Path::new("/etc/cni/net.d/10-x.conflist");
        for (v, field) in [
            (json!({"name":"x"}), "plugins: missing"),
            (json!({"plugins":{}}), "plugins: not an array"),
            (json!({"plugins":[{"type":"ptp"},{}]}), "plugins[1].type"),
            (json!([]), "not a JSON object"),
        ] {
            let mut v = v;
            let e = insert_plugin(p, &mut v, settings().entry()).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains("10-x.conflist") && text.contains(field),
                "{text}"
            );
        }
    }

    #[test]
    fn install_and_uninstall_on_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, conf) = (dir.path().join("bin"), dir.path().join("net.d"));
        fs::create_dir_all(&conf).unwrap();
        let own = dir.path().join("self");
        fs::write(&own, b"#!binary").unwrap();
        assert!(matches!(
            install(&own, &bin, &conf, &settings()),
            Err(InstallError::NoConfig { .. })
        ));
        // The first file in lexicographic order is the primary one; `.conf` is converted.
        fs::write(conf.join("20-other.conflist"), kindnet().to_string()).unwrap();
        fs::write(
            conf.join("10-bridge.conf"),
            r#"{"cniVersion":"1.0.0","name":"bridge","type":"bridge"}"#,
        )
        .unwrap();
        fs::write(conf.join("README"), "not a config").unwrap();
        let r = install(&own, &bin, &conf, &settings()).unwrap();
        assert!(r.config_changed);
        assert_eq!(r.config, Some(conf.join("10-bridge.conflist")));
        assert!(!conf.join("10-bridge.conf").exists());
        let mode = fs::metadata(bin.join("meshwork-cni"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let v = read_json(&conf.join("10-bridge.conflist")).unwrap();
        assert_eq!(v["plugins"][1]["type"], "meshwork-cni");
        let bytes = fs::read(conf.join("10-bridge.conflist")).unwrap();
        let again = install(&own, &bin, &conf, &settings()).unwrap();
        assert!(!again.config_changed);
        assert_eq!(fs::read(conf.join("10-bridge.conflist")).unwrap(), bytes);
        // The other list was never touched.
        assert_eq!(
            read_json(&conf.join("20-other.conflist")).unwrap(),
            kindnet()
        );
        let u = uninstall(&bin, &conf).unwrap();
        assert!(u.config_changed);
        assert!(!bin.join("meshwork-cni").exists());
        let v = read_json(&conf.join("10-bridge.conflist")).unwrap();
        assert_eq!(v["plugins"].as_array().unwrap().len(), 1);
        let u = uninstall(&bin, &conf).unwrap();
        assert!(!u.config_changed);
        // Bad JSON names the file.
        fs::write(conf.join("05-broken.conflist"), "{").unwrap();
        let e = install(&own, &bin, &conf, &settings()).unwrap_err();
        assert!(e.to_string().contains("05-broken.conflist"), "{e}");
    }
}
