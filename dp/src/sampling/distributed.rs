//! Per-party noise shares for secure aggregation (distributed discrete Gaussian,
//! Kairouz, Liu and Steinke 2021).
//!
//! Each of n parties adds an independent discrete Gaussian share with sigma_party =
//! sigma / sqrt(min_parties) (rounded up). The sum of n >= min_parties shares has variance at
//! least sigma^2, but a sum of discrete Gaussians is not itself a discrete Gaussian; Kairouz,
//! Liu and Steinke bound how far it is from one, which is what [`DistributedDiscreteGaussian::zcdp_rho`]
//! charges for. See `docs/privacy/sampling.md`.

use rand_core::{CryptoRng, RngCore};

use super::DiscreteGaussian;
use crate::error::{check_non_negative, check_positive};
use crate::{Error, Result};

/// Above this many parties, the remaining terms of tau are bounded in bulk by the last term
/// computed (the terms decrease in k), an upper bound, so conservative.
const TAU_EXACT_TERMS: usize = 1 << 20;

/// Noise shares whose sum over any `min_parties` or more parties is (close to) a discrete
/// Gaussian of at least the target sigma.
///
/// # Privacy
/// Releasing `sum_i x_i + sum_i Z_i`, where `n` parties each add an independent share
/// `Z_i ~ N_Z(0, sigma_party^2)` per coordinate and only the sum is revealed (secure
/// aggregation), is rho-zCDP with rho from [`Self::zcdp_rho`] (Kairouz, Liu, Steinke,
/// "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
/// Aggregation", ICML 2021, arXiv:2102.06387). Assumptions: the shares of at least `n` parties
/// are honest and unseen by the adversary (count only those parties as `parties`; noise of
/// colluding parties protects nobody), per-party sigma >= 1/2, the inputs are integer vectors
/// whose neighbouring difference has the stated L1 and L2 norms, and modular reduction of the
/// sum (the ring of secure aggregation) is post-processing.
///
/// # Example
/// ```rust
/// use sotto_dp::{rng::seeded_rng, sampling::DistributedDiscreteGaussian};
/// // Target sigma 20 for the sum, guaranteed while at least 4 parties contribute.
/// let ddg = DistributedDiscreteGaussian::new(20.0, 4)?;
/// assert!(ddg.party_sampler().sigma() >= 10.0);
/// let mut share = vec![0i64; 8];
/// ddg.fill_share(&mut seeded_rng(1), &mut share);
/// // Sensitivity 1 in each norm, one coordinate, 4 parties: about 1 / (2 * 20^2).
/// let rho = ddg.zcdp_rho(1.0, 1.0, 1, 4)?;
/// assert!((rho - 1.0 / 800.0).abs() < 1e-12);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DistributedDiscreteGaussian {
    party: DiscreteGaussian,
    min_parties: usize,
}

impl DistributedDiscreteGaussian {
    /// Shares for a target total `sigma` that must hold as long as at least `min_parties`
    /// parties contribute: each party samples with sigma / sqrt(min_parties), rounded up.
    ///
    /// # Errors
    /// [`crate::Error::InvalidParameter`] for a non-finite or non-positive `sigma` or
    /// `min_parties == 0`, or a per-party sigma the discrete Gaussian sampler does not support.
    pub fn new(sigma: f64, min_parties: usize) -> Result<Self> {
        check_positive("sigma", sigma)?;
        if min_parties == 0 {
            return Err(Error::invalid(
                "min_parties",
                min_parties,
                "at least one party must contribute noise; pass min_parties >= 1",
            ));
        }
        // sigma / sqrt(m) with two roundings of at most half an ulp each; three steps up
        // guarantee a value >= the exact quotient.
        let mut party_sigma = sigma / (min_parties as f64).sqrt();
        for _ in 0..3 {
            party_sigma = party_sigma.next_up();
        }
        let party = DiscreteGaussian::new(party_sigma)?;
        Ok(DistributedDiscreteGaussian { party, min_parties })
    }

    /// The sampler each party uses for its share.
    pub fn party_sampler(&self) -> &DiscreteGaussian {
        &self.party
    }

    /// The number of contributing parties the privacy guarantee assumes at least.
    pub fn min_parties(&self) -> usize {
        self.min_parties
    }

    /// Fills `out` with this party's noise share.
    pub fn fill_share<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R, out: &mut [i64]) {
        self.party.fill(rng, out)
    }

    /// The zCDP rho of releasing `sum + noise` when `parties` (>= `min_parties`) parties
    /// contributed shares, for inputs whose difference between neighbours has L2 norm at most
    /// `l2_sensitivity` and L1 norm at most `l1_sensitivity` (in ring units), in `dim`
    /// dimensions (Kairouz et al. 2021, Theorem 1), rounded up.
    ///
    /// With n = `parties`, s = sigma_party (the effective per-party sigma, rounded down),
    /// Δ2, Δ1 the sensitivities, d = `dim` and
    /// tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k / (k + 1)),
    /// the release is rho-zCDP with rho the smallest of
    ///
    /// 1. Δ2^2 / (2 n s^2) + tau d,
    /// 2. 1/2 (Δ2 / (sqrt(n) s) + tau sqrt(d))^2,
    /// 3. 1/2 (Δ2^2 / (n s^2) + 2 tau Δ1 / (sqrt(n) s) + tau^2 d).
    ///
    /// (1) and (2) are Theorem 1 of Kairouz, Liu and Steinke (ICML 2021), which states
    /// (1/2) eps^2-concentrated DP with eps = min{ sqrt(Δ2^2 / (n s^2) + 2 tau d),
    /// Δ2 / (sqrt(n) s) + tau sqrt(d) } for s >= 1/2; (3) is the refinement with the L1
    /// sensitivity from the appendix of arXiv:2102.06387 (Proposition 14, as cited by the
    /// authors' accountant in google-research/federated `distributed_dp/accounting_utils.py`).
    /// Each bound has the form D_alpha <= alpha * rho for all alpha > 1, so their minimum is a
    /// valid zCDP rho. Every floating-point step is rounded against the user (rho up, s and
    /// 2 pi^2 s^2 down).
    ///
    /// # Errors
    /// [`crate::Error::InvalidParameter`] for invalid sensitivities (NaN, infinite, negative),
    /// `dim == 0`, `parties < min_parties`, or a per-party sigma below 1/2 (the theorem needs
    /// sigma_party >= 1/2; raise sigma or lower `min_parties`).
    #[allow(clippy::many_single_char_names)]
    pub fn zcdp_rho(
        &self,
        l2_sensitivity: f64,
        l1_sensitivity: f64,
        dim: usize,
        parties: usize,
    ) -> Result<f64> {
        check_non_negative("l2_sensitivity", l2_sensitivity)?;
        check_non_negative("l1_sensitivity", l1_sensitivity)?;
        if dim == 0 {
            return Err(Error::invalid(
                "dim",
                dim,
                "the released vector needs at least one coordinate; pass dim >= 1",
            ));
        }
        if parties < self.min_parties {
            return Err(Error::invalid(
                "parties",
                parties,
                format!(
                    "the noise was calibrated for at least min_parties = {} contributing parties; fewer give too little noise",
                    self.min_parties
                ),
            ));
        }
        // A lower bound on the true per-party sigma (sigma() rounds down).
        let s = self.party.sigma();
        if s < 0.5 {
            return Err(Error::invalid(
                "sigma",
                s,
                "the distributed discrete Gaussian bound needs a per-party sigma >= 1/2; raise sigma or lower min_parties",
            ));
        }
        let tau = tau_upper(s, parties);
        let n = parties as f64;
        let d = dim as f64;
        // sqrt(n) * s, rounded down.
        let scale = down(down(n.sqrt()) * s);
        let r2 = up(l2_sensitivity / scale);
        let r1 = up(l1_sensitivity / scale);
        let sqrt_d = up(d.sqrt());
        let r2_sq = up(r2 * r2);
        // (1) Theorem 1, first term: eps^2 = Δ2^2 / (n s^2) + 2 tau d, rho = eps^2 / 2.
        let rho_1 = up(up(0.5 * r2_sq) + up(tau * d));
        // (2) Theorem 1, second term: eps = Δ2 / (sqrt(n) s) + tau sqrt(d).
        let root = up(r2 + up(tau * sqrt_d));
        let rho_2 = up(0.5 * up(root * root));
        // (3) With the L1 sensitivity: 2 rho = Δ2^2 / (n s^2) + 2 tau Δ1 / (sqrt(n) s) + tau^2 d.
        let rho_3 = up(0.5 * up(up(r2_sq + up(up(2.0 * tau) * r1)) + up(up(tau * tau) * d)));
        let rho = rho_1.min(rho_2).min(rho_3);
        if !rho.is_finite() {
            return Err(Error::Overflow {
                context: "DistributedDiscreteGaussian::zcdp_rho",
                hint: "the sensitivities are too large for the noise; scale them down".into(),
            });
        }
        Ok(rho)
    }
}

/// Rounds a non-negative result of one floating-point operation up past its rounding error.
#[inline]
fn up(x: f64) -> f64 {
    x.next_up()
}

/// Rounds a non-negative result of one floating-point operation down past its rounding error.
#[inline]
fn down(x: f64) -> f64 {
    x.next_down().max(0.0)
}

/// An upper bound on tau = 10 * sum_{k=1}^{n-1} exp(-2 pi^2 s^2 k / (k + 1)), with s a
/// lower bound on the per-party sigma.
fn tau_upper(s: f64, n: usize) -> f64 {
    // 2 pi^2 s^2, rounded down (std's PI is below the real pi, which also errs low).
    let c = down(down(2.0 * down(std::f64::consts::PI * std::f64::consts::PI)) * down(s * s));
    let exact_terms = n.saturating_sub(1).min(TAU_EXACT_TERMS);
    let mut sum = 0.0f64;
    let mut last = 0.0f64;
    for k in 1..=exact_terms {
        let kf = k as f64;
        let frac = down(kf / (kf + 1.0));
        // libm's exp is within one ulp; two steps up cover it.
        last = up(up((-down(c * frac)).exp()));
        sum = up(sum + last);
    }
    let rest = n.saturating_sub(1) - exact_terms;
    if rest > 0 {
        // exp(-c k / (k + 1)) decreases in k: every remaining term is below the last one.
        sum = up(sum + up(rest as f64 * last));
    }
    up(10.0 * sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded_rng;

    #[test]
    fn validation() {
        for bad in [f64::NAN, f64::INFINITY, 0.0, -1.0] {
            assert!(DistributedDiscreteGaussian::new(bad, 3).is_err());
        }
        let e = DistributedDiscreteGaussian::new(10.0, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_parties"), "{e}");
        let ddg = DistributedDiscreteGaussian::new(10.0, 4).unwrap();
        assert_eq!(ddg.min_parties(), 4);
        assert!(ddg.zcdp_rho(f64::NAN, 1.0, 1, 4).is_err());
        assert!(ddg.zcdp_rho(1.0, -1.0, 1, 4).is_err());
        assert!(ddg.zcdp_rho(1.0, 1.0, 0, 4).is_err());
        let e = ddg.zcdp_rho(1.0, 1.0, 1, 3).unwrap_err().to_string();
        assert!(e.contains("parties"), "{e}");
        // sigma_party = 0.4 < 1/2: the theorem does not apply.
        let small = DistributedDiscreteGaussian::new(0.8, 4).unwrap();
        assert!(small.zcdp_rho(1.0, 1.0, 1, 4).is_err());
    }

    #[test]
    fn party_sigma_rounds_up() {
        for (sigma, m) in [(10.0, 1), (10.0, 3), (7.3, 7), (1000.0, 100), (1.0, 2)] {
            let ddg = DistributedDiscreteGaussian::new(sigma, m).unwrap();
            let s = ddg.party_sampler().sigma();
            assert!(
                s * s * m as f64 >= sigma * sigma * (1.0 - 1e-15),
                "{sigma} {m}"
            );
            assert!(s >= sigma / (m as f64).sqrt(), "{sigma} {m}");
        }
        let ddg = DistributedDiscreteGaussian::new(10.0, 4).unwrap();
        let mut a = vec![0; 10];
        ddg.fill_share(&mut seeded_rng(1), &mut a);
        assert!(a.iter().any(|&x| x != 0));
    }

    #[test]
    fn rho_matches_gaussian_when_tau_is_negligible_and_grows_otherwise() {
        // Large per-party sigma: tau ~ 10 * exp(-2 pi^2 * 25 / 2) ~ 1e-105, so rho is the
        // central Gaussian's Δ^2 / (2 n s^2).
        let ddg = DistributedDiscreteGaussian::new(10.0, 4).unwrap();
        let rho = ddg.zcdp_rho(2.0, 3.0, 100, 4).unwrap();
        let s = ddg.party_sampler().sigma();
        let central = 4.0 / (2.0 * 4.0 * s * s);
        assert!(rho >= central && rho < central * (1.0 + 1e-12), "{rho}");
        // More parties than the minimum: more noise, smaller rho.
        assert!(ddg.zcdp_rho(2.0, 3.0, 100, 8).unwrap() < rho);
        // Small per-party sigma (0.5): tau matters and rho exceeds the central value.
        let ddg = DistributedDiscreteGaussian::new(1.0, 4).unwrap();
        let s = ddg.party_sampler().sigma();
        let rho = ddg.zcdp_rho(1.0, 1.0, 10, 4).unwrap();
        let central = 1.0 / (2.0 * 4.0 * s * s);
        assert!(rho > central * 1.01, "{rho} vs {central}");
        // Independent evaluation of the three bounds (in plain f64), in regimes where each of
        // them is the smallest: (sigma, min_parties, parties, dim, l2, l1).
        let cases = [
            (1.0, 4, 4, 10, 1.0, 1.0),
            (3.6, 50, 50, 1, 1.0, 1.0),    // tau ~ 3.5 > 2: bound 1 wins
            (2.0, 4, 4, 1000, 1.0, 100.0), // small tau, loose Δ1 > sqrt(d) Δ2: bound 2 wins
            (1.2, 4, 6, 100, 2.0, 2.0),    // L1 bound 3 wins when Δ1 is small
        ];
        let mut winners = [false; 3];
        for (sigma, m, parties, dim, l2, l1) in cases {
            let ddg = DistributedDiscreteGaussian::new(sigma, m).unwrap();
            let s = ddg.party_sampler().sigma();
            let rho = ddg.zcdp_rho(l2, l1, dim, parties).unwrap();
            let n = parties as f64;
            let d = dim as f64;
            let tau: f64 = 10.0
                * (1..parties)
                    .map(|k| {
                        let k = k as f64;
                        (-2.0 * std::f64::consts::PI.powi(2) * s * s * k / (k + 1.0)).exp()
                    })
                    .sum::<f64>();
            let r2 = l2 / (n.sqrt() * s);
            let r1 = l1 / (n.sqrt() * s);
            let b = [
                0.5 * r2 * r2 + tau * d,
                0.5 * (r2 + tau * d.sqrt()).powi(2),
                0.5 * (r2 * r2 + 2.0 * tau * r1 + tau * tau * d),
            ];
            let expect = b[0].min(b[1]).min(b[2]);
            let best = (0..3).find(|&i| b[i] == expect).unwrap();
            winners[best] = true;
            assert!(
                rho >= expect && rho < expect * (1.0 + 1e-12),
                "{sigma} {m} {parties} {dim}: {rho} vs {expect}"
            );
        }
        assert_eq!(winners, [true, true, true], "each bound is exercised");
    }

    #[test]
    fn tau_bulk_bound_is_an_upper_bound() {
        // With many parties the bulk bound kicks in; it must not be below the exact sum.
        let s = 0.6;
        let n = TAU_EXACT_TERMS + 1000;
        let bulk = tau_upper(s, n);
        let c = 2.0 * std::f64::consts::PI.powi(2) * s * s;
        let exact: f64 = 10.0
            * (1..n)
                .map(|k| (-c * k as f64 / (k as f64 + 1.0)).exp())
                .sum::<f64>();
        assert!(bulk >= exact, "{bulk} < {exact}");
        assert!(bulk < exact * 1.0001);
    }
}
