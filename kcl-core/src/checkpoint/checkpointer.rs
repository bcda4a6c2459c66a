//! The [`Checkpointer`] seam and the lease-backed implementation handed to processors.
//!
//! The lease-backed checkpointer also coalesces: what the [`CheckpointPolicy`] defers is
//! recorded as pending and written with the next write (see [`super::policy`]).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::policy::{Decision, Trigger, decide};
use super::{Checkpoint, SequenceNumber};
use crate::config::CheckpointPolicy;
use crate::lease::held::HeldLease;
use crate::lease::{LeaseStore, LeaseStoreError, LeaseUpdate};
use crate::metrics::Metrics;
use crate::window::{WindowSlot, WindowState};

/// Why a checkpoint was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// This worker no longer owns the shard's lease (stolen, expired or released); the
    /// checkpoint was not written. Stop processing the shard.
    #[error("lease for shard {shard} is lost: another worker owns it now; stop processing this shard")]
    LeaseLost {
        /// The shard.
        shard: String,
    },
    /// The sequence number is beyond the last record delivered to the processor.
    #[error("cannot checkpoint at {requested}: the last record delivered is {last_delivered:?}")]
    BeyondDelivered {
        /// What was asked for.
        requested: SequenceNumber,
        /// The last delivered record, if any.
        last_delivered: Option<SequenceNumber>,
    },
    /// The sequence number is behind the stored checkpoint (checkpoints only move forward).
    #[error("cannot checkpoint at {requested}: the shard is already checkpointed at {current}")]
    BehindCurrent {
        /// What was asked for.
        requested: SequenceNumber,
        /// The stored checkpoint.
        current: Checkpoint,
    },
    /// Nothing was delivered yet, so there is nothing to checkpoint.
    #[error("nothing has been delivered yet; there is nothing to checkpoint")]
    NothingDelivered,
    /// The lease table failed; the checkpoint may be retried.
    #[error(transparent)]
    Store(#[from] LeaseStoreError),
}

impl CheckpointError {
    /// Whether retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CheckpointError::Store(e) if e.is_retryable())
    }
}

/// Records how far a shard has been processed. Handed to the processor's callbacks.
///
/// Checkpoints are fenced: they are written only while this worker owns the lease (conditional
/// on owner and lease counter), and only forward.
pub trait Checkpointer: Send + Sync {
    /// Checkpoints at the last record delivered to the processor.
    fn checkpoint(&self) -> impl Future<Output = Result<(), CheckpointError>> + Send;

    /// Checkpoints at `sequence_number`, which must be a delivered record's and not behind the
    /// stored checkpoint.
    fn checkpoint_at(
        &self,
        sequence_number: &SequenceNumber,
    ) -> impl Future<Output = Result<(), CheckpointError>> + Send;
}

/// The checkpointer of one held lease.
#[derive(Debug)]
pub(crate) struct LeaseCheckpointer<S> {
    store: Arc<S>,
    held: Arc<HeldLease>,
    metrics: Metrics,
    last_delivered: Mutex<Option<SequenceNumber>>,
    policy: CheckpointPolicy,
    interval: Duration,
    coalesced: Mutex<Coalesced>,
    /// The shard's tumbling windows, when configured: the open window is stored with every
    /// checkpoint, as it was when the checkpoint was recorded.
    windows: Option<WindowSlot>,
}

/// What is recorded but not written yet.
#[derive(Debug)]
struct Coalesced {
    /// The checkpoint to write with the next write, with the open tumbling window as it was
    /// when the checkpoint was recorded.
    pending: Option<(SequenceNumber, Option<WindowState>)>,
    /// When the last write was attempted (or the checkpointer made).
    last_attempt: Instant,
}

impl<S: LeaseStore> LeaseCheckpointer<S> {
    pub(crate) fn new(
        store: Arc<S>,
        held: Arc<HeldLease>,
        metrics: Metrics,
        policy: CheckpointPolicy,
        interval: Duration,
    ) -> Self {
        let coalesced = Mutex::new(Coalesced { pending: None, last_attempt: Instant::now() });
        let last_delivered = Mutex::new(None);
        Self { store, held, metrics, last_delivered, policy, interval, coalesced, windows: None }
    }

    /// With tumbling windows: the checkpointer stores `windows`' open window with each
    /// checkpoint.
    pub(crate) fn with_windows(mut self, windows: WindowSlot) -> Self {
        self.windows = Some(windows);
        self
    }

    /// The shard's tumbling windows, when configured.
    pub(crate) fn windows(&self) -> Option<&WindowSlot> {
        self.windows.as_ref()
    }

    fn coalesced(&self) -> std::sync::MutexGuard<'_, Coalesced> {
        self.coalesced.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers a checkpoint at `seq` (every record up to it handled): written now, recorded
    /// for a later write, or dropped, as [`decide`] says for `trigger`.
    pub(crate) async fn offer(&self, seq: SequenceNumber, trigger: Trigger) -> Result<(), CheckpointError> {
        let since = self.coalesced().last_attempt.elapsed();
        match decide(self.policy, self.interval, trigger, since) {
            Decision::Ignore => Ok(()),
            Decision::Defer(_) => {
                self.record(seq);
                Ok(())
            }
            Decision::Write => {
                self.record(seq);
                self.flush().await
            }
        }
    }

    /// Writes what is pending, if anything, when the interval has passed (the deliverer's
    /// timer, for a shard that has gone quiet).
    pub(crate) async fn on_timer(&self) -> Result<(), CheckpointError> {
        let since = self.coalesced().last_attempt.elapsed();
        match decide(self.policy, self.interval, Trigger::Timer, since) {
            Decision::Write => self.flush().await,
            Decision::Defer(_) | Decision::Ignore => Ok(()),
        }
    }

    /// When the pending checkpoint is due, if one is pending.
    pub(crate) fn flush_due(&self) -> Option<Instant> {
        let c = self.coalesced();
        c.pending.as_ref().map(|_| c.last_attempt + self.interval)
    }

    /// Records `seq` as pending, with the open window as it is now (checkpoints only move
    /// forward: the later of the two stays; at the same position, the newer window).
    fn record(&self, seq: SequenceNumber) {
        let window = self.windows.as_ref().and_then(WindowSlot::snapshot);
        let mut c = self.coalesced();
        match &c.pending {
            Some((p, _)) => {
                // The earlier of the two will never be written on its own.
                self.metrics.checkpoints_coalesced.inc();
                if seq >= *p {
                    c.pending = Some((seq, window));
                }
            }
            None => c.pending = Some((seq, window)),
        }
    }

    /// Writes the pending checkpoint now, if there is one. A failed write (other than a lost
    /// lease or a checkpoint already passed) keeps it pending for the next attempt.
    pub(crate) async fn flush(&self) -> Result<(), CheckpointError> {
        let pending = {
            let mut c = self.coalesced();
            c.last_attempt = Instant::now();
            c.pending.take()
        };
        let Some((seq, window)) = pending else { return Ok(()) };
        let result = self.write(Checkpoint::At(seq.clone()), window.clone()).await;
        // Under the processor's policy the failed call's answer tells the processor instead.
        if let (Err(CheckpointError::Store(_)), CheckpointPolicy::Interval) = (&result, self.policy) {
            let mut c = self.coalesced();
            if c.pending.as_ref().is_none_or(|(p, _)| seq > *p) {
                c.pending = Some((seq, window));
            }
        }
        result
    }

    /// Called by the consumer before it delivers a batch ending at `seq`.
    pub(crate) fn delivered(&self, seq: SequenceNumber) {
        *self.last_delivered.lock().unwrap_or_else(PoisonError::into_inner) = Some(seq);
    }

    /// The shard checkpointed.
    pub(crate) fn shard_id(&self) -> &crate::shard::ShardId {
        &self.held.shard_id
    }

    /// Whether the lease is lost (nothing can be checkpointed any more).
    pub(crate) fn is_lost(&self) -> bool {
        self.held.is_lost()
    }

    pub(crate) fn last_delivered(&self) -> Option<SequenceNumber> {
        self.last_delivered.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Writes `checkpoint` with the tumbling window `window` (none: removed) conditionally, at
    /// once; shared by [`Self::flush`] and the consumer's own SHARD_END checkpoint.
    pub(crate) async fn write(
        &self,
        checkpoint: Checkpoint,
        window: Option<WindowState>,
    ) -> Result<(), CheckpointError> {
        let lost = || CheckpointError::LeaseLost { shard: self.held.shard_id.to_string() };
        if self.held.is_lost() {
            return Err(lost());
        }
        let mut lease = self.held.lock().await;
        if lease.checkpoint == checkpoint && lease.window.as_deref() == window.as_ref() {
            return Ok(());
        }
        if !lease.checkpoint.may_advance_to(&checkpoint) {
            return match checkpoint {
                Checkpoint::At(requested) => {
                    Err(CheckpointError::BehindCurrent { requested, current: lease.checkpoint.clone() })
                }
                // Sentinels other than SHARD_END are never written by the consumer; a
                // SHARD_END lease accepts nothing else, which `==` above already covered.
                _ => Ok(()),
            };
        }
        match self.store.checkpoint(&lease, &checkpoint, window.as_ref()).await {
            Ok(LeaseUpdate::Applied(updated)) => {
                *lease = updated;
                self.metrics.checkpoints.with_label_values(&["ok"]).inc();
                if checkpoint.is_shard_end() {
                    // Nothing recorded before the end is worth a write any more.
                    self.coalesced().pending = None;
                }
                Ok(())
            }
            Ok(LeaseUpdate::Lost) => {
                self.metrics.checkpoints.with_label_values(&["lease_lost"]).inc();
                self.held.mark_lost();
                Err(lost())
            }
            Err(e) => {
                self.metrics.checkpoints.with_label_values(&["error"]).inc();
                Err(CheckpointError::Store(e))
            }
        }
    }

    /// The stored checkpoint.
    pub(crate) async fn current(&self) -> Checkpoint {
        self.held.lock().await.checkpoint.clone()
    }

    /// A checkpoint the processor asked for: written at once under
    /// [`CheckpointPolicy::Processor`]; under [`CheckpointPolicy::Interval`] checked now (the
    /// lease is still held, the checkpoint does not move back) and coalesced.
    async fn requested(&self, seq: SequenceNumber) -> Result<(), CheckpointError> {
        if self.policy == CheckpointPolicy::Interval {
            if self.held.is_lost() {
                return Err(CheckpointError::LeaseLost { shard: self.held.shard_id.to_string() });
            }
            let current = self.current().await;
            if !current.may_advance_to(&Checkpoint::At(seq.clone())) {
                return Err(CheckpointError::BehindCurrent { requested: seq, current });
            }
        }
        self.offer(seq, Trigger::Requested).await
    }
}

impl<S: LeaseStore> Checkpointer for LeaseCheckpointer<S> {
    async fn checkpoint(&self) -> Result<(), CheckpointError> {
        let Some(seq) = self.last_delivered() else {
            return Err(CheckpointError::NothingDelivered);
        };
        self.requested(seq).await
    }

    async fn checkpoint_at(&self, sequence_number: &SequenceNumber) -> Result<(), CheckpointError> {
        let last = self.last_delivered();
        if last.as_ref().is_none_or(|l| sequence_number > l) {
            return Err(CheckpointError::BeyondDelivered { requested: sequence_number.clone(), last_delivered: last });
        }
        self.requested(sequence_number.clone()).await
    }
}
