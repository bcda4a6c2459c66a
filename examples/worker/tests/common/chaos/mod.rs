//! What the chaos and partition tests share: a fleet of `worker` processes under continuous
//! writes, faults sent to them, and a verdict on everything they did, judged by kcl-core's
//! invariant checker with an exact lease history.
//!
//! - **Writes** ([`Writer`]): a seeded stream of changes to a pool of items, each with a version
//!   attribute `v` = 1, 2, 3… (inserts, updates, deletes, re-inserts), at a steady rate.
//! - **The lease history**: the lease table is created by the test with a DynamoDB stream
//!   (NEW_AND_OLD_IMAGES) before any worker starts (a worker accepts an existing table with
//!   the right key). Reading that stream at the end gives every applied lease write, in order,
//!   with the item before and after: who owned the lease, its counter and its checkpoint.
//! - **Times of lease writes** ([`Clock`]): DynamoDB Local numbers the records of every stream
//!   from one counter. A clock table is written every [`TICK`] (each tick's send and return
//!   times noted); a lease write whose sequence number falls between two ticks happened after
//!   the first was sent and before the second returned.
//! - **The verdict** ([`verify`]): the data stream read to its end is the truth; the workers'
//!   jsonl outputs become a [`DeliveryLog`]; with the lease history, kcl-core's invariant
//!   checker judges every rule (nothing lost, shard order, item order, parents first, one owner,
//!   fenced checkpoints, redeliveries only after a lease move). On top: the lease counter of
//!   every item moves by exactly one per write (a write prepared from a stale lease, the only
//!   kind a worker that lost its lease can make, would break that), duplicates are the
//!   uncheckpointed tail of a killed or dispossessed worker (never after a graceful stop or a
//!   shard end), a new owner starts after the checkpoint, a paused worker starts no batch of a
//!   shard taken from it while it was stopped, peers judge a worker dead only while it is
//!   killed, stopping, paused or cut off (no lease taken from it as expired, per the takers'
//!   logs, and no heartbeat of it removed, per the lease history, at any other time), and the
//!   final lease table matches the stream.
//! - **Times of deliveries**: a record is delivered when its batch began; the jsonl line's time
//!   is when it was rendered, the same except for a batch whose rendering a SIGSTOP interrupted,
//!   which counts from before the stop.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType,
};
use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamValue, OperationType, ShardIteratorType};
use kcl_adapter::DynamoLeaseStore;
use kcl_adapter::local::DynamoDbLocal;
use kcl_core::testing::invariants::{Observed, check};
use kcl_core::testing::memory_store::{LeaseEvent, LeaseOp};
use kcl_core::testing::recording::{Delivery, DeliveryLog, DeliveryOutcome, LifecycleEvent, LifecycleKind, LogEntry};
use kcl_core::testing::sim::{ChangeKind, SimRecord};
use kcl_core::{Checkpoint, Lease, LeaseKey, LeaseStore, SequenceNumber, ShardId, WorkerId};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::outputs::{Label, Outputs, TenureEnd, check_duplicates};

mod dump;
mod history;
mod judge;
mod lines;
mod verify;
mod writer;

use super::leases::{logged_takes, shard_leases};
use super::{WorkerProcess, eventually, http_get};
pub(crate) use dump::*;
pub(crate) use history::*;
pub(crate) use judge::*;
pub(crate) use lines::*;
pub(crate) use verify::*;
pub(crate) use writer::*;

/// The processors wait this long between writing a batch and checkpointing it, like a
/// processor doing real work: faults then find written but uncheckpointed records.
pub(crate) const PROCESS_DELAY: Duration = Duration::from_millis(250);
/// GetRecords returns at most this many records: the largest tail that may be repeated.
pub(crate) const MAX_BATCH: usize = 1000;
/// Time between clock ticks.
pub(crate) const TICK: Duration = Duration::from_millis(20);
/// A lease taken this soon after SIGCONT counts as taken during the pause: the worker's first
/// renewal after it raced the take and lost. That renewal may take up to its call's time limit
/// (a third of the 6 s lease duration) on a loaded machine; a take that applied means the
/// renewal did not land first, so the worker was past its fencing window and must not have
/// started a batch of that shard after SIGCONT either.
pub(crate) const TAKEN_AFTER_CONT: Duration = Duration::from_secs(2);
/// After a cut connection is restored, the worker's calls may still be in the SDK's retry
/// backoff for this long: until then peers may still judge it dead.
pub(crate) const RECONNECT_GRACE: Duration = Duration::from_secs(5);

/// Wall-clock nanoseconds since the Unix epoch (what the jsonl outputs carry).
pub(crate) fn wall_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Seconds between two wall-clock times, signed, for messages.
pub(crate) fn secs_between(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / 1e9
}

/// Maps wall-clock nanoseconds to the [`Instant`]s the invariant checker works with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimeBase {
    pub(crate) instant: Instant,
    pub(crate) wall: u64,
}

impl TimeBase {
    /// Now, as the origin.
    pub(crate) fn now() -> Self {
        Self { instant: Instant::now(), wall: wall_nanos() }
    }

    /// The instant of a wall-clock time (times before the origin map to the origin).
    pub(crate) fn at(&self, wall: u64) -> Instant {
        self.instant + Duration::from_nanos(wall.saturating_sub(self.wall))
    }

    /// Seconds since the origin, for messages.
    pub(crate) fn secs(&self, wall: u64) -> f64 {
        secs_between(self.wall, wall)
    }
}

// ---------------------------------------------------------------------------------------------
// Fleet

/// A SIGSTOP/SIGCONT of a worker: when, and how long its output file was at the stop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pause {
    pub(crate) stop_wall: u64,
    pub(crate) cont_wall: u64,
    /// Output bytes at the stop: later bytes were written after SIGCONT.
    pub(crate) offset: u64,
}

/// One worker ever started: its output and what was done to it.
#[derive(Clone, Debug)]
pub(crate) struct WorkerFile {
    pub(crate) name: String,
    pub(crate) worker_id: String,
    pub(crate) path: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) killed: bool,
    /// When it was sent SIGKILL, and SIGTERM (wall ns).
    pub(crate) killed_at: Option<u64>,
    pub(crate) terminated_at: Option<u64>,
    pub(crate) pauses: Vec<Pause>,
    /// Times its connection to the emulator was cut: (cut, restored), wall ns.
    pub(crate) outages: Vec<(u64, u64)>,
}

impl WorkerFile {
    /// Whether at `wall` the worker may rightly be judged dead by its peers: it was killed or
    /// told to stop before, or it was stopped (SIGSTOP) then (its first renewal after SIGCONT
    /// may come a little later).
    pub(crate) fn may_be_dead_at(&self, wall: u64) -> bool {
        self.killed_at.is_some_and(|k| k <= wall)
            || self.terminated_at.is_some_and(|t| t <= wall)
            || self
                .pauses
                .iter()
                .any(|p| p.stop_wall <= wall && wall <= p.cont_wall + TAKEN_AFTER_CONT.as_nanos() as u64)
            || self
                .outages
                .iter()
                .any(|(cut, restored)| *cut <= wall && wall <= restored + RECONNECT_GRACE.as_nanos() as u64)
    }
}

/// Worker processes sharing one table and one lease table. Dropping it kills every process
/// still running; after a panic (or with `keep_env` set) it keeps the outputs and logs.
#[derive(Debug)]
pub(crate) struct Fleet {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) table: String,
    /// More tables every worker consumes (`--table` again): a multi-stream fleet.
    pub(crate) extra_tables: Vec<String>,
    pub(crate) app: String,
    pub(crate) lease_duration: Duration,
    /// The jsonl processor's wait between writing a batch and checkpointing it
    /// ([`PROCESS_DELAY`] unless a test sets another).
    pub(crate) process_delay: Duration,
    pub(crate) prefix: String,
    pub(crate) keep_env: &'static str,
    pub(crate) workers: BTreeMap<String, WorkerProcess>,
    pub(crate) files: BTreeMap<String, WorkerFile>,
}

impl Fleet {
    pub(crate) fn new(prefix: &str, table: &str, app: &str, lease_duration: Duration, keep_env: &'static str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kcl-{prefix}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        Self {
            dir,
            table: table.to_owned(),
            extra_tables: Vec::new(),
            app: app.to_owned(),
            lease_duration,
            process_delay: PROCESS_DELAY,
            prefix: prefix.to_owned(),
            keep_env,
            workers: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }

    pub(crate) fn id_of(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    pub(crate) fn name_of(&self, worker_id: &str) -> String {
        worker_id.strip_prefix(&format!("{}-", self.prefix)).unwrap_or(worker_id).to_owned()
    }

    /// Starts worker `name` talking to `endpoint` and waits for its METRICS line.
    pub(crate) async fn spawn(&mut self, name: &str, endpoint: &str) {
        let output = self.dir.path().join(format!("{name}.jsonl"));
        let log = self.dir.path().join(format!("{name}.log"));
        let id = self.id_of(name);
        let mut args: Vec<String> = [
            "--table",
            &self.table,
            "--application-name",
            &self.app,
            "--worker-id",
            &id,
            "--endpoint-url",
            endpoint,
            "--metrics-addr",
            "127.0.0.1:0",
            "--processor",
            "jsonl",
            "--output",
            &output.display().to_string(),
            "--lease-duration-ms",
            &self.lease_duration.as_millis().to_string(),
            "--shutdown-timeout-ms",
            "20000",
            "--jsonl-delay-ms",
            &self.process_delay.as_millis().to_string(),
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        for table in &self.extra_tables {
            args.extend(["--table".to_owned(), table.clone()]);
        }
        let worker = WorkerProcess::spawn(name, &id, endpoint, &args, &log).await;
        let file = WorkerFile {
            name: name.to_owned(),
            worker_id: id,
            path: output,
            log,
            killed: false,
            killed_at: None,
            terminated_at: None,
            pauses: Vec::new(),
            outages: Vec::new(),
        };
        self.files.insert(name.to_owned(), file);
        self.workers.insert(name.to_owned(), worker);
    }

    pub(crate) fn live_ids(&self) -> BTreeSet<String> {
        self.workers.values().map(|w| w.worker_id.clone()).collect()
    }

    /// Removes a live worker from the fleet (to kill or stop it).
    pub(crate) fn take(&mut self, name: &str) -> WorkerProcess {
        self.workers.remove(name).unwrap_or_else(|| panic!("no live worker {name}"))
    }

    pub(crate) fn file_mut(&mut self, name: &str) -> &mut WorkerFile {
        self.files.get_mut(name).unwrap_or_else(|| panic!("no worker {name}"))
    }

    /// SIGTERMs every live worker and waits for each to exit with 0.
    pub(crate) async fn stop_all(&mut self) {
        let mut stopping = Vec::new();
        for (name, worker) in std::mem::take(&mut self.workers) {
            worker.sigterm();
            self.file_mut(&name).terminated_at = Some(wall_nanos());
            stopping.push(worker);
        }
        for mut worker in stopping {
            let status = worker.wait_exit(Duration::from_secs(40)).await;
            assert!(status.success(), "{} exited with {status} after SIGTERM\n{}", worker.name, worker.log_tail(40));
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os(self.keep_env).is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("{}: outputs and worker logs kept in {}", self.prefix, self.dir.path().display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Signals and metrics

/// Sends `sig` (`STOP`, `CONT`, …) with `kill(1)` (the workspace forbids `unsafe`).
pub(crate) fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status();
    assert!(status.as_ref().is_ok_and(|s| s.success()), "kill -{sig} {pid} failed: {status:?}");
}

/// The state letter of `/proc/PID/stat` (`T` when stopped).
pub(crate) fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
}

/// Waits until the process is stopped (SIGSTOP delivered to every thread).
pub(crate) async fn wait_stopped(pid: u32) {
    eventually(&format!("process {pid} to stop"), Duration::from_secs(30), Duration::from_millis(2), || async move {
        (process_state(pid) == Some('T')).then_some(())
    })
    .await;
}

/// The sum of the samples of a Prometheus metric whose line starts with `prefix` (a name, or
/// a name with the start of its labels).
pub(crate) async fn metric(addr: SocketAddr, prefix: &str) -> Option<f64> {
    let (status, body) = http_get(addr, "/metrics").await;
    if status != 200 {
        return None;
    }
    let values: Vec<f64> = body
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
        .collect();
    Some(values.iter().sum())
}
