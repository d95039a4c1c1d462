//! Live edits of `meshwork up`'s directory. Each tick looks at the directory's files; once
//! a change has settled (two ticks alike) it is read again and taken as
//! [`meshwork_localmesh::live`] sorts it: config edits are written into the control
//! plane's manifests and the control plane's verdict on them (`meshwork errors`) is
//! recorded; edits that change the pods end the run for a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshwork_localmesh::derive::{self, Derived};
use meshwork_localmesh::http::{self, Request, Via};
use meshwork_localmesh::live::{self, Edit, Stamp};
use meshwork_localmesh::{progress, LocalMesh};

use super::state::EditState;

/// How long the control plane gets to read an edit before its errors are asked for (its
/// directory source settles in tens of milliseconds).
const READ_GRACE: Duration = Duration::from_millis(600);

/// What a settled edit did.
pub enum Step {
    /// Taken live, or not taken because the directory did not read.
    Taken(EditState),
    /// The pods change: restart with these.
    Restart(Box<Derived>, String),
}

/// The directory of a running mesh, and what its control plane reads now.
pub struct Watch {
    dir: PathBuf,
    nodes: usize,
    seen: Stamp,
    /// A stamp that differs from `seen`, waiting one more tick to settle.
    pending: Option<Stamp>,
    running: BTreeMap<String, String>,
}

impl Watch {
    pub fn new(dir: &Path, nodes: usize, derived: &Derived, mesh: &LocalMesh) -> Watch {
        Watch {
            dir: dir.to_path_buf(),
            nodes,
            seen: Stamp::of(dir),
            pending: None,
            running: live::control_plane_files(derived, &mesh.placement),
        }
    }

    /// Called every tick: the step a settled edit led to, if one did.
    pub async fn poll(&mut self, mesh: &mut LocalMesh) -> Option<Step> {
        let now = Stamp::of(&self.dir);
        if now == self.seen {
            self.pending = None;
            return None;
        }
        if self.pending.as_ref() != Some(&now) {
            // Still being written (or just saved): look again next tick.
            self.pending = Some(now);
            return None;
        }
        self.pending = None;
        self.seen = now;
        let derived = match derive::derive(&self.dir, self.nodes, "default") {
            Ok(d) => d,
            Err(e) => {
                let why = format!("edit not taken, the mesh runs as before: {e}");
                progress(&why);
                return Some(Step::Taken(edit_state(why, false, None)));
            }
        };
        let edit = live::classify(&mesh.plan, &self.running, &derived, &mesh.placement);
        if let Edit::Restart(why) = edit {
            return Some(Step::Restart(Box::new(derived), why));
        }
        let summary = edit.summary();
        match live::apply(&mesh.config_dir(), &derived, &mesh.placement, &edit) {
            Ok(running) => {
                self.running = running;
                mesh.plan = derived.plan;
            }
            Err(e) => {
                let why = format!("edit not taken: {e}");
                progress(&why);
                return Some(Step::Taken(edit_state(why, false, None)));
            }
        }
        tokio::time::sleep(READ_GRACE).await;
        let verdict = control_plane_errors(mesh).await;
        let state = edit_state(format!("applied: {summary}"), true, verdict.as_ref());
        progress(&format!(
            "{} — control plane: {}",
            state.summary,
            match &verdict {
                Some((e, w)) => format!("{} error(s), {} warning(s)", e.len(), w.len()),
                None => "not answering".to_string(),
            }
        ));
        for e in &state.errors {
            progress(&format!("  error   {e}"));
        }
        for w in &state.warnings {
            progress(&format!("  warning {w}"));
        }
        Some(Step::Taken(state))
    }
}

fn edit_state(
    summary: String,
    applied: bool,
    verdict: Option<&(Vec<String>, Vec<String>)>,
) -> EditState {
    let (errors, warnings) = verdict.cloned().unwrap_or_default();
    EditState {
        at_ms: super::now_ms(),
        summary,
        applied,
        errors,
        warnings,
    }
}

/// The control plane's validation errors and warnings (`GET /debug/errors`).
async fn control_plane_errors(mesh: &LocalMesh) -> Option<(Vec<String>, Vec<String>)> {
    let via = Via::Plain {
        dial: mesh.control_plane_admin.clone(),
        host: "controlplane".into(),
    };
    let answer = http::send(&via, &Request::get("/debug/errors"), Duration::from_secs(3))
        .await
        .ok()?;
    Some(crate::cmd::errors::lists(&answer.json()?))
}
