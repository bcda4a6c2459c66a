//! Delivering one batch under the failure policy: retries with jittered backoff, bisecting,
//! partial batch failures, the processing timeout, and, once retries are exhausted, the
//! dead-letter destination, a skip (no destination) or a stop of the shard.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::guard::Callback;
use super::progress::Progress;
use super::{ConsumerContext, Interrupted};
use crate::checkpoint::SequenceNumber;
use crate::checkpoint::policy::Trigger;
use crate::config::OnRetriesExhausted;
use crate::dead_letter::{DeadLetter, DeadLetterSink};
use crate::lease::LeaseStore;
use crate::lease::held::HeldLease;
use crate::processor::{Batch, RecordProcessor};
use crate::source::{StreamRecord, StreamSource, UndecodableRecord};
use crate::status::ShardState;
use crate::window::WindowSlot;

/// What became of one attempt at a part of a batch.
enum Attempt {
    /// Processed, dead-lettered or skipped: go on.
    Done,
    /// Failed; its records are back in the queue: back off first.
    Retry,
}

impl<S: StreamSource, L: LeaseStore, D: DeadLetterSink<S::Record>> ConsumerContext<S, L, D> {
    /// Counts `n` records handled, under the shard's stream.
    fn processed(&self, held: &HeldLease, n: usize) {
        let stream = self.source.stream_of(&held.shard_id).unwrap_or("");
        self.metrics.records_processed.with_label_values(&[stream]).inc_by(n as u64);
    }

    /// Delivers one batch under the failure policy: retries with backoff, optional bisecting,
    /// partial batch failures, a timeout per call, and, once retries are exhausted, the
    /// dead-letter destination (or a stop of the shard). Returns the last record's number.
    pub(super) async fn deliver<P: RecordProcessor<S::Record>, C: Progress>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        checkpointer: &C,
        batch: Batch<S::Record>,
    ) -> Result<SequenceNumber, Interrupted> {
        let (lag, lane) = (batch.lag, batch.lane);
        let Some(last_of_batch) = batch.last_sequence_number().cloned() else {
            // Unreachable: the reader never sends empty batches.
            return Err(Interrupted::LeaseLost);
        };
        // Pending parts of the batch, in order, with the attempts already spent on each.
        let mut pending: VecDeque<(Vec<S::Record>, u32)> = VecDeque::new();
        pending.push_back((batch.records, 0));
        let mut backoff = self.backoff();
        while let Some((records, attempts)) = pending.pop_front() {
            let part = Batch { shard_id: held.shard_id.clone(), records, lag, lane };
            match self.attempt(held, processor, checkpointer, part, attempts, &mut pending).await? {
                Attempt::Done => backoff = self.backoff(),
                Attempt::Retry => {
                    let d = backoff.next().unwrap_or(self.config.max_retry_backoff);
                    self.pause(held, d).await?;
                }
            }
        }
        Ok(last_of_batch)
    }

    /// One call of `process_records` on `part`; on failure, what is left of it goes back to
    /// the front of `pending` (split in two when bisecting).
    async fn attempt<P: RecordProcessor<S::Record>, C: Progress>(
        &self,
        held: &HeldLease,
        processor: &mut P,
        checkpointer: &C,
        mut part: Batch<S::Record>,
        attempts: u32,
        pending: &mut VecDeque<(Vec<S::Record>, u32)>,
    ) -> Result<Attempt, Interrupted> {
        self.wait_until_valid(held).await?;
        let Some(last) = part.last_sequence_number().cloned() else { return Ok(Attempt::Done) };
        checkpointer.delivered(last.clone());
        let started = Instant::now();
        let windows = checkpointer.windows();
        let (callback, name) = match windows {
            None => (Callback::ProcessRecords, "process_records"),
            Some(_) => (Callback::ProcessWindow, "process_window"),
        };
        // With tumbling windows the call takes the open window's state and returns the next.
        let window = windows.and_then(WindowSlot::snapshot);
        let call = self.call(&held.shard_id, callback, async {
            match &window {
                None => processor.process_records(&part, checkpointer).await.map(|()| None),
                Some(w) => processor.process_window(&part, w).await.map(Some),
            }
        });
        let panicked = |p: super::guard::Panicked| crate::processor::ProcessorError::new(format!("{name} {p}"));
        let result = match self.config.processing_timeout {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(r) => r.unwrap_or_else(|p| Err(panicked(p))),
                Err(_) => {
                    self.metrics.processing_timeouts.inc();
                    Err(crate::processor::ProcessorError::new(format!(
                        "{name} did not return within {limit:?} and was cancelled"
                    )))
                }
            },
            None => call.await.unwrap_or_else(|p| Err(panicked(p))),
        };
        self.metrics.batch_seconds.observe(started.elapsed().as_secs_f64());
        let error = match result {
            Ok(state) => {
                if let (Some(slot), Some(state)) = (windows, state) {
                    self.window_state(held, processor, slot, state).await?;
                }
                self.metrics.batches_ok.inc();
                self.processed(held, part.records.len());
                self.status.processed(&held.shard_id, part.records.len() as u64, last, part.lag);
                return Ok(Attempt::Done);
            }
            Err(e) => e,
        };
        self.metrics.batches.with_label_values(&["error"]).inc();
        let shown = error.to_string();
        self.status.update(&held.shard_id, |s| {
            s.state = ShardState::Retrying;
            s.last_error = Some(shown);
        });
        let attempts = attempts + 1;
        // With tumbling windows a partial failure counts as a failure of the whole call: the
        // state returned with it is not the state of the handled part.
        if let (Some(first_failed), None) = (error.first_failed().cloned(), windows) {
            // Partial batch failure: everything before `first_failed` is handled.
            let done = part.records.iter().take_while(|r| *r.sequence_number() < first_failed).count();
            if done > 0 {
                let handled = part.records[done - 1].sequence_number().clone();
                self.processed(held, done);
                self.status.processed(&held.shard_id, done as u64, handled.clone(), part.lag);
                let written = checkpointer.offer(handled, Trigger::Requested).await;
                self.checkpointed(held, written)?;
                part.records.drain(..done);
                if part.records.is_empty() {
                    return Ok(Attempt::Done);
                }
            }
        }
        let too_old = self.config.max_record_age.is_some_and(|max| {
            let oldest = part.records.first().and_then(StreamRecord::approximate_creation_time);
            oldest.is_some_and(|t| SystemTime::now().duration_since(t).unwrap_or(Duration::ZERO) > max)
        });
        let out_of_attempts = self.config.max_retry_attempts.is_some_and(|max| attempts > max);
        let splittable = self.config.bisect_on_failure && part.records.len() > 1;
        // Bisecting narrows a failure down to single records before giving up on any.
        let exhausted = too_old || (out_of_attempts && !splittable);
        let first = part.records.first().map(|r| r.sequence_number().clone());
        tracing::warn!(
            shard = %held.shard_id, error = %error, attempts, records = part.records.len(),
            first = ?first, last = %last, exhausted, "process_records failed"
        );
        if exhausted && self.config.on_retries_exhausted == OnRetriesExhausted::DeadLetter {
            let message = error.to_string();
            let letter = DeadLetter::new(&held.shard_id, &part.records, attempts, &message);
            self.give_up(held, checkpointer, &letter).await?;
            return Ok(Attempt::Done);
        }
        if splittable {
            let second = part.records.split_off(part.records.len() / 2);
            pending.push_front((second, attempts));
        }
        pending.push_front((part.records, attempts));
        Ok(Attempt::Retry)
    }

    /// A record the source could not decode (isolated by the reader): dead-letter what the
    /// source kept of it, or, with no destination, skip it loudly; then checkpoint past it.
    /// Returns its sequence number.
    pub(super) async fn undecodable<C: Progress>(
        &self,
        held: &HeldLease,
        checkpointer: &C,
        record: UndecodableRecord,
        error: &str,
    ) -> Result<SequenceNumber, Interrupted> {
        self.wait_until_valid(held).await?;
        self.metrics.undecodable_records.inc();
        checkpointer.delivered(record.sequence_number.clone());
        let letter = DeadLetter::for_undecodable(&held.shard_id, &record, error);
        self.give_up(held, checkpointer, &letter).await?;
        Ok(record.sequence_number)
    }

    /// Retries are exhausted: dead-letter the records (retrying the sink until it takes them),
    /// or, with no destination, skip them loudly. Then checkpoint past them.
    async fn give_up<C: Progress>(
        &self,
        held: &HeldLease,
        checkpointer: &C,
        letter: &DeadLetter<'_, S::Record>,
    ) -> Result<(), Interrupted> {
        let (Some(first), Some(last)) = (letter.first_sequence_number(), letter.last_sequence_number()) else {
            return Ok(());
        };
        let (first, last) = (first.clone(), last.clone());
        let (attempts, error) = (letter.attempts, letter.error);
        let count = letter.records.len().max(1) as u64;
        match &self.dead_letter {
            Some(sink) => {
                let mut backoff = self.backoff();
                while let Err(e) = sink.send(letter).await {
                    let kind = e.kind();
                    self.metrics.dead_letter_failures.with_label_values(&[kind.as_str()]).inc();
                    self.status.update(&held.shard_id, |s| s.state = ShardState::WaitingOnDeadLetter);
                    // A destination that is missing or refuses access will not heal by itself:
                    // wait the longest backoff between sends, until someone fixes it.
                    let d = match kind.is_retryable() {
                        true => backoff.next().unwrap_or(self.config.max_retry_backoff),
                        false => self.config.max_retry_backoff,
                    };
                    tracing::error!(shard = %held.shard_id, %first, %last, error = %e, kind = kind.as_str(),
                        retry_in = ?d, "cannot send failed records to the dead-letter destination; the shard waits");
                    self.pause(held, d).await?;
                }
                self.metrics.dead_lettered.inc_by(count);
                self.status.given_up(count, true);
                tracing::warn!(shard = %held.shard_id, %first, %last, count, "records sent to the dead-letter destination");
            }
            None => {
                self.metrics.skipped.inc_by(count);
                self.status.given_up(count, false);
                tracing::error!(shard = %held.shard_id, %first, %last, count, attempts, error,
                    "retries exhausted and no dead-letter destination is configured: records skipped");
            }
        }
        self.status.update(&held.shard_id, |s| s.state = ShardState::Processing);
        // Past a dead letter the checkpoint is written at once, whatever the policy.
        let written = checkpointer.offer(last, Trigger::Flush).await;
        self.checkpointed(held, written)
    }
}
