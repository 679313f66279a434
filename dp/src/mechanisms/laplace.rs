//! The Laplace mechanism with discrete Laplace noise, on integers and (through a grid) floats.

use rand_core::{CryptoRng, RngCore};

use super::Grid;
use crate::error::check_positive;
use crate::estimators::{self, Estimate};
use crate::sampling::{DiscreteLaplace, MAX_LAPLACE_SCALE};
use crate::{Error, PrivacyLoss, Result};

/// `sensitivity / epsilon`, rounded up.
fn laplace_scale(sensitivity: f64, epsilon: f64) -> Result<f64> {
    let scale = (sensitivity / epsilon).next_up();
    check_positive("noise scale (sensitivity / epsilon)", scale)
}

/// The Laplace mechanism on integers: `value + Z` with `Z` discrete Laplace of scale
/// `sensitivity / epsilon` (rounded up), independently per coordinate.
///
/// Use it for counts, sums of integers and histograms. For a vector query, `sensitivity` is
/// the L1 sensitivity: the largest `sum_i |q_i(D) - q_i(D')|` over neighbouring datasets.
///
/// # Privacy
/// `epsilon`-DP (pure) for integer-valued queries whose L1 sensitivity is at most
/// `sensitivity`: the discrete Laplace density ratio at any output is at most
/// `exp(|x - x'|_1 / scale) <= exp(epsilon)`. The sampler's scale is rounded up, so the real
/// epsilon is at most the reported one. Outputs saturate at the `i64` range (post-processing).
///
/// ```
/// use sotto_dp::mechanisms::LaplaceMechanism;
/// use sotto_dp::rng::seeded_rng;
///
/// let mechanism = LaplaceMechanism::new(1.0, 0.5)?; // a count, epsilon = 0.5
/// let mut rng = seeded_rng(7);
/// let noisy = mechanism.release(&mut rng, 1234);
/// let interval = mechanism.confidence_interval(noisy, 0.95)?;
/// assert!(interval.ci_low <= noisy as f64 && noisy as f64 <= interval.ci_high);
/// assert_eq!(mechanism.privacy_loss(), sotto_dp::PrivacyLoss::pure(0.5)?);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LaplaceMechanism {
    epsilon: f64,
    sensitivity: f64,
    noise: DiscreteLaplace,
}

impl LaplaceMechanism {
    /// A Laplace mechanism for integer queries with L1 `sensitivity` at privacy `epsilon`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `sensitivity` or `epsilon` is NaN, infinite, zero or
    /// negative, or the scale `sensitivity / epsilon` is too large to sample exactly.
    pub fn new(sensitivity: f64, epsilon: f64) -> Result<Self> {
        check_positive("sensitivity", sensitivity)?;
        check_positive("epsilon", epsilon)?;
        let noise = DiscreteLaplace::new(laplace_scale(sensitivity, epsilon)?)?;
        Ok(LaplaceMechanism {
            epsilon,
            sensitivity,
            noise,
        })
    }

    /// The privacy loss of one release: pure `epsilon`.
    ///
    /// # Privacy
    /// See the type-level documentation.
    pub fn privacy_loss(&self) -> PrivacyLoss {
        PrivacyLoss::Pure {
            epsilon: self.epsilon,
        }
    }

    /// The L1 sensitivity the guarantee assumes.
    pub fn sensitivity(&self) -> f64 {
        self.sensitivity
    }

    /// The noise scale really used (at least `sensitivity / epsilon`).
    pub fn scale(&self) -> f64 {
        self.noise.scale()
    }

    /// `value` plus discrete Laplace noise.
    pub fn release<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R, value: i64) -> i64 {
        value.saturating_add(self.noise.sample(rng))
    }

    /// Each coordinate plus independent discrete Laplace noise.
    ///
    /// # Privacy
    /// The guarantee covers the whole vector when `sensitivity` bounds its L1 sensitivity.
    pub fn release_vector<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        values: &[i64],
    ) -> Vec<i64> {
        super::add_integer_noise(values, |noise| self.noise.fill(rng, noise))
    }

    /// A confidence interval for the un-noised value of one coordinate, from the exact
    /// discrete Laplace tail (post-processing: it spends no privacy).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `confidence` is not in (0, 1).
    pub fn confidence_interval(&self, released: i64, confidence: f64) -> Result<Estimate> {
        #[allow(clippy::cast_precision_loss)]
        let released = released as f64;
        estimators::laplace_interval(released, self.scale(), 1.0, confidence)
    }
}

/// The Laplace mechanism on floating-point values: snap to a power-of-two [`Grid`], charge the
/// rounding to the sensitivity, add discrete Laplace noise in grid units.
///
/// The output is always an integer multiple of the grid spacing, so its low-order bits carry
/// no information about the input (unlike textbook floating-point Laplace noise, Mironov 2012).
///
/// # Privacy
/// `epsilon`-DP (pure) for `dim`-dimensional queries whose L1 sensitivity is at most
/// `sensitivity`. Snapping moves each coordinate by at most half a grid step, so the snapped
/// query has L1 sensitivity at most `sensitivity / spacing + dim` grid units; the noise scale
/// is that charged sensitivity divided by `epsilon` (rounded up). Inputs must be finite
/// (NaN and infinities are refused); values beyond `2^62` grid steps are clamped, which
/// does not increase the sensitivity.
///
/// ```
/// use sotto_dp::mechanisms::FloatLaplaceMechanism;
/// use sotto_dp::rng::seeded_rng;
///
/// // An average raise, each raise clipped to [0, 10000], four engineers: sensitivity 2500.
/// let mechanism = FloatLaplaceMechanism::new(2500.0, 1.0, 1)?;
/// let noisy = mechanism.release(&mut seeded_rng(1), 3171.5)?;
/// // The output is a multiple of the grid spacing.
/// let spacing = mechanism.grid().spacing();
/// assert_eq!((noisy / spacing).fract(), 0.0);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FloatLaplaceMechanism {
    epsilon: f64,
    sensitivity: f64,
    dim: usize,
    grid: Grid,
    charged_sensitivity: f64,
    noise: DiscreteLaplace,
}

impl FloatLaplaceMechanism {
    /// A Laplace mechanism for `dim`-dimensional float queries with L1 `sensitivity`, on the
    /// default grid: the largest power of two at most
    /// `min(sensitivity, sensitivity / epsilon) / (2^20 * dim)`, so that the rounding charge
    /// raises the noise by at most about one part in a million, coarsened if needed until the
    /// noise scale in grid units is at most half of [`MAX_LAPLACE_SCALE`].
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `sensitivity` or `epsilon` is not finite and positive,
    /// `dim` is zero, or the resulting scale cannot be sampled exactly.
    pub fn new(sensitivity: f64, epsilon: f64, dim: usize) -> Result<Self> {
        check_positive("sensitivity", sensitivity)?;
        check_positive("epsilon", epsilon)?;
        check_dim(dim)?;
        #[allow(clippy::cast_precision_loss)]
        let per_coordinate = sensitivity.min(sensitivity / epsilon) / dim as f64;
        // Keep the noise scale in grid units well inside what the exact sampler supports.
        let grid = Grid::for_scale(per_coordinate)?.coarsen_until(|g| {
            let units = laplace_scale(g.charged_l1_sensitivity(sensitivity, dim)?, epsilon)?;
            Ok(units <= MAX_LAPLACE_SCALE / 2.0)
        })?;
        Self::with_grid(sensitivity, epsilon, dim, grid)
    }

    /// As [`Self::new`], on a caller-chosen grid (see [`Grid::with_granularity`]). A coarser
    /// grid gives shorter outputs but charges more rounding (`dim * spacing`) to the sensitivity.
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn with_grid(sensitivity: f64, epsilon: f64, dim: usize, grid: Grid) -> Result<Self> {
        check_positive("sensitivity", sensitivity)?;
        check_positive("epsilon", epsilon)?;
        check_dim(dim)?;
        let charged_sensitivity = grid.charged_l1_sensitivity(sensitivity, dim)?;
        let noise = DiscreteLaplace::new(laplace_scale(charged_sensitivity, epsilon)?)?;
        Ok(FloatLaplaceMechanism {
            epsilon,
            sensitivity,
            dim,
            grid,
            charged_sensitivity,
            noise,
        })
    }

    /// The privacy loss of one release: pure `epsilon`.
    ///
    /// # Privacy
    /// See the type-level documentation.
    pub fn privacy_loss(&self) -> PrivacyLoss {
        PrivacyLoss::Pure {
            epsilon: self.epsilon,
        }
    }

    /// The grid outputs lie on.
    pub fn grid(&self) -> Grid {
        self.grid
    }

    /// The L1 sensitivity in grid units after charging the rounding.
    pub fn charged_sensitivity(&self) -> f64 {
        self.charged_sensitivity
    }

    /// The noise scale really used, in data units (at least `sensitivity / epsilon`).
    pub fn scale(&self) -> f64 {
        self.noise.scale() * self.grid.spacing()
    }

    /// The dimension the sensitivity refers to.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The L1 sensitivity (data units) the guarantee assumes.
    pub fn sensitivity(&self) -> f64 {
        self.sensitivity
    }

    /// `value` snapped to the grid plus discrete Laplace noise, as a multiple of the spacing.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `value` is not finite or the mechanism was built for
    /// `dim != 1`.
    pub fn release<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R, value: f64) -> Result<f64> {
        self.grid
            .release_scalar(self.dim, value, || self.noise.sample(rng))
    }

    /// Each coordinate snapped to the grid plus independent discrete Laplace noise.
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

    /// A confidence interval for the un-noised (snapped) value of one coordinate, from the
    /// exact discrete Laplace tail, widened by the half-step snapping error so that it covers
    /// the raw input (post-processing).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `confidence` is not in (0, 1) or `released` is not finite.
    pub fn confidence_interval(&self, released: f64, confidence: f64) -> Result<Estimate> {
        let estimate = estimators::laplace_interval(
            released,
            self.noise.scale(),
            self.grid.spacing(),
            confidence,
        )?;
        Ok(self.grid.widen_by_half_step(estimate))
    }
}

pub(super) fn check_dim(dim: usize) -> Result<usize> {
    if dim == 0 {
        Err(Error::invalid("dim", dim, "must be at least 1"))
    } else {
        Ok(dim)
    }
}
