//! One task per held lease: waits on parents, initializes the processor from the checkpoint,
//! reads with a bounded prefetch, delivers batches, and handles shard end, lease loss and
//! graceful shutdown.
//!
//! The reader and the deliverer run concurrently inside the shard's task, joined by a channel
//! of `prefetch_batches` batches: memory per shard is bounded and no extra task is spawned.
//! The deliverer of a shard without lanes is in [`single`] (with the event filter and the
//! batching window's [`gather`]), of a shard with lanes in [`lanes`]. How one batch is
//! delivered under the failure policy is in [`delivery`], the reader in
//! [`read`] (its adaptive wait between empty reads in [`poll`]), and how processor calls are
//! guarded against panics in [`guard`].
//!
//! A consumer never ends silently: a processor callback that panics is a failure of that
//! call, and the worker releases the lease of a consumer task that ends for any reason.

mod delivery;
mod gather;
pub(crate) mod guard;
mod lanes;
mod poll;
mod progress;
mod read;
mod single;
mod windows;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::policy::Trigger;
use crate::checkpoint::{Checkpoint, CheckpointError, Checkpointer, LeaseCheckpointer, SequenceNumber};
use crate::config::{Config, OnRetriesExhausted};
use crate::dead_letter::DeadLetterSink;
use crate::lease::held::HeldLease;
use crate::lease::{LeaseKey, LeaseStore, LeaseUpdate};
use crate::metrics::Metrics;
use crate::processor::{InitializeInput, RecordProcessor, RecordProcessorFactory};
use crate::shard::ShardId;
use crate::shard::lineage::first_unfinished_parent;
use crate::source::{ShardIterator, SourceErrorKind, StartPosition, StreamRecord, StreamSource, UndecodableRecord};
use crate::status::{ShardState, StatusBoard};
use crate::window::{Tumbling, WindowSlot};
use guard::{Callback, guarded};
pub(crate) use single::RecordPredicate;

/// What every consumer of one worker shares.
#[derive(Debug)]
pub(crate) struct ConsumerContext<S: StreamSource, L, D> {
    pub(crate) source: Arc<S>,
    pub(crate) store: Arc<L>,
    pub(crate) config: Arc<Config>,
    pub(crate) metrics: Metrics,
    pub(crate) status: Arc<StatusBoard>,
    /// Cancelled on graceful shutdown.
    pub(crate) shutdown: CancellationToken,
    /// Told about every shard that ended, so shard sync creates the children at once
    /// (bounded: when full, the periodic sync creates them).
    pub(crate) shard_ended: mpsc::Sender<ShardId>,
    /// Where exhausted records go; `None` when the worker has no destination.
    pub(crate) dead_letter: Option<Arc<D>>,
    /// The user's Rust predicate: records for which it is false are not delivered.
    pub(crate) record_filter: Option<RecordPredicate<S::Record>>,
    /// Shards known to be closed (from shard sync's listings).
    pub(crate) closed: Arc<std::sync::Mutex<std::collections::HashSet<ShardId>>>,
    /// Woken when a shard ends on this worker: its children waiting here check at once.
    pub(crate) ended_here: tokio::sync::Notify,
}

/// How a consumer finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsumerExit {
    ShardEnded,
    LeaseLost,
    Shutdown,
}

enum Fetched<R> {
    Records(Vec<R>),
    /// A record the source could not decode, with the read's error: for the failure policy.
    /// Boxed (rare): the enum stays the size of a `Vec`, and so does every batch queued
    /// between a shard's reader and its deliverer.
    Undecodable(Box<(UndecodableRecord, String)>),
    End,
}

/// Why the reader or a wait stopped early.
enum Interrupted {
    LeaseLost,
    Shutdown,
}

impl<S: StreamSource, L: LeaseStore, D: DeadLetterSink<S::Record>> ConsumerContext<S, L, D> {
    fn backoff(&self) -> impl Iterator<Item = Duration> + use<S, L, D> {
        ExponentialBuilder::default()
            .with_min_delay(self.config.min_retry_backoff)
            .with_max_delay(self.config.max_retry_backoff)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Sleeps, unless the lease is lost or shutdown (or a handoff) begins first.
    async fn pause(&self, held: &HeldLease, d: Duration) -> Result<(), Interrupted> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = held.lost_token().cancelled() => Err(Interrupted::LeaseLost),
            () = self.stop_requested(held) => Err(Interrupted::Shutdown),
        }
    }

    /// Resolves when this shard is to stop gracefully: the worker shuts down, or another
    /// worker asked for the lease (a handoff runs exactly as a shutdown of this shard).
    async fn stop_requested(&self, held: &HeldLease) {
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = held.handoff_token().cancelled() => {}
        }
    }

    fn is_stopping(&self, held: &HeldLease) -> bool {
        self.shutdown.is_cancelled() || held.handoff_requested()
    }

    /// Runs one shard until it ends, the lease is lost or shutdown completes. The processor
    /// is made here, inside the shard's task: a factory that panics ends this task only, and
    /// the worker releases the lease.
    pub(crate) async fn run<F: RecordProcessorFactory<S::Record>>(
        self: Arc<Self>,
        held: Arc<HeldLease>,
        factory: Arc<F>,
    ) -> (LeaseKey, ConsumerExit) {
        let shard = held.shard_id.clone();
        let mut processors: Vec<F::Processor> = match self.config.parallelism {
            0 | 1 => vec![factory.create(&shard)],
            lanes => (0..lanes).map(|lane| factory.create_lane(&shard, lane)).collect(),
        };
        let exit = self.run_inner(&held, &mut processors).await;
        match exit {
            ConsumerExit::LeaseLost => {
                for processor in &mut processors {
                    let _ = self.call(&shard, Callback::LeaseLost, processor.lease_lost()).await;
                }
            }
            ConsumerExit::ShardEnded | ConsumerExit::Shutdown => {}
        }
        self.status.remove(&shard, exit == ConsumerExit::ShardEnded);
        held.mark_lost();
        (held.key.clone(), exit)
    }

    /// Runs one processor callback guarded: a panic is counted, logged at error with the
    /// shard, and returned as the call's failure.
    async fn call<T>(
        &self,
        shard: &ShardId,
        callback: Callback,
        call: impl std::future::Future<Output = T>,
    ) -> Result<T, guard::Panicked> {
        let result = guarded(call).await;
        if let Err(p) = &result {
            self.metrics.processor_panics.with_label_values(&[callback.as_str()]).inc();
            tracing::error!(shard = %shard, callback = callback.as_str(), panic = %p.0,
                "processor panicked; handled as a failure of this call");
        }
        result
    }

    async fn run_inner<P: RecordProcessor<S::Record>>(
        &self,
        held: &Arc<HeldLease>,
        processors: &mut [P],
    ) -> ConsumerExit {
        let shard = held.shard_id.clone();
        self.status.update(&shard, |s| s.state = ShardState::WaitingOnParents);
        if let Err(i) = self.wait_for_parents(held).await {
            return self.interrupted(held, i, processors, None).await;
        }
        let checkpointer = LeaseCheckpointer::new(
            self.store.clone(),
            held.clone(),
            self.metrics.clone(),
            self.config.checkpoint_policy,
            self.config.checkpoint_interval,
        );
        // Tumbling windows go on from the window stored with the checkpoint.
        let checkpointer = match self.config.tumbling_window {
            Some(size) => {
                let stored = held.lock().await.window.as_deref().cloned();
                checkpointer.with_windows(WindowSlot::new(Tumbling::new(size, stored, Instant::now())))
            }
            None => checkpointer,
        };
        let checkpoint = checkpointer.current().await;
        self.status.update(&shard, |s| {
            s.state = ShardState::Processing;
            s.checkpoint = Some(checkpoint.clone());
        });
        if checkpoint.is_shard_end() {
            self.release(held).await;
            return ConsumerExit::ShardEnded;
        }
        for (lane, processor) in processors.iter_mut().enumerate() {
            if let Err(i) = self.initialize(held, processor, &checkpoint, lane).await {
                return self.interrupted(held, i, processors, Some(&checkpointer)).await;
            }
        }
        let start = match &checkpoint {
            Checkpoint::TrimHorizon | Checkpoint::ShardEnd => StartPosition::TrimHorizon,
            Checkpoint::Latest => StartPosition::Latest,
            Checkpoint::At(seq) => StartPosition::AfterSequenceNumber(seq.clone()),
        };
        // `futures`' channel, not tokio's: it allocates per batch queued, where tokio's
        // allocates a block of 32 slots and a cache-padded head per channel up front (1.3 KiB
        // a shard, idle or not). Its capacity is one more than asked (one slot per sender).
        let (tx, rx) = futures::channel::mpsc::channel(self.config.prefetch_batches.saturating_sub(1));
        let reader_stop = CancellationToken::new();
        // Batches read but not yet handled: an empty read is progress only when this is 0.
        let in_flight = std::sync::atomic::AtomicUsize::new(0);
        // Made inside `join!`, not bound first: a future bound to a local and then moved into
        // the join keeps both slots in this task's state (twice its size, for every shard).
        let ((), exit) = tokio::join!(self.read_loop(held, start, tx, reader_stop.clone(), &in_flight), async {
            let exit = match processors {
                [processor] => self.deliver_loop(held, processor, &checkpointer, rx, &in_flight).await,
                // Boxed: its state is not in the task of a shard with one lane (the default).
                lanes => Box::pin(self.lanes_loop(held, lanes, &checkpointer, rx, &in_flight)).await,
            };
            reader_stop.cancel();
            exit
        });
        exit
    }

    /// Calls `initialize` until it succeeds (an `Err` or a panic is retried with backoff;
    /// the shard shows `Retrying` with the error meanwhile).
    async fn initialize<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        checkpoint: &Checkpoint,
        lane: usize,
    ) -> Result<(), Interrupted> {
        let shard = &held.shard_id;
        let init = InitializeInput { shard_id: shard.clone(), checkpoint: checkpoint.clone(), lane };
        let mut backoff = self.backoff();
        loop {
            let error = match self.call(shard, Callback::Initialize, processor.initialize(&init)).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e.to_string(),
                Err(p) => p.to_string(),
            };
            tracing::warn!(shard = %shard, %error, "processor initialize failed; retrying");
            self.status.update(shard, |s| {
                s.state = ShardState::Retrying;
                s.last_error = Some(format!("initialize: {error}"));
            });
            let d = backoff.next().unwrap_or(self.config.max_retry_backoff);
            self.pause(held, d).await?;
        }
        self.status.update(shard, |s| {
            s.state = ShardState::Processing;
            s.last_error = None;
        });
        Ok(())
    }

    /// Waits until every parent has ended: checked when a shard ends on this worker, and
    /// every `parent_poll_interval` otherwise (for parents consumed elsewhere).
    async fn wait_for_parents(&self, held: &HeldLease) -> Result<(), Interrupted> {
        let parents = held.lock().await.parent_shard_ids.clone();
        loop {
            // Registered before the reads, so that an end in between is not missed.
            let ended = self.ended_here.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let mut checkpoints = Vec::with_capacity(parents.len());
            let mut failed = false;
            for p in &parents {
                match self.store.get(&LeaseKey::for_shard(p)).await {
                    Ok(lease) => checkpoints.push((p.clone(), lease.map(|l| l.checkpoint))),
                    Err(e) => {
                        tracing::debug!(parent = %p, error = %e, "parent lease read failed");
                        failed = true;
                    }
                }
            }
            if !failed {
                let lookup = |id: &ShardId| checkpoints.iter().find(|(p, _)| p == id).and_then(|(_, c)| c.clone());
                match first_unfinished_parent(&parents, lookup) {
                    None => return Ok(()),
                    Some(p) => tracing::debug!(parent = %p, "waiting for parent shard to end"),
                }
            }
            tokio::select! {
                r = self.pause(held, self.config.parent_poll_interval) => r?,
                () = &mut ended => {}
            }
        }
    }

    /// Stops early: on shutdown, the processor gets its last chance to checkpoint and the
    /// lease is released; on loss, nothing may be written.
    async fn interrupted<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        why: Interrupted,
        processors: &mut [P],
        checkpointer: Option<&LeaseCheckpointer<L>>,
    ) -> ConsumerExit {
        match why {
            Interrupted::LeaseLost => ConsumerExit::LeaseLost,
            Interrupted::Shutdown => {
                if let Some(cp) = checkpointer {
                    for processor in processors.iter_mut() {
                        let call = processor.shutdown_requested(cp);
                        let _ = self.call(&held.shard_id, Callback::ShutdownRequested, call).await;
                    }
                }
                self.release(held).await;
                ConsumerExit::Shutdown
            }
        }
    }

    /// Releases the lease so the next owner can start at once.
    async fn release(&self, held: &HeldLease) {
        let lease = held.lock().await;
        if held.is_lost() {
            return;
        }
        match self.store.release(&lease).await {
            Ok(LeaseUpdate::Applied(_)) => tracing::debug!(shard = %held.shard_id, "lease released"),
            Ok(LeaseUpdate::Lost) => {}
            Err(e) => tracing::warn!(shard = %held.shard_id, error = %e, "lease release failed; it will expire"),
        }
        held.mark_lost();
    }

    async fn iterator_at(
        &self,
        held: &HeldLease,
        position: &mut StartPosition,
    ) -> Result<Option<ShardIterator>, Interrupted> {
        let shard = &held.shard_id;
        let mut backoff = self.backoff();
        loop {
            match self.source.shard_iterator(shard, position).await {
                Ok(it) => return Ok(Some(it)),
                Err(e) => {
                    self.metrics.read_errors.with_label_values(&[e.kind().as_str()]).inc();
                    match e.kind() {
                        SourceErrorKind::TrimmedData => {
                            self.trimmed(shard, position, &e);
                            *position = StartPosition::TrimHorizon;
                            continue;
                        }
                        SourceErrorKind::NotFound => {
                            tracing::warn!(shard = %shard, "shard no longer exists in the stream (older than its retention); treating it as ended");
                            self.metrics.trimmed_data.inc();
                            self.status.trimmed(shard);
                            return Ok(None);
                        }
                        _ => tracing::warn!(shard = %shard, error = %e, "cannot get a shard iterator; retrying"),
                    }
                }
            }
            let d = backoff.next().unwrap_or(self.config.max_retry_backoff);
            self.pause(held, d).await?;
        }
    }

    fn trimmed(&self, shard: &ShardId, position: &StartPosition, error: &crate::source::SourceError) {
        self.metrics.trimmed_data.inc();
        self.status.trimmed(shard);
        tracing::warn!(
            shard = %shard,
            from = ?position,
            %error,
            "records after this position are older than the stream's retention and are gone; resuming at the oldest retained record"
        );
    }

    /// Judges the result of one of the worker's own checkpoints: a lost lease stops the
    /// consumer; other failures are logged, and the next checkpoint covers these records.
    fn checkpointed(&self, held: &HeldLease, result: Result<(), CheckpointError>) -> Result<(), Interrupted> {
        match result {
            Ok(()) | Err(CheckpointError::BehindCurrent { .. }) => Ok(()),
            Err(CheckpointError::LeaseLost { .. }) => Err(Interrupted::LeaseLost),
            Err(e) => {
                tracing::warn!(shard = %held.shard_id, error = %e, "checkpoint failed; the next one will cover these records");
                Ok(())
            }
        }
    }

    /// Self-fencing: waits while the lease (or this worker's heartbeat) has not been renewed
    /// recently, so that nothing is delivered once another worker could take the lease.
    async fn wait_until_valid(&self, held: &HeldLease) -> Result<(), Interrupted> {
        let mut fenced = false;
        while !held.is_valid(Instant::now()) {
            if held.is_lost() {
                return Err(Interrupted::LeaseLost);
            }
            if !fenced {
                fenced = true;
                tracing::warn!(shard = %held.shard_id, "lease not renewed recently; pausing delivery (self-fencing)");
                self.status.update(&held.shard_id, |s| s.state = ShardState::Fenced);
            }
            self.pause(held, self.config.renew_interval() / 4).await?;
        }
        Ok(())
    }

    /// Ends the shard: `shard_ended` on each processor (with its lane's checkpointer from
    /// `lane_cps`), then the `SHARD_END` checkpoint.
    async fn end_shard<P: RecordProcessor<S::Record>, C: Checkpointer>(
        &self,
        held: &HeldLease,
        processors: &mut [P],
        lane_cps: &[C],
        checkpointer: &LeaseCheckpointer<L>,
    ) -> ConsumerExit {
        if self.wait_until_valid(held).await.is_err() {
            return if self.is_stopping(held) { ConsumerExit::Shutdown } else { ConsumerExit::LeaseLost };
        }
        // What is processed is durable before the processor's hook runs (it may keep failing).
        if self.checkpointed(held, checkpointer.flush().await).is_err() {
            return ConsumerExit::LeaseLost;
        }
        for (processor, cp) in processors.iter_mut().zip(lane_cps) {
            if self.shard_ended_call(held, processor, cp).await.is_err() {
                return if self.is_stopping(held) { ConsumerExit::Shutdown } else { ConsumerExit::LeaseLost };
            }
        }
        let mut backoff = self.backoff();
        loop {
            match checkpointer.write(Checkpoint::ShardEnd, None).await {
                Ok(()) => break,
                Err(CheckpointError::LeaseLost { .. }) => return ConsumerExit::LeaseLost,
                Err(e) => {
                    tracing::warn!(shard = %held.shard_id, error = %e, "SHARD_END checkpoint failed; retrying");
                    let d = backoff.next().unwrap_or(self.config.max_retry_backoff);
                    if self.pause(held, d).await.is_err() {
                        return ConsumerExit::LeaseLost;
                    }
                }
            }
        }
        tracing::info!(shard = %held.shard_id, "shard processed to its end");
        self.metrics.shards_ended.inc();
        self.ended_here.notify_waiters();
        if !tell_shard_ended(&self.shard_ended, &held.shard_id) {
            tracing::info!(shard = %held.shard_id, "shard sync is busy; the periodic sync will create the children");
        }
        self.release(held).await;
        ConsumerExit::ShardEnded
    }

    /// A graceful stop: `shutdown_requested` on each processor (with its lane's checkpointer
    /// from `lane_cps`), the checkpoint at `last_processed`, then the release.
    async fn shutdown<P: RecordProcessor<S::Record>, C: Checkpointer>(
        &self,
        held: &HeldLease,
        processors: &mut [P],
        lane_cps: &[C],
        checkpointer: &LeaseCheckpointer<L>,
        last_processed: Option<SequenceNumber>,
    ) -> ConsumerExit {
        if held.is_lost() {
            return ConsumerExit::LeaseLost;
        }
        let mut panicked = false;
        for (processor, cp) in processors.iter_mut().zip(lane_cps) {
            let flushed = self.call(&held.shard_id, Callback::ShutdownRequested, processor.shutdown_requested(cp));
            panicked |= flushed.await.is_err();
        }
        if panicked {
            // What the processor holds may not be durable: leave the checkpoint where it is, so
            // the next owner delivers those records again.
            // Under the interval policy, what was recorded is of batches that returned `Ok`.
            tracing::error!(shard = %held.shard_id, last = ?last_processed,
                "shutdown_requested panicked; not checkpointing past the processor's own (and recorded) checkpoints");
            let _ = self.checkpointed(held, checkpointer.flush().await);
            self.release(held).await;
            return ConsumerExit::Shutdown;
        }
        // A graceful stop (and a handoff, which stops the same way) writes what is recorded
        // and the last batch that returned `Ok`, at once.
        let last = match last_processed {
            Some(last) => checkpointer.offer(last, Trigger::Flush).await,
            None => checkpointer.flush().await,
        };
        let _ = self.checkpointed(held, last);
        self.release(held).await;
        ConsumerExit::Shutdown
    }
}

impl<S: StreamSource, L: LeaseStore, D: DeadLetterSink<S::Record>> ConsumerContext<S, L, D> {
    /// Calls `shard_ended`. A panic is retried with backoff (the shard shows `Retrying`);
    /// once the retries of the failure policy are exhausted, the policy decides: `DeadLetter`
    /// goes on to the `SHARD_END` checkpoint (every record was delivered; only the hook
    /// failed), `StopShard` keeps retrying.
    async fn shard_ended_call<P: RecordProcessor<S::Record>, C: Checkpointer>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        checkpointer: &C,
    ) -> Result<(), Interrupted> {
        let shard = &held.shard_id;
        let mut backoff = self.backoff();
        let mut attempts = 0u32;
        loop {
            let Err(panic) = self.call(shard, Callback::ShardEnded, processor.shard_ended(checkpointer)).await else {
                return Ok(());
            };
            attempts += 1;
            let exhausted = self.config.max_retry_attempts.is_some_and(|max| attempts > max);
            if exhausted && self.config.on_retries_exhausted == OnRetriesExhausted::DeadLetter {
                tracing::error!(shard = %shard, attempts, %panic,
                    "shard_ended keeps failing and its retries are exhausted; checkpointing SHARD_END anyway");
                return Ok(());
            }
            self.status.update(shard, |s| {
                s.state = ShardState::Retrying;
                s.last_error = Some(format!("shard_ended: {panic}"));
            });
            let d = backoff.next().unwrap_or(self.config.max_retry_backoff);
            self.pause(held, d).await?;
        }
    }
}

/// Tells shard sync that `shard` ended, without waiting: the queue is bounded, and when it is
/// full (or sync has stopped) the periodic sync creates the children instead. False then.
fn tell_shard_ended(queue: &mpsc::Sender<ShardId>, shard: &ShardId) -> bool {
    queue.try_send(shard.clone()).is_ok()
}

/// Sleeps until `due`, or forever without one.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn lag_of<R: StreamRecord>(records: &[R]) -> Option<Duration> {
    let created = records.last()?.approximate_creation_time()?;
    Some(SystemTime::now().duration_since(created).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_shard_end_queue_never_holds_the_consumer() {
        let (tx, mut rx) = mpsc::channel(1);
        let (a, b) = (ShardId::new("a"), ShardId::new("b"));
        assert!(tell_shard_ended(&tx, &a));
        // Full: returns at once (the periodic sync covers `b`) instead of waiting for room.
        assert!(!tell_shard_ended(&tx, &b));
        assert_eq!(rx.recv().await, Some(a));
        drop(rx);
        assert!(!tell_shard_ended(&tx, &b), "sync stopped");
    }
}
