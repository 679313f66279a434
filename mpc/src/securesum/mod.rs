//! Secure sum over QUIC: tokio drivers that run the sans-IO protocol roles over
//! [`crate::transport`], behind one high-level entry point per role.
//!
//! | role | entry point | protocol |
//! |---|---|---|
//! | party (aggregator mode) | [`SecureSumParty::run`] | [`crate::secagg`] (SecAgg with dropout recovery) |
//! | aggregator | [`SecureSumAggregator::run`] (or [`SecureSumAggregator::bind`] + [`SecureSumAggregator::serve`]) | [`crate::secagg`] |
//! | peer (peer-to-peer mode) | [`p2p::SecureSumPeer::run`] | [`crate::additive`] (the article's protocol) |
//!
//! A party contributes a scalar or a vector of `f64` or `i64` ([`SecureSumInput`]) with its
//! clipping bound, optionally with its share of distributed DP noise ([`NoiseSpec`]: a target
//! `(epsilon, delta)` or a noise multiplier). The aggregator returns the (noised) sum, the
//! survivors, the dropped parties and the privacy spent ([`SumOutcome`]).
//!
//! # Rounds and deadlines
//! The aggregator waits up to [`Deadlines::join`] for the parties to connect, then runs the
//! four SecAgg rounds; each round ends when every expected party has answered or after
//! [`Deadlines::round`]. A party that is silent past the deadline (crashed, killed, cut off) or
//! whose message is rejected is treated as dropped and the round goes on without it; the sum
//! is still exact over the survivors as long as at least `threshold` remain. After the last
//! round the aggregator sends the released sum to the parties (envelope round
//! [`RELEASE_ROUND`]).
//!
//! # Party numbering
//! Certificates and the transport name parties `party-1` .. `party-n` ([`PartyId`] `1..=n`);
//! the protocol core indexes them `0..n`. [`PartyNumbering`] is the one place that converts,
//! and errors from the core are renumbered before they reach the caller, so every error and
//! log line names parties as their certificates do.
//!
//! # Exact integer sums
//! An [`SecureSumInput::I64`] is clamped to the L-infinity bound and mapped into the ring with
//! no rounding: with scale 1, the sum is exact (the raise example's 12686).
//!
//! # Example
//! Four parties and an aggregator, all on loopback in one process:
//! ```rust
//! use sotto_mpc::encoding::Clipping;
//! use sotto_mpc::securesum::{AggregatorConfig, PartyConfig, SecureSumAggregator, SecureSumInput, SecureSumParams, SecureSumParty};
//! use sotto_mpc::transport::certs::generate_dev_pki;
//! use sotto_mpc::{PartyId, SessionId};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("sotto-doc-securesum-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! generate_dev_pki(&dir, 4, &[])?;
//! let params = SecureSumParams::new(SessionId([3; 16]), 4, 1, Clipping::LInf { bound: 10_000.0 })?;
//! let aggregator = SecureSumAggregator::bind(AggregatorConfig::from_dir(
//!     params.clone(), "127.0.0.1:0".parse()?, &dir)?)?;
//! let addr = aggregator.local_addr();
//! let mut parties = Vec::new();
//! for (id, raise) in [(1, 3800), (2, 2514), (3, 2982), (4, 3390)] {
//!     let config = PartyConfig::from_dir(params.clone(), PartyId(id), addr, &dir)?;
//!     parties.push(tokio::spawn(SecureSumParty::run(config, SecureSumInput::scalar_i64(raise))));
//! }
//! let outcome = aggregator.serve().await?;
//! assert_eq!(outcome.sum, vec![12686.0]);
//! assert_eq!(outcome.survivors.len(), 4);
//! for party in parties {
//!     assert_eq!(party.await??.sum, Some(vec![12686.0]));
//! }
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::encoding::{Clipping, FixedPointEncoder};
use crate::error::{PartyId, Peer};
use crate::noise::{DistributedNoise, Neighbouring, ReleasePrivacy, Sensitivity};
use crate::ring::RingWord;
use crate::secagg::{SecAggConfig, SessionId};
use crate::transport::{self, Identity};

pub mod aggregator;
pub mod agreement;
pub mod p2p;
pub mod party;

pub use aggregator::{AggregatorConfig, SecureSumAggregator};
pub use agreement::{Mismatch, SessionDigest};
pub use party::{PartyConfig, SecureSumParty};

/// The envelope round in which the aggregator sends the released sum to the parties (after
/// the four SecAgg rounds `0..=3`).
pub const RELEASE_ROUND: u64 = 4;

/// How long a party waits beyond the aggregator's round deadline before giving up on it.
const SLACK: Duration = Duration::from_secs(5);

/// Converts between transport party ids (`1..=n`, as in certificates) and protocol-core ids
/// (`0..n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartyNumbering {
    parties: usize,
}

impl PartyNumbering {
    /// Numbering for `parties` parties.
    pub fn new(parties: usize) -> Self {
        Self { parties }
    }

    /// The core id of transport party `id`, or `None` if `id` is not in `1..=n`.
    pub fn to_core(self, id: PartyId) -> Option<PartyId> {
        id.0.checked_sub(1)
            .filter(|core| (*core as usize) < self.parties)
            .map(PartyId)
    }

    /// The transport id of core party `core`.
    pub fn to_transport(self, core: PartyId) -> PartyId {
        PartyId(core.0.saturating_add(1))
    }

    /// The transport identity of core party `core`.
    pub fn identity(self, core: PartyId) -> Identity {
        Identity::Party(self.to_transport(core))
    }

    /// The transport ids `1..=n`.
    pub fn all(self) -> impl Iterator<Item = PartyId> {
        (1..=self.parties as u32).map(PartyId)
    }

    /// Renumbers the parties named by a core error into transport numbering.
    pub fn renumber(self, error: crate::Error) -> crate::Error {
        match error {
            crate::Error::PeerMisbehaved {
                party: Peer::Party(p),
                reason,
            } => crate::Error::PeerMisbehaved {
                party: Peer::Party(self.to_transport(p)),
                reason,
            },
            crate::Error::InconsistentShares { owner } => crate::Error::InconsistentShares {
                owner: self.to_transport(owner),
            },
            other => other,
        }
    }
}

/// How a secure sum is run, which decides who sees the release and what it can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SumMode {
    /// Through an aggregator that unmasks only the sum (SecAgg).
    #[default]
    Aggregator,
    /// Peer to peer: every peer learns the total (the article's protocol).
    PeerToPeer,
}

/// The ring the sum is computed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RingBits {
    /// Z_2^32: half the bytes on the wire; enough for gradients with moderate scale.
    U32,
    /// Z_2^64 (default): room for exact integer sums of large values.
    #[default]
    U64,
}

/// The distributed DP noise added by the parties.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum NoiseSpec {
    /// No noise: the exact sum is released (input privacy only).
    #[default]
    None,
    /// Calibrate the noise so that the release is `(epsilon, delta)`-DP when only the honest
    /// parties' noise counts ([`SecureSumParams::honest_noise_shares`]: `threshold -
    /// colluders` with an aggregator), for add/remove of one party's input.
    EpsilonDelta {
        /// Target epsilon (> 0).
        epsilon: f64,
        /// Target delta in (0, 1).
        delta: f64,
    },
    /// The honest parties' noise ([`SecureSumParams::honest_noise_shares`]) has standard
    /// deviation `multiplier` times the L2 sensitivity; epsilon is reported at `delta`.
    Multiplier {
        /// Noise multiplier (> 0).
        multiplier: f64,
        /// The delta at which epsilon is reported, in (0, 1).
        delta: f64,
    },
    /// Like [`NoiseSpec::EpsilonDelta`], but calibrated for the given `sensitivity` (in ring
    /// units) instead of the clipping bound of a party's whole input: the inputs are sums of
    /// records bounded one by one (as built by [`crate::stats`]), and the reported privacy
    /// is for one record added or removed.
    Record {
        /// Target epsilon (> 0).
        epsilon: f64,
        /// Target delta in (0, 1).
        delta: f64,
        /// L2 and L1 sensitivity of the sum to one record, in ring units.
        sensitivity: Sensitivity,
    },
}

/// Time limits of a secure sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// How long the aggregator waits for the parties to connect (and a party keeps trying to
    /// reach the aggregator). Default 30 s.
    pub join: Duration,
    /// How long each protocol round lasts at most; a party silent past it is dropped.
    /// Default 10 s.
    pub round: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            join: Duration::from_secs(30),
            round: Duration::from_secs(10),
        }
    }
}

impl Deadlines {
    /// Deadlines sized for `parties` parties summing vectors of length `dim`, for the worst
    /// case where every party shares one small machine with the aggregator (a local run):
    ///
    /// * join: 30 s plus 20 ms per party (TLS handshakes and certificate checks are serial
    ///   work at the aggregator);
    /// * round: 10 s, plus 200 µs per neighbour of every party (`parties * min(parties - 1,
    ///   256)`: two X25519 agreements, a Shamir share and its encryption each), plus 10 ns per
    ///   mask coordinate the parties expand in a round (`parties * (neighbours + 1) * dim`;
    ///   about 4 times the ChaCha rate of one core), so that a large sum is not cut short. A
    ///   party silent past it is dropped, so a longer deadline only delays noticing a crashed
    ///   party.
    ///
    /// About [`Deadlines::default`] for small sizes (10 parties: 10.02 s).
    pub fn for_size(parties: usize, dim: usize) -> Self {
        let n = parties as f64;
        let neighbours = (n - 1.0).clamp(0.0, 256.0);
        let masks = n * (neighbours + 1.0) * dim as f64;
        let join = 30.0 + 0.02 * n;
        let round = 10.0 + 2e-4 * n * neighbours + 1e-8 * masks;
        Deadlines {
            join: Duration::from_secs_f64(join.min(3600.0)),
            round: Duration::from_secs_f64(round.min(3600.0)),
        }
    }
}

/// The public parameters of one secure sum, identical at every party and the aggregator.
#[derive(Debug, Clone, PartialEq)]
pub struct SecureSumParams {
    /// The session id (fresh per run; messages of other sessions are rejected).
    pub session: SessionId,
    /// Number of parties n.
    pub parties: usize,
    /// Minimum number of survivors t (a majority: more than n / 2).
    pub threshold: usize,
    /// Parties assumed to collude with whoever sees the release (their noise shares are
    /// known to it and protect nobody). `None` is the threat model's worst case
    /// ([`Self::colluders`]): `threshold - 1` in aggregator mode. See
    /// [`Self::honest_noise_shares`] for how many shares the noise is calibrated for.
    pub colluders: Option<usize>,
    /// Vector length.
    pub dim: usize,
    /// Clipping of each party's vector.
    pub clipping: Clipping,
    /// Fixed-point scale (1 for exact integer sums).
    pub scale: f64,
    /// Ring size.
    pub ring: RingBits,
    /// Distributed DP noise.
    pub noise: NoiseSpec,
    /// Deadlines.
    pub deadlines: Deadlines,
}

/// What the parameters imply, computed once and checked.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) encoder: FixedPointEncoder,
    pub(crate) secagg: SecAggConfig,
    pub(crate) noise: Option<(DistributedNoise, f64)>,
    pub(crate) sensitivity: Sensitivity,
    pub(crate) numbering: PartyNumbering,
}

impl SecureSumParams {
    /// Parameters with the defaults: threshold `n / 2 + 1`, scale 1, ring Z_2^64, no noise,
    /// deadlines [`Deadlines::for_size`].
    ///
    /// # Errors
    /// [`crate::Error::InvalidParameter`] if the parameters are inconsistent (see
    /// [`Self::validate`]).
    pub fn new(
        session: SessionId,
        parties: usize,
        dim: usize,
        clipping: Clipping,
    ) -> crate::Result<Self> {
        let params = SecureSumParams {
            session,
            parties,
            threshold: parties / 2 + 1,
            colluders: None,
            dim,
            clipping,
            scale: 1.0,
            ring: RingBits::U64,
            noise: NoiseSpec::None,
            deadlines: Deadlines::for_size(parties, dim),
        };
        params.validate()?;
        Ok(params)
    }

    /// Checks the parameters: party count and threshold, clipping and scale, deadlines, noise,
    /// and that `n` clipped inputs plus the noise tail cannot wrap the ring.
    ///
    /// # Errors
    /// [`crate::Error::InvalidParameter`] naming the parameter; [`crate::Error::RingOverflow`]
    /// if the sum could wrap (lower the scale or the bound, or use [`RingBits::U64`]).
    pub fn validate(&self) -> crate::Result<()> {
        self.plan().map(|_| ())
    }

    /// [`Self::validate`] for the given mode (peer-to-peer mode allows up to `parties - 1`
    /// colluders).
    ///
    /// # Errors
    /// As [`Self::validate`].
    pub fn validate_for(&self, mode: SumMode) -> crate::Result<()> {
        self.plan_for(mode).map(|_| ())
    }

    /// The number of parties assumed to collude with whoever sees the release: the configured
    /// [`Self::colluders`](SecureSumParams::colluders), or the threat model's worst case for
    /// `mode` (`threshold - 1` with an aggregator, `parties - 1` peer to peer).
    pub fn colluders_for(&self, mode: SumMode) -> usize {
        self.colluders.unwrap_or(match mode {
            SumMode::Aggregator => self.threshold.saturating_sub(1),
            SumMode::PeerToPeer => self.parties.saturating_sub(1),
        })
    }

    /// The number of noise shares in a release that nobody who sees it knows, at the least:
    /// the count the noise is calibrated for.
    ///
    /// * Aggregator mode: at least `threshold` parties survive and `colluders` of them may
    ///   share their noise with the aggregator: `threshold - colluders`.
    /// * Peer-to-peer mode: every peer sees the total and knows its own share (so at least one
    ///   share is always known): `parties - max(colluders, 1)`.
    ///
    /// Returns 0 when the colluders leave no honest share (rejected by [`Self::validate`]).
    pub fn honest_noise_shares(&self, mode: SumMode) -> usize {
        let c = self.colluders_for(mode);
        match mode {
            SumMode::Aggregator => self.threshold.saturating_sub(c),
            SumMode::PeerToPeer => self.parties.saturating_sub(c.max(1)),
        }
    }

    pub(crate) fn plan(&self) -> crate::Result<Plan> {
        self.plan_for(SumMode::Aggregator)
    }

    pub(crate) fn plan_for(&self, mode: SumMode) -> crate::Result<Plan> {
        let colluders = self.colluders_for(mode);
        let limit = match mode {
            SumMode::Aggregator => self.threshold,
            SumMode::PeerToPeer => self.parties,
        };
        if colluders >= limit {
            let (what, why) = match mode {
                SumMode::Aggregator => (
                    "the threshold",
                    "with threshold or more colluders the aggregator can unmask inputs and no \
                     honest noise share is guaranteed; raise the threshold or lower `colluders`",
                ),
                SumMode::PeerToPeer => {
                    ("the number of parties", "at least one peer must be honest")
                }
            };
            return Err(crate::Error::invalid(
                "colluders",
                colluders,
                format!("must be below {what} ({limit}): {why}"),
            ));
        }
        let honest = self.honest_noise_shares(mode).max(1);
        if self.deadlines.join.is_zero() || self.deadlines.round.is_zero() {
            return Err(crate::Error::invalid(
                "deadlines",
                format!("{:?}", self.deadlines),
                "the join and round deadlines must be positive",
            ));
        }
        let secagg = SecAggConfig::new(self.session, self.parties, self.threshold, self.dim)?;
        // Above a size, the SecAgg+ sparse graph (the same choice at every role).
        let secagg = match mode {
            SumMode::Aggregator => secagg.with_auto_graph(colluders)?,
            SumMode::PeerToPeer => secagg,
        };
        let encoder = FixedPointEncoder::new(self.clipping, self.scale, self.dim)?;
        let sensitivity = match self.noise {
            NoiseSpec::Record { sensitivity, .. } => {
                sotto_dp::error::check_positive("noise.sensitivity.l2", sensitivity.l2)?;
                sotto_dp::error::check_positive("noise.sensitivity.l1", sensitivity.l1)?;
                sensitivity
            }
            _ => Sensitivity::of_encoder(&encoder, Neighbouring::AddRemove),
        };
        let noise = match self.noise {
            NoiseSpec::None => None,
            NoiseSpec::Multiplier { multiplier, delta } => {
                sotto_dp::error::check_positive("noise.multiplier", multiplier)?;
                sotto_dp::error::check_open_unit("noise.delta", delta)?;
                let noise = DistributedNoise::new(multiplier * sensitivity.l2, honest)?;
                Some((noise, delta))
            }
            NoiseSpec::EpsilonDelta { epsilon, delta }
            | NoiseSpec::Record { epsilon, delta, .. } => {
                sotto_dp::error::check_positive("noise.epsilon", epsilon)?;
                sotto_dp::error::check_open_unit("noise.delta", delta)?;
                let noise =
                    DistributedNoise::calibrate(epsilon, delta, sensitivity, self.dim, honest)?;
                Some((noise, delta))
            }
        };
        match (&noise, self.ring) {
            (Some((n, _)), RingBits::U32) => n.check_no_wrap::<u32>(self.parties, &encoder)?,
            (Some((n, _)), RingBits::U64) => n.check_no_wrap::<u64>(self.parties, &encoder)?,
            (None, RingBits::U32) => crate::encoding::check_no_wrap::<u32>(
                self.parties,
                encoder.coordinate_bound(),
                0.0,
                self.dim,
            )?,
            (None, RingBits::U64) => crate::encoding::check_no_wrap::<u64>(
                self.parties,
                encoder.coordinate_bound(),
                0.0,
                self.dim,
            )?,
        };
        Ok(Plan {
            encoder,
            secagg,
            noise,
            sensitivity,
            numbering: PartyNumbering::new(self.parties),
        })
    }
}

/// A party's private contribution: a vector of `f64` (clipped, scaled and randomly rounded)
/// or of `i64` (clamped to the L-infinity bound and mapped exactly).
///
/// # Security
/// The values are zeroized on drop and print as `[redacted]`.
#[derive(Clone)]
pub enum SecureSumInput {
    /// Real values.
    F64(Zeroizing<Vec<f64>>),
    /// Integer values (exact with scale 1).
    I64(Zeroizing<Vec<i64>>),
}

impl fmt::Debug for SecureSumInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecureSumInput::F64(v) => write!(f, "F64([redacted], len {})", v.len()),
            SecureSumInput::I64(v) => write!(f, "I64([redacted], len {})", v.len()),
        }
    }
}

impl SecureSumInput {
    /// One real value.
    pub fn scalar_f64(x: f64) -> Self {
        SecureSumInput::F64(Zeroizing::new(vec![x]))
    }
    /// One integer value.
    pub fn scalar_i64(x: i64) -> Self {
        SecureSumInput::I64(Zeroizing::new(vec![x]))
    }
    /// A real vector.
    pub fn vec_f64(x: Vec<f64>) -> Self {
        SecureSumInput::F64(Zeroizing::new(x))
    }
    /// An integer vector.
    pub fn vec_i64(x: Vec<i64>) -> Self {
        SecureSumInput::I64(Zeroizing::new(x))
    }
    /// The vector length.
    pub fn len(&self) -> usize {
        match self {
            SecureSumInput::F64(v) => v.len(),
            SecureSumInput::I64(v) => v.len(),
        }
    }
    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Encodes into the ring: `F64` through the encoder (clip, scale, randomized rounding),
    /// `I64` clamped to the coordinate bound and mapped exactly (it needs L-infinity clipping).
    pub(crate) fn encode<W: RingWord, R: RngCore + CryptoRng + ?Sized>(
        &self,
        encoder: &FixedPointEncoder,
        rng: &mut R,
    ) -> crate::Result<Zeroizing<Vec<W>>> {
        if self.len() != encoder.dim() {
            return Err(crate::Error::invalid(
                "input",
                format!("length {}", self.len()),
                format!("the session sums vectors of length dim = {}", encoder.dim()),
            ));
        }
        match self {
            SecureSumInput::F64(x) => {
                let z = Zeroizing::new(encoder.encode(x, rng)?);
                Ok(Zeroizing::new(z.iter().map(|v| W::from_i64(*v)).collect()))
            }
            SecureSumInput::I64(x) => {
                let Clipping::LInf { bound } = encoder.clipping() else {
                    return Err(crate::Error::invalid(
                        "clipping",
                        "L2",
                        "integer inputs need an L-infinity (range) bound: use Clipping::LInf",
                    ));
                };
                // Exact: |x| <= bound and bound * scale < 2^52 (checked by the encoder).
                let b = bound.floor() as i64;
                let scale = encoder.scale();
                if scale.fract() != 0.0 {
                    return Err(crate::Error::invalid(
                        "scale",
                        scale,
                        "integer inputs need an integer scale (use 1 for exact sums)",
                    ));
                }
                let s = scale as i64;
                Ok(Zeroizing::new(
                    x.iter()
                        .map(|v| W::from_i64((*v).clamp(-b, b).saturating_mul(s)))
                        .collect(),
                ))
            }
        }
    }
}

/// The privacy of a released sum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpent {
    /// Epsilon at `delta` (rounded up).
    pub epsilon: f64,
    /// Delta.
    pub delta: f64,
    /// zCDP rho (rounded up).
    pub rho: f64,
    /// Honest noise shares counted: the shares in the sum minus those of the assumed
    /// colluders (and, peer to peer, the observer's own).
    pub contributors: usize,
    /// Parties assumed to collude with the observer (their noise is not counted).
    pub colluders: usize,
    /// Standard deviation of the total noise in the released sum (every share in it), in
    /// input units (for error bars: about 95% of releases lie within 1.96 of it).
    pub noise_std: f64,
}

impl PrivacySpent {
    pub(crate) fn from_release(
        p: ReleasePrivacy,
        colluders: usize,
        shares: usize,
        sigma_per_party: f64,
        scale: f64,
    ) -> Self {
        PrivacySpent {
            epsilon: p.epsilon,
            delta: p.delta,
            rho: p.rho,
            contributors: p.contributors,
            colluders,
            noise_std: sigma_per_party * (shares as f64).sqrt() / scale,
        }
    }
}

/// What the aggregator learns.
#[derive(Debug, Clone, PartialEq)]
pub struct SumOutcome {
    /// The (noised) sum of the survivors' inputs, decoded (divided by the scale).
    pub sum: Vec<f64>,
    /// The sum in fixed-point units (exact integers; equal to `sum` when the scale is 1).
    pub sum_fixed: Vec<i64>,
    /// Parties (transport ids) whose inputs are in the sum.
    pub survivors: Vec<PartyId>,
    /// Parties that dropped out, were refused or misbehaved.
    pub dropped: Vec<PartyId>,
    /// The privacy of the release, when noise was added.
    pub privacy: Option<PrivacySpent>,
}

/// What a party learns.
#[derive(Debug, Clone, PartialEq)]
pub struct PartyOutcome {
    /// This party.
    pub id: PartyId,
    /// The released sum, as sent by the aggregator (`None` if it sent none).
    pub sum: Option<Vec<f64>>,
    /// The survivors, as reported by the aggregator.
    pub survivors: Vec<PartyId>,
    /// The privacy of the release, as reported by the aggregator.
    pub privacy: Option<PrivacySpent>,
    /// Bytes this party sent over UDP on its connection(s): QUIC and TLS overhead, ACKs and
    /// retransmissions included.
    pub bytes_sent: u64,
    /// Bytes of protocol messages this party sent (frames: length prefix, envelope, body),
    /// without transport overhead.
    pub frame_bytes_sent: u64,
}

/// The release the aggregator sends to the parties in round [`RELEASE_ROUND`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// The decoded sum.
    pub sum: Vec<f64>,
    /// Survivors (transport ids).
    pub survivors: Vec<PartyId>,
    /// Privacy spent.
    pub privacy: Option<PrivacySpent>,
}

/// Errors of a secure sum. Each says who is at fault: a peer (by its certificate name), the
/// configuration, or the run as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter or configuration problem, or a protocol failure (for example, fewer than
    /// `threshold` survivors), with parties named as in their certificates.
    #[error(transparent)]
    Protocol(#[from] crate::Error),
    /// A transport failure: certificates, refused connections, timeouts, lost connections.
    #[error(transparent)]
    Transport(#[from] transport::Error),
    /// The local randomness source failed.
    #[error("randomness: {0}")]
    Rng(String),
    /// The session parameters here and at `peer` differ (checked through
    /// [`SessionDigest`] before any input is used).
    #[error(
        "the session parameters disagree with {peer}'s: {field} = {ours} here but {theirs} at \
         {peer}; every party and the aggregator must use the same [session] table"
    )]
    SessionMismatch {
        /// The other end (a party by its certificate name, or the aggregator).
        peer: transport::Identity,
        /// The differing field.
        field: String,
        /// Its value here.
        ours: String,
        /// Its value at `peer`.
        theirs: String,
    },
}

/// `Result` with the secure-sum [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The set of transport ids not in `survivors`.
pub(crate) fn dropped_of(numbering: PartyNumbering, survivors: &[PartyId]) -> Vec<PartyId> {
    let s: BTreeSet<PartyId> = survivors.iter().copied().collect();
    numbering.all().filter(|p| !s.contains(p)).collect()
}

/// The transport options for `params`: the defaults, with an idle timeout of at least one
/// round deadline (an overloaded machine running many parties may not answer keep-alives for
/// a while; a connection is only declared dead once a whole round could have passed).
pub fn transport_for(params: &SecureSumParams) -> transport::TransportOptions {
    let defaults = transport::TransportOptions::default();
    transport::TransportOptions {
        idle_timeout: defaults.idle_timeout.max(params.deadlines.round),
        ..defaults
    }
}

/// Runs CPU-heavy protocol work on tokio's blocking pool, at most one job per CPU at a time in
/// this process: hundreds of parties computing at once would otherwise crowd the runtime's
/// threads off the CPU, and their QUIC connections would miss keep-alives and time out.
pub(crate) async fn cpu_bound<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    static SLOTS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    let failed = |e: String| Error::Protocol(crate::Error::InvalidState(e));
    let slots = SLOTS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        std::sync::Arc::new(tokio::sync::Semaphore::new(cpus))
    });
    let permit = std::sync::Arc::clone(slots)
        .acquire_owned()
        .await
        .map_err(|e| failed(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let out = work();
        drop(permit);
        out
    })
    .await
    .map_err(|e| failed(format!("protocol work failed: {e}")))?
}

pub(crate) fn os_rng() -> Result<rand_chacha::ChaCha20Rng> {
    sotto_dp::rng::os_rng().map_err(|e| Error::Rng(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_converts_both_ways_and_rejects_outsiders() {
        let n = PartyNumbering::new(4);
        assert_eq!(n.to_core(PartyId(1)), Some(PartyId(0)));
        assert_eq!(n.to_core(PartyId(4)), Some(PartyId(3)));
        assert_eq!(n.to_core(PartyId(0)), None);
        assert_eq!(n.to_core(PartyId(5)), None);
        assert_eq!(n.to_transport(PartyId(3)), PartyId(4));
        assert_eq!(n.all().collect::<Vec<_>>().len(), 4);
        let e = n.renumber(crate::Error::misbehaved(Peer::Party(PartyId(0)), "x"));
        assert_eq!(e.to_string(), "party 1 misbehaved: x");
    }

    #[test]
    fn integer_inputs_encode_exactly_and_clamp() {
        let enc = FixedPointEncoder::new(Clipping::LInf { bound: 5000.0 }, 1.0, 3).unwrap();
        let mut rng = sotto_dp::rng::seeded_rng(1);
        let z = SecureSumInput::vec_i64(vec![3800, -7000, 4999])
            .encode::<u64, _>(&enc, &mut rng)
            .unwrap();
        assert_eq!(crate::ring::to_signed(&z), vec![3800, -5000, 4999]);
        let l2 = FixedPointEncoder::new(Clipping::L2 { norm: 1.0 }, 1.0, 1).unwrap();
        assert!(
            SecureSumInput::scalar_i64(1)
                .encode::<u64, _>(&l2, &mut rng)
                .is_err()
        );
        assert!(
            SecureSumInput::vec_i64(vec![1, 2])
                .encode::<u64, _>(&enc, &mut rng)
                .is_err()
        );
        assert_eq!(
            format!("{:?}", SecureSumInput::scalar_i64(3800)),
            "I64([redacted], len 1)"
        );
    }

    #[test]
    fn bad_parameters_are_named() {
        let c = Clipping::LInf { bound: 1.0 };
        let s = SessionId([1; 16]);
        let err = SecureSumParams::new(s, 1, 1, c).unwrap_err().to_string();
        assert!(err.contains("parties"), "{err}");
        let mut p = SecureSumParams::new(s, 4, 1, c).unwrap();
        p.threshold = 2;
        assert!(p.validate().unwrap_err().to_string().contains("threshold"));
        p.threshold = 3;
        p.noise = NoiseSpec::EpsilonDelta {
            epsilon: f64::NAN,
            delta: 1e-6,
        };
        assert!(p.validate().unwrap_err().to_string().contains("epsilon"));
        p.noise = NoiseSpec::Multiplier {
            multiplier: 1.0,
            delta: 2.0,
        };
        assert!(p.validate().unwrap_err().to_string().contains("delta"));
        p.noise = NoiseSpec::None;
        p.deadlines.round = Duration::ZERO;
        assert!(p.validate().unwrap_err().to_string().contains("deadlines"));
        // 2^40 * 4 parties would wrap Z_2^32.
        let mut p = SecureSumParams::new(s, 4, 1, Clipping::LInf { bound: 1e12 }).unwrap();
        p.ring = RingBits::U32;
        assert!(matches!(
            p.validate(),
            Err(crate::Error::RingOverflow { .. })
        ));
    }

    #[test]
    fn calibrated_noise_meets_the_target_epsilon_tightly() {
        let c = Clipping::LInf { bound: 5000.0 };
        let mut p = SecureSumParams::new(SessionId([1; 16]), 4, 1, c).unwrap();
        p.noise = NoiseSpec::EpsilonDelta {
            epsilon: 1.0,
            delta: 1e-6,
        };
        let plan = p.plan().unwrap();
        let (noise, delta) = plan.noise.unwrap();
        // Default colluders: threshold - 1 = 2 of the 3 required survivors; one honest share.
        assert_eq!(p.honest_noise_shares(SumMode::Aggregator), 1);
        let honest = noise
            .release_privacy(plan.sensitivity, 1, 1, delta)
            .unwrap();
        assert!(honest.epsilon <= 1.0, "{}", honest.epsilon);
        assert!(
            honest.epsilon > 0.9,
            "calibration too loose: {}",
            honest.epsilon
        );
    }

    #[test]
    fn colluders_default_to_the_threat_model_and_are_checked() {
        let c = Clipping::L2 { norm: 1.0 };
        let mut p = SecureSumParams::new(SessionId([1; 16]), 4, 3, c).unwrap();
        assert_eq!(p.threshold, 3);
        assert_eq!(p.colluders_for(SumMode::Aggregator), 2);
        assert_eq!(p.honest_noise_shares(SumMode::Aggregator), 1);
        // Peer to peer: the worst case is n - 1 colluding peers, and a peer always knows its
        // own share.
        assert_eq!(p.colluders_for(SumMode::PeerToPeer), 3);
        assert_eq!(p.honest_noise_shares(SumMode::PeerToPeer), 1);
        p.colluders = Some(0);
        assert_eq!(p.honest_noise_shares(SumMode::Aggregator), 3);
        assert_eq!(p.honest_noise_shares(SumMode::PeerToPeer), 3);
        p.colluders = Some(3);
        let err = p.validate().unwrap_err().to_string();
        assert!(
            err.contains("colluders") && err.contains("threshold"),
            "{err}"
        );
        assert!(p.validate_for(SumMode::PeerToPeer).is_ok());
        p.colluders = Some(4);
        let err = p.validate_for(SumMode::PeerToPeer).unwrap_err().to_string();
        assert!(err.contains("colluders"), "{err}");
    }

    /// 4 parties, t = 3, 2 colluders: the noise multiplier applies to the one honest share
    /// alone, whose measured variance matches, and the reported privacy is that of one share.
    #[test]
    fn with_two_colluders_the_honest_share_alone_carries_the_multiplier() {
        let c = Clipping::L2 { norm: 1.0 };
        let mut p = SecureSumParams::new(SessionId([1; 16]), 4, 16, c).unwrap();
        p.threshold = 3;
        p.colluders = Some(2);
        p.scale = 64.0;
        let multiplier = 3.0;
        p.noise = NoiseSpec::Multiplier {
            multiplier,
            delta: 1e-6,
        };
        let plan = p.plan().unwrap();
        let (noise, _) = plan.noise.unwrap();
        let target = multiplier * plan.sensitivity.l2;
        assert!(noise.sigma_per_party() >= target);
        assert!(noise.sigma_per_party() <= target * 1.01);
        // Independent check: the sample variance of one party's share (64k coordinates).
        let mut share = vec![0u64; 65_536];
        noise.add_share(&mut share, &mut sotto_dp::rng::seeded_rng(9));
        let v = crate::ring::to_signed(&share);
        let var = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64;
        // Relative sd of a variance estimate: sqrt(2 / 65536) = 0.55%; 5 sd.
        assert!(
            (var.sqrt() / target - 1.0).abs() < 0.014,
            "{} vs {target}",
            var.sqrt()
        );
        // Without colluders the same multiplier spreads over 3 shares.
        p.colluders = Some(0);
        let (spread, _) = p.plan().unwrap().noise.unwrap();
        assert!((spread.sigma_per_party() * 3f64.sqrt() / target - 1.0).abs() < 0.01);
    }
}
