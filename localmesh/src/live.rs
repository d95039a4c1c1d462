//! Live edits of a running local mesh's directory, applied as a cluster would apply them.
//!
//! A saved edit is read again ([`crate::derive`]) and sorted into one of two kinds:
//!
//! * **config** — Istio and Gateway API resources, Services, Namespaces, and a pod's
//!   labels, annotations or service account: the control plane's copy of the manifests is
//!   rewritten in place and its directory source picks the change up, as it would a
//!   `kubectl apply` (the pods keep running; their objects are rewritten with the
//!   addresses they have).
//! * **restart** — the set of pods changes (a Deployment scaled, added or removed; a pod's
//!   ports, node or command changed; the `app`/`version` labels the test application
//!   answers with, which in Kubernetes is a new template and so new pods): the local mesh
//!   cannot yet add or remove a pod in place, so the caller restarts it with the new
//!   plan, and says why.
//!
//! An edit that does not read (bad YAML is the control plane's to report; a bad
//! `replicas`) leaves the running mesh as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::derive::{self, Derived};
use crate::plan::{pods_yaml, Placement, Plan};
use crate::Error;

/// The control plane's file of the pods' objects, written by the mesh (not the user's).
pub const PODS_FILE: &str = "zz-localmesh-pods.yaml";

/// What a directory's YAML files look like on disk: path, modification time, length.
/// Two equal stamps mean nothing was saved in between (as far as the file system says).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stamp(Vec<(PathBuf, Option<SystemTime>, u64)>);

impl Stamp {
    pub fn of(dir: &Path) -> Stamp {
        let files = derive::yaml_files(dir).unwrap_or_default();
        Stamp(
            files
                .into_iter()
                .map(|p| {
                    let meta = std::fs::metadata(&p).ok();
                    let modified = meta.as_ref().and_then(|m| m.modified().ok());
                    let len = meta.map(|m| m.len()).unwrap_or(0);
                    (p, modified, len)
                })
                .collect(),
        )
    }
}

/// What an edit asks of the running mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Rewrite the control plane's manifests: `changed` and `removed` file names.
    Config {
        changed: Vec<String>,
        removed: Vec<String>,
    },
    /// The pods change: restart with the new plan, for this reason.
    Restart(String),
}

impl Edit {
    /// One line for the user.
    pub fn summary(&self) -> String {
        match self {
            Edit::Config { changed, removed } if changed.is_empty() && removed.is_empty() => {
                "no change".to_string()
            }
            Edit::Config { changed, removed } => {
                let mut parts = Vec::new();
                if !changed.is_empty() {
                    parts.push(format!("changed {}", changed.join(", ")));
                }
                if !removed.is_empty() {
                    parts.push(format!("removed {}", removed.join(", ")));
                }
                parts.join("; ")
            }
            Edit::Restart(why) => format!("restart: {why}"),
        }
    }
}

/// Why the pods of `new` cannot replace those of `running` in place, if they cannot.
pub fn pods_differ(running: &Plan, new: &Plan) -> Option<String> {
    if running.nodes != new.nodes {
        return Some(format!(
            "nodes {} → {}",
            running.nodes.len(),
            new.nodes.len()
        ));
    }
    for p in &running.pods {
        let Some(q) = new.pod(&p.name) else {
            return Some(format!("pod {}/{} removed", p.namespace, p.name));
        };
        let what = if q.namespace != p.namespace {
            "namespace"
        } else if q.node != p.node {
            "node"
        } else if q.ports != p.ports {
            "ports"
        } else if q.run != p.run {
            "what it runs (its command, or the app/version labels the test application answers with)"
        } else {
            continue;
        };
        return Some(format!("pod {}/{}: {what} changed", p.namespace, p.name));
    }
    new.pods
        .iter()
        .find(|q| running.pod(&q.name).is_none())
        .map(|q| format!("pod {}/{} added", q.namespace, q.name))
}

/// The control plane's files for `derived` with the pods at `placement`.
pub fn control_plane_files(derived: &Derived, placement: &Placement) -> BTreeMap<String, String> {
    let mut files: BTreeMap<String, String> = derived.files.iter().cloned().collect();
    files.insert(PODS_FILE.to_string(), pods_yaml(&derived.plan, placement));
    files
}

/// Sorts the edit from `running` (what the control plane reads now) to `new`.
pub fn classify(
    running_plan: &Plan,
    running: &BTreeMap<String, String>,
    new: &Derived,
    placement: &Placement,
) -> Edit {
    if let Some(why) = pods_differ(running_plan, &new.plan) {
        return Edit::Restart(why);
    }
    let next = control_plane_files(new, placement);
    Edit::Config {
        changed: next
            .iter()
            .filter(|(name, text)| running.get(*name) != Some(text))
            .map(|(name, _)| name.clone())
            .collect(),
        removed: running
            .keys()
            .filter(|name| !next.contains_key(*name))
            .cloned()
            .collect(),
    }
}

/// Writes a config edit into the control plane's directory `config_dir`: each changed file
/// is written beside the directory and renamed in, so the control plane never reads half
/// a file; removed files are deleted. Returns what the control plane now reads.
pub fn apply(
    config_dir: &Path,
    new: &Derived,
    placement: &Placement,
    edit: &Edit,
) -> Result<BTreeMap<String, String>, Error> {
    let next = control_plane_files(new, placement);
    let Edit::Config { changed, removed } = edit else {
        return Err(Error::Plan(format!(
            "{}: not an edit the running mesh takes in place",
            edit.summary()
        )));
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| Error::Io { path, error }
    };
    let staging = config_dir.with_extension("staging");
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    for name in changed {
        let tmp = staging.join(name);
        std::fs::write(&tmp, &next[name]).map_err(io(&tmp))?;
        let dest = config_dir.join(name);
        std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    }
    for name in removed {
        let path = config_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io { path, error: e }),
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::derive_files;

    const SHOP: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart, namespace: shop}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: cart, version: v1}}
    spec:
      containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]
";
    const POLICY: &str = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny, namespace: shop}
spec: {action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}
";

    fn derived(files: &[(&str, &str)]) -> Derived {
        let files = files
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        derive_files(files, 2, "default").unwrap()
    }

    fn placed(d: &Derived) -> Placement {
        Placement {
            pods: d
                .plan
                .pods
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let ip = std::net::IpAddr::from([127, 0, 0, 10 + i as u8]);
                    (p.name.clone(), (ip, d.plan.nodes[p.node].clone()))
                })
                .collect(),
        }
    }

    #[test]
    fn a_policy_edit_is_config_and_names_the_file() {
        let before = derived(&[("shop.yaml", SHOP)]);
        let place = placed(&before);
        let running = control_plane_files(&before, &place);
        let after = derived(&[("shop.yaml", SHOP), ("policy.yaml", POLICY)]);
        let edit = classify(&before.plan, &running, &after, &place);
        assert_eq!(
            edit,
            Edit::Config {
                changed: vec!["policy.yaml".into()],
                removed: vec![]
            }
        );
        let back = classify(
            &after.plan,
            &control_plane_files(&after, &place),
            &before,
            &place,
        );
        assert_eq!(back.summary(), "removed policy.yaml");
    }

    #[test]
    fn relabelling_rewrites_the_pods_file_only() {
        let before = derived(&[("shop.yaml", SHOP)]);
        let place = placed(&before);
        let running = control_plane_files(&before, &place);
        let after = derived(&[(
            "shop.yaml",
            &SHOP.replace("version: v1", "version: v1, team: blue"),
        )]);
        let Edit::Config { changed, removed } = classify(&before.plan, &running, &after, &place)
        else {
            panic!("a relabel keeps the pods");
        };
        assert!(changed.contains(&PODS_FILE.to_string()), "{changed:?}");
        assert!(removed.is_empty());
        let pods = &control_plane_files(&after, &place)[PODS_FILE];
        assert!(pods.contains("team") && pods.contains("blue"), "{pods}");
        // The addresses the pods have are kept.
        assert!(pods.contains("127.0.0.10"), "{pods}");
    }

    #[test]
    fn scaling_needs_a_restart_and_says_which_pod() {
        let before = derived(&[("shop.yaml", SHOP)]);
        let place = placed(&before);
        let running = control_plane_files(&before, &place);
        let up = derived(&[("shop.yaml", &SHOP.replace("replicas: 2", "replicas: 3"))]);
        let Edit::Restart(why) = classify(&before.plan, &running, &up, &place) else {
            panic!("scaling changes the pods");
        };
        assert!(why.contains("added") && why.contains("shop/"), "{why}");
        let down = derived(&[("shop.yaml", &SHOP.replace("replicas: 2", "replicas: 1"))]);
        let Edit::Restart(why) = classify(&before.plan, &running, &down, &place) else {
            panic!("scaling changes the pods");
        };
        assert!(why.contains("removed"), "{why}");
        let ports = derived(&[("shop.yaml", &SHOP.replace("8080", "9090"))]);
        assert!(matches!(
            classify(&before.plan, &running, &ports, &place),
            Edit::Restart(w) if w.contains("ports")
        ));
        // A new version label is a new template: Kubernetes rolls new pods out for it.
        let v2 = derived(&[("shop.yaml", &SHOP.replace("version: v1", "version: v2"))]);
        assert!(matches!(
            classify(&before.plan, &running, &v2, &place),
            Edit::Restart(w) if w.contains("what it runs")
        ));
    }

    #[test]
    fn apply_renames_changed_files_in_and_removes_dropped_ones() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("manifests");
        std::fs::create_dir_all(&config).unwrap();
        let before = derived(&[("shop.yaml", SHOP), ("policy.yaml", POLICY)]);
        let place = placed(&before);
        let all = Edit::Config {
            changed: control_plane_files(&before, &place).into_keys().collect(),
            removed: vec![],
        };
        let running = apply(&config, &before, &place, &all).unwrap();
        assert!(config.join("policy.yaml").exists());
        assert!(config.join(PODS_FILE).exists());

        let after = derived(&[("shop.yaml", SHOP)]);
        let edit = classify(&before.plan, &running, &after, &place);
        apply(&config, &after, &place, &edit).unwrap();
        assert!(!config.join("policy.yaml").exists());
        assert!(config.join("shop.yaml").exists());
        // Nothing is left half-written beside the files the control plane reads.
        let names: Vec<_> = std::fs::read_dir(&config)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");

        let restart = Edit::Restart("pod shop/cart-2 added".into());
        assert!(apply(&config, &after, &place, &restart).is_err());
    }

    #[test]
    fn a_saved_file_changes_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "x: 1\n").unwrap();
        let s1 = Stamp::of(dir.path());
        assert_eq!(s1, Stamp::of(dir.path()));
        std::fs::write(dir.path().join("a.yaml"), "x: 12\n").unwrap();
        assert_ne!(s1, Stamp::of(dir.path()));
        std::fs::write(dir.path().join("b.yml"), "y: 1\n").unwrap();
        assert_eq!(Stamp::of(dir.path()).0.len(), 2);
    }
}
