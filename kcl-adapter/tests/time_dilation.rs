//! Errors that need time to pass, made with DynamoDB Local's time dilation: expired iterators
//! and trimmed data map to their kinds. A dilation expires every iterator in the emulator and
//! ages every stream, so this binary has an emulator of its own and its tests take turns.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use kcl_adapter::DynamoStreamsSource;
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_core::{SourceErrorKind, StartPosition, StreamSource};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn table_with_records(n: usize) -> DynamoStreamsSource {
    let local = DynamoDbLocal::shared();
    let table = unique_name("dilated");
    let arn = local.create_stream_table(&table).await;
    let dynamodb = local.dynamodb_client();
    for i in 0..n {
        let put = dynamodb.put_item().table_name(&table).item("pk", AttributeValue::S(format!("k{i}"))).send().await;
        put.unwrap_or_else(|e| panic!("{e:?}"));
    }
    DynamoStreamsSource::from_stream_arn(local.streams_client(), arn)
}

#[tokio::test]
async fn an_expired_iterator_is_expired_iterator() {
    let _turn = SERIAL.lock().await;
    let source = table_with_records(2).await;
    let shard = source.list_shards().await.unwrap_or_else(|e| panic!("{e}")).remove(0).id;
    let old = source.shard_iterator(&shard, &StartPosition::TrimHorizon).await.unwrap_or_else(|e| panic!("{e}"));
    DynamoDbLocal::shared().dilate(Duration::from_millis(1)).await.unwrap_or_else(|e| panic!("dilate: {e}"));

    let err = source.read(&old, 100).await.err().unwrap_or_else(|| panic!("an iterator survived a dilation"));
    assert_eq!(err.kind(), SourceErrorKind::ExpiredIterator, "{err}");
    assert!(!err.is_retryable(), "the same iterator will not work again: get a new one");
    assert!(err.to_string().contains("ExpiredIteratorException"), "{err}");

    let fresh = source.shard_iterator(&shard, &StartPosition::TrimHorizon).await.unwrap_or_else(|e| panic!("{e}"));
    let batch = source.read(&fresh, 100).await.unwrap_or_else(|e| panic!("a new iterator fails too: {e}"));
    assert_eq!(batch.records.len(), 2);
}

#[tokio::test]
async fn reading_trimmed_records_is_trimmed_data() {
    let _turn = SERIAL.lock().await;
    let source = table_with_records(1).await;
    let shards = source.list_shards().await.unwrap_or_else(|e| panic!("{e}"));
    let shard = shards[0].id.clone();
    let first = source.shard_iterator(&shard, &StartPosition::TrimHorizon).await.unwrap_or_else(|e| panic!("{e}"));
    let record = source.read(&first, 10).await.unwrap_or_else(|e| panic!("{e}")).records.remove(0);

    // 25 hours later the record is past the 24-hour retention (and the 4-hour-old shard has
    // been rolled over).
    let day = Duration::from_secs(25 * 3600);
    DynamoDbLocal::shared().dilate(day).await.unwrap_or_else(|e| panic!("dilate: {e}"));
    let at = StartPosition::AtSequenceNumber(record.sequence_number().clone());
    let it = source.shard_iterator(&shard, &at).await.unwrap_or_else(|e| panic!("{e}"));
    let err = source.read(&it, 10).await.err().unwrap_or_else(|| panic!("read a trimmed record"));
    assert_eq!(err.kind(), SourceErrorKind::TrimmedData, "{err}");
    assert!(err.to_string().contains("TrimmedDataAccessException"), "{err}");
}
