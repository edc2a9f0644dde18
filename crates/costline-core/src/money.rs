//! Exact money. Every amount is an integer number of pico-USD (10⁻¹² USD) in an `i128`, which
//! is exactly ClickHouse's `Decimal(38, 12)`. Prices are USD per million tokens with at most six
//! decimals, so a price per single token is a whole number of pico-USD and every cost is exact:
//! sums never drift, whatever their order.

use std::fmt;
use std::ops::{Add, AddAssign};

/// An amount of money in pico-USD (10⁻¹² USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PicoUsd(pub i128);

/// Pico-USD in one USD.
pub const PICO_PER_USD: i128 = 1_000_000_000_000;

/// Why a decimal amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("is not a decimal number")]
    NotDecimal,
    #[error("must be >= 0")]
    Negative,
    #[error("has more than {max} digits after the decimal point")]
    TooPrecise { max: u32 },
    #[error("is too large")]
    TooLarge,
}

impl PicoUsd {
    pub const ZERO: PicoUsd = PicoUsd(0);

    /// Parses a non-negative decimal literal (`"2.50"`, `"1e-6"`, `"0.000001234"`) into a whole
    /// number of units of `10^-scale`, refusing more precision than `scale` unless `round` is
    /// set (then it rounds half to even). Works on the text, never through a float.
    pub fn parse_scaled(text: &str, scale: u32, round: bool) -> Result<i128, AmountError> {
        let text = text.trim();
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(i) => {
                let exp: i32 = text[i + 1..].parse().map_err(|_| AmountError::NotDecimal)?;
                (&text[..i], exp)
            }
            None => (text, 0),
        };
        if let Some(negated) = mantissa.strip_prefix('-') {
            let is_zero = negated.chars().all(|c| c == '0' || c == '.');
            return if is_zero { Ok(0) } else { Err(AmountError::Negative) };
        }
        let mantissa = mantissa.strip_prefix('+').unwrap_or(mantissa);
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty())
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || !frac_part.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(AmountError::NotDecimal);
        }
        // value = digits × 10^(exponent − frac_len); we want value × 10^scale.
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let shift = i64::from(exponent) - frac_part.len() as i64 + i64::from(scale);
        if digits.is_empty() {
            return Ok(0);
        }
        if shift >= 0 {
            if digits.len() as i64 + shift > 36 {
                return Err(AmountError::TooLarge);
            }
            let base: i128 = digits.parse().map_err(|_| AmountError::TooLarge)?;
            return Ok(base * 10i128.pow(shift as u32));
        }
        let drop = (-shift) as usize;
        let (kept, dropped) = if drop >= digits.len() { ("", digits) } else { digits.split_at(digits.len() - drop) };
        if kept.len() > 36 {
            return Err(AmountError::TooLarge);
        }
        let kept_value: i128 = if kept.is_empty() { 0 } else { kept.parse().map_err(|_| AmountError::TooLarge)? };
        let dropped = dropped.trim_end_matches('0');
        if dropped.is_empty() {
            return Ok(kept_value);
        }
        if !round {
            return Err(AmountError::TooPrecise { max: scale });
        }
        // Round half to even on the dropped digits (padded to `drop` places).
        let first = dropped.as_bytes().first().copied().unwrap_or(b'0');
        let leading_zeros = drop.saturating_sub(digits.len());
        let round_up = if leading_zeros > 0 {
            false
        } else if first > b'5' {
            true
        } else if first < b'5' {
            false
        } else if dropped.len() > 1 {
            true
        } else {
            kept_value % 2 == 1
        };
        Ok(kept_value + i128::from(round_up))
    }

    /// The amount as a decimal USD string with all 12 decimals (`"0.000002500000"`).
    pub fn to_usd_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let unit = PICO_PER_USD as u128;
        format!("{sign}{}.{:012}", abs / unit, abs % unit)
    }

    /// The amount for people: dollars and cents, rounded half away from zero, with thousands
    /// separators (`"$1,234.57"`, `"-$0.50"`). Exact amounts go in data fields, never this.
    pub fn to_cents_display(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let pico_per_cent = (PICO_PER_USD / 100) as u128;
        let cents = (self.0.unsigned_abs() + pico_per_cent / 2) / pico_per_cent;
        let dollars = (cents / 100).to_string();
        let mut grouped = String::with_capacity(dollars.len() + dollars.len() / 3);
        for (i, digit) in dollars.chars().enumerate() {
            if i > 0 && (dollars.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        format!("{sign}${grouped}.{:02}", cents % 100)
    }
}

impl Add for PicoUsd {
    type Output = PicoUsd;
    fn add(self, rhs: PicoUsd) -> PicoUsd {
        PicoUsd(self.0 + rhs.0)
    }
}

impl AddAssign for PicoUsd {
    fn add_assign(&mut self, rhs: PicoUsd) {
        self.0 += rhs.0;
    }
}

impl fmt::Display for PicoUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.to_usd_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(PicoUsd::parse_scaled("2.50", 6, false), Ok(2_500_000));
        assert_eq!(PicoUsd::parse_scaled("0.000001", 6, false), Ok(1));
        assert_eq!(PicoUsd::parse_scaled("3", 6, false), Ok(3_000_000));
        assert_eq!(PicoUsd::parse_scaled(".5", 1, false), Ok(5));
        assert_eq!(PicoUsd::parse_scaled("1e-6", 6, false), Ok(1));
        assert_eq!(PicoUsd::parse_scaled("1.5E2", 0, false), Ok(150));
        assert_eq!(PicoUsd::parse_scaled("0", 12, false), Ok(0));
        assert_eq!(PicoUsd::parse_scaled("-0.0", 12, false), Ok(0));
    }

    #[test]
    fn refuses_bad_amounts() {
        assert_eq!(PicoUsd::parse_scaled("0.0000001", 6, false), Err(AmountError::TooPrecise { max: 6 }));
        assert_eq!(PicoUsd::parse_scaled("-1", 6, false), Err(AmountError::Negative));
        assert_eq!(PicoUsd::parse_scaled("abc", 6, false), Err(AmountError::NotDecimal));
        assert_eq!(PicoUsd::parse_scaled("1.2.3", 6, false), Err(AmountError::NotDecimal));
        assert_eq!(PicoUsd::parse_scaled("1e40", 12, false), Err(AmountError::TooLarge));
    }

    #[test]
    fn rounds_half_to_even_when_asked() {
        assert_eq!(PicoUsd::parse_scaled("0.0000000000005", 12, true), Ok(0));
        assert_eq!(PicoUsd::parse_scaled("0.0000000000015", 12, true), Ok(2));
        assert_eq!(PicoUsd::parse_scaled("0.00000000000051", 12, true), Ok(1));
        assert_eq!(PicoUsd::parse_scaled("0.0000000000004", 12, true), Ok(0));
        assert_eq!(PicoUsd::parse_scaled("1e-20", 12, true), Ok(0));
        assert_eq!(PicoUsd::parse_scaled("0.1", 12, true), Ok(100_000_000_000));
    }

    #[test]
    fn formats_usd() {
        assert_eq!(PicoUsd(2_500_000).to_usd_string(), "0.000002500000");
        assert_eq!(PicoUsd(12 * PICO_PER_USD + 5).to_usd_string(), "12.000000000005");
    }

    #[test]
    fn formats_cents_for_people() {
        let cents = |pico: i128| PicoUsd(pico).to_cents_display();
        assert_eq!(cents(5_005_000_000_000), "$5.01");
        assert_eq!(cents(5_004_999_999_999), "$5.00");
        assert_eq!(cents(0), "$0.00");
        assert_eq!(cents(4_999_999), "$0.00");
        assert_eq!(cents(-500_000_000_000), "-$0.50");
        assert_eq!(cents(1_234_567 * PICO_PER_USD + 890_000_000_000), "$1,234,567.89");
        assert_eq!(cents(100_000 * PICO_PER_USD), "$100,000.00");
        assert_eq!(cents(999_995_000_000_000), "$1,000.00");
    }
}
