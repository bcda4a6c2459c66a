//! [`SimulatorBuilder`]: every knob of the stream simulator, with DynamoDB's values as defaults.

use std::time::Duration;

use super::StreamSimulator;

/// Default seed of the simulator's random generators.
pub const DEFAULT_SEED: u64 = 0;
/// Default number of shards the stream starts with.
pub const DEFAULT_INITIAL_SHARDS: usize = 1;
/// Default retention: DynamoDB Streams keeps records 24 hours.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Default iterator lifetime: DynamoDB Streams iterators expire 15 minutes after they are issued.
pub const DEFAULT_ITERATOR_TTL: Duration = Duration::from_secs(15 * 60);
/// Default number of concurrent reads one shard allows before throttling (DynamoDB: 2).
pub const DEFAULT_MAX_READERS_PER_SHARD: usize = 2;
/// Shortest automatic rotation or split period; shorter ones are raised to this.
pub const MIN_AUTO_PERIOD: Duration = Duration::from_millis(1);

/// The simulator's fixed settings, as the builder left them.
#[derive(Clone, Debug)]
pub(super) struct Settings {
    pub(super) seed: u64,
    pub(super) initial_shards: usize,
    pub(super) retention: Duration,
    pub(super) iterator_ttl: Duration,
    pub(super) max_readers_per_shard: usize,
    pub(super) child_listing_delay: Duration,
    pub(super) auto_rotate_every: Option<Duration>,
    pub(super) auto_split_every: Option<Duration>,
    pub(super) read_latency: Duration,
    /// Wall-clock time at which the simulator was built; `None` for a fixed base.
    pub(super) wall_clock_base: Option<std::time::SystemTime>,
}

/// Configures a [`StreamSimulator`]. Every knob has DynamoDB's value (or "off") as default.
///
/// ```
/// use std::time::Duration;
/// use kcl_core::testing::sim::StreamSimulator;
///
/// let sim = StreamSimulator::builder()
///     .seed(42)
///     .initial_shards(4)
///     .auto_rotate_every(Some(Duration::from_secs(4 * 60 * 60)))
///     .build();
/// assert_eq!(sim.open_shards().len(), 4);
/// ```
#[derive(Clone, Debug)]
pub struct SimulatorBuilder {
    settings: Settings,
}

impl Default for SimulatorBuilder {
    fn default() -> Self {
        Self {
            settings: Settings {
                seed: DEFAULT_SEED,
                initial_shards: DEFAULT_INITIAL_SHARDS,
                retention: DEFAULT_RETENTION,
                iterator_ttl: DEFAULT_ITERATOR_TTL,
                max_readers_per_shard: DEFAULT_MAX_READERS_PER_SHARD,
                child_listing_delay: Duration::ZERO,
                auto_rotate_every: None,
                auto_split_every: None,
                read_latency: Duration::ZERO,
                wall_clock_base: None,
            },
        }
    }
}

impl SimulatorBuilder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Seeds the random generators: the same seed and the same calls give the same shard ids,
    /// sequence numbers and random faults. Default [`DEFAULT_SEED`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = seed;
        self
    }

    /// How many open shards the stream starts with; the hash space is split evenly between
    /// them. 0 is treated as 1. Default [`DEFAULT_INITIAL_SHARDS`].
    pub fn initial_shards(mut self, n: usize) -> Self {
        self.settings.initial_shards = n.max(1);
        self
    }

    /// How long records stay readable; older ones are trimmed. Default [`DEFAULT_RETENTION`].
    pub fn retention(mut self, retention: Duration) -> Self {
        self.settings.retention = retention;
        self
    }

    /// How long an iterator may be used after it was issued. Default [`DEFAULT_ITERATOR_TTL`].
    pub fn iterator_ttl(mut self, ttl: Duration) -> Self {
        self.settings.iterator_ttl = ttl;
        self
    }

    /// Concurrent reads of one shard allowed before further reads are throttled. 0 throttles
    /// every read. Default [`DEFAULT_MAX_READERS_PER_SHARD`].
    pub fn max_readers_per_shard(mut self, n: usize) -> Self {
        self.settings.max_readers_per_shard = n;
        self
    }

    /// How long the children of a closed shard stay out of `list_shards` after the close,
    /// modelling children that appear late. Default zero.
    pub fn child_listing_delay(mut self, delay: Duration) -> Self {
        self.settings.child_listing_delay = delay;
        self
    }

    /// Rotates every open shard (close it, open one child with the same hash range) each time
    /// this period elapses, as DynamoDB does about every 4 hours. Applied lazily on the next
    /// call, at the scheduled instants; no background task. `None` (default) turns it off;
    /// periods under [`MIN_AUTO_PERIOD`] (including zero) are raised to it.
    pub fn auto_rotate_every(mut self, period: Option<Duration>) -> Self {
        self.settings.auto_rotate_every = period.map(|p| p.max(MIN_AUTO_PERIOD));
        self
    }

    /// Splits one open shard (the one with the most records; the lowest index on ties) each
    /// time this period elapses. Applied lazily like [`Self::auto_rotate_every`]; when both fall
    /// due at the same instant the rotation comes first. `None` (default) turns it off.
    pub fn auto_split_every(mut self, period: Option<Duration>) -> Self {
        self.settings.auto_split_every = period.map(|p| p.max(MIN_AUTO_PERIOD));
        self
    }

    /// Stamps records with the real wall clock (the time the simulator was built plus the
    /// elapsed tokio time) instead of a fixed base in November 2023, so that lag figures are
    /// meaningful in programs that run in real time. Default: fixed base (deterministic).
    pub fn real_wall_clock(mut self) -> Self {
        self.settings.wall_clock_base = Some(std::time::SystemTime::now());
        self
    }

    /// How long each successful read takes (a `tokio::time::sleep`, so paused time works); a
    /// read counts against [`Self::max_readers_per_shard`] for this long. Default zero.
    pub fn read_latency(mut self, latency: Duration) -> Self {
        self.settings.read_latency = latency;
        self
    }

    /// Builds the simulator. Its clock starts now (`tokio::time::Instant`).
    pub fn build(self) -> StreamSimulator {
        StreamSimulator::from_settings(self.settings)
    }
}
