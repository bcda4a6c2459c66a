//! What a running worker reports about itself: leases held, and per shard its checkpoint and
//! lag ([`WorkerStatus`], from [`WorkerHandle::status`](crate::worker::WorkerHandle::status)).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::checkpoint::{Checkpoint, SequenceNumber};
use crate::lease::WorkerId;
use crate::shard::ShardId;

/// Where a shard consumer is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardState {
    /// Waiting for parent shards to be processed to their end.
    WaitingOnParents,
    /// Reading and delivering records.
    Processing,
    /// Holding the lease but not delivering: the lease could not be renewed recently.
    Fenced,
    /// Retrying a failed batch.
    Retrying,
    /// Holding records whose retries are exhausted until the dead-letter destination takes
    /// them (it failed; nothing is skipped meanwhile).
    WaitingOnDeadLetter,
}

/// One held shard.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardStatus {
    /// The consumer's state.
    pub state: ShardState,
    /// The stored checkpoint, as last written by this worker.
    pub checkpoint: Option<Checkpoint>,
    /// The last record `process_records` handled.
    pub last_processed: Option<SequenceNumber>,
    /// Age of that record when it was delivered.
    pub lag: Option<Duration>,
    /// Records handled since this worker took the lease.
    pub records_processed: u64,
    /// Times a position was found trimmed (data older than the retention is gone).
    pub trimmed_events: u64,
    /// How long the shard has made no progress (no batch delivered, no read reaching the
    /// head of the shard), once that exceeds the stall threshold.
    pub stalled_for: Option<Duration>,
    /// The last failure on this shard since its last progress: a read that failed (with its
    /// kind), a processor call that failed or panicked. Cleared by progress.
    pub last_error: Option<String>,
    /// Last progress (monotonic clock).
    pub(crate) last_progress: tokio::time::Instant,
}

/// A snapshot of a worker.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStatus {
    /// The worker's id.
    pub worker_id: WorkerId,
    /// Held shards and their state.
    pub shards: BTreeMap<ShardId, ShardStatus>,
    /// Shards this worker processed to their end.
    pub shards_ended: u64,
    /// Records handled by this worker in total.
    pub records_processed: u64,
    /// Trimmed-data occurrences in total.
    pub trimmed_events: u64,
    /// Records sent to the dead-letter destination.
    pub records_dead_lettered: u64,
    /// Records skipped after exhausted retries with no dead-letter destination.
    pub records_skipped: u64,
    /// Shards this worker processed to their end whose children have not appeared for longer
    /// than the stall threshold, with the time since they ended. Their successors cannot
    /// start: the stream may have been disabled, or the listing keeps failing.
    pub ended_without_children: BTreeMap<ShardId, Duration>,
}

impl WorkerStatus {
    /// Leases held.
    pub fn leases_held(&self) -> usize {
        self.shards.len()
    }

    /// The largest lag among held shards.
    pub fn max_lag(&self) -> Option<Duration> {
        self.shards.values().filter_map(|s| s.lag).max()
    }

    /// The largest lag among held shards of each stream, as `stream_of` names a shard's
    /// stream; a stream whose held shards have no lag yet maps to zero.
    pub fn max_lag_by_stream(&self, stream_of: impl Fn(&ShardId) -> String) -> BTreeMap<String, Duration> {
        let mut out: BTreeMap<String, Duration> = BTreeMap::new();
        for (shard, status) in &self.shards {
            let max = out.entry(stream_of(shard)).or_default();
            *max = (*max).max(status.lag.unwrap_or_default());
        }
        out
    }
}

/// The live status, updated by consumers.
#[derive(Debug)]
pub(crate) struct StatusBoard {
    inner: Mutex<WorkerStatus>,
}

impl StatusBoard {
    pub(crate) fn new(worker_id: WorkerId) -> Self {
        Self {
            inner: Mutex::new(WorkerStatus {
                worker_id,
                shards: BTreeMap::new(),
                shards_ended: 0,
                records_processed: 0,
                trimmed_events: 0,
                records_dead_lettered: 0,
                records_skipped: 0,
                ended_without_children: BTreeMap::new(),
            }),
        }
    }

    pub(crate) fn set_ended_without_children(&self, shards: BTreeMap<ShardId, Duration>) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).ended_without_children = shards;
    }

    pub(crate) fn update(&self, shard: &ShardId, f: impl FnOnce(&mut ShardStatus)) {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = s.shards.entry(shard.clone()).or_insert(ShardStatus {
            state: ShardState::WaitingOnParents,
            checkpoint: None,
            last_processed: None,
            lag: None,
            records_processed: 0,
            trimmed_events: 0,
            stalled_for: None,
            last_error: None,
            last_progress: tokio::time::Instant::now(),
        });
        f(entry);
    }

    pub(crate) fn processed(&self, shard: &ShardId, count: u64, last: SequenceNumber, lag: Option<Duration>) {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        s.records_processed += count;
        if let Some(entry) = s.shards.get_mut(shard) {
            entry.state = ShardState::Processing;
            entry.last_progress = tokio::time::Instant::now();
            entry.stalled_for = None;
            entry.last_error = None;
            entry.records_processed += count;
            entry.last_processed = Some(last);
            entry.lag = lag;
        }
    }

    /// A read reached the head of the shard: the consumer is caught up.
    pub(crate) fn caught_up(&self, shard: &ShardId) {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = s.shards.get_mut(shard) {
            entry.last_progress = tokio::time::Instant::now();
            entry.stalled_for = None;
        }
    }

    /// Marks shards without progress for longer than `threshold` as stalled and returns them
    /// (those newly stalled first flagged `true`).
    pub(crate) fn stalled(&self, threshold: Duration) -> Vec<(ShardId, Duration, bool, ShardState)> {
        let now = tokio::time::Instant::now();
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for (id, entry) in s.shards.iter_mut() {
            let idle = now.saturating_duration_since(entry.last_progress);
            if idle > threshold {
                let newly = entry.stalled_for.is_none();
                entry.stalled_for = Some(idle);
                out.push((id.clone(), idle, newly, entry.state));
            }
        }
        out
    }

    pub(crate) fn trimmed(&self, shard: &ShardId) {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        s.trimmed_events += 1;
        if let Some(entry) = s.shards.get_mut(shard) {
            entry.trimmed_events += 1;
        }
    }

    pub(crate) fn given_up(&self, count: u64, dead_lettered: bool) {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if dead_lettered {
            s.records_dead_lettered += count;
        } else {
            s.records_skipped += count;
        }
    }

    pub(crate) fn remove(&self, shard: &ShardId, ended: bool) {
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        s.shards.remove(shard);
        if ended {
            s.shards_ended += 1;
        }
    }

    pub(crate) fn snapshot(&self) -> WorkerStatus {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_lag_per_stream() {
        // (shards as (id, lag in seconds), expected per stream)
        type Case = (Vec<(&'static str, Option<u64>)>, Vec<(&'static str, u64)>);
        let cases: Vec<Case> = vec![
            (vec![], vec![]),
            (vec![("a:1", Some(3)), ("a:2", Some(7)), ("b:1", Some(1))], vec![("a", 7), ("b", 1)]),
            (vec![("a:1", None), ("b:1", Some(2))], vec![("a", 0), ("b", 2)]),
        ];
        for (shards, expected) in cases {
            let board = StatusBoard::new(WorkerId::new("w"));
            for (id, lag) in &shards {
                board.update(&ShardId::new(*id), |s| s.lag = lag.map(Duration::from_secs));
            }
            let by = board.snapshot().max_lag_by_stream(|s| s.as_str().split(':').next().unwrap_or("").to_owned());
            let expected: BTreeMap<String, Duration> =
                expected.iter().map(|(k, v)| ((*k).to_owned(), Duration::from_secs(*v))).collect();
            assert_eq!(by, expected, "{shards:?}");
        }
    }
}
