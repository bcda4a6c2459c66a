//! One task per held lease: waits on parents, initializes the processor from the checkpoint,
//! reads with a bounded prefetch, delivers batches, and handles shard end, lease loss and
//! graceful shutdown.
//!
//! The reader and the deliverer run concurrently inside the shard's task, joined by a channel
//! of `prefetch_batches` batches: memory per shard is bounded and no extra task is spawned.
//! How one batch is delivered under the failure policy is in [`delivery`].

mod delivery;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, CheckpointError, LeaseCheckpointer, SequenceNumber};
use crate::config::Config;
use crate::dead_letter::DeadLetterSink;
use crate::lease::held::HeldLease;
use crate::lease::{LeaseKey, LeaseStore, LeaseUpdate};
use crate::metrics::Metrics;
use crate::processor::{Batch, InitializeInput, RecordProcessor};
use crate::shard::ShardId;
use crate::shard::lineage::first_unfinished_parent;
use crate::source::{ShardIterator, SourceErrorKind, StartPosition, StreamRecord, StreamSource};
use crate::status::{ShardState, StatusBoard};

/// What every consumer of one worker shares.
#[derive(Debug)]
pub(crate) struct ConsumerContext<S, L, D> {
    pub(crate) source: Arc<S>,
    pub(crate) store: Arc<L>,
    pub(crate) config: Arc<Config>,
    pub(crate) metrics: Metrics,
    pub(crate) status: Arc<StatusBoard>,
    /// Cancelled on graceful shutdown.
    pub(crate) shutdown: CancellationToken,
    /// Told about every shard that ended, so shard sync creates the children at once.
    pub(crate) shard_ended: mpsc::UnboundedSender<ShardId>,
    /// Where exhausted records go; `None` when the worker has no destination.
    pub(crate) dead_letter: Option<Arc<D>>,
    /// Shards known to be closed (from shard sync's listings).
    pub(crate) closed: Arc<std::sync::Mutex<std::collections::HashSet<ShardId>>>,
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

    /// Sleeps, unless the lease is lost or shutdown begins first.
    async fn pause(&self, held: &HeldLease, d: Duration) -> Result<(), Interrupted> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = held.lost_token().cancelled() => Err(Interrupted::LeaseLost),
            _ = self.shutdown.cancelled() => Err(Interrupted::Shutdown),
        }
    }

    /// Runs one shard until it ends, the lease is lost or shutdown completes.
    pub(crate) async fn run<P: RecordProcessor<S::Record>>(
        self: Arc<Self>,
        held: Arc<HeldLease>,
        mut processor: P,
    ) -> (LeaseKey, ConsumerExit) {
        let shard = held.shard_id.clone();
        let exit = self.run_inner(&held, &mut processor).await;
        match exit {
            ConsumerExit::LeaseLost => processor.lease_lost().await,
            ConsumerExit::ShardEnded | ConsumerExit::Shutdown => {}
        }
        self.status.remove(&shard, exit == ConsumerExit::ShardEnded);
        held.mark_lost();
        (held.key.clone(), exit)
    }

    async fn run_inner<P: RecordProcessor<S::Record>>(&self, held: &Arc<HeldLease>, processor: &mut P) -> ConsumerExit {
        let shard = held.shard_id.clone();
        self.status.update(&shard, |s| s.state = ShardState::WaitingOnParents);
        if let Err(i) = self.wait_for_parents(held).await {
            return self.interrupted(held, i, processor, None).await;
        }
        let checkpointer = LeaseCheckpointer::new(self.store.clone(), held.clone(), self.metrics.clone());
        let checkpoint = checkpointer.current().await;
        self.status.update(&shard, |s| {
            s.state = ShardState::Processing;
            s.checkpoint = Some(checkpoint.clone());
        });
        if checkpoint.is_shard_end() {
            self.release(held).await;
            return ConsumerExit::ShardEnded;
        }
        let init = InitializeInput { shard_id: shard.clone(), checkpoint: checkpoint.clone() };
        let mut backoff = self.backoff();
        while let Err(e) = processor.initialize(&init).await {
            tracing::warn!(shard = %shard, error = %e, "processor initialize failed; retrying");
            let d = backoff.next().unwrap_or(self.config.max_retry_backoff);
            if let Err(i) = self.pause(held, d).await {
                return self.interrupted(held, i, processor, Some(&checkpointer)).await;
            }
        }
        let start = match &checkpoint {
            Checkpoint::TrimHorizon | Checkpoint::ShardEnd => StartPosition::TrimHorizon,
            Checkpoint::Latest => StartPosition::Latest,
            Checkpoint::At(seq) => StartPosition::AfterSequenceNumber(seq.clone()),
        };
        let (tx, rx) = mpsc::channel(self.config.prefetch_batches);
        let reader_stop = CancellationToken::new();
        // Batches read but not yet handled: an empty read is progress only when this is 0.
        let in_flight = std::sync::atomic::AtomicUsize::new(0);
        let reader = self.read_loop(held, start, tx, reader_stop.clone(), &in_flight);
        let deliver = async {
            let exit = self.deliver_loop(held, processor, &checkpointer, rx, &in_flight).await;
            reader_stop.cancel();
            exit
        };
        let ((), exit) = tokio::join!(reader, deliver);
        exit
    }

    async fn wait_for_parents(&self, held: &HeldLease) -> Result<(), Interrupted> {
        let parents = held.lock().await.parent_shard_ids.clone();
        loop {
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
            self.pause(held, self.config.parent_poll_interval).await?;
        }
    }

    /// Stops early: on shutdown, the processor gets its last chance to checkpoint and the
    /// lease is released; on loss, nothing may be written.
    async fn interrupted<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        why: Interrupted,
        processor: &mut P,
        checkpointer: Option<&LeaseCheckpointer<L>>,
    ) -> ConsumerExit {
        match why {
            Interrupted::LeaseLost => ConsumerExit::LeaseLost,
            Interrupted::Shutdown => {
                if let Some(cp) = checkpointer {
                    processor.shutdown_requested(cp).await;
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

    async fn read_loop(
        &self,
        held: &HeldLease,
        mut position: StartPosition,
        tx: mpsc::Sender<Fetched<S::Record>>,
        stop: CancellationToken,
        in_flight: &std::sync::atomic::AtomicUsize,
    ) {
        let result: Result<(), Interrupted> = async {
            let Some(mut iterator) = Box::pin(self.iterator_at(held, &mut position)).await? else {
                let _ = tx.send(Fetched::End).await;
                return Ok(());
            };
            let mut backoff = self.backoff();
            loop {
                if stop.is_cancelled() {
                    return Ok(());
                }
                let started = Instant::now();
                // Boxed, here and below: the task of an idle shard then holds only the small state it
                // waits in, not room for the largest call (10,000 idle shards, 10,000 tasks).
                let read = Box::pin(self.source.read(&iterator, self.config.max_records_per_read)).await;
                let elapsed = started.elapsed().as_secs_f64();
                match read {
                    Ok(batch) => {
                        self.metrics.read_ok_seconds.observe(elapsed);
                        backoff = self.backoff();
                        let empty = batch.records.is_empty();
                        if let Some(last) = batch.records.last() {
                            position = StartPosition::AfterSequenceNumber(last.sequence_number().clone());
                            in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let send = tx.send(Fetched::Records(batch.records));
                            tokio::select! {
                                r = send => if r.is_err() { return Ok(()) },
                                _ = stop.cancelled() => return Ok(()),
                            }
                        }
                        match batch.next_iterator {
                            None => {
                                let _ = tx.send(Fetched::End).await;
                                return Ok(());
                            }
                            Some(next) => iterator = next,
                        }
                        if empty {
                            // At the head of an open shard: caught up. A closed shard has no
                            // head to wait at: empty reads before its end do not count.
                            let closed = self
                                .closed
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .contains(&held.shard_id);
                            if in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0 && !closed {
                                self.status.caught_up(&held.shard_id);
                            }
                            tokio::select! {
                                _ = tokio::time::sleep(self.config.idle_time_between_reads) => {}
                                _ = stop.cancelled() => return Ok(()),
                            }
                        }
                    }
                    Err(e) => {
                        self.metrics.read_seconds.with_label_values(&["error"]).observe(elapsed);
                        self.metrics.read_errors.with_label_values(&[e.kind().as_str()]).inc();
                        match e.kind() {
                            SourceErrorKind::ExpiredIterator => {
                                tracing::debug!(shard = %held.shard_id, "iterator expired; getting a new one after the last record read");
                            }
                            SourceErrorKind::TrimmedData => {
                                self.trimmed(&held.shard_id, &position, &e);
                                position = StartPosition::TrimHorizon;
                            }
                            _ => {
                                let d = backoff.next().unwrap_or(self.config.max_retry_backoff);
                                tracing::debug!(shard = %held.shard_id, error = %e, delay = ?d, "read failed; backing off");
                                tokio::select! {
                                    _ = tokio::time::sleep(d) => {}
                                    _ = stop.cancelled() => return Ok(()),
                                }
                                if e.kind() != SourceErrorKind::NotFound && e.kind() != SourceErrorKind::Fatal {
                                    continue;
                                }
                            }
                        }
                        match Box::pin(self.iterator_at(held, &mut position)).await? {
                            Some(it) => iterator = it,
                            None => {
                                let _ = tx.send(Fetched::End).await;
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
        .await;
        // Interruptions are acted on by the deliverer, which watches the same tokens.
        drop(result);
    }

    async fn deliver_loop<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        checkpointer: &LeaseCheckpointer<L>,
        mut rx: mpsc::Receiver<Fetched<S::Record>>,
        in_flight: &std::sync::atomic::AtomicUsize,
    ) -> ConsumerExit {
        let shard = held.shard_id.clone();
        let mut last_processed: Option<SequenceNumber> = None;
        loop {
            let next = tokio::select! {
                biased;
                _ = held.lost_token().cancelled() => return ConsumerExit::LeaseLost,
                _ = self.shutdown.cancelled() => {
                    return Box::pin(self.shutdown(held, processor, checkpointer, last_processed)).await;
                }
                next = rx.recv() => next,
            };
            match next {
                Some(Fetched::Records(records)) => {
                    let batch = Batch { shard_id: shard.clone(), lag: lag_of(&records), records };
                    match Box::pin(self.deliver(held, processor, checkpointer, batch)).await {
                        Ok(last) => {
                            in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                            last_processed = Some(last);
                        }
                        Err(Interrupted::LeaseLost) => return ConsumerExit::LeaseLost,
                        Err(Interrupted::Shutdown) => {
                            return Box::pin(self.shutdown(held, processor, checkpointer, last_processed)).await;
                        }
                    }
                }
                Some(Fetched::End) => return Box::pin(self.end_shard(held, processor, checkpointer)).await,
                // The reader stopped without an end: only when interrupted.
                None => {
                    if self.shutdown.is_cancelled() {
                        return Box::pin(self.shutdown(held, processor, checkpointer, last_processed)).await;
                    }
                    return ConsumerExit::LeaseLost;
                }
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

    async fn end_shard<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        checkpointer: &LeaseCheckpointer<L>,
    ) -> ConsumerExit {
        if self.wait_until_valid(held).await.is_err() {
            return if self.shutdown.is_cancelled() { ConsumerExit::Shutdown } else { ConsumerExit::LeaseLost };
        }
        processor.shard_ended(checkpointer).await;
        let mut backoff = self.backoff();
        loop {
            match checkpointer.write(Checkpoint::ShardEnd).await {
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
        let _ = self.shard_ended.send(held.shard_id.clone());
        self.release(held).await;
        ConsumerExit::ShardEnded
    }

    async fn shutdown<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        checkpointer: &LeaseCheckpointer<L>,
        last_processed: Option<SequenceNumber>,
    ) -> ConsumerExit {
        if held.is_lost() {
            return ConsumerExit::LeaseLost;
        }
        processor.shutdown_requested(checkpointer).await;
        if let Some(last) = last_processed {
            match checkpointer.write(Checkpoint::At(last)).await {
                Ok(()) | Err(CheckpointError::BehindCurrent { .. }) => {}
                Err(e) => tracing::warn!(shard = %held.shard_id, error = %e, "final checkpoint failed"),
            }
        }
        self.release(held).await;
        ConsumerExit::Shutdown
    }
}

fn lag_of<R: StreamRecord>(records: &[R]) -> Option<Duration> {
    let created = records.last()?.approximate_creation_time()?;
    Some(SystemTime::now().duration_since(created).unwrap_or(Duration::ZERO))
}
