//! [`FilterError`]: why a filter pattern was rejected, naming the bad part by its JSON path.

use serde_json::Value;

use super::MAX_FILTER_PATTERNS;

/// The matcher names a leaf array may hold, as listed in error messages.
pub(super) const KNOWN_MATCHERS: &str = "prefix, suffix, anything-but, numeric, exists, equals-ignore-case";

/// A filter pattern or a set of them could not be parsed.
///
/// The message names the pattern (1-based, when the input held several), the JSON path of
/// the bad part, and what is wrong with it, for example
/// `filter pattern 2: at dynamodb.NewImage.status.S: "prefix" needs a string, got 5`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The text is not valid JSON.
    #[error("{}invalid JSON at line {line}, column {column}: {message}", in_pattern(*.pattern))]
    Json {
        /// Which pattern (1-based), when the input held several.
        pattern: Option<usize>,
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// Valid JSON, but not a valid pattern.
    #[error("{}at {}: {problem}", in_pattern(*.pattern), show_path(.path))]
    Pattern {
        /// Which pattern (1-based), when the input held several.
        pattern: Option<usize>,
        /// Dotted JSON path of the bad part (`dynamodb.NewImage.status.S`); empty for the
        /// pattern itself.
        path: String,
        /// What is wrong there.
        problem: PatternProblem,
    },
    /// An empty list of patterns.
    #[error("no filter patterns: give at least one, or configure no filter to deliver every record")]
    NoPatterns,
    /// More patterns than [`MAX_FILTER_PATTERNS`].
    #[error("{count} filter patterns: at most {MAX_FILTER_PATTERNS} are allowed (Lambda's limit per event source)")]
    TooManyPatterns {
        /// How many were given.
        count: usize,
    },
}

impl FilterError {
    /// Which pattern (1-based) the error is in, when the input held several.
    pub fn pattern_index(&self) -> Option<usize> {
        match self {
            FilterError::Json { pattern, .. } | FilterError::Pattern { pattern, .. } => *pattern,
            FilterError::NoPatterns | FilterError::TooManyPatterns { .. } => None,
        }
    }

    /// The JSON path of the bad part, for [`FilterError::Pattern`].
    pub fn path(&self) -> Option<&str> {
        match self {
            FilterError::Pattern { path, .. } => Some(path),
            _ => None,
        }
    }

    /// The same error, placed in pattern `index` (1-based) of several.
    pub(super) fn in_pattern(mut self, index: usize) -> Self {
        if let FilterError::Json { pattern, .. } | FilterError::Pattern { pattern, .. } = &mut self {
            *pattern = Some(index);
        }
        self
    }

    /// A JSON syntax error, with its position.
    pub(super) fn json(e: &serde_json::Error) -> Self {
        let text = e.to_string();
        // serde_json appends " at line L column C"; the position is reported on its own.
        let message = match text.rfind(" at line ") {
            Some(at) => text[..at].to_owned(),
            None => text,
        };
        FilterError::Json { pattern: None, line: e.line(), column: e.column(), message }
    }
}

/// What is wrong with one part of a pattern.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternProblem {
    /// The pattern (or a `Filters` entry) is not a JSON object.
    #[error("expected {want}, got {got}")]
    Expected {
        /// What was expected there.
        want: &'static str,
        /// The value found, shortened.
        got: String,
    },
    /// An object with no fields (it would match every event).
    #[error("an object needs at least one field")]
    EmptyObject,
    /// A field's value is neither an object of fields nor an array of matchers.
    #[error("a leaf must be an array of matchers, got {got}")]
    LeafNotArray {
        /// The value found, shortened.
        got: String,
    },
    /// A matcher written straight as a field's value, without the array around it.
    #[error("matcher \"{name}\" must be inside an array, like [{{\"{name}\": ...}}]")]
    MatcherOutsideArray {
        /// The matcher's name.
        name: String,
    },
    /// An empty leaf array (it would match nothing).
    #[error("a leaf needs at least one matcher (an empty array matches nothing)")]
    EmptyLeaf,
    /// An array inside a leaf array.
    #[error("a matcher cannot be an array, got {got}")]
    NestedArray {
        /// The value found, shortened.
        got: String,
    },
    /// A matcher object whose key is not a known matcher.
    #[error("unknown matcher \"{name}\" (known: {KNOWN_MATCHERS})")]
    UnknownMatcher {
        /// The key found.
        name: String,
    },
    /// A matcher object with other than one key.
    #[error("a matcher object needs exactly one key ({KNOWN_MATCHERS}), got {count}")]
    MatcherKeys {
        /// How many keys it had.
        count: usize,
    },
    /// A matcher's argument has the wrong type.
    #[error("\"{matcher}\" needs {want}, got {got}")]
    WrongType {
        /// The matcher.
        matcher: &'static str,
        /// What it needs.
        want: &'static str,
        /// The value found, shortened.
        got: String,
    },
    /// A `numeric` operator other than `=`, `<`, `<=`, `>`, `>=`.
    #[error("unknown numeric operator \"{op}\" (known: =, <, <=, >, >=)")]
    NumericOperator {
        /// The operator found.
        op: String,
    },
    /// `numeric` bounds that do not form one range.
    #[error("\"numeric\" {reason}")]
    NumericBounds {
        /// Why not.
        reason: &'static str,
    },
}

impl PatternProblem {
    /// [`PatternProblem::WrongType`] for `got`.
    pub(super) fn wrong_type(matcher: &'static str, want: &'static str, got: &Value) -> Self {
        PatternProblem::WrongType { matcher, want, got: shorten(got) }
    }
}

/// `value` as compact JSON, cut to 40 characters.
pub(super) fn shorten(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 40 {
        return text;
    }
    let cut: String = text.chars().take(37).collect();
    format!("{cut}...")
}

fn in_pattern(pattern: Option<usize>) -> String {
    pattern.map(|i| format!("filter pattern {i}: ")).unwrap_or_default()
}

fn show_path(path: &str) -> &str {
    if path.is_empty() { "the top level" } else { path }
}
