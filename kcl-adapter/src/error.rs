//! Classification of AWS SDK errors into the core's error kinds.
//!
//! The mapping itself is a pure function over what a failure looks like on the wire (the
//! error code after `#`, the HTTP status) or in the client (timeout, dispatch failure), so it
//! is table-tested without a network. The SDK error is kept as the `#[source]` of the core's
//! error and never appears in a public type.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use kcl_core::{LeaseStoreError, LeaseStoreErrorKind, SourceError, SourceErrorKind};

/// What went wrong with one SDK call, reduced to what the classification needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure<'a> {
    /// The service answered with an error.
    Service {
        /// The error code (`ResourceNotFoundException`, …), the part after `#` in `__type`.
        code: Option<&'a str>,
        /// The HTTP status of the answer.
        status: Option<u16>,
    },
    /// The client gave up waiting (connect, read or operation timeout).
    Timeout,
    /// The request could not be sent or the connection broke.
    Dispatch,
    /// An error answer came but could not be understood (a proxy page, a truncated body).
    Response {
        /// The HTTP status of the answer.
        status: Option<u16>,
    },
    /// A success answer (2xx) came but could not be decoded: a value this SDK cannot parse, a
    /// body cut short or mangled on the way. The SDK reports a body it cannot parse as an
    /// unhandled *service* error with the success status (no error code), and a body it could
    /// not read to its end as a response error; both land here.
    Undecodable {
        /// The HTTP status of the answer.
        status: u16,
        /// Whether the whole body arrived (it was parsed and failed), or its reading broke off.
        complete: bool,
    },
    /// The request could not be built (a bug or a bad argument on our side).
    Construction,
}

impl<'a> Failure<'a> {
    /// Reduces an SDK error.
    pub(crate) fn of<E: ProvideErrorMetadata>(err: &'a SdkError<E, HttpResponse>) -> Self {
        let status = err.raw_response().map(|r| r.status().as_u16());
        // Only service and response errors carry a response, so a success status means the
        // answer arrived and was not understood.
        if let Some(status) = status.filter(|s| (200..300).contains(s)) {
            return Failure::Undecodable { status, complete: matches!(err, SdkError::ServiceError(_)) };
        }
        match err {
            SdkError::ServiceError(service) => Failure::Service { code: service.err().code(), status },
            SdkError::TimeoutError(_) => Failure::Timeout,
            SdkError::DispatchFailure(dispatch) if dispatch.is_timeout() => Failure::Timeout,
            SdkError::DispatchFailure(_) => Failure::Dispatch,
            SdkError::ResponseError(_) => Failure::Response { status },
            SdkError::ConstructionFailure(_) => Failure::Construction,
            // `SdkError` is non-exhaustive; an unknown variant is most likely a passing fault.
            _ => Failure::Dispatch,
        }
    }
}

/// Error codes that mean "slow down".
const THROTTLING_CODES: &[&str] = &[
    "LimitExceededException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// Error codes of passing faults on the service side.
const TRANSIENT_CODES: &[&str] = &[
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// A coarse class shared by both boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    ExpiredIterator,
    TrimmedData,
    Throttled,
    NotFound,
    AccessDenied,
    Transient,
    Fatal,
}

fn class_of(failure: Failure<'_>) -> Class {
    match failure {
        Failure::Service { code, status } => {
            let code = code.unwrap_or("");
            match code {
                "ExpiredIteratorException" => Class::ExpiredIterator,
                "TrimmedDataAccessException" => Class::TrimmedData,
                "ResourceNotFoundException" => Class::NotFound,
                "AccessDeniedException" | "UnrecognizedClientException" | "MissingAuthenticationToken" => {
                    Class::AccessDenied
                }
                c if THROTTLING_CODES.contains(&c) => Class::Throttled,
                c if TRANSIENT_CODES.contains(&c) => Class::Transient,
                _ => match status {
                    Some(429) => Class::Throttled,
                    Some(s) if s >= 500 => Class::Transient,
                    _ => Class::Fatal,
                },
            }
        }
        Failure::Timeout | Failure::Dispatch => Class::Transient,
        Failure::Response { status: Some(429) } => Class::Throttled,
        Failure::Response { .. } => Class::Transient,
        // As before this variant existed: a whole answer that cannot be parsed is unexpected, a
        // body whose reading broke off a passing fault. Only a GetRecords answer is
        // `Undecodable`, which the streams source decides itself (the consumer reads it again
        // with smaller limits; no other call has a limit to lower).
        Failure::Undecodable { complete: true, .. } => Class::Fatal,
        Failure::Undecodable { complete: false, .. } => Class::Transient,
        Failure::Construction => Class::Fatal,
    }
}

/// The stream source's classification of a failure.
pub(crate) fn source_kind(failure: Failure<'_>) -> SourceErrorKind {
    match class_of(failure) {
        Class::ExpiredIterator => SourceErrorKind::ExpiredIterator,
        Class::TrimmedData => SourceErrorKind::TrimmedData,
        Class::Throttled => SourceErrorKind::Throttled,
        Class::NotFound => SourceErrorKind::NotFound,
        Class::Transient => SourceErrorKind::Transient,
        Class::AccessDenied | Class::Fatal => SourceErrorKind::Fatal,
    }
}

/// The lease store's classification of a failure.
pub(crate) fn lease_kind(failure: Failure<'_>) -> LeaseStoreErrorKind {
    match class_of(failure) {
        Class::Throttled => LeaseStoreErrorKind::Throttled,
        Class::Transient => LeaseStoreErrorKind::Transient,
        Class::NotFound => LeaseStoreErrorKind::TableNotFound,
        Class::AccessDenied => LeaseStoreErrorKind::AccessDenied,
        // Stream-only codes cannot come from DynamoDB proper; treat them as unexpected.
        Class::ExpiredIterator | Class::TrimmedData | Class::Fatal => LeaseStoreErrorKind::Fatal,
    }
}

/// The error code of an SDK error, if the service sent one.
pub(crate) fn code_of<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Option<&str> {
    match err {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

/// A one-line description: `Code: message (HTTP status)` for service errors, the cause chain
/// otherwise (also used by the SQS sink).
pub(crate) fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let status = service.raw().status().as_u16();
            match (e.code(), e.message().filter(|m| !m.is_empty())) {
                (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
                (Some(code), None) => format!("{code} (HTTP {status})"),
                (None, _) => format!("{} (HTTP {status})", causes(err)),
            }
        }
        other => DisplayErrorContext(other).to_string(),
    }
}

/// The error and its causes, joined by `: ` (what `DisplayErrorContext` shows, without its
/// debug dump of the error, which holds the whole response body).
pub(crate) fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// Wraps an SDK error from the streams API, with `context` naming the call and its target.
pub(crate) fn source_error<E>(context: &str, err: SdkError<E, HttpResponse>) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = source_kind(Failure::of(&err));
    SourceError::new(kind, format!("{context}: {}", describe(&err))).with_source(err)
}

/// Wraps an SDK error from the DynamoDB API, with `context` naming the call and its target.
pub(crate) fn lease_error<E>(context: &str, err: SdkError<E, HttpResponse>) -> LeaseStoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = lease_kind(Failure::of(&err));
    let hint = match kind {
        LeaseStoreErrorKind::TableNotFound => " (create the lease table with DynamoLeaseStore::ensure_table)",
        _ => "",
    };
    LeaseStoreError::new(kind, format!("{context}: {}{hint}", describe(&err))).with_source(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: &str, status: u16) -> Failure<'_> {
        Failure::Service { code: Some(code), status: Some(status) }
    }

    #[test]
    fn source_mapping_table() {
        use SourceErrorKind as K;
        let cases = [
            (service("ExpiredIteratorException", 400), K::ExpiredIterator),
            (service("TrimmedDataAccessException", 400), K::TrimmedData),
            (service("LimitExceededException", 400), K::Throttled),
            (service("ThrottlingException", 400), K::Throttled),
            (service("ProvisionedThroughputExceededException", 400), K::Throttled),
            (service("RequestLimitExceeded", 400), K::Throttled),
            (service("ResourceNotFoundException", 400), K::NotFound),
            (service("InternalServerError", 500), K::Transient),
            (service("InternalFailure", 500), K::Transient),
            (service("ServiceUnavailable", 503), K::Transient),
            (service("SomethingNew", 502), K::Transient),
            (service("SomethingNew", 429), K::Throttled),
            (service("ValidationException", 400), K::Fatal),
            (service("AccessDeniedException", 400), K::Fatal),
            (service("UnrecognizedClientException", 400), K::Fatal),
            (service("SomethingNew", 400), K::Fatal),
            (Failure::Service { code: None, status: Some(500) }, K::Transient),
            (Failure::Service { code: None, status: None }, K::Fatal),
            (Failure::Timeout, K::Transient),
            (Failure::Dispatch, K::Transient),
            (Failure::Response { status: Some(502) }, K::Transient),
            (Failure::Response { status: Some(429) }, K::Throttled),
            // GetRecords makes these Undecodable itself (streams::undecodable).
            (Failure::Undecodable { status: 200, complete: true }, K::Fatal),
            (Failure::Undecodable { status: 200, complete: false }, K::Transient),
            (Failure::Construction, K::Fatal),
        ];
        for (failure, want) in cases {
            assert_eq!(source_kind(failure), want, "{failure:?}");
        }
    }

    #[test]
    fn lease_mapping_table() {
        use LeaseStoreErrorKind as K;
        let cases = [
            (service("ResourceNotFoundException", 400), K::TableNotFound),
            (service("AccessDeniedException", 400), K::AccessDenied),
            (service("UnrecognizedClientException", 400), K::AccessDenied),
            (service("ProvisionedThroughputExceededException", 400), K::Throttled),
            (service("ThrottlingException", 400), K::Throttled),
            (service("RequestLimitExceeded", 400), K::Throttled),
            (service("InternalServerError", 500), K::Transient),
            (service("SomethingNew", 503), K::Transient),
            (service("ValidationException", 400), K::Fatal),
            (service("ItemCollectionSizeLimitExceededException", 400), K::Fatal),
            (Failure::Timeout, K::Transient),
            (Failure::Dispatch, K::Transient),
            (Failure::Response { status: None }, K::Transient),
            (Failure::Undecodable { status: 200, complete: true }, K::Fatal),
            (Failure::Undecodable { status: 200, complete: false }, K::Transient),
            (Failure::Construction, K::Fatal),
        ];
        for (failure, want) in cases {
            assert_eq!(lease_kind(failure), want, "{failure:?}");
        }
    }

    #[test]
    fn retryable_kinds_are_exactly_throttled_and_transient() {
        let failures = [service("LimitExceededException", 400), Failure::Dispatch, service("ValidationException", 400)];
        let retryable: Vec<bool> =
            failures.iter().map(|f| SourceError::new(source_kind(*f), "x").is_retryable()).collect();
        assert_eq!(retryable, [true, true, false]);
    }

    #[test]
    fn sdk_errors_reduce_to_failures() {
        use aws_sdk_dynamodbstreams::operation::get_records::GetRecordsError;
        use aws_sdk_dynamodbstreams::types::error::ExpiredIteratorException;

        let timeout: SdkError<GetRecordsError, HttpResponse> = SdkError::timeout_error("slow");
        assert_eq!(Failure::of(&timeout), Failure::Timeout);
        let built: SdkError<GetRecordsError, HttpResponse> = SdkError::construction_failure("bad input");
        assert_eq!(source_kind(Failure::of(&built)), SourceErrorKind::Fatal);

        let expired = GetRecordsError::ExpiredIteratorException(
            ExpiredIteratorException::builder()
                .message("")
                .meta(aws_sdk_dynamodb::error::ErrorMetadata::builder().code("ExpiredIteratorException").build())
                .build(),
        );
        let raw = HttpResponse::new(
            400.try_into().unwrap_or_else(|e| panic!("400 is a valid status: {e}")),
            aws_smithy_types::body::SdkBody::empty(),
        );
        let err = SdkError::service_error(expired, raw);
        assert_eq!(Failure::of(&err), service("ExpiredIteratorException", 400));
        let mapped = source_error("GetRecords on shard s", err);
        assert_eq!(mapped.kind(), SourceErrorKind::ExpiredIterator);
        // The empty message DynamoDB Local sends is left out rather than shown as ": ".
        assert_eq!(mapped.to_string(), "stream source: GetRecords on shard s: ExpiredIteratorException (HTTP 400)");
        assert!(std::error::Error::source(&mapped).is_some(), "the SDK error is kept as the source");
    }

    #[test]
    fn success_answers_that_cannot_be_decoded_are_told_apart() {
        use aws_sdk_dynamodbstreams::operation::get_records::GetRecordsError;
        use aws_smithy_types::body::SdkBody;

        let response = |status: u16, body: SdkBody| {
            HttpResponse::new(status.try_into().unwrap_or_else(|e| panic!("{status} is a valid status: {e}")), body)
        };
        // What the SDK makes of a 200 body it cannot parse: an unhandled service error.
        let unparsed: SdkError<GetRecordsError, HttpResponse> = SdkError::service_error(
            GetRecordsError::unhandled("Union did not contain a valid variant."),
            response(200, SdkBody::from("{}")),
        );
        // A 200 body that could not be read to its end; a 502 proxy page.
        let cut: SdkError<GetRecordsError, HttpResponse> =
            SdkError::response_error("connection closed before message completed", response(200, SdkBody::taken()));
        let proxy: SdkError<GetRecordsError, HttpResponse> =
            SdkError::response_error("expected start object", response(502, SdkBody::from("<html>")));
        let cases = [
            (&unparsed, Failure::Undecodable { status: 200, complete: true }),
            (&cut, Failure::Undecodable { status: 200, complete: false }),
            (&proxy, Failure::Response { status: Some(502) }),
        ];
        for (err, failure) in cases {
            assert_eq!(Failure::of(err), failure, "{err:?}");
        }
    }
}
