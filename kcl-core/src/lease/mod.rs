//! Leases: one item per shard in the lease table, owned by at most one worker at a time.
//!
//! [`LeaseStore`] is the seam to the table. Every mutation is conditional on the lease counter
//! (and owner) the caller last saw; a lost race is data ([`LeaseUpdate::Lost`]), not an error.
//! The coordinator (renewer, taker, balancer) lives in this module too, but is internal.

pub(crate) mod balance;
pub(crate) mod coordinator;
pub(crate) mod handover;
pub(crate) mod held;
mod store;

pub use store::{LeaseStore, LeaseStoreError, LeaseStoreErrorKind, LeaseUpdate};

use std::fmt;
use std::sync::Arc;

use crate::checkpoint::Checkpoint;
use crate::shard::ShardId;
use crate::window::WindowState;

/// Identifies a worker: the value written as a lease's owner.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(Arc<str>);

impl WorkerId {
    /// Wraps a worker id.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WorkerId({})", self.0)
    }
}

/// The key of a lease item: a shard id, or a worker's heartbeat.
///
/// Besides one lease per shard, each running worker keeps one *heartbeat* item in the table
/// (key [`LeaseKey::HEARTBEAT_PREFIX`] + worker id + incarnation). Workers watch each other's
/// heartbeats closely, which lets them take a dead worker's leases about one lease duration
/// after it died, while each worker scans the whole table only once per lease duration.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseKey(Arc<str>);

impl LeaseKey {
    /// Prefix of heartbeat keys. Shard ids never start with it.
    pub const HEARTBEAT_PREFIX: &'static str = "__kcl_worker__#";

    /// The key of a shard's lease: the shard id itself (as in Java KCL).
    pub fn for_shard(shard: &ShardId) -> Self {
        Self(Arc::from(shard.as_str()))
    }

    /// The key of a worker's heartbeat for one run (incarnation) of that worker.
    pub fn heartbeat(worker: &WorkerId, incarnation: u64) -> Self {
        Self(Arc::from(format!("{}{worker}#{incarnation:016x}", Self::HEARTBEAT_PREFIX)))
    }

    /// Wraps a raw key read from a store.
    pub fn from_raw(raw: impl AsRef<str>) -> Self {
        Self(Arc::from(raw.as_ref()))
    }

    /// True for heartbeat items.
    pub fn is_heartbeat(&self) -> bool {
        self.0.starts_with(Self::HEARTBEAT_PREFIX)
    }

    /// The shard this lease is for, unless it is a heartbeat.
    pub fn shard_id(&self) -> Option<ShardId> {
        (!self.is_heartbeat()).then(|| ShardId::new(&*self.0))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseKey({})", self.0)
    }
}

/// One lease item, as last read from or written to the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The shard id (or heartbeat key).
    pub key: LeaseKey,
    /// The worker that owns it; `None` when unowned.
    pub owner: Option<WorkerId>,
    /// Bumped by every renew, take, checkpoint and release: the fencing value.
    pub counter: u64,
    /// How far the shard has been processed.
    pub checkpoint: Checkpoint,
    /// A checkpoint written by a two-phase commit and not finished (Java KCL); kept as read.
    pub pending_checkpoint: Option<Checkpoint>,
    /// The shard's parents (a set; DynamoDB Streams has at most one).
    pub parent_shard_ids: Vec<ShardId>,
    /// The shard's children, when known.
    pub child_shard_ids: Vec<ShardId>,
    /// Owner changes since the last checkpoint.
    pub owner_switches_since_checkpoint: u64,
    /// On a heartbeat: how many leases other workers asked this worker to hand over, one
    /// request per asking worker (see [`LeaseStore::request_handoff`]). Always empty on a
    /// shard lease.
    pub handoff_requests: Vec<HandoffRequest>,
    /// The open tumbling window and its state, stored with the checkpoint (see
    /// [`crate::window`]); `None` without tumbling windows. Boxed: most leases have none.
    pub window: Option<Box<WindowState>>,
}

/// Another worker's request, on a heartbeat, for some of its owner's leases.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct HandoffRequest {
    /// The worker that asks.
    pub from: WorkerId,
    /// How many leases it asks for (the owner picks which).
    pub leases: u32,
}

impl HandoffRequest {
    /// A request from `from` for `leases` leases.
    pub fn new(from: WorkerId, leases: u32) -> Self {
        Self { from, leases }
    }
}

impl Lease {
    /// A new, unowned lease for `shard` starting at `checkpoint`.
    pub fn new_for_shard(shard: &ShardId, checkpoint: Checkpoint, parents: Vec<ShardId>) -> Self {
        Self {
            key: LeaseKey::for_shard(shard),
            owner: None,
            counter: 0,
            checkpoint,
            pending_checkpoint: None,
            parent_shard_ids: parents,
            child_shard_ids: Vec::new(),
            owner_switches_since_checkpoint: 0,
            handoff_requests: Vec::new(),
            window: None,
        }
    }

    /// True when `worker` owns this lease.
    pub fn is_owned_by(&self, worker: &WorkerId) -> bool {
        self.owner.as_ref() == Some(worker)
    }
}
