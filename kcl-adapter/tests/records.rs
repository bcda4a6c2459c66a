//! What a processor receives: `ChangeRecord`s read from DynamoDB Local, with images, typed
//! decoding (and its errors naming the attribute), and TTL deletions that DynamoDB Local names
//! `UNKNOWN_TO_SDK_VERSION`.

use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::{AttributeValue, TimeToLiveSpecification};
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_adapter::{ChangeKind, ChangeRecord, DecodeErrorKind, DynamoStreamsSource, EventName, StreamViewType};
use kcl_core::{StartPosition, StreamSource};
use serde::Deserialize;

#[derive(Debug, Deserialize, PartialEq)]
struct Key {
    pk: String,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Order {
    pk: String,
    quantity: u32,
    note: Option<String>,
}

/// Every record of the table's stream so far, in order (one shard: no rollover here).
async fn read_all(source: &DynamoStreamsSource) -> Vec<ChangeRecord> {
    let mut records = Vec::new();
    for shard in source.list_shards().await.unwrap_or_else(|e| panic!("{e}")) {
        let mut it =
            source.shard_iterator(&shard.id, &StartPosition::TrimHorizon).await.unwrap_or_else(|e| panic!("{e}"));
        loop {
            let batch = source.read(&it, 1000).await.unwrap_or_else(|e| panic!("{e}"));
            let empty = batch.records.is_empty();
            records.extend(batch.records);
            match batch.next_iterator {
                Some(next) if !empty => it = next,
                _ => break,
            }
        }
    }
    records
}

async fn stream_table() -> (String, DynamoStreamsSource, aws_sdk_dynamodb::Client) {
    let local = DynamoDbLocal::shared();
    let table = unique_name("records");
    local.create_stream_table(&table).await;
    let dynamodb = local.dynamodb_client();
    let source = DynamoStreamsSource::from_table(&dynamodb, local.streams_client(), &table).await;
    (table, source.unwrap_or_else(|e| panic!("{e}")), dynamodb)
}

async fn put(dynamodb: &aws_sdk_dynamodb::Client, table: &str, attrs: &[(&str, AttributeValue)]) {
    let mut request = dynamodb.put_item().table_name(table);
    for (name, value) in attrs {
        request = request.item(*name, value.clone());
    }
    request.send().await.unwrap_or_else(|e| panic!("PutItem: {e:?}"));
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

#[tokio::test]
async fn insert_modify_remove_with_images_and_typed_decoding() {
    let (table, source, dynamodb) = stream_table().await;
    put(&dynamodb, &table, &[("pk", s("o-1")), ("quantity", n(1))]).await;
    put(&dynamodb, &table, &[("pk", s("o-1")), ("quantity", n(2)), ("note", s("gift"))]).await;
    let deleted = dynamodb.delete_item().table_name(&table).key("pk", s("o-1")).send().await;
    deleted.unwrap_or_else(|e| panic!("{e:?}"));

    let records = read_all(&source).await;
    let kinds: Vec<ChangeKind> = records.iter().map(|r| r.change_kind().unwrap_or_else(|e| panic!("{e}"))).collect();
    assert_eq!(kinds, [ChangeKind::Insert, ChangeKind::Modify, ChangeKind::Remove]);
    for r in &records {
        assert_eq!(r.partition_key(), "pk=o-1");
        assert_eq!(r.keys_as::<Key>().ok(), Some(Key { pk: "o-1".into() }));
        assert_eq!(r.stream_view_type(), Some(&StreamViewType::NewAndOldImages));
        assert!(r.size_bytes().is_some_and(|b| b > 0), "size of {r:?}");
        assert!(!r.event_id().is_empty());
        assert!(!r.is_ttl_delete());
        let created = r.approximate_creation_time().unwrap_or_else(|| panic!("no creation time in {r:?}"));
        let age = SystemTime::now().duration_since(created).unwrap_or_default();
        assert!(age < Duration::from_secs(3600), "creation time {created:?} is far off");
        assert_eq!(r.sequence_number().as_str().len(), 21, "sequence numbers keep their zero padding");
    }
    let [insert, modify, remove] = &records[..] else { panic!("want 3 records, got {records:?}") };
    assert!(insert.sequence_number() < modify.sequence_number() && modify.sequence_number() < remove.sequence_number());
    let order = |pk: &str, quantity, note: Option<&str>| Order { pk: pk.into(), quantity, note: note.map(Into::into) };
    assert_eq!(insert.new_image_as::<Order>().ok(), Some(Some(order("o-1", 1, None))));
    assert_eq!(insert.old_image_as::<Order>().ok(), Some(None));
    assert_eq!(modify.old_image_as::<Order>().ok(), Some(Some(order("o-1", 1, None))));
    assert_eq!(modify.new_image_as::<Order>().ok(), Some(Some(order("o-1", 2, Some("gift")))));
    assert_eq!(remove.new_image_as::<Order>().ok(), Some(None));
    assert_eq!(remove.old_image_as::<Order>().ok(), Some(Some(order("o-1", 2, Some("gift")))));
    assert_eq!(modify.new_image().and_then(|i| i.get("note")), Some(&s("gift")));
}

#[tokio::test]
async fn undecodable_image_names_the_attribute_and_the_record() {
    let (table, source, dynamodb) = stream_table().await;
    put(&dynamodb, &table, &[("pk", s("o-2")), ("quantity", s("three"))]).await;
    let records = read_all(&source).await;
    let [record] = &records[..] else { panic!("want 1 record, got {records:?}") };
    let err = record.new_image_as::<Order>().err().unwrap_or_else(|| panic!("decoded a string as a number"));
    assert_eq!(err.kind(), DecodeErrorKind::NewImage);
    assert_eq!(err.field(), Some("quantity"));
    assert_eq!(err.event_id(), record.event_id());
    let message = err.to_string();
    for part in [record.event_id(), "INSERT", record.sequence_number().as_str(), "new image", "Order", "`quantity`"] {
        assert!(message.contains(part), "{message:?} should contain {part:?}");
    }
    assert!(std::error::Error::source(&err).is_some(), "the decoder's error is kept as the source");
}

/// DynamoDB Local emits TTL deletions as `UNKNOWN_TO_SDK_VERSION`: the record is delivered
/// with its keys and old image, and only the typed event-name accessor refuses it.
#[tokio::test]
async fn ttl_deletions_are_delivered_even_under_an_unknown_event_name() {
    let (table, source, dynamodb) = stream_table().await;
    let ttl = TimeToLiveSpecification::builder().enabled(true).attribute_name("expires").build();
    let ttl = ttl.unwrap_or_else(|e| panic!("{e}"));
    let enabled = dynamodb.update_time_to_live().table_name(&table).time_to_live_specification(ttl).send().await;
    enabled.unwrap_or_else(|e| panic!("UpdateTimeToLive: {e:?}"));
    // Expired a minute ago (TTL ignores values more than five years in the past).
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    put(&dynamodb, &table, &[("pk", s("o-3")), ("quantity", n(1)), ("expires", n(now - 60))]).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let records = loop {
        let records = read_all(&source).await;
        if records.len() >= 2 || tokio::time::Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let [_insert, expired] = &records[..] else { panic!("want the insert and its TTL deletion, got {records:?}") };
    assert_eq!(expired.event_name(), &EventName::Unknown("UNKNOWN_TO_SDK_VERSION".into()));
    assert_eq!(expired.partition_key(), "pk=o-3");
    assert_eq!(expired.old_image_as::<Order>().ok().flatten().map(|o| o.pk), Some("o-3".into()));
    let err = expired.change_kind().err().unwrap_or_else(|| panic!("an unknown event name got a kind"));
    assert_eq!(err.kind(), DecodeErrorKind::EventName);
    assert!(err.to_string().contains("UNKNOWN_TO_SDK_VERSION"), "{err}");
}
