//! Shards close and split under load: children start only after their parents end, per-item
//! order holds across generations, and late-appearing children are not lost.

mod common;

use std::time::Duration;

use common::{Fleet, init_tracing};
use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::StreamSimulator;

#[tokio::test(start_paused = true)]
async fn rotations_and_splits_under_load_keep_item_order() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(4).initial_shards(4).build();
    let mut fleet = Fleet::new(sim.clone(), MemoryLeaseStore::new());
    // Slow processors and a frequent sync: children get leases (and owners) while their
    // parents are still being processed, so only the parent gate keeps the order.
    fleet.tune = |b| b.shard_sync_interval(Duration::from_millis(500)).max_records_per_read(25);
    fleet.processing_delay = Duration::from_millis(40);
    for w in ["a", "b", "c"] {
        fleet.start(w);
    }
    for round in 0..6 {
        fleet.write(300, 30, Duration::from_millis(5)).await;
        let open = sim.open_shards();
        if round % 2 == 0 {
            sim.split(&open[round % open.len()]).unwrap_or_else(|e| panic!("{e}"));
        } else {
            sim.rotate_all();
        }
    }
    fleet.write(300, 30, Duration::from_millis(5)).await;
    fleet.drain(Duration::from_secs(120)).await;
    fleet.stop_all().await;
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.lost, 0);
    assert!(
        kcl_core::StreamSource::list_shards(&sim).await.map(|s| s.len()).unwrap_or(0) > 12,
        "the test must have produced many generations"
    );
}

#[tokio::test(start_paused = true)]
async fn children_listed_late_are_picked_up() {
    init_tracing();
    // Children stay invisible for 3 s after their parent closes: longer than the first few
    // lookups after the shard end, shorter than the retry budget.
    let sim = StreamSimulator::builder().seed(5).initial_shards(2).child_listing_delay(Duration::from_secs(3)).build();
    let mut fleet = Fleet::new(sim.clone(), MemoryLeaseStore::new());
    fleet.start("a");
    fleet.write(100, 10, Duration::from_millis(5)).await;
    sim.rotate_all();
    fleet.write(100, 10, Duration::from_millis(5)).await;
    // Well under the 60 s periodic sync: only the retried child lookup can make this.
    fleet.drain(Duration::from_secs(20)).await;
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
}

/// A child waiting on a parent that ends on the same worker starts at once, not at its next
/// check of the parent lease (set here to a minute, so that polling could not explain it).
#[tokio::test(start_paused = true)]
async fn a_parent_ending_here_wakes_its_children_at_once() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(6).initial_shards(1).build();
    let store = MemoryLeaseStore::new();
    let mut fleet = Fleet::new(sim.clone(), store.clone());
    // The child's lease exists (and is held) while the parent is still being processed.
    fleet.tune = |b| {
        b.shard_sync_interval(Duration::from_millis(500))
            .max_records_per_read(25)
            .parent_poll_interval(Duration::from_secs(60))
    };
    fleet.processing_delay = Duration::from_millis(40);
    fleet.start("a");
    fleet.write(300, 30, Duration::ZERO).await;
    let parent = sim.open_shards()[0].clone();
    let child = sim.rotate(&parent).unwrap_or_else(|e| panic!("{e}"));
    fleet.write(50, 30, Duration::ZERO).await;
    fleet.drain(Duration::from_secs(50)).await;
    let ended = store
        .history()
        .into_iter()
        .find(|e| e.key.as_str() == parent.as_str() && e.checkpoint_after.is_shard_end())
        .map(|e| e.at)
        .unwrap_or_else(|| panic!("the parent never ended"));
    let first = fleet.log.deliveries().into_iter().filter(|d| d.shard_id == child).map(|d| d.at).min();
    let waited = first.map(|f| f - ended);
    println!("child's first delivery {waited:?} after its parent's SHARD_END");
    assert!(waited.is_some_and(|w| w < Duration::from_secs(1)), "the child waited {waited:?} for its parent");
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
}
