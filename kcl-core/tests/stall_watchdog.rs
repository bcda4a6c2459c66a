//! The stall watchdog: a held shard that makes no progress is reported, and with
//! `OnStall::ReleaseLease` its lease is released so the shard starts afresh elsewhere.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Fleet, init_tracing};
use kcl_core::testing::memory_store::{LeaseOp, MemoryLeaseStore};
use kcl_core::testing::sim::{ChangeKind, SimRecord, StreamSimulator};
use kcl_core::{
    Batch, Checkpointer, Config, Metrics, OnStall, ProcessorError, RecordProcessor, ShardId, SourceErrorKind, Worker,
    WorkerId,
};

/// Never returns from its first batch while `hang` is set; checkpoints otherwise.
#[derive(Clone)]
struct Hangs(Arc<AtomicBool>);

impl RecordProcessor<SimRecord> for Hangs {
    async fn process_records(&mut self, _: &Batch<SimRecord>, cp: &impl Checkpointer) -> Result<(), ProcessorError> {
        if self.0.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        cp.checkpoint().await.map_err(|e| ProcessorError::new(e.to_string()))
    }
}

fn config(name: &str, on_stall: OnStall) -> Config {
    Config::builder("stall")
        .worker_id(name)
        .processing_timeout(None)
        .stall_threshold(Duration::from_secs(30))
        .on_stall(on_stall)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(start_paused = true)]
async fn a_processor_that_never_returns_is_reported() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(31).initial_shards(1).build();
    sim.write("a", ChangeKind::Insert);
    let hang = Arc::new(AtomicBool::new(true));
    let h = Hangs(hang.clone());
    let worker = Worker::with_metrics(
        config("w", OnStall::Report),
        sim,
        MemoryLeaseStore::new(),
        move |_: &ShardId| h.clone(),
        Metrics::unregistered(),
    );
    let handle = worker.handle();
    let task = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(handle.status().shards.values().all(|s| s.stalled_for.is_none()), "not stalled before the threshold");
    tokio::time::sleep(Duration::from_secs(20)).await;
    let status = handle.status();
    let stalled: Vec<_> = status.shards.values().filter_map(|s| s.stalled_for).collect();
    assert_eq!(stalled.len(), 1, "{status:?}");
    assert!(stalled[0] > Duration::from_secs(30));
    assert_eq!(status.leases_held(), 1, "reporting keeps the lease");
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn reads_that_keep_failing_are_reported() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(32).initial_shards(1).build();
    sim.write("a", ChangeKind::Insert);
    sim.inject_read_errors(SourceErrorKind::Transient, 1_000_000);
    let h = Hangs(Arc::new(AtomicBool::new(false)));
    let worker = Worker::with_metrics(
        config("w", OnStall::Report),
        sim,
        MemoryLeaseStore::new(),
        move |_: &ShardId| h.clone(),
        Metrics::unregistered(),
    );
    let handle = worker.handle();
    let task = tokio::spawn(worker.run());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(handle.status().shards.values().any(|s| s.stalled_for.is_some()), "{:?}", handle.status());
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn release_lease_moves_a_stalled_shard_to_another_worker() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(33).initial_shards(1).build();
    let store = MemoryLeaseStore::new();
    let mut fleet = Fleet::new(sim.clone(), store.clone());
    fleet.write(50, 10, Duration::ZERO).await;
    // The stuck worker starts first and takes the only shard.
    let h = Hangs(Arc::new(AtomicBool::new(true)));
    let stuck = Worker::with_metrics(
        config("stuck", OnStall::ReleaseLease),
        sim.clone(),
        store.clone(),
        move |_: &ShardId| h.clone(),
        Metrics::unregistered(),
    );
    let stuck_task = tokio::spawn(stuck.run());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(fleet.owners().get(&Some("stuck".to_owned())), Some(&1));
    fleet.tune = |b| b.stall_threshold(Duration::from_secs(30)).processing_timeout(None);
    fleet.start("healthy");
    fleet.drain(Duration::from_secs(120)).await;
    let released =
        store.history().iter().any(|e| e.op == LeaseOp::Release && e.owner_before == Some(WorkerId::new("stuck")));
    assert!(released, "the stalled lease was released by the watchdog");
    assert_eq!(fleet.log.distinct_processed(), 50, "the healthy worker processed everything");
    stuck_task.abort();
    fleet.stop_all().await;
}

/// A shard that ends without children showing up is reported once the stall threshold has
/// passed, and no longer once the children appear (then they are processed).
#[tokio::test(start_paused = true)]
async fn children_that_never_show_up_are_reported() {
    init_tracing();
    let sim =
        StreamSimulator::builder().seed(34).initial_shards(1).child_listing_delay(Duration::from_secs(240)).build();
    let store = MemoryLeaseStore::new();
    let mut fleet = Fleet::new(sim.clone(), store.clone());
    fleet.tune = |b| b.stall_threshold(Duration::from_secs(30)).shard_sync_interval(Duration::from_secs(10));
    fleet.start("w");
    fleet.write(20, 5, Duration::ZERO).await;
    let parent = sim.open_shards()[0].clone();
    sim.rotate(&parent).unwrap_or_else(|e| panic!("{e}"));
    fleet.write(20, 5, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(fleet.handle("w").status().ended_without_children.is_empty(), "not reported before the threshold");
    tokio::time::sleep(Duration::from_secs(30)).await;
    let reported = fleet.handle("w").status().ended_without_children;
    assert_eq!(reported.keys().collect::<Vec<_>>(), vec![&parent], "{reported:?}");
    assert!(reported[&parent] >= Duration::from_secs(30));
    // The children appear 240 s after the rotation: no longer reported, and processed.
    fleet.drain(Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(fleet.handle("w").status().ended_without_children.is_empty());
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
}

/// An iterator that stops advancing on a closed shard (empty reads, never its end) is
/// reported; with `ReleaseLease` the shard is released, and once reads advance again it is
/// processed to its end.
#[tokio::test(start_paused = true)]
async fn an_iterator_stuck_before_a_closed_shards_end_is_reported_and_released() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(35).initial_shards(1).build();
    let store = MemoryLeaseStore::new();
    let mut fleet = Fleet::new(sim.clone(), store.clone());
    fleet.tune = |b| {
        b.stall_threshold(Duration::from_secs(30))
            .on_stall(OnStall::ReleaseLease)
            .shard_sync_interval(Duration::from_secs(10))
    };
    let parent = sim.open_shards()[0].clone();
    fleet.write(30, 5, Duration::ZERO).await;
    sim.rotate(&parent).unwrap_or_else(|e| panic!("{e}"));
    sim.stick_reads(&parent, true).unwrap_or_else(|e| panic!("{e}"));
    fleet.start("w");
    tokio::time::sleep(Duration::from_secs(45)).await;
    let stalled = fleet.handle("w").status().shards.get(&parent).and_then(|s| s.stalled_for);
    let released = store.history().iter().any(|e| e.op == LeaseOp::Release && e.key.as_str() == parent.as_str());
    assert!(
        stalled.is_some() || released,
        "stuck reads on a closed shard went unnoticed: {:?}",
        fleet.handle("w").status()
    );
    assert_eq!(fleet.log.distinct_processed(), 0, "nothing could be read");
    sim.stick_reads(&parent, false).unwrap_or_else(|e| panic!("{e}"));
    fleet.write(10, 5, Duration::ZERO).await;
    fleet.drain(Duration::from_secs(120)).await;
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
}
