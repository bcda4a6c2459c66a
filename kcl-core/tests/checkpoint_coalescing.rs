//! Checkpoint coalescing (`CheckpointPolicy::Interval`, the default): a busy shard costs one
//! checkpoint write per interval instead of one per batch; a crash re-delivers at most about
//! one interval of records and loses none; shard end, graceful shutdown, a dead letter and a
//! shard gone quiet each write the recorded checkpoint without waiting for more batches.

mod common;

use std::time::Duration;

use common::{Fleet, init_tracing};
use kcl_core::config::DEFAULT_CHECKPOINT_INTERVAL;
use kcl_core::testing::memory_store::{LeaseOp, LeaseOpKind, MemoryLeaseStore};
use kcl_core::testing::recording::RecordingProcessorFactory;
use kcl_core::testing::sim::{ChangeKind, StreamSimulator};
use kcl_core::{Checkpoint, CheckpointPolicy, LeaseKey, SequenceNumber, ShardId, WorkerId};

const HOUR: Duration = Duration::from_secs(3600);

fn one_shard() -> (StreamSimulator, ShardId) {
    let sim = StreamSimulator::builder().seed(5).initial_shards(1).build();
    let shard = sim.open_shards().remove(0);
    (sim, shard)
}

fn checkpoint_of(fleet: &Fleet, shard: &ShardId) -> Option<Checkpoint> {
    fleet.store.get_now(&LeaseKey::for_shard(shard)).map(|l| l.checkpoint)
}

fn checkpoint_writes(fleet: &Fleet) -> u64 {
    fleet.store.stats().of(LeaseOpKind::Checkpoint).ok
}

fn last_written(fleet: &Fleet) -> SequenceNumber {
    fleet.sim.written().last().map(|r| r.sequence_number.clone()).unwrap_or_else(|| panic!("nothing written"))
}

/// Runs a busy shard for a minute under `policy`; returns (checkpoint writes, batches).
async fn busy_minute(policy: CheckpointPolicy) -> (u64, usize) {
    let (sim, _) = one_shard();
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.tune = match policy {
        CheckpointPolicy::Processor => |b| b.checkpoint_policy(CheckpointPolicy::Processor),
        _ => |b| b,
    };
    // Each batch takes 20 ms: about fifty batches a second, each checkpointed by the processor.
    fleet.processing_delay = Duration::from_millis(20);
    fleet.start("a");
    fleet
        .wait_for(Duration::from_secs(30), "a to own the shard", |f| f.owners().get(&Some("a".into())) == Some(&1))
        .await;
    let writes_before = checkpoint_writes(&fleet);
    fleet.write(6000, 100, Duration::from_millis(10)).await;
    fleet.drain(Duration::from_secs(30)).await;
    let writes = checkpoint_writes(&fleet) - writes_before;
    let batches = fleet.log.checkpoint_calls().len();
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
    (writes, batches)
}

#[tokio::test(start_paused = true)]
async fn a_busy_shard_writes_one_checkpoint_per_interval() {
    init_tracing();
    let (writes, batches) = busy_minute(CheckpointPolicy::Interval).await;
    eprintln!("interval policy: {writes} checkpoint writes for {batches} batches");
    // About 60 s of writes and draining: one write per 5 s interval, plus the last flush.
    let bound = 60 / DEFAULT_CHECKPOINT_INTERVAL.as_secs() + 3;
    assert!(writes <= bound, "{writes} checkpoint writes for {batches} batches (at most {bound})");
    assert!(batches as u64 >= 20 * writes, "{batches} batches, {writes} writes: not coalesced");
    // The processor's own policy: one write per call, as the control.
    let (writes, batches) = busy_minute(CheckpointPolicy::Processor).await;
    eprintln!("processor policy: {writes} checkpoint writes for {batches} batches");
    assert!(writes as usize >= batches / 2, "{writes} writes for {batches} checkpoint calls");
}

#[tokio::test(start_paused = true)]
async fn a_crash_re_delivers_at_most_one_interval_and_loses_nothing() {
    init_tracing();
    let (sim, _) = one_shard();
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.start("a");
    fleet
        .wait_for(Duration::from_secs(30), "a to own the shard", |f| f.owners().get(&Some("a".into())) == Some(&1))
        .await;
    fleet.start("b");
    // 20 changes a second for 23 s: the crash falls between two interval writes.
    fleet.write(460, 50, Duration::from_millis(50)).await;
    fleet.crash("a");
    fleet.write(200, 50, Duration::from_millis(50)).await;
    fleet
        .wait_for(Duration::from_secs(60), "b to take the shard", |f| f.owners().get(&Some("b".into())) == Some(&1))
        .await;
    fleet.drain(Duration::from_secs(60)).await;
    fleet.stop_all().await;
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.lost, 0);
    // What arrived in one interval (20 a second), plus one batch read ahead.
    let bound = 20 * DEFAULT_CHECKPOINT_INTERVAL.as_secs() as usize + 20;
    eprintln!("delivered again after the crash: {} (bound {bound})", report.stats.duplicates);
    assert!(report.stats.duplicates <= bound, "{} records delivered again (at most {bound})", report.stats.duplicates);
    assert!(report.stats.duplicates > 0, "the crash should re-deliver the uncheckpointed tail");
}

/// A fleet of one worker whose interval is an hour: only the flushes write checkpoints.
async fn hour_interval_fleet(sim: StreamSimulator) -> Fleet {
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new().with_full_history());
    fleet.tune = |b| b.checkpoint_interval(HOUR).max_retry_attempts(1);
    fleet.start("a");
    fleet
        .wait_for(Duration::from_secs(30), "a to own the shard", |f| f.owners().get(&Some("a".into())) == Some(&1))
        .await;
    fleet
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_writes_the_recorded_checkpoint() {
    init_tracing();
    let (sim, shard) = one_shard();
    let mut fleet = hour_interval_fleet(sim).await;
    fleet.write(50, 10, Duration::from_millis(20)).await;
    fleet.drain(Duration::from_secs(10)).await;
    assert_eq!(checkpoint_of(&fleet, &shard), Some(Checkpoint::TrimHorizon), "coalesced, not written yet");
    fleet.stop("a").await;
    assert_eq!(checkpoint_of(&fleet, &shard), Some(Checkpoint::At(last_written(&fleet))));
}

#[tokio::test(start_paused = true)]
async fn shard_end_writes_the_recorded_checkpoint_before_shard_end() {
    init_tracing();
    let (sim, shard) = one_shard();
    let mut fleet = hour_interval_fleet(sim.clone()).await;
    fleet.write(50, 10, Duration::from_millis(20)).await;
    fleet.drain(Duration::from_secs(10)).await;
    let last = last_written(&fleet);
    assert_eq!(checkpoint_of(&fleet, &shard), Some(Checkpoint::TrimHorizon), "coalesced, not written yet");
    sim.rotate(&shard).unwrap_or_else(|e| panic!("{e}"));
    fleet
        .wait_for(Duration::from_secs(30), "the shard to end", |f| {
            checkpoint_of(f, &shard) == Some(Checkpoint::ShardEnd)
        })
        .await;
    let written: Vec<Checkpoint> = fleet
        .store
        .history()
        .into_iter()
        .filter(|e| e.op == LeaseOp::Checkpoint && e.key == LeaseKey::for_shard(&shard))
        .map(|e| e.checkpoint_after)
        .collect();
    assert_eq!(written, [Checkpoint::At(last), Checkpoint::ShardEnd]);
    fleet.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_writes_the_checkpoint_past_it_at_once() {
    init_tracing();
    let (sim, shard) = one_shard();
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.tune = |b| b.checkpoint_interval(HOUR).max_retry_attempts(1);
    let factory = RecordingProcessorFactory::new(WorkerId::new("a"), fleet.log.clone())
        .fail_when(|r: &kcl_core::testing::sim::SimRecord| r.key == "poison");
    fleet.start_with("a", factory);
    fleet
        .wait_for(Duration::from_secs(30), "a to own the shard", |f| f.owners().get(&Some("a".into())) == Some(&1))
        .await;
    fleet.write(20, 10, Duration::from_millis(20)).await;
    fleet.drain(Duration::from_secs(10)).await;
    assert_eq!(checkpoint_of(&fleet, &shard), Some(Checkpoint::TrimHorizon), "coalesced, not written yet");
    let poison = fleet.sim.write("poison", ChangeKind::Insert).sequence_number;
    // Skipped (no destination) after one retry, and the checkpoint past it written at once.
    fleet
        .wait_for(Duration::from_secs(30), "the checkpoint past the skipped record", |f| {
            checkpoint_of(f, &shard) == Some(Checkpoint::At(poison.clone()))
        })
        .await;
    fleet.stop_all().await;
}

#[tokio::test(start_paused = true)]
async fn a_shard_gone_quiet_writes_its_checkpoint_once_the_interval_passed() {
    init_tracing();
    let (sim, shard) = one_shard();
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.start("a");
    fleet
        .wait_for(Duration::from_secs(30), "a to own the shard", |f| f.owners().get(&Some("a".into())) == Some(&1))
        .await;
    fleet.write(30, 10, Duration::from_millis(10)).await;
    fleet.drain(Duration::from_secs(10)).await;
    // No more batches: the deliverer's timer writes the last one within an interval.
    let waited = fleet
        .wait_for(DEFAULT_CHECKPOINT_INTERVAL * 2, "the quiet shard's checkpoint", |f| {
            checkpoint_of(f, &shard) == Some(Checkpoint::At(last_written(f)))
        })
        .await;
    assert!(waited <= DEFAULT_CHECKPOINT_INTERVAL + Duration::from_millis(200), "written after {waited:?}");
    fleet.stop_all().await;
}
