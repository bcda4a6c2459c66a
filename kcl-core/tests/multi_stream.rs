//! Several streams in one fleet ([`MultiStream`]) on the simulator, under paused time: the
//! leases of all streams share one lease store under namespaced keys, are balanced across
//! the workers together, follow each stream's own lineage through rollovers, fail over when
//! a worker crashes, and every change of every stream is delivered, in item order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{LEASE_DURATION, init_tracing, owners};
use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::recording::{DeliveryLog, RecordingProcessorFactory};
use kcl_core::testing::sim::{ChangeKind, StreamSimulator};
use kcl_core::{Config, Metrics, MultiStream, ShardId, StreamSource, Worker, WorkerHandle, WorkerId};
use tokio::task::JoinHandle;

const STREAMS: [&str; 3] = ["orders", "payments", "1:eu-west-1$1$audit$2026-12-03T00_00_00.000:1"];

struct Running {
    handle: WorkerHandle,
    task: JoinHandle<Result<(), kcl_core::WorkerError>>,
}

fn start(name: &str, source: &MultiStream<StreamSimulator>, store: &MemoryLeaseStore, log: &DeliveryLog) -> Running {
    let config = Config::builder("scenario").worker_id(name).lease_duration(LEASE_DURATION).build().unwrap();
    let factory = RecordingProcessorFactory::new(WorkerId::new(name), log.clone());
    let worker = Worker::with_metrics(config, source.clone(), store.clone(), factory, Metrics::unregistered());
    let handle = worker.handle();
    Running { handle, task: tokio::spawn(worker.run()) }
}

async fn wait_for(limit: Duration, what: &str, cond: impl Fn() -> bool) {
    let start = tokio::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} (simulated) waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn write(sims: &[StreamSimulator], round: usize) {
    for i in 0..40 {
        for (s, sim) in sims.iter().enumerate() {
            sim.write(&format!("{}-item-{:02}", STREAMS[s].len(), (i + round) % 25), ChangeKind::Modify);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every written record, as (namespaced shard, sequence number).
fn expected(sims: &[StreamSimulator]) -> BTreeSet<(ShardId, String)> {
    let mut out = BTreeSet::new();
    for (s, sim) in sims.iter().enumerate() {
        for r in sim.written() {
            out.insert((
                MultiStream::<StreamSimulator>::shard_id(STREAMS[s], &r.shard_id),
                r.sequence_number.to_string(),
            ));
        }
    }
    out
}

fn delivered(log: &DeliveryLog) -> BTreeSet<(ShardId, String)> {
    log.deliveries().into_iter().map(|d| (d.shard_id, d.sequence_number.to_string())).collect()
}

#[tokio::test(start_paused = true)]
async fn three_streams_share_one_fleet_through_rollovers_and_a_crash() {
    init_tracing();
    let sims: Vec<StreamSimulator> =
        (0..3).map(|i| StreamSimulator::builder().seed(40 + i).initial_shards(2).build()).collect();
    let source = MultiStream::new(STREAMS.iter().map(|n| (*n).to_owned()).zip(sims.iter().cloned()).collect()).unwrap();
    let store = MemoryLeaseStore::new();
    let log = DeliveryLog::new();
    let mut a = Some(start("a", &source, &store, &log));
    let b = start("b", &source, &store, &log);

    wait_for(Duration::from_secs(60), "six leases balanced 3/3", || {
        let o = owners(&store);
        o.get(&Some("a".into())) == Some(&3) && o.get(&Some("b".into())) == Some(&3)
    })
    .await;
    // Every lease key is a stream's name, ':' and that stream's shard id.
    for lease in store.leases().into_iter().filter(|l| !l.key.is_heartbeat()) {
        let shard = ShardId::new(lease.key.as_str());
        let stream = source.stream_of(&shard).unwrap_or_else(|| panic!("lease {} names no stream", lease.key.as_str()));
        let s = STREAMS.iter().position(|n| *n == stream).unwrap();
        let inner = &lease.key.as_str()[stream.len() + 1..];
        assert!(sims[s].shard_records(&ShardId::new(inner)).is_some(), "{inner} is a shard of {stream}");
    }

    write(&sims, 0).await;
    for sim in &sims {
        sim.rotate_all();
    }
    write(&sims, 7).await;
    a.take().unwrap().task.abort();
    write(&sims, 13).await;
    wait_for(Duration::from_secs(120), "every change of every stream delivered", || {
        delivered(&log).is_superset(&expected(&sims))
    })
    .await;
    assert_eq!(owners(&store).get(&Some("b".into())), Some(&6), "b took over a's leases of all streams");

    // Children are leased under their stream's namespace with namespaced parents.
    let listed = source.list_shards().await.unwrap();
    for shard in listed.iter().filter(|d| !d.parent_ids.is_empty()) {
        let lease = store.get_now(&kcl_core::LeaseKey::for_shard(&shard.id)).expect("a lease for every child");
        assert_eq!(lease.parent_shard_ids, shard.parent_ids);
        assert_eq!(source.stream_of(&shard.parent_ids[0]), source.stream_of(&shard.id));
    }
    // Per item, the first deliveries come in write order (streams do not mix up their items).
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for d in log.deliveries() {
        let version = d.version.expect("sim records carry versions");
        let seen = last.entry(format!("{}/{}", source.stream_of(&d.shard_id).unwrap(), d.key)).or_insert(0);
        if version > *seen {
            assert_eq!(version, *seen + 1, "item {} of {:?} skipped a version", d.key, d.shard_id);
            *seen = version;
        }
    }
    b.handle.shutdown(Duration::from_secs(25)).await;
    b.task.await.unwrap().unwrap();
}

#[test]
fn a_bad_stream_list_is_refused_with_the_fix() {
    let sim = StreamSimulator::with_shards(1);
    let err = MultiStream::new(vec![("orders".to_owned(), sim.clone()), ("orders".to_owned(), sim)]).unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
    let err = MultiStream::<StreamSimulator>::new(Vec::new()).unwrap_err();
    assert!(err.to_string().contains("at least one"), "{err}");
}
