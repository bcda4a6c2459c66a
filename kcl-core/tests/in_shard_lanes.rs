//! Lanes (`parallelism`) and the batching window on the simulator, under paused time: lanes
//! run concurrently with the changes of one item in order; the checkpoint never passes a
//! record of a slow or failing lane, and a failing lane holds the others back by at most
//! their queues; the batching window gathers records into full batches and hands the partial
//! one over at shutdown.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Fleet, init_tracing};
use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::recording::{Delivery, DeliveryOutcome, RecordingProcessorFactory};
use kcl_core::testing::sim::{SimRecord, StreamSimulator};
use kcl_core::{Checkpoint, LeaseKey, SequenceNumber, ShardId, WorkerId};

fn one_shard(seed: u64) -> (StreamSimulator, ShardId) {
    let sim = StreamSimulator::builder().seed(seed).initial_shards(1).build();
    let shard = sim.open_shards().remove(0);
    (sim, shard)
}

/// Calls of `process_records` as (lane, records), from the log (one append per call).
fn calls(deliveries: &[Delivery]) -> Vec<(usize, usize)> {
    let mut out: Vec<((usize, tokio::time::Instant), usize)> = Vec::new();
    for d in deliveries {
        match out.last_mut() {
            Some((k, n)) if *k == (d.lane, d.at) => *n += 1,
            _ => out.push(((d.lane, d.at), 1)),
        }
    }
    out.into_iter().map(|((lane, _), n)| (lane, n)).collect()
}

/// The largest number of calls of one shard running at the same time.
fn max_concurrent(deliveries: &[Delivery]) -> usize {
    let spans: BTreeSet<(tokio::time::Instant, tokio::time::Instant, usize)> =
        deliveries.iter().map(|d| (d.at, d.finished, d.lane)).collect();
    let mut best = 0;
    for (start, _, _) in &spans {
        let running = spans.iter().filter(|(s, f, _)| s <= start && start < f).count();
        best = best.max(running);
    }
    best
}

/// Writes 2,000 changes over 400 items and drains them with `lanes` lanes, each call taking
/// 50 ms; returns (simulated drain time, lanes seen, most calls at once).
async fn drain_with(lanes: usize) -> (Duration, usize, usize) {
    let (sim, _) = one_shard(11);
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.tune = match lanes {
        1 => |b| b.batch_size(20),
        4 => |b| b.batch_size(20).parallelism(4),
        _ => unreachable!("only 1 and 4 lanes are run"),
    };
    fleet.processing_delay = Duration::from_millis(50);
    fleet.start("a");
    fleet
        .wait_for(Duration::from_secs(30), "a to own the shard", |f| f.owners().get(&Some("a".into())) == Some(&1))
        .await;
    fleet.write(2000, 400, Duration::ZERO).await;
    let took = fleet.drain(Duration::from_secs(600)).await;
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
    let deliveries = fleet.log.deliveries();
    let seen: BTreeSet<usize> = deliveries.iter().map(|d| d.lane).collect();
    assert!(calls(&deliveries).iter().all(|(_, n)| *n <= 20), "no call holds more than batch_size records");
    (took, seen.len(), max_concurrent(&deliveries))
}

#[tokio::test(start_paused = true)]
async fn lanes_run_concurrently_and_keep_each_items_order() {
    init_tracing();
    let (one, lanes_one, conc_one) = drain_with(1).await;
    let (four, lanes_four, conc_four) = drain_with(4).await;
    eprintln!("drain: 1 lane {one:?} (max {conc_one} at once), 4 lanes {four:?} (max {conc_four} at once)");
    assert_eq!((lanes_one, conc_one), (1, 1), "one lane: one call at a time");
    assert_eq!(lanes_four, 4, "every lane got records");
    assert_eq!(conc_four, 4, "the four lanes ran at the same time");
    // 100 calls of 50 ms take 5 s on one lane; four lanes share them (item order is judged
    // by the invariant checker above).
    assert!(four * 3 < one * 2, "4 lanes drained in {four:?}, 1 lane in {one:?}");
}

#[tokio::test(start_paused = true)]
async fn the_checkpoint_never_passes_a_failing_lane_and_the_other_lanes_go_on() {
    init_tracing();
    let (sim, shard) = one_shard(12);
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.tune = |b| b.batch_size(10).parallelism(2);
    // item-3 version 2 fails forever (retried without end: nothing is given up).
    let factory = RecordingProcessorFactory::new(WorkerId::new("a"), fleet.log.clone())
        .fail_when(|r: &SimRecord| r.key == "item-3" && r.version == 2);
    fleet.start_with("a", factory);
    fleet
        .wait_for(Duration::from_secs(30), "a to own the shard", |f| f.owners().get(&Some("a".into())) == Some(&1))
        .await;
    fleet.write(400, 20, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let written = fleet.sim.written();
    let failing = written
        .iter()
        .find(|r| r.key == "item-3" && r.version == 2)
        .map(|r| r.sequence_number.clone())
        .unwrap_or_else(|| panic!("the failing record was written"));
    let checkpoint = fleet.store.get_now(&LeaseKey::for_shard(&shard)).map(|l| l.checkpoint);
    match &checkpoint {
        Some(Checkpoint::At(s)) => assert!(*s < failing, "checkpoint {s} passed the failing record {failing}"),
        Some(Checkpoint::TrimHorizon) => {}
        other => panic!("unexpected checkpoint {other:?}"),
    }
    let deliveries = fleet.log.deliveries();
    let failing_lane = deliveries.iter().find(|d| d.sequence_number == failing).map(|d| d.lane);
    let beyond: BTreeMap<usize, usize> = deliveries
        .iter()
        .filter(|d| d.outcome == DeliveryOutcome::Processed && d.sequence_number > failing)
        .fold(BTreeMap::new(), |mut m, d| {
            *m.entry(d.lane).or_insert(0) += 1;
            m
        });
    eprintln!(
        "failing lane {failing_lane:?}; processed past the failing record per lane: {beyond:?}; checkpoint {checkpoint:?}"
    );
    let other = 1 - failing_lane.unwrap_or_else(|| panic!("the failing record was delivered"));
    assert!(beyond.get(&other).copied().unwrap_or(0) > 0, "the healthy lane went on past the failing record");
    let report = fleet.check().await;
    for kind in ["CheckpointPastUnfinished", "ShardOrder", "ItemOrder", "CheckpointBeyondDelivered", "TwoOwners"] {
        assert_eq!(report.of_kind(kind).count(), 0, "{report}");
    }
    fleet.stop_all().await;
    let after = fleet.store.get_now(&LeaseKey::for_shard(&shard)).map(|l| l.checkpoint);
    if let Some(Checkpoint::At(s)) = &after {
        assert!(*s < failing, "the checkpoint at shutdown ({s}) passed the failing record {failing}");
    }
    let report = fleet.check().await;
    assert_eq!(report.of_kind("CheckpointPastUnfinished").count(), 0, "{report}");
}

#[tokio::test(start_paused = true)]
async fn the_batching_window_gathers_full_batches() {
    init_tracing();
    let (sim, _) = one_shard(13);
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.tune = |b| b.batch_size(50).batching_window(Duration::from_secs(2));
    fleet.start("a");
    fleet
        .wait_for(Duration::from_secs(30), "a to own the shard", |f| f.owners().get(&Some("a".into())) == Some(&1))
        .await;
    // 500 changes, one every 20 ms: each read finds a few; the window gathers 50.
    fleet.write(500, 100, Duration::from_millis(20)).await;
    fleet.drain(Duration::from_secs(60)).await;
    let sizes: Vec<usize> = calls(&fleet.log.deliveries()).into_iter().map(|(_, n)| n).collect();
    eprintln!("batch sizes: {sizes:?}");
    assert!(sizes.iter().all(|n| *n <= 50), "{sizes:?}");
    let full = sizes.iter().filter(|n| **n == 50).count();
    assert!(full >= 9, "at least 9 of 10 batches full: {sizes:?}");
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_is_delivered_and_checkpointed_at_shutdown() {
    partial_batch_at_shutdown(false).await;
}

#[tokio::test(start_paused = true)]
async fn partial_batches_of_every_lane_are_delivered_and_checkpointed_at_shutdown() {
    partial_batch_at_shutdown(true).await;
}

async fn partial_batch_at_shutdown(lanes: bool) {
    init_tracing();
    let (sim, shard) = one_shard(14);
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.tune = match lanes {
        false => |b| b.batch_size(100).batching_window(Duration::from_secs(60)),
        true => |b| b.batch_size(100).batching_window(Duration::from_secs(60)).parallelism(3),
    };
    fleet.start("a");
    fleet
        .wait_for(Duration::from_secs(30), "a to own the shard", |f| f.owners().get(&Some("a".into())) == Some(&1))
        .await;
    fleet.write(7, 7, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(fleet.log.processed_count(), 0, "the window (60 s) has not passed and the batch is not full");
    fleet.stop_all().await;
    assert_eq!(fleet.log.distinct_processed(), 7, "the partial batch was delivered before the stop");
    let last: SequenceNumber =
        fleet.sim.written().last().map(|r| r.sequence_number.clone()).unwrap_or_else(|| panic!());
    let checkpoint = fleet.store.get_now(&LeaseKey::for_shard(&shard)).map(|l| l.checkpoint);
    assert_eq!(checkpoint, Some(Checkpoint::At(last)), "and checkpointed");
    fleet.check().await.assert_ok();
}
