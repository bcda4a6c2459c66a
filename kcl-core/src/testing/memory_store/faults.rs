//! Deterministic fault injection for the in-memory lease store.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::history::LeaseOpKind;
use crate::lease::{LeaseStoreError, LeaseStoreErrorKind};

/// One `fail_next` rule: the next `remaining` calls matching `op` fail with `kind`.
#[derive(Debug)]
struct FailRule {
    op: Option<LeaseOpKind>,
    kind: LeaseStoreErrorKind,
    remaining: u32,
}

/// The faults configured on a store. Every random draw comes from one seeded generator, and
/// a generator is drawn from only while its rate is above zero, so a test that sets no rate
/// sees no randomness at all.
#[derive(Debug)]
pub(super) struct Faults {
    rules: Vec<FailRule>,
    unavailable: bool,
    error_rate: f64,
    ambiguous_write_rate: f64,
    rng: SmallRng,
    pub(super) latency: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            unavailable: false,
            error_rate: 0.0,
            ambiguous_write_rate: 0.0,
            rng: SmallRng::seed_from_u64(0),
            latency: Duration::ZERO,
        }
    }
}

impl Faults {
    pub(super) fn fail_next(&mut self, op: Option<LeaseOpKind>, kind: LeaseStoreErrorKind, count: u32) {
        if count > 0 {
            self.rules.push(FailRule { op, kind, remaining: count });
        }
    }

    pub(super) fn clear(&mut self) {
        let latency = self.latency;
        *self = Self { latency, ..Self::default() };
    }

    pub(super) fn set_unavailable(&mut self, unavailable: bool) {
        self.unavailable = unavailable;
    }

    pub(super) fn set_error_rate(&mut self, probability: f64, seed: u64) {
        self.error_rate = clamp_probability(probability);
        self.rng = SmallRng::seed_from_u64(seed);
    }

    pub(super) fn set_ambiguous_write_rate(&mut self, probability: f64) {
        self.ambiguous_write_rate = clamp_probability(probability);
    }

    /// Decides whether a call of `op` fails before touching the table: an outage first, then
    /// the oldest matching `fail_next` rule, then the random error rate.
    pub(super) fn admit(&mut self, op: LeaseOpKind) -> Result<(), LeaseStoreError> {
        if self.unavailable {
            return Err(injected(LeaseStoreErrorKind::Transient, op, "lease table unavailable"));
        }
        if let Some(rule) = self.rules.iter_mut().find(|r| r.op.is_none_or(|o| o == op)) {
            let kind = rule.kind;
            rule.remaining -= 1;
            self.rules.retain(|r| r.remaining > 0);
            return Err(injected(kind, op, "fail_next"));
        }
        if self.error_rate > 0.0 && self.rng.random_bool(self.error_rate) {
            let kind =
                if self.rng.random_bool(0.5) { LeaseStoreErrorKind::Throttled } else { LeaseStoreErrorKind::Transient };
            return Err(injected(kind, op, "random error rate"));
        }
        Ok(())
    }

    /// Decides whether an applied write is reported as failed (timeout after commit).
    pub(super) fn ambiguous(&mut self) -> bool {
        self.ambiguous_write_rate > 0.0 && self.rng.random_bool(self.ambiguous_write_rate)
    }
}

/// The error an applied write reports when it is made ambiguous.
pub(super) fn ambiguous_error(op: LeaseOpKind) -> LeaseStoreError {
    injected(LeaseStoreErrorKind::Transient, op, "timed out after the write was applied")
}

fn injected(kind: LeaseStoreErrorKind, op: LeaseOpKind, why: &str) -> LeaseStoreError {
    LeaseStoreError::new(kind, format!("injected {} fault on {op:?} ({why})", kind.as_str()))
}

fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}
