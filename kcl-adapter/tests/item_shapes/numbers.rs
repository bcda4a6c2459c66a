//! Numbers as DynamoDB takes and returns them: up to 38 significant digits, magnitudes from
//! 1E-130 to 9.99…E+125; written in scientific, integer-mantissa or plain notation, returned
//! (at the top level of an item) as plain decimal without needless zeros.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A number as DynamoDB stores it: `-`? digits × 10^scale, digits without leading or trailing
/// zeros (empty for zero).
#[derive(Clone, Debug)]
pub(crate) struct Number {
    negative: bool,
    digits: String,
    scale: i32,
}

impl Number {
    /// DynamoDB's rendering: plain decimal, no exponent, no needless zeros, `0` for zero.
    pub(crate) fn canonical(&self) -> String {
        if self.digits.is_empty() {
            return "0".to_owned();
        }
        let sign = if self.negative { "-" } else { "" };
        let len = self.digits.len() as i32;
        if self.scale >= 0 {
            return format!("{sign}{}{}", self.digits, "0".repeat(self.scale as usize));
        }
        let point = len + self.scale;
        if point > 0 {
            let (int, frac) = self.digits.split_at(point as usize);
            format!("{sign}{int}.{frac}")
        } else {
            format!("{sign}0.{}{}", "0".repeat((-point) as usize), self.digits)
        }
    }

    /// One of the ways to write it.
    pub(crate) fn written(&self, rng: &mut SmallRng) -> String {
        let sign = if self.negative { "-" } else { "" };
        if self.digits.is_empty() {
            return ["0", "-0", "0.000", "0E+5", "00"][rng.random_range(0..5)].to_owned();
        }
        let adjusted = self.digits.len() as i32 - 1 + self.scale;
        let e = ["E", "e", "E+"][rng.random_range(0..3)];
        let exp = |x: i32| if x < 0 || e == "e" { format!("{}{x}", &e[..1]) } else { format!("{e}{x}") };
        match rng.random_range(0..3) {
            0 => {
                let (first, rest) = self.digits.split_at(1);
                let point = if rest.is_empty() { String::new() } else { format!(".{rest}") };
                format!("{sign}{first}{point}{}", exp(adjusted))
            }
            1 => format!("{sign}{}{}", self.digits, exp(self.scale)),
            _ => {
                // Plain, with leading zeros and trailing fractional zeros, while the written
                // digits stay within the 38 DynamoDB takes.
                let plain = self.canonical();
                let written_digits = self.digits.len() as i32 + self.scale.max(0);
                if written_digits > 38 {
                    return format!("{sign}{}{}", self.digits, exp(self.scale));
                }
                let body = plain.trim_start_matches('-');
                let pad = 38 - written_digits as usize;
                let zeros = "0".repeat(rng.random_range(0..=pad.min(3)));
                let trailing =
                    if body.contains('.') { "0".repeat(rng.random_range(0..=pad.min(2))) } else { String::new() };
                format!("{sign}{zeros}{body}{trailing}")
            }
        }
    }

    /// A random number: 1 to 38 digits, its leading digit at 10^-130 to 10^125.
    pub(crate) fn random(rng: &mut SmallRng) -> Self {
        if rng.random_ratio(1, 30) {
            return Number { negative: false, digits: String::new(), scale: 0 };
        }
        let len = if rng.random_bool(0.3) { 38 } else { rng.random_range(1..=38) };
        let mut digits: String = (0..len).map(|i| digit(rng, i == 0)).collect();
        while digits.ends_with('0') {
            digits.pop();
        }
        let adjusted = match rng.random_range(0..4) {
            0 => -130,
            1 => 125,
            _ => rng.random_range(-130..=125),
        };
        let scale = adjusted - (digits.len() as i32 - 1);
        Number { negative: rng.random_bool(0.4), digits, scale }
    }
}

fn digit(rng: &mut SmallRng, nonzero: bool) -> char {
    char::from(b'0' + if nonzero { rng.random_range(1..=9) } else { rng.random_range(0..=9) })
}

/// DynamoDB's rendering of a written number, for the expected side.
pub(crate) fn canonical(written: &str) -> String {
    let (negative, rest) = match written.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, written.strip_prefix('+').unwrap_or(written)),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], rest[at + 1..].parse::<i32>().unwrap_or_else(|e| panic!("{written}: {e}"))),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{int}{frac}");
    let mut scale = exp - frac.len() as i32;
    let mut digits = all.trim_start_matches('0').to_owned();
    while digits.ends_with('0') {
        digits.pop();
        scale += 1;
    }
    Number { negative: negative && !digits.is_empty(), digits, scale }.canonical()
}

#[test]
fn numbers_normalise_as_dynamodb_local_renders_them() {
    // Observed with PutItem and GetItem (tools/dynamodb-local/FACTS.md).
    let cases = [
        ("1.50", "1.5"),
        ("0001", "1"),
        ("1E+2", "100"),
        ("1e2", "100"),
        ("-0", "0"),
        ("0.0", "0"),
        ("+5", "5"),
        ("0.000123", "0.000123"),
        ("-1.000e-100", &format!("-0.{}1", "0".repeat(99))),
        ("1e-130", &format!("0.{}1", "0".repeat(129))),
        ("9.9999999999999999999999999999999999999E+125", &format!("{}{}", "9".repeat(38), "0".repeat(88))),
        ("1234567890123456789012345678901234567.8e-10", "123456789012345678901234567.89012345678"),
        ("1.0000000000000000000000000000000000001E+50", &format!("1{}1{}", "0".repeat(36), "0".repeat(13))),
    ];
    for (written, want) in cases {
        assert_eq!(canonical(written), want, "{written}");
    }
    // Every notation the generator writes normalises to the number it stands for.
    let mut rng = SmallRng::seed_from_u64(7);
    for _ in 0..10_000 {
        let number = Number::random(&mut rng);
        let written = number.written(&mut rng);
        assert_eq!(canonical(&written), number.canonical(), "{written} for {number:?}");
    }
}
