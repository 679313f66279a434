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
//! - [`stats`]: private statistics (sum, count, mean, histograms) over the parties' records;
//! - [`wire`]: the strict postcard codec; [`sim`]: the in-memory simulator.
//!
//! ## Main entry points
//!
//! | what | API |
//! |---|---|
//! | encode a real vector | [`encoding::FixedPointEncoder`] (`new`, `encode_ring`, `decode_sum`, `l2_bound`) |
//! | reject configurations that could wrap | [`encoding::check_no_wrap`], [`noise::DistributedNoise::check_no_wrap`] |
//! | noise shares and the privacy of the release | [`noise::DistributedNoise`] (`add_share`, `privacy_of`) |
//! | aggregator protocol, party side | [`secagg::SecAggClient`] (`new` / `new_noised`, `start`, `handle_message`, `poll_transmit`) |
//! | aggregator protocol, server side | [`secagg::SecAggAggregator`] (`start`, `handle_message`, `handle_timeout`, `poll_timeout`, `poll_transmit`, `result`) |
//! | parameters | [`secagg::SecAggConfig`] (`new`, `sparse`), [`secagg::SparseParams::recommended`] |
//! | messages and codec | [`secagg::ClientMessage`], [`secagg::ServerMessage`], [`wire::encode`], [`wire::decode_from`], [`wire::MAX_FRAME`] |
//! | peer-to-peer sharing | [`additive::AdditivePeer`] |
//! | in-memory runs | [`sim::Simulation`] |
//! | private statistics (sum, count, mean, histograms per column, one record = unit of privacy) | [`stats::StatsPlan`] (`new`, `contribute`, `release`), [`stats::StatsQuery`], [`stats::Records`] |
//! | secure sum over QUIC (feature `transport`) | [`securesum::SecureSumParty`], [`securesum::SecureSumAggregator`], [`securesum::p2p::SecureSumPeer`] |
//! | ids shared by core and transport | [`PartyId`], [`SessionId`] |
//!
//! Errors: [`Error::PeerMisbehaved`] names the party (or the aggregator) whose message was
//! rejected; the other variants are configuration or caller errors.
//!
//! ```rust
//! use sotto_mpc::encoding::{Clipping, FixedPointEncoder};
//! use sotto_mpc::noise::{DistributedNoise, Neighbouring, Sensitivity};
//! use sotto_mpc::secagg::{SecAggConfig, SessionId};
//! use sotto_mpc::sim::{SimOptions, Simulation};
//!
//! let (n, t, d) = (5, 3, 4);
//! let enc = FixedPointEncoder::new(Clipping::L2 { norm: 1.0 }, 4096.0, d)?;
//! let noise = DistributedNoise::new(500.0, t)?;
//! noise.check_no_wrap::<u32>(n, &enc)?; // before any round
//! let mut rng = sotto_dp::rng::seeded_rng(1);
//! let inputs = (0..n)
//!     .map(|_| {
//!         let mut z = enc.encode_ring::<u32, _>(&[0.1, 0.2, -0.3, 0.0], &mut rng)?;
//!         noise.add_share(&mut z, &mut rng);
//!         Ok(z)
//!     })
//!     .collect::<sotto_mpc::Result<Vec<_>>>()?;
//! let config = SecAggConfig::new(SessionId::random(&mut rng), n, t, d)?;
//! let out = Simulation::new(config, inputs, SimOptions::default())?.run().result?;
//! let sum = enc.decode_sum(out.sum()); // about [0.5, 1.0, -1.5, 0.0] plus noise
//! assert!((sum[1] - 1.0).abs() < 1.0);
//! let privacy = noise.privacy_of(&out, Sensitivity::of_encoder(&enc, Neighbouring::AddRemove), 0, 1e-6)?;
//! assert!(privacy.epsilon > 0.0);
//! # Ok::<(), sotto_mpc::Error>(())
//! ```
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
pub mod stats;
pub mod wire;

pub use error::{Error, PartyId, Peer, Result};
pub use secagg::SessionId;
#[cfg(feature = "transport")]
pub mod securesum;
#[cfg(feature = "transport")]
pub mod transport;
