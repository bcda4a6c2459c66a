//! Long text cut to a bound, saying how much was cut: errors and raw records in messages and
//! logs stay bounded, and a reader can tell a cut text from a whole one.

use std::borrow::Cow;

/// What [`clip`] appends after the number of bytes it cut.
const CUT_SUFFIX: &str = " more bytes cut]";

/// `s` when it is at most `max` bytes long; otherwise its first `max` bytes (fewer, to end at
/// a character boundary) followed by `… [N more bytes cut]`.
pub(crate) fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… [{}{CUT_SUFFIX}", &s[..end], s.len() - end))
}

/// Whether `s` ends the way [`clip`] ends a text it cut.
pub(crate) fn is_clipped(s: &str) -> bool {
    s.ends_with(CUT_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_at_character_boundaries_and_says_so() {
        let cases = [
            ("short", 10, "short"),
            ("exactly10!", 10, "exactly10!"),
            ("0123456789ab", 10, "0123456789… [2 more bytes cut]"),
            // "é" is two bytes: a cut inside it moves back before it.
            ("aé", 2, "a… [2 more bytes cut]"),
            ("", 0, ""),
            ("x", 0, "… [1 more bytes cut]"),
        ];
        for (s, max, want) in cases {
            let got = clip(s, max);
            assert_eq!(got, want, "{s:?} to {max}");
            assert_eq!(is_clipped(&got), want != s, "{got:?}");
        }
    }
}
