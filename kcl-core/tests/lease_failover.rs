//! A worker crashes: its leases are taken over about one lease duration later, and nothing is
//! lost.

mod common;

use std::time::Duration;

use common::{Fleet, LEASE_DURATION, init_tracing};
use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::StreamSimulator;

#[tokio::test(start_paused = true)]
async fn crashed_worker_leases_fail_over_within_a_lease_duration() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(1).initial_shards(12).build();
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    for w in ["a", "b", "c"] {
        fleet.start(w);
    }
    fleet.write(300, 40, Duration::from_millis(10)).await;
    fleet.wait_for(Duration::from_secs(60), "balance", |f| f.balanced()).await;
    let victim_shards = fleet.owners().get(&Some("b".to_owned())).copied().unwrap_or(0);
    assert!(victim_shards >= 3, "b should hold its share before the crash: {:?}", fleet.owners());

    fleet.crash("b");
    let failover = fleet
        .wait_for(Duration::from_secs(60), "b's leases to move to a and c", |f| {
            f.owners().keys().all(|o| matches!(o.as_deref(), Some("a") | Some("c")))
        })
        .await;
    // Heartbeats are watched every second: a dead worker's leases move after about one lease
    // duration (plus the poll and one renewal period of slack), not after two scans.
    assert!(failover <= LEASE_DURATION + Duration::from_secs(3), "failover took {failover:?}");

    fleet.write(300, 40, Duration::from_millis(10)).await;
    fleet.drain(Duration::from_secs(60)).await;
    fleet.stop_all().await;
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.lost, 0);
}

/// Each worker reads a fixed number of items per poll (the heartbeats of its two ring
/// successors and the change notice), whatever the fleet size; and a dead worker's leases still
/// move to every survivor about a lease duration after it died.
#[tokio::test(start_paused = true)]
async fn heartbeat_reads_grow_with_the_fleet_and_failover_stays_fast() {
    use kcl_core::testing::memory_store::LeaseOpKind;
    init_tracing();
    let mut per_worker = Vec::new();
    for size in [3usize, 8] {
        let store = MemoryLeaseStore::new();
        let sim = StreamSimulator::builder().seed(7).initial_shards(4 * size).build();
        let mut fleet = Fleet::new(sim, store.clone());
        let names: Vec<String> = (0..size).map(|i| format!("w{i}")).collect();
        for n in &names {
            fleet.start(n);
        }
        fleet.wait_for(Duration::from_secs(120), "balance", Fleet::balanced).await;
        tokio::time::sleep(LEASE_DURATION).await;
        let before = store.stats().of(LeaseOpKind::Get).calls();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let gets = store.stats().of(LeaseOpKind::Get).calls() - before;
        per_worker.push((size, gets as usize / size));

        fleet.crash("w1");
        let failover = fleet
            .wait_for(Duration::from_secs(60), "w1's leases to move", |f| {
                f.owners().keys().all(|o| o.as_deref().is_some_and(|o| o != "w1"))
            })
            .await;
        println!(
            "{size} workers: {} lease-table reads (GetItem) per worker per minute; failover {failover:?}",
            gets as usize / size
        );
        assert!(failover <= LEASE_DURATION + Duration::from_secs(3), "{size} workers: failover took {failover:?}");
        fleet.stop_all().await;
        fleet.check().await.assert_ok();
    }
    let (small, large) = (per_worker[0].1, per_worker[1].1);
    assert!(large <= small + small / 10, "reads per worker grew with the fleet: {per_worker:?}");
    // Two heartbeats and the notice, once a second.
    assert!(large <= 3 * 60 + 10, "{per_worker:?}");
}
