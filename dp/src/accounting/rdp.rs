//! Rényi differential privacy (Mironov 2017) over a fixed set of orders, with the
//! Poisson-subsampled Gaussian mechanism computed as in Google's `dp_accounting`
//! (`rdp_privacy_accountant.py`; Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of
//! the Sampled Gaussian Mechanism").

use crate::error::{check_non_negative, check_open_unit, check_positive, check_probability};
use crate::math::{ln_add_exp, ln_binomial, ln_erfc, round_up, round_up_by};
use crate::{Error, Result};

/// Cap on the number of series terms for a fractional order (as in `dp_accounting`); an order
/// whose series does not converge within it is excluded (its RDP is set to `+inf`).
const MAX_STEPS_LOG_A_FRAC: usize = 1000;

/// The default orders of `dp_accounting`'s `RdpAccountant`: 1.1, 1.2, ..., 10.9, then the
/// integers 11, ..., 63, then 128, 256, 512, 1024.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    orders.extend((11..64).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// RDP of the Gaussian mechanism with noise multiplier `sigma` at order `alpha`:
/// `alpha / (2 sigma^2)`.
///
/// # Errors
/// [`Error::InvalidParameter`] if `sigma` is not finite and positive or `alpha <= 1`.
pub fn gaussian_rdp(sigma: f64, alpha: f64) -> Result<f64> {
    check_positive("noise_multiplier", sigma)?;
    check_order(alpha)?;
    Ok(alpha / (2.0 * sigma * sigma))
}

fn check_order(alpha: f64) -> Result<f64> {
    check_positive("order", alpha)?;
    if alpha <= 1.0 {
        return Err(Error::invalid(
            "order",
            alpha,
            "a Rényi order must be greater than 1",
        ));
    }
    Ok(alpha)
}

/// RDP at order `alpha` of the Poisson-subsampled Gaussian mechanism (sampling rate `q`, noise
/// multiplier `sigma`, add-or-remove-one neighbors), exactly as `dp_accounting` computes it:
/// integer orders by the binomial expansion in log space, fractional orders by the erfc series
/// of Mironov, Talwar and Zhang (2019). Returns `+inf` where the series does not converge (the
/// order is then useless but harmless).
///
/// # Errors
/// [`Error::InvalidParameter`] if `q` is not in [0, 1], `sigma` not finite and positive, or
/// `alpha <= 1` / not finite.
///
/// # Privacy
/// An upper bound on the order-`alpha` Rényi divergence between the outputs on neighboring
/// datasets (add or remove one record) under Poisson sampling with rate `q` (Mironov, Talwar,
/// Zhang 2019); the series for fractional orders sums absolute values of the terms, so
/// truncating it after convergence changes the result by about `e^-30` relative.
pub fn poisson_subsampled_gaussian_rdp(q: f64, sigma: f64, alpha: f64) -> Result<f64> {
    check_probability("sampling_rate", q)?;
    check_positive("noise_multiplier", sigma)?;
    check_order(alpha)?;
    if q == 0.0 {
        return Ok(0.0);
    }
    if q == 1.0 {
        return Ok(alpha / (2.0 * sigma * sigma));
    }
    let log_a = if alpha == alpha.floor() && alpha < 1e6 {
        log_a_int(q, sigma, alpha)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    Ok(log_a / (alpha - 1.0))
}

/// `ln A_alpha` for integer `alpha` (binomial expansion).
///
/// `A_alpha = sum_i C(alpha, i) q^i (1 - q)^(alpha - i) e^((i^2 - i) / (2 sigma^2))`, and the
/// binomial weights sum to 1, so `A_alpha - 1 = sum_{i >= 2} C(alpha, i) q^i (1 - q)^(alpha - i)
/// expm1((i^2 - i) / (2 sigma^2))` (the `i = 0, 1` terms vanish): a sum of positive terms,
/// computed in log space, then `ln A = ln(1 + (A - 1))`. Summing the raw terms instead (as
/// `dp_accounting` does) loses the small `A - 1` to cancellation against 1: at q = 1e-4 and
/// sigma = 10 that under-reports the RDP of order 2 by 3.5e-5 relative, more than the final
/// epsilon's safety margin. This form has only a few ulps of relative error.
fn log_a_int(q: f64, sigma: f64, alpha: f64) -> f64 {
    let mut log_a_minus_1 = f64::NEG_INFINITY;
    let log1mq = (-q).ln_1p();
    let lnq = q.ln();
    let two_s2 = 2.0 * sigma * sigma;
    // alpha is an integer below 1e6, so this loop is bounded.
    let n = alpha as u64;
    for i in 2..=n {
        let fi = i as f64;
        let log_coef = ln_binomial(alpha, fi) + fi * lnq + (alpha - fi) * log1mq;
        let x = (fi * fi - fi) / two_s2;
        // ln(expm1(x)) for x > 0, without overflow: x + ln(1 - e^-x).
        let log_expm1 = if x > 1.0 {
            x + (-(-x).exp()).ln_1p()
        } else {
            x.exp_m1().ln()
        };
        log_a_minus_1 = ln_add_exp(log_a_minus_1, log_coef + log_expm1);
    }
    // ln(1 + e^y), accurate for very negative y (ln_add_exp uses ln_1p).
    ln_add_exp(0.0, log_a_minus_1)
}

/// Absolute error margin per series term added to `ln A_alpha` on the fractional path: 16
/// ulps of 1 for the two log-space additions, the products and `ln_erfc` of each step (whose
/// relative error is below 1e-14, counted once more in the constant).
const FRAC_LOG_A_MARGIN: f64 = 16.0 * f64::EPSILON + 1e-14;

/// `ln A_alpha` for fractional `alpha` (Sec. 3.3 of Mironov, Talwar, Zhang 2019).
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let mut log_a0 = f64::NEG_INFINITY;
    let mut log_a1 = f64::NEG_INFINITY;
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let log1mq = (-q).ln_1p();
    let lnq = q.ln();
    let two_s2 = 2.0 * sigma * sigma;
    let sqrt2_sigma = std::f64::consts::SQRT_2 * sigma;
    let ln_half = 0.5_f64.ln();
    let mut last_s0 = f64::NEG_INFINITY;
    let mut last_s1 = f64::NEG_INFINITY;
    for i in 0..MAX_STEPS_LOG_A_FRAC {
        let fi = i as f64;
        let log_coef = ln_binomial(alpha, fi);
        let j = alpha - fi;
        let log_t0 = log_coef + fi * lnq + j * log1mq;
        let log_t1 = log_coef + j * lnq + fi * log1mq;
        let log_e0 = ln_half + ln_erfc((fi - z0) / sqrt2_sigma);
        let log_e1 = ln_half + ln_erfc((z0 - j) / sqrt2_sigma);
        let log_s0 = log_t0 + (fi * fi - fi) / two_s2 + log_e0;
        let log_s1 = log_t1 + (j * j - j) / two_s2 + log_e1;
        log_a0 = ln_add_exp(log_a0, log_s0);
        log_a1 = ln_add_exp(log_a1, log_s1);
        let total = ln_add_exp(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            // Every term is positive, so the sum's relative error (and so ln A's absolute
            // error) is a few ulps per term plus the erfc approximation's relative error.
            // When A is close to 1 that absolute error is a large relative error of the small
            // RDP; an absolute margin keeps the result an upper bound.
            return total + FRAC_LOG_A_MARGIN * (fi + 1.0);
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    f64::INFINITY
}

/// Converts an RDP curve to epsilon at `delta` with the improved conversion of Canonne,
/// Kamath, Steinke (2020, Prop. 12) / Asoodeh et al. (2020, Eq. 20) that `dp_accounting`
/// uses, minimized over the orders, and rounded up.
///
/// Returns `(epsilon, order)` with the optimal order.
///
/// # Errors
/// [`Error::InvalidParameter`] if `delta` is not in (0, 1), the slices differ in length or are
/// empty, an order is not above 1, or an RDP value is NaN or negative.
///
/// # Privacy
/// A mechanism with these RDP values is (epsilon, delta)-DP (Canonne, Kamath, Steinke 2020,
/// Prop. 12); the result carries a relative margin of 1e-9 for floating-point error.
pub fn rdp_to_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> Result<(f64, f64)> {
    check_open_unit("delta", delta)?;
    if orders.len() != rdp.len() || orders.is_empty() {
        return Err(Error::invalid(
            "orders",
            orders.len(),
            format!(
                "need one RDP value per order and at least one order (got {} RDP values)",
                rdp.len()
            ),
        ));
    }
    let mut best = (f64::INFINITY, orders.first().copied().unwrap_or(f64::NAN));
    for (&a, &r) in orders.iter().zip(rdp) {
        check_order(a)?;
        if r.is_nan() || r < 0.0 {
            return Err(Error::invalid(
                "rdp",
                r,
                "an RDP value must be a non-negative number",
            ));
        }
        let eps = if r == f64::INFINITY {
            f64::INFINITY
        } else if delta * delta + (-r).exp_m1() > 0.0 {
            // delta <= sqrt(1 - exp(-KL)) gives epsilon = 0.
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    // A relative margin of 1e-9 covers the float error of the log-space series (we measured
    // ~3e-12 relative disagreement with dp_accounting's SciPy-based evaluation).
    Ok((round_up_by(best.0.max(0.0), 1e-9), best.1))
}

/// Converts an RDP curve to delta at `epsilon` (the same bound as [`rdp_to_epsilon`],
/// inverted), rounded up, capped at 1.
///
/// # Errors
/// [`Error::InvalidParameter`] as for [`rdp_to_epsilon`], or a negative `epsilon`.
pub fn rdp_to_delta(orders: &[f64], rdp: &[f64], epsilon: f64) -> Result<(f64, f64)> {
    check_non_negative("epsilon", epsilon)?;
    if orders.len() != rdp.len() || orders.is_empty() {
        return Err(Error::invalid(
            "orders",
            orders.len(),
            "need one RDP value per order and at least one order",
        ));
    }
    let mut best = (f64::INFINITY, orders.first().copied().unwrap_or(f64::NAN));
    for (&a, &r) in orders.iter().zip(rdp) {
        check_order(a)?;
        if r.is_nan() || r < 0.0 {
            return Err(Error::invalid(
                "rdp",
                r,
                "an RDP value must be a non-negative number",
            ));
        }
        let mut log_delta = if r == 0.0 {
            f64::NEG_INFINITY
        } else {
            0.5 * (-(-r).exp()).ln_1p()
        };
        if a > 1.01 {
            let bound = (a - 1.0) * (r - epsilon + (-1.0 / a).ln_1p()) - a.ln();
            log_delta = log_delta.min(bound);
        }
        if log_delta < best.0 {
            best = (log_delta, a);
        }
    }
    Ok((round_up(best.0.exp()).min(1.0), best.1))
}

/// A Rényi-DP accountant: keeps the RDP of everything composed so far at a fixed set of
/// orders and converts it to (epsilon, delta) on demand.
///
/// # Privacy
/// RDP composes additively at every order; the conversion to (epsilon, delta) is the improved
/// bound of Canonne, Kamath, Steinke 2020 (Prop. 12), minimized over the orders. The
/// Poisson-subsampled Gaussian bound holds for add-or-remove-one neighbors and Poisson
/// sampling (each record independently with probability `q`), which is what
/// `dp_accounting` assumes. Reported epsilons are rounded up.
///
/// # Examples
/// ```
/// use sotto_dp::accounting::RdpAccountant;
/// let mut acc = RdpAccountant::new();
/// acc.compose_poisson_subsampled_gaussian(0.01, 1.1, 1000)?;
/// let eps = acc.epsilon(1e-5)?;
/// assert!(eps > 1.0 && eps < 3.0);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An empty accountant over [`default_orders`] (those of `dp_accounting`).
    pub fn new() -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        RdpAccountant { orders, rdp }
    }

    /// An empty accountant over the given orders.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `orders` is empty or an order is not finite and above 1.
    pub fn with_orders(orders: Vec<f64>) -> Result<Self> {
        if orders.is_empty() {
            return Err(Error::invalid(
                "orders",
                "[]",
                "give at least one Rényi order above 1",
            ));
        }
        for &a in &orders {
            check_order(a)?;
        }
        let rdp = vec![0.0; orders.len()];
        Ok(RdpAccountant { orders, rdp })
    }

    /// The orders tracked.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The RDP spent so far at each order (same indices as [`Self::orders`]).
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// Everything composed so far, composed `count` times: each order's RDP times `count`.
    /// An accountant holding one step of a mechanism gives, repeated `count` times, exactly
    /// (bit for bit) what composing `count` steps would: cheap when the per-order terms are
    /// costly and the step count grows, as in a training run that reports epsilon per round.
    pub fn repeated(&self, count: u64) -> Self {
        let c = count as f64;
        RdpAccountant {
            orders: self.orders.clone(),
            rdp: self.rdp.iter().map(|r| c * r).collect(),
        }
    }

    fn add_curve(&mut self, f: impl Fn(f64) -> Result<f64>, count: u64) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let mut next = self.rdp.clone();
        let c = count as f64;
        for (slot, &a) in next.iter_mut().zip(&self.orders) {
            let one = f(a)?;
            *slot += c * one;
        }
        self.rdp = next;
        Ok(())
    }

    /// Composes `count` Gaussian mechanisms with noise multiplier `sigma` (noise standard
    /// deviation over L2 sensitivity).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `sigma` is not finite and positive. Nothing is composed
    /// on error.
    pub fn compose_gaussian(&mut self, sigma: f64, count: u64) -> Result<()> {
        check_positive("noise_multiplier", sigma)?;
        self.add_curve(|a| gaussian_rdp(sigma, a), count)
    }

    /// Composes `count` Poisson-subsampled Gaussian mechanisms (one DP-SGD step each).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `q` is not in [0, 1] or `sigma` is not finite and
    /// positive. Nothing is composed on error.
    pub fn compose_poisson_subsampled_gaussian(
        &mut self,
        q: f64,
        sigma: f64,
        count: u64,
    ) -> Result<()> {
        check_probability("sampling_rate", q)?;
        check_positive("noise_multiplier", sigma)?;
        self.add_curve(|a| poisson_subsampled_gaussian_rdp(q, sigma, a), count)
    }

    /// Composes `count` releases that are each `rho`-zCDP (RDP `alpha * rho` at every order).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `rho` is not finite and non-negative.
    pub fn compose_zcdp(&mut self, rho: f64, count: u64) -> Result<()> {
        check_non_negative("rho", rho)?;
        self.add_curve(|a| Ok(a * rho), count)
    }

    /// Composes `count` pure `epsilon`-DP releases, using the RDP of pure DP
    /// (Mironov 2017, Prop. 3 / Bun-Steinke: min(epsilon, alpha epsilon^2 / 2)).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `epsilon` is not finite and non-negative.
    pub fn compose_pure(&mut self, epsilon: f64, count: u64) -> Result<()> {
        check_non_negative("epsilon", epsilon)?;
        self.add_curve(|a| Ok(epsilon.min(a * epsilon * epsilon / 2.0)), count)
    }

    /// The epsilon of everything composed so far at `delta`, rounded up.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `delta` is not in (0, 1).
    pub fn epsilon(&self, delta: f64) -> Result<f64> {
        rdp_to_epsilon(&self.orders, &self.rdp, delta).map(|(e, _)| e)
    }

    /// The delta of everything composed so far at `epsilon`, rounded up.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `epsilon` is negative or not finite.
    pub fn delta(&self, epsilon: f64) -> Result<f64> {
        rdp_to_delta(&self.orders, &self.rdp, epsilon).map(|(d, _)| d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_orders_like_dp_accounting() {
        let o = default_orders();
        assert_eq!(o.len(), 99 + 53 + 4);
        assert!((o[0] - 1.1).abs() < 1e-15);
        assert_eq!(o[9], 2.0);
        assert_eq!(*o.last().unwrap(), 1024.0);
    }

    #[test]
    fn one_step_repeated_equals_the_steps_composed() {
        let mut one = RdpAccountant::new();
        one.compose_poisson_subsampled_gaussian(0.2, 4.5, 1)
            .unwrap();
        for steps in [1u64, 2, 7, 100, 10_000] {
            let mut many = RdpAccountant::new();
            many.compose_poisson_subsampled_gaussian(0.2, 4.5, steps)
                .unwrap();
            assert_eq!(one.repeated(steps), many, "{steps} steps");
        }
        assert!(one.repeated(0).rdp().iter().all(|&r| r == 0.0));
    }

    #[test]
    fn subsampled_with_q_one_is_gaussian() {
        for a in [1.5, 2.0, 32.0] {
            let s = poisson_subsampled_gaussian_rdp(1.0, 2.0, a).unwrap();
            assert!((s - a / 8.0).abs() < 1e-15);
        }
    }

    #[test]
    fn integer_and_fractional_paths_agree_nearby() {
        // RDP is continuous in alpha: the series at 3 +- tiny must bracket the expansion at 3.
        let q = 0.05;
        let sigma = 1.3;
        let at3 = poisson_subsampled_gaussian_rdp(q, sigma, 3.0).unwrap();
        let below = poisson_subsampled_gaussian_rdp(q, sigma, 3.0 - 1e-6).unwrap();
        let above = poisson_subsampled_gaussian_rdp(q, sigma, 3.0 + 1e-6).unwrap();
        assert!(
            (at3 - below).abs() < 1e-4 && (at3 - above).abs() < 1e-4,
            "{below} {at3} {above}"
        );
    }

    /// At order 2, `A = 1 + q^2 expm1(1 / sigma^2)` in closed form; tiny `q` used to lose
    /// the RDP to cancellation against 1 (3.5e-5 relative at q = 1e-4, sigma = 10).
    #[test]
    fn tiny_rdp_is_not_lost_to_cancellation() {
        for (q, sigma) in [(1e-4f64, 10.0f64), (1e-3, 5.0), (1e-2, 1.0), (1e-6, 3.0)] {
            let exact = (q * q * (1.0 / (sigma * sigma)).exp_m1()).ln_1p();
            let ours = poisson_subsampled_gaussian_rdp(q, sigma, 2.0).unwrap();
            let rel = (ours - exact).abs() / exact;
            assert!(
                rel < 1e-13,
                "q {q} sigma {sigma}: {ours} vs {exact} ({rel:e})"
            );
        }
        // Fractional orders near an integer stay above the (accurate) integer value.
        let q = 1e-4;
        let at2 = poisson_subsampled_gaussian_rdp(q, 10.0, 2.0).unwrap();
        let near = poisson_subsampled_gaussian_rdp(q, 10.0, 2.0 + 1e-9).unwrap();
        assert!(near >= at2 * (1.0 - 1e-6), "{near} vs {at2}");
    }

    #[test]
    fn subsampling_amplifies() {
        for a in [1.5, 2.0, 10.0, 64.0] {
            let sub = poisson_subsampled_gaussian_rdp(0.01, 1.0, a).unwrap();
            assert!(sub < a / 2.0, "alpha {a}: {sub}");
            assert!(sub >= 0.0);
        }
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(poisson_subsampled_gaussian_rdp(f64::NAN, 1.0, 2.0).is_err());
        assert!(poisson_subsampled_gaussian_rdp(0.1, 0.0, 2.0).is_err());
        assert!(poisson_subsampled_gaussian_rdp(0.1, 1.0, 1.0).is_err());
        assert!(RdpAccountant::with_orders(vec![]).is_err());
        assert!(RdpAccountant::with_orders(vec![0.5]).is_err());
        let acc = RdpAccountant::new();
        assert!(acc.epsilon(0.0).is_err());
        assert!(acc.epsilon(1.0).is_err());
        assert!(rdp_to_epsilon(&[2.0], &[-1.0], 1e-5).is_err());
    }

    #[test]
    fn empty_accountant_has_zero_epsilon_and_delta() {
        let acc = RdpAccountant::new();
        assert!(acc.epsilon(1e-5).unwrap() < 1e-300);
        assert!(acc.delta(1.0).unwrap() < 1e-300);
    }

    #[test]
    fn delta_and_epsilon_conversions_are_consistent() {
        let mut acc = RdpAccountant::new();
        acc.compose_gaussian(3.0, 10).unwrap();
        let eps = acc.epsilon(1e-6).unwrap();
        let delta = acc.delta(eps).unwrap();
        assert!(delta <= 1e-6 * (1.0 + 1e-6), "{delta}");
    }
}
