//! The exact (analytic) privacy curve of the Gaussian mechanism (Balle and Wang 2018,
//! "Improving the Gaussian Mechanism for Differential Privacy", Theorem 8).

use crate::error::{check_non_negative, check_open_unit, check_positive};
use crate::math::{ln_normal_cdf, round_up};
use crate::{Error, Result};

/// Relative safety margin on delta: a candidate epsilon (or sigma) is accepted only if its
/// computed delta, inflated by this factor, is still at most the target. It covers the
/// floating-point error of the log-space evaluation of the curve.
const DELTA_SAFETY: f64 = 1.0 + 1e-9;

/// `ln delta(epsilon)` of the Gaussian mechanism with noise multiplier `s` (sensitivity 1):
/// `delta(eps) = Phi(1/(2s) - eps s) - e^eps Phi(-1/(2s) - eps s)`, evaluated in log space.
pub(crate) fn gaussian_ln_delta(s: f64, eps: f64) -> f64 {
    let t = eps * s + 1.0 / (2.0 * s);
    let x = ln_normal_cdf(1.0 / s - t);
    let y = eps + ln_normal_cdf(-t);
    if y < x {
        x + (-(y - x).exp()).ln_1p()
    } else {
        f64::NEG_INFINITY
    }
}

/// The delta of the Gaussian mechanism with noise multiplier `sigma` at `epsilon` (the exact
/// privacy curve, Balle and Wang 2018).
///
/// # Errors
/// [`Error::InvalidParameter`] if `sigma` is not finite and positive or `epsilon` is negative
/// or not finite.
pub fn gaussian_delta(sigma: f64, epsilon: f64) -> Result<f64> {
    check_positive("sigma", sigma)?;
    check_non_negative("epsilon", epsilon)?;
    Ok(round_up(gaussian_ln_delta(sigma, epsilon).exp()).min(1.0))
}

fn meets(s: f64, eps: f64, ln_target: f64) -> bool {
    gaussian_ln_delta(s, eps) + DELTA_SAFETY.ln() <= ln_target
}

/// See [`super::gaussian_epsilon`].
pub(crate) fn epsilon(sigma: f64, delta: f64) -> Result<f64> {
    check_positive("sigma", sigma)?;
    check_open_unit("delta", delta)?;
    let ln_target = delta.ln();
    if meets(sigma, 0.0, ln_target) {
        return Ok(0.0);
    }
    let mut lo = 0.0;
    let mut hi = 1.0;
    while !meets(sigma, hi, ln_target) {
        lo = hi;
        hi *= 2.0;
        if hi > 1e15 {
            return Err(Error::NoSolution(format!(
                "no epsilon below 1e15 gives delta = {delta} with sigma = {sigma}; use more noise"
            )));
        }
    }
    // Invariant: lo fails, hi meets the target.
    for _ in 0..200 {
        if hi - lo <= 1e-13 * hi {
            break;
        }
        let mid = 0.5 * (lo + hi);
        if meets(sigma, mid, ln_target) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(round_up(hi))
}

/// See [`super::analytic_gaussian_sigma`].
pub(crate) fn sigma(epsilon: f64, delta: f64, sensitivity: f64) -> Result<f64> {
    check_positive("epsilon", epsilon)?;
    check_open_unit("delta", delta)?;
    check_positive("sensitivity", sensitivity)?;
    let ln_target = delta.ln();
    // Find a bracket [lo, hi] in noise multiplier: lo fails, hi meets.
    let mut hi = 1.0;
    let mut lo;
    if meets(hi, epsilon, ln_target) {
        lo = hi / 2.0;
        while meets(lo, epsilon, ln_target) {
            hi = lo;
            lo /= 2.0;
            if lo < 1e-300 {
                return Ok(round_up(hi * sensitivity));
            }
        }
    } else {
        lo = hi;
        hi *= 2.0;
        while !meets(hi, epsilon, ln_target) {
            lo = hi;
            hi *= 2.0;
            if hi > 1e300 {
                return Err(Error::NoSolution(format!(
                    "no noise multiplier gives (epsilon = {epsilon}, delta = {delta})"
                )));
            }
        }
    }
    for _ in 0..200 {
        if hi - lo <= 1e-13 * hi {
            break;
        }
        let mid = 0.5 * (lo + hi);
        if meets(mid, epsilon, ln_target) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let out = round_up(hi * sensitivity);
    if out.is_finite() {
        Ok(out)
    } else {
        Err(Error::invalid(
            "sensitivity",
            sensitivity,
            "the calibrated noise overflows; use a smaller sensitivity",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curve_is_decreasing_and_in_range() {
        let mut last = 1.0;
        for i in 0..50 {
            let d = gaussian_delta(1.0, f64::from(i) * 0.2).unwrap();
            assert!(d <= last && (0.0..=1.0).contains(&d));
            last = d;
        }
    }

    #[test]
    fn epsilon_and_sigma_round_trip() {
        for &(eps, delta) in &[(0.1, 1e-5), (1.0, 1e-5), (8.0, 1e-10), (50.0, 1e-6)] {
            let s = sigma(eps, delta, 1.0).unwrap();
            let back = epsilon(s, delta).unwrap();
            assert!(
                back <= eps * (1.0 + 1e-9),
                "eps {eps}: sigma {s} gives {back}"
            );
            assert!(
                back >= eps * (1.0 - 1e-6),
                "eps {eps}: sigma {s} gives {back}"
            );
            // The curve at the returned sigma really meets delta.
            assert!(gaussian_delta(s, eps).unwrap() <= delta);
        }
    }

    #[test]
    fn sigma_scales_with_sensitivity() {
        let a = sigma(1.0, 1e-5, 1.0).unwrap();
        let b = sigma(1.0, 1e-5, 4.0).unwrap();
        assert!((b / a - 4.0).abs() < 1e-9);
    }
}
