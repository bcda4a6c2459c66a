//! The [`Checkpointer`] seam and the lease-backed implementation handed to processors.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Checkpoint, SequenceNumber};
use crate::lease::held::HeldLease;
use crate::lease::{LeaseStore, LeaseStoreError, LeaseUpdate};
use crate::metrics::Metrics;

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
}

impl<S: LeaseStore> LeaseCheckpointer<S> {
    pub(crate) fn new(store: Arc<S>, held: Arc<HeldLease>, metrics: Metrics) -> Self {
        Self { store, held, metrics, last_delivered: Mutex::new(None) }
    }

    /// Called by the consumer before it delivers a batch ending at `seq`.
    pub(crate) fn delivered(&self, seq: SequenceNumber) {
        *self.last_delivered.lock().unwrap_or_else(PoisonError::into_inner) = Some(seq);
    }

    pub(crate) fn last_delivered(&self) -> Option<SequenceNumber> {
        self.last_delivered.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Writes `checkpoint` conditionally; shared by the processor-facing calls and the
    /// consumer's own SHARD_END and shutdown checkpoints.
    pub(crate) async fn write(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        let lost = || CheckpointError::LeaseLost { shard: self.held.shard_id.to_string() };
        if self.held.is_lost() {
            return Err(lost());
        }
        let mut lease = self.held.lock().await;
        if lease.checkpoint == checkpoint {
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
        match self.store.checkpoint(&lease, &checkpoint).await {
            Ok(LeaseUpdate::Applied(updated)) => {
                *lease = updated;
                self.metrics.checkpoints.with_label_values(&["ok"]).inc();
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
}

impl<S: LeaseStore> Checkpointer for LeaseCheckpointer<S> {
    async fn checkpoint(&self) -> Result<(), CheckpointError> {
        let Some(seq) = self.last_delivered() else {
            return Err(CheckpointError::NothingDelivered);
        };
        self.write(Checkpoint::At(seq)).await
    }

    async fn checkpoint_at(&self, sequence_number: &SequenceNumber) -> Result<(), CheckpointError> {
        let last = self.last_delivered();
        if last.as_ref().is_none_or(|l| sequence_number > l) {
            return Err(CheckpointError::BeyondDelivered { requested: sequence_number.clone(), last_delivered: last });
        }
        self.write(Checkpoint::At(sequence_number.clone())).await
    }
}
