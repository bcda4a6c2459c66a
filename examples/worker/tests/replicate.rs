//! The `replicate` processor against DynamoDB Local: changes applied out of order and replayed
//! leave the target at the newest state (a replayed older change never overwrites a newer one,
//! and a replayed INSERT never resurrects a deleted item), the `worker` binary replicates a
//! live table end to end, and an item at DynamoDB's 400 KB limit, which the marker attribute
//! pushes over it, is dead-lettered with its reason while every other item is replicated.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::iam::{Names, calls_of, judge_deploy_policies};
use common::proxy::Proxy;
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_adapter::local_sqs::MotoServer;
use kcl_adapter::{ChangeRecord, EventName, Item};
use kcl_core::SequenceNumber;
use kcl_worker::replicate::{
    Applied, DELETED_ATTRIBUTE, MAX_ITEM_BYTES, ReplicateError, Replicator, SEQ_ATTRIBUTE, padded_sequence,
};

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn seq(digits: &str) -> SequenceNumber {
    SequenceNumber::parse(digits).unwrap_or_else(|e| panic!("{e}"))
}

fn image(pk: &str, v: i64) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("v".to_owned(), n(v)), ("note".to_owned(), s("payload"))])
}

fn keys(pk: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(pk))])
}

/// An INSERT or MODIFY to version `v`, or a REMOVE of version `v`.
fn change(event: EventName, pk: &str, at: &str, v: i64) -> ChangeRecord {
    let record = ChangeRecord::new(format!("{pk}@{at}"), event.clone(), keys(pk), seq(at));
    match event {
        EventName::Remove => record.with_old_image(image(pk, v)),
        EventName::Insert => record.with_new_image(image(pk, v)),
        _ => record.with_new_image(image(pk, v)).with_old_image(image(pk, v - 1)),
    }
}

async fn target_table(local: &DynamoDbLocal) -> String {
    let table = unique_name("replica");
    local.create_table(&table, None).await;
    table
}

async fn get(client: &aws_sdk_dynamodb::Client, table: &str, pk: &str) -> Option<Item> {
    client
        .get_item()
        .table_name(table)
        .key("pk", s(pk))
        .consistent_read(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetItem {pk}: {e:?}"))
        .item
}

/// The item's `v` (None for a tombstone or a missing item) and whether it is a tombstone.
async fn state(client: &aws_sdk_dynamodb::Client, table: &str, pk: &str) -> (Option<String>, bool, Option<String>) {
    let item = get(client, table, pk).await.unwrap_or_default();
    let v = item.get("v").and_then(|v| v.as_n().ok()).cloned();
    let deleted = item.get(DELETED_ATTRIBUTE).and_then(|d| d.as_bool().ok()).copied().unwrap_or(false);
    let at = item.get(SEQ_ATTRIBUTE).and_then(|q| q.as_s().ok()).cloned();
    (v, deleted, at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_and_replayed_changes_end_at_the_newest_state() {
    let local = DynamoDbLocal::shared();
    let client = local.dynamodb_client();
    let table = target_table(local).await;
    let replicator = Replicator::new(client.clone(), &table);
    let apply = |r: ChangeRecord| {
        let replicator = replicator.clone();
        async move { replicator.apply(&r).await.unwrap_or_else(|e| panic!("apply: {e}")) }
    };
    use Applied::*;
    use EventName::{Insert, Modify, Remove};

    // Item a: the newest change first. Sequence numbers of different lengths (99 < 100 as
    // numbers, "99" > "100" as strings) prove the padding.
    assert_eq!(apply(change(Modify, "a", "101", 3)).await, Written);
    assert_eq!(apply(change(Insert, "a", "99", 1)).await, AlreadyNewer);
    assert_eq!(apply(change(Modify, "a", "100", 2)).await, AlreadyNewer);
    // The same change again (a replayed batch).
    assert_eq!(apply(change(Modify, "a", "101", 3)).await, AlreadyNewer);
    assert_eq!(state(&client, &table, "a").await, (Some("3".into()), false, Some(padded_sequence(&seq("101")))));

    // Item b: deleted, then a replayed older INSERT must not resurrect it; a newer INSERT does.
    assert_eq!(apply(change(Insert, "b", "5", 1)).await, Written);
    assert_eq!(apply(change(Remove, "b", "7", 1)).await, Tombstoned);
    assert_eq!(apply(change(Insert, "b", "5", 1)).await, AlreadyNewer);
    assert_eq!(apply(change(Remove, "b", "7", 1)).await, AlreadyNewer);
    assert_eq!(state(&client, &table, "b").await, (None, true, Some(padded_sequence(&seq("7")))));
    assert_eq!(apply(change(Insert, "b", "1000", 2)).await, Written);
    assert_eq!(state(&client, &table, "b").await, (Some("2".into()), false, Some(padded_sequence(&seq("1000")))));

    // Item c: the removal arrives before the insert it removes.
    assert_eq!(apply(change(Remove, "c", "20", 1)).await, Tombstoned);
    assert_eq!(apply(change(Insert, "c", "10", 1)).await, AlreadyNewer);
    assert_eq!(state(&client, &table, "c").await, (None, true, Some(padded_sequence(&seq("20")))));

    // A TTL deletion as DynamoDB Local sends it: unknown event name, old image only.
    assert_eq!(apply(change(Insert, "d", "30", 1)).await, Written);
    let ttl = ChangeRecord::new("ttl", EventName::Unknown("UNKNOWN_TO_SDK_VERSION".into()), keys("d"), seq("31"))
        .with_old_image(image("d", 1));
    assert_eq!(apply(ttl).await, Tombstoned);
    assert!(state(&client, &table, "d").await.1, "a TTL deletion leaves a tombstone");

    // A MODIFY without a new image (a KEYS_ONLY stream) is a clear error.
    let keys_only = ChangeRecord::new("k", EventName::Modify, keys("e"), seq("40"));
    let err = replicator.apply(&keys_only).await.err().unwrap_or_else(|| panic!("accepted a record without image"));
    assert!(matches!(err, ReplicateError::MissingNewImage { .. }), "{err}");
    assert!(err.to_string().contains("NEW_AND_OLD_IMAGES"), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_replayed_in_any_order_converges() {
    let local = DynamoDbLocal::shared();
    let client = local.dynamodb_client();
    let table = target_table(local).await;
    let replicator = Replicator::new(client.clone(), &table);
    use EventName::{Insert, Modify, Remove};
    // Stream order: per item increasing sequence numbers, items interleaved.
    let batch = vec![
        change(Insert, "x", "200", 1),
        change(Insert, "y", "201", 1),
        change(Modify, "x", "202", 2),
        change(Remove, "y", "203", 1),
        change(Modify, "x", "204", 3),
        change(Insert, "y", "205", 2),
        change(Insert, "z", "206", 1),
        change(Remove, "z", "207", 1),
    ];
    let want = [("x", (Some("3".to_owned()), false)), ("y", (Some("2".to_owned()), false)), ("z", (None, true))];
    let check = || async {
        for (pk, expected) in &want {
            let (v, deleted, _) = state(&client, &table, pk).await;
            assert_eq!(&(v, deleted), expected, "item {pk}");
        }
    };
    replicator.apply_all(&batch).await.unwrap_or_else(|e| panic!("{e}"));
    check().await;
    // The whole batch again (a crash before the checkpoint), then every record in reverse
    // order (the worst interleaving of replays): nothing changes.
    replicator.apply_all(&batch).await.unwrap_or_else(|e| panic!("{e}"));
    check().await;
    for record in batch.iter().rev() {
        assert_eq!(replicator.apply(record).await.unwrap_or_else(|e| panic!("{e}")), Applied::AlreadyNewer);
    }
    check().await;
}

/// The `worker` binary with `--processor replicate` copies a live table, then stops on
/// SIGTERM with exit code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_replicates_a_live_table() {
    let local = DynamoDbLocal::shared();
    let client = local.dynamodb_client();
    let source = unique_name("source");
    local.create_stream_table(&source).await;
    let target = target_table(local).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let args: Vec<String> = [
        "--table",
        &source,
        "--application-name",
        &unique_name("replicate-app"),
        "--worker-id",
        "replicator-1",
        "--metrics-addr",
        "127.0.0.1:0",
        "--processor",
        "replicate",
        "--target-table",
        &target,
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let mut worker =
        common::WorkerProcess::spawn("replicator", "replicator-1", &local.endpoint(), &args, &dir.path().join("r.log"))
            .await;

    // Ten items, four versions each; every third deleted at the end.
    let mut expected: HashMap<String, Option<i64>> = HashMap::new();
    for v in 1..=4 {
        for i in 0..10 {
            let pk = format!("item-{i}");
            let put = client.put_item().table_name(&source).item("pk", s(&pk)).item("v", n(v));
            put.send().await.unwrap_or_else(|e| panic!("PutItem: {e:?}"));
            expected.insert(pk, Some(v));
        }
    }
    for i in (0..10).step_by(3) {
        let pk = format!("item-{i}");
        client.delete_item().table_name(&source).key("pk", s(&pk)).send().await.unwrap_or_else(|e| panic!("{e:?}"));
        expected.insert(pk, None);
    }
    common::eventually(
        "the target table to match the source",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || {
            let (client, target, expected) = (&client, &target, &expected);
            async move {
                for (pk, v) in expected {
                    let (got, deleted, _) = state(client, target, pk).await;
                    let want = (v.map(|v| v.to_string()), v.is_none());
                    if (got, deleted) != want {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;

    // The counters move a moment after the writes are visible.
    let wanted = [
        "kcl_example_replicated_total{outcome=\"written\"} 40",
        "kcl_example_replicated_total{outcome=\"tombstoned\"} 4",
        "kcl_records_processed_total{stream=\"\"} 44",
    ];
    let addr = worker.metrics;
    common::eventually(
        "the metrics to count the changes",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async move {
            let (code, body) = common::http_get(addr, "/metrics").await;
            (code == 200 && wanted.iter().all(|name| body.contains(name))).then_some(())
        },
    )
    .await;
    worker.sigterm();
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "worker exited with {status}\n{}", worker.log_tail(40));
}

/// Replication that cannot work stops the worker at start with the fix in the message: a
/// missing target table, a target with another key, a stream without new images.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_misconfigurations_are_clear_errors() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
        StreamViewType,
    };
    let local = DynamoDbLocal::shared();
    let source = unique_name("source");
    local.create_stream_table(&source).await;
    let keys_only = unique_name("keys-only");
    let spec = StreamSpecification::builder().stream_enabled(true).stream_view_type(StreamViewType::KeysOnly).build();
    local.create_table(&keys_only, Some(spec.unwrap_or_else(|e| panic!("{e}")))).await;
    let target = target_table(local).await;
    let other_key = unique_name("other-key");
    let key = KeySchemaElement::builder().attribute_name("id").key_type(KeyType::Hash).build();
    let def = AttributeDefinition::builder().attribute_name("id").attribute_type(ScalarAttributeType::S).build();
    local
        .dynamodb_client()
        .create_table()
        .table_name(&other_key)
        .key_schema(key.unwrap_or_else(|e| panic!("{e}")))
        .attribute_definitions(def.unwrap_or_else(|e| panic!("{e}")))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTable: {e:?}"));

    let cases = [
        (
            &source,
            "no-such-table",
            "target table no-such-table does not exist: create it with the source's key schema (pk)",
        ),
        (&source, other_key.as_str(), "has key (id) but the source has (pk): replication needs the same key schema"),
        (&keys_only, target.as_str(), "has view type KEYS_ONLY: replication needs NEW_IMAGE or NEW_AND_OLD_IMAGES"),
    ];
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (source, target, want) in cases {
        let args: Vec<String> = [
            "--table",
            source,
            "--application-name",
            "replicate-misconfigured",
            "--metrics-addr",
            "127.0.0.1:0",
            "--processor",
            "replicate",
            "--target-table",
            target,
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        let out = common::worker_command(&local.endpoint(), &args, &dir.path().join("worker.log"))
            .output()
            .await
            .unwrap_or_else(|e| panic!("run worker: {e}"));
        // `output()` captures stderr itself.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(want), "want {want:?} in\n{stderr}");
    }
}

/// An item at DynamoDB's 400 KB limit fits the source table but not the target, since the
/// processor adds its marker attribute. The `worker` binary (`--processor replicate`, one retry,
/// bisecting, an SQS dead-letter queue on moto server) must dead-letter exactly that record,
/// with a reason that names its key, its size, the limit and the marker attribute, and
/// replicate every other item. The worker reaches DynamoDB Local and moto through counting
/// proxies: the operations it called justify the policy's replication and dead-letter
/// statements (tests/common/iam.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_item_is_dead_lettered_with_its_reason() {
    let local = DynamoDbLocal::shared();
    let moto = tokio::task::spawn_blocking(MotoServer::shared).await.unwrap_or_else(|e| panic!("moto: {e}"));
    let client = local.dynamodb_client();
    let source = unique_name("source");
    local.create_stream_table(&source).await;
    let target = target_table(local).await;
    let app = unique_name("replicate-big-app");
    let queue = moto.create_queue(&unique_name("replicate-dlq")).await;
    let dynamodb_proxy = Proxy::start(([127, 0, 0, 1], local.port()).into()).await;
    let sqs_proxy = Proxy::start(([127, 0, 0, 1], moto.port()).into()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sqs_url = sqs_proxy.url();
    let args: Vec<String> = [
        "--table",
        &source,
        "--application-name",
        &app,
        "--worker-id",
        "replicator-big",
        "--metrics-addr",
        "127.0.0.1:0",
        "--processor",
        "replicate",
        "--target-table",
        &target,
        "--max-retry-attempts",
        "1",
        "--bisect-on-failure",
        "true",
        "--dead-letter-queue-url",
        &queue,
        "--sqs-endpoint-url",
        &sqs_url,
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let log = dir.path().join("r.log");
    let mut worker =
        common::WorkerProcess::spawn("replicator", "replicator-big", &dynamodb_proxy.url(), &args, &log).await;

    // Twenty small items, with the big one written in the middle of them.
    let small = |i: usize| format!("item-{i:02}");
    let big: Item = {
        let mut item = image("big", 1);
        item.remove("note");
        let base = kcl_worker::replicate::item_bytes(&item) + "payload".len();
        // Fits the source with 24 bytes to spare; the marker (48 bytes) does not fit.
        item.insert("payload".to_owned(), s(&"x".repeat(MAX_ITEM_BYTES - 24 - base)));
        item
    };
    let big_size = kcl_worker::replicate::item_bytes(&big);
    for i in 0..20 {
        if i == 10 {
            let put = client.put_item().table_name(&source).set_item(Some(big.clone())).send().await;
            put.unwrap_or_else(|e| panic!("PutItem of the {big_size}-byte item into the source: {e:?}"));
        }
        let put = client.put_item().table_name(&source).item("pk", s(&small(i))).item("v", n(1)).send().await;
        put.unwrap_or_else(|e| panic!("PutItem: {e:?}"));
    }
    println!("replicate: wrote 20 small items and one of {big_size} bytes (limit {MAX_ITEM_BYTES})");

    // Every small item replicated.
    let (c, t) = (&client, &target);
    common::eventually(
        "the small items to be replicated",
        Duration::from_secs(90),
        Duration::from_millis(300),
        || async move {
            for i in 0..20 {
                if state(c, t, &small(i)).await.0.as_deref() != Some("1") {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    // Exactly the big record dead-lettered, with its reason.
    let q = &queue;
    let bodies =
        common::eventually("the dead letter", Duration::from_secs(90), Duration::from_millis(500), || async move {
            let bodies = moto.receive_all(q).await;
            (!bodies.is_empty()).then_some(bodies)
        })
        .await;
    let letters: Vec<serde_json::Value> =
        bodies.iter().map(|b| serde_json::from_str(b).unwrap_or_else(|e| panic!("not JSON ({e}): {b}"))).collect();
    assert_eq!(letters.len(), 1, "one dead letter: {letters:?}");
    let letter = &letters[0];
    let keys: Vec<&serde_json::Value> =
        letter["records"].as_array().into_iter().flatten().map(|r| &r["dynamodb"]["Keys"]).collect();
    assert_eq!(keys, [&serde_json::json!({"pk": {"S": "big"}})], "the dead letter holds exactly the big record");
    let error = letter["error"].as_str().unwrap_or_default();
    for want in ["item pk=\"big\"", &MAX_ITEM_BYTES.to_string(), SEQ_ATTRIBUTE, "over DynamoDB's item size limit"] {
        assert!(error.contains(want), "the dead letter's error must name {want:?}: {error}");
    }
    println!("replicate: dead letter's error: {error}");
    assert_eq!(state(&client, &target, "big").await, (None, false, None), "the big item was not copied");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.lines().any(|l| l.contains("process_records failed") && l.contains("over DynamoDB's item size limit")),
        "the worker's warning must say why:\n{}",
        worker.log_tail(20)
    );
    worker.sigterm();
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "worker exited with {status}\n{}", worker.log_tail(40));

    // Least privilege: the replication and dead-letter statements grant exactly what it called.
    let (db, sq) = (dynamodb_proxy.stats(), sqs_proxy.stats());
    assert!(db.unreadable.is_empty() && sq.unreadable.is_empty(), "{:?} {:?}", db.unreadable, sq.unreadable);
    let names = Names { source, lease: app, target: Some(target), queue_url: Some(queue.clone()) };
    let calls = calls_of(db.requests.keys().chain(sq.requests.keys()), &names);
    println!("replicate: operations the worker called: {calls:?}");
    let problems = judge_deploy_policies(&calls, &["ReplicateIntoTargetTable", "DeadLetterQueue"]);
    assert!(
        problems.is_empty(),
        "the IAM policy does not match what the worker calls:\n  - {}",
        problems.join("\n  - ")
    );
}
