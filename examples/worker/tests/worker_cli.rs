//! The `worker` binary's surface against DynamoDB Local: clear errors for bad input, the HTTP
//! endpoints, the default worker id inside ECS, and a graceful stop on SIGINT.

mod common;

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use serde_json::Value;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

/// Runs the worker to its exit; returns the exit code and its stderr.
async fn run_to_exit(local: &DynamoDbLocal, list: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("worker.log");
    let out = common::worker_command(&local.endpoint(), &args(list), &log);
    let out = tokio::time::timeout(Duration::from_secs(60), { out }.output()).await;
    let out = out.unwrap_or_else(|_| panic!("worker {list:?} did not exit")).unwrap_or_else(|e| panic!("{e}"));
    // `output()` captures stderr itself (the log file stays empty).
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_stops_the_worker_with_the_fix() {
    let local = DynamoDbLocal::shared();
    let no_stream = unique_name("no-stream");
    local.create_table(&no_stream, None).await;
    let with_stream = unique_name("with-stream");
    local.create_stream_table(&with_stream).await;
    let other_stream = unique_name("with-stream-2");
    local.create_stream_table(&other_stream).await;
    let metrics = ["--metrics-addr", "127.0.0.1:0"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--table", "no-such-table", "--application-name", "cli-1", "--output", "/dev/null"],
            "table no-such-table does not exist (check the table name, region and endpoint)",
        ),
        (
            vec!["--table", &no_stream, "--application-name", "cli-2", "--output", "/dev/null"],
            "has no stream: enable a stream with StreamViewType NEW_AND_OLD_IMAGES",
        ),
        (vec!["--table", &with_stream, "--application-name", "cli-3"], "--processor jsonl needs --output PATH"),
        (
            vec![
                "--table",
                &with_stream,
                "--table",
                &with_stream,
                "--application-name",
                "cli-m1",
                "--output",
                "/dev/null",
            ],
            "is listed twice: list each table or stream once",
        ),
        (
            vec![
                "--table",
                &with_stream,
                "--stream-arn",
                "orders",
                "--application-name",
                "cli-m2",
                "--output",
                "/dev/null",
            ],
            "orders is not a DynamoDB stream ARN",
        ),
        (
            vec![
                "--table",
                &with_stream,
                "--table",
                &other_stream,
                "--application-name",
                "cli-m3",
                "--processor",
                "replicate",
                "--target-table",
                &with_stream,
            ],
            "--processor replicate copies one table into --target-table: give one --table",
        ),
        (
            vec!["--table", &with_stream, "--application-name", "cli-4", "--processor", "replicate"],
            "--processor replicate needs --target-table NAME",
        ),
        (
            vec!["--table", &with_stream, "--application-name", "cli-5", "--output", "/nonexistent-dir/out.jsonl"],
            "cannot open /nonexistent-dir/out.jsonl for appending",
        ),
        (
            vec![
                "--table",
                &with_stream,
                "--application-name",
                "cli-6",
                "--output",
                "/dev/null",
                "--lease-duration-ms",
                "0",
            ],
            "invalid configuration: lease_duration is zero",
        ),
        (
            vec![
                "--table",
                &with_stream,
                "--application-name",
                "cli-8",
                "--output",
                "/dev/null",
                "--filter",
                r#"{"dynamodb": {"Keys": {"pk": {"S": [{"prefx": "order#"}]}}}}"#,
            ],
            "--filter: at dynamodb.Keys.pk.S: unknown matcher \"prefx\" (known: prefix",
        ),
        (
            vec![
                "--table",
                &with_stream,
                "--application-name",
                "cli-9",
                "--output",
                "/dev/null",
                "--filter",
                "@/nonexistent.json",
            ],
            "--filter: cannot read /nonexistent.json",
        ),
        (
            vec![
                "--table",
                &with_stream,
                "--application-name",
                "cli-10",
                "--output",
                "/dev/null",
                "--tumbling-window-secs",
                "60",
                "--parallelism",
                "2",
            ],
            "tumbling_window cannot be used with parallelism above 1: a window's state is kept per shard, \
             not per lane; set parallelism to 1",
        ),
    ];
    for (list, want) in cases {
        let mut list = list;
        list.extend(metrics);
        let (code, stderr) = run_to_exit(local, &list).await;
        assert_eq!(code, Some(1), "{list:?}: {stderr}");
        assert!(stderr.contains(want), "{list:?}: want {want:?} in\n{stderr}");
    }
    // clap's own usage error for a missing source.
    let (code, stderr) = run_to_exit(local, &["--application-name", "cli-7"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--table <TABLE>|--stream-arn <STREAM_ARN>"), "{stderr}");
}

/// Serves /healthz, /metrics and /status; names itself after the ECS task; writes JSON lines;
/// stops on SIGINT with exit code 0 after releasing its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_ecs_worker_id_and_graceful_sigint() {
    let local = DynamoDbLocal::shared();
    let table = unique_name("cli-live");
    local.create_stream_table(&table).await;
    let app = unique_name("cli-live-app");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let output = dir.path().join("out.jsonl");
    let log = dir.path().join("worker.log");
    let list = args(&[
        "--table",
        &table,
        "--application-name",
        &app,
        "--metrics-addr",
        "127.0.0.1:0",
        "--output",
        &output.display().to_string(),
    ]);
    let task = "8f03e41243824aea923aca126495f665";
    let mut command = common::worker_command(&local.endpoint(), &list, &log);
    command.env("ECS_CONTAINER_METADATA_URI_V4", format!("http://169.254.170.2/v4/{task}-2785273556"));
    let mut worker = common::WorkerProcess::spawn_command("cli", task, command, &log).await;

    let client = local.dynamodb_client();
    for v in 1..=3 {
        let put = client.put_item().table_name(&table).item("pk", AttributeValue::S("k".into()));
        put.item("v", AttributeValue::N(v.to_string())).send().await.unwrap_or_else(|e| panic!("{e:?}"));
    }
    let lines =
        common::eventually("three records in the output", Duration::from_secs(40), Duration::from_millis(200), || {
            let output = &output;
            async move {
                let text = std::fs::read_to_string(output).ok()?;
                let records: Vec<Value> = text
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|l| l.get("seq").is_some())
                    .collect();
                (records.len() == 3).then_some(records)
            }
        })
        .await;
    let versions: Vec<i64> = lines.iter().filter_map(|l| l["v"].as_i64()).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert!(lines.iter().all(|l| l["worker"] == task && l["keys"]["pk"] == "k"), "{lines:?}");
    assert_eq!(lines[0]["event"], "INSERT");
    assert_eq!(lines[1]["event"], "MODIFY");
    assert_eq!(lines[1]["old_v"], 1);

    assert_eq!(common::http_get(worker.metrics, "/healthz").await, (200, "ok\n".to_owned()));
    // The counters move when process_records returns, a moment after the lines are written.
    let wanted = [
        "kcl_records_processed_total{stream=\"\"} 3",
        "kcl_leases_held 1",
        "kcl_lease_takes_total{reason=\"unowned\"} 1",
    ];
    let addr = worker.metrics;
    common::eventually(
        "the metrics to count the records",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async move {
            let (code, metrics) = common::http_get(addr, "/metrics").await;
            (code == 200 && wanted.iter().all(|name| metrics.contains(name))).then_some(())
        },
    )
    .await;
    let (code, status) = common::http_get(worker.metrics, "/status").await;
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&status).unwrap_or_else(|e| panic!("{e}: {status}"));
    assert_eq!(status["worker_id"], task);
    assert_eq!(status["leases_held"], 1);

    worker.sigint();
    let exit = worker.wait_exit(Duration::from_secs(30)).await;
    assert!(exit.success(), "{exit}\n{}", worker.log_tail(30));
    let text = std::fs::read_to_string(&output).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.lines().last().is_some_and(|l| l.contains("\"lifecycle\":\"shutdown_requested\"")), "{text}");
    // The lease was checkpointed at the last record and released.
    let store = kcl_adapter::DynamoLeaseStore::new(local.dynamodb_client(), &app);
    let leases = kcl_core::LeaseStore::list(&store).await.unwrap_or_else(|e| panic!("{e}"));
    let shard: Vec<_> = leases.iter().filter(|l| !l.key.is_heartbeat()).collect();
    assert_eq!(shard.len(), 1, "{leases:?}");
    assert_eq!(shard[0].owner, None, "the lease was not released: {leases:?}");
    assert_eq!(shard[0].checkpoint.to_store_string(), lines[2]["seq"].as_str().unwrap_or_default());
    assert!(leases.iter().all(|l| !l.key.is_heartbeat()), "the heartbeat was not removed: {leases:?}");
}

/// With `--emf-interval-secs`, the worker prints CloudWatch Embedded Metric Format lines on
/// stdout (after its METRICS line) with its leases and oldest lag under the application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emf_lines_carry_the_autoscaling_figures() {
    use tokio::io::AsyncBufReadExt;
    let local = DynamoDbLocal::shared();
    let table = unique_name("cli-emf");
    local.create_stream_table(&table).await;
    let app = unique_name("cli-emf-app");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let list = args(&[
        "--table",
        &table,
        "--application-name",
        &app,
        "--worker-id",
        "emf-1",
        "--metrics-addr",
        "127.0.0.1:0",
        "--output",
        &dir.path().join("out.jsonl").display().to_string(),
        "--emf-interval-secs",
        "1",
    ]);
    let log = dir.path().join("worker.log");
    let mut child = common::worker_command(&local.endpoint(), &list, &log).spawn().unwrap_or_else(|e| panic!("{e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout not piped"));
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line.clone());
            let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
            if v["LeasesHeld"] == 1 {
                return Ok(v);
            }
        }
        Err(seen)
    })
    .await;
    let _ = child.start_kill();
    let emf = match found {
        Ok(Ok(v)) => v,
        other => panic!("no EMF line with the lease: {other:?}\n{}", common::tail(&log, 30)),
    };
    assert_eq!(emf["ApplicationName"], app.as_str(), "{emf}");
    assert_eq!(emf["WorkerId"], "emf-1", "{emf}");
    assert_eq!(emf["MaxIteratorAgeSeconds"], 0, "{emf}");
    let directive = &emf["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "kcl-streams", "{emf}");
    assert_eq!(directive["Dimensions"][0][0], "ApplicationName", "{emf}");
}
