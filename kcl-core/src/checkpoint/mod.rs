//! Positions in a shard: [`SequenceNumber`], the stored [`Checkpoint`] and the [`Checkpointer`]
//! a processor uses to record progress.

mod checkpointer;
pub(crate) mod policy;
mod sequence;

pub(crate) use checkpointer::LeaseCheckpointer;
pub use checkpointer::{CheckpointError, Checkpointer};
pub use sequence::{SequenceNumber, SequenceNumberError};

use std::fmt;

/// How far a shard has been processed, as stored on its lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Checkpoint {
    /// Nothing processed yet; start at the oldest retained record.
    TrimHorizon,
    /// Nothing processed yet; start at the newest record (skips what is already there).
    Latest,
    /// Every record up to and including this sequence number has been processed;
    /// processing resumes right after it.
    At(SequenceNumber),
    /// The shard is closed and every record in it has been processed. Children may start.
    ShardEnd,
}

impl Checkpoint {
    /// The string stored in the lease table (Java KCL's spelling).
    pub fn to_store_string(&self) -> String {
        match self {
            Checkpoint::TrimHorizon => "TRIM_HORIZON".to_owned(),
            Checkpoint::Latest => "LATEST".to_owned(),
            Checkpoint::ShardEnd => "SHARD_END".to_owned(),
            Checkpoint::At(seq) => seq.to_string(),
        }
    }

    /// Parses the lease table's spelling (see [`Checkpoint::to_store_string`]).
    pub fn parse_store_string(s: &str) -> Result<Self, SequenceNumberError> {
        Ok(match s {
            "TRIM_HORIZON" => Checkpoint::TrimHorizon,
            "LATEST" => Checkpoint::Latest,
            "SHARD_END" => Checkpoint::ShardEnd,
            other => Checkpoint::At(SequenceNumber::parse(other)?),
        })
    }

    /// The sequence number for [`Checkpoint::At`], else `None`.
    pub fn sequence_number(&self) -> Option<&SequenceNumber> {
        match self {
            Checkpoint::At(seq) => Some(seq),
            _ => None,
        }
    }

    /// True when the shard has been processed to its end.
    pub fn is_shard_end(&self) -> bool {
        matches!(self, Checkpoint::ShardEnd)
    }

    /// Whether moving from `self` to `next` keeps checkpoints monotonic: sentinels that mean
    /// "nothing processed" may move anywhere, sequence numbers only forward, and nothing moves
    /// away from `ShardEnd`.
    pub fn may_advance_to(&self, next: &Checkpoint) -> bool {
        match (self, next) {
            (Checkpoint::ShardEnd, other) => other.is_shard_end(),
            (Checkpoint::TrimHorizon | Checkpoint::Latest, _) => true,
            (Checkpoint::At(_), Checkpoint::TrimHorizon | Checkpoint::Latest) => false,
            (Checkpoint::At(cur), Checkpoint::At(new)) => new >= cur,
            (Checkpoint::At(_), Checkpoint::ShardEnd) => true,
        }
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_store_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: u128) -> Checkpoint {
        Checkpoint::At(SequenceNumber::from_u128(n))
    }

    #[test]
    fn store_strings_round_trip() {
        for cp in [Checkpoint::TrimHorizon, Checkpoint::Latest, Checkpoint::ShardEnd, at(42)] {
            assert_eq!(Checkpoint::parse_store_string(&cp.to_store_string()), Ok(cp));
        }
        assert!(Checkpoint::parse_store_string("AT_TIMESTAMP").is_err());
    }

    #[test]
    fn monotonic_rules() {
        let cases = [
            (Checkpoint::TrimHorizon, at(5), true),
            (at(5), at(5), true),
            (at(5), at(4), false),
            (at(5), Checkpoint::TrimHorizon, false),
            (at(5), Checkpoint::ShardEnd, true),
            (Checkpoint::ShardEnd, at(9), false),
            (Checkpoint::ShardEnd, Checkpoint::ShardEnd, true),
            (Checkpoint::Latest, Checkpoint::ShardEnd, true),
        ];
        for (from, to, ok) in cases {
            assert_eq!(from.may_advance_to(&to), ok, "{from} -> {to}");
        }
    }
}
