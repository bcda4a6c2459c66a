//! The simulator's shard iterators: the shard, the position in it and the issue time, encoded
//! in the string itself (no table that grows with every read). Callers treat it as opaque.

use crate::source::{ShardIterator, SourceError, SourceErrorKind};

const PREFIX: &str = "simitr";

/// A decoded iterator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IterState {
    /// Index of the shard in the simulator's shard table.
    pub(super) shard: usize,
    /// Absolute position in the shard: how many records were written to it before.
    pub(super) position: usize,
    /// When it was issued, in nanoseconds of simulated time since the simulator was built.
    pub(super) issued_ns: u64,
}

impl IterState {
    /// Encodes the state as an opaque iterator string.
    pub(super) fn encode(self) -> ShardIterator {
        ShardIterator(format!("{PREFIX}:{:x}:{:x}:{:x}", self.shard, self.position, self.issued_ns))
    }

    /// Decodes an iterator string; anything this simulator did not issue is a validation error
    /// (DynamoDB answers a malformed iterator with `ValidationException`).
    pub(super) fn decode(iterator: &ShardIterator) -> Result<Self, SourceError> {
        let invalid =
            || SourceError::new(SourceErrorKind::Fatal, format!("simulator: invalid shard iterator {iterator:?}"));
        let mut parts = iterator.0.split(':');
        if parts.next() != Some(PREFIX) {
            return Err(invalid());
        }
        let mut field = || parts.next().and_then(|p| u64::from_str_radix(p, 16).ok());
        let (Some(shard), Some(position), Some(issued_ns)) = (field(), field(), field()) else {
            return Err(invalid());
        };
        if parts.next().is_some() {
            return Err(invalid());
        }
        let shard = usize::try_from(shard).map_err(|_| invalid())?;
        let position = usize::try_from(position).map_err(|_| invalid())?;
        Ok(Self { shard, position, issued_ns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for state in [
            IterState { shard: 0, position: 0, issued_ns: 0 },
            IterState { shard: 9_999, position: 1_234_567, issued_ns: u64::MAX },
        ] {
            assert_eq!(IterState::decode(&state.encode()).ok(), Some(state));
        }
    }

    #[test]
    fn rejects_what_it_did_not_issue() {
        for bad in ["", "garbage", "simitr", "simitr:1:2", "simitr:1:2:3:4", "simitr:x:2:3", "other:1:2:3"] {
            let err = IterState::decode(&ShardIterator(bad.to_owned())).err().map(|e| e.kind());
            assert_eq!(err, Some(SourceErrorKind::Fatal), "{bad:?}");
        }
    }
}
