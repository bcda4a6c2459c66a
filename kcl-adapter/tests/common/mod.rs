//! What the adapter's end-to-end tests share: a worker on DynamoDB Local with an SQS
//! dead-letter queue run until a condition holds, the messages in the queue, and whether a
//! shard's lease checkpoint is past a record.

// Each test binary uses only some of these.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use kcl_adapter::local_sqs::MotoServer;
use kcl_adapter::{ChangeRecord, DynamoLeaseStore, DynamoStreamsSource, SqsDeadLetterSink, TableOptions};
use kcl_core::{
    Checkpoint, Config, Lease, LeaseStore, Metrics, RecordProcessor, SequenceNumber, ShardId, Worker, WorkerStatus,
};
use serde_json::Value;

/// A worker to run: one `processor`, cloned for each shard, on `source`, with its leases in
/// the table named after `config`'s application (created by [`WorkerRun::until`]) and
/// dead letters to `sink`.
pub(crate) struct WorkerRun<P> {
    pub(crate) dynamodb: aws_sdk_dynamodb::Client,
    pub(crate) source: DynamoStreamsSource,
    pub(crate) config: Config,
    pub(crate) processor: P,
    pub(crate) metrics: Metrics,
    pub(crate) sink: SqsDeadLetterSink,
}

impl<P: RecordProcessor<ChangeRecord> + Clone + Send + Sync + 'static> WorkerRun<P> {
    /// Runs the worker until `done` holds for its status, then shuts it down and returns the
    /// last status.
    ///
    /// # Panics
    /// When the worker stops early, or `done` does not hold within `deadline`.
    pub(crate) async fn until(self, deadline: Duration, done: impl Fn(&WorkerStatus) -> bool) -> WorkerStatus {
        let store = DynamoLeaseStore::new(self.dynamodb, self.config.application_name());
        store.ensure_table(&TableOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let processor = self.processor;
        let factory = move |_: &ShardId| processor.clone();
        let worker =
            Worker::with_metrics(self.config, self.source, store, factory, self.metrics).with_dead_letter(self.sink);
        let handle = worker.handle();
        let task = tokio::spawn(worker.run());
        let until = Instant::now() + deadline;
        loop {
            let status = handle.status();
            if done(&status) {
                break;
            }
            assert!(!handle.is_finished(), "the worker stopped early: {status:?}");
            assert!(Instant::now() < until, "not done after {deadline:?}: {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = handle.status();
        handle.shutdown(Duration::from_secs(20)).await;
        task.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
        status
    }
}

/// Every message in the queue, parsed, with its body (for its size).
pub(crate) async fn drain_bodies(moto: &MotoServer, queue_url: &str) -> Vec<(String, Value)> {
    let bodies = moto.receive_all(queue_url).await;
    bodies
        .into_iter()
        .map(|body| {
            let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
            (body, value)
        })
        .collect()
}

/// Every message in the queue, parsed.
pub(crate) async fn drain(moto: &MotoServer, queue_url: &str) -> Vec<Value> {
    drain_bodies(moto, queue_url).await.into_iter().map(|(_, value)| value).collect()
}

/// The lease of `shard` in `lease_table`, after checking that its checkpoint is past `seq`
/// (or at the shard's end).
pub(crate) async fn lease_past(
    dynamodb: &aws_sdk_dynamodb::Client,
    lease_table: &str,
    shard: &str,
    seq: &SequenceNumber,
) -> (Lease, usize) {
    let leases = DynamoLeaseStore::new(dynamodb.clone(), lease_table).list().await.unwrap_or_else(|e| panic!("{e}"));
    let shard_leases = leases.iter().filter(|l| !l.key.is_heartbeat()).count();
    let lease = leases.into_iter().find(|l| l.key.shard_id().is_some_and(|s| s.as_str() == shard));
    let lease = lease.unwrap_or_else(|| panic!("no lease for shard {shard}"));
    match &lease.checkpoint {
        Checkpoint::At(at) => assert!(at > seq, "checkpoint {at} is not past {seq}"),
        Checkpoint::ShardEnd => {}
        other => panic!("checkpoint {other:?} is not past {seq}"),
    }
    (lease, shard_leases)
}
