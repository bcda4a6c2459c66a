//! The list prices `cost_bench` turns request counts into dollars with, in one place.
//!
//! Source: the Amazon DynamoDB pricing page for on-demand capacity
//! (<https://aws.amazon.com/dynamodb/pricing/on-demand/>), region US East (N. Virginia),
//! as published when this was written:
//!
//! - write request units: $0.625 per million;
//! - read request units: $0.125 per million;
//! - DynamoDB Streams read request units: $0.02 per 100,000 ($0.20 per million); each
//!   `GetRecords` call is one streams read request unit. `DescribeStream`,
//!   `GetShardIterator` and `DescribeTable` are not priced here.
//!
//! Units: a write of an item up to 1 KB is one write request unit, a strongly consistent
//! read of up to 4 KB one read request unit and an eventually consistent one half a unit;
//! lease items and heartbeats are well under both.
//! A month is 730 hours, as AWS bills it.

/// Dollars per on-demand write request unit.
pub const WRITE_REQUEST_UNIT_USD: f64 = 0.625 / 1_000_000.0;
/// Dollars per on-demand read request unit.
pub const READ_REQUEST_UNIT_USD: f64 = 0.125 / 1_000_000.0;
/// Dollars per DynamoDB Streams read request unit (one `GetRecords` call).
pub const STREAMS_READ_REQUEST_UNIT_USD: f64 = 0.02 / 100_000.0;
/// Hours in a billing month.
pub const HOURS_PER_MONTH: f64 = 730.0;
/// Minutes in a billing month.
pub const MINUTES_PER_MONTH: f64 = HOURS_PER_MONTH * 60.0;

/// The prices as one line, for the benchmark's output.
pub fn describe() -> String {
    format!(
        "on-demand us-east-1 list prices: WRU ${:.3}/million, RRU ${:.3}/million, Streams GetRecords ${:.2}/million; \
         1 WRU per write (items <= 1 KB), 1 RRU per strongly consistent GetItem (<= 4 KB), 0.5 per eventually consistent one, Scan RRU = answer \
         bytes / 4 KB rounded up; month = {HOURS_PER_MONTH} h",
        WRITE_REQUEST_UNIT_USD * 1e6,
        READ_REQUEST_UNIT_USD * 1e6,
        STREAMS_READ_REQUEST_UNIT_USD * 1e6,
    )
}

/// Request units used in some window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Units {
    /// Lease-table write request units.
    pub write: f64,
    /// Lease-table read request units.
    pub read: f64,
    /// Streams read request units (`GetRecords` calls).
    pub streams_read: f64,
}

impl Units {
    /// What the units cost.
    pub fn usd(&self) -> f64 {
        self.write * WRITE_REQUEST_UNIT_USD
            + self.read * READ_REQUEST_UNIT_USD
            + self.streams_read * STREAMS_READ_REQUEST_UNIT_USD
    }

    /// These units, used in `window_minutes` by `shards` shards, as a monthly cost per shard.
    pub fn usd_per_shard_month(&self, window_minutes: f64, shards: f64) -> f64 {
        if window_minutes <= 0.0 || shards <= 0.0 {
            return 0.0;
        }
        self.usd() / shards * (MINUTES_PER_MONTH / window_minutes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_million_of_each_costs_the_list_price() {
        let units = Units { write: 1e6, read: 1e6, streams_read: 1e6 };
        assert!((units.usd() - (0.625 + 0.125 + 0.20)).abs() < 1e-9);
    }

    #[test]
    fn a_call_a_minute_for_a_month_is_43800_calls() {
        let one_a_minute = Units { write: 1.0, read: 0.0, streams_read: 0.0 };
        let month = one_a_minute.usd_per_shard_month(1.0, 1.0);
        assert!((month - 43_800.0 * WRITE_REQUEST_UNIT_USD).abs() < 1e-12);
        assert!((one_a_minute.usd_per_shard_month(1.0, 2.0) - month / 2.0).abs() < 1e-12);
    }
}
