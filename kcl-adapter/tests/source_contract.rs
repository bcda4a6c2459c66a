//! The core's `StreamSource` contract against `DynamoStreamsSource` on DynamoDB Local, each
//! check on a fresh table with a NEW_AND_OLD_IMAGES stream. Rollovers close every stream's
//! shards in the emulator, so this binary has an emulator of its own, and its tests take
//! turns ([`SERIAL`]): one test's rollover must not close the shards another is reading.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::types::AttributeValue;
use kcl_adapter::DynamoStreamsSource;
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_core::testing::contract::source::{self, SourceFixture};
use kcl_core::{ShardId, StartPosition, StreamSource};

/// Held by each test for its whole run.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct DynamoFixture {
    local: &'static DynamoDbLocal,
    dynamodb: aws_sdk_dynamodb::Client,
    table: String,
    source: DynamoStreamsSource,
    /// Makes every put differ from the last (an identical PutItem emits no record).
    version: AtomicU64,
}

impl DynamoFixture {
    async fn new() -> Self {
        let local = DynamoDbLocal::shared();
        let table = unique_name("contract");
        let arn = local.create_stream_table(&table).await;
        let source = DynamoStreamsSource::from_stream_arn(local.streams_client(), arn);
        Self { local, dynamodb: local.dynamodb_client(), table, source, version: AtomicU64::new(0) }
    }
}

impl SourceFixture for DynamoFixture {
    type Source = DynamoStreamsSource;

    fn source(&self) -> &DynamoStreamsSource {
        &self.source
    }

    async fn put(&self, key: &str) {
        let version = self.version.fetch_add(1, Ordering::Relaxed);
        self.dynamodb
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(key.to_owned()))
            .item("version", AttributeValue::N(version.to_string()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutItem {key} into {}: {e:?}", self.table));
    }

    async fn rollover(&self) {
        self.local.rollover().await.unwrap_or_else(|e| panic!("rollover: {e}"));
    }

    fn partition_key_for(&self, key: &str) -> String {
        format!("pk={key}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_streams_source_passes_the_source_contract() {
    let _turn = SERIAL.lock().await;
    source::run_all(DynamoFixture::new).await;
}

/// DynamoDB Local answers ShardFilter with nothing; `child_shards` must still find the child
/// by listing, and return nothing for a shard without children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_shards_fall_back_to_the_listing() {
    let _turn = SERIAL.lock().await;
    let fixture = DynamoFixture::new().await;
    fixture.put("a").await;
    let source = fixture.source();
    let shards = source.list_shards().await.unwrap_or_else(|e| panic!("{e}"));
    let open: Vec<ShardId> = shards.iter().filter(|s| !s.is_closed()).map(|s| s.id.clone()).collect();
    assert_eq!(open.len(), 1, "a fresh table has one open shard: {shards:?}");
    let parent = &open[0];
    let none = source.child_shards(parent).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(none.is_empty(), "an open shard has no children: {none:?}");

    fixture.rollover().await;
    let children = source.child_shards(parent).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(children.len(), 1, "one child after a rollover: {children:?}");
    assert_eq!(children[0].parent_ids, vec![parent.clone()]);
    assert!(!children[0].is_closed());
}

/// More than one DescribeStream page: 120 rollovers give 121 shards of one stream, listed
/// each exactly once, parents before children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shards_paginates() {
    let _turn = SERIAL.lock().await;
    let fixture = DynamoFixture::new().await;
    for _ in 0..120 {
        fixture.rollover().await;
    }
    let shards = fixture.source().list_shards().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(shards.len() >= 121, "listed {} shards, want at least 121", shards.len());
    let mut ids: Vec<&ShardId> = shards.iter().map(|s| &s.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), shards.len(), "a shard was listed twice");
    let open = shards.iter().filter(|s| !s.is_closed()).count();
    assert_eq!(open, 1, "exactly one open shard");
    // Every parent is listed, so the lineage is a single chain from the first shard.
    let roots = shards.iter().filter(|s| s.parent_ids.is_empty()).count();
    assert_eq!(roots, 1, "one shard without a parent");
    // And the last closed shard reads to its end with no next iterator.
    let closed = shards.iter().rev().find(|s| s.is_closed()).unwrap_or_else(|| panic!("no closed shard"));
    let it = fixture.source().shard_iterator(&closed.id, &StartPosition::TrimHorizon).await;
    let batch = fixture.source().read(&it.unwrap_or_else(|e| panic!("{e}")), 1000).await;
    assert!(batch.unwrap_or_else(|e| panic!("{e}")).next_iterator.is_none());
}
