//! The figures an autoscaler needs, as CloudWatch Embedded Metric Format (EMF) lines on stdout:
//! the `awslogs` log driver ships them to CloudWatch Logs, which extracts the metrics, so no
//! agent and no `PutMetricData` permission is needed. Off by default (`--emf-interval-secs`);
//! the ECS template turns it on.
//!
//! Each line carries, in namespace [`NAMESPACE`] with the one dimension `ApplicationName`:
//! - [`MAX_ITERATOR_AGE`]: the age of the last record delivered, oldest among this worker's
//!   shards (its `Maximum` over the fleet's lines is the fleet's lag);
//! - [`LEASES_HELD`]: the shard leases this worker holds (its `Average` over the fleet is the
//!   leases per worker; below 1 some workers hold nothing: more tasks than shards).
//!
//! `WorkerId` is a property of the line, not a dimension, so the metrics cost the same however
//! many tasks run.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kcl_core::WorkerStatus;
use serde_json::json;

/// The CloudWatch namespace of the metrics.
pub const NAMESPACE: &str = "kcl-streams";
/// The metric of the oldest shard's lag, in seconds.
pub const MAX_ITERATOR_AGE: &str = "MaxIteratorAgeSeconds";
/// The metric of the leases held by one worker.
pub const LEASES_HELD: &str = "LeasesHeld";

/// The figures of one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figures {
    /// The oldest shard's lag (zero without one).
    pub max_iterator_age: Duration,
    /// Shard leases held.
    pub leases_held: usize,
}

impl Figures {
    /// The figures of a worker's status.
    pub fn of(status: &WorkerStatus) -> Self {
        Self { max_iterator_age: status.max_lag().unwrap_or(Duration::ZERO), leases_held: status.leases_held() }
    }
}

/// One EMF line (without the newline) of worker `worker` of `application` at `now`.
pub fn line(application: &str, worker: &str, figures: Figures, now: SystemTime) -> String {
    let millis = now.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let age = figures.max_iterator_age.as_secs();
    json!({
        "_aws": {
            "Timestamp": millis,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["ApplicationName"]],
                "Metrics": [
                    { "Name": MAX_ITERATOR_AGE, "Unit": "Seconds" },
                    { "Name": LEASES_HELD, "Unit": "Count" },
                ],
            }],
        },
        "ApplicationName": application,
        "WorkerId": worker,
        MAX_ITERATOR_AGE: age,
        LEASES_HELD: figures.leases_held,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn a_line_is_emf_with_both_metrics_under_the_application() {
        let figures = Figures { max_iterator_age: Duration::from_millis(7_900), leases_held: 2 };
        let text = line("orders", "w1", figures, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        assert!(!text.contains('\n'), "one line: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_123u64);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["ApplicationName"]]));
        let names: Vec<&str> =
            directive["Metrics"].as_array().into_iter().flatten().filter_map(|m| m["Name"].as_str()).collect();
        assert_eq!(names, [MAX_ITERATOR_AGE, LEASES_HELD]);
        // Every metric and dimension named in the directive is a member of the line.
        for name in names.iter().chain(["ApplicationName"].iter()) {
            assert!(!v[*name].is_null(), "{name} missing: {text}");
        }
        assert_eq!((v["ApplicationName"].as_str(), v["WorkerId"].as_str()), (Some("orders"), Some("w1")));
        assert_eq!((v[MAX_ITERATOR_AGE].as_u64(), v[LEASES_HELD].as_u64()), (Some(7), Some(2)));
    }
}
