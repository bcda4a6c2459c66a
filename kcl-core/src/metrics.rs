//! Prometheus metrics, registered in a [`prometheus::Registry`] the user passes in.
//!
//! Names start with `kcl_`. No metric is labelled with a shard id: thousands of shards would
//! explode cardinality. Per-shard figures are in the worker's status snapshot instead.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The worker's metric set. Cheap to clone (every metric is reference counted).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// By `stream` ([`StreamSource::stream_of`](crate::StreamSource::stream_of); empty for one stream).
    pub(crate) records_processed: IntCounterVec,
    /// Records a configured filter left out: not delivered, checkpointed past.
    pub(crate) records_filtered: IntCounter,
    /// Tumbling windows ended, by reason (elapsed, shard_ended, state_too_large).
    pub(crate) windows_closed: IntCounterVec,
    pub(crate) batches: IntCounterVec,
    /// `batches{result="ok"}`, resolved once (the hot path).
    pub(crate) batches_ok: IntCounter,
    pub(crate) batch_seconds: Histogram,
    /// By `stream`, as `records_processed`.
    pub(crate) iterator_age_seconds: IntGaugeVec,
    pub(crate) leases_held: IntGauge,
    pub(crate) lease_takes: IntCounterVec,
    pub(crate) lease_handoffs: IntCounterVec,
    pub(crate) leases_lost: IntCounter,
    pub(crate) renewal_failures: IntCounter,
    pub(crate) read_seconds: HistogramVec,
    /// `read_seconds` for successful reads, resolved once (the hot path).
    pub(crate) read_ok_seconds: Histogram,
    pub(crate) read_errors: IntCounterVec,
    pub(crate) checkpoints: IntCounterVec,
    pub(crate) checkpoints_coalesced: IntCounter,
    pub(crate) trimmed_data: IntCounter,
    pub(crate) shards_ended: IntCounter,
    pub(crate) lease_table_errors: IntCounterVec,
    pub(crate) dead_lettered: IntCounter,
    pub(crate) dead_letter_failures: IntCounterVec,
    pub(crate) skipped: IntCounter,
    pub(crate) processing_timeouts: IntCounter,
    pub(crate) stalled_shards: IntGauge,
    pub(crate) processor_panics: IntCounterVec,
    pub(crate) consumer_failures: IntCounter,
    pub(crate) undecodable_records: IntCounter,
    pub(crate) shards_without_children: IntGauge,
}

/// A metric could not be registered (most often: two workers registered in one registry).
#[derive(Debug, thiserror::Error)]
#[error("cannot register metrics: {0}; give each worker in a process its own prometheus::Registry")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Creates the metric set and registers it in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let read_seconds = HistogramVec::new(
            HistogramOpts::new("kcl_get_records_seconds", "Latency of a stream read, by result")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
            &["result"],
        )?;
        let batches = IntCounterVec::new(
            Opts::new("kcl_batches_total", "process_records calls by result (ok, error)"),
            &["result"],
        )?;
        let m = Self {
            read_ok_seconds: read_seconds.with_label_values(&["ok"]),
            batches_ok: batches.with_label_values(&["ok"]),
            records_processed: IntCounterVec::new(
                Opts::new(
                    "kcl_records_processed_total",
                    "Records delivered to process_records and handled, by stream (the MultiStream name; empty \
                     for a worker of one stream)",
                ),
                &["stream"],
            )?,
            records_filtered: IntCounter::new(
                "kcl_records_filtered_total",
                "Records that matched none of the configured filter patterns: not delivered to process_records, \
                 and the checkpoint moves past them",
            )?,
            windows_closed: IntCounterVec::new(
                Opts::new(
                    "kcl_windows_closed_total",
                    "Tumbling windows whose final call (window_ended) returned, by reason (elapsed, shard_ended, \
                     state_too_large: the processor returned a state too large to store with the checkpoint)",
                ),
                &["reason"],
            )?,
            batches,
            batch_seconds: Histogram::with_opts(
                HistogramOpts::new("kcl_batch_processing_seconds", "Time spent in one process_records call")
                    .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )?,
            iterator_age_seconds: IntGaugeVec::new(
                Opts::new(
                    "kcl_iterator_age_seconds",
                    "Age of the last record delivered, oldest among this worker's shards of each stream (the \
                     MultiStream name; empty for a worker of one stream)",
                ),
                &["stream"],
            )?,
            leases_held: IntGauge::new("kcl_leases_held", "Shard leases this worker owns")?,
            lease_takes: IntCounterVec::new(
                Opts::new(
                    "kcl_lease_takes_total",
                    "Leases taken, by reason (unowned, expired, handed_over on request, stolen from an owner that did not answer)",
                ),
                &["reason"],
            )?,
            lease_handoffs: IntCounterVec::new(
                Opts::new(
                    "kcl_lease_handoffs_total",
                    "Lease handoffs for balancing, by side (asked: requests this worker sent; given: leases it handed over)",
                ),
                &["side"],
            )?,
            leases_lost: IntCounter::new("kcl_leases_lost_total", "Leases this worker lost to another worker")?,
            renewal_failures: IntCounter::new(
                "kcl_lease_renewal_failures_total",
                "Lease or heartbeat renewals that failed with an error (not a lost race)",
            )?,
            read_seconds,
            read_errors: IntCounterVec::new(
                Opts::new("kcl_get_records_errors_total", "Stream read and iterator errors, by kind"),
                &["kind"],
            )?,
            checkpoints: IntCounterVec::new(
                Opts::new("kcl_checkpoints_total", "Checkpoint writes, by result (ok, lease_lost, error)"),
                &["result"],
            )?,
            checkpoints_coalesced: IntCounter::new(
                "kcl_checkpoints_coalesced_total",
                "Checkpoints recorded and then superseded by a later one before they were written (each saved one \
                 lease-table write; see checkpoint_policy)",
            )?,
            trimmed_data: IntCounter::new(
                "kcl_trimmed_data_total",
                "Times a shard position was older than the stream's retention: records in between are gone",
            )?,
            shards_ended: IntCounter::new("kcl_shards_ended_total", "Shards processed to their end")?,
            lease_table_errors: IntCounterVec::new(
                Opts::new("kcl_lease_table_errors_total", "Lease table errors, by operation"),
                &["operation"],
            )?,
            dead_lettered: IntCounter::new(
                "kcl_dead_letter_records_total",
                "Records sent to the dead-letter destination after their retries were exhausted",
            )?,
            dead_letter_failures: IntCounterVec::new(
                Opts::new(
                    "kcl_dead_letter_failures_total",
                    "Sends to the dead-letter destination that failed, by kind (transient, throttled, not_found, \
                     access_denied, rejected); the shard waits and sends again",
                ),
                &["kind"],
            )?,
            skipped: IntCounter::new(
                "kcl_records_skipped_total",
                "Records skipped after their retries were exhausted, with no dead-letter destination",
            )?,
            processing_timeouts: IntCounter::new(
                "kcl_processing_timeouts_total",
                "process_records calls cancelled for exceeding the processing timeout",
            )?,
            stalled_shards: IntGauge::new(
                "kcl_stalled_shards",
                "Held shards without progress for longer than the stall threshold",
            )?,
            processor_panics: IntCounterVec::new(
                Opts::new(
                    "kcl_processor_panics_total",
                    "Processor calls that panicked, by callback (initialize, process_records, shard_ended, \
                     shutdown_requested, lease_lost); each is handled as a failure of that call",
                ),
                &["callback"],
            )?,
            consumer_failures: IntCounter::new(
                "kcl_consumer_failures_total",
                "Shard consumer tasks that ended abnormally (a panic outside a processor call); their leases are \
                 released at once",
            )?,
            undecodable_records: IntCounter::new(
                "kcl_undecodable_records_total",
                "Records the stream source could not decode, isolated by reading one record at a time and handed to \
                 the failure policy",
            )?,
            shards_without_children: IntGauge::new(
                "kcl_ended_shards_without_children",
                "Shards this worker processed to their end whose children have not appeared for longer than \
                 the stall threshold",
            )?,
        };
        // The one-stream series exist from the start (at 0), as before the label.
        m.records_processed.with_label_values(&[""]);
        m.iterator_age_seconds.with_label_values(&[""]);
        registry.register(Box::new(m.records_processed.clone()))?;
        registry.register(Box::new(m.records_filtered.clone()))?;
        registry.register(Box::new(m.windows_closed.clone()))?;
        registry.register(Box::new(m.stalled_shards.clone()))?;
        registry.register(Box::new(m.shards_without_children.clone()))?;
        registry.register(Box::new(m.processor_panics.clone()))?;
        registry.register(Box::new(m.consumer_failures.clone()))?;
        registry.register(Box::new(m.undecodable_records.clone()))?;
        registry.register(Box::new(m.dead_lettered.clone()))?;
        registry.register(Box::new(m.dead_letter_failures.clone()))?;
        registry.register(Box::new(m.skipped.clone()))?;
        registry.register(Box::new(m.processing_timeouts.clone()))?;
        registry.register(Box::new(m.batches.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.iterator_age_seconds.clone()))?;
        registry.register(Box::new(m.leases_held.clone()))?;
        registry.register(Box::new(m.lease_takes.clone()))?;
        registry.register(Box::new(m.lease_handoffs.clone()))?;
        registry.register(Box::new(m.leases_lost.clone()))?;
        registry.register(Box::new(m.renewal_failures.clone()))?;
        registry.register(Box::new(m.read_seconds.clone()))?;
        registry.register(Box::new(m.read_errors.clone()))?;
        registry.register(Box::new(m.checkpoints.clone()))?;
        registry.register(Box::new(m.checkpoints_coalesced.clone()))?;
        registry.register(Box::new(m.trimmed_data.clone()))?;
        registry.register(Box::new(m.shards_ended.clone()))?;
        registry.register(Box::new(m.lease_table_errors.clone()))?;
        Ok(m)
    }

    /// A metric set registered nowhere (for tests and for users who do not scrape).
    pub fn unregistered() -> Self {
        // Registering in a fresh registry cannot collide, so this cannot fail.
        #[allow(clippy::expect_used)]
        Self::new(&Registry::new()).expect("fresh registry has no duplicate metrics")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_per_registry() {
        let registry = Registry::new();
        assert!(Metrics::new(&registry).is_ok());
        let err = Metrics::new(&registry).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("its own prometheus::Registry"), "{err}");
        let names: Vec<String> = registry.gather().iter().map(|f| f.name().to_owned()).collect();
        assert!(names.iter().all(|n| n.starts_with("kcl_")), "{names:?}");
    }
}
