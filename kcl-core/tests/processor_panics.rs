//! A processor that panics never leaves a zombie shard: a panic in any callback is a failure
//! of that call, handled by the failure policy like an `Err`, counted in
//! `kcl_processor_panics_total{callback}`; a consumer task that ends abnormally (here: a
//! factory that panics) has its lease released at once, counted in
//! `kcl_consumer_failures_total`. Each test fails when its handling is removed: the shard
//! would stop with its lease held and renewed.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::{ChangeKind, SimRecord, StreamSimulator};
use kcl_core::{
    Batch, Checkpointer, Config, ConfigBuilder, DeadLetter, DeadLetterError, DeadLetterSink, InitializeInput, Metrics,
    ProcessorError, RecordProcessor, SequenceNumber, ShardId, StreamRecord, Worker,
};

/// Where a [`Panicky`] processor panics.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Where {
    /// In `process_records`, on every batch holding the poison record.
    Poison,
    /// In the first `n` calls of `initialize` (of any shard).
    Initialize(u32),
    /// In the first `n` calls of `shard_ended`.
    ShardEnded(u32),
    /// In the factory, the first `n` times it makes a processor.
    Factory(u32),
}

/// Shared by every processor instance of one run.
#[derive(Clone, Default)]
struct Shared {
    processed: Arc<Mutex<Vec<SequenceNumber>>>,
    panics_left: Arc<AtomicU32>,
}

impl Shared {
    fn processed(&self) -> BTreeSet<SequenceNumber> {
        self.processed.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }
    /// True while panics are left to spend (and spends one).
    fn spend(&self) -> bool {
        self.panics_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

struct Panicky {
    at: Where,
    shared: Shared,
}

impl RecordProcessor<SimRecord> for Panicky {
    async fn initialize(&mut self, _: &InitializeInput) -> Result<(), ProcessorError> {
        if matches!(self.at, Where::Initialize(_)) && self.shared.spend() {
            panic!("initialize panics");
        }
        Ok(())
    }

    async fn process_records(
        &mut self,
        batch: &Batch<SimRecord>,
        cp: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        if self.at == Where::Poison && batch.records.iter().any(|r| r.key == "poison") {
            panic!("cannot handle the poison record");
        }
        let seqs = batch.records.iter().map(|r| r.sequence_number().clone());
        self.shared.processed.lock().unwrap_or_else(PoisonError::into_inner).extend(seqs);
        cp.checkpoint().await.map_err(|e| ProcessorError::new(e.to_string()))
    }

    async fn shard_ended(&mut self, _: &impl Checkpointer) {
        if matches!(self.at, Where::ShardEnded(_)) && self.shared.spend() {
            panic!("shard_ended panics");
        }
    }
}

/// Collects the sequence numbers of dead-lettered records.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<SequenceNumber>>>);

impl DeadLetterSink<SimRecord> for Sink {
    async fn send(&self, letter: &DeadLetter<'_, SimRecord>) -> Result<(), DeadLetterError> {
        let seqs = letter.records.iter().map(|r| r.sequence_number().clone());
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend(seqs);
        Ok(())
    }
}

struct Run {
    sim: StreamSimulator,
    poison: Option<SequenceNumber>,
    registry: prometheus::Registry,
    leases_held_at_end: usize,
}

impl Run {
    fn counter(&self, name: &str, label: Option<&str>) -> u64 {
        common::counter(&self.registry, name, label) as u64
    }
    fn written(&self, except: Option<&SequenceNumber>) -> BTreeSet<SequenceNumber> {
        self.sim.written().into_iter().map(|r| r.sequence_number).filter(|s| Some(s) != except).collect()
    }
}

/// One shard; 40 records (the 20th the poison), a split at 10 s, 40 more records on the
/// children; `secs` simulated seconds, then a graceful stop.
async fn run(at: Where, sink: Option<Sink>, tune: fn(ConfigBuilder) -> ConfigBuilder, secs: u64) -> (Run, Shared) {
    common::init_tracing();
    let sim = StreamSimulator::builder().seed(9).initial_shards(1).build();
    let mut poison = None;
    for i in 0..40 {
        let key = if i == 19 { "poison".to_owned() } else { format!("item-{i}") };
        let r = sim.write(&key, ChangeKind::Insert);
        if i == 19 {
            poison = Some(r.sequence_number);
        }
    }
    let shared = Shared::default();
    shared.panics_left.store(
        match at {
            Where::Initialize(n) | Where::ShardEnded(n) | Where::Factory(n) => n,
            Where::Poison => 0,
        },
        Ordering::SeqCst,
    );
    let config: Config = tune(
        Config::builder("panics")
            .worker_id("w")
            .lease_duration(Duration::from_secs(6))
            .retry_backoff(Duration::from_millis(100), Duration::from_secs(1)),
    )
    .build()
    .unwrap_or_else(|e| panic!("{e}"));
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).unwrap_or_else(|e| panic!("{e}"));
    let s = shared.clone();
    let factory = move |_: &ShardId| {
        if matches!(at, Where::Factory(_)) && s.spend() {
            panic!("the factory panics");
        }
        Panicky { at, shared: s.clone() }
    };
    let worker = Worker::with_metrics(config, sim.clone(), MemoryLeaseStore::new(), factory, metrics);
    let (handle, task) = match sink {
        Some(sink) => {
            let w = worker.with_dead_letter(sink);
            (w.handle(), tokio::spawn(w.run()))
        }
        None => (worker.handle(), tokio::spawn(worker.run())),
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    let open = sim.open_shards();
    let parent = open.first().cloned().unwrap_or_else(|| panic!("no open shard"));
    sim.split(&parent).unwrap_or_else(|e| panic!("{e}"));
    for i in 0..40 {
        sim.write(&format!("later-{i}"), ChangeKind::Insert);
    }
    tokio::time::sleep(Duration::from_secs(secs.saturating_sub(10))).await;
    let leases_held_at_end = handle.status().leases_held();
    handle.shutdown(Duration::from_secs(10)).await;
    task.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    (Run { sim, poison, registry, leases_held_at_end }, shared)
}

#[tokio::test(start_paused = true)]
async fn a_record_that_panics_is_dead_lettered_and_the_shard_keeps_moving() {
    let sink = Sink::default();
    let (run, shared) =
        run(Where::Poison, Some(sink.clone()), |b| b.max_retry_attempts(1).bisect_on_failure(true), 60).await;
    let poison = run.poison.clone().unwrap_or_else(|| panic!("no poison"));
    let letters = sink.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert_eq!(letters, vec![poison.clone()], "exactly the poison record is dead-lettered");
    assert_eq!(shared.processed(), run.written(Some(&poison)), "every other record, on the parent and the children");
    assert!(run.counter("kcl_processor_panics_total", Some("process_records")) >= 2, "panics are counted");
    assert_eq!(run.leases_held_at_end, 2, "both children are consumed");
}

#[tokio::test(start_paused = true)]
async fn by_default_a_panicking_batch_is_retried_like_an_error() {
    // Retried without end (the default): the poison record and everything after it wait, and
    // nothing is skipped; the shard shows the panic as its last error.
    let (run, shared) = run(Where::Poison, None, |b| b, 30).await;
    let poison = run.poison.clone().unwrap_or_else(|| panic!("no poison"));
    assert!(!shared.processed().contains(&poison));
    assert_eq!(run.counter("kcl_records_skipped_total", None), 0);
    assert!(run.counter("kcl_processor_panics_total", Some("process_records")) > 5, "retried many times");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_initialize_is_retried() {
    let (run, shared) = run(Where::Initialize(3), None, |b| b, 60).await;
    assert_eq!(shared.processed(), run.written(None), "every record, once initialize stops panicking");
    assert_eq!(run.counter("kcl_processor_panics_total", Some("initialize")), 3);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_shard_ended_is_retried_and_the_children_start() {
    let (run, shared) = run(Where::ShardEnded(2), None, |b| b, 60).await;
    assert_eq!(shared.processed(), run.written(None), "the children's records too");
    assert_eq!(run.counter("kcl_processor_panics_total", Some("shard_ended")), 2);
}

#[tokio::test(start_paused = true)]
async fn a_shard_ended_that_keeps_panicking_is_given_up_after_the_retries() {
    let (run, shared) = run(Where::ShardEnded(u32::MAX), None, |b| b.max_retry_attempts(2), 60).await;
    assert_eq!(shared.processed(), run.written(None), "the children start all the same");
    assert!(run.counter("kcl_processor_panics_total", Some("shard_ended")) >= 3);
}

#[tokio::test(start_paused = true)]
async fn a_consumer_whose_factory_panics_releases_its_lease_and_the_shard_is_consumed_again() {
    let (run, shared) = run(Where::Factory(1), None, |b| b, 60).await;
    assert_eq!(shared.processed(), run.written(None));
    assert_eq!(run.counter("kcl_consumer_failures_total", None), 1);
    assert_eq!(run.leases_held_at_end, 2);
}
