//! # sotto-dp: differential privacy you can trust, at speed
//!
//! Exact samplers, mechanisms, estimators and privacy accountants for sotto. This crate does
//! no I/O and knows nothing of tensors or networks.
//!
//! * [`sampling`]: exact samplers on integers (Bernoulli with rational `p`, Bernoulli(exp(-x)),
//!   discrete Laplace, discrete Gaussian, distributed noise shares). No noise is ever derived
//!   from a floating-point uniform (Mironov 2012).
//! * [`mechanisms`]: Laplace, Gaussian, randomized response, exponential mechanism and
//!   report-noisy-max; each reports the [`PrivacyLoss`] it spends.
//! * [`estimators`]: unbiased estimates with standard errors and confidence intervals.
//! * [`accounting`]: RDP, zCDP and PLD accountants, composition theorems, conversions and a
//!   privacy budget (filter). All arithmetic rounds against the user.
//!
//! Randomness comes from a [`rand_core::CryptoRng`]; [`rng::os_rng`] gives ChaCha20 seeded from
//! the operating system, [`rng::seeded_rng`] a reproducible one for tests.
#![forbid(unsafe_code)]

pub mod accounting;
pub mod error;
pub mod estimators;
pub mod loss;
pub mod math;
pub mod mechanisms;
pub mod rng;
pub mod sampling;

pub use error::{Error, Result};
pub use loss::PrivacyLoss;
pub use rand_core;
