//! Composition theorems for (epsilon, delta)-DP: basic and advanced.

use crate::error::{check_non_negative, check_open_unit, check_probability};
use crate::math::{mul_up, round_up};
use crate::{Error, Result};

fn check_count(count: u64) -> Result<f64> {
    if count == 0 {
        return Err(Error::invalid(
            "count",
            count,
            "compose at least one release (count >= 1)",
        ));
    }
    Ok(count as f64)
}

fn check_delta(delta: f64) -> Result<f64> {
    check_probability("delta", delta)?;
    if delta >= 1.0 {
        return Err(Error::invalid(
            "delta",
            delta,
            "must be below 1 (delta = 1 promises nothing)",
        ));
    }
    Ok(delta)
}

/// See [`super::basic_composition`].
pub(crate) fn basic(epsilon: f64, delta: f64, count: u64) -> Result<(f64, f64)> {
    check_non_negative("epsilon", epsilon)?;
    check_delta(delta)?;
    let k = check_count(count)?;
    // `count as f64` rounds to nearest; round it up before multiplying.
    let k = if (k as u64) < count { k.next_up() } else { k };
    let eps = mul_up(epsilon, k);
    let del = mul_up(delta, k).min(1.0);
    if !eps.is_finite() {
        return Err(Error::invalid(
            "epsilon",
            epsilon,
            "count * epsilon overflows; use fewer releases or a smaller epsilon",
        ));
    }
    Ok((eps, del))
}

/// See [`super::advanced_composition`]. Kairouz, Oh, Viswanath 2015, Theorem 3.5 (which
/// implies the Dwork-Rothblum-Vadhan bound), min with basic composition.
pub(crate) fn advanced(
    epsilon: f64,
    delta: f64,
    count: u64,
    delta_slack: f64,
) -> Result<(f64, f64)> {
    check_non_negative("epsilon", epsilon)?;
    check_delta(delta)?;
    check_open_unit("delta_slack", delta_slack)?;
    let basic_pair = basic(epsilon, delta, count)?;
    let k = check_count(count)?;
    let k = if (k as u64) < count { k.next_up() } else { k };
    // First term: k eps (e^eps - 1) / (e^eps + 1) = k eps tanh(eps / 2).
    let drift = k * epsilon * (epsilon / 2.0).tanh();
    let ln_inv = -delta_slack.ln();
    let b1 = drift + epsilon * (2.0 * k * ln_inv).sqrt();
    let b2 = drift
        + epsilon
            * (2.0 * k * (std::f64::consts::E + (k * epsilon * epsilon).sqrt() / delta_slack).ln())
                .sqrt();
    let adv = round_up(b1.min(b2));
    // delta' = 1 - (1 - delta)^k (1 - delta_slack).
    let ln_keep = k * (-delta).ln_1p() + (-delta_slack).ln_1p();
    let adv_delta = round_up(-ln_keep.exp_m1()).min(1.0);
    if adv.is_finite() && adv < basic_pair.0 {
        Ok((adv, adv_delta))
    } else {
        Ok(basic_pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_multiplies_and_rounds_up() {
        let (e, d) = basic(0.1, 1e-6, 3).unwrap();
        assert!((0.3..0.3 + 1e-15).contains(&e));
        assert!(d >= 3e-6);
        assert!(basic(0.1, 1e-6, 0).is_err());
        assert!(basic(-0.1, 1e-6, 3).is_err());
        assert!(basic(0.1, 1.0, 3).is_err());
        assert_eq!(basic(0.5, 0.5, 4).unwrap().1, 1.0);
    }

    #[test]
    fn advanced_beats_basic_for_many_small_releases() {
        let (adv, adv_d) = advanced(0.01, 0.0, 10_000, 1e-6).unwrap();
        let (bas, _) = basic(0.01, 0.0, 10_000).unwrap();
        assert!(adv < bas / 2.0, "{adv} vs {bas}");
        assert!(adv_d >= 1e-6);
        // Dwork-Rothblum-Vadhan bound, which Kairouz et al. improve.
        let drv = (2.0 * 10_000.0 * (1e6_f64).ln()).sqrt() * 0.01
            + 10_000.0 * 0.01 * (0.01_f64.exp() - 1.0);
        assert!(adv <= drv);
    }

    #[test]
    fn advanced_falls_back_to_basic() {
        let pair = advanced(2.0, 1e-7, 2, 1e-6).unwrap();
        assert_eq!(pair, basic(2.0, 1e-7, 2).unwrap());
        assert!(advanced(1.0, 1e-7, 2, 0.0).is_err());
    }
}
