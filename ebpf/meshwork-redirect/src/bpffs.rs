use std::ffi::CString;
use std::path::Path;

use crate::RedirectError;

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Makes sure `path` (e.g. `/sys/fs/bpf`) is a bpffs, mounting one there when it is not.
pub fn ensure_bpffs(path: &Path) -> Result<(), RedirectError> {
    let err = |reason: String| RedirectError::Bpffs {
        path: path.to_path_buf(),
        reason,
    };
    if is_bpffs(path).map_err(|e| err(e.to_string()))? {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(|e| err(e.to_string()))?;
    let target = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| err("path contains a NUL byte".into()))?;
    let fstype = c"bpf";
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(format!(
            "mount -t bpf failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    tracing::info!(path = %path.display(), "mounted bpffs");
    Ok(())
}

/// Whether `path` is on a bpffs; a missing path is not.
pub(crate) fn is_bpffs(path: &Path) -> std::io::Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: statfs writes into a zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::NotFound {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_is_not_bpffs_and_missing_is_not_either() {
        assert!(!is_bpffs(Path::new("/tmp")).unwrap());
        assert!(!is_bpffs(Path::new("/nonexistent/meshwork")).unwrap());
    }
}
