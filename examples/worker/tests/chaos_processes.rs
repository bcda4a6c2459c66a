//! Chaos test with real processes, against Amazon DynamoDB Local.
//!
//! Four `worker` processes (`--processor jsonl`, 250 ms per batch between writing and
//! checkpointing, a 6 s lease duration) share a table's stream while the test writes 40
//! changes a second to 250 items (versions `v` = 1, 2, 3… per item, deletes, re-inserts) and a
//! seeded schedule, printed at the start, hits the fleet: shard rollovers; SIGKILL of the worker
//! processing the active shard; SIGSTOP of that worker until its leases were taken by others,
//! then SIGCONT; SIGSTOP for less than the fencing window; SIGTERM; SIGKILL and SIGTERM of idle
//! workers; extra workers. Killed and stopped workers are replaced; the fleet stays between
//! three and five processes. The schedule says what happens when and to which role (the
//! holder of the active shard, or an idle worker); a seeded choice picks among the candidates.
//!
//! Then every worker is stopped with SIGTERM (each must exit with 0), two fresh workers drain
//! what is left and are stopped the same way, and [`common::chaos::verify`] judges the run: the
//! data stream holds exactly what was written; kcl-core's invariant checker, fed the jsonl
//! outputs and the exact lease history (the lease table's own stream), finds no change lost,
//! shard and item order kept, children after parents, deliveries only by a recent owner,
//! checkpoints only by the owner and never past what it processed, redeliveries only after a
//! lease move; every lease write moved the counter by exactly one (so no write prepared by a
//! worker that had lost the lease was accepted); duplicates are only the uncheckpointed tail of
//! a killed or dispossessed worker, never after SIGTERM or a shard end; a paused worker whose
//! leases were taken while it was stopped starts no batch of them after SIGCONT (it may finish
//! writing the batch it was in when stopped; its checkpoint is then rejected); the final lease
//! table matches the stream; a worker stopped with SIGTERM released its leases (none was taken
//! from it as expired). Each hit waits until the hit worker's unfinished leases are owned by
//! live workers ([`common::leases::moved`]; a finished lease still owned by a dead worker only
//! waits for its clean-up): the bound is generous, the failover and handoff times are printed.
//! The harness's own checks are tested in `tests/harness.rs`.
//!
//! `CHAOS_SEED` repeats a schedule (default fixed), `CHAOS_DURATION_SECS` lengthens the chaos
//! (default 75 s), `CHAOS_KEEP_OUTPUT=1` keeps the outputs and logs (kept anyway on failure).
//! The figures are printed (`cargo test -- --nocapture`). DynamoDB Local that cannot start fails
//! the test; it is never skipped.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::chaos::{
    Fleet, LeaseWrite, Pause, Record, Recorder, TimeBase, Writer, assert_no_problems, drain_and_verify, metric,
    secs_between, signal, start_recording, wait_stopped, wall_nanos,
};
use common::leases::{LoggedTake, expired_takes_from, holders, logged_takes, move_timeout, moved};
use common::start_emulator;
use kcl_adapter::DynamoLeaseStore;
use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_core::LeaseKey;
use kcl_core::testing::memory_store::LeaseOp;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// The schedule of the default run.
const DEFAULT_SEED: u64 = 20_260_501;
/// Chaos time of the default (CI) run.
const DEFAULT_DURATION: Duration = Duration::from_secs(75);
/// Shorter than production's 10 s, so that a run sees more faults.
const LEASE_DURATION: Duration = Duration::from_secs(6);
/// How long a hit worker's leases may take to move before the test fails ([`move_timeout`]).
const MOVE_TIMEOUT: Duration = move_timeout(LEASE_DURATION);
/// How long the schedule waits for a worker holding an unfinished shard before it skips a hit.
const HOLDER_WAIT: Duration = Duration::from_secs(18);
/// How long the drain may take to process every written change.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
const WRITES_PER_SECOND: u32 = 40;
const ITEMS: usize = 250;
const MIN_WORKERS: usize = 3;
const MAX_WORKERS: usize = 5;
const INITIAL_WORKERS: usize = 4;

/// What the schedule does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Close every open shard (each gets a child).
    Rollover,
    /// SIGKILL the worker processing the active shard, and start a replacement.
    KillHolder,
    /// SIGSTOP the worker processing the active shard until others own its leases, then
    /// SIGCONT.
    PauseHolder,
    /// SIGSTOP the worker processing the active shard for less than the fencing window.
    ShortPause(Duration),
    /// SIGTERM the worker processing the active shard, and start a replacement.
    TermHolder,
    /// SIGKILL a worker that holds nothing (replaced unless the fleet is big enough).
    KillIdle,
    /// SIGTERM a worker that holds nothing (replaced unless the fleet is big enough).
    TermIdle,
    /// Start one more worker (up to five).
    Spawn,
}

/// One step of the schedule: at `at` after the start, `fault`; a replacement, when one is
/// started, after `replace_after`.
#[derive(Clone, Copy, Debug)]
struct Step {
    at: Duration,
    fault: Fault,
    replace_after: Duration,
}

/// The seeded schedule: the first three faults are SIGKILL, SIGSTOP and SIGTERM of the holder
/// in a seeded order, then weighted random faults every 4 to 8 s; rollovers every 12 to 18 s.
fn schedule(seed: u64, duration: Duration) -> Vec<Step> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut first = [Fault::KillHolder, Fault::PauseHolder, Fault::TermHolder];
    first.shuffle(&mut rng);
    let mut steps = Vec::new();
    let mut at = Duration::from_secs(5) + rng.random_range(Duration::ZERO..Duration::from_secs(2));
    let mut n = 0;
    while at < duration {
        let fault = match first.get(n) {
            Some(f) => *f,
            None => match rng.random_range(0..100) {
                0..25 => Fault::KillHolder,
                25..50 => Fault::PauseHolder,
                50..60 => Fault::ShortPause(rng.random_range(Duration::from_millis(300)..LEASE_DURATION * 2 / 5)),
                60..78 => Fault::TermHolder,
                78..85 => Fault::KillIdle,
                85..92 => Fault::TermIdle,
                _ => Fault::Spawn,
            },
        };
        let replace_after = rng.random_range(Duration::ZERO..Duration::from_secs(2));
        steps.push(Step { at, fault, replace_after });
        at += rng.random_range(Duration::from_secs(4)..Duration::from_secs(8));
        n += 1;
    }
    let mut at = Duration::from_secs(8) + rng.random_range(Duration::ZERO..Duration::from_secs(4));
    while at < duration {
        steps.push(Step { at, fault: Fault::Rollover, replace_after: Duration::ZERO });
        at += rng.random_range(Duration::from_secs(12)..Duration::from_secs(18));
    }
    steps.sort_by_key(|s| s.at);
    steps
}

/// A fault sent to a worker holding leases, for the failover figures.
#[derive(Debug)]
struct Hit {
    what: &'static str,
    worker_id: String,
    wall: u64,
    held: Vec<LeaseKey>,
}

/// The run in progress.
struct Chaos<'a> {
    local: &'a DynamoDbLocal,
    fleet: Fleet,
    store: DynamoLeaseStore,
    endpoint: String,
    rng: SmallRng,
    next_worker: usize,
    t0: Instant,
    hits: Vec<Hit>,
    checkpoints_rejected: Vec<(String, f64)>,
}

impl Chaos<'_> {
    fn elapsed(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    async fn spawn(&mut self) -> String {
        self.next_worker += 1;
        let name = format!("w{}", self.next_worker);
        let endpoint = self.endpoint.clone();
        self.fleet.spawn(&name, &endpoint).await;
        name
    }

    /// A live worker processing an unfinished shard, chosen by the seeded generator; waits up
    /// to [`HOLDER_WAIT`] for one (right after a rollover or a failover nobody may hold one).
    async fn holder(&mut self) -> Option<(String, Vec<LeaseKey>)> {
        let deadline = Instant::now() + HOLDER_WAIT;
        loop {
            let found = holders(&self.store, &self.fleet.live_ids()).await;
            if !found.is_empty() {
                let (id, held) = found[self.rng.random_range(0..found.len())].clone();
                return Some((self.fleet.name_of(&id), held));
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A live worker holding no unfinished shard.
    async fn idle(&mut self) -> Option<String> {
        let busy: BTreeSet<String> =
            holders(&self.store, &self.fleet.live_ids()).await.into_iter().map(|(id, _)| id).collect();
        let idle: Vec<String> = self
            .fleet
            .live_ids()
            .into_iter()
            .filter(|id| !busy.contains(id))
            .map(|id| self.fleet.name_of(&id))
            .collect();
        (!idle.is_empty()).then(|| idle[self.rng.random_range(0..idle.len())].clone())
    }

    /// Waits until `from`'s unfinished leases are owned by the live workers (or finished, or
    /// gone: [`moved`]); panics after [`MOVE_TIMEOUT`].
    async fn wait_moved(&mut self, what: &str, from: &str, held: &[LeaseKey], since: Instant) -> Duration {
        let live: BTreeSet<String> = self.fleet.live_ids().into_iter().filter(|id| id != from).collect();
        let Some(after) = moved(&self.store, from, held, &live, since, MOVE_TIMEOUT).await else {
            panic!(
                "{what}: the unfinished leases of {from} ({held:?}) were not owned by {live:?} within {MOVE_TIMEOUT:?}"
            )
        };
        after
    }

    async fn run(&mut self, step: Step) {
        let t = self.elapsed();
        match step.fault {
            Fault::Rollover => {
                self.local.rollover().await.unwrap_or_else(|e| panic!("rollover: {e}"));
                println!("chaos: {t:6.2} s rollover");
            }
            Fault::KillHolder => {
                let Some((name, held)) = self.holder().await else {
                    println!("chaos: {t:6.2} s SIGKILL holder: nobody holds a shard, skipped");
                    return;
                };
                let mut victim = self.fleet.take(&name);
                let wall = wall_nanos();
                victim.sigkill();
                let since = Instant::now();
                self.hits.push(Hit { what: "SIGKILL", worker_id: victim.worker_id.clone(), wall, held: held.clone() });
                let status = victim.wait_exit(Duration::from_secs(10)).await;
                assert!(!status.success(), "a SIGKILLed worker cannot exit cleanly: {status}");
                let file = self.fleet.file_mut(&name);
                (file.killed, file.killed_at) = (true, Some(wall));
                tokio::time::sleep(step.replace_after).await;
                let replacement = self.spawn().await;
                let after = self.wait_moved("SIGKILL", &victim.worker_id, &held, since).await;
                println!(
                    "chaos: {t:6.2} s SIGKILL {name} holding {held:?}; replacement {replacement}; its leases owned by others \
                     after {:.2} s",
                    after.as_secs_f64()
                );
            }
            Fault::PauseHolder => {
                let Some((name, held)) = self.holder().await else {
                    println!("chaos: {t:6.2} s SIGSTOP holder: nobody holds a shard, skipped");
                    return;
                };
                let (pid, id, addr) = {
                    let w = &self.fleet.workers[&name];
                    (w.pid, w.worker_id.clone(), w.metrics)
                };
                let rejected_before = metric(addr, "kcl_checkpoints_total{result=\"lease_lost\"}").await.unwrap_or(0.0);
                signal(pid, "STOP");
                let since = Instant::now();
                wait_stopped(pid).await;
                let stop_wall = wall_nanos();
                let path = self.fleet.files[&name].path.clone();
                let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
                self.hits.push(Hit { what: "SIGSTOP", worker_id: id.clone(), wall: stop_wall, held: held.clone() });
                let after = self.wait_moved("SIGSTOP", &id, &held, since).await;
                tokio::time::sleep(step.replace_after / 2).await;
                signal(pid, "CONT");
                let cont_wall = wall_nanos();
                self.fleet.file_mut(&name).pauses.push(Pause { stop_wall, cont_wall, offset });
                // Its first renewal fails, which stops the shard; its in-flight checkpoint is refused.
                tokio::time::sleep(LEASE_DURATION / 3 + Duration::from_millis(500)).await;
                let rejected = metric(addr, "kcl_checkpoints_total{result=\"lease_lost\"}").await.unwrap_or(0.0);
                self.checkpoints_rejected.push((name.clone(), rejected - rejected_before));
                println!(
                    "chaos: {t:6.2} s SIGSTOP {name} holding {held:?}; its leases owned by others after {:.2} s; SIGCONT \
                     after {:.2} s; checkpoints refused since: {}",
                    after.as_secs_f64(),
                    secs_between(stop_wall, cont_wall),
                    rejected - rejected_before
                );
            }
            Fault::ShortPause(d) => {
                let Some((name, held)) = self.holder().await else {
                    println!("chaos: {t:6.2} s short SIGSTOP: nobody holds a shard, skipped");
                    return;
                };
                let pid = self.fleet.workers[&name].pid;
                signal(pid, "STOP");
                wait_stopped(pid).await;
                let stop_wall = wall_nanos();
                let offset = std::fs::metadata(&self.fleet.files[&name].path).map_or(0, |m| m.len());
                tokio::time::sleep(d).await;
                signal(pid, "CONT");
                let cont_wall = wall_nanos();
                self.fleet.file_mut(&name).pauses.push(Pause { stop_wall, cont_wall, offset });
                println!(
                    "chaos: {t:6.2} s SIGSTOP {name} holding {held:?} for {:.2} s (less than the fencing window)",
                    secs_between(stop_wall, cont_wall)
                );
            }
            Fault::TermHolder => {
                let Some((name, held)) = self.holder().await else {
                    println!("chaos: {t:6.2} s SIGTERM holder: nobody holds a shard, skipped");
                    return;
                };
                let mut leaver = self.fleet.take(&name);
                let wall = wall_nanos();
                leaver.sigterm();
                let since = Instant::now();
                self.fleet.file_mut(&name).terminated_at = Some(wall);
                self.hits.push(Hit { what: "SIGTERM", worker_id: leaver.worker_id.clone(), wall, held: held.clone() });
                tokio::time::sleep(step.replace_after).await;
                let replacement = self.spawn().await;
                let after = self.wait_moved("SIGTERM", &leaver.worker_id, &held, since).await;
                let status = leaver.wait_exit(Duration::from_secs(30)).await;
                assert!(status.success(), "SIGTERM must stop {name} with 0: {status}\n{}", leaver.log_tail(40));
                println!(
                    "chaos: {t:6.2} s SIGTERM {name} holding {held:?}; replacement {replacement}; its leases owned by \
                     others after {:.2} s",
                    after.as_secs_f64()
                );
            }
            Fault::KillIdle | Fault::TermIdle => {
                let Some(name) = self.idle().await else {
                    println!("chaos: {t:6.2} s {:?}: no idle worker, skipped", step.fault);
                    return;
                };
                let mut worker = self.fleet.take(&name);
                let wall = wall_nanos();
                if step.fault == Fault::KillIdle {
                    worker.sigkill();
                    let status = worker.wait_exit(Duration::from_secs(10)).await;
                    assert!(!status.success(), "a SIGKILLed worker cannot exit cleanly: {status}");
                    let file = self.fleet.file_mut(&name);
                    (file.killed, file.killed_at) = (true, Some(wall));
                } else {
                    self.fleet.file_mut(&name).terminated_at = Some(wall);
                    worker.sigterm();
                    let status = worker.wait_exit(Duration::from_secs(30)).await;
                    assert!(status.success(), "SIGTERM must stop {name} with 0: {status}\n{}", worker.log_tail(40));
                }
                let replacement = if self.fleet.workers.len() < MIN_WORKERS || self.rng.random_bool(0.5) {
                    tokio::time::sleep(step.replace_after).await;
                    Some(self.spawn().await)
                } else {
                    None
                };
                let what = if step.fault == Fault::KillIdle { "SIGKILL" } else { "SIGTERM" };
                println!("chaos: {t:6.2} s {what} idle {name}; replacement {replacement:?}");
            }
            Fault::Spawn => {
                if self.fleet.workers.len() >= MAX_WORKERS {
                    println!("chaos: {t:6.2} s spawn: already {MAX_WORKERS} workers, skipped");
                    return;
                }
                let name = self.spawn().await;
                println!("chaos: {t:6.2} s started {name}");
            }
        }
    }
}

/// How long after a hit each of its leases was taken by another worker, by the lease history.
fn failover(hit: &Hit, writes: &[LeaseWrite]) -> Option<f64> {
    let mut worst: Option<f64> = None;
    for key in &hit.held {
        let take = writes.iter().find(|w| {
            w.key == key.as_str()
                && w.op == LeaseOp::Take
                && w.latest >= hit.wall
                && w.after.as_ref().and_then(|a| a.owner.as_deref()) != Some(hit.worker_id.as_str())
        });
        // A shard finished before the hit needs no failover.
        if let Some(take) = take {
            let secs = secs_between(hit.wall, take.earliest).max(0.0);
            worst = Some(worst.map_or(secs, |w| w.max(secs)));
        }
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_with_real_processes() {
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SEED);
    let duration = std::env::var("CHAOS_DURATION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_DURATION, Duration::from_secs);
    let steps = schedule(seed, duration);
    println!(
        "chaos: seed {seed} (CHAOS_SEED), {} s of chaos (CHAOS_DURATION_SECS), lease duration {:?}, schedule:",
        duration.as_secs(),
        LEASE_DURATION
    );
    for s in &steps {
        println!(
            "chaos:   at {:6.2} s {:?} (replacement after {:.2} s)",
            s.at.as_secs_f64(),
            s.fault,
            s.replace_after.as_secs_f64()
        );
    }

    let base = TimeBase::now();
    let local = start_emulator().await;
    let table = unique_name("chaos");
    let data_arn = local.create_stream_table(&table).await;
    let Recorder { app, lease_arn, clock_arn, clock } = start_recording(&local, "chaos").await;
    let store = DynamoLeaseStore::new(local.dynamodb_client(), &app);

    let mut chaos = Chaos {
        local: &local,
        fleet: Fleet::new("chaos", &table, &app, LEASE_DURATION, "CHAOS_KEEP_OUTPUT"),
        store,
        endpoint: local.endpoint(),
        rng: SmallRng::seed_from_u64(seed ^ 0xc4a0_5eed),
        next_worker: 0,
        t0: Instant::now(),
        hits: Vec::new(),
        checkpoints_rejected: Vec::new(),
    };
    for _ in 0..INITIAL_WORKERS {
        chaos.spawn().await;
    }
    let writer = Writer::start(local.dynamodb_client(), table.clone(), seed, WRITES_PER_SECOND, ITEMS);
    chaos.t0 = Instant::now();
    for step in steps {
        tokio::time::sleep_until(chaos.t0 + step.at).await;
        chaos.run(step).await;
    }
    tokio::time::sleep_until(chaos.t0 + duration).await;
    let written = writer.stop().await;
    println!(
        "chaos: {:6.2} s writes stopped after {} changes; stopping every worker with SIGTERM",
        chaos.elapsed(),
        written.writes
    );

    // Graceful stop of the survivors, then a drain by fresh workers.
    chaos.fleet.stop_all().await;
    for name in ["drain1", "drain2"] {
        let endpoint = chaos.endpoint.clone();
        chaos.fleet.spawn(name, &endpoint).await;
    }
    let streams = local.streams_client();
    let record = Record {
        streams: &streams,
        data: &[(String::new(), data_arn.clone())],
        lease_arn: &lease_arn,
        clock_arn: &clock_arn,
        clock,
        base,
        lease_duration: LEASE_DURATION,
    };
    let mut figures = drain_and_verify(&mut chaos.fleet, &chaos.store, &written, record, DRAIN_TIMEOUT).await;
    println!("chaos: {:6.2} s drained; every worker stopped", chaos.elapsed());

    // Failover by the lease history: a hit until its leases were taken (figures). A graceful
    // stop releases its leases: none of them may be taken from it as expired.
    let takes: Vec<LoggedTake> = chaos.fleet.files.values().flat_map(|f| logged_takes(&f.log, &f.worker_id)).collect();
    let mut max_failover = 0.0f64;
    let mut handoffs = Vec::new();
    for hit in &chaos.hits {
        if hit.what == "SIGTERM" {
            for take in expired_takes_from(&takes, &hit.worker_id, &hit.held, hit.wall) {
                figures.problems.push(format!(
                    "{hit:?}: {} took {} from it as expired (at {:.2} s): the graceful stop did not release it",
                    take.taker,
                    take.shard,
                    secs_between(hit.wall, take.at)
                ));
            }
        }
        let Some(secs) = failover(hit, &figures.writes) else { continue };
        if hit.what == "SIGTERM" {
            handoffs.push(secs);
        } else {
            max_failover = max_failover.max(secs);
        }
    }
    let kills = chaos.hits.iter().filter(|h| h.what == "SIGKILL").count();
    let pauses = chaos.hits.iter().filter(|h| h.what == "SIGSTOP").count();
    let terms = chaos.hits.iter().filter(|h| h.what == "SIGTERM").count();
    assert!(kills >= 1 && pauses >= 1 && terms >= 1, "the schedule hit no holder with some signal: {:?}", chaos.hits);
    for p in &figures.pauses {
        println!(
            "chaos: pause of {} for {:.2} s: shards taken meanwhile {:?}; their lines written after SIGSTOP: {} (last \
             {:?} s after SIGCONT)",
            p.worker,
            p.paused_for.as_secs_f64(),
            p.taken,
            p.inflight_lines,
            p.last_line_after_cont.map(|s| (s * 1000.0).round() / 1000.0)
        );
    }
    println!("chaos: checkpoints refused to paused workers after SIGCONT: {:?}", chaos.checkpoints_rejected);
    println!("chaos: invariant checker: {}", figures.checker);
    println!(
        "chaos: RESULT seed={seed} chaos={}s workers={} shards={} changes_written={} processed={} distinct={} \
         duplicates={} (after SIGKILL {}, after SIGSTOP {}, after other lease loss {}, largest tail {}) lost={} \
         hits: SIGKILL={kills} SIGSTOP={pauses} SIGTERM={terms} max_failover={max_failover:.2}s handoffs={:?} \
         lease_writes={} takes={} steals={} tenures={} lease_duration={}s",
        duration.as_secs(),
        chaos.fleet.files.len(),
        figures.shards,
        figures.written,
        figures.processed,
        figures.distinct,
        figures.duplicates,
        figures.dup_after_kill,
        figures.dup_after_pause,
        figures.dup_after_lease_loss,
        figures.largest_tail,
        figures.lost,
        handoffs.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>(),
        figures.lease_writes,
        figures.takes,
        figures.steals,
        figures.tenures,
        LEASE_DURATION.as_secs(),
    );
    println!(
        "chaos: running workers judged dead by peers: leases taken from them as expired {}, heartbeats removed {}",
        figures.live_leases_taken, figures.live_heartbeats_removed
    );
    assert_eq!(figures.lost, 0);
    assert_no_problems("chaos", &figures.problems);
}
