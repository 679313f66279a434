//! Power-of-two grids for releasing floating-point values through integer noise.

use serde::{Deserialize, Serialize};

use crate::error::check_positive;
use crate::estimators::Estimate;
use crate::{Error, Result};

/// Grid values are clamped to `[-GRID_LIMIT, GRID_LIMIT]` (in grid units) before noise is added.
///
/// Clamping is 1-Lipschitz, so it never increases the sensitivity; it only keeps the integer
/// arithmetic far from `i64` overflow.
pub const GRID_LIMIT: i64 = 1 << 62;

/// How many grid steps fit in one unit of noise scale by default (2^20): the grid is fine
/// enough that the rounding it charges to the sensitivity costs about one part in a million.
pub const DEFAULT_STEPS_PER_SCALE: f64 = 1_048_576.0;

/// A grid of spacing `2^exponent` on which floating-point inputs are snapped before noise is added.
///
/// Multiplying or dividing an `f64` by a power of two is exact (barring overflow), so the
/// map from a value to its grid index and back introduces no error other than the rounding to
/// the nearest grid point, which the mechanisms charge to the sensitivity: for neighbouring
/// inputs `x, x'` with `|x - x'| <= sensitivity`, the snapped values satisfy
/// `|snap(x) - snap(x')| <= sensitivity + spacing` (each rounding moves a value by at most half
/// a step). Vector mechanisms charge `dim * spacing` (L1) or `sqrt(dim) * spacing` (L2).
///
/// ```
/// use sotto_dp::mechanisms::Grid;
/// let grid = Grid::with_granularity(0.1)?; // rounded down to 2^-4 = 0.0625
/// assert_eq!(grid.spacing(), 0.0625);
/// assert_eq!(grid.snap(1.0)?, 16);
/// assert_eq!(grid.value(16), 1.0);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grid {
    exponent: i32,
}

/// The smallest and largest exponents allowed: both `2^k` and `2^-k` are normal `f64`s.
const MIN_EXPONENT: i32 = -1022;
const MAX_EXPONENT: i32 = 1022;

/// `2^k` exactly, for `k` in `[MIN_EXPONENT, MAX_EXPONENT + 1]`.
fn pow2(k: i32) -> f64 {
    // Biased exponent in 1..=2046 for the allowed range: a normal float with zero mantissa.
    let biased = u64::try_from(k + 1023).unwrap_or(1023);
    f64::from_bits(biased << 52)
}

/// The exponent of the largest power of two `<= x`, for a positive normal finite `x`.
fn floor_log2(x: f64) -> i32 {
    let biased = ((x.to_bits() >> 52) & 0x7ff) as i32;
    biased - 1023
}

impl Grid {
    /// The grid of spacing `2^exponent`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `exponent` is outside `[-1022, 1022]`.
    pub fn from_exponent(exponent: i32) -> Result<Self> {
        if (MIN_EXPONENT..=MAX_EXPONENT).contains(&exponent) {
            Ok(Grid { exponent })
        } else {
            Err(Error::invalid(
                "grid exponent",
                exponent,
                "must lie in [-1022, 1022] so that the spacing 2^exponent is a normal f64",
            ))
        }
    }

    /// The grid whose spacing is the largest power of two at most `granularity`.
    ///
    /// Rounding the granularity down only makes the grid finer, which lowers the rounding
    /// charged to the sensitivity.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `granularity` is NaN, infinite, not positive, or below
    /// `2^-1022`.
    pub fn with_granularity(granularity: f64) -> Result<Self> {
        check_positive("granularity", granularity)?;
        if !granularity.is_normal() {
            return Err(Error::invalid(
                "granularity",
                granularity,
                "must be at least 2^-1022 (a normal f64)",
            ));
        }
        Self::from_exponent(floor_log2(granularity).min(MAX_EXPONENT))
    }

    /// The default grid for noise of the given `scale` (standard deviation or Laplace scale
    /// in the units of the data): the largest power of two at most `scale / 2^20`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `scale` is not finite and positive, or so small that
    /// the grid spacing would fall below `2^-1022`.
    pub fn for_scale(scale: f64) -> Result<Self> {
        check_positive("noise scale", scale)?;
        let target = scale / DEFAULT_STEPS_PER_SCALE;
        if !target.is_normal() {
            return Err(Error::invalid(
                "noise scale",
                scale,
                "is too small to put a grid 2^20 times finer below it; pass an explicit granularity",
            ));
        }
        Self::from_exponent(floor_log2(target).clamp(MIN_EXPONENT, MAX_EXPONENT))
    }

    /// The first grid, from `self` through ever coarser ones (spacing doubled each time), on
    /// which `fits` holds; used to keep the noise in grid units within what the exact samplers
    /// support. Coarsening only adds noise (the rounding charge grows).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if no grid up to spacing `2^1022` fits, or what `fits` returns.
    pub(crate) fn coarsen_until(self, mut fits: impl FnMut(Grid) -> Result<bool>) -> Result<Grid> {
        let mut grid = self;
        loop {
            if fits(grid)? {
                return Ok(grid);
            }
            grid = Grid::from_exponent(grid.exponent + 1)?;
        }
    }

    /// The exponent `k` of the spacing `2^k`.
    pub fn exponent(&self) -> i32 {
        self.exponent
    }

    /// The spacing `2^k` between grid points.
    pub fn spacing(&self) -> f64 {
        pow2(self.exponent)
    }

    /// The index of the grid point nearest to `x` (ties away from zero), clamped to
    /// `[-GRID_LIMIT, GRID_LIMIT]`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `x` is NaN or infinite: no finite sensitivity bound
    /// can cover such an input, so it is refused rather than silently clamped.
    pub fn snap(&self, x: f64) -> Result<i64> {
        if !x.is_finite() {
            return Err(Error::invalid(
                "value",
                x,
                "must be finite; clip or impute non-finite inputs before releasing them",
            ));
        }
        // Exact division by a power of two (may overflow to infinity, then saturate below).
        let scaled = (x * pow2(-self.exponent)).round();
        #[allow(clippy::cast_precision_loss)]
        let limit = GRID_LIMIT as f64;
        #[allow(clippy::cast_possible_truncation)]
        let units = scaled.clamp(-limit, limit) as i64;
        Ok(units)
    }

    /// The value of grid point `units`: `units * 2^k` (rounded to the nearest `f64` when
    /// `|units| > 2^53`, which is post-processing of an already private integer).
    pub fn value(&self, units: i64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let u = units as f64;
        u * self.spacing()
    }

    /// The L1 sensitivity, in grid units, of the snapped version of a `dim`-dimensional query
    /// with L1 sensitivity `l1_sensitivity` (in data units): `l1 / 2^k + dim`, rounded up.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `l1_sensitivity` is not finite and positive, or the
    /// result overflows.
    pub fn charged_l1_sensitivity(&self, l1_sensitivity: f64, dim: usize) -> Result<f64> {
        check_positive("sensitivity", l1_sensitivity)?;
        #[allow(clippy::cast_precision_loss)]
        let d = dim as f64;
        let charged = (l1_sensitivity * pow2(-self.exponent) + d).next_up();
        check_positive("sensitivity in grid units", charged)
    }

    /// The L2 sensitivity, in grid units, of the snapped version of a `dim`-dimensional query
    /// with L2 sensitivity `l2_sensitivity` (in data units): `l2 / 2^k + sqrt(dim)`, rounded up.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `l2_sensitivity` is not finite and positive, or the
    /// result overflows.
    pub fn charged_l2_sensitivity(&self, l2_sensitivity: f64, dim: usize) -> Result<f64> {
        check_positive("sensitivity", l2_sensitivity)?;
        #[allow(clippy::cast_precision_loss)]
        let root = (dim as f64).sqrt().next_up();
        let charged = (l2_sensitivity * pow2(-self.exponent) + root).next_up();
        check_positive("sensitivity in grid units", charged)
    }
}

/// The release steps the float mechanisms share: snap to the grid, add integer noise in grid
/// units, map back; and the half-step widening of their confidence intervals.
impl Grid {
    /// `value` snapped to the grid plus one noise draw from `sample` (in grid units), for a
    /// mechanism calibrated for `dim` coordinates (which must be 1).
    pub(super) fn release_scalar(
        &self,
        dim: usize,
        value: f64,
        sample: impl FnOnce() -> i64,
    ) -> Result<f64> {
        if dim != 1 {
            return Err(Error::invalid(
                "dim",
                dim,
                "release() is for scalars; use release_vector() for a vector mechanism",
            ));
        }
        let units = self.snap(value)?;
        Ok(self.value(units.saturating_add(sample())))
    }

    /// Each coordinate snapped to the grid plus independent noise that `fill` writes (in grid
    /// units), for a mechanism calibrated for `dim` coordinates.
    pub(super) fn release_vector(
        &self,
        dim: usize,
        values: &[f64],
        fill: impl FnOnce(&mut [i64]),
    ) -> Result<Vec<f64>> {
        if values.len() != dim {
            return Err(Error::invalid(
                "values.len()",
                values.len(),
                format!("the mechanism was calibrated for dim = {dim}"),
            ));
        }
        let units = values
            .iter()
            .map(|v| self.snap(*v))
            .collect::<Result<Vec<i64>>>()?;
        let mut noise = vec![0i64; values.len()];
        fill(&mut noise);
        Ok(units
            .iter()
            .zip(&noise)
            .map(|(u, z)| self.value(u.saturating_add(*z)))
            .collect())
    }

    /// Widens an interval for the snapped value by half a step on each side, so that it covers
    /// the raw input.
    pub(super) fn widen_by_half_step(&self, mut estimate: Estimate) -> Estimate {
        let half = self.spacing() / 2.0;
        estimate.ci_low -= half;
        estimate.ci_high += half;
        estimate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spacing_is_an_exact_power_of_two() {
        for k in [-1022, -60, -20, -1, 0, 1, 7, 1022] {
            let g = Grid::from_exponent(k).unwrap();
            assert_eq!(g.spacing(), 2f64.powi(k), "{k}");
        }
        assert!(Grid::from_exponent(1023).is_err());
        assert!(Grid::from_exponent(-1023).is_err());
    }

    #[test]
    fn granularity_and_scale_round_down_to_powers_of_two() {
        assert_eq!(Grid::with_granularity(1.0).unwrap().exponent(), 0);
        assert_eq!(Grid::with_granularity(0.99).unwrap().exponent(), -1);
        assert_eq!(Grid::with_granularity(3.0).unwrap().exponent(), 1);
        // scale 1: spacing 2^-20; scale 3: 3 / 2^20 -> 2^-19 (since 2 <= 3 < 4).
        assert_eq!(Grid::for_scale(1.0).unwrap().exponent(), -20);
        assert_eq!(Grid::for_scale(3.0).unwrap().exponent(), -19);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-320] {
            assert!(Grid::with_granularity(bad).is_err(), "{bad}");
        }
        assert!(Grid::for_scale(1e-305).is_err());
    }

    #[test]
    fn snapping_is_nearest_and_clamped() {
        let g = Grid::from_exponent(-2).unwrap();
        assert_eq!(g.snap(0.3).unwrap(), 1);
        assert_eq!(g.snap(0.375).unwrap(), 2); // tie: away from zero
        assert_eq!(g.snap(-0.4).unwrap(), -2);
        assert_eq!(g.snap(1e300).unwrap(), GRID_LIMIT);
        assert_eq!(g.snap(-1e300).unwrap(), -GRID_LIMIT);
        assert!(g.snap(f64::NAN).is_err());
        assert!(g.snap(f64::INFINITY).is_err());
        assert_eq!(g.value(-3), -0.75);
    }

    #[test]
    fn rounding_is_charged_to_the_sensitivity() {
        let g = Grid::from_exponent(-3).unwrap(); // spacing 1/8
        // L1 sensitivity 1 = 8 units, plus 1 unit of rounding per coordinate.
        assert!(g.charged_l1_sensitivity(1.0, 1).unwrap() >= 9.0);
        assert!(g.charged_l1_sensitivity(1.0, 4).unwrap() >= 12.0);
        assert!(g.charged_l2_sensitivity(1.0, 4).unwrap() >= 10.0);
        assert!(g.charged_l1_sensitivity(f64::NAN, 1).is_err());
        assert!(g.charged_l2_sensitivity(0.0, 1).is_err());
    }
}
