//! The deploy files (alert rules, Grafana dashboard) name only metrics the worker registers,
//! the alert rules cover the metrics that say records were given up or a shard is held, and the
//! ECS template's autoscaling reads exactly the CloudWatch metrics the workers publish (their
//! Embedded Metric Format lines, `kcl_worker::emf`).

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

/// The autoscaling resources of the ECS template read the workers' EMF metrics, under their
/// namespace and dimension, and the template turns the EMF lines on.
#[test]
fn autoscaling_reads_the_metrics_the_workers_publish() {
    use kcl_worker::emf::{LEASES_HELD, MAX_ITERATOR_AGE, NAMESPACE};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/ecs-service.yaml");
    let template = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let lines: Vec<&str> = template.lines().map(str::trim).collect();
    for resource in [
        "Type: AWS::ApplicationAutoScaling::ScalableTarget",
        "ScalableDimension: ecs:service:DesiredCount",
        "ResourceId: !Sub service/${Cluster}/${Service.Name}",
        "MinCapacity: !Ref MinTasks",
        "MaxCapacity: !Ref MaxTasks",
        "AlarmActions: [!Ref ScaleOutPolicy]",
        "AlarmActions: [!Ref ScaleInPolicy]",
        "- Name: KCL_EMF_INTERVAL_SECS",
    ] {
        assert!(lines.contains(&resource), "ecs-service.yaml lacks {resource:?}");
    }
    let read = |key: &str| -> Vec<&str> { lines.iter().filter_map(|l| l.strip_prefix(key)).map(str::trim).collect() };
    let names = read("MetricName:");
    assert_eq!(names.len(), 4, "two metrics in each of the two alarms: {names:?}");
    for name in &names {
        assert!([MAX_ITERATOR_AGE, LEASES_HELD].contains(name), "the alarms read {name}, which no worker publishes");
    }
    for wanted in [MAX_ITERATOR_AGE, LEASES_HELD] {
        assert!(names.contains(&wanted), "no alarm reads {wanted}");
    }
    assert!(read("Namespace:").iter().all(|n| *n == NAMESPACE), "namespaces: {:?}", read("Namespace:"));
    let dimensions: Vec<&str> = read("- Name:")
        .into_iter()
        .filter(|n| {
            !n.starts_with("KCL_") && !n.starts_with("AWS_") && *n != "RUST_LOG" && *n != "metrics" && *n != "worker"
        })
        .collect();
    assert!(dimensions.iter().all(|d| *d == "ApplicationName"), "dimensions: {dimensions:?}");
}
