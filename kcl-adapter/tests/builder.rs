//! `WorkerBuilder` against DynamoDB Local: bad input fails at `start` with the fix, and the
//! optional calls (config overrides, a registry of the caller's, lease-table creation) take
//! effect on the running worker.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_adapter::{ChangeRecord, WorkerBuilder};
use kcl_core::{Batch, Checkpointer, ProcessorError, RecordProcessor, ShardId, ShutdownOutcome};

struct Nothing;

impl RecordProcessor<ChangeRecord> for Nothing {
    async fn process_records(&mut self, _: &Batch<ChangeRecord>, _: &impl Checkpointer) -> Result<(), ProcessorError> {
        Ok(())
    }
}

fn sdk(local: &DynamoDbLocal, region: Option<&str>) -> aws_config::SdkConfig {
    let mut sdk = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(local.endpoint())
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(Credentials::new(
            "local", "local", None, None, "test",
        )));
    if let Some(region) = region {
        sdk = sdk.region(Region::new(region.to_owned()));
    }
    sdk.build()
}

async fn start_error(builder: WorkerBuilder) -> String {
    match builder.start(|_: &ShardId| Nothing).await {
        Ok(running) => {
            running.shutdown(Duration::from_secs(10)).await;
            panic!("started, but should have failed")
        }
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_at_start_with_the_fix() {
    let local = DynamoDbLocal::shared();
    let with_stream = unique_name("builder-stream");
    local.create_stream_table(&with_stream).await;
    let sdk = sdk(local, Some("us-east-1"));
    let cases: Vec<(WorkerBuilder, &str)> = vec![
        (WorkerBuilder::new(&sdk, "b-1"), "no stream to consume: call .table(name) or .stream_arn(arn)"),
        (WorkerBuilder::new(&sdk, "b-2").table(&with_stream).table(&with_stream), "is listed twice"),
        (
            WorkerBuilder::new(&sdk, unique_name("b-2a")).table(&with_stream).stream_arn("orders").create_lease_table(),
            "orders is not a DynamoDB stream ARN",
        ),
        (
            WorkerBuilder::new(&self::sdk(local, None), "b-3").table(&with_stream),
            "no AWS region is configured: set AWS_REGION",
        ),
        (
            WorkerBuilder::new(&sdk, "b-4").table("no-such-table"),
            "table no-such-table does not exist (check the table name, region and endpoint)",
        ),
        (
            WorkerBuilder::new(&sdk, "b-5").table(&with_stream).configure(|c| c.parallelism(11)),
            "parallelism is 11: it must be between 1 and 10",
        ),
        (
            // No lease table and not asked to create one.
            WorkerBuilder::new(&sdk, unique_name("b-6")).table(&with_stream),
            "does not exist: call .create_lease_table() on the WorkerBuilder",
        ),
    ];
    for (builder, want) in cases {
        let described = format!("{builder:?}");
        let error = start_error(builder).await;
        assert!(error.contains(want), "{described}: want {want:?} in {error:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_optional_calls_take_effect() {
    let local = DynamoDbLocal::shared();
    let table = unique_name("builder-run");
    local.create_stream_table(&table).await;
    let registry = kcl_core::prometheus::Registry::new();
    let application = unique_name("builder-app");
    let running = WorkerBuilder::new(&sdk(local, Some("us-east-1")), &application)
        .table(&table)
        .create_lease_table()
        .configure(|c| c.worker_id("builder-w1"))
        .configure(|c| c.batch_size(50))
        .registry(&registry)
        .start(|_: &ShardId| Nothing)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(running.stream_arn().contains(&table), "{}", running.stream_arn());
    assert_eq!(running.status().worker_id.as_str(), "builder-w1", "both overrides applied, in order");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while running.status().shards.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the worker took no lease: {:?}", running.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<String> = registry.gather().iter().map(|m| m.name().to_owned()).collect();
    assert!(names.iter().any(|n| n == "kcl_leases_held"), "metrics in the caller's registry: {names:?}");
    assert_eq!(running.shutdown(Duration::from_secs(30)).await, ShutdownOutcome::Graceful);
    let outcome = running.wait().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcome, None, "no signal stopped it");
    // The lease table the builder created is named after the application.
    let described = local.dynamodb_client().describe_table().table_name(&application).send().await;
    assert!(described.is_ok(), "lease table {application}: {described:?}");
}

/// Counts the records of each stream it sees, by the shard id's stream prefix.
struct Tally(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl RecordProcessor<ChangeRecord> for Tally {
    async fn process_records(
        &mut self,
        batch: &Batch<ChangeRecord>,
        _: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        let mut seen = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.extend(batch.records.iter().map(|r| format!("{}|{}", batch.shard_id, r.partition_key())));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_tables_share_one_lease_table() {
    let local = DynamoDbLocal::shared();
    let tables = [unique_name("builder-multi-a"), unique_name("builder-multi-b")];
    let mut identifiers = Vec::new();
    for t in &tables {
        let arn = local.create_stream_table(t).await;
        identifiers.push(kcl_adapter::streams::kcl_stream_identifier(&arn).unwrap_or_default());
    }
    let application = unique_name("builder-multi-app");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let tally = seen.clone();
    let running = WorkerBuilder::new(&sdk(local, Some("us-east-1")), &application)
        .table(&tables[0])
        .table(&tables[1])
        .create_lease_table()
        .start(move |_: &ShardId| Tally(tally.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(running.stream_arns().len(), 2);
    let client = local.dynamodb_client();
    for t in &tables {
        let put = client.put_item().table_name(t).item("pk", kcl_adapter::AttributeValue::S(format!("{t}-k")));
        put.send().await.unwrap_or_else(|e| panic!("{e:?}"));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "not both records delivered: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    for (t, id) in tables.iter().zip(&identifiers) {
        assert!(
            seen.iter().any(|s| s.starts_with(&format!("{id}:shardId-")) && s.ends_with(&format!("pk={t}-k"))),
            "{t}'s record under a shard of {id}: {seen:?}"
        );
    }
    assert_eq!(running.shutdown(Duration::from_secs(30)).await, ShutdownOutcome::Graceful);
    running.wait().await.unwrap_or_else(|e| panic!("{e}"));
    let store = kcl_adapter::DynamoLeaseStore::new(client, &application);
    let leases = kcl_core::LeaseStore::list(&store).await.unwrap_or_else(|e| panic!("{e}"));
    let shard_leases: Vec<_> = leases.iter().filter(|l| !l.key.is_heartbeat()).collect();
    assert_eq!(shard_leases.len(), 2, "{leases:?}");
    for id in &identifiers {
        assert!(shard_leases.iter().any(|l| l.key.as_str().starts_with(&format!("{id}:"))), "{id}: {leases:?}");
    }
}
