//! One tenure of a lease is forgotten, not the lease: a handoff that this worker's own next
//! take cycle undid (it took the released lease back, being under target) leaves the new
//! tenure held when the old one's consumer finishes afterwards. Seen in the rolling-deploy
//! test: the new tenure was stopped, and the shard stood still until a take cycle found its
//! own lease unconsumed, 7 s later.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Coordinator, Scope};
use crate::checkpoint::Checkpoint;
use crate::config::Config;
use crate::lease::{Lease, LeaseStore};
use crate::metrics::Metrics;
use crate::shard::ShardId;
use crate::testing::memory_store::MemoryLeaseStore;

#[tokio::test(start_paused = true)]
async fn a_finished_tenure_forgets_only_itself() {
    let store = Arc::new(MemoryLeaseStore::new());
    let lease = Lease::new_for_shard(&ShardId::new("s1"), Checkpoint::TrimHorizon, Vec::new());
    assert!(store.create_if_absent(lease).await.is_ok_and(|u| u.applied().is_some()));
    let config = Arc::new(Config::builder("app").worker_id("w1").build().unwrap_or_else(|e| panic!("{e}")));
    let scope = Scope(Arc::new(|_: &ShardId| true));
    let c = Coordinator::start(store.clone(), config, Metrics::unregistered(), CancellationToken::new(), scope)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = c.take_cycle().await.acquired.pop().unwrap_or_else(|| panic!("first take"));
    // Its consumer hands the lease over: released in the table, still finishing here.
    first.request_handoff();
    let current = first.lock().await.clone();
    assert!(store.release(&current).await.is_ok_and(|u| u.applied().is_some()));
    // The next cycle finds it released and, under target, takes it again: a new tenure.
    let second = c.take_cycle().await.acquired.pop().unwrap_or_else(|| panic!("second take"));
    assert!(!Arc::ptr_eq(&first, &second));
    assert!(first.is_lost(), "the released tenure is over");
    // The first tenure's consumer finishes now.
    c.forget(&first);
    assert_eq!(c.held_count(), 1, "the new tenure is still held");
    assert!(!second.is_lost(), "and still delivering");
    // Its own end forgets it.
    c.forget(&second);
    assert_eq!(c.held_count(), 0);
    assert!(second.is_lost());
}

/// A worker that stops withdraws its handoff requests: the owner it asked hands nothing over
/// to it (a lease handed to a stopping worker would wait, unowned, until peers see it gone).
#[tokio::test(start_paused = true)]
async fn a_stopping_worker_withdraws_its_handoff_requests() {
    let store = Arc::new(MemoryLeaseStore::new());
    for s in ["s1", "s2"] {
        let lease = Lease::new_for_shard(&ShardId::new(s), Checkpoint::TrimHorizon, Vec::new());
        assert!(store.create_if_absent(lease).await.is_ok_and(|u| u.applied().is_some()));
    }
    let start = |id: &str| {
        let config = Arc::new(Config::builder("app").worker_id(id).build().unwrap_or_else(|e| panic!("{e}")));
        let scope = Scope(Arc::new(|_: &ShardId| true));
        Coordinator::start(store.clone(), config, Metrics::unregistered(), CancellationToken::new(), scope)
    };
    let owner = start("a").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(owner.take_cycle().await.acquired.len(), 2);
    let asker = start("b").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(asker.take_cycle().await.asked, "b asks a for a lease");
    let requested = |store: Arc<MemoryLeaseStore>| async move {
        let items = store.list().await.unwrap_or_default();
        items
            .into_iter()
            .filter(|l| l.key.is_heartbeat() && l.owner.as_ref().is_some_and(|o| o.as_str() == "a"))
            .flat_map(|l| l.handoff_requests)
            .map(|r| (r.from.to_string(), r.leases))
            .collect::<Vec<_>>()
    };
    assert_eq!(requested(store.clone()).await, vec![("b".to_owned(), 1)]);
    asker.withdraw_handoff_requests().await;
    assert_eq!(requested(store.clone()).await, vec![("b".to_owned(), 0)]);
    // The owner's renewal reads the withdrawn request: nothing is handed over.
    owner.renew_heartbeat().await;
    assert!(owner.held().iter().all(|h| !h.handoff_requested()));
}
