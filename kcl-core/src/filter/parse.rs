//! Parsing Lambda's filter-pattern syntax into the [`Node`] tree, with errors that name the
//! bad part by its JSON path.

use serde_json::{Map, Value};

use super::error::{FilterError, PatternProblem, shorten};
use super::matching::{AnythingBut, Matcher, Node, Range};

/// Parses one pattern (a JSON object).
pub(super) fn pattern(value: &Value) -> Result<Vec<(String, Node)>, FilterError> {
    match value {
        Value::Object(map) => fields(map, ""),
        other => Err(at("", PatternProblem::Expected { want: "a JSON object", got: shorten(other) })),
    }
}

fn at(path: &str, problem: PatternProblem) -> FilterError {
    FilterError::Pattern { pattern: None, path: path.to_owned(), problem }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

const MATCHERS: [&str; 6] = ["prefix", "suffix", "anything-but", "numeric", "exists", "equals-ignore-case"];

fn fields(map: &Map<String, Value>, path: &str) -> Result<Vec<(String, Node)>, FilterError> {
    if map.is_empty() {
        return Err(at(path, PatternProblem::EmptyObject));
    }
    map.iter()
        .map(|(name, value)| {
            let here = join(path, name);
            let node = match value {
                Value::Object(inner) => {
                    if let Some(matcher) = inner.keys().find(|k| MATCHERS.contains(&k.as_str())) {
                        return Err(at(&here, PatternProblem::MatcherOutsideArray { name: matcher.clone() }));
                    }
                    Node::Fields(fields(inner, &here)?)
                }
                Value::Array(items) => Node::Leaf(leaf(items, &here)?),
                other => return Err(at(&here, PatternProblem::LeafNotArray { got: shorten(other) })),
            };
            Ok((name.clone(), node))
        })
        .collect()
}

fn leaf(items: &[Value], path: &str) -> Result<Vec<Matcher>, FilterError> {
    if items.is_empty() {
        return Err(at(path, PatternProblem::EmptyLeaf));
    }
    items
        .iter()
        .map(|item| match item {
            Value::Array(_) => Err(at(path, PatternProblem::NestedArray { got: shorten(item) })),
            Value::Object(m) => matcher(m, path),
            scalar => Ok(Matcher::Exact(scalar.clone())),
        })
        .collect()
}

fn matcher(m: &Map<String, Value>, path: &str) -> Result<Matcher, FilterError> {
    if m.len() != 1 {
        return Err(at(path, PatternProblem::MatcherKeys { count: m.len() }));
    }
    let Some((name, arg)) = m.iter().next() else {
        return Err(at(path, PatternProblem::MatcherKeys { count: 0 }));
    };
    let wrong = |matcher: &'static str, want: &'static str| at(path, PatternProblem::wrong_type(matcher, want, arg));
    match name.as_str() {
        "prefix" => arg.as_str().map(|s| Matcher::Prefix(s.to_owned())).ok_or_else(|| wrong("prefix", "a string")),
        "suffix" => arg.as_str().map(|s| Matcher::Suffix(s.to_owned())).ok_or_else(|| wrong("suffix", "a string")),
        "equals-ignore-case" => arg
            .as_str()
            .map(|s| Matcher::EqualsIgnoreCase(s.to_lowercase()))
            .ok_or_else(|| wrong("equals-ignore-case", "a string")),
        "exists" => arg.as_bool().map(Matcher::Exists).ok_or_else(|| wrong("exists", "true or false")),
        "numeric" => numeric(arg, path).map(Matcher::Numeric),
        "anything-but" => anything_but(arg, path).map(Matcher::AnythingBut),
        other => Err(at(path, PatternProblem::UnknownMatcher { name: other.to_owned() })),
    }
}

fn anything_but(arg: &Value, path: &str) -> Result<AnythingBut, FilterError> {
    let want = "a string, a number, an array of them, or {\"prefix\"|\"suffix\": string}";
    let wrong = || at(path, PatternProblem::wrong_type("anything-but", want, arg));
    match arg {
        Value::String(_) | Value::Number(_) => Ok(AnythingBut::Values(vec![arg.clone()])),
        Value::Array(items) if !items.is_empty() && items.iter().all(|v| v.is_string() || v.is_number()) => {
            Ok(AnythingBut::Values(items.clone()))
        }
        Value::Object(m) if m.len() == 1 => match m.iter().next() {
            Some((k, Value::String(s))) if k == "prefix" => Ok(AnythingBut::Prefix(s.clone())),
            Some((k, Value::String(s))) if k == "suffix" => Ok(AnythingBut::Suffix(s.clone())),
            _ => Err(wrong()),
        },
        _ => Err(wrong()),
    }
}

fn numeric(arg: &Value, path: &str) -> Result<Range, FilterError> {
    let wrong = || at(path, PatternProblem::wrong_type("numeric", "an array of operator, number pairs", arg));
    let Some(items) = arg.as_array().filter(|a| !a.is_empty() && a.len() % 2 == 0) else { return Err(wrong()) };
    let bounds = |reason: &'static str| at(path, PatternProblem::NumericBounds { reason });
    let mut range = Range::default();
    for pair in items.chunks(2) {
        let Some(op) = pair[0].as_str() else { return Err(wrong()) };
        let Some(n) = pair[1].as_f64() else { return Err(wrong()) };
        match op {
            "=" => {
                if range.lower.is_some() || range.upper.is_some() {
                    return Err(bounds("\"=\" cannot be combined with other bounds"));
                }
                range.lower = Some((n, true));
                range.upper = Some((n, true));
            }
            ">" | ">=" => {
                if range.lower.is_some() {
                    return Err(bounds("has two lower bounds"));
                }
                range.lower = Some((n, op == ">="));
            }
            "<" | "<=" => {
                if range.upper.is_some() {
                    return Err(bounds("has two upper bounds"));
                }
                range.upper = Some((n, op == "<="));
            }
            other => return Err(at(path, PatternProblem::NumericOperator { op: other.to_owned() })),
        }
    }
    if let (Some((lo, _)), Some((hi, _))) = (range.lower, range.upper)
        && lo > hi
    {
        return Err(bounds("lower bound is above the upper bound"));
    }
    Ok(range)
}
