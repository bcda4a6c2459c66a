//! Renewals do not queue behind each other: one worker holds 10,000 leases on a lease table
//! whose calls take 2 s, and where some renewals never answer. The heartbeat has its own timer
//! and the lease renewals run with bounded concurrency, a new call starting as soon as any
//! answers: the worker neither fences itself nor loses a lease. Renewing in chunks that wait
//! for their slowest call (or the heartbeat behind the lease renewals) fails this test.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use kcl_core::testing::memory_store::{LeaseOp, MemoryLeaseStore};
use kcl_core::testing::recording::{DeliveryLog, RecordingProcessorFactory};
use kcl_core::testing::sim::{ChangeKind, StreamSimulator};
use kcl_core::{Config, LeaseKey, LeaseRenewal, Metrics, Worker, WorkerId};
use tokio::time::Instant;

const LEASES: usize = 10_000;
const LATENCY: Duration = Duration::from_secs(2);

#[tokio::test(start_paused = true)]
async fn ten_thousand_leases_on_a_slow_table_stay_renewed() {
    common::init_tracing();
    let sim = StreamSimulator::builder().seed(3).initial_shards(LEASES).build();
    let store = MemoryLeaseStore::new().with_full_history();
    let config = Config::builder("slow-table")
        .worker_id("w")
        // Idle shards poll rarely here: the test is about the lease table.
        .idle_wait(Duration::from_secs(30), Duration::from_secs(30))
        // Per-lease renewals (Java KCL's way, kept as an option): by default only the
        // heartbeat is renewed, and nothing here would be renewed at all.
        .lease_renewal(LeaseRenewal::EveryLease)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let fence = config.fence_after();
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).unwrap_or_else(|e| panic!("{e}"));
    let log = DeliveryLog::new();
    let factory = RecordingProcessorFactory::new(WorkerId::new("w"), log.clone());
    let worker = Worker::with_metrics(config, sim.clone(), store.clone(), factory, metrics);
    let handle = worker.handle();
    let task = tokio::spawn(worker.run());

    let deadline = Instant::now() + Duration::from_secs(120);
    while handle.status().leases_held() < LEASES {
        assert!(Instant::now() < deadline, "took {} of {LEASES} leases", handle.status().leases_held());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // From now on every call takes 2 s, and a few renewals never answer.
    store.set_latency(LATENCY);
    let hung: Vec<LeaseKey> =
        store.leases().into_iter().filter(|l| !l.key.is_heartbeat()).take(5).map(|l| l.key).collect();
    for key in &hung {
        store.hang_next_renewals(key, 2);
    }
    let slow_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(90)).await;
    let held = handle.status().leases_held();

    // Renewals as applied, per key: the gaps between them.
    let mut applied: HashMap<LeaseKey, Vec<Instant>> = HashMap::new();
    for e in store.history().into_iter().filter(|e| e.op == LeaseOp::Renew) {
        applied.entry(e.key).or_default().push(e.at);
    }
    // A lease (or the heartbeat) may deliver while its last successful renewal was *sent*
    // within the fencing window; a renewal is applied one latency after it is sent.
    let allowed_gap = fence - LATENCY;
    let mut worst: Option<(Duration, LeaseKey)> = None;
    let mut heartbeat_renewals = 0;
    for (key, times) in &applied {
        if key.is_heartbeat() {
            heartbeat_renewals = times.iter().filter(|t| **t > slow_from).count();
        }
        if hung.contains(key) {
            continue;
        }
        // Every gap that ends in the slow period (the first from the last renewal before it).
        for pair in times.windows(2).filter(|p| p[1] > slow_from) {
            let gap = pair[1] - pair[0];
            if worst.as_ref().is_none_or(|(w, _)| gap > *w) {
                worst = Some((gap, key.clone()));
            }
        }
    }
    let renewed =
        applied.iter().filter(|(k, times)| !k.is_heartbeat() && times.last().is_some_and(|t| *t > slow_from)).count();
    let (worst_gap, worst_key) = worst.unwrap_or_else(|| panic!("no renewal applied"));
    let worst_times: Vec<Duration> = applied[&worst_key].iter().map(|t| *t - slow_from).collect();
    println!("worst lease renewed at {worst_times:?} after the table turned slow");
    println!(
        "slow table: {renewed} leases renewed, worst gap {worst_gap:?} ({worst_key}), {heartbeat_renewals} heartbeat \
         renewals in 90 s, allowed gap {allowed_gap:?}"
    );
    assert_eq!(renewed, LEASES, "every lease was renewed, the hung ones too once their calls timed out");
    assert!(worst_gap < allowed_gap, "{worst_key} went {worst_gap:?} without a renewal (allowed {allowed_gap:?})");
    assert!(heartbeat_renewals >= 20, "the heartbeat kept its own pace: {heartbeat_renewals} in 90 s");
    assert_eq!(held, LEASES, "no lease lost");
    let lost = registry
        .gather()
        .iter()
        .find(|f| f.name() == "kcl_leases_lost_total")
        .map_or(0.0, |f| f.get_metric().iter().map(|m| m.get_counter().get_value()).sum::<f64>());
    assert_eq!(lost, 0.0);
    assert!(store.leases().iter().all(|l| l.key.is_heartbeat() || l.owner.as_ref().is_some_and(|o| o.as_str() == "w")));

    // And it still delivers: records written now arrive.
    store.set_latency(Duration::ZERO);
    for i in 0..200 {
        sim.write(&format!("k{i}"), ChangeKind::Insert);
    }
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(log.distinct_processed(), 200, "records written after the slow period are delivered");
    handle.shutdown(Duration::from_secs(30)).await;
    task.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
}
