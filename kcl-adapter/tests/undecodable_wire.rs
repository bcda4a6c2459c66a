//! What the SDK makes of GetRecords answers that arrive broken, and how
//! `DynamoStreamsSource::read` classifies them. A one-connection-at-a-time HTTP server on
//! 127.0.0.1 plays the service with canned answers: a body the SDK cannot parse, a 200 body
//! cut mid-stream, a complete body of truncated JSON, a proxy's 502 page, a record without a
//! sequence number, and (to show the server itself is sound) a good answer. SDK retries are
//! off, so each case is one request, except where the SDK's own retries are the point.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodbstreams::config::retry::RetryConfig;
use aws_sdk_dynamodbstreams::config::{BehaviorVersion, Credentials, Region};
use kcl_adapter::DynamoStreamsSource;
use kcl_core::{ShardIterator, SourceError, SourceErrorKind, StreamSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ARN: &str = "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/2026-01-01T00:00:00.000";

fn record(seq: Option<&str>, new_image: &str) -> String {
    let seq = seq.map(|s| format!(r#","SequenceNumber":"{s}""#)).unwrap_or_default();
    format!(
        r#"{{"eventID":"e","eventName":"INSERT","dynamodb":{{"Keys":{{"pk":{{"S":"a"}}}},"NewImage":{new_image}{seq},"SizeBytes":9,"StreamViewType":"NEW_AND_OLD_IMAGES"}}}}"#
    )
}

fn body(records: &[String]) -> String {
    format!(r#"{{"Records":[{}],"NextShardIterator":"next"}}"#, records.join(","))
}

/// Serves `body` with `status` to every request; with `cut`, sends only that many bytes of
/// the body (while announcing all of it) and closes the connection.
async fn serve(status: &str, body: String, cut: Option<usize>) -> u16 {
    serve_counted(status, body, cut).await.0
}

/// [`serve`], also counting the requests.
async fn serve_counted(status: &str, body: String, cut: Option<usize>) -> (u16, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
    let port = listener.local_addr().unwrap_or_else(|e| panic!("{e}")).port();
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let sent = cut.map_or(body.as_bytes(), |n| &body.as_bytes()[..n]).to_vec();
    // Test scaffolding: the server lives as long as the test's runtime.
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the request head and its body (GetRecords requests are small).
            while let Ok(n) = conn.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request);
                let Some(end) = text.find("\r\n\r\n") else { continue };
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(&sent).await;
            let _ = conn.shutdown().await;
        }
    });
    (port, requests)
}

async fn read(port: u16) -> Result<usize, SourceError> {
    read_with(port, RetryConfig::disabled()).await
}

async fn read_with(port: u16, retry: RetryConfig) -> Result<usize, SourceError> {
    let config = aws_sdk_dynamodbstreams::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "wire-test"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(retry)
        .build();
    let source = DynamoStreamsSource::from_stream_arn(aws_sdk_dynamodbstreams::Client::from_conf(config), ARN);
    source.read(&ShardIterator("iterator-1".to_owned()), 1000).await.map(|batch| batch.records.len())
}

async fn failure(port: u16, case: &str) -> SourceError {
    match read(port).await {
        Err(e) => {
            eprintln!("{case}: {e}");
            e
        }
        Ok(n) => panic!("{case}: read {n} records"),
    }
}

const GOOD_IMAGE: &str = r#"{"pk":{"S":"a"}}"#;
const SEQ_1: &str = "000000000000000000001";
const SEQ_2: &str = "000000000000000000002";

#[tokio::test]
async fn a_good_answer_reads() {
    let port = serve("200 OK", body(&[record(Some(SEQ_1), GOOD_IMAGE)]), None).await;
    assert_eq!(read(port).await.unwrap_or_else(|e| panic!("{e}")), 1);
}

#[tokio::test]
async fn a_body_the_sdk_cannot_parse_names_its_first_record() {
    let bad = record(Some(SEQ_2), r#"{"pk":{"S":"a"},"m":{}}"#);
    let port = serve("200 OK", body(&[record(Some(SEQ_1), GOOD_IMAGE), bad]), None).await;
    let err = failure(port, "unparsable").await;
    assert_eq!(err.kind(), SourceErrorKind::Undecodable);
    let named = err.undecodable_record().unwrap_or_else(|| panic!("no record named: {err}"));
    assert_eq!(named.sequence_number.as_str(), SEQ_1, "the first record of the answer");
    assert_eq!(named.raw, record(Some(SEQ_1), GOOD_IMAGE), "its JSON text exactly as received");
    let message = err.to_string();
    for part in [ARN, "at iterator iterator-1", "HTTP 200", "Union did not contain a valid variant", "NewImage.m"] {
        assert!(message.contains(part), "{message:?} should contain {part:?}");
    }
    assert!(message.contains(&format!("record 2 of 2 (sequence number {SEQ_2})")), "{message}");
    assert!(!message.contains("SdkBody") && !message.contains("eventID"), "no dump of the body: {message}");
}

/// A 200 body cut short, on the wire (announced longer than sent) or before it (a complete
/// answer of truncated JSON): nothing in it is named, since a record of a cut body may be
/// sound.
#[tokio::test]
async fn a_200_body_cut_short_is_undecodable_without_a_record() {
    let full = body(&[record(Some(SEQ_1), GOOD_IMAGE), record(Some(SEQ_2), GOOD_IMAGE)]);
    let short = full[..full.len() - 40].to_owned();
    let cases = [
        ("cut mid-stream", full.clone(), Some(short.len()), "could not be read to its end"),
        ("truncated JSON", short, None, "is not complete JSON"),
    ];
    for (case, sent, cut, why) in cases {
        let err = failure(serve("200 OK", sent, cut).await, case).await;
        assert_eq!(err.kind(), SourceErrorKind::Undecodable, "{case}");
        assert!(err.undecodable_record().is_none(), "{case}: {err}");
        assert!(err.to_string().contains(why), "{case}: {err}");
    }
}

/// One retry layer per failure: the SDK retries a body cut on the wire (a transport fault)
/// before the source sees it, and hands over an answer it cannot parse at once, for the
/// consumer to read again with smaller limits.
#[tokio::test]
async fn the_sdk_retries_a_cut_body_but_not_an_unparsable_one() {
    let full = body(&[record(Some(SEQ_1), GOOD_IMAGE)]);
    let unparsable = body(&[record(Some(SEQ_1), r#"{"m":{}}"#)]);
    let retry = || RetryConfig::standard().with_max_attempts(3).with_initial_backoff(Duration::from_millis(1));
    let cases = [("cut mid-stream", full.clone(), Some(full.len() / 2), 3), ("unparsable", unparsable, None, 1)];
    for (case, sent, cut, want) in cases {
        let (port, requests) = serve_counted("200 OK", sent, cut).await;
        let err = read_with(port, retry()).await.err().unwrap_or_else(|| panic!("{case}: read"));
        assert_eq!(err.kind(), SourceErrorKind::Undecodable, "{case}: {err}");
        assert_eq!(requests.load(Ordering::SeqCst), want, "{case}: requests");
    }
}

#[tokio::test]
async fn a_proxy_error_page_stays_transient() {
    let port = serve("502 Bad Gateway", "<html><body>upstream timed out</body></html>".to_owned(), None).await;
    let err = failure(port, "502 page").await;
    assert_eq!(err.kind(), SourceErrorKind::Transient, "{err}");
    assert!(err.is_retryable());
    let message = err.to_string();
    assert!(message.contains("unexpected token '<'") && message.contains("(HTTP 502)"), "{message}");
    assert!(!message.contains("upstream timed out"), "no dump of the body: {message}");
    assert!(err.undecodable_record().is_none());
}

#[tokio::test]
async fn a_record_without_a_sequence_number_cannot_be_placed() {
    let port = serve("200 OK", body(&[record(Some(SEQ_1), GOOD_IMAGE), record(None, GOOD_IMAGE)]), None).await;
    let err = failure(port, "no sequence number").await;
    assert_eq!(err.kind(), SourceErrorKind::Undecodable);
    assert!(err.undecodable_record().is_none());
    let message = err.to_string();
    for part in [ARN, "record 2 of 2, after sequence number 000000000000000000001", "no dynamodb.SequenceNumber"] {
        assert!(message.contains(part), "{message:?} should contain {part:?}");
    }
}
