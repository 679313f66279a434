//! # sotto-mpc: secure aggregation
//!
//! The sans-IO protocol core of sotto's secure sum: no sockets, clocks or async runtime; time
//! and randomness are parameters, so every run can be replayed in memory.
//!
//! - [`ring`]: arithmetic in Z_2^32 / Z_2^64;
//! - [`encoding`]: clipping, fixed-point scaling, randomized rounding, and the check that a
//!   sum cannot wrap;
//! - [`prg`]: ChaCha20 mask expansion into ring words;
//! - [`shamir`], [`crypto`]: t-of-n Shamir sharing, X25519, HKDF, ChaCha20-Poly1305;
//! - [`additive`]: the peer-to-peer additive sharing of the raise-averaging example;
//! - [`secagg`]: the aggregator protocol (Bonawitz et al. 2017; SecAgg+ sparse graphs);
//! - [`noise`]: distributed discrete Gaussian noise and the privacy of the released sum;
//! - [`wire`]: the strict postcard codec; [`sim`]: the in-memory simulator.
#![forbid(unsafe_code)]

pub mod additive;
pub mod crypto;
pub mod encoding;
pub mod error;
pub mod noise;
pub mod prg;
pub mod ring;
pub mod secagg;
pub mod shamir;
pub mod sim;
pub mod wire;

pub use error::{Error, PartyId, Peer, Result};
