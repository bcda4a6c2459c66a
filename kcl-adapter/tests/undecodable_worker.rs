//! End to end: a record the SDK cannot decode does not stall a shard. An item with an empty
//! map attribute, which DynamoDB Local renders in its stream as an untagged `{}` (see
//! tests/undecodable.rs), sits between ordinary items. A worker on `DynamoStreamsSource`, the
//! lease table and an `SqsDeadLetterSink` isolates it by reading with smaller limits, sends it
//! to the queue with its raw JSON, processes every other item and checkpoints past it.
//! DynamoDB Local holds the tables and the stream, moto server the queue.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_adapter::local_sqs::MotoServer;
use kcl_adapter::{AttributeValue, ChangeRecord, DynamoStreamsSource, SqsDeadLetterSink};
use kcl_core::{Batch, Checkpointer, Config, Metrics, ProcessorError, RecordProcessor, SequenceNumber};
use serde_json::{Value, json};

const BEFORE: usize = 30;
const AFTER: usize = 30;
const DEADLINE: Duration = Duration::from_secs(90);

/// Records the keys it is given and checkpoints after each batch.
#[derive(Clone, Default)]
struct Keys(Arc<Mutex<BTreeSet<String>>>);

impl RecordProcessor<ChangeRecord> for Keys {
    async fn process_records(
        &mut self,
        batch: &Batch<ChangeRecord>,
        checkpointer: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        let keys = batch.records.iter().map(|r| r.partition_key().trim_start_matches("pk=").to_owned());
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend(keys);
        checkpointer.checkpoint().await.map_err(|e| ProcessorError::new(e.to_string()).with_source(e))
    }
}

fn counter(registry: &prometheus::Registry, name: &str, label: Option<&str>) -> f64 {
    let families = registry.gather();
    let Some(family) = families.iter().find(|f| f.name() == name) else { return 0.0 };
    let metrics = family.get_metric().iter();
    let matching = metrics.filter(|m| label.is_none_or(|l| m.get_label().iter().any(|p| p.value() == l)));
    matching.map(|m| m.get_counter().get_value()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecodable_record_is_dead_lettered_and_the_shard_goes_on() {
    let started = Instant::now();
    let local = DynamoDbLocal::shared();
    let moto = MotoServer::shared();
    let table = unique_name("undecodable-e2e");
    let stream_arn = local.create_stream_table(&table).await;
    let dynamodb = local.dynamodb_client();
    let key = |i: usize| if i == BEFORE { "empty".to_owned() } else { format!("item-{i:03}") };
    for i in 0..=BEFORE + AFTER {
        let mut put = dynamodb.put_item().table_name(&table).item("pk", AttributeValue::S(key(i)));
        put = put.item("n", AttributeValue::N(i.to_string()));
        if i == BEFORE {
            put = put.item("m", AttributeValue::M(HashMap::new()));
        }
        put.send().await.unwrap_or_else(|e| panic!("PutItem {i}: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)));
    }

    let queue_url = moto.create_queue(&unique_name("undecodable-dlq")).await;
    let sqs = moto.sqs_client();
    let sink = SqsDeadLetterSink::new(sqs.clone(), queue_url.clone(), stream_arn.clone());
    let source = DynamoStreamsSource::from_stream_arn(local.streams_client(), stream_arn.clone());
    let lease_table = unique_name("undecodable-e2e-leases");
    let config = Config::builder(&lease_table)
        .worker_id("undecodable-worker")
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(&registry).unwrap_or_else(|e| panic!("{e}"));
    let processor = Keys::default();
    let processed = || processor.0.lock().unwrap_or_else(PoisonError::into_inner).len();
    let run =
        common::WorkerRun { dynamodb: dynamodb.clone(), source, config, processor: processor.clone(), metrics, sink };
    let status = run.until(DEADLINE, |status| processed() == BEFORE + AFTER && status.records_dead_lettered >= 1).await;
    let consumed = started.elapsed();

    // Every other item processed, the bad one not.
    let done = processor.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let want: BTreeSet<String> = (0..=BEFORE + AFTER).filter(|i| *i != BEFORE).map(key).collect();
    assert_eq!(done, want);
    assert_eq!(status.records_dead_lettered, 1, "{status:?}");
    assert_eq!(counter(&registry, "kcl_undecodable_records_total", None), 1.0);
    assert!(counter(&registry, "kcl_get_records_errors_total", Some("undecodable")) >= 1.0);
    assert_eq!(counter(&registry, "kcl_get_records_errors_total", Some("fatal")), 0.0);

    // Exactly one message: the bad record, with its raw JSON.
    let messages = common::drain(moto, &queue_url).await;
    let [m] = &messages[..] else { panic!("want one message, got {messages:#?}") };
    assert_eq!((&m["recordCount"], &m["records"], &m["streamArn"]), (&json!(1), &json!([]), &json!(stream_arn)));
    let error = m["error"].as_str().unwrap_or_default();
    assert!(error.contains("could not be decoded") && error.contains("NewImage.m"), "{error}");
    let raw: Value = serde_json::from_str(m["undecodableRecord"]["raw"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("raw is not JSON ({e}): {m:#}"));
    assert_eq!(raw["dynamodb"]["Keys"], json!({"pk": {"S": "empty"}}));
    assert_eq!(raw["dynamodb"]["NewImage"]["m"], json!({}));
    let seq = m["undecodableRecord"]["sequenceNumber"].as_str().and_then(|s| SequenceNumber::parse(s).ok());
    let seq = seq.unwrap_or_else(|| panic!("no sequence number in {m:#}"));
    assert_eq!(raw["dynamodb"]["SequenceNumber"], json!(seq.as_str()));

    // The checkpoint is past it.
    common::lease_past(&dynamodb, &lease_table, m["shardId"].as_str().unwrap_or_default(), &seq).await;
    eprintln!(
        "undecodable record: {} items, consumed and dead-lettered by {consumed:.1?}, checked by {:.1?}; \
         {} undecodable reads",
        BEFORE + AFTER + 1,
        started.elapsed(),
        counter(&registry, "kcl_get_records_errors_total", Some("undecodable"))
    );
}
