//! Test support, also offered to users to test their processors (cargo feature `testing`):
//! an in-memory stream simulator faithful to DynamoDB Streams, an in-memory lease store with
//! DynamoDB's conditional semantics, a recording processor, an invariant checker, and the
//! contract suites that the fakes and the real implementations must both pass.
pub mod contract;
pub mod invariants;
pub mod memory_store;
pub mod recording;
pub mod sim;
