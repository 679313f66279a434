//! Privacy accounting: composition, conversions, accountants and a privacy budget.
//!
//! All arithmetic rounds against the user: every epsilon reported is an upper bound.
//!
//! API CONTRACT (fixed, other crates and the CLI build on it; bodies are filled in on branch
//! `dp-accounting`, which may add more items).

use serde::{Deserialize, Serialize};

use crate::Result;

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
    let _ = (sampling_rate, noise_multiplier, steps, delta, kind);
    todo!("dp-accounting")
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
    let _ = (sampling_rate, steps, target_epsilon, delta, kind);
    todo!("dp-accounting")
}

/// Epsilon of one Gaussian mechanism with noise multiplier `sigma` (noise standard deviation
/// divided by L2 sensitivity) at `delta`, by the exact analytic bound of Balle and Wang 2018.
///
/// # Errors
/// [`crate::Error::InvalidParameter`] for invalid parameters.
pub fn gaussian_epsilon(sigma: f64, delta: f64) -> Result<f64> {
    let _ = (sigma, delta);
    todo!("dp-accounting")
}

/// Converts rho-zCDP to (epsilon, delta)-DP (Canonne, Kamath, Steinke 2020), rounded up.
///
/// # Errors
/// [`crate::Error::InvalidParameter`] for invalid parameters.
pub fn zcdp_to_epsilon(rho: f64, delta: f64) -> Result<f64> {
    let _ = (rho, delta);
    todo!("dp-accounting")
}

/// Basic composition of `count` (epsilon, delta)-DP releases: (count*epsilon, count*delta).
///
/// # Errors
/// [`crate::Error::InvalidParameter`] for invalid parameters.
pub fn basic_composition(epsilon: f64, delta: f64, count: u64) -> Result<(f64, f64)> {
    let _ = (epsilon, delta, count);
    todo!("dp-accounting")
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
    let _ = (epsilon, delta, count, delta_slack);
    todo!("dp-accounting")
}

/// The smallest Gaussian noise standard deviation (rounded up) for which the Gaussian
/// mechanism with L2 sensitivity `sensitivity` is (epsilon, delta)-DP, by the analytic
/// calibration of Balle and Wang 2018 (valid for every epsilon > 0, unlike the classic bound).
///
/// # Errors
/// [`crate::Error::InvalidParameter`] for invalid parameters.
pub fn analytic_gaussian_sigma(epsilon: f64, delta: f64, sensitivity: f64) -> Result<f64> {
    let _ = (epsilon, delta, sensitivity);
    todo!("dp-accounting")
}
