//! A fleet of workers on the stream simulator and the in-memory lease store, for scenario
//! tests under paused tokio time.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kcl_core::testing::invariants::{self, Observed, Report};
use kcl_core::testing::memory_store::MemoryLeaseStore;
use kcl_core::testing::recording::{CheckpointPolicy, DeliveryLog, RecordingProcessorFactory};
use kcl_core::testing::sim::{ChangeKind, SimRecord, StreamSimulator};
use kcl_core::{
    Checkpoint, Config, ConfigBuilder, Lease, LeaseKey, LeaseStore, LeaseStoreError, LeaseStoreErrorKind, LeaseUpdate,
    Metrics, ShardId, StreamSource, Worker, WorkerError, WorkerHandle, WorkerId,
};
use tokio::task::JoinHandle;

pub const LEASE_DURATION: Duration = Duration::from_secs(10);

pub struct Running {
    pub handle: WorkerHandle,
    pub task: JoinHandle<Result<(), WorkerError>>,
}

pub struct Fleet {
    pub sim: StreamSimulator,
    pub store: MemoryLeaseStore,
    pub log: DeliveryLog,
    pub workers: BTreeMap<String, Running>,
    pub policy: CheckpointPolicy,
    pub tune: fn(ConfigBuilder) -> ConfigBuilder,
    /// Time each process_records call takes.
    pub processing_delay: Duration,
    written: usize,
    /// Each worker's link to the lease table, by name.
    pub links: BTreeMap<String, Arc<AtomicBool>>,
    /// Per worker: while set, its heartbeat renewals come back without handoff requests (a
    /// worker that ignores them).
    pub deaf: BTreeMap<String, Arc<AtomicBool>>,
    /// The scenario's event filter, for the invariant checker: true for a dropped record.
    pub filtered: Option<fn(&SimRecord) -> bool>,
    /// A Rust record filter given to each worker (`Worker::with_record_filter`): true keeps.
    pub record_filter: Option<fn(&SimRecord) -> bool>,
}

impl Fleet {
    pub fn new(sim: StreamSimulator, store: MemoryLeaseStore) -> Self {
        Self {
            sim,
            store,
            log: DeliveryLog::new(),
            workers: BTreeMap::new(),
            policy: CheckpointPolicy::EveryBatch,
            tune: |b| b,
            processing_delay: Duration::ZERO,
            written: 0,
            links: BTreeMap::new(),
            deaf: BTreeMap::new(),
            filtered: None,
            record_filter: None,
        }
    }

    pub fn config(&self, name: &str) -> Config {
        (self.tune)(Config::builder("scenario").worker_id(name).lease_duration(LEASE_DURATION)).build().unwrap()
    }

    /// Starts a worker named `name`.
    pub fn start(&mut self, name: &str) {
        let factory = RecordingProcessorFactory::new(WorkerId::new(name), self.log.clone())
            .checkpoint_policy(self.policy)
            .processing_delay(self.processing_delay);
        self.start_with(name, factory);
    }

    pub fn start_with(&mut self, name: &str, factory: RecordingProcessorFactory) {
        let link = Link {
            inner: self.store.clone(),
            cut: Arc::new(AtomicBool::new(false)),
            deaf: self.deaf.entry(name.to_owned()).or_default().clone(),
        };
        self.links.insert(name.to_owned(), link.cut.clone());
        let mut worker =
            Worker::with_metrics(self.config(name), self.sim.clone(), link, factory, Metrics::unregistered());
        if let Some(keep) = self.record_filter {
            worker = worker.with_record_filter(keep);
        }
        let handle = worker.handle();
        let task = tokio::spawn(worker.run());
        self.workers.insert(name.to_owned(), Running { handle, task });
    }

    /// Kills a worker as a crash would: its task is aborted, nothing is released.
    pub fn crash(&mut self, name: &str) {
        let running = self.workers.remove(name).expect("no such worker");
        running.task.abort();
    }

    /// Stops a worker gracefully.
    pub async fn stop(&mut self, name: &str) -> kcl_core::ShutdownOutcome {
        let running = self.workers.remove(name).expect("no such worker");
        let outcome = running.handle.shutdown(Duration::from_secs(25)).await;
        running.task.await.expect("worker task panicked").expect("worker failed");
        outcome
    }

    pub async fn stop_all(&mut self) {
        let names: Vec<String> = self.workers.keys().cloned().collect();
        for n in names {
            self.stop(&n).await;
        }
    }

    /// Cuts (or restores) one worker's connection to the lease table.
    pub fn set_cut(&self, name: &str, cut: bool) {
        self.links[name].store(cut, Ordering::SeqCst);
    }

    pub fn handle(&self, name: &str) -> &WorkerHandle {
        &self.workers[name].handle
    }

    /// Writes `n` changes over `keys` items (insert, then modifies, some removes), one every
    /// `every`.
    pub async fn write(&mut self, n: usize, keys: usize, every: Duration) {
        for _ in 0..n {
            let i = self.written;
            self.written += 1;
            let key = format!("item-{}", i % keys);
            let kind = match (i / keys, i % 7) {
                (0, _) => ChangeKind::Insert,
                (_, 6) => ChangeKind::Remove,
                _ => ChangeKind::Modify,
            };
            self.sim.write(&key, kind);
            if !every.is_zero() {
                tokio::time::sleep(every).await;
            }
        }
    }

    /// Shard leases per owner (None = unowned), ignoring finished shards and heartbeats.
    pub fn owners(&self) -> BTreeMap<Option<String>, usize> {
        owners(&self.store)
    }

    /// True when every unfinished shard lease is owned by a running worker and the counts
    /// differ by at most one.
    pub fn balanced(&self) -> bool {
        let owners = self.owners();
        let live: Vec<&String> = self.workers.keys().collect();
        if owners.is_empty() || owners.keys().any(|o| o.as_ref().is_none_or(|o| !live.contains(&o))) {
            return false;
        }
        let counts: Vec<usize> = live.iter().map(|w| owners.get(&Some((*w).clone())).copied().unwrap_or(0)).collect();
        counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1
    }

    /// Waits (in simulated time) until `cond` holds ([`wait_until`]), showing the owners.
    pub async fn wait_for(&self, limit: Duration, what: &str, cond: impl Fn(&Self) -> bool) -> Duration {
        wait_until(limit, what, || cond(self), || format!("owners: {:?}", self.owners())).await
    }

    /// Waits until every retained record was processed at least once.
    pub async fn drain(&self, limit: Duration) -> Duration {
        self.wait_for(limit, "every written record to be processed", |f| {
            let trimmed = f.sim.trimmed().len();
            let written = f.sim.written();
            let filtered = f.filtered.map_or(0, |drops| written.iter().filter(|r| drops(r)).count());
            f.log.distinct_processed() + trimmed + filtered >= written.len()
        })
        .await
    }

    pub async fn parents(&self) -> Vec<(ShardId, Vec<ShardId>)> {
        self.sim.list_shards().await.unwrap().into_iter().map(|s| (s.id, s.parent_ids)).collect()
    }

    /// Runs the invariant checker over everything observed.
    pub async fn check(&self) -> Report {
        let written: Vec<SimRecord> = self.sim.written();
        let trimmed = self.sim.trimmed();
        let history = self.store.history();
        let parents = self.parents().await;
        invariants::check(&Observed {
            written: &written,
            trimmed: &trimmed,
            log: &self.log,
            lease_history: &history,
            lease_duration: LEASE_DURATION,
            parents: &parents,
            filtered: self.filtered,
        })
    }
}

/// Waits (in simulated time) until `cond` holds, checking every 100 ms; returns the time it
/// took, or panics after `limit` with `what` and `state()` (also printed on each check with
/// `FLEET_DEBUG` set).
pub async fn wait_until(limit: Duration, what: &str, cond: impl Fn() -> bool, state: impl Fn() -> String) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if std::env::var("FLEET_DEBUG").is_ok() && start.elapsed().subsec_millis() < 100 {
            eprintln!("{:?} {what}: {}", start.elapsed(), state());
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?} (simulated) waiting for {what}; {}", state());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Shard leases per owner in `store` (None = unowned), ignoring finished shards and heartbeats.
pub fn owners(store: &MemoryLeaseStore) -> BTreeMap<Option<String>, usize> {
    let mut out = BTreeMap::new();
    for l in store.leases() {
        if l.key.is_heartbeat() || l.checkpoint.is_shard_end() {
            continue;
        }
        *out.entry(l.owner.map(|o| o.to_string())).or_insert(0) += 1;
    }
    out
}

/// Installs a test logger once (RUST_LOG controls it).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// A lease store one worker reaches through a link the test can cut (a network partition).
#[derive(Clone, Debug)]
pub struct Link {
    pub inner: MemoryLeaseStore,
    pub cut: Arc<AtomicBool>,
    pub deaf: Arc<AtomicBool>,
}

impl Link {
    fn check(&self) -> Result<(), LeaseStoreError> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(LeaseStoreError::new(LeaseStoreErrorKind::Transient, "connection reset (test link cut)"));
        }
        Ok(())
    }
}

impl LeaseStore for Link {
    async fn list(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        self.check()?;
        self.inner.list().await
    }
    async fn get(&self, key: &LeaseKey) -> Result<Option<Lease>, LeaseStoreError> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn create_if_absent(&self, lease: Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        self.check()?;
        self.inner.create_if_absent(lease).await
    }
    async fn renew(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        self.check()?;
        let renewed = self.inner.renew(expected).await?;
        match renewed {
            LeaseUpdate::Applied(mut l) if self.deaf.load(Ordering::SeqCst) => {
                l.handoff_requests.clear();
                Ok(LeaseUpdate::Applied(l))
            }
            other => Ok(other),
        }
    }
    async fn take(&self, expected: &Lease, new_owner: &WorkerId) -> Result<LeaseUpdate, LeaseStoreError> {
        self.check()?;
        self.inner.take(expected, new_owner).await
    }
    async fn checkpoint(
        &self,
        expected: &Lease,
        checkpoint: &Checkpoint,
        window: Option<&kcl_core::WindowState>,
    ) -> Result<LeaseUpdate, LeaseStoreError> {
        self.check()?;
        self.inner.checkpoint(expected, checkpoint, window).await
    }
    async fn release(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        self.check()?;
        self.inner.release(expected).await
    }
    async fn request_handoff(
        &self,
        heartbeat: &Lease,
        from: &WorkerId,
        n: u32,
    ) -> Result<LeaseUpdate, LeaseStoreError> {
        self.check()?;
        self.inner.request_handoff(heartbeat, from, n).await
    }
    async fn delete(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        self.check()?;
        self.inner.delete(expected).await
    }
}

/// The sum of a counter's values in `registry` (those with a label of value `label`, when
/// given); 0 when the counter is not there.
pub fn counter(registry: &prometheus::Registry, name: &str, label: Option<&str>) -> f64 {
    let families = registry.gather();
    let Some(family) = families.iter().find(|f| f.name() == name) else { return 0.0 };
    family
        .get_metric()
        .iter()
        .filter(|m| label.is_none_or(|l| m.get_label().iter().any(|p| p.value() == l)))
        .map(|m| m.get_counter().get_value())
        .sum()
}
