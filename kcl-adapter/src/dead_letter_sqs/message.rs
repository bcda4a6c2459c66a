//! The JSON bodies of dead-letter messages (documented on
//! [`SqsDeadLetterSink`](super::SqsDeadLetterSink)): a pure function of the letter and the
//! size limit, tested without a server.
//!
//! Each record is serialized once, in full and, when needed, as keys and sequence number
//! only; a message is assembled from those pieces, so its size is known exactly before it is
//! sent.

use std::time::UNIX_EPOCH;

use kcl_core::DeadLetter;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::record::{AttributeValue, ChangeRecord, Item};

mod undecodable;

/// The `version` field of every message; raised when the format changes incompatibly.
pub const MESSAGE_VERSION: u32 = 1;

/// The `error` field is cut to this many bytes (a processor error may carry a whole payload).
const MAX_ERROR_BYTES: usize = 8 * 1024;

/// One message to send.
#[derive(Debug)]
pub(super) struct Body {
    /// The message body.
    pub(super) json: String,
    /// For FIFO queues: the same for the same part of the same letter (a hash of the stream,
    /// the shard and the sequence range, and the part number), well under 128 characters.
    pub(super) dedup_id: String,
}

/// The envelope around the records; see the table on `SqsDeadLetterSink`.
#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    version: u32,
    stream_arn: &'a str,
    shard_id: &'a str,
    first_sequence_number: &'a str,
    last_sequence_number: &'a str,
    attempts: u32,
    error: &'a str,
    record_count: usize,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated_reason: Option<&'a str>,
    part: usize,
    parts: usize,
    records: &'a [Box<RawValue>],
    #[serde(skip_serializing_if = "Option::is_none")]
    undecodable_record: Option<undecodable::RecordJson<'a>>,
}

/// Encodes `letter` into message bodies of at most `limit` bytes each: one message with the
/// full records when they fit; else one with their keys and sequence numbers; else those
/// spread over several messages. Fails only when a single record's keys do not fit at all.
/// A letter for an undecodable record is one message (see [`undecodable`]).
pub(super) fn encode(
    stream_arn: &str,
    letter: &DeadLetter<'_, ChangeRecord>,
    limit: usize,
) -> Result<Vec<Body>, String> {
    let (Some(first), Some(last)) = (letter.first_sequence_number(), letter.last_sequence_number()) else {
        return Ok(Vec::new());
    };
    let stream_arn = xml_safe(stream_arn);
    let shard_id = xml_safe(letter.shard_id.as_str());
    let error = clip(letter.error, MAX_ERROR_BYTES);
    let mut envelope = Envelope {
        version: MESSAGE_VERSION,
        stream_arn: &stream_arn,
        shard_id: &shard_id,
        first_sequence_number: first.as_str(),
        last_sequence_number: last.as_str(),
        attempts: letter.attempts,
        error: &error,
        record_count: letter.records.len(),
        truncated: false,
        truncated_reason: None,
        part: 1,
        parts: 1,
        records: &[],
        undecodable_record: None,
    };
    let source = fnv1a(&[stream_arn.as_bytes(), b"\n", shard_id.as_bytes()]);
    let range = fnv1a(&[envelope.first_sequence_number.as_bytes(), b"\n", envelope.last_sequence_number.as_bytes()]);
    let dedup = |part: usize| format!("{source:016x}-{range:016x}-{part}");
    if letter.records.is_empty() {
        let Some(record) = letter.undecodable else { return Ok(Vec::new()) };
        let json = undecodable::encode(envelope, record, limit)?;
        return Ok(vec![Body { json, dedup_id: dedup(1) }]);
    }

    let full = pieces(letter.records, Shape::Full)?;
    envelope.records = &full;
    let whole = to_json(&envelope)?;
    if whole.len() <= limit {
        return Ok(vec![Body { json: whole, dedup_id: dedup(1) }]);
    }

    let keys = pieces(letter.records, Shape::KeysOnly)?;
    let reason = format!(
        "the {} records with their images take {} bytes, more than the {limit}-byte message limit: only their \
         keys and sequence numbers are included; read the items from the table by key",
        letter.records.len(),
        whole.len()
    );
    envelope.truncated = true;
    envelope.truncated_reason = Some(&reason);
    envelope.records = &keys;
    let truncated = to_json(&envelope)?;
    if truncated.len() <= limit {
        return Ok(vec![Body { json: truncated, dedup_id: dedup(1) }]);
    }

    // Split. The envelope's size with the largest possible part numbers bounds every part's.
    envelope.records = &[];
    envelope.part = keys.len();
    envelope.parts = keys.len();
    let overhead = to_json(&envelope)?.len();
    let mut groups: Vec<&[Box<RawValue>]> = Vec::new();
    let mut start = 0;
    let mut size = overhead;
    for (i, piece) in keys.iter().enumerate() {
        let len = piece.get().len();
        if overhead + len > limit {
            return Err(format!(
                "the keys of record {} alone take {len} bytes: with the message envelope that is more than the \
                 {limit}-byte limit",
                letter.records[i].sequence_number()
            ));
        }
        let comma = usize::from(i > start);
        if size + comma + len > limit {
            groups.push(&keys[start..i]);
            start = i;
            size = overhead + len;
        } else {
            size += comma + len;
        }
    }
    groups.push(&keys[start..]);
    let parts = groups.len();
    let mut bodies = Vec::with_capacity(parts);
    for (i, group) in groups.into_iter().enumerate() {
        envelope.part = i + 1;
        envelope.parts = parts;
        envelope.records = group;
        let json = to_json(&envelope)?;
        if json.len() > limit {
            // The bound above makes this impossible; refuse rather than send what SQS rejects.
            return Err(format!("part {} of {parts} takes {} bytes, over the {limit}-byte limit", i + 1, json.len()));
        }
        bodies.push(Body { json, dedup_id: dedup(i + 1) });
    }
    Ok(bodies)
}

fn to_json<T: Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map(xml_safe_json).map_err(|e| format!("cannot serialize: {e}"))
}

/// How much of a record to write.
#[derive(Clone, Copy)]
enum Shape {
    /// Everything the record carries.
    Full,
    /// `dynamodb.Keys` and `dynamodb.SequenceNumber` only.
    KeysOnly,
}

/// A record in the shape of a DynamoDB Streams record.
#[derive(Serialize)]
struct RecordJson<'a> {
    #[serde(rename = "eventID", skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a str>,
    #[serde(rename = "eventName", skip_serializing_if = "Option::is_none")]
    event_name: Option<&'a str>,
    dynamodb: ChangeJson<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    approximate_creation_date_time: Option<u64>,
    keys: ItemJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_image: Option<ItemJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_image: Option<ItemJson<'a>>,
    sequence_number: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_view_type: Option<&'a str>,
}

fn pieces(records: &[ChangeRecord], shape: Shape) -> Result<Vec<Box<RawValue>>, String> {
    records.iter().map(|r| piece(r, shape)).collect()
}

fn piece(r: &ChangeRecord, shape: Shape) -> Result<Box<RawValue>, String> {
    let full = matches!(shape, Shape::Full);
    let json = RecordJson {
        event_id: full.then(|| r.event_id()),
        event_name: full.then(|| r.event_name().as_str()),
        dynamodb: ChangeJson {
            approximate_creation_date_time: r
                .approximate_creation_time()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .filter(|_| full),
            keys: ItemJson(r.keys()),
            new_image: r.new_image().filter(|_| full).map(ItemJson),
            old_image: r.old_image().filter(|_| full).map(ItemJson),
            sequence_number: r.sequence_number().as_str(),
            size_bytes: r.size_bytes().filter(|_| full),
            stream_view_type: r.stream_view_type().filter(|_| full).map(|v| v.as_str()),
        },
    };
    let text = to_json(&json)?;
    RawValue::from_string(text).map_err(|e| format!("cannot serialize record {}: {e}", r.sequence_number()))
}

/// An item as DynamoDB JSON (`{"name": {"S": "x"}}`), attributes sorted by name.
struct ItemJson<'a>(&'a Item);

impl Serialize for ItemJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut attributes: Vec<(&String, &AttributeValue)> = self.0.iter().collect();
        attributes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        serializer.collect_map(attributes.into_iter().map(|(name, value)| (name, ValueJson(value))))
    }
}

/// One attribute value as DynamoDB JSON; binary values in base64.
struct ValueJson<'a>(&'a AttributeValue);

impl Serialize for ValueJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use aws_smithy_types::base64::encode;
        let mut map = serializer.serialize_map(Some(1))?;
        match self.0 {
            AttributeValue::S(s) => map.serialize_entry("S", s)?,
            AttributeValue::N(n) => map.serialize_entry("N", n)?,
            AttributeValue::B(b) => map.serialize_entry("B", &encode(b.as_ref()))?,
            AttributeValue::Bool(b) => map.serialize_entry("BOOL", b)?,
            AttributeValue::Null(b) => map.serialize_entry("NULL", b)?,
            AttributeValue::Ss(ss) => map.serialize_entry("SS", ss)?,
            AttributeValue::Ns(ns) => map.serialize_entry("NS", ns)?,
            AttributeValue::Bs(bs) => {
                map.serialize_entry("BS", &bs.iter().map(|b| encode(b.as_ref())).collect::<Vec<_>>())?;
            }
            AttributeValue::M(m) => map.serialize_entry("M", &ItemJson(m))?,
            AttributeValue::L(l) => map.serialize_entry("L", &l.iter().map(ValueJson).collect::<Vec<_>>())?,
            // A type newer than this SDK (the source already reads those as NULL).
            _ => map.serialize_entry("NULL", &true)?,
        }
        map.end()
    }
}

/// `s` cut to at most `max` bytes at a character boundary, saying how much was cut, with the
/// characters SQS refuses replaced.
fn clip(s: &str, max: usize) -> String {
    crate::text::clip(&xml_safe(s), max).into_owned()
}

/// Replaces U+FFFE and U+FFFF, which SQS refuses in a message body, with U+FFFD.
fn xml_safe(s: &str) -> String {
    s.replace(['\u{FFFE}', '\u{FFFF}'], "\u{FFFD}")
}

/// Escapes U+FFFE and U+FFFF in serialized JSON (they only occur inside strings), which keeps
/// the data exact while SQS accepts the body. serde_json already escapes control characters.
fn xml_safe_json(json: String) -> String {
    if json.contains(['\u{FFFE}', '\u{FFFF}']) {
        json.replace('\u{FFFE}', "\\ufffe").replace('\u{FFFF}', "\\uffff")
    } else {
        json
    }
}

/// 64-bit FNV-1a: stable across builds, unlike the standard library's hasher.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use aws_sdk_dynamodb::primitives::Blob;
    use kcl_core::{SequenceNumber, ShardId};
    use serde_json::{Value, json};

    use super::*;
    use crate::record::{EventName, StreamViewType};

    const LIMIT: usize = 262_144;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_owned())
    }

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    /// Record `i`: key `k<i>`, sequence number `100 + i`, a new image with a `payload` of
    /// `payload` bytes.
    fn record(i: usize, payload: usize) -> ChangeRecord {
        let seq = SequenceNumber::parse(&format!("{:021}", 100 + i)).unwrap_or_else(|e| panic!("{e}"));
        let key = format!("k{i}");
        ChangeRecord::new(format!("ev-{i}"), EventName::Insert, item(&[("pk", s(&key))]), seq)
            .with_new_image(item(&[("pk", s(&key)), ("payload", s(&"x".repeat(payload)))]))
            .with_approximate_creation_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .with_size_bytes(payload as u64 + 10)
            .with_stream_view_type(StreamViewType::NewAndOldImages)
    }

    fn encode_records(records: &[ChangeRecord], error: &str, limit: usize) -> Result<Vec<Body>, String> {
        let shard = ShardId::new("shardId-00000001700000000000-abcdef01");
        let letter = DeadLetter::new(&shard, records, 3, error);
        encode("arn:aws:dynamodb:us-east-1:1:table/t/stream/x", &letter, limit)
    }

    fn parse(body: &Body) -> Value {
        serde_json::from_str(&body.json).unwrap_or_else(|e| panic!("{e}: {}", body.json))
    }

    /// The sequence numbers of a message's records.
    fn seqs(message: &Value) -> Vec<String> {
        let records = message["records"].as_array().cloned().unwrap_or_default();
        records.iter().map(|r| r["dynamodb"]["SequenceNumber"].as_str().unwrap_or("?").to_owned()).collect()
    }

    #[test]
    fn a_small_letter_is_one_message_with_every_field() {
        let records = [record(0, 10), record(1, 10)];
        let bodies = encode_records(&records, "cannot decode", LIMIT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bodies.len(), 1);
        let m = parse(&bodies[0]);
        let want = json!({
            "version": 1,
            "streamArn": "arn:aws:dynamodb:us-east-1:1:table/t/stream/x",
            "shardId": "shardId-00000001700000000000-abcdef01",
            "firstSequenceNumber": "000000000000000000100",
            "lastSequenceNumber": "000000000000000000101",
            "attempts": 3,
            "error": "cannot decode",
            "recordCount": 2,
            "truncated": false,
            "part": 1,
            "parts": 1,
        });
        for (field, value) in want.as_object().into_iter().flatten() {
            assert_eq!(&m[field], value, "{field}");
        }
        assert!(m.get("truncatedReason").is_none());
        assert_eq!(
            m["records"][0],
            json!({
                "eventID": "ev-0",
                "eventName": "INSERT",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1_700_000_000,
                    "Keys": {"pk": {"S": "k0"}},
                    "NewImage": {"payload": {"S": "xxxxxxxxxx"}, "pk": {"S": "k0"}},
                    "SequenceNumber": "000000000000000000100",
                    "SizeBytes": 20,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            })
        );
        assert_eq!(seqs(&m), ["000000000000000000100", "000000000000000000101"]);
    }

    #[test]
    fn every_attribute_type_is_dynamodb_json() {
        let image = item(&[
            ("s", s("a")),
            ("n", AttributeValue::N("1.5".into())),
            ("b", AttributeValue::B(Blob::new(b"hi".to_vec()))),
            ("bool", AttributeValue::Bool(true)),
            ("null", AttributeValue::Null(true)),
            ("ss", AttributeValue::Ss(vec!["x".into(), "y".into()])),
            ("ns", AttributeValue::Ns(vec!["1".into()])),
            ("bs", AttributeValue::Bs(vec![Blob::new(vec![0xff])])),
            (
                "m",
                AttributeValue::M(item(&[("inner", AttributeValue::L(vec![s("z"), AttributeValue::N("2".into())]))])),
            ),
        ]);
        let r = record(0, 0).with_old_image(image);
        let bodies = encode_records(&[r], "e", LIMIT).unwrap_or_else(|e| panic!("{e}"));
        let old = &parse(&bodies[0])["records"][0]["dynamodb"]["OldImage"];
        assert_eq!(
            old,
            &json!({
                "s": {"S": "a"}, "n": {"N": "1.5"}, "b": {"B": "aGk="}, "bool": {"BOOL": true},
                "null": {"NULL": true}, "ss": {"SS": ["x", "y"]}, "ns": {"NS": ["1"]}, "bs": {"BS": ["/w=="]},
                "m": {"M": {"inner": {"L": [{"S": "z"}, {"N": "2"}]}}},
            })
        );
        // Attributes are sorted, so equal records give equal bodies.
        let text = &bodies[0].json;
        assert!(text.find("\"b\":") < text.find("\"bool\":") && text.find("\"bool\":") < text.find("\"bs\":"));
    }

    #[test]
    fn records_too_big_for_one_message_are_truncated_to_keys() {
        // 30 records of 10 KB each: 300 KB of images, over the 256 KiB limit.
        let records: Vec<ChangeRecord> = (0..30).map(|i| record(i, 10_000)).collect();
        let bodies = encode_records(&records, "boom", LIMIT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bodies.len(), 1);
        assert!(bodies[0].json.len() <= LIMIT);
        let m = parse(&bodies[0]);
        assert_eq!(m["truncated"], json!(true));
        let reason = m["truncatedReason"].as_str().unwrap_or_default();
        assert!(reason.contains("262144-byte") && reason.contains("only their keys and sequence numbers"), "{reason}");
        assert_eq!(m["recordCount"], json!(30));
        assert_eq!((m["part"].clone(), m["parts"].clone()), (json!(1), json!(1)));
        let expected: Vec<String> = records.iter().map(|r| r.sequence_number().as_str().to_owned()).collect();
        assert_eq!(seqs(&m), expected);
        assert_eq!(
            m["records"][7],
            json!({"dynamodb": {"Keys": {"pk": {"S": "k7"}}, "SequenceNumber": "000000000000000000107"}})
        );
    }

    #[test]
    fn keys_that_do_not_fit_one_message_are_split_and_none_is_lost() {
        let records: Vec<ChangeRecord> = (0..1000).map(|i| record(i, 100)).collect();
        // A 16 KiB limit: 1000 keys (~70 bytes each) need several messages.
        let limit = 16 * 1024;
        let bodies = encode_records(&records, "boom", limit).unwrap_or_else(|e| panic!("{e}"));
        assert!(bodies.len() > 2, "{} parts", bodies.len());
        let mut all = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            assert!(body.json.len() <= limit, "part {i}: {} bytes", body.json.len());
            let m = parse(body);
            assert_eq!(m["part"], json!(i + 1));
            assert_eq!(m["parts"], json!(bodies.len()));
            assert_eq!(m["truncated"], json!(true));
            assert_eq!(m["recordCount"], json!(1000));
            assert_eq!(m["firstSequenceNumber"], json!("000000000000000000100"));
            assert_eq!(m["lastSequenceNumber"], json!("000000000000000001099"));
            assert_eq!(m["shardId"], json!("shardId-00000001700000000000-abcdef01"));
            all.extend(seqs(&m));
        }
        let expected: Vec<String> = records.iter().map(|r| r.sequence_number().as_str().to_owned()).collect();
        assert_eq!(all, expected, "every record once, in order");
        let ids: std::collections::HashSet<&str> = bodies.iter().map(|b| b.dedup_id.as_str()).collect();
        assert_eq!(ids.len(), bodies.len(), "a deduplication id per part");
        assert!(bodies.iter().all(|b| b.dedup_id.len() <= 128));
    }

    #[test]
    fn the_same_letter_encodes_the_same_way() {
        let records: Vec<ChangeRecord> = (0..3).map(|i| record(i, 5)).collect();
        let a = encode_records(&records, "e", LIMIT).unwrap_or_else(|e| panic!("{e}"));
        let b = encode_records(&records, "e", LIMIT).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((&a[0].json, &a[0].dedup_id), (&b[0].json, &b[0].dedup_id));
        let other = encode_records(&records[1..], "e", LIMIT).unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(a[0].dedup_id, other[0].dedup_id);
    }

    #[test]
    fn keys_larger_than_the_limit_are_an_error_not_a_drop() {
        let big = ChangeRecord::new(
            "ev",
            EventName::Insert,
            item(&[("pk", s(&"k".repeat(5000)))]),
            SequenceNumber::parse("000000000000000000042").unwrap_or_else(|e| panic!("{e}")),
        );
        let err = match encode_records(&[big], "e", 4096) {
            Err(e) => e,
            Ok(b) => panic!("encoded {} bodies", b.len()),
        };
        assert!(err.contains("000000000000000000042") && err.contains("4096-byte"), "{err}");
    }

    #[test]
    fn long_errors_are_clipped_and_unsendable_characters_escaped() {
        let error = format!("{}\u{FFFF}", "é".repeat(10_000));
        let r = record(0, 0).with_old_image(item(&[("odd", s("a\u{FFFE}b\u{1}"))]));
        let bodies = encode_records(&[r], &error, LIMIT).unwrap_or_else(|e| panic!("{e}"));
        let text = &bodies[0].json;
        assert!(!text.contains(['\u{FFFE}', '\u{FFFF}']), "SQS refuses these characters");
        let m = parse(&bodies[0]);
        let e = m["error"].as_str().unwrap_or_default();
        assert!(e.len() < MAX_ERROR_BYTES + 40 && e.ends_with("more bytes cut]"), "{} bytes", e.len());
        // The data itself survives exactly, escaped.
        assert_eq!(m["records"][0]["dynamodb"]["OldImage"]["odd"]["S"], json!("a\u{FFFE}b\u{1}"));
    }

    #[test]
    fn an_empty_letter_sends_nothing() {
        assert!(encode_records(&[], "e", LIMIT).unwrap_or_else(|e| panic!("{e}")).is_empty());
    }
}
