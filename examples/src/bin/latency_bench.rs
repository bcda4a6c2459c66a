//! End-to-end latency benchmark against Amazon DynamoDB Local.
//!
//! ```sh
//! cargo run --release -p kcl-examples --bin latency_bench
//! ```
//!
//! Starts DynamoDB Local (installing it if needed, through `tools/dynamodb-local/run.sh`),
//! creates a table with a NEW_AND_OLD_IMAGES stream and a lease table, and runs one
//! `kcl_core::Worker` in this process with the **default** configuration
//! (`Config::builder(app).build()`). Its processor measures, for every record, the time from
//! the write to the `process_records` call: each item carries `t_ns`, the writer's
//! `SystemTime` in nanoseconds taken just before its PutItem. (DynamoDB Local truncates
//! `ApproximateCreationDateTime` to the minute, so that field cannot be used.)
//!
//! 1. Warm-up: a few items, until they are all processed (lease taken, iterator open).
//! 2. Measurement: `LATENCY_BENCH_ITEMS` items (default 120), one every
//!    `LATENCY_BENCH_SPACING_MS` (default 1000 ms: the issue's "at least one change a
//!    second"); p50/p90/p99/max write → `process_records`.
//! 3. Idle: nothing written for `LATENCY_BENCH_IDLE_SECS` (default 120 s); the count of the
//!    worker's `kcl_get_records_seconds` histogram (one sample per GetRecords call) over the
//!    whole window (it starts with the active window and the ramp of the adaptive wait) and
//!    after the ramp (the steady idle rate), per open shard, scaled to an hour, compared with
//!    Lambda's 4 polls a second.
//! 4. Wake-ups: `LATENCY_BENCH_WAKE_PROBES` single items (default 8), each after
//!    `LATENCY_BENCH_WAKE_GAP_SECS` (default 30 s) without writes plus an offset that spreads
//!    the probes over one longest wait (8 s), so the wait has grown to its maximum and the
//!    probes meet the idle polls at every phase: the first-change-after-idle latency.
//!
//! The figures are printed as `key=value` lines between `=== latency_bench ===` and
//! `=== end ===`. Latency is dominated by the adaptive idle wait (`idle_wait`, default
//! 200 ms – 8 s): an active shard is polled every 200 ms after an empty read, one idle for
//! longer than the active window (10 s) less and less often, down to every 8 s.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_adapter::{AttributeValue, ChangeRecord, DynamoLeaseStore, DynamoStreamsSource, TableOptions};
use kcl_core::config::{
    DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_IDLE_ACTIVE_WINDOW, DEFAULT_IDLE_WAIT_MAX, DEFAULT_IDLE_WAIT_MIN,
    DEFAULT_MAX_RECORDS_PER_READ, DEFAULT_PREFETCH_BATCHES,
};
use kcl_core::{Batch, Checkpointer, Config, ProcessorError, RecordProcessor, ShardId, ShardState, Worker};
use kcl_examples::support::{BoxError, env_u64, init_logging, unix_nanos};
use tokio::sync::mpsc;

/// Lambda's event source mapping polls each shard four times a second.
const LAMBDA_POLLS_PER_SHARD_PER_HOUR: f64 = 4.0 * 3600.0;
const WARMUP_ITEMS: u64 = 20;
const WARMUP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long after the last write every record must have been processed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Quiet time between the last processed record and the start of the idle window.
const SETTLE: Duration = Duration::from_secs(2);
/// How long after the start of the idle window the adaptive wait has reached its maximum with
/// the defaults (the rest of the 10 s active window, then 0.4 + 0.8 + … + 6.4 s), with slack.
const IDLE_RAMP: Duration = Duration::from_secs(30);
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(25);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    Warmup,
    Measured,
    Wake,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Warmup => "warmup",
            Phase::Measured => "measured",
            Phase::Wake => "wake",
        }
    }
}

/// One record as the processor saw it.
#[derive(Debug)]
struct Sample {
    phase: Phase,
    index: u64,
    latency: Duration,
}

/// The benchmark's processor: a latency probe that checkpoints every batch, as a real
/// processor would.
#[derive(Debug)]
struct Probe {
    samples: mpsc::UnboundedSender<Sample>,
}

impl RecordProcessor<ChangeRecord> for Probe {
    async fn process_records(
        &mut self,
        batch: &Batch<ChangeRecord>,
        checkpointer: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        let now = unix_nanos(SystemTime::now());
        for record in &batch.records {
            let Some(image) = record.new_image() else { continue };
            let (Some(written), Some(index), Some(phase)) = (
                number(image.get("t_ns")),
                number(image.get("i")).and_then(|i| u64::try_from(i).ok()),
                match image.get("phase") {
                    Some(AttributeValue::S(s)) if s == "warmup" => Some(Phase::Warmup),
                    Some(AttributeValue::S(s)) if s == "measured" => Some(Phase::Measured),
                    Some(AttributeValue::S(s)) if s == "wake" => Some(Phase::Wake),
                    _ => None,
                },
            ) else {
                continue;
            };
            let latency = Duration::from_nanos(u64::try_from(now.saturating_sub(written)).unwrap_or(0));
            // The receiver only goes away when the benchmark is over.
            let _ = self.samples.send(Sample { phase, index, latency });
        }
        checkpointer
            .checkpoint()
            .await
            .map_err(|e| ProcessorError::new("checkpoint after the batch failed").with_source(e))
    }
}

fn number(value: Option<&AttributeValue>) -> Option<i128> {
    match value {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

/// `GetRecords` calls so far: the sample count of `kcl_get_records_seconds`, all results.
fn get_records_calls(registry: &prometheus::Registry) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.name() == "kcl_get_records_seconds")
        .flat_map(|family| family.get_metric().iter())
        .map(|metric| metric.get_histogram().get_sample_count())
        .sum()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// `DYNAMODB_LOCAL_VERSION` and the distribution folder, from the file `install.sh` writes.
fn dynamodb_local_version() -> String {
    let emulators = std::env::var("EMULATORS_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(".emulators"));
    let Ok(text) = std::fs::read_to_string(emulators.join("dynamodb-local.env")) else {
        return "unknown".to_owned();
    };
    let value = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(str::to_owned);
    let version = value("DYNAMODB_LOCAL_VERSION").unwrap_or_else(|| "unknown".to_owned());
    match value("DYNAMODB_LOCAL_HOME").and_then(|h| Path::new(&h).file_name().map(|f| f.to_string_lossy().into_owned()))
    {
        Some(dist) => format!("{version} ({dist})"),
        None => version,
    }
}

/// Writes the items `indexes` of `phase`, one every `spacing` (the first at once), each
/// stamped with `t_ns` just before its PutItem.
async fn write_items(
    local: &DynamoDbLocal,
    table: &str,
    phase: Phase,
    indexes: std::ops::Range<u64>,
    spacing: Duration,
) -> Result<(), BoxError> {
    let dynamodb = local.dynamodb_client();
    let mut tick = tokio::time::interval(spacing);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in indexes {
        tick.tick().await;
        let t_ns = unix_nanos(SystemTime::now());
        dynamodb
            .put_item()
            .table_name(table)
            .item("pk", AttributeValue::S(format!("{}-{i}", phase.as_str())))
            .item("phase", AttributeValue::S(phase.as_str().to_owned()))
            .item("i", AttributeValue::N(i.to_string()))
            .item("t_ns", AttributeValue::N(t_ns.to_string()))
            .send()
            .await
            .map_err(|e| format!("PutItem {} #{i} into {table}: {e:?}", phase.as_str()))?;
    }
    Ok(())
}

/// Receives samples until every index of `phase` below `count` was seen or `deadline` passes.
/// Returns the first latency of each index and the number of repeated deliveries.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Sample>,
    phase: Phase,
    count: u64,
    deadline: tokio::time::Instant,
) -> (HashMap<u64, Duration>, u64) {
    let mut seen = HashMap::new();
    let mut repeats = 0;
    while (seen.len() as u64) < count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(sample)) if sample.phase == phase => {
                if seen.insert(sample.index, sample.latency).is_some() {
                    repeats += 1;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    (seen, repeats)
}

#[tokio::main]
async fn main() {
    init_logging();
    if let Err(e) = run().await {
        eprintln!("latency_bench: FAILED: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), BoxError> {
    let items = env_u64("LATENCY_BENCH_ITEMS", 120)?;
    let spacing = Duration::from_millis(env_u64("LATENCY_BENCH_SPACING_MS", 1000)?);
    let idle_window = Duration::from_secs(env_u64("LATENCY_BENCH_IDLE_SECS", 120)?);
    let wake_probes = env_u64("LATENCY_BENCH_WAKE_PROBES", 8)?;
    let wake_gap = Duration::from_secs(env_u64("LATENCY_BENCH_WAKE_GAP_SECS", 30)?);
    if items == 0 || spacing.is_zero() || idle_window <= IDLE_RAMP || wake_gap < IDLE_RAMP {
        return Err(format!(
            "LATENCY_BENCH_ITEMS and LATENCY_BENCH_SPACING_MS must be positive, LATENCY_BENCH_IDLE_SECS more than \
             {IDLE_RAMP:?}, LATENCY_BENCH_WAKE_GAP_SECS at least that"
        )
        .into());
    }
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);

    eprintln!("latency_bench: starting DynamoDB Local");
    let local = Arc::new(DynamoDbLocal::start()?);
    let dynamodb = local.dynamodb_client();
    let table = unique_name("latency-src");
    let stream_arn = local.create_stream_table(&table).await;
    let app = unique_name("latency-bench");
    let store = DynamoLeaseStore::new(local.dynamodb_client(), &app);
    store.ensure_table(&TableOptions::default()).await?;
    let source = DynamoStreamsSource::from_table(&dynamodb, local.streams_client(), &table).await?;

    // Default settings: only the application name is given.
    let config = Config::builder(&app).build()?;
    let registry = prometheus::Registry::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let factory = move |_shard: &ShardId| Probe { samples: tx.clone() };
    let worker = Worker::new(config, source, store, factory, &registry)?;
    let handle = worker.handle();
    let started = Instant::now();
    let running = tokio::spawn(worker.run());
    eprintln!("latency_bench: worker started on {stream_arn}; warming up with {WARMUP_ITEMS} items");

    // 1. Warm-up.
    write_items(&local, &table, Phase::Warmup, 0..WARMUP_ITEMS, spacing).await?;
    let (warm, _) = collect(&mut rx, Phase::Warmup, WARMUP_ITEMS, tokio::time::Instant::now() + WARMUP_TIMEOUT).await;
    if (warm.len() as u64) < WARMUP_ITEMS {
        return Err(format!(
            "only {} of {WARMUP_ITEMS} warm-up records were processed within {WARMUP_TIMEOUT:?}",
            warm.len()
        )
        .into());
    }
    let warmed_after = started.elapsed();

    // 2. Measurement: the writer runs beside the collector.
    eprintln!("latency_bench: writing {items} items, one every {spacing:?}");
    let writer = {
        let local = Arc::clone(&local);
        let table = table.clone();
        tokio::spawn(async move { write_items(&local, &table, Phase::Measured, 0..items, spacing).await })
    };
    let deadline = tokio::time::Instant::now() + spacing * u32::try_from(items).unwrap_or(u32::MAX) + DRAIN_TIMEOUT;
    let (seen, repeats) = collect(&mut rx, Phase::Measured, items, deadline).await;
    writer.await.map_err(|e| format!("writer task: {e}"))??;
    if (seen.len() as u64) < items {
        return Err(format!("only {} of {items} records were processed in time", seen.len()).into());
    }
    let mut latencies: Vec<Duration> = seen.into_values().collect();
    latencies.sort();
    let mean = latencies.iter().sum::<Duration>() / u32::try_from(latencies.len()).unwrap_or(u32::MAX);

    // 3. Idle reads.
    tokio::time::sleep(SETTLE).await;
    let status = handle.status();
    let idle_shards = status.shards.values().filter(|s| s.state == ShardState::Processing).count();
    let described = local.streams_client().describe_stream().stream_arn(&stream_arn).send().await?;
    let open_shards = described
        .stream_description
        .map(|d| {
            d.shards
                .unwrap_or_default()
                .iter()
                .filter(|s| s.sequence_number_range.as_ref().and_then(|r| r.ending_sequence_number.as_ref()).is_none())
                .count()
        })
        .unwrap_or(0);
    if idle_shards == 0 {
        return Err("the worker holds no shard in the Processing state: nothing to measure".into());
    }
    eprintln!("latency_bench: idle for {idle_window:?} with {idle_shards} shard(s)");
    let reads_before = get_records_calls(&registry);
    let idle_started = Instant::now();
    tokio::time::sleep(IDLE_RAMP).await;
    let reads_ramp = get_records_calls(&registry) - reads_before;
    let steady_started = Instant::now();
    tokio::time::sleep(idle_window - IDLE_RAMP).await;
    let reads = get_records_calls(&registry) - reads_before;
    let idle_elapsed = idle_started.elapsed();
    let steady_elapsed = steady_started.elapsed();
    let per_shard_per_hour = reads as f64 / idle_shards as f64 / idle_elapsed.as_secs_f64() * 3600.0;
    let steady_per_hour = (reads - reads_ramp) as f64 / idle_shards as f64 / steady_elapsed.as_secs_f64() * 3600.0;
    // The hour that starts at the last record: the ramp as measured, then the steady rate.
    let first_hour = reads_ramp as f64 / idle_shards as f64
        + steady_per_hour * (3600.0 - (SETTLE + IDLE_RAMP).as_secs_f64()) / 3600.0;
    let late = rx.try_recv().is_ok();

    // 4. Wake-ups: one change after a long idle period, a few times.
    let mut wakes = Vec::new();
    for i in 0..wake_probes {
        if i > 0 {
            // Spread over one longest wait, so the probes meet the idle polls at every phase.
            let offset =
                DEFAULT_IDLE_WAIT_MAX * u32::try_from(i).unwrap_or(0) / u32::try_from(wake_probes).unwrap_or(1);
            tokio::time::sleep(wake_gap + offset).await;
        }
        write_items(&local, &table, Phase::Wake, i..i + 1, spacing).await?;
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        let (seen, _) = collect(&mut rx, Phase::Wake, 1, deadline).await;
        let Some(latency) = seen.get(&i).copied() else {
            return Err(format!("wake-up item {i} was not processed within {DRAIN_TIMEOUT:?}").into());
        };
        eprintln!("latency_bench: wake-up {i}: {latency:?}");
        wakes.push(latency);
    }
    wakes.sort();

    let outcome = handle.shutdown(SHUTDOWN_DEADLINE).await;
    running.await.map_err(|e| format!("worker task: {e}"))??;

    println!("=== latency_bench ===");
    println!("machine_nproc={nproc}");
    println!("dynamodb_local_version={}", dynamodb_local_version());
    println!("settings=defaults (kcl_core::Config::builder(app).build())");
    println!("idle_wait_min_ms={}", DEFAULT_IDLE_WAIT_MIN.as_millis());
    println!("idle_wait_max_ms={}", DEFAULT_IDLE_WAIT_MAX.as_millis());
    println!("idle_active_window_ms={}", DEFAULT_IDLE_ACTIVE_WINDOW.as_millis());
    println!("checkpoint_policy=Interval checkpoint_interval_ms={}", DEFAULT_CHECKPOINT_INTERVAL.as_millis());
    println!("max_records_per_read={DEFAULT_MAX_RECORDS_PER_READ}");
    println!("prefetch_batches={DEFAULT_PREFETCH_BATCHES}");
    println!("processor=calls checkpoint after every batch (coalesced by the default policy)");
    println!("warmup_items={WARMUP_ITEMS}");
    println!("worker_start_to_warm_s={:.2}", warmed_after.as_secs_f64());
    println!("items={items}");
    println!("spacing_ms={}", spacing.as_millis());
    println!("repeated_deliveries={repeats}");
    println!("latency_min_ms={}", ms(latencies[0]));
    println!("latency_mean_ms={}", ms(mean));
    println!("latency_p50_ms={}", ms(percentile(&latencies, 50.0)));
    println!("latency_p90_ms={}", ms(percentile(&latencies, 90.0)));
    println!("latency_p99_ms={}", ms(percentile(&latencies, 99.0)));
    println!("latency_max_ms={}", ms(latencies[latencies.len() - 1]));
    println!("idle_window_s={:.1}", idle_elapsed.as_secs_f64());
    println!("idle_shards={idle_shards}");
    println!("open_shards_in_stream={open_shards}");
    println!("idle_get_records_calls={reads}");
    println!("get_records_per_idle_shard_per_hour_whole_window={per_shard_per_hour:.0}");
    println!("idle_ramp_s={:.0} idle_get_records_calls_in_ramp={reads_ramp}", IDLE_RAMP.as_secs_f64());
    println!("get_records_per_idle_shard_per_hour_steady={steady_per_hour:.0}");
    println!("get_records_first_idle_hour_estimate={first_hour:.0}");
    println!("lambda_polls_per_shard_per_hour={LAMBDA_POLLS_PER_SHARD_PER_HOUR:.0}");
    println!("ratio_to_lambda_steady={:.3}", steady_per_hour / LAMBDA_POLLS_PER_SHARD_PER_HOUR);
    println!("wake_probes={wake_probes} wake_gap_s={}", wake_gap.as_secs());
    let wake_ms: Vec<String> = wakes.iter().map(|d| ms(*d)).collect();
    println!("wake_latencies_ms={}", wake_ms.join(","));
    if let (Some(lo), Some(hi)) = (wakes.first(), wakes.last()) {
        let mean = wakes.iter().sum::<Duration>() / u32::try_from(wakes.len()).unwrap_or(u32::MAX);
        println!("wake_latency_min_ms={} wake_latency_mean_ms={} wake_latency_max_ms={}", ms(*lo), ms(mean), ms(*hi));
    }
    println!("records_during_idle={late}");
    println!("shutdown={outcome:?}");
    println!("=== end ===");
    Ok(())
}
