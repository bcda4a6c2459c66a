//! The README's example is `src/bin/audit.rs`, verbatim, and runs: as its own process against
//! DynamoDB Local, it prints every change of the table, then stops on SIGTERM with its lease
//! checkpointed and released.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use kcl_adapter::DynamoLeaseStore;
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_core::{Checkpoint, LeaseStore};
use tokio::io::{AsyncBufReadExt, BufReader};

const ORDERS: u64 = 20;
const BEGIN: &str = "// README example begins\n";
const END: &str = "// README example ends";

fn example_source() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/bin/audit.rs");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_readme_shows_the_example_verbatim() {
    let source = example_source();
    let start = source.find(BEGIN).map(|i| i + BEGIN.len()).unwrap_or_else(|| panic!("no {BEGIN:?} marker"));
    let end = source.find(END).unwrap_or_else(|| panic!("no {END:?} marker"));
    let code = &source[start..end];
    assert!(code.contains("WorkerBuilder::new"), "the marked part is the example: {code}");
    let readme_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap_or_else(|e| panic!("{}: {e}", readme_path.display()));
    assert!(
        readme.contains(&format!("```rust\n{code}```")),
        "README.md must show examples/src/bin/audit.rs (between its markers) as one ```rust block; \
         copy it over after changing either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_runs_against_dynamodb_local() {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_audit"));
    let local = DynamoDbLocal::shared();
    let table = unique_name("orders");
    local.create_stream_table(&table).await;
    let mut child = tokio::process::Command::new(&binary)
        .env("ORDERS_TABLE", &table)
        .env("AWS_ENDPOINT_URL", local.endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));

    let client = local.dynamodb_client();
    for i in 1..=ORDERS {
        let put = client.put_item().table_name(&table).item("pk", AttributeValue::S(format!("pk-{i}")));
        let put =
            put.item("id", AttributeValue::S(format!("order-{i}"))).item("total", AttributeValue::N(i.to_string()));
        put.send().await.unwrap_or_else(|e| panic!("{e:?}"));
    }
    let want: BTreeSet<String> = (1..=ORDERS).map(|i| format!("INSERT Some((\"order-{i}\", {i}))")).collect();
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = BTreeSet::new();
    let read = tokio::time::timeout(Duration::from_secs(120), async {
        while !want.is_subset(&seen) {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    seen.insert(line);
                }
                Ok(None) | Err(_) => break,
            }
        }
    })
    .await;
    if read.is_err() || !want.is_subset(&seen) {
        let _ = child.start_kill();
        let out = child.wait_with_output().await.unwrap_or_else(|e| panic!("{e}"));
        panic!(
            "the example printed {} of {ORDERS} orders: {seen:?}\nstderr:\n{}",
            want.intersection(&seen).count(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let pid = child.id().unwrap_or_else(|| panic!("the example exited early"));
    let killed = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    assert!(killed.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the example did not stop within 60 s of SIGTERM"))
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);

    // Its lease is released, checkpointed at the last change.
    let store = DynamoLeaseStore::new(client, "orders-audit");
    let leases = store.list().await.unwrap_or_else(|e| panic!("{e}"));
    // This test binary's emulator holds this one table: one shard, one lease.
    let mine: Vec<_> = leases.iter().collect();
    assert_eq!(mine.len(), 1, "one shard, one lease: {leases:?}");
    assert_eq!(mine[0].owner, None, "released on SIGTERM: {:?}", mine[0]);
    assert!(matches!(mine[0].checkpoint, Checkpoint::At(_)), "checkpointed: {:?}", mine[0]);
}
