//! A read whose answer cannot be decoded never stalls a shard without a word: the consumer
//! reads again with smaller limits down to one record, hands that record to the failure
//! policy (dead letter, a loud skip, or a stop of the shard) and reads on after it. A record
//! the source cannot name holds the shard loudly: its status carries the error and the stall
//! watchdog reports it. Each test fails when the isolation is removed.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::{ChangeKind, SimRecord, StreamSimulator};
use kcl_core::{
    Batch, Checkpointer, Config, ConfigBuilder, DeadLetter, DeadLetterError, DeadLetterSink, Metrics,
    OnRetriesExhausted, ProcessorError, RecordProcessor, SequenceNumber, ShardId, StreamRecord, Worker, WorkerStatus,
};

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<SequenceNumber>>>);

impl Recorder {
    fn seen(&self) -> BTreeSet<SequenceNumber> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }
}

impl RecordProcessor<SimRecord> for Recorder {
    async fn process_records(
        &mut self,
        batch: &Batch<SimRecord>,
        cp: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        let seqs = batch.records.iter().map(|r| r.sequence_number().clone());
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend(seqs);
        cp.checkpoint().await.map_err(|e| ProcessorError::new(e.to_string()))
    }
}

/// Collects the undecodable records it is sent, with the error and what was kept of them.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<(SequenceNumber, String, usize)>>>);

impl DeadLetterSink<SimRecord> for Sink {
    async fn send(&self, letter: &DeadLetter<'_, SimRecord>) -> Result<(), DeadLetterError> {
        if let Some(u) = letter.undecodable {
            let mut letters = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            letters.push((u.sequence_number.clone(), letter.error.to_owned(), u.raw.len()));
        }
        Ok(())
    }
}

struct Run {
    sim: StreamSimulator,
    bad: SequenceNumber,
    status: WorkerStatus,
    registry: prometheus::Registry,
}

impl Run {
    fn counter(&self, name: &str, label: Option<&str>) -> f64 {
        common::counter(&self.registry, name, label)
    }
    fn written_but_bad(&self) -> BTreeSet<SequenceNumber> {
        self.sim.written().into_iter().map(|r| r.sequence_number).filter(|s| *s != self.bad).collect()
    }
}

/// One shard with 300 records, the 150th undecodable (`named`: whether the source names it),
/// then 50 more after 20 s; runs `secs` simulated seconds with `tune`, `heal` makes the bad
/// record decodable again at 40 s.
async fn run(
    named: bool,
    sink: Option<Sink>,
    tune: fn(ConfigBuilder) -> ConfigBuilder,
    heal: bool,
    secs: u64,
    recorder: &Recorder,
) -> Run {
    common::init_tracing();
    let sim = StreamSimulator::builder().seed(5).initial_shards(1).build();
    let mut bad = None;
    for i in 0..300 {
        let r = sim.write(&format!("item-{i}"), ChangeKind::Insert);
        if i == 149 {
            bad = Some(r.sequence_number);
        }
    }
    let bad = bad.unwrap_or_else(|| panic!("no bad record"));
    sim.make_undecodable(&bad, Some(named));
    let config = tune(
        Config::builder("undecodable")
            .worker_id("w")
            .retry_backoff(Duration::from_millis(100), Duration::from_secs(2))
            .stall_threshold(Duration::from_secs(15)),
    )
    .build()
    .unwrap_or_else(|e| panic!("{e}"));
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).unwrap_or_else(|e| panic!("{e}"));
    let r = recorder.clone();
    let worker =
        Worker::with_metrics(config, sim.clone(), MemoryLeaseStore::new(), move |_: &ShardId| r.clone(), metrics);
    let (handle, task) = match sink {
        Some(sink) => {
            let w = worker.with_dead_letter(sink);
            (w.handle(), tokio::spawn(w.run()))
        }
        None => (worker.handle(), tokio::spawn(worker.run())),
    };
    tokio::time::sleep(Duration::from_secs(20)).await;
    for i in 0..50 {
        sim.write(&format!("later-{i}"), ChangeKind::Insert);
    }
    let mut status = None;
    if heal {
        tokio::time::sleep(Duration::from_secs(20)).await;
        status = Some(handle.status());
        sim.make_undecodable(&bad, None);
        tokio::time::sleep(Duration::from_secs(secs.saturating_sub(40))).await;
    } else {
        tokio::time::sleep(Duration::from_secs(secs.saturating_sub(20))).await;
    }
    let status = status.unwrap_or_else(|| handle.status());
    handle.shutdown(Duration::from_secs(10)).await;
    task.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    Run { sim, bad, status, registry }
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_record_is_isolated_dead_lettered_and_the_shard_moves_on() {
    let (sink, recorder) = (Sink::default(), Recorder::default());
    let run = run(true, Some(sink.clone()), |b| b, false, 60, &recorder).await;
    let letters = sink.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    let (seq, error, raw) = &letters[0];
    assert_eq!(seq, &run.bad, "the letter names exactly the undecodable record");
    assert!(error.contains("cannot decode") && *raw > 0, "{error} / {raw}");
    assert_eq!(recorder.seen(), run.written_but_bad(), "every other record, the later ones too");
    assert_eq!(run.counter("kcl_undecodable_records_total", None), 1.0);
    assert!(run.counter("kcl_get_records_errors_total", Some("undecodable")) >= 10.0, "halved down to one record");
    assert_eq!(run.status.records_dead_lettered, 1);
}

#[tokio::test(start_paused = true)]
async fn without_a_destination_an_undecodable_record_is_skipped_loudly() {
    let recorder = Recorder::default();
    let run = run(true, None, |b| b, false, 60, &recorder).await;
    assert_eq!(recorder.seen(), run.written_but_bad());
    assert_eq!(run.status.records_skipped, 1, "counted as skipped");
    assert_eq!(run.counter("kcl_records_skipped_total", None), 1.0);
}

#[tokio::test(start_paused = true)]
async fn with_stop_shard_the_shard_waits_at_the_record_loudly_and_loses_nothing() {
    let recorder = Recorder::default();
    let tune: fn(ConfigBuilder) -> ConfigBuilder = |b| b.on_retries_exhausted(OnRetriesExhausted::StopShard);
    let run = run(true, None, tune, true, 80, &recorder).await;
    // At 40 s, before the heal: held at the record, with the error shown and the stall reported.
    let shard = run.status.shards.values().next().unwrap_or_else(|| panic!("no shard held: {:?}", run.status));
    let error = shard.last_error.clone().unwrap_or_default();
    assert!(error.contains("undecodable"), "status shows the read error: {shard:?}");
    assert!(shard.stalled_for.is_some(), "the stall watchdog reports it: {shard:?}");
    assert!(shard.last_processed.as_ref().is_some_and(|l| *l < run.bad));
    // After the heal: everything, the record included.
    let mut all = run.written_but_bad();
    all.insert(run.bad.clone());
    assert_eq!(recorder.seen(), all);
    assert_eq!(run.status.records_skipped + run.status.records_dead_lettered, 0);
}

#[tokio::test(start_paused = true)]
async fn a_record_the_source_cannot_name_holds_the_shard_loudly() {
    let (sink, recorder) = (Sink::default(), Recorder::default());
    let run = run(false, Some(sink.clone()), |b| b, true, 80, &recorder).await;
    let shard = run.status.shards.values().next().unwrap_or_else(|| panic!("no shard held: {:?}", run.status));
    assert!(shard.last_error.as_deref().is_some_and(|e| e.contains("undecodable")), "{shard:?}");
    assert!(shard.stalled_for.is_some(), "{shard:?}");
    assert!(sink.0.lock().unwrap_or_else(PoisonError::into_inner).is_empty(), "nothing to dead-letter without a name");
    let mut all = run.written_but_bad();
    all.insert(run.bad.clone());
    assert_eq!(recorder.seen(), all, "once readable, nothing was lost");
}
