//! The master's locks (Buildbot's `MasterLock` and `WorkerLock`) while
//! builds hold them: who holds what, who waits for what, and the hand-over
//! when one is released.
//!
//! A build (or one of its steps) takes all the locks it needs at once or
//! none, so it never holds some while waiting for the rest. A step's locks
//! come while its build holds the builder's; if waiting for them would close
//! a cycle (build A holds X and waits for Y, build B holds Y and waits for
//! X), [`LockRegistry::would_deadlock`] says so and the build lets its own
//! locks go while it waits for all of them together.
//!
//! `max_count` is read when a lock is taken: a reload that changes it
//! applies to the next acquisition, and holders keep theirs.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use tokio::sync::Notify;

/// One lock: its name, and for a worker lock the worker it counts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockKey {
    pub name: String,
    pub worker: Option<String>,
}

impl std::fmt::Display for LockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.worker {
            Some(worker) => write!(f, "{} on {worker}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A lock someone wants: exclusive, or counting up to `max_count` holders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub key: LockKey,
    pub exclusive: bool,
    pub max_count: u32,
}

#[derive(Default)]
struct State {
    /// Lock → its holders (build id, exclusive).
    held: HashMap<LockKey, Vec<(i64, bool)>>,
    /// Build id → the locks it waits for.
    waiting: HashMap<i64, Vec<LockKey>>,
}

impl State {
    fn available(&self, want: &Want) -> bool {
        let holders = self.held.get(&want.key).map_or(&[][..], Vec::as_slice);
        if want.exclusive {
            holders.is_empty()
        } else {
            holders.iter().all(|(_, exclusive)| !exclusive)
                && holders.len() < want.max_count.max(1) as usize
        }
    }

    fn release(&mut self, holder: i64, keys: &[LockKey]) {
        for key in keys {
            if let Some(holders) = self.held.get_mut(key) {
                if let Some(i) = holders.iter().position(|(h, _)| *h == holder) {
                    holders.remove(i);
                }
                if holders.is_empty() {
                    self.held.remove(key);
                }
            }
        }
    }
}

/// Every lock of this master.
#[derive(Default)]
pub struct LockRegistry {
    state: Mutex<State>,
    released: Notify,
}

/// Locks held by one build; dropping it releases them.
pub struct LockGuard<'r> {
    registry: &'r LockRegistry,
    holder: i64,
    keys: Vec<LockKey>,
}

impl LockGuard<'_> {
    pub fn keys(&self) -> &[LockKey] {
        &self.keys
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        self.registry.lock().release(self.holder, &self.keys);
        self.registry.released.notify_waiters();
    }
}

/// Removes a holder from the waiting list when its wait ends (or is
/// dropped: the build was stopped).
struct WaitingEntry<'r> {
    registry: &'r LockRegistry,
    holder: i64,
}

impl Drop for WaitingEntry<'_> {
    fn drop(&mut self) {
        self.registry.lock().waiting.remove(&self.holder);
    }
}

impl LockRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take every lock of `wants` for build `holder`, waiting until all are
    /// free at once; `on_wait` hears which ones it waits for each time that
    /// changes.
    pub async fn acquire(
        &self,
        holder: i64,
        wants: &[Want],
        mut on_wait: impl FnMut(&[LockKey]),
    ) -> LockGuard<'_> {
        let _entry = WaitingEntry {
            registry: self,
            holder,
        };
        let mut reported: Vec<LockKey> = Vec::new();
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let blocked = {
                let mut state = self.lock();
                let blocked: Vec<LockKey> = wants
                    .iter()
                    .filter(|w| !state.available(w))
                    .map(|w| w.key.clone())
                    .collect();
                if blocked.is_empty() {
                    for want in wants {
                        state
                            .held
                            .entry(want.key.clone())
                            .or_default()
                            .push((holder, want.exclusive));
                    }
                    state.waiting.remove(&holder);
                    return LockGuard {
                        registry: self,
                        holder,
                        keys: wants.iter().map(|w| w.key.clone()).collect(),
                    };
                }
                state.waiting.insert(holder, blocked.clone());
                blocked
            };
            if blocked != reported {
                on_wait(&blocked);
                reported = blocked;
            }
            notified.await;
        }
    }

    /// A guard holding nothing (a step without locks).
    pub fn none(&self, holder: i64) -> LockGuard<'_> {
        LockGuard {
            registry: self,
            holder,
            keys: Vec::new(),
        }
    }

    /// Whether build `holder`, holding locks, would close a cycle by waiting
    /// for `wants`: a holder of one of them waits (directly or through
    /// others) for a lock `holder` holds.
    pub fn would_deadlock(&self, holder: i64, wants: &[Want]) -> bool {
        let state = self.lock();
        let mut seen = HashSet::new();
        let mut frontier: Vec<i64> = wants
            .iter()
            .filter(|w| !state.available(w))
            .flat_map(|w| state.held.get(&w.key).into_iter().flatten())
            .map(|(h, _)| *h)
            .collect();
        while let Some(other) = frontier.pop() {
            if other == holder {
                return true;
            }
            if !seen.insert(other) {
                continue;
            }
            for key in state.waiting.get(&other).into_iter().flatten() {
                for (h, _) in state.held.get(key).into_iter().flatten() {
                    frontier.push(*h);
                }
            }
        }
        false
    }

    /// Split `keys` off `guard` into a guard of their own (a build's locks
    /// and a step's, taken together after a near-deadlock).
    pub fn split<'r>(&'r self, guard: &mut LockGuard<'r>, keys: &[LockKey]) -> LockGuard<'r> {
        let mut taken = Vec::new();
        for key in keys {
            if let Some(i) = guard.keys.iter().position(|k| k == key) {
                taken.push(guard.keys.remove(i));
            }
        }
        LockGuard {
            registry: self,
            holder: guard.holder,
            keys: taken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn want(name: &str, exclusive: bool, max_count: u32) -> Want {
        Want {
            key: LockKey {
                name: name.into(),
                worker: None,
            },
            exclusive,
            max_count,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn counting_up_to_max_exclusive_alone_and_all_at_once() {
        let locks = LockRegistry::default();
        let a = locks.acquire(1, &[want("db", false, 2)], |_| {}).await;
        let b = locks.acquire(2, &[want("db", false, 2)], |_| {}).await;
        // A third counting holder and an exclusive one wait.
        let heard = std::cell::Cell::new(0);
        let db = [want("db", false, 2)];
        let third = locks.acquire(3, &db, |_| heard.set(heard.get() + 1));
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), third.as_mut())
                .await
                .is_err()
        );
        drop(a);
        let c = third.await;
        assert_eq!(heard.get(), 1);
        drop((b, c));
        let x = locks.acquire(4, &[want("db", true, 2)], |_| {}).await;
        let both_wanted = [want("other", false, 1), want("db", false, 2)];
        let blocked = locks.acquire(5, &both_wanted, |_| {});
        tokio::pin!(blocked);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), blocked.as_mut())
                .await
                .is_err()
        );
        // Waiting for "db", build 5 holds nothing of "other".
        let other = locks.acquire(6, &[want("other", true, 1)], |_| {}).await;
        drop(other);
        drop(x);
        let both = blocked.await;
        assert_eq!(both.keys().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cycle_is_seen_before_it_closes() {
        let locks = LockRegistry::default();
        let _x = locks.acquire(1, &[want("x", true, 1)], |_| {}).await;
        let _y = locks.acquire(2, &[want("y", true, 1)], |_| {}).await;
        assert!(!locks.would_deadlock(1, &[want("y", true, 1)]));
        let y = [want("y", true, 1)];
        let waits = locks.acquire(1, &y, |_| {});
        tokio::pin!(waits);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), waits.as_mut())
                .await
                .is_err()
        );
        // Build 2 waiting for x would close the cycle.
        assert!(locks.would_deadlock(2, &[want("x", true, 1)]));
        assert!(!locks.would_deadlock(3, &[want("x", true, 1)]));
    }
}
