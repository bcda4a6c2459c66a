//! [`DynamoStreamsSource`]: the core's [`StreamSource`] on `aws-sdk-dynamodbstreams`.
//!
//! Lists shards with paginated `DescribeStream` (100 a page), looks up a shard's children
//! with `ShardFilter` CHILD_SHARDS (falling back to the full listing when the filtered answer
//! is empty, as it always is on DynamoDB Local, or the service rejects the filter), opens
//! iterators of all four types and reads with `GetRecords`. Every service error is classified
//! into a [`SourceErrorKind`] (see the crate's error module); the SDK error stays attached as
//! the source. A `GetRecords` answer that arrived but could not be decoded, or holds a record
//! that cannot be placed in its shard, is [`SourceErrorKind::Undecodable`], naming the first
//! record when the body shows it (see [`undecodable`]).

mod identifier;
pub mod undecodable;

pub use identifier::kcl_stream_identifier;

use std::collections::HashSet;

use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{Shard, ShardFilter, ShardFilterType, ShardIteratorType, StreamStatus};
use kcl_core::{
    RecordBatch, SequenceNumber, ShardDescription, ShardId, ShardIterator, SourceError, SourceErrorKind, StartPosition,
    StreamSource,
};

use crate::boxed::Boxed;
use crate::error::{Failure, source_error, source_kind};
use crate::record::ChangeRecord;

/// Shards per `DescribeStream` page: the service's maximum.
pub const DESCRIBE_STREAM_PAGE_SIZE: i32 = 100;

/// The most records one `GetRecords` call may ask for.
pub const MAX_RECORDS_PER_READ: usize = 1000;

/// What to tell a user whose table has no usable stream.
fn enable_stream_hint(table: &str) -> String {
    format!(
        "enable a stream with StreamViewType NEW_AND_OLD_IMAGES on table {table} (for example `aws dynamodb \
         update-table --table-name {table} --stream-specification \
         StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES`)"
    )
}

/// A DynamoDB stream as a [`StreamSource`] of [`ChangeRecord`]s.
///
/// Cheap to clone (the SDK client is shared). All calls are cancellation safe: they only read.
#[derive(Clone, Debug)]
pub struct DynamoStreamsSource {
    client: Client,
    stream_arn: String,
}

impl DynamoStreamsSource {
    /// Reads the stream with this ARN. No call is made until the first use; a disabled stream
    /// can still be read this way until its records expire.
    pub fn from_stream_arn(client: Client, stream_arn: impl Into<String>) -> Self {
        Self { client, stream_arn: stream_arn.into() }
    }

    /// Reads the latest stream of `table_name`, found with `DescribeTable`.
    ///
    /// Fails with a message naming the table and the fix when the table does not exist
    /// ([`SourceErrorKind::NotFound`]), has no stream, or its stream is disabled
    /// ([`SourceErrorKind::Fatal`]).
    pub async fn from_table(
        dynamodb: &aws_sdk_dynamodb::Client,
        streams: Client,
        table_name: &str,
    ) -> Result<Self, SourceError> {
        let described = dynamodb.describe_table().table_name(table_name).send().boxed().await;
        let table = match described {
            Ok(out) => out.table.unwrap_or_else(|| aws_sdk_dynamodb::types::TableDescription::builder().build()),
            Err(err) => {
                let kind = source_kind(Failure::of(&err));
                let message = if kind == SourceErrorKind::NotFound {
                    format!(
                        "table {table_name} does not exist (check the table name, region and endpoint); once it does, {}",
                        enable_stream_hint(table_name)
                    )
                } else {
                    format!("DescribeTable {table_name} failed while looking up its stream")
                };
                return Err(source_error(&message, err));
            }
        };
        let Some(arn) = table.latest_stream_arn() else {
            let message = format!("table {table_name} has no stream: {}", enable_stream_hint(table_name));
            return Err(SourceError::new(SourceErrorKind::Fatal, message));
        };
        let enabled = match table.stream_specification() {
            Some(spec) => spec.stream_enabled(),
            // Without a specification in the answer, ask the stream itself.
            None => {
                let out = streams.describe_stream().stream_arn(arn).limit(1).send().boxed().await;
                let out = out.map_err(|e| source_error(&format!("DescribeStream {arn} of table {table_name}"), e))?;
                let status = out.stream_description.and_then(|d| d.stream_status);
                matches!(status, Some(StreamStatus::Enabled | StreamStatus::Enabling))
            }
        };
        if !enabled {
            let message = format!(
                "the stream of table {table_name} is disabled (its latest stream {arn} takes no new changes): {}",
                enable_stream_hint(table_name)
            );
            return Err(SourceError::new(SourceErrorKind::Fatal, message));
        }
        Ok(Self::from_stream_arn(streams, arn))
    }

    /// The ARN of the stream this source reads.
    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    /// One `DescribeStream` page.
    async fn describe_page(
        &self,
        start_after: Option<&str>,
        filter: Option<ShardFilter>,
    ) -> Result<(Vec<ShardDescription>, Option<String>), SourceError> {
        let out = self
            .client
            .describe_stream()
            .stream_arn(&self.stream_arn)
            .limit(DESCRIBE_STREAM_PAGE_SIZE)
            .set_exclusive_start_shard_id(start_after.map(str::to_owned))
            .set_shard_filter(filter)
            .send()
            .boxed()
            .await
            .map_err(|e| source_error(&format!("DescribeStream {}", self.stream_arn), e))?;
        let Some(description) = out.stream_description else { return Ok((Vec::new(), None)) };
        let shards =
            description.shards.unwrap_or_default().into_iter().map(describe_shard).collect::<Result<_, _>>()?;
        Ok((shards, description.last_evaluated_shard_id))
    }
}

/// Converts one listed shard.
fn describe_shard(shard: Shard) -> Result<ShardDescription, SourceError> {
    let Some(id) = shard.shard_id else {
        return Err(SourceError::new(SourceErrorKind::Fatal, "DescribeStream listed a shard without a ShardId"));
    };
    let parse = |what: &str, seq: Option<String>| {
        seq.map(|s| SequenceNumber::parse(&s)).transpose().map_err(|e| {
            SourceError::new(SourceErrorKind::Fatal, format!("DescribeStream: shard {id} has a bad {what}: {e}"))
        })
    };
    let (start, end) = match shard.sequence_number_range {
        Some(range) => (range.starting_sequence_number, range.ending_sequence_number),
        None => (None, None),
    };
    Ok(ShardDescription {
        parent_ids: shard.parent_shard_id.into_iter().map(ShardId::new).collect(),
        starting_sequence_number: parse("StartingSequenceNumber", start)?,
        ending_sequence_number: parse("EndingSequenceNumber", end)?,
        id: ShardId::new(&id),
    })
}

impl StreamSource for DynamoStreamsSource {
    type Record = ChangeRecord;

    async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError> {
        let mut all: Vec<ShardDescription> = Vec::new();
        let mut seen: HashSet<ShardId> = HashSet::new();
        let mut start_after: Option<String> = None;
        loop {
            let (page, last) = self.describe_page(start_after.as_deref(), None).await?;
            let mut new = 0;
            for shard in page {
                if seen.insert(shard.id.clone()) {
                    all.push(shard);
                    new += 1;
                }
            }
            match last {
                // An unknown ExclusiveStartShardId restarts from the first shard (DynamoDB
                // Local); a page of nothing new means that happened: stop rather than loop.
                Some(last) if new > 0 => start_after = Some(last),
                Some(_) => {
                    tracing::warn!(stream = %self.stream_arn, "DescribeStream pagination returned no new shard; stopping");
                    break;
                }
                None => break,
            }
        }
        tracing::debug!(stream = %self.stream_arn, shards = all.len(), "listed shards");
        Ok(all)
    }

    async fn child_shards(&self, parent: &ShardId) -> Result<Vec<ShardDescription>, SourceError> {
        let filter = ShardFilter::builder().r#type(ShardFilterType::ChildShards).shard_id(parent.as_str()).build();
        match self.describe_page(None, Some(filter)).await {
            Ok((children, _)) if !children.is_empty() => {
                return Ok(children.into_iter().filter(|c| c.parent_ids.contains(parent)).collect());
            }
            Ok(_) => {}
            // Where the service does not know the filter, fall back to the listing.
            Err(e) if e.kind() == SourceErrorKind::Fatal => {
                tracing::debug!(shard = %parent, error = %e, "ShardFilter CHILD_SHARDS rejected; listing all shards");
            }
            Err(e) => return Err(e),
        }
        let all = self.list_shards().await?;
        Ok(all.into_iter().filter(|s| s.parent_ids.contains(parent)).collect())
    }

    async fn shard_iterator(&self, shard: &ShardId, position: &StartPosition) -> Result<ShardIterator, SourceError> {
        let (kind, seq) = match position {
            StartPosition::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
            StartPosition::Latest => (ShardIteratorType::Latest, None),
            StartPosition::AtSequenceNumber(s) => (ShardIteratorType::AtSequenceNumber, Some(s)),
            StartPosition::AfterSequenceNumber(s) => (ShardIteratorType::AfterSequenceNumber, Some(s)),
        };
        let out = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard.as_str())
            .shard_iterator_type(kind)
            // Sent exactly as the stream gave it: DynamoDB Local wants its zero padding back.
            .set_sequence_number(seq.map(|s| s.as_str().to_owned()))
            .send()
            .boxed()
            .await
            .map_err(|e| source_error(&format!("GetShardIterator {position:?} of shard {shard}"), e))?;
        match out.shard_iterator {
            Some(iterator) => Ok(ShardIterator(iterator)),
            None => Err(SourceError::new(
                SourceErrorKind::Transient,
                format!("GetShardIterator {position:?} of shard {shard} answered without an iterator"),
            )),
        }
    }

    async fn read(&self, iterator: &ShardIterator, limit: usize) -> Result<RecordBatch<ChangeRecord>, SourceError> {
        if !(1..=MAX_RECORDS_PER_READ).contains(&limit) {
            return Err(SourceError::new(
                SourceErrorKind::Fatal,
                format!("GetRecords limit {limit} is out of range: it must be 1 to {MAX_RECORDS_PER_READ}"),
            ));
        }
        // `limit` ≤ 1000 fits in an i32.
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let out = self.client.get_records().shard_iterator(&iterator.0).limit(limit).send().boxed().await;
        let out = match out {
            Ok(out) => out,
            Err(err) => {
                return Err(match Failure::of(&err) {
                    // The whole iterator, so that the read can be repeated by hand while it lasts.
                    Failure::Undecodable { status, .. } => {
                        let context = format!(
                            "GetRecords (limit {limit}) of stream {} at iterator {}",
                            self.stream_arn, iterator.0
                        );
                        undecodable::error(&context, status, err)
                    }
                    _ => source_error(&format!("GetRecords {iterator:?} of stream {}", self.stream_arn), err),
                });
            }
        };
        let sdk_records = out.records.unwrap_or_default();
        let total = sdk_records.len();
        let mut records = Vec::with_capacity(total);
        for (i, record) in sdk_records.into_iter().enumerate() {
            match ChangeRecord::from_sdk(record) {
                Ok(record) => records.push(record),
                Err(why) => {
                    let after = records
                        .last()
                        .map(|r: &ChangeRecord| format!(", after sequence number {}", r.sequence_number()))
                        .unwrap_or_default();
                    let message = format!(
                        "GetRecords (limit {limit}) {iterator:?} of stream {}: record {} of {total}{after}: {why}",
                        self.stream_arn,
                        i + 1
                    );
                    return Err(SourceError::new(SourceErrorKind::Undecodable, message));
                }
            }
        }
        Ok(RecordBatch { records, next_iterator: out.next_shard_iterator.map(ShardIterator) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::types::SequenceNumberRange;

    #[test]
    fn shards_convert_with_lineage_and_padding() {
        let shard = Shard::builder()
            .shard_id("shardId-00000001795571920302-4c69a623")
            .parent_shard_id("shardId-00000001795571900000-00000000")
            .sequence_number_range(
                SequenceNumberRange::builder()
                    .starting_sequence_number("000000000000000000005")
                    .ending_sequence_number("000000000000000000009")
                    .build(),
            )
            .build();
        let d = describe_shard(shard).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.id.as_str(), "shardId-00000001795571920302-4c69a623");
        assert_eq!(d.parent_ids, vec![ShardId::new("shardId-00000001795571900000-00000000")]);
        assert_eq!(d.starting_sequence_number.as_ref().map(|s| s.as_str()), Some("000000000000000000005"));
        assert!(d.is_closed());

        let open = describe_shard(Shard::builder().shard_id("s").build()).unwrap_or_else(|e| panic!("{e}"));
        assert!(open.parent_ids.is_empty() && !open.is_closed());
        let bad = Shard::builder()
            .shard_id("s")
            .sequence_number_range(SequenceNumberRange::builder().starting_sequence_number("12x").build())
            .build();
        assert!(
            describe_shard(bad).is_err_and(|e| e.kind() == SourceErrorKind::Fatal && e.to_string().contains("12x"))
        );
    }

    #[test]
    fn hint_names_the_table_and_the_view_type() {
        let hint = enable_stream_hint("orders");
        assert!(hint.contains("NEW_AND_OLD_IMAGES on table orders"), "{hint}");
    }
}
