//! [`MultiStream`]: several streams consumed by one worker and one lease table.
//!
//! Each stream has a name; its shard `s` becomes shard `{name}:{s}` (parents likewise), so
//! the lease keys of different streams never collide and one fleet balances the leases of
//! all streams together. The adapter names a DynamoDB stream the way the Java DynamoDB
//! Streams Kinesis adapter does in its multi-stream mode, so the lease keys match that
//! layout. Streams are added or removed by configuration at restart: a removed stream's
//! leases stay in the table, untouched, until it comes back.
//!
//! ```
//! use kcl_core::multi_stream::MultiStream;
//! use kcl_core::testing::sim::StreamSimulator;
//!
//! let orders = StreamSimulator::with_shards(1);
//! let payments = StreamSimulator::with_shards(1);
//! let both = MultiStream::new(vec![("orders".to_owned(), orders), ("payments".to_owned(), payments)])?;
//! assert_eq!(both.names().collect::<Vec<_>>(), ["orders", "payments"]);
//! # Ok::<(), kcl_core::multi_stream::MultiStreamError>(())
//! ```

use crate::{
    DeadLetter, DeadLetterError, DeadLetterErrorKind, DeadLetterSink, RecordBatch, ShardDescription, ShardId,
    ShardIterator, SourceError, SourceErrorKind, StartPosition, StreamRecord, StreamSource,
};

/// A stream list [`MultiStream::new`] refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MultiStreamError {
    /// No stream at all.
    #[error("no stream to consume: give at least one table or stream")]
    Empty,
    /// A stream without a name.
    #[error("stream #{0} has an empty name: every stream needs a name, its lease keys start with it")]
    EmptyName(usize),
    /// The same name twice.
    #[error("stream {0:?} is listed twice: list each table or stream once")]
    Duplicate(String),
    /// One name is another followed by `:`, so some shard ids would belong to both.
    #[error("stream names {0:?} and {1:?} are ambiguous (one is the other followed by ':'): rename one")]
    Ambiguous(String, String),
}

/// Several sources of the same record type, read as one stream.
#[derive(Clone, Debug)]
pub struct MultiStream<S> {
    streams: Vec<(String, S)>,
}

impl<S: StreamSource> MultiStream<S> {
    /// The named streams, in this order. Names must be non-empty and distinct, and no name
    /// may be another followed by `:`.
    pub fn new(streams: Vec<(String, S)>) -> Result<Self, MultiStreamError> {
        check_names(streams.iter().map(|(n, _)| n.as_str()))?;
        Ok(Self { streams })
    }

    /// The streams' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.streams.iter().map(|(n, _)| n.as_str())
    }

    /// The name of the stream a shard id (as this source names it) belongs to.
    pub fn stream_of(&self, shard: &ShardId) -> Option<&str> {
        self.split(shard).map(|(i, _)| self.streams[i].0.as_str())
    }

    /// The shard id a shard of stream `name` has in this source.
    pub fn shard_id(name: &str, inner: &ShardId) -> ShardId {
        ShardId::new(format!("{name}:{}", inner.as_str()))
    }

    fn split(&self, shard: &ShardId) -> Option<(usize, ShardId)> {
        split_shard(self.names(), shard)
    }

    fn named(&self, shard: &ShardId) -> Result<(usize, &S, ShardId), SourceError> {
        let (index, inner) = self.split(shard).ok_or_else(|| {
            SourceError::new(
                SourceErrorKind::NotFound,
                format!("shard {shard} belongs to none of the configured streams ({})", self.list()),
            )
        })?;
        Ok((index, &self.streams[index].1, inner))
    }

    fn list(&self) -> String {
        self.names().collect::<Vec<_>>().join(", ")
    }

    fn describe(&self, index: usize, d: ShardDescription) -> ShardDescription {
        let name = &self.streams[index].0;
        ShardDescription {
            id: Self::shard_id(name, &d.id),
            parent_ids: d.parent_ids.iter().map(|p| Self::shard_id(name, p)).collect(),
            starting_sequence_number: d.starting_sequence_number,
            ending_sequence_number: d.ending_sequence_number,
        }
    }
}

/// The dead-letter destination of a [`MultiStream`] worker: each letter goes to its stream's
/// sink, with the shard id as that stream names it (without the `{name}:` prefix), so each
/// sink can say which stream the records come from.
#[derive(Clone, Debug)]
pub struct MultiStreamSink<D> {
    sinks: Vec<(String, D)>,
}

impl<D> MultiStreamSink<D> {
    /// One sink per stream, named as in the [`MultiStream`] (the same rules for names).
    pub fn new(sinks: Vec<(String, D)>) -> Result<Self, MultiStreamError> {
        check_names(sinks.iter().map(|(n, _)| n.as_str()))?;
        Ok(Self { sinks })
    }
}

impl<R: StreamRecord, D: DeadLetterSink<R>> DeadLetterSink<R> for MultiStreamSink<D> {
    async fn send(&self, letter: &DeadLetter<'_, R>) -> Result<(), DeadLetterError> {
        let Some((index, inner)) = split_shard(self.sinks.iter().map(|(n, _)| n.as_str()), letter.shard_id) else {
            let names: Vec<&str> = self.sinks.iter().map(|(n, _)| n.as_str()).collect();
            return Err(DeadLetterError::new(
                DeadLetterErrorKind::NotFound,
                format!(
                    "shard {} belongs to none of the streams with a dead-letter destination ({})",
                    letter.shard_id,
                    names.join(", ")
                ),
            ));
        };
        let letter = DeadLetter { shard_id: &inner, ..*letter };
        self.sinks[index].1.send(&letter).await
    }
}

/// Checks a list of stream names (see [`MultiStream::new`]).
fn check_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<(), MultiStreamError> {
    let names: Vec<&str> = names.into_iter().collect();
    if names.is_empty() {
        return Err(MultiStreamError::Empty);
    }
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(MultiStreamError::EmptyName(i));
        }
        for other in &names[..i] {
            if other == name {
                return Err(MultiStreamError::Duplicate((*name).to_owned()));
            }
            let (short, long) = if other.len() < name.len() { (other, name) } else { (name, other) };
            if long.strip_prefix(short).is_some_and(|rest| rest.starts_with(':')) {
                return Err(MultiStreamError::Ambiguous((*short).to_owned(), (*long).to_owned()));
            }
        }
    }
    Ok(())
}

/// The index of the stream (among `names`) a shard id belongs to, and the shard id within it.
fn split_shard<'a>(names: impl Iterator<Item = &'a str>, shard: &ShardId) -> Option<(usize, ShardId)> {
    names.enumerate().find_map(|(i, name)| {
        let inner = shard.as_str().strip_prefix(name)?.strip_prefix(':')?;
        (!inner.is_empty()).then(|| (i, ShardId::new(inner)))
    })
}

fn join_iterator(index: usize, iterator: ShardIterator) -> ShardIterator {
    ShardIterator(format!("{index}|{}", iterator.0))
}

fn split_iterator(iterator: &ShardIterator) -> Option<(usize, ShardIterator)> {
    let (index, inner) = iterator.0.split_once('|')?;
    Some((index.parse().ok()?, ShardIterator(inner.to_owned())))
}

impl<S: StreamSource> StreamSource for MultiStream<S> {
    type Record = S::Record;

    fn stream_of(&self, shard: &ShardId) -> Option<&str> {
        MultiStream::stream_of(self, shard)
    }

    fn consumes(&self, shard: &ShardId) -> bool {
        self.split(shard).is_some()
    }

    async fn list_shards(&self) -> Result<Vec<ShardDescription>, SourceError> {
        let mut all = Vec::new();
        for (index, (_, source)) in self.streams.iter().enumerate() {
            all.extend(source.list_shards().await?.into_iter().map(|d| self.describe(index, d)));
        }
        Ok(all)
    }

    async fn child_shards(&self, parent: &ShardId) -> Result<Vec<ShardDescription>, SourceError> {
        let (index, source, inner) = self.named(parent)?;
        let children = source.child_shards(&inner).await?;
        Ok(children.into_iter().map(|d| self.describe(index, d)).collect())
    }

    async fn shard_iterator(&self, shard: &ShardId, position: &StartPosition) -> Result<ShardIterator, SourceError> {
        let (index, source, inner) = self.named(shard)?;
        Ok(join_iterator(index, source.shard_iterator(&inner, position).await?))
    }

    async fn read(&self, iterator: &ShardIterator, limit: usize) -> Result<RecordBatch<Self::Record>, SourceError> {
        let (index, inner) = split_iterator(iterator)
            .filter(|(i, _)| *i < self.streams.len())
            .ok_or_else(|| SourceError::new(SourceErrorKind::ExpiredIterator, "an iterator without its stream"))?;
        let batch = self.streams[index].1.read(&inner, limit).await?;
        Ok(RecordBatch {
            records: batch.records,
            next_iterator: batch.next_iterator.map(|it| join_iterator(index, it)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let cases: &[(&[&str], Result<(), MultiStreamError>)] = &[
            (&[], Err(MultiStreamError::Empty)),
            (&["a", ""], Err(MultiStreamError::EmptyName(1))),
            (&["a", "b", "a"], Err(MultiStreamError::Duplicate("a".into()))),
            (&["a:b", "a"], Err(MultiStreamError::Ambiguous("a".into(), "a:b".into()))),
            (&["a", "a:b"], Err(MultiStreamError::Ambiguous("a".into(), "a:b".into()))),
            (&["a", "ab", "a_b"], Ok(())),
            (&["1:us-west-2$1$T$2024-02-03T00_00_00.000:1"], Ok(())),
        ];
        for (names, expected) in cases {
            assert_eq!(&check_names(names.iter().copied()), expected, "names {names:?}");
        }
    }

    #[test]
    fn shard_ids_split_by_stream_name() {
        let names = ["orders", "ord", "1:eu$1$T$x:1"];
        let cases: &[(&str, Option<(usize, &str)>)] = &[
            ("orders:shardId-1", Some((0, "shardId-1"))),
            ("ord:shardId-1", Some((1, "shardId-1"))),
            ("orders:shardId-1:with:colons", Some((0, "shardId-1:with:colons"))),
            ("1:eu$1$T$x:1:shardId-9", Some((2, "shardId-9"))),
            ("shardId-1", None),
            ("orders:", None),
            ("other:shardId-1", None),
        ];
        for (shard, expected) in cases {
            let got = split_shard(names.iter().copied(), &ShardId::new(*shard));
            assert_eq!(got, expected.map(|(i, s)| (i, ShardId::new(s))), "shard {shard}");
        }
    }

    #[test]
    fn iterators_carry_their_stream() {
        let it = join_iterator(3, ShardIterator("a|b".into()));
        assert_eq!(it.0, "3|a|b");
        assert_eq!(split_iterator(&it), Some((3, ShardIterator("a|b".into()))));
        assert_eq!(split_iterator(&ShardIterator("plain".into())), None);
    }
}
