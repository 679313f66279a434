//! Differentially private mechanisms. Each one reports the [`crate::PrivacyLoss`] it spends.
//!
//! | mechanism | input | noise | guarantee |
//! |---|---|---|---|
//! | [`LaplaceMechanism`] | integers (scalar or vector, L1 sensitivity) | discrete Laplace | pure epsilon |
//! | [`FloatLaplaceMechanism`] | floats, snapped to a [`Grid`] | discrete Laplace in grid units | pure epsilon |
//! | [`GaussianMechanism`] | integers (scalar or vector, L2 sensitivity) | discrete Gaussian | rho-zCDP |
//! | [`FloatGaussianMechanism`] | floats, snapped to a [`Grid`] | discrete Gaussian in grid units | rho-zCDP |
//! | [`TwoCoinResponse`] | one bit | two fair coins (the poll of the article) | epsilon = ln 3 |
//! | [`BinaryRandomizedResponse`] | one bit | exact rejection sampler | pure epsilon (local) |
//! | [`KaryRandomizedResponse`] | one of `k` categories | exact rejection sampler | pure epsilon (local) |
//! | [`PermuteAndFlip`] | candidate scores | Bernoulli(exp(-x)) on exact rationals | pure epsilon |
//! | [`ReportNoisyMax`] | candidate scores | discrete Laplace | pure epsilon |
//!
//! # How these mechanisms stay exact
//!
//! * All randomness comes from the exact samplers of [`crate::sampling`] (uniform integers,
//!   Bernoulli with a rational or `exp(-rational)` parameter, discrete Laplace, discrete
//!   Gaussian). No noise is derived from a floating-point uniform, so the attack of Mironov
//!   (2012) on the low-order bits of floating-point Laplace noise does not apply.
//! * An `f64` parameter that enters a sampler (an epsilon, a coefficient) is converted to an
//!   exact rational and rounded in the direction that *adds* noise; the privacy loss reported
//!   is the one requested, which is then an upper bound on the real one.
//! * Floating-point inputs are snapped to a power-of-two [`Grid`] before noise is added, and the
//!   worst-case rounding error is *charged to the sensitivity*, so the guarantee holds for the
//!   inputs the caller actually has, not only for grid points. The output is an integer
//!   multiple of the grid spacing; converting it back to `f64` is post-processing.
//!
//! See `docs/privacy/mechanisms.md` for the reasoning behind each guarantee.

mod exponential;
mod gaussian;
mod grid;
mod laplace;
mod randomized_response;
pub(crate) mod rational;

pub use exponential::{PermuteAndFlip, ReportNoisyMax};
pub use gaussian::{FloatGaussianMechanism, GaussianCalibration, GaussianMechanism};
pub use grid::{DEFAULT_STEPS_PER_SCALE, GRID_LIMIT, Grid};
pub use laplace::{FloatLaplaceMechanism, LaplaceMechanism};
pub use randomized_response::{BinaryRandomizedResponse, KaryRandomizedResponse, TwoCoinResponse};

/// `values` plus independent integer noise that `fill` writes, coordinate by coordinate
/// (saturating): the release step the integer Laplace and Gaussian mechanisms share.
pub(crate) fn add_integer_noise(values: &[i64], fill: impl FnOnce(&mut [i64])) -> Vec<i64> {
    let mut noise = vec![0i64; values.len()];
    fill(&mut noise);
    values
        .iter()
        .zip(&noise)
        .map(|(v, z)| v.saturating_add(*z))
        .collect()
}
