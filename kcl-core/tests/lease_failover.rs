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
