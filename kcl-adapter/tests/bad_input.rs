//! Bad input gives clear errors: tables without a (usable) stream, missing tables and streams,
//! a lease table with a foreign key schema, malformed lease items.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType,
};
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_adapter::{DynamoLeaseStore, DynamoStreamsSource, TableOptions};
use kcl_core::{LeaseKey, LeaseStore, LeaseStoreErrorKind, ShardId, SourceErrorKind, StartPosition, StreamSource};

fn assert_contains(message: &str, parts: &[&str]) {
    // Shown with --nocapture, to read the messages as a user would.
    eprintln!("error message: {message}");
    for part in parts {
        assert!(message.contains(part), "error message {message:?} should contain {part:?}");
    }
}

async fn from_table(table: &str) -> Result<DynamoStreamsSource, kcl_core::SourceError> {
    let local = DynamoDbLocal::shared();
    DynamoStreamsSource::from_table(&local.dynamodb_client(), local.streams_client(), table).await
}

#[tokio::test]
async fn table_without_a_stream() {
    let local = DynamoDbLocal::shared();
    let table = unique_name("no-stream");
    local.create_table(&table, None).await;
    let err = from_table(&table).await.err().unwrap_or_else(|| panic!("a table without a stream was accepted"));
    assert_eq!(err.kind(), SourceErrorKind::Fatal);
    assert!(!err.is_retryable());
    let fix = format!("enable a stream with StreamViewType NEW_AND_OLD_IMAGES on table {table}");
    assert_contains(&err.to_string(), &[&format!("table {table} has no stream"), &fix]);
}

#[tokio::test]
async fn table_with_a_disabled_stream() {
    let local = DynamoDbLocal::shared();
    let table = unique_name("disabled-stream");
    let arn = local.create_stream_table(&table).await;
    from_table(&table).await.unwrap_or_else(|e| panic!("an enabled stream was refused: {e}"));
    let disabled = StreamSpecification::builder().stream_enabled(false).build().unwrap_or_else(|e| panic!("{e}"));
    let updated = local.dynamodb_client().update_table().table_name(&table).stream_specification(disabled).send().await;
    updated.unwrap_or_else(|e| panic!("UpdateTable: {e:?}"));

    let err = from_table(&table).await.err().unwrap_or_else(|| panic!("a disabled stream was accepted"));
    assert_eq!(err.kind(), SourceErrorKind::Fatal);
    let fix = format!("enable a stream with StreamViewType NEW_AND_OLD_IMAGES on table {table}");
    assert_contains(&err.to_string(), &[&format!("the stream of table {table} is disabled"), &fix, &arn]);

    // The old stream can still be drained by ARN until its records expire.
    let source = DynamoStreamsSource::from_stream_arn(local.streams_client(), arn);
    let shards = source.list_shards().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(shards.iter().all(|s| s.is_closed()), "a disabled stream has only closed shards: {shards:?}");
}

#[tokio::test]
async fn missing_table() {
    let table = unique_name("missing");
    let err = from_table(&table).await.err().unwrap_or_else(|| panic!("a missing table was accepted"));
    assert_eq!(err.kind(), SourceErrorKind::NotFound);
    assert_contains(&err.to_string(), &[&format!("table {table} does not exist"), "NEW_AND_OLD_IMAGES"]);
}

#[tokio::test]
async fn unknown_stream_arn_and_shard() {
    let local = DynamoDbLocal::shared();
    let arn =
        format!("arn:aws:dynamodb:ddblocal:000000000000:table/{}/stream/2020-01-01T00:00:00.000", unique_name("nope"));
    let source = DynamoStreamsSource::from_stream_arn(local.streams_client(), arn.clone());
    let err = source.list_shards().await.err().unwrap_or_else(|| panic!("listed an unknown stream"));
    assert_eq!(err.kind(), SourceErrorKind::NotFound);
    assert_contains(&err.to_string(), &["DescribeStream", &arn, "ResourceNotFoundException"]);

    let arn = local.create_stream_table(&unique_name("unknown-shard")).await;
    let source = DynamoStreamsSource::from_stream_arn(local.streams_client(), arn);
    let shard = ShardId::new("shardId-00000000000000000000-00000000");
    let err = source.shard_iterator(&shard, &StartPosition::TrimHorizon).await.err();
    let err = err.unwrap_or_else(|| panic!("an iterator for an unknown shard"));
    assert_eq!(err.kind(), SourceErrorKind::NotFound);
    assert_contains(&err.to_string(), &["GetShardIterator", shard.as_str()]);
}

/// Creates a table with the given key schema: (name, key type, attribute type).
async fn create_keyed_table(name: &str, keys: &[(&str, KeyType, ScalarAttributeType)]) {
    let mut request = DynamoDbLocal::shared().dynamodb_client().create_table().table_name(name);
    for (attr, key_type, attr_type) in keys {
        let key = KeySchemaElement::builder().attribute_name(*attr).key_type(key_type.clone()).build();
        let def = AttributeDefinition::builder().attribute_name(*attr).attribute_type(attr_type.clone()).build();
        request = request
            .key_schema(key.unwrap_or_else(|e| panic!("{e}")))
            .attribute_definitions(def.unwrap_or_else(|e| panic!("{e}")));
    }
    request
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTable {name}: {e:?}"));
}

#[tokio::test]
async fn lease_table_with_a_foreign_key_schema() {
    use KeyType::{Hash, Range};
    use ScalarAttributeType::{N, S};
    let cases: [&[(&str, KeyType, ScalarAttributeType)]; 3] =
        [&[("id", Hash, S)], &[("leaseKey", Hash, N)], &[("leaseKey", Hash, S), ("sk", Range, S)]];
    for keys in cases {
        let table = unique_name("foreign");
        create_keyed_table(&table, keys).await;
        let store = DynamoLeaseStore::new(DynamoDbLocal::shared().dynamodb_client(), table.clone());
        let err = store.ensure_table(&TableOptions::default()).await.err();
        let err = err.unwrap_or_else(|| panic!("a table keyed {keys:?} was accepted as a lease table"));
        assert_eq!(err.kind(), LeaseStoreErrorKind::Fatal);
        assert_contains(&err.to_string(), &[&format!("table {table} exists with key schema"), "[HASH leaseKey (S)]"]);
    }
}

#[tokio::test]
async fn lease_store_on_a_missing_table() {
    let table = unique_name("no-leases");
    let store = DynamoLeaseStore::new(DynamoDbLocal::shared().dynamodb_client(), table.clone());
    let err = store.list().await.err().unwrap_or_else(|| panic!("listed a missing table"));
    assert_eq!(err.kind(), LeaseStoreErrorKind::TableNotFound);
    assert_contains(&err.to_string(), &[&table, "ResourceNotFoundException", "ensure_table"]);
    let err = store.get(&LeaseKey::from_raw("shardId-1")).await.err().unwrap_or_else(|| panic!("read a missing table"));
    assert_eq!(err.kind(), LeaseStoreErrorKind::TableNotFound);
}

#[tokio::test]
async fn malformed_lease_item() {
    let local = DynamoDbLocal::shared();
    let table = unique_name("malformed");
    let store = DynamoLeaseStore::new(local.dynamodb_client(), table.clone());
    store.ensure_table(&TableOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
    let item = HashMap::from([
        ("leaseKey".to_owned(), AttributeValue::S("shardId-bad".to_owned())),
        ("leaseCounter".to_owned(), AttributeValue::S("seven".to_owned())),
        ("checkpoint".to_owned(), AttributeValue::S("TRIM_HORIZON".to_owned())),
    ]);
    let put = local.dynamodb_client().put_item().table_name(&table).set_item(Some(item)).send().await;
    put.unwrap_or_else(|e| panic!("{e:?}"));
    for result in [store.list().await.map(|_| ()), store.get(&LeaseKey::from_raw("shardId-bad")).await.map(|_| ())] {
        let err = result.err().unwrap_or_else(|| panic!("a malformed item was read"));
        assert_eq!(err.kind(), LeaseStoreErrorKind::Malformed);
        assert_contains(&err.to_string(), &[&table, "shardId-bad", "`leaseCounter`", "\"seven\""]);
    }
}

#[tokio::test]
async fn stream_view_types_other_than_new_and_old_are_accepted() {
    let local = DynamoDbLocal::shared();
    let table = unique_name("keys-only");
    let spec = StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::KeysOnly)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    local.create_table(&table, Some(spec)).await;
    from_table(&table).await.unwrap_or_else(|e| panic!("a KEYS_ONLY stream was refused: {e}"));
}
