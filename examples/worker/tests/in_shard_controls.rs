//! The in-shard controls in the `worker` binary against DynamoDB Local: `--parallelism`,
//! `--batch-size` and `--batching-window-ms`, `--filter` and `--tumbling-window-secs`. Judged from the JSON lines the
//! worker writes (each line names its lane and the size of its batch), never by timing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use serde_json::Value;

const ITEMS: usize = 30;
const VERSIONS: i64 = 10;

/// Writes versions 1..=VERSIONS of items `item-0`..: item by item per version, so each
/// item's changes are spread over the stream.
async fn write_changes(local: &DynamoDbLocal, table: &str) {
    let client = local.dynamodb_client();
    for v in 1..=VERSIONS {
        for i in 0..ITEMS {
            let put = client.put_item().table_name(table).item("pk", AttributeValue::S(format!("item-{i}")));
            put.item("v", AttributeValue::N(v.to_string())).send().await.unwrap_or_else(|e| panic!("{e:?}"));
        }
    }
}

fn lines_with(output: &Path, field: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(output).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|l| l.get(field).is_some()).collect()
}

fn record_lines(output: &Path) -> Vec<Value> {
    lines_with(output, "seq")
}

/// Runs one worker with `flags` until `want` records are in its output; returns them.
async fn run_worker(flags: &[&str], want: usize, name: &str) -> Vec<Value> {
    run_worker_until(flags, want, name, |_| true).await.0
}

/// Runs one worker with `flags` until `want` records are in its output and `done` holds for
/// its output file; returns the record lines and the window-end lines.
async fn run_worker_until(
    flags: &[&str],
    want: usize,
    name: &str,
    done: impl Fn(&Path) -> bool,
) -> (Vec<Value>, Vec<Value>) {
    let local = DynamoDbLocal::shared();
    let table = unique_name(name);
    local.create_stream_table(&table).await;
    let app = unique_name(&format!("{name}-app"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let output = dir.path().join("out.jsonl");
    let log = dir.path().join("worker.log");
    let mut list: Vec<String> = ["--table", &table, "--application-name", &app, "--metrics-addr", "127.0.0.1:0"]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
    list.extend(["--output".to_owned(), output.display().to_string(), "--worker-id".to_owned(), name.to_owned()]);
    list.extend(flags.iter().map(|f| (*f).to_owned()));
    let command = common::worker_command(&local.endpoint(), &list, &log);
    let mut worker = common::WorkerProcess::spawn_command(name, name, command, &log).await;
    write_changes(local, &table).await;
    common::eventually(
        "every wanted change in the output",
        Duration::from_secs(120),
        Duration::from_millis(250),
        || {
            let (output, done) = (&output, &done);
            async move {
                let distinct: BTreeSet<String> =
                    record_lines(output).iter().filter_map(|l| l["seq"].as_str().map(str::to_owned)).collect();
                (distinct.len() >= want && done(output)).then_some(())
            }
        },
    )
    .await;
    worker.sigint();
    let exit = worker.wait_exit(Duration::from_secs(60)).await;
    assert!(exit.success(), "{exit}\n{}", worker.log_tail(30));
    let lines = record_lines(&output);
    assert!(lines.len() >= want, "{} lines", lines.len());
    (lines, lines_with(&output, "window_end"))
}

/// Per item, the versions in the order the output has them.
fn versions_per_item(lines: &[Value]) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for l in lines {
        let (Some(pk), Some(v)) = (l["keys"]["pk"].as_str(), l["v"].as_i64()) else { continue };
        out.entry(pk.to_owned()).or_default().push(v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_batches_and_the_window_in_the_worker_binary() {
    let flags = ["--parallelism", "4", "--batch-size", "10", "--batching-window-ms", "500"];
    let lines = run_worker(&flags, ITEMS * VERSIONS as usize, "lanes").await;
    let per_item = versions_per_item(&lines);
    assert_eq!(per_item.len(), ITEMS, "every item's changes arrived");
    for (item, versions) in &per_item {
        let first_seen: Vec<i64> = versions.iter().fold(Vec::new(), |mut seen, v| {
            if !seen.contains(v) {
                seen.push(*v);
            }
            seen
        });
        assert_eq!(first_seen, (1..=VERSIONS).collect::<Vec<_>>(), "{item}: changes out of order: {versions:?}");
    }
    let lanes: BTreeSet<u64> = lines.iter().filter_map(|l| l["lane"].as_u64()).collect();
    assert!(lanes.len() > 1 && lanes.iter().all(|l| *l < 4), "records went through several of the 4 lanes: {lanes:?}");
    let sizes: Vec<u64> = lines.iter().filter_map(|l| l["batch"].as_u64()).collect();
    assert!(sizes.iter().all(|n| (1..=10).contains(n)), "every batch holds at most 10 records: {sizes:?}");
    // The puts come one by one; the window gathers them: most records arrive in full batches.
    let in_full = sizes.iter().filter(|n| **n == 10).count();
    assert!(in_full * 2 > sizes.len(), "most records came in batches of 10: {in_full} of {}", sizes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_in_the_worker_binary() {
    // item-1 and item-10..item-19: 11 items, 10 versions each.
    let pattern = r#"{"eventName": ["INSERT", "MODIFY"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "item-1"}]}}}}"#;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("filter.json");
    std::fs::write(&file, pattern).unwrap_or_else(|e| panic!("{e}"));
    let at_file = format!("@{}", file.display());
    let flags = ["--filter", at_file.as_str(), "--parallelism", "2"];
    let lines = run_worker(&flags, 11 * VERSIONS as usize, "filter").await;
    let per_item = versions_per_item(&lines);
    let items: Vec<&String> = per_item.keys().collect();
    assert_eq!(items.len(), 11, "exactly the matching items: {items:?}");
    assert!(items.iter().all(|k| k.starts_with("item-1")), "{items:?}");
    let distinct: BTreeSet<&str> = lines.iter().filter_map(|l| l["seq"].as_str()).collect();
    assert_eq!(distinct.len(), 11 * VERSIONS as usize, "every matching change, and no other");
}

/// `--tumbling-window-secs` with small batches: the window's state (a record count) is
/// carried across batches and handed back in one final call per window. DynamoDB Local rounds
/// creation times down to the minute, so windows here are closed by the stream's clock at
/// idle, not by later records: judged by the counts, never by timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumbling_windows_in_the_worker_binary() {
    let want = ITEMS * VERSIONS as usize;
    // Until the windows' counts add up to every change: the last window closed at idle.
    let all_counted = |output: &Path| {
        lines_with(output, "window_end").iter().filter_map(|l| l["records"].as_u64()).sum::<u64>() >= want as u64
    };
    let flags = ["--tumbling-window-secs", "2", "--batch-size", "7"];
    let (lines, ends) = run_worker_until(&flags, want, "windows", all_counted).await;
    assert!(!ends.is_empty(), "no window ended");
    for end in &ends {
        assert_eq!(end["window_end"], "elapsed", "only time ends these windows: {end}");
        assert_eq!(end["terminated_early"], false, "{end}");
        let (start, stop) = (end["start"].as_u64().unwrap_or(0), end["end"].as_u64().unwrap_or(0));
        assert_eq!(stop - start, 2_000, "a window is 2 s long: {end}");
    }
    // Per window, the final count is the number of distinct changes delivered in it.
    let mut per_window: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for l in &lines {
        let window = l["window"].as_u64().unwrap_or_else(|| panic!("a record line without its window: {l}"));
        per_window.entry(window).or_default().insert(l["seq"].as_str().unwrap_or_default());
    }
    let counted: BTreeMap<u64, u64> =
        ends.iter().map(|e| (e["start"].as_u64().unwrap_or(0), e["records"].as_u64().unwrap_or(0))).collect();
    assert_eq!(counted.len(), ends.len(), "one final call per window: {ends:?}");
    let delivered: BTreeMap<u64, u64> = per_window.iter().map(|(w, seqs)| (*w, seqs.len() as u64)).collect();
    assert_eq!(counted, delivered, "each window's state counted exactly its changes");
    // The batches are of at most 7 records, so a window of more than 7 changes carried its
    // state across batches.
    assert!(counted.values().any(|n| *n > 7), "some window spans several batches: {counted:?}");
    assert_eq!(delivered.values().sum::<u64>(), want as u64, "every change in exactly one window");
}
