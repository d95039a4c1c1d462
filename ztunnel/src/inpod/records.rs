//! What the ztunnel remembers of each pod it was handed, on the node (a hostPath), so a
//! restarted or upgraded ztunnel finds every pod's network namespace again: the runtime's
//! netns path (a bind mount that lives as long as the pod sandbox) recorded at CNI ADD.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One pod handed over by the CNI plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The sandbox the CNI plugin named (empty for a pod found by a scan): a DEL of
    /// another sandbox of the same pod leaves this one alone.
    #[serde(default)]
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    pub ips: Vec<IpAddr>,
}

impl PodRecord {
    /// The pod's key ([`key_of`]), the same whether the pod was handed over or found by a
    /// scan.
    pub fn key(&self) -> String {
        key_of(&self.namespace, &self.name)
    }

    /// `namespace/name`.
    pub fn pod_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("pod records in {dir}: {source}")]
    Dir { dir: PathBuf, source: io::Error },
    #[error("pod record {file}: {source}")]
    Write { file: PathBuf, source: io::Error },
}

/// The records directory (one JSON file per pod).
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

/// The key of pod `namespace/name`: `<namespace>_<name>` with the name's dots as `_`. It
/// names the pod's pin directory, and bpffs refuses names with a dot (`EPERM`); a pod
/// name (DNS subdomain) and a namespace (DNS label) never hold `_`, so it is unique.
pub fn key_of(namespace: &str, name: &str) -> String {
    format!("{namespace}_{}", name.replace('.', "_"))
}

/// A key as a file name: anything but
/// `[A-Za-z0-9-_.]` becomes `_`.
fn file_name(key: &str) -> String {
    let s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{s}.json")
}

impl Records {
    pub fn open(dir: &Path) -> Result<Records, RecordError> {
        fs::create_dir_all(dir).map_err(|source| RecordError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
        Ok(Records {
            dir: dir.to_path_buf(),
        })
    }

    /// Writes (atomically) the record of a pod.
    pub fn save(&self, r: &PodRecord) -> Result<(), RecordError> {
        let file = self.dir.join(file_name(&r.key()));
        let tmp = file.with_extension("json.tmp");
        let write = || -> io::Result<()> {
            fs::write(&tmp, serde_json::to_vec(r).map_err(io::Error::other)?)?;
            fs::rename(&tmp, &file)
        };
        write().map_err(|source| RecordError::Write { file, source })
    }

    pub fn remove(&self, key: &str) {
        let _ = fs::remove_file(self.dir.join(file_name(key)));
    }

    /// Every readable record; unreadable files are logged and removed.
    pub fn load(&self) -> Result<Vec<PodRecord>, RecordError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| RecordError::Dir {
            dir: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<PodRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "dropping an unreadable pod record");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        out.sort_by_key(|r| r.key());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(uid: &str) -> PodRecord {
        PodRecord {
            namespace: "shop".into(),
            name: "cart-1".into(),
            uid: uid.into(),
            container_id: "c1".into(),
            netns: "/var/run/netns/cni-1234".into(),
            ifname: "eth0".into(),
            ips: vec!["10.244.1.5".parse().unwrap()],
        }
    }

    #[test]
    fn keys_are_bpffs_names_and_unique() {
        assert_eq!(key_of("shop", "cart-1"), "shop_cart-1");
        assert_eq!(key_of("shop", "cart.v1.x"), "shop_cart_v1_x");
        assert!(!key_of("a", "b.c").contains('.'));
        assert_ne!(key_of("a", "b-c"), key_of("a-b", "c"));
        assert_ne!(key_of("a", "b.c"), key_of("a", "b-c"));
    }

    #[test]
    fn records_round_trip_and_bad_files_are_dropped() {
        let dir = std::env::temp_dir().join(format!("mw-records-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let rs = Records::open(&dir).unwrap();
        rs.save(&rec("")).unwrap();
        // The same pod again (a new sandbox): one record, the last.
        rs.save(&rec("uid-1")).unwrap();
        let mut other = rec("uid-2");
        other.name = "../../etc/x".into();
        rs.save(&other).unwrap();
        fs::write(dir.join("junk.json"), b"{not json").unwrap();
        let got = rs.load().unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], other);
        assert_eq!(got[1], rec("uid-1"));
        assert!(!dir.join("junk.json").exists());
        // A name with slashes is one file inside the directory, not a path out of it.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        rs.remove(&key_of("shop", "cart-1"));
        rs.remove(&other.key());
        assert!(rs.load().unwrap().is_empty());
        let _ = fs::remove_dir_all(&dir);
    }
}
