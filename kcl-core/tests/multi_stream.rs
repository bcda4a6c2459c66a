//! Several streams in one fleet ([`MultiStream`]) on the simulator, under paused time: the
//! leases of all streams share one lease store under namespaced keys, are balanced across
//! the workers together, follow each stream's own lineage through rollovers, fail over when
//! a worker crashes, and every change of every stream is delivered, in item order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{LEASE_DURATION, init_tracing, owners, wait_until};
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
    wait_until(limit, what, cond, String::new).await;
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

/// The value of `kcl_records_processed_total{stream=...}` in `registry`.
fn processed(registry: &kcl_core::prometheus::Registry, stream: &str) -> Option<f64> {
    let families = registry.gather();
    let family = families.iter().find(|f| f.name() == "kcl_records_processed_total")?;
    family
        .get_metric()
        .iter()
        .find(|m| m.get_label().iter().any(|l| l.name() == "stream" && l.value() == stream))
        .map(|m| m.get_counter().get_value())
}

/// A stream taken out of the configuration at a restart: its leases are left exactly as they
/// were (not taken, not balanced, not deleted), the other streams go on, and a worker
/// configured with it again continues it from its checkpoints. Records are counted per stream.
#[tokio::test(start_paused = true)]
async fn a_stream_removed_at_restart_is_left_alone_and_continued_when_added_back() {
    init_tracing();
    let sims: Vec<StreamSimulator> =
        (0..3).map(|i| StreamSimulator::builder().seed(70 + i).initial_shards(2).build()).collect();
    let named = |n: usize| -> MultiStream<StreamSimulator> {
        MultiStream::new(STREAMS.iter().take(n).map(|s| (*s).to_owned()).zip(sims.iter().cloned()).collect()).unwrap()
    };
    let store = MemoryLeaseStore::new();
    let log = DeliveryLog::new();
    let all = named(3);
    let first = start("a", &all, &store, &log);
    write(&sims, 0).await;
    wait_for(Duration::from_secs(60), "the first writes delivered", || delivered(&log).is_superset(&expected(&sims)))
        .await;
    first.handle.shutdown(Duration::from_secs(25)).await;
    first.task.await.unwrap().unwrap();
    let third = |store: &MemoryLeaseStore| -> Vec<kcl_core::Lease> {
        let mut l: Vec<_> = store.leases().into_iter().filter(|l| l.key.as_str().starts_with(STREAMS[2])).collect();
        l.sort_by(|a, b| a.key.cmp(&b.key));
        l
    };
    let before = third(&store);
    assert_eq!(before.len(), 2);
    let third_delivered =
        |log: &DeliveryLog| log.deliveries().iter().filter(|d| all.stream_of(&d.shard_id) == Some(STREAMS[2])).count();
    let delivered_before = third_delivered(&log);

    // Restart with two streams; the third keeps receiving writes.
    let two = named(2);
    let registry = kcl_core::prometheus::Registry::new();
    let config = Config::builder("scenario").worker_id("a").lease_duration(LEASE_DURATION).build().unwrap();
    let factory = RecordingProcessorFactory::new(WorkerId::new("a"), log.clone());
    let worker = Worker::new(config, two.clone(), store.clone(), factory, &registry).unwrap();
    let restarted = Running { handle: worker.handle(), task: tokio::spawn(worker.run()) };
    let deliveries_at_restart = log.deliveries().len();
    write(&sims, 5).await;
    let expected_two = |sims: &[StreamSimulator]| -> BTreeSet<(ShardId, String)> {
        expected(sims).into_iter().filter(|(s, _)| two.stream_of(s).is_some()).collect()
    };
    wait_for(Duration::from_secs(60), "the two configured streams delivered", || {
        delivered(&log).is_superset(&expected_two(&sims))
    })
    .await;
    // Several take cycles and shard syncs later, the third stream's leases are untouched.
    tokio::time::sleep(LEASE_DURATION * 6).await;
    assert_eq!(third(&store), before, "a worker without the stream changed its leases");
    assert_eq!(third_delivered(&log), delivered_before);
    assert_eq!(owners(&store).get(&Some("a".into())), Some(&4), "a holds every lease of its two streams");
    let since_restart = log.deliveries()[deliveries_at_restart..].to_vec();
    for (i, stream) in STREAMS.iter().take(2).enumerate() {
        let n = since_restart.iter().filter(|d| two.stream_of(&d.shard_id) == Some(stream)).count();
        assert!(n > 0, "stream {i} delivered nothing");
        assert_eq!(processed(&registry, stream), Some(n as f64), "records processed of {stream}");
    }
    assert_eq!(processed(&registry, STREAMS[2]), None, "no series for a stream not configured");

    // A worker configured with all three continues the third from its checkpoints: the
    // records written meanwhile arrive, and none of the third stream is delivered twice.
    let b = start("b", &all, &store, &log);
    wait_for(Duration::from_secs(120), "the third stream continued", || delivered(&log).is_superset(&expected(&sims)))
        .await;
    let third_records: Vec<_> = log
        .deliveries()
        .into_iter()
        .filter(|d| all.stream_of(&d.shard_id) == Some(STREAMS[2]))
        .map(|d| (d.shard_id, d.sequence_number.to_string()))
        .collect();
    let unique: BTreeSet<_> = third_records.iter().cloned().collect();
    assert_eq!(unique.len(), third_records.len(), "the third stream resumed at its checkpoints");
    for r in [restarted, b] {
        r.handle.shutdown(Duration::from_secs(25)).await;
        r.task.await.unwrap().unwrap();
    }
}

/// Collects the shard ids of the letters it gets.
#[derive(Clone, Default)]
struct Letters(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl kcl_core::DeadLetterSink<kcl_core::testing::sim::SimRecord> for Letters {
    async fn send(
        &self,
        letter: &kcl_core::DeadLetter<'_, kcl_core::testing::sim::SimRecord>,
    ) -> Result<(), kcl_core::DeadLetterError> {
        self.0.lock().unwrap().push(letter.shard_id.as_str().to_owned());
        Ok(())
    }
}

#[tokio::test]
async fn dead_letters_go_to_their_streams_sink_under_the_streams_shard_id() {
    use kcl_core::{DeadLetter, DeadLetterSink, MultiStreamSink};
    let (orders, audit) = (Letters::default(), Letters::default());
    let sink =
        MultiStreamSink::new(vec![("orders".to_owned(), orders.clone()), (STREAMS[2].to_owned(), audit.clone())])
            .unwrap();
    let records: Vec<kcl_core::testing::sim::SimRecord> = Vec::new();
    // (shard id as the worker names it, whether a sink takes it)
    let cases = [
        ("orders:shardId-1".to_owned(), true),
        (format!("{}:shardId-2", STREAMS[2]), true),
        ("payments:shardId-3".to_owned(), false),
        ("shardId-4".to_owned(), false),
    ];
    for (shard, taken) in &cases {
        let shard_id = ShardId::new(shard);
        let sent = sink.send(&DeadLetter::new(&shard_id, &records, 3, "failed")).await;
        assert_eq!(sent.is_ok(), *taken, "{shard}: {sent:?}");
        if let Err(e) = sent {
            assert!(e.to_string().contains("belongs to none of the streams"), "{e}");
        }
    }
    assert_eq!(*orders.0.lock().unwrap(), ["shardId-1"]);
    assert_eq!(*audit.0.lock().unwrap(), ["shardId-2"]);
}
