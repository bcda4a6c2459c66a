//! Event filters in the JSON filter-pattern syntax Lambda uses for DynamoDB event sources
//! (`FilterCriteria`), so filters move over unchanged.
//!
//! A [`FilterCriteria`] is one or more patterns, OR-ed; a record is delivered when one
//! pattern matches its event ([`StreamRecord::to_filter_event`](crate::StreamRecord::to_filter_event):
//! the record in the shape of Lambda's DynamoDB event, attribute values in DynamoDB JSON).
//! In a pattern, an object names fields (all must match) and an array lists matchers (any
//! may match): exact values, `{"prefix": s}`, `{"suffix": s}`, `{"equals-ignore-case": s}`,
//! `{"anything-but": v | [v..] | {"prefix": s} | {"suffix": s}}`,
//! `{"numeric": [">", 0, "<=", 5]}` (also on numeric strings such as DynamoDB's `N`), and
//! `{"exists": true | false}`.
//!
//! ```
//! use kcl_core::FilterCriteria;
//! use serde_json::json;
//! let f = FilterCriteria::parse(r#"{"eventName": ["INSERT"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "order#"}]}}}}"#)?;
//! assert!(f.matches(&json!({"eventName": "INSERT", "dynamodb": {"Keys": {"pk": {"S": "order#1"}}}})));
//! assert!(!f.matches(&json!({"eventName": "REMOVE", "dynamodb": {"Keys": {"pk": {"S": "order#1"}}}})));
//! # Ok::<(), kcl_core::filter::FilterError>(())
//! ```

mod error;
mod matching;
mod parse;

use serde_json::Value;

pub use error::{FilterError, PatternProblem};
use matching::{Node, fields_match};

/// Most patterns in one [`FilterCriteria`] (Lambda's limit per event source).
pub const MAX_FILTER_PATTERNS: usize = 5;

/// One or more filter patterns, OR-ed. Parse with [`FilterCriteria::parse`].
#[derive(Clone, Debug, PartialEq)]
pub struct FilterCriteria {
    patterns: Vec<Vec<(String, Node)>>,
    source: String,
}

impl FilterCriteria {
    /// Parses one pattern (a JSON object), a JSON array of patterns, or Lambda's own shape
    /// `{"Filters": [{"Pattern": "<pattern as a JSON string>"}, ..]}`. The error names the
    /// pattern and the JSON path of the bad part.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let value: Value = serde_json::from_str(text).map_err(|e| FilterError::json(&e))?;
        let patterns: Vec<Value> = match value {
            Value::Array(items) => items,
            Value::Object(mut map) if map.len() == 1 && map.contains_key("Filters") => {
                lambda_filters(map.remove("Filters").unwrap_or(Value::Null))?
            }
            other => vec![other],
        };
        if patterns.is_empty() {
            return Err(FilterError::NoPatterns);
        }
        if patterns.len() > MAX_FILTER_PATTERNS {
            return Err(FilterError::TooManyPatterns { count: patterns.len() });
        }
        let several = patterns.len() > 1;
        let parsed = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| parse::pattern(p).map_err(|e| if several { e.in_pattern(i + 1) } else { e }))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { patterns: parsed, source: text.trim().to_owned() })
    }

    /// Whether `event` matches one of the patterns.
    pub fn matches(&self, event: &Value) -> bool {
        self.patterns.iter().any(|p| fields_match(p, Some(event)))
    }

    /// The text it was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// The patterns of Lambda's `{"Filters": [{"Pattern": "..."}]}`.
fn lambda_filters(filters: Value) -> Result<Vec<Value>, FilterError> {
    let expected = |want: &'static str, got: &Value| FilterError::Pattern {
        pattern: None,
        path: "Filters".to_owned(),
        problem: PatternProblem::Expected { want, got: error::shorten(got) },
    };
    let Value::Array(entries) = &filters else {
        return Err(expected("an array of {\"Pattern\": \"...\"}", &filters));
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| match entry.get("Pattern").and_then(Value::as_str) {
            Some(text) => serde_json::from_str(text).map_err(|e| FilterError::json(&e).in_pattern(i + 1)),
            None => Err(expected("{\"Pattern\": \"<pattern as a JSON string>\"}", entry).in_pattern(i + 1)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn insert(pk: &str, status: &str) -> Value {
        json!({"eventName": "INSERT", "eventSource": "aws:dynamodb", "dynamodb": {
            "Keys": {"pk": {"S": pk}},
            "NewImage": {"pk": {"S": pk}, "status": {"S": status}, "n": {"N": "42"}}}})
    }

    fn remove(pk: &str) -> Value {
        json!({"eventName": "REMOVE", "dynamodb": {"Keys": {"pk": {"S": pk}}, "OldImage": {"pk": {"S": pk}}}})
    }

    #[test]
    fn patterns_against_events() {
        let issue = r#"{"eventName": ["INSERT","MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["shipped"]}}, "Keys": {"pk": {"S": [{"prefix": "order#"}]}}}}"#;
        let cases: Vec<(&str, Value, bool)> = vec![
            (issue, insert("order#1", "shipped"), true),
            (issue, insert("order#1", "pending"), false),
            (issue, insert("user#1", "shipped"), false),
            (issue, remove("order#1"), false),
            (r#"{"eventName": [{"anything-but": ["REMOVE"]}]}"#, remove("a"), false),
            (r#"{"eventName": [{"anything-but": ["REMOVE"]}]}"#, insert("a", "x"), true),
            (r#"{"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">", 40, "<=", 42]}]}}}}"#, insert("a", "x"), true),
            (r#"{"dynamodb": {"NewImage": {"n": {"N": [{"numeric": ["<", 42]}]}}}}"#, insert("a", "x"), false),
            (r#"{"dynamodb": {"OldImage": [{"exists": false}]}}"#, insert("a", "x"), true),
            (r#"{"dynamodb": {"OldImage": {"pk": [{"exists": true}]}}}"#, remove("a"), false),
            (r#"{"dynamodb": {"OldImage": {"pk": {"S": [{"exists": true}]}}}}"#, remove("a"), true),
            (r#"[{"eventName": ["REMOVE"]}, {"dynamodb": {"Keys": {"pk": {"S": ["b"]}}}}]"#, remove("a"), true),
            (r#"[{"eventName": ["MODIFY"]}, {"dynamodb": {"Keys": {"pk": {"S": ["b"]}}}}]"#, insert("b", "x"), true),
            (r#"[{"eventName": ["MODIFY"]}, {"dynamodb": {"Keys": {"pk": {"S": ["b"]}}}}]"#, insert("c", "x"), false),
            (r#"{"Filters": [{"Pattern": "{\"eventName\": [\"INSERT\"]}"}]}"#, insert("a", "x"), true),
            (r#"{"Filters": [{"Pattern": "{\"eventName\": [\"INSERT\"]}"}]}"#, remove("a"), false),
            (
                r#"{"dynamodb": {"NewImage": {"status": {"S": [{"equals-ignore-case": "SHIPPED"}]}}}}"#,
                insert("a", "Shipped"),
                true,
            ),
            (r##"{"dynamodb": {"Keys": {"pk": {"S": [{"suffix": "#9"}]}}}}"##, insert("o#9", "x"), true),
        ];
        for (text, event, want) in cases {
            let f = FilterCriteria::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(f.matches(&event), want, "{text} against {event}");
        }
    }

    #[test]
    fn malformed_filters_name_the_bad_part() {
        let cases: Vec<(&str, &str)> = vec![
            ("{\"eventName\": [\"INSERT\"", "invalid JSON at line 1, column 23"),
            ("\"INSERT\"", "at the top level: expected a JSON object, got \"INSERT\""),
            (r#"{"eventName": "INSERT"}"#, "at eventName: a leaf must be an array of matchers, got \"INSERT\""),
            (
                r#"{"dynamodb": {"Keys": {"pk": {"S": [{"prefx": "a"}]}}}}"#,
                "at dynamodb.Keys.pk.S: unknown matcher \"prefx\" (known: prefix",
            ),
            (
                r#"{"dynamodb": {"NewImage": {"status": {"S": [{"prefix": 5}]}}}}"#,
                "at dynamodb.NewImage.status.S: \"prefix\" needs a string, got 5",
            ),
            (r#"{"a": [{"prefix": "x"}], "b": {"prefix": "y"}}"#, "at b: matcher \"prefix\" must be inside an array"),
            (r#"{"a": []}"#, "at a: a leaf needs at least one matcher"),
            (r#"{"a": {}}"#, "at a: an object needs at least one field"),
            (r#"{"a": [["x"]]}"#, "at a: a matcher cannot be an array"),
            (r#"{"a": [{"numeric": [">", "x"]}]}"#, "at a: \"numeric\" needs an array of operator, number pairs"),
            (r#"{"a": [{"numeric": ["!=", 1]}]}"#, "at a: unknown numeric operator \"!=\""),
            (r#"{"a": [{"numeric": [">", 5, "<", 1]}]}"#, "at a: \"numeric\" lower bound is above the upper bound"),
            (r#"{"a": [{"exists": "yes"}]}"#, "at a: \"exists\" needs true or false"),
            (r#"{"a": [{"prefix": "x", "suffix": "y"}]}"#, "at a: a matcher object needs exactly one key"),
            (r#"[{"a": ["x"]}, {"b": "y"}]"#, "filter pattern 2: at b: a leaf must be an array"),
            ("[]", "no filter patterns"),
            (r#"[{"a":[1]},{"a":[1]},{"a":[1]},{"a":[1]},{"a":[1]},{"a":[1]}]"#, "6 filter patterns: at most 5"),
            (r#"{"Filters": [{"Pattern": "{\"a\": 1}"}]}"#, "at a: a leaf must be an array"),
            (r#"{"Filters": [{"pattern": "{}"}]}"#, "filter pattern 1: at Filters: expected {\"Pattern\""),
        ];
        for (text, want) in cases {
            let got = FilterCriteria::parse(text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(got.contains(want), "{text}: got {got:?}, want {want:?}");
        }
    }
}
