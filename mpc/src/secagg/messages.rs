//! The messages of the aggregator protocol (serde types; see [`crate::wire`] for the codec).

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{Round, SessionId};
use crate::crypto::{Commitment, PublicKey};
use crate::error::{PartyId, Peer};
use crate::ring::{RingVector, RingWord};

/// The header every message carries: session, round, sender and recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The session.
    pub session: SessionId,
    /// The round the message belongs to.
    pub round: Round,
    /// The sender.
    pub from: Peer,
    /// The recipient.
    pub to: Peer,
}

/// A party's public keys for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyKeys {
    /// The party.
    pub party: PartyId,
    /// X25519 key for encrypting shares.
    pub enc_pk: PublicKey,
    /// X25519 key for pairwise masks.
    pub mask_pk: PublicKey,
    /// The hash commitment `H(domain || session || party || b)` to the self-mask secret `b`:
    /// lets the aggregator verify the reconstructed secret (and spot a bad share) with one
    /// hash, without learning anything about `b`.
    pub self_mask_commitment: Commitment,
    /// With run keys only: the hash commitment to the party's escrow key of this session,
    /// which checks the escrow key reconstructed if the party drops.
    pub escrow_commitment: Option<Commitment>,
}

/// A share ciphertext addressed to `to` (round 1, party to aggregator), with the sender's
/// commitment to its pair-mask seed with `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedShare {
    /// Recipient (holder).
    pub to: PartyId,
    /// ChaCha20-Poly1305 ciphertext of the two 32-byte shares.
    pub ciphertext: Vec<u8>,
    /// The hash commitment to the pair-mask seed `s_{from,to}` (kept by the aggregator, not
    /// forwarded): if the sender drops, `to` may reveal the seed and the aggregator checks it
    /// against this commitment.
    pub seed_commitment: Commitment,
    /// With run keys only: the pair-mask seed with `to`, encrypted under the sender's escrow
    /// key of this session (kept by the aggregator, not forwarded; opened only if the sender
    /// drops and `to` does not reveal the seed).
    pub escrowed_seed: Option<[u8; 32]>,
}

/// A share ciphertext from `from` (round 1, aggregator to party).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedShare {
    /// The share's owner (sender).
    pub from: PartyId,
    /// The ciphertext, as the owner sent it.
    pub ciphertext: Vec<u8>,
}

/// Which secret a revealed share belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareKind {
    /// The self-mask secret `b` of a survivor.
    SelfMask,
    /// The mask private key of a party that dropped after sharing.
    MaskKey,
}

/// A share value on the wire: 32 bytes (a canonical field element). Zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct ShareValue(pub [u8; 32]);

impl std::fmt::Debug for ShareValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShareValue([redacted])")
    }
}

/// A pair-mask seed on the wire: 32 bytes. Zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct SeedValue(pub [u8; 32]);

impl std::fmt::Debug for SeedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeedValue([redacted])")
    }
}

/// A pair-mask seed revealed for unmasking (round 3): the seed `s_{peer,sender}` of the
/// sender's pairwise mask with `peer`, a neighbour the aggregator reported as dropped (in U2
/// but not in U3).
///
/// # Security
/// The seed is a function of `peer`'s mask key, which the mask-key shares revealed in the same
/// round let the aggregator reconstruct anyway; it says nothing about `peer`'s self mask, so a
/// late masked vector of `peer` stays hidden.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealedSeed {
    /// The dropped neighbour.
    pub peer: PartyId,
    /// The seed.
    pub seed: SeedValue,
}

/// A share revealed for unmasking (round 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealedShare {
    /// Whose secret it is.
    pub owner: PartyId,
    /// Which secret.
    pub kind: ShareKind,
    /// The share.
    pub value: ShareValue,
}

/// Party-to-aggregator messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum ClientMessage<W: RingWord> {
    /// Round 0.
    AdvertiseKeys {
        /// Header.
        header: Header,
        /// Share-encryption public key.
        enc_pk: PublicKey,
        /// Mask public key.
        mask_pk: PublicKey,
        /// Hash commitment to the self-mask secret.
        self_mask_commitment: Commitment,
        /// With run keys only: hash commitment to the session's escrow key.
        escrow_commitment: Option<Commitment>,
    },
    /// Round 1.
    ShareKeys {
        /// Header.
        header: Header,
        /// One ciphertext per holder (other than the sender) in the roster.
        shares: Vec<EncryptedShare>,
    },
    /// Round 2.
    MaskedInput {
        /// Header.
        header: Header,
        /// The masked vector.
        masked: RingVector<W>,
    },
    /// Round 3.
    Unmask {
        /// Header.
        header: Header,
        /// One share per owner in the sender's U2 neighbourhood (itself included).
        shares: Vec<RevealedShare>,
        /// One pair-mask seed per neighbour in U2 \ U3 (reported dropped), sorted by peer.
        seeds: Vec<RevealedSeed>,
    },
}

impl<W: RingWord> ClientMessage<W> {
    /// The header.
    pub fn header(&self) -> &Header {
        match self {
            ClientMessage::AdvertiseKeys { header, .. }
            | ClientMessage::ShareKeys { header, .. }
            | ClientMessage::MaskedInput { header, .. }
            | ClientMessage::Unmask { header, .. } => header,
        }
    }
    /// Mutable header (for tampering tests and transports that re-stamp).
    pub fn header_mut(&mut self) -> &mut Header {
        match self {
            ClientMessage::AdvertiseKeys { header, .. }
            | ClientMessage::ShareKeys { header, .. }
            | ClientMessage::MaskedInput { header, .. }
            | ClientMessage::Unmask { header, .. } => header,
        }
    }
    /// The round this message type belongs to.
    pub fn kind_round(&self) -> Round {
        match self {
            ClientMessage::AdvertiseKeys { .. } => Round::AdvertiseKeys,
            ClientMessage::ShareKeys { .. } => Round::ShareKeys,
            ClientMessage::MaskedInput { .. } => Round::MaskedInput,
            ClientMessage::Unmask { .. } => Round::Unmask,
        }
    }
}

/// Aggregator-to-party messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// End of round 0: the keys of the recipient's neighbours (and its own) in U1.
    Roster {
        /// Header.
        header: Header,
        /// Sorted by party.
        parties: Vec<PartyKeys>,
    },
    /// End of round 1: ciphertexts addressed to the recipient from its neighbours in U2.
    Shares {
        /// Header.
        header: Header,
        /// Sorted by owner.
        shares: Vec<ForwardedShare>,
    },
    /// End of round 2: the survivors U3 (parties whose masked input was accepted).
    Survivors {
        /// Header.
        header: Header,
        /// Sorted.
        survivors: Vec<PartyId>,
    },
}

impl ServerMessage {
    /// The header.
    pub fn header(&self) -> &Header {
        match self {
            ServerMessage::Roster { header, .. }
            | ServerMessage::Shares { header, .. }
            | ServerMessage::Survivors { header, .. } => header,
        }
    }
    /// Mutable header.
    pub fn header_mut(&mut self) -> &mut Header {
        match self {
            ServerMessage::Roster { header, .. }
            | ServerMessage::Shares { header, .. }
            | ServerMessage::Survivors { header, .. } => header,
        }
    }
}
