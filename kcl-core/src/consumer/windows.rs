//! Tumbling windows in the deliverer (see [`crate::window`]): a shard's records are delivered
//! in runs of one window each, a window's final call comes before any record of the next,
//! a window whose time is over is closed without waiting for a record, and a state too large
//! to store ends its window early.

use std::time::SystemTime;

use tokio::time::Instant;

use super::guard::Callback;
use super::{ConsumerContext, Interrupted, lag_of};
use crate::checkpoint::policy::Trigger;
use crate::checkpoint::{Checkpoint, LeaseCheckpointer, SequenceNumber};
use crate::dead_letter::DeadLetterSink;
use crate::lease::LeaseStore;
use crate::lease::held::HeldLease;
use crate::processor::{Batch, RecordProcessor};
use crate::source::{StreamRecord, StreamSource};
use crate::status::ShardState;
use crate::window::{MAX_WINDOW_STATE_BYTES, WindowEnd, WindowEndReason, WindowSlot};

impl<S: StreamSource, L: LeaseStore, D: DeadLetterSink<S::Record>> ConsumerContext<S, L, D> {
    /// Delivers `records` in runs of one window each, closing the open window before a run
    /// that opens the next; a checkpoint is offered after each run.
    pub(super) async fn deliver_windows<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        checkpointer: &LeaseCheckpointer<L>,
        slot: &WindowSlot,
        mut records: Vec<S::Record>,
        last_processed: &mut Option<SequenceNumber>,
    ) -> Result<(), Interrupted> {
        let runs = {
            let windows = slot.lock();
            let fallback = windows.stream_now(Instant::now()).unwrap_or_else(SystemTime::now);
            windows.runs(records.iter().map(StreamRecord::approximate_creation_time), fallback)
        };
        for run in runs {
            let rest = records.split_off(run.len.min(records.len()));
            let part = std::mem::replace(&mut records, rest);
            if let Some(bounds) = run.opens {
                if slot.snapshot().is_some() {
                    self.close_window(held, processor, slot, WindowEndReason::Elapsed, None).await?;
                }
                slot.lock().open(bounds);
            }
            let batch = Batch { shard_id: held.shard_id.clone(), lag: lag_of(&part), records: part, lane: 0 };
            let last = self.deliver(held, processor, checkpointer, batch).await?;
            *last_processed = Some(last.clone());
            self.checkpointed(held, Box::pin(checkpointer.offer(last, Trigger::Processed)).await)?;
        }
        Ok(())
    }

    /// Closes the open window if its time is over (no record of a later window came), and
    /// offers a checkpoint so that the closed window is not stored any more.
    pub(super) async fn close_if_over<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        checkpointer: &LeaseCheckpointer<L>,
        slot: &WindowSlot,
        last_processed: Option<&SequenceNumber>,
    ) -> Result<(), Interrupted> {
        if !slot.lock().is_over(Instant::now()) {
            return Ok(());
        }
        self.close_window(held, processor, slot, WindowEndReason::Elapsed, None).await?;
        let at = match (last_processed, checkpointer.current().await) {
            (Some(seq), _) => Some(seq.clone()),
            (None, Checkpoint::At(seq)) => Some(seq),
            (None, _) => None,
        };
        match at {
            Some(seq) => self.checkpointed(held, Box::pin(checkpointer.offer(seq, Trigger::Processed)).await),
            None => Ok(()),
        }
    }

    /// At the shard's end: the open window's final call, early unless its time is over.
    pub(super) async fn end_windows<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        slot: &WindowSlot,
    ) -> Result<(), Interrupted> {
        if slot.snapshot().is_none() {
            return Ok(());
        }
        self.close_window(held, processor, slot, WindowEndReason::ShardEnded, None).await
    }

    /// A `process_window` call returned `state`: it becomes the open window's, unless it is
    /// too large to store, which ends the window early (with that state) and goes on with an
    /// empty one.
    pub(super) async fn window_state<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        slot: &WindowSlot,
        state: Vec<u8>,
    ) -> Result<(), Interrupted> {
        if state.len() <= MAX_WINDOW_STATE_BYTES {
            slot.lock().set_state(state);
            return Ok(());
        }
        tracing::error!(shard = %held.shard_id, bytes = state.len(), limit = MAX_WINDOW_STATE_BYTES,
            "process_window returned a state larger than a lease item can store with the checkpoint; \
             ending the window early (window_ended with terminated_early) and going on with an empty state. \
             Keep the state smaller (aggregate, or write it elsewhere and keep a reference)");
        self.close_window(held, processor, slot, WindowEndReason::StateTooLarge, Some(state)).await
    }

    /// The final call of the open window, retried with backoff until it returns `Ok`; then
    /// the window is closed (or, for a state too large, restarted empty).
    async fn close_window<P: RecordProcessor<S::Record>>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        slot: &WindowSlot,
        reason: WindowEndReason,
        state: Option<Vec<u8>>,
    ) -> Result<(), Interrupted> {
        let Some(mut window) = slot.snapshot() else { return Ok(()) };
        if let Some(state) = state {
            window.state = state;
        }
        let over = slot.lock().stream_now(Instant::now()).is_some_and(|now| now >= window.end);
        let terminated_early = match reason {
            WindowEndReason::Elapsed => false,
            WindowEndReason::ShardEnded => !over,
            WindowEndReason::StateTooLarge => true,
        };
        let end = WindowEnd { shard_id: held.shard_id.clone(), window, reason, terminated_early };
        let shard = &held.shard_id;
        let mut backoff = self.backoff();
        let mut failed = false;
        loop {
            let error = match self.call(shard, Callback::WindowEnded, processor.window_ended(&end)).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e.to_string(),
                Err(p) => p.to_string(),
            };
            failed = true;
            tracing::warn!(shard = %shard, %error, "window_ended failed; retrying (later windows wait)");
            self.status.update(shard, |s| {
                s.state = ShardState::Retrying;
                s.last_error = Some(format!("window_ended: {error}"));
            });
            let d = backoff.next().unwrap_or(self.config.max_retry_backoff);
            self.pause(held, d).await?;
        }
        if failed {
            self.status.update(shard, |s| {
                s.state = ShardState::Processing;
                s.last_error = None;
            });
        }
        let mut windows = slot.lock();
        match reason {
            WindowEndReason::StateTooLarge => windows.set_state(Vec::new()),
            _ => {
                windows.close();
            }
        }
        self.metrics.windows_closed.with_label_values(&[reason.as_str()]).inc();
        Ok(())
    }
}
