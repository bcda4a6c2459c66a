//! The parts of the fleet worker binary (`cargo run -p kcl-examples --bin worker`): its
//! processors, its HTTP endpoints and its default worker id. The binary itself
//! (`src/bin/worker.rs`) only parses flags, builds the AWS clients and handles signals.
//!
//! - [`jsonl`]: appends every record as a JSON line to a file (tests, debugging);
//! - [`replicate`]: copies every change into another table, idempotently;
//! - [`http`]: `/metrics`, `/healthz`, `/status`;
//! - [`identity`]: the ECS task id, or `hostname-pid`, as the default worker id.

pub mod http;
pub mod identity;
pub mod jsonl;
pub mod replicate;
