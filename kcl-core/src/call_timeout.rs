//! Time limits on the calls a worker makes to its lease store and stream source.
//!
//! A connection that goes silent (a partition that drops packets, a load balancer that stops
//! answering) makes a call wait for an answer that never comes. The worker stays safe (it
//! fences itself by its own clock), but the renewer, the taker or a shard's reader would wait
//! forever and never notice that the service is back. Every call therefore gets a limit: past
//! it, the call is dropped (the seams are cancellation safe) and counts as a transient failure,
//! which the caller retries as any other. A dropped write may still have been applied; every
//! write is conditional, so the next one finds out (as a lost lease, never as a double owner).

use std::future::Future;
use std::time::Duration;

use crate::checkpoint::Checkpoint;
use crate::lease::{Lease, LeaseKey, LeaseStore, LeaseStoreError, LeaseStoreErrorKind, LeaseUpdate, WorkerId};
use crate::shard::ShardId;
use crate::source::{
    RecordBatch, ShardDescription, ShardIterator, SourceError, SourceErrorKind, StartPosition, StreamSource,
};
use crate::window::WindowState;

/// Shard listings paginate (a hundred shards a page on DynamoDB), so they get this many
/// times the per-call limit.
const LISTING_FACTOR: u32 = 10;

/// A [`LeaseStore`] whose calls fail as [`LeaseStoreErrorKind::Transient`] past a limit.
#[derive(Debug)]
pub(crate) struct TimedStore<L> {
    inner: L,
    limit: Duration,
}

impl<L: LeaseStore> TimedStore<L> {
    pub(crate) fn new(inner: L, limit: Duration) -> Self {
        Self { inner, limit }
    }

    async fn limited<T>(
        &self,
        call: &'static str,
        fut: impl Future<Output = Result<T, LeaseStoreError>>,
    ) -> Result<T, LeaseStoreError> {
        match tokio::time::timeout(self.limit, fut).await {
            Ok(result) => result,
            Err(_) => Err(LeaseStoreError::new(
                LeaseStoreErrorKind::Transient,
                format!(
                    "lease table {call} got no answer within {:?} (lease_call_timeout); the connection may be cut",
                    self.limit
                ),
            )),
        }
    }
}

impl<L: LeaseStore> LeaseStore for TimedStore<L> {
    async fn list(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        self.limited("scan", self.inner.list()).await
    }

    async fn get(&self, key: &LeaseKey) -> Result<Option<Lease>, LeaseStoreError> {
        self.limited("read", self.inner.get(key)).await
    }

    async fn peek(&self, key: &LeaseKey) -> Result<Option<Lease>, LeaseStoreError> {
        self.limited("read", self.inner.peek(key)).await
    }

    async fn create_if_absent(&self, lease: Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        self.limited("create", self.inner.create_if_absent(lease)).await
    }

    async fn renew(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        self.limited("renewal", self.inner.renew(expected)).await
    }

    async fn take(&self, expected: &Lease, new_owner: &WorkerId) -> Result<LeaseUpdate, LeaseStoreError> {
        self.limited("take", self.inner.take(expected, new_owner)).await
    }

    async fn checkpoint(
        &self,
        expected: &Lease,
        checkpoint: &Checkpoint,
        window: Option<&WindowState>,
    ) -> Result<LeaseUpdate, LeaseStoreError> {
        self.limited("checkpoint", self.inner.checkpoint(expected, checkpoint, window)).await
    }

    async fn release(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        self.limited("release", self.inner.release(expected)).await
    }

    async fn request_handoff(
        &self,
        heartbeat: &Lease,
        from: &WorkerId,
        n: u32,
    ) -> Result<LeaseUpdate, LeaseStoreError> {
        self.limited("handoff request", self.inner.request_handoff(heartbeat, from, n)).await
    }

    async fn delete(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        self.limited("delete", self.inner.delete(expected)).await
    }
}

/// A [`StreamSource`] whose calls fail as [`SourceErrorKind::Transient`] past a limit (ten
/// times the limit for shard listings, which paginate).
#[derive(Debug)]
pub(crate) struct TimedSource<S> {
    inner: S,
    limit: Duration,
}

impl<S: StreamSource> TimedSource<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit }
    }

    async fn limited<T>(
        &self,
        call: &'static str,
        limit: Duration,
        fut: impl Future<Output = Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        match tokio::time::timeout(limit, fut).await {
            Ok(result) => result,
            Err(_) => Err(SourceError::new(
                SourceErrorKind::Transient,
                format!(
                    "stream {call} got no answer within {limit:?} (source_call_timeout {:?}); the connection may be \
                     cut",
                    self.limit
                ),
            )),
        }
    }
}

impl<S: StreamSource> StreamSource for TimedSource<S> {
    type Record = S::Record;

    fn stream_of(&self, shard: &ShardId) -> Option<&str> {
        self.inner.stream_of(shard)
    }

    fn consumes(&self, shard: &ShardId) -> bool {
        self.inner.consumes(shard)
    }

    async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError> {
        self.limited("shard listing", self.limit * LISTING_FACTOR, self.inner.list_shards()).await
    }

    async fn child_shards(&self, parent: &ShardId) -> Result<Vec<ShardDescription>, SourceError> {
        self.limited("child shard listing", self.limit * LISTING_FACTOR, self.inner.child_shards(parent)).await
    }

    async fn shard_iterator(&self, shard: &ShardId, position: &StartPosition) -> Result<ShardIterator, SourceError> {
        self.limited("iterator request", self.limit, self.inner.shard_iterator(shard, position)).await
    }

    async fn read(&self, iterator: &ShardIterator, limit: usize) -> Result<RecordBatch<S::Record>, SourceError> {
        self.limited("read", self.limit, self.inner.read(iterator, limit)).await
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::testing::memory_store::MemoryLeaseStore;

    /// A store whose every call waits forever, as over a silent connection.
    struct Silent;

    impl LeaseStore for Silent {
        async fn list(&self) -> Result<Vec<Lease>, LeaseStoreError> {
            std::future::pending().await
        }
        async fn get(&self, _: &LeaseKey) -> Result<Option<Lease>, LeaseStoreError> {
            std::future::pending().await
        }
        async fn create_if_absent(&self, _: Lease) -> Result<LeaseUpdate, LeaseStoreError> {
            std::future::pending().await
        }
        async fn renew(&self, _: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
            std::future::pending().await
        }
        async fn take(&self, _: &Lease, _: &WorkerId) -> Result<LeaseUpdate, LeaseStoreError> {
            std::future::pending().await
        }
        async fn checkpoint(
            &self,
            _: &Lease,
            _: &Checkpoint,
            _: Option<&WindowState>,
        ) -> Result<LeaseUpdate, LeaseStoreError> {
            std::future::pending().await
        }
        async fn release(&self, _: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
            std::future::pending().await
        }
        async fn request_handoff(&self, _: &Lease, _: &WorkerId, _: u32) -> Result<LeaseUpdate, LeaseStoreError> {
            std::future::pending().await
        }
        async fn delete(&self, _: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_lease_table_call_fails_as_transient_at_the_limit() {
        let store = TimedStore::new(Silent, Duration::from_secs(2));
        let started = tokio::time::Instant::now();
        let err = store.renew(&Lease::new_for_shard(&ShardId::new("s"), Checkpoint::TrimHorizon, Vec::new())).await;
        let err = err.err().unwrap_or_else(|| panic!("a silent call cannot succeed"));
        assert_eq!(err.kind(), LeaseStoreErrorKind::Transient);
        assert!(err.is_retryable());
        assert!(err.to_string().contains("lease_call_timeout"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn answered_calls_pass_through() {
        let store = TimedStore::new(MemoryLeaseStore::new(), Duration::from_secs(2));
        let lease = Lease::new_for_shard(&ShardId::new("s"), Checkpoint::TrimHorizon, Vec::new());
        let created = store.create_if_absent(lease).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(created.applied().is_some());
        assert_eq!(store.list().await.unwrap_or_else(|e| panic!("{e}")).len(), 1);
    }
}
