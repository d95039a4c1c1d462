//! The fake API's status writes: JSON merge patch (with a `resourceVersion` precondition)
//! and server-side apply (field ownership of top-level status fields and of conditions by
//! `type`).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{Coll, FakeApi, Key, Refusal, State};

impl FakeApi {
    pub(super) fn merge_status(
        &self,
        coll: &Coll,
        key: &Key,
        patch: Value,
    ) -> Result<Value, Refusal> {
        let mut s = self.state.lock().unwrap();
        let Some(mut obj) = s.get(coll, key) else {
            return Err(Refusal(404, "NotFound", format!("{} not found", key.1)));
        };
        if let Some(want) = patch["metadata"]["resourceVersion"].as_str() {
            if obj["metadata"]["resourceVersion"] != want {
                return Err(Refusal(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest \
                     version and try again"
                        .into(),
                ));
            }
        }
        if let Some(st) = patch.get("status") {
            merge(&mut obj["status"], st);
        }
        Ok(s.write(coll, obj, "MODIFIED"))
    }

    pub(super) fn apply_status(
        &self,
        coll: &Coll,
        key: &Key,
        manager: &str,
        applied: Value,
        force: bool,
    ) -> Result<Value, Refusal> {
        if applied["apiVersion"].as_str().is_none() || applied["kind"].as_str().is_none() {
            return Err(Refusal(
                400,
                "BadRequest",
                "apply needs apiVersion and kind".into(),
            ));
        }
        let mut s = self.state.lock().unwrap();
        let Some(mut obj) = s.get(coll, key) else {
            return Err(Refusal(404, "NotFound", format!("{} not found", key.1)));
        };
        let st = applied["status"].as_object().cloned().unwrap_or_default();
        let mut sent: BTreeSet<String> = BTreeSet::new();
        for (f, v) in &st {
            if f == "conditions" {
                for c in v.as_array().into_iter().flatten() {
                    sent.insert(format!("c:{}", c["type"].as_str().unwrap_or_default()));
                }
            } else {
                sent.insert(format!("f:{f}"));
            }
        }
        let me = (coll.clone(), key.clone(), manager.to_string());
        // Conflicts: a field another manager owns with a different value.
        let others: Vec<((Coll, Key, String), BTreeSet<String>)> = s
            .owners
            .iter()
            .filter(|((c, k, m), _)| c == coll && k == key && m != manager)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let current = |field: &str| -> Value {
            match field.split_once(':') {
                Some(("c", t)) => obj["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == t).cloned())
                    .unwrap_or(Value::Null),
                Some((_, f)) => obj["status"][f].clone(),
                None => Value::Null,
            }
        };
        let wanted = |field: &str| -> Value {
            match field.split_once(':') {
                Some(("c", t)) => st["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == t).cloned())
                    .unwrap_or(Value::Null),
                Some((_, f)) => st.get(f).cloned().unwrap_or(Value::Null),
                None => Value::Null,
            }
        };
        let mut taken = Vec::new();
        for (other, owned) in &others {
            for f in owned.intersection(&sent) {
                if current(f) != wanted(f) {
                    if !force {
                        return Err(Refusal(
                            409,
                            "Conflict",
                            format!(
                                "Apply failed with 1 conflict: conflict with {:?}: .status {f}",
                                other.2
                            ),
                        ));
                    }
                    taken.push((other.clone(), f.clone()));
                }
            }
        }
        for (other, f) in taken {
            if let Some(o) = s.owners.get_mut(&other) {
                o.remove(&f);
            }
        }
        let before = s.owners.get(&me).cloned().unwrap_or_default();
        let owned_by_others: BTreeSet<String> = s
            .owners
            .iter()
            .filter(|((c, k, m), _)| c == coll && k == key && m != manager)
            .flat_map(|(_, v)| v.iter().cloned())
            .collect();
        let status = obj["status"].as_object_mut().map(std::mem::take);
        let mut status = status.unwrap_or_default();
        // Drop what we owned, no longer send, and nobody else owns.
        for f in before.difference(&sent) {
            if owned_by_others.contains(f) {
                continue;
            }
            match f.split_once(':') {
                Some(("c", t)) => {
                    if let Some(Value::Array(cs)) = status.get_mut("conditions") {
                        cs.retain(|c| c["type"] != t);
                    }
                }
                Some((_, name)) => {
                    status.remove(name);
                }
                None => {}
            }
        }
        for (f, v) in st {
            if f == "conditions" {
                let cs = status.entry("conditions").or_insert_with(|| json!([]));
                if !cs.is_array() {
                    *cs = json!([]);
                }
                let list = cs.as_array_mut().unwrap();
                for c in v.as_array().into_iter().flatten() {
                    match list.iter_mut().find(|x| x["type"] == c["type"]) {
                        Some(x) => *x = c.clone(),
                        None => list.push(c.clone()),
                    }
                }
            } else {
                status.insert(f, v);
            }
        }
        obj["status"] = Value::Object(status);
        s.owners.insert(me, sent);
        Ok(s.write(coll, obj, "MODIFIED"))
    }
}

/// JSON merge patch (RFC 7386).
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// A test's handle on the state inside [`FakeApi::after_next_get`].
pub struct FakeState<'a>(pub(super) &'a mut State);

impl FakeState<'_> {
    /// Merge-patches the status of an object as another writer would (bumping its
    /// resourceVersion, logged for watchers).
    pub fn merge_status(&mut self, group: &str, plural: &str, ns: &str, name: &str, st: Value) {
        let coll = (group.to_string(), plural.to_string());
        let key = (ns.to_string(), name.to_string());
        let mut obj = self.0.get(&coll, &key).expect("object exists");
        merge(&mut obj["status"], &st);
        self.0.write(&coll, obj, "MODIFIED");
    }

    pub fn get(&self, group: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let coll = (group.to_string(), plural.to_string());
        self.0.get(&coll, &(ns.to_string(), name.to_string()))
    }
}
