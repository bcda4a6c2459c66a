//! Who watches whose heartbeat: reads that grow with the fleet, not with its square.
//!
//! Each worker reads the heartbeats of only its [`WATCHERS`] successors in the ring of live
//! workers (sorted by worker id, from the last scan), so each heartbeat is read by that many
//! workers and the fleet reads `WATCHERS` × workers items per poll interval. A watcher that
//! judges a worker dead takes its share of the leases at once and bumps one *change notice*
//! item in the lease table; every worker reads that one item per poll interval and runs a take
//! cycle when it changed, so the dead worker's leases move to everyone about one poll interval
//! later than to its watchers. The same notice is bumped when a worker releases leases on
//! purpose (a handoff, a graceful stop) and when it announces that it stops
//! ([`crate::config::DEFAULT_DEPARTURE_NOTICE`]): a worker that read a change reads the notice
//! every handover poll interval for a while, so what is released next is taken at once.

use std::sync::PoisonError;

use super::Coordinator;
use crate::checkpoint::Checkpoint;
use crate::lease::{Lease, LeaseKey, LeaseStore, LeaseUpdate, WorkerId};
use crate::shard::ShardId;

/// How many workers read each heartbeat.
pub(super) const WATCHERS: usize = 2;

/// The key of the change notice: heartbeat-prefixed (never a shard id), with no owner (never a
/// worker's heartbeat: worker ids are not empty).
pub(super) fn notice_key() -> LeaseKey {
    LeaseKey::from_raw(format!("{}#deaths", LeaseKey::HEARTBEAT_PREFIX))
}

/// The heartbeats `me` watches: those of the `n` workers after it in the ring of `peers`
/// (every heartbeat of each, when a worker has several).
pub(super) fn watched(me: &WorkerId, peers: &[(LeaseKey, WorkerId)], n: usize) -> Vec<(LeaseKey, WorkerId)> {
    let mut workers: Vec<&WorkerId> = peers.iter().map(|(_, w)| w).filter(|w| *w != me).collect();
    workers.sort();
    workers.dedup();
    let start = workers.partition_point(|w| *w < me);
    let chosen: Vec<&WorkerId> = (0..n.min(workers.len())).map(|i| workers[(start + i) % workers.len()]).collect();
    let mut out: Vec<(LeaseKey, WorkerId)> = peers.iter().filter(|(_, w)| chosen.contains(&w)).cloned().collect();
    out.sort();
    out
}

impl<S: LeaseStore> Coordinator<S> {
    /// Reads the change notice. True when it changed since the last read (another worker
    /// judged a worker dead, released leases or announced that it stops): time for a take
    /// cycle.
    pub(crate) async fn notice_changed(&self) -> bool {
        let Ok(item) = self.store.peek(&notice_key()).await else { return false };
        let counter = item.map(|l| l.counter);
        let mut seen = self.notice_seen.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = seen.is_some_and(|before| before != counter);
        *seen = Some(counter);
        changed
    }

    /// Tells every worker that leases are, or are about to be, free (a worker died, released
    /// leases or stops): bumps the change notice (creating it the first time).
    pub(crate) async fn announce_change(&self) {
        let key = notice_key();
        for _ in 0..3 {
            let current = match self.store.get(&key).await {
                Ok(Some(item)) => self.store.renew(&item).await,
                Ok(None) => {
                    let mut notice = Lease::new_for_shard(&ShardId::new("-"), Checkpoint::TrimHorizon, Vec::new());
                    notice.key = key.clone();
                    self.store.create_if_absent(notice).await
                }
                Err(e) => Err(e),
            };
            match current {
                Ok(LeaseUpdate::Applied(item)) => {
                    // This worker's own announcement is no news to it.
                    *self.notice_seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(Some(item.counter));
                    return;
                }
                // Another worker announced at the same time: once is enough.
                Ok(LeaseUpdate::Lost) => return,
                Err(e) => tracing::debug!(error = %e, "could not write the change notice; retrying"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(w: &str, n: u64) -> (LeaseKey, WorkerId) {
        (LeaseKey::heartbeat(&WorkerId::new(w), n), WorkerId::new(w))
    }

    #[test]
    fn ring_table() {
        let names =
            |v: Vec<(LeaseKey, WorkerId)>| -> Vec<String> { v.into_iter().map(|(_, w)| w.to_string()).collect() };
        let fleet: Vec<(LeaseKey, WorkerId)> = ["a", "b", "c", "d", "e"].iter().map(|w| hb(w, 1)).collect();
        type Case<'a> = (&'a str, &'a [(LeaseKey, WorkerId)], usize, Vec<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            ("a", &fleet, 2, vec!["b", "c"]),
            ("d", &fleet, 2, vec!["a", "e"]),
            ("e", &fleet, 2, vec!["a", "b"]),
            ("c", &fleet, 9, vec!["a", "b", "d", "e"]),
            ("a", &fleet[..1], 2, vec![]),
            // Not in the list itself (no scan has seen it yet): it watches the next ones anyway.
            ("bb", &fleet, 2, vec!["c", "d"]),
        ];
        for (me, peers, n, want) in cases {
            let got = names(watched(&WorkerId::new(me), peers, n));
            assert_eq!(got, want, "{me} watching {n}");
        }
        // Each heartbeat is read by exactly n workers.
        for (_, w) in &fleet {
            let readers = fleet.iter().filter(|(_, me)| watched(me, &fleet, 2).iter().any(|(_, x)| x == w)).count();
            assert_eq!(readers, 2, "{w}");
        }
        // A worker with two heartbeats (a restart not yet cleaned up): both are watched.
        let two = vec![hb("a", 1), hb("b", 1), hb("b", 2)];
        assert_eq!(watched(&WorkerId::new("a"), &two, 2).len(), 2);
    }
}
