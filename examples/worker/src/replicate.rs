//! The `replicate` processor: copies every change into another DynamoDB table, idempotently.
//!
//! Each write carries the source record's sequence number in [`SEQ_ATTRIBUTE`] (zero-padded to
//! 40 digits, so that string order is numeric order) and is conditional on
//! `attribute_not_exists(_kcl_seq) OR _kcl_seq < :seq`: a change older than what the target
//! already holds never overwrites it. A replayed batch (after a crash or a lease move) or a
//! replayed older change is therefore harmless, and a conditional-check failure simply means
//! "a newer change is already there".
//!
//! - INSERT and MODIFY put the record's new image (the stream needs `NEW_IMAGE` or
//!   `NEW_AND_OLD_IMAGES`).
//! - REMOVE puts a *tombstone* instead of deleting: the keys, `_kcl_seq` and
//!   [`DELETED_ATTRIBUTE`] = true. Deleting would forget the sequence number, and a replayed
//!   older INSERT could then resurrect the item. Readers of the target table skip items with
//!   `_kcl_deleted = true`.
//! - Other event names (DynamoDB Local reports TTL deletions as `UNKNOWN_TO_SDK_VERSION`) are
//!   treated by their images: a new image is put, a record with only an old image is a removal.
//!
//! The ordering relies on DynamoDB Streams numbering a later change of an item with a larger
//! sequence number, also across a parent shard and its children.
//!
//! Records of a batch are applied per item in stream order, different items concurrently
//! ([`ITEM_CONCURRENCY`] at a time). A record that cannot be applied fails the batch from that
//! record on ([`ProcessorError::partial`]): everything before it is checkpointed, and the
//! worker's failure policy retries, bisects, dead-letters or skips it (`--max-retry-attempts`,
//! `--bisect-on-failure`, `--dead-letter-queue-url`); the processor itself never retries.
//!
//! **The item size limit.** DynamoDB refuses items over 400 KB ([`MAX_ITEM_BYTES`], attribute
//! names included). The marker attribute adds [`MARKER_BYTES`], so a source item within about
//! that much of the limit cannot be copied: [`ReplicateError::ItemTooLarge`] names the item's
//! key, its size with and without the marker, the limit and the marker attribute.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use futures::StreamExt;
use kcl_adapter::{AttributeValue, ChangeRecord, EventName, Item};
use kcl_core::{Batch, Checkpointer, ProcessorError, RecordProcessor, SequenceNumber};
use prometheus::{IntCounterVec, Opts, Registry};

/// The attribute holding the sequence number of the change a target item reflects.
pub const SEQ_ATTRIBUTE: &str = "_kcl_seq";
/// The attribute marking a tombstone (the source item was deleted).
pub const DELETED_ATTRIBUTE: &str = "_kcl_deleted";
/// Items of one batch written concurrently.
pub const ITEM_CONCURRENCY: usize = 16;
/// DynamoDB's item size limit (400 KB), attribute names and values together.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;
/// What the marker attribute adds to an item: its name and the 40-digit sequence number.
pub const MARKER_BYTES: usize = SEQ_ATTRIBUTE.len() + SequenceNumber::MAX_DIGITS;

/// The condition every replicated write carries.
const NEWER_ONLY: &str = "attribute_not_exists(#seq) OR #seq < :seq";

/// A sequence number as a 40-digit zero-padded string: string order equals numeric order.
pub fn padded_sequence(seq: &SequenceNumber) -> String {
    format!("{:0>width$}", seq.significant_digits(), width = SequenceNumber::MAX_DIGITS)
}

/// What applying one change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The new image was written.
    Written,
    /// A tombstone was written for a removal.
    Tombstoned,
    /// The target already reflects this change or a newer one: nothing was written.
    AlreadyNewer,
}

impl Applied {
    fn as_str(self) -> &'static str {
        match self {
            Applied::Written => "written",
            Applied::Tombstoned => "tombstoned",
            Applied::AlreadyNewer => "already_newer",
        }
    }
}

/// Why a change could not be replicated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicateError {
    /// An INSERT or MODIFY without a new image: the stream's view type must be `NEW_IMAGE` or
    /// `NEW_AND_OLD_IMAGES`.
    #[error(
        "record {event_id} ({event}) has no new image: replication needs a stream with view type NEW_IMAGE or \
         NEW_AND_OLD_IMAGES"
    )]
    MissingNewImage {
        /// The record's event id.
        event_id: String,
        /// Its event name.
        event: String,
    },
    /// The item with the marker attribute is over DynamoDB's item size limit: it cannot be
    /// replicated (not retryable).
    #[error(
        "item {key} cannot be replicated into {table}: with the marker attribute {marker} it is about {size} bytes, \
         over DynamoDB's item size limit of {limit} bytes (the source item is about {source_size} bytes; the marker \
         adds {marker_bytes}); DynamoDB said: {message}"
    )]
    ItemTooLarge {
        /// The item's key attributes, as `name=value` pairs.
        key: String,
        /// The target table.
        table: String,
        /// The estimated size of the item as written, with the marker.
        size: usize,
        /// The estimated size of the item without the marker.
        source_size: usize,
        /// DynamoDB's limit ([`MAX_ITEM_BYTES`]).
        limit: usize,
        /// The marker attribute ([`SEQ_ATTRIBUTE`]).
        marker: &'static str,
        /// What the marker adds ([`MARKER_BYTES`]).
        marker_bytes: usize,
        /// What the service said.
        message: String,
    },
    /// The write to the target table failed (and the SDK's retries did not help).
    #[error("writing record {event_id} to table {table} failed: {message}")]
    Write {
        /// The record's event id.
        event_id: String,
        /// The target table.
        table: String,
        /// What the service said.
        message: String,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ReplicateError {
    /// Whether retrying the same record may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ReplicateError::Write { .. })
    }
}

/// A batch that could not be applied entirely: every record before `first_failed` was applied
/// (or the target already held something newer), the one at `first_failed` failed.
#[derive(Debug, thiserror::Error)]
#[error("record {first_failed}: {error}")]
pub struct BatchFailure {
    /// The lowest sequence number that failed.
    pub first_failed: SequenceNumber,
    /// Why.
    #[source]
    pub error: ReplicateError,
}

/// The size DynamoDB counts for an attribute value, estimated (numbers: about one byte per two
/// significant digits, plus one).
fn value_bytes(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.trim_start_matches(['-', '0']).len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(l) => l.iter().map(String::len).sum(),
        AttributeValue::Ns(l) => l.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(l) => l.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_bytes(v)).sum::<usize>(),
        AttributeValue::M(m) => 3 + m.iter().map(|(k, v)| 1 + k.len() + value_bytes(v)).sum::<usize>(),
        _ => 1,
    }
}

/// The size DynamoDB counts for an item, estimated: names and values.
pub fn item_bytes(item: &Item) -> usize {
    item.iter().map(|(name, value)| name.len() + value_bytes(value)).sum()
}

/// An item's key attributes as `name=value` pairs, sorted by name.
fn key_text(keys: &Item) -> String {
    let mut pairs: Vec<String> = keys
        .iter()
        .map(|(name, value)| match value {
            AttributeValue::S(s) => format!("{name}={s:?}"),
            AttributeValue::N(n) => format!("{name}={n}"),
            other => format!("{name}={other:?}"),
        })
        .collect();
    pairs.sort();
    pairs.join(", ")
}

/// Whether a refused write says the item is too large.
fn is_size_refusal(e: &aws_sdk_dynamodb::error::SdkError<PutItemError>) -> bool {
    let Some(service) = e.as_service_error() else { return false };
    let message = service.message().unwrap_or_default().to_ascii_lowercase();
    service.code() == Some("ValidationException") && message.contains("item size")
}

/// Applies changes to the target table.
#[derive(Clone, Debug)]
pub struct Replicator {
    client: aws_sdk_dynamodb::Client,
    table: Arc<str>,
    outcomes: IntCounterVec,
}

impl Replicator {
    /// Replicates into `table`, which must have the source table's key schema.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        let outcomes = IntCounterVec::new(
            Opts::new("kcl_example_replicated_total", "Changes applied to the target table, by outcome"),
            &["outcome"],
        );
        // The name and label are constants: construction cannot fail.
        let outcomes = outcomes.unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        Self { client, table: Arc::from(table.into()), outcomes }
    }

    /// Registers the outcome counter (`kcl_example_replicated_total{outcome}`) in `registry`.
    pub fn register_metrics(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.outcomes.clone()))
    }

    /// The target table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Applies one change, unless the target already holds it or a newer one.
    pub async fn apply(&self, record: &ChangeRecord) -> Result<Applied, ReplicateError> {
        let seq = AttributeValue::S(padded_sequence(record.sequence_number()));
        let removal = match record.event_name() {
            EventName::Remove => true,
            EventName::Insert | EventName::Modify => false,
            // TTL deletions on DynamoDB Local and names newer than this code: judge by images.
            EventName::Unknown(_) => record.new_image().is_none() && record.old_image().is_some(),
        };
        let (mut item, applied) = match record.new_image() {
            _ if removal => {
                let mut tombstone: Item = record.keys().clone();
                tombstone.insert(DELETED_ATTRIBUTE.to_owned(), AttributeValue::Bool(true));
                (tombstone, Applied::Tombstoned)
            }
            Some(image) => (image.clone(), Applied::Written),
            None => {
                return Err(ReplicateError::MissingNewImage {
                    event_id: record.event_id().to_owned(),
                    event: record.event_name().as_str().to_owned(),
                });
            }
        };
        item.insert(SEQ_ATTRIBUTE.to_owned(), seq.clone());
        // Kept for the size in a refusal's message (an item is at most 400 KB).
        let written = item.clone();
        let sent = self
            .client
            .put_item()
            .table_name(&*self.table)
            .set_item(Some(item))
            .condition_expression(NEWER_ONLY)
            .expression_attribute_names("#seq", SEQ_ATTRIBUTE)
            .expression_attribute_values(":seq", seq)
            .send()
            .await;
        let outcome = match sent {
            Ok(_) => applied,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => {
                Applied::AlreadyNewer
            }
            Err(e) if is_size_refusal(&e) => {
                self.outcomes.with_label_values(&["too_large"]).inc();
                let size = item_bytes(&written);
                return Err(ReplicateError::ItemTooLarge {
                    key: key_text(record.keys()),
                    table: self.table.to_string(),
                    size,
                    source_size: size.saturating_sub(MARKER_BYTES),
                    limit: MAX_ITEM_BYTES,
                    marker: SEQ_ATTRIBUTE,
                    marker_bytes: MARKER_BYTES,
                    message: e.as_service_error().map_or_else(
                        || DisplayErrorContext(&e).to_string(),
                        |s| format!("{}: {}", s.code().unwrap_or("?"), s.message().unwrap_or_default()),
                    ),
                });
            }
            Err(e) => {
                return Err(ReplicateError::Write {
                    event_id: record.event_id().to_owned(),
                    table: self.table.to_string(),
                    message: DisplayErrorContext(&e).to_string(),
                    source: Box::new(e),
                });
            }
        };
        self.outcomes.with_label_values(&[outcome.as_str()]).inc();
        Ok(outcome)
    }

    /// Applies `records` (in stream order): each item's changes in order, different items
    /// concurrently. An item whose change fails stops there; the other items go on, so that on
    /// failure every record before the lowest failed one was applied ([`BatchFailure`]). Every
    /// write is idempotent: the records from there on may simply be applied again.
    pub async fn apply_all(&self, records: &[ChangeRecord]) -> Result<(), BatchFailure> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut groups: Vec<Vec<&ChangeRecord>> = Vec::new();
        for record in records {
            let slot = *index.entry(record.partition_key()).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[slot].push(record);
        }
        // The futures are built first: a closure in a stream adapter would make the batch's
        // future not provably `Send` (higher-ranked lifetimes).
        let pending: Vec<_> = groups.into_iter().map(|group| self.apply_in_order(group)).collect();
        let mut results = futures::stream::iter(pending).buffer_unordered(ITEM_CONCURRENCY);
        let mut lowest: Option<BatchFailure> = None;
        while let Some(result) = results.next().await {
            if let Err(failure) = result
                && lowest.as_ref().is_none_or(|l| failure.first_failed < l.first_failed)
            {
                lowest = Some(failure);
            }
        }
        lowest.map_or(Ok(()), Err)
    }

    /// Applies one item's changes one after the other, stopping at the first failure.
    async fn apply_in_order(&self, group: Vec<&ChangeRecord>) -> Result<(), BatchFailure> {
        for record in group {
            self.apply(record)
                .await
                .map_err(|error| BatchFailure { first_failed: record.sequence_number().clone(), error })?;
        }
        Ok(())
    }
}

/// Replicates one shard's records through a shared [`Replicator`] and checkpoints after
/// every batch.
#[derive(Debug)]
pub struct ReplicateProcessor {
    replicator: Arc<Replicator>,
}

impl ReplicateProcessor {
    /// A processor writing through `replicator`.
    pub fn new(replicator: Arc<Replicator>) -> Self {
        Self { replicator }
    }
}

impl RecordProcessor<ChangeRecord> for ReplicateProcessor {
    async fn process_records(
        &mut self,
        batch: &Batch<ChangeRecord>,
        checkpointer: &impl Checkpointer,
    ) -> Result<(), ProcessorError> {
        // The failure policy handles a record that cannot be applied: everything before it is
        // checkpointed, and it is retried, bisected, dead-lettered or skipped from there. The
        // message carries the reason: the consumer's warning shows it.
        self.replicator.apply_all(&batch.records).await.map_err(|failure| {
            let message = format!("replicating shard {} into {}: {failure}", batch.shard_id, self.replicator.table());
            ProcessorError::partial(failure.first_failed.clone(), message).with_source(failure.error)
        })?;
        super::jsonl::checkpoint(checkpointer, &batch.shard_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_orders_numerically() {
        let p = |s: &str| padded_sequence(&SequenceNumber::parse(s).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(p("000000000000000000042"), format!("{}42", "0".repeat(38)));
        assert_eq!(p("42").len(), 40);
        assert!(p("9") < p("10"));
        assert!(p("000000000000000000999") < p("1000"));
        assert_eq!(p("0"), "0".repeat(40));
    }

    #[test]
    fn item_sizes_count_names_and_values() {
        let item: Item = [
            ("pk".to_owned(), AttributeValue::S("abc".to_owned())),
            ("v".to_owned(), AttributeValue::N("12345".to_owned())),
            ("ok".to_owned(), AttributeValue::Bool(true)),
        ]
        .into();
        // 2 + 3, 1 + (3 + 1), 2 + 1.
        assert_eq!(item_bytes(&item), 13);
        assert_eq!(MARKER_BYTES, 48);
        assert_eq!(key_text(&item), "ok=Bool(true), pk=\"abc\", v=12345");
    }
}
