//! The [`DeadLetterSink`] seam: where records go when a batch keeps failing.
//!
//! When the failure policy's retries are exhausted (see [`Config`](crate::Config)), the
//! consumer hands the failed records to the sink and moves on. Sending is retried: if the sink
//! keeps failing, the shard stops there rather than skip records.

use std::future::Future;

use crate::checkpoint::SequenceNumber;
use crate::shard::ShardId;
use crate::source::{StreamRecord, UndecodableRecord};

/// Records that could not be processed, with why.
///
/// Either `records` holds the records that failed, or (`records` empty) `undecodable` names a
/// record the source could not decode, which never reached the processor.
#[derive(Debug)]
#[non_exhaustive]
pub struct DeadLetter<'a, R> {
    /// The shard they come from.
    pub shard_id: &'a ShardId,
    /// The records, in order; empty only for an undecodable record.
    pub records: &'a [R],
    /// A record the source could not decode (see
    /// [`SourceErrorKind::Undecodable`](crate::SourceErrorKind::Undecodable)).
    pub undecodable: Option<&'a UndecodableRecord>,
    /// `process_records` calls made for them.
    pub attempts: u32,
    /// The last error.
    pub error: &'a str,
}

impl<'a, R: StreamRecord> DeadLetter<'a, R> {
    /// A letter for records that failed in `process_records`.
    pub fn new(shard_id: &'a ShardId, records: &'a [R], attempts: u32, error: &'a str) -> Self {
        Self { shard_id, records, undecodable: None, attempts, error }
    }

    /// A letter for a record the source could not decode.
    pub fn for_undecodable(shard_id: &'a ShardId, record: &'a UndecodableRecord, error: &'a str) -> Self {
        Self { shard_id, records: &[], undecodable: Some(record), attempts: 0, error }
    }

    /// The first record's sequence number.
    pub fn first_sequence_number(&self) -> Option<&SequenceNumber> {
        match self.records.first() {
            Some(r) => Some(r.sequence_number()),
            None => self.undecodable.map(|u| &u.sequence_number),
        }
    }
    /// The last record's sequence number.
    pub fn last_sequence_number(&self) -> Option<&SequenceNumber> {
        match self.records.last() {
            Some(r) => Some(r.sequence_number()),
            None => self.undecodable.map(|u| &u.sequence_number),
        }
    }
}

/// Why a dead-letter destination refused records, for the consumer to decide how to wait.
///
/// Whatever the kind, the consumer never skips the records: it holds the shard and sends them
/// again. A retryable kind is retried with the failure policy's backoff; any other kind needs
/// someone to fix the destination, so it is logged as an error naming the fix and retried at
/// the longest backoff (`retry_backoff`'s upper bound), until the fix is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterErrorKind {
    /// A passing fault (network, timeout, 5xx); retry.
    Transient,
    /// Too many requests; back off and retry.
    Throttled,
    /// The destination does not exist: create it or configure another one.
    NotFound,
    /// Credentials, permissions or an encryption key refuse the send: grant access.
    AccessDenied,
    /// The destination refused these records (too large, content it does not take); sending
    /// the same again fails until the destination's settings or the sink's change.
    Rejected,
}

impl DeadLetterErrorKind {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterErrorKind::Transient => "transient",
            DeadLetterErrorKind::Throttled => "throttled",
            DeadLetterErrorKind::NotFound => "not_found",
            DeadLetterErrorKind::AccessDenied => "access_denied",
            DeadLetterErrorKind::Rejected => "rejected",
        }
    }

    /// Whether sending the same records again soon may succeed without anyone fixing anything.
    pub fn is_retryable(self) -> bool {
        matches!(self, DeadLetterErrorKind::Transient | DeadLetterErrorKind::Throttled)
    }
}

/// The sink failed; the consumer holds the shard and sends again (see [`DeadLetterErrorKind`]).
#[derive(Debug, thiserror::Error)]
#[error("dead-letter destination: {message}")]
pub struct DeadLetterError {
    kind: DeadLetterErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl DeadLetterError {
    /// A new error of this kind. The message should name the destination and the fix.
    pub fn new(kind: DeadLetterErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }
    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    /// The classification.
    pub fn kind(&self) -> DeadLetterErrorKind {
        self.kind
    }
    /// Whether sending the same records again soon may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

/// A destination for records that keep failing (an SQS queue, a table, a file).
///
/// `send` must be durable when it returns `Ok`: the consumer checkpoints past the records
/// right after. It may be called again with the same records after a crash (at-least-once).
pub trait DeadLetterSink<R: StreamRecord>: Send + Sync + 'static {
    /// Stores the records.
    fn send(&self, letter: &DeadLetter<'_, R>) -> impl Future<Output = Result<(), DeadLetterError>> + Send;
}

/// The sink type of a worker with no dead-letter destination. Never called.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDeadLetter;

impl<R: StreamRecord> DeadLetterSink<R> for NoDeadLetter {
    async fn send(&self, _: &DeadLetter<'_, R>) -> Result<(), DeadLetterError> {
        Err(DeadLetterError::new(DeadLetterErrorKind::NotFound, "no dead-letter destination is configured"))
    }
}
