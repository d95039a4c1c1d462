//! glibc malloc settings for the data path.
//!
//! The relay's buffers are large (256 KiB plaintext reads, HTTP/2 DATA frames up to
//! 1 MiB) and short-lived, and most are freed on data-path threads, i.e. in glibc's
//! per-thread arenas. With glibc's defaults such a free often shrinks the arena or the
//! heap top (`madvise(MADV_DONTNEED)`, `munmap`) and the next allocation faults the same
//! pages back in, zeroed: a bulk stream then spends a sizeable share of its CPU in page
//! faults (`exc_page_fault`, `clear_page_erms`, memcg charging; see docs/benchmarks.md,
//! "Against Istio's ztunnel, same run"). A fixed mmap threshold above those sizes and a
//! trim threshold of a few frames keep the memory for reuse; what stays resident is
//! bounded by the trim threshold per arena, and idle RSS does not change.

/// Allocations up to this size come from the arenas, never from their own mapping.
pub const MMAP_THRESHOLD: usize = 4 * 1024 * 1024;
/// Free memory kept at the top of an arena before it is returned to the kernel.
pub const TRIM_THRESHOLD: usize = 16 * 1024 * 1024;

/// Applies [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`], unless the operator tunes malloc
/// through `GLIBC_TUNABLES` or `MALLOC_*_` variables (theirs win). Call before any thread
/// is started. Returns whether the settings were applied.
pub fn tune_for_relay() -> bool {
    let operator_tuned = std::env::vars_os().any(|(k, v)| {
        let k = k.to_string_lossy();
        (k == "GLIBC_TUNABLES" && v.to_string_lossy().contains("malloc"))
            || (k.starts_with("MALLOC_") && k.ends_with('_'))
    });
    if operator_tuned {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes allocator parameters; both values fit a c_int.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_settings() {
        // mallopt returns 0 for a parameter or value glibc refuses.
        assert!(apply());
    }
}
