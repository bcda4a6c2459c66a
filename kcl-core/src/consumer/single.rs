//! Delivering a shard without lanes: what the reader fetched is filtered, gathered into
//! batches (the batching window) and delivered one batch at a time, with the checkpoint
//! offered after each. Also the event filter that lanes share.

use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc;
use tokio::time::Instant;

use super::gather::Gatherer;
use super::{ConsumerContext, ConsumerExit, Fetched, Interrupted, lag_of, sleep_until};
use crate::checkpoint::policy::Trigger;
use crate::checkpoint::{LeaseCheckpointer, SequenceNumber};
use crate::dead_letter::DeadLetterSink;
use crate::lease::LeaseStore;
use crate::lease::held::HeldLease;
use crate::processor::{Batch, RecordProcessor};
use crate::source::{StreamRecord, StreamSource};

/// A Rust predicate over records (see `Worker::with_record_filter`).
pub(crate) struct RecordPredicate<R>(Arc<dyn Fn(&R) -> bool + Send + Sync>);

impl<R> RecordPredicate<R> {
    pub(crate) fn new(keep: impl Fn(&R) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(keep))
    }

    fn keeps(&self, record: &R) -> bool {
        (self.0)(record)
    }
}

impl<R> Clone for RecordPredicate<R> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<R> std::fmt::Debug for RecordPredicate<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordPredicate(..)")
    }
}

impl<S: StreamSource, L: LeaseStore, D: DeadLetterSink<S::Record>> ConsumerContext<S, L, D> {
    pub(super) async fn deliver_loop<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        checkpointer: &LeaseCheckpointer<L>,
        mut rx: mpsc::Receiver<Fetched<S::Record>>,
        in_flight: &std::sync::atomic::AtomicUsize,
    ) -> ConsumerExit {
        let mut gather = Gatherer::new(self.config.batch_size, self.config.batching_window);
        let mut last_processed: Option<SequenceNumber> = None;
        let one = std::slice::from_mut(processor);
        loop {
            // A coalesced checkpoint is written once its interval passed, also when no batch
            // comes any more; gathered records once their batching window passed.
            let (flush_due, gather_due) = (checkpointer.flush_due(), gather.due());
            let window_due = checkpointer.windows().and_then(|w| w.lock().close_due());
            let next = tokio::select! {
                biased;
                _ = held.lost_token().cancelled() => return ConsumerExit::LeaseLost,
                () = self.stop_requested(held) => {
                    // The partial batch first (once: a failure now stops at once).
                    let partial = gather.take();
                    let _ = Box::pin(self.deliver_ready(held, &mut one[0], checkpointer, partial, &mut last_processed)).await;
                    return Box::pin(self.shutdown(held, one, std::slice::from_ref(checkpointer), checkpointer, last_processed)).await;
                }
                next = rx.next() => next,
                () = sleep_until(gather_due) => {
                    let due = gather.take_if_due(Instant::now());
                    match Box::pin(self.deliver_ready(held, &mut one[0], checkpointer, due, &mut last_processed)).await {
                        Ok(()) => continue,
                        Err(Interrupted::LeaseLost) => return ConsumerExit::LeaseLost,
                        Err(Interrupted::Shutdown) => {
                            return Box::pin(self.shutdown(held, one, std::slice::from_ref(checkpointer), checkpointer, last_processed)).await;
                        }
                    }
                }
                () = sleep_until(flush_due) => {
                    if self.checkpointed(held, Box::pin(checkpointer.on_timer()).await).is_err() {
                        return ConsumerExit::LeaseLost;
                    }
                    continue;
                }
                () = sleep_until(window_due) => {
                    // A tumbling window's time is over: what is gathered first, then its end.
                    let partial = gather.take();
                    let closed = match Box::pin(self.deliver_ready(held, &mut one[0], checkpointer, partial, &mut last_processed)).await {
                        Ok(()) => match checkpointer.windows() {
                            Some(slot) => Box::pin(self.close_if_over(held, &mut one[0], checkpointer, slot, last_processed.as_ref())).await,
                            None => Ok(()),
                        },
                        Err(e) => Err(e),
                    };
                    match closed {
                        Ok(()) => continue,
                        Err(Interrupted::LeaseLost) => return ConsumerExit::LeaseLost,
                        Err(Interrupted::Shutdown) => {
                            return Box::pin(self.shutdown(held, one, std::slice::from_ref(checkpointer), checkpointer, last_processed)).await;
                        }
                    }
                }
            };
            let handled = match next {
                Some(Fetched::Records(records)) => {
                    let read_last = records.last().map(|r| r.sequence_number().clone());
                    if let (Some(slot), Some(t)) =
                        (checkpointer.windows(), records.last().and_then(StreamRecord::approximate_creation_time))
                    {
                        slot.lock().saw(t, Instant::now());
                    }
                    let (kept, filtered) = self.filter(records);
                    let mut result = Ok(());
                    for batch in gather.push(kept, Instant::now()) {
                        result = Box::pin(self.deliver_ready(
                            held,
                            &mut one[0],
                            checkpointer,
                            Some(batch),
                            &mut last_processed,
                        ))
                        .await;
                        if result.is_err() {
                            break;
                        }
                    }
                    if let (Ok(()), true, true, Some(last)) = (&result, filtered > 0, gather.is_empty(), read_last) {
                        // The read ended in records nobody needs: the checkpoint moves past them.
                        last_processed = Some(last.clone());
                        result = self.checkpointed(held, checkpointer.offer(last, Trigger::Processed).await);
                    }
                    result
                }
                Some(Fetched::Undecodable(boxed)) => {
                    let (record, error) = *boxed;
                    let partial = gather.take();
                    match Box::pin(self.deliver_ready(held, &mut one[0], checkpointer, partial, &mut last_processed))
                        .await
                    {
                        Ok(()) => Box::pin(self.undecodable(held, checkpointer, record, &error)).await.map(|last| {
                            last_processed = Some(last);
                        }),
                        Err(e) => Err(e),
                    }
                }
                Some(Fetched::End) => {
                    let partial = gather.take();
                    let delivered =
                        Box::pin(self.deliver_ready(held, &mut one[0], checkpointer, partial, &mut last_processed))
                            .await;
                    let ended = match (delivered, checkpointer.windows()) {
                        (Ok(()), Some(slot)) => Box::pin(self.end_windows(held, &mut one[0], slot)).await,
                        (result, _) => result,
                    };
                    return match ended {
                        Ok(()) => {
                            Box::pin(self.end_shard(held, one, std::slice::from_ref(checkpointer), checkpointer)).await
                        }
                        Err(Interrupted::LeaseLost) => ConsumerExit::LeaseLost,
                        Err(Interrupted::Shutdown) => {
                            Box::pin(self.shutdown(
                                held,
                                one,
                                std::slice::from_ref(checkpointer),
                                checkpointer,
                                last_processed,
                            ))
                            .await
                        }
                    };
                }
                // The reader stopped without an end: only when interrupted.
                None if self.is_stopping(held) => Err(Interrupted::Shutdown),
                None => Err(Interrupted::LeaseLost),
            };
            match handled {
                Ok(()) => {
                    in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
                Err(Interrupted::LeaseLost) => return ConsumerExit::LeaseLost,
                Err(Interrupted::Shutdown) => {
                    return Box::pin(self.shutdown(
                        held,
                        one,
                        std::slice::from_ref(checkpointer),
                        checkpointer,
                        last_processed,
                    ))
                    .await;
                }
            }
        }
    }

    /// Delivers one batch (if there is one) and offers a checkpoint after it.
    async fn deliver_ready<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        checkpointer: &LeaseCheckpointer<L>,
        records: Option<Vec<S::Record>>,
        last_processed: &mut Option<SequenceNumber>,
    ) -> Result<(), Interrupted> {
        let Some(records) = records.filter(|r| !r.is_empty()) else { return Ok(()) };
        if let Some(slot) = checkpointer.windows() {
            return self.deliver_windows(held, processor, checkpointer, slot, records, last_processed).await;
        }
        let batch = Batch { shard_id: held.shard_id.clone(), lag: lag_of(&records), records, lane: 0 };
        let last = self.deliver(held, processor, checkpointer, batch).await?;
        *last_processed = Some(last.clone());
        self.checkpointed(held, Box::pin(checkpointer.offer(last, Trigger::Processed)).await)
    }

    /// Splits a read's records into those to deliver and those the event filter drops;
    /// returns the kept ones and how many were dropped (counted).
    fn filter(&self, records: Vec<S::Record>) -> (Vec<S::Record>, usize) {
        let before = records.len();
        let kept: Vec<S::Record> = records.into_iter().filter(|r| self.keep(r)).collect();
        let dropped = before - kept.len();
        (kept, dropped)
    }

    /// Whether the event filter lets `record` through (always, without a filter); a dropped
    /// record is counted.
    pub(super) fn keep(&self, record: &S::Record) -> bool {
        let keep = self.config.filter.as_ref().is_none_or(|f| f.matches(&record.to_filter_event()))
            && self.record_filter.as_ref().is_none_or(|p| p.keeps(record));
        if !keep {
            self.metrics.records_filtered.inc();
        }
        keep
    }
}
