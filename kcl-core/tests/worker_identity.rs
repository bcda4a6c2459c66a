//! Two processes with one worker id never both deliver a shard: a worker that finds a live
//! heartbeat of its own id (another incarnation) refuses to start with an error that names the
//! id and the fix, whichever started first; a restart after a crash (the old heartbeat no
//! longer renewed) starts and takes over the leftover leases.

mod common;

use std::time::Duration;

use common::{Fleet, LEASE_DURATION};
use kcl_core::testing::memory_store::{LeaseOp, MemoryLeaseStore};
use kcl_core::testing::recording::RecordingProcessorFactory;
use kcl_core::testing::sim::StreamSimulator;
use kcl_core::{Metrics, Worker, WorkerError, WorkerId};
use tokio::time::Instant;

fn fleet() -> Fleet {
    common::init_tracing();
    let sim = StreamSimulator::builder().seed(4).initial_shards(4).build();
    Fleet::new(sim, MemoryLeaseStore::new().with_full_history())
}

/// A second worker with `name`'s id, outside the fleet's map.
fn twin(fleet: &Fleet, name: &str) -> tokio::task::JoinHandle<Result<(), WorkerError>> {
    let factory = RecordingProcessorFactory::new(WorkerId::new(name), fleet.log.clone());
    let worker = Worker::with_metrics(
        fleet.config(name),
        fleet.sim.clone(),
        fleet.store.clone(),
        factory,
        Metrics::unregistered(),
    );
    tokio::spawn(worker.run())
}

fn refused(result: Result<(), WorkerError>, id: &str) {
    match result {
        Err(e @ WorkerError::DuplicateWorkerId { .. }) => {
            let text = e.to_string();
            assert!(text.contains(id) && text.contains("its own worker id"), "{text}");
        }
        other => panic!("expected a refusal for the duplicate id {id}, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_second_process_with_a_live_workers_id_refuses_to_start() {
    let mut fleet = fleet();
    fleet.start("w");
    fleet.wait_for(Duration::from_secs(30), "w holds every lease", |f| f.handle("w").status().leases_held() == 4).await;
    let takes_before = fleet.store.history().iter().filter(|e| e.op == LeaseOp::Take).count();
    let started = Instant::now();
    let result = tokio::time::timeout(LEASE_DURATION * 3, twin(&fleet, "w")).await;
    let result =
        result.unwrap_or_else(|_| panic!("the twin neither refused nor failed")).unwrap_or_else(|e| panic!("{e}"));
    refused(result, "w");
    assert!(started.elapsed() <= LEASE_DURATION + Duration::from_secs(2), "refused within a lease duration");
    tokio::time::sleep(LEASE_DURATION * 2).await;
    let takes_after = fleet.store.history().iter().filter(|e| e.op == LeaseOp::Take).count();
    assert_eq!(takes_before, takes_after, "no lease moved: the twin took nothing and the first lost nothing");
    assert_eq!(fleet.handle("w").status().leases_held(), 4);
    fleet.write(100, 20, Duration::from_millis(10)).await;
    fleet.drain(Duration::from_secs(30)).await;
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
}

#[tokio::test(start_paused = true)]
async fn two_processes_started_together_with_one_id_never_both_run() {
    // Whichever registers its heartbeat first may start (when the other was not there yet to
    // see); the other sees it renewed and refuses; when both see each other, both refuse.
    let mut fleet = fleet();
    let a = twin(&fleet, "w");
    let b = twin(&fleet, "w");
    let mut tasks = vec![a, b];
    let mut refusals = 0;
    let deadline = Instant::now() + LEASE_DURATION * 3;
    while Instant::now() < deadline && refusals < 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (done, running): (Vec<_>, Vec<_>) = tasks.into_iter().partition(|t| t.is_finished());
        tasks = running;
        for t in done {
            refused(t.await.unwrap_or_else(|e| panic!("{e}")), "w");
            refusals += 1;
        }
    }
    assert!(refusals >= 1, "one of the two must refuse");
    let takers: std::collections::BTreeSet<u64> =
        fleet.store.history().iter().filter(|e| e.op == LeaseOp::Take).map(|e| e.counter_after).collect();
    if refusals == 2 {
        assert!(takers.is_empty(), "neither took a lease");
    } else {
        // The one left runs alone: it holds every lease and delivers every record once.
        fleet
            .wait_for(Duration::from_secs(30), "the survivor holds every lease", |f| {
                f.store.leases().iter().filter(|l| !l.key.is_heartbeat()).all(|l| l.owner.is_some())
            })
            .await;
        fleet.write(100, 20, Duration::from_millis(10)).await;
        fleet.drain(Duration::from_secs(30)).await;
        for t in tasks {
            t.abort();
        }
        fleet.check().await.assert_ok();
    }
    println!("started together: {refusals} refused");
}

#[tokio::test(start_paused = true)]
async fn a_restart_after_a_crash_with_the_same_id_takes_over_its_leases() {
    let mut fleet = fleet();
    fleet.start("w");
    fleet.wait_for(Duration::from_secs(30), "w holds every lease", |f| f.handle("w").status().leases_held() == 4).await;
    fleet.write(100, 20, Duration::from_millis(10)).await;
    fleet.crash("w");
    fleet.start("w");
    let took = fleet
        .wait_for(LEASE_DURATION * 4, "the restarted w holds every lease", |f| {
            f.handle("w").status().leases_held() == 4
        })
        .await;
    println!("restart with the same id took its leases back after {took:?}");
    fleet.write(100, 20, Duration::from_millis(10)).await;
    fleet.drain(Duration::from_secs(30)).await;
    fleet.stop_all().await;
    fleet.check().await.assert_ok();
}

#[tokio::test(start_paused = true)]
async fn a_lease_the_table_gives_this_worker_without_a_consumer_is_not_left_to_expire() {
    // As after a take whose answer was lost: the table shows the worker as owner, but the
    // worker has no consumer for the lease. Here the worker is at its lease cap, so it releases
    // the lease; below the cap it takes it back.
    common::init_tracing();
    let sim = StreamSimulator::builder().seed(6).initial_shards(3).build();
    let mut fleet = Fleet::new(sim, MemoryLeaseStore::new());
    fleet.tune = |b| b.max_leases_per_worker(2);
    fleet.start("w");
    fleet.wait_for(Duration::from_secs(30), "w at its cap", |f| f.handle("w").status().leases_held() == 2).await;
    let mut orphan = fleet
        .store
        .leases()
        .into_iter()
        .find(|l| !l.key.is_heartbeat() && l.owner.is_none())
        .unwrap_or_else(|| panic!("one lease is left unowned"));
    orphan.owner = Some(WorkerId::new("w"));
    orphan.counter += 1;
    let key = orphan.key.clone();
    fleet.store.seed(orphan);
    let released = fleet
        .wait_for(LEASE_DURATION * 2, "the lease released", |f| {
            f.store.get_now(&key).is_some_and(|l| l.owner.is_none())
        })
        .await;
    println!("a lease owned without a consumer was released after {released:?}");
    fleet.stop_all().await;
}
