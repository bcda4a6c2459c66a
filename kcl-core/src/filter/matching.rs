//! The parsed pattern tree and how it is matched against an event: pure functions over
//! `serde_json::Value`.

use serde_json::Value;

/// A field's pattern: nested fields (all must match), or a leaf of matchers (any may match).
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Node {
    /// Nested fields, by name.
    Fields(Vec<(String, Node)>),
    /// Matchers, OR-ed.
    Leaf(Vec<Matcher>),
}

/// One matcher of a leaf.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Matcher {
    /// Equal to this string, number (compared as numbers), bool or null.
    Exact(Value),
    /// A string starting with this.
    Prefix(String),
    /// A string ending with this.
    Suffix(String),
    /// A string equal to this, ignoring case (held lower-cased).
    EqualsIgnoreCase(String),
    /// The field is present with a leaf value (`true`) or is absent (`false`).
    Exists(bool),
    /// A number, or a string holding one, in this range.
    Numeric(Range),
    /// Anything but these.
    AnythingBut(AnythingBut),
}

/// What an `anything-but` excludes.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum AnythingBut {
    /// These strings and numbers.
    Values(Vec<Value>),
    /// Strings starting with this.
    Prefix(String),
    /// Strings ending with this.
    Suffix(String),
}

/// A numeric range; each bound with whether it is inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub(super) struct Range {
    pub(super) lower: Option<(f64, bool)>,
    pub(super) upper: Option<(f64, bool)>,
}

impl Range {
    fn contains(&self, x: f64) -> bool {
        let above = match self.lower {
            Some((b, true)) => x >= b,
            Some((b, false)) => x > b,
            None => true,
        };
        let below = match self.upper {
            Some((b, true)) => x <= b,
            Some((b, false)) => x < b,
            None => true,
        };
        above && below
    }
}

/// Whether every field of `fields` matches `event` (an object; anything else has no fields).
pub(super) fn fields_match(fields: &[(String, Node)], event: Option<&Value>) -> bool {
    match event {
        // An array of objects matches when one element matches all the fields.
        Some(Value::Array(items)) if !items.is_empty() => items.iter().any(|item| fields_match(fields, Some(item))),
        Some(Value::Object(map)) => fields.iter().all(|(name, node)| node_matches(node, map.get(name))),
        _ => fields.iter().all(|(_, node)| node_matches(node, None)),
    }
}

fn node_matches(node: &Node, value: Option<&Value>) -> bool {
    match node {
        Node::Fields(fields) => fields_match(fields, value),
        Node::Leaf(matchers) => matchers.iter().any(|m| m.matches(value)),
    }
}

/// A leaf value, as Lambda (and EventBridge) see events: anything but an object.
fn is_leaf(value: &Value) -> bool {
    !value.is_object()
}

impl Matcher {
    /// Whether the field's value (`None`: absent) matches; an array matches when an element
    /// does.
    fn matches(&self, value: Option<&Value>) -> bool {
        if let Matcher::Exists(want) = self {
            let exists = match value {
                None => false,
                Some(Value::Array(items)) => items.iter().any(is_leaf),
                Some(v) => is_leaf(v),
            };
            return exists == *want;
        }
        match value {
            None | Some(Value::Object(_)) => false,
            Some(Value::Array(items)) => items.iter().any(|item| !item.is_array() && self.matches(Some(item))),
            Some(scalar) => self.matches_scalar(scalar),
        }
    }

    fn matches_scalar(&self, value: &Value) -> bool {
        match self {
            Matcher::Exact(want) => scalar_eq(want, value),
            Matcher::Prefix(p) => value.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            Matcher::Suffix(p) => value.as_str().is_some_and(|s| s.ends_with(p.as_str())),
            Matcher::EqualsIgnoreCase(lower) => value.as_str().is_some_and(|s| s.to_lowercase() == *lower),
            Matcher::Numeric(range) => as_number(value).is_some_and(|x| range.contains(x)),
            Matcher::AnythingBut(AnythingBut::Values(values)) => !values.iter().any(|v| scalar_eq(v, value)),
            Matcher::AnythingBut(AnythingBut::Prefix(p)) => value.as_str().is_some_and(|s| !s.starts_with(p.as_str())),
            Matcher::AnythingBut(AnythingBut::Suffix(p)) => value.as_str().is_some_and(|s| !s.ends_with(p.as_str())),
            // Handled in `matches`, before any value is looked at.
            Matcher::Exists(_) => false,
        }
    }
}

/// Equal JSON scalars; numbers compare as numbers (`5` equals `5.0`).
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A number, or a string holding a finite one (DynamoDB JSON's `{"N": "42"}`).
fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        // Rust also parses "inf" and "NaN"; those are not DynamoDB numbers.
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn range(lower: Option<(f64, bool)>, upper: Option<(f64, bool)>) -> Matcher {
        Matcher::Numeric(Range { lower, upper })
    }

    #[test]
    fn matchers_against_values() {
        let s = |v: &str| Matcher::Prefix(v.to_owned());
        let cases: Vec<(Matcher, Option<Value>, bool)> = vec![
            (Matcher::Exact(json!("a")), Some(json!("a")), true),
            (Matcher::Exact(json!("a")), Some(json!("A")), false),
            (Matcher::Exact(json!(5)), Some(json!(5.0)), true),
            (Matcher::Exact(json!(5)), Some(json!("5")), false),
            (Matcher::Exact(json!(true)), Some(json!(true)), true),
            (Matcher::Exact(Value::Null), Some(Value::Null), true),
            (Matcher::Exact(Value::Null), None, false),
            (Matcher::Exact(json!("a")), Some(json!(["x", "a"])), true),
            (Matcher::Exact(json!("a")), Some(json!(["x"])), false),
            (Matcher::Exact(json!("a")), Some(json!({"a": 1})), false),
            (s("ab"), Some(json!("abc")), true),
            (s("ab"), Some(json!("cab")), false),
            (s("1"), Some(json!(12)), false),
            (Matcher::Suffix(".png".into()), Some(json!("x.png")), true),
            (Matcher::Suffix(".png".into()), Some(json!("x.jpg")), false),
            (Matcher::EqualsIgnoreCase("active".into()), Some(json!("AcTiVe")), true),
            (Matcher::EqualsIgnoreCase("active".into()), Some(json!("inactive")), false),
            (Matcher::Exists(true), Some(json!("x")), true),
            (Matcher::Exists(true), Some(Value::Null), true),
            (Matcher::Exists(true), None, false),
            (Matcher::Exists(true), Some(json!({"S": "x"})), false),
            (Matcher::Exists(true), Some(json!([])), false),
            (Matcher::Exists(false), None, true),
            (Matcher::Exists(false), Some(json!({"S": "x"})), true),
            (Matcher::Exists(false), Some(json!(0)), false),
            (range(Some((0.0, false)), Some((5.0, true))), Some(json!(5)), true),
            (range(Some((0.0, false)), Some((5.0, true))), Some(json!(0)), false),
            (range(Some((0.0, false)), Some((5.0, true))), Some(json!("4.5")), true),
            (range(Some((0.0, false)), Some((5.0, true))), Some(json!("1E+1")), false),
            (range(Some((0.0, false)), None), Some(json!("inf")), false),
            (range(Some((0.0, false)), None), Some(json!("NaN")), false),
            (range(Some((0.0, false)), None), Some(json!("abc")), false),
            (range(Some((0.0, false)), None), Some(json!(["-1", "3"])), true),
            (range(Some((7.0, true)), Some((7.0, true))), Some(json!(7)), true),
            (range(None, Some((7.0, false))), Some(json!(7)), false),
            (Matcher::AnythingBut(AnythingBut::Values(vec![json!("a"), json!(1)])), Some(json!("b")), true),
            (Matcher::AnythingBut(AnythingBut::Values(vec![json!("a"), json!(1)])), Some(json!("a")), false),
            (Matcher::AnythingBut(AnythingBut::Values(vec![json!("a"), json!(1)])), Some(json!(1.0)), false),
            (Matcher::AnythingBut(AnythingBut::Values(vec![json!("a")])), None, false),
            (Matcher::AnythingBut(AnythingBut::Prefix("tmp".into())), Some(json!("tmp1")), false),
            (Matcher::AnythingBut(AnythingBut::Prefix("tmp".into())), Some(json!("prod")), true),
            (Matcher::AnythingBut(AnythingBut::Suffix("-x".into())), Some(json!("a-x")), false),
            (Matcher::AnythingBut(AnythingBut::Suffix("-x".into())), Some(json!("a-y")), true),
        ];
        for (matcher, value, want) in cases {
            assert_eq!(matcher.matches(value.as_ref()), want, "{matcher:?} against {value:?}");
        }
    }

    #[test]
    fn fields_are_anded_and_arrays_of_objects_match_per_element() {
        let leaf = |v: Value| Node::Leaf(vec![Matcher::Exact(v)]);
        let both = vec![("a".to_owned(), leaf(json!(1))), ("b".to_owned(), leaf(json!(2)))];
        let absent = vec![("a".to_owned(), Node::Leaf(vec![Matcher::Exists(false)]))];
        type Fields = [(String, Node)];
        let cases: Vec<(&Fields, Value, bool)> = vec![
            (&both, json!({"a": 1, "b": 2}), true),
            (&both, json!({"a": 1, "b": 3}), false),
            (&both, json!({"a": 1}), false),
            (&both, json!([{"a": 1, "b": 3}, {"a": 1, "b": 2}]), true),
            (&both, json!([{"a": 1}, {"b": 2}]), false),
            (&both, json!("a"), false),
            (&absent, json!({}), true),
            (&absent, json!("x"), true),
            (&absent, json!({"a": 1}), false),
        ];
        for (fields, event, want) in cases {
            assert_eq!(fields_match(fields, Some(&event)), want, "{event}");
        }
    }
}
