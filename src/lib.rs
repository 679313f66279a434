//! # sotto: compute on private data
//!
//! Parties secret-share their values or clipped ML gradients so that the aggregator learns
//! only a differentially private, noised sum. MPC protects the inputs; DP protects the output.
//!
//! This crate is the facade: it re-exports the member crates.
//!
//! * [`dp`]: exact samplers, mechanisms, estimators and privacy accountants;
//! * [`mpc`]: secure aggregation;
//! * [`training`]: DP training on candle;
//! * [`stats`]: a party's CSV records for private statistics ([`mpc::stats`]).
#![forbid(unsafe_code)]

pub mod stats;

pub use sotto_dp as dp;
pub use sotto_mpc as mpc;
pub use sotto_training as training;

/// The README's Rust examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
