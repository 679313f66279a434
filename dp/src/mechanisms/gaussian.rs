//! The Gaussian mechanism with discrete Gaussian noise, on integers and (through a grid) floats.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use super::Grid;
use super::laplace::check_dim;
use crate::error::{check_open_unit, check_positive};
use crate::estimators::{self, Estimate};
use crate::sampling::{DiscreteGaussian, MAX_GAUSSIAN_SIGMA};
use crate::{Error, PrivacyLoss, Result};

/// How the noise standard deviation of a Gaussian mechanism is chosen.
///
/// Whatever the calibration, the guarantee a Gaussian mechanism *reports* is the zCDP one that
/// Canonne, Kamath and Steinke (2020) prove for discrete Gaussian noise,
/// `rho = sensitivity^2 / (2 sigma^2)`, computed from the sigma the sampler really uses; it
/// converts to `(epsilon, delta)` through [`PrivacyLoss::epsilon_at`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum GaussianCalibration {
    /// The classic bound `sigma = sqrt(2 ln(1.25 / delta)) * sensitivity / epsilon`
    /// (Dwork and Roth 2014, Theorem A.1), proven only for `epsilon < 1`.
    Classic {
        /// epsilon, in (0, 1).
        epsilon: f64,
        /// delta, in (0, 1).
        delta: f64,
    },
    /// The analytic calibration of Balle and Wang (2018): the smallest sigma for which the
    /// continuous Gaussian mechanism is `(epsilon, delta)`-DP, for any `epsilon > 0`.
    Analytic {
        /// epsilon (> 0).
        epsilon: f64,
        /// delta, in (0, 1).
        delta: f64,
    },
    /// A target `rho`-zCDP: `sigma = sensitivity / sqrt(2 rho)`.
    Zcdp {
        /// rho (> 0).
        rho: f64,
    },
    /// `sigma = noise_multiplier * sensitivity`, as in DP-SGD.
    NoiseMultiplier {
        /// The ratio sigma / sensitivity (> 0).
        noise_multiplier: f64,
    },
}

impl GaussianCalibration {
    /// The noise standard deviation for a query with L2 sensitivity `sensitivity`, rounded up.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if a parameter is NaN, infinite or out of range, in
    /// particular `epsilon >= 1` for [`GaussianCalibration::Classic`] (use `Analytic` instead).
    pub fn sigma(&self, sensitivity: f64) -> Result<f64> {
        check_positive("sensitivity", sensitivity)?;
        // Relative slack covering the rounding of ln, sqrt, products and divisions.
        const SLACK: f64 = 1.0 + 1e-12;
        let sigma = match *self {
            GaussianCalibration::Classic { epsilon, delta } => {
                check_positive("epsilon", epsilon)?;
                check_open_unit("delta", delta)?;
                if epsilon >= 1.0 {
                    return Err(Error::invalid(
                        "epsilon",
                        epsilon,
                        "the classic Gaussian calibration is only proven for epsilon < 1; use the analytic calibration",
                    ));
                }
                (2.0 * (1.25 / delta).ln()).sqrt() * sensitivity / epsilon * SLACK
            }
            GaussianCalibration::Analytic { epsilon, delta } => {
                check_positive("epsilon", epsilon)?;
                check_open_unit("delta", delta)?;
                crate::accounting::analytic_gaussian_sigma(epsilon, delta, sensitivity)?
            }
            GaussianCalibration::Zcdp { rho } => {
                check_positive("rho", rho)?;
                sensitivity / (2.0 * rho).sqrt() * SLACK
            }
            GaussianCalibration::NoiseMultiplier { noise_multiplier } => {
                check_positive("noise_multiplier", noise_multiplier)?;
                noise_multiplier * sensitivity * SLACK
            }
        };
        check_positive("sigma", sigma)
    }
}

/// `sensitivity^2 / (2 sigma^2)`, rounded up.
fn zcdp_rho(sensitivity: f64, sigma: f64) -> f64 {
    let ratio = sensitivity / sigma;
    (ratio * ratio / 2.0 * (1.0 + 1e-12)).next_up()
}

/// The Gaussian mechanism on integers: `value + Z` with `Z` discrete Gaussian, independently
/// per coordinate. For a vector query, `sensitivity` is the L2 sensitivity.
///
/// # Privacy
/// `rho`-zCDP with `rho = sensitivity^2 / (2 sigma^2)` for integer-valued queries whose L2
/// sensitivity is at most `sensitivity`, where sigma is the one the sampler really uses
/// (Canonne, Kamath and Steinke 2020: the Rényi divergence between discrete Gaussians shifted
/// by an integer `mu` is at most `alpha mu^2 / (2 sigma^2)`, and it adds up over independent
/// coordinates, giving `|mu|_2^2 / (2 sigma^2)` for vectors). [`Self::privacy_loss`]
/// reports that rho (rounded up); convert to `(epsilon, delta)` with
/// [`PrivacyLoss::epsilon_at`], which is always valid. The `(epsilon, delta)` calibrations
/// choose sigma as for continuous noise; CKS 2020 show the discrete Gaussian then has
/// essentially the same `(epsilon, delta)`, but the value reported is the proven zCDP one.
///
/// ```
/// use sotto_dp::mechanisms::{GaussianCalibration, GaussianMechanism};
/// use sotto_dp::rng::seeded_rng;
///
/// let calibration = GaussianCalibration::Zcdp { rho: 0.5 };
/// let mechanism = GaussianMechanism::new(1.0, calibration)?;
/// assert!(mechanism.sigma() >= 1.0);
/// let noisy = mechanism.release_vector(&mut seeded_rng(3), &[10, 20, 30]);
/// assert_eq!(noisy.len(), 3);
/// let sotto_dp::PrivacyLoss::Zcdp { rho } = mechanism.privacy_loss() else { unreachable!() };
/// assert!(rho >= 0.5 * 0.999 && rho <= 0.5 * 1.001);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianMechanism {
    sensitivity: f64,
    calibration: GaussianCalibration,
    noise: DiscreteGaussian,
}

impl GaussianMechanism {
    /// A Gaussian mechanism for integer queries with L2 `sensitivity`, calibrated as asked.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a bad sensitivity or calibration parameter (see
    /// [`GaussianCalibration::sigma`]) or a sigma too large to sample exactly.
    pub fn new(sensitivity: f64, calibration: GaussianCalibration) -> Result<Self> {
        let sigma = calibration.sigma(sensitivity)?;
        Ok(GaussianMechanism {
            sensitivity,
            calibration,
            noise: DiscreteGaussian::new(sigma)?,
        })
    }

    /// The privacy loss of one release: `rho`-zCDP, `rho = sensitivity^2 / (2 sigma^2)`.
    ///
    /// # Privacy
    /// See the type-level documentation.
    pub fn privacy_loss(&self) -> PrivacyLoss {
        PrivacyLoss::Zcdp {
            rho: zcdp_rho(self.sensitivity, self.noise.sigma()),
        }
    }

    /// The noise standard deviation parameter really used.
    pub fn sigma(&self) -> f64 {
        self.noise.sigma()
    }

    /// The L2 sensitivity the guarantee assumes.
    pub fn sensitivity(&self) -> f64 {
        self.sensitivity
    }

    /// The calibration the mechanism was built with.
    pub fn calibration(&self) -> GaussianCalibration {
        self.calibration
    }

    /// `value` plus discrete Gaussian noise (saturating at the `i64` range).
    pub fn release<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R, value: i64) -> i64 {
        value.saturating_add(self.noise.sample(rng))
    }

    /// Each coordinate plus independent discrete Gaussian noise.
    pub fn release_vector<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        values: &[i64],
    ) -> Vec<i64> {
        super::add_integer_noise(values, |noise| self.noise.fill(rng, noise))
    }

    /// A conservative confidence interval for the un-noised value of one coordinate, from the
    /// sub-Gaussian tail `P(|Z| >= t) <= 2 exp(-t^2 / (2 sigma^2))` of the discrete Gaussian
    /// (CKS 2020); post-processing.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `confidence` is not in (0, 1).
    pub fn confidence_interval(&self, released: i64, confidence: f64) -> Result<Estimate> {
        #[allow(clippy::cast_precision_loss)]
        let released = released as f64;
        estimators::gaussian_interval(released, self.sigma(), 1.0, confidence)
    }
}

/// The Gaussian mechanism on floating-point values: snap to a power-of-two [`Grid`], charge the
/// rounding to the L2 sensitivity (`sqrt(dim)` grid steps), add discrete Gaussian noise in
/// grid units.
///
/// # Privacy
/// `rho`-zCDP for `dim`-dimensional queries whose L2 sensitivity is at most `sensitivity`,
/// with `rho = charged^2 / (2 sigma_units^2)` where `charged = sensitivity / spacing +
/// sqrt(dim)` bounds the L2 sensitivity of the snapped query in grid units. The calibration
/// is applied to the charged sensitivity, so the requested target (zCDP rho, noise
/// multiplier, or the continuous `(epsilon, delta)` calibration) is met for the raw inputs.
/// Inputs must be finite; values beyond `2^62` grid steps are clamped (1-Lipschitz).
///
/// ```
/// use sotto_dp::mechanisms::{FloatGaussianMechanism, GaussianCalibration};
/// use sotto_dp::rng::seeded_rng;
///
/// let calibration = GaussianCalibration::Analytic { epsilon: 1.0, delta: 1e-6 };
/// let mechanism = FloatGaussianMechanism::new(1.0, calibration, 4)?;
/// let noisy = mechanism.release_vector(&mut seeded_rng(5), &[0.5, -0.25, 0.0, 1.0])?;
/// assert_eq!(noisy.len(), 4);
/// let continuous = sotto_dp::accounting::analytic_gaussian_sigma(1.0, 1e-6, 1.0)?;
/// assert!(mechanism.sigma() >= continuous); // the grid charge only adds noise
/// assert!(mechanism.sigma() <= continuous * 1.001);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FloatGaussianMechanism {
    sensitivity: f64,
    dim: usize,
    calibration: GaussianCalibration,
    grid: Grid,
    charged_sensitivity: f64,
    noise: DiscreteGaussian,
}

impl FloatGaussianMechanism {
    /// A Gaussian mechanism for `dim`-dimensional float queries with L2 `sensitivity`, on the
    /// default grid: the largest power of two at most
    /// `min(sensitivity, sigma) / (2^20 * sqrt(dim))`, coarsened if needed until sigma in grid
    /// units is at most half of [`MAX_GAUSSIAN_SIGMA`] (2^26). For long vectors with much
    /// noise the rounding charge then grows to `sqrt(dim) * spacing`, still a small fraction
    /// of sigma (about `sqrt(dim) / 2^25` of it).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a bad sensitivity, calibration or `dim == 0`.
    pub fn new(sensitivity: f64, calibration: GaussianCalibration, dim: usize) -> Result<Self> {
        check_dim(dim)?;
        let sigma = calibration.sigma(sensitivity)?;
        #[allow(clippy::cast_precision_loss)]
        let per_coordinate = sensitivity.min(sigma) / (dim as f64).sqrt();
        // sigma is linear in the sensitivity; keep sigma in grid units well inside what the
        // exact sampler supports, coarsening the grid if needed (only adds noise).
        let multiplier = sigma / sensitivity;
        let grid = Grid::for_scale(per_coordinate)?.coarsen_until(|g| {
            let units = multiplier * g.charged_l2_sensitivity(sensitivity, dim)?;
            Ok(units <= MAX_GAUSSIAN_SIGMA / 2.0)
        })?;
        Self::with_grid(sensitivity, calibration, dim, grid)
    }

    /// As [`Self::new`], on a caller-chosen grid.
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn with_grid(
        sensitivity: f64,
        calibration: GaussianCalibration,
        dim: usize,
        grid: Grid,
    ) -> Result<Self> {
        check_dim(dim)?;
        let charged_sensitivity = grid.charged_l2_sensitivity(sensitivity, dim)?;
        let sigma_units = calibration.sigma(charged_sensitivity)?;
        Ok(FloatGaussianMechanism {
            sensitivity,
            dim,
            calibration,
            grid,
            charged_sensitivity,
            noise: DiscreteGaussian::new(sigma_units)?,
        })
    }

    /// The privacy loss of one release: `rho`-zCDP on the charged sensitivity.
    ///
    /// # Privacy
    /// See the type-level documentation.
    pub fn privacy_loss(&self) -> PrivacyLoss {
        PrivacyLoss::Zcdp {
            rho: zcdp_rho(self.charged_sensitivity, self.noise.sigma()),
        }
    }

    /// The grid outputs lie on.
    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// The L2 sensitivity in grid units after charging the rounding.
    pub fn charged_sensitivity(&self) -> f64 {
        self.charged_sensitivity
    }

    /// The noise standard deviation parameter in data units.
    pub fn sigma(&self) -> f64 {
        self.noise.sigma() * self.grid.spacing()
    }

    /// The dimension the sensitivity refers to.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The L2 sensitivity (data units) the guarantee assumes.
    pub fn sensitivity(&self) -> f64 {
        self.sensitivity
    }

    /// The calibration the mechanism was built with.
    pub fn calibration(&self) -> GaussianCalibration {
        self.calibration
    }

    /// `value` snapped to the grid plus discrete Gaussian noise.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `value` is not finite or `dim != 1`.
    pub fn release<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R, value: f64) -> Result<f64> {
        self.grid
            .release_scalar(self.dim, value, || self.noise.sample(rng))
    }

    /// Each coordinate snapped to the grid plus independent discrete Gaussian noise.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `values.len() != dim` or a value is not finite.
    pub fn release_vector<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        values: &[f64],
    ) -> Result<Vec<f64>> {
        self.grid
            .release_vector(self.dim, values, |noise| self.noise.fill(rng, noise))
    }

    /// A conservative confidence interval for the raw value of one coordinate (sub-Gaussian
    /// tail, widened by half a grid step for the snapping); post-processing.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `confidence` is not in (0, 1) or `released` is not finite.
    pub fn confidence_interval(&self, released: f64, confidence: f64) -> Result<Estimate> {
        let estimate = estimators::gaussian_interval(
            released,
            self.noise.sigma(),
            self.grid.spacing(),
            confidence,
        )?;
        Ok(self.grid.widen_by_half_step(estimate))
    }
}
