//! Benchmarks of kcl-core on the stream simulator, printed as figures:
//!
//! 1. records/s through one worker with a no-op processor, against a raw loop reading the same
//!    simulator directly (the ratio is the framework's overhead);
//! 2. peak RSS of one worker holding 10,000 leases;
//! 3. failover time (a worker is killed → its leases are owned by the survivors) and rebalance
//!    time (a worker joins → the fleet is balanced), in simulated seconds and take cycles;
//! 4. lease-table writes per held lease per minute;
//! 5. at scale: 10 workers sharing 100,000 leases (paused time): lease-table writes and reads
//!    per minute in steady state, failover after a kill and balancing after a join, with the
//!    default (heartbeat-only) leases. `--scale-only` runs just this part.
//!
//! `--throughput-only` runs only part 1, `--memory-only` only part 2 (in this process).
//!
//! `cargo run --release -p kcl-examples --bin bench`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kcl_core::testing::memory_store::{LeaseOpKind, MemoryLeaseStore};
use kcl_core::testing::sim::{ChangeKind, SimRecord, StreamSimulator};
use kcl_core::{
    Batch, Checkpointer, Config, Metrics, ProcessorError, RecordProcessor, ShardId, StartPosition, StreamSource,
    Worker, WorkerHandle,
};
use tokio::time::Instant;

const SHARDS: usize = 4;
const RECORDS: usize = 4_000_000;

/// Counts records and does nothing else; wakes the bench once `target` records were seen.
#[derive(Debug, Clone)]
struct NoOp {
    count: Arc<AtomicU64>,
    target: u64,
    done: Arc<tokio::sync::Notify>,
}

impl NoOp {
    fn new(target: u64) -> Self {
        Self { count: Arc::new(AtomicU64::new(0)), target, done: Arc::new(tokio::sync::Notify::new()) }
    }
}

impl RecordProcessor<SimRecord> for NoOp {
    async fn process_records(&mut self, batch: &Batch<SimRecord>, _: &impl Checkpointer) -> Result<(), ProcessorError> {
        let n = batch.records.len() as u64;
        let before = self.count.fetch_add(n, Ordering::Relaxed);
        if before < self.target && before + n >= self.target {
            self.done.notify_one();
        }
        Ok(())
    }
}

fn filled_simulator(shards: usize, records: usize) -> StreamSimulator {
    let sim = StreamSimulator::builder().seed(1).initial_shards(shards).build();
    for i in 0..records {
        sim.write(&format!("k{}", i % 10_000), ChangeKind::Modify);
    }
    sim
}

fn config(name: &str) -> Config {
    match Config::builder("bench").worker_id(name).build() {
        Ok(c) => c,
        Err(e) => panic!("bench configuration: {e}"),
    }
}

/// Reads every shard to its current end with one task per shard, as a hand-written consumer
/// with no leases or checkpoints would.
async fn raw_loop(sim: &StreamSimulator) -> u64 {
    let shards = sim.list_shards().await.unwrap_or_default();
    let mut tasks = tokio::task::JoinSet::new();
    for shard in shards {
        let sim = sim.clone();
        tasks.spawn(async move {
            let mut n = 0u64;
            let Ok(mut it) = sim.shard_iterator(&shard.id, &StartPosition::TrimHorizon).await else { return 0 };
            loop {
                let Ok(batch) = sim.read(&it, 1000).await else { return n };
                if batch.records.is_empty() {
                    return n;
                }
                n += batch.records.len() as u64;
                match batch.next_iterator {
                    Some(next) => it = next,
                    None => return n,
                }
            }
        });
    }
    let mut total = 0;
    while let Some(Ok(n)) = tasks.join_next().await {
        total += n;
    }
    total
}

async fn throughput() -> (f64, f64) {
    let sim = filled_simulator(SHARDS, RECORDS);
    // Raw: best of three.
    let mut raw = 0f64;
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let n = raw_loop(&sim).await;
        raw = raw.max(n as f64 / started.elapsed().as_secs_f64());
    }
    let mut worker_rate = 0f64;
    for _ in 0..3 {
        let noop = NoOp::new(RECORDS as u64);
        let done = noop.done.clone();
        let worker = Worker::with_metrics(
            config("w"),
            sim.clone(),
            MemoryLeaseStore::new(),
            move |_: &ShardId| noop.clone(),
            Metrics::unregistered(),
        );
        let handle = worker.handle();
        let started = std::time::Instant::now();
        let task = tokio::spawn(worker.run());
        done.notified().await;
        worker_rate = worker_rate.max(RECORDS as f64 / started.elapsed().as_secs_f64());
        handle.shutdown(Duration::from_secs(5)).await;
        let _ = task.await;
    }
    (raw, worker_rate)
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One worker takes 10,000 leases and consumes their shards for a simulated minute.
fn memory_with_10k_leases() -> (u64, u64, usize) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    rt.block_on(async {
        let sim = StreamSimulator::builder().seed(2).initial_shards(10_000).build();
        for i in 0..20_000 {
            sim.write(&format!("k{i}"), ChangeKind::Insert);
        }
        // The lease table is not in a worker's process: the stand-in keeps no history, so that
        // only its 10,000 items (a few MiB) are counted with the worker.
        let store = MemoryLeaseStore::new().with_history(kcl_core::testing::memory_store::HistoryMode::Off);
        let _ = sim.list_shards().await;
        let before = rss_kib("VmRSS:");
        let noop = NoOp::new(u64::MAX);
        let worker = Worker::with_metrics(
            config("w"),
            sim.clone(),
            store.clone(),
            move |_: &ShardId| noop.clone(),
            Metrics::unregistered(),
        );
        let handle = worker.handle();
        let task = tokio::spawn(worker.run());
        tokio::time::sleep(Duration::from_secs(60)).await;
        let held = handle.status().leases_held();
        let peak = rss_kib("VmHWM:");
        handle.shutdown(Duration::from_secs(30)).await;
        let _ = task.await;
        (before, peak, held)
    })
}

struct FleetBench {
    sim: StreamSimulator,
    store: MemoryLeaseStore,
    /// How often `until` checks (each check reads the whole table).
    poll: Duration,
    workers: BTreeMap<String, (WorkerHandle, tokio::task::JoinHandle<Result<(), kcl_core::WorkerError>>)>,
}

impl FleetBench {
    fn start(&mut self, name: &str) {
        let worker = Worker::with_metrics(
            config(name),
            self.sim.clone(),
            self.store.clone(),
            |_: &ShardId| NoOp::new(u64::MAX),
            Metrics::unregistered(),
        );
        let handle = worker.handle();
        self.workers.insert(name.to_owned(), (handle, tokio::spawn(worker.run())));
    }

    fn counts(&self) -> BTreeMap<Option<String>, usize> {
        let mut out = BTreeMap::new();
        for l in self.store.leases() {
            if !l.key.is_heartbeat() && !l.checkpoint.is_shard_end() {
                *out.entry(l.owner.map(|o| o.to_string())).or_insert(0) += 1;
            }
        }
        out
    }

    fn balanced(&self) -> bool {
        let counts = self.counts();
        let live: Vec<Option<String>> = self.workers.keys().map(|k| Some(k.clone())).collect();
        if counts.is_empty() || counts.keys().any(|k| !live.contains(k)) {
            return false;
        }
        let per: Vec<usize> = live.iter().map(|w| counts.get(w).copied().unwrap_or(0)).collect();
        per.iter().max().unwrap_or(&0) - per.iter().min().unwrap_or(&0) <= 1
    }

    async fn until(&self, cond: impl Fn(&Self) -> bool) -> Duration {
        let start = Instant::now();
        while !cond(self) {
            tokio::time::sleep(self.poll).await;
            if start.elapsed() > Duration::from_secs(300) {
                break;
            }
        }
        start.elapsed()
    }
}

/// Simulated seconds from a kill to the survivors owning every lease, and from a join to a
/// balanced fleet; plus lease-table writes per lease per minute in steady state.
fn failover_and_rebalance(seed: u64) -> (Duration, Duration, f64) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    rt.block_on(async move {
        let sim = StreamSimulator::builder().seed(seed).initial_shards(60).build();
        let mut fleet = FleetBench {
            sim,
            store: MemoryLeaseStore::new(),
            poll: Duration::from_millis(50),
            workers: BTreeMap::new(),
        };
        for w in ["a", "b", "c"] {
            fleet.start(w);
        }
        fleet.until(FleetBench::balanced).await;
        // Steady state for one simulated minute: count lease-table writes.
        let writes_before = write_count(&fleet.store);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let writes_per_lease_minute = (write_count(&fleet.store) - writes_before) as f64;
        // Offset the kill from the renewal schedule by a seed-dependent fraction.
        tokio::time::sleep(Duration::from_millis(seed * 137 % 3333)).await;
        if let Some((_, task)) = fleet.workers.remove("b") {
            task.abort();
        }
        let failover = fleet.until(|f| f.counts().keys().all(|k| matches!(k.as_deref(), Some("a" | "c")))).await;
        fleet.until(FleetBench::balanced).await;
        tokio::time::sleep(Duration::from_millis(seed * 211 % 10_000)).await;
        fleet.start("d");
        let rebalance = fleet.until(FleetBench::balanced).await;
        for (_, (handle, task)) in std::mem::take(&mut fleet.workers) {
            handle.shutdown(Duration::from_secs(30)).await;
            let _ = task.await;
        }
        (failover, rebalance, writes_per_lease_minute)
    })
}

fn write_count(store: &MemoryLeaseStore) -> u64 {
    let stats = store.stats();
    [LeaseOpKind::Renew, LeaseOpKind::Take, LeaseOpKind::Checkpoint, LeaseOpKind::Release, LeaseOpKind::Create]
        .into_iter()
        .map(|k| stats.of(k).applied())
        .sum::<u64>()
        / 60 // per lease: the fleet holds 60 leases (counted over one minute)
}

/// Runs the 10,000-lease memory measurement in a fresh process, so that no earlier phase
/// inflates the peak.
fn memory_in_child() -> (u64, u64, usize) {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => panic!("cannot find the bench binary: {e}"),
    };
    let out = match std::process::Command::new(exe).arg("--memory-only").output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run the memory measurement: {e}"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<u64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    match nums.as_slice() {
        [before, peak, held] => (*before, *peak, *held as usize),
        _ => panic!("unexpected output from the memory measurement: {text}"),
    }
}

/// What the 100,000-lease fleet measured.
struct Scale {
    balanced_after: Duration,
    writes_per_minute: u64,
    reads_per_minute: u64,
    lease_writes_per_minute: u64,
    failover: Duration,
    rebalance: Duration,
    handoffs: u64,
}

/// 10 workers share 100,000 idle leases: a simulated minute of steady state, then one worker
/// is killed (failover) and a new one joins (balancing by handoff).
fn at_scale(workers: usize, leases: usize) -> Scale {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    rt.block_on(async move {
        let sim = StreamSimulator::builder().seed(9).initial_shards(leases).build();
        let store = MemoryLeaseStore::new().with_history(kcl_core::testing::memory_store::HistoryMode::Off);
        let mut fleet = FleetBench { sim, store, poll: Duration::from_millis(500), workers: BTreeMap::new() };
        let phase = |what: &str| eprintln!("scale: {what}");
        let start = Instant::now();
        for i in 0..workers {
            fleet.start(&format!("w{i:02}"));
        }
        fleet.until(FleetBench::balanced).await;
        let balanced_after = start.elapsed();
        phase("balanced");
        tokio::time::sleep(kcl_core::config::DEFAULT_LEASE_DURATION).await;
        let before = fleet.store.stats();
        tokio::time::sleep(Duration::from_secs(60)).await;
        let after = fleet.store.stats();
        let delta =
            |kinds: &[LeaseOpKind]| kinds.iter().map(|k| after.of(*k).calls() - before.of(*k).calls()).sum::<u64>();
        let writes: Vec<LeaseOpKind> = LeaseOpKind::ALL.into_iter().filter(|k| k.is_write()).collect();
        let writes_per_minute = delta(&writes);
        let reads_per_minute = delta(&[LeaseOpKind::Get, LeaseOpKind::List]);
        let lease_writes_per_minute = delta(&[LeaseOpKind::Take, LeaseOpKind::Checkpoint, LeaseOpKind::Release]);
        phase("steady minute counted");
        if let Some((_, task)) = fleet.workers.remove("w01") {
            task.abort();
        }
        let failover = fleet.until(|f| f.counts().keys().all(|k| k.as_deref().is_some_and(|k| k != "w01"))).await;
        fleet.until(FleetBench::balanced).await;
        phase("failed over");
        let releases_before = fleet.store.stats().of(LeaseOpKind::Release).applied();
        fleet.start("joiner");
        let rebalance = fleet.until(FleetBench::balanced).await;
        let handoffs = fleet.store.stats().of(LeaseOpKind::Release).applied() - releases_before;
        for (_, (_, task)) in std::mem::take(&mut fleet.workers) {
            task.abort();
        }
        Scale {
            balanced_after,
            writes_per_minute,
            reads_per_minute,
            lease_writes_per_minute,
            failover,
            rebalance,
            handoffs,
        }
    })
}

fn print_scale() {
    let leases = std::env::var("BENCH_SCALE_LEASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let workers = 10;
    let wall = std::time::Instant::now();
    let s = at_scale(workers, leases);
    let target = kcl_core::config::DEFAULT_LEASE_DURATION + Duration::from_secs(2);
    println!("scale_workers={workers} scale_leases={leases} (wall {:.0} s)", wall.elapsed().as_secs_f64());
    println!("scale_balanced_after_start_s={:.1}", s.balanced_after.as_secs_f64());
    println!(
        "scale_lease_table_writes_per_minute={} ({:.1} per worker; shard leases: {}, {:.5} per lease per hour)",
        s.writes_per_minute,
        s.writes_per_minute as f64 / workers as f64,
        s.lease_writes_per_minute,
        s.lease_writes_per_minute as f64 * 60.0 / leases as f64
    );
    println!(
        "scale_lease_table_reads_per_minute={} ({:.1} per worker)",
        s.reads_per_minute,
        s.reads_per_minute as f64 / workers as f64
    );
    println!(
        "scale_failover_s={:.1} (target <= {:.0}) {}",
        s.failover.as_secs_f64(),
        target.as_secs_f64(),
        verdict(s.failover <= target)
    );
    println!("scale_join_balanced_s={:.1} ({} leases handed over)", s.rebalance.as_secs_f64(), s.handoffs);
}

fn main() {
    if std::env::args().any(|a| a == "--scale-only") {
        print_scale();
        return;
    }
    if std::env::args().any(|a| a == "--throughput-only") {
        let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        };
        let (raw, worker) = rt.block_on(throughput());
        println!("throughput_raw_records_per_s={raw:.0}");
        println!("throughput_worker_records_per_s={worker:.0}");
        println!("throughput_ratio={:.3} (target >= 0.9) {}", worker / raw, verdict(worker / raw >= 0.9));
        return;
    }
    if std::env::args().any(|a| a == "--memory-only") {
        let (before, peak, held) = memory_with_10k_leases();
        println!("{before} {peak} {held}");
        return;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    rt.block_on(run());
}

async fn run() {
    let lease_duration = kcl_core::config::DEFAULT_LEASE_DURATION;
    println!("kcl-core benchmark (machine: {} cores)", std::thread::available_parallelism().map_or(0, |n| n.get()));

    let (raw, worker) = throughput().await;
    let ratio = worker / raw;
    println!("throughput_raw_records_per_s={raw:.0}");
    println!("throughput_worker_records_per_s={worker:.0}");
    println!("throughput_ratio={ratio:.3} (target >= 0.9) {}", verdict(ratio >= 0.9));

    let (before, peak, held) = memory_in_child();
    let worker_mib = peak.saturating_sub(before) as f64 / 1024.0;
    println!("leases_held={held}");
    println!("peak_rss_process_mib={:.1} (simulator and lease store included)", peak as f64 / 1024.0);
    println!("peak_rss_worker_mib={worker_mib:.1} (target <= 64) {}", verdict(worker_mib <= 64.0 && held == 10_000));

    let mut failovers = Vec::new();
    let mut rebalances = Vec::new();
    let mut writes = 0.0;
    for seed in 1..=5 {
        let (f, r, w) = tokio::task::spawn_blocking(move || failover_and_rebalance(seed)).await.unwrap_or_default();
        failovers.push(f);
        rebalances.push(r);
        writes = w;
    }
    let worst_failover = failovers.iter().max().copied().unwrap_or_default();
    let worst_rebalance = rebalances.iter().max().copied().unwrap_or_default();
    let target = lease_duration + Duration::from_secs(2);
    println!(
        "failover_s={} worst={:.1} (target <= {:.0}) {}",
        secs(&failovers),
        worst_failover.as_secs_f64(),
        target.as_secs_f64(),
        verdict(worst_failover <= target)
    );
    let cycles = worst_rebalance.as_secs_f64() / lease_duration.as_secs_f64();
    println!(
        "rebalance_s={} worst={:.1} = {cycles:.2} take cycles (target <= 2) {}",
        secs(&rebalances),
        worst_rebalance.as_secs_f64(),
        verdict(cycles <= 2.0)
    );
    println!("lease_table_writes_per_lease_per_minute={writes:.1}");
    tokio::task::spawn_blocking(print_scale).await.unwrap_or_default();
}

fn secs(v: &[Duration]) -> String {
    v.iter().map(|d| format!("{:.1}", d.as_secs_f64())).collect::<Vec<_>>().join(",")
}

fn verdict(ok: bool) -> &'static str {
    if ok { "OK" } else { "MISSED" }
}
