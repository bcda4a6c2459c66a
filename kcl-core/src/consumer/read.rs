//! The reader half of a shard consumer: reads batches into the prefetch channel, renews
//! expired iterators, resumes after trimmed data, and isolates records the source cannot
//! decode.
//!
//! What to do about a failed read is [`on_read_error`], a pure function; the loop only does
//! the I/O and the waiting. A read that fails is never silent: the first failure of a run is
//! logged (at error for failures that do not heal by themselves), the shard's status carries
//! the error until a read succeeds, and the stall watchdog sees no progress meanwhile.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::SinkExt;
use futures::channel::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::poll::{IdleWaits, PollState, next_idle_wait};
use super::{ConsumerContext, Fetched, Interrupted};
use crate::config::OnRetriesExhausted;
use crate::dead_letter::DeadLetterSink;
use crate::lease::LeaseStore;
use crate::lease::held::HeldLease;
use crate::source::{ShardIterator, SourceError, SourceErrorKind, StartPosition, StreamRecord, StreamSource};

/// What the reader does after a failed read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadAction {
    /// Get a new iterator at the current position at once (the old one expired).
    NewIterator,
    /// The position is older than the retention: count it and resume at the oldest record.
    Trimmed,
    /// Back off and read again with the same iterator (throttling, passing faults).
    Retry,
    /// Back off, then get a new iterator at the current position (stream or shard missing,
    /// request refused: heals only when someone fixes it).
    RetryWithNewIterator,
    /// The answer could not be decoded: read again from the same position asking for at
    /// most this many records, to find the record that cannot be decoded.
    Shrink(usize),
    /// One record, named by the source, cannot be decoded: hand it to the failure policy
    /// (dead letter, or a loud skip without a destination) and read on after it.
    HandOver,
    /// One record cannot be decoded and may not be passed (the policy stops the shard, or
    /// the source cannot tell which record it is): hold the shard there, retrying at the
    /// longest backoff, loudly.
    Hold,
}

/// Decides what to do about a failed read of at most `limit` records.
pub(super) fn on_read_error(
    kind: SourceErrorKind,
    limit: usize,
    record_named: bool,
    policy: OnRetriesExhausted,
) -> ReadAction {
    match kind {
        SourceErrorKind::ExpiredIterator => ReadAction::NewIterator,
        SourceErrorKind::TrimmedData => ReadAction::Trimmed,
        SourceErrorKind::Undecodable if limit > 1 => ReadAction::Shrink(limit / 2),
        SourceErrorKind::Undecodable if record_named && policy == OnRetriesExhausted::DeadLetter => {
            ReadAction::HandOver
        }
        SourceErrorKind::Undecodable => ReadAction::Hold,
        SourceErrorKind::NotFound | SourceErrorKind::Fatal => ReadAction::RetryWithNewIterator,
        // Throttled, Transient, and kinds added later: a retry costs little.
        _ => ReadAction::Retry,
    }
}

/// Whether a failure of this kind is logged at error (it does not heal by itself).
fn is_serious(kind: SourceErrorKind) -> bool {
    matches!(kind, SourceErrorKind::NotFound | SourceErrorKind::Fatal | SourceErrorKind::Undecodable)
}

impl<S: StreamSource, L: LeaseStore, D: DeadLetterSink<S::Record>> ConsumerContext<S, L, D> {
    /// Reads from `position` until the shard ends or `stop` is cancelled.
    pub(super) async fn read_loop(
        &self,
        held: &HeldLease,
        position: StartPosition,
        mut tx: mpsc::Sender<Fetched<S::Record>>,
        stop: CancellationToken,
        in_flight: &AtomicUsize,
    ) {
        // Interruptions are acted on by the deliverer, which watches the same tokens.
        let _ = self.read_until_end(held, position, &mut tx, &stop, in_flight).await;
    }

    async fn read_until_end(
        &self,
        held: &HeldLease,
        mut position: StartPosition,
        tx: &mut mpsc::Sender<Fetched<S::Record>>,
        stop: &CancellationToken,
        in_flight: &AtomicUsize,
    ) -> Result<(), Interrupted> {
        let max = self.config.max_records_per_read;
        let mut limit = max;
        // While isolating an undecodable record: how many records from `position` on hold it.
        let mut window = 0usize;
        let mut iterator: Option<ShardIterator> = None;
        let mut backoff = self.backoff();
        // The kind of the failures in a row so far, so that only the first is logged loudly.
        let mut failing: Option<SourceErrorKind> = None;
        let waits = IdleWaits::of(&self.config);
        let mut poll = PollState::new(Instant::now());
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let it = match iterator.take() {
                Some(it) => it,
                None => match Box::pin(self.iterator_at(held, &mut position)).await? {
                    Some(it) => it,
                    None => {
                        let _ = tx.send(Fetched::End).await;
                        return Ok(());
                    }
                },
            };
            let started = Instant::now();
            // Boxed, here and below: the task of an idle shard then holds only the small state it
            // waits in, not room for the largest call (10,000 idle shards, 10,000 tasks).
            let read = Box::pin(self.source.read(&it, limit)).await;
            let elapsed = started.elapsed().as_secs_f64();
            let error = match read {
                Ok(batch) => {
                    self.metrics.read_ok_seconds.observe(elapsed);
                    backoff = self.backoff();
                    if failing.take().is_some() {
                        tracing::info!(shard = %held.shard_id, ?position, "reads succeed again");
                        self.status.update(&held.shard_id, |s| s.last_error = None);
                    }
                    let empty = batch.records.is_empty();
                    if window > 0 {
                        // Read past the window (or caught up): the failure did not come back.
                        window = if empty { 0 } else { window.saturating_sub(batch.records.len()) };
                        if window == 0 {
                            limit = max;
                        }
                    }
                    if let Some(last) = batch.records.last() {
                        position = StartPosition::AfterSequenceNumber(last.sequence_number().clone());
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        if !self.send(tx, stop, Fetched::Records(batch.records)).await {
                            return Ok(());
                        }
                    }
                    let Some(next) = batch.next_iterator else {
                        let _ = tx.send(Fetched::End).await;
                        return Ok(());
                    };
                    iterator = Some(next);
                    let wait;
                    (wait, poll) = next_idle_wait(&waits, poll, !empty, Instant::now());
                    if empty {
                        self.at_head(held, in_flight);
                    }
                    if !wait.is_zero() {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = stop.cancelled() => return Ok(()),
                        }
                    }
                    continue;
                }
                Err(e) => e,
            };
            self.metrics.read_seconds.with_label_values(&["error"]).observe(elapsed);
            self.metrics.read_errors.with_label_values(&[error.kind().as_str()]).inc();
            let first = failing.replace(error.kind()) != Some(error.kind());
            let action = on_read_error(
                error.kind(),
                limit,
                error.undecodable_record().is_some(),
                self.config.on_retries_exhausted,
            );
            self.read_failed(held, &position, &error, action, first);
            match action {
                ReadAction::NewIterator => {}
                ReadAction::Trimmed => {
                    self.trimmed(&held.shard_id, &position, &error);
                    position = StartPosition::TrimHorizon;
                }
                ReadAction::Retry | ReadAction::RetryWithNewIterator | ReadAction::Hold => {
                    let d = match action {
                        ReadAction::Hold => self.config.max_retry_backoff,
                        _ => backoff.next().unwrap_or(self.config.max_retry_backoff),
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = stop.cancelled() => return Ok(()),
                    }
                    if action == ReadAction::Retry {
                        iterator = Some(it);
                    }
                }
                ReadAction::Shrink(smaller) => {
                    // The record lies within the `limit` records this read asked for.
                    window = limit;
                    limit = smaller;
                }
                ReadAction::HandOver => {
                    // `on_read_error` hands over only a named record.
                    let Some(record) = error.undecodable_record().cloned() else { continue };
                    position = StartPosition::AfterSequenceNumber(record.sequence_number.clone());
                    (limit, window) = (max, 0);
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    if !self.send(tx, stop, Fetched::Undecodable(Box::new((record, error.to_string())))).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Sends to the deliverer; false when the reader should stop.
    async fn send(
        &self,
        tx: &mut mpsc::Sender<Fetched<S::Record>>,
        stop: &CancellationToken,
        fetched: Fetched<S::Record>,
    ) -> bool {
        tokio::select! {
            r = tx.send(fetched) => r.is_ok(),
            _ = stop.cancelled() => false,
        }
    }

    /// An empty read of an open shard: caught up (progress), once every batch read before it
    /// was handled. A closed shard has no head to wait at: empty reads before its end do not
    /// count.
    fn at_head(&self, held: &HeldLease, in_flight: &AtomicUsize) {
        let closed = self.closed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&held.shard_id);
        if in_flight.load(Ordering::SeqCst) == 0 && !closed {
            self.status.caught_up(&held.shard_id);
        }
    }

    /// Logs a failed read (loudly the first of a run, when it does not heal by itself) and
    /// shows it in the shard's status.
    fn read_failed(
        &self,
        held: &HeldLease,
        position: &StartPosition,
        error: &SourceError,
        action: ReadAction,
        first: bool,
    ) {
        let shard = &held.shard_id;
        let kind = error.kind().as_str();
        let undecodable = error.undecodable_record().map(|r| r.sequence_number.to_string());
        if error.kind() != SourceErrorKind::ExpiredIterator {
            let shown = format!("{kind}: {error}");
            self.status.update(shard, |s| s.last_error = Some(shown));
        }
        match action {
            ReadAction::Shrink(_) if first => tracing::error!(shard = %shard, after = ?position, %error,
                "cannot decode the answer of a read; reading again with smaller limits to isolate the record"),
            ReadAction::Shrink(limit) => tracing::debug!(shard = %shard, after = ?position, limit, "read undecodable"),
            ReadAction::HandOver => tracing::error!(shard = %shard, after = ?position, record = ?undecodable, %error,
                "one record cannot be decoded; handing it to the failure policy and reading on after it"),
            ReadAction::Hold if first => tracing::error!(shard = %shard, after = ?position, record = ?undecodable,
                %error, policy = ?self.config.on_retries_exhausted,
                "a record cannot be decoded and cannot be passed (no record named, or the policy stops the shard); \
                 the shard waits here and retries at the longest backoff"),
            _ if first && is_serious(error.kind()) => {
                tracing::error!(shard = %shard, after = ?position, %error, kind, "read failed; retrying")
            }
            _ => tracing::debug!(shard = %shard, after = ?position, %error, kind, "read failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OnRetriesExhausted::{DeadLetter, StopShard};
    use ReadAction::*;
    use SourceErrorKind::*;

    #[test]
    fn read_errors_table() {
        let cases = [
            (ExpiredIterator, 1000, false, DeadLetter, NewIterator),
            (TrimmedData, 1000, false, DeadLetter, Trimmed),
            (Throttled, 1000, false, DeadLetter, Retry),
            (Transient, 1, false, StopShard, Retry),
            (NotFound, 1000, false, DeadLetter, RetryWithNewIterator),
            (Fatal, 10, false, DeadLetter, RetryWithNewIterator),
            // Undecodable: halve the limit down to one record, then decide about that record.
            (Undecodable, 1000, true, DeadLetter, Shrink(500)),
            (Undecodable, 3, false, DeadLetter, Shrink(1)),
            (Undecodable, 2, true, StopShard, Shrink(1)),
            (Undecodable, 1, true, DeadLetter, HandOver),
            (Undecodable, 1, true, StopShard, Hold),
            (Undecodable, 1, false, DeadLetter, Hold),
        ];
        for (kind, limit, named, policy, want) in cases {
            assert_eq!(
                on_read_error(kind, limit, named, policy),
                want,
                "{kind:?} limit {limit} named {named} {policy:?}"
            );
        }
    }

    #[test]
    fn halving_reaches_one_record_in_ten_reads() {
        let mut limit = 1000;
        let mut reads = 0;
        while let Shrink(next) = on_read_error(Undecodable, limit, true, DeadLetter) {
            limit = next;
            reads += 1;
        }
        assert_eq!((limit, reads), (1, 9));
    }
}
