//! Compatibility with Java KCL's lease table: a table seeded item by item exactly as KCL with
//! the DynamoDB Streams adapter writes it is read with the right checkpoints, continued from
//! them without reprocessing, and written back without losing KCL's attributes.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ProvisionedThroughput,
    ScalarAttributeType,
};
use kcl_adapter::lease_table::attribute;
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_adapter::{DynamoLeaseStore, DynamoStreamsSource, TableOptions};
use kcl_core::{
    Checkpoint, LeaseKey, LeaseStore, LeaseUpdate, SequenceNumber, ShardId, StartPosition, StreamSource, WorkerId,
};

const PARENT: &str = "shardId-00000001795571900000-0000000a";
const CHILD: &str = "shardId-00000001795571920302-4c69a623";
const GRANDCHILD: &str = "shardId-00000001795571940000-0000000c";
const PENDING: &str = "shardId-00000001795571950000-0000000d";

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_owned())
}

fn ss(v: &[&str]) -> AttributeValue {
    AttributeValue::Ss(v.iter().map(|x| (*x).to_owned()).collect())
}

fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// Creates the lease table as KCL 1.x does (hash key `leaseKey`, provisioned 10/10).
async fn kcl_table() -> (String, aws_sdk_dynamodb::Client) {
    let local = DynamoDbLocal::shared();
    let client = local.dynamodb_client();
    let table = unique_name("kcl-app");
    let key = KeySchemaElement::builder().attribute_name("leaseKey").key_type(KeyType::Hash).build();
    let def = AttributeDefinition::builder().attribute_name("leaseKey").attribute_type(ScalarAttributeType::S).build();
    let throughput = ProvisionedThroughput::builder().read_capacity_units(10).write_capacity_units(10).build();
    client
        .create_table()
        .table_name(&table)
        .key_schema(key.unwrap_or_else(|e| panic!("{e}")))
        .attribute_definitions(def.unwrap_or_else(|e| panic!("{e}")))
        .billing_mode(BillingMode::Provisioned)
        .provisioned_throughput(throughput.unwrap_or_else(|e| panic!("{e}")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTable: {e:?}"));
    (table, client)
}

async fn seed(client: &aws_sdk_dynamodb::Client, table: &str, item: HashMap<String, AttributeValue>) {
    client.put_item().table_name(table).set_item(Some(item)).send().await.unwrap_or_else(|e| panic!("PutItem: {e:?}"));
}

async fn raw(client: &aws_sdk_dynamodb::Client, table: &str, key: &str) -> HashMap<String, AttributeValue> {
    let out = client.get_item().table_name(table).key("leaseKey", s(key)).consistent_read(true).send().await;
    out.unwrap_or_else(|e| panic!("GetItem: {e:?}")).item.unwrap_or_else(|| panic!("no item {key}"))
}

fn applied(what: &str, update: Result<LeaseUpdate, kcl_core::LeaseStoreError>) -> kcl_core::Lease {
    match update.unwrap_or_else(|e| panic!("{what}: {e}")) {
        LeaseUpdate::Applied(lease) => lease,
        LeaseUpdate::Lost => panic!("{what}: lost"),
    }
}

fn seq(digits: &str) -> SequenceNumber {
    SequenceNumber::parse(digits).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn reads_kcl_leases_and_writes_them_back_without_losing_attributes() {
    let (table, client) = kcl_table().await;
    // As KCL writes them: a parent processed to its end (KCL 2 records the children), its
    // child half-way with a 21-digit checkpoint, an unowned grandchild at TRIM_HORIZON, and a
    // lease with an unfinished two-phase checkpoint. Hash-key ranges are KCL 2's own.
    seed(
        &client,
        &table,
        item(&[
            ("leaseKey", s(PARENT)),
            ("leaseOwner", s("kcl-worker-1")),
            ("leaseCounter", n("1234")),
            ("checkpoint", s("SHARD_END")),
            ("checkpointSubSequenceNumber", n("0")),
            ("ownerSwitchesSinceCheckpoint", n("0")),
            ("childShardIds", ss(&[CHILD])),
        ]),
    )
    .await;
    seed(
        &client,
        &table,
        item(&[
            ("leaseKey", s(CHILD)),
            ("leaseOwner", s("kcl-worker-2")),
            ("leaseCounter", n("57")),
            ("checkpoint", s("000000000000000000123")),
            ("checkpointSubSequenceNumber", n("0")),
            ("ownerSwitchesSinceCheckpoint", n("2")),
            ("parentShardId", ss(&[PARENT])),
            ("startingHashKey", s("0")),
            ("endingHashKey", s("340282366920938463463374607431768211455")),
        ]),
    )
    .await;
    seed(
        &client,
        &table,
        item(&[
            ("leaseKey", s(GRANDCHILD)),
            ("leaseCounter", n("0")),
            ("checkpoint", s("TRIM_HORIZON")),
            ("checkpointSubSequenceNumber", n("0")),
            ("ownerSwitchesSinceCheckpoint", n("0")),
            ("parentShardId", ss(&[CHILD])),
        ]),
    )
    .await;
    seed(
        &client,
        &table,
        item(&[
            ("leaseKey", s(PENDING)),
            ("leaseOwner", s("kcl-worker-1")),
            ("leaseCounter", n("9")),
            ("checkpoint", s("000000000000000000200")),
            ("checkpointSubSequenceNumber", n("0")),
            ("pendingCheckpoint", s("000000000000000000250")),
            ("pendingCheckpointSubSequenceNumber", n("0")),
            ("ownerSwitchesSinceCheckpoint", n("0")),
        ]),
    )
    .await;

    let store = DynamoLeaseStore::new(client.clone(), table.clone());
    store.ensure_table(&TableOptions::default()).await.unwrap_or_else(|e| panic!("KCL's table was refused: {e}"));

    let mut leases = store.list().await.unwrap_or_else(|e| panic!("{e}"));
    leases.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<&str> = leases.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(keys, [PARENT, CHILD, GRANDCHILD, PENDING]);
    let [parent, child, grandchild, pending] = &leases[..] else { unreachable!("four keys were checked") };
    assert_eq!((parent.checkpoint.clone(), parent.counter), (Checkpoint::ShardEnd, 1234));
    assert_eq!(parent.child_shard_ids, vec![ShardId::new(CHILD)]);
    assert_eq!(child.owner, Some(WorkerId::new("kcl-worker-2")));
    assert_eq!((child.counter, child.owner_switches_since_checkpoint), (57, 2));
    assert_eq!(child.parent_shard_ids, vec![ShardId::new(PARENT)]);
    // The checkpoint keeps KCL's zero padding: it goes back to DynamoDB exactly as stored.
    assert_eq!(child.checkpoint.sequence_number().map(SequenceNumber::as_str), Some("000000000000000000123"));
    assert_eq!((grandchild.owner.clone(), grandchild.checkpoint.clone()), (None, Checkpoint::TrimHorizon));
    assert_eq!(pending.pending_checkpoint, Some(Checkpoint::At(seq("250"))));
    let got = store.get(&LeaseKey::from_raw(CHILD)).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.as_ref(), Some(child));

    // Take over from KCL, renew, checkpoint: counter and owner switches as KCL counts them.
    let me = WorkerId::new("rust-worker");
    let taken = applied("take", store.take(child, &me).await);
    assert_eq!((taken.counter, taken.owner_switches_since_checkpoint), (58, 3));
    let renewed = applied("renew", store.renew(&taken).await);
    assert_eq!(renewed.counter, 59);
    let written =
        applied("checkpoint", store.checkpoint(&renewed, &Checkpoint::At(seq("000000000000000000456")), None).await);
    assert_eq!((written.counter, written.owner_switches_since_checkpoint), (60, 0));
    assert_eq!(store.take(child, &WorkerId::new("kcl-worker-2")).await.ok(), Some(LeaseUpdate::Lost));

    let stored = raw(&client, &table, CHILD).await;
    let want = item(&[
        ("leaseKey", s(CHILD)),
        ("leaseOwner", s("rust-worker")),
        ("leaseCounter", n("60")),
        ("checkpoint", s("000000000000000000456")),
        ("checkpointSubSequenceNumber", n("0")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("parentShardId", ss(&[PARENT])),
        ("startingHashKey", s("0")),
        ("endingHashKey", s("340282366920938463463374607431768211455")),
    ]);
    assert_eq!(stored, want, "the item after take, renew and checkpoint, in KCL's layout");

    // An unowned KCL lease is taken from its ownerless view; a release removes the owner.
    let taken = applied("take unowned", store.take(grandchild, &me).await);
    let released = applied("release", store.release(&taken).await);
    let stored = raw(&client, &table, GRANDCHILD).await;
    assert!(!stored.contains_key(attribute::LEASE_OWNER), "released: {stored:?}");
    assert_eq!(stored.get(attribute::LEASE_COUNTER), Some(&n(&released.counter.to_string())));
    assert_eq!(stored.get(attribute::PARENT_SHARD_ID), Some(&ss(&[CHILD])));

    // A finished checkpoint supersedes KCL's pending one, as KCL does.
    let written = applied(
        "checkpoint over pending",
        store.checkpoint(pending, &Checkpoint::At(seq("000000000000000000260")), None).await,
    );
    assert_eq!(written.pending_checkpoint, None);
    let stored = raw(&client, &table, PENDING).await;
    assert!(!stored.contains_key("pendingCheckpoint") && !stored.contains_key("pendingCheckpointSubSequenceNumber"));
}

/// A fresh table with a stream and `n` items put into it: the source, its one shard, and the
/// shard's records.
async fn stream_with_items(n: usize) -> (DynamoStreamsSource, ShardId, Vec<kcl_adapter::ChangeRecord>) {
    let local = DynamoDbLocal::shared();
    let data_table = unique_name("kcl-data");
    let arn = local.create_stream_table(&data_table).await;
    let dynamodb = local.dynamodb_client();
    for i in 0..n {
        let put = dynamodb.put_item().table_name(&data_table).item("pk", s(&format!("item-{i}"))).send().await;
        put.unwrap_or_else(|e| panic!("{e:?}"));
    }
    let source = DynamoStreamsSource::from_stream_arn(local.streams_client(), arn);
    let shards = source.list_shards().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(shards.len(), 1, "a fresh table has one shard");
    let shard = shards[0].id.clone();
    let it = source.shard_iterator(&shard, &StartPosition::TrimHorizon).await.unwrap_or_else(|e| panic!("{e}"));
    let all = source.read(&it, 1000).await.unwrap_or_else(|e| panic!("{e}")).records;
    assert_eq!(all.len(), n);
    (source, shard, all)
}

/// A lease KCL checkpointed on a real shard continues right after that record: nothing before
/// it is read again.
#[tokio::test]
async fn continues_after_a_kcl_checkpoint_without_reprocessing() {
    let (source, shard, all) = stream_with_items(5).await;
    let shard = &shard;
    // KCL processed the first three and checkpointed the third, as the stream spelled it.
    let kcl_checkpoint = all[2].sequence_number().as_str().to_owned();

    let (table, client) = kcl_table().await;
    seed(
        &client,
        &table,
        item(&[
            ("leaseKey", s(shard.as_str())),
            ("leaseOwner", s("kcl-worker-1")),
            ("leaseCounter", n("99")),
            ("checkpoint", s(&kcl_checkpoint)),
            ("checkpointSubSequenceNumber", n("0")),
            ("ownerSwitchesSinceCheckpoint", n("0")),
        ]),
    )
    .await;
    let store = DynamoLeaseStore::new(client, table);
    let lease = store.get(&LeaseKey::for_shard(shard)).await.unwrap_or_else(|e| panic!("{e}"));
    let lease = lease.unwrap_or_else(|| panic!("the seeded lease is missing"));
    let Checkpoint::At(from) = lease.checkpoint else {
        panic!("checkpoint {:?} is not a sequence number", lease.checkpoint)
    };
    let it = source.shard_iterator(shard, &StartPosition::AfterSequenceNumber(from)).await;
    let rest = source.read(&it.unwrap_or_else(|e| panic!("{e}")), 1000).await.unwrap_or_else(|e| panic!("{e}")).records;
    let keys: Vec<&str> = rest.iter().map(|r| r.partition_key()).collect();
    assert_eq!(keys, ["pk=item-3", "pk=item-4"]);
}

/// Collects the partition keys it is given and checkpoints every batch.
#[derive(Clone, Debug, Default)]
struct Collect(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl kcl_core::RecordProcessor<kcl_adapter::ChangeRecord> for Collect {
    async fn process_records(
        &mut self,
        batch: &kcl_core::Batch<kcl_adapter::ChangeRecord>,
        checkpointer: &impl kcl_core::Checkpointer,
    ) -> Result<(), kcl_core::ProcessorError> {
        let keys = batch.records.iter().map(|r| r.partition_key().to_owned());
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(keys);
        checkpointer.checkpoint().await.map_err(|e| kcl_core::ProcessorError::new(e.to_string()))
    }
}

/// The whole worker, pointed at a lease table KCL left behind (its worker gone), takes the
/// expired lease and continues after KCL's checkpoint: nothing KCL processed is processed again.
#[tokio::test]
async fn a_worker_continues_a_kcl_lease_table_without_reprocessing() {
    let (source, shard, all) = stream_with_items(6).await;
    let kcl_checkpoint = all[3].sequence_number().as_str().to_owned();

    let (table, client) = kcl_table().await;
    seed(
        &client,
        &table,
        item(&[
            ("leaseKey", s(shard.as_str())),
            ("leaseOwner", s("kcl-worker-1")),
            ("leaseCounter", n("41")),
            ("checkpoint", s(&kcl_checkpoint)),
            ("checkpointSubSequenceNumber", n("0")),
            ("ownerSwitchesSinceCheckpoint", n("0")),
        ]),
    )
    .await;
    let store = DynamoLeaseStore::new(client.clone(), table.clone());
    let config = kcl_core::Config::builder("kcl-continue")
        .worker_id("rust-worker")
        .lease_duration(std::time::Duration::from_secs(3))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let seen = Collect::default();
    let factory = {
        let seen = seen.clone();
        move |_: &ShardId| seen.clone()
    };
    let worker =
        kcl_core::Worker::with_metrics(config, source, store.clone(), factory, kcl_core::Metrics::unregistered());
    let handle = worker.handle();
    let task = tokio::spawn(worker.run());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the worker did not take over the KCL lease within 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Give a wrongly rewound consumer the chance to deliver more before stopping.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    handle.shutdown(std::time::Duration::from_secs(10)).await;
    task.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));

    let keys = seen.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    assert_eq!(keys, ["pk=item-4", "pk=item-5"], "only the records after KCL's checkpoint");
    let lease = store.get(&LeaseKey::for_shard(&shard)).await.unwrap_or_else(|e| panic!("{e}"));
    let lease = lease.unwrap_or_else(|| panic!("the lease vanished"));
    assert_eq!(lease.checkpoint, Checkpoint::At(all[5].sequence_number().clone()));
    assert_eq!(lease.owner, None, "released on shutdown");
    let stored = raw(&client, &table, shard.as_str()).await;
    assert_eq!(
        stored.get("checkpoint"),
        Some(&s(all[5].sequence_number().as_str())),
        "written back in the stream's own spelling"
    );
}
