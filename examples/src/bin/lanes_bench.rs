//! Throughput of one shard with lanes (`parallelism`): a processor that spends 10 ms on each
//! batch (of up to 100 records), one shard pre-filled with changes over many items, drained
//! with 1, 2, 5 and 10 lanes in the same run. Prints records/s, the ratio to one lane against
//! the target (≥ 0.8 × lanes), and whether every record arrived with each item's changes in
//! order. Real time (tokio sleeps), on the in-memory simulator.
//!
//! `cargo run --release -p kcl-examples --bin lanes_bench`; `BENCH_LANES_RECORDS` (20,000)
//! and `BENCH_LANES_KEYS` (10,000) change the size.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::sim::{ChangeKind, SimRecord, StreamSimulator};
use kcl_core::{Batch, Checkpointer, Config, Metrics, ProcessorError, RecordProcessor, Worker};
use kcl_examples::support::{BoxError, env_u64, init_logging};

const BATCH_SIZE: usize = 100;
const PER_BATCH: Duration = Duration::from_millis(10);
const LANES: [usize; 4] = [1, 2, 5, 10];

/// What the processors of one run saw.
#[derive(Default)]
struct Seen {
    records: AtomicUsize,
    /// Per item, the last version delivered; an earlier one after it is out of order.
    last_version: Mutex<HashMap<String, u64>>,
    out_of_order: AtomicUsize,
    first: Mutex<Option<Instant>>,
}

struct Slow(Arc<Seen>);

impl RecordProcessor<SimRecord> for Slow {
    async fn process_records(
        &mut self,
        batch: &Batch<SimRecord>,
        cp: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.0.first.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_with(Instant::now);
        tokio::time::sleep(PER_BATCH).await;
        {
            let mut last = self.0.last_version.lock().unwrap_or_else(PoisonError::into_inner);
            for r in &batch.records {
                let prev = last.insert(r.key.clone(), r.version).unwrap_or(0);
                if r.version != prev + 1 {
                    self.0.out_of_order.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.0.records.fetch_add(batch.records.len(), Ordering::Relaxed);
        cp.checkpoint().await.map_err(|e| ProcessorError::new(e.to_string()))
    }
}

struct Run {
    lanes: usize,
    seconds: f64,
    records: usize,
    out_of_order: usize,
}

async fn run(lanes: usize, records: u64, keys: u64) -> Result<Run, BoxError> {
    let sim = StreamSimulator::builder().seed(7).initial_shards(1).real_wall_clock().build();
    for i in 0..records {
        sim.write(&format!("item-{}", i % keys), if i < keys { ChangeKind::Insert } else { ChangeKind::Modify });
    }
    let seen = Arc::new(Seen::default());
    let config = Config::builder("lanes-bench").worker_id("bench").parallelism(lanes).batch_size(BATCH_SIZE).build()?;
    let factory = {
        let seen = seen.clone();
        move |_: &kcl_core::ShardId| Slow(seen.clone())
    };
    let worker = Worker::with_metrics(config, sim, MemoryLeaseStore::new(), factory, Metrics::unregistered());
    let handle = worker.handle();
    let task = tokio::spawn(worker.run());
    let deadline = Instant::now() + Duration::from_secs(300);
    while seen.records.load(Ordering::Relaxed) < records as usize {
        if Instant::now() > deadline {
            return Err(format!("{lanes} lanes: not drained in 300 s").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = Instant::now();
    let first = seen.first.lock().unwrap_or_else(PoisonError::into_inner).unwrap_or(done);
    handle.shutdown(Duration::from_secs(30)).await;
    task.await??;
    Ok(Run {
        lanes,
        seconds: done.duration_since(first).as_secs_f64(),
        records: seen.records.load(Ordering::Relaxed),
        out_of_order: seen.out_of_order.load(Ordering::Relaxed),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    match bench().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("lanes_bench: {e}");
            ExitCode::from(2)
        }
    }
}

async fn bench() -> Result<bool, BoxError> {
    let records = env_u64("BENCH_LANES_RECORDS", 20_000)?;
    let keys = env_u64("BENCH_LANES_KEYS", 10_000)?;
    println!("one shard, {records} changes over {keys} items, batches of up to {BATCH_SIZE}, {PER_BATCH:?} per batch");
    println!();
    println!("| lanes | records/s | vs 1 lane | target (0.8 × lanes) | met | all delivered, each item in order |");
    println!("|---|---|---|---|---|---|");
    let mut base = None;
    let mut all_ok = true;
    for lanes in LANES {
        let r = run(lanes, records, keys).await?;
        let rate = r.records as f64 / r.seconds.max(1e-9);
        let base_rate = *base.get_or_insert(rate);
        let ratio = rate / base_rate;
        let target = 0.8 * lanes as f64;
        let met = ratio >= target;
        let intact = r.records >= records as usize && r.out_of_order == 0;
        all_ok &= intact;
        println!(
            "| {} | {rate:.0} | {ratio:.2}× | {target:.1}× | {} | {} ({} records, {} out of order) |",
            r.lanes,
            if met { "yes" } else { "no" },
            if intact { "yes" } else { "NO" },
            r.records,
            r.out_of_order
        );
    }
    Ok(all_ok)
}
