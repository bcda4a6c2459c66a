//! Several tables in one fleet, with real `worker` processes against Amazon DynamoDB Local.
//!
//! Every worker is started with `--table` three times: one lease table holds the leases of
//! all three streams, keyed `{identifier}:{shardId}` with the Java DynamoDB Streams adapter's
//! multi-stream identifier of each stream. Three writers change items of their own table
//! continuously (inserts, updates, deletes, re-inserts, each item's versions 1, 2, 3…); the
//! shards of every stream are rolled over twice, and a worker holding leases is killed with
//! SIGKILL and replaced. Then the verdict is the chaos test's ([`common::chaos::verify`]): the
//! three data streams, merged as the workers see them (shard ids prefixed with their stream's
//! identifier), are the truth; with the lease history (the lease table's own stream) kcl-core's
//! invariant checker judges every rule (nothing lost, shard order, item order, parents first,
//! one owner, fenced checkpoints, redeliveries only after a lease move), and the final lease
//! table must match the streams. On top: every lease key names one of the three streams, the
//! open leases of all streams are balanced over the live workers, and the workers count the
//! records of each stream under its own `stream` label, and `kcl-admin status` given the three
//! tables sees every shard caught up.
//!
//! DynamoDB Local that cannot start fails the test; it is never skipped. The outputs and
//! logs are kept after a failure, or always with `MULTI_KEEP_OUTPUT=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::chaos::{
    Fleet, Record, Recorder, TimeBase, Writer, Written, assert_no_problems, drain, start_recording, verdict, wall_nanos,
};
use common::leases::{holders, shard_leases};
use common::{eventually, http_get, run_admin, start_emulator};
use kcl_adapter::DynamoLeaseStore;
use kcl_adapter::local::unique_name;
use kcl_adapter::streams::kcl_stream_identifier;

/// kcl-core's default lease duration, as in production.
const LEASE_DURATION: Duration = Duration::from_secs(10);
/// Changes a second, per table.
const WRITES_PER_SECOND: u32 = 8;
/// Items per table.
const ITEMS: usize = 40;
/// How long the workers may take to process every change once the writes stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the fleet may take to balance the open leases (take cycles of a lease duration).
const BALANCE_TIMEOUT: Duration = Duration::from_secs(120);

/// `kcl_records_processed_total` per `stream` label in one `/metrics` text.
fn processed_by_stream(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("kcl_records_processed_total{stream=\""))
        .filter_map(|rest| {
            let (stream, value) = rest.split_once("\"} ")?;
            Some((stream.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tables_in_one_fleet_through_rollovers_and_a_sigkill() {
    let base = TimeBase::now();
    let local = start_emulator().await;
    let endpoint = local.endpoint();
    let tables: Vec<String> = (0..3).map(|i| unique_name(&format!("multi{i}"))).collect();
    let mut arns = Vec::new();
    for table in &tables {
        arns.push(local.create_stream_table(table).await);
    }
    let names: Vec<String> =
        arns.iter().map(|a| kcl_stream_identifier(a).unwrap_or_else(|| panic!("no identifier for {a}"))).collect();
    let Recorder { app, lease_arn, clock_arn, clock } = start_recording(&local, "multi").await;
    let store = DynamoLeaseStore::new(local.dynamodb_client(), &app);

    let mut fleet = Fleet::new("multi", &tables[0], &app, LEASE_DURATION, "MULTI_KEEP_OUTPUT");
    fleet.extra_tables = tables[1..].to_vec();
    fleet.spawn("w1", &endpoint).await;
    fleet.spawn("w2", &endpoint).await;
    let writers: Vec<Writer> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Writer::start_prefixed(
                local.dynamodb_client(),
                t.clone(),
                format!("t{i}-"),
                31 + i as u64,
                WRITES_PER_SECOND,
                ITEMS,
            )
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(10)).await;
    local.rollover().await.unwrap_or_else(|e| panic!("rollover: {e}"));
    println!("multi: rolled every stream over");
    tokio::time::sleep(Duration::from_secs(6)).await;
    // SIGKILL the worker holding the most open leases, and replace it.
    let held = holders(&store, &fleet.live_ids()).await;
    let (victim_id, victim_held) = held.iter().max_by_key(|(_, k)| k.len()).cloned().unwrap_or_default();
    assert!(!victim_held.is_empty(), "nobody holds a lease: {held:?}");
    let victim = fleet.name_of(&victim_id);
    let mut process = fleet.take(&victim);
    process.sigkill();
    let status = process.wait_exit(Duration::from_secs(10)).await;
    assert!(!status.success(), "a SIGKILLed worker cannot exit cleanly: {status}");
    let file = fleet.file_mut(&victim);
    (file.killed, file.killed_at) = (true, Some(wall_nanos()));
    println!("multi: SIGKILL {victim} holding {victim_held:?}");
    fleet.spawn("w3", &endpoint).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    local.rollover().await.unwrap_or_else(|e| panic!("rollover: {e}"));
    println!("multi: rolled every stream over again");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut written = Written::default();
    for w in writers {
        let w = w.stop().await;
        written.writes += w.writes;
        written.expected.extend(w.expected);
    }
    println!("multi: {} changes written to {} tables", written.writes, tables.len());

    let streams = local.streams_client();
    let data: Vec<(String, String)> = names.iter().cloned().zip(arns.iter().cloned()).collect();
    let record = Record {
        streams: &streams,
        data: &data,
        lease_arn: &lease_arn,
        clock_arn: &clock_arn,
        clock,
        base,
        lease_duration: LEASE_DURATION,
    };
    drain(&fleet, &store, &written, &record, DRAIN_TIMEOUT).await;

    // The open leases (one per stream) are spread over the two live workers.
    let live = fleet.live_ids();
    let spread =
        eventually("the open leases balanced over the live workers", BALANCE_TIMEOUT, Duration::from_secs(1), || {
            let (store, live) = (&store, &live);
            async move {
                let h = holders(store, live).await;
                let counts: Vec<usize> = h.iter().map(|(_, k)| k.len()).collect();
                (h.len() == live.len() && counts.iter().all(|c| (1..=2).contains(c))).then_some(h)
            }
        })
        .await;
    println!("multi: open leases per live worker: {spread:?}");
    // Each stream's records are counted under its own label.
    let mut per_stream: BTreeMap<String, f64> = BTreeMap::new();
    for worker in fleet.workers.values() {
        let (code, text) = http_get(worker.metrics, "/metrics").await;
        assert_eq!(code, 200, "{}", worker.name);
        for (stream, n) in processed_by_stream(&text) {
            *per_stream.entry(stream).or_default() += n;
        }
    }
    println!("multi: records processed by the live workers per stream: {per_stream:?}");
    for name in &names {
        assert!(per_stream.get(name).is_some_and(|n| *n > 0.0), "no records counted for stream {name}: {per_stream:?}");
    }

    // `kcl-admin status` over the three streams: both live workers, every shard caught up.
    let mut status_args = vec!["status".to_owned(), "--json".to_owned()];
    for t in &tables {
        status_args.extend(["--table".to_owned(), t.clone()]);
    }
    let status_args: Vec<&str> = status_args.iter().map(String::as_str).collect();
    let report = eventually("kcl-admin to see every shard caught up", BALANCE_TIMEOUT, Duration::from_secs(1), || {
        let (endpoint, app, status_args) = (&endpoint, &app, &status_args);
        async move {
            let run = run_admin(endpoint, app, status_args, "").await;
            assert_eq!(run.code, Some(0), "{run:?}");
            let report: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
            let shards = report["shards"].as_array()?;
            let settled = shards.iter().all(|s| s["lag"] == "caught_up" || s["lag"] == "none");
            let alive = report["workers"].as_array()?.iter().filter(|w| w["alive"] == true).count();
            (settled && alive == 2).then_some(report)
        }
    })
    .await;
    println!("multi: kcl-admin status sees {} shard leases", report["shards"].as_array().map_or(0, Vec::len));

    let figures = verdict(&mut fleet, &store, &written, record).await;
    let leases = shard_leases(&store).await.unwrap_or_default();
    let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    for lease in &leases {
        let stream = names.iter().find(|n| lease.key.as_str().starts_with(&format!("{n}:")));
        assert!(stream.is_some(), "lease {} names none of the streams {wanted:?}", lease.key);
    }
    println!("multi: invariant checker: {}", figures.checker);
    println!(
        "multi: RESULT tables=3 shards={} changes_written={} processed={} distinct={} duplicates={} (after the kill \
         {}) lost={} lease_writes={} takes={}",
        figures.shards,
        figures.written,
        figures.processed,
        figures.distinct,
        figures.duplicates,
        figures.dup_after_kill,
        figures.lost,
        figures.lease_writes,
        figures.takes
    );
    assert_no_problems("multi-table fleet", &figures.problems);
    assert_eq!(figures.lost, 0);
    assert!(figures.shards >= 9, "three streams rolled over twice have at least 9 shards: {}", figures.shards);
}
