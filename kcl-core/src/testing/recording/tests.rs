#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use super::*;
use crate::checkpoint::CheckpointError;
use crate::testing::sim::record::ChangeKind;

/// A checkpointer that answers like the lease-backed one: `checkpoint()` targets the last
/// record the test says was delivered.
#[derive(Default)]
struct FakeCheckpointer {
    last_delivered: Mutex<Option<SequenceNumber>>,
    written: Mutex<Vec<SequenceNumber>>,
}

impl FakeCheckpointer {
    fn deliver(&self, batch: &Batch<SimRecord>) {
        *self.last_delivered.lock().unwrap() = batch.last_sequence_number().cloned();
    }
    fn written(&self) -> Vec<u128> {
        self.written.lock().unwrap().iter().map(|s| s.as_str().parse().unwrap()).collect()
    }
}

impl Checkpointer for FakeCheckpointer {
    async fn checkpoint(&self) -> Result<(), CheckpointError> {
        let last = self.last_delivered.lock().unwrap().clone();
        let seq = last.ok_or(CheckpointError::NothingDelivered)?;
        self.written.lock().unwrap().push(seq);
        Ok(())
    }
    async fn checkpoint_at(&self, sequence_number: &SequenceNumber) -> Result<(), CheckpointError> {
        self.written.lock().unwrap().push(sequence_number.clone());
        Ok(())
    }
}

fn record(seq: u128, key: &str, version: u64) -> SimRecord {
    SimRecord {
        sequence_number: SequenceNumber::from_u128(seq),
        shard_id: ShardId::new("shard-1"),
        key: key.to_owned(),
        kind: ChangeKind::Modify,
        version,
        created_at: SystemTime::UNIX_EPOCH,
    }
}

fn batch(seqs: &[u128]) -> Batch<SimRecord> {
    Batch {
        shard_id: ShardId::new("shard-1"),
        records: seqs.iter().map(|&s| record(s, &format!("k{s}"), 1)).collect(),
        lag: None,
        lane: 0,
    }
}

async fn start(factory: &RecordingProcessorFactory) -> RecordingProcessor {
    let shard = ShardId::new("shard-1");
    let mut p = factory.create(&shard);
    p.initialize(&InitializeInput { shard_id: shard, checkpoint: Checkpoint::TrimHorizon, lane: 0 }).await.unwrap();
    p
}

/// Feeds `batches` to a fresh processor; returns the log, what was checkpointed and the
/// results of `process_records`.
async fn run(factory: RecordingProcessorFactory, batches: &[&[u128]]) -> (DeliveryLog, FakeCheckpointer, Vec<bool>) {
    let mut p = start(&factory).await;
    let cp = FakeCheckpointer::default();
    let mut results = Vec::new();
    for seqs in batches {
        let b = batch(seqs);
        cp.deliver(&b);
        results.push(p.process_records(&b, &cp).await.is_ok());
    }
    (factory.log().clone(), cp, results)
}

fn factory() -> RecordingProcessorFactory {
    RecordingProcessorFactory::new(WorkerId::new("w1"), DeliveryLog::new())
}

#[tokio::test]
async fn checkpoint_policies() {
    let cases: [(CheckpointPolicy, Vec<u128>); 4] = [
        (CheckpointPolicy::EveryBatch, vec![2, 4, 6]),
        (CheckpointPolicy::EveryNBatches(2), vec![4]),
        (CheckpointPolicy::EveryNBatches(0), vec![2, 4, 6]),
        (CheckpointPolicy::Never, vec![]),
    ];
    for (policy, want) in cases {
        let (log, cp, results) = run(factory().checkpoint_policy(policy), &[&[1, 2], &[3, 4], &[5, 6]]).await;
        assert_eq!(results, [true, true, true], "{policy:?}");
        assert_eq!(cp.written(), want, "{policy:?}");
        assert_eq!(log.checkpoint_calls().len(), want.len(), "{policy:?}");
        assert!(log.checkpoint_calls().iter().all(|c| c.result.is_ok()), "{policy:?}");
        assert_eq!(log.processed_count(), 6, "{policy:?}");
    }
}

#[tokio::test]
async fn logs_every_record_in_order() {
    let (log, _, _) = run(factory(), &[&[1, 2, 3], &[4]]).await;
    let seqs: Vec<String> = log.deliveries().iter().map(|d| d.sequence_number.to_string()).collect();
    assert_eq!(seqs, ["1", "2", "3", "4"]);
    let d = &log.deliveries()[0];
    assert_eq!((d.worker.as_str(), d.shard_id.as_str(), d.key.as_str(), d.version), ("w1", "shard-1", "k1", Some(1)));
    assert_eq!(log.lifecycle()[0].kind, LifecycleKind::Initialized(Checkpoint::TrimHorizon));
    assert!(matches!(log.entries()[0], LogEntry::Lifecycle(_)));
    assert_eq!((log.distinct_processed(), log.duplicate_count(), log.failed_count()), (4, 0, 0));
    assert_eq!(log.processed_by(&WorkerId::new("w1")), 4);
    assert_eq!(log.processed_by(&WorkerId::new("w2")), 0);
}

#[tokio::test]
async fn injected_failures_fail_the_batch_and_skip_checkpoints() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    // Record 3 fails the first time only.
    let f = factory().fail_when(move |r: &SimRecord| {
        r.sequence_number.as_str() == "3" && counter.fetch_add(1, Ordering::SeqCst) == 0
    });
    let (log, cp, results) = run(f, &[&[1, 2], &[3, 4], &[3, 4]]).await;
    assert_eq!(results, [true, false, true]);
    assert_eq!(cp.written(), [2, 4]);
    let outcomes: Vec<DeliveryOutcome> = log.deliveries().iter().map(|d| d.outcome).collect();
    use DeliveryOutcome::{Failed, Processed};
    assert_eq!(outcomes, [Processed, Processed, Failed, Failed, Processed, Processed]);
    assert_eq!((log.processed_count(), log.failed_count(), log.distinct_processed()), (4, 2, 4));
}

#[tokio::test]
async fn final_checkpoints_name_the_last_processed_record() {
    let f = factory().fail_when(|r: &SimRecord| r.sequence_number.as_str() == "9");
    let mut p = start(&f).await;
    let cp = FakeCheckpointer::default();
    for seqs in [&[1, 2][..], &[9]] {
        let b = batch(seqs);
        cp.deliver(&b);
        let _ = p.process_records(&b, &cp).await;
    }
    // After a failed batch `checkpoint()` would pass the failed record: 2, not 9.
    p.shutdown_requested(&cp).await;
    assert_eq!(cp.written(), [2, 2]);
    p.shard_ended(&cp).await;
    p.lease_lost().await;
    let kinds: Vec<LifecycleKind> = f.log().lifecycle().into_iter().map(|l| l.kind).collect();
    assert_eq!(
        kinds,
        [
            LifecycleKind::Initialized(Checkpoint::TrimHorizon),
            LifecycleKind::ShutdownRequested,
            LifecycleKind::ShardEnded,
            LifecycleKind::LeaseLost
        ]
    );
    let last = f.log().checkpoint_calls().pop().unwrap();
    assert_eq!(last.sequence_number, Some(SequenceNumber::from_u128(2)));
}

#[tokio::test]
async fn shutdown_before_any_batch_logs_nothing_delivered() {
    let f = factory();
    let mut p = start(&f).await;
    p.shutdown_requested(&FakeCheckpointer::default()).await;
    let calls = f.log().checkpoint_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].sequence_number, None);
    assert!(calls[0].result.as_ref().is_err_and(|e| e.contains("nothing")));
    // `Never` does not even try.
    let f = factory().checkpoint_policy(CheckpointPolicy::Never);
    let mut p = start(&f).await;
    p.shutdown_requested(&FakeCheckpointer::default()).await;
    assert!(f.log().checkpoint_calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn processing_delay_uses_tokio_time() {
    let started = Instant::now();
    let (log, _, _) = run(factory().processing_delay(Duration::from_secs(5)), &[&[1], &[2]]).await;
    assert_eq!(started.elapsed(), Duration::from_secs(10));
    let times: Vec<Duration> = log.deliveries().iter().map(|d| d.at - started).collect();
    // Deliveries are stamped when the batch arrives, before the delay.
    assert_eq!(times, [Duration::ZERO, Duration::from_secs(5)]);
    let call = &log.checkpoint_calls()[0];
    assert_eq!(call.at - started, Duration::from_secs(5));
}

#[test]
fn log_is_shared_between_clones() {
    let log = DeliveryLog::new();
    let other = log.clone();
    assert!(log.is_empty());
    other.push(LifecycleEvent {
        worker: WorkerId::new("w"),
        shard_id: ShardId::new("s"),
        at: Instant::now(),
        kind: LifecycleKind::LeaseLost,
    });
    assert_eq!(log.len(), 1);
    assert_eq!(log.lifecycle().len(), 1);
    assert!(log.deliveries().is_empty() && log.checkpoint_calls().is_empty());
}

#[test]
fn debug_hides_the_predicate() {
    let f = factory().fail_when(|_: &SimRecord| false);
    let text = format!("{f:?}");
    assert!(text.contains("<predicate>") && text.contains("w1"), "{text}");
}
