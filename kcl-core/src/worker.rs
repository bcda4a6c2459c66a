//! [`Worker`]: runs the coordinator, shard sync and one consumer task per held lease until
//! cancelled; [`WorkerHandle`] stops it gracefully and reports its status.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::call_timeout::{TimedSource, TimedStore};
use crate::config::{Config, LeaseRenewal, OnStall};
use crate::consumer::RecordPredicate;
use crate::consumer::{ConsumerContext, ConsumerExit};
use crate::dead_letter::{DeadLetterSink, NoDeadLetter};
use crate::error::WorkerError;
use crate::lease::coordinator::{Coordinator, Scope};
use crate::lease::handover::{FastPoll, departure_wait};
use crate::lease::held::HeldLease;
use crate::lease::{LeaseKey, LeaseStore};
use crate::metrics::Metrics;
use crate::processor::RecordProcessorFactory;
use crate::shard::sync::ShardSync;
use crate::source::{SourceErrorKind, StreamSource};
use crate::status::{ShardState, StatusBoard, WorkerStatus};

/// A worker: takes leases, consumes their shards with the user's processors, and shares the
/// stream with the rest of the fleet.
///
/// ```no_run
/// # async fn demo<S, L, F>(source: S, store: L, factory: F) -> Result<(), kcl_core::WorkerError>
/// # where S: kcl_core::StreamSource, L: kcl_core::LeaseStore, F: kcl_core::RecordProcessorFactory<S::Record> {
/// let config = kcl_core::Config::builder("orders-replicator").build()?;
/// let worker = kcl_core::Worker::new(config, source, store, factory, &prometheus::Registry::new())?;
/// let handle = worker.handle();
/// tokio::spawn(async move {
///     // In a binary: wait for SIGTERM here.
///     tokio::time::sleep(std::time::Duration::from_secs(60)).await;
///     handle.shutdown(std::time::Duration::from_secs(25)).await;
/// });
/// worker.run().await
/// # }
/// ```
#[derive(Debug)]
pub struct Worker<S: StreamSource, L, F, D = NoDeadLetter> {
    source: Arc<TimedSource<S>>,
    record_filter: Option<RecordPredicate<S::Record>>,
    dead_letter: Option<Arc<D>>,
    store: Arc<TimedStore<L>>,
    factory: Arc<F>,
    config: Arc<Config>,
    metrics: Metrics,
    status: Arc<StatusBoard>,
    shutdown: CancellationToken,
    abort: CancellationToken,
    done: watch::Sender<Option<Stopped>>,
}

/// How `run` ended, for [`WorkerHandle::shutdown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stopped {
    /// Every consumer finished on the shutdown token: checkpointed and released.
    Graceful,
    /// Aborted, or `run` failed.
    Otherwise,
}

/// How long [`WorkerHandle::shutdown`] waits for the worker to stop after aborting it
/// (consumers are aborted at once; only in-flight calls, each under its call timeout, remain).
pub const ABORT_WAIT: Duration = Duration::from_secs(5);

/// Shard ends queued for shard sync; when full, the periodic sync creates the children.
const SHARD_ENDS_QUEUED: usize = 1024;

/// Controls a running [`Worker`] from elsewhere. Cheap to clone.
#[derive(Clone, Debug)]
pub struct WorkerHandle {
    shutdown: CancellationToken,
    abort: CancellationToken,
    done: watch::Receiver<Option<Stopped>>,
    status: Arc<StatusBoard>,
}

/// How a graceful shutdown ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownOutcome {
    /// Every shard was checkpointed and its lease released.
    Graceful,
    /// The deadline passed first; unreleased leases expire and are taken over normally.
    DeadlineExceeded,
    /// The worker was not running a graceful stop: it was dropped (or its `run` future was),
    /// it had failed or been aborted, or it never ran. Its leases, if any, expire and are
    /// taken over normally.
    NotRunning,
}

impl WorkerHandle {
    /// Asks the worker to stop: processors get `shutdown_requested`, each shard is
    /// checkpointed at its last processed record and its lease released, so that other workers
    /// continue at once. Past `deadline`, the remaining shards are abandoned.
    ///
    /// After the deadline the worker is aborted and waited for at most [`ABORT_WAIT`] more.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownOutcome {
        self.shutdown.cancel();
        let mut done = self.done.clone();
        // `Err`: the worker is gone without saying how it stopped (dropped, or never run).
        let waited = tokio::time::timeout(deadline, done.wait_for(Option::is_some)).await.map(|r| r.map(|s| *s));
        let stopped = match waited {
            Ok(Ok(stopped)) => stopped,
            Ok(Err(_)) => return ShutdownOutcome::NotRunning,
            Err(_) => {
                self.abort.cancel();
                let _ = tokio::time::timeout(ABORT_WAIT, done.wait_for(Option::is_some)).await;
                return ShutdownOutcome::DeadlineExceeded;
            }
        };
        match stopped {
            Some(Stopped::Graceful) => ShutdownOutcome::Graceful,
            _ => ShutdownOutcome::NotRunning,
        }
    }

    /// Stops at once without checkpointing or releasing (as a crash would, for tests).
    pub fn abort(&self) {
        self.abort.cancel();
    }

    /// Leases held, and checkpoint and lag per shard.
    pub fn status(&self) -> WorkerStatus {
        self.status.snapshot()
    }

    /// True once the worker has stopped.
    pub fn is_finished(&self) -> bool {
        self.done.borrow().is_some() || self.done.has_changed().is_err()
    }
}

impl<S, L, F> Worker<S, L, F, NoDeadLetter>
where
    S: StreamSource,
    L: LeaseStore,
    F: RecordProcessorFactory<S::Record>,
{
    /// A worker registering its metrics in `registry`.
    pub fn new(
        config: Config,
        source: S,
        store: L,
        factory: F,
        registry: &prometheus::Registry,
    ) -> Result<Self, WorkerError> {
        let metrics = Metrics::new(registry)?;
        Ok(Self::with_metrics(config, source, store, factory, metrics))
    }

    /// A worker using an existing metric set.
    pub fn with_metrics(config: Config, source: S, store: L, factory: F, metrics: Metrics) -> Self {
        let status = Arc::new(StatusBoard::new(config.worker_id().clone()));
        Self {
            source: Arc::new(TimedSource::new(source, config.source_call_timeout)),
            record_filter: None,
            dead_letter: None,
            store: Arc::new(TimedStore::new(store, config.lease_call_timeout)),
            factory: Arc::new(factory),
            config: Arc::new(config),
            metrics,
            status,
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            done: watch::channel(None).0,
        }
    }

    /// Sends records whose retries are exhausted to `sink` (see
    /// [`OnRetriesExhausted`](crate::OnRetriesExhausted)).
    pub fn with_dead_letter<D: DeadLetterSink<S::Record>>(self, sink: D) -> Worker<S, L, F, D> {
        Worker {
            source: self.source,
            record_filter: self.record_filter,
            dead_letter: Some(Arc::new(sink)),
            store: self.store,
            factory: self.factory,
            config: self.config,
            metrics: self.metrics,
            status: self.status,
            shutdown: self.shutdown,
            abort: self.abort,
            done: self.done,
        }
    }
}

impl<S, L, F, D> Worker<S, L, F, D>
where
    S: StreamSource,
    L: LeaseStore,
    F: RecordProcessorFactory<S::Record>,
    D: DeadLetterSink<S::Record>,
{
    /// Delivers only the records for which `keep` returns true (in Rust, for what the
    /// [`filter`](crate::ConfigBuilder::filter) patterns cannot say; with both, a record must
    /// pass both). Dropped records are not delivered, are counted in
    /// `kcl_records_filtered_total`, and the checkpoint moves past them. `keep` runs on the
    /// shard's task for every record: keep it cheap and free of I/O.
    pub fn with_record_filter(mut self, keep: impl Fn(&S::Record) -> bool + Send + Sync + 'static) -> Self {
        self.record_filter = Some(RecordPredicate::new(keep));
        self
    }

    /// A handle to stop the worker and read its status.
    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle {
            shutdown: self.shutdown.clone(),
            abort: self.abort.clone(),
            done: self.done.subscribe(),
            status: self.status.clone(),
        }
    }

    /// Runs until shut down through a [`WorkerHandle`]. Fails at start when the lease table or
    /// the stream cannot be used; afterwards, errors are retried and never stop the worker.
    pub async fn run(self) -> Result<(), WorkerError> {
        let span = tracing::info_span!("worker", worker = %self.config.worker_id());
        let result = self.run_inner().instrument(span).await;
        let graceful = matches!(result, Ok(())) && !self.abort.is_cancelled();
        self.done.send_replace(Some(if graceful { Stopped::Graceful } else { Stopped::Otherwise }));
        result
    }

    async fn run_inner(&self) -> Result<(), WorkerError> {
        // Lease tokens are children of `abort`: aborting stops every consumer at once.
        let coordinator = Arc::new(
            Coordinator::start(self.store.clone(), self.config.clone(), self.metrics.clone(), self.abort.clone(), {
                let source = self.source.clone();
                Scope(Arc::new(move |shard: &crate::shard::ShardId| source.consumes(shard)))
            })
            .await
            .map_err(WorkerError::LeaseTable)?,
        );
        match coordinator.check_unique_id().await {
            Ok(None) => {}
            Ok(Some(heartbeat)) => {
                coordinator.deregister().await;
                return Err(WorkerError::DuplicateWorkerId {
                    worker_id: self.config.worker_id().to_string(),
                    heartbeat: heartbeat.to_string(),
                });
            }
            Err(e) => {
                coordinator.deregister().await;
                return Err(WorkerError::LeaseTable(e));
            }
        }
        let sync = ShardSync {
            source: self.source.clone(),
            coordinator: coordinator.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            status: self.status.clone(),
            created: Arc::new(tokio::sync::Notify::new()),
            awaiting_children: std::sync::Mutex::new(std::collections::HashMap::new()),
            closed: Arc::new(std::sync::Mutex::new(std::collections::HashSet::new())),
        };
        let closed = sync.closed.clone();
        // The consumers' stop: after the departure notice, not at once on shutdown.
        let stop_consumers = CancellationToken::new();
        let leases_created = sync.created.clone();
        if let Err(e) = sync.full_sync().await {
            if matches!(e.kind(), SourceErrorKind::NotFound | SourceErrorKind::Fatal) {
                coordinator.deregister().await;
                return Err(WorkerError::Stream(e));
            }
            tracing::warn!(error = %e, "first shard listing failed; will retry");
        }
        let (ended_tx, ended_rx) = mpsc::channel(SHARD_ENDS_QUEUED);
        let ctx = Arc::new(ConsumerContext {
            source: self.source.clone(),
            store: self.store.clone(),
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            status: self.status.clone(),
            shutdown: stop_consumers.clone(),
            shard_ended: ended_tx,
            dead_letter: self.dead_letter.clone(),
            record_filter: self.record_filter.clone(),
            closed,
            ended_here: tokio::sync::Notify::new(),
        });

        // Background tasks stop when `background` is cancelled: after consumers have finished,
        // so that leases stay renewed while shards checkpoint during a graceful shutdown.
        let background = self.abort.child_token();
        let mut tasks = JoinSet::new();
        let every = self.config.renew_interval();
        // The heartbeat has its own timer: it never waits behind lease renewals.
        tasks.spawn(heartbeat_loop(coordinator.clone(), every, background.clone()).in_current_span());
        if self.config.lease_renewal == LeaseRenewal::EveryLease {
            tasks.spawn(renew_loop(coordinator.clone(), every, background.clone()).in_current_span());
        }
        tasks.spawn(sync.run(ended_rx, background.clone()).in_current_span());

        let mut consumers = Consumers::default();
        let mut next_take = Instant::now();
        // Streams with an iterator-age series: set to 0 once none of their shards is held here.
        let mut streams_seen: std::collections::BTreeSet<String> = std::collections::BTreeSet::from([String::new()]);
        let mut poll = tokio::time::interval(self.config.heartbeat_poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut fast = FastPoll::new(self.config.handover_poll_interval, self.config.handover_window(), Instant::now());
        // Set once told to stop and announced: consuming goes on until then, taking does not.
        let mut leave_at: Option<Instant> = None;
        loop {
            let fast_due = fast.due();
            tokio::select! {
                biased;
                _ = self.abort.cancelled() => break,
                _ = self.shutdown.cancelled(), if leave_at.is_none() => {
                    let wait = departure_wait(coordinator.held_count(), coordinator.has_peers(), self.config.departure_notice);
                    let Some(wait) = wait else { break };
                    tracing::info!(notice = ?wait, leases = coordinator.held_count(),
                        "stopping: announced to the other workers; releasing the leases after the notice");
                    coordinator.withdraw_handoff_requests().await;
                    coordinator.announce_change().await;
                    leave_at = Some(Instant::now() + wait);
                }
                _ = tokio::time::sleep_until(leave_at.unwrap_or(next_take)), if leave_at.is_some() => break,
                Some(joined) = consumers.set.join_next_with_id() => {
                    if self.consumer_finished(&coordinator, &mut consumers, joined).await {
                        // Handed over on request: the asker polls the notice to take it now.
                        coordinator.announce_change().await;
                    }
                }
                _ = tokio::time::sleep_until(next_take), if leave_at.is_none() => {
                    next_take = self.take(&ctx, &coordinator, &mut consumers, &mut fast).await;
                }
                // Children of a shard that just ended: take them now, not a cycle later.
                _ = leases_created.notified(), if leave_at.is_none() => {
                    next_take = self.take(&ctx, &coordinator, &mut consumers, &mut fast).await;
                }
                _ = tokio::time::sleep_until(fast_due.unwrap_or(next_take)), if fast_due.is_some() => {
                    fast.polled(Instant::now());
                    if coordinator.notice_changed().await {
                        fast.expect(Instant::now());
                        if leave_at.is_none() {
                            next_take = self.take(&ctx, &coordinator, &mut consumers, &mut fast).await;
                        }
                    }
                }
                _ = poll.tick() => {
                    if coordinator.poll_heartbeats().await {
                        fast.expect(Instant::now());
                        if leave_at.is_none() {
                            next_take = self.take(&ctx, &coordinator, &mut consumers, &mut fast).await;
                        }
                    }
                    self.publish_iterator_ages(&mut streams_seen);
                    self.watchdog(&coordinator, &consumers).await;
                }
            }
        }
        // Graceful: consumers see their stop token, checkpoint and release.
        stop_consumers.cancel();
        tokio::select! {
            _ = async {
                while let Some(joined) = consumers.set.join_next_with_id().await {
                    self.consumer_finished(&coordinator, &mut consumers, joined).await;
                }
            } => {}
            _ = self.abort.cancelled() => consumers.set.abort_all(),
        }
        background.cancel();
        while tasks.join_next().await.is_some() {}
        if !self.abort.is_cancelled() {
            coordinator.deregister().await;
            if leave_at.is_some() {
                // Released and gone (peers no longer count this worker): take now.
                coordinator.announce_change().await;
            }
        }
        self.metrics.leases_held.set(0);
        Ok(())
    }

    /// A consumer task ended. Normally it released or lost its lease itself; a task that
    /// ended any other way (a panic outside the guarded processor calls, the factory's among
    /// them) has its lease released here at once, so that no held lease is without a consumer.
    /// True when it released its lease on another worker's request (a handoff).
    async fn consumer_finished(
        &self,
        coordinator: &Coordinator<TimedStore<L>>,
        consumers: &mut Consumers,
        joined: Result<(tokio::task::Id, (LeaseKey, ConsumerExit)), tokio::task::JoinError>,
    ) -> bool {
        match joined {
            Ok((id, (key, exit))) => {
                tracing::debug!(lease = %key, ?exit, "consumer finished");
                if let Some(held) = consumers.by_task.remove(&id) {
                    coordinator.forget(&held);
                }
                // A graceful stop of one shard while the worker runs on: a handoff.
                exit == ConsumerExit::Shutdown && !self.shutdown.is_cancelled()
            }
            Err(e) => {
                let Some(held) = consumers.by_task.remove(&e.id()) else { return false };
                let key = held.key.clone();
                if e.is_cancelled() {
                    coordinator.forget(&held);
                    return false;
                }
                let why = match e.try_into_panic() {
                    Ok(payload) => crate::consumer::guard::panic_message(&*payload),
                    Err(e) => e.to_string(),
                };
                self.metrics.consumer_failures.inc();
                tracing::error!(lease = %key, error = %why,
                    "shard consumer ended abnormally; releasing its lease so that it is consumed again");
                if let Some(shard) = key.shard_id() {
                    self.status.remove(&shard, false);
                }
                coordinator.release_held(&held).await;
                false
            }
        }
    }

    /// The stall watchdog: reports held shards without progress, and releases them when so
    /// configured. Also checks that every held lease has a live consumer task.
    /// Sets `kcl_iterator_age_seconds` of each stream to the largest lag among its shards held
    /// here, and to 0 for a stream whose shards are no longer held here.
    fn publish_iterator_ages(&self, seen: &mut std::collections::BTreeSet<String>) {
        let ages =
            self.status.snapshot().max_lag_by_stream(|s| self.source.stream_of(s).unwrap_or_default().to_owned());
        for stream in seen.iter().filter(|s| !ages.contains_key(*s)) {
            self.metrics.iterator_age_seconds.with_label_values(&[stream]).set(0);
        }
        for (stream, age) in ages {
            self.metrics.iterator_age_seconds.with_label_values(&[&stream]).set(age.as_secs() as i64);
            seen.insert(stream);
        }
    }

    async fn watchdog(&self, coordinator: &Coordinator<TimedStore<L>>, consumers: &Consumers) {
        let consumed: std::collections::HashSet<&LeaseKey> = consumers.by_task.values().map(|h| &h.key).collect();
        for held in coordinator.held() {
            if !consumed.contains(&held.key) {
                tracing::error!(shard = %held.shard_id, "held lease without a consumer; releasing it");
                self.metrics.consumer_failures.inc();
                self.status.remove(&held.shard_id, false);
                coordinator.release(&held.key).await;
            }
        }
        let stalled = self.status.stalled(self.config.stall_threshold);
        self.metrics.stalled_shards.set(stalled.len() as i64);
        for (shard, idle, newly, state) in stalled {
            if newly {
                tracing::warn!(shard = %shard, stalled_for = ?idle, ?state, action = ?self.config.on_stall,
                    "shard is held but makes no progress (processor not returning, reads failing, or parents not ending)");
            }
            // A child waiting on its parents is reported but kept: releasing it would not help.
            if self.config.on_stall == OnStall::ReleaseLease && state != ShardState::WaitingOnParents {
                coordinator.release(&LeaseKey::for_shard(&shard)).await;
            }
        }
    }

    /// Runs a take cycle, starts consumers for what it acquired, and says when to run the next.
    /// After asking for handoffs, polls the change notice fast (`fast`) to take them at once.
    async fn take(
        &self,
        ctx: &Arc<ConsumerContext<TimedSource<S>, TimedStore<L>, D>>,
        coordinator: &Coordinator<TimedStore<L>>,
        consumers: &mut Consumers,
        fast: &mut FastPoll,
    ) -> Instant {
        let outcome = coordinator.take_cycle().await;
        for held in outcome.acquired {
            let span = tracing::info_span!("shard", shard = %held.shard_id);
            let task = consumers.set.spawn(ctx.clone().run(held.clone(), self.factory.clone()).instrument(span));
            consumers.by_task.insert(task.id(), held);
        }
        if outcome.asked {
            fast.expect(Instant::now());
        }
        let wait = if outcome.contended {
            self.config.heartbeat_poll_interval
        } else if outcome.asked {
            // The owners read the requests with their next heartbeat renewal.
            self.config.take_interval.min(self.config.renew_interval() + self.config.heartbeat_poll_interval)
        } else {
            self.config.take_interval
        };
        Instant::now() + wait
    }
}

/// The consumer tasks, and which lease each one consumes.
#[derive(Debug, Default)]
struct Consumers {
    set: JoinSet<(LeaseKey, ConsumerExit)>,
    /// The tenure each task consumes: a lease taken again holds a new one.
    by_task: HashMap<tokio::task::Id, Arc<HeldLease>>,
}

async fn heartbeat_loop<L: LeaseStore>(coordinator: Arc<Coordinator<L>>, every: Duration, token: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = coordinator.renew_heartbeat() => {}
                }
            }
        }
    }
}

async fn renew_loop<L: LeaseStore>(coordinator: Arc<Coordinator<L>>, every: Duration, token: CancellationToken) {
    tokio::select! {
        _ = token.cancelled() => {}
        _ = coordinator.renew_leases(every) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::WorkerId;

    fn handle() -> (WorkerHandle, watch::Sender<Option<Stopped>>) {
        let done = watch::channel(None).0;
        let handle = WorkerHandle {
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            done: done.subscribe(),
            status: Arc::new(StatusBoard::new(WorkerId::new("w"))),
        };
        (handle, done)
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_outcomes() {
        // A worker that never says it stopped: the deadline, then at most ABORT_WAIT more.
        let (h, _alive) = handle();
        let started = Instant::now();
        assert_eq!(h.shutdown(Duration::from_secs(2)).await, ShutdownOutcome::DeadlineExceeded);
        assert_eq!(started.elapsed(), Duration::from_secs(2) + ABORT_WAIT);
        assert!(h.abort.is_cancelled());

        let (h, done) = handle();
        done.send_replace(Some(Stopped::Graceful));
        assert_eq!(h.shutdown(Duration::from_secs(2)).await, ShutdownOutcome::Graceful);

        // Stopped otherwise (aborted, failed), or gone without a word (dropped).
        let (h, done) = handle();
        done.send_replace(Some(Stopped::Otherwise));
        assert_eq!(h.shutdown(Duration::from_secs(2)).await, ShutdownOutcome::NotRunning);
        let (h, done) = handle();
        drop(done);
        assert_eq!(h.shutdown(Duration::from_secs(2)).await, ShutdownOutcome::NotRunning);
        assert!(h.is_finished());
    }
}
