//! The Rust record filter (`Worker::with_record_filter`) on the simulator, under paused
//! time: only kept changes are delivered, with and without lanes, and the checkpoint moves
//! past the dropped ones, also when a shard's last records are all dropped.

mod common;

use std::time::Duration;

use common::{Fleet, init_tracing};
use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::{ChangeKind, SimRecord, StreamSimulator};
use kcl_core::{Checkpoint, LeaseKey};

fn keeps(r: &SimRecord) -> bool {
    r.key.starts_with("item-1") && r.kind != ChangeKind::Remove
}

fn drops(r: &SimRecord) -> bool {
    !keeps(r)
}

async fn run(lanes: bool) {
    let sim = StreamSimulator::builder().seed(21).initial_shards(1).build();
    let shard = sim.open_shards().remove(0);
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    if lanes {
        fleet.tune = |b| b.parallelism(3).batch_size(10);
    }
    fleet.record_filter = Some(keeps);
    fleet.filtered = Some(drops);
    fleet.start("a");
    fleet
        .wait_for(Duration::from_secs(30), "a to own the shard", |f| f.owners().get(&Some("a".into())) == Some(&1))
        .await;
    fleet.write(600, 30, Duration::from_millis(5)).await;
    fleet.drain(Duration::from_secs(120)).await;
    let written = fleet.sim.written();
    let kept = written.iter().filter(|r| keeps(r)).count();
    assert!(kept > 50 && kept < 300, "the filter keeps some and drops most ({kept} of 600)");
    assert_eq!(fleet.log.distinct_processed(), kept, "exactly the kept changes were delivered");
    // The shard's last changes are all dropped: the checkpoint still moves past them.
    for _ in 0..5 {
        fleet.sim.write("other-item", ChangeKind::Modify);
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    let last = fleet.sim.written().last().map(|r| r.sequence_number.clone()).unwrap_or_else(|| panic!());
    let checkpoint = fleet.store.get_now(&LeaseKey::for_shard(&shard)).map(|l| l.checkpoint);
    assert_eq!(checkpoint, Some(Checkpoint::At(last)), "the checkpoint moved past the dropped records");
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
}

#[tokio::test(start_paused = true)]
async fn only_kept_changes_are_delivered_and_the_checkpoint_moves_past_the_rest() {
    init_tracing();
    run(false).await;
}

#[tokio::test(start_paused = true)]
async fn the_record_filter_with_lanes() {
    init_tracing();
    run(true).await;
}
