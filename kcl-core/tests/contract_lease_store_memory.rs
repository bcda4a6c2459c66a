//! The lease store contract, run against the in-memory lease store.

use kcl_core::testing::contract::lease_store;
use kcl_core::testing::memory_store::{HistoryMode, MemoryLeaseStore};

#[tokio::test]
async fn memory_lease_store_passes_the_contract() {
    lease_store::run_all(|| async { MemoryLeaseStore::new() }).await;
}

#[tokio::test]
async fn memory_lease_store_passes_the_contract_with_full_history() {
    lease_store::run_all(|| async { MemoryLeaseStore::new().with_full_history() }).await;
}

#[tokio::test]
async fn memory_lease_store_passes_the_contract_without_history() {
    lease_store::run_all(|| async { MemoryLeaseStore::new().with_history(HistoryMode::Off) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_lease_store_passes_the_contract_on_a_multi_thread_runtime() {
    lease_store::run_all(|| async { MemoryLeaseStore::new() }).await;
}

/// The contract has teeth: stores with one plausible bug each (built on the in-memory store)
/// fail the check that covers the bug, and one harmless deviation passes.
mod broken_stores {
    use std::future::Future;

    use kcl_core::testing::contract::lease_store;
    use kcl_core::testing::memory_store::MemoryLeaseStore;
    use kcl_core::{Checkpoint, Lease, LeaseKey, LeaseStore, LeaseStoreError, LeaseUpdate, WindowState, WorkerId};

    /// One bug of a lease table adapter.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Bug {
        /// Conditions check only the counter.
        IgnoresOwner,
        /// Takes by the current owner count an owner switch.
        AlwaysCountsSwitch,
        /// Checkpoints do not reset the owner switches.
        KeepsSwitchesOnCheckpoint,
        /// Only the first page of a scan is returned.
        FirstPageOnly,
        /// Counters go through an f64.
        FloatCounters,
        /// Release writes an empty owner instead of removing it.
        EmptyOwner,
        /// Renew returns the caller's copy bumped, not the stored item.
        ReturnsCallerCopy,
        /// A renew of a missing item creates it (condition on counter forgotten).
        UpsertsMissing,
        /// Parent ids come back in another order: harmless, they are a set.
        ReordersParents,
        /// A handoff request bumps the heartbeat's counter (its owner's renewal then fails).
        HandoffRequestBumpsCounter,
        /// `peek` keeps returning the first version it read (a stale replica that never
        /// catches up).
        PeekNeverCatchesUp,
        /// A take drops the tumbling window (the next owner would start it over).
        TakeDropsWindow,
    }

    #[derive(Clone, Debug)]
    struct Broken {
        inner: MemoryLeaseStore,
        bug: Bug,
        /// What `peek` returned first, by key (for [`Bug::PeekNeverCatchesUp`]).
        first_peek: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<LeaseKey, Option<Lease>>>>,
    }

    impl Broken {
        fn fix(&self, mut lease: Lease) -> Lease {
            if self.bug == Bug::ReordersParents {
                lease.parent_shard_ids.reverse();
            }
            lease
        }

        fn fix_update(&self, update: LeaseUpdate) -> LeaseUpdate {
            match update {
                LeaseUpdate::Applied(l) => LeaseUpdate::Applied(self.fix(l)),
                LeaseUpdate::Lost => LeaseUpdate::Lost,
            }
        }

        fn as_stored(&self, expected: &Lease) -> Lease {
            let mut expected = expected.clone();
            if self.bug == Bug::IgnoresOwner
                && let Some(stored) = self.inner.get_now(&expected.key)
            {
                expected.owner = stored.owner;
            }
            expected
        }
    }

    impl LeaseStore for Broken {
        async fn list(&self) -> Result<Vec<Lease>, LeaseStoreError> {
            let mut all: Vec<Lease> = self.inner.list().await?.into_iter().map(|l| self.fix(l)).collect();
            if self.bug == Bug::FirstPageOnly {
                all.truncate(200);
            }
            Ok(all)
        }

        async fn get(&self, key: &LeaseKey) -> Result<Option<Lease>, LeaseStoreError> {
            Ok(self.inner.get(key).await?.map(|l| self.fix(l)))
        }

        async fn peek(&self, key: &LeaseKey) -> Result<Option<Lease>, LeaseStoreError> {
            let now = self.get(key).await?;
            if self.bug != Bug::PeekNeverCatchesUp {
                return Ok(now);
            }
            let mut first = self.first_peek.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Ok(first.entry(key.clone()).or_insert(now).clone())
        }

        async fn create_if_absent(&self, mut lease: Lease) -> Result<LeaseUpdate, LeaseStoreError> {
            if self.bug == Bug::FloatCounters {
                lease.counter = lease.counter as f64 as u64;
            }
            self.inner.create_if_absent(lease).await
        }

        async fn renew(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
            if self.bug == Bug::UpsertsMissing && self.inner.get_now(&expected.key).is_none() {
                self.inner.seed(Lease { counter: expected.counter + 1, ..expected.clone() });
            }
            let update = self.inner.renew(&self.as_stored(expected)).await?;
            if self.bug == Bug::ReturnsCallerCopy && update != LeaseUpdate::Lost {
                return Ok(LeaseUpdate::Applied(Lease { counter: expected.counter + 1, ..expected.clone() }));
            }
            Ok(self.fix_update(update))
        }

        async fn take(&self, expected: &Lease, new_owner: &WorkerId) -> Result<LeaseUpdate, LeaseStoreError> {
            let update = self.inner.take(&self.as_stored(expected), new_owner).await?;
            match update {
                LeaseUpdate::Applied(mut l) if self.bug == Bug::AlwaysCountsSwitch && expected.owner == l.owner => {
                    l.owner_switches_since_checkpoint += 1;
                    self.inner.seed(l.clone());
                    Ok(LeaseUpdate::Applied(l))
                }
                LeaseUpdate::Applied(mut l) if self.bug == Bug::TakeDropsWindow => {
                    l.window = None;
                    self.inner.seed(l.clone());
                    Ok(LeaseUpdate::Applied(l))
                }
                other => Ok(self.fix_update(other)),
            }
        }

        async fn checkpoint(
            &self,
            expected: &Lease,
            checkpoint: &Checkpoint,
            window: Option<&WindowState>,
        ) -> Result<LeaseUpdate, LeaseStoreError> {
            let update = self.inner.checkpoint(&self.as_stored(expected), checkpoint, window).await?;
            match update {
                LeaseUpdate::Applied(mut l) if self.bug == Bug::KeepsSwitchesOnCheckpoint => {
                    l.owner_switches_since_checkpoint = expected.owner_switches_since_checkpoint;
                    self.inner.seed(l.clone());
                    Ok(LeaseUpdate::Applied(l))
                }
                other => Ok(self.fix_update(other)),
            }
        }

        async fn release(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
            let update = self.inner.release(&self.as_stored(expected)).await?;
            match update {
                LeaseUpdate::Applied(mut l) if self.bug == Bug::EmptyOwner => {
                    l.owner = Some(WorkerId::new(""));
                    self.inner.seed(l.clone());
                    Ok(LeaseUpdate::Applied(l))
                }
                other => Ok(self.fix_update(other)),
            }
        }

        async fn request_handoff(
            &self,
            heartbeat: &Lease,
            from: &WorkerId,
            n: u32,
        ) -> Result<LeaseUpdate, LeaseStoreError> {
            let update = self.inner.request_handoff(&self.as_stored(heartbeat), from, n).await?;
            match update {
                LeaseUpdate::Applied(mut l) if self.bug == Bug::HandoffRequestBumpsCounter => {
                    l.counter += 1;
                    self.inner.seed(l.clone());
                    Ok(LeaseUpdate::Applied(l))
                }
                other => Ok(self.fix_update(other)),
            }
        }

        async fn delete(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
            Ok(self.fix_update(self.inner.delete(&self.as_stored(expected)).await?))
        }
    }

    /// Runs `check` against a store with `bug` and returns its panic message, if it panicked.
    async fn failure<Fut>(bug: Bug, check: fn(Broken) -> Fut) -> Option<String>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let store = Broken { inner: MemoryLeaseStore::new(), bug, first_peek: Default::default() };
        let joined = tokio::spawn(check(store)).await;
        let panic = joined.err()?.into_panic();
        let message = panic.downcast_ref::<String>().cloned();
        Some(message.unwrap_or_else(|| "<non-string panic>".to_owned()))
    }

    async fn assert_caught<Fut>(bug: Bug, check: fn(Broken) -> Fut, name: &str)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        match failure(bug, check).await {
            Some(message) => {
                assert!(message.contains(&format!("`{name}`")), "{bug:?} caught by another check: {message}")
            }
            None => panic!("the contract check `{name}` did not catch {bug:?}"),
        }
    }

    #[tokio::test]
    async fn each_bug_is_caught_by_its_check() {
        async fn renew(s: Broken) {
            lease_store::check_renew(&s).await
        }
        async fn handoff(s: Broken) {
            lease_store::check_handoff_requests(&s).await
        }
        async fn peek(s: Broken) {
            lease_store::check_peek(&s).await
        }
        async fn take(s: Broken) {
            lease_store::check_take(&s).await
        }
        async fn checkpoints(s: Broken) {
            lease_store::check_checkpoint_variants(&s).await
        }
        async fn many(s: Broken) {
            lease_store::check_list_many(&s).await
        }
        async fn large(s: Broken) {
            lease_store::check_large_counters(&s).await
        }
        async fn owner_none(s: Broken) {
            lease_store::check_owner_none_round_trips(&s).await
        }
        async fn attributes(s: Broken) {
            lease_store::check_writes_change_only_their_attributes(&s).await
        }
        async fn missing(s: Broken) {
            lease_store::check_writes_to_missing_items(&s).await
        }
        async fn delete(s: Broken) {
            lease_store::check_delete(&s).await
        }
        async fn window(s: Broken) {
            lease_store::check_checkpoint_window(&s).await
        }
        assert_caught(Bug::TakeDropsWindow, window, "checkpoint_window").await;
        assert_caught(Bug::IgnoresOwner, renew, "renew").await;
        assert_caught(Bug::IgnoresOwner, delete, "delete").await;
        assert_caught(Bug::AlwaysCountsSwitch, take, "take").await;
        assert_caught(Bug::KeepsSwitchesOnCheckpoint, checkpoints, "checkpoint_variants").await;
        assert_caught(Bug::FirstPageOnly, many, "list_many").await;
        assert_caught(Bug::FloatCounters, large, "large_counters").await;
        assert_caught(Bug::EmptyOwner, owner_none, "owner_none_round_trips").await;
        assert_caught(Bug::ReturnsCallerCopy, attributes, "writes_change_only_their_attributes").await;
        assert_caught(Bug::UpsertsMissing, missing, "writes_to_missing_items").await;
        assert_caught(Bug::HandoffRequestBumpsCounter, handoff, "handoff_requests").await;
        assert_caught(Bug::PeekNeverCatchesUp, peek, "peek").await;
    }

    #[tokio::test]
    async fn parent_order_is_not_part_of_the_contract() {
        lease_store::run_all(|| async {
            Broken { inner: MemoryLeaseStore::new(), bug: Bug::ReordersParents, first_peek: Default::default() }
        })
        .await;
    }
}
