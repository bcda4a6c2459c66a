//! Shards: ids, lineage rules (which leases to create, when a child may start, which finished
//! leases to delete) and the sync task that keeps the lease table in step with the stream.

pub(crate) mod lineage;
pub(crate) mod sync;

use std::fmt;
use std::sync::Arc;

/// A shard's id, as the stream names it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(Arc<str>);

impl ShardId {
    /// Wraps a shard id.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(Arc::from(id.as_ref()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShardId({})", self.0)
    }
}

impl From<&str> for ShardId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}
