//! Splitting an HTTP/1.1 byte stream into messages, as a proxy forwards it byte for byte.
//!
//! Bodies framed by `Content-Length` or by `Transfer-Encoding: chunked` are understood;
//! anything else (a body that runs to the end of the connection) marks the stream broken,
//! after which nothing more is parsed. The AWS SDK sends every request with a
//! `Content-Length`; DynamoDB Local answers with one too.

/// One HTTP message: the head's lower-cased header names with their values, and the body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The request or status line.
    pub start_line: String,
    /// `(lower-cased name, trimmed value)` pairs, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Message {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Feed it the bytes of one direction of a connection, in order; it returns whole messages.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Why the stream could not be read (then nothing more is parsed).
    pub broken: Option<String>,
}

/// What [`Framer::next_message`] found at the start of the buffer.
enum Parse {
    Incomplete,
    Done(Message, usize),
    Broken(String),
}

impl Framer {
    /// Takes the next bytes; returns the messages completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Message> {
        let mut done = Vec::new();
        if self.broken.is_some() {
            return done;
        }
        self.buf.extend_from_slice(bytes);
        loop {
            match next_message(&self.buf) {
                Parse::Incomplete => return done,
                Parse::Done(message, used) => {
                    self.buf.drain(..used);
                    done.push(message);
                }
                Parse::Broken(why) => {
                    self.buf = Vec::new();
                    self.broken = Some(why);
                    return done;
                }
            }
        }
    }
}

fn next_message(buf: &[u8]) -> Parse {
    let Some(end) = find(buf, b"\r\n\r\n") else { return Parse::Incomplete };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let start_line = lines.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut message = Message { start_line, headers, body: Vec::new() };
    let body_start = end + 4;
    if message.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        return match dechunk(&buf[body_start..]) {
            Ok(Some((body, used))) => {
                message.body = body;
                Parse::Done(message, body_start + used)
            }
            Ok(None) => Parse::Incomplete,
            Err(why) => Parse::Broken(why),
        };
    }
    let length = match message.header("content-length").map(str::parse::<usize>) {
        Some(Ok(n)) => n,
        Some(Err(e)) => return Parse::Broken(format!("content-length: {e}")),
        // Requests without a body, and answers without one (204, 304).
        None if message.start_line.starts_with("HTTP/") && !status_without_body(&message.start_line) => {
            return Parse::Broken(format!("a body without a length ({})", message.start_line));
        }
        None => 0,
    };
    if buf.len() < body_start + length {
        return Parse::Incomplete;
    }
    message.body = buf[body_start..body_start + length].to_vec();
    Parse::Done(message, body_start + length)
}

fn status_without_body(status_line: &str) -> bool {
    status_line.split_whitespace().nth(1).is_some_and(|s| s == "204" || s == "304" || s.starts_with('1'))
}

/// The de-chunked body and the bytes it used, `None` while incomplete.
fn dechunk(mut rest: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let total = rest.len();
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else { return Ok(None) };
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|e| format!("chunk size {size_hex:?}: {e}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // No trailers (an empty line at once), or trailers ended by an empty line.
            let used = if rest.starts_with(b"\r\n") {
                2
            } else {
                match find(rest, b"\r\n\r\n") {
                    Some(end) => end + 4,
                    None => return Ok(None),
                }
            };
            return Ok(Some((body, total - rest.len() + used)));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_messages_fed_in_pieces() {
        let wire = b"POST / HTTP/1.1\r\nX-Amz-Target: DynamoDB_20120810.Scan\r\nContent-Length: 2\r\n\r\n{}\
                     POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc";
        for split in [1, 7, 40, wire.len()] {
            let mut framer = Framer::default();
            let mut all = Vec::new();
            for piece in wire.chunks(split) {
                all.extend(framer.feed(piece));
            }
            assert_eq!(all.len(), 2, "split {split}");
            assert_eq!(all[0].header("x-amz-target"), Some("DynamoDB_20120810.Scan"));
            assert_eq!(all[0].body, b"{}");
            assert_eq!(all[1].body, b"abc");
        }
    }

    #[test]
    fn reads_chunked_answers() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
                     HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz";
        let mut framer = Framer::default();
        let mut all = Vec::new();
        for piece in wire.chunks(5) {
            all.extend(framer.feed(piece));
        }
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].body, b"abcde");
        assert_eq!(all[1].body, b"z");
        assert!(framer.broken.is_none());
    }

    #[test]
    fn an_answer_without_length_breaks_the_stream() {
        let mut framer = Framer::default();
        assert!(framer.feed(b"HTTP/1.1 200 OK\r\n\r\nxyz").is_empty());
        assert!(framer.broken.is_some());
        assert!(Framer::default().feed(b"HTTP/1.1 204 No Content\r\n\r\n").len() == 1);
    }
}
