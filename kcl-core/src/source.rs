//! The [`StreamSource`] seam: where records come from.
//!
//! The core never names an AWS type. A source lists shards with their lineage, hands out
//! iterators and reads batches; its errors are classified into [`SourceErrorKind`] so the
//! consumer can react (renew an expired iterator, skip past trimmed data, back off on
//! throttling).

use std::fmt;
use std::future::Future;
use std::time::SystemTime;

use crate::checkpoint::SequenceNumber;
use crate::shard::ShardId;

/// What the core needs to know about a record. The full record type is the source's own.
pub trait StreamRecord: Send + Sync + Clone + fmt::Debug + 'static {
    /// The record's position in its shard.
    fn sequence_number(&self) -> &SequenceNumber;
    /// When the change happened, as the stream reports it (DynamoDB rounds to the second).
    fn approximate_creation_time(&self) -> Option<SystemTime>;
    /// The item the change belongs to, rendered as a string; changes to one key are ordered.
    fn partition_key(&self) -> &str;
    /// The record in the JSON shape of Lambda's DynamoDB Streams event record (`eventID`,
    /// `eventName`, `eventSource`, `dynamodb.{Keys, NewImage, OldImage, SequenceNumber, ..}`,
    /// attribute values in DynamoDB JSON such as `{"S": "x"}`): what event filters
    /// ([`FilterCriteria`](crate::FilterCriteria)) are matched against. Called only when a
    /// filter is configured.
    fn to_filter_event(&self) -> serde_json::Value;
}

/// One shard as the stream lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardDescription {
    /// The shard's id.
    pub id: ShardId,
    /// Parent shards (DynamoDB Streams has at most one; the core supports several).
    pub parent_ids: Vec<ShardId>,
    /// First sequence number in the shard.
    pub starting_sequence_number: Option<SequenceNumber>,
    /// Last sequence number, present once the shard is closed.
    pub ending_sequence_number: Option<SequenceNumber>,
}

impl ShardDescription {
    /// True once the shard is closed (it has an ending sequence number).
    pub fn is_closed(&self) -> bool {
        self.ending_sequence_number.is_some()
    }
}

/// Where to open an iterator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest retained record.
    TrimHorizon,
    /// Just after the newest record.
    Latest,
    /// At this sequence number (inclusive).
    AtSequenceNumber(SequenceNumber),
    /// Right after this sequence number.
    AfterSequenceNumber(SequenceNumber),
}

/// An opaque iterator handed out by a source. It expires (DynamoDB: after 15 minutes).
#[derive(Clone, PartialEq, Eq)]
pub struct ShardIterator(pub String);

impl fmt::Debug for ShardIterator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Iterators are long and opaque; the prefix is enough to tell them apart in logs.
        let shown: String = self.0.chars().take(24).collect();
        write!(f, "ShardIterator({shown}…)")
    }
}

/// What one read returned.
#[derive(Clone, Debug)]
pub struct RecordBatch<R> {
    /// The records, in sequence-number order (possibly empty).
    pub records: Vec<R>,
    /// The iterator for the next read; `None` means the shard is closed and fully read.
    pub next_iterator: Option<ShardIterator>,
}

/// Why a source call failed, for the consumer to decide what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SourceErrorKind {
    /// The iterator is older than the source allows; get a new one.
    ExpiredIterator,
    /// The requested position is older than the retention period; the data is gone.
    TrimmedData,
    /// Too many requests; back off and retry.
    Throttled,
    /// The stream or shard does not exist.
    NotFound,
    /// A passing fault (network, 5xx); retry.
    Transient,
    /// The request was invalid or not permitted; retrying will not help.
    Fatal,
    /// The answer (or a record in it) could not be decoded: an attribute type the client does
    /// not know, a body mangled on the way. Reading the same position again fails the same
    /// way. The consumer isolates the record by reading again with smaller limits, down to one
    /// record, and hands that record to the failure policy (see [`UndecodableRecord`]).
    Undecodable,
}

impl SourceErrorKind {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceErrorKind::ExpiredIterator => "expired_iterator",
            SourceErrorKind::TrimmedData => "trimmed_data",
            SourceErrorKind::Throttled => "throttled",
            SourceErrorKind::NotFound => "not_found",
            SourceErrorKind::Transient => "transient",
            SourceErrorKind::Fatal => "fatal",
            SourceErrorKind::Undecodable => "undecodable",
        }
    }
}

/// What a source could tell of a record it could not decode (with
/// [`SourceErrorKind::Undecodable`]): at least its sequence number, so that the consumer can
/// hand it to the failure policy (dead-letter what is kept of it, or stop the shard) and read
/// on after it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct UndecodableRecord {
    /// The record's position in its shard.
    pub sequence_number: SequenceNumber,
    /// What could be kept of the record as the source received it (for example its JSON),
    /// possibly cut short; empty when nothing could be kept.
    pub raw: String,
}

impl UndecodableRecord {
    /// The record at `sequence_number`, with what could be kept of it.
    pub fn new(sequence_number: SequenceNumber, raw: impl Into<String>) -> Self {
        Self { sequence_number, raw: raw.into() }
    }
}

/// An error from a [`StreamSource`].
#[derive(Debug, thiserror::Error)]
#[error("stream source: {message}")]
pub struct SourceError {
    kind: SourceErrorKind,
    message: String,
    undecodable: Option<Box<UndecodableRecord>>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SourceError {
    /// A new error of this kind.
    pub fn new(kind: SourceErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), undecodable: None, source: None }
    }

    /// An [`Undecodable`](SourceErrorKind::Undecodable) error naming the first record that
    /// could not be decoded.
    pub fn undecodable(message: impl Into<String>, record: UndecodableRecord) -> Self {
        Self {
            kind: SourceErrorKind::Undecodable,
            message: message.into(),
            undecodable: Some(Box::new(record)),
            source: None,
        }
    }

    /// The first record that could not be decoded, when the source could tell which.
    pub fn undecodable_record(&self) -> Option<&UndecodableRecord> {
        self.undecodable.as_deref()
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The classification.
    pub fn kind(&self) -> SourceErrorKind {
        self.kind
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, SourceErrorKind::Throttled | SourceErrorKind::Transient)
    }
}

/// A stream of shards, such as a DynamoDB stream.
///
/// Implementations must be cheap to share (`&self` methods, called concurrently from many
/// shard tasks). Calls are cancellation safe: dropping a future loses nothing but the call.
pub trait StreamSource: Send + Sync + 'static {
    /// The record type delivered to processors.
    type Record: StreamRecord;

    /// Every shard of the stream, open and closed, with lineage. Implementations paginate
    /// internally. Called by shard sync only (rate-limited services: keep calls rare).
    fn list_shards(&self) -> impl Future<Output = Result<Vec<ShardDescription>, SourceError>> + Send;

    /// The children of `parent` (used at every shard end, to start its children quickly).
    /// The default filters [`list_shards`](StreamSource::list_shards); sources that can ask for
    /// one shard's children (DynamoDB's `ShardFilter`) should override it.
    fn child_shards(
        &self,
        parent: &ShardId,
    ) -> impl Future<Output = Result<Vec<ShardDescription>, SourceError>> + Send {
        let parent = parent.clone();
        async move {
            let shards = self.list_shards().await?;
            Ok(shards.into_iter().filter(|s| s.parent_ids.contains(&parent)).collect())
        }
    }

    /// An iterator at `position` in `shard`.
    fn shard_iterator(
        &self,
        shard: &ShardId,
        position: &StartPosition,
    ) -> impl Future<Output = Result<ShardIterator, SourceError>> + Send;

    /// Reads up to `limit` (1..=1000) records at `iterator`.
    fn read(
        &self,
        iterator: &ShardIterator,
        limit: usize,
    ) -> impl Future<Output = Result<RecordBatch<Self::Record>, SourceError>> + Send;

    /// The name of the stream `shard` belongs to, for the `stream` label of the per-stream
    /// metrics (records processed, iterator age): a [`MultiStream`](crate::MultiStream)'s
    /// stream name. `None` (the default) for a source of one stream: the label is then empty,
    /// which Prometheus treats as no label.
    fn stream_of(&self, shard: &ShardId) -> Option<&str> {
        let _ = shard;
        None
    }

    /// Whether this source reads `shard`. A worker leaves the leases of shards its source does
    /// not consume alone (it neither takes, balances nor deletes them): the leases of a stream
    /// removed from a [`MultiStream`](crate::MultiStream)'s configuration, which workers still
    /// configured with it go on consuming. The default: every shard.
    fn consumes(&self, shard: &ShardId) -> bool {
        let _ = shard;
        true
    }
}
