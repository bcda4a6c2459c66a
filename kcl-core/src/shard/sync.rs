//! Shard sync: keeps the lease table in step with the stream.
//!
//! A full sync lists the stream's shards, creates leases for new shards in lineage order and
//! deletes finished leases once their children have started. It runs at start, every
//! `shard_sync_interval`, and uses the coordinator's last table scan instead of scanning
//! again. At every shard end it asks for that shard's children only, retrying with backoff
//! while they are not listed yet (children can appear a moment after their parent closes).
//! A shard whose children are still missing after the stall threshold is reported (a
//! warning, `kcl_ended_shards_without_children`, the status) until they appear.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ShardId;
use super::lineage::{leases_to_create, leases_to_delete};
use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::lease::coordinator::Coordinator;
use crate::lease::{Lease, LeaseStore, LeaseUpdate};
use crate::metrics::Metrics;
use crate::source::{ShardDescription, SourceError, StreamSource};
use crate::status::StatusBoard;

/// Tries of the child lookup after a shard end (as the Java adapter: 10, 50 ms up to 1 s).
const CHILD_LOOKUP_TRIES: usize = 10;

#[derive(Debug)]
pub(crate) struct ShardSync<S, L> {
    pub(crate) source: Arc<S>,
    pub(crate) coordinator: Arc<Coordinator<L>>,
    pub(crate) config: Arc<Config>,
    pub(crate) metrics: Metrics,
    pub(crate) status: Arc<StatusBoard>,
    /// Told when leases were created at a shard end, so the worker takes them at once
    /// instead of at its next take cycle.
    pub(crate) created: Arc<tokio::sync::Notify>,
    /// Shards this worker ended whose children were not listed yet: when each ended, and
    /// whether it was reported.
    pub(crate) awaiting_children: Mutex<HashMap<ShardId, (Instant, bool)>>,
    /// The shards known to be closed, shared with the consumers: an empty read of a closed
    /// shard that is not at its end is no progress (an iterator that stopped advancing).
    pub(crate) closed: Arc<Mutex<HashSet<ShardId>>>,
}

impl<S: StreamSource, L: LeaseStore> ShardSync<S, L> {
    /// Lists shards and creates missing leases; the worker calls it once before starting.
    pub(crate) async fn full_sync(&self) -> Result<(), SourceError> {
        let shards = self.source.list_shards().await?;
        self.check_awaiting_children(&shards);
        *self.closed.lock().unwrap_or_else(PoisonError::into_inner) =
            shards.iter().filter(|s| s.is_closed()).map(|s| s.id.clone()).collect();
        let snapshot = self.coordinator.snapshot();
        let leases: Arc<Vec<Lease>> = if snapshot.taken_at.is_some() {
            snapshot.leases
        } else {
            match self.coordinator.store().list().await {
                // As the take cycle does: leases of streams the source does not read are left alone.
                Ok(mut l) => {
                    l.retain(|l| l.key.shard_id().is_none_or(|s| self.source.consumes(&s)));
                    Arc::new(l)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease table scan for shard sync failed; will retry");
                    return Ok(());
                }
            }
        };
        let existing: HashMap<ShardId, Checkpoint> =
            leases.iter().filter_map(|l| l.key.shard_id().map(|id| (id, l.checkpoint.clone()))).collect();
        self.create(leases_to_create(&shards, &existing, self.config.initial_position)).await;
        for lease in leases_to_delete(&leases, &shards) {
            match self.coordinator.store().delete(lease).await {
                Ok(LeaseUpdate::Applied(_)) => tracing::info!(shard = %lease.key, "deleted finished lease"),
                Ok(LeaseUpdate::Lost) => {}
                Err(e) => tracing::debug!(shard = %lease.key, error = %e, "could not delete finished lease"),
            }
        }
        Ok(())
    }

    /// Creates leases in order; a failure skips that shard's descendants until the next sync,
    /// so a child never exists without its parent's lease.
    async fn create(&self, leases: Vec<Lease>) -> usize {
        let mut applied = 0;
        let mut failed: HashSet<ShardId> = HashSet::new();
        for lease in leases {
            let Some(id) = lease.key.shard_id() else { continue };
            if lease.parent_shard_ids.iter().any(|p| failed.contains(p)) {
                failed.insert(id);
                continue;
            }
            match self.coordinator.store().create_if_absent(lease).await {
                Ok(LeaseUpdate::Applied(l)) => {
                    applied += 1;
                    tracing::info!(shard = %l.key, checkpoint = %l.checkpoint, "created lease");
                }
                Ok(LeaseUpdate::Lost) => {}
                Err(e) => {
                    self.metrics.lease_table_errors.with_label_values(&["create"]).inc();
                    tracing::warn!(shard = %id, error = %e, "could not create lease; will retry at the next sync");
                    failed.insert(id);
                }
            }
        }
        applied
    }

    /// Forgets ended shards whose children are listed now; reports those still without
    /// children past the stall threshold.
    fn check_awaiting_children(&self, shards: &[ShardDescription]) {
        let parents: HashSet<&ShardId> = shards.iter().flat_map(|s| s.parent_ids.iter()).collect();
        let now = Instant::now();
        let threshold = self.config.stall_threshold;
        let mut awaiting = self.awaiting_children.lock().unwrap_or_else(PoisonError::into_inner);
        awaiting.retain(|shard, (ended, _)| {
            let found = parents.contains(shard);
            if found {
                tracing::info!(%shard, ended_ago = ?now.duration_since(*ended), "children of an ended shard appeared");
            }
            !found
        });
        let mut overdue = BTreeMap::new();
        for (shard, (ended, reported)) in awaiting.iter_mut() {
            let ago = now.duration_since(*ended);
            if ago < threshold {
                continue;
            }
            if !*reported {
                *reported = true;
                tracing::warn!(%shard, ended_ago = ?ago,
                    "shard ended but no child shard has appeared; its successors cannot start (was the stream \
                     disabled? do shard listings fail?)");
            }
            overdue.insert(shard.clone(), ago);
        }
        self.metrics.shards_without_children.set(overdue.len() as i64);
        self.status.set_ended_without_children(overdue);
    }

    /// Creates the leases of an ended shard's children, retrying while none are listed.
    async fn children_of(&self, parent: &ShardId, token: &CancellationToken) {
        let ended = Instant::now();
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(1))
            .with_max_times(CHILD_LOOKUP_TRIES)
            .build();
        loop {
            match self.source.child_shards(parent).await {
                Ok(children) if !children.is_empty() => {
                    self.closed.lock().unwrap_or_else(PoisonError::into_inner).insert(parent.clone());
                    let leases = children_leases(&children);
                    if self.create(leases).await > 0 {
                        self.created.notify_one();
                    }
                    return;
                }
                Ok(_) => tracing::debug!(shard = %parent, "children not listed yet"),
                Err(e) => tracing::debug!(shard = %parent, error = %e, "child lookup failed"),
            }
            let Some(d) = delays.next() else {
                tracing::info!(shard = %parent, "no children listed after the shard ended; the periodic sync will pick them up");
                self.awaiting_children
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(parent.clone(), (ended, false));
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = token.cancelled() => return,
            }
        }
    }

    /// Runs until `token` is cancelled.
    /// Every call it makes (a listing of many pages, a child lookup) is given up as soon as
    /// `token` is cancelled.
    pub(crate) async fn run(self, mut ended: mpsc::Receiver<ShardId>, token: CancellationToken) {
        let mut next_full = tokio::time::Instant::now() + self.config.shard_sync_interval;
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep_until(next_full) => {
                    let synced = tokio::select! {
                        r = self.full_sync() => r,
                        _ = token.cancelled() => return,
                    };
                    if let Err(e) = synced {
                        tracing::warn!(error = %e, "shard listing failed; will retry");
                    }
                    next_full = tokio::time::Instant::now() + self.config.shard_sync_interval;
                }
                Some(parent) = ended.recv() => {
                    tokio::select! {
                        _ = self.children_of(&parent, &token) => {}
                        _ = token.cancelled() => return,
                    }
                }
            }
        }
    }
}

fn children_leases(children: &[ShardDescription]) -> Vec<Lease> {
    children.iter().map(|c| Lease::new_for_shard(&c.id, Checkpoint::TrimHorizon, c.parent_ids.clone())).collect()
}
