//! Privacy accounting: composition, conversions, accountants and a privacy budget.
//!
//! All arithmetic rounds against the user: every epsilon reported is an upper bound.
//!
//! API CONTRACT (fixed, other crates and the CLI build on it; bodies are filled in on branch
//! `dp-accounting`, which may add more items).

use serde::{Deserialize, Serialize};

use crate::error::{check_open_unit, check_positive, check_probability};
use crate::{Error, Result};

mod composition;
mod gaussian;
pub mod rdp;
mod zcdp;

pub use gaussian::gaussian_delta;
pub use rdp::RdpAccountant;

/// Which accountant computes the epsilon of a composed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountantKind {
    /// Rényi DP over a fixed set of orders (Mironov 2017; Mironov, Talwar, Zhang 2019).
    Rdp,
    /// Privacy-loss distributions (Koskela et al.; Google's `dp_accounting`), tighter.
    Pld,
}

impl std::str::FromStr for AccountantKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rdp" => Ok(AccountantKind::Rdp),
            "pld" => Ok(AccountantKind::Pld),
            other => Err(crate::Error::invalid(
                "accountant",
                other,
                "must be `rdp` or `pld`",
            )),
        }
    }
}

impl std::fmt::Display for AccountantKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AccountantKind::Rdp => "rdp",
            AccountantKind::Pld => "pld",
        })
    }
}

/// Epsilon of DP-SGD: `steps` compositions of the Poisson-subsampled Gaussian mechanism with
/// sampling rate `sampling_rate` and noise multiplier `noise_multiplier`, at `delta`.
///
/// # Errors
/// [`crate::Error::InvalidParameter`] for NaN, infinite or out-of-range parameters.
pub fn dp_sgd_epsilon(
    sampling_rate: f64,
    noise_multiplier: f64,
    steps: u64,
    delta: f64,
    kind: AccountantKind,
) -> Result<f64> {
    check_dp_sgd(sampling_rate, noise_multiplier, delta)?;
    if steps == 0 {
        return Ok(0.0);
    }
    match kind {
        AccountantKind::Rdp => {
            let mut acc = RdpAccountant::new();
            acc.compose_poisson_subsampled_gaussian(sampling_rate, noise_multiplier, steps)?;
            acc.epsilon(delta)
        }
        AccountantKind::Pld => Err(Error::NoSolution(
            "the PLD accountant is not available in this build yet; use `rdp`".into(),
        )),
    }
}

/// The smallest noise multiplier (to a relative precision of 1e-3, rounded up) for which
/// DP-SGD with these settings has epsilon at most `target_epsilon` at `delta`.
///
/// # Errors
/// [`crate::Error::InvalidParameter`] for invalid parameters, [`crate::Error::NoSolution`]
/// when no noise multiplier up to a large bound meets the target.
pub fn dp_sgd_noise_multiplier(
    sampling_rate: f64,
    steps: u64,
    target_epsilon: f64,
    delta: f64,
    kind: AccountantKind,
) -> Result<f64> {
    check_probability("sampling_rate", sampling_rate)?;
    if sampling_rate == 0.0 {
        return Err(Error::invalid(
            "sampling_rate",
            sampling_rate,
            "must be greater than zero (a zero rate samples nothing)",
        ));
    }
    check_positive("target_epsilon", target_epsilon)?;
    check_open_unit("delta", delta)?;
    if steps == 0 {
        return Err(Error::invalid(
            "steps",
            steps,
            "need at least one step to calibrate noise for",
        ));
    }
    let meets = |sigma: f64| -> Result<bool> {
        Ok(dp_sgd_epsilon(sampling_rate, sigma, steps, delta, kind)? <= target_epsilon)
    };
    // Bracket [lo, hi] with lo failing and hi meeting the target.
    let mut hi = 1.0;
    let mut lo;
    if meets(hi)? {
        lo = hi / 2.0;
        while meets(lo)? {
            hi = lo;
            lo /= 2.0;
            if lo < MIN_NOISE_MULTIPLIER {
                return Ok(hi);
            }
        }
    } else {
        lo = hi;
        hi *= 2.0;
        while !meets(hi)? {
            lo = hi;
            hi *= 2.0;
            if hi > MAX_NOISE_MULTIPLIER {
                return Err(Error::NoSolution(format!(
                    "no noise multiplier up to {MAX_NOISE_MULTIPLIER} reaches epsilon = \
                     {target_epsilon} at delta = {delta} with sampling rate {sampling_rate} \
                     over {steps} steps; raise the target epsilon or lower the steps or rate"
                )));
            }
        }
    }
    // Geometric bisection to a relative precision of 1e-3; `hi` always meets the target.
    while hi / lo > 1.0 + 1e-3 {
        let mid = (lo * hi).sqrt();
        if meets(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// Epsilon of one Gaussian mechanism with noise multiplier `sigma` (noise standard deviation
/// divided by L2 sensitivity) at `delta`, by the exact analytic bound of Balle and Wang 2018.
///
/// # Errors
/// [`crate::Error::InvalidParameter`] for invalid parameters.
pub fn gaussian_epsilon(sigma: f64, delta: f64) -> Result<f64> {
    gaussian::epsilon(sigma, delta)
}

/// Converts rho-zCDP to (epsilon, delta)-DP (Canonne, Kamath, Steinke 2020), rounded up.
///
/// # Errors
/// [`crate::Error::InvalidParameter`] for invalid parameters.
pub fn zcdp_to_epsilon(rho: f64, delta: f64) -> Result<f64> {
    zcdp::to_epsilon(rho, delta)
}

/// Basic composition of `count` (epsilon, delta)-DP releases: (count*epsilon, count*delta).
///
/// # Errors
/// [`crate::Error::InvalidParameter`] for invalid parameters.
pub fn basic_composition(epsilon: f64, delta: f64, count: u64) -> Result<(f64, f64)> {
    composition::basic(epsilon, delta, count)
}

/// Advanced composition (Dwork, Rothblum, Vadhan 2010; Kairouz et al. 2015 form) of `count`
/// (epsilon, delta)-DP releases with extra slack `delta_slack`; never worse than basic
/// composition (the smaller of the two epsilons is returned).
///
/// # Errors
/// [`crate::Error::InvalidParameter`] for invalid parameters.
pub fn advanced_composition(
    epsilon: f64,
    delta: f64,
    count: u64,
    delta_slack: f64,
) -> Result<(f64, f64)> {
    composition::advanced(epsilon, delta, count, delta_slack)
}

/// The smallest Gaussian noise standard deviation (rounded up) for which the Gaussian
/// mechanism with L2 sensitivity `sensitivity` is (epsilon, delta)-DP, by the analytic
/// calibration of Balle and Wang 2018 (valid for every epsilon > 0, unlike the classic bound).
///
/// # Errors
/// [`crate::Error::InvalidParameter`] for invalid parameters.
pub fn analytic_gaussian_sigma(epsilon: f64, delta: f64, sensitivity: f64) -> Result<f64> {
    gaussian::sigma(epsilon, delta, sensitivity)
}

/// Smallest noise multiplier [`dp_sgd_noise_multiplier`] considers.
const MIN_NOISE_MULTIPLIER: f64 = 1e-3;
/// Largest noise multiplier [`dp_sgd_noise_multiplier`] considers.
const MAX_NOISE_MULTIPLIER: f64 = 1e6;

fn check_dp_sgd(sampling_rate: f64, noise_multiplier: f64, delta: f64) -> Result<()> {
    check_probability("sampling_rate", sampling_rate)?;
    if sampling_rate == 0.0 {
        return Err(Error::invalid(
            "sampling_rate",
            sampling_rate,
            "must be greater than zero (a zero rate samples nothing); use a rate in (0, 1]",
        ));
    }
    check_positive("noise_multiplier", noise_multiplier)?;
    check_open_unit("delta", delta)?;
    Ok(())
}
