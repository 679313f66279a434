//! # sotto-mpc: secure aggregation
//!
//! (Protocol core filled in on branch `mpc-core`.)
#![forbid(unsafe_code)]

#[cfg(feature = "transport")]
pub mod transport;
