//! The in-shard controls, named after Lambda's: per-key parallelism inside a shard
//! (`ParallelizationFactor`), the batch size and batching window
//! (`BatchSize`, `MaximumBatchingWindowInSeconds`).

use std::time::Duration;

use super::{CheckpointPolicy, Config, ConfigBuilder, ConfigError};
use crate::window::{MAX_TUMBLING_WINDOW, MIN_TUMBLING_WINDOW};

/// Default lanes per shard: 1 (records delivered one batch at a time, as before).
pub const DEFAULT_PARALLELISM: usize = 1;
/// Most lanes per shard (Lambda's `ParallelizationFactor` allows 10 too).
pub const MAX_PARALLELISM: usize = 10;
/// Default most records per batch: 1000, what one read can return, so by default each
/// read's records form one batch.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Largest batch size (Lambda's limit for DynamoDB event sources).
pub const MAX_BATCH_SIZE: usize = 10_000;
/// Default batching window: none; what a read returns is delivered at once.
pub const DEFAULT_BATCHING_WINDOW: Duration = Duration::ZERO;
/// Longest batching window (Lambda's limit: 300 s).
pub const MAX_BATCHING_WINDOW: Duration = Duration::from_secs(300);

impl ConfigBuilder {
    /// Lanes per shard (Lambda: `ParallelizationFactor`), 1 to [`MAX_PARALLELISM`]. Default
    /// [`DEFAULT_PARALLELISM`]. With more than one, a shard's records are split by item key
    /// into that many ordered lanes, each delivered to its own processor instance
    /// concurrently; the changes of one item stay in one lane, in order, and the checkpoint
    /// never passes a record of an unfinished lane.
    pub fn parallelism(mut self, lanes: usize) -> Self {
        self.config.parallelism = lanes;
        self
    }

    /// Most records in one batch (Lambda: `BatchSize`), 1 to [`MAX_BATCH_SIZE`]. Default
    /// [`DEFAULT_BATCH_SIZE`]. A read's records are split into batches of at most this many;
    /// with a [`batching_window`](Self::batching_window), records of several reads are
    /// gathered up to this many.
    pub fn batch_size(mut self, records: usize) -> Self {
        self.config.batch_size = records;
        self
    }

    /// How long records are gathered before delivery (Lambda:
    /// `MaximumBatchingWindowInSeconds`), at most [`MAX_BATCHING_WINDOW`]. Default
    /// [`DEFAULT_BATCHING_WINDOW`] (none). A batch is delivered once it holds
    /// [`batch_size`](Self::batch_size) records or this long after its first record arrived;
    /// at shard end, handoff and shutdown the partial batch is delivered first.
    pub fn batching_window(mut self, window: Duration) -> Self {
        self.config.batching_window = window;
        self
    }
}

impl ConfigBuilder {
    /// Delivers only the records that match `criteria` (Lambda: `FilterCriteria`, in the same
    /// JSON syntax; see [`crate::filter`]). Default: none (every record). Records that match
    /// no pattern are not delivered, are counted in `kcl_records_filtered_total`, and the
    /// checkpoint moves past them. With [`Worker::with_record_filter`](crate::Worker::with_record_filter)
    /// too, a record must pass both.
    pub fn filter(mut self, criteria: crate::filter::FilterCriteria) -> Self {
        self.config.filter = Some(std::sync::Arc::new(criteria));
        self
    }
}

impl ConfigBuilder {
    /// Tumbling windows of this length (Lambda: `TumblingWindowInSeconds`), from
    /// [`MIN_TUMBLING_WINDOW`] to [`MAX_TUMBLING_WINDOW`]. Default: none. The processor's
    /// [`process_window`](crate::RecordProcessor::process_window) then gets each window's
    /// records with the state the previous batch returned, and
    /// [`window_ended`](crate::RecordProcessor::window_ended) gets the final state; the state
    /// is stored with the checkpoint, so the next owner of the shard continues it (see
    /// [`crate::window`]). Needs [`parallelism`](Self::parallelism) 1 and the automatic
    /// [`CheckpointPolicy::Interval`].
    pub fn tumbling_window(mut self, window: Duration) -> Self {
        self.config.tumbling_window = Some(window);
        self
    }
}

impl Config {
    /// The tumbling window's length, when set.
    pub fn tumbling_window(&self) -> Option<Duration> {
        self.tumbling_window
    }

    /// Lanes per shard.
    pub fn parallelism(&self) -> usize {
        self.parallelism
    }
}

/// The in-shard controls' range rules.
pub(super) fn check(c: &Config) -> Option<ConfigError> {
    let range = |name: &'static str, value: usize, min: usize, max: usize| {
        (value < min || value > max).then_some(ConfigError::OutOfRange { name, value, min, max })
    };
    range("parallelism", c.parallelism, 1, MAX_PARALLELISM)
        .or_else(|| range("batch_size", c.batch_size, 1, MAX_BATCH_SIZE))
        .or_else(|| check_tumbling_window(c))
        .or_else(|| {
            (c.batching_window > MAX_BATCHING_WINDOW).then_some(ConfigError::Inverted {
                smaller: "batching_window",
                smaller_value: c.batching_window,
                larger: "its limit",
                larger_value: MAX_BATCHING_WINDOW + Duration::from_nanos(1),
            })
        })
}

/// A tumbling window's length and the settings it needs.
fn check_tumbling_window(c: &Config) -> Option<ConfigError> {
    let window = c.tumbling_window?;
    let out_of_range = |smaller, smaller_value, larger, larger_value| {
        Some(ConfigError::Inverted { smaller, smaller_value, larger, larger_value })
    };
    if window < MIN_TUMBLING_WINDOW {
        return out_of_range("its minimum", MIN_TUMBLING_WINDOW - Duration::from_nanos(1), "tumbling_window", window);
    }
    if window > MAX_TUMBLING_WINDOW {
        return out_of_range("tumbling_window", window, "its limit", MAX_TUMBLING_WINDOW + Duration::from_nanos(1));
    }
    if c.parallelism > 1 {
        return Some(ConfigError::Conflict {
            setting: "tumbling_window",
            other: "parallelism above 1",
            why: "a window's state is kept per shard, not per lane; set parallelism to 1",
        });
    }
    if c.checkpoint_policy == CheckpointPolicy::Processor {
        return Some(ConfigError::Conflict {
            setting: "tumbling_window",
            other: "CheckpointPolicy::Processor",
            why: "the worker stores the window's state with the checkpoint it writes after each batch; \
                  use CheckpointPolicy::Interval (the default)",
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_shard_controls_default_and_range() {
        let c = Config::builder("a").build().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((c.parallelism, c.batch_size, c.batching_window), (1, 1000, Duration::ZERO));
        let cases = [
            (Config::builder("a").parallelism(0), "parallelism is 0: it must be between 1 and 10"),
            (Config::builder("a").parallelism(11), "parallelism is 11"),
            (Config::builder("a").batch_size(0), "batch_size is 0"),
            (Config::builder("a").batch_size(10_001), "batch_size is 10001"),
            (
                Config::builder("a").batching_window(Duration::from_secs(301)),
                "batching_window (301s) must be less than its limit",
            ),
        ];
        for (builder, want) in cases {
            let msg = builder.build().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains(want), "got {msg:?}, want {want:?}");
        }
        let c = Config::builder("a").parallelism(10).batch_size(10_000).batching_window(MAX_BATCHING_WINDOW).build();
        assert!(c.is_ok());
    }

    #[test]
    fn tumbling_windows_range_and_conflicts() {
        let s = Duration::from_secs;
        let cases = [
            (Config::builder("a").tumbling_window(Duration::from_millis(999)), "must be less than tumbling_window"),
            (Config::builder("a").tumbling_window(s(901)), "tumbling_window (901s) must be less than its limit"),
            (
                Config::builder("a").tumbling_window(s(60)).parallelism(2),
                "tumbling_window cannot be used with parallelism above 1: a window's state is kept per shard",
            ),
            (
                Config::builder("a").tumbling_window(s(60)).checkpoint_policy(CheckpointPolicy::Processor),
                "tumbling_window cannot be used with CheckpointPolicy::Processor",
            ),
        ];
        for (builder, want) in cases {
            let msg = builder.build().err().map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains(want), "got {msg:?}, want {want:?}");
        }
        for ok in [s(1), s(900)] {
            let c = Config::builder("a").tumbling_window(ok).build().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.tumbling_window(), Some(ok));
        }
        assert_eq!(Config::builder("a").build().map(|c| c.tumbling_window()).ok(), Some(None));
    }
}
