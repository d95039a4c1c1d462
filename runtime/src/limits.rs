//! The open-files limit. A node proxy holds two descriptors per connection it carries,
//! and container runtimes often start processes with a soft limit of 1,024 under a much
//! higher hard limit. [`raise_open_files`] lifts the soft limit to the hard one (capped by
//! the kernel's `fs.nr_open`), as Envoy deployments and Istio's ztunnel do.

use std::io;

/// The soft `RLIMIT_NOFILE` before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: u64,
    pub after: u64,
}

/// Raises the soft open-files limit as far as the hard limit allows.
pub fn raise_open_files() -> io::Result<OpenFiles> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = r.rlim_cur;
    let mut target = r.rlim_max;
    if target == libc::RLIM_INFINITY {
        // NOFILE cannot be unlimited: the kernel's ceiling is fs.nr_open.
        target = nr_open().unwrap_or(r.rlim_cur.max(1 << 20));
    }
    if r.rlim_cur >= target {
        return Ok(OpenFiles {
            before,
            after: before,
        });
    }
    r.rlim_cur = target;
    // SAFETY: setrlimit reads only the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OpenFiles {
        before,
        after: target,
    })
}

/// [`raise_open_files`] at process start, saying in the log what it did.
pub fn raise_open_files_logged() {
    match raise_open_files() {
        Ok(l) if l.after > l.before => {
            tracing::info!(from = l.before, to = l.after, "raised the open-files limit")
        }
        Ok(l) => tracing::debug!(limit = l.after, "open-files limit already at its maximum"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
}

fn nr_open() -> Option<libc::rlim_t> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_reaches_the_hard_one() {
        let got = raise_open_files().unwrap();
        assert!(got.after >= got.before);
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) }, 0);
        assert_eq!(r.rlim_cur, got.after);
        if r.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(r.rlim_cur, r.rlim_max);
        }
        // A second call has nothing left to raise.
        assert_eq!(raise_open_files().unwrap().before, got.after);
    }
}
