//! Worker configuration: one [`Config::builder`], every knob once, each default a documented
//! constant, validated by [`ConfigBuilder::build`].

use std::time::Duration;

use crate::lease::WorkerId;

/// Where a worker starts in a shard that has no parent in the lease table (a root shard).
/// Child shards always start at their beginning so that nothing after a parent is missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InitialPosition {
    /// The oldest retained record: nothing already in the stream is missed (default).
    #[default]
    TrimHorizon,
    /// Only changes made after the worker first started.
    Latest,
}

/// What to do with a batch whose retries are exhausted (see [`ConfigBuilder::max_retry_attempts`]
/// and [`ConfigBuilder::max_record_age`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnRetriesExhausted {
    /// Send the failed records to the dead-letter destination and go on (default). Without a
    /// destination, the records are skipped: counted in `kcl_records_skipped_total`, logged
    /// with shard and sequence numbers, and shown in the worker's status.
    #[default]
    DeadLetter,
    /// Stop the shard there and keep retrying (with the maximum backoff) until the processor
    /// succeeds: nothing is skipped, the shard falls behind.
    StopShard,
}

/// What the stall watchdog does about a shard that makes no progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnStall {
    /// Count it in `kcl_stalled_shards` and log a warning with the shard and for how long
    /// (default).
    #[default]
    Report,
    /// Also release the lease, so that another worker (or this one, later) starts the shard
    /// afresh from its checkpoint.
    ReleaseLease,
}

/// How a worker proves that it still owns its leases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LeaseRenewal {
    /// Only the worker's heartbeat item is renewed (every lease duration / 3); a held lease
    /// is written only when something changes (take, checkpoint, handoff, release). Peers
    /// judge a lease expired when its owner's heartbeat stopped changing. Lease-table writes
    /// grow with the number of workers, not with the number of leases (default).
    #[default]
    Heartbeat,
    /// Every held lease is renewed too, every lease duration / 3, as Java KCL does, and a
    /// lease whose counter stops changing is expired even while its owner's heartbeat lives.
    /// One write per lease every few seconds; for comparison, or for a fleet that still runs
    /// workers of a version that judges leases by their counters during an upgrade.
    EveryLease,
}

/// When checkpoints are written to the lease table (see [`ConfigBuilder::checkpoint_policy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CheckpointPolicy {
    /// Every `checkpoint` / `checkpoint_at` call of the processor is one lease-table write, at
    /// once; the worker checkpoints by itself only at shard end, on a graceful stop and past
    /// dead-lettered records. For processors that make their work durable across batches and
    /// checkpoint when it is.
    Processor,
    /// Automatic (default): after each batch whose `process_records` returned `Ok`, the worker
    /// records the batch's last sequence number and writes it at most every
    /// [`checkpoint_interval`](ConfigBuilder::checkpoint_interval); the processor's own calls
    /// are recorded the same way and written with the next write. A recorded checkpoint is
    /// always written at once at shard end, on a graceful stop or handoff, past dead-lettered
    /// records, and once the interval has passed even if no batch follows. A busy shard costs
    /// one checkpoint write per interval instead of one per batch; after a crash, at most one
    /// interval of records is delivered again.
    #[default]
    Interval,
}

/// Default for [`ConfigBuilder::checkpoint_interval`]: at most one checkpoint write per shard
/// every 5 s under [`CheckpointPolicy::Interval`] (12 writes a minute for a busy shard instead
/// of one per batch; after a crash at most 5 s of records are delivered again, about as much
/// as a failover of the default 10 s lease duration already delays).
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// Default time without progress after which a held shard counts as stalled.
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_secs(300);

/// Default timeout of one `process_records` call.
pub const DEFAULT_PROCESSING_TIMEOUT: Duration = Duration::from_secs(300);

/// Default lease duration: a lease not renewed for this long may be taken.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(10);
/// Default time between full scans of the lease table (take and balance cycle).
pub const DEFAULT_TAKE_INTERVAL: Duration = DEFAULT_LEASE_DURATION;
/// Default time between reads of the other workers' heartbeats.
pub const DEFAULT_HEARTBEAT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Default time between shard listings when nothing else triggers one.
pub const DEFAULT_SHARD_SYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Default time between checks of a waiting child's parent leases. A parent that ends on
/// this worker wakes its children at once; this bounds the wait for a parent that ends on
/// another worker (one small read per waiting child per interval).
pub const DEFAULT_PARENT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Default for the short wait after an empty read of a shard that had records within the
/// active window: a record written to a shard with at least one change a second waits on
/// average half of it (measured against DynamoDB Local: p50 and p99 in the README).
pub const DEFAULT_IDLE_WAIT_MIN: Duration = Duration::from_millis(200);
/// Default for the longest wait after an empty read, reached by a shard that stays empty:
/// 3600 s / 8 s = 450 reads in a steady idle hour, and at most about 500 in the hour after a
/// shard's last record (the active window at 200 ms and the ramp included), under the 600 an
/// hour the defaults aim for. The first change after a long idle period waits up to this long
/// (4 s on average) before it is read.
pub const DEFAULT_IDLE_WAIT_MAX: Duration = Duration::from_secs(8);
/// Default time after a shard's last record during which empty reads keep the short wait:
/// long enough that a shard with one change every few seconds never slows down.
pub const DEFAULT_IDLE_ACTIVE_WINDOW: Duration = Duration::from_secs(10);
/// Past the active window each wait after an empty read is this many times the previous one,
/// up to the longest wait: from 200 ms, 8 s is reached six empty reads (about 12 s) later.
pub const IDLE_WAIT_GROWTH: u32 = 2;
/// Default (and maximum) records per read: DynamoDB Streams returns at most 1000.
pub const DEFAULT_MAX_RECORDS_PER_READ: usize = 1000;
/// Default number of batches read ahead of the processor, per shard.
pub const DEFAULT_PREFETCH_BATCHES: usize = 2;
/// Default cap on the leases one worker holds: unlimited.
pub const DEFAULT_MAX_LEASES_PER_WORKER: usize = usize::MAX;
/// Default upper bound of the backoff between retries of a failing batch or read.
pub const DEFAULT_MAX_RETRY_BACKOFF: Duration = Duration::from_secs(10);
/// Default lower bound of that backoff.
pub const DEFAULT_MIN_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Default limit on one call of the stream source (a shard listing, an iterator, a read).
pub const DEFAULT_SOURCE_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`ConfigBuilder::max_concurrent_renewals`]: lease renewals in flight at once.
/// Renewals are small and answer in milliseconds, so few are in flight normally; the bound
/// matters when the lease table is slow: at 2 s a call, 8,192 renew 10,000 leases every 4 s,
/// so that each is renewed well inside the fencing window of the default lease duration (8 s
/// from the send of its last successful renewal).
pub const DEFAULT_MAX_CONCURRENT_RENEWALS: usize = 8192;
/// Records per read allowed by DynamoDB Streams.
pub const MAX_RECORDS_PER_READ_LIMIT: usize = 1000;

mod handover;
pub use handover::{DEFAULT_DEPARTURE_NOTICE, DEFAULT_HANDOVER_POLL_INTERVAL};
mod in_shard;
pub use in_shard::{
    DEFAULT_BATCH_SIZE, DEFAULT_BATCHING_WINDOW, DEFAULT_PARALLELISM, MAX_BATCH_SIZE, MAX_BATCHING_WINDOW,
    MAX_PARALLELISM,
};

/// A configuration value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The application name is empty.
    #[error("application_name is empty: give the consumer application a name (it names the lease table)")]
    EmptyApplicationName,
    /// The worker id is empty.
    #[error("worker_id is empty: leave it unset for the default (hostname + pid) or give a unique non-empty id")]
    EmptyWorkerId,
    /// A duration that must be positive was zero.
    #[error("{name} is zero: it must be a positive duration")]
    ZeroDuration {
        /// The setting.
        name: &'static str,
    },
    /// Two durations are in the wrong order.
    #[error("{smaller} ({smaller_value:?}) must be less than {larger} ({larger_value:?})")]
    Inverted {
        /// The setting that must be smaller.
        smaller: &'static str,
        /// Its value.
        smaller_value: Duration,
        /// The setting that must be larger.
        larger: &'static str,
        /// Its value.
        larger_value: Duration,
    },
    /// Two settings cannot be used together.
    #[error("{setting} cannot be used with {other}: {why}")]
    Conflict {
        /// The setting.
        setting: &'static str,
        /// The setting it conflicts with, as set.
        other: &'static str,
        /// Why, and what to do.
        why: &'static str,
    },
    /// A count is out of range.
    #[error("{name} is {value}: it must be between {min} and {max}")]
    OutOfRange {
        /// The setting.
        name: &'static str,
        /// The rejected value.
        value: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
}

/// A validated worker configuration. Build one with [`Config::builder`].
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) application_name: String,
    pub(crate) worker_id: WorkerId,
    pub(crate) lease_duration: Duration,
    pub(crate) take_interval: Duration,
    pub(crate) heartbeat_poll_interval: Duration,
    pub(crate) handover_poll_interval: Duration,
    pub(crate) departure_notice: Duration,
    pub(crate) shard_sync_interval: Duration,
    pub(crate) parent_poll_interval: Duration,
    pub(crate) idle_wait_min: Duration,
    pub(crate) idle_wait_max: Duration,
    pub(crate) idle_active_window: Duration,
    pub(crate) checkpoint_policy: CheckpointPolicy,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) tumbling_window: Option<Duration>,
    pub(crate) max_records_per_read: usize,
    pub(crate) prefetch_batches: usize,
    pub(crate) max_leases_per_worker: usize,
    pub(crate) initial_position: InitialPosition,
    pub(crate) min_retry_backoff: Duration,
    pub(crate) max_retry_backoff: Duration,
    pub(crate) max_retry_attempts: Option<u32>,
    pub(crate) max_record_age: Option<Duration>,
    pub(crate) bisect_on_failure: bool,
    pub(crate) processing_timeout: Option<Duration>,
    pub(crate) on_retries_exhausted: OnRetriesExhausted,
    pub(crate) stall_threshold: Duration,
    pub(crate) on_stall: OnStall,
    pub(crate) lease_call_timeout: Duration,
    pub(crate) source_call_timeout: Duration,
    pub(crate) max_concurrent_renewals: usize,
    pub(crate) lease_renewal: LeaseRenewal,
    pub(crate) parallelism: usize,
    pub(crate) batch_size: usize,
    pub(crate) batching_window: Duration,
    pub(crate) filter: Option<std::sync::Arc<crate::filter::FilterCriteria>>,
}

impl Config {
    /// A builder with every default. `application_name` names the consumer application.
    pub fn builder(application_name: impl Into<String>) -> ConfigBuilder {
        ConfigBuilder {
            config: Config {
                application_name: application_name.into(),
                worker_id: default_worker_id(),
                lease_duration: DEFAULT_LEASE_DURATION,
                take_interval: DEFAULT_TAKE_INTERVAL,
                heartbeat_poll_interval: DEFAULT_HEARTBEAT_POLL_INTERVAL,
                handover_poll_interval: DEFAULT_HANDOVER_POLL_INTERVAL,
                departure_notice: DEFAULT_DEPARTURE_NOTICE,
                shard_sync_interval: DEFAULT_SHARD_SYNC_INTERVAL,
                parent_poll_interval: DEFAULT_PARENT_POLL_INTERVAL,
                idle_wait_min: DEFAULT_IDLE_WAIT_MIN,
                idle_wait_max: DEFAULT_IDLE_WAIT_MAX,
                idle_active_window: DEFAULT_IDLE_ACTIVE_WINDOW,
                checkpoint_policy: CheckpointPolicy::Interval,
                checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
                tumbling_window: None,
                max_records_per_read: DEFAULT_MAX_RECORDS_PER_READ,
                prefetch_batches: DEFAULT_PREFETCH_BATCHES,
                max_leases_per_worker: DEFAULT_MAX_LEASES_PER_WORKER,
                initial_position: InitialPosition::default(),
                min_retry_backoff: DEFAULT_MIN_RETRY_BACKOFF,
                max_retry_backoff: DEFAULT_MAX_RETRY_BACKOFF,
                max_retry_attempts: None,
                max_record_age: None,
                bisect_on_failure: false,
                processing_timeout: Some(DEFAULT_PROCESSING_TIMEOUT),
                on_retries_exhausted: OnRetriesExhausted::DeadLetter,
                stall_threshold: DEFAULT_STALL_THRESHOLD,
                on_stall: OnStall::Report,
                lease_call_timeout: DEFAULT_LEASE_DURATION / 3,
                source_call_timeout: DEFAULT_SOURCE_CALL_TIMEOUT,
                max_concurrent_renewals: DEFAULT_MAX_CONCURRENT_RENEWALS,
                lease_renewal: LeaseRenewal::Heartbeat,
                parallelism: DEFAULT_PARALLELISM,
                batch_size: DEFAULT_BATCH_SIZE,
                batching_window: DEFAULT_BATCHING_WINDOW,
                filter: None,
            },
            take_interval_set: false,
            lease_call_timeout_set: false,
        }
    }

    /// The application name.
    pub fn application_name(&self) -> &str {
        &self.application_name
    }
    /// This worker's id (the owner written on its leases).
    pub fn worker_id(&self) -> &WorkerId {
        &self.worker_id
    }
    /// The lease duration.
    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }
    /// Time between renewals: a third of the lease duration.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }
    /// How long after its last successful renewal a lease stops being delivered
    /// (self-fencing): four fifths of the lease duration, so a worker always stops before
    /// another can judge its lease expired.
    pub fn fence_after(&self) -> Duration {
        self.lease_duration * 4 / 5
    }
}

fn default_worker_id() -> WorkerId {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "worker".to_owned());
    WorkerId::new(format!("{host}-{}", std::process::id()))
}

/// Builds a [`Config`]; see each setter for its default.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    config: Config,
    take_interval_set: bool,
    lease_call_timeout_set: bool,
}

impl ConfigBuilder {
    /// This worker's id. Default: `$HOSTNAME-<pid>`. Must be unique in the fleet.
    pub fn worker_id(mut self, id: impl AsRef<str>) -> Self {
        self.config.worker_id = WorkerId::new(id);
        self
    }
    /// Lease duration. Default [`DEFAULT_LEASE_DURATION`] (10 s). Renewals run every third of
    /// it; a dead worker's leases are taken about one lease duration after it died.
    pub fn lease_duration(mut self, d: Duration) -> Self {
        self.config.lease_duration = d;
        self
    }
    /// Time between full scans of the lease table to take and balance leases. Default: the
    /// lease duration ([`DEFAULT_TAKE_INTERVAL`]).
    pub fn take_interval(mut self, d: Duration) -> Self {
        self.config.take_interval = d;
        self.take_interval_set = true;
        self
    }
    /// Time between reads of the other workers' heartbeats (one small read per worker).
    /// Default [`DEFAULT_HEARTBEAT_POLL_INTERVAL`] (1 s); failover takes about the lease
    /// duration plus this.
    pub fn heartbeat_poll_interval(mut self, d: Duration) -> Self {
        self.config.heartbeat_poll_interval = d;
        self
    }
    /// Time between shard listings. Default [`DEFAULT_SHARD_SYNC_INTERVAL`] (60 s); shard ends
    /// trigger a listing at once.
    pub fn shard_sync_interval(mut self, d: Duration) -> Self {
        self.config.shard_sync_interval = d;
        self
    }
    /// Time between checks of a waiting child's parents. Default
    /// [`DEFAULT_PARENT_POLL_INTERVAL`] (5 s). Children of a shard that ends on this worker
    /// are woken at once.
    pub fn parent_poll_interval(mut self, d: Duration) -> Self {
        self.config.parent_poll_interval = d;
        self
    }
    /// Bounds of the adaptive wait after an empty read (a read that returns records is
    /// followed by the next at once). While the shard had records within the
    /// [`idle_active_window`](Self::idle_active_window) the wait is `min`; past it, each wait
    /// is [`IDLE_WAIT_GROWTH`] times the previous, up to `max`; the first record brings it back
    /// to `min`. Defaults [`DEFAULT_IDLE_WAIT_MIN`] (200 ms) and [`DEFAULT_IDLE_WAIT_MAX`]
    /// (8 s): an idle shard costs at most about 500 reads an hour, and the first change after
    /// a long idle period is read within 8 s. `min == max` gives a fixed wait. Both positive,
    /// `min` at most `max`.
    pub fn idle_wait(mut self, min: Duration, max: Duration) -> Self {
        self.config.idle_wait_min = min;
        self.config.idle_wait_max = max;
        self
    }
    /// How long after a shard's last record the wait after an empty read stays at its
    /// minimum. Default [`DEFAULT_IDLE_ACTIVE_WINDOW`] (10 s); zero grows the wait from the
    /// first empty read on.
    pub fn idle_active_window(mut self, d: Duration) -> Self {
        self.config.idle_active_window = d;
        self
    }
    /// When checkpoints are written. Default [`CheckpointPolicy::Interval`]: automatic and
    /// coalesced, at most every [`checkpoint_interval`](Self::checkpoint_interval).
    pub fn checkpoint_policy(mut self, policy: CheckpointPolicy) -> Self {
        self.config.checkpoint_policy = policy;
        self
    }
    /// Under [`CheckpointPolicy::Interval`], the shortest time between two checkpoint writes
    /// of one shard (shard end, graceful stops and dead letters write at once). Default
    /// [`DEFAULT_CHECKPOINT_INTERVAL`] (5 s). After a crash, up to this much of a shard's
    /// records are delivered again.
    pub fn checkpoint_interval(mut self, d: Duration) -> Self {
        self.config.checkpoint_interval = d;
        self
    }
    /// Records per read, 1 to 1000. Default [`DEFAULT_MAX_RECORDS_PER_READ`] (1000).
    pub fn max_records_per_read(mut self, n: usize) -> Self {
        self.config.max_records_per_read = n;
        self
    }
    /// Batches read ahead per shard, 1 to 100. Default [`DEFAULT_PREFETCH_BATCHES`] (2).
    pub fn prefetch_batches(mut self, n: usize) -> Self {
        self.config.prefetch_batches = n;
        self
    }
    /// Most leases this worker holds. Default unlimited ([`DEFAULT_MAX_LEASES_PER_WORKER`]).
    pub fn max_leases_per_worker(mut self, n: usize) -> Self {
        self.config.max_leases_per_worker = n;
        self
    }
    /// Where root shards start. Default [`InitialPosition::TrimHorizon`].
    pub fn initial_position(mut self, p: InitialPosition) -> Self {
        self.config.initial_position = p;
        self
    }
    /// Backoff bounds between retries of a failing batch or read. Defaults
    /// [`DEFAULT_MIN_RETRY_BACKOFF`] (100 ms) and [`DEFAULT_MAX_RETRY_BACKOFF`] (10 s).
    pub fn retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.min_retry_backoff = min;
        self.config.max_retry_backoff = max;
        self
    }

    /// Retries of a failing batch before it counts as exhausted. Default: unlimited (retry
    /// until it succeeds or [`max_record_age`](Self::max_record_age) is reached).
    pub fn max_retry_attempts(mut self, n: u32) -> Self {
        self.config.max_retry_attempts = Some(n);
        self
    }
    /// A failing batch whose oldest record is older than this counts as exhausted. Default:
    /// unlimited.
    pub fn max_record_age(mut self, age: Duration) -> Self {
        self.config.max_record_age = Some(age);
        self
    }
    /// Split a failing batch in two and retry each half, down to single records, so that only
    /// the bad records are retried and dead-lettered. Default: off.
    pub fn bisect_on_failure(mut self, on: bool) -> Self {
        self.config.bisect_on_failure = on;
        self
    }
    /// Longest one `process_records` call may take; it is then cancelled and counted as a
    /// failure, so a hung processor cannot hold a shard forever. Default
    /// [`DEFAULT_PROCESSING_TIMEOUT`] (5 min); `None` for no limit.
    pub fn processing_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.processing_timeout = timeout;
        self
    }
    /// What to do when retries are exhausted. Default [`OnRetriesExhausted::DeadLetter`].
    pub fn on_retries_exhausted(mut self, action: OnRetriesExhausted) -> Self {
        self.config.on_retries_exhausted = action;
        self
    }

    /// A held shard with no progress (no batch delivered, no read reaching its head) for this
    /// long counts as stalled: a processor that never returns, reads that keep failing, a
    /// parent that never ends. Default [`DEFAULT_STALL_THRESHOLD`] (5 min).
    pub fn stall_threshold(mut self, d: Duration) -> Self {
        self.config.stall_threshold = d;
        self
    }
    /// What to do about a stalled shard. Default [`OnStall::Report`].
    pub fn on_stall(mut self, action: OnStall) -> Self {
        self.config.on_stall = action;
        self
    }

    /// Longest one lease-table call may take before it counts as a transient failure (and is
    /// cancelled). A connection that goes silent (a network partition that drops packets)
    /// would otherwise hold renewals, takes and checkpoints forever: the worker fences itself
    /// in time anyway, but could not notice that the table is back. Default: the renew
    /// interval, a third of the lease duration. Must be less than the lease duration.
    pub fn lease_call_timeout(mut self, d: Duration) -> Self {
        self.config.lease_call_timeout = d;
        self.lease_call_timeout_set = true;
        self
    }
    /// Longest one call of the stream source (listing shards, getting an iterator, reading
    /// records) may take before it counts as a transient failure and is retried. Default
    /// [`DEFAULT_SOURCE_CALL_TIMEOUT`] (5 s; shard listings, which paginate, get ten times as long).
    pub fn source_call_timeout(mut self, d: Duration) -> Self {
        self.config.source_call_timeout = d;
        self
    }
    /// Lease renewals in flight at once, at least 1. Default
    /// [`DEFAULT_MAX_CONCURRENT_RENEWALS`]. The heartbeat is renewed on its own and does not
    /// count here.
    pub fn max_concurrent_renewals(mut self, n: usize) -> Self {
        self.config.max_concurrent_renewals = n;
        self
    }
    /// What is renewed to keep leases. Default [`LeaseRenewal::Heartbeat`]: the heartbeat
    /// only. [`LeaseRenewal::EveryLease`] renews each held lease too, as Java KCL does.
    pub fn lease_renewal(mut self, renewal: LeaseRenewal) -> Self {
        self.config.lease_renewal = renewal;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(mut self) -> Result<Config, ConfigError> {
        if !self.take_interval_set {
            self.config.take_interval = self.config.lease_duration;
        }
        if !self.lease_call_timeout_set {
            self.config.lease_call_timeout = self.config.lease_duration / 3;
        }
        let c = self.config;
        if c.application_name.trim().is_empty() {
            return Err(ConfigError::EmptyApplicationName);
        }
        if c.worker_id.as_str().trim().is_empty() {
            return Err(ConfigError::EmptyWorkerId);
        }
        for (name, d) in [
            ("lease_duration", c.lease_duration),
            ("take_interval", c.take_interval),
            ("heartbeat_poll_interval", c.heartbeat_poll_interval),
            ("shard_sync_interval", c.shard_sync_interval),
            ("parent_poll_interval", c.parent_poll_interval),
            ("idle_wait_min", c.idle_wait_min),
            ("idle_wait_max", c.idle_wait_max),
            ("checkpoint_interval", c.checkpoint_interval),
            ("min_retry_backoff", c.min_retry_backoff),
            ("max_retry_backoff", c.max_retry_backoff),
            ("max_record_age", c.max_record_age.unwrap_or(Duration::MAX)),
            ("stall_threshold", c.stall_threshold),
            ("processing_timeout", c.processing_timeout.unwrap_or(Duration::MAX)),
            ("lease_call_timeout", c.lease_call_timeout),
            ("source_call_timeout", c.source_call_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration { name });
            }
        }
        let inverted = |smaller: &'static str, sv: Duration, larger: &'static str, lv: Duration| {
            (sv >= lv).then_some(ConfigError::Inverted { smaller, smaller_value: sv, larger, larger_value: lv })
        };
        if let Some(e) =
            inverted("heartbeat_poll_interval", c.heartbeat_poll_interval, "lease_duration", c.lease_duration)
                .or_else(|| inverted("lease_call_timeout", c.lease_call_timeout, "lease_duration", c.lease_duration))
                .or_else(|| {
                    inverted(
                        "idle_wait_min",
                        c.idle_wait_min,
                        "idle_wait_max",
                        c.idle_wait_max + Duration::from_nanos(1),
                    )
                })
                .or_else(|| {
                    inverted(
                        "min_retry_backoff",
                        c.min_retry_backoff,
                        "max_retry_backoff",
                        c.max_retry_backoff + Duration::from_nanos(1),
                    )
                })
        {
            return Err(e);
        }
        let range = |name: &'static str, value: usize, min: usize, max: usize| {
            (value < min || value > max).then_some(ConfigError::OutOfRange { name, value, min, max })
        };
        if let Some(e) = range("max_records_per_read", c.max_records_per_read, 1, MAX_RECORDS_PER_READ_LIMIT)
            .or_else(|| range("prefetch_batches", c.prefetch_batches, 1, 100))
            .or_else(|| range("max_leases_per_worker", c.max_leases_per_worker, 1, usize::MAX))
            .or_else(|| range("max_concurrent_renewals", c.max_concurrent_renewals, 1, usize::MAX))
            .or_else(|| in_shard::check(&c))
            .or_else(|| handover::check(&c))
        {
            return Err(e);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = Config::builder("app").worker_id("w1").build().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.lease_duration(), Duration::from_secs(10));
        assert_eq!(c.take_interval, c.lease_duration);
        assert_eq!(c.renew_interval(), Duration::from_secs(10) / 3);
        assert!(c.fence_after() < c.lease_duration());
        assert_eq!(c.max_records_per_read, 1000);
        assert_eq!(c.lease_call_timeout, c.renew_interval());
        assert_eq!(c.source_call_timeout, DEFAULT_SOURCE_CALL_TIMEOUT);
        assert_eq!((c.idle_wait_min, c.idle_wait_max), (Duration::from_millis(200), Duration::from_secs(8)));
        assert_eq!(c.idle_active_window, Duration::from_secs(10));
        // The budget: an idle shard in its steady state reads at most 600 times an hour.
        assert!(Duration::from_secs(3600).as_nanos() / c.idle_wait_max.as_nanos() <= 600);
        assert_eq!(c.checkpoint_policy, CheckpointPolicy::Interval);
        assert_eq!(c.checkpoint_interval, Duration::from_secs(5));
    }

    #[test]
    fn lease_call_timeout_follows_lease_duration_unless_set() {
        let c = Config::builder("app").lease_duration(Duration::from_secs(6)).build().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.lease_call_timeout, Duration::from_secs(2));
        let c = Config::builder("app")
            .lease_call_timeout(Duration::from_millis(700))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.lease_call_timeout, Duration::from_millis(700));
    }

    #[test]
    fn take_interval_follows_lease_duration_unless_set() {
        let c = Config::builder("app").lease_duration(Duration::from_secs(4)).build().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.take_interval, Duration::from_secs(4));
        let c = Config::builder("app").take_interval(Duration::from_secs(7)).build().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.take_interval, Duration::from_secs(7));
    }

    #[test]
    fn rejects_bad_values_with_named_setting() {
        let cases: Vec<(ConfigBuilder, &str)> = vec![
            (Config::builder(""), "application_name is empty"),
            (Config::builder("a").worker_id(" "), "worker_id is empty"),
            (Config::builder("a").lease_duration(Duration::ZERO), "lease_duration is zero"),
            (Config::builder("a").max_records_per_read(1001), "max_records_per_read is 1001"),
            (Config::builder("a").max_records_per_read(0), "max_records_per_read is 0"),
            (Config::builder("a").max_leases_per_worker(0), "max_leases_per_worker is 0"),
            (
                Config::builder("a").heartbeat_poll_interval(Duration::from_secs(20)),
                "heartbeat_poll_interval (20s) must be less than lease_duration (10s)",
            ),
            (
                Config::builder("a").lease_call_timeout(Duration::from_secs(10)),
                "lease_call_timeout (10s) must be less than lease_duration (10s)",
            ),
            (Config::builder("a").source_call_timeout(Duration::ZERO), "source_call_timeout is zero"),
            (Config::builder("a").idle_wait(Duration::ZERO, Duration::from_secs(1)), "idle_wait_min is zero"),
            (
                Config::builder("a").idle_wait(Duration::from_secs(2), Duration::from_secs(1)),
                "idle_wait_min (2s) must be less than idle_wait_max",
            ),
            (Config::builder("a").checkpoint_interval(Duration::ZERO), "checkpoint_interval is zero"),
            (
                Config::builder("a").retry_backoff(Duration::from_secs(5), Duration::from_secs(1)),
                "min_retry_backoff (5s) must be less than max_retry_backoff",
            ),
        ];
        for (builder, want) in cases {
            let msg = builder.build().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains(want), "got {msg:?}, want {want:?}");
        }
    }
}
