//! [`SequenceNumber`]: a stream position that orders numerically.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A record's position in its shard: a decimal string of up to 40 digits.
///
/// DynamoDB Streams sequence numbers are 21 to 40 digit decimal strings. They must be compared
/// as numbers: string order is wrong (`"9" > "10"`) and `u128` overflows at 40 digits. This type
/// keeps the string exactly as the stream gave it (DynamoDB Local wants its zero padding back)
/// and compares the significant digits by length, then digit by digit.
#[derive(Clone)]
pub struct SequenceNumber(Box<str>);

/// Why a string is not a [`SequenceNumber`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SequenceNumberError {
    /// The string was empty.
    #[error("sequence number is empty; expected a decimal string of 1 to 40 digits")]
    Empty,
    /// The string held something other than ASCII digits.
    #[error("sequence number {0:?} is not a decimal number; expected only the digits 0-9")]
    NotDecimal(String),
    /// The string had more than 40 significant digits.
    #[error("sequence number {0:?} has more than 40 digits")]
    TooLong(String),
}

impl SequenceNumber {
    /// The most significant digits a sequence number may have.
    pub const MAX_DIGITS: usize = 40;

    /// Parses a decimal string. Leading zeros are kept for display but ignored for ordering
    /// and equality.
    pub fn parse(s: &str) -> Result<Self, SequenceNumberError> {
        if s.is_empty() {
            return Err(SequenceNumberError::Empty);
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SequenceNumberError::NotDecimal(s.to_owned()));
        }
        if significant(s).len() > Self::MAX_DIGITS {
            return Err(SequenceNumberError::TooLong(s.to_owned()));
        }
        Ok(Self(s.into()))
    }

    /// Builds a sequence number from an integer (handy for simulators and tests).
    pub fn from_u128(n: u128) -> Self {
        Self(n.to_string().into_boxed_str())
    }

    /// The string exactly as parsed (with any zero padding).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without leading zeros.
    pub fn significant_digits(&self) -> &str {
        significant(&self.0)
    }
}

fn significant(s: &str) -> &str {
    let trimmed = s.trim_start_matches('0');
    if trimmed.is_empty() { "0" } else { trimmed }
}

impl PartialEq for SequenceNumber {
    fn eq(&self, other: &Self) -> bool {
        self.significant_digits() == other.significant_digits()
    }
}

impl Eq for SequenceNumber {}

impl std::hash::Hash for SequenceNumber {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.significant_digits().hash(state);
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        // Without leading zeros a longer string is a larger number, and equal lengths compare
        // digit by digit, which byte order does for ASCII digits.
        let (a, b) = (self.significant_digits(), other.significant_digits());
        a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes()))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for SequenceNumber {
    type Err = SequenceNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SequenceNumber({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sn(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn orders_numerically_not_lexically() {
        let cases = [
            ("9", "10", Ordering::Less),
            ("100000000000000000000", "99999999999999999999", Ordering::Greater),
            ("000123", "123", Ordering::Equal),
            ("9999999999999999999999999999999999999999", "1000000000000000000000000000000000000000", Ordering::Greater),
            ("000000000000000000017", "000000000000000000018", Ordering::Less),
            ("0", "0000", Ordering::Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(sn(a).cmp(&sn(b)), want, "{a} vs {b}");
            assert_eq!(sn(b).cmp(&sn(a)), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn forty_digits_fit_beyond_u128() {
        // u128::MAX has 39 digits; 40 nines do not fit in it.
        let big = sn("9999999999999999999999999999999999999999");
        assert!(big > SequenceNumber::from_u128(u128::MAX));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(SequenceNumber::parse(""), Err(SequenceNumberError::Empty));
        assert!(matches!(SequenceNumber::parse("12a"), Err(SequenceNumberError::NotDecimal(_))));
        assert!(matches!(SequenceNumber::parse("-1"), Err(SequenceNumberError::NotDecimal(_))));
        let long = "1".repeat(41);
        assert!(matches!(SequenceNumber::parse(&long), Err(SequenceNumberError::TooLong(_))));
    }

    #[test]
    fn keeps_padding_for_round_trips() {
        let padded = sn("000000000000000000042");
        assert_eq!(padded.to_string(), "000000000000000000042");
        assert_eq!(padded.significant_digits(), "42");
        assert_eq!(padded, sn("42"));
    }
}
