//! Balancing by handoff, and leases that are not rewritten while nothing changes.
//!
//! A worker under target asks a live owner for a lease; the owner checkpoints, hands it over
//! and the asker starts at that checkpoint: no record is delivered twice. A request to a
//! worker that died is answered by the usual failover; one to a worker that renews its
//! heartbeat but ignores requests is given up after a lease duration and the lease taken.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Fleet, LEASE_DURATION, init_tracing};
use kcl_core::testing::memory_store::{LeaseEvent, LeaseOp, MemoryLeaseStore};
use kcl_core::testing::sim::StreamSimulator;
use kcl_core::{LeaseRenewal, WorkerId};
use tokio::time::Instant;

fn named(w: &Option<WorkerId>) -> Option<&str> {
    w.as_ref().map(WorkerId::as_str)
}

/// Shard-lease takes after `since`, by (taker, previous owner).
fn takes(history: &[LeaseEvent], since: Instant) -> BTreeMap<(String, Option<String>), usize> {
    let mut out = BTreeMap::new();
    for e in history.iter().filter(|e| e.at >= since && e.op == LeaseOp::Take && !e.key.is_heartbeat()) {
        let to = named(&e.owner_after).unwrap_or("-").to_owned();
        *out.entry((to, named(&e.owner_before).map(str::to_owned))).or_insert(0) += 1;
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_steal_is_handed_over_without_duplicates() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(21).initial_shards(12).build();
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.start("a");
    fleet.start("b");
    fleet.wait_for(Duration::from_secs(60), "two workers balanced", Fleet::balanced).await;
    fleet.write(200, 40, Duration::from_millis(5)).await;
    fleet.drain(Duration::from_secs(30)).await;

    let joined = Instant::now();
    fleet.start("c");
    // Changes keep coming while c asks for its share and a and b hand it over.
    fleet.write(2000, 40, Duration::from_millis(5)).await;
    let took = fleet.wait_for(Duration::from_secs(60), "c to get its share", Fleet::balanced).await;
    fleet.drain(Duration::from_secs(60)).await;
    let history = fleet.store.history();
    fleet.stop_all().await;

    let moved = takes(&history, joined);
    println!("c balanced {took:?} after joining; takes since: {moved:?}");
    assert_eq!(moved.get(&("c".to_owned(), None)), Some(&4), "c took 4 handed-over leases: {moved:?}");
    assert!(moved.keys().all(|(_, from)| from.is_none()), "no lease was taken from a live owner: {moved:?}");
    let releases = history.iter().filter(|e| e.at >= joined && e.op == LeaseOp::Release).count();
    assert_eq!(releases, 4, "a and b released exactly c's share");
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.duplicates, 0, "a handed-over lease redelivers nothing: {:?}", report.stats);
    assert_eq!(report.stats.lost, 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_to_a_dead_owner_ends_in_failover() {
    init_tracing();
    let store = MemoryLeaseStore::new();
    let sim = StreamSimulator::builder().seed(22).initial_shards(8).build();
    let mut fleet = Fleet::new(sim, store.clone());
    fleet.start("a");
    fleet.start("b");
    fleet.wait_for(Duration::from_secs(60), "two workers balanced", Fleet::balanced).await;
    fleet.write(200, 40, Duration::from_millis(5)).await;

    // b's heartbeat renewals stop answering from now on: b will never read c's request, and
    // fences itself; peers judge it dead a lease duration after its last renewal.
    let b_heartbeat = store
        .leases()
        .into_iter()
        .find(|l| l.key.is_heartbeat() && named(&l.owner) == Some("b"))
        .unwrap_or_else(|| panic!("no heartbeat of b"))
        .key;
    store.hang_next_renewals(&b_heartbeat, u32::MAX);
    let hung = Instant::now();
    fleet.start("c");
    let asked = fleet
        .wait_for(Duration::from_secs(30), "c to ask b", |f| {
            f.store.get_now(&b_heartbeat).is_some_and(|hb| !hb.handoff_requests.is_empty())
        })
        .await;
    fleet.write(1000, 40, Duration::from_millis(5)).await;
    let took = fleet
        .wait_for(3 * LEASE_DURATION, "a and c to own b's leases", |f| {
            f.owners().keys().all(|o| matches!(o.as_deref(), Some("a" | "c")))
        })
        .await;
    println!("c asked after {asked:?}; b's leases all moved {took:?} later");
    let b_late = fleet
        .log
        .deliveries()
        .into_iter()
        .filter(|d| d.worker.as_str() == "b" && d.at > hung + fleet.config("b").fence_after())
        .count();
    assert_eq!(b_late, 0, "b delivered after its fencing window");
    fleet.crash("b");
    fleet.drain(Duration::from_secs(60)).await;
    fleet.stop_all().await;
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.lost, 0);
}

#[tokio::test(start_paused = true)]
async fn an_owner_that_ignores_requests_loses_the_lease_after_a_lease_duration() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(23).initial_shards(8).build();
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.start("a");
    fleet
        .wait_for(Duration::from_secs(60), "a to own everything", |f| f.owners().get(&Some("a".to_owned())) == Some(&8))
        .await;
    // a renews its heartbeat but never sees a request (an old version, or a bug).
    fleet.deaf["a"].store(true, Ordering::SeqCst);
    let joined = Instant::now();
    fleet.start("b");
    fleet.write(1500, 40, Duration::from_millis(10)).await;
    let took = fleet.wait_for(Duration::from_secs(60), "b to get its share", Fleet::balanced).await;
    fleet.drain(Duration::from_secs(60)).await;
    let history = fleet.store.history();
    fleet.stop_all().await;

    let moved = takes(&history, joined);
    println!("b balanced {took:?} after joining; takes since: {moved:?}");
    assert_eq!(moved.get(&("b".to_owned(), Some("a".to_owned()))), Some(&4), "b took its share from a: {moved:?}");
    let first_take = history
        .iter()
        .filter(|e| e.op == LeaseOp::Take && named(&e.owner_after) == Some("b") && !e.key.is_heartbeat())
        .map(|e| e.at - joined)
        .min();
    println!("b's first take {first_take:?} after joining");
    assert!(
        first_take.is_some_and(|t| t >= LEASE_DURATION),
        "b waited a lease duration for an answer first ({first_take:?})"
    );
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.lost, 0);
}

/// An owner that cannot answer for a while (paused, or cut off from the table for less than a
/// lease duration) fences itself, then reads the request with its first renewal and hands the
/// lease over: still no steal, and no record delivered twice.
#[tokio::test(start_paused = true)]
async fn an_owner_paused_when_asked_answers_once_back() {
    init_tracing();
    let sim = StreamSimulator::builder().seed(25).initial_shards(8).build();
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.start("a");
    fleet
        .wait_for(Duration::from_secs(60), "a to own everything", |f| f.owners().get(&Some("a".to_owned())) == Some(&8))
        .await;
    fleet.write(200, 40, Duration::from_millis(5)).await;
    fleet.set_cut("a", true);
    let joined = Instant::now();
    fleet.start("b");
    fleet.write(600, 40, Duration::from_millis(10)).await; // 6 s: a is away for most of b's wait
    fleet.set_cut("a", false);
    fleet.write(1000, 40, Duration::from_millis(10)).await;
    let took = fleet.wait_for(Duration::from_secs(60), "b to get its share", Fleet::balanced).await;
    fleet.drain(Duration::from_secs(60)).await;
    let history = fleet.store.history();
    fleet.stop_all().await;

    let moved = takes(&history, joined);
    println!("b balanced {took:?} after a came back; takes since b joined: {moved:?}");
    assert_eq!(moved.get(&("b".to_owned(), None)), Some(&4), "a handed 4 leases over once back: {moved:?}");
    assert!(moved.keys().all(|(_, from)| from.is_none()), "nothing was taken from a: {moved:?}");
    let report = fleet.check().await;
    report.assert_ok();
    assert_eq!(report.stats.duplicates, 0, "{:?}", report.stats);
    assert_eq!(report.stats.lost, 0);
}

/// Lease-table writes in steady state: the heartbeats only, whatever the number of leases.
#[tokio::test(start_paused = true)]
async fn idle_leases_are_not_rewritten() {
    init_tracing();
    let mut figures = Vec::new();
    for renewal in [LeaseRenewal::Heartbeat, LeaseRenewal::EveryLease] {
        let sim = StreamSimulator::builder().seed(24).initial_shards(200).build();
        let store = MemoryLeaseStore::new().with_full_history();
        let mut fleet = Fleet::new(sim, store.clone());
        fleet.tune = match renewal {
            LeaseRenewal::EveryLease => |b| b.lease_renewal(LeaseRenewal::EveryLease),
            _ => |b| b,
        };
        fleet.start("a");
        fleet.start("b");
        fleet.wait_for(Duration::from_secs(60), "two workers balanced", Fleet::balanced).await;
        fleet.write(400, 100, Duration::ZERO).await;
        fleet.drain(Duration::from_secs(60)).await;
        // Settle (the last checkpoints), then count ten minutes of an idle fleet.
        tokio::time::sleep(LEASE_DURATION).await;
        let from = Instant::now();
        tokio::time::sleep(Duration::from_secs(600)).await;
        let history = store.history();
        let window: Vec<&LeaseEvent> = history.iter().filter(|e| e.at >= from).collect();
        let lease_writes = window.iter().filter(|e| !e.key.is_heartbeat()).count();
        let heartbeat_writes = window.iter().filter(|e| e.key.is_heartbeat()).count();
        figures.push((renewal, lease_writes, heartbeat_writes));
        fleet.stop_all().await;
        fleet.check().await.assert_ok();
    }
    println!("10 idle minutes, 2 workers, 200 leases: (mode, shard-lease writes, heartbeat writes) {figures:?}");
    let (_, lease_writes, heartbeat_writes) = figures[0];
    assert_eq!(lease_writes, 0, "no shard lease is written while nothing changes");
    // Two heartbeats, each renewed every lease duration / 3.
    let expected = (2.0 * 600.0 / (LEASE_DURATION.as_secs_f64() / 3.0)) as usize;
    assert!(heartbeat_writes.abs_diff(expected) <= 4, "{heartbeat_writes} heartbeat writes, expected about {expected}");
    let (_, kcl_style, _) = figures[1];
    assert!(kcl_style > 200 * 100, "the KCL-style mode renews every lease: {kcl_style} writes");
}
