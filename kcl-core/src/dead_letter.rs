//! The [`DeadLetterSink`] seam: where records go when a batch keeps failing.
//!
//! When the failure policy's retries are exhausted (see [`Config`](crate::Config)), the
//! consumer hands the failed records to the sink and moves on. Sending is retried: if the sink
//! keeps failing, the shard stops there rather than skip records.

use std::future::Future;

use crate::checkpoint::SequenceNumber;
use crate::shard::ShardId;
use crate::source::StreamRecord;

/// Records that could not be processed, with why.
#[derive(Debug)]
pub struct DeadLetter<'a, R> {
    /// The shard they come from.
    pub shard_id: &'a ShardId,
    /// The records, in order; never empty.
    pub records: &'a [R],
    /// `process_records` calls made for them.
    pub attempts: u32,
    /// The last error.
    pub error: &'a str,
}

impl<R: StreamRecord> DeadLetter<'_, R> {
    /// The first record's sequence number.
    pub fn first_sequence_number(&self) -> Option<&SequenceNumber> {
        self.records.first().map(StreamRecord::sequence_number)
    }
    /// The last record's sequence number.
    pub fn last_sequence_number(&self) -> Option<&SequenceNumber> {
        self.records.last().map(StreamRecord::sequence_number)
    }
}

/// The sink failed; the consumer retries with backoff.
#[derive(Debug, thiserror::Error)]
#[error("dead-letter destination: {message}")]
pub struct DeadLetterError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl DeadLetterError {
    /// A new error.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), source: None }
    }
    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
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
        Err(DeadLetterError::new("no dead-letter destination is configured"))
    }
}
