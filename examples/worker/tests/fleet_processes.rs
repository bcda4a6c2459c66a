//! Fleet test with real processes, against Amazon DynamoDB Local.
//!
//! Three `worker` processes (`--processor jsonl`, one output file each) share a table's
//! NEW_AND_OLD_IMAGES stream while the test writes 3,000 changes over 45 s (inserts, several
//! updates per item with a version attribute `v` = 1, 2, 3…, deletes, re-inserts). Each
//! processor spends 250 ms per batch between writing and checkpointing it. During the
//! run the shards are rolled over twice (DynamoDB Local's control port), the worker holding
//! the active shard is killed with SIGKILL, and later the then-active worker is stopped with
//! SIGTERM and replaced by a new process. Then:
//!
//! - every change was processed at least once, and each item's changes were first processed
//!   in the order they were written, across parent and child shards and across processes
//!   (the outputs carry wall-clock nanoseconds; all processes run on this machine), and each
//!   child shard's first record came after its parent's last;
//! - records were processed twice only in the uncheckpointed tail of the killed worker (or of
//!   a lease lost to another worker), never after a graceful shutdown or a shard end;
//! - the killed worker's unfinished leases were owned by others (the wait is generous, the time
//!   printed), and the SIGTERM'd worker released its leases (no successor logged taking one from
//!   it as expired; the handoff time is printed);
//! - at the end every unfinished lease is held by a live worker and spread evenly (DynamoDB Local has one
//!   open shard per stream, so this is one active lease among the two live workers);
//! - least privilege: the workers reach DynamoDB Local through a counting proxy
//!   ([`common::proxy`]), and the operations they called are exactly what `deploy/iam-policy.json`
//!   and the ECS template's task role grant a jsonl worker given `--table`, each on its own
//!   resource ([`common::iam`]).
//!
//! The measured failover time and handoff gap are printed (`cargo test -- --nocapture`). The
//! outputs and worker logs are kept after a failure, or always with `FLEET_KEEP_OUTPUT=1`.
//! DynamoDB Local that cannot start fails the test; it is never skipped.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::chaos::{Fleet, MAX_BATCH, wall_nanos};
use common::iam::{Names, calls_of, grant_of, judge_deploy_policies};
use common::leases::{expired_takes_from, holders_in, logged_takes, move_timeout, moved, shard_leases, unfinished_of};
use common::outputs::{Label, Outputs, TenureEnd, check_duplicates, seen};
use common::proxy::Proxy;
use common::{eventually, http_get, start_emulator};
use kcl_adapter::DynamoLeaseStore;
use kcl_adapter::local::unique_name;
use kcl_core::{Checkpoint, Lease, LeaseKey};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// Items written; each gets [`CHANGES_PER_ITEM`] changes.
const ITEMS: usize = 500;
const CHANGES_PER_ITEM: usize = 6;
/// The writes are spread over this long.
const WRITE_DURATION: Duration = Duration::from_secs(45);
/// kcl-core's default lease duration, as in production.
const LEASE_DURATION: Duration = Duration::from_secs(10);
/// How long a killed or stopped worker's unfinished leases may take to be owned by others
/// before the test fails ([`move_timeout`]).
const MOVE_TIMEOUT: Duration = move_timeout(LEASE_DURATION);
/// The statements of deploy/iam-policy.json this test's calls justify (tests/common/iam.rs).
const FLEET_STATEMENTS: &[&str] =
    &["ReadSourceStream", "ResolveStreamFromTableName", "LeaseTable", "CreateLeaseTableOptional"];
/// How long the workers may take to process every change once the writes are done.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);

/// One write of the test.
#[derive(Clone, Copy, Debug)]
enum Op {
    Put(i64),
    Delete,
}

/// What the test writes and what the processors must see.
struct Plan {
    writes: Vec<(String, Op)>,
    expected: BTreeMap<String, Vec<Label>>,
}

/// Each item: INSERT v1, MODIFY v2, MODIFY v3, then either REMOVE, INSERT v4, MODIFY v5 (even
/// items: a delete and a re-insert) or MODIFY v4, MODIFY v5, REMOVE (odd items). The items'
/// changes are interleaved at random; each item's stay in order.
fn plan(seed: u64) -> Plan {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut scripts: Vec<Vec<(Op, Label)>> = Vec::new();
    for i in 0..ITEMS {
        let put = |v: i64, event: &'static str| (Op::Put(v), Label { event, v });
        let script = if i % 2 == 0 {
            vec![
                put(1, "INSERT"),
                put(2, "MODIFY"),
                put(3, "MODIFY"),
                (Op::Delete, Label { event: "REMOVE", v: 3 }),
                put(4, "INSERT"),
                put(5, "MODIFY"),
            ]
        } else {
            vec![
                put(1, "INSERT"),
                put(2, "MODIFY"),
                put(3, "MODIFY"),
                put(4, "MODIFY"),
                put(5, "MODIFY"),
                (Op::Delete, Label { event: "REMOVE", v: 5 }),
            ]
        };
        assert_eq!(script.len(), CHANGES_PER_ITEM);
        scripts.push(script);
    }
    let mut slots: Vec<usize> = (0..ITEMS).flat_map(|i| std::iter::repeat_n(i, CHANGES_PER_ITEM)).collect();
    slots.shuffle(&mut rng);
    let mut next = vec![0usize; ITEMS];
    let writes = slots
        .into_iter()
        .map(|i| {
            let (op, _) = scripts[i][next[i]];
            next[i] += 1;
            (item(i), op)
        })
        .collect();
    let expected =
        scripts.into_iter().enumerate().map(|(i, s)| (item(i), s.into_iter().map(|(_, l)| l).collect())).collect();
    Plan { writes, expected }
}

fn item(i: usize) -> String {
    format!("item-{i:04}")
}

/// Writes `writes` evenly over [`WRITE_DURATION`], counting progress in `done`.
async fn write_all(client: aws_sdk_dynamodb::Client, table: String, writes: Vec<(String, Op)>, done: Arc<AtomicUsize>) {
    let start = Instant::now();
    let total = writes.len() as u32;
    for (n, (pk, op)) in writes.into_iter().enumerate() {
        tokio::time::sleep_until(start + WRITE_DURATION * n as u32 / total).await;
        let key = AttributeValue::S(pk.clone());
        use aws_sdk_dynamodb::error::DisplayErrorContext;
        let result = match op {
            Op::Put(v) => client
                .put_item()
                .table_name(&table)
                .item("pk", key)
                .item("v", AttributeValue::N(v.to_string()))
                .item("payload", AttributeValue::S(format!("{pk} version {v}")))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| DisplayErrorContext(e).to_string()),
            Op::Delete => client
                .delete_item()
                .table_name(&table)
                .key("pk", key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| DisplayErrorContext(e).to_string()),
        };
        result.unwrap_or_else(|e| panic!("write {n} ({pk} {op:?}): {e}"));
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits until one of `candidates` processes the open shard (its lease, the newest shard
/// lease, is checkpointed at a sequence number), and returns that worker with every unfinished
/// lease it owns. DynamoDB Local's shard ids sort by creation, and the newest shard is the open
/// one; right after a rollover the old shard's owner may still be finishing it, and the new
/// shard may not be processed yet: the wait covers both.
async fn active_owner(store: &DynamoLeaseStore, candidates: &BTreeSet<String>) -> (String, Vec<LeaseKey>) {
    eventually("a live worker to process the open shard", MOVE_TIMEOUT, Duration::from_millis(200), || async move {
        let leases = shard_leases(store).await?;
        let newest = leases.iter().max_by(|a, b| a.key.as_str().cmp(b.key.as_str()))?;
        let owner = match (&newest.owner, &newest.checkpoint) {
            (Some(o), Checkpoint::At(_)) if candidates.contains(o.as_str()) => o.as_str().to_owned(),
            _ => return None,
        };
        let (_, held) = holders_in(&leases, &[owner.clone()].into()).into_iter().next()?;
        Some((owner, held))
    })
    .await
}

/// Waits until `from`'s unfinished leases are owned by `live` ([`moved`]); panics after
/// [`MOVE_TIMEOUT`].
async fn wait_moved(
    store: &DynamoLeaseStore,
    from: &str,
    held: &[LeaseKey],
    live: &BTreeSet<String>,
    since: Instant,
) -> Duration {
    let Some(after) = moved(store, from, held, live, since, MOVE_TIMEOUT).await else {
        panic!("the unfinished leases of {from} ({held:?}) were not owned by {live:?} within {MOVE_TIMEOUT:?}")
    };
    after
}

/// The first record of `shards` processed by someone other than `not_by` after `after` (ns).
fn first_record_after(outputs: &Outputs, shards: &[LeaseKey], not_by: &str, after: u64) -> Option<Duration> {
    outputs
        .occurrences
        .iter()
        .filter(|o| o.worker != not_by && o.ts > after && shards.iter().any(|k| k.as_str() == o.shard))
        .map(|o| Duration::from_nanos(o.ts - after))
        .min()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_survives_kill_terminate_and_rollovers() {
    let seed = std::env::var("FLEET_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(wall_nanos);
    println!("fleet: seed {seed} (set FLEET_SEED to repeat the interleaving)");
    let local = start_emulator().await;
    let table = unique_name("fleet");
    local.create_stream_table(&table).await;
    let app = unique_name("fleet-app");
    // The workers reach DynamoDB Local through a counting proxy: the operations they call are
    // judged against the IAM policy at the end.
    let proxy = Proxy::start(([127, 0, 0, 1], local.port()).into()).await;
    let endpoint = proxy.url();
    let mut fleet = Fleet::new("fleet", &table, &app, LEASE_DURATION, "FLEET_KEEP_OUTPUT");
    for name in ["w1", "w2", "w3"] {
        fleet.spawn(name, &endpoint).await;
    }
    let store = DynamoLeaseStore::new(local.dynamodb_client(), &app);
    let first = &fleet.workers["w1"];
    assert_eq!(http_get(first.metrics, "/healthz").await, (200, "ok\n".to_owned()));

    let plan = plan(seed);
    assert_eq!(plan.writes.len(), ITEMS * CHANGES_PER_ITEM);
    let written = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let writer = tokio::spawn(write_all(local.dynamodb_client(), table.clone(), plan.writes.clone(), written.clone()));
    let progress = || format!("{} s, {} writes", t0.elapsed().as_secs(), written.load(Ordering::Relaxed));

    // First rollover: the root shard closes, its child takes the writes.
    tokio::time::sleep_until(t0 + Duration::from_secs(5)).await;
    local.rollover().await.unwrap_or_else(|e| panic!("rollover: {e}"));
    println!("fleet: rollover 1 at {}", progress());

    // SIGKILL the worker processing the active shard, at a random point of its renewal cycle
    // (a third of the lease duration), so that the failover times spread over what can happen.
    let jitter = SmallRng::seed_from_u64(seed).random_range(Duration::ZERO..LEASE_DURATION / 3);
    tokio::time::sleep_until(t0 + Duration::from_secs(12) + jitter).await;
    let (victim_id, victim_held) = active_owner(&store, &fleet.live_ids()).await;
    let victim_name = fleet.name_of(&victim_id);
    let mut victim = fleet.take(&victim_name);
    victim.sigkill();
    let killed_at = Instant::now();
    let killed_wall = wall_nanos();
    let status = victim.wait_exit(Duration::from_secs(10)).await;
    assert!(!status.success(), "a SIGKILLed worker cannot exit cleanly: {status}");
    println!("fleet: SIGKILL {victim_name} holding {victim_held:?} at {}", progress());
    let failover = wait_moved(&store, &victim_id, &victim_held, &fleet.live_ids(), killed_at).await;
    println!(
        "fleet: failover: the killed worker's unfinished leases were owned by others {:.2} s after SIGKILL",
        failover.as_secs_f64()
    );

    // Second rollover, after the failover.
    local.rollover().await.unwrap_or_else(|e| panic!("rollover: {e}"));
    println!("fleet: rollover 2 at {}", progress());

    // SIGTERM the worker now processing, and start its replacement at once.
    tokio::time::sleep_until((t0 + Duration::from_secs(28)).max(Instant::now() + Duration::from_secs(3))).await;
    let (leaver_id, leaver_held) = active_owner(&store, &fleet.live_ids()).await;
    let leaver_name = fleet.name_of(&leaver_id);
    let mut leaver = fleet.take(&leaver_name);
    leaver.sigterm();
    let terminated_at = Instant::now();
    let terminated_wall = wall_nanos();
    println!("fleet: SIGTERM {leaver_name} holding {leaver_held:?} at {}", progress());
    fleet.spawn("w4", &endpoint).await;
    let handoff = wait_moved(&store, &leaver_id, &leaver_held, &fleet.live_ids(), terminated_at).await;
    let status = leaver.wait_exit(Duration::from_secs(30)).await;
    let exited_after = terminated_at.elapsed();
    println!(
        "fleet: handoff: the stopped worker's leases were owned by others {:.2} s after SIGTERM (it exited with {status})",
        handoff.as_secs_f64()
    );
    assert!(status.success(), "SIGTERM must stop the worker with exit code 0: {status}\n{}", leaver.log_tail(40));

    writer.await.unwrap_or_else(|e| panic!("writer: {e}"));
    println!("fleet: all {} writes done at {}", plan.writes.len(), progress());

    // Every change reaches some output.
    let wanted: HashSet<(String, Label)> =
        plan.expected.iter().flat_map(|(pk, labels)| labels.iter().map(move |l| (pk.clone(), l.clone()))).collect();
    let paths: Vec<PathBuf> = fleet.files.values().map(|f| f.path.clone()).collect();
    let (paths, wanted) = (&paths, &wanted);
    eventually("every change to be processed", DRAIN_TIMEOUT, Duration::from_millis(500), || async move {
        let got: HashSet<(String, Label)> = paths.iter().flat_map(|p| seen(p)).collect();
        wanted.is_subset(&got).then_some(())
    })
    .await;
    println!("fleet: every change processed at {}", progress());

    // Leases settle on the live workers: no unfinished one left with the dead or stopped ones
    // (a finished one only waits for its clean-up), spread evenly.
    let live = fleet.live_ids();
    let gone: BTreeSet<String> = [victim_id.clone(), leaver_id.clone()].into();
    let (store_ref, live, gone) = (&store, &live, &gone);
    let spread = eventually(
        "the unfinished leases to settle on the live workers",
        MOVE_TIMEOUT,
        Duration::from_millis(250),
        || async move {
            let items = shard_leases(store_ref).await?;
            if !unfinished_of(&items, gone).is_empty() {
                return None;
            }
            let active: Vec<&Lease> = items.iter().filter(|l| !l.checkpoint.is_shard_end()).collect();
            let mut counts: BTreeMap<String, usize> = live.iter().map(|w| (w.clone(), 0)).collect();
            for lease in &active {
                let owner = lease.owner.as_ref()?.as_str();
                *counts.get_mut(owner)? += 1;
            }
            let target = active.len().div_ceil(live.len());
            counts.values().all(|c| *c <= target).then_some(counts)
        },
    )
    .await;
    println!("fleet: unfinished leases per live worker at the end: {spread:?}");

    // Stop the rest gracefully (each must exit with 0).
    fleet.stop_all().await;

    // Judge the outputs.
    let mut outputs = Outputs::default();
    for (name, file) in &fleet.files {
        let path = &file.path;
        outputs.read_file(path, *name == victim_name).unwrap_or_else(|e| panic!("{e}"));
    }
    let timelines = outputs.timelines().unwrap_or_else(|e| panic!("{e}"));
    for (pk, expected) in &plan.expected {
        let got = timelines.get(pk).map(Vec::as_slice).unwrap_or_default();
        let labels: Vec<&Label> = got.iter().map(|c| &c.label).collect();
        let expected: Vec<&Label> = expected.iter().collect();
        assert_eq!(labels, expected, "{pk}: changes not processed exactly in write order; first processed: {got:?}");
        assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "{pk}: sequence numbers out of order: {got:?}");
    }
    assert_eq!(timelines.len(), plan.expected.len(), "records of items that were never written");
    let dups = check_duplicates(&outputs, MAX_BATCH).unwrap_or_else(|e| panic!("{e}"));
    // The stopped worker released its leases: nobody took one from it as expired.
    let takes: Vec<_> = fleet.files.values().flat_map(|f| logged_takes(&f.log, &f.worker_id)).collect();
    let expired = expired_takes_from(&takes, &leaver_id, &leaver_held, terminated_wall);
    assert!(expired.is_empty(), "the graceful stop of {leaver_id} did not release its leases: {expired:?}");
    let killed_takes = expired_takes_from(&takes, &victim_id, &victim_held, killed_wall).len();
    let ended =
        |worker: &str, end: TenureEnd| outputs.tenures.iter().filter(|t| t.worker == worker && t.end == end).count();
    assert!(ended(&victim_id, TenureEnd::Killed) >= 1, "the killed worker held no shard when it was killed");
    assert!(ended(&leaver_id, TenureEnd::Shutdown) >= 1, "the stopped worker never got shutdown_requested");

    // A child shard starts only after its parent was processed to the end. DynamoDB Local's
    // rollovers make one chain (each open shard gets one child) and shard ids sort by creation.
    let mut span: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for o in &outputs.occurrences {
        let (first, last) = span.entry(o.shard.as_str()).or_insert((o.ts, o.ts));
        *first = (*first).min(o.ts);
        *last = (*last).max(o.ts);
    }
    let spans: Vec<(&str, (u64, u64))> = span.into_iter().collect();
    assert_eq!(spans.len(), 3, "records in {} shards, want 3 (two rollovers): {spans:?}", spans.len());
    let mut handovers = Vec::new();
    for pair in spans.windows(2) {
        let ((parent, (_, parent_last)), (child, (child_first, _))) = (pair[0], pair[1]);
        assert!(child_first > parent_last, "shard {child} started before its parent {parent} was processed to its end");
        handovers.push(format!("{:.2} s", Duration::from_nanos(child_first - parent_last).as_secs_f64()));
    }
    println!("fleet: parent's last record → child's first record after each rollover: {handovers:?}");

    // Least privilege: what the workers called is exactly what the policy's statements for a
    // jsonl worker given --table grant, each on its own resource.
    let stats = proxy.stats();
    assert!(stats.unreadable.is_empty(), "requests the proxy could not read: {:?}", stats.unreadable);
    let names = Names { source: table.clone(), lease: app.clone(), ..Names::default() };
    let calls = calls_of(stats.requests.keys(), &names);
    let mut per_action: BTreeMap<String, usize> = BTreeMap::new();
    for (request, n) in &stats.requests {
        let (action, resource) = grant_of(request, &names);
        *per_action.entry(format!("{action} on {resource:?}")).or_default() += n;
    }
    println!("fleet: operations the workers called (through the counting proxy): {per_action:?}");
    let problems = judge_deploy_policies(&calls, FLEET_STATEMENTS);
    assert!(
        problems.is_empty(),
        "the IAM policy does not match what the workers call:\n  - {}",
        problems.join("\n  - ")
    );

    let failover_data = first_record_after(&outputs, &victim_held, &victim_id, killed_wall);
    let handoff_data = first_record_after(&outputs, &leaver_held, &leaver_id, terminated_wall);
    let secs = |d: Option<Duration>| d.map_or_else(|| "n/a".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()));
    println!(
        "fleet: RESULT changes={} processed={} repeated_after_kill={} (largest tail {}) repeated_after_lease_loss={} \
         repeated_after_graceful=0 leases_taken_as_expired_after_kill={killed_takes} failover={:.2}s (first record {} after SIGKILL) handoff={:.2}s (first record {} \
         after SIGTERM, stopped worker exited after {:.2}s) lease_duration={}s",
        plan.writes.len(),
        outputs.occurrences.len(),
        dups.after_kill,
        dups.largest_tail,
        dups.after_lease_loss,
        failover.as_secs_f64(),
        secs(failover_data),
        handoff.as_secs_f64(),
        secs(handoff_data),
        exited_after.as_secs_f64(),
        LEASE_DURATION.as_secs(),
    );
}
