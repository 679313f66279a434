//! Estimators with error bars for noisy releases.
//!
//! * Randomized-response polls: unbiased estimates of the true fraction(s), with the standard
//!   error and a Wilson score interval on the observed fraction, mapped through the (affine)
//!   debiasing, which has much better coverage than the plain Wald interval near 0 and 1.
//! * Laplace and Gaussian releases: intervals for the un-noised value, exact for the discrete
//!   Laplace and conservative (sub-Gaussian tail) for the discrete Gaussian.
//!
//! The randomized-response standard errors and intervals treat the respondents as a random
//! sample from the population whose fraction is estimated (each report is then an independent
//! Bernoulli with the report probability). For a fixed, fully polled population the true
//! variance is smaller, and the intervals are conservative.
//!
//! Everything here is post-processing of already private outputs: it spends no privacy. The
//! result type [`Estimate`] serializes to JSON with the keys `estimate`, `std_error`,
//! `ci_low`, `ci_high` and `confidence`.

use serde::{Deserialize, Serialize};

use crate::error::{check_finite, check_open_unit, check_positive};
use crate::{Error, Result};

/// A point estimate with its standard error and a confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The point estimate (unbiased for the randomized-response estimators; it may fall
    /// outside `[0, 1]` when the true fraction is near the edge: clamping it would bias it).
    pub estimate: f64,
    /// The (estimated) standard error of `estimate`.
    pub std_error: f64,
    /// Lower end of the confidence interval.
    pub ci_low: f64,
    /// Upper end of the confidence interval.
    pub ci_high: f64,
    /// The confidence level of the interval, in (0, 1).
    pub confidence: f64,
}

impl Estimate {
    /// The same estimate with the point estimate projected into its interval: clamped to
    /// `[ci_low, ci_high]`. For the randomized-response estimators the interval is already
    /// intersected with [0, 1] and contains the unbiased estimate before that intersection,
    /// so this is the projection of the unbiased estimate onto [0, 1]: a value that is
    /// always consistent with the interval, at the price of a small bias near 0 and 1 (keep
    /// the unbiased `estimate` when averaging many estimates).
    ///
    /// ```
    /// use sotto_dp::estimators::binary_rr_estimate;
    /// // 10 yes answers out of 100 at a truth probability of 0.75: unbiased estimate -0.3.
    /// let e = binary_rr_estimate(10, 100, 0.75, 0.95)?;
    /// assert!(e.estimate < 0.0 && e.ci_low == 0.0);
    /// let p = e.projected();
    /// assert_eq!(p.estimate, 0.0);
    /// assert!(p.ci_low <= p.estimate && p.estimate <= p.ci_high);
    /// # Ok::<(), sotto_dp::Error>(())
    /// ```
    #[must_use]
    pub fn projected(&self) -> Estimate {
        // Comparisons rather than `f64::clamp`, which panics on a NaN bound.
        let mut estimate = self.estimate;
        if estimate > self.ci_high {
            estimate = self.ci_high;
        }
        if estimate < self.ci_low {
            estimate = self.ci_low;
        }
        Estimate { estimate, ..*self }
    }
}

/// The `p`-quantile of the standard normal distribution, for `p` in (0, 1).
///
/// Acklam's rational approximation (relative error below 1.2e-9), refined by one Halley step
/// on the complementary error function, which brings it to about machine precision.
///
/// # Errors
/// [`Error::InvalidParameter`] if `p` is not in (0, 1).
pub fn normal_quantile(p: f64) -> Result<f64> {
    check_open_unit("p", p)?;
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const P_LOW: f64 = 0.02425;
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let x = if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - P_LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    };
    Ok(halley_refine(x, p))
}

/// One Halley step for `Phi(x) = p`, with `Phi` from [`crate::math`].
fn halley_refine(x: f64, p: f64) -> f64 {
    let e = crate::math::normal_cdf(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    let refined = x - u / (1.0 + x * u / 2.0);
    if refined.is_finite() { refined } else { x }
}

/// `n` and `count` validated: `n > 0`, `count <= n`.
fn check_counts(count: u64, n: u64) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid(
            "n",
            n,
            "the number of respondents must be at least 1",
        ));
    }
    if count > n {
        return Err(Error::invalid(
            "count",
            count,
            format!("cannot exceed the number of respondents n = {n}"),
        ));
    }
    Ok(())
}

/// Debiases a randomized-response count of one answer.
///
/// Each respondent reports "yes" with probability `p_yes_if_true` when their true answer is
/// yes and `p_yes_if_false` when it is no; with `yes` yes-reports out of `n`, the unbiased
/// estimate of the true fraction is `(yes / n - p_yes_if_false) / (p_yes_if_true -
/// p_yes_if_false)`. The standard error is the plug-in one; the interval is the Wilson score
/// interval for the report probability at level `confidence`, mapped through the same affine
/// map and intersected with [0, 1], where the true fraction lies (so the intersection never
/// lowers coverage). Near 0 or 1 the unbiased estimate itself may fall outside that interval;
/// [`Estimate::projected`] clamps it into the interval.
///
/// # Errors
/// [`Error::InvalidParameter`] if `n == 0`, `yes > n`, `confidence` is not in (0, 1), or
/// the probabilities are not in [0, 1] with `p_yes_if_true > p_yes_if_false`.
pub fn debias_binary(
    yes: u64,
    n: u64,
    p_yes_if_true: f64,
    p_yes_if_false: f64,
    confidence: f64,
) -> Result<Estimate> {
    check_counts(yes, n)?;
    check_open_unit("confidence", confidence)?;
    crate::error::check_probability("p_yes_if_true", p_yes_if_true)?;
    crate::error::check_probability("p_yes_if_false", p_yes_if_false)?;
    let gap = p_yes_if_true - p_yes_if_false;
    if gap <= 0.0 {
        return Err(Error::invalid(
            "p_yes_if_true",
            p_yes_if_true,
            format!(
                "must exceed p_yes_if_false = {p_yes_if_false}, or the answers carry no information"
            ),
        ));
    }
    #[allow(clippy::cast_precision_loss)]
    let (yes_f, n_f) = (yes as f64, n as f64);
    let observed = yes_f / n_f;
    let z = normal_quantile(0.5 + confidence / 2.0)?;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_f;
    let center = (observed + z2 / (2.0 * n_f)) / denom;
    let half = z / denom * (observed * (1.0 - observed) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    let debias = |lambda: f64| (lambda - p_yes_if_false) / gap;
    Ok(Estimate {
        estimate: debias(observed),
        std_error: (observed * (1.0 - observed) / n_f).sqrt() / gap,
        ci_low: debias(center - half).clamp(0.0, 1.0),
        ci_high: debias(center + half).clamp(0.0, 1.0),
        confidence,
    })
}

/// The article's estimate for the two-coin poll ([`crate::mechanisms::TwoCoinResponse`]):
/// `2 N / n - 1/2` from `N = yes` yes-answers out of `n`, with standard error
/// `2 sqrt(f (1 - f) / n)` (`f = N / n`) and a Wilson-based interval.
///
/// ```
/// use sotto_dp::estimators::two_coin_estimate;
/// let e = two_coin_estimate(400, 1000, 0.95)?; // 40% yes answers
/// assert!((e.estimate - 0.3).abs() < 1e-12);   // 2 * 0.4 - 0.5
/// assert!(e.ci_low < 0.3 && 0.3 < e.ci_high);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidParameter`] if `n == 0`, `yes > n` or `confidence` is not in (0, 1).
pub fn two_coin_estimate(yes: u64, n: u64, confidence: f64) -> Result<Estimate> {
    debias_binary(yes, n, 0.75, 0.25, confidence)
}

/// Estimate for binary randomized response that tells the truth with probability
/// `truth_probability` (`e^eps / (1 + e^eps)` for epsilon-RR) and lies otherwise.
///
/// # Errors
/// [`Error::InvalidParameter`] if `n == 0`, `yes > n`, `confidence` is not in (0, 1) or
/// `truth_probability` is not in (1/2, 1].
pub fn binary_rr_estimate(
    yes: u64,
    n: u64,
    truth_probability: f64,
    confidence: f64,
) -> Result<Estimate> {
    if !(truth_probability > 0.5 && truth_probability <= 1.0) {
        return Err(Error::invalid(
            "truth_probability",
            truth_probability,
            "must lie in (1/2, 1]",
        ));
    }
    debias_binary(
        yes,
        n,
        truth_probability,
        1.0 - truth_probability,
        confidence,
    )
}

/// Per-category estimates for k-ary randomized response that reports the true category with
/// probability `truth_probability` and each other category with probability
/// `other_probability`, from the `counts` of reports in each category (their sum is `n`).
///
/// Each interval holds at level `confidence` on its own (they are not simultaneous; use
/// `confidence = 1 - alpha / k` for a Bonferroni family).
///
/// # Errors
/// [`Error::InvalidParameter`] if `counts` is empty or sums to zero or beyond `u64`,
/// `confidence` is not in (0, 1), or the probabilities are invalid
/// (`truth_probability <= other_probability`).
pub fn kary_rr_estimate(
    counts: &[u64],
    truth_probability: f64,
    other_probability: f64,
    confidence: f64,
) -> Result<Vec<Estimate>> {
    let n = counts
        .iter()
        .try_fold(0u64, |acc, c| acc.checked_add(*c))
        .ok_or_else(|| Error::invalid("counts", "sum", "the counts overflow u64"))?;
    if counts.is_empty() {
        return Err(Error::invalid(
            "counts",
            "[]",
            "need one count per category",
        ));
    }
    counts
        .iter()
        .map(|c| debias_binary(*c, n, truth_probability, other_probability, confidence))
        .collect()
}

fn check_release(released: f64, spacing: f64, confidence: f64) -> Result<()> {
    check_finite("released", released)?;
    check_positive("spacing", spacing)?;
    check_open_unit("confidence", confidence)?;
    Ok(())
}

/// An exact interval for the un-noised value of a discrete Laplace release.
///
/// `released = value + spacing * Z` with `Z` discrete Laplace of scale `scale_units` (grid
/// units): `P(|Z| >= m) = 2 q^m / (1 + q)`, `q = exp(-1 / scale)`, for `m >= 1`. The interval
/// is `released +- m * spacing` for the smallest integer `m` with `P(|Z| > m) <= 1 -
/// confidence`, so its coverage is at least `confidence`. The standard error is the exact
/// standard deviation `sqrt(2 q) / (1 - q)` (times `spacing`).
///
/// # Errors
/// [`Error::InvalidParameter`] if a parameter is not finite, `scale_units` or `spacing` is
/// not positive, or `confidence` is not in (0, 1).
pub fn laplace_interval(
    released: f64,
    scale_units: f64,
    spacing: f64,
    confidence: f64,
) -> Result<Estimate> {
    check_release(released, spacing, confidence)?;
    check_positive("scale", scale_units)?;
    let alpha = 1.0 - confidence;
    let ln_q = -1.0 / scale_units;
    let q = ln_q.exp();
    let ln_one_plus_q = q.ln_1p();
    // ln P(|Z| > m) = ln 2 + (m + 1) ln q - ln(1 + q).
    let ln_tail = |m: f64| std::f64::consts::LN_2 + (m + 1.0) * ln_q - ln_one_plus_q;
    let target = alpha.ln();
    let mut m = ((target - std::f64::consts::LN_2 + ln_one_plus_q) / ln_q - 1.0)
        .ceil()
        .max(0.0);
    // Guard against rounding in the closed form: step until the tail really is small enough.
    while ln_tail(m) > target {
        m += 1.0;
    }
    let one_minus_q = -ln_q.exp_m1();
    let std_units = (2.0 * q).sqrt() / one_minus_q;
    Ok(Estimate {
        estimate: released,
        std_error: std_units * spacing,
        ci_low: released - m * spacing,
        ci_high: released + m * spacing,
        confidence,
    })
}

/// A conservative interval for the un-noised value of a discrete Gaussian release.
///
/// `released = value + spacing * Z` with `Z` discrete Gaussian with parameter `sigma_units`.
/// The discrete Gaussian is `sigma`-sub-Gaussian (Canonne, Kamath and Steinke 2020), so
/// `P(|Z| >= t) <= 2 exp(-t^2 / (2 sigma^2))`; the interval is `released +- ceil(t) * spacing`
/// with `t = sigma sqrt(2 ln(2 / (1 - confidence)))`. Its coverage is at least `confidence`
/// (somewhat more than the normal interval would give). The standard error reported is
/// `sigma`, an upper bound on the standard deviation of the discrete Gaussian.
///
/// # Errors
/// [`Error::InvalidParameter`] if a parameter is not finite, `sigma_units` or `spacing` is
/// not positive, or `confidence` is not in (0, 1).
pub fn gaussian_interval(
    released: f64,
    sigma_units: f64,
    spacing: f64,
    confidence: f64,
) -> Result<Estimate> {
    check_release(released, spacing, confidence)?;
    check_positive("sigma", sigma_units)?;
    let alpha = 1.0 - confidence;
    let t = sigma_units * (2.0 * (2.0 / alpha).ln()).sqrt() * (1.0 + 1e-12);
    let m = t.ceil();
    Ok(Estimate {
        estimate: released,
        std_error: sigma_units * spacing,
        ci_low: released - m * spacing,
        ci_high: released + m * spacing,
        confidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_matches_known_values() {
        let cases = [
            (0.5, 0.0),
            (0.975, 1.959_963_984_540_054),
            (0.995, 2.575_829_303_548_901),
            (0.025, -1.959_963_984_540_054),
            (1e-10, -6.361_340_902_404_056),
        ];
        for (p, z) in cases {
            let got = normal_quantile(p).unwrap();
            assert!(
                (got - z).abs() < 1e-9 * z.abs().max(1.0),
                "p={p}: {got} vs {z}"
            );
        }
        for bad in [0.0, 1.0, f64::NAN, -0.1] {
            assert!(normal_quantile(bad).is_err());
        }
    }

    #[test]
    fn two_coin_estimate_is_the_article_formula() {
        let e = two_coin_estimate(620, 1000, 0.9).unwrap();
        assert!((e.estimate - (2.0 * 620.0 / 1000.0 - 0.5)).abs() < 1e-12);
        let f: f64 = 0.62;
        assert!((e.std_error - 2.0 * (f * (1.0 - f) / 1000.0).sqrt()).abs() < 1e-12);
        assert!(e.ci_low < e.estimate && e.estimate < e.ci_high);
        assert_eq!(e.confidence, 0.9);
    }

    #[test]
    fn estimators_validate_inputs() {
        assert!(two_coin_estimate(1, 0, 0.95).is_err());
        assert!(two_coin_estimate(11, 10, 0.95).is_err());
        for c in [0.0, 1.0, f64::NAN, 1.5] {
            assert!(two_coin_estimate(5, 10, c).is_err());
            assert!(laplace_interval(0.0, 1.0, 1.0, c).is_err());
            assert!(gaussian_interval(0.0, 1.0, 1.0, c).is_err());
        }
        assert!(binary_rr_estimate(5, 10, 0.5, 0.95).is_err());
        assert!(binary_rr_estimate(5, 10, f64::NAN, 0.95).is_err());
        assert!(debias_binary(5, 10, 0.3, 0.6, 0.95).is_err());
        assert!(kary_rr_estimate(&[], 0.6, 0.2, 0.95).is_err());
        assert!(kary_rr_estimate(&[0, 0], 0.6, 0.4, 0.95).is_err());
        assert!(kary_rr_estimate(&[u64::MAX, 1], 0.6, 0.4, 0.95).is_err());
        assert!(laplace_interval(f64::NAN, 1.0, 1.0, 0.9).is_err());
        assert!(laplace_interval(0.0, 0.0, 1.0, 0.9).is_err());
        assert!(gaussian_interval(0.0, 1.0, -1.0, 0.9).is_err());
        let msg = two_coin_estimate(11, 10, 0.95).unwrap_err().to_string();
        assert!(msg.contains("count") && msg.contains("n = 10"), "{msg}");
    }

    #[test]
    fn laplace_interval_is_the_smallest_exact_one() {
        // scale 1: q = e^-1, P(|Z| > m) = 2 e^-(m+1) / (1 + e^-1).
        let e = laplace_interval(10.0, 1.0, 1.0, 0.95).unwrap();
        let m = e.ci_high - 10.0;
        let q = (-1.0f64).exp();
        let tail = |m: f64| 2.0 * q.powf(m + 1.0) / (1.0 + q);
        assert!(tail(m) <= 0.05 && tail(m - 1.0) > 0.05, "m = {m}");
        assert_eq!(e.ci_low, 10.0 - m);
        // Exact standard deviation of the discrete Laplace: sqrt(2q)/(1-q).
        assert!((e.std_error - (2.0 * q).sqrt() / (1.0 - q)).abs() < 1e-12);
    }

    #[test]
    fn gaussian_interval_uses_the_sub_gaussian_tail() {
        let e = gaussian_interval(0.0, 10.0, 0.5, 0.95).unwrap();
        let t: f64 = 10.0 * (2.0 * (2.0f64 / 0.05).ln()).sqrt();
        assert_eq!(e.ci_high, t.ceil() * 0.5);
        assert_eq!(e.std_error, 5.0);
    }

    #[test]
    fn estimate_serializes_with_the_cli_keys() {
        let e = two_coin_estimate(400, 1000, 0.95).unwrap();
        let json = serde_json::to_value(e).unwrap();
        for key in ["estimate", "std_error", "ci_low", "ci_high", "confidence"] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
        let back: Estimate = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }
}
