//! Cost benchmark against Amazon DynamoDB Local: the KCL-style settings next to the new
//! defaults, in one run, counted request by request.
//!
//! ```sh
//! cargo run --release -p kcl-examples --bin cost_bench
//! ```
//!
//! Starts DynamoDB Local (installing it if needed, as `latency_bench` does) and, for each of
//! the two settings, `COST_BENCH_TABLES` tables (default 9) with a stream, one lease table,
//! and a fleet of `COST_BENCH_WORKERS` workers (default 3) in this process. Each worker reads
//! all the fleet's tables' streams as one source ([`MultiStream`]: DynamoDB Local gives each
//! stream one shard), so the fleet shares that many shards. Each worker talks to DynamoDB
//! Local through its own counting [`Proxy`] (both its DynamoDB and its Streams client), which
//! sorts its requests into heartbeat, lease and checkpoint writes, `GetItem`/`Scan` reads and
//! `GetRecords` calls. The benchmark's own writes go straight to DynamoDB Local.
//!
//! - **KCL-style**: every lease renewed (`LeaseRenewal::EveryLease`), a checkpoint written on
//!   every `checkpoint()` call (`CheckpointPolicy::Processor`), a fixed 500 ms idle wait.
//! - **New defaults**: `Config::builder(app).build()` (heartbeat-only leases, coalesced
//!   checkpoints every 5 s, adaptive idle wait 200 ms – 8 s).
//!
//! Both fleets run the same processor, which calls `checkpoint()` after every batch and
//! measures write → `process_records` latency from the `t_ns` each item carries.
//!
//! Phases, both fleets at once: warm-up (until every lease is taken, the fleets balanced and
//! every table's records arrive); active (`COST_BENCH_ACTIVE_SECS`, default 60 s, one change a
//! second per table); idle (`COST_BENCH_IDLE_SECS`, default 120 s; counted after a 30 s ramp);
//! after-idle probes (`COST_BENCH_PROBE_ROUNDS` rounds, default 2, of one change per table,
//! spread over the longest idle wait of the new defaults, 8 s, rounds 35 s apart). Then the fleets stop and a fleet-size phase runs 3 and 30 workers with the
//! new defaults on one table each, at once (`COST_BENCH_FLEET_SECS`, default 60 s, after a
//! 20 s warm-up), for lease-table reads per worker per minute.
//!
//! Prices are in [`kcl_examples::prices`]. Output: a markdown table, per-worker lines, and
//! `key=value` lines between `=== cost_bench ===` and `=== end ===`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kcl_adapter::local::{DynamoDbLocal, unique_name};
use kcl_adapter::{AttributeValue, ChangeRecord, DynamoLeaseStore, DynamoStreamsSource, TableOptions};
use kcl_core::config::DEFAULT_IDLE_WAIT_MAX;
use kcl_core::{
    Batch, CheckpointPolicy, Checkpointer, Config, LeaseRenewal, MultiStream, ProcessorError, RecordProcessor, ShardId,
    Worker, WorkerError, WorkerHandle,
};
use kcl_examples::prices::Units;
use kcl_examples::proxy::{Counts, Proxy};
use kcl_examples::support::{BoxError, env_u64, init_logging, unix_nanos};
use tokio::sync::mpsc;

mod report;
use report::Report;
use tokio::task::{JoinHandle, JoinSet};

const WARMUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long after the last change the adaptive wait of the new defaults has reached its
/// maximum (rest of the 10 s active window, then 0.4 + 0.8 + … + 6.4 s), with slack.
const IDLE_RAMP: Duration = Duration::from_secs(30);
/// Between probe rounds: longer than the ramp, so each round meets fully idle shards.
const PROBE_GAP: Duration = Duration::from_secs(35);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const FLEET_WARMUP: Duration = Duration::from_secs(20);
const FLEET_SIZES: [usize; 2] = [3, 30];
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// Targets for the new defaults, from the issue.
const TARGET_GET_RECORDS_PER_IDLE_SHARD_HOUR: f64 = 600.0;
const TARGET_LEASE_WRITES_PER_LEASE_HOUR: f64 = 1.0;
const TARGET_P50_MS: f64 = 150.0;
const TARGET_P99_MS: f64 = 500.0;
const TARGET_COST_RATIO: f64 = 10.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Setting {
    KclStyle,
    NewDefaults,
}

impl Setting {
    fn name(self) -> &'static str {
        match self {
            Setting::KclStyle => "KCL-style",
            Setting::NewDefaults => "new defaults",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Setting::KclStyle => "kcl_style",
            Setting::NewDefaults => "new_defaults",
        }
    }

    fn config(self, app: &str, worker_id: &str) -> Result<Config, BoxError> {
        let builder = Config::builder(app).worker_id(worker_id);
        let builder = match self {
            Setting::KclStyle => builder
                .lease_renewal(LeaseRenewal::EveryLease)
                .checkpoint_policy(CheckpointPolicy::Processor)
                .idle_wait(Duration::from_millis(500), Duration::from_millis(500)),
            Setting::NewDefaults => builder,
        };
        Ok(builder.build()?)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase {
    Warmup,
    Active,
    Probe,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Warmup => "warmup",
            Phase::Active => "active",
            Phase::Probe => "probe",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Phase::Warmup, Phase::Active, Phase::Probe].into_iter().find(|p| p.as_str() == s)
    }
}

/// One record as a processor saw it.
#[derive(Debug)]
struct Sample {
    setting: Setting,
    phase: Phase,
    /// `table/pk`.
    key: String,
    latency: Duration,
}

/// The processor of both fleets: measures latency, checkpoints after every batch.
#[derive(Debug)]
struct LatencyProbe {
    setting: Setting,
    samples: mpsc::UnboundedSender<Sample>,
}

impl RecordProcessor<ChangeRecord> for LatencyProbe {
    async fn process_records(
        &mut self,
        batch: &Batch<ChangeRecord>,
        checkpointer: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        let now = unix_nanos(SystemTime::now());
        for record in &batch.records {
            let Some(image) = record.new_image() else { continue };
            let text = |name: &str| match image.get(name) {
                Some(AttributeValue::S(s)) => Some(s.clone()),
                _ => None,
            };
            let written = match image.get("t_ns") {
                Some(AttributeValue::N(n)) => n.parse::<i128>().ok(),
                _ => None,
            };
            let (Some(written), Some(phase), Some(table), Some(pk)) =
                (written, text("phase").as_deref().and_then(Phase::parse), text("tbl"), text("pk"))
            else {
                continue;
            };
            let latency = Duration::from_nanos(u64::try_from(now.saturating_sub(written)).unwrap_or(0));
            // The receiver only goes away when the benchmark is over.
            let _ = self.samples.send(Sample { setting: self.setting, phase, key: format!("{table}/{pk}"), latency });
        }
        checkpointer
            .checkpoint()
            .await
            .map_err(|e| ProcessorError::new("checkpoint after the batch failed").with_source(e))
    }
}

fn dynamodb_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(kcl_adapter::local::REGION))
        .credentials_provider(Credentials::new("local", "local", None, None, "cost-bench"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

fn streams_client(endpoint: &str) -> aws_sdk_dynamodbstreams::Client {
    use aws_sdk_dynamodbstreams::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodbstreams::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(kcl_adapter::local::REGION))
        .credentials_provider(Credentials::new("local", "local", None, None, "cost-bench"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_dynamodbstreams::Client::from_conf(config)
}

/// One worker of a fleet, with the proxy that counts its requests.
struct Member {
    proxy: Proxy,
    handle: WorkerHandle,
    task: JoinHandle<Result<(), WorkerError>>,
}

/// The workers of one setting on one lease table and the tables they read.
struct Fleet {
    setting: Setting,
    tables: Vec<String>,
    members: Vec<Member>,
}

impl Fleet {
    async fn start(
        local: &DynamoDbLocal,
        setting: Setting,
        tables: usize,
        workers: usize,
        samples: &mpsc::UnboundedSender<Sample>,
    ) -> Result<Fleet, BoxError> {
        let direct = local.dynamodb_client();
        let upstream = SocketAddr::from(([127, 0, 0, 1], local.port()));
        let app = unique_name(&format!("cost-{}", setting.key().replace('_', "-")));
        DynamoLeaseStore::new(direct.clone(), &app).ensure_table(&TableOptions::default()).await?;
        let mut names = Vec::new();
        for i in 0..tables {
            let name = format!("{app}-t{i}");
            local.create_stream_table(&name).await;
            names.push(name);
        }
        let mut members = Vec::new();
        for w in 0..workers {
            let proxy = Proxy::start(upstream).await?;
            let streams = streams_client(&proxy.url());
            let mut sources = Vec::new();
            for name in &names {
                sources.push((name.clone(), DynamoStreamsSource::from_table(&direct, streams.clone(), name).await?));
            }
            let store = DynamoLeaseStore::new(dynamodb_client(&proxy.url()), &app);
            let config = setting.config(&app, &format!("{}-w{w:02}", setting.key()))?;
            let tx = samples.clone();
            let factory = move |_: &ShardId| LatencyProbe { setting, samples: tx.clone() };
            let worker = Worker::new(config, MultiStream::new(sources)?, store, factory, &prometheus::Registry::new())?;
            let handle = worker.handle();
            let task = tokio::spawn(worker.run());
            members.push(Member { proxy, handle, task });
        }
        Ok(Fleet { setting, tables: names, members })
    }

    fn counts(&self) -> Vec<Counts> {
        self.members.iter().map(|m| m.proxy.counts()).collect()
    }

    fn leases(&self) -> Vec<usize> {
        self.members.iter().map(|m| m.handle.status().shards.len()).collect()
    }

    fn balanced(&self) -> bool {
        let leases = self.leases();
        let target = self.tables.len().div_ceil(self.members.len().max(1));
        leases.iter().sum::<usize>() == self.tables.len() && leases.iter().all(|&l| l <= target)
    }

    async fn shutdown(self) -> Result<(), BoxError> {
        let mut stops = JoinSet::new();
        for m in &self.members {
            let handle = m.handle.clone();
            stops.spawn(async move { handle.shutdown(SHUTDOWN_DEADLINE).await });
        }
        while stops.join_next().await.is_some() {}
        for m in self.members {
            m.task.await.map_err(|e| format!("worker task: {e}"))??;
        }
        Ok(())
    }
}

/// Counts of each worker of a fleet over one window.
struct Window {
    per_worker: Vec<Counts>,
    minutes: f64,
}

impl Window {
    fn between(before: &[Counts], after: &[Counts], elapsed: Duration) -> Window {
        let per_worker = after.iter().zip(before).map(|(a, b)| a.since(b)).collect();
        Window { per_worker, minutes: elapsed.as_secs_f64() / 60.0 }
    }

    fn total(&self) -> Counts {
        let mut total = Counts::default();
        for c in &self.per_worker {
            total.add(c);
        }
        total
    }

    fn workers(&self) -> f64 {
        self.per_worker.len().max(1) as f64
    }

    /// Per worker per minute, of `f` of the total.
    fn rate(&self, f: impl Fn(&Counts) -> u64) -> f64 {
        f(&self.total()) as f64 / self.workers() / self.minutes
    }

    fn units(&self) -> Units {
        let t = self.total();
        Units {
            write: t.lease_table_writes() as f64,
            read: t.lease_table_read_units(),
            streams_read: t.get_records as f64,
        }
    }
}

/// Writes one change to `table`, stamped with `t_ns` just before its PutItem.
async fn put(client: &aws_sdk_dynamodb::Client, table: &str, phase: Phase, pk: &str) -> Result<(), BoxError> {
    let t_ns = unix_nanos(SystemTime::now());
    client
        .put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(pk.to_owned()))
        .item("tbl", AttributeValue::S(table.to_owned()))
        .item("phase", AttributeValue::S(phase.as_str().to_owned()))
        .item("t_ns", AttributeValue::N(t_ns.to_string()))
        .send()
        .await
        .map_err(|e| format!("PutItem {pk} into {table}: {e:?}"))?;
    Ok(())
}

/// What the processors have seen: first latency of each `(setting, phase, table/pk)`.
#[derive(Default)]
struct Seen {
    samples: HashMap<(Setting, Phase), BTreeMap<String, Duration>>,
}

impl Seen {
    fn take(&mut self, rx: &mut mpsc::UnboundedReceiver<Sample>) {
        while let Ok(s) = rx.try_recv() {
            self.samples.entry((s.setting, s.phase)).or_default().entry(s.key).or_insert(s.latency);
        }
    }

    fn count(&self, setting: Setting, phase: Phase) -> usize {
        self.samples.get(&(setting, phase)).map_or(0, BTreeMap::len)
    }

    /// Waits until `want` of each setting's `phase` samples arrived, or `timeout`.
    async fn wait(&mut self, rx: &mut mpsc::UnboundedReceiver<Sample>, phase: Phase, want: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.take(rx);
            let done = [Setting::KclStyle, Setting::NewDefaults].iter().all(|&s| self.count(s, phase) >= want);
            if done || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn sorted(&self, setting: Setting, phase: Phase) -> Vec<Duration> {
        let mut v: Vec<Duration> =
            self.samples.get(&(setting, phase)).map(|m| m.values().copied().collect()).unwrap_or_default();
        v.sort();
        v
    }
}

#[tokio::main]
async fn main() {
    init_logging();
    if let Err(e) = run().await {
        eprintln!("cost_bench: FAILED: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), BoxError> {
    let tables = usize::try_from(env_u64("COST_BENCH_TABLES", 9)?)?;
    let workers = usize::try_from(env_u64("COST_BENCH_WORKERS", 3)?)?;
    let active = Duration::from_secs(env_u64("COST_BENCH_ACTIVE_SECS", 60)?);
    let idle = Duration::from_secs(env_u64("COST_BENCH_IDLE_SECS", 120)?);
    let probe_rounds = env_u64("COST_BENCH_PROBE_ROUNDS", 2)?;
    let fleet_window = Duration::from_secs(env_u64("COST_BENCH_FLEET_SECS", 60)?);
    if tables == 0 || workers == 0 || active.is_zero() || idle <= IDLE_RAMP || fleet_window.is_zero() {
        return Err(format!(
            "tables, workers, active and fleet seconds must be positive, idle more than {IDLE_RAMP:?}"
        )
        .into());
    }
    let started = Instant::now();
    eprintln!("cost_bench: starting DynamoDB Local");
    let local = Arc::new(DynamoDbLocal::start()?);
    let direct = local.dynamodb_client();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let settings = [Setting::KclStyle, Setting::NewDefaults];
    let mut fleets = Vec::new();
    for setting in settings {
        fleets.push(Fleet::start(&local, setting, tables, workers, &tx).await?);
    }
    let all_tables: Vec<String> = fleets.iter().flat_map(|f| f.tables.clone()).collect();
    eprintln!("cost_bench: {} fleets of {workers} workers on {tables} tables each; warming up", fleets.len());

    // Warm-up: a change a second per table until every table's changes arrive and both
    // fleets hold every lease, balanced.
    let mut seen = Seen::default();
    let warm_deadline = Instant::now() + WARMUP_TIMEOUT;
    let mut round = 0u64;
    loop {
        for table in &all_tables {
            put(&direct, table, Phase::Warmup, &format!("warmup-{round}")).await?;
        }
        round += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        seen.take(&mut rx);
        let tables_seen = |setting: Setting| {
            seen.samples.get(&(setting, Phase::Warmup)).map_or(0, |m| {
                let mut t: Vec<&str> = m.keys().filter_map(|k| k.split('/').next()).collect();
                t.dedup();
                t.len()
            })
        };
        let ready = fleets.iter().all(|f| f.balanced() && tables_seen(f.setting) == tables);
        if ready {
            break;
        }
        if Instant::now() >= warm_deadline {
            let leases: Vec<Vec<usize>> = fleets.iter().map(Fleet::leases).collect();
            return Err(format!("not warm after {WARMUP_TIMEOUT:?}: leases per worker {leases:?}").into());
        }
    }
    let warm_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Active: one change a second per table, the writes spread over the second.
    eprintln!("cost_bench: active for {active:?}");
    let changes = active.as_secs();
    let before = fleets.iter().map(Fleet::counts).collect::<Vec<_>>();
    let active_started = Instant::now();
    let mut writers = JoinSet::new();
    for (i, table) in all_tables.iter().enumerate() {
        let (client, table) = (direct.clone(), table.clone());
        let offset = Duration::from_millis(1000) * u32::try_from(i)? / u32::try_from(all_tables.len())?;
        writers.spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for n in 0..changes {
                tick.tick().await;
                put(&client, &table, Phase::Active, &format!("active-{n}")).await?;
            }
            Ok::<(), BoxError>(())
        });
    }
    while let Some(done) = writers.join_next().await {
        done??;
    }
    let want = tables * usize::try_from(changes)?;
    seen.wait(&mut rx, Phase::Active, want, DRAIN_TIMEOUT).await;
    let active_elapsed = active_started.elapsed();
    let after = fleets.iter().map(Fleet::counts).collect::<Vec<_>>();
    let active_windows: Vec<Window> =
        before.iter().zip(&after).map(|(b, a)| Window::between(b, a, active_elapsed)).collect();

    // Idle: nothing written; counted after the ramp.
    eprintln!("cost_bench: idle for {idle:?}");
    tokio::time::sleep(IDLE_RAMP).await;
    let before = fleets.iter().map(Fleet::counts).collect::<Vec<_>>();
    let idle_started = Instant::now();
    tokio::time::sleep(idle - IDLE_RAMP).await;
    let idle_elapsed = idle_started.elapsed();
    let after = fleets.iter().map(Fleet::counts).collect::<Vec<_>>();
    let idle_windows: Vec<Window> =
        before.iter().zip(&after).map(|(b, a)| Window::between(b, a, idle_elapsed)).collect();
    let leases: Vec<Vec<usize>> = fleets.iter().map(Fleet::leases).collect();

    // After-idle probes: one change per table per round.
    for r in 0..probe_rounds {
        if r > 0 {
            tokio::time::sleep(PROBE_GAP).await;
        }
        eprintln!("cost_bench: after-idle probe round {}", r + 1);
        // Table i of each setting at i/tables of the longest wait: the probes meet the idle
        // polls at every phase (the shards went idle together, so their polls are in step).
        let probe_started = tokio::time::Instant::now();
        for (i, table) in all_tables.iter().enumerate() {
            let offset = DEFAULT_IDLE_WAIT_MAX * u32::try_from(i % tables)? / u32::try_from(tables)?;
            tokio::time::sleep_until(probe_started + offset).await;
            put(&direct, table, Phase::Probe, &format!("probe-{r}")).await?;
        }
        let want = tables * usize::try_from(r + 1)?;
        seen.wait(&mut rx, Phase::Probe, want, DRAIN_TIMEOUT).await;
    }
    for fleet in fleets {
        fleet.shutdown().await?;
    }

    // Fleet size: lease-table reads per worker per minute for 3 and for 30 workers.
    eprintln!("cost_bench: fleet-size phase with {FLEET_SIZES:?} workers, {fleet_window:?}");
    let (fleet_tx, _fleet_rx) = mpsc::unbounded_channel();
    let mut size_fleets = Vec::new();
    for n in FLEET_SIZES {
        size_fleets.push(Fleet::start(&local, Setting::NewDefaults, 1, n, &fleet_tx).await?);
    }
    tokio::time::sleep(FLEET_WARMUP).await;
    let before = size_fleets.iter().map(Fleet::counts).collect::<Vec<_>>();
    let size_started = Instant::now();
    tokio::time::sleep(fleet_window).await;
    let size_elapsed = size_started.elapsed();
    let after = size_fleets.iter().map(Fleet::counts).collect::<Vec<_>>();
    let size_windows: Vec<Window> =
        before.iter().zip(&after).map(|(b, a)| Window::between(b, a, size_elapsed)).collect();
    for fleet in size_fleets {
        fleet.shutdown().await?;
    }

    let report = Report {
        tables,
        workers,
        warm_s,
        active: active_windows,
        idle: idle_windows,
        leases,
        seen,
        sizes: size_windows,
        total_s: started.elapsed().as_secs_f64(),
    };
    report.print();
    Ok(())
}
