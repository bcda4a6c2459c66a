//! Fault injection for the simulator: a queue of errors for the next calls and per-kind error
//! rates drawn from a seeded random generator of its own (so turning faults on does not change
//! the shard ids or sequence numbers a seed produces).

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::source::{SourceError, SourceErrorKind};

/// Mixed into the seed so the fault generator does not mirror the stream generator.
const FAULT_SEED_SALT: u64 = 0x5eed_fa17_0000_0001;

/// Which calls a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FaultTarget {
    /// `shard_iterator` and `read`.
    Read,
    /// `list_shards`.
    List,
}

/// Pending and random faults. Lives inside the simulator's state, under its lock.
#[derive(Debug)]
pub(super) struct Faults {
    /// Errors for the next read/iterator calls, consumed front to back.
    read_queue: VecDeque<(SourceErrorKind, u32)>,
    /// Errors for the next `list_shards` calls, consumed front to back.
    list_queue: VecDeque<(SourceErrorKind, u32)>,
    /// Probability per read/iterator call of each kind, rolled in insertion order.
    rates: Vec<(SourceErrorKind, f64)>,
    rng: SmallRng,
}

impl Faults {
    pub(super) fn new(seed: u64) -> Self {
        Self {
            read_queue: VecDeque::new(),
            list_queue: VecDeque::new(),
            rates: Vec::new(),
            rng: SmallRng::seed_from_u64(seed ^ FAULT_SEED_SALT),
        }
    }

    /// Queues `count` failures of `kind` for the next calls of `target`.
    pub(super) fn inject(&mut self, target: FaultTarget, kind: SourceErrorKind, count: u32) {
        if count == 0 {
            return;
        }
        let queue = match target {
            FaultTarget::Read => &mut self.read_queue,
            FaultTarget::List => &mut self.list_queue,
        };
        queue.push_back((kind, count));
    }

    /// Sets (or, with 0, removes) the probability that a read/iterator call fails with `kind`.
    pub(super) fn set_rate(&mut self, kind: SourceErrorKind, probability: f64) {
        // NaN and out-of-range values are clamped: 0 for NaN, else into [0, 1].
        let p = if probability.is_nan() { 0.0 } else { probability.clamp(0.0, 1.0) };
        self.rates.retain(|(k, _)| *k != kind);
        if p > 0.0 {
            self.rates.push((kind, p));
        }
    }

    /// Drops every queued fault and every error rate.
    pub(super) fn clear(&mut self) {
        self.read_queue.clear();
        self.list_queue.clear();
        self.rates.clear();
    }

    /// Queued faults not yet consumed, for `target`.
    pub(super) fn pending(&self, target: FaultTarget) -> u64 {
        let queue = match target {
            FaultTarget::Read => &self.read_queue,
            FaultTarget::List => &self.list_queue,
        };
        queue.iter().map(|(_, n)| u64::from(*n)).sum()
    }

    /// The fault for this call, if any: a queued one first, then the random rates.
    pub(super) fn next(&mut self, target: FaultTarget, call: &str) -> Option<SourceError> {
        let queue = match target {
            FaultTarget::Read => &mut self.read_queue,
            FaultTarget::List => &mut self.list_queue,
        };
        if let Some((kind, remaining)) = queue.front_mut() {
            let kind = *kind;
            *remaining -= 1;
            if *remaining == 0 {
                queue.pop_front();
            }
            return Some(SourceError::new(kind, format!("simulator: injected {} fault in {call}", kind.as_str())));
        }
        if target == FaultTarget::List {
            return None;
        }
        for &(kind, p) in &self.rates {
            if self.rng.random_bool(p) {
                return Some(SourceError::new(kind, format!("simulator: random {} fault in {call}", kind.as_str())));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_faults_count_down_in_order() {
        let mut f = Faults::new(1);
        f.inject(FaultTarget::Read, SourceErrorKind::Transient, 2);
        f.inject(FaultTarget::Read, SourceErrorKind::Throttled, 1);
        f.inject(FaultTarget::Read, SourceErrorKind::Fatal, 0);
        assert_eq!(f.pending(FaultTarget::Read), 3);
        let kinds: Vec<_> = (0..4).map(|_| f.next(FaultTarget::Read, "read").map(|e| e.kind())).collect();
        assert_eq!(
            kinds,
            [
                Some(SourceErrorKind::Transient),
                Some(SourceErrorKind::Transient),
                Some(SourceErrorKind::Throttled),
                None
            ]
        );
        assert!(f.next(FaultTarget::List, "list_shards").is_none());
    }

    #[test]
    fn rates_are_seeded_and_clamped() {
        let roll = |seed| {
            let mut f = Faults::new(seed);
            f.set_rate(SourceErrorKind::Transient, 0.5);
            (0..64).map(|_| f.next(FaultTarget::Read, "read").is_some()).collect::<Vec<_>>()
        };
        assert_eq!(roll(7), roll(7));
        assert_ne!(roll(7), roll(8));

        let mut f = Faults::new(1);
        f.set_rate(SourceErrorKind::Throttled, 7.0);
        assert!(f.next(FaultTarget::Read, "read").is_some());
        f.set_rate(SourceErrorKind::Throttled, f64::NAN);
        assert!(f.next(FaultTarget::Read, "read").is_none());
        f.set_rate(SourceErrorKind::Throttled, 1.0);
        f.clear();
        assert!(f.next(FaultTarget::Read, "read").is_none());
    }
}
