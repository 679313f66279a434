//! Exact conversion of `f64` parameters to rationals with power-of-two denominators.
//!
//! Every finite `f64` is exactly `m * 2^e` with an integer `m < 2^53`. The conversions here
//! keep that value exactly when the denominator fits in [`MAX_DEN`] and otherwise round it in
//! the requested direction, so that a privacy parameter can always be rounded against the user.

use crate::{Error, Result};

/// Largest denominator produced (2^64): numerators times 64-bit integers then fit in a `u128`.
pub(crate) const MAX_DEN: u128 = 1 << 64;
/// Largest numerator produced (2^64).
pub(crate) const MAX_NUM: u128 = 1 << 64;

/// Which way to round when the value cannot be represented exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    /// The rational is at most the value.
    Down,
    /// The rational is at least the value (for parameters where a larger value adds noise).
    #[allow(dead_code)]
    Up,
}

/// Mantissa and exponent of a finite, non-negative `x`: `x = m * 2^e` exactly.
fn decompose(x: f64) -> (u64, i32) {
    let bits = x.to_bits();
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    if exp_bits == 0 {
        // Subnormal (or zero): x = frac * 2^(-1074).
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp_bits - 1075)
    }
}

/// `x` (finite, >= 0) as `num / den` with `den` a power of two `<= MAX_DEN` and
/// `num <= MAX_NUM`, exact when possible, otherwise rounded as `round` says.
///
/// # Errors
/// [`Error::InvalidParameter`] naming `name` if `x` is negative or not finite, or
/// [`Error::Overflow`] if `x` exceeds `MAX_NUM`.
pub(crate) fn to_rational(name: &'static str, x: f64, round: Round) -> Result<(u128, u128)> {
    if !x.is_finite() || x < 0.0 {
        return Err(Error::invalid(
            name,
            x,
            "must be a finite, non-negative number",
        ));
    }
    if x == 0.0 {
        return Ok((0, 1));
    }
    let (m, e) = decompose(x);
    let m = u128::from(m);
    let (num, den) = if e >= 0 {
        // Integer value m * 2^e; m < 2^53 so e <= 11 keeps it below 2^64.
        if e > 11 || (m << e) > MAX_NUM {
            return Err(Error::Overflow {
                context: name,
                hint: format!(
                    "{name} = {x} is too large to sample exactly; use a value below 2^64"
                ),
            });
        }
        (m << e, 1)
    } else {
        let shift = e.unsigned_abs();
        if shift <= 64 {
            (m, 1u128 << shift)
        } else {
            // Keep denominator 2^64: num = m / 2^(shift - 64), rounded.
            let drop = shift - 64;
            let (q, lost) = if drop >= 128 {
                (0, m != 0)
            } else {
                (m >> drop, m & ((1u128 << drop) - 1) != 0)
            };
            let q = match round {
                Round::Down => q,
                Round::Up => q + u128::from(lost),
            };
            (q, MAX_DEN)
        }
    };
    Ok(reduce(num, den))
}

/// Divides out common factors of two (denominators are powers of two).
fn reduce(num: u128, den: u128) -> (u128, u128) {
    if num == 0 {
        return (0, 1);
    }
    let common = num.trailing_zeros().min(den.trailing_zeros());
    (num >> common, den >> common)
}

/// The value of `num / den` as an `f64`, rounded down.
pub(crate) fn to_f64_down(num: u128, den: u128) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let q = num as f64 / den as f64;
    q.next_down().next_down().max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values_round_trip() {
        for x in [1.0, 0.5, 3.0, 1.25, 1e-3, 0.1, 1.0986122886681098, 1000.0] {
            let (n, d) = to_rational("x", x, Round::Down).unwrap();
            assert_eq!(to_rational("x", x, Round::Up).unwrap(), (n, d));
            assert_eq!(n as f64 / d as f64, x, "{x}");
        }
        assert_eq!(to_rational("x", 0.0, Round::Up).unwrap(), (0, 1));
        assert_eq!(to_rational("x", 3.0, Round::Up).unwrap(), (3, 1));
        assert_eq!(to_rational("x", 0.25, Round::Up).unwrap(), (1, 4));
    }

    /// `num / den` scaled to the denominator 2^64 (all denominators divide it).
    fn over_max_den(x: f64, round: Round) -> u128 {
        let (n, d) = to_rational("x", x, round).unwrap();
        n * (MAX_DEN / d)
    }

    #[test]
    fn tiny_values_round_in_the_requested_direction() {
        // 1e-25 * 2^64 is about 1.8e-6: down rounds to 0, up to 1 / 2^64.
        assert_eq!(to_rational("x", 1e-25, Round::Down).unwrap(), (0, 1));
        assert_eq!(to_rational("x", 1e-25, Round::Up).unwrap(), (1, MAX_DEN));
        let x = 1e-12;
        let down = over_max_den(x, Round::Down);
        let up = over_max_den(x, Round::Up);
        assert_eq!(up, down + 1);
        let scaled = x * 2f64.powi(64);
        assert!((down as f64) <= scaled && (up as f64) >= scaled);
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e30] {
            assert!(to_rational("epsilon", bad, Round::Down).is_err(), "{bad}");
        }
    }

    #[test]
    fn float_report_is_below_the_rational() {
        assert!(to_f64_down(1, 3) < 1.0 / 3.0);
        assert!(to_f64_down(1, 3) > 0.333);
    }
}
