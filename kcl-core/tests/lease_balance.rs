//! Workers join and leave: a joiner takes its share within two take cycles, and a graceful
//! leave hands leases over with no duplicate deliveries.

mod common;

use std::time::Duration;

use common::{Fleet, LEASE_DURATION, init_tracing};
use kcl_core::testing::memory_store::{LeaseOp, MemoryLeaseStore};
use kcl_core::testing::sim::StreamSimulator;

#[tokio::test(start_paused = true)]
async fn joining_worker_is_balanced_within_two_take_cycles() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(2).initial_shards(30).build();
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.start("a");
    fleet.start("b");
    fleet.write(200, 50, Duration::from_millis(5)).await;
    fleet.wait_for(Duration::from_secs(60), "two workers balanced", |f| f.balanced()).await;

    fleet.start("c");
    // The take interval is the lease duration: two cycles.
    let took =
        fleet.wait_for(2 * LEASE_DURATION + Duration::from_secs(1), "c to get its share", |f| f.balanced()).await;
    assert_eq!(fleet.owners().get(&Some("c".to_owned())), Some(&10), "took {took:?}");
    fleet.write(200, 50, Duration::from_millis(5)).await;
    fleet.drain(Duration::from_secs(60)).await;
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
}

#[tokio::test(start_paused = true)]
async fn graceful_leave_hands_over_without_duplicates() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(3).initial_shards(8).build();
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.start("a");
    fleet.start("b");
    // Balanced in the table, and known to both: a worker that lost a lease to a steal learns
    // it at its next renewal, and may deliver one more batch of it until then (duplicates
    // that are not this test's subject).
    fleet
        .wait_for(Duration::from_secs(60), "balance, known to both", |f| {
            f.balanced() && ["a", "b"].iter().all(|w| f.handle(w).status().leases_held() == 4)
        })
        .await;
    fleet.write(400, 60, Duration::from_millis(5)).await;
    fleet.drain(Duration::from_secs(30)).await;

    let outcome = fleet.stop("b").await;
    assert_eq!(outcome, kcl_core::ShutdownOutcome::Graceful);
    // Released, not left to expire: a takes them at its next cycle, well before expiry.
    let took = fleet.wait_for(Duration::from_secs(30), "a to own everything", |f| f.balanced()).await;
    assert!(took <= LEASE_DURATION, "handoff took {took:?}");
    let history = fleet.store.history();
    assert!(history.iter().any(|e| e.op == LeaseOp::Release), "b released its leases");

    fleet.write(400, 60, Duration::from_millis(5)).await;
    fleet.drain(Duration::from_secs(30)).await;
    fleet.stop_all().await;
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.duplicates, 0, "a graceful handoff redelivers nothing: {:?}", report.stats);
    assert_eq!(report.stats.lost, 0);
}
