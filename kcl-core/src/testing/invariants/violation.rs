//! [`Violation`]: one broken promise, with what is needed to find it in the logs.

use std::fmt;
use std::time::Duration;

use crate::checkpoint::{Checkpoint, SequenceNumber};
use crate::lease::{LeaseKey, WorkerId};
use crate::shard::ShardId;

/// One broken promise. Times (`at`, `…_at`) are offsets from [`Report::origin`], the earliest
/// instant observed.
///
/// [`Report::origin`]: super::Report::origin
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A retained record was never processed.
    Lost {
        /// The record's shard.
        shard: ShardId,
        /// The record's sequence number.
        sequence_number: SequenceNumber,
        /// The item key.
        key: String,
        /// The per-item version.
        version: u64,
    },
    /// A delivered record was never written.
    NotWritten {
        /// The delivering worker.
        worker: WorkerId,
        /// The shard named by the batch.
        shard: ShardId,
        /// The record's sequence number.
        sequence_number: SequenceNumber,
        /// When it was delivered.
        at: Duration,
    },
    /// Within one session of a worker on a shard, a delivery did not come after the previous
    /// one, and the previous batch had not failed.
    ShardOrder {
        /// The delivering worker.
        worker: WorkerId,
        /// The shard.
        shard: ShardId,
        /// The previous delivery's sequence number.
        previous: SequenceNumber,
        /// This delivery's sequence number, not greater than `previous`.
        sequence_number: SequenceNumber,
        /// When it was delivered.
        at: Duration,
    },
    /// A version of an item was processed before an earlier, retained version of it.
    ItemOrder {
        /// The item key.
        key: String,
        /// The version processed too early.
        version: u64,
        /// Its shard.
        shard: ShardId,
        /// Its sequence number.
        sequence_number: SequenceNumber,
        /// When it was first processed.
        at: Duration,
        /// The earlier version, first processed only afterwards.
        earlier_version: u64,
        /// The earlier version's shard.
        earlier_shard: ShardId,
        /// The earlier version's sequence number.
        earlier_sequence_number: SequenceNumber,
        /// When the earlier version was first processed.
        earlier_at: Duration,
    },
    /// A child shard's record was processed before a parent's retained record.
    ChildBeforeParent {
        /// The child shard.
        child: ShardId,
        /// The child's first processed record.
        child_sequence_number: SequenceNumber,
        /// When it was processed.
        child_at: Duration,
        /// The parent shard.
        parent: ShardId,
        /// The parent's record first processed after it.
        parent_sequence_number: SequenceNumber,
        /// When that record was first processed.
        parent_at: Duration,
    },
    /// A child shard's record was processed before its parent's lease reached `SHARD_END`.
    ChildBeforeParentEnd {
        /// The child shard.
        child: ShardId,
        /// The child's first processed record.
        child_sequence_number: SequenceNumber,
        /// When it was processed.
        child_at: Duration,
        /// The parent shard.
        parent: ShardId,
        /// When the parent's lease was checkpointed at `SHARD_END`; `None`: never.
        parent_end_at: Option<Duration>,
    },
    /// A worker delivered a shard whose lease it had not owned for a whole lease duration.
    TwoOwners {
        /// The delivering worker.
        worker: WorkerId,
        /// The shard.
        shard: ShardId,
        /// The first record of the delivery.
        sequence_number: SequenceNumber,
        /// When it was delivered.
        at: Duration,
        /// The lease's owner at that time, per the lease history.
        owner: Option<WorkerId>,
    },
    /// A lease's checkpoint moved backwards (or away from `SHARD_END`).
    CheckpointBackwards {
        /// The lease.
        key: LeaseKey,
        /// The checkpoint before.
        from: Checkpoint,
        /// The checkpoint after.
        to: Checkpoint,
        /// When it was written.
        at: Duration,
    },
    /// A checkpoint was written on a lease by someone other than its owner (or on an unowned
    /// lease).
    CheckpointNotFenced {
        /// The lease.
        key: LeaseKey,
        /// The owner before the write.
        owner_before: Option<WorkerId>,
        /// The owner after the write.
        owner_after: Option<WorkerId>,
        /// The checkpoint written.
        checkpoint: Checkpoint,
        /// When it was written.
        at: Duration,
    },
    /// A checkpoint passed the highest record its writer had processed for the shard.
    CheckpointBeyondDelivered {
        /// The lease.
        key: LeaseKey,
        /// The owner that wrote it.
        worker: WorkerId,
        /// The checkpoint written.
        checkpoint: SequenceNumber,
        /// The highest record `worker` had processed for the shard by then.
        highest_processed: Option<SequenceNumber>,
        /// When it was written.
        at: Duration,
    },
    /// A record was processed again although nothing moved the lease or failed in between.
    RedeliveryWithoutMove {
        /// The shard.
        shard: ShardId,
        /// The record.
        sequence_number: SequenceNumber,
        /// The worker that processed it before.
        first_worker: WorkerId,
        /// When it was processed before.
        first_at: Duration,
        /// The worker that processed it again.
        worker: WorkerId,
        /// When it was processed again.
        at: Duration,
    },
    /// A lease was checkpointed past a record that no returned call had delivered yet (with
    /// lanes: past a record of an unfinished lane).
    CheckpointPastUnfinished {
        /// The lease key (the shard).
        key: LeaseKey,
        /// The checkpoint written.
        checkpoint: SequenceNumber,
        /// The first record up to it not delivered by then.
        unfinished: SequenceNumber,
        /// That record's item key.
        item: String,
        /// When the checkpoint was written.
        at: Duration,
    },
    /// A record the event filter drops was delivered.
    FilteredDelivered {
        /// The shard.
        shard: ShardId,
        /// The record.
        sequence_number: SequenceNumber,
        /// The worker that delivered it.
        worker: WorkerId,
        /// When.
        at: Duration,
    },
}

impl Violation {
    /// The rule broken, as a short name: the variant's name.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::Lost { .. } => "Lost",
            Violation::NotWritten { .. } => "NotWritten",
            Violation::ShardOrder { .. } => "ShardOrder",
            Violation::ItemOrder { .. } => "ItemOrder",
            Violation::ChildBeforeParent { .. } => "ChildBeforeParent",
            Violation::ChildBeforeParentEnd { .. } => "ChildBeforeParentEnd",
            Violation::TwoOwners { .. } => "TwoOwners",
            Violation::CheckpointBackwards { .. } => "CheckpointBackwards",
            Violation::CheckpointNotFenced { .. } => "CheckpointNotFenced",
            Violation::CheckpointBeyondDelivered { .. } => "CheckpointBeyondDelivered",
            Violation::RedeliveryWithoutMove { .. } => "RedeliveryWithoutMove",
            Violation::CheckpointPastUnfinished { .. } => "CheckpointPastUnfinished",
            Violation::FilteredDelivered { .. } => "FilteredDelivered",
        }
    }
}

/// Formats an optional value, `none` when absent.
struct Opt<'a, T>(&'a Option<T>);

impl<T: fmt::Display> fmt::Display for Opt<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("none"),
        }
    }
}

/// Formats an offset from the origin as `t+1.5s`.
struct T(Duration);

impl fmt::Display for T {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{:?}", self.0)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost { shard, sequence_number, key, version } => write!(
                f,
                "Lost: record {sequence_number} of shard {shard} (key {key:?} v{version}) was retained but never processed"
            ),
            Violation::NotWritten { worker, shard, sequence_number, at } => write!(
                f,
                "NotWritten: worker {worker} was delivered record {sequence_number} of shard {shard} at {} but it was never written",
                T(*at)
            ),
            Violation::ShardOrder { worker, shard, previous, sequence_number, at } => write!(
                f,
                "ShardOrder: worker {worker} was delivered {sequence_number} of shard {shard} at {} after {previous} in the same session, without a failed batch in between",
                T(*at)
            ),
            Violation::ItemOrder {
                key,
                version,
                shard,
                sequence_number,
                at,
                earlier_version,
                earlier_shard,
                earlier_sequence_number,
                earlier_at,
            } => write!(
                f,
                "ItemOrder: key {key:?} v{version} ({shard} {sequence_number}) was processed at {} before v{earlier_version} ({earlier_shard} {earlier_sequence_number}), first processed at {}",
                T(*at),
                T(*earlier_at)
            ),
            Violation::ChildBeforeParent {
                child,
                child_sequence_number,
                child_at,
                parent,
                parent_sequence_number,
                parent_at,
            } => write!(
                f,
                "ChildBeforeParent: child shard {child} record {child_sequence_number} was processed at {} before parent shard {parent} record {parent_sequence_number} (first processed at {})",
                T(*child_at),
                T(*parent_at)
            ),
            Violation::ChildBeforeParentEnd { child, child_sequence_number, child_at, parent, parent_end_at } => {
                write!(
                    f,
                    "ChildBeforeParentEnd: child shard {child} record {child_sequence_number} was processed at {} but parent shard {parent}'s lease ",
                    T(*child_at)
                )?;
                match parent_end_at {
                    Some(end) => write!(f, "reached SHARD_END only at {}", T(*end)),
                    None => f.write_str("never reached SHARD_END"),
                }
            }
            Violation::TwoOwners { worker, shard, sequence_number, at, owner } => write!(
                f,
                "TwoOwners: worker {worker} delivered shard {shard} from {sequence_number} at {} without owning its lease within the lease duration before (owner then: {})",
                T(*at),
                Opt(owner)
            ),
            Violation::CheckpointBackwards { key, from, to, at } => {
                write!(f, "CheckpointBackwards: lease {key} moved from {from} to {to} at {}", T(*at))
            }
            Violation::CheckpointNotFenced { key, owner_before, owner_after, checkpoint, at } => write!(
                f,
                "CheckpointNotFenced: lease {key} was checkpointed at {checkpoint} at {} with owner {} before and {} after",
                T(*at),
                Opt(owner_before),
                Opt(owner_after)
            ),
            Violation::CheckpointBeyondDelivered { key, worker, checkpoint, highest_processed, at } => write!(
                f,
                "CheckpointBeyondDelivered: worker {worker} checkpointed lease {key} at {checkpoint} at {} but had processed only up to {}",
                T(*at),
                Opt(highest_processed)
            ),
            Violation::RedeliveryWithoutMove { shard, sequence_number, first_worker, first_at, worker, at } => write!(
                f,
                "RedeliveryWithoutMove: record {sequence_number} of shard {shard} was processed by {first_worker} at {} and again by {worker} at {} with no lease move, failure or shutdown in between",
                T(*first_at),
                T(*at)
            ),
            Violation::CheckpointPastUnfinished { key, checkpoint, unfinished, item, at } => write!(
                f,
                "CheckpointPastUnfinished: lease {key} checkpointed at {checkpoint} at {} although record {unfinished} (item {item}) was not delivered by a returned call yet",
                T(*at)
            ),
            Violation::FilteredDelivered { shard, sequence_number, worker, at } => write!(
                f,
                "FilteredDelivered: record {sequence_number} of shard {shard} is dropped by the filter but {worker} delivered it at {}",
                T(*at)
            ),
        }
    }
}
