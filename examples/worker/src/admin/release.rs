//! `kcl-admin release`: frees a worker's leases at once, for example after the worker crashed
//! with a long lease duration, instead of waiting for the fleet to judge it dead.
//!
//! A live worker's leases are refused unless forced: a worker that is alive releases its own
//! leases gracefully when it is stopped (SIGTERM), which is the way to drain it. Forced, each
//! release is conditional on the lease as read, so it fences the worker: its next checkpoint of
//! that lease fails, its next take cycle stops the shard, and the next owner starts at the last
//! checkpoint (what the worker processed after it is delivered again, never lost).

use kcl_core::{Checkpoint, Lease, LeaseStore, WorkerId};

use super::{AdminError, Snapshot};

/// Attempts per lease when a racing fleet changes it in between.
const ATTEMPTS: usize = 8;

/// The leases of `worker` that `release` frees: owned by it and not finished.
pub fn leases_of<'a>(snapshot: &'a Snapshot, worker: &WorkerId) -> Vec<&'a Lease> {
    snapshot.leases.iter().filter(|l| l.is_owned_by(worker) && l.checkpoint != Checkpoint::ShardEnd).collect()
}

/// Refuses a live worker unless `force`.
pub fn check(snapshot: &Snapshot, worker: &WorkerId, force: bool) -> Result<(), AdminError> {
    if force || !snapshot.is_alive(worker) {
        return Ok(());
    }
    Err(AdminError::WorkersAlive {
        workers: vec![worker.as_str().to_owned()],
        what: "releasing its leases",
        flag: "--force (its unwritten progress is then processed again by the next owner)",
    })
}

/// Releases each lease of `worker` in `snapshot` that it still owns. Returns the leases
/// released; one that moved to another owner meanwhile is left alone.
pub async fn apply<S: LeaseStore>(store: &S, snapshot: &Snapshot, worker: &WorkerId) -> Result<Vec<Lease>, AdminError> {
    let mut released = Vec::new();
    for lease in leases_of(snapshot, worker) {
        let mut current = lease.clone();
        for attempt in 0.. {
            if attempt == ATTEMPTS {
                return Err(AdminError::Contended(lease.key.to_string()));
            }
            if let Some(l) = store.release(&current).await?.applied() {
                released.push(l);
                break;
            }
            match store.get(&lease.key).await? {
                Some(l) if l.is_owned_by(worker) => current = l,
                _ => break,
            }
        }
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kcl_core::testing::memory_store::MemoryLeaseStore;
    use kcl_core::{LeaseKey, SequenceNumber, ShardId};

    use super::super::WorkerSeen;
    use super::*;

    fn lease(id: &str, owner: &str, cp: Checkpoint) -> Lease {
        let mut l = Lease::new_for_shard(&ShardId::new(id), cp, vec![]);
        l.owner = Some(WorkerId::new(owner));
        l.counter = 3;
        l
    }

    fn snapshot(leases: Vec<Lease>, alive: &[&str]) -> Snapshot {
        let workers = alive
            .iter()
            .map(|w| WorkerSeen {
                worker: WorkerId::new(*w),
                heartbeat: LeaseKey::heartbeat(&WorkerId::new(*w), 1),
                alive: true,
            })
            .collect();
        Snapshot { leases, workers, observed_for: Duration::from_secs(4) }
    }

    #[test]
    fn refuses_a_live_worker_unless_forced() {
        let a = WorkerId::new("a");
        // (alive, force, allowed)
        for (alive, force, allowed) in [(true, false, false), (true, true, true), (false, false, true)] {
            let snap = snapshot(vec![], if alive { &["a"] } else { &[] });
            assert_eq!(check(&snap, &a, force).is_ok(), allowed, "alive={alive} force={force}");
        }
        let err = check(&snapshot(vec![], &["a"]), &a, false).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("(a)") && err.contains("--force"), "{err}");
    }

    #[tokio::test]
    async fn releases_what_the_worker_still_owns() {
        let store = MemoryLeaseStore::new();
        let at = Checkpoint::At(SequenceNumber::from_u128(4));
        for l in [
            lease("s1", "a", at.clone()),
            lease("s2", "a", Checkpoint::ShardEnd),
            lease("s3", "b", at.clone()),
            lease("s4", "a", at.clone()),
        ] {
            store.seed(l);
        }
        let snap = snapshot(store.leases(), &[]);
        // s4 moves to b after the snapshot: left alone.
        let s4 = store.get_now(&LeaseKey::from_raw("s4")).unwrap_or_else(|| lease("x", "x", Checkpoint::Latest));
        let _ = store.take(&s4, &WorkerId::new("b")).await;
        let released = apply(&store, &snap, &WorkerId::new("a")).await.map_err(|e| e.to_string());
        let keys: Result<Vec<String>, String> = released.map(|r| r.iter().map(|l| l.key.to_string()).collect());
        assert_eq!(keys, Ok(vec!["s1".to_owned()]));
        let owner = |k: &str| store.get_now(&LeaseKey::from_raw(k)).and_then(|l| l.owner).map(|o| o.to_string());
        assert_eq!(owner("s1"), None);
        assert_eq!(owner("s2"), Some("a".into()), "finished leases are not the fleet's concern");
        assert_eq!(owner("s4"), Some("b".into()));
        assert_eq!(store.get_now(&LeaseKey::from_raw("s1")).map(|l| l.checkpoint), Some(at));
    }
}
