//! Quickstart: three workers in one process share a simulated DynamoDB stream while a writer
//! produces inserts, updates and deletes. One worker is killed and another joins midway; a
//! status line is printed every second, and the run ends with a summary of records written,
//! processed, duplicated and lost.
//!
//! `cargo run --release -p kcl-examples --bin quickstart`

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use kcl_core::testing::invariants::{self, Observed};
use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::recording::{DeliveryLog, RecordingProcessorFactory};
use kcl_core::testing::sim::{ChangeKind, StreamSimulator};
use kcl_core::{Config, Metrics, StreamSource, Worker, WorkerError, WorkerHandle, WorkerId};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const WRITE_FOR: Duration = Duration::from_secs(20);
const WRITES_PER_SECOND: u64 = 250;
const ITEMS: u64 = 400;
const KILL_AT: Duration = Duration::from_secs(5);
const JOIN_AT: Duration = Duration::from_secs(12);
const SPLIT_AT: Duration = Duration::from_secs(9);
const DEADLINE: Duration = Duration::from_secs(30);

struct Running {
    handle: WorkerHandle,
    task: JoinHandle<Result<(), WorkerError>>,
}

fn start(name: &str, sim: &StreamSimulator, store: &MemoryLeaseStore, log: &DeliveryLog) -> Running {
    let config = match Config::builder("quickstart").worker_id(name).build() {
        Ok(c) => c,
        Err(e) => panic!("the quickstart's own configuration is invalid: {e}"),
    };
    let factory = RecordingProcessorFactory::new(WorkerId::new(name), log.clone());
    let worker = Worker::with_metrics(config, sim.clone(), store.clone(), factory, Metrics::unregistered());
    let handle = worker.handle();
    Running { handle, task: tokio::spawn(worker.run()) }
}

fn status_line(t: Duration, workers: &BTreeMap<String, Running>, log: &DeliveryLog, written: usize) -> String {
    let mut parts = Vec::new();
    for (name, w) in workers {
        let s = w.handle.status();
        let lag = s.max_lag().map_or("-".to_owned(), |l| format!("{:.1}s", l.as_secs_f64()));
        parts.push(format!(
            "{name}: {:>2} leases {:>5} rec lag {lag}",
            s.leases_held(),
            log.processed_by(&WorkerId::new(name))
        ));
    }
    format!(
        "t={:>4.1}s | written {written:>5} | processed {:>5} | {}",
        t.as_secs_f64(),
        log.distinct_processed(),
        parts.join(" | ")
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .init();
    let sim = StreamSimulator::builder().seed(42).initial_shards(8).real_wall_clock().build();
    let store = MemoryLeaseStore::new();
    let log = DeliveryLog::new();
    println!(
        "kcl-streams quickstart: 3 workers, 8 shards, {WRITES_PER_SECOND} changes/s for {}s over {ITEMS} items",
        WRITE_FOR.as_secs()
    );
    println!(
        "  worker-2 is killed (no handoff) at {}s, a shard splits at {}s, worker-4 joins at {}s",
        KILL_AT.as_secs(),
        SPLIT_AT.as_secs(),
        JOIN_AT.as_secs()
    );

    let mut workers = BTreeMap::new();
    for name in ["worker-1", "worker-2", "worker-3"] {
        workers.insert(name.to_owned(), start(name, &sim, &store, &log));
    }

    let begin = Instant::now();
    let writer = {
        let sim = sim.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / WRITES_PER_SECOND));
            let mut versions: BTreeMap<u64, u64> = BTreeMap::new();
            let mut i: u64 = 0;
            while begin.elapsed() < WRITE_FOR {
                tick.tick().await;
                let item = (i * 7919) % ITEMS;
                let v = versions.entry(item).or_insert(0);
                let kind = match *v {
                    0 => ChangeKind::Insert,
                    n if n % 5 == 4 => ChangeKind::Remove,
                    _ => ChangeKind::Modify,
                };
                *v = if kind == ChangeKind::Remove { 0 } else { *v + 1 };
                sim.write(&format!("item-{item}"), kind);
                i += 1;
            }
        })
    };

    let mut killed = false;
    let mut joined = false;
    let mut split = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let t = begin.elapsed();
        if !killed && t >= KILL_AT {
            killed = true;
            if let Some(w) = workers.remove("worker-2") {
                w.task.abort();
                println!(
                    "t={:>4.1}s | killed worker-2: its leases fail over after about one lease duration",
                    t.as_secs_f64()
                );
            }
        }
        if !split && t >= SPLIT_AT {
            split = true;
            if let Some(shard) = sim.open_shards().first().cloned()
                && let Ok((a, b)) = sim.split(&shard)
            {
                println!("t={:>4.1}s | shard {shard} split into {a} and {b}", t.as_secs_f64());
            }
        }
        if !joined && t >= JOIN_AT {
            joined = true;
            workers.insert("worker-4".to_owned(), start("worker-4", &sim, &store, &log));
            println!("t={:>4.1}s | worker-4 joined: it takes its share in one take cycle", t.as_secs_f64());
        }
        let written = sim.written().len();
        println!("{}", status_line(t, &workers, &log, written));
        let all_done = writer.is_finished() && log.distinct_processed() >= written;
        if (all_done && t >= JOIN_AT + Duration::from_secs(3)) || t >= DEADLINE {
            break;
        }
    }
    for (name, w) in std::mem::take(&mut workers) {
        let outcome = w.handle.shutdown(Duration::from_secs(5)).await;
        if let Ok(Err(e)) = w.task.await {
            eprintln!("{name} failed: {e}");
        }
        println!("stopped {name}: {outcome:?}");
    }

    let written = sim.written();
    let trimmed = sim.trimmed();
    let history = store.history();
    let parents: Vec<_> = match sim.list_shards().await {
        Ok(shards) => shards.into_iter().map(|s| (s.id, s.parent_ids)).collect(),
        Err(e) => panic!("the simulator cannot list its shards: {e}"),
    };
    let report = invariants::check(&Observed {
        written: &written,
        trimmed: &trimmed,
        log: &log,
        lease_history: &history,
        lease_duration: kcl_core::config::DEFAULT_LEASE_DURATION,
        parents: &parents,
        filtered: None,
    });
    let s = &report.stats;
    println!();
    println!(
        "summary: written {} | processed {} (distinct {}) | duplicated {} | lost {}",
        s.written, s.delivered, s.distinct_delivered, s.duplicates, s.lost
    );
    println!(
        "         duplicates come only from the killed worker's unacknowledged batches; invariant violations: {}",
        report.violations.len()
    );
    for v in report.violations.iter().take(10) {
        println!("  - {v}");
    }
    if s.lost == 0 && report.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
