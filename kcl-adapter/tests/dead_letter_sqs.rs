//! [`SqsDeadLetterSink`] against SQS as emulated by moto server: what lands in the queue,
//! truncation and splitting of large letters, undecodable records with their raw JSON, FIFO
//! deduplication, and the errors for a queue that does not exist or takes too small messages.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use kcl_adapter::dead_letter_sqs::DEFAULT_MAX_MESSAGE_BYTES;
use kcl_adapter::local::unique_name;
use kcl_adapter::local_sqs::MotoServer;
use kcl_adapter::{AttributeValue, ChangeRecord, EventName, Item, SqsDeadLetterSink, StreamViewType};
use kcl_core::{DeadLetter, DeadLetterErrorKind, DeadLetterSink, SequenceNumber, ShardId, UndecodableRecord};
use serde_json::{Value, json};

const STREAM_ARN: &str = "arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/2026-01-01T00:00:00.000";

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn item(pairs: &[(&str, AttributeValue)]) -> Item {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// Record `i` of a shard: key `order#<i>`, a MODIFY with both images, `payload` bytes of data.
fn record(i: usize, payload: usize) -> ChangeRecord {
    let seq = SequenceNumber::parse(&format!("{:021}", 5000 + i)).unwrap_or_else(|e| panic!("{e}"));
    let key = format!("order#{i}");
    ChangeRecord::new(format!("event-{i}"), EventName::Modify, item(&[("pk", s(&key))]), seq)
        .with_new_image(item(&[
            ("pk", s(&key)),
            ("total", AttributeValue::N("12.50".into())),
            ("data", s(&"n".repeat(payload))),
        ]))
        .with_old_image(item(&[("pk", s(&key)), ("total", AttributeValue::N("10".into()))]))
        .with_approximate_creation_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000))
        .with_stream_view_type(StreamViewType::NewAndOldImages)
}

fn shard() -> ShardId {
    ShardId::new("shardId-00000001790000000000-0a1b2c3d")
}

async fn sink_for_new_queue(prefix: &str) -> SqsDeadLetterSink {
    let moto = MotoServer::shared();
    let url = moto.create_queue(&unique_name(prefix)).await;
    SqsDeadLetterSink::new(moto.sqs_client(), url, STREAM_ARN)
}

/// Every message in the queue, parsed (bodies also returned, for their sizes).
async fn drain(queue_url: &str) -> Vec<(String, Value)> {
    common::drain_bodies(MotoServer::shared(), queue_url).await
}

fn seqs(message: &Value) -> Vec<String> {
    let records = message["records"].as_array().cloned().unwrap_or_default();
    records.iter().map(|r| r["dynamodb"]["SequenceNumber"].as_str().unwrap_or("?").to_owned()).collect()
}

#[tokio::test]
async fn a_letter_lands_in_the_queue_with_every_field() {
    let sink = sink_for_new_queue("dlq-fields").await;
    sink.verify().await.unwrap_or_else(|e| panic!("{e}"));
    let records = [record(1, 3), record(2, 3)];
    let shard = shard();
    let letter = DeadLetter::new(&shard, &records, 4, "cannot decode `total`");
    sink.send(&letter).await.unwrap_or_else(|e| panic!("{e}"));

    let messages = drain(sink.queue_url()).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0].1;
    assert_eq!(m["version"], json!(1));
    assert_eq!(m["streamArn"], json!(STREAM_ARN));
    assert_eq!(m["shardId"], json!(shard.as_str()));
    assert_eq!(m["firstSequenceNumber"], json!("000000000000000005001"));
    assert_eq!(m["lastSequenceNumber"], json!("000000000000000005002"));
    assert_eq!(m["attempts"], json!(4));
    assert_eq!(m["error"], json!("cannot decode `total`"));
    assert_eq!(m["recordCount"], json!(2));
    assert_eq!(m["truncated"], json!(false));
    assert_eq!((m["part"].clone(), m["parts"].clone()), (json!(1), json!(1)));
    assert_eq!(
        m["records"][1],
        json!({
            "eventID": "event-2",
            "eventName": "MODIFY",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_790_000_000u64,
                "Keys": {"pk": {"S": "order#2"}},
                "NewImage": {"data": {"S": "nnn"}, "pk": {"S": "order#2"}, "total": {"N": "12.50"}},
                "OldImage": {"pk": {"S": "order#2"}, "total": {"N": "10"}},
                "SequenceNumber": "000000000000000005002",
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        })
    );
}

#[tokio::test]
async fn a_big_letter_is_sent_as_keys_and_sequence_numbers() {
    let sink = sink_for_new_queue("dlq-big").await;
    // 40 records with 10 KB images each: 400 KB, over the 256 KiB message limit.
    let records: Vec<ChangeRecord> = (0..40).map(|i| record(i, 10_000)).collect();
    let shard = shard();
    let letter = DeadLetter::new(&shard, &records, 2, "boom");
    sink.send(&letter).await.unwrap_or_else(|e| panic!("{e}"));

    let messages = drain(sink.queue_url()).await;
    assert_eq!(messages.len(), 1);
    let (body, m) = &messages[0];
    assert!(body.len() <= DEFAULT_MAX_MESSAGE_BYTES, "{} bytes", body.len());
    assert_eq!(m["truncated"], json!(true));
    let reason = m["truncatedReason"].as_str().unwrap_or_default();
    assert!(reason.contains("only their keys and sequence numbers"), "{reason}");
    assert_eq!(m["recordCount"], json!(40));
    let want: Vec<String> = records.iter().map(|r| r.sequence_number().as_str().to_owned()).collect();
    assert_eq!(seqs(m), want);
    assert_eq!(m["records"][39]["dynamodb"]["Keys"], json!({"pk": {"S": "order#39"}}));
    assert!(m["records"][39]["dynamodb"].get("NewImage").is_none());
}

#[tokio::test]
async fn a_letter_whose_keys_do_not_fit_is_split_and_none_is_lost() {
    let sink = sink_for_new_queue("dlq-split").await.with_max_message_bytes(16 * 1024);
    sink.verify().await.unwrap_or_else(|e| panic!("{e}"));
    let records: Vec<ChangeRecord> = (0..1000).map(|i| record(i, 50)).collect();
    let shard = shard();
    let letter = DeadLetter::new(&shard, &records, 1, "boom");
    sink.send(&letter).await.unwrap_or_else(|e| panic!("{e}"));

    let mut messages = drain(sink.queue_url()).await;
    assert!(messages.len() > 2, "{} messages", messages.len());
    messages.sort_by_key(|(_, m)| m["part"].as_u64());
    let mut all = Vec::new();
    for (i, (body, m)) in messages.iter().enumerate() {
        assert!(body.len() <= 16 * 1024);
        assert_eq!(m["part"], json!(i + 1));
        assert_eq!(m["parts"], json!(messages.len()));
        assert_eq!(m["recordCount"], json!(1000));
        assert_eq!(m["shardId"], json!(shard.as_str()));
        all.extend(seqs(m));
    }
    let want: Vec<String> = records.iter().map(|r| r.sequence_number().as_str().to_owned()).collect();
    assert_eq!(all, want, "every record exactly once, in order");
}

/// As DynamoDB Local sends a record with an empty map (the SDK cannot parse `"m":{}`).
fn undecodable_record(payload: usize) -> UndecodableRecord {
    let seq = SequenceNumber::parse("000000000000000000077").unwrap_or_else(|e| panic!("{e}"));
    let raw = format!(
        r#"{{"eventID":"e-77","eventName":"INSERT","dynamodb":{{"Keys":{{"pk":{{"S":"order#77"}}}},"NewImage":{{"pk":{{"S":"order#77"}},"m":{{}},"data":{{"S":"{}"}}}},"SequenceNumber":"000000000000000000077"}}}}"#,
        "\\\"quoted\\\" \u{FFFF}".repeat(payload)
    );
    UndecodableRecord::new(seq, raw)
}

#[tokio::test]
async fn an_undecodable_record_lands_with_its_raw_json() {
    let sink = sink_for_new_queue("dlq-undecodable").await;
    let record = undecodable_record(2);
    let shard = shard();
    let letter: DeadLetter<'_, ChangeRecord> =
        DeadLetter::for_undecodable(&shard, &record, "GetRecords: Union did not contain a valid variant.");
    sink.send(&letter).await.unwrap_or_else(|e| panic!("{e}"));

    let messages = drain(sink.queue_url()).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0].1;
    let want = json!({
        "version": 1,
        "streamArn": STREAM_ARN,
        "shardId": shard.as_str(),
        "firstSequenceNumber": "000000000000000000077",
        "lastSequenceNumber": "000000000000000000077",
        "attempts": 0,
        "error": "GetRecords: Union did not contain a valid variant.",
        "recordCount": 1,
        "truncated": false,
        "part": 1,
        "parts": 1,
        "records": [],
        "undecodableRecord": {"sequenceNumber": "000000000000000000077", "raw": record.raw},
    });
    assert_eq!(m, &want);
    // The raw text is the record as sent, U+FFFF included (escaped on the way, as SQS wants).
    let raw: Value = serde_json::from_str(m["undecodableRecord"]["raw"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(raw["dynamodb"]["NewImage"]["m"], json!({}));
    assert_eq!(raw["dynamodb"]["NewImage"]["data"]["S"], json!("\"quoted\" \u{FFFF}\"quoted\" \u{FFFF}"));
}

#[tokio::test]
async fn an_undecodable_record_too_big_for_a_message_is_cut_and_flagged() {
    let limit = 16 * 1024;
    let sink = sink_for_new_queue("dlq-undecodable-big").await.with_max_message_bytes(limit);
    let record = undecodable_record(5_000);
    let shard = shard();
    let letter: DeadLetter<'_, ChangeRecord> = DeadLetter::for_undecodable(&shard, &record, "cannot parse");
    sink.send(&letter).await.unwrap_or_else(|e| panic!("{e}"));

    let messages = drain(sink.queue_url()).await;
    assert_eq!(messages.len(), 1);
    let (body, m) = &messages[0];
    assert!(body.len() <= limit && body.len() > limit - 200, "{} bytes for a {limit}-byte limit", body.len());
    assert_eq!(m["truncated"], json!(true));
    let reason = m["truncatedReason"].as_str().unwrap_or_default();
    assert!(reason.contains(&format!("({} bytes) is cut to fit the {limit}-byte", record.raw.len())), "{reason}");
    let raw = m["undecodableRecord"]["raw"].as_str().unwrap_or_default();
    let (kept, cut) = raw.rsplit_once('…').unwrap_or_else(|| panic!("no cut mark: {raw}"));
    assert!(record.raw.starts_with(kept) && cut.ends_with(" more bytes cut]"), "{cut}");
    assert_eq!(m["recordCount"], json!(1));
    assert_eq!(m["undecodableRecord"]["sequenceNumber"], json!("000000000000000000077"));
}

#[tokio::test]
async fn a_fifo_queue_drops_a_letter_sent_again() {
    let moto = MotoServer::shared();
    let url = moto.create_queue(&format!("{}.fifo", unique_name("dlq"))).await;
    let sink = SqsDeadLetterSink::new(moto.sqs_client(), url, STREAM_ARN);
    sink.verify().await.unwrap_or_else(|e| panic!("{e}"));
    let records = [record(7, 3)];
    let shard = shard();
    let letter = DeadLetter::new(&shard, &records, 1, "e");
    // A crash after sending and before checkpointing sends the same letter again.
    sink.send(&letter).await.unwrap_or_else(|e| panic!("{e}"));
    sink.send(&letter).await.unwrap_or_else(|e| panic!("{e}"));
    let messages = drain(sink.queue_url()).await;
    assert_eq!(messages.len(), 1, "deduplicated by the FIFO queue");
    assert_eq!(seqs(&messages[0].1), ["000000000000000005007"]);
}

#[tokio::test]
async fn a_dead_letter_queue_that_does_not_exist_is_a_clear_error() {
    let moto = MotoServer::shared();
    let url = format!("{}/000000000000/{}", moto.endpoint(), unique_name("missing"));
    let sink = SqsDeadLetterSink::new(moto.sqs_client(), url.clone(), STREAM_ARN);

    let verify = sink.verify().await.err().unwrap_or_else(|| panic!("verified a missing queue"));
    let records = [record(1, 1)];
    let shard = shard();
    let letter = DeadLetter::new(&shard, &records, 1, "e");
    let send = sink.send(&letter).await.err().unwrap_or_else(|| panic!("sent to a missing queue"));
    for (call, err) in [("verify", verify.to_string()), ("send", send.to_string())] {
        assert!(err.contains(&url), "{call}: {err}");
        assert!(err.contains("does not exist"), "{call}: {err}");
        assert!(err.contains("create the queue, or configure the URL of an existing one"), "{call}: {err}");
        assert!(err.contains("QueueDoesNotExist") || err.contains("NonExistentQueue"), "{call}: {err}");
    }
    assert!(std::error::Error::source(&verify).is_some(), "the SDK error is kept as the source");
    for err in [&verify, &send] {
        assert_eq!(err.kind(), DeadLetterErrorKind::NotFound, "{err}");
        assert!(!err.is_retryable(), "a missing queue does not come back by itself: {err}");
    }
}

#[tokio::test]
async fn a_queue_taking_smaller_messages_fails_verification_with_the_fix() {
    let moto = MotoServer::shared();
    let name = unique_name("dlq-small");
    let sqs = moto.sqs_client();
    let attributes = HashMap::from([(aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize, "65536".to_owned())]);
    let created = sqs.create_queue().queue_name(&name).set_attributes(Some(attributes)).send().await;
    let url = created.unwrap_or_else(|e| panic!("{e:?}")).queue_url.unwrap_or_default();

    let sink = SqsDeadLetterSink::new(sqs, url.clone(), STREAM_ARN);
    let err = sink.verify().await.err().unwrap_or_else(|| panic!("a 64 KiB queue passed for 256 KiB messages"));
    let msg = err.to_string();
    assert!(msg.contains(&url) && msg.contains("65536") && msg.contains("MaximumMessageSize"), "{msg}");
    assert!(msg.contains("with_max_message_bytes(65536)"), "{msg}");
    assert_eq!(err.kind(), DeadLetterErrorKind::Rejected);
    sink.with_max_message_bytes(65_536).verify().await.unwrap_or_else(|e| panic!("{e}"));
}
