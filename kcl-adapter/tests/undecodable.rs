//! A record the SDK cannot decode, against DynamoDB Local: an item with an empty map
//! attribute (`{"M": {}}`) is rendered by DynamoDB Local's GetRecords as `{}`, without a type
//! (tools/dynamodb-local/FACTS.md), and the SDK then fails to parse the whole answer.
//! `DynamoStreamsSource::read` reports that as `Undecodable`; at limit 1 it names exactly that
//! record (sequence number and JSON), and reading after it returns the later items.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_adapter::{ChangeRecord, DynamoStreamsSource};
use kcl_core::{RecordBatch, ShardId, ShardIterator, SourceError, SourceErrorKind, StartPosition, StreamSource};

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

async fn put(dynamodb: &aws_sdk_dynamodb::Client, table: &str, pk: &str, extra: &[(&str, AttributeValue)]) {
    let mut request = dynamodb.put_item().table_name(table).item("pk", s(pk)).item("note", s("plain"));
    for (name, value) in extra {
        request = request.item(*name, value.clone());
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutItem {pk}: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)));
}

fn pk(record: &ChangeRecord) -> &str {
    match record.keys().get("pk") {
        Some(AttributeValue::S(pk)) => pk,
        other => panic!("no string key in {record:?}: {other:?}"),
    }
}

async fn open(source: &DynamoStreamsSource, shard: &ShardId, position: StartPosition) -> ShardIterator {
    source.shard_iterator(shard, &position).await.unwrap_or_else(|e| panic!("{e}"))
}

fn failed(result: Result<RecordBatch<ChangeRecord>, SourceError>, what: &str) -> SourceError {
    match result {
        Err(e) => e,
        Ok(batch) => panic!("{what}: read {} records: {:?}", batch.records.len(), batch.records),
    }
}

#[tokio::test]
async fn an_empty_map_is_undecodable_and_named_exactly_at_limit_one() {
    let local = DynamoDbLocal::shared();
    let table = unique_name("undecodable");
    let stream_arn = local.create_stream_table(&table).await;
    let dynamodb = local.dynamodb_client();
    put(&dynamodb, &table, "before-0", &[]).await;
    put(&dynamodb, &table, "before-1", &[]).await;
    put(&dynamodb, &table, "empty", &[("m", AttributeValue::M(HashMap::new()))]).await;
    put(&dynamodb, &table, "after-0", &[]).await;
    put(&dynamodb, &table, "after-1", &[]).await;

    let source = DynamoStreamsSource::from_stream_arn(local.streams_client(), &stream_arn);
    let shards = source.list_shards().await.unwrap_or_else(|e| panic!("{e}"));
    let [shard] = &shards[..] else { panic!("want one shard, got {shards:?}") };
    let iterator = |position: StartPosition| open(&source, &shard.id, position);

    // Limit 1000: the whole answer fails; the error names the stream, the SDK's complaint and
    // the malformed attribute, and (as the first record) the first record of the answer.
    let start = iterator(StartPosition::TrimHorizon).await;
    let err = failed(source.read(&start, 1000).await, "limit 1000");
    eprintln!("limit 1000: {err}");
    assert_eq!(err.kind(), SourceErrorKind::Undecodable, "{err}");
    assert!(!err.is_retryable());
    let message = err.to_string();
    for part in [&stream_arn, "limit 1000", "HTTP 200", "could not be decoded", "5 records", "NewImage.m: {}"] {
        assert!(message.contains(part), "{message:?} should contain {part:?}");
    }
    assert!(std::error::Error::source(&err).is_some(), "the SDK error is kept as the source");
    let first_in_answer = err.undecodable_record().map(|r| r.sequence_number.clone());

    // Limit 1: the records before it read one by one, then exactly the bad record is named.
    let mut it = start;
    let mut before = Vec::new();
    let bad = loop {
        match source.read(&it, 1).await {
            Ok(batch) => {
                assert!(batch.records.len() <= 1);
                before.extend(batch.records);
                it = batch.next_iterator.unwrap_or_else(|| panic!("the open shard ended"));
                assert!(before.len() <= 2, "read past the bad record: {before:?}");
            }
            Err(e) => break e,
        }
    };
    let before_keys: Vec<&str> = before.iter().map(pk).collect();
    assert_eq!(before_keys, ["before-0", "before-1"]);
    assert_eq!(
        first_in_answer.as_ref(),
        Some(before[0].sequence_number()),
        "limit 1000 names the answer's first record"
    );
    eprintln!("limit 1: {bad}");
    assert_eq!(bad.kind(), SourceErrorKind::Undecodable, "{bad}");
    let record = bad.undecodable_record().unwrap_or_else(|| panic!("limit 1 names no record: {bad}"));
    let seq = record.sequence_number.clone();
    assert!(seq > *before[1].sequence_number(), "{seq} is not after before-1");
    assert!(bad.to_string().contains(&format!("1 record, the first at sequence number {seq}")), "{bad}");
    let raw: serde_json::Value = serde_json::from_str(&record.raw).unwrap_or_else(|e| panic!("{e}: {}", record.raw));
    assert_eq!(raw["dynamodb"]["Keys"], serde_json::json!({"pk": {"S": "empty"}}), "{raw:#}");
    assert_eq!(raw["dynamodb"]["NewImage"]["m"], serde_json::json!({}), "the untagged empty map, as received");
    assert_eq!(raw["dynamodb"]["SequenceNumber"], serde_json::json!(seq.as_str()));
    assert_eq!(raw["eventName"], serde_json::json!("INSERT"));

    // A fresh iterator at the same position fails the same way, naming the same record.
    let again = failed(source.read(&iterator(StartPosition::AtSequenceNumber(seq.clone())).await, 1).await, "again");
    assert_eq!(again.undecodable_record().map(|r| &r.sequence_number), Some(&seq));

    // After it: the later items, in order.
    let after = iterator(StartPosition::AfterSequenceNumber(seq.clone())).await;
    let batch = source.read(&after, 1000).await.unwrap_or_else(|e| panic!("{e}"));
    let after_keys: Vec<&str> = batch.records.iter().map(pk).collect();
    assert_eq!(after_keys, ["after-0", "after-1"]);
    assert!(batch.records.iter().all(|r| *r.sequence_number() > seq));
}
