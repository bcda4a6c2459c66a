//! Where the deliverer reports progress: the shard's own checkpointer, or a lane's (which
//! moves the shard's checkpoint only as far as every lane has got).

use std::future::Future;

use crate::checkpoint::policy::Trigger;
use crate::checkpoint::{CheckpointError, Checkpointer, LeaseCheckpointer, SequenceNumber};
use crate::lease::LeaseStore;
use crate::window::WindowSlot;

/// What delivery needs of a checkpointer besides the processor's [`Checkpointer`].
pub(super) trait Progress: Checkpointer {
    /// A part of a batch ending at `seq` is about to be delivered.
    fn delivered(&self, seq: SequenceNumber);

    /// Every record up to `seq` (of this lane) is handled: offer a checkpoint, which the
    /// policy writes now, coalesces or drops.
    fn offer(&self, seq: SequenceNumber, trigger: Trigger) -> impl Future<Output = Result<(), CheckpointError>> + Send;

    /// The shard's tumbling windows, when configured (never with lanes).
    fn windows(&self) -> Option<&WindowSlot> {
        None
    }
}

impl<L: LeaseStore> Progress for LeaseCheckpointer<L> {
    fn delivered(&self, seq: SequenceNumber) {
        LeaseCheckpointer::delivered(self, seq);
    }

    fn offer(&self, seq: SequenceNumber, trigger: Trigger) -> impl Future<Output = Result<(), CheckpointError>> + Send {
        LeaseCheckpointer::offer(self, seq, trigger)
    }

    fn windows(&self) -> Option<&WindowSlot> {
        LeaseCheckpointer::windows(self)
    }
}
