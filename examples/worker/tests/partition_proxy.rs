//! A worker process partitioned from DynamoDB Local (lease table and stream), through a
//! loopback TCP proxy the test controls ([`common::proxy`]).
//!
//! Worker `a` reaches DynamoDB Local only through the proxy; the others connect directly. `a`
//! processes the active shard under continuous writes (25 changes a second, versions `v` = 1,
//! 2, 3… per item, deletes), 250 ms per batch, lease duration 6 s. Two phases:
//!
//! 1. **Black hole**, with `b` running: the proxy drops `a`'s connections and holds every new
//!    one silently (until the restore, when it closes them); the shard `a` holds is rolled over
//!    1.5 s into the cut; the proxy is restored 3 s after `b` owns `a`'s leases.
//! 2. **Refused**, with `c` running: the proxy drops `a`'s connections and closes every new one
//!    at once; it is restored 0.5 s after `c` owns `a`'s leases (a blip just longer than the
//!    lease duration, with no shard event in between).
//!
//! In each phase: `a` stops delivering before its leases can be taken (none of its records is
//! processed later than the cut + the lease duration, nor after the other worker's take of that
//! shard, by the lease history, until it begins a new tenure; the time of its last delivery is
//! printed against the fencing window, 0.8 × lease duration); the other worker owns `a`'s
//! unfinished leases (the wait is generous, the time printed); no call of `a` waits on a silent
//! connection for much longer than its time limit (its renewals must fail, not hang; a shard
//! listing's limit is ten times a read's); after the restore `a` writes its heartbeat again and stays registered
//! for 12 s (no peer removes its heartbeat or takes its leases as expired); when the other
//! worker is then stopped with SIGTERM, `a` takes the released leases and processes them. At
//! the end `a` is stopped with SIGTERM (exit 0) and the run is judged as the chaos test's
//! ([`common::chaos::verify`]): nothing lost, per-item order kept, kcl-core's invariant checker
//! with the exact lease history, duplicates only in the tail of a dispossessed worker.
//!
//! Printed (`-- --nocapture`): per phase, when `a` last delivered, when its leases were taken,
//! when it wrote to the lease table again, when it held a lease again, what the proxy saw of
//! its connections, its renewal failures and /healthz during the cut.
//! `PARTITION_KEEP_OUTPUT=1` keeps the outputs and logs (kept anyway on failure).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::chaos::{
    Fleet, LeaseWrite, Record, Recorder, TimeBase, Writer, assert_no_problems, drain_and_verify, metric, read_lines,
    secs_between, start_recording, wall_nanos,
};
use common::leases::{holders, move_timeout, moved};
use common::proxy::{CutMode, Held, Proxy, ProxyStats};
use common::{eventually, http_get, start_emulator};
use kcl_adapter::DynamoLeaseStore;
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_core::testing::memory_store::LeaseOp;
use kcl_core::{LeaseKey, LeaseStore};
use tokio::time::Instant;

const LEASE_DURATION: Duration = Duration::from_secs(6);
/// kcl-core's fencing window: 4/5 of the lease duration (the last delivery is printed against
/// it; the promise judged is that deliveries stop before the lease can be taken: within a lease
/// duration of the cut, since the last renewal came before it).
const FENCE: Duration = Duration::from_millis(4800);
/// How long a takeover (after the cut) or a retake (after the other worker's SIGTERM) may take
/// before the test fails ([`move_timeout`]).
const MOVE_TIMEOUT: Duration = move_timeout(LEASE_DURATION);
/// How long the drain may take to process every written change.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);
/// How long `a` must stay registered after the restore.
const STAY: Duration = Duration::from_secs(12);
const WRITES_PER_SECOND: u32 = 25;
const ITEMS: usize = 200;
const SEED: u64 = 7_000_613;

/// What one phase measured.
#[derive(Debug)]
struct Phase {
    mode: CutMode,
    other: String,
    cut_wall: u64,
    restore_wall: u64,
    held: Vec<LeaseKey>,
    /// Cut → the other owned `a`'s leases (polled).
    takeover: Duration,
    /// What `a`'s /healthz said during the cut.
    healthz_during_cut: (u16, String),
    renewal_failures_during_cut: f64,
    proxy: ProxyStats,
    /// SIGTERM of the other → `a` held a lease again.
    reacquired: Duration,
    /// Heartbeat items of `a` seen while watching it after it came back.
    incarnations_after: usize,
}

fn sub(after: &ProxyStats, before: &ProxyStats) -> ProxyStats {
    ProxyStats {
        accepted: after.accepted - before.accepted,
        forwarded: after.forwarded - before.forwarded,
        dropped_by_cut: after.dropped_by_cut - before.dropped_by_cut,
        refused: after.refused - before.refused,
        blackholed_given_up: after.blackholed_given_up[before.blackholed_given_up.len()..].to_vec(),
        blackholed_at_restore: after.blackholed_at_restore[before.blackholed_at_restore.len()..].to_vec(),
        ..ProxyStats::default()
    }
}

/// The time limit of a call, by its operation (kcl-core's defaults for a 6 s lease): lease-table
/// calls a third of the lease duration, reads and iterator requests 5 s, shard listings (which
/// paginate) ten times that. Unknown: the lease duration.
fn call_limit(target: Option<&str>) -> Duration {
    match target {
        Some(t) if t.ends_with(".DescribeStream") => Duration::from_secs(50),
        Some(t) if t.starts_with("DynamoDBStreams_") => Duration::from_secs(5),
        Some(t) if t.starts_with("DynamoDB_") => LEASE_DURATION / 3,
        _ => LEASE_DURATION,
    }
}

/// A black-holed connection held for much longer than its call's limit (twice, and at least a
/// lease duration): its client has no working timeout.
fn hung(held: &Held) -> bool {
    held.held >= (call_limit(held.target.as_deref()) * 2).max(LEASE_DURATION)
}

fn held_list(list: &[Held]) -> Vec<String> {
    list.iter()
        .map(|h| format!("{:.1} s {}", h.held.as_secs_f64(), h.target.as_deref().unwrap_or("(no request)")))
        .collect()
}

/// The heartbeat items `worker` owns: (key, counter).
async fn heartbeats_of(store: &DynamoLeaseStore, worker: &str) -> BTreeSet<(String, u64)> {
    let Ok(items) = store.list().await else { return BTreeSet::new() };
    items
        .into_iter()
        .filter(|l| l.key.is_heartbeat() && l.owner.as_ref().is_some_and(|o| o.as_str() == worker))
        .map(|l| (l.key.as_str().to_owned(), l.counter))
        .collect()
}

struct Run {
    fleet: Fleet,
    store: DynamoLeaseStore,
    proxy: Proxy,
    direct: String,
    local: DynamoDbLocal,
}

impl Run {
    fn a_id(&self) -> String {
        self.fleet.id_of("a")
    }

    fn a_metrics(&self) -> SocketAddr {
        self.fleet.workers["a"].metrics
    }

    /// Waits until `a` holds an unfinished shard lease; returns the leases and how long it took.
    async fn wait_a_holds(&self, since: Instant, timeout: Duration) -> (Vec<LeaseKey>, Duration) {
        let me: BTreeSet<String> = [self.a_id()].into();
        let me = &me;
        let store = &self.store;
        let held = eventually("a to hold a shard lease", timeout, Duration::from_millis(100), || async move {
            holders(store, me).await.into_iter().next().map(|(_, held)| held)
        })
        .await;
        (held, since.elapsed())
    }

    /// Cuts `a` (with a rollover 1.5 s into the cut, when asked), restores `after_takeover`
    /// after the other worker owns `a`'s leases, watches `a` come back, then stops the other.
    async fn phase(&mut self, mode: CutMode, other: &str, rollover: bool, after_takeover: Duration) -> Phase {
        let (held, _) = self.wait_a_holds(Instant::now(), MOVE_TIMEOUT).await;
        let a_id = self.a_id();
        let metrics = self.a_metrics();
        let failures_before = metric(metrics, "kcl_lease_renewal_failures_total").await.unwrap_or(0.0);
        let proxy_before = self.proxy.stats();

        let cut_wall = wall_nanos();
        let cut_at = Instant::now();
        self.proxy.cut(mode);
        println!("partition: {mode:?}: cut a (holding {held:?})");
        if rollover {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            self.local.rollover().await.unwrap_or_else(|e| panic!("rollover: {e}"));
            println!("partition: {mode:?}: rollover 1.5 s into the cut");
        }
        let live: BTreeSet<String> = [self.fleet.id_of(other)].into();
        let Some(takeover) = moved(&self.store, &a_id, &held, &live, cut_at, MOVE_TIMEOUT).await else {
            panic!("{mode:?}: {other} did not own a's unfinished leases {held:?} within {MOVE_TIMEOUT:?}")
        };
        println!("partition: {mode:?}: {other} owns a's leases {:.2} s after the cut", takeover.as_secs_f64());
        tokio::time::sleep(after_takeover).await;
        let healthz_during_cut = http_get(metrics, "/healthz").await;
        let renewal_failures_during_cut =
            metric(metrics, "kcl_lease_renewal_failures_total").await.unwrap_or(0.0) - failures_before;
        let (_, status) = http_get(metrics, "/status").await;
        println!("partition: {mode:?}: a's /status just before the restore: {status}");

        let restore_wall = wall_nanos();
        self.proxy.restore();
        let restored_at = Instant::now();
        self.fleet.file_mut("a").outages.push((cut_wall, restore_wall));
        println!("partition: {mode:?}: restored after {:.2} s", restored_at.duration_since(cut_at).as_secs_f64());

        // a registers again, and stays registered: watch its heartbeat items.
        let store = &self.store;
        let a = a_id.as_str();
        let before: BTreeSet<(String, u64)> = heartbeats_of(store, a).await;
        let before = &before;
        let rejoined =
            eventually("a to renew or register a heartbeat", MOVE_TIMEOUT, Duration::from_millis(100), || async move {
                let now = heartbeats_of(store, a).await;
                now.iter().any(|hb| !before.contains(hb)).then(|| restored_at.elapsed())
            })
            .await;
        println!("partition: {mode:?}: a's heartbeat written again {:.2} s after the restore", rejoined.as_secs_f64());
        let mut keys_seen: BTreeSet<String> = BTreeSet::new();
        let watch_until = Instant::now() + STAY;
        while Instant::now() < watch_until {
            keys_seen.extend(heartbeats_of(store, a).await.into_iter().map(|(k, _)| k));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        println!(
            "partition: {mode:?}: heartbeat items of a seen during the {:?} after it came back: {} (1 when it stays \
             registered; each removal by a peer makes it register anew)",
            STAY,
            keys_seen.len()
        );

        // The other stops gracefully; a takes its leases.
        let mut leaver = self.fleet.take(other);
        let term_at = Instant::now();
        self.fleet.file_mut(other).terminated_at = Some(wall_nanos());
        leaver.sigterm();
        let status = leaver.wait_exit(Duration::from_secs(30)).await;
        assert!(status.success(), "{other} exited with {status} after SIGTERM\n{}", leaver.log_tail(40));
        let (_, reacquired) = self.wait_a_holds(term_at, MOVE_TIMEOUT).await;
        println!(
            "partition: {mode:?}: a holds a lease again {:.2} s after SIGTERM of {other}",
            reacquired.as_secs_f64()
        );
        let proxy = sub(&self.proxy.stats(), &proxy_before);
        Phase {
            mode,
            other: other.to_owned(),
            cut_wall,
            restore_wall,
            held,
            takeover,
            healthz_during_cut,
            renewal_failures_during_cut,
            proxy,
            reacquired,
            incarnations_after: keys_seen.len(),
        }
    }
}

/// The first lease-table write by `worker` (as owner after it) at or after `from`.
fn first_write_after(writes: &[LeaseWrite], worker: &str, from: u64) -> Option<u64> {
    writes
        .iter()
        .filter(|w| w.earliest >= from && w.after.as_ref().and_then(|a| a.owner.as_deref()) == Some(worker))
        .map(|w| w.earliest)
        .min()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_worker_fences_itself_and_rejoins() {
    let base = TimeBase::now();
    let local = start_emulator().await;
    let table = unique_name("partition");
    let data_arn = local.create_stream_table(&table).await;
    let Recorder { app, lease_arn, clock_arn, clock } = start_recording(&local, "partition").await;
    let upstream: SocketAddr = ([127, 0, 0, 1], local.port()).into();
    let mut run = Run {
        fleet: Fleet::new("partition", &table, &app, LEASE_DURATION, "PARTITION_KEEP_OUTPUT"),
        store: DynamoLeaseStore::new(local.dynamodb_client(), &app),
        proxy: Proxy::start(upstream).await,
        direct: local.endpoint(),
        local,
    };
    println!("partition: a reaches DynamoDB Local ({upstream}) through the proxy at {}", run.proxy.addr());
    let proxy_url = run.proxy.url();
    run.fleet.spawn("a", &proxy_url).await;
    run.wait_a_holds(Instant::now(), Duration::from_secs(30)).await;
    let direct = run.direct.clone();
    run.fleet.spawn("b", &direct).await;
    let writer = Writer::start(run.local.dynamodb_client(), table.clone(), SEED, WRITES_PER_SECOND, ITEMS);
    tokio::time::sleep(Duration::from_secs(4)).await;

    // A long black hole, with the shard rolled over meanwhile; then a short refusal, over soon
    // after the takeover (a network blip just longer than the lease duration).
    let first = run.phase(CutMode::Blackhole, "b", true, Duration::from_secs(3)).await;
    run.fleet.spawn("c", &direct).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = run.phase(CutMode::Refuse, "c", false, Duration::from_millis(500)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.local.rollover().await.unwrap_or_else(|e| panic!("rollover: {e}"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = writer.stop().await;
    println!("partition: writes stopped after {} changes", written.writes);

    let streams = run.local.streams_client();
    let record = Record {
        streams: &streams,
        data: &[(String::new(), data_arn.clone())],
        lease_arn: &lease_arn,
        clock_arn: &clock_arn,
        clock,
        base,
        lease_duration: LEASE_DURATION,
    };
    let mut figures = drain_and_verify(&mut run.fleet, &run.store, &written, record, DRAIN_TIMEOUT).await;

    // Per phase: a's deliveries stop within the fencing window, and resume only in a new tenure.
    let a_id = run.fleet.id_of("a");
    let a_lines = read_lines(&run.fleet.files["a"].path);
    let mut problems = std::mem::take(&mut figures.problems);
    for phase in [&first, &second] {
        // Nobody may take a's leases before a lease duration has passed since its last renewal,
        // which came before the cut: a must have stopped delivering by then.
        let limit = phase.cut_wall + LEASE_DURATION.as_nanos() as u64;
        // The first tenure a began after the restore.
        let back = a_lines
            .iter()
            .filter(|l| l.ts >= phase.restore_wall)
            .find(|l| matches!(&l.kind, common::chaos::LineKind::Lifecycle { what, .. } if what == "initialize"))
            .map_or(u64::MAX, |l| l.ts);
        let records = |l: &&common::chaos::Line| matches!(l.kind, common::chaos::LineKind::Record { .. });
        let last_before = a_lines.iter().filter(records).filter(|l| l.ts < back).map(|l| l.ts).max();
        let late = a_lines.iter().filter(records).filter(|l| l.ts > limit && l.ts < back).count();
        if late > 0 {
            problems.push(format!(
                "{:?}: a processed {late} records more than a lease duration ({LEASE_DURATION:?}) after the cut, \
                 before it took a lease again: it did not fence itself",
                phase.mode
            ));
        }
        // The first take of each shard a held, by the lease history; a delivered nothing of
        // that shard after it (before a new tenure).
        let take_of = |key: &str| {
            figures.writes.iter().find(|w| w.op == LeaseOp::Take && w.key == key && w.latest >= phase.cut_wall)
        };
        for key in &phase.held {
            let Some(take) = take_of(key.as_str()) else { continue };
            let after_take =
                a_lines.iter().filter(records).filter(|l| l.shard == key.as_str() && l.ts > take.latest && l.ts < back);
            if let Some(first) = after_take.min_by_key(|l| l.ts) {
                problems.push(format!(
                    "{:?}: a delivered records of {key} {:.2} s after {} took it",
                    phase.mode,
                    secs_between(take.latest, first.ts),
                    take.owner_after().unwrap_or("another worker")
                ));
            }
        }
        let taken = phase.held.iter().filter_map(|k| take_of(k.as_str())).map(|w| w.earliest).min();
        let rejoin = first_write_after(&figures.writes, &a_id, phase.restore_wall);
        let given_up = held_list(&phase.proxy.blackholed_given_up);
        let at_restore = held_list(&phase.proxy.blackholed_at_restore);
        let hung: Vec<&Held> = phase.proxy.blackholed_at_restore.iter().filter(|h| hung(h)).collect();
        println!(
            "partition: RESULT {:?} (other worker {}): a's last delivery {} s after the cut (fencing window {:.1} s); its \
             leases taken {} s \
             after the cut (polled {:.2} s); a wrote to the lease table again {} s after the restore; a held a lease \
             again {:.2} s after SIGTERM of {}; renewal failures counted during the cut {}; /healthz during the cut \
             {:?}; connections: {} dropped by the cut, {} refused, black-holed ones given up by a after {given_up:?}, \
             still waiting at the restore after {at_restore:?}",
            phase.mode,
            phase.other,
            last_before.map_or("n/a".to_owned(), |t| format!("{:.2}", secs_between(phase.cut_wall, t))),
            FENCE.as_secs_f64(),
            taken.map_or("n/a".to_owned(), |t| format!("{:.2}", secs_between(phase.cut_wall, t))),
            phase.takeover.as_secs_f64(),
            rejoin.map_or("n/a".to_owned(), |t| format!("{:.2}", secs_between(phase.restore_wall, t))),
            phase.reacquired.as_secs_f64(),
            phase.other,
            phase.renewal_failures_during_cut,
            phase.healthz_during_cut,
            phase.proxy.dropped_by_cut,
            phase.proxy.refused,
        );
        if !hung.is_empty() {
            problems.push(format!(
                "{:?}: {} of a's calls waited on a silent connection for more than twice their time limit without \
                 giving up (until the proxy closed them at the restore): {hung:?}; the worker's AWS calls have no \
                 working timeout, so its renewals neither succeed nor fail while the connection is silent",
                phase.mode,
                hung.len()
            ));
        }
        if phase.incarnations_after > 1 {
            problems.push(format!(
                "{:?}: a's heartbeat was removed by a peer again and again after it came back: {} heartbeat items in \
                 {:?}",
                phase.mode, phase.incarnations_after, STAY
            ));
        }
    }
    let errors: Vec<String> = std::fs::read_to_string(&run.fleet.files["a"].log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(|l| l.chars().filter(|c| !c.is_control()).collect())
        .collect();
    println!("partition: ERROR lines in a's log: {}", errors.len());
    for e in errors.iter().take(5) {
        println!("partition:   {e}");
    }
    println!("partition: invariant checker: {}", figures.checker);
    println!(
        "partition: RESULT changes_written={} processed={} duplicates={} (after lease loss {}, largest tail {}) lost={} \
         takes={} leases of running workers taken as expired={} heartbeats of running workers removed={}",
        figures.written,
        figures.processed,
        figures.duplicates,
        figures.dup_after_lease_loss,
        figures.largest_tail,
        figures.lost,
        figures.takes,
        figures.live_leases_taken,
        figures.live_heartbeats_removed,
    );
    assert_eq!(figures.lost, 0);
    assert_no_problems("partition", &problems);
}
