//! `kcl-admin`: see and fix what a fleet is doing, through its lease table.
//!
//! ```text
//! kcl-admin --application-name orders-archiver status --table orders
//! kcl-admin --application-name orders-archiver status --json
//! kcl-admin --application-name orders-archiver reset --to 2026-12-04T08:00:00Z --table orders --coordinate
//! kcl-admin --application-name orders-archiver release --worker 3f2c9a0e
//! kcl-admin --application-name orders-archiver forget
//! ```
//!
//! Credentials, region and endpoint come from the AWS default chain as for `worker`
//! (`--endpoint-url` for DynamoDB Local). Exit codes: 0 done, 1 refused or failed (the message
//! says why and what to do), 2 usage error.

use std::collections::HashMap;
use std::io::BufRead as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args as ClapArgs, Parser, Subcommand};
use kcl_adapter::DynamoLeaseStore;
use kcl_core::{ShardId, StreamSource, WorkerId};
use kcl_worker::admin::reset::{self, ResetTarget};
use kcl_worker::admin::{self, DEFAULT_OBSERVE, release, status};
use kcl_worker::streams::{Streams, sdk_config};

/// Sees and fixes what a fleet of workers is doing, through its lease table.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Args {
    /// The consumer application's name (its lease table's name).
    #[arg(long, env = "KCL_APPLICATION_NAME", global = true)]
    application_name: Option<String>,
    /// Endpoint for DynamoDB and DynamoDB Streams (DynamoDB Local). Default: the AWS chain.
    #[arg(long, env = "KCL_ENDPOINT_URL", global = true)]
    endpoint_url: Option<String>,
    /// The AWS region. Default: the AWS chain (`AWS_REGION`, profile, metadata).
    #[arg(long, env = "KCL_REGION", global = true)]
    region: Option<String>,
    /// How long to watch heartbeats to tell live workers from dead ones, in milliseconds: a
    /// little more than the fleet's lease duration / 3 (its renewal interval).
    #[arg(long, global = true, default_value_t = DEFAULT_OBSERVE.as_millis() as u64)]
    observe_ms: u64,
    #[command(subcommand)]
    command: Command,
}

/// The streams, for lags and resets to a time: the fleet's `--table`s and `--stream-arn`s.
#[derive(Debug, Clone, ClapArgs)]
struct Stream {
    /// A source table (its latest stream); repeat it as the workers are given it.
    #[arg(long)]
    table: Vec<String>,
    /// A stream, instead of or besides `--table`s; repeatable.
    #[arg(long)]
    stream_arn: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Workers alive, leases per worker, and each shard's owner, checkpoint, lineage state and
    /// lag (with --table or --stream-arn).
    Status {
        #[command(flatten)]
        stream: Stream,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move checkpoints: to `trim-horizon`, `latest`, an RFC 3339 time (needs --table or
    /// --stream-arn) or a sequence number (with exactly one --shard). Children are never left
    /// ahead of their parents.
    Reset {
        /// Where to move them.
        #[arg(long)]
        to: ResetTarget,
        /// Only these shards (repeatable). Default: every lease.
        #[arg(long)]
        shard: Vec<String>,
        #[command(flatten)]
        stream: Stream,
        /// Proceed while workers are alive: each lease is taken from its owner (fencing it),
        /// rewritten and released, and the fleet continues from the new checkpoints.
        #[arg(long)]
        coordinate: bool,
    },
    /// Release a worker's leases, so the fleet takes them at once.
    Release {
        /// The worker whose leases to release.
        #[arg(long)]
        worker: String,
        /// Also when the worker is alive (it is fenced; what it did not checkpoint is
        /// processed again by the next owner).
        #[arg(long)]
        force: bool,
    },
    /// Delete the application's lease table (every lease and checkpoint), after confirmation.
    Forget {
        /// Do not ask: the application name on stdin is the confirmation otherwise.
        #[arg(long)]
        yes: bool,
        /// Also while workers are alive.
        #[arg(long)]
        force: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kcl-admin: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Clients {
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    store: DynamoLeaseStore,
}

async fn clients(args: &Args) -> Result<Clients, Box<dyn std::error::Error>> {
    let Some(application) = &args.application_name else {
        return Err("give the application with --application-name (or KCL_APPLICATION_NAME)".into());
    };
    let sdk = sdk_config(args.region.as_deref(), args.endpoint_url.as_deref()).await?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
    let store = DynamoLeaseStore::new(dynamodb.clone(), application);
    store
        .check_table()
        .await
        .map_err(|e| format!("{e}: is --application-name {application} right? (the lease table is named after it)"))?;
    Ok(Clients { dynamodb, streams, store })
}

/// The streams given, if any.
async fn source(clients: &Clients, stream: &Stream) -> Result<Option<Streams>, Box<dyn std::error::Error>> {
    if stream.table.is_empty() && stream.stream_arn.is_empty() {
        return Ok(None);
    }
    Ok(Some(Streams::open(&clients.dynamodb, &clients.streams, &stream.table, &stream.stream_arn).await?))
}

/// The lag of every lease's shard.
async fn lags<S: StreamSource>(source: &S, snapshot: &admin::Snapshot) -> HashMap<ShardId, status::Lag> {
    let now = SystemTime::now();
    let mut lags = HashMap::new();
    for lease in &snapshot.leases {
        let shard = ShardId::new(lease.key.as_str());
        let lag = status::lag(source, &shard, &lease.checkpoint, now).await;
        lags.insert(shard, lag);
    }
    lags
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let clients = clients(&args).await?;
    let application = clients.store.table_name().to_owned();
    let observe = Duration::from_millis(args.observe_ms);
    let snapshot = admin::observe(&clients.store, observe).await?;
    match args.command {
        Command::Status { stream, json } => {
            let lags = match source(&clients, &stream).await? {
                Some(Streams::One(source)) => lags(&source, &snapshot).await,
                Some(Streams::Several(source, _)) => lags(&source, &snapshot).await,
                None => HashMap::new(),
            };
            let report = status::report(&application, &snapshot, &lags);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", status::render(&report));
            }
        }
        Command::Reset { to, shard, stream, coordinate } => {
            admin::refuse_while_alive(&snapshot, coordinate, "a reset", "--coordinate")?;
            let shards: Vec<ShardId> = shard.iter().map(ShardId::new).collect();
            let chosen = match &to {
                ResetTarget::Time(t) => match source(&clients, &stream).await? {
                    Some(Streams::One(s)) => reset::chosen_at_time(&s, &snapshot.leases, &shards, *t).await?,
                    Some(Streams::Several(s, _)) => reset::chosen_at_time(&s, &snapshot.leases, &shards, *t).await?,
                    None => return Err("a reset to a time reads the stream: give --table or --stream-arn".into()),
                },
                other => reset::chosen(&snapshot.leases, other, &shards)?,
            };
            let steps = reset::plan(&snapshot.leases, &chosen);
            reset::apply(&clients.store, &steps).await?;
            for s in &steps {
                println!("reset {}: {} -> {}", s.key, s.from, s.to);
            }
            println!("reset {} lease(s) of {application}", steps.len());
        }
        Command::Release { worker, force } => {
            let worker = WorkerId::new(worker);
            release::check(&snapshot, &worker, force)?;
            let released = release::apply(&clients.store, &snapshot, &worker).await?;
            for l in &released {
                println!("released {} (checkpoint {})", l.key, l.checkpoint);
            }
            println!("released {} lease(s) of worker {worker}", released.len());
        }
        Command::Forget { yes, force } => {
            admin::refuse_while_alive(&snapshot, force, "deleting the lease table", "--force")?;
            if !yes {
                eprintln!(
                    "this deletes lease table {application} with every checkpoint in it ({} lease(s)); type the \
                     application name to confirm:",
                    snapshot.leases.len()
                );
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                if line.trim() != application {
                    return Err(format!(
                        "not confirmed (read {:?}): nothing deleted; type {application}, or pass --yes",
                        line.trim()
                    )
                    .into());
                }
            }
            clients.store.delete_table().await?;
            println!("deleted lease table {application}");
        }
    }
    Ok(())
}
