//! Shared code of the example binaries' benchmarks.
//!
//! - [`proxy`]: a loopback counting proxy in front of DynamoDB Local, one per worker, that
//!   sorts each request into heartbeat, lease and checkpoint writes, lease-table reads and
//!   stream calls;
//! - [`http`]: the HTTP/1.1 message framing the proxy reads the traffic with;
//! - [`prices`]: the on-demand list prices the cost benchmark uses, in one place;
//! - [`support`]: the error type, environment settings, clock stamps and logging of every bench.

pub mod http;
pub mod prices;
pub mod proxy;
pub mod support;
