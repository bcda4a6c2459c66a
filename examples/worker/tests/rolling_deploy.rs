//! A rolling deploy on ECS, with real `worker` processes against Amazon DynamoDB Local, under
//! continuous writes: no lag spike, no duplicate, nothing lost.
//!
//! Four tables (one open shard each) are written continuously, 10 changes a second each. Two
//! workers (production defaults: 10 s lease duration) consume them. Then, [`DEPLOYS`] times
//! in a row, the test does what ECS does on a deploy with `minimumHealthyPercent` 100 and
//! `maximumPercent` 200: it starts two new workers (the new task definition), waits for them to
//! be up plus a health-check grace, then sends SIGTERM to the old workers one at a time, each
//! after the previous one exited and every open lease has a live owner again.
//!
//! What is judged, per shard, from the jsonl outputs (see [`common::gaps`]):
//! - the longest *wait*: from when a change could first have been processed (its predecessor
//!   processed and itself written) to when it was. Targets: at most [`MAX_WAIT`] (1 s);
//! - duplicates: 0 (every handover is graceful: the old owner checkpoints, then releases);
//! - lost: 0, and every other promise, by the chaos test's verdict ([`common::chaos::verify`]:
//!   kcl-core's invariant checker over the outputs and the exact lease history).
//!
//! The figures are printed (`cargo test -- --nocapture`): per shard and per deploy. The outputs
//! and logs are kept after a failure, or always with `DEPLOY_KEEP_OUTPUT=1`. `DEPLOY_ROUNDS`
//! changes the number of deploys. DynamoDB Local that cannot start fails the test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::chaos::{
    Fleet, Record, Recorder, TimeBase, Writer, Written, assert_no_problems, drain, secs_between, start_recording,
    verdict, wall_nanos,
};
use common::gaps::{shard_gaps, shard_gaps_in};
use common::leases::{holders, shard_leases};
use common::outputs::Outputs;
use common::{eventually, start_emulator};
use kcl_adapter::DynamoLeaseStore;
use kcl_adapter::local::unique_name;
use kcl_core::Checkpoint;

/// kcl-core's default lease duration, as in production.
const LEASE_DURATION: Duration = Duration::from_secs(10);
/// Tables, each with one open shard.
const TABLES: usize = 4;
/// Workers per task generation (the service's desired count).
const DESIRED: usize = 2;
/// Deploys in a row, by default.
const DEPLOYS: usize = 3;
/// Changes a second, per table.
const WRITES_PER_SECOND: u32 = 10;
/// Items per table.
const ITEMS: usize = 30;
/// A processor doing light work: the wait between writing a batch and checkpointing it.
const PROCESS_DELAY: Duration = Duration::from_millis(20);
/// The target: no change waits longer than this for a consumer.
const MAX_WAIT: Duration = Duration::from_secs(1);
/// ECS waits for a new task's health check to pass before it stops an old one.
const HEALTH_GRACE: Duration = Duration::from_secs(5);
/// Time between one old worker's exit (and its leases owned again) and the next SIGTERM.
const BETWEEN_STOPS: Duration = Duration::from_secs(3);
/// Generous bounds (a cold CI machine), never the figures judged.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(90);
const EXIT_TIMEOUT: Duration = Duration::from_secs(40);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);

/// Waits until every open shard lease is owned by a live worker, and (when `balanced`) the
/// live workers hold them evenly. Returns the holders.
async fn wait_settled(store: &DynamoLeaseStore, fleet: &Fleet, open: usize, balanced: bool) -> BTreeMap<String, usize> {
    let live = fleet.live_ids();
    eventually("every open lease owned by a live worker", SETTLE_TIMEOUT, Duration::from_millis(200), || {
        let (store, live, fleet) = (store, &live, &fleet);
        async move {
            let leases = shard_leases(store).await?;
            let open_leases: Vec<_> = leases.iter().filter(|l| l.checkpoint != Checkpoint::ShardEnd).collect();
            let owned =
                open_leases.iter().filter(|l| l.owner.as_ref().is_some_and(|o| live.contains(o.as_str()))).count();
            let h = holders(store, live).await;
            let even = !balanced || h.iter().all(|(_, k)| k.len() == open / live.len());
            let counts = h.iter().map(|(w, k)| (fleet.name_of(w), k.len())).collect();
            (open_leases.len() == open && owned == open && even).then_some(counts)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_deploys_without_a_lag_spike_a_duplicate_or_a_loss() {
    let deploys: usize = std::env::var("DEPLOY_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEPLOYS);
    let base = TimeBase::now();
    let local = start_emulator().await;
    let endpoint = local.endpoint();
    let tables: Vec<String> = (0..TABLES).map(|i| unique_name(&format!("deploy{i}"))).collect();
    let mut arns = Vec::new();
    for table in &tables {
        arns.push(local.create_stream_table(table).await);
    }
    let names: Vec<String> = arns
        .iter()
        .map(|a| kcl_adapter::streams::kcl_stream_identifier(a).unwrap_or_else(|| panic!("no identifier for {a}")))
        .collect();
    let Recorder { app, lease_arn, clock_arn, clock } = start_recording(&local, "deploy").await;
    let store = DynamoLeaseStore::new(local.dynamodb_client(), &app);

    let mut fleet = Fleet::new("deploy", &tables[0], &app, LEASE_DURATION, "DEPLOY_KEEP_OUTPUT");
    fleet.extra_tables = tables[1..].to_vec();
    fleet.process_delay = PROCESS_DELAY;
    let generation = |g: usize| -> Vec<String> { (1..=DESIRED).map(|i| format!("g{g}w{i}")).collect() };
    for name in generation(0) {
        fleet.spawn(&name, &endpoint).await;
    }
    let writers: Vec<Writer> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let prefix = format!("t{i}-");
            Writer::start_prefixed(local.dynamodb_client(), t.clone(), prefix, 71 + i as u64, WRITES_PER_SECOND, ITEMS)
        })
        .collect();
    let t0 = wall_nanos();
    let held = wait_settled(&store, &fleet, TABLES, true).await;
    println!("deploy: {:6.2} s generation 0 consuming, leases held: {held:?}", secs_between(t0, wall_nanos()));
    tokio::time::sleep(HEALTH_GRACE).await;

    // (generation, start, end) of each deploy, wall ns.
    let mut rounds: Vec<(usize, u64, u64)> = Vec::new();
    for g in 1..=deploys {
        let start = wall_nanos();
        for name in generation(g) {
            fleet.spawn(&name, &endpoint).await;
        }
        println!("deploy: {:6.2} s deploy {g}: generation {g} started", secs_between(t0, wall_nanos()));
        tokio::time::sleep(HEALTH_GRACE).await;
        for old in generation(g - 1) {
            let mut process = fleet.take(&old);
            process.sigterm();
            fleet.file_mut(&old).terminated_at = Some(wall_nanos());
            let status = process.wait_exit(EXIT_TIMEOUT).await;
            assert!(status.success(), "{old} exited with {status} after SIGTERM\n{}", process.log_tail(40));
            let held = wait_settled(&store, &fleet, TABLES, false).await;
            println!(
                "deploy: {:6.2} s deploy {g}: {old} stopped; leases held: {held:?}",
                secs_between(t0, wall_nanos())
            );
            tokio::time::sleep(BETWEEN_STOPS).await;
        }
        rounds.push((g, start, wall_nanos()));
    }
    let mut written = Written::default();
    for w in writers {
        written.merge(w.stop().await);
    }
    println!("deploy: {:6.2} s {} changes written; draining", secs_between(t0, wall_nanos()), written.writes);

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
    let figures = verdict(&mut fleet, &store, &written, record).await;

    let mut outputs = Outputs::default();
    for file in fleet.files.values() {
        outputs.read_file(&file.path, file.killed).unwrap_or_else(|e| panic!("{e}"));
    }
    let gaps = shard_gaps(&outputs.occurrences, &written.sent_at);
    let mut problems = figures.problems.clone();
    assert_eq!(gaps.len(), TABLES, "one shard per table: {:?}", gaps.keys().collect::<Vec<_>>());
    let ms = |ns: u64| ns as f64 / 1e6;
    // Short shard names: the table's index.
    let short = |shard: &str| -> String {
        names
            .iter()
            .position(|n| shard.starts_with(&format!("{n}:")))
            .map_or_else(|| shard.to_owned(), |i| format!("table {i}"))
    };
    for (shard, g) in &gaps {
        let shard = short(shard);
        let round = rounds.iter().find(|(_, s, e)| (*s..=*e).contains(&g.longest_wait_at)).map(|r| r.0);
        println!(
            "deploy: shard {shard}: {} changes, {} duplicates, longest wait {:.0} ms at {:.2} s (deploy {round:?}), \
             longest gap {:.0} ms, owners {:?}",
            g.changes,
            g.duplicates,
            ms(g.longest_wait),
            secs_between(t0, g.longest_wait_at),
            ms(g.longest_gap),
            g.owners.iter().map(|o| fleet.name_of(o)).collect::<Vec<_>>()
        );
        if g.longest_wait > MAX_WAIT.as_nanos() as u64 {
            problems.push(format!("shard {shard}: a change waited {:.0} ms (target {MAX_WAIT:?})", ms(g.longest_wait)));
        }
        if g.owners.len() < 2 {
            problems.push(format!("shard {shard} never moved: {:?}", g.owners));
        }
    }
    // The longest wait in each deploy, over every shard.
    let per_round: BTreeMap<usize, f64> = rounds
        .iter()
        .map(|(g, s, e)| {
            let inside = shard_gaps_in(&outputs.occurrences, &written.sent_at, &(*s..=*e));
            (*g, inside.values().map(|x| (ms(x.longest_wait)).round()).fold(0.0, f64::max))
        })
        .collect();
    let max_wait = gaps.values().map(|g| g.longest_wait).max().unwrap_or(0);
    let max_gap = gaps.values().map(|g| g.longest_gap).max().unwrap_or(0);
    let dups: usize = gaps.values().map(|g| g.duplicates).sum();
    let owners: BTreeSet<&String> = gaps.values().flat_map(|g| &g.owners).collect();
    println!("deploy: invariant checker: {}", figures.checker);
    println!(
        "deploy: RESULT deploys={deploys} workers={} shards={} changes_written={} processed={} distinct={} \
         duplicates={dups} (verdict {}) lost={} max_wait_ms={:.0} max_gap_ms={:.0} worst_wait_by_deploy={per_round:?} \
         takes={} lease_writes={}",
        owners.len(),
        gaps.len(),
        figures.written,
        figures.processed,
        figures.distinct,
        figures.duplicates,
        figures.lost,
        ms(max_wait),
        ms(max_gap),
        figures.takes,
        figures.lease_writes,
    );
    if dups != 0 || figures.duplicates != 0 {
        problems.push(format!("{dups} duplicates per shard ({} by the verdict): want 0", figures.duplicates));
    }
    assert_eq!(figures.lost, 0, "changes lost");
    assert_no_problems("deploy", &problems);
}
