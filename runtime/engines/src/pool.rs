//! A fixed pool of engine sessions (ONNX Runtime) or infer requests (OpenVINO) for one model.
//!
//! A `run` takes a free slot, runs on it without holding any lock, and puts it back; when every
//! slot is busy it waits on a condition variable. Up to `len` runs therefore execute in parallel,
//! and a slot is only ever used by one thread at a time, which is what both engines require of a
//! session / infer request.

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard};

pub(crate) struct Pool<T> {
    free: Mutex<Vec<T>>,
    returned: Condvar,
    len: usize,
}

impl<T> Pool<T> {
    pub(crate) fn new(items: Vec<T>) -> Pool<T> {
        let len = items.len();
        Pool {
            free: Mutex::new(items),
            returned: Condvar::new(),
            len,
        }
    }

    /// How many slots the pool has.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    // The lock only guards `Vec` push/pop, which cannot panic midway, so a poisoned lock still
    // holds a consistent list and is used as is.
    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        self.free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a free slot, waiting until one is returned if all are busy.
    pub(crate) fn get(&self) -> Slot<'_, T> {
        let mut free = self.lock();
        loop {
            if let Some(item) = free.pop() {
                return Slot {
                    pool: self,
                    item: Some(item),
                };
            }
            free = self
                .returned
                .wait(free)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// A slot taken from a [`Pool`]; goes back when dropped (also when a run unwinds).
pub(crate) struct Slot<'p, T> {
    pool: &'p Pool<T>,
    item: Option<T>,
}

impl<T> Deref for Slot<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.item
            .as_ref()
            .expect("a slot holds its item until dropped")
    }
}

impl<T> DerefMut for Slot<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.item
            .as_mut()
            .expect("a slot holds its item until dropped")
    }
}

impl<T> Drop for Slot<'_, T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.pool.lock().push(item);
            self.pool.returned.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn runs_in_parallel_up_to_its_size_and_never_shares_a_slot() {
        let pool = Arc::new(Pool::new(vec![0usize, 1, 2]));
        let in_use = Arc::new([0, 1, 2].map(|_| AtomicUsize::new(0)));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let (pool, in_use, running, peak) =
                    (pool.clone(), in_use.clone(), running.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let slot = pool.get();
                        assert_eq!(in_use[*slot].fetch_add(1, Ordering::SeqCst), 0);
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        running.fetch_sub(1, Ordering::SeqCst);
                        in_use[*slot].fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert!(
            peak.load(Ordering::SeqCst) >= 2,
            "slots were not used in parallel"
        );
        assert_eq!(pool.lock().len(), 3);
    }

    #[test]
    fn a_slot_comes_back_when_its_user_panics() {
        let pool = Pool::new(vec![1u8]);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _slot = pool.get();
            panic!("boom");
        }));
        assert!(result.is_err());
        assert_eq!(*pool.get(), 1);
    }
}
