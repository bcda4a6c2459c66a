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
//! ([`ITEM_CONCURRENCY`] at a time).

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::error::DisplayErrorContext;
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
    /// concurrently. Stops at the first failure; since every write is idempotent, the whole
    /// slice may simply be applied again.
    pub async fn apply_all(&self, records: &[ChangeRecord]) -> Result<(), ReplicateError> {
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
        while let Some(result) = results.next().await {
            result?;
        }
        Ok(())
    }

    /// Applies one item's changes one after the other.
    async fn apply_in_order(&self, group: Vec<&ChangeRecord>) -> Result<(), ReplicateError> {
        for record in group {
            self.apply(record).await?;
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
        self.replicator.apply_all(&batch.records).await.map_err(|e| {
            ProcessorError::new(format!("replicating shard {} into {}", batch.shard_id, self.replicator.table()))
                .with_source(e)
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
}
