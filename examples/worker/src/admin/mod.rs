//! What `kcl-admin` does, over the core's seams ([`LeaseStore`],
//! [`StreamSource`](kcl_core::StreamSource)) so that each operation runs the same against
//! DynamoDB and the in-memory store.
//!
//! - [`status`]: workers alive by heartbeat, leases per worker, each shard's owner,
//!   checkpoint, lineage state and lag;
//! - [`reset`]: move checkpoints to TRIM_HORIZON, LATEST, a time or a sequence number, never
//!   leaving a child ahead of its parent;
//! - [`release`]: release a worker's leases.
//!
//! Liveness is judged as the workers judge it: a heartbeat is alive when its counter changes.
//! [`observe`] reads the table twice, a renewal interval apart (workers renew every lease
//! duration / 3), and every decision is a pure function of that [`Snapshot`].
//!
//! Every write is one of the lease table's conditional writes. To rewrite a lease the admin
//! takes it as [`ADMIN_OWNER`] (which fences the owner: its next checkpoint of that lease fails
//! and its next take cycle stops the shard), writes the checkpoint and releases it, so the
//! fleet takes it again and starts at the new checkpoint. An admin stopped half-way leaves
//! leases owned by a worker without a heartbeat: the fleet takes them after a lease duration.

pub mod release;
pub mod reset;
pub mod status;

use std::collections::HashMap;
use std::time::Duration;

use kcl_core::{Lease, LeaseKey, LeaseStore, LeaseStoreError, ShardId, SourceError, WorkerId};

/// The owner the admin writes while it rewrites a lease (never a worker's id: workers refuse
/// nothing, but no fleet should name a worker so).
pub const ADMIN_OWNER: &str = "kcl-admin";

/// How long [`observe`] waits between its two reads by default: a little more than the
/// heartbeat renewal interval at kcl-core's default lease duration (10 s / 3).
pub const DEFAULT_OBSERVE: Duration = Duration::from_millis(4_500);

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The lease table could not be read or written.
    #[error(transparent)]
    LeaseTable(#[from] LeaseStoreError),
    /// The stream could not be read.
    #[error("stream: {0}")]
    Stream(#[from] SourceError),
    /// Workers are alive and the command would change what they hold.
    #[error(
        "{} worker(s) of this application are alive ({}): {what} would change leases they hold; stop them \
         first, or pass {flag}",
        .workers.len(), .workers.join(", ")
    )]
    WorkersAlive {
        /// The live workers.
        workers: Vec<String>,
        /// What was refused.
        what: &'static str,
        /// The flag that allows it.
        flag: &'static str,
    },
    /// The arguments do not describe a valid command.
    #[error("{0}")]
    Usage(String),
    /// A lease kept changing under the admin (a racing fleet) beyond the retries.
    #[error("lease {0} kept changing while it was being rewritten; run the command again")]
    Contended(String),
}

/// A worker's heartbeat as two reads saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSeen {
    /// The worker's id.
    pub worker: WorkerId,
    /// Its heartbeat item (one per run of the worker).
    pub heartbeat: LeaseKey,
    /// Whether the heartbeat changed between the reads (or appeared).
    pub alive: bool,
}

/// The lease table at the second of two reads, with the heartbeats judged.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Shard leases, sorted by key.
    pub leases: Vec<Lease>,
    /// Worker heartbeats, sorted by worker.
    pub workers: Vec<WorkerSeen>,
    /// How long apart the reads were.
    pub observed_for: Duration,
}

impl Snapshot {
    /// Judges two reads of the table: shard leases as in `second`, and a heartbeat alive when
    /// its counter differs from `first`'s or it is new. The change notice (a heartbeat-prefixed
    /// item without owner) is not a worker.
    pub fn from_reads(first: &[Lease], second: Vec<Lease>, observed_for: Duration) -> Self {
        let before: HashMap<&LeaseKey, u64> =
            first.iter().filter(|l| l.key.is_heartbeat()).map(|l| (&l.key, l.counter)).collect();
        let mut leases = Vec::new();
        let mut workers = Vec::new();
        for item in second {
            if !item.key.is_heartbeat() {
                leases.push(item);
                continue;
            }
            let Some(worker) = item.owner.clone() else { continue };
            let alive = before.get(&item.key).is_none_or(|c| *c != item.counter);
            workers.push(WorkerSeen { worker, heartbeat: item.key, alive });
        }
        leases.sort_by(|a, b| a.key.cmp(&b.key));
        workers.sort_by(|a, b| (&a.worker, &a.heartbeat).cmp(&(&b.worker, &b.heartbeat)));
        Self { leases, workers, observed_for }
    }

    /// The ids of the workers with a live heartbeat, sorted, each once.
    pub fn live_workers(&self) -> Vec<String> {
        let mut live: Vec<String> =
            self.workers.iter().filter(|w| w.alive).map(|w| w.worker.as_str().to_owned()).collect();
        live.dedup();
        live
    }

    /// Whether `worker` has a live heartbeat.
    pub fn is_alive(&self, worker: &WorkerId) -> bool {
        self.workers.iter().any(|w| w.alive && &w.worker == worker)
    }

    /// The lease of `shard`.
    pub fn lease(&self, shard: &ShardId) -> Option<&Lease> {
        self.leases.iter().find(|l| l.key.as_str() == shard.as_str())
    }
}

/// Reads the table twice, `wait` apart, and judges the heartbeats ([`Snapshot::from_reads`]).
pub async fn observe<S: LeaseStore>(store: &S, wait: Duration) -> Result<Snapshot, LeaseStoreError> {
    let first = store.list().await?;
    tokio::time::sleep(wait).await;
    let second = store.list().await?;
    Ok(Snapshot::from_reads(&first, second, wait))
}

/// Refuses with [`AdminError::WorkersAlive`] when any worker is alive, unless `allowed`.
pub fn refuse_while_alive(
    snapshot: &Snapshot,
    allowed: bool,
    what: &'static str,
    flag: &'static str,
) -> Result<(), AdminError> {
    let workers = snapshot.live_workers();
    if allowed || workers.is_empty() {
        return Ok(());
    }
    Err(AdminError::WorkersAlive { workers, what, flag })
}

#[cfg(test)]
mod tests {
    use kcl_core::Checkpoint;

    use super::*;

    fn heartbeat(worker: &str, counter: u64) -> Lease {
        let mut l = Lease::new_for_shard(&ShardId::new("x"), Checkpoint::TrimHorizon, vec![]);
        l.key = LeaseKey::heartbeat(&WorkerId::new(worker), 1);
        l.owner = Some(WorkerId::new(worker));
        l.counter = counter;
        l
    }

    fn shard(id: &str) -> Lease {
        Lease::new_for_shard(&ShardId::new(id), Checkpoint::TrimHorizon, vec![])
    }

    #[test]
    fn judges_heartbeats_by_their_counters() {
        let notice = {
            let mut n = heartbeat("x", 1);
            n.key = LeaseKey::from_raw(format!("{}#deaths", LeaseKey::HEARTBEAT_PREFIX));
            n.owner = None;
            n
        };
        // (name, first read, second read, live workers)
        type Case = (&'static str, Vec<Lease>, Vec<Lease>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            ("renewed", vec![heartbeat("a", 1)], vec![heartbeat("a", 2)], vec!["a"]),
            ("silent", vec![heartbeat("a", 1)], vec![heartbeat("a", 1)], vec![]),
            ("new", vec![], vec![heartbeat("a", 1)], vec!["a"]),
            ("removed", vec![heartbeat("a", 1)], vec![], vec![]),
            (
                "notice is no worker",
                vec![notice.clone()],
                vec![{
                    let mut n = notice.clone();
                    n.counter = 9;
                    n
                }],
                vec![],
            ),
            (
                "mixed",
                vec![heartbeat("a", 1), heartbeat("b", 1), shard("s1")],
                vec![heartbeat("b", 1), heartbeat("a", 5), shard("s1")],
                vec!["a"],
            ),
        ];
        for (name, first, second, live) in cases {
            let snap = Snapshot::from_reads(&first, second, Duration::from_secs(1));
            assert_eq!(snap.live_workers(), live, "{name}");
            assert!(snap.leases.iter().all(|l| !l.key.is_heartbeat()), "{name}");
        }
    }

    #[test]
    fn refuses_only_while_alive_and_not_allowed() {
        let alive = Snapshot::from_reads(&[], vec![heartbeat("a", 1)], Duration::ZERO);
        let err =
            refuse_while_alive(&alive, false, "reset", "--coordinate").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("1 worker(s)") && err.contains("(a)") && err.contains("--coordinate"), "{err}");
        assert!(refuse_while_alive(&alive, true, "reset", "--coordinate").is_ok());
        assert!(refuse_while_alive(&Snapshot::default(), false, "reset", "--coordinate").is_ok());
    }
}
