//! A fleet worker: one process of a fleet (for example an ECS service) consuming a DynamoDB
//! stream with `kcl-core`, sharing the shards with every other process of the same
//! application through the lease table.
//!
//! ```text
//! worker --table orders --application-name orders-archiver --processor jsonl --output /tmp/orders.jsonl
//! worker --table orders --application-name orders-replica --processor replicate --target-table orders-copy
//! worker --table orders --table payments --table refunds --application-name audit --output /tmp/audit.jsonl
//! ```
//!
//! With several `--table`s (or `--stream-arn`s) one lease table holds the leases of every
//! stream, keyed `{identifier}:{shardId}` with the Java DynamoDB Streams adapter's
//! multi-stream identifier of each stream (`kcl_adapter::streams::kcl_stream_identifier`), and
//! the fleet balances them together; streams are added or removed by restarting with another
//! list (a removed stream's leases are left as they are). The `replicate` processor takes one
//! table.
//!
//! Every flag has an environment variable (`KCL_TABLE`, `KCL_APPLICATION_NAME`, …; see
//! `--help`). Credentials, region and endpoint come from the AWS default chain
//! (`AWS_REGION`, `AWS_ENDPOINT_URL`, the ECS task role, …); `--endpoint-url` overrides the
//! endpoint for both DynamoDB and DynamoDB Streams (DynamoDB Local).
//!
//! Failure policy: `--max-retry-attempts`, `--bisect-on-failure` and `--processing-timeout-ms`
//! set kcl-core's; with `--dead-letter-queue-url`, records whose retries are exhausted go to
//! that SQS queue (checked at start; `--sqs-endpoint-url` for moto server).
//!
//! It serves `/metrics`, `/healthz` and `/status` on `--metrics-addr` and prints the bound
//! address on stdout as one line `METRICS http://ADDR` (logs go to stderr). With
//! `--emf-interval-secs N` it also prints, every N seconds, one CloudWatch Embedded Metric Format
//! line on stdout with the figures an autoscaler needs (`kcl_worker::emf`). On SIGTERM or
//! SIGINT it stops gracefully: processors get `shutdown_requested`, every shard is
//! checkpointed and its lease released, so other workers continue at once. Exit codes: 0 after
//! a graceful stop, 1 when the worker cannot start (the message names the problem and the
//! fix), 2 for a usage error (clap), 3 when the shutdown deadline passed or a second signal
//! cut the shutdown short (unreleased leases then expire normally).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{ArgGroup, Parser, ValueEnum};
use kcl_adapter::builder::stop_on_signals;
use kcl_adapter::{ChangeRecord, DynamoLeaseStore, DynamoStreamsSource, SqsDeadLetterSink, TableOptions};
use kcl_core::config::{DEFAULT_IDLE_WAIT_MAX, DEFAULT_IDLE_WAIT_MIN};
use kcl_core::{
    CheckpointPolicy, Config, DeadLetterSink, LeaseRenewal, MultiStreamSink, RecordProcessorFactory, ShardId,
    ShutdownOutcome, StreamSource, Worker, WorkerError,
};
use kcl_worker::identity::default_worker_id;
use kcl_worker::jsonl::{JsonlOptions, JsonlSink};
use kcl_worker::replicate::{ReplicateProcessor, Replicator};
use kcl_worker::streams::{Streams, StreamsError, sdk_config};
use kcl_worker::{emf, http};
use tokio_util::sync::CancellationToken;

/// Which processor handles the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ProcessorKind {
    /// Append every record as one JSON line to `--output`.
    Jsonl,
    /// Replicate every change into `--target-table`, idempotently.
    Replicate,
}

/// What the worker renews to keep its leases (kcl-core's `LeaseRenewal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Renewal {
    /// Only the worker's heartbeat (one write per worker every lease duration / 3).
    Heartbeat,
    /// Every held lease too, as Java KCL does (one write per lease every lease duration / 3).
    EveryLease,
}

/// When checkpoints are written (kcl-core's `CheckpointPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CheckpointPolicyArg {
    /// Each checkpoint the processor asks for is written at once.
    Processor,
    /// Automatic after each processed batch, written at most every `--checkpoint-interval-ms`
    /// (and always at shard end, on a graceful stop and after a dead letter).
    Interval,
}

/// Consumes a DynamoDB stream as one worker of a fleet.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
#[command(group(ArgGroup::new("stream").required(true).multiple(true).args(["table", "stream_arn"])))]
struct Args {
    /// The source table; its latest stream is read. Repeat it (or list tables separated by
    /// commas in `KCL_TABLE`) to consume several tables with one lease table.
    #[arg(long, env = "KCL_TABLE", value_delimiter = ',')]
    table: Vec<String>,
    /// A stream to read, instead of or besides `--table`s; repeatable like `--table`.
    #[arg(long, env = "KCL_STREAM_ARN", value_delimiter = ',')]
    stream_arn: Vec<String>,
    /// The consumer application's name; it is also the lease table's name.
    #[arg(long, env = "KCL_APPLICATION_NAME")]
    application_name: String,
    /// This worker's id, unique in the fleet. Default: the ECS task id (`ECS_TASK_ID`, or
    /// parsed from `ECS_CONTAINER_METADATA_URI_V4`), else `hostname-pid`.
    #[arg(long, env = "KCL_WORKER_ID")]
    worker_id: Option<String>,
    /// Endpoint for DynamoDB and DynamoDB Streams (DynamoDB Local). Default: the AWS chain
    /// (`AWS_ENDPOINT_URL`, else the region's endpoints).
    #[arg(long, env = "KCL_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// The AWS region. Default: the AWS chain (`AWS_REGION`, profile, ECS/EC2 metadata).
    #[arg(long, env = "KCL_REGION")]
    region: Option<String>,
    /// Where to serve `/metrics`, `/healthz` and `/status`; port 0 picks a free port.
    #[arg(long, env = "KCL_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,
    /// Lease duration in milliseconds. Default: kcl-core's (10 s).
    #[arg(long, env = "KCL_LEASE_DURATION_MS")]
    lease_duration_ms: Option<u64>,
    /// Print the autoscaling figures (max iterator age, leases held) as one CloudWatch Embedded
    /// Metric Format line on stdout this often, in seconds. Default: off.
    #[arg(long, env = "KCL_EMF_INTERVAL_SECS")]
    emf_interval_secs: Option<u64>,
    /// How long a graceful shutdown may take, in milliseconds (ECS kills after 30 s).
    #[arg(long, env = "KCL_SHUTDOWN_TIMEOUT_MS", default_value_t = 25_000)]
    shutdown_timeout_ms: u64,
    /// Create the lease table when it does not exist (on-demand billing).
    #[arg(long, env = "KCL_CREATE_LEASE_TABLE", default_value_t = true, action = clap::ArgAction::Set)]
    create_lease_table: bool,
    /// What to do with the records.
    #[arg(long, env = "KCL_PROCESSOR", value_enum, default_value_t = ProcessorKind::Jsonl)]
    processor: ProcessorKind,
    /// The file the `jsonl` processor appends to.
    #[arg(long, env = "KCL_OUTPUT")]
    output: Option<PathBuf>,
    /// Sync the `jsonl` output to disk before each checkpoint.
    #[arg(long, env = "KCL_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    fsync: bool,
    /// Wait this long after writing each `jsonl` batch, before checkpointing it: simulates a
    /// slow processor (tests).
    #[arg(long, env = "KCL_JSONL_DELAY_MS", default_value_t = 0)]
    jsonl_delay_ms: u64,
    /// The table the `replicate` processor writes to (same key schema as the source).
    #[arg(long, env = "KCL_TARGET_TABLE")]
    target_table: Option<String>,
    /// Retries of a failing batch before its records are dead-lettered (or skipped, without
    /// `--dead-letter-queue-url`). Default: retry until it succeeds.
    #[arg(long, env = "KCL_MAX_RETRY_ATTEMPTS")]
    max_retry_attempts: Option<u32>,
    /// Split a failing batch in halves down to single records, so that only the bad records
    /// are retried and dead-lettered.
    #[arg(long, env = "KCL_BISECT_ON_FAILURE", default_value_t = false, action = clap::ArgAction::Set)]
    bisect_on_failure: bool,
    /// Longest one `process_records` call may take, in milliseconds; it then counts as a
    /// failure. Default: kcl-core's (5 min).
    #[arg(long, env = "KCL_PROCESSING_TIMEOUT_MS")]
    processing_timeout_ms: Option<u64>,
    /// Shortest wait after an empty read, in milliseconds, while the shard had records within
    /// the active window. Default: kcl-core's (200 ms).
    #[arg(long, env = "KCL_IDLE_WAIT_MIN_MS")]
    idle_wait_min_ms: Option<u64>,
    /// Longest wait after an empty read, in milliseconds, reached by a shard that stays empty
    /// (an idle shard costs 3,600,000 / this reads an hour). Default: kcl-core's (8 s).
    #[arg(long, env = "KCL_IDLE_WAIT_MAX_MS")]
    idle_wait_max_ms: Option<u64>,
    /// How long after a shard's last record the wait stays at its minimum, in milliseconds.
    /// Default: kcl-core's (10 s).
    #[arg(long, env = "KCL_IDLE_ACTIVE_WINDOW_MS")]
    idle_active_window_ms: Option<u64>,
    /// What is renewed to keep leases: `heartbeat` (default) or `every-lease` (Java KCL's way,
    /// for a fleet still running workers that judge leases by their counters).
    #[arg(long, env = "KCL_LEASE_RENEWAL", value_enum, default_value_t = Renewal::Heartbeat)]
    lease_renewal: Renewal,
    /// When checkpoints are written. Default: kcl-core's (`interval`).
    #[arg(long, env = "KCL_CHECKPOINT_POLICY", value_enum)]
    checkpoint_policy: Option<CheckpointPolicyArg>,
    /// Under `--checkpoint-policy interval`, the shortest time between two checkpoint writes
    /// of a shard, in milliseconds; after a crash up to this much is processed again.
    /// Default: kcl-core's (5 s).
    #[arg(long, visible_alias = "checkpoint-interval", env = "KCL_CHECKPOINT_INTERVAL_MS")]
    checkpoint_interval_ms: Option<u64>,
    /// Lanes per shard (Lambda: `ParallelizationFactor`), 1 to 10: a shard's records are
    /// split by item key into this many lanes processed concurrently, each item's changes in
    /// order. Default: 1.
    #[arg(long, env = "KCL_PARALLELISM")]
    parallelism: Option<usize>,
    /// Most records per batch (Lambda: `BatchSize`), 1 to 10,000. Default: 1000.
    #[arg(long, env = "KCL_BATCH_SIZE")]
    batch_size: Option<usize>,
    /// How long records are gathered into a batch before delivery, in milliseconds (Lambda:
    /// `MaximumBatchingWindowInSeconds`), at most 300,000. Default: none.
    #[arg(long, env = "KCL_BATCHING_WINDOW_MS")]
    batching_window_ms: Option<u64>,
    /// Tumbling windows of this many seconds, 1 to 900 (Lambda: `TumblingWindowInSeconds`):
    /// the processor carries a state across the batches of a window, stored with the
    /// checkpoint, and gets a final call at the window's end. Needs `--parallelism 1` and
    /// `--checkpoint-policy interval`. Default: none.
    #[arg(long, env = "KCL_TUMBLING_WINDOW_SECS")]
    tumbling_window_secs: Option<u64>,
    /// Event filter in Lambda's `FilterCriteria` JSON syntax (one pattern, an array of them,
    /// or `{"Filters": [{"Pattern": "..."}]}`), or `@path` to read it from a file: only
    /// matching changes are processed; the others are counted and checkpointed past.
    #[arg(long, env = "KCL_FILTER")]
    filter: Option<String>,
    /// SQS queue that receives records whose retries are exhausted; checked at start.
    #[arg(long, env = "KCL_DEAD_LETTER_QUEUE_URL")]
    dead_letter_queue_url: Option<String>,
    /// Endpoint for SQS (moto server); `--endpoint-url` does not apply to SQS. Default: the
    /// AWS chain (`AWS_ENDPOINT_URL_SQS`, else the region's endpoint).
    #[arg(long, env = "KCL_SQS_ENDPOINT_URL")]
    sqs_endpoint_url: Option<String>,
}

/// `--filter`: the JSON itself, or `@path` to a file holding it.
fn parse_filter(arg: &str) -> Result<kcl_core::FilterCriteria, String> {
    let (text, from) = match arg.strip_prefix('@') {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("--filter: cannot read {path}: {e}"))?;
            (text, format!(" (in {path})"))
        }
        None => (arg.to_owned(), String::new()),
    };
    kcl_core::FilterCriteria::parse(&text)
        .map_err(|e| format!("--filter{from}: {e}; see the README's \"Event filters\" for the syntax"))
}

/// Exit code when the graceful shutdown did not finish in time.
const EXIT_DEADLINE_EXCEEDED: u8 = 3;

/// Why the worker did not start, as printed.
type StartError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            // The messages already carry their causes' text (the SDK's code and message).
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The processor, with its flags checked before any AWS call.
enum Chosen {
    Jsonl(Arc<JsonlSink>),
    Replicate(String),
}

async fn run(args: Args) -> Result<ExitCode, StartError> {
    let worker_id = args.worker_id.clone().unwrap_or_else(default_worker_id);
    let chosen = match args.processor {
        ProcessorKind::Jsonl => {
            let Some(path) = &args.output else {
                return Err("--processor jsonl needs --output PATH (or KCL_OUTPUT)".into());
            };
            let options =
                JsonlOptions { fsync: args.fsync, delay_before_checkpoint: Duration::from_millis(args.jsonl_delay_ms) };
            let sink = JsonlSink::open(path, worker_id.clone(), options)
                .await
                .map_err(|e| format!("cannot open {} for appending: {e}", path.display()))?;
            Chosen::Jsonl(sink)
        }
        ProcessorKind::Replicate => match &args.target_table {
            Some(target) => Chosen::Replicate(target.clone()),
            None => return Err("--processor replicate needs --target-table NAME (or KCL_TARGET_TABLE)".into()),
        },
    };
    let mut config = Config::builder(&args.application_name).worker_id(&worker_id);
    if let Some(ms) = args.lease_duration_ms {
        config = config.lease_duration(Duration::from_millis(ms));
    }
    if let Some(n) = args.max_retry_attempts {
        config = config.max_retry_attempts(n);
    }
    if let Some(ms) = args.processing_timeout_ms {
        config = config.processing_timeout(Some(Duration::from_millis(ms)));
    }
    config = config.bisect_on_failure(args.bisect_on_failure);
    if args.idle_wait_min_ms.is_some() || args.idle_wait_max_ms.is_some() {
        let min = args.idle_wait_min_ms.map_or(DEFAULT_IDLE_WAIT_MIN, Duration::from_millis);
        let max = args.idle_wait_max_ms.map_or(DEFAULT_IDLE_WAIT_MAX, Duration::from_millis);
        config = config.idle_wait(min, max);
    }
    if let Some(ms) = args.idle_active_window_ms {
        config = config.idle_active_window(Duration::from_millis(ms));
    }
    config = config.lease_renewal(match args.lease_renewal {
        Renewal::Heartbeat => LeaseRenewal::Heartbeat,
        Renewal::EveryLease => LeaseRenewal::EveryLease,
    });
    if let Some(policy) = args.checkpoint_policy {
        config = config.checkpoint_policy(match policy {
            CheckpointPolicyArg::Processor => CheckpointPolicy::Processor,
            CheckpointPolicyArg::Interval => CheckpointPolicy::Interval,
        });
    }
    if let Some(ms) = args.checkpoint_interval_ms {
        config = config.checkpoint_interval(Duration::from_millis(ms));
    }
    if let Some(n) = args.parallelism {
        config = config.parallelism(n);
    }
    if let Some(n) = args.batch_size {
        config = config.batch_size(n);
    }
    if let Some(ms) = args.batching_window_ms {
        config = config.batching_window(Duration::from_millis(ms));
    }
    if let Some(secs) = args.tumbling_window_secs {
        config = config.tumbling_window(Duration::from_secs(secs));
    }
    if let Some(filter) = &args.filter {
        config = config.filter(parse_filter(filter)?);
    }
    let config = config.build().map_err(WorkerError::Config)?;

    let sdk = sdk_config(args.region.as_deref(), args.endpoint_url.as_deref()).await?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);

    // Checked before anything is created.
    let opened = Streams::open(&dynamodb, &streams, &args.table, &args.stream_arn).await.map_err(|e| match e {
        StreamsError::Stream(e) => StartError::from(WorkerError::Stream(e)),
        other => other.into(),
    })?;
    let arns: Vec<String> = opened.arns().into_iter().map(str::to_owned).collect();
    if matches!(opened, Streams::Several(..)) && args.processor == ProcessorKind::Replicate {
        return Err("--processor replicate copies one table into --target-table: give one --table (run one worker \
                    per table to replicate several)"
            .into());
    }
    let store = DynamoLeaseStore::new(dynamodb.clone(), &args.application_name);
    if args.create_lease_table {
        store.ensure_table(&TableOptions::default()).await.map_err(WorkerError::LeaseTable)?;
    }
    let registry = prometheus::Registry::new();
    tracing::info!(worker = %worker_id, streams = ?arns, lease_table = %args.application_name, "starting");
    // Several streams: one lease table, keys in the Java adapter's multi-stream layout.
    let (source, described) = match opened {
        Streams::One(source) => {
            return serve_one(&args, &sdk, &dynamodb, config, source, store, chosen, registry).await;
        }
        Streams::Several(source, described) => (source, described),
    };
    let dead_letter = match &args.dead_letter_queue_url {
        Some(url) => {
            let mut sinks = Vec::new();
            for (name, arn) in described {
                sinks.push((name, dead_letter_sink(&args, &sdk, url, &arn).await?));
            }
            Some(MultiStreamSink::new(sinks)?)
        }
        None => None,
    };
    let Chosen::Jsonl(sink) = chosen else { return Err("--processor replicate takes one table".into()) };
    let factory = move |shard: &ShardId| sink.processor(shard);
    serve(&args, config, source, store, factory, dead_letter, registry).await
}

/// [`run`] for one stream: plain shard ids as lease keys (Java KCL's single-stream layout).
#[allow(clippy::too_many_arguments)]
async fn serve_one(
    args: &Args,
    sdk: &aws_config::SdkConfig,
    dynamodb: &aws_sdk_dynamodb::Client,
    config: Config,
    source: DynamoStreamsSource,
    store: DynamoLeaseStore,
    chosen: Chosen,
    registry: prometheus::Registry,
) -> Result<ExitCode, StartError> {
    if let Chosen::Replicate(target) = &chosen {
        let streams = aws_sdk_dynamodbstreams::Client::new(sdk);
        check_replication(dynamodb, &streams, source.stream_arn(), target).await?;
    }
    let dead_letter = match &args.dead_letter_queue_url {
        Some(url) => Some(dead_letter_sink(args, sdk, url, source.stream_arn()).await?),
        None => None,
    };
    match chosen {
        Chosen::Jsonl(sink) => {
            let factory = move |shard: &ShardId| sink.processor(shard);
            serve(args, config, source, store, factory, dead_letter, registry).await
        }
        Chosen::Replicate(target) => {
            let replicator = Arc::new(Replicator::new(dynamodb.clone(), target));
            replicator.register_metrics(&registry)?;
            let factory = move |_: &ShardId| ReplicateProcessor::new(replicator.clone());
            serve(args, config, source, store, factory, dead_letter, registry).await
        }
    }
}

/// The SQS dead-letter destination, checked: the queue exists and is accessible.
async fn dead_letter_sink(
    args: &Args,
    sdk: &aws_config::SdkConfig,
    queue_url: &str,
    stream_arn: &str,
) -> Result<SqsDeadLetterSink, StartError> {
    let mut sqs = aws_sdk_sqs::config::Builder::from(sdk);
    if let Some(endpoint) = &args.sqs_endpoint_url {
        sqs = sqs.endpoint_url(endpoint);
    } else if args.endpoint_url.is_some() && std::env::var_os("AWS_ENDPOINT_URL_SQS").is_none() {
        // `--endpoint-url` is DynamoDB's (DynamoDB Local), not SQS's: use the region's endpoint.
        sqs.set_endpoint_url(None);
    }
    let sink = SqsDeadLetterSink::new(aws_sdk_sqs::Client::from_conf(sqs.build()), queue_url, stream_arn);
    sink.verify().await.map_err(|e| format!("--dead-letter-queue-url (KCL_DEAD_LETTER_QUEUE_URL): {e}"))?;
    tracing::info!(queue = queue_url, "records whose retries are exhausted go to the dead-letter queue");
    Ok(sink)
}

/// Runs the worker with its HTTP endpoints until a signal stops it.
async fn serve<S, F, D>(
    args: &Args,
    config: Config,
    source: S,
    store: DynamoLeaseStore,
    factory: F,
    dead_letter: Option<D>,
    registry: prometheus::Registry,
) -> Result<ExitCode, StartError>
where
    S: StreamSource<Record = ChangeRecord>,
    F: RecordProcessorFactory<ChangeRecord>,
    D: DeadLetterSink<ChangeRecord>,
{
    let worker = Worker::new(config, source, store, factory, &registry)?;
    match dead_letter {
        Some(sink) => drive(args, worker.with_dead_letter(sink), registry).await,
        None => drive(args, worker, registry).await,
    }
}

/// [`serve`] with the worker built.
async fn drive<S, F, D>(
    args: &Args,
    worker: Worker<S, DynamoLeaseStore, F, D>,
    registry: prometheus::Registry,
) -> Result<ExitCode, StartError>
where
    S: StreamSource<Record = ChangeRecord>,
    F: RecordProcessorFactory<ChangeRecord>,
    D: DeadLetterSink<ChangeRecord>,
{
    let handle = worker.handle();
    let stopping = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|e| format!("cannot listen on {} for /metrics (--metrics-addr): {e}", args.metrics_addr))?;
    let bound = listener.local_addr()?;
    println!("METRICS http://{bound}");
    let server_stop = CancellationToken::new();
    let app = http::router(registry, stopping.clone(), handle.clone());
    let stop = server_stop.clone();
    let server = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /status");

    let emf = args.emf_interval_secs.filter(|s| *s > 0).map(|secs| {
        let (handle, application) = (handle.clone(), args.application_name.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(secs));
            loop {
                tick.tick().await;
                let status = handle.status();
                let figures = emf::Figures::of(&status);
                println!("{}", emf::line(&application, status.worker_id.as_str(), figures, SystemTime::now()));
            }
        })
    });
    let deadline = Duration::from_millis(args.shutdown_timeout_ms);
    let signals = tokio::spawn(stop_on_signals(handle, deadline, move |_| stopping.cancel()));
    let result = worker.run().await;
    let outcome = if signals.is_finished() || result.is_ok() {
        signals.await.ok().flatten()
    } else {
        signals.abort();
        None
    };
    if let Some(emf) = emf {
        emf.abort();
    }
    server_stop.cancel();
    let _ = server.await;
    result?;
    Ok(match outcome {
        Some(ShutdownOutcome::DeadlineExceeded) => {
            tracing::warn!(?deadline, "shutdown deadline passed; unreleased leases will expire");
            ExitCode::from(EXIT_DEADLINE_EXCEEDED)
        }
        _ => {
            tracing::info!("stopped gracefully");
            ExitCode::SUCCESS
        }
    })
}

/// Checks before replicating: the stream carries new images and the target table exists with
/// the source's key schema.
async fn check_replication(
    dynamodb: &aws_sdk_dynamodb::Client,
    streams: &aws_sdk_dynamodbstreams::Client,
    stream_arn: &str,
    target: &str,
) -> Result<(), StartError> {
    use aws_sdk_dynamodbstreams::types::StreamViewType;
    let described = streams.describe_stream().stream_arn(stream_arn).limit(1).send().await.map_err(|e| {
        format!("DescribeStream {stream_arn}: {}", aws_sdk_dynamodbstreams::error::DisplayErrorContext(e))
    })?;
    let Some(stream) = described.stream_description else {
        return Err(format!("DescribeStream {stream_arn} returned no description").into());
    };
    match stream.stream_view_type() {
        Some(StreamViewType::NewImage | StreamViewType::NewAndOldImages) => {}
        other => {
            let table = stream.table_name().unwrap_or("the source table");
            return Err(format!(
                "the stream of {table} has view type {}: replication needs NEW_IMAGE or NEW_AND_OLD_IMAGES (a \
                 table's view type cannot change: disable the stream and enable it again with \
                 StreamViewType=NEW_AND_OLD_IMAGES)",
                other.map_or("(none)", |v| v.as_str())
            )
            .into());
        }
    }
    let source_keys: Vec<String> = stream.key_schema().iter().map(|k| k.attribute_name().to_owned()).collect();
    let table = match dynamodb.describe_table().table_name(target).send().await {
        Ok(out) => out.table,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
            return Err(format!(
                "target table {target} does not exist: create it with the source's key schema ({})",
                source_keys.join(", ")
            )
            .into());
        }
        Err(e) => {
            return Err(format!("DescribeTable {target}: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)).into());
        }
    };
    let target_keys: Vec<String> =
        table.iter().flat_map(|t| t.key_schema()).map(|k| k.attribute_name().to_owned()).collect();
    if !source_keys.is_empty() && source_keys != target_keys {
        return Err(format!(
            "target table {target} has key ({}) but the source has ({}): replication needs the same key schema",
            target_keys.join(", "),
            source_keys.join(", ")
        )
        .into());
    }
    Ok(())
}
