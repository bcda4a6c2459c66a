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
        (
            WorkerBuilder::new(&sdk, "b-2").table("a").table("b"),
            "2 streams were given (a, b): a worker consumes one stream",
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
