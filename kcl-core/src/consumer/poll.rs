//! How long the reader waits before its next read: [`next_idle_wait`], a pure function of the
//! settings, the shard's polling state and whether the read just made returned records.
//!
//! A read that returns records is followed by the next at once. After an empty read the wait
//! is short while the shard had records recently (within the active window), then grows
//! geometrically towards the longest wait on a shard that stays empty, and is short again
//! after the first record: idle shards cost few reads, busy ones are read at once.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Config, IDLE_WAIT_GROWTH};

/// The bounds of the adaptive wait, from [`Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct IdleWaits {
    /// The wait while the shard is active.
    pub(super) min: Duration,
    /// The ceiling on a shard that stays empty.
    pub(super) max: Duration,
    /// How long after the last record the shard counts as active.
    pub(super) active_window: Duration,
}

impl IdleWaits {
    pub(super) fn of(config: &Config) -> Self {
        Self { min: config.idle_wait_min, max: config.idle_wait_max, active_window: config.idle_active_window }
    }
}

/// What the reader remembers between reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PollState {
    /// When a read last returned records (or the reader started).
    pub(super) last_records: Instant,
    /// The wait after the previous read.
    pub(super) wait: Duration,
}

impl PollState {
    /// A reader starting now counts as active: the first empty reads use the short wait.
    pub(super) fn new(now: Instant) -> Self {
        Self { last_records: now, wait: Duration::ZERO }
    }
}

/// The wait before the next read, after a read at `now` that returned records or not, and
/// the state to pass to the next call.
pub(super) fn next_idle_wait(
    waits: &IdleWaits,
    state: PollState,
    got_records: bool,
    now: Instant,
) -> (Duration, PollState) {
    if got_records {
        return (Duration::ZERO, PollState { last_records: now, wait: Duration::ZERO });
    }
    let quiet_for = now.saturating_duration_since(state.last_records);
    let wait = if quiet_for < waits.active_window {
        waits.min
    } else {
        state.wait.max(waits.min).saturating_mul(IDLE_WAIT_GROWTH).clamp(waits.min, waits.max)
    };
    (wait, PollState { wait, ..state })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const WAITS: IdleWaits = IdleWaits {
        min: Duration::from_millis(200),
        max: Duration::from_secs(8),
        active_window: Duration::from_secs(10),
    };

    #[test]
    fn wait_table() {
        let t0 = Instant::now();
        let state = |wait_ms: u64| PollState { last_records: t0, wait: Duration::from_millis(wait_ms) };
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // (quiet for, previous wait, got records, expected wait)
        let cases: [(u64, u64, bool, Duration); 10] = [
            // Records: read again at once, whatever came before.
            (0, 0, true, Duration::ZERO),
            (3_600_000, 8_000, true, Duration::ZERO),
            // Empty reads within the active window: the short wait.
            (0, 0, false, 200 * MS),
            (9_999, 200, false, 200 * MS),
            // Past the window: doubling from the short wait...
            (10_000, 200, false, 400 * MS),
            (10_400, 400, false, 800 * MS),
            (12_000, 3_200, false, 6_400 * MS),
            // ... capped at the longest wait.
            (18_400, 6_400, false, 8_000 * MS),
            (3_600_000, 8_000, false, 8_000 * MS),
            // Past the window with no wait before (the read before had records): twice the minimum.
            (10_000, 0, false, 400 * MS),
        ];
        for (quiet, prev, got, want) in cases {
            let (wait, next) = next_idle_wait(&WAITS, state(prev), got, at(quiet));
            assert_eq!(wait, want, "quiet {quiet} ms, previous wait {prev} ms, records {got}");
            let expected_last = if got { at(quiet) } else { t0 };
            assert_eq!(next, PollState { last_records: expected_last, wait: want });
        }
    }

    #[test]
    fn fixed_wait_when_min_equals_max_and_no_overflow() {
        let t0 = Instant::now();
        let fixed = IdleWaits { min: 5000 * MS, max: 5000 * MS, active_window: Duration::ZERO };
        let (wait, _) = next_idle_wait(&fixed, PollState::new(t0), false, t0);
        assert_eq!(wait, 5000 * MS);
        let huge = IdleWaits { min: MS, max: Duration::MAX, active_window: Duration::ZERO };
        let (wait, _) = next_idle_wait(&huge, PollState { last_records: t0, wait: Duration::MAX }, false, t0);
        assert_eq!(wait, Duration::MAX);
    }

    /// The defaults' cost over an hour without records, counted from the last record (the
    /// worst hour: it includes the active window): within the 600 reads.
    #[test]
    fn an_idle_hour_costs_at_most_600_reads() {
        let t0 = Instant::now();
        let (mut now, mut state, mut reads) = (t0, PollState::new(t0), 0u32);
        while now < t0 + Duration::from_secs(3600) {
            reads += 1;
            let (wait, next) = next_idle_wait(&WAITS, state, false, now);
            (now, state) = (now + wait, next);
        }
        assert!((450..=600).contains(&reads), "{reads} reads");
    }
}
