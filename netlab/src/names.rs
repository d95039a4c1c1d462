//! Run ids: every namespace of a run is named `<run id>-...` with the run id
//! `mw<pid hex>r<seq>`, so parallel runs never clash and namespaces left behind by a killed
//! run (dead pid) can be recognised and removed.
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A fresh run id for this process.
pub fn new_run_id() -> String {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("mw{:x}r{seq}", std::process::id())
}

/// The pid encoded in a namespace name made by a cluster of this crate, if it is one.
pub fn owner_pid(netns: &str) -> Option<u32> {
    let rest = netns.strip_prefix("mw")?;
    let (hex, tail) = rest.split_once('r')?;
    let (seq, _) = tail.split_once('-')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

/// Whether a namespace belongs to a run whose process is gone.
pub fn is_stale(netns: &str) -> bool {
    match owner_pid(netns) {
        Some(pid) => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_unique_and_parse_back() {
        let a = new_run_id();
        let b = new_run_id();
        assert_ne!(a, b);
        assert_eq!(owner_pid(&format!("{a}-n0")), Some(std::process::id()));
        assert!(!is_stale(&format!("{a}-n0-p1")));
    }

    #[test]
    fn foreign_names_are_never_stale() {
        for n in [
            "default",
            "mw",
            "mwzzr1-n0",
            "mw1f",
            "mw1fr-n0",
            "mw1frx-n0",
            "cni-123",
        ] {
            assert_eq!(owner_pid(n), None, "{n}");
            assert!(!is_stale(n), "{n}");
        }
    }

    #[test]
    fn dead_owner_is_stale() {
        // pid_max is at most 2^22: this pid cannot exist.
        assert!(is_stale("mwfffffffr0-n0"));
    }
}
