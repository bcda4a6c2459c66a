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
//! [`WorkerBuilder`] goes from an `aws_config::SdkConfig` and a table to a running worker:
//! it finds the table's stream, creates the lease table if asked to, and starts the worker.
//! This example runs against Amazon DynamoDB Local (started by its hidden lines through
//! `local`; it fails, naming the fix, when the emulator is not installed):
//!
//! ```
//! use std::time::Duration;
//!
//! use kcl_adapter::{AttributeValue, ChangeRecord, WorkerBuilder};
//! use kcl_core::{Batch, Checkpointer, ProcessorError, RecordProcessor, ShardId, ShutdownOutcome};
//! use tokio::sync::mpsc;
//!
//! /// Forwards the keys of every change. Returning `Ok` lets the worker checkpoint the batch.
//! struct Forward(mpsc::Sender<String>);
//!
//! impl RecordProcessor<ChangeRecord> for Forward {
//!     async fn process_records(
//!         &mut self,
//!         batch: &Batch<ChangeRecord>,
//!         _: &impl Checkpointer,
//!     ) -> Result<(), ProcessorError> {
//!         for record in &batch.records {
//!             let keys = record.partition_key().to_owned();
//!             self.0.send(keys).await.map_err(|e| ProcessorError::new(e.to_string()))?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
//! # // Panics with the fix (run .ci/install-emulators.sh) when DynamoDB Local cannot start.
//! # let local = kcl_adapter::local::DynamoDbLocal::shared();
//! # local.create_stream_table("orders").await; // hash key `pk`, NEW_AND_OLD_IMAGES stream
//! # let sdk = aws_config::SdkConfig::builder()
//! #     .behavior_version(aws_config::BehaviorVersion::latest())
//! #     .region(aws_config::Region::new(kcl_adapter::local::REGION))
//! #     .endpoint_url(local.endpoint())
//! #     .credentials_provider(SharedCredentialsProvider::new(Credentials::new("local", "local", None, None, "doc")))
//! #     .build();
//! // Against AWS: `let sdk = aws_config::load_defaults(BehaviorVersion::latest()).await;`
//! let (tx, mut rx) = mpsc::channel(16);
//! let running = WorkerBuilder::new(&sdk, "orders-audit") // also the lease table's name
//!     .table("orders")
//!     .create_lease_table()
//!     .start(move |_: &ShardId| Forward(tx.clone()))
//!     .await?;
//!
//! let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
//! dynamodb.put_item().table_name("orders").item("pk", AttributeValue::S("order-1".into())).send().await?;
//! let delivered = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await?;
//! assert_eq!(delivered.as_deref(), Some("pk=order-1"));
//!
//! assert_eq!(running.shutdown(Duration::from_secs(25)).await, ShutdownOutcome::Graceful);
//! running.wait().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Without the builder, [`DynamoStreamsSource::from_table`] (or
//! [`from_stream_arn`](DynamoStreamsSource::from_stream_arn)) and [`DynamoLeaseStore::new`]
//! with [`DynamoLeaseStore::ensure_table`] are the source and the lease store to hand to
//! [`kcl_core::Worker::new`].

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
