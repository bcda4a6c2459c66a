//! [`MultiStream`]: several streams read as one, so that one worker holds several shards.
//!
//! DynamoDB Local gives each table's stream a single shard; a benchmark that wants workers
//! holding several leases reads several tables' streams through one source. Shard `s` of
//! stream `i` is shard `t{i}:{s}` (parents likewise), and its iterators are `{i}|{iterator}`.

use kcl_core::{
    RecordBatch, ShardDescription, ShardId, ShardIterator, SourceError, SourceErrorKind, StartPosition, StreamSource,
};

/// Several sources of the same record type, as one stream.
#[derive(Clone, Debug)]
pub struct MultiStream<S> {
    sources: Vec<S>,
}

impl<S: StreamSource> MultiStream<S> {
    /// The streams of `sources`, in this order (the order numbers the shards).
    pub fn new(sources: Vec<S>) -> Self {
        Self { sources }
    }

    /// The index of the stream a shard id (as this source names it) belongs to.
    pub fn stream_of(shard: &ShardId) -> Option<usize> {
        split_shard(shard).map(|(i, _)| i)
    }

    fn source(&self, index: usize, what: &str) -> Result<&S, SourceError> {
        self.sources
            .get(index)
            .ok_or_else(|| SourceError::new(SourceErrorKind::NotFound, format!("{what}: no stream #{index}")))
    }
}

fn outer(index: usize, shard: &ShardId) -> ShardId {
    ShardId::new(format!("t{index}:{}", shard.as_str()))
}

fn split_shard(shard: &ShardId) -> Option<(usize, ShardId)> {
    let (index, inner) = shard.as_str().strip_prefix('t')?.split_once(':')?;
    Some((index.parse().ok()?, ShardId::new(inner)))
}

fn describe(index: usize, d: ShardDescription) -> ShardDescription {
    ShardDescription {
        id: outer(index, &d.id),
        parent_ids: d.parent_ids.iter().map(|p| outer(index, p)).collect(),
        starting_sequence_number: d.starting_sequence_number,
        ending_sequence_number: d.ending_sequence_number,
    }
}

fn unknown_shard(shard: &ShardId) -> SourceError {
    SourceError::new(SourceErrorKind::NotFound, format!("shard {shard} is not named t<stream>:<shard>"))
}

impl<S: StreamSource> StreamSource for MultiStream<S> {
    type Record = S::Record;

    async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError> {
        let mut all = Vec::new();
        for (index, source) in self.sources.iter().enumerate() {
            all.extend(source.list_shards().await?.into_iter().map(|d| describe(index, d)));
        }
        Ok(all)
    }

    async fn child_shards(&self, parent: &ShardId) -> Result<Vec<ShardDescription>, SourceError> {
        let (index, inner) = split_shard(parent).ok_or_else(|| unknown_shard(parent))?;
        let children = self.source(index, parent.as_str())?.child_shards(&inner).await?;
        Ok(children.into_iter().map(|d| describe(index, d)).collect())
    }

    async fn shard_iterator(&self, shard: &ShardId, position: &StartPosition) -> Result<ShardIterator, SourceError> {
        let (index, inner) = split_shard(shard).ok_or_else(|| unknown_shard(shard))?;
        let iterator = self.source(index, shard.as_str())?.shard_iterator(&inner, position).await?;
        Ok(ShardIterator(format!("{index}|{}", iterator.0)))
    }

    async fn read(&self, iterator: &ShardIterator, limit: usize) -> Result<RecordBatch<Self::Record>, SourceError> {
        let (index, inner) = iterator
            .0
            .split_once('|')
            .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest)))
            .ok_or_else(|| SourceError::new(SourceErrorKind::ExpiredIterator, "an iterator without its stream"))?;
        let batch = self.source(index, "iterator")?.read(&ShardIterator(inner.to_owned()), limit).await?;
        Ok(RecordBatch {
            records: batch.records,
            next_iterator: batch.next_iterator.map(|it| ShardIterator(format!("{index}|{}", it.0))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids_round_trip() {
        let inner = ShardId::new("shardId-00000001-abc:def");
        let named = outer(12, &inner);
        assert_eq!(named.as_str(), "t12:shardId-00000001-abc:def");
        assert_eq!(split_shard(&named), Some((12, inner)));
        assert_eq!(split_shard(&ShardId::new("shardId-1")), None);
    }
}
