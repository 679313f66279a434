//! Per-party noise shares for secure aggregation (distributed discrete Gaussian,
//! Kairouz, Liu and Steinke 2021).
//!
//! API CONTRACT (fixed; bodies filled in on branch `dp-sampling`).

use rand_core::{CryptoRng, RngCore};

use super::DiscreteGaussian;
use crate::Result;

/// Noise shares whose sum over any `min_parties` or more parties is (close to) a discrete
/// Gaussian of at least the target sigma.
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
    /// `min_parties == 0`.
    pub fn new(sigma: f64, min_parties: usize) -> Result<Self> {
        let _ = (sigma, min_parties);
        todo!("dp-sampling")
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
    /// # Errors
    /// [`crate::Error::InvalidParameter`] for invalid sensitivities or `parties < min_parties`.
    pub fn zcdp_rho(
        &self,
        l2_sensitivity: f64,
        l1_sensitivity: f64,
        dim: usize,
        parties: usize,
    ) -> Result<f64> {
        let _ = (l2_sensitivity, l1_sensitivity, dim, parties);
        todo!("dp-sampling")
    }
}
