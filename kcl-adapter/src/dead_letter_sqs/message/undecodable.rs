//! The message for a record the stream source could not decode: no `records`, and an
//! `undecodableRecord` with its sequence number and its JSON text as received, cut (and
//! flagged as `truncated`) when the source kept only part of it or when it does not fit the
//! message size limit.

use kcl_core::UndecodableRecord;
use serde::Serialize;

use super::{Envelope, to_json};
use crate::text::{clip, is_clipped};

/// The `undecodableRecord` field.
#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RecordJson<'a> {
    sequence_number: &'a str,
    /// The record's JSON text as received, as a string (it did not decode).
    raw: &'a str,
}

/// The body for `record`, at most `limit` bytes long: `envelope` (its sequence numbers set to
/// the record's) with `recordCount` 1 and the record's raw text, cut as far as needed.
pub(super) fn encode(envelope: Envelope<'_>, record: &UndecodableRecord, limit: usize) -> Result<String, String> {
    let seq = record.sequence_number.as_str();
    let source_cut = is_clipped(&record.raw);
    // The body with at most `budget` bytes of the raw text.
    let render = |budget: usize| {
        let raw = clip(&record.raw, budget);
        let cut_here = budget < record.raw.len();
        let reason = match (source_cut, cut_here) {
            (false, false) => None,
            (true, false) => Some("the stream source kept only the start of the record's JSON".to_owned()),
            (source, true) => Some(format!(
                "{}the record's JSON ({} bytes) is cut to fit the {limit}-byte message limit",
                if source { "the stream source kept only the start of the record's JSON, and " } else { "" },
                record.raw.len()
            )),
        };
        let mut message = envelope;
        message.record_count = 1;
        message.truncated = reason.is_some();
        message.truncated_reason = reason.as_deref();
        message.undecodable_record = Some(RecordJson { sequence_number: seq, raw: &raw });
        to_json(&message)
    };
    let whole = render(record.raw.len())?;
    if whole.len() <= limit {
        return Ok(whole);
    }
    let mut best = render(0)?;
    if best.len() > limit {
        return Err(format!(
            "the message for undecodable record {seq} takes {} bytes even without the record's JSON, more than the \
             {limit}-byte limit",
            best.len()
        ));
    }
    // Escaping makes the body longer than the text by an amount that depends on the text: find
    // the longest start that fits by bisection (`fits` holds for `kept`, not for `over`).
    let (mut kept, mut over) = (0, record.raw.len());
    while kept + 1 < over {
        let mid = kept + (over - kept) / 2;
        let body = render(mid)?;
        if body.len() <= limit {
            kept = mid;
            best = body;
        } else {
            over = mid;
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use kcl_core::{DeadLetter, SequenceNumber, ShardId};
    use serde_json::{Value, json};

    use crate::record::ChangeRecord;

    const ARN: &str = "arn:aws:dynamodb:us-east-1:1:table/t/stream/x";
    const SEQ: &str = "000000000000000000042";

    fn undecodable(raw: &str) -> kcl_core::UndecodableRecord {
        kcl_core::UndecodableRecord::new(SequenceNumber::parse(SEQ).unwrap_or_else(|e| panic!("{e}")), raw)
    }

    fn encode(record: &kcl_core::UndecodableRecord, limit: usize) -> Vec<Value> {
        let shard = ShardId::new("shardId-1");
        let letter: DeadLetter<'_, ChangeRecord> = DeadLetter::for_undecodable(&shard, record, "Union did not contain");
        let bodies = super::super::encode(ARN, &letter, limit).unwrap_or_else(|e| panic!("{e}"));
        bodies
            .iter()
            .map(|b| {
                assert!(b.json.len() <= limit, "{} bytes over {limit}", b.json.len());
                serde_json::from_str(&b.json).unwrap_or_else(|e| panic!("{e}: {}", b.json))
            })
            .collect()
    }

    #[test]
    fn an_undecodable_record_is_one_message_with_its_raw_json() {
        let raw = r#"{"dynamodb":{"NewImage":{"m":{}},"SequenceNumber":"000000000000000000042"}}"#;
        let messages = encode(&undecodable(raw), 262_144);
        let [m] = &messages[..] else { panic!("{messages:?}") };
        let want = json!({
            "version": 1, "streamArn": ARN, "shardId": "shardId-1",
            "firstSequenceNumber": SEQ, "lastSequenceNumber": SEQ, "attempts": 0,
            "error": "Union did not contain", "recordCount": 1, "truncated": false, "part": 1, "parts": 1,
            "records": [], "undecodableRecord": {"sequenceNumber": SEQ, "raw": raw},
        });
        assert_eq!(m, &want);
    }

    #[test]
    fn raw_json_is_cut_to_fit_and_flagged() {
        // (raw, limit, truncated, words of the reason)
        let big = format!(r#"{{"S":"{}"}}"#, "\"\u{1}é".repeat(20_000));
        let source_cut = crate::text::clip(&big, 1000).into_owned();
        let size = format!("({} bytes)", big.len());
        let cases: Vec<(&str, usize, bool, Vec<&str>)> = vec![
            (&big, 262_144, false, vec![]),
            (&big, 16 * 1024, true, vec!["cut to fit the 16384-byte message limit", &size]),
            (&source_cut, 262_144, true, vec!["stream source kept only the start"]),
            (&source_cut, 1100, true, vec!["stream source kept only the start", "and the record's JSON"]),
        ];
        for (raw, limit, truncated, words) in cases {
            let messages = encode(&undecodable(raw), limit);
            let [m] = &messages[..] else { panic!("{} messages", messages.len()) };
            assert_eq!(m["truncated"], json!(truncated), "{limit}");
            let kept = m["undecodableRecord"]["raw"].as_str().unwrap_or_default();
            if truncated {
                let reason = m["truncatedReason"].as_str().unwrap_or_default();
                words.iter().for_each(|w| assert!(reason.contains(w), "{reason:?} should contain {w:?}"));
                let cut_at = kept.rfind('…').unwrap_or(kept.len());
                assert!(raw.starts_with(&kept[..cut_at]), "what is kept is the start of the record");
                assert!(crate::text::is_clipped(kept));
                if limit < 262_144 {
                    let size = serde_json::to_string(m).map(|j| j.len()).unwrap_or_default();
                    assert!(size + 64 > limit, "{size} bytes: the cut keeps as much as fits under {limit}");
                }
            } else {
                assert_eq!(kept, raw);
                assert!(m.get("truncatedReason").is_none());
            }
        }
    }

    #[test]
    fn an_envelope_too_big_for_the_limit_is_an_error() {
        let shard = ShardId::new("s".repeat(300));
        let record = undecodable("{}");
        let letter: DeadLetter<'_, ChangeRecord> = DeadLetter::for_undecodable(&shard, &record, "e");
        let err = super::super::encode(ARN, &letter, 200).err().unwrap_or_else(|| panic!("encoded over the limit"));
        assert!(err.contains(SEQ) && err.contains("200-byte"), "{err}");
    }
}
