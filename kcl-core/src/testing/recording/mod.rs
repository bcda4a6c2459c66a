//! A processor that records what it was given: [`RecordingProcessor`], its factory, and the
//! shared [`DeliveryLog`] they write to.
//!
//! Give every worker of a scenario a [`RecordingProcessorFactory`] with its own [`WorkerId`]
//! and one shared [`DeliveryLog`]; afterwards the log holds, in call order, every record each
//! worker's processors were handed ([`Delivery`]), every lifecycle callback
//! ([`LifecycleEvent`]) and every checkpoint the processors asked for ([`CheckpointCall`]).
//! The invariant checker (`kcl_core::testing::invariants`) reads it to judge the worker's
//! promises; your own tests can read it directly.
//!
//! The processor can also misbehave on purpose: fail every batch that holds a record matching
//! a predicate ([`RecordingProcessorFactory::fail_when`]) and take a while per batch
//! ([`RecordingProcessorFactory::processing_delay`], a `tokio::time::sleep`, so tests with
//! paused time model slow processors without waiting).
//!
//! ```
//! use kcl_core::WorkerId;
//! use kcl_core::testing::recording::{CheckpointPolicy, DeliveryLog, RecordingProcessorFactory};
//! use kcl_core::testing::sim::record::SimRecord;
//!
//! let log = DeliveryLog::new();
//! let factory: RecordingProcessorFactory<SimRecord> =
//!     RecordingProcessorFactory::new(WorkerId::new("worker-1"), log.clone())
//!         .checkpoint_policy(CheckpointPolicy::EveryNBatches(10))
//!         .fail_when(|record: &SimRecord| record.key == "poison");
//! // ... run a worker with `factory`, then:
//! assert_eq!(log.processed_count(), 0);
//! ```

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::checkpoint::{Checkpoint, Checkpointer, SequenceNumber};
use crate::lease::WorkerId;
use crate::processor::{Batch, InitializeInput, ProcessorError, RecordProcessor, RecordProcessorFactory};
use crate::shard::ShardId;
use crate::source::StreamRecord;
use crate::testing::sim::record::SimRecord;

#[cfg(test)]
mod tests;

/// What a record type tells the recording processor beyond its position and partition key.
///
/// Implement it for your own record type to use [`RecordingProcessor`] with it; the default
/// says the per-item write order is unknown.
pub trait RecordVersion: StreamRecord {
    /// The write order of this change among the changes to the same item (1, 2, 3, …), when
    /// the record knows it.
    fn item_version(&self) -> Option<u64> {
        None
    }
}

impl RecordVersion for SimRecord {
    fn item_version(&self) -> Option<u64> {
        Some(self.version)
    }
}

/// How a delivered record fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryOutcome {
    /// `process_records` returned `Ok` for the batch holding the record.
    Processed,
    /// `process_records` returned an error for the batch holding the record.
    Failed,
}

/// One record handed to `process_records`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The worker whose processor got the record.
    pub worker: WorkerId,
    /// The shard the batch came from.
    pub shard_id: ShardId,
    /// The record's sequence number.
    pub sequence_number: SequenceNumber,
    /// The record's partition (item) key.
    pub key: String,
    /// The per-item write order, when the record type knows it (see [`RecordVersion`]).
    pub version: Option<u64>,
    /// When `process_records` was entered for the batch (before any processing delay).
    pub at: Instant,
    /// How the batch fared.
    pub outcome: DeliveryOutcome,
    /// The lane of the batch (0 without lanes).
    pub lane: usize,
    /// When the call that carried it returned (`at` plus the processing time).
    pub finished: Instant,
}

/// Which lifecycle callback ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LifecycleKind {
    /// `initialize`, with the checkpoint processing resumes from. Starts a new session of the
    /// worker on the shard.
    Initialized(Checkpoint),
    /// `shard_ended`: the shard was read to its end.
    ShardEnded,
    /// `lease_lost`: the lease moved away; no more records come.
    LeaseLost,
    /// `shutdown_requested`: the worker stops gracefully.
    ShutdownRequested,
}

/// A lifecycle callback of one processor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleEvent {
    /// The worker running the processor.
    pub worker: WorkerId,
    /// The processor's shard.
    pub shard_id: ShardId,
    /// When the callback was entered.
    pub at: Instant,
    /// Which callback.
    pub kind: LifecycleKind,
}

/// A checkpoint the processor asked for, with the answer it got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointCall {
    /// The worker running the processor.
    pub worker: WorkerId,
    /// The processor's shard.
    pub shard_id: ShardId,
    /// When the checkpointer answered.
    pub at: Instant,
    /// The position asked for: the last record delivered to the processor for
    /// `checkpoint()`, the argument for `checkpoint_at()`; `None` when nothing was delivered.
    pub sequence_number: Option<SequenceNumber>,
    /// The checkpointer's answer; an error as its display text.
    pub result: Result<(), String>,
}

/// One entry of a [`DeliveryLog`], in call order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEntry {
    /// A record handed to `process_records`.
    Delivery(Delivery),
    /// A lifecycle callback.
    Lifecycle(LifecycleEvent),
    /// A checkpoint asked for by the processor.
    CheckpointCall(CheckpointCall),
}

impl From<Delivery> for LogEntry {
    fn from(d: Delivery) -> Self {
        LogEntry::Delivery(d)
    }
}

impl From<LifecycleEvent> for LogEntry {
    fn from(e: LifecycleEvent) -> Self {
        LogEntry::Lifecycle(e)
    }
}

impl From<CheckpointCall> for LogEntry {
    fn from(c: CheckpointCall) -> Self {
        LogEntry::CheckpointCall(c)
    }
}

/// A log shared by every recording processor of a scenario: cheap to clone, safe to share
/// across tasks.
///
/// Entries keep the order in which they were appended. Under paused time many entries carry
/// the same [`Instant`]; the position in the log is then the tiebreak.
#[derive(Clone, Debug, Default)]
pub struct DeliveryLog {
    entries: Arc<Mutex<Vec<LogEntry>>>,
}

impl DeliveryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<LogEntry>> {
        // A panic while holding the lock cannot leave a half-appended entry behind (a push
        // either happened or not), so a poisoned log is still consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an entry. The recording processor does this for you; use it to feed the log
    /// from a processor of your own.
    pub fn push(&self, entry: impl Into<LogEntry>) {
        self.lock().push(entry.into());
    }

    /// Appends several entries at once; no other entry comes between them.
    pub fn extend<E: Into<LogEntry>>(&self, entries: impl IntoIterator<Item = E>) {
        let entries: Vec<LogEntry> = entries.into_iter().map(Into::into).collect();
        self.lock().extend(entries);
    }

    /// Runs `f` over the entries while holding the log's lock, without copying them.
    pub fn with_entries<T>(&self, f: impl FnOnce(&[LogEntry]) -> T) -> T {
        f(&self.lock())
    }

    /// A copy of every entry, in order.
    pub fn entries(&self) -> Vec<LogEntry> {
        self.lock().clone()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing was logged.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Every delivery, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.with_entries(|entries| {
            entries
                .iter()
                .filter_map(|e| match e {
                    LogEntry::Delivery(d) => Some(d.clone()),
                    _ => None,
                })
                .collect()
        })
    }

    /// Every lifecycle callback, in order.
    pub fn lifecycle(&self) -> Vec<LifecycleEvent> {
        self.with_entries(|entries| {
            entries
                .iter()
                .filter_map(|e| match e {
                    LogEntry::Lifecycle(l) => Some(l.clone()),
                    _ => None,
                })
                .collect()
        })
    }

    /// Every checkpoint call, in order.
    pub fn checkpoint_calls(&self) -> Vec<CheckpointCall> {
        self.with_entries(|entries| {
            entries
                .iter()
                .filter_map(|e| match e {
                    LogEntry::CheckpointCall(c) => Some(c.clone()),
                    _ => None,
                })
                .collect()
        })
    }

    fn count_deliveries(&self, outcome: DeliveryOutcome) -> usize {
        self.with_entries(|entries| {
            entries.iter().filter(|e| matches!(e, LogEntry::Delivery(d) if d.outcome == outcome)).count()
        })
    }

    /// Deliveries that were processed, duplicates included.
    pub fn processed_count(&self) -> usize {
        self.count_deliveries(DeliveryOutcome::Processed)
    }

    /// Deliveries whose batch failed.
    pub fn failed_count(&self) -> usize {
        self.count_deliveries(DeliveryOutcome::Failed)
    }

    /// Processed deliveries, and how many distinct records they were.
    fn processed_and_distinct(&self) -> (usize, usize) {
        self.with_entries(|entries| {
            let mut distinct = HashSet::new();
            let mut processed = 0;
            for e in entries {
                if let LogEntry::Delivery(d) = e
                    && d.outcome == DeliveryOutcome::Processed
                {
                    processed += 1;
                    distinct.insert((&d.shard_id, &d.sequence_number));
                }
            }
            (processed, distinct.len())
        })
    }

    /// Distinct records (shard and sequence number) processed at least once.
    pub fn distinct_processed(&self) -> usize {
        self.processed_and_distinct().1
    }

    /// Processed deliveries beyond the first of each record: how much was processed twice.
    pub fn duplicate_count(&self) -> usize {
        let (processed, distinct) = self.processed_and_distinct();
        processed - distinct
    }

    /// Processed deliveries made by `worker`'s processors.
    pub fn processed_by(&self, worker: &WorkerId) -> usize {
        self.with_entries(|entries| {
            entries
                .iter()
                .filter(|e| {
                    matches!(e, LogEntry::Delivery(d)
                        if d.outcome == DeliveryOutcome::Processed && &d.worker == worker)
                })
                .count()
        })
    }
}

/// When [`RecordingProcessor::process_records`] checkpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CheckpointPolicy {
    /// After every successful batch (`checkpointer.checkpoint()`).
    #[default]
    EveryBatch,
    /// After every n-th successful batch of a processor (`0` is treated as `1`).
    EveryNBatches(u64),
    /// Never, not even in `shard_ended` or `shutdown_requested`: the worker's own
    /// `SHARD_END` and shutdown checkpoints are all there is.
    Never,
}

/// A shared predicate choosing records whose batch fails.
type FailPredicate<R> = Arc<dyn Fn(&R) -> bool + Send + Sync>;

/// Settings shared by a factory and its processors.
struct Settings<R> {
    worker: WorkerId,
    log: DeliveryLog,
    policy: CheckpointPolicy,
    fail_when: Option<FailPredicate<R>>,
    processing_delay: Duration,
}

impl<R> Clone for Settings<R> {
    fn clone(&self) -> Self {
        Self {
            worker: self.worker.clone(),
            log: self.log.clone(),
            policy: self.policy,
            fail_when: self.fail_when.clone(),
            processing_delay: self.processing_delay,
        }
    }
}

impl<R> fmt::Debug for Settings<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("worker", &self.worker)
            .field("policy", &self.policy)
            .field("fail_when", &self.fail_when.as_ref().map(|_| "<predicate>"))
            .field("processing_delay", &self.processing_delay)
            .finish_non_exhaustive()
    }
}

/// Makes a [`RecordingProcessor`] per shard, all writing to one [`DeliveryLog`] under one
/// worker id. Use one factory per worker.
#[derive(Debug)]
pub struct RecordingProcessorFactory<R = SimRecord> {
    settings: Settings<R>,
}

impl<R> Clone for RecordingProcessorFactory<R> {
    fn clone(&self) -> Self {
        Self { settings: self.settings.clone() }
    }
}

impl<R: RecordVersion> RecordingProcessorFactory<R> {
    /// Processors for `worker` logging to `log`, checkpointing after every batch, never
    /// failing, without delay.
    pub fn new(worker: WorkerId, log: DeliveryLog) -> Self {
        Self {
            settings: Settings {
                worker,
                log,
                policy: CheckpointPolicy::default(),
                fail_when: None,
                processing_delay: Duration::ZERO,
            },
        }
    }

    /// Sets when processors checkpoint.
    pub fn checkpoint_policy(mut self, policy: CheckpointPolicy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// Fails every batch holding a record for which `predicate` is true: the batch's records
    /// are logged as [`DeliveryOutcome::Failed`] and `process_records` returns an error. The
    /// predicate is shared by all processors of the factory; let it count calls or consult
    /// the clock to fail only for a while.
    pub fn fail_when(mut self, predicate: impl Fn(&R) -> bool + Send + Sync + 'static) -> Self {
        self.settings.fail_when = Some(Arc::new(predicate));
        self
    }

    /// Sleeps `delay` (with `tokio::time::sleep`) in every `process_records` call, after
    /// logging the batch and before checkpointing.
    pub fn processing_delay(mut self, delay: Duration) -> Self {
        self.settings.processing_delay = delay;
        self
    }

    /// The worker id written with every entry.
    pub fn worker(&self) -> &WorkerId {
        &self.settings.worker
    }

    /// The shared log.
    pub fn log(&self) -> &DeliveryLog {
        &self.settings.log
    }
}

impl<R: RecordVersion> RecordProcessorFactory<R> for RecordingProcessorFactory<R> {
    type Processor = RecordingProcessor<R>;

    fn create(&self, shard: &ShardId) -> RecordingProcessor<R> {
        RecordingProcessor {
            settings: self.settings.clone(),
            shard_id: shard.clone(),
            batches: 0,
            last_processed: None,
            last_batch_failed: false,
        }
    }
}

/// A processor that logs every callback to a [`DeliveryLog`] and checkpoints as its
/// [`CheckpointPolicy`] says. Made by [`RecordingProcessorFactory`].
///
/// - `initialize` logs [`LifecycleKind::Initialized`] and forgets earlier progress.
/// - `process_records` logs each record (processed, or failed when the factory's failure
///   predicate matches one), sleeps the processing delay, then fails the batch or
///   checkpoints according to the policy, logging the [`CheckpointCall`].
/// - `shard_ended` and `shutdown_requested` log themselves and, unless the policy is
///   [`CheckpointPolicy::Never`], checkpoint the last record this processor processed. After a
///   failed batch that is not the last record delivered, so they use `checkpoint_at`.
/// - `lease_lost` logs itself.
#[derive(Debug)]
pub struct RecordingProcessor<R = SimRecord> {
    settings: Settings<R>,
    shard_id: ShardId,
    batches: u64,
    last_processed: Option<SequenceNumber>,
    last_batch_failed: bool,
}

impl<R: RecordVersion> RecordingProcessor<R> {
    fn lifecycle(&self, kind: LifecycleKind) {
        self.settings.log.push(LifecycleEvent {
            worker: self.settings.worker.clone(),
            shard_id: self.shard_id.clone(),
            at: Instant::now(),
            kind,
        });
    }

    fn log_checkpoint(&self, sequence_number: Option<SequenceNumber>, result: Result<(), String>) {
        self.settings.log.push(CheckpointCall {
            worker: self.settings.worker.clone(),
            shard_id: self.shard_id.clone(),
            at: Instant::now(),
            sequence_number,
            result,
        });
    }

    /// The final checkpoint of `shard_ended` and `shutdown_requested`.
    async fn final_checkpoint(&self, checkpointer: &impl Checkpointer) {
        if self.settings.policy == CheckpointPolicy::Never {
            return;
        }
        let result = if self.last_batch_failed {
            // `checkpoint()` would mark the failed batch as done; name the last good record.
            let Some(seq) = &self.last_processed else { return };
            checkpointer.checkpoint_at(seq).await
        } else {
            // A NothingDelivered answer is fine here; it is logged like any other.
            checkpointer.checkpoint().await
        };
        self.log_checkpoint(self.last_processed.clone(), result.map_err(|e| e.to_string()));
    }
}

impl<R: RecordVersion> RecordProcessor<R> for RecordingProcessor<R> {
    async fn initialize(&mut self, input: &InitializeInput) -> Result<(), ProcessorError> {
        self.shard_id = input.shard_id.clone();
        self.batches = 0;
        self.last_processed = None;
        self.last_batch_failed = false;
        self.lifecycle(LifecycleKind::Initialized(input.checkpoint.clone()));
        Ok(())
    }

    async fn process_records(
        &mut self,
        batch: &Batch<R>,
        checkpointer: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        let failing = self
            .settings
            .fail_when
            .as_ref()
            .and_then(|fail| batch.records.iter().find(|r| fail(r)))
            .map(|r| r.sequence_number().clone());
        let outcome = if failing.is_some() { DeliveryOutcome::Failed } else { DeliveryOutcome::Processed };
        let at = Instant::now();
        let finished = at + self.settings.processing_delay;
        // One append per batch keeps a batch's records together in the log.
        self.settings.log.extend(batch.records.iter().map(|record| Delivery {
            worker: self.settings.worker.clone(),
            shard_id: batch.shard_id.clone(),
            sequence_number: record.sequence_number().clone(),
            key: record.partition_key().to_owned(),
            version: record.item_version(),
            at,
            outcome,
            lane: batch.lane,
            finished,
        }));
        if !self.settings.processing_delay.is_zero() {
            tokio::time::sleep(self.settings.processing_delay).await;
        }
        if let Some(seq) = failing {
            self.last_batch_failed = true;
            return Err(ProcessorError::new(format!(
                "injected failure: record {seq} of shard {} matches the failure predicate",
                batch.shard_id
            )));
        }
        self.last_batch_failed = false;
        self.last_processed = batch.last_sequence_number().cloned();
        self.batches += 1;
        let due = match self.settings.policy {
            CheckpointPolicy::EveryBatch => true,
            CheckpointPolicy::EveryNBatches(n) => self.batches.is_multiple_of(n.max(1)),
            CheckpointPolicy::Never => false,
        };
        if due {
            let result = checkpointer.checkpoint().await;
            self.log_checkpoint(self.last_processed.clone(), result.map_err(|e| e.to_string()));
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &impl Checkpointer) {
        self.lifecycle(LifecycleKind::ShardEnded);
        self.final_checkpoint(checkpointer).await;
    }

    async fn lease_lost(&mut self) {
        self.lifecycle(LifecycleKind::LeaseLost);
    }

    async fn shutdown_requested(&mut self, checkpointer: &impl Checkpointer) {
        self.lifecycle(LifecycleKind::ShutdownRequested);
        self.final_checkpoint(checkpointer).await;
    }
}
