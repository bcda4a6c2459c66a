//! `kcl-admin` against DynamoDB Local, with real `worker` processes:
//!
//! - `status` shows a live worker, its lease and "caught up"; after the worker is killed and
//!   more is written, the worker as not alive and the shard behind; `release` then frees the
//!   dead worker's lease, and a new worker continues from its checkpoint (nothing twice);
//! - `release` of a live worker is refused; forced, the worker is fenced (its processor is
//!   told the lease is lost), takes the lease back and goes on;
//! - `reset` is refused while a worker is alive; with `--coordinate` the running worker
//!   processes everything again from TRIM_HORIZON; to a time, a new worker processes exactly
//!   the records written after it; a sequence number without `--shard` is refused;
//! - `forget` is refused while a worker is alive, asks for the application name, deletes the
//!   lease table only when it is typed, and refuses a table that is not a lease table.
//!
//! Liveness is judged as the workers judge it (a heartbeat that changes), so every admin call
//! watches for 4.5 s; waits for the fleet are generous (a take cycle is a lease duration).
//! DynamoDB Local that cannot start fails the test; it is never skipped.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::types::AttributeValue;
use common::{AdminRun, WorkerProcess, eventually, run_admin};
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use serde_json::Value;

/// How long the fleet may take to react (take cycles of 10 s, a cold machine).
const FLEET_TIMEOUT: Duration = Duration::from_secs(90);

/// The records (not lifecycle lines) in a jsonl output, as (key, version).
fn records(path: &Path) -> Vec<(String, i64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l.get("seq").is_some())
        .map(|l| (l["keys"]["pk"].as_str().unwrap_or_default().to_owned(), l["v"].as_i64().unwrap_or(-1)))
        .collect()
}

async fn put(local: &DynamoDbLocal, table: &str, key: &str, v: i64) {
    let put = local.dynamodb_client().put_item().table_name(table).item("pk", AttributeValue::S(key.into()));
    put.item("v", AttributeValue::N(v.to_string())).send().await.unwrap_or_else(|e| panic!("{e:?}"));
}

async fn spawn(local: &DynamoDbLocal, name: &str, table: &str, app: &str, dir: &Path) -> WorkerProcess {
    let output = dir.join(format!("{name}.jsonl"));
    let args: Vec<String> = [
        "--table",
        table,
        "--application-name",
        app,
        "--worker-id",
        name,
        "--metrics-addr",
        "127.0.0.1:0",
        "--output",
        &output.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    WorkerProcess::spawn(name, name, &local.endpoint(), &args, &dir.join(format!("{name}.log"))).await
}

/// Waits until `path` holds `n` records.
async fn wait_records(path: &Path, n: usize, what: &str) -> Vec<(String, i64)> {
    eventually(what, FLEET_TIMEOUT, Duration::from_millis(200), || async move {
        let r = records(path);
        (r.len() >= n).then_some(r)
    })
    .await
}

fn json(run: &AdminRun) -> Value {
    assert_eq!(run.code, Some(0), "{run:?}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

/// `status --json` until `check` holds for its one shard.
async fn wait_status(local: &DynamoDbLocal, app: &str, table: &str, what: &str, check: fn(&Value) -> bool) -> Value {
    eventually(what, FLEET_TIMEOUT, Duration::from_millis(500), || async move {
        let report = json(&run_admin(&local.endpoint(), app, &["status", "--json", "--table", table], "").await);
        check(&report).then_some(report)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_release_follow_a_worker_that_dies() {
    let local = DynamoDbLocal::shared();
    let (table, app) = (unique_name("admin-status"), unique_name("admin-status-app"));
    local.create_stream_table(&table).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut w1 = spawn(local, "w1", &table, &app, dir.path()).await;
    for v in 1..=3 {
        put(local, &table, &format!("k{v}"), v).await;
    }
    wait_records(&dir.path().join("w1.jsonl"), 3, "w1 to process three records").await;
    let live = wait_status(local, &app, &table, "w1 alive with its shard caught up", |r| {
        r["shards"][0]["lag"] == "caught_up" && r["workers"][0]["alive"] == true
    })
    .await;
    assert_eq!(live["workers"][0]["worker"], "w1", "{live}");
    assert_eq!(live["workers"][0]["leases"], 1, "{live}");
    assert_eq!(live["shards"][0]["owner"], "w1", "{live}");
    assert_eq!(live["shards"][0]["state"], "processing", "{live}");
    let text = run_admin(&local.endpoint(), &app, &["status", "--table", &table], "").await;
    assert_eq!(text.code, Some(0), "{text:?}");
    assert!(text.stdout.contains("1 worker(s) alive, 1 lease(s) (1 processing, 0 finished)"), "{}", text.stdout);
    assert!(text.stdout.lines().any(|l| l.starts_with("w1") && l.contains("yes")), "{}", text.stdout);
    println!("status of a live worker:\n{}", text.stdout);

    // Refused while alive.
    let refused = run_admin(&local.endpoint(), &app, &["release", "--worker", "w1"], "").await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("alive (w1)") && refused.stderr.contains("--force"), "{refused:?}");

    w1.sigkill();
    w1.wait_exit(Duration::from_secs(10)).await;
    put(local, &table, "k4", 4).await;
    put(local, &table, "k5", 5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dead = json(&run_admin(&local.endpoint(), &app, &["status", "--json", "--table", &table], "").await);
    assert_eq!(dead["workers"][0]["alive"], false, "{dead}");
    assert_eq!(dead["shards"][0]["owner"], "w1", "{dead}");
    assert_eq!(dead["shards"][0]["lag"], "behind", "{dead}");
    assert!(dead["shards"][0]["oldest_unprocessed_ms"].as_u64().is_some_and(|ms| ms >= 1_000), "{dead}");
    let text = run_admin(&local.endpoint(), &app, &["status", "--table", &table], "").await;
    println!("status after w1 was killed:\n{}", text.stdout);

    let released = run_admin(&local.endpoint(), &app, &["release", "--worker", "w1"], "").await;
    assert_eq!(released.code, Some(0), "{released:?}");
    assert!(released.stdout.contains("released 1 lease(s) of worker w1"), "{released:?}");
    let freed = json(&run_admin(&local.endpoint(), &app, &["status", "--json"], "").await);
    assert_eq!(freed["shards"][0]["owner"], Value::Null, "{freed}");
    assert_eq!(freed["shards"][0]["state"], "unowned", "{freed}");
    assert_eq!(freed["shards"][0]["lag"], "unknown", "no stream given: {freed}");

    // A new worker continues at the checkpoint: exactly the two records written after.
    let _w2 = spawn(local, "w2", &table, &app, dir.path()).await;
    let got = wait_records(&dir.path().join("w2.jsonl"), 2, "w2 to process the two new records").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(records(&dir.path().join("w2.jsonl")), vec![("k4".into(), 4), ("k5".into(), 5)], "{got:?}");

    // Forced release of a live worker fences it; it takes the lease back and goes on.
    wait_status(local, &app, &table, "w2 to hold the shard", |r| r["shards"][0]["owner"] == "w2").await;
    let forced = run_admin(&local.endpoint(), &app, &["release", "--worker", "w2", "--force"], "").await;
    assert_eq!(forced.code, Some(0), "{forced:?}");
    assert!(forced.stdout.contains("released 1 lease(s) of worker w2"), "{forced:?}");
    let out2 = dir.path().join("w2.jsonl");
    // Fenced: its processor is told the lease is lost, and it takes the lease back.
    eventually("w2 to lose the lease and take it again", FLEET_TIMEOUT, Duration::from_millis(200), || {
        let out2 = &out2;
        async move {
            let text = std::fs::read_to_string(out2).unwrap_or_default();
            let lost = text.find("\"lifecycle\":\"lease_lost\"")?;
            text[lost..].contains("\"lifecycle\":\"initialize\"").then_some(())
        }
    })
    .await;
    put(local, &table, "k6", 6).await;
    let after = wait_records(&out2, 3, "w2 to process k6 after the forced release").await;
    assert_eq!(after.last(), Some(&("k6".to_owned(), 6)), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_refuses_a_live_fleet_coordinates_with_it_and_goes_back_to_a_time() {
    let local = DynamoDbLocal::shared();
    let (table, app) = (unique_name("admin-reset"), unique_name("admin-reset-app"));
    local.create_stream_table(&table).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out1 = dir.path().join("w1.jsonl");
    let mut w1 = spawn(local, "w1", &table, &app, dir.path()).await;
    for v in 1..=3 {
        put(local, &table, &format!("k{v}"), v).await;
    }
    wait_records(&out1, 3, "w1 to process three records").await;
    wait_status(local, &app, &table, "the checkpoint to reach the end", |r| r["shards"][0]["lag"] == "caught_up").await;

    let endpoint = local.endpoint();
    let refused = run_admin(&endpoint, &app, &["reset", "--to", "trim-horizon"], "").await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("alive (w1)") && refused.stderr.contains("--coordinate"), "{refused:?}");
    let no_shard = run_admin(&endpoint, &app, &["reset", "--to", "12345", "--coordinate"], "").await;
    assert_eq!(no_shard.code, Some(1), "{no_shard:?}");
    assert!(no_shard.stderr.contains("exactly one --shard"), "{no_shard:?}");

    // Coordinated: the running worker is fenced and processes everything again.
    let reset = run_admin(&endpoint, &app, &["reset", "--to", "trim-horizon", "--coordinate"], "").await;
    assert_eq!(reset.code, Some(0), "{reset:?}");
    assert!(reset.stdout.contains("-> TRIM_HORIZON") && reset.stdout.contains("reset 1 lease(s)"), "{reset:?}");
    let again = wait_records(&out1, 6, "w1 to process the three records again").await;
    assert_eq!(again[3..].to_vec(), again[..3].to_vec(), "the second pass is the first again: {again:?}");

    // To a time: records written at or after it are processed again, earlier ones not.
    // DynamoDB Local truncates creation times to the minute, so the time is the next whole
    // minute, and k7 and k8 are written a second after it.
    let now = SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let minute = Duration::from_secs((now.as_secs() / 60 + 1) * 60);
    tokio::time::sleep(minute.saturating_sub(now) + Duration::from_secs(1)).await;
    let at = time::OffsetDateTime::from(std::time::UNIX_EPOCH + minute);
    let at = at.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|e| panic!("{e}"));
    put(local, &table, "k7", 7).await;
    put(local, &table, "k8", 8).await;
    wait_records(&out1, 8, "w1 to process k7 and k8").await;
    w1.sigterm();
    assert!(w1.wait_exit(Duration::from_secs(60)).await.success(), "{}", w1.log_tail(30));
    let reset = run_admin(&endpoint, &app, &["reset", "--to", &at, "--table", &table], "").await;
    assert_eq!(reset.code, Some(0), "{reset:?}");
    println!("reset to {at}:\n{}", reset.stdout);
    let _w2 = spawn(local, "w2", &table, &app, dir.path()).await;
    let out2 = dir.path().join("w2.jsonl");
    wait_records(&out2, 2, "w2 to process the records after the time").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(records(&out2), vec![("k7".into(), 7), ("k8".into(), 8)], "reset to {at}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_refuses_a_live_fleet_and_deletes_only_when_confirmed() {
    let local = DynamoDbLocal::shared();
    let (table, app) = (unique_name("admin-forget"), unique_name("admin-forget-app"));
    local.create_stream_table(&table).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = local.endpoint();

    // The source table is no lease table: nothing runs against it.
    let wrong = run_admin(&endpoint, &table, &["forget", "--yes"], "").await;
    assert_eq!(wrong.code, Some(1), "{wrong:?}");
    assert!(wrong.stderr.contains("is not a lease table"), "{wrong:?}");

    let mut w1 = spawn(local, "w1", &table, &app, dir.path()).await;
    let refused = run_admin(&endpoint, &app, &["forget", "--yes"], "").await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("alive (w1)") && refused.stderr.contains("--force"), "{refused:?}");
    w1.sigterm();
    assert!(w1.wait_exit(Duration::from_secs(60)).await.success(), "{}", w1.log_tail(30));

    let unconfirmed = run_admin(&endpoint, &app, &["forget"], "not-the-name\n").await;
    assert_eq!(unconfirmed.code, Some(1), "{unconfirmed:?}");
    assert!(
        unconfirmed.stderr.contains("not confirmed") && unconfirmed.stderr.contains("nothing deleted"),
        "{unconfirmed:?}"
    );
    let client = local.dynamodb_client();
    assert!(client.describe_table().table_name(&app).send().await.is_ok(), "deleted without confirmation");

    let confirmed = run_admin(&endpoint, &app, &["forget"], &format!("{app}\n")).await;
    assert_eq!(confirmed.code, Some(0), "{confirmed:?}");
    assert!(confirmed.stdout.contains(&format!("deleted lease table {app}")), "{confirmed:?}");
    let gone = client.describe_table().table_name(&app).send().await;
    assert!(gone.is_err(), "the lease table is still there: {gone:?}");
    let again = run_admin(&endpoint, &app, &["status"], "").await;
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(again.stderr.contains("does not exist") && again.stderr.contains("--application-name"), "{again:?}");
}
