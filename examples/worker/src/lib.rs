//! The parts of the fleet worker binary (`cargo run -p kcl-worker --bin worker`): its
//! processors, its HTTP endpoints and its default worker id. The binary itself
//! (`src/bin/worker.rs`) only parses flags, builds the AWS clients and handles signals.
//!
//! This package is what `deploy/Dockerfile` builds: its normal dependencies carry no test code
//! (no kcl-core `testing` feature, no tokio `test-util`).
//!
//! - [`jsonl`]: appends every record as a JSON line to a file (tests, debugging);
//! - [`replicate`]: copies every change into another table, idempotently;
//! - [`http`]: `/metrics`, `/healthz`, `/status`;
//! - [`identity`]: the ECS task id, or `hostname-pid`, as the default worker id;
//! - [`admin`]: what the `kcl-admin` binary does (status, reset, release);
//! - [`streams`]: the `--table`s and `--stream-arn`s as one source;
//! - [`emf`]: CloudWatch Embedded Metric Format lines for autoscaling.

pub mod admin;
pub mod emf;
pub mod http;
pub mod identity;
pub mod jsonl;
pub mod replicate;
pub mod streams;
