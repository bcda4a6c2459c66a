//! The failure policy: retries, maximum attempts and record age, bisecting, partial batch
//! failures, the processing timeout, the dead-letter destination, and stopping the shard.
//! Each test fails if its setting is ignored.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::{ChangeKind, SimRecord, StreamSimulator};
use kcl_core::{
    Batch, Checkpointer, Config, ConfigBuilder, DeadLetter, DeadLetterError, DeadLetterErrorKind, DeadLetterSink,
    Metrics, OnRetriesExhausted, ProcessorError, RecordProcessor, SequenceNumber, ShardId, ShardState, StreamRecord,
    Worker, WorkerStatus,
};
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Fail the whole batch when it holds the poison record.
    Fail,
    /// Report a partial failure at the poison record.
    Partial,
    /// Never return for a batch holding the poison record.
    Hang,
}

/// Processes every record except `poison`, while `broken` is set.
#[derive(Clone)]
struct Flaky {
    mode: Mode,
    poison: String,
    broken: Arc<AtomicBool>,
    processed: Arc<Mutex<Vec<SequenceNumber>>>,
    calls: Arc<AtomicU32>,
}

impl Flaky {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            poison: "poison".to_owned(),
            broken: Arc::new(AtomicBool::new(true)),
            processed: Arc::default(),
            calls: Arc::default(),
        }
    }
    fn processed(&self) -> Vec<SequenceNumber> {
        self.processed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl RecordProcessor<SimRecord> for Flaky {
    async fn process_records(
        &mut self,
        batch: &Batch<SimRecord>,
        cp: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let bad = batch.records.iter().position(|r| r.key == self.poison);
        if let (Some(i), true) = (bad, self.broken.load(Ordering::SeqCst)) {
            match self.mode {
                Mode::Fail => return Err(ProcessorError::new("poison record")),
                Mode::Partial => {
                    let good = batch.records[..i].iter().map(|r| r.sequence_number().clone());
                    self.processed.lock().unwrap_or_else(PoisonError::into_inner).extend(good);
                    return Err(ProcessorError::partial(batch.records[i].sequence_number().clone(), "poison record"));
                }
                Mode::Hang => std::future::pending::<()>().await,
            }
        }
        let seqs = batch.records.iter().map(|r| r.sequence_number().clone());
        self.processed.lock().unwrap_or_else(PoisonError::into_inner).extend(seqs);
        cp.checkpoint().await.map_err(|e| ProcessorError::new(e.to_string()))
    }
}

/// One dead letter as received: shard, records, attempts.
type Letter = (ShardId, Vec<SequenceNumber>, u32);

/// Collects dead letters; fails the first `fail_first` sends with `fail_kind`.
#[derive(Clone)]
struct Sink {
    letters: Arc<Mutex<Vec<Letter>>>,
    fail_first: Arc<AtomicU32>,
    fail_kind: DeadLetterErrorKind,
    /// When each send was made, and whether it failed.
    sends: Arc<Mutex<Vec<(Instant, bool)>>>,
}

impl Default for Sink {
    fn default() -> Self {
        Self::failing(DeadLetterErrorKind::Transient, 0)
    }
}

impl Sink {
    fn failing(kind: DeadLetterErrorKind, first: u32) -> Self {
        Self {
            letters: Arc::default(),
            fail_first: Arc::new(AtomicU32::new(first)),
            fail_kind: kind,
            sends: Arc::default(),
        }
    }
    fn records(&self) -> Vec<SequenceNumber> {
        self.letters.lock().unwrap_or_else(PoisonError::into_inner).iter().flat_map(|(_, r, _)| r.clone()).collect()
    }
    /// The waits after each failed send, until the next send.
    fn waits_after_failures(&self) -> Vec<Duration> {
        let sends = self.sends.lock().unwrap_or_else(PoisonError::into_inner);
        sends.windows(2).filter(|w| w[0].1).map(|w| w[1].0 - w[0].0).collect()
    }
    fn failures(&self) -> usize {
        self.sends.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|(_, failed)| *failed).count()
    }
}

impl DeadLetterSink<SimRecord> for Sink {
    async fn send(&self, letter: &DeadLetter<'_, SimRecord>) -> Result<(), DeadLetterError> {
        let fail = self.fail_first.load(Ordering::SeqCst) > 0;
        self.sends.lock().unwrap_or_else(PoisonError::into_inner).push((Instant::now(), fail));
        if fail {
            self.fail_first.fetch_sub(1, Ordering::SeqCst);
            return Err(DeadLetterError::new(self.fail_kind, "queue unavailable"));
        }
        let seqs = letter.records.iter().map(|r| r.sequence_number().clone()).collect();
        self.letters.lock().unwrap_or_else(PoisonError::into_inner).push((
            letter.shard_id.clone(),
            seqs,
            letter.attempts,
        ));
        Ok(())
    }
}

struct Run {
    sim: StreamSimulator,
    poison: SequenceNumber,
    status: WorkerStatus,
    registry: prometheus::Registry,
}

impl Run {
    /// The value of `kcl_dead_letter_failures_total{kind}`.
    fn dead_letter_failures(&self, kind: DeadLetterErrorKind) -> u64 {
        let families = self.registry.gather();
        let family = families.iter().find(|f| f.name() == "kcl_dead_letter_failures_total");
        let metrics = family.map(|f| f.get_metric()).unwrap_or_default();
        let metric = metrics.iter().find(|m| m.get_label().iter().any(|l| l.value() == kind.as_str()));
        metric.map_or(0, |m| m.get_counter().get_value() as u64)
    }
}

/// One shard with 100 records, the 50th of them poison; runs a worker for `secs` simulated
/// seconds with `tune` applied, then stops it gracefully.
async fn run(flaky: &Flaky, sink: Option<Sink>, tune: fn(ConfigBuilder) -> ConfigBuilder, secs: u64) -> Run {
    common::init_tracing();
    let sim = StreamSimulator::builder().seed(21).initial_shards(1).build();
    let mut poison = None;
    for i in 0..100 {
        let key = if i == 49 { "poison".to_owned() } else { format!("item-{i}") };
        let r = sim.write(&key, ChangeKind::Insert);
        if i == 49 {
            poison = Some(r.sequence_number);
        }
    }
    let config: Config = tune(
        Config::builder("policy").worker_id("w").retry_backoff(Duration::from_millis(100), Duration::from_secs(1)),
    )
    .build()
    .unwrap_or_else(|e| panic!("{e}"));
    let f = flaky.clone();
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).unwrap_or_else(|e| panic!("{e}"));
    let worker =
        Worker::with_metrics(config, sim.clone(), MemoryLeaseStore::new(), move |_: &ShardId| f.clone(), metrics);
    let (handle, task) = match sink {
        Some(sink) => {
            let w = worker.with_dead_letter(sink);
            (w.handle(), tokio::spawn(w.run()))
        }
        None => (worker.handle(), tokio::spawn(worker.run())),
    };
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let status = handle.status();
    handle.shutdown(Duration::from_secs(10)).await;
    task.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
    Run { sim, poison: poison.unwrap_or_else(|| panic!("no poison written")), status, registry }
}

fn all_but(run: &Run, except: &[SequenceNumber]) -> Vec<SequenceNumber> {
    run.sim.written().into_iter().map(|r| r.sequence_number).filter(|s| !except.contains(s)).collect()
}

fn sorted_unique(mut v: Vec<SequenceNumber>) -> Vec<SequenceNumber> {
    v.sort();
    v.dedup();
    v
}

#[tokio::test(start_paused = true)]
async fn by_default_a_failing_batch_is_retried_until_it_succeeds() {
    let flaky = Flaky::new(Mode::Fail);
    let broken = flaky.broken.clone();
    let healer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(20)).await;
        broken.store(false, Ordering::SeqCst);
    });
    let run = run(&flaky, None, |b| b, 40).await;
    healer.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(flaky.calls.load(Ordering::SeqCst) > 5, "retried many times");
    assert_eq!(sorted_unique(flaky.processed()), all_but(&run, &[]), "nothing skipped");
    assert_eq!(run.status.records_skipped + run.status.records_dead_lettered, 0);
}

#[tokio::test(start_paused = true)]
async fn max_retry_attempts_without_a_sink_skips_the_batch_loudly() {
    let flaky = Flaky::new(Mode::Fail);
    let run = run(&flaky, None, |b| b.max_retry_attempts(2), 30).await;
    // 3 calls on the failing batch (1 + 2 retries), then it is skipped and the rest flows.
    assert!(run.status.records_skipped > 0, "{:?}", run.status);
    let processed = sorted_unique(flaky.processed());
    assert!(!processed.contains(&run.poison));
    assert_eq!(processed.len() as u64 + run.status.records_skipped, 100, "skipped and processed add up");
}

#[tokio::test(start_paused = true)]
async fn bisecting_dead_letters_exactly_the_poison_record() {
    let flaky = Flaky::new(Mode::Fail);
    let sink = Sink::default();
    let run = run(&flaky, Some(sink.clone()), |b| b.max_retry_attempts(1).bisect_on_failure(true), 60).await;
    assert_eq!(sink.records(), vec![run.poison.clone()], "only the poison record");
    assert_eq!(sorted_unique(flaky.processed()), all_but(&run, std::slice::from_ref(&run.poison)));
    assert_eq!(run.status.records_dead_lettered, 1);
}

#[tokio::test(start_paused = true)]
async fn without_bisecting_the_whole_failing_batch_is_dead_lettered() {
    let flaky = Flaky::new(Mode::Fail);
    let sink = Sink::default();
    let run = run(&flaky, Some(sink.clone()), |b| b.max_retry_attempts(1), 30).await;
    assert!(sink.records().len() > 1 && sink.records().contains(&run.poison), "{:?}", sink.records().len());
}

#[tokio::test(start_paused = true)]
async fn a_partial_failure_checkpoints_before_the_failed_record_and_retries_from_it() {
    let flaky = Flaky::new(Mode::Partial);
    let sink = Sink::default();
    let run = run(&flaky, Some(sink.clone()), |b| b.max_retry_attempts(2).bisect_on_failure(true), 60).await;
    let processed = flaky.processed();
    // Records before the poison were handled once, never redelivered by the retries.
    let before: Vec<_> = processed.iter().filter(|s| **s < run.poison).collect();
    assert_eq!(before.len(), 49, "each record before the poison processed exactly once");
    assert_eq!(sink.records(), vec![run.poison.clone()]);
    assert_eq!(sorted_unique(processed), all_but(&run, std::slice::from_ref(&run.poison)));
}

#[tokio::test(start_paused = true)]
async fn a_hung_processor_is_cancelled_by_the_timeout() {
    let flaky = Flaky::new(Mode::Hang);
    let sink = Sink::default();
    let run = run(
        &flaky,
        Some(sink.clone()),
        |b| b.processing_timeout(Some(Duration::from_secs(2))).max_retry_attempts(1).bisect_on_failure(true),
        120,
    )
    .await;
    assert_eq!(sink.records(), vec![run.poison.clone()], "the hung record is dead-lettered");
    assert_eq!(sorted_unique(flaky.processed()), all_but(&run, std::slice::from_ref(&run.poison)));
}

#[tokio::test(start_paused = true)]
async fn max_record_age_gives_up_on_old_records_without_an_attempt_limit() {
    let flaky = Flaky::new(Mode::Fail);
    let sink = Sink::default();
    // The simulator's clock is in 2023, far behind now: every record is older than an hour.
    let run = run(&flaky, Some(sink.clone()), |b| b.max_record_age(Duration::from_secs(3600)), 20).await;
    assert!(sink.records().contains(&run.poison));
    let attempts = sink.letters.lock().unwrap_or_else(PoisonError::into_inner)[0].2;
    assert_eq!(attempts, 1, "given up at the first failure: the records were already too old");
}

#[tokio::test(start_paused = true)]
async fn stop_shard_keeps_retrying_instead_of_dead_lettering() {
    let flaky = Flaky::new(Mode::Fail);
    let sink = Sink::default();
    let run = run(
        &flaky,
        Some(sink.clone()),
        |b| b.max_retry_attempts(1).on_retries_exhausted(OnRetriesExhausted::StopShard),
        30,
    )
    .await;
    assert!(sink.records().is_empty(), "nothing dead-lettered");
    let processed = sorted_unique(flaky.processed());
    assert!(processed.iter().all(|s| *s < run.poison), "the shard stopped at the failing batch");
    assert!(flaky.calls.load(Ordering::SeqCst) > 5, "and kept retrying");
}

#[tokio::test(start_paused = true)]
async fn a_failing_sink_stops_the_shard_instead_of_skipping() {
    let flaky = Flaky::new(Mode::Fail);
    let sink = Sink::failing(DeadLetterErrorKind::Transient, 10);
    let run = run(&flaky, Some(sink.clone()), |b| b.max_retry_attempts(0).bisect_on_failure(true), 60).await;
    assert_eq!(sink.fail_first.load(Ordering::SeqCst), 0, "the sink was retried");
    assert_eq!(sink.records(), vec![run.poison.clone()], "and took the record in the end");
    assert_eq!(sorted_unique(flaky.processed()), all_but(&run, std::slice::from_ref(&run.poison)));
    assert_eq!(run.dead_letter_failures(DeadLetterErrorKind::Transient), 10, "each failure counted by its kind");
    // A passing fault is retried with the growing backoff, starting near its lower bound.
    let waits = sink.waits_after_failures();
    assert!(waits[0] < Duration::from_millis(500), "{waits:?}");
}

#[tokio::test(start_paused = true)]
async fn a_missing_destination_holds_the_shard_at_the_longest_backoff_until_it_is_created() {
    let flaky = Flaky::new(Mode::Fail);
    let sink = Sink::failing(DeadLetterErrorKind::NotFound, 6);
    let run = run(&flaky, Some(sink.clone()), |b| b.max_retry_attempts(0).bisect_on_failure(true), 60).await;
    // Nobody will create the queue within milliseconds: every send after a failure waits the
    // upper bound of `retry_backoff` (1 s here) instead of hammering it.
    let waits = sink.waits_after_failures();
    assert_eq!(waits.len(), 6, "{waits:?}");
    assert!(waits.iter().all(|w| *w >= Duration::from_secs(1)), "{waits:?}");
    assert_eq!(run.dead_letter_failures(DeadLetterErrorKind::NotFound), 6);
    // Once the queue exists, the record goes there and the shard goes on.
    assert_eq!(sink.records(), vec![run.poison.clone()]);
    assert_eq!(sorted_unique(flaky.processed()), all_but(&run, std::slice::from_ref(&run.poison)));
}

#[tokio::test(start_paused = true)]
async fn while_the_destination_refuses_access_the_shard_waits_and_says_so() {
    let flaky = Flaky::new(Mode::Fail);
    let sink = Sink::failing(DeadLetterErrorKind::AccessDenied, u32::MAX);
    let run = run(&flaky, Some(sink.clone()), |b| b.max_retry_attempts(0).bisect_on_failure(true), 40).await;
    assert!(sink.records().is_empty());
    let processed = sorted_unique(flaky.processed());
    assert!(processed.iter().all(|s| *s < run.poison), "nothing after the held record was delivered");
    assert_eq!(processed.len(), 49);
    assert_eq!(run.status.records_skipped + run.status.records_dead_lettered, 0, "nothing given up");
    let states: Vec<_> = run.status.shards.values().map(|s| s.state).collect();
    assert_eq!(states, vec![ShardState::WaitingOnDeadLetter], "{:?}", run.status);
    let failures = run.dead_letter_failures(DeadLetterErrorKind::AccessDenied);
    assert_eq!(failures, sink.failures() as u64);
    assert!(failures >= 20, "sent again about once a second: {failures}");
}
