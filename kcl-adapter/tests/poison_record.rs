//! One poison record among 10,000: a worker whose processor decodes every new image into a
//! typed struct, with `max_retry_attempts(1)`, bisecting, and an SQS dead-letter queue. Exactly
//! the undecodable record reaches the queue, every other record is processed, and the lease's
//! checkpoint moves past the poison record. DynamoDB Local holds the table, its stream and the
//! lease table; moto server the queue.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_adapter::local_sqs::MotoServer;
use kcl_adapter::{AttributeValue, ChangeRecord, DynamoStreamsSource, SqsDeadLetterSink};
use kcl_core::{Batch, Checkpointer, Config, Metrics, ProcessorError, RecordProcessor, SequenceNumber};
use serde::Deserialize;
use serde_json::json;

const ITEMS: usize = 10_000;
/// The item whose `quantity` is a string instead of a number.
const POISON: usize = 6_543;
/// How long the worker may take to get through the stream.
const DEADLINE: Duration = Duration::from_secs(240);

fn key(i: usize) -> String {
    format!("order-{i:05}")
}

/// What the processor decodes every new image into.
#[derive(Debug, Deserialize)]
struct Order {
    pk: String,
    quantity: u32,
    #[allow(dead_code)] // Decoded to exercise the typed decoding; the test only needs the key.
    note: String,
}

/// Decodes every record; fails the batch on the first record that does not decode.
#[derive(Clone, Default)]
struct Decoding {
    processed: Arc<Mutex<HashSet<String>>>,
    failures: Arc<Mutex<u64>>,
}

impl RecordProcessor<ChangeRecord> for Decoding {
    async fn process_records(
        &mut self,
        batch: &Batch<ChangeRecord>,
        checkpointer: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        let mut keys = Vec::with_capacity(batch.records.len());
        for record in &batch.records {
            let order = match record.new_image_as::<Order>() {
                Ok(Some(order)) => order,
                Ok(None) => return Err(ProcessorError::new(format!("record {} has no new image", record.event_id()))),
                Err(e) => {
                    *self.failures.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                    return Err(ProcessorError::new(e.to_string()).with_source(e));
                }
            };
            assert!(order.quantity < ITEMS as u32 * 10, "decoded {order:?}");
            keys.push(order.pk);
        }
        self.processed.lock().unwrap_or_else(PoisonError::into_inner).extend(keys);
        checkpointer.checkpoint().await.map_err(|e| ProcessorError::new(e.to_string()).with_source(e))
    }
}

/// Writes the items with BatchWriteItem, 25 at a time, resending unprocessed ones.
async fn write_items(dynamodb: &aws_sdk_dynamodb::Client, table: &str) {
    let items: Vec<WriteRequest> = (0..ITEMS)
        .map(|i| {
            let quantity =
                if i == POISON { AttributeValue::S("many".into()) } else { AttributeValue::N(i.to_string()) };
            let put = PutRequest::builder()
                .item("pk", AttributeValue::S(key(i)))
                .item("quantity", quantity)
                .item("note", AttributeValue::S(format!("note for {i}")))
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    for chunk in items.chunks(25) {
        let mut pending = chunk.to_vec();
        while !pending.is_empty() {
            let out = dynamodb
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .unwrap_or_else(|e| panic!("BatchWriteItem: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)));
            pending = out.unprocessed_items.and_then(|mut u| u.remove(table)).unwrap_or_default();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_the_poison_record_is_dead_lettered_and_everything_else_processed() {
    let started = Instant::now();
    let local = DynamoDbLocal::shared();
    let moto = MotoServer::shared();
    let table = unique_name("orders");
    let stream_arn = local.create_stream_table(&table).await;
    let dynamodb = local.dynamodb_client();
    let queue_url = moto.create_queue(&unique_name("orders-dlq")).await;
    let sqs = moto.sqs_client();

    write_items(&dynamodb, &table).await;
    let written = started.elapsed();

    let sink = SqsDeadLetterSink::new(sqs.clone(), queue_url.clone(), stream_arn.clone());
    sink.verify().await.unwrap_or_else(|e| panic!("{e}"));
    let source = DynamoStreamsSource::from_stream_arn(local.streams_client(), stream_arn);
    let lease_table = unique_name("orders-consumer");
    let config = Config::builder(&lease_table)
        .worker_id("poison-worker")
        .max_retry_attempts(1)
        .bisect_on_failure(true)
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let processor = Decoding::default();
    let processed = || processor.processed.lock().unwrap_or_else(PoisonError::into_inner).len();
    let metrics = Metrics::unregistered();
    let run =
        common::WorkerRun { dynamodb: dynamodb.clone(), source, config, processor: processor.clone(), metrics, sink };
    let status = run.until(DEADLINE, |status| processed() == ITEMS - 1 && status.records_dead_lettered >= 1).await;
    let consumed = started.elapsed();

    // Exactly one message, holding exactly the poison record.
    let messages = common::drain(moto, &queue_url).await;
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let message = &messages[0];
    assert_eq!(message["recordCount"], json!(1), "{message:#}");
    assert_eq!(message["truncated"], json!(false));
    let records = message["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["dynamodb"]["Keys"], json!({"pk": {"S": key(POISON)}}));
    assert_eq!(records[0]["dynamodb"]["NewImage"]["quantity"], json!({"S": "many"}));
    assert_eq!(records[0]["eventName"], json!("INSERT"));
    let error = message["error"].as_str().unwrap_or_default();
    assert!(error.contains("quantity"), "the error names the attribute: {error}");
    let poison_seq = message["firstSequenceNumber"].as_str().and_then(|s| SequenceNumber::parse(s).ok());
    let poison_seq = poison_seq.unwrap_or_else(|| panic!("no sequence number in {message:#}"));
    assert_eq!(message["lastSequenceNumber"], message["firstSequenceNumber"]);
    assert_eq!(status.records_dead_lettered, 1, "{status:?}");
    assert!(*processor.failures.lock().unwrap_or_else(PoisonError::into_inner) > 0);

    // Every other record processed.
    let done = processor.processed.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let want: HashSet<String> = (0..ITEMS).filter(|i| *i != POISON).map(key).collect();
    assert_eq!(done.len(), ITEMS - 1);
    assert_eq!(done, want);

    // The checkpoint of the poison record's shard is past it.
    let shard = message["shardId"].as_str().unwrap_or_default();
    let (lease, shard_leases) = common::lease_past(&dynamodb, &lease_table, shard, &poison_seq).await;
    eprintln!(
        "poison record: {ITEMS} items written in {written:.1?}, consumed by {consumed:.1?}, checked by {:.1?}; \
         {} shard lease(s), checkpoint {:?}, poison at {poison_seq}",
        started.elapsed(),
        shard_leases,
        lease.checkpoint
    );
}
