//! Reading a stream (data, lease table, clock) from its start to its end.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A shard of a stream as DescribeStream lists it.
#[derive(Clone, Debug)]
pub(crate) struct DumpShard {
    pub(crate) id: String,
    pub(crate) parent: Option<String>,
    pub(crate) closed: bool,
}

/// One stream record.
#[derive(Clone, Debug)]
pub(crate) struct DumpRecord {
    pub(crate) shard: String,
    pub(crate) seq: SequenceNumber,
    pub(crate) event: &'static str,
    pub(crate) keys: HashMap<String, StreamValue>,
    pub(crate) new: Option<HashMap<String, StreamValue>>,
    pub(crate) old: Option<HashMap<String, StreamValue>>,
}

/// Every shard and every record of a stream, records in sequence-number order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Dump {
    pub(crate) shards: Vec<DumpShard>,
    pub(crate) records: Vec<DumpRecord>,
}

/// Lists a stream's shards (every page).
pub(crate) async fn list_shards(client: &aws_sdk_dynamodbstreams::Client, arn: &str) -> Vec<DumpShard> {
    use aws_sdk_dynamodbstreams::error::DisplayErrorContext;
    let mut shards = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let out = client
            .describe_stream()
            .stream_arn(arn)
            .set_exclusive_start_shard_id(start.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeStream {arn}: {}", DisplayErrorContext(e)));
        let Some(desc) = out.stream_description else { panic!("DescribeStream {arn}: no description") };
        for s in desc.shards() {
            let closed = s.sequence_number_range().and_then(|r| r.ending_sequence_number()).is_some();
            shards.push(DumpShard {
                id: s.shard_id().unwrap_or_default().to_owned(),
                parent: s.parent_shard_id().map(str::to_owned),
                closed,
            });
        }
        match desc.last_evaluated_shard_id {
            Some(last) => start = Some(last),
            None => break,
        }
    }
    shards
}

/// Reads every shard of a stream from TRIM_HORIZON to its end (a closed shard) or until two
/// reads in a row find nothing (the open shard; call it when writes have stopped).
pub(crate) async fn dump_stream(client: &aws_sdk_dynamodbstreams::Client, arn: &str) -> Dump {
    use aws_sdk_dynamodbstreams::error::DisplayErrorContext;
    let shards = list_shards(client, arn).await;
    let mut records = Vec::new();
    for shard in &shards {
        let it = client
            .get_shard_iterator()
            .stream_arn(arn)
            .shard_id(&shard.id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetShardIterator {}: {}", shard.id, DisplayErrorContext(e)));
        let mut iterator = it.shard_iterator;
        let mut empty = 0;
        while let Some(current) = iterator.take() {
            let out = client
                .get_records()
                .shard_iterator(current)
                .limit(1000)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GetRecords {}: {}", shard.id, DisplayErrorContext(e)));
            let got = out.records().len();
            for r in out.records() {
                let Some(d) = r.dynamodb() else { continue };
                let seq = d.sequence_number().unwrap_or_default();
                let event = match r.event_name() {
                    Some(OperationType::Insert) => "INSERT",
                    Some(OperationType::Modify) => "MODIFY",
                    Some(OperationType::Remove) => "REMOVE",
                    other => panic!("{arn}: record {seq} with event {other:?}"),
                };
                records.push(DumpRecord {
                    shard: shard.id.clone(),
                    seq: SequenceNumber::parse(seq).unwrap_or_else(|e| panic!("sequence number {seq:?}: {e}")),
                    event,
                    keys: d.keys().cloned().unwrap_or_default(),
                    new: d.new_image().cloned(),
                    old: d.old_image().cloned(),
                });
            }
            empty = if got == 0 { empty + 1 } else { 0 };
            if empty >= 2 {
                break;
            }
            iterator = out.next_shard_iterator;
        }
    }
    records.sort_by(|a, b| a.seq.cmp(&b.seq));
    Dump { shards, records }
}

pub(crate) fn stream_s(item: Option<&HashMap<String, StreamValue>>, name: &str) -> Option<String> {
    match item?.get(name)? {
        StreamValue::S(s) => Some(s.clone()),
        _ => None,
    }
}

pub(crate) fn stream_n(item: Option<&HashMap<String, StreamValue>>, name: &str) -> Option<i64> {
    match item?.get(name)? {
        StreamValue::N(n) => n.parse().ok(),
        _ => None,
    }
}

/// The streams of several tables as one, as a multi-stream worker sees them: each stream's
/// shard ids (and parents) prefixed with its name and `:` (none for an empty name: a worker
/// of one stream), records in sequence-number order (DynamoDB Local numbers the records of
/// all streams from one counter).
pub(crate) fn merge_dumps(named: Vec<(String, Dump)>) -> Dump {
    let mut merged = Dump::default();
    for (name, dump) in named {
        let id = |s: &str| if name.is_empty() { s.to_owned() } else { format!("{name}:{s}") };
        merged.shards.extend(dump.shards.into_iter().map(|s| DumpShard {
            id: id(&s.id),
            parent: s.parent.as_deref().map(id),
            closed: s.closed,
        }));
        merged.records.extend(dump.records.into_iter().map(|r| DumpRecord { shard: id(&r.shard), ..r }));
    }
    merged.records.sort_by(|a, b| a.seq.cmp(&b.seq));
    merged
}
