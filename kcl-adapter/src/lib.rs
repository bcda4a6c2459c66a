//! # kcl-adapter
//!
//! The AWS side of the `kcl-core` worker library: a DynamoDB stream as the core's
//! [`StreamSource`](kcl_core::StreamSource) and a DynamoDB table as its
//! [`LeaseStore`](kcl_core::LeaseStore), on the AWS SDK for Rust.
//!
//! - [`DynamoStreamsSource`] reads a stream (by ARN, or the latest stream of a table) and
//!   delivers [`ChangeRecord`]s: event name, keys, old and new image, sequence number,
//!   creation time, size, view type, TTL attribution, and typed decoding of keys and images
//!   into your serde types. An answer the SDK cannot parse is reported as
//!   [`SourceErrorKind::Undecodable`](kcl_core::SourceErrorKind::Undecodable), naming the
//!   record when it can (see [`streams::undecodable`]).
//! - [`DynamoLeaseStore`] keeps leases in a table laid out as Java KCL's (`leaseKey`,
//!   `leaseOwner`, `leaseCounter`, `checkpoint`, …), so a team moving from KCL with the
//!   DynamoDB Streams adapter continues from its checkpoints. Every write is conditional.
//! - [`SqsDeadLetterSink`] sends records whose retries are exhausted, and records the source
//!   could not decode (with their raw JSON), to an SQS queue, as the core's
//!   [`DeadLetterSink`](kcl_core::DeadLetterSink).
//! - `local` (feature `local-emulator`) starts Amazon DynamoDB Local for tests, and
//!   `local_sqs` moto server for SQS.
//!
//! The adapter takes SDK clients you build (region, endpoint, credentials and timeouts come
//! from `aws-config`); SDK errors are classified into the core's error kinds and kept as their
//! source, never exposed in a public type.
//!
//! ```no_run
//! use kcl_adapter::{DynamoLeaseStore, DynamoStreamsSource, TableOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = aws_config::load_from_env().await;
//! let dynamodb = aws_sdk_dynamodb::Client::new(&config);
//! let streams = aws_sdk_dynamodbstreams::Client::new(&config);
//!
//! let source = DynamoStreamsSource::from_table(&dynamodb, streams, "orders").await?;
//! let leases = DynamoLeaseStore::new(dynamodb, "orders-consumer");
//! leases.ensure_table(&TableOptions::default()).await?;
//! // Hand `source` and `leases` to a `kcl_core::Worker`.
//! # let _ = (source, leases);
//! # Ok(())
//! # }
//! ```

mod boxed;
pub mod builder;
pub mod dead_letter_sqs;
mod error;
pub mod lease_table;
#[cfg(feature = "local-emulator")]
pub mod local;
#[cfg(feature = "local-emulator")]
pub mod local_sqs;
pub mod record;
pub mod streams;
mod text;

pub use builder::{BuilderError, RunningWorker, WorkerBuilder};
pub use dead_letter_sqs::SqsDeadLetterSink;
pub use lease_table::{BillingMode, DynamoLeaseStore, TableOptions};
pub use record::{
    AttributeValue, ChangeKind, ChangeRecord, DecodeError, DecodeErrorKind, EventName, Item, StreamViewType,
    UserIdentity,
};
pub use streams::DynamoStreamsSource;
