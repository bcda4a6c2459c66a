//! [`WorkerBuilder`]: from an `aws_config::SdkConfig`, an application name and a table to a
//! running worker, without the plumbing.
//!
//! ```no_run
//! # use kcl_adapter::{ChangeRecord, WorkerBuilder};
//! # use kcl_core::{Batch, Checkpointer, ProcessorError, RecordProcessor, ShardId};
//! # struct Audit;
//! # impl RecordProcessor<ChangeRecord> for Audit {
//! #     async fn process_records(&mut self, _: &Batch<ChangeRecord>, _: &impl Checkpointer) -> Result<(), ProcessorError> { Ok(()) }
//! # }
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
//! let worker = WorkerBuilder::new(&sdk, "orders-audit").table("orders").create_lease_table().stop_on_signals();
//! let running = worker.start(|_: &ShardId| Audit).await?;
//! running.wait().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Several `.table(..)` (or `.stream_arn(..)`) calls make one worker of several streams with
//! one lease table ([`kcl_core::MultiStream`]).
//!
//! The application name is the single name for the fleet: `Config`'s application name and
//! the lease table's name. Every optional call (a dead-letter queue, a registry, config
//! overrides, lease-table options, a record filter, signal handling) leaves the builder's
//! type as it is, and [`WorkerBuilder::start`] always returns a [`RunningWorker`].
//! Nothing is called on AWS before `start`, which checks everything it can first (the region,
//! the configuration, the table and its stream, the lease table, the dead-letter queue) and
//! fails with an error that names the problem and the fix.

mod signals;

pub use signals::stop_on_signals;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kcl_core::prometheus::Registry;
use kcl_core::{
    Config, ConfigBuilder, DeadLetterError, DeadLetterSink, LeaseStoreErrorKind, MultiStream, MultiStreamSink,
    RecordProcessorFactory, ShutdownOutcome, StreamSource, Worker, WorkerError, WorkerHandle, WorkerStatus,
};
use tokio::task::JoinHandle;

use crate::streams::kcl_stream_identifier;
use crate::{ChangeRecord, DynamoLeaseStore, DynamoStreamsSource, SqsDeadLetterSink, TableOptions};

/// How long a graceful stop after a signal may take by default: 25 s, inside the 30 s that
/// ECS (and Kubernetes) leave between SIGTERM and SIGKILL.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(25);

type Overrides = Box<dyn FnOnce(ConfigBuilder) -> ConfigBuilder + Send>;
type RecordFilter = Arc<dyn Fn(&ChangeRecord) -> bool + Send + Sync>;

/// Why [`WorkerBuilder::start`] or [`RunningWorker::wait`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuilderError {
    /// Neither a table nor a stream ARN was given.
    #[error("no stream to consume: call .table(name) or .stream_arn(arn) on the WorkerBuilder")]
    NoSource,
    /// Several tables or streams were given and one has no multi-stream identifier (a
    /// stream ARN that is not a DynamoDB stream's).
    #[error("{0} is not a DynamoDB stream ARN (arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL)")]
    BadStreamArn(String),
    /// Two of the streams are the same.
    #[error(transparent)]
    Streams(#[from] kcl_core::MultiStreamError),
    /// The lease table does not exist and was not to be created.
    #[error(
        "lease table {0} does not exist: call .create_lease_table() on the WorkerBuilder, or create it \
         beforehand (hash key leaseKey, type S)"
    )]
    NoLeaseTable(String),
    /// The `SdkConfig` has no region.
    #[error("no AWS region is configured: set AWS_REGION, or a region on the SdkConfig given to WorkerBuilder::new")]
    NoRegion,
    /// The worker could not start or failed: the configuration, the stream, the lease table or
    /// the metrics (each message names the fix).
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The dead-letter queue cannot be used.
    #[error("dead-letter queue {queue}: {source}")]
    DeadLetter {
        /// The queue's URL.
        queue: String,
        /// What is wrong with it.
        #[source]
        source: DeadLetterError,
    },
    /// The worker's task panicked or was cancelled (a bug: please report it).
    #[error("the worker's task ended abnormally: {0}")]
    Task(String),
}

/// Builds and starts a worker on DynamoDB Streams with a DynamoDB lease table. See the
/// [module docs](self).
pub struct WorkerBuilder {
    sdk: aws_config::SdkConfig,
    application: String,
    tables: Vec<String>,
    stream_arns: Vec<String>,
    overrides: Vec<Overrides>,
    registry: Option<Registry>,
    dead_letter_queue: Option<String>,
    lease_table: Option<TableOptions>,
    signals: Option<Duration>,
    record_filter: Option<RecordFilter>,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("application", &self.application)
            .field("tables", &self.tables)
            .field("stream_arns", &self.stream_arns)
            .field("overrides", &self.overrides.len())
            .field("dead_letter_queue", &self.dead_letter_queue)
            .field("lease_table", &self.lease_table)
            .field("signals", &self.signals)
            .field("record_filter", &self.record_filter.is_some())
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// A worker of application `application` (also its lease table's name), calling AWS with
    /// `sdk`'s region, credentials and endpoint.
    pub fn new(sdk: &aws_config::SdkConfig, application: impl Into<String>) -> Self {
        Self {
            sdk: sdk.clone(),
            application: application.into(),
            tables: Vec::new(),
            stream_arns: Vec::new(),
            overrides: Vec::new(),
            registry: None,
            dead_letter_queue: None,
            lease_table: None,
            signals: None,
            record_filter: None,
        }
    }

    /// Consumes the latest stream of table `name` (found with `DescribeTable` at start). Call
    /// it (or [`stream_arn`](Self::stream_arn)) more than once to consume several streams with
    /// one lease table: leases are then keyed `{identifier}:{shardId}` with the Java DynamoDB
    /// Streams adapter's multi-stream identifier ([`kcl_stream_identifier`]), and the fleet
    /// balances the leases of all streams together.
    pub fn table(mut self, name: impl Into<String>) -> Self {
        self.tables.push(name.into());
        self
    }

    /// Consumes the stream with this ARN (also a disabled one, until its records expire).
    pub fn stream_arn(mut self, arn: impl Into<String>) -> Self {
        self.stream_arns.push(arn.into());
        self
    }

    /// Changes the configuration: `change` gets `Config::builder(application)` (after any
    /// earlier `configure` calls) and returns it changed, e.g.
    /// `.configure(|c| c.parallelism(4).batch_size(100))`. Checked at start.
    pub fn configure(mut self, change: impl FnOnce(ConfigBuilder) -> ConfigBuilder + Send + 'static) -> Self {
        self.overrides.push(Box::new(change));
        self
    }

    /// Registers the worker's metrics in `registry` (to serve them with the application's
    /// own); by default a registry of the worker's own, see [`RunningWorker::registry`].
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Sends records whose retries are exhausted to this SQS queue (checked at start). The SQS
    /// client uses `sdk`'s settings, its endpoint from `AWS_ENDPOINT_URL_SQS` when set.
    pub fn dead_letter_queue(mut self, queue_url: impl Into<String>) -> Self {
        self.dead_letter_queue = Some(queue_url.into());
        self
    }

    /// Creates the lease table (on demand) at start when it does not exist. Without this (or
    /// [`lease_table_options`](Self::lease_table_options)) `start` fails when it is missing.
    pub fn create_lease_table(self) -> Self {
        self.lease_table_options(TableOptions::default())
    }

    /// Creates the lease table at start when it does not exist, with these options.
    pub fn lease_table_options(mut self, options: TableOptions) -> Self {
        self.lease_table = Some(options);
        self
    }

    /// Stops the worker gracefully on SIGTERM or SIGINT (within
    /// [`DEFAULT_SHUTDOWN_DEADLINE`]); a second signal stops it at once.
    pub fn stop_on_signals(self) -> Self {
        self.stop_on_signals_within(DEFAULT_SHUTDOWN_DEADLINE)
    }

    /// [`stop_on_signals`](Self::stop_on_signals) with another deadline.
    pub fn stop_on_signals_within(mut self, deadline: Duration) -> Self {
        self.signals = Some(deadline);
        self
    }

    /// Delivers only the records for which `keep` is true (see `Worker::with_record_filter`).
    pub fn record_filter(mut self, keep: impl Fn(&ChangeRecord) -> bool + Send + Sync + 'static) -> Self {
        self.record_filter = Some(Arc::new(keep));
        self
    }

    /// Checks everything, then runs the worker in a task of its own, with a processor made by
    /// `factory` for each shard (a closure `|shard: &ShardId| MyProcessor` will do).
    pub async fn start<F>(mut self, factory: F) -> Result<RunningWorker, BuilderError>
    where
        F: RecordProcessorFactory<ChangeRecord>,
    {
        let config = config(&self.application, std::mem::take(&mut self.overrides))?;
        if self.sdk.region().is_none() {
            return Err(BuilderError::NoRegion);
        }
        let dynamodb = aws_sdk_dynamodb::Client::new(&self.sdk);
        let streams = aws_sdk_dynamodbstreams::Client::new(&self.sdk);
        let mut sources = Vec::new();
        for table in &self.tables {
            sources.push(
                DynamoStreamsSource::from_table(&dynamodb, streams.clone(), table)
                    .await
                    .map_err(WorkerError::Stream)?,
            );
        }
        sources.extend(self.stream_arns.iter().map(|arn| DynamoStreamsSource::from_stream_arn(streams.clone(), arn)));
        let stream_arns: Vec<String> = sources.iter().map(|s| s.stream_arn().to_owned()).collect();
        let sources = match <[DynamoStreamsSource; 1]>::try_from(sources) {
            Ok([source]) => Sources::One(source),
            Err(sources) if sources.is_empty() => return Err(BuilderError::NoSource),
            Err(sources) => {
                let mut named = Vec::new();
                for source in sources {
                    let name = kcl_stream_identifier(source.stream_arn())
                        .ok_or_else(|| BuilderError::BadStreamArn(source.stream_arn().to_owned()))?;
                    named.push((name, source));
                }
                let names = named.iter().map(|(n, _)| n.clone()).collect();
                Sources::Several(MultiStream::new(named)?, names)
            }
        };
        let store = DynamoLeaseStore::new(dynamodb, &self.application);
        match &self.lease_table {
            Some(options) => store.ensure_table(options).await.map_err(WorkerError::LeaseTable)?,
            None => store.check_table().await.map_err(|e| match e.kind() {
                LeaseStoreErrorKind::TableNotFound => BuilderError::NoLeaseTable(self.application.clone()),
                _ => BuilderError::Worker(WorkerError::LeaseTable(e)),
            })?,
        }
        let mut dead_letters = Vec::new();
        if let Some(queue) = &self.dead_letter_queue {
            for arn in &stream_arns {
                let sink = SqsDeadLetterSink::new(aws_sdk_sqs::Client::new(&self.sdk), queue, arn);
                if dead_letters.is_empty() {
                    sink.verify().await.map_err(|source| BuilderError::DeadLetter { queue: queue.clone(), source })?;
                }
                dead_letters.push(sink);
            }
        }
        let registry = self.registry.unwrap_or_default();
        let parts = Parts { config, store, registry: &registry, filter: self.record_filter };
        let (handle, task) = match sources {
            Sources::One(source) => parts.spawn(source, factory, dead_letters.pop())?,
            Sources::Several(source, names) => {
                let sinks = match dead_letters.is_empty() {
                    true => None,
                    false => Some(MultiStreamSink::new(names.into_iter().zip(dead_letters).collect())?),
                };
                parts.spawn(source, factory, sinks)?
            }
        };
        let signalled = Arc::new(AtomicBool::new(false));
        let signals = self.signals.map(|deadline| {
            let signalled = Arc::clone(&signalled);
            tokio::spawn(stop_on_signals(handle.clone(), deadline, move |_| signalled.store(true, Ordering::SeqCst)))
        });
        tracing::info!(application = %self.application, streams = ?stream_arns, "worker started");
        Ok(RunningWorker { handle, task, signals, signalled, registry, stream_arns })
    }
}

/// The streams to consume: one keeps plain shard ids as lease keys (Java KCL's single-stream
/// layout); several are keyed `{identifier}:{shardId}` (the Java adapter's multi-stream
/// layout), with the identifiers in order.
enum Sources {
    One(DynamoStreamsSource),
    Several(MultiStream<DynamoStreamsSource>, Vec<String>),
}

/// What [`WorkerBuilder::start`] hands to the worker whatever its source.
struct Parts<'a> {
    config: Config,
    store: DynamoLeaseStore,
    registry: &'a Registry,
    filter: Option<RecordFilter>,
}

type Running = (WorkerHandle, JoinHandle<Result<(), WorkerError>>);

impl Parts<'_> {
    fn spawn<S, F, D>(self, source: S, factory: F, dead_letter: Option<D>) -> Result<Running, BuilderError>
    where
        S: StreamSource<Record = ChangeRecord>,
        F: RecordProcessorFactory<ChangeRecord>,
        D: DeadLetterSink<ChangeRecord>,
    {
        let mut worker = Worker::new(self.config, source, self.store, factory, self.registry)?;
        if let Some(keep) = self.filter {
            worker = worker.with_record_filter(move |r| keep(r));
        }
        let handle = worker.handle();
        let task = match dead_letter {
            Some(sink) => tokio::spawn(worker.with_dead_letter(sink).run()),
            None => tokio::spawn(worker.run()),
        };
        Ok((handle, task))
    }
}

/// The configuration: `Config::builder(application)` with the overrides applied, checked.
fn config(application: &str, overrides: Vec<Overrides>) -> Result<Config, BuilderError> {
    let builder = overrides.into_iter().fold(Config::builder(application), |builder, change| change(builder));
    Ok(builder.build().map_err(WorkerError::Config)?)
}

/// A worker started by [`WorkerBuilder::start`], running in a task of its own.
#[derive(Debug)]
pub struct RunningWorker {
    handle: WorkerHandle,
    task: JoinHandle<Result<(), WorkerError>>,
    signals: Option<JoinHandle<Option<ShutdownOutcome>>>,
    /// A signal came: the graceful stop it started finishes the signal task.
    signalled: Arc<AtomicBool>,
    registry: Registry,
    stream_arns: Vec<String>,
}

impl RunningWorker {
    /// What the worker holds and how far each shard is (also served by the worker binary's
    /// `/status`).
    pub fn status(&self) -> WorkerStatus {
        self.handle.status()
    }

    /// A handle to stop the worker or read its status from elsewhere.
    pub fn handle(&self) -> &WorkerHandle {
        &self.handle
    }

    /// The registry holding the worker's metrics (to serve on `/metrics`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The ARN of the (first) stream consumed.
    pub fn stream_arn(&self) -> &str {
        self.stream_arns.first().map_or("", String::as_str)
    }

    /// The ARNs of every stream consumed, in the order given.
    pub fn stream_arns(&self) -> &[String] {
        &self.stream_arns
    }

    /// Stops gracefully within `deadline`: every shard is checkpointed and its lease released.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownOutcome {
        self.handle.shutdown(deadline).await
    }

    /// Waits until the worker has stopped (after [`shutdown`](Self::shutdown), a signal when
    /// [`stop_on_signals`](WorkerBuilder::stop_on_signals) was asked for, or a failure).
    /// Returns how a signal's graceful stop went (`Some(ShutdownOutcome::DeadlineExceeded)`:
    /// leases left unreleased expire and are taken over), `None` when no signal stopped it.
    pub async fn wait(self) -> Result<Option<ShutdownOutcome>, BuilderError> {
        let result = self.task.await.map_err(|e| BuilderError::Task(e.to_string()))?;
        let outcome = match self.signals {
            Some(signals) if self.signalled.load(Ordering::SeqCst) => signals.await.ok().flatten(),
            Some(signals) => {
                signals.abort();
                None
            }
            None => None,
        };
        result?;
        Ok(outcome)
    }
}
