//! How fast a released lease is taken: the settings of a handover without a lag spike.
//!
//! Every worker reads one *change notice* item every heartbeat poll interval. A worker that
//! releases leases on purpose (it answered a handoff request, or it is stopping) bumps the
//! notice after the release, and a worker that expects leases to be released (it asked for a
//! handoff, or it read a notice change) reads the notice every
//! [`handover_poll_interval`](ConfigBuilder::handover_poll_interval) for a while, running a
//! take cycle at each change. A stopping worker first bumps the notice and keeps consuming
//! for the [`departure_notice`](ConfigBuilder::departure_notice), so that every peer polls
//! fast by the time it releases: its shards move within about one fast poll.

use std::time::Duration;

use super::{Config, ConfigBuilder, ConfigError};

/// Default time between reads of the change notice while a worker expects leases to be
/// released: a released lease is taken about this long (plus one scan and one write) later.
pub const DEFAULT_HANDOVER_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Default time a stopping worker keeps consuming after announcing it stops: one heartbeat
/// poll interval (every peer reads the notice once), plus half of one for slow reads.
pub const DEFAULT_DEPARTURE_NOTICE: Duration = Duration::from_millis(1500);

impl ConfigBuilder {
    /// Time between reads of the change notice (one small eventually consistent read) while
    /// this worker expects leases to be released: for half a lease duration after it asked
    /// for a handoff or read a change. Default [`DEFAULT_HANDOVER_POLL_INTERVAL`] (200 ms).
    /// Shorter than the heartbeat poll interval.
    pub fn handover_poll_interval(mut self, d: Duration) -> Self {
        self.config.handover_poll_interval = d;
        self
    }

    /// How long a worker told to stop keeps consuming after it announced that it stops, so
    /// that its peers poll fast when it releases its leases. Default
    /// [`DEFAULT_DEPARTURE_NOTICE`] (1.5 s): more than the heartbeat poll interval. Zero
    /// releases at once (peers then take the leases up to a heartbeat poll interval later).
    /// Skipped when the worker holds no lease or sees no peer. Counts against the stop's
    /// deadline ([`WorkerHandle::shutdown`](crate::WorkerHandle::shutdown)).
    pub fn departure_notice(mut self, d: Duration) -> Self {
        self.config.departure_notice = d;
        self
    }
}

impl Config {
    /// How long after a notice change or a handoff request the change notice is read every
    /// handover poll interval.
    pub(crate) fn handover_window(&self) -> Duration {
        self.lease_duration / 2
    }
}

pub(super) fn check(c: &Config) -> Option<ConfigError> {
    if c.handover_poll_interval.is_zero() {
        return Some(ConfigError::ZeroDuration { name: "handover_poll_interval" });
    }
    (c.handover_poll_interval >= c.heartbeat_poll_interval).then_some(ConfigError::Inverted {
        smaller: "handover_poll_interval",
        smaller_value: c.handover_poll_interval,
        larger: "heartbeat_poll_interval",
        larger_value: c.heartbeat_poll_interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_rejections() {
        let c = Config::builder("a").build().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.handover_poll_interval, DEFAULT_HANDOVER_POLL_INTERVAL);
        assert_eq!(c.departure_notice, DEFAULT_DEPARTURE_NOTICE);
        assert!(c.departure_notice > c.heartbeat_poll_interval);
        assert_eq!(c.handover_window(), Duration::from_secs(5));
        let cases = [
            (Config::builder("a").handover_poll_interval(Duration::ZERO), "handover_poll_interval"),
            (
                Config::builder("a").handover_poll_interval(Duration::from_secs(1)),
                "handover_poll_interval (1s) must be less than heartbeat_poll_interval (1s)",
            ),
        ];
        for (builder, want) in cases {
            let err = builder.build().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(want), "{err} should contain {want}");
        }
        let zero = Config::builder("a").departure_notice(Duration::ZERO).build();
        assert!(zero.is_ok_and(|c| c.departure_notice.is_zero()));
    }
}
