//! Event filters (Lambda's `FilterCriteria` syntax) on the simulator, under paused time:
//! only matching changes are delivered, with and without lanes; the checkpoint moves past
//! the dropped ones, also when a shard's last records are all dropped.

mod common;

use std::time::Duration;

use common::{Fleet, init_tracing};
use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::{ChangeKind, SimRecord, StreamSimulator};
use kcl_core::{Checkpoint, FilterCriteria, LeaseKey, ShardId};

/// Inserts and updates of items whose key starts with `item-1` (item-1, item-10..item-19).
const PATTERN: &str =
    r#"{"eventName": ["INSERT", "MODIFY"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "item-1"}]}}}}"#;

fn drops(r: &SimRecord) -> bool {
    !(r.key.starts_with("item-1") && r.kind != ChangeKind::Remove)
}

fn criteria() -> FilterCriteria {
    FilterCriteria::parse(PATTERN).unwrap_or_else(|e| panic!("{e}"))
}

fn one_shard(seed: u64) -> (StreamSimulator, ShardId) {
    let sim = StreamSimulator::builder().seed(seed).initial_shards(1).build();
    let shard = sim.open_shards().remove(0);
    (sim, shard)
}

async fn run(lanes: bool) {
    let (sim, shard) = one_shard(21);
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.tune = match lanes {
        false => |b| b.filter(criteria()),
        true => |b| b.filter(criteria()).parallelism(3).batch_size(10),
    };
    fleet.filtered = Some(drops);
    fleet.start("a");
    fleet
        .wait_for(Duration::from_secs(30), "a to own the shard", |f| f.owners().get(&Some("a".into())) == Some(&1))
        .await;
    fleet.write(600, 30, Duration::from_millis(5)).await;
    fleet.drain(Duration::from_secs(120)).await;
    let written = fleet.sim.written();
    let kept = written.iter().filter(|r| !drops(r)).count();
    assert!(kept > 50 && kept < 300, "the filter keeps some and drops most ({kept} of 600)");
    assert_eq!(fleet.log.distinct_processed(), kept, "exactly the matching changes were delivered");
    // The shard's last changes all fail the filter: the checkpoint still moves past them.
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
async fn only_matching_changes_are_delivered_and_the_checkpoint_moves_past_the_rest() {
    init_tracing();
    run(false).await;
}

#[tokio::test(start_paused = true)]
async fn filters_and_lanes_together() {
    init_tracing();
    run(true).await;
}
