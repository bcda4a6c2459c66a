//! What the in-memory lease store records: the operations, the history log and call statistics.

use tokio::time::Instant;

use crate::checkpoint::Checkpoint;
use crate::lease::{LeaseKey, WorkerId};

/// A mutation of the lease table, as recorded in the history log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseOp {
    /// [`LeaseStore::create_if_absent`](crate::lease::LeaseStore::create_if_absent).
    Create,
    /// [`LeaseStore::renew`](crate::lease::LeaseStore::renew).
    Renew,
    /// [`LeaseStore::take`](crate::lease::LeaseStore::take).
    Take,
    /// [`LeaseStore::checkpoint`](crate::lease::LeaseStore::checkpoint).
    Checkpoint,
    /// [`LeaseStore::release`](crate::lease::LeaseStore::release).
    Release,
    /// [`LeaseStore::delete`](crate::lease::LeaseStore::delete).
    Delete,
    /// [`LeaseStore::request_handoff`](crate::lease::LeaseStore::request_handoff): a request
    /// added to a heartbeat (its counter unchanged).
    RequestHandoff,
}

/// Any call of the store, reads included: what fault injection and statistics select on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseOpKind {
    /// [`LeaseStore::list`](crate::lease::LeaseStore::list).
    List,
    /// [`LeaseStore::get`](crate::lease::LeaseStore::get).
    Get,
    /// [`LeaseStore::create_if_absent`](crate::lease::LeaseStore::create_if_absent).
    Create,
    /// [`LeaseStore::renew`](crate::lease::LeaseStore::renew).
    Renew,
    /// [`LeaseStore::take`](crate::lease::LeaseStore::take).
    Take,
    /// [`LeaseStore::checkpoint`](crate::lease::LeaseStore::checkpoint).
    Checkpoint,
    /// [`LeaseStore::release`](crate::lease::LeaseStore::release).
    Release,
    /// [`LeaseStore::delete`](crate::lease::LeaseStore::delete).
    Delete,
    /// [`LeaseStore::request_handoff`](crate::lease::LeaseStore::request_handoff).
    RequestHandoff,
}

impl LeaseOpKind {
    /// Every kind of call, in declaration order.
    pub const ALL: [LeaseOpKind; 9] = [
        LeaseOpKind::List,
        LeaseOpKind::Get,
        LeaseOpKind::Create,
        LeaseOpKind::Renew,
        LeaseOpKind::Take,
        LeaseOpKind::Checkpoint,
        LeaseOpKind::Release,
        LeaseOpKind::Delete,
        LeaseOpKind::RequestHandoff,
    ];

    /// True for the calls that change the table.
    pub fn is_write(self) -> bool {
        !matches!(self, LeaseOpKind::List | LeaseOpKind::Get)
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

impl From<LeaseOp> for LeaseOpKind {
    fn from(op: LeaseOp) -> Self {
        match op {
            LeaseOp::Create => LeaseOpKind::Create,
            LeaseOp::Renew => LeaseOpKind::Renew,
            LeaseOp::Take => LeaseOpKind::Take,
            LeaseOp::Checkpoint => LeaseOpKind::Checkpoint,
            LeaseOp::Release => LeaseOpKind::Release,
            LeaseOp::Delete => LeaseOpKind::Delete,
            LeaseOp::RequestHandoff => LeaseOpKind::RequestHandoff,
        }
    }
}

/// One applied mutation, in the order the store applied them.
///
/// Writes that were applied but reported as failed (see
/// [`MemoryLeaseStore::set_ambiguous_write_rate`](super::MemoryLeaseStore::set_ambiguous_write_rate))
/// are recorded too: they did happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseEvent {
    /// When the store applied it (tokio's clock, so paused time applies).
    pub at: Instant,
    /// What was done.
    pub op: LeaseOp,
    /// The item written.
    pub key: LeaseKey,
    /// The owner before the write (`None` for a create).
    pub owner_before: Option<WorkerId>,
    /// The owner after the write (`None` for a delete).
    pub owner_after: Option<WorkerId>,
    /// The counter after the write (for a delete: the counter of the deleted item).
    pub counter_after: u64,
    /// The checkpoint after the write (for a delete: the checkpoint of the deleted item).
    pub checkpoint_after: Checkpoint,
}

/// Which applied mutations go into the history log.
///
/// Renewals dominate the traffic of a lease table (every heartbeat, and with per-lease
/// renewals every held lease, every lease duration / 3), so the default leaves them out; a benchmark with thousands of leases can turn history off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HistoryMode {
    /// Record nothing.
    Off,
    /// Record every applied mutation except renewals (the default).
    #[default]
    WithoutRenewals,
    /// Record every applied mutation, renewals included.
    Full,
}

impl HistoryMode {
    pub(super) fn records(self, op: LeaseOp) -> bool {
        match self {
            HistoryMode::Off => false,
            HistoryMode::WithoutRenewals => op != LeaseOp::Renew,
            HistoryMode::Full => true,
        }
    }
}

/// How the calls of one kind ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallCounts {
    /// Calls that succeeded: reads answered, writes applied and reported as applied.
    pub ok: u64,
    /// Writes rejected by their condition ([`LeaseUpdate::Lost`](crate::lease::LeaseUpdate::Lost)).
    pub lost: u64,
    /// Calls that failed with an injected error and changed nothing.
    pub failed: u64,
    /// Writes that were applied but reported an error (timeout after commit).
    pub ambiguous: u64,
}

impl CallCounts {
    /// Every call counted here.
    pub fn calls(&self) -> u64 {
        self.ok + self.lost + self.failed + self.ambiguous
    }

    /// Writes that changed the table, whatever was reported.
    pub fn applied(&self) -> u64 {
        self.ok + self.ambiguous
    }

    fn add(&mut self, other: &CallCounts) {
        self.ok += other.ok;
        self.lost += other.lost;
        self.failed += other.failed;
        self.ambiguous += other.ambiguous;
    }
}

/// Counts of every call of a [`MemoryLeaseStore`](super::MemoryLeaseStore), by kind.
/// Counted whatever the [`HistoryMode`]; the synchronous peeks are not counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryStoreStats {
    counts: [CallCounts; LeaseOpKind::ALL.len()],
}

impl MemoryStoreStats {
    /// The counts of one kind of call.
    pub fn of(&self, kind: impl Into<LeaseOpKind>) -> CallCounts {
        self.counts[kind.into().index()]
    }

    /// Writes of this kind rejected by their condition.
    pub fn lost(&self, kind: impl Into<LeaseOpKind>) -> u64 {
        self.of(kind).lost
    }

    /// The counts of all calls together.
    pub fn total(&self) -> CallCounts {
        let mut sum = CallCounts::default();
        for counts in &self.counts {
            sum.add(counts);
        }
        sum
    }

    pub(super) fn count(&mut self, kind: LeaseOpKind) -> &mut CallCounts {
        &mut self.counts[kind.index()]
    }
}
