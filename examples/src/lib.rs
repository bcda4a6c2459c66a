//! Shared code of the example binaries' benchmarks.
//!
//! - [`proxy`]: a loopback counting proxy in front of DynamoDB Local, one per worker, that
//!   sorts each request into heartbeat, lease and checkpoint writes, lease-table reads and
//!   stream calls;
//! - [`http`]: the HTTP/1.1 message framing the proxy reads the traffic with;
//! - [`multi_stream`]: several tables' streams read as one source, so that a worker holds
//!   several shards on DynamoDB Local (which gives each stream one shard);
//! - [`prices`]: the on-demand list prices the cost benchmark uses, in one place;
//! - [`support`]: the error type, environment settings, clock stamps and logging of every bench.

pub mod http;
pub mod multi_stream;
pub mod prices;
pub mod proxy;
pub mod support;
