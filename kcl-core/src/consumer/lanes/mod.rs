//! Lanes: a shard's records split by item key into ordered lanes, each delivered to its own
//! processor instance, concurrently, inside the shard's task.
//!
//! The dispatcher reads what the reader fetched, filters and gathers it into batches, and
//! sends each batch's records to their lanes' queues (bounded: `prefetch_batches` batches a
//! lane, so a slow or failing lane holds the others back by at most that much). Each lane
//! delivers under the failure policy exactly as a shard without lanes does. The shard's
//! checkpoint moves only to the [`LaneTracker`]'s safe point: the highest record below which
//! every record is handled, whatever lane it went to.

mod tracker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::gather::Gatherer;
use super::progress::Progress;
use super::{ConsumerContext, ConsumerExit, Fetched, Interrupted, sleep_until};
use crate::checkpoint::policy::Trigger;
use crate::checkpoint::{CheckpointError, Checkpointer, LeaseCheckpointer, SequenceNumber};
use crate::dead_letter::DeadLetterSink;
use crate::lease::LeaseStore;
use crate::lease::held::HeldLease;
use crate::processor::{Batch, RecordProcessor};
use crate::source::{StreamRecord, StreamSource, UndecodableRecord};
pub(crate) use tracker::{LaneTracker, lane_of};

/// What a lane's queue carries.
enum LaneItem<R> {
    Records(Vec<R>),
    Undecodable(UndecodableRecord, String),
}

/// How the dispatcher stopped.
enum Dispatched {
    /// The shard is fully read and every record dispatched.
    End,
    Stop,
    Lost,
}

/// How a lane stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LaneEnd {
    /// Its queue closed and everything in it was delivered.
    Drained,
    Stop,
    Lost,
}

/// A lane's checkpointer: what the lane handled is reported to the tracker, and the shard's
/// checkpoint is offered the tracker's safe point.
#[derive(Debug)]
pub(super) struct LaneCheckpointer<'a, L> {
    shard: &'a LeaseCheckpointer<L>,
    tracker: &'a Mutex<LaneTracker>,
    lane: usize,
    last_delivered: Mutex<Option<SequenceNumber>>,
}

impl<L: LeaseStore> LaneCheckpointer<'_, L> {
    fn last(&self) -> Option<SequenceNumber> {
        self.last_delivered.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    async fn handled(&self, seq: SequenceNumber, trigger: Trigger) -> Result<(), CheckpointError> {
        if self.shard.is_lost() {
            return Err(CheckpointError::LeaseLost { shard: self.shard.shard_id().to_string() });
        }
        let safe = {
            let mut t = self.tracker.lock().unwrap_or_else(PoisonError::into_inner);
            t.handled(self.lane, &seq);
            t.safe_point().cloned()
        };
        match safe {
            Some(safe) => self.shard.offer(safe, trigger).await,
            None => Ok(()),
        }
    }
}

impl<L: LeaseStore> Progress for LaneCheckpointer<'_, L> {
    fn delivered(&self, seq: SequenceNumber) {
        *self.last_delivered.lock().unwrap_or_else(PoisonError::into_inner) = Some(seq);
    }

    async fn offer(&self, seq: SequenceNumber, trigger: Trigger) -> Result<(), CheckpointError> {
        self.handled(seq, trigger).await
    }
}

impl<L: LeaseStore> Checkpointer for LaneCheckpointer<'_, L> {
    /// This lane has handled its records up to the last one delivered to it; the shard's
    /// checkpoint moves as far as every lane has got.
    async fn checkpoint(&self) -> Result<(), CheckpointError> {
        let Some(seq) = self.last() else { return Err(CheckpointError::NothingDelivered) };
        self.handled(seq, Trigger::Requested).await
    }

    async fn checkpoint_at(&self, sequence_number: &SequenceNumber) -> Result<(), CheckpointError> {
        let last = self.last();
        if last.as_ref().is_none_or(|l| sequence_number > l) {
            return Err(CheckpointError::BeyondDelivered { requested: sequence_number.clone(), last_delivered: last });
        }
        self.handled(sequence_number.clone(), Trigger::Requested).await
    }
}

impl<S: StreamSource, L: LeaseStore, D: DeadLetterSink<S::Record>> ConsumerContext<S, L, D> {
    /// Delivers a shard through `processors.len()` lanes until it ends, the lease is lost or
    /// a stop is asked for.
    pub(super) async fn lanes_loop<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        processors: &mut [P],
        checkpointer: &LeaseCheckpointer<L>,
        rx: futures::channel::mpsc::Receiver<Fetched<S::Record>>,
        in_flight: &AtomicUsize,
    ) -> ConsumerExit {
        let tracker = Mutex::new(LaneTracker::default());
        let lanes = processors.len();
        let cps: Vec<LaneCheckpointer<'_, L>> = (0..lanes)
            .map(|lane| LaneCheckpointer {
                shard: checkpointer,
                tracker: &tracker,
                lane,
                last_delivered: Mutex::new(None),
            })
            .collect();
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..lanes).map(|_| mpsc::channel::<LaneItem<S::Record>>(self.config.prefetch_batches)).unzip();
        let dispatch = self.dispatch_loop(held, checkpointer, rx, senders, &tracker, in_flight);
        let lane_runs = processors
            .iter_mut()
            .zip(receivers)
            .zip(&cps)
            .enumerate()
            .map(|(lane, ((p, queue), cp))| self.lane_loop(held, lane, p, cp, queue));
        let (dispatched, ends) = tokio::join!(dispatch, futures::future::join_all(lane_runs));
        if held.is_lost() || matches!(dispatched, Dispatched::Lost) || ends.contains(&LaneEnd::Lost) {
            return ConsumerExit::LeaseLost;
        }
        if matches!(dispatched, Dispatched::End) && ends.iter().all(|e| *e == LaneEnd::Drained) {
            return Box::pin(self.end_shard(held, processors, &cps, checkpointer)).await;
        }
        let safe = tracker.lock().unwrap_or_else(PoisonError::into_inner).safe_point().cloned();
        Box::pin(self.shutdown(held, processors, &cps, checkpointer, safe)).await
    }

    /// Reads what was fetched, filters, gathers and dispatches to the lanes' queues. Returns
    /// (dropping the queues, so the lanes finish what they hold) at the shard's end, a stop
    /// or a lost lease.
    async fn dispatch_loop(
        &self,
        held: &HeldLease,
        checkpointer: &LeaseCheckpointer<L>,
        mut rx: futures::channel::mpsc::Receiver<Fetched<S::Record>>,
        lanes: Vec<mpsc::Sender<LaneItem<S::Record>>>,
        tracker: &Mutex<LaneTracker>,
        in_flight: &AtomicUsize,
    ) -> Dispatched {
        // Each lane gathers its own batches (of up to `batch_size` records, as Lambda does).
        let mut gathers: Vec<Gatherer<S::Record>> =
            (0..lanes.len()).map(|_| Gatherer::new(self.config.batch_size, self.config.batching_window)).collect();
        loop {
            let flush_due = checkpointer.flush_due();
            let gather_due = gathers.iter().filter_map(Gatherer::due).min();
            let next = tokio::select! {
                biased;
                _ = held.lost_token().cancelled() => return Dispatched::Lost,
                () = self.stop_requested(held) => {
                    // The partial batches first, where a lane's queue has room: the lanes
                    // finish what they were sent. (A batch that finds no room is not
                    // delivered; the checkpoint stays below it.)
                    for (lane, gather) in lanes.iter().zip(gathers.iter_mut()) {
                        if let Some(records) = gather.take() {
                            let _ = lane.try_send(LaneItem::Records(records));
                        }
                    }
                    return Dispatched::Stop;
                }
                next = futures::StreamExt::next(&mut rx) => next,
                () = sleep_until(gather_due) => {
                    let now = Instant::now();
                    let due: Vec<_> = gathers.iter_mut().map(|g| g.take_if_due(now)).collect();
                    match self.send_each(held, &lanes, due).await {
                        Ok(()) => continue,
                        Err(Interrupted::Shutdown) => return Dispatched::Stop,
                        Err(Interrupted::LeaseLost) => return Dispatched::Lost,
                    }
                }
                () = sleep_until(flush_due) => {
                    if self.checkpointed(held, Box::pin(checkpointer.on_timer()).await).is_err() {
                        return Dispatched::Lost;
                    }
                    continue;
                }
            };
            let sent = match next {
                Some(Fetched::Records(records)) => {
                    let (kept, filtered) = self.filter_tracked(records, lanes.len(), tracker);
                    let now = Instant::now();
                    let ready: Vec<Vec<Vec<S::Record>>> =
                        kept.into_iter().zip(gathers.iter_mut()).map(|(part, g)| g.push(part, now)).collect();
                    let mut result = self.send_ready(held, &lanes, ready).await;
                    if let (Ok(()), true) = (&result, filtered > 0) {
                        // Records nobody needs may move the checkpoint on their own.
                        let safe = tracker.lock().unwrap_or_else(PoisonError::into_inner).safe_point().cloned();
                        if let Some(safe) = safe {
                            result = self.checkpointed(held, checkpointer.offer(safe, Trigger::Processed).await);
                        }
                    }
                    result
                }
                Some(Fetched::Undecodable(boxed)) => match self.send_partials(held, &lanes, &mut gathers).await {
                    Ok(()) => {
                        let (record, error) = *boxed;
                        tracker
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .dispatched(0, record.sequence_number.clone());
                        self.send_to(held, &lanes[0], LaneItem::Undecodable(record, error)).await
                    }
                    Err(e) => Err(e),
                },
                Some(Fetched::End) => {
                    return match self.send_partials(held, &lanes, &mut gathers).await {
                        Ok(()) => Dispatched::End,
                        Err(Interrupted::Shutdown) => Dispatched::Stop,
                        Err(Interrupted::LeaseLost) => Dispatched::Lost,
                    };
                }
                None if self.is_stopping(held) => Err(Interrupted::Shutdown),
                None => Err(Interrupted::LeaseLost),
            };
            match sent {
                Ok(()) => {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                }
                Err(Interrupted::Shutdown) => return Dispatched::Stop,
                Err(Interrupted::LeaseLost) => return Dispatched::Lost,
            }
        }
    }

    /// Filters a read's records and registers each with the tracker in order: a kept record
    /// under its lane, a dropped one as skipped. Returns the kept records of each lane and how
    /// many were dropped.
    fn filter_tracked(
        &self,
        records: Vec<S::Record>,
        lanes: usize,
        tracker: &Mutex<LaneTracker>,
    ) -> (Vec<Vec<S::Record>>, usize) {
        let mut t = tracker.lock().unwrap_or_else(PoisonError::into_inner);
        let mut kept: Vec<Vec<S::Record>> = (0..lanes).map(|_| Vec::new()).collect();
        let mut dropped = 0;
        for r in records {
            if self.keep(&r) {
                let lane = lane_of(r.partition_key(), lanes);
                t.dispatched(lane, r.sequence_number().clone());
                kept[lane].push(r);
            } else {
                t.skipped(r.sequence_number().clone());
                dropped += 1;
            }
        }
        (kept, dropped)
    }

    /// Sends every lane's gathered records at once (shard end, a stop, an undecodable record).
    async fn send_partials(
        &self,
        held: &HeldLease,
        lanes: &[mpsc::Sender<LaneItem<S::Record>>],
        gathers: &mut [Gatherer<S::Record>],
    ) -> Result<(), Interrupted> {
        let partials: Vec<_> = gathers.iter_mut().map(Gatherer::take).collect();
        self.send_each(held, lanes, partials).await
    }

    /// Sends each lane its ready batches, the lanes concurrently (a lane with a full queue
    /// does not hold the others' batches back), each lane's in order. Returns once all are
    /// queued: a slow lane holds the next read back, so the others run ahead by at most their
    /// queues and one read.
    async fn send_ready(
        &self,
        held: &HeldLease,
        lanes: &[mpsc::Sender<LaneItem<S::Record>>],
        ready: Vec<Vec<Vec<S::Record>>>,
    ) -> Result<(), Interrupted> {
        let sends = ready.into_iter().zip(lanes).map(|(batches, lane)| async move {
            for batch in batches {
                self.send_to(held, lane, LaneItem::Records(batch)).await?;
            }
            Ok::<(), Interrupted>(())
        });
        futures::future::join_all(sends).await.into_iter().collect()
    }

    /// Sends each lane its batch, if it has one.
    async fn send_each(
        &self,
        held: &HeldLease,
        lanes: &[mpsc::Sender<LaneItem<S::Record>>],
        batches: Vec<Option<Vec<S::Record>>>,
    ) -> Result<(), Interrupted> {
        for (lane, batch) in batches.into_iter().enumerate() {
            if let Some(records) = batch {
                self.send_to(held, &lanes[lane], LaneItem::Records(records)).await?;
            }
        }
        Ok(())
    }

    /// Waits for room in a lane's queue, unless the lease is lost or a stop is asked for.
    async fn send_to(
        &self,
        held: &HeldLease,
        lane: &mpsc::Sender<LaneItem<S::Record>>,
        item: LaneItem<S::Record>,
    ) -> Result<(), Interrupted> {
        tokio::select! {
            biased;
            _ = held.lost_token().cancelled() => Err(Interrupted::LeaseLost),
            () = self.stop_requested(held) => Err(Interrupted::Shutdown),
            sent = lane.send(item) => sent.map_err(|_| Interrupted::Shutdown),
        }
    }

    /// One lane: delivers what its queue holds, in order, under the failure policy, until the
    /// queue closes (everything in it delivered), the lease is lost or a failing delivery is
    /// interrupted by a stop.
    async fn lane_loop<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        lane: usize,
        processor: &mut P,
        cp: &LaneCheckpointer<'_, L>,
        mut queue: mpsc::Receiver<LaneItem<S::Record>>,
    ) -> LaneEnd {
        // Records taken from the queue and not delivered yet: while the lane was busy, what
        // queued up is delivered in batches as full as `batch_size` allows (a read's records
        // rarely split evenly over lanes, and a short remainder costs a whole call).
        let mut buffered: Vec<S::Record> = Vec::new();
        let mut held_over: Option<LaneItem<S::Record>> = None;
        loop {
            if buffered.is_empty() {
                let item = match held_over.take() {
                    Some(item) => Some(item),
                    None => {
                        // Each lane also writes a coalesced checkpoint that fell due (the
                        // dispatcher may be waiting for room in a slow lane's queue).
                        let due = cp.shard.flush_due();
                        tokio::select! {
                            biased;
                            _ = held.lost_token().cancelled() => return LaneEnd::Lost,
                            item = queue.recv() => item,
                            () = sleep_until(due) => {
                                if self.checkpointed(held, Box::pin(cp.shard.on_timer()).await).is_err() {
                                    return LaneEnd::Lost;
                                }
                                continue;
                            }
                        }
                    }
                };
                match item {
                    None => return LaneEnd::Drained,
                    Some(LaneItem::Records(records)) => buffered = records,
                    Some(LaneItem::Undecodable(record, error)) => {
                        match Box::pin(self.undecodable(held, cp, record, &error)).await {
                            Ok(_) => continue,
                            Err(Interrupted::LeaseLost) => return LaneEnd::Lost,
                            Err(Interrupted::Shutdown) => return LaneEnd::Stop,
                        }
                    }
                }
            }
            let batch_size = self.config.batch_size;
            while held_over.is_none() && buffered.len() < batch_size {
                match queue.try_recv() {
                    Ok(LaneItem::Records(more)) => buffered.extend(more),
                    Ok(other) => held_over = Some(other),
                    Err(_) => break,
                }
            }
            let rest = buffered.split_off(buffered.len().min(batch_size));
            let records = std::mem::replace(&mut buffered, rest);
            let batch = Batch { shard_id: held.shard_id.clone(), lag: super::lag_of(&records), records, lane };
            let done = match Box::pin(self.deliver(held, processor, cp, batch)).await {
                Ok(last) => self.checkpointed(held, cp.offer(last, Trigger::Processed).await),
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => {}
                Err(Interrupted::LeaseLost) => return LaneEnd::Lost,
                Err(Interrupted::Shutdown) => return LaneEnd::Stop,
            }
        }
    }
}
