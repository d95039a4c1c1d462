//! Shared data and shared queues: one store per proxy, keyed by VM id as in Envoy, so every
//! worker's instance of a plugin sees the same values.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::types::Status;

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Inner {
    data: HashMap<(String, String), (Vec<u8>, u32)>,
    queue_ids: HashMap<(String, String), u32>,
    queues: Vec<Queue>,
}

/// Shared data (key → value with a compare-and-swap counter) and queues.
#[derive(Debug, Default)]
pub struct Shared {
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value and its cas; `None` when unset.
    pub fn get(&self, vm: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        self.lock().data.get(&(vm.into(), key.into())).cloned()
    }

    /// Sets `key`; a non-zero `cas` must match the current one.
    pub fn set(&self, vm: &str, key: &str, value: Vec<u8>, cas: u32) -> Status {
        let mut g = self.lock();
        let e = g
            .data
            .entry((vm.into(), key.into()))
            .or_insert((Vec::new(), 0));
        if cas != 0 && cas != e.1 {
            return Status::CasMismatch;
        }
        e.0 = value;
        e.1 = e.1.wrapping_add(1).max(1);
        Status::Ok
    }

    pub fn register_queue(&self, vm: &str, name: &str) -> u32 {
        let mut g = self.lock();
        if let Some(id) = g.queue_ids.get(&(vm.into(), name.into())) {
            return *id;
        }
        let id = g.queues.len() as u32 + 1;
        g.queues.push(Queue::default());
        g.queue_ids.insert((vm.into(), name.into()), id);
        id
    }

    pub fn resolve_queue(&self, vm: &str, name: &str) -> Option<u32> {
        self.lock()
            .queue_ids
            .get(&(vm.into(), name.into()))
            .copied()
    }

    pub fn enqueue(&self, id: u32, item: Vec<u8>) -> Status {
        let mut g = self.lock();
        match g.queues.get_mut(id.wrapping_sub(1) as usize) {
            Some(q) => {
                q.items.push_back(item);
                Status::Ok
            }
            None => Status::NotFound,
        }
    }

    /// Whether the queue holds items.
    pub fn has_items(&self, id: u32) -> bool {
        self.lock()
            .queues
            .get(id.wrapping_sub(1) as usize)
            .is_some_and(|q| !q.items.is_empty())
    }

    /// The next item; `Err(Empty)` or `Err(NotFound)` otherwise.
    pub fn dequeue(&self, id: u32) -> Result<Vec<u8>, Status> {
        let mut g = self.lock();
        let q = g
            .queues
            .get_mut(id.wrapping_sub(1) as usize)
            .ok_or(Status::NotFound)?;
        q.items.pop_front().ok_or(Status::Empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_and_queues() {
        let s = Shared::default();
        assert_eq!(s.get("vm", "k"), None);
        assert_eq!(s.set("vm", "k", b"1".to_vec(), 0), Status::Ok);
        let (v, cas) = s.get("vm", "k").unwrap();
        assert_eq!(v, b"1");
        assert_eq!(
            s.set("vm", "k", b"2".to_vec(), cas + 7),
            Status::CasMismatch
        );
        assert_eq!(s.set("vm", "k", b"2".to_vec(), cas), Status::Ok);
        assert_eq!(s.get("other", "k"), None);

        let q = s.register_queue("vm", "q");
        assert_eq!(s.register_queue("vm", "q"), q);
        assert_eq!(s.resolve_queue("vm", "q"), Some(q));
        assert_eq!(s.resolve_queue("vm", "nope"), None);
        assert_eq!(s.dequeue(q), Err(Status::Empty));
        assert_eq!(s.enqueue(q, b"a".to_vec()), Status::Ok);
        assert_eq!(s.dequeue(q).unwrap(), b"a");
        assert_eq!(s.enqueue(99, vec![]), Status::NotFound);
    }
}
