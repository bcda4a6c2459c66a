//! The lease table misbehaves: transient failures, a full outage, and one worker cut off
//! while the others keep their connection. Workers keep processing what they safely own,
//! self-fence when they cannot renew, and recover when the table comes back.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Fleet, LEASE_DURATION, Link, init_tracing};
use kcl_core::testing::memory_store::{LeaseOp, MemoryLeaseStore};
use kcl_core::testing::recording::{DeliveryOutcome, RecordingProcessorFactory};
use kcl_core::testing::sim::StreamSimulator;
use kcl_core::{Metrics, Worker, WorkerId};

#[tokio::test(start_paused = true)]
async fn transient_lease_table_failures_do_not_break_ownership() {
    init_tracing();
    let store = MemoryLeaseStore::new();
    let sim = StreamSimulator::builder().seed(9).initial_shards(9).build();
    let mut fleet = Fleet::new(sim, store.clone());
    for w in ["a", "b", "c"] {
        fleet.start(w);
    }
    store.set_error_rate(0.2, 9);
    store.set_ambiguous_write_rate(0.05);
    fleet.write(600, 60, Duration::from_millis(10)).await;
    fleet.drain(Duration::from_secs(120)).await;
    store.clear_faults();
    store.set_ambiguous_write_rate(0.0);
    fleet.stop_all().await;
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.lost, 0);
}

#[tokio::test(start_paused = true)]
async fn lease_table_outage_fences_every_worker_then_recovers() {
    init_tracing();
    let store = MemoryLeaseStore::new();
    let sim = StreamSimulator::builder().seed(10).initial_shards(4).build();
    let mut fleet = Fleet::new(sim, store.clone());
    fleet.start("a");
    fleet.start("b");
    fleet.wait_for(Duration::from_secs(60), "balance", |f| f.balanced()).await;
    fleet.write(100, 20, Duration::from_millis(10)).await;
    fleet.drain(Duration::from_secs(30)).await;

    let outage = tokio::time::Instant::now();
    store.set_unavailable(true);
    fleet.write(1000, 20, Duration::from_millis(30)).await; // 30 s of writes during the outage
    store.set_unavailable(false);
    let back = tokio::time::Instant::now();
    fleet.drain(Duration::from_secs(60)).await;

    let fence = fleet.config("a").fence_after();
    let during: Vec<_> = fleet
        .log
        .deliveries()
        .into_iter()
        .filter(|d| d.outcome == DeliveryOutcome::Processed && d.at > outage && d.at < back)
        .collect();
    assert!(!during.is_empty(), "workers keep processing what they safely own early in the outage");
    let late: Vec<_> = during.iter().filter(|d| d.at > outage + fence + Duration::from_millis(100)).collect();
    assert!(
        late.is_empty(),
        "{} deliveries after the fencing window, first at {:?}",
        late.len(),
        late.first().map(|d| d.at - outage)
    );
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
}

#[tokio::test(start_paused = true)]
async fn a_worker_cut_off_from_the_table_stops_before_its_leases_move_and_rejoins() {
    init_tracing();
    let store = MemoryLeaseStore::new();
    let sim = StreamSimulator::builder().seed(11).initial_shards(6).build();
    let mut fleet = Fleet::new(sim.clone(), store.clone());
    fleet.start("a");
    let cut = Arc::new(AtomicBool::new(false));
    let link = Link { inner: store.clone(), cut: cut.clone(), deaf: Default::default() };
    let factory = RecordingProcessorFactory::new(WorkerId::new("b"), fleet.log.clone());
    let b = Worker::with_metrics(fleet.config("b"), sim.clone(), link, factory, Metrics::unregistered());
    let b_handle = b.handle();
    let b_task = tokio::spawn(b.run());
    fleet
        .wait_for(Duration::from_secs(60), "b to hold half", |f| f.owners().get(&Some("b".to_owned())) == Some(&3))
        .await;
    fleet.write(100, 20, Duration::from_millis(10)).await;

    let cut_at = tokio::time::Instant::now();
    cut.store(true, Ordering::SeqCst);
    fleet.write(1500, 20, Duration::from_millis(20)).await; // 30 s cut off
    let moved = fleet.owners().get(&Some("a".to_owned())).copied();
    assert_eq!(moved, Some(6), "a took b's leases during the cut");
    cut.store(false, Ordering::SeqCst);
    // b comes back: it lost its leases, registers again and gets its share back.
    fleet.wait_for(Duration::from_secs(60), "b to rejoin", |f| f.owners().get(&Some("b".to_owned())) == Some(&3)).await;
    fleet.write(200, 20, Duration::from_millis(10)).await;
    fleet.drain(Duration::from_secs(60)).await;

    let b_late = fleet
        .log
        .deliveries()
        .into_iter()
        .filter(|d| {
            d.worker.as_str() == "b" && d.at > cut_at + fleet.config("b").fence_after() + Duration::from_millis(100)
        })
        .filter(|d| d.at < cut_at + Duration::from_secs(30))
        .count();
    assert_eq!(b_late, 0, "b delivered after its fencing window while cut off");
    assert!(LEASE_DURATION > fleet.config("b").fence_after());
    b_handle.shutdown(Duration::from_secs(25)).await;
    b_task.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    fleet.stop_all().await;
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.lost, 0);
}

/// A worker judged dead that comes back registers a new incarnation, and peers must treat it
/// as alive even if they still remember it as dead. Here a judges b dead and takes its leases,
/// then a is cut off before it scans again while b comes back and takes everything; when a
/// returns, it must not delete b's new heartbeat nor take b's leases as expired (only steal its
/// fair share).
#[tokio::test(start_paused = true)]
async fn a_worker_judged_dead_is_alive_again_once_it_registers_anew() {
    init_tracing();
    let store = MemoryLeaseStore::new().with_full_history();
    let sim = StreamSimulator::builder().seed(12).initial_shards(4).build();
    let mut fleet = Fleet::new(sim.clone(), store.clone());
    fleet.start("a");
    fleet.start("b");
    fleet.wait_for(Duration::from_secs(60), "an even split", Fleet::balanced).await;
    fleet.write(100, 20, Duration::from_millis(10)).await;
    let owns = |f: &Fleet, w: &str, n: usize| f.owners().get(&Some(w.to_owned())) == Some(&n);

    fleet.set_cut("b", true);
    fleet.wait_for(Duration::from_secs(30), "a to take b's leases", |f| owns(f, "a", 4)).await;
    fleet.set_cut("a", true);
    fleet.set_cut("b", false);
    fleet.wait_for(Duration::from_secs(30), "b to take a's leases", |f| owns(f, "b", 4)).await;
    let a_back = tokio::time::Instant::now();
    fleet.set_cut("a", false);
    fleet.write(1500, 20, Duration::from_millis(20)).await; // 3 lease durations

    let from_b: Vec<_> = store
        .history()
        .into_iter()
        .filter(|e| e.at > a_back && e.owner_before.as_ref().map(WorkerId::as_str) == Some("b"))
        .filter(|e| matches!(e.op, LeaseOp::Delete | LeaseOp::Take | LeaseOp::Release))
        .collect();
    let heartbeats_removed = from_b.iter().filter(|e| e.key.is_heartbeat()).count();
    let taken = from_b.iter().filter(|e| e.op == LeaseOp::Take).count();
    // a asks b for its share, and b hands it over (releases it): nothing is taken from b.
    let handed_over = from_b.iter().filter(|e| e.op == LeaseOp::Release).count();
    assert_eq!(heartbeats_removed, 0, "a removed the heartbeat of the live b: {from_b:#?}");
    assert_eq!((taken, handed_over), (0, 2), "b should hand over exactly a's fair share: {from_b:#?}");
    assert!(fleet.balanced(), "{:?}", fleet.owners());
    fleet.drain(Duration::from_secs(60)).await;
    fleet.stop_all().await;
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.lost, 0);
}
