//! The error type of `sotto-mpc`.
//!
//! Errors say who is at fault (rustls style): a [`Error::PeerMisbehaved`] names the party (or
//! the aggregator) whose message was rejected; the other variants are caller or configuration
//! errors, or a protocol run that cannot finish. Errors never contain secret values.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The identity of a party in a session: an index `0..n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartyId(pub u32);

impl PartyId {
    /// The index as a `usize`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "party {}", self.0)
    }
}

/// Who sent a message: a party or the aggregator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Peer {
    /// A party (client).
    Party(PartyId),
    /// The aggregator (server).
    Aggregator,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Party(p) => p.fmt(f),
            Peer::Aggregator => f.write_str("the aggregator"),
        }
    }
}

/// Everything that can go wrong in `sotto-mpc`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A caller-supplied parameter is NaN, infinite, out of range or inconsistent.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Name of the parameter.
        name: &'static str,
        /// The offending value, formatted.
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The configuration could wrap around the ring: `parties` clipped inputs plus the noise
    /// tail may not fit in the signed range of Z_2^k.
    #[error("ring overflow: {parties} inputs of at most {coordinate_bound} plus a noise tail of {noise_tail} per coordinate reach {needed}, but the ring Z_2^{ring_bits} only holds magnitudes below 2^{}: {hint}", ring_bits - 1)]
    RingOverflow {
        /// Number of parties whose inputs are summed.
        parties: usize,
        /// The largest magnitude of one encoded coordinate.
        coordinate_bound: u64,
        /// The noise tail bound (per coordinate, all parties).
        noise_tail: u128,
        /// The total magnitude that must fit.
        needed: u128,
        /// Bits of the ring.
        ring_bits: u32,
        /// Which bound to change.
        hint: String,
    },
    /// A message from a peer was rejected (malformed, tampered, replayed, out of round, or an
    /// inconsistent share). The protocol state is unchanged by a rejected message.
    #[error("{party} misbehaved: {reason}")]
    PeerMisbehaved {
        /// Who sent the rejected message.
        party: Peer,
        /// Why it was rejected.
        reason: String,
    },
    /// Too few parties are left to continue (fewer than the threshold `t`).
    #[error("not enough parties in round {round}: {available} available, at least {needed} needed")]
    NotEnoughParties {
        /// The protocol round.
        round: &'static str,
        /// How many parties are left.
        available: usize,
        /// The threshold.
        needed: usize,
    },
    /// The shares of a party's secret are inconsistent (they do not reconstruct the committed
    /// secret) and no single bad holder could be identified.
    #[error(
        "the shares of {owner}'s secret are inconsistent and no single bad holder could be identified"
    )]
    InconsistentShares {
        /// Whose secret could not be reconstructed.
        owner: PartyId,
    },
    /// The caller used a role out of order (e.g. asked for the result before the last round).
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A frame could not be decoded (the sender is not known at this layer).
    #[error("malformed frame: {0}")]
    Decode(String),
    /// An error from `sotto-dp` (noise calibration, accounting).
    #[error(transparent)]
    Dp(#[from] sotto_dp::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds an [`Error::InvalidParameter`].
    pub fn invalid(
        name: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidParameter {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::PeerMisbehaved`].
    pub fn misbehaved(party: Peer, reason: impl Into<String>) -> Self {
        Error::PeerMisbehaved {
            party,
            reason: reason.into(),
        }
    }

    /// The peer at fault, if this error blames one.
    pub fn culprit(&self) -> Option<Peer> {
        match self {
            Error::PeerMisbehaved { party, .. } => Some(*party),
            _ => None,
        }
    }
}
