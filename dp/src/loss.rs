//! Privacy-loss values: what a mechanism spends and what an accountant adds up.

use serde::{Deserialize, Serialize};

use crate::error::{check_non_negative, check_open_unit, check_positive};
use crate::{Error, Result};

/// The privacy loss of one release, in the strongest form the mechanism can state.
///
/// Every mechanism in [`crate::mechanisms`] returns one of these from `privacy_loss()`;
/// [`crate::accounting::PrivacyBudget`] is the only way to spend it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PrivacyLoss {
    /// Pure `epsilon`-DP.
    Pure {
        /// The privacy parameter epsilon (> 0).
        epsilon: f64,
    },
    /// Approximate `(epsilon, delta)`-DP.
    Approximate {
        /// epsilon (>= 0).
        epsilon: f64,
        /// delta, in (0, 1).
        delta: f64,
    },
    /// `rho`-zero-concentrated DP (Bun and Steinke 2016).
    Zcdp {
        /// rho (> 0).
        rho: f64,
    },
}

impl PrivacyLoss {
    /// Pure epsilon-DP, validated.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `epsilon` is not finite and positive.
    pub fn pure(epsilon: f64) -> Result<Self> {
        Ok(PrivacyLoss::Pure {
            epsilon: check_positive("epsilon", epsilon)?,
        })
    }

    /// Approximate (epsilon, delta)-DP, validated.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `epsilon` is negative or not finite, or `delta` is not in (0, 1).
    pub fn approximate(epsilon: f64, delta: f64) -> Result<Self> {
        Ok(PrivacyLoss::Approximate {
            epsilon: check_non_negative("epsilon", epsilon)?,
            delta: check_open_unit("delta", delta)?,
        })
    }

    /// rho-zCDP, validated.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `rho` is not finite and positive.
    pub fn zcdp(rho: f64) -> Result<Self> {
        Ok(PrivacyLoss::Zcdp {
            rho: check_positive("rho", rho)?,
        })
    }

    /// The epsilon this loss amounts to at the given `delta` (0 for pure DP is allowed).
    ///
    /// Pure DP ignores `delta`; approximate DP needs `delta` at least its own delta; zCDP uses
    /// the conversion of Canonne, Kamath and Steinke (2020), rounded up.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `delta` is smaller than the loss's own delta or not in [0, 1).
    pub fn epsilon_at(&self, delta: f64) -> Result<f64> {
        if !(delta.is_finite() && (0.0..1.0).contains(&delta)) {
            return Err(Error::invalid("delta", delta, "must lie in [0, 1)"));
        }
        match *self {
            PrivacyLoss::Pure { epsilon } => Ok(epsilon),
            PrivacyLoss::Approximate {
                epsilon,
                delta: own,
            } => {
                if delta >= own {
                    Ok(epsilon)
                } else {
                    Err(Error::invalid(
                        "delta",
                        delta,
                        format!(
                            "this release already spends delta = {own}; ask for a delta at least that large"
                        ),
                    ))
                }
            }
            PrivacyLoss::Zcdp { rho } => crate::accounting::zcdp_to_epsilon(rho, delta),
        }
    }
}

impl std::fmt::Display for PrivacyLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrivacyLoss::Pure { epsilon } => write!(f, "epsilon = {epsilon}"),
            PrivacyLoss::Approximate { epsilon, delta } => {
                write!(f, "(epsilon = {epsilon}, delta = {delta})")
            }
            PrivacyLoss::Zcdp { rho } => write!(f, "rho = {rho} (zCDP)"),
        }
    }
}
