//! Locks that survive a panicking holder.
//!
//! The proxies and the control plane keep serving after a task panics while it holds a
//! lock: the data behind it is still the last consistent value every writer leaves (each
//! critical section is a single update), so a poisoned lock is taken as it is rather than
//! spreading the panic to every later user. [`LockExt`] says so once instead of
//! `.lock().unwrap_or_else(|e| e.into_inner())` at every call.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Poison-tolerant locking for [`Mutex`].
pub trait LockExt<T: ?Sized> {
    /// Locks, taking over a lock poisoned by a panicking holder.
    fn lock_or_recover(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockExt<T> for Mutex<T> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Poison-tolerant locking for [`RwLock`].
pub trait RwLockExt<T: ?Sized> {
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T>;
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_lock_is_taken_over() {
        let m = Arc::new(Mutex::new(1));
        let rw = Arc::new(RwLock::new(1));
        let (m2, rw2) = (m.clone(), rw.clone());
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            let _w = rw2.write().unwrap();
            panic!("holder panics");
        })
        .join();
        assert!(m.is_poisoned() && rw.is_poisoned());
        *m.lock_or_recover() += 1;
        assert_eq!(*m.lock_or_recover(), 2);
        *rw.write_or_recover() += 1;
        assert_eq!(*rw.read_or_recover(), 2);
    }
}
