//! When a checkpoint is written to the lease table: [`decide`], a pure function of the
//! [`CheckpointPolicy`], why the checkpoint is offered and how long ago the last write was.
//!
//! Under [`CheckpointPolicy::Processor`] every checkpoint the processor asks for is one write,
//! at once, and the worker adds none after ordinary batches. Under
//! [`CheckpointPolicy::Interval`] checkpoints are recorded and written at most once per
//! interval: a busy shard's many batches cost one write an interval. Whatever the policy, a
//! checkpoint that must be durable now (shard end, a graceful stop or handoff, past a dead
//! letter) is written at once, with whatever was recorded before it.

use std::time::Duration;

use crate::config::CheckpointPolicy;

/// Why a checkpoint is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The worker's own, after a batch whose `process_records` returned `Ok`.
    Processed,
    /// The processor asked (`checkpoint`, `checkpoint_at`), or the handled part of a partial
    /// batch failure.
    Requested,
    /// The interval passed since the last write, with a checkpoint still recorded.
    Timer,
    /// Must be durable now: shard end, graceful stop or handoff, past a dead letter.
    Flush,
}

/// What to do with an offered checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Write it (with anything recorded before it) now.
    Write,
    /// Record it; it is written with the next write, at the latest after this long.
    Defer(Duration),
    /// Drop it: the policy does not checkpoint for this trigger.
    Ignore,
}

/// Decides about a checkpoint offered for `trigger`, `since_write` after the last write
/// attempt of the shard (or since its consumer started).
pub(crate) fn decide(
    policy: CheckpointPolicy,
    interval: Duration,
    trigger: Trigger,
    since_write: Duration,
) -> Decision {
    match (policy, trigger) {
        (_, Trigger::Flush) => Decision::Write,
        (CheckpointPolicy::Processor, Trigger::Requested) => Decision::Write,
        (CheckpointPolicy::Processor, Trigger::Processed | Trigger::Timer) => Decision::Ignore,
        (CheckpointPolicy::Interval, _) if since_write >= interval => Decision::Write,
        (CheckpointPolicy::Interval, _) => Decision::Defer(interval - since_write),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CheckpointPolicy::{Interval, Processor};
    use Decision::*;
    use Trigger::*;

    #[test]
    fn decisions_table() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let five = s(5);
        let cases = [
            // The processor's policy: its calls at once, nothing automatic.
            (Processor, Requested, s(0), Write),
            (Processor, Requested, s(60), Write),
            (Processor, Processed, s(60), Ignore),
            (Processor, Timer, s(60), Ignore),
            (Processor, Flush, s(0), Write),
            // The interval's: at most one write per interval, whoever asks.
            (Interval, Processed, s(0), Defer(five)),
            (Interval, Processed, ms(4_999), Defer(ms(1))),
            (Interval, Processed, s(5), Write),
            (Interval, Requested, s(1), Defer(s(4))),
            (Interval, Requested, s(7), Write),
            (Interval, Timer, s(5), Write),
            (Interval, Timer, s(3), Defer(s(2))),
            // Shard end, graceful stop, handoff, dead letter: at once.
            (Interval, Flush, s(0), Write),
            (Interval, Flush, ms(1), Write),
        ];
        for (policy, trigger, since, want) in cases {
            assert_eq!(decide(policy, five, trigger, since), want, "{policy:?} {trigger:?} {since:?}");
        }
    }
}
