//! Prometheus' own tool on the deploy files and on a running worker: `promtool check rules` on
//! the alert rules and on every query of the Grafana dashboard, `promtool check metrics` on a
//! real `/metrics` scrape. promtool is Debian's, pinned and unpacked by
//! `tools/promtool/install.sh` (the test command runs it); these tests fail when it is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// promtool: `KCL_PROMTOOL`, else `<repo>/.emulators/promtool/promtool`.
fn promtool() -> PathBuf {
    let path = std::env::var_os("KCL_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".emulators/promtool/promtool"));
    assert!(
        path.is_file(),
        "promtool not found at {}: run `bash tools/promtool/install.sh` (scripts/test.sh does), or set KCL_PROMTOOL",
        path.display()
    );
    path
}

/// Runs promtool with `args` and `stdin`; returns (success, stdout + stderr).
async fn run_promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = tokio::process::Command::new(promtool())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    let mut input = child.stdin.take().unwrap_or_else(|| panic!("promtool: no stdin"));
    input.write_all(stdin.as_bytes()).await.unwrap_or_else(|e| panic!("promtool stdin: {e}"));
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("promtool {args:?} did not exit"))
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Every `expr` of the dashboard's panels, with Grafana's variables replaced by what Grafana
/// would put there (a regex for `$job`/`$instance`, a range for `$__rate_interval`).
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                let expr = expr.replace("$__rate_interval", "1m").replace("$job", ".+").replace("$instance", ".+");
                queries.push((title.to_owned(), expr));
            }
        }
    }
    queries
}

/// The queries as one rules file of recording rules, so that `promtool check rules` parses each
/// with Prometheus' PromQL parser.
fn as_recording_rules(queries: &[(String, String)]) -> String {
    let mut out = String::from("groups:\n  - name: grafana-dashboard-queries\n    rules:\n");
    for (i, (title, expr)) in queries.iter().enumerate() {
        let expr = serde_json::to_string(expr).unwrap_or_else(|e| panic!("{e}"));
        out.push_str(&format!("      # {title}\n      - record: dashboard:query_{i}\n        expr: {expr}\n"));
    }
    out
}

#[tokio::test]
async fn the_alert_rules_pass_promtool_check_rules() {
    let rules = repo_root().join("deploy/alerts.yml");
    let (ok, text) = run_promtool(&["check", "rules", &rules.display().to_string()], "").await;
    assert!(ok, "promtool check rules deploy/alerts.yml:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}

#[tokio::test]
async fn every_dashboard_query_parses_as_promql() {
    let path = repo_root().join("deploy/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dashboard: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 10, "the dashboard has {} queries: {queries:?}", queries.len());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, as_recording_rules(&queries)).unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = run_promtool(&["check", "rules", &file.display().to_string()], "").await;
    assert!(ok, "a Grafana dashboard query is not valid PromQL:\n{out}");
    assert!(out.contains(&format!("SUCCESS: {} rules found", queries.len())), "{out}");
}

/// The check itself: a broken query is refused (so the test above can fail).
#[tokio::test]
async fn promtool_refuses_a_broken_query() {
    let queries = [("broken".to_owned(), "sum by (instance (kcl_leases_held)".to_owned())];
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("broken.yml");
    std::fs::write(&file, as_recording_rules(&queries)).unwrap_or_else(|e| panic!("{e}"));
    let (ok, out) = run_promtool(&["check", "rules", &file.display().to_string()], "").await;
    assert!(!ok, "promtool took a broken query:\n{out}");
}

/// A worker that has processed records (so its histograms and labelled counters have samples)
/// serves a `/metrics` page that `promtool check metrics` finds nothing wrong with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_workers_scrape_passes_promtool_check_metrics() {
    let local = DynamoDbLocal::shared();
    let table = unique_name("promtool");
    local.create_stream_table(&table).await;
    let app = unique_name("promtool-app");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("worker.log");
    let output = dir.path().join("out.jsonl").display().to_string();
    let list = ["--table", &table, "--application-name", &app, "--metrics-addr", "127.0.0.1:0", "--output", &output];
    let args: Vec<String> = list.iter().map(|a| (*a).to_owned()).collect();
    let mut worker = common::WorkerProcess::spawn("promtool", "promtool-w", &local.endpoint(), &args, &log).await;
    let client = local.dynamodb_client();
    for v in 1..=3 {
        let put = client.put_item().table_name(&table).item("pk", AttributeValue::S(format!("k{v}")));
        put.send().await.unwrap_or_else(|e| panic!("{e:?}"));
    }
    let addr = worker.metrics;
    let scrape = common::eventually(
        "the metrics to count three records",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async move {
            let (code, metrics) = common::http_get(addr, "/metrics").await;
            (code == 200 && metrics.contains("kcl_records_processed_total{stream=\"\"} 3")).then_some(metrics)
        },
    )
    .await;
    assert!(scrape.contains("kcl_batch_processing_seconds_bucket"), "{scrape}");
    let (ok, out) = run_promtool(&["check", "metrics"], &scrape).await;
    assert!(ok, "promtool check metrics on the worker's /metrics:\n{out}\n--- scrape:\n{scrape}");
    worker.sigterm();
    let exit = worker.wait_exit(Duration::from_secs(30)).await;
    assert!(exit.success(), "{exit}\n{}", worker.log_tail(30));
}

/// The check itself: a scrape with a lint problem is refused.
#[tokio::test]
async fn promtool_check_metrics_refuses_a_counter_without_total() {
    let bad = "# HELP kcl_bad A counter.\n# TYPE kcl_bad counter\nkcl_bad 1\n";
    let (ok, out) = run_promtool(&["check", "metrics"], bad).await;
    assert!(!ok, "promtool took a counter without _total:\n{out}");
}
