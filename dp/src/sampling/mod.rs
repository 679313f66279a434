//! Exact samplers on integers.
//!
//! Everything here is exact: the output distribution is exactly the stated one, given a
//! uniform random bit source. No sample is ever derived from a floating-point uniform
//! (Mironov 2012); parameters given as `f64` are converted to exact rationals, rounded in the
//! direction that adds noise (against the user).
//!
//! API CONTRACT (fixed, other crates build on it; bodies are filled in on branch `dp-sampling`).

use rand_core::{CryptoRng, RngCore};

use crate::Result;

mod distributed;
pub use distributed::DistributedDiscreteGaussian;

/// A uniform integer in `[0, n)`, exactly (rejection sampling, no modulo bias).
///
/// # Errors
/// [`crate::Error::InvalidParameter`] if `n == 0`.
pub fn uniform_below<R: RngCore + CryptoRng + ?Sized>(rng: &mut R, n: u64) -> Result<u64> {
    let _ = (rng, n);
    todo!("dp-sampling")
}

/// Bernoulli(`num / den`), exactly.
///
/// # Errors
/// [`crate::Error::InvalidParameter`] if `den == 0` or `num > den`.
pub fn bernoulli_rational<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<bool> {
    let _ = (rng, num, den);
    todo!("dp-sampling")
}

/// Bernoulli(exp(-`num / den`)), exactly (Canonne, Kamath, Steinke 2020, Algorithm 1).
///
/// # Errors
/// [`crate::Error::InvalidParameter`] if `den == 0`.
pub fn bernoulli_exp_neg<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<bool> {
    let _ = (rng, num, den);
    todo!("dp-sampling")
}

/// The discrete Laplace distribution on the integers: P(x) proportional to exp(-|x| / scale).
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteLaplace {
    _private: (),
}

impl DiscreteLaplace {
    /// A sampler with the given `scale` (> 0). The scale actually used is a rational at least
    /// `scale` (rounded up, never less noise); [`Self::scale`] reports it.
    ///
    /// # Errors
    /// [`crate::Error::InvalidParameter`] if `scale` is NaN, infinite, zero, negative, or too
    /// large to represent exactly.
    pub fn new(scale: f64) -> Result<Self> {
        let _ = scale;
        todo!("dp-sampling")
    }

    /// The scale the sampler really uses (>= the requested one).
    pub fn scale(&self) -> f64 {
        todo!("dp-sampling")
    }

    /// One sample.
    pub fn sample<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R) -> i64 {
        let _ = rng;
        todo!("dp-sampling")
    }

    /// Fills `out` with independent samples.
    pub fn fill<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R, out: &mut [i64]) {
        let _ = (rng, out);
        todo!("dp-sampling")
    }
}

/// The discrete Gaussian distribution on the integers: P(x) proportional to
/// exp(-x^2 / (2 sigma^2)) (Canonne, Kamath, Steinke 2020).
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteGaussian {
    _private: (),
}

impl DiscreteGaussian {
    /// A sampler with the given `sigma` (> 0). sigma^2 is converted to a rational at least
    /// `sigma^2` (rounded up); [`Self::sigma`] reports the sigma really used.
    ///
    /// # Errors
    /// [`crate::Error::InvalidParameter`] if `sigma` is NaN, infinite, zero, negative, or too
    /// large to sample exactly.
    pub fn new(sigma: f64) -> Result<Self> {
        let _ = sigma;
        todo!("dp-sampling")
    }

    /// The sigma the sampler really uses (>= the requested one).
    pub fn sigma(&self) -> f64 {
        todo!("dp-sampling")
    }

    /// One sample.
    pub fn sample<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R) -> i64 {
        let _ = rng;
        todo!("dp-sampling")
    }

    /// Fills `out` with independent samples.
    pub fn fill<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R, out: &mut [i64]) {
        let _ = (rng, out);
        todo!("dp-sampling")
    }
}
