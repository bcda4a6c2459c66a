//! The deploy files (alert rules, Grafana dashboard) name only metrics the worker registers,
//! and the alert rules cover the metrics that say records were given up or a shard is held.

use std::collections::BTreeSet;

use kcl_core::Metrics;
use prometheus::{IntCounter, Registry};

/// Every `kcl_…` metric name in `text`, less a histogram's `_bucket`, `_count` and `_sum`
/// suffix.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("kcl_") {
        let tail = &rest[at..];
        let end =
            tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        rest = &tail[end..];
        if rest.starts_with("::") {
            continue; // a Rust path such as `kcl_core::metrics`, not a metric
        }
        let base = ["_bucket", "_count", "_sum"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
        names.insert(base.to_owned());
    }
    names
}

/// Whether the worker's metric set registers `name`: registering another collector under the
/// same name fails exactly then (labelled families count even before their first sample).
fn registered(registry: &Registry, name: &str) -> bool {
    let probe = IntCounter::new(name, "probe").unwrap_or_else(|e| panic!("{name}: {e}"));
    let taken = registry.register(Box::new(probe.clone())).is_err();
    if !taken {
        registry.unregister(Box::new(probe)).unwrap_or_else(|e| panic!("{e}"));
    }
    taken
}

fn deploy_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_probe_tells_registered_names_from_others() {
    let registry = Registry::new();
    Metrics::new(&registry).unwrap_or_else(|e| panic!("{e}"));
    assert!(registered(&registry, "kcl_records_processed_total"));
    assert!(registered(&registry, "kcl_dead_letter_failures_total"), "a labelled family with no sample yet");
    assert!(!registered(&registry, "kcl_no_such_metric"));
    assert!(!registered(&registry, "kcl_no_such_metric"), "the probe left nothing behind");
}

#[test]
fn alerts_and_dashboard_name_only_registered_metrics() {
    let registry = Registry::new();
    Metrics::new(&registry).unwrap_or_else(|e| panic!("{e}"));
    for file in ["alerts.yml", "grafana-dashboard.json"] {
        let names = metric_names(&deploy_file(file));
        assert!(names.len() >= 5, "{file}: {names:?}");
        let unknown: Vec<_> = names.iter().filter(|n| !registered(&registry, n)).collect();
        assert!(unknown.is_empty(), "deploy/{file} names metrics the worker does not register: {unknown:?}");
    }
}

#[test]
fn every_metric_of_given_up_or_held_records_has_an_alert() {
    let alerted = metric_names(&deploy_file("alerts.yml"));
    for name in [
        "kcl_trimmed_data_total",
        "kcl_records_skipped_total",
        "kcl_dead_letter_records_total",
        "kcl_dead_letter_failures_total",
        "kcl_stalled_shards",
        "kcl_ended_shards_without_children",
        "kcl_processing_timeouts_total",
        "kcl_processor_panics_total",
        "kcl_consumer_failures_total",
        "kcl_undecodable_records_total",
    ] {
        assert!(alerted.contains(name), "deploy/alerts.yml has no rule on {name}");
    }
}
