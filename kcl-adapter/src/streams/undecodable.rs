//! GetRecords answers that arrived but could not be decoded, as
//! [`SourceErrorKind::Undecodable`] errors.
//!
//! The SDK reports a success answer whose body it cannot parse (an attribute value it does not
//! know, such as DynamoDB Local's untagged empty map `{}`; a body mangled on the way) as an
//! unhandled service error carrying the HTTP 200 response, body included; a body it could not
//! read to its end as a response error without the body. Both are `Undecodable`: the consumer
//! reads again with smaller limits, which isolates a bad record and also gets past a cut that
//! comes with size (a proxy's limit), and it says loudly that it holds the shard. Other calls
//! than GetRecords have no limit to lower and keep their former kinds (see the error module).
//!
//! What the body still tells is worked out by a pure function, table-tested: when it is
//! complete JSON with `Records`, its first record (sequence number and JSON text, bounded by
//! [`MAX_RAW_RECORD_BYTES`]) becomes the error's [`UndecodableRecord`], and the first
//! attribute value the SDK cannot read is named, for the log. A body that is not complete JSON
//! names no record: a record of a cut body may be sound.

use aws_sdk_dynamodbstreams::config::http::HttpResponse;
use aws_sdk_dynamodbstreams::error::{ProvideErrorMetadata, SdkError};
use kcl_core::{SequenceNumber, SourceError, SourceErrorKind, UndecodableRecord};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::causes;

/// The most of a record's JSON text kept in an [`UndecodableRecord`]: 64 KiB. A longer record
/// is cut at a character boundary and ends with `… [N more bytes cut]`.
pub const MAX_RAW_RECORD_BYTES: usize = 64 * 1024;

/// The error for a GetRecords answer with success status `status` that could not be decoded.
/// `context` names the call, the iterator and the stream.
pub(super) fn error<E>(context: &str, status: u16, err: SdkError<E, HttpResponse>) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let body = err.raw_response().and_then(|r| r.body().bytes());
    let findings = examine(body);
    let message =
        format!("{context}: the answer (HTTP {status}) could not be decoded: {}; {}", causes(&err), findings.summary);
    let error = match findings.first {
        Some(record) => SourceError::undecodable(message, record),
        None => SourceError::new(SourceErrorKind::Undecodable, message),
    };
    error.with_source(err)
}

/// `n record` or `n records`.
fn records(n: usize) -> String {
    if n == 1 { "1 record".to_owned() } else { format!("{n} records") }
}

/// What a GetRecords body tells of its records.
#[derive(Debug, PartialEq)]
pub(super) struct Findings {
    /// The first record, when the body is complete JSON and that record names a valid
    /// sequence number.
    pub(super) first: Option<UndecodableRecord>,
    /// What was found, for the error message.
    pub(super) summary: String,
}

/// The top of a GetRecords body: the records' JSON texts, exactly as received.
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(rename = "Records", borrow, default)]
    records: Option<Vec<&'a RawValue>>,
}

/// Examines a GetRecords body (`None`: it could not be read to its end).
pub(super) fn examine(body: Option<&[u8]>) -> Findings {
    let nothing = |summary: String| Findings { first: None, summary };
    let Some(body) = body else {
        return nothing("the body could not be read to its end, so no record can be named".to_owned());
    };
    let parsed: Body<'_> = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(e) => {
            return nothing(format!(
                "the body ({} bytes) is not complete JSON ({e}), so no record can be named",
                body.len()
            ));
        }
    };
    let raws = parsed.records.unwrap_or_default();
    let Some(first) = raws.first() else {
        return nothing(format!("the body ({} bytes) holds no records, so none can be named", body.len()));
    };
    let values: Vec<Option<Value>> = raws.iter().map(|r| serde_json::from_str(r.get()).ok()).collect();
    let culprit = values.iter().enumerate().find_map(|(i, value)| {
        let problem = value.as_ref().and_then(malformed_attribute)?;
        let at = value.as_ref().and_then(sequence_text).unwrap_or("?");
        Some(format!("; record {} of {} (sequence number {at}) has {problem}", i + 1, values.len()))
    });
    let culprit = culprit.unwrap_or_else(|| "; no attribute value looks malformed".to_owned());
    let first_value = values.first().and_then(Option::as_ref);
    let sequence_number = match first_value.and_then(sequence_text) {
        None => Err("has no dynamodb.SequenceNumber".to_owned()),
        Some(text) => SequenceNumber::parse(text).map_err(|e| format!("has an invalid dynamodb.SequenceNumber ({e})")),
    };
    match sequence_number {
        Ok(seq) => {
            let raw = crate::text::clip(first.get(), MAX_RAW_RECORD_BYTES).into_owned();
            let summary = format!("{}, the first at sequence number {seq}{culprit}", records(values.len()));
            Findings { first: Some(UndecodableRecord::new(seq, raw)), summary }
        }
        Err(why) => nothing(format!("{}, the first of which {why}{culprit}", records(values.len()))),
    }
}

/// `dynamodb.SequenceNumber` of a record, when it is a string.
fn sequence_text(record: &Value) -> Option<&str> {
    record.get("dynamodb")?.get("SequenceNumber")?.as_str()
}

/// The first attribute value in the record's keys or images that the SDK cannot read, as
/// `a value … at NewImage.tags[2]`.
fn malformed_attribute(record: &Value) -> Option<String> {
    let change = record.get("dynamodb")?;
    ["Keys", "NewImage", "OldImage"].into_iter().find_map(|part| {
        let Value::Object(item) = change.get(part)? else {
            return Some(format!("a {part} that is not an object"));
        };
        item.iter().find_map(|(name, value)| malformed_value(value, &format!("{part}.{name}")))
    })
}

/// What is wrong with one attribute value at `path`, if anything. An attribute value is an
/// object with exactly one type key (keys with `null` values are ignored, as the SDK does).
fn malformed_value(value: &Value, path: &str) -> Option<String> {
    let at = |what: &str| Some(format!("{what} at {path}: {}", crate::text::clip(&value.to_string(), 80)));
    let Value::Object(tags) = value else { return at("an attribute value that is not an object") };
    let mut present = tags.iter().filter(|(tag, v)| !v.is_null() && tag.as_str() != "__type");
    let Some((tag, inner)) = present.next() else {
        return at("an attribute value without a type (DynamoDB Local renders an empty map `{\"M\": {}}` as `{}`)");
    };
    if present.next().is_some() {
        return at("an attribute value with several types");
    }
    let strings = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
    let fits = match tag.as_str() {
        "S" | "N" | "B" => inner.is_string(),
        "SS" | "NS" | "BS" => strings(inner),
        "NULL" | "BOOL" => inner.is_boolean(),
        "M" => {
            let Value::Object(m) = inner else { return at("a map that is not an object") };
            return m.iter().find_map(|(name, v)| malformed_value(v, &format!("{path}.{name}")));
        }
        "L" => {
            let Value::Array(l) = inner else { return at("a list that is not an array") };
            return l.iter().enumerate().find_map(|(i, v)| malformed_value(v, &format!("{path}[{i}]")));
        }
        // A type newer than this SDK: the SDK reads it (as an unknown value).
        _ => true,
    };
    if fits { None } else { at(&format!("a {tag} value of the wrong JSON type")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        r#"{"eventID":"e1","dynamodb":{"Keys":{"pk":{"S":"a"}},"SequenceNumber":"000000000000000000001"}}"#;
    const EMPTY_MAP: &str = r#"{"eventID":"e2","dynamodb":{"Keys":{"pk":{"S":"b"}},"NewImage":{"pk":{"S":"b"},"m":{}},"SequenceNumber":"000000000000000000002"}}"#;

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn body(records: &[&str]) -> String {
        format!(r#"{{"NextShardIterator":"it","Records":[{}]}}"#, records.join(","))
    }

    #[test]
    fn bodies_name_their_first_record_when_they_can() {
        let long = format!(
            r#"{{"dynamodb":{{"NewImage":{{"big":{{"S":"{}"}},"m":{{}}}},"SequenceNumber":"000000000000000000009"}}}}"#,
            "x".repeat(MAX_RAW_RECORD_BYTES)
        );
        let no_seq = r#"{"dynamodb":{"Keys":{"pk":{"S":"c"}}}}"#;
        let bad_seq = r#"{"dynamodb":{"SequenceNumber":"12x"}}"#;
        let whole = body(&[EMPTY_MAP]);
        // (body, the first record's sequence number and raw text, words the summary must hold)
        type Case<'a> = (Option<String>, Option<(&'a str, String)>, Vec<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            (
                Some(whole.clone()),
                Some(("000000000000000000002", EMPTY_MAP.to_owned())),
                vec!["1 record,", "000000000000000000002", "without a type", "NewImage.m: {}"],
            ),
            (
                Some(body(&[GOOD, EMPTY_MAP])),
                Some(("000000000000000000001", GOOD.to_owned())),
                vec!["2 records", "record 2 of 2 (sequence number 000000000000000000002)", "NewImage.m"],
            ),
            (
                Some(body(&[GOOD])),
                Some(("000000000000000000001", GOOD.to_owned())),
                vec!["no attribute value looks malformed"],
            ),
            (Some(body(&[no_seq, GOOD])), None, vec!["has no dynamodb.SequenceNumber"]),
            (Some(body(&[bad_seq])), None, vec!["invalid dynamodb.SequenceNumber", "12x"]),
            (Some(body(&[])), None, vec!["holds no records"]),
            (Some(r#"{"NextShardIterator":5}"#.to_owned()), None, vec!["holds no records"]),
            // Cut mid-stream: even a complete first record is not named.
            (Some(whole[..whole.len() - 3].to_owned()), None, vec!["not complete JSON", "EOF"]),
            (Some("<html>proxy error</html>".to_owned()), None, vec!["not complete JSON"]),
            (Some(String::new()), None, vec!["(0 bytes) is not complete JSON"]),
            (None, None, vec!["could not be read to its end"]),
        ];
        for (body, want, words) in cases {
            let found = examine(body.as_deref().map(str::as_bytes));
            let got = found.first.as_ref().map(|r| (r.sequence_number.as_str(), r.raw.clone()));
            assert_eq!(got, want, "{body:?}");
            for word in words {
                assert!(found.summary.contains(word), "{:?} should contain {word:?}", found.summary);
            }
        }

        let found = examine(Some(body(&[&long]).as_bytes()));
        let record = found.first.unwrap_or_else(|| panic!("no record: {}", found.summary));
        assert_eq!(record.sequence_number, seq("000000000000000000009"));
        assert!(record.raw.len() < MAX_RAW_RECORD_BYTES + 40, "{} bytes kept", record.raw.len());
        assert!(record.raw.starts_with(r#"{"dynamodb":{"NewImage":{"big":{"S":"xxx"#), "{}", &record.raw[..40]);
        assert!(crate::text::is_clipped(&record.raw), "a cut record says so");
        assert!(found.summary.contains("NewImage.m"), "{}", found.summary);
    }

    #[test]
    fn causes_are_joined_without_the_debug_dump() {
        use aws_sdk_dynamodbstreams::operation::get_records::GetRecordsError;
        use aws_smithy_types::body::SdkBody;
        let raw = HttpResponse::new(
            200.try_into().unwrap_or_else(|e| panic!("{e}")),
            SdkBody::from(r#"{"Records":[{"secret body":1}]}"#),
        );
        let err: SdkError<GetRecordsError, HttpResponse> =
            SdkError::service_error(GetRecordsError::unhandled("Union did not contain a valid variant."), raw);
        let text = causes(&err);
        assert_eq!(text, "service error: unhandled error: Union did not contain a valid variant.");
        let mapped = error("GetRecords of stream s", 200, err);
        assert_eq!(mapped.kind(), SourceErrorKind::Undecodable);
        assert!(mapped.undecodable_record().is_none(), "the first record has no sequence number");
        let message = mapped.to_string();
        assert!(message.contains("GetRecords of stream s: the answer (HTTP 200) could not be decoded: service error"));
        assert!(message.contains("has no dynamodb.SequenceNumber") && !message.contains("secret body"), "{message}");
    }

    #[test]
    fn malformed_values_are_found_where_the_sdk_fails() {
        let cases = [
            (r#"{"S":"a"}"#, None),
            (r#"{"M":{"a":{"L":[{"N":"1"},{"M":{}},{"BOOL":true}]}}}"#, None),
            (r#"{"M":{"a":{"L":[{"N":"1"},{}]}}}"#, Some(("without a type", "x.a[1]"))),
            (r#"{}"#, Some(("without a type", "x"))),
            (r#"{"S":null}"#, Some(("without a type", "x"))),
            (r#"{"S":"a","N":"1"}"#, Some(("several types", "x"))),
            (r#"{"S":5}"#, Some(("S value of the wrong JSON type", "x"))),
            (r#"{"SS":["a",1]}"#, Some(("SS value of the wrong JSON type", "x"))),
            (r#"{"NULL":"yes"}"#, Some(("NULL value of the wrong JSON type", "x"))),
            (r#"{"M":[]}"#, Some(("map that is not an object", "x"))),
            (r#"{"L":{}}"#, Some(("list that is not an array", "x"))),
            (r#""plain""#, Some(("not an object", "x"))),
            (r#"{"__type":"t","S":"a"}"#, None),
            (r#"{"NEWTYPE":{"whatever":1}}"#, None),
        ];
        for (json, want) in cases {
            let value: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            let got = malformed_value(&value, "x");
            match (want, &got) {
                (None, None) => {}
                (Some((what, path)), Some(message)) => {
                    assert!(message.contains(what) && message.contains(&format!("at {path}:")), "{json}: {message}");
                }
                _ => panic!("{json}: want {want:?}, got {got:?}"),
            }
        }
        let record = serde_json::json!({"dynamodb": {"Keys": {"pk": {"S": "a"}}, "OldImage": 3}});
        assert_eq!(malformed_attribute(&record).as_deref(), Some("a OldImage that is not an object"));
    }
}
