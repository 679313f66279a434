//! Peer-to-peer additive secret sharing: the protocol of the raise-averaging example
//! ("Computing on private data", Amazon Science).
//!
//! Each of `n` peers splits its vector into `n` random shares that sum to it in the ring,
//! keeps one and sends one to every other peer. Each peer adds the shares it holds (its own
//! kept share and one from every other peer) and publishes that partial sum; the sum of all
//! partial sums is the sum of all inputs. A share sent to another peer can travel as a 32-byte
//! PRG seed ([`ShareEncoding::Seed`]) instead of a full vector: the receiver expands it, and
//! the sender's kept share is its input minus all the expansions.
//!
//! # Security
//! Semi-honest peers over authenticated, confidential channels (the transport's TLS): any
//! `n - 1` colluding peers learn nothing about the remaining peer's input beyond the sum,
//! because its kept share is uniformly random and never leaves it. There is no dropout
//! tolerance: every peer must take part (use [`crate::secagg`] when parties may drop out).
//!
//! # Example: the average raise
//! ```rust
//! use sotto_mpc::additive::{AdditivePeer, ShareEncoding};
//! use sotto_mpc::secagg::SessionId;
//! use sotto_mpc::{PartyId, ring};
//!
//! let raises = [3800i64, 2514, 2982, 3390]; // Alice, Bob, Carlos, David
//! let mut rng = sotto_dp::rng::seeded_rng(42);
//! let mut peers: Vec<AdditivePeer<u32>> = raises
//!     .iter()
//!     .enumerate()
//!     .map(|(i, r)| {
//!         AdditivePeer::new(SessionId([7; 16]), PartyId(i as u32), 4, ring::from_signed(&[*r]), ShareEncoding::Seed)
//!     })
//!     .collect::<Result<_, _>>()?;
//! for p in &mut peers {
//!     p.start(&mut rng)?;
//! }
//! // Deliver messages until every peer is done (an in-memory network).
//! loop {
//!     let mut inflight = Vec::new();
//!     for p in &mut peers {
//!         while let Some(m) = p.poll_transmit() {
//!             inflight.push(m);
//!         }
//!     }
//!     if inflight.is_empty() {
//!         break;
//!     }
//!     for m in inflight {
//!         let to = m.header.to.index();
//!         peers[to].handle_message(m)?;
//!     }
//! }
//! for p in &peers {
//!     let total = ring::to_signed(p.result().unwrap())[0];
//!     assert_eq!(total, 12686);
//!     assert_eq!(total as f64 / 4.0, 3171.5);
//! }
//! # Ok::<(), sotto_mpc::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, PartyId, Peer, Result};
use crate::prg::{self, Seed};
use crate::ring::{self, RingVector, RingWord};
use crate::secagg::SessionId;

/// How shares sent to other peers are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareEncoding {
    /// The full share vector (`dim` ring words).
    Full,
    /// A 32-byte seed that the receiver expands with ChaCha20.
    Seed,
}

/// The two rounds of the peer-to-peer protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdditiveRound {
    /// Shares to each peer.
    Share,
    /// Published partial sums.
    PartialSum,
}

/// Header of a peer-to-peer message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdditiveHeader {
    /// Session.
    pub session: SessionId,
    /// Round.
    pub round: AdditiveRound,
    /// Sender.
    pub from: PartyId,
    /// Recipient.
    pub to: PartyId,
}

/// A seed on the wire (explicitly serializable; zeroized on drop).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct WireSeed(pub [u8; 32]);

impl std::fmt::Debug for WireSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireSeed([redacted])")
    }
}

/// A share sent to one peer.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum SharePayload<W: RingWord> {
    /// The share vector.
    Vector(RingVector<W>),
    /// The seed of the share vector.
    Seed(WireSeed),
}

impl<W: RingWord> std::fmt::Debug for SharePayload<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SharePayload::Vector(v) => write!(f, "Vector([redacted], len {})", v.len()),
            SharePayload::Seed(_) => f.write_str("Seed([redacted])"),
        }
    }
}

/// Body of a peer-to-peer message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub enum AdditiveBody<W: RingWord> {
    /// Round 1: a share for the recipient.
    Share(SharePayload<W>),
    /// Round 2: the sender's partial sum.
    PartialSum(RingVector<W>),
}

/// A peer-to-peer message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct AdditiveMessage<W: RingWord> {
    /// Header.
    pub header: AdditiveHeader,
    /// Body.
    pub body: AdditiveBody<W>,
}

/// One peer of the peer-to-peer additive sharing protocol (sans-IO).
///
/// # Security
/// The input and the kept share are zeroized on drop; see the module documentation.
pub struct AdditivePeer<W: RingWord> {
    session: SessionId,
    id: PartyId,
    parties: usize,
    encoding: ShareEncoding,
    input: Option<Zeroizing<Vec<W>>>,
    acc: Zeroizing<Vec<W>>,
    shares_from: BTreeSet<PartyId>,
    partials: BTreeMap<PartyId, Vec<W>>,
    published: bool,
    outbox: VecDeque<AdditiveMessage<W>>,
    result: Option<Vec<W>>,
}

impl<W: RingWord> std::fmt::Debug for AdditivePeer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdditivePeer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<W: RingWord> AdditivePeer<W> {
    /// Peer `id` of `parties` (ids `0..parties`) with its input vector.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for `parties < 2`, `id >= parties`, or an empty input.
    pub fn new(
        session: SessionId,
        id: PartyId,
        parties: usize,
        input: Vec<W>,
        encoding: ShareEncoding,
    ) -> Result<Self> {
        if !(2..=1 << 20).contains(&parties) {
            return Err(Error::invalid(
                "parties",
                parties,
                "must be between 2 and 2^20",
            ));
        }
        if id.index() >= parties {
            return Err(Error::invalid(
                "id",
                id.0,
                format!("must be below parties = {parties}"),
            ));
        }
        if input.is_empty() {
            return Err(Error::invalid(
                "input",
                "empty",
                "must hold at least one word",
            ));
        }
        let dim = input.len();
        Ok(Self {
            session,
            id,
            parties,
            encoding,
            input: Some(Zeroizing::new(input)),
            acc: Zeroizing::new(vec![W::default(); dim]),
            shares_from: BTreeSet::new(),
            partials: BTreeMap::new(),
            published: false,
            outbox: VecDeque::new(),
            result: None,
        })
    }

    /// Splits the input and queues one share for every other peer.
    ///
    /// # Errors
    /// [`Error::InvalidState`] if already started.
    pub fn start<R: RngCore + CryptoRng + ?Sized>(&mut self, rng: &mut R) -> Result<()> {
        let Some(input) = self.input.take() else {
            return Err(Error::InvalidState("the peer has already started".into()));
        };
        let dim = input.len();
        // kept = input - sum of the shares sent.
        let mut kept = input;
        for j in 0..self.parties as u32 {
            let to = PartyId(j);
            if to == self.id {
                continue;
            }
            let payload = match self.encoding {
                ShareEncoding::Full => {
                    let mut share = vec![W::default(); dim];
                    prg::add_mask(&Seed::random(rng), &mut share);
                    ring::sub_assign(&mut kept, &share);
                    SharePayload::Vector(RingVector(share))
                }
                ShareEncoding::Seed => {
                    let seed = Seed::random(rng);
                    prg::sub_mask(&seed, &mut kept);
                    SharePayload::Seed(WireSeed(*seed.as_bytes()))
                }
            };
            self.outbox.push_back(AdditiveMessage {
                header: self.header(AdditiveRound::Share, to),
                body: AdditiveBody::Share(payload),
            });
        }
        ring::add_assign(&mut self.acc, &kept);
        self.maybe_publish();
        Ok(())
    }

    fn header(&self, round: AdditiveRound, to: PartyId) -> AdditiveHeader {
        AdditiveHeader {
            session: self.session,
            round,
            from: self.id,
            to,
        }
    }

    fn maybe_publish(&mut self) {
        if self.published || self.input.is_some() || self.shares_from.len() + 1 < self.parties {
            return;
        }
        self.published = true;
        let partial: Vec<W> = self.acc.to_vec();
        for j in 0..self.parties as u32 {
            if PartyId(j) != self.id {
                self.outbox.push_back(AdditiveMessage {
                    header: self.header(AdditiveRound::PartialSum, PartyId(j)),
                    body: AdditiveBody::PartialSum(RingVector(partial.clone())),
                });
            }
        }
        self.partials.insert(self.id, partial);
        self.maybe_finish();
    }

    fn maybe_finish(&mut self) {
        if self.result.is_none() && self.partials.len() == self.parties {
            let mut total = vec![W::default(); self.acc.len()];
            for p in self.partials.values() {
                ring::add_assign(&mut total, p);
            }
            self.result = Some(total);
        }
    }

    /// Handles a message (from an authenticated channel to peer `msg.header.from`).
    ///
    /// # Errors
    /// [`Error::PeerMisbehaved`] naming the sender for a message of another session, not
    /// addressed to this peer, duplicated, of the wrong length, or a share before this peer
    /// has started; the state is unchanged.
    pub fn handle_message(&mut self, msg: AdditiveMessage<W>) -> Result<()> {
        let h = msg.header;
        let peer = Peer::Party(h.from);
        if h.from.index() >= self.parties || h.from == self.id {
            return Err(Error::misbehaved(peer, "unknown or own party id"));
        }
        if h.session != self.session {
            return Err(Error::misbehaved(
                peer,
                "message for another session (replayed?)",
            ));
        }
        if h.to != self.id {
            return Err(Error::misbehaved(
                peer,
                format!("message addressed to {}", h.to),
            ));
        }
        let dim = self.acc.len();
        match (h.round, msg.body) {
            (AdditiveRound::Share, AdditiveBody::Share(payload)) => {
                if self.shares_from.contains(&h.from) {
                    return Err(Error::misbehaved(peer, "duplicate (replayed) share"));
                }
                match payload {
                    SharePayload::Vector(v) => {
                        if v.len() != dim {
                            return Err(Error::misbehaved(peer, "share of the wrong length"));
                        }
                        ring::add_assign(&mut self.acc, v.as_slice());
                    }
                    SharePayload::Seed(s) => {
                        prg::add_mask(&Seed::from_bytes(s.0), &mut self.acc);
                    }
                }
                self.shares_from.insert(h.from);
                self.maybe_publish();
            }
            (AdditiveRound::PartialSum, AdditiveBody::PartialSum(v)) => {
                if self.partials.contains_key(&h.from) {
                    return Err(Error::misbehaved(peer, "duplicate (replayed) partial sum"));
                }
                if v.len() != dim {
                    return Err(Error::misbehaved(peer, "partial sum of the wrong length"));
                }
                self.partials.insert(h.from, v.0);
                self.maybe_finish();
            }
            _ => {
                return Err(Error::misbehaved(
                    peer,
                    "message body does not match its round",
                ));
            }
        }
        Ok(())
    }

    /// The next message to send (to `msg.header.to`).
    pub fn poll_transmit(&mut self) -> Option<AdditiveMessage<W>> {
        self.outbox.pop_front()
    }

    /// The sum of all inputs, once every partial sum has arrived.
    pub fn result(&self) -> Option<&[W]> {
        self.result.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sotto_dp::rng::seeded_rng;

    fn run(inputs: &[Vec<u64>], encoding: ShareEncoding, seed: u64) -> Vec<AdditivePeer<u64>> {
        let n = inputs.len();
        let mut rng = seeded_rng(seed);
        let mut peers: Vec<AdditivePeer<u64>> = inputs
            .iter()
            .enumerate()
            .map(|(i, x)| {
                AdditivePeer::new(
                    SessionId([1; 16]),
                    PartyId(i as u32),
                    n,
                    x.clone(),
                    encoding,
                )
                .unwrap()
            })
            .collect();
        for p in &mut peers {
            p.start(&mut rng).unwrap();
        }
        loop {
            let mut inflight = Vec::new();
            for p in &mut peers {
                while let Some(m) = p.poll_transmit() {
                    // Through the wire codec.
                    inflight.push(crate::wire::encode(&m).unwrap());
                }
            }
            if inflight.is_empty() {
                break;
            }
            for bytes in inflight.into_iter().rev() {
                let m: AdditiveMessage<u64> = crate::wire::decode(&bytes).unwrap();
                let to = m.header.to.index();
                peers[to].handle_message(m).unwrap();
            }
        }
        peers
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn every_peer_gets_the_exact_sum(
            n in 2usize..8, dim in 1usize..50, seed in any::<u64>(), seeds in any::<bool>()
        ) {
            let inputs: Vec<Vec<u64>> = (0..n)
                .map(|i| (0..dim).map(|j| (seed ^ (i * 7919 + j) as u64).wrapping_mul(0x9e3779b97f4a7c15)).collect())
                .collect();
            let mut expected = vec![0u64; dim];
            for x in &inputs { ring::add_assign(&mut expected, x); }
            let enc = if seeds { ShareEncoding::Seed } else { ShareEncoding::Full };
            for p in run(&inputs, enc, seed) {
                prop_assert_eq!(p.result().unwrap(), &expected[..]);
            }
        }
    }

    #[test]
    fn partial_sums_do_not_reveal_inputs_and_bad_messages_are_rejected() {
        let inputs = vec![vec![5u64; 4], vec![7u64; 4], vec![9u64; 4]];
        let peers = run(&inputs, ShareEncoding::Seed, 1);
        for p in &peers {
            for (who, partial) in &p.partials {
                assert_ne!(partial, &inputs[who.index()]);
            }
        }
        let mut p = AdditivePeer::<u64>::new(
            SessionId([1; 16]),
            PartyId(0),
            3,
            vec![1; 4],
            ShareEncoding::Full,
        )
        .unwrap();
        let msg = |from: u32, to: u32, session: u8, len: usize| AdditiveMessage {
            header: AdditiveHeader {
                session: SessionId([session; 16]),
                round: AdditiveRound::PartialSum,
                from: PartyId(from),
                to: PartyId(to),
            },
            body: AdditiveBody::PartialSum(RingVector(vec![0u64; len])),
        };
        assert_eq!(
            p.handle_message(msg(1, 0, 2, 4)).unwrap_err().culprit(),
            Some(Peer::Party(PartyId(1)))
        );
        assert!(p.handle_message(msg(1, 2, 1, 4)).is_err());
        assert!(p.handle_message(msg(2, 0, 1, 3)).is_err());
        assert!(p.handle_message(msg(0, 0, 1, 4)).is_err());
        p.handle_message(msg(1, 0, 1, 4)).unwrap();
        let e = p.handle_message(msg(1, 0, 1, 4)).unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        assert!(
            AdditivePeer::<u64>::new(
                SessionId([1; 16]),
                PartyId(3),
                3,
                vec![1],
                ShareEncoding::Full
            )
            .is_err()
        );
    }

    #[test]
    fn seeds_make_shares_small_on_the_wire() {
        let mut p = AdditivePeer::<u32>::new(
            SessionId([1; 16]),
            PartyId(0),
            3,
            vec![1; 1000],
            ShareEncoding::Seed,
        )
        .unwrap();
        p.start(&mut seeded_rng(2)).unwrap();
        let m = p.poll_transmit().unwrap();
        assert!(crate::wire::encode(&m).unwrap().len() < 80);
        let mut q = AdditivePeer::<u32>::new(
            SessionId([1; 16]),
            PartyId(0),
            3,
            vec![1; 1000],
            ShareEncoding::Full,
        )
        .unwrap();
        q.start(&mut seeded_rng(2)).unwrap();
        let m = q.poll_transmit().unwrap();
        assert!(crate::wire::encode(&m).unwrap().len() >= 4000);
    }
}
