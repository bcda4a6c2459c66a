//! Reading the AWS operations out of the HTTP/1.1 requests a worker sends, as a proxy forwards
//! them byte for byte: each request's `X-Amz-Target` header (`DynamoDB_20120810.GetItem`,
//! `DynamoDBStreams_20120810.GetRecords`, `AmazonSQS.SendMessage`) and the resource its JSON
//! body names (`TableName`, `StreamArn`, `QueueUrl`).
//!
//! The AWS SDK sends every body with a `Content-Length`; a chunked request is reported as
//! unreadable rather than guessed at, so a test that relies on the operations fails loudly.

use serde_json::Value;

/// Bodies longer than this are skipped, not parsed (their operation is still counted).
const MAX_PARSED_BODY: usize = 2 * 1024 * 1024;

/// One request as seen on the wire.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Request {
    /// The `X-Amz-Target` header, or `METHOD path` when there is none.
    pub(crate) target: String,
    /// `TableName`, `StreamArn` or `QueueUrl` of the body, when it has one.
    pub(crate) resource: Option<String>,
}

/// Splits a client's byte stream into requests. Feed it what the client sent, in order.
#[derive(Debug, Default)]
pub(crate) struct Sniffer {
    buf: Vec<u8>,
    /// The request whose body is being read, and how much of the body is still to come.
    body: Option<(Request, usize)>,
    /// Why the stream could not be read (then nothing more is parsed).
    pub(crate) broken: Option<String>,
}

impl Sniffer {
    /// Takes the next bytes; returns the requests completed by them.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<Request> {
        let mut done = Vec::new();
        if self.broken.is_some() {
            return done;
        }
        self.buf.extend_from_slice(bytes);
        loop {
            if let Some((request, left)) = self.body.take() {
                if self.buf.len() < left {
                    self.body = Some((request, left));
                    return done;
                }
                let body: Vec<u8> = self.buf.drain(..left).collect();
                let resource = request.resource.or_else(|| resource_of(&body));
                done.push(Request { target: request.target, resource });
                continue;
            }
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else { return done };
            let head: Vec<u8> = self.buf.drain(..end + 4).collect();
            match parse_head(&String::from_utf8_lossy(&head)) {
                Ok((target, length)) if length > MAX_PARSED_BODY => {
                    // Counted now; the body is skipped unparsed.
                    self.body = Some((Request { target, resource: Some("(body not parsed)".to_owned()) }, length));
                }
                Ok((target, length)) => self.body = Some((Request { target, resource: None }, length)),
                Err(e) => {
                    self.broken = Some(e);
                    return done;
                }
            }
        }
    }

    /// The target of the request whose headers arrived, if any (a request that is still
    /// waiting for its body or its answer).
    pub(crate) fn pending_target(&self) -> Option<&str> {
        self.body.as_ref().map(|(r, _)| r.target.as_str())
    }
}

/// The operation and the body length of a request head.
fn parse_head(head: &str) -> Result<(String, usize), String> {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let (mut target, mut length) = (None, 0usize);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "x-amz-target" => target = Some(value.to_owned()),
            "content-length" => length = value.parse().map_err(|e| format!("content-length {value:?}: {e}"))?,
            "transfer-encoding" if value.eq_ignore_ascii_case("chunked") => {
                return Err(format!("a chunked request ({request_line}): the operations cannot be read"));
            }
            _ => {}
        }
    }
    let fallback = || request_line.rsplit_once(' ').map_or(request_line.clone(), |(l, _)| l.to_owned());
    Ok((target.unwrap_or_else(fallback), length))
}

/// The resource a JSON request body names.
fn resource_of(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    ["TableName", "StreamArn", "QueueUrl"].iter().find_map(|k| value.get(*k)?.as_str().map(str::to_owned))
}
