//! [`SqsDeadLetterSink`]: records whose retries are exhausted, sent to an Amazon SQS queue.
//!
//! Each dead letter becomes one JSON message (several when it is very large), in the shape
//! described on [`SqsDeadLetterSink`]. Messages stay within the SQS size limit
//! ([`DEFAULT_MAX_MESSAGE_BYTES`]): when the records with their images do not fit, only their
//! keys and sequence numbers are sent, and the message says so; when even those do not fit,
//! they are spread over several messages, each describing itself. No record is left out. A
//! record the stream source could not decode is one message holding its raw JSON text, cut
//! to fit when needed.

mod message;

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::QueueAttributeName;
use kcl_core::{DeadLetter, DeadLetterError, DeadLetterErrorKind, DeadLetterSink};

use crate::boxed::Boxed;
use crate::error::{Failure, describe};
use crate::record::ChangeRecord;

pub use message::MESSAGE_VERSION;

/// The SQS message size this sink writes up to by default: 256 KiB, which every queue
/// accepts unless its `MaximumMessageSize` was lowered.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 262_144;

/// The smallest limit [`SqsDeadLetterSink::with_max_message_bytes`] takes: room for the
/// envelope and the largest possible key (DynamoDB keys are at most 2 KB + 1 KB).
pub const MIN_MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// A [`DeadLetterSink`] writing to an SQS queue.
///
/// Each message body is a JSON object:
///
/// | field | meaning |
/// |---|---|
/// | `version` | [`MESSAGE_VERSION`] |
/// | `streamArn`, `shardId` | where the records come from |
/// | `firstSequenceNumber`, `lastSequenceNumber` | the range of the whole dead letter |
/// | `attempts` | `process_records` calls made for the records (`0` for an undecodable record, which never reached the processor) |
/// | `error` | the last error (at most 8 KiB of it) |
/// | `recordCount` | records in the whole dead letter (`1` for an undecodable record) |
/// | `truncated` | `true` when the records carry only their keys and sequence numbers, or when `undecodableRecord.raw` is cut |
/// | `truncatedReason` | why (present only when truncated) |
/// | `part`, `parts` | this message's place when the letter is split (`1` of `1` otherwise) |
/// | `records` | the records of this message, in order (`[]` for an undecodable record) |
/// | `undecodableRecord` | present only for a record the stream source could not decode: `sequenceNumber`, and `raw`, the record's JSON text as received, as a string (cut, ending in `… [N more bytes cut]`, when `truncated`) |
///
/// Records have the shape of a DynamoDB Streams record (as in a Lambda event): `eventID`,
/// `eventName` and `dynamodb` with `Keys`, `NewImage`, `OldImage` (DynamoDB JSON such as
/// `{"pk": {"S": "a"}}`), `SequenceNumber`, `ApproximateCreationDateTime` (epoch seconds),
/// `SizeBytes`, `StreamViewType`. A truncated record has only `dynamodb.Keys` and
/// `dynamodb.SequenceNumber`: read the item from the table by its key.
///
/// A record the source could not decode (a `GetRecords` answer the SDK could not parse; see
/// [`DynamoStreamsSource`](crate::DynamoStreamsSource)) is one message with no `records` and
/// an `undecodableRecord` instead: the record's JSON text as the stream sent it (it parses as
/// JSON unless it was cut), holding what the SDK could not read. Handle both shapes.
///
/// A FIFO queue (URL ending in `.fifo`) gets the shard id as message group, so a shard's dead
/// letters stay in order, and a deduplication id derived from the records, so a letter sent
/// again after a crash is dropped by SQS within its five-minute window. A standard queue may
/// receive a letter twice (at-least-once).
///
/// Sending is not retried here beyond the SDK's own retries: the consumer retries a failed
/// send with backoff and holds the shard meanwhile. Call [`SqsDeadLetterSink::verify`] at
/// start so a wrong queue URL fails before any record does.
#[derive(Clone, Debug)]
pub struct SqsDeadLetterSink {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    stream_arn: String,
    max_message_bytes: usize,
}

impl SqsDeadLetterSink {
    /// A sink sending to `queue_url` the failed records of the stream `stream_arn` (written
    /// into every message).
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>, stream_arn: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            stream_arn: stream_arn.into(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// The largest message body to send. Default [`DEFAULT_MAX_MESSAGE_BYTES`]; raise it for
    /// queues that take larger messages, lower it for queues whose `MaximumMessageSize` was
    /// lowered. Values below [`MIN_MAX_MESSAGE_BYTES`] are raised to it.
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes.max(MIN_MAX_MESSAGE_BYTES);
        self
    }

    /// The queue's URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// The stream ARN written into every message.
    pub fn stream_arn(&self) -> &str {
        &self.stream_arn
    }

    /// The largest message body this sink sends.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Checks that the queue exists, is accessible, and takes messages as large as this sink
    /// sends (`GetQueueAttributes`). The error names the queue URL and the fix.
    pub async fn verify(&self) -> Result<(), DeadLetterError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .send()
            .boxed()
            .await
            .map_err(|e| self.sdk_error("GetQueueAttributes", e))?;
        let accepted = out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::MaximumMessageSize))
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(accepted) = accepted
            && accepted < self.max_message_bytes
        {
            return Err(DeadLetterError::new(
                DeadLetterErrorKind::Rejected,
                format!(
                    "queue {} accepts messages up to {accepted} bytes, but this sink writes up to {} \
                     bytes: set the queue's MaximumMessageSize to at least {}, or lower the sink's limit with \
                     with_max_message_bytes({accepted})",
                    self.queue_url, self.max_message_bytes, self.max_message_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The message bodies for `letter`, each at most [`Self::max_message_bytes`] long.
    fn bodies(&self, letter: &DeadLetter<'_, ChangeRecord>) -> Result<Vec<message::Body>, DeadLetterError> {
        message::encode(&self.stream_arn, letter, self.max_message_bytes).map_err(|e| {
            DeadLetterError::new(
                DeadLetterErrorKind::Rejected,
                format!(
                    "cannot write the failed records of shard {} as messages for queue {}: {e}",
                    letter.shard_id, self.queue_url
                ),
            )
        })
    }

    fn is_fifo(&self) -> bool {
        self.queue_url.ends_with(".fifo")
    }

    fn sdk_error<E>(&self, operation: &str, err: SdkError<E, HttpResponse>) -> DeadLetterError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let kind = kind_of(Failure::of(&err));
        let url = &self.queue_url;
        let what = describe(&err);
        let message = match kind {
            DeadLetterErrorKind::NotFound => format!(
                "queue {url} does not exist ({operation}: {what}): create the queue, or configure the URL of \
                 an existing one"
            ),
            DeadLetterErrorKind::AccessDenied => format!(
                "queue {url} is not accessible ({operation}: {what}): grant sqs:SendMessage and \
                 sqs:GetQueueAttributes on it (and kms:GenerateDataKey, kms:Decrypt for a KMS-encrypted \
                 queue), and check the credentials and region"
            ),
            DeadLetterErrorKind::Transient | DeadLetterErrorKind::Throttled => {
                format!("{operation} on queue {url} failed ({}, retried): {what}", kind.as_str())
            }
            _ => format!("{operation} on queue {url} was rejected: {what}"),
        };
        DeadLetterError::new(kind, message).with_source(err)
    }
}

impl DeadLetterSink<ChangeRecord> for SqsDeadLetterSink {
    async fn send(&self, letter: &DeadLetter<'_, ChangeRecord>) -> Result<(), DeadLetterError> {
        let bodies = self.bodies(letter)?;
        // Parts go one after the other; after a failure the consumer sends the whole letter
        // again, so some parts may arrive twice (a FIFO queue drops those by their id).
        for body in bodies {
            let mut send = self.client.send_message().queue_url(&self.queue_url).message_body(body.json);
            if self.is_fifo() {
                send = send.message_group_id(letter.shard_id.as_str()).message_deduplication_id(body.dedup_id);
            }
            send.send().boxed().await.map_err(|e| self.sdk_error("SendMessage", e))?;
        }
        Ok(())
    }
}

const NO_QUEUE_CODES: &[&str] = &["QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", "NonExistentQueue"];

const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidSecurity",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "KmsAccessDenied",
    "KmsDisabled",
    "KmsNotFound",
    "KmsInvalidState",
    "KmsInvalidKeyUsage",
    "KmsOptInRequired",
];

const THROTTLED_CODES: &[&str] =
    &["RequestThrottled", "ThrottlingException", "Throttling", "KmsThrottled", "OverLimit"];

const TRANSIENT_CODES: &[&str] = &["InternalError", "InternalFailure", "ServiceUnavailable", "RequestTimeout"];

/// How an SQS failure is reported: a queue that does not exist, or credentials, permissions
/// and KMS keys that refuse access, wait for someone to fix them; throttling, service faults,
/// timeouts, broken connections and success answers that could not be decoded (the message
/// was most likely taken; sending it again at worst duplicates it) pass; anything else is a
/// request the queue refuses.
fn kind_of(failure: Failure<'_>) -> DeadLetterErrorKind {
    use DeadLetterErrorKind as K;
    match failure {
        Failure::Service { code, status } => match code.unwrap_or("") {
            c if NO_QUEUE_CODES.contains(&c) => K::NotFound,
            c if DENIED_CODES.contains(&c) => K::AccessDenied,
            c if THROTTLED_CODES.contains(&c) => K::Throttled,
            c if TRANSIENT_CODES.contains(&c) => K::Transient,
            _ => match status {
                Some(429) => K::Throttled,
                Some(s) if s >= 500 => K::Transient,
                Some(403) => K::AccessDenied,
                _ => K::Rejected,
            },
        },
        Failure::Timeout | Failure::Dispatch | Failure::Response { .. } | Failure::Undecodable { .. } => K::Transient,
        Failure::Construction => K::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: &str, status: u16) -> Failure<'_> {
        Failure::Service { code: Some(code), status: Some(status) }
    }

    #[test]
    fn sqs_failures_are_classified() {
        use DeadLetterErrorKind as K;
        let cases = [
            (service("QueueDoesNotExist", 400), K::NotFound),
            (service("AWS.SimpleQueueService.NonExistentQueue", 400), K::NotFound),
            (service("AccessDenied", 403), K::AccessDenied),
            (service("KmsAccessDenied", 400), K::AccessDenied),
            (service("InvalidClientTokenId", 403), K::AccessDenied),
            (service("SomethingNew", 403), K::AccessDenied),
            (service("RequestThrottled", 400), K::Throttled),
            (service("KmsThrottled", 400), K::Throttled),
            (service("SomethingNew", 429), K::Throttled),
            (service("InternalError", 500), K::Transient),
            (service("SomethingNew", 503), K::Transient),
            (service("InvalidParameterValue", 400), K::Rejected),
            (service("InvalidMessageContents", 400), K::Rejected),
            (Failure::Service { code: None, status: None }, K::Rejected),
            (Failure::Timeout, K::Transient),
            (Failure::Dispatch, K::Transient),
            (Failure::Response { status: Some(502) }, K::Transient),
            (Failure::Undecodable { status: 200, complete: true }, K::Transient),
            (Failure::Undecodable { status: 200, complete: false }, K::Transient),
            (Failure::Construction, K::Rejected),
        ];
        for (failure, want) in cases {
            assert_eq!(kind_of(failure), want, "{failure:?}");
        }
    }

    #[test]
    fn the_limit_has_a_floor() {
        let client = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder().behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest()).build(),
        );
        let sink = SqsDeadLetterSink::new(client, "https://sqs/q.fifo", "arn");
        assert_eq!(sink.max_message_bytes(), DEFAULT_MAX_MESSAGE_BYTES);
        assert_eq!(sink.clone().with_max_message_bytes(1).max_message_bytes(), MIN_MAX_MESSAGE_BYTES);
        assert_eq!(sink.clone().with_max_message_bytes(1 << 20).max_message_bytes(), 1 << 20);
        assert!(sink.is_fifo());
    }
}
