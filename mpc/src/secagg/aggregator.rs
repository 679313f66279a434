//! The aggregator (server) role of the aggregator protocol, as a sans-IO state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use subtle::ConstantTimeEq;

use super::messages::{
    ClientMessage, EncryptedShare, ForwardedShare, Header, PartyKeys, RevealedSeed, RevealedShare,
    ServerMessage, ShareKind,
};
use super::{
    MaskGraph, Round, SecAggConfig, SessionId, escrow_commitment, escrow_seed, pair_mask_seed,
    pair_seed_commitment, self_mask_commitment, self_mask_seed,
};
use crate::crypto::{Commitment, SecretScalar, TAG_LEN};
use crate::error::{Error, PartyId, Peer, Result};
use crate::prg::{self, Seed};
use crate::ring::{self, RingWord};
use crate::shamir::{self, CheckedFailure};

/// The result of an aggregation: the sum of the survivors' (noised) inputs.
///
/// # Security
/// The sum is zeroized on drop and not printed by `Debug`.
pub struct AggregateOutput<W: RingWord> {
    sum: Zeroizing<Vec<W>>,
    survivors: Vec<PartyId>,
}

impl<W: RingWord> std::fmt::Debug for AggregateOutput<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateOutput")
            .field("sum", &"[redacted]")
            .field("survivors", &self.survivors)
            .finish()
    }
}

impl<W: RingWord> AggregateOutput<W> {
    /// The sum in the ring (decode with [`crate::encoding::FixedPointEncoder::decode_sum`] or
    /// [`crate::ring::to_signed`]).
    pub fn sum(&self) -> &[W] {
        &self.sum
    }
    /// The parties whose inputs (and noise shares) are in the sum (U3).
    pub fn survivors(&self) -> &[PartyId] {
        &self.survivors
    }
}

/// Work counters of the aggregator (for benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AggregatorStats {
    /// Ring words of PRG output expanded while unmasking.
    pub prg_words: u64,
    /// Secrets reconstructed.
    pub secrets_reconstructed: u64,
    /// Pairwise masks of dropped parties removed with a seed revealed by the surviving
    /// neighbour (checked against the dropped party's commitment).
    pub pair_seeds_revealed: u64,
    /// Pairwise masks of dropped parties removed the fallback way: the dropped party's mask
    /// key reconstructed from shares and one X25519 per pair (the neighbour did not answer the
    /// unmasking round, or its seed did not match).
    pub pair_seeds_recomputed: u64,
}

/// An owner, its first `t` shares `(x, encoding)` in responder order, and its share count.
type OwnerShares<'a> = (PartyId, Vec<(u32, &'a [u8; 32])>, usize);

/// [`SecAggAggregator`]'s `status` of a party in U3.
const IN_U3: u8 = 2;
/// [`SecAggAggregator`]'s `status` of a party in U2 but not in U3.
const IN_U2: u8 = 1;

/// A validated unmasking message: the shares (canonical; parsed when used) and the revealed
/// pair seeds.
#[derive(Clone)]
struct Unmasking {
    /// One share per owner in the sender's U2 neighbourhood, in order.
    shares: Vec<RevealedShare>,
    /// Seeds of the sender's pairs with its neighbours in U2 \ U3.
    seeds: Vec<RevealedSeed>,
}

/// The aggregator of the aggregator protocol (SecAgg / SecAgg+).
///
/// Drive it with [`Self::start`], [`Self::handle_message`] for each party message,
/// [`Self::handle_timeout`] when [`Self::poll_timeout`] has passed, and send what
/// [`Self::poll_transmit`] returns. A round ends when every expected party has answered or
/// at its deadline (then at least the threshold must have answered). The result is in
/// [`Self::result`].
///
/// # Security
/// Semi-honest aggregator: it only ever holds masked vectors and the final noised sum. Once
/// the survivor set U3 is fixed, a late masked vector is rejected, and no party ever reveals
/// the self-mask share of a party outside U3, so a party reported as dropped keeps its input
/// hidden even if its masked vector arrives later. The pairwise masks of a dropped party are
/// removed with the pair seeds its surviving neighbours reveal (checked against the
/// party's round-1 commitments), or, for a pair without a valid seed, from its mask key
/// reconstructed from shares (Bonawitz et al.'s recovery); a wrong seed or commitment is
/// reported in [`Self::misbehaved`] and does not change the sum.
///
/// # Example
/// Driving three parties and the aggregator by hand (a transport does the same over QUIC):
/// ```rust
/// use std::time::{Duration, Instant};
/// use sotto_mpc::secagg::{SecAggAggregator, SecAggClient, SecAggConfig, SessionId};
/// use sotto_mpc::PartyId;
///
/// let mut rng = sotto_dp::rng::seeded_rng(5);
/// let config = SecAggConfig::new(SessionId::random(&mut rng), 3, 2, 2)?;
/// let mut clients: Vec<SecAggClient<u64>> = (0..3)
///     .map(|i| SecAggClient::new(config.clone(), PartyId(i), vec![i as u64, 100]))
///     .collect::<Result<_, _>>()?;
/// let now = Instant::now();
/// let mut aggregator = SecAggAggregator::new(config, Duration::from_secs(10));
/// aggregator.start(now)?;
/// for c in &mut clients {
///     c.start(&mut rng)?;
/// }
/// while aggregator.result().is_none() {
///     for c in &mut clients {
///         while let Some(msg) = c.poll_transmit() {
///             aggregator.handle_message(now, c.id(), msg)?;
///         }
///     }
///     while let Some((to, msg)) = aggregator.poll_transmit() {
///         clients[to.index()].handle_message(msg, &mut rng)?;
///     }
/// }
/// let out = aggregator.take_result().unwrap()?;
/// assert_eq!(out.sum(), &[3, 300]);
/// # Ok::<(), sotto_mpc::Error>(())
/// ```
pub struct SecAggAggregator<W: RingWord> {
    config: SecAggConfig,
    round_timeout: Duration,
    current: Option<Round>,
    deadline: Option<Instant>,
    keys: BTreeMap<PartyId, PartyKeys>,
    share_msgs: BTreeMap<PartyId, Vec<EncryptedShare>>,
    /// (owner, neighbour) -> the owner's commitment to their pair-mask seed (owners in U2).
    /// owner in U2 -> its commitments to the pair-mask seeds with its neighbours in U1
    /// (sorted by neighbour).
    seed_commitments: BTreeMap<PartyId, Vec<(PartyId, Commitment)>>,
    /// With run keys: owner in U2 -> its escrowed pair seeds with its neighbours in U1
    /// (sorted by neighbour).
    escrows: BTreeMap<PartyId, Vec<(PartyId, [u8; 32])>>,
    u2: BTreeSet<PartyId>,
    /// Per party index, from round 3 on: `IN_U3`, `IN_U2` (dropped after sharing) or 0.
    status: Vec<u8>,
    sum: Zeroizing<Vec<W>>,
    u3: BTreeSet<PartyId>,
    unmask: BTreeMap<PartyId, Unmasking>,
    outbox: VecDeque<(PartyId, ServerMessage)>,
    result: Option<Result<AggregateOutput<W>>>,
    misbehaved: Vec<Error>,
    stats: AggregatorStats,
}

/// `owner`'s round-1 entry for its pair with `peer` in a per-owner list sorted by neighbour
/// (seed commitments, escrowed seeds).
fn pair_entry<T>(
    by_owner: &BTreeMap<PartyId, Vec<(PartyId, T)>>,
    owner: PartyId,
    peer: PartyId,
) -> Option<&T> {
    let entries = by_owner.get(&owner)?;
    let i = entries.binary_search_by_key(&peer, |(w, _)| *w).ok()?;
    entries.get(i).map(|(_, t)| t)
}

impl<W: RingWord> std::fmt::Debug for SecAggAggregator<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecAggAggregator")
            .field("round", &self.current)
            .field("finished", &self.result.is_some())
            .finish_non_exhaustive()
    }
}

impl<W: RingWord> Clone for SecAggAggregator<W> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            round_timeout: self.round_timeout,
            current: self.current,
            deadline: self.deadline,
            keys: self.keys.clone(),
            share_msgs: self.share_msgs.clone(),
            seed_commitments: self.seed_commitments.clone(),
            escrows: self.escrows.clone(),
            u2: self.u2.clone(),
            status: self.status.clone(),
            sum: self.sum.clone(),
            u3: self.u3.clone(),
            unmask: self.unmask.clone(),
            outbox: self.outbox.clone(),
            result: None,
            misbehaved: self.misbehaved.clone(),
            stats: self.stats,
        }
    }
}

impl<W: RingWord> SecAggAggregator<W> {
    /// An aggregator for `config`; each round lasts at most `round_timeout` after it starts.
    pub fn new(config: SecAggConfig, round_timeout: Duration) -> Self {
        let dim = config.dim();
        Self {
            config,
            round_timeout,
            current: None,
            deadline: None,
            keys: BTreeMap::new(),
            share_msgs: BTreeMap::new(),
            seed_commitments: BTreeMap::new(),
            escrows: BTreeMap::new(),
            u2: BTreeSet::new(),
            status: Vec::new(),
            sum: Zeroizing::new(vec![W::default(); dim]),
            u3: BTreeSet::new(),
            unmask: BTreeMap::new(),
            outbox: VecDeque::new(),
            result: None,
            misbehaved: Vec::new(),
            stats: AggregatorStats::default(),
        }
    }

    /// Opens round 0 at time `now`.
    ///
    /// # Errors
    /// [`Error::InvalidState`] if already started.
    pub fn start(&mut self, now: Instant) -> Result<()> {
        if self.current.is_some() || self.result.is_some() {
            return Err(Error::InvalidState(
                "the aggregator has already started".into(),
            ));
        }
        self.current = Some(Round::AdvertiseKeys);
        self.deadline = Some(now + self.round_timeout);
        Ok(())
    }

    /// The session's configuration.
    pub fn config(&self) -> &SecAggConfig {
        &self.config
    }

    /// The round being collected (`None` before start and after the end).
    pub fn round(&self) -> Option<Round> {
        self.current
    }

    /// When [`Self::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.current.is_some() {
            self.deadline
        } else {
            None
        }
    }

    /// The next message to send: `(recipient, message)`.
    pub fn poll_transmit(&mut self) -> Option<(PartyId, ServerMessage)> {
        self.outbox.pop_front()
    }

    /// The outcome, once the protocol has ended.
    pub fn result(&self) -> Option<&Result<AggregateOutput<W>>> {
        self.result.as_ref()
    }

    /// Takes the outcome, once the protocol has ended.
    pub fn take_result(&mut self) -> Option<Result<AggregateOutput<W>>> {
        self.result.take()
    }

    /// Parties caught misbehaving during unmasking: a bad share (that party's shares were then
    /// ignored), a revealed pair seed that does not match its commitment (the pair's mask was
    /// then removed the fallback way), or a wrong commitment to a pair seed.
    pub fn misbehaved(&self) -> &[Error] {
        &self.misbehaved
    }

    /// Work counters.
    pub fn stats(&self) -> AggregatorStats {
        self.stats
    }

    /// The public keys advertised in round 0 (U1), once received.
    pub fn roster(&self) -> Vec<PartyKeys> {
        self.keys.values().copied().collect()
    }

    /// The parties whose masked input was accepted (U3), once round 2 has closed.
    pub fn survivors(&self) -> Vec<PartyId> {
        self.u3.iter().copied().collect()
    }

    /// Closes the current round at `now` if its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.current.is_some() && self.deadline.is_some_and(|d| now >= d) {
            self.close_round(now);
        }
    }

    /// Closes the current round now, whatever its deadline (for drivers with their own
    /// notion of time).
    pub fn close_round(&mut self, now: Instant) {
        let Some(round) = self.current else { return };
        let r = match round {
            Round::AdvertiseKeys => self.close_keys(),
            Round::ShareKeys => self.close_shares(),
            Round::MaskedInput => self.close_masked(),
            Round::Unmask => self.finish(),
        };
        match r {
            Ok(Some(next)) => {
                self.current = Some(next);
                self.deadline = Some(now + self.round_timeout);
            }
            Ok(None) => {
                self.current = None;
                self.deadline = None;
            }
            Err(e) => {
                self.current = None;
                self.deadline = None;
                self.outbox.clear();
                self.result = Some(Err(e));
            }
        }
    }

    fn header(&self, round: Round, to: PartyId) -> Header {
        Header {
            session: self.config.session(),
            round,
            from: Peer::Aggregator,
            to: Peer::Party(to),
        }
    }

    fn need(&self, round: Round, available: usize) -> Result<()> {
        if available < self.config.threshold() {
            return Err(Error::NotEnoughParties {
                round: round.name(),
                available,
                needed: self.config.threshold(),
            });
        }
        Ok(())
    }

    /// Handles a message from party `from` (as authenticated by the transport) at `now`.
    ///
    /// # Errors
    /// [`Error::PeerMisbehaved`] naming `from` for a spoofed, misaddressed, replayed,
    /// duplicated, out-of-round (including late) or malformed message; the message is dropped
    /// and the state is unchanged.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: PartyId,
        msg: ClientMessage<W>,
    ) -> Result<()> {
        let peer = Peer::Party(from);
        if from.index() >= self.config.parties() {
            return Err(Error::misbehaved(peer, "unknown party id"));
        }
        let Some(round) = self.current else {
            return Err(Error::misbehaved(
                peer,
                "message outside a running protocol",
            ));
        };
        if msg.kind_round() != msg.header().round {
            return Err(Error::misbehaved(
                peer,
                "message type does not match its round",
            ));
        }
        self.config
            .check_header(msg.header(), peer, Peer::Aggregator, round)?;
        let complete = match msg {
            ClientMessage::AdvertiseKeys {
                enc_pk,
                mask_pk,
                self_mask_commitment,
                escrow_commitment,
                ..
            } => {
                if escrow_commitment.is_some() != self.config.uses_run_keys() {
                    return Err(Error::misbehaved(
                        peer,
                        if self.config.uses_run_keys() {
                            "no escrow-key commitment, but this session uses run keys"
                        } else {
                            "an escrow-key commitment, but this session uses per-session keys"
                        },
                    ));
                }
                if self.keys.contains_key(&from) {
                    return Err(Error::misbehaved(
                        peer,
                        "duplicate (replayed) key advertisement",
                    ));
                }
                let reused = self.keys.values().any(|k| {
                    [k.enc_pk, k.mask_pk].contains(&enc_pk)
                        || [k.enc_pk, k.mask_pk].contains(&mask_pk)
                }) || enc_pk == mask_pk;
                if reused {
                    return Err(Error::misbehaved(peer, "reuses a public key"));
                }
                self.keys.insert(
                    from,
                    PartyKeys {
                        party: from,
                        enc_pk,
                        mask_pk,
                        self_mask_commitment,
                        escrow_commitment,
                    },
                );
                self.keys.len() == self.config.parties()
            }
            ClientMessage::ShareKeys { shares, .. } => {
                if !self.keys.contains_key(&from) {
                    return Err(Error::misbehaved(peer, "not in the roster U1"));
                }
                if self.share_msgs.contains_key(&from) {
                    return Err(Error::misbehaved(peer, "duplicate (replayed) shares"));
                }
                let expected: Vec<PartyId> = self
                    .config
                    .graph()
                    .neighbours(from)
                    .into_iter()
                    .filter(|v| self.keys.contains_key(v))
                    .collect();
                let got: Vec<PartyId> = shares.iter().map(|s| s.to).collect();
                if got != expected {
                    return Err(Error::misbehaved(
                        peer,
                        "shares must go to each neighbour in U1 exactly once, in order",
                    ));
                }
                if shares.iter().any(|s| s.ciphertext.len() != 64 + TAG_LEN) {
                    return Err(Error::misbehaved(
                        peer,
                        "share ciphertext of the wrong length",
                    ));
                }
                let run_keys = self.config.uses_run_keys();
                if shares.iter().any(|s| s.escrowed_seed.is_some() != run_keys) {
                    return Err(Error::misbehaved(
                        peer,
                        if run_keys {
                            "a share without its escrowed pair seed, but this session uses run keys"
                        } else {
                            "an escrowed pair seed, but this session uses per-session keys"
                        },
                    ));
                }
                self.share_msgs.insert(from, shares);
                self.share_msgs.len() == self.keys.len()
            }
            ClientMessage::MaskedInput { masked, .. } => {
                if !self.u2.contains(&from) {
                    return Err(Error::misbehaved(
                        peer,
                        "not in U2 (did not share its keys)",
                    ));
                }
                if self.u3.contains(&from) {
                    return Err(Error::misbehaved(peer, "duplicate (replayed) masked input"));
                }
                if masked.len() != self.config.dim() {
                    return Err(Error::misbehaved(
                        peer,
                        format!(
                            "masked vector of length {}, expected {}",
                            masked.len(),
                            self.config.dim()
                        ),
                    ));
                }
                ring::add_assign(&mut self.sum, masked.as_slice());
                self.u3.insert(from);
                self.u3.len() == self.u2.len()
            }
            ClientMessage::Unmask { shares, seeds, .. } => {
                let status = |p: PartyId| self.status.get(p.index()).copied().unwrap_or(0);
                if status(from) != IN_U3 {
                    return Err(Error::misbehaved(peer, "not a survivor (U3)"));
                }
                if self.unmask.contains_key(&from) {
                    return Err(Error::misbehaved(
                        peer,
                        "duplicate (replayed) unmasking shares",
                    ));
                }
                // One share per owner in the sender's U2 neighbourhood (itself included), in
                // increasing order, of the kind its status calls for; one seed per neighbour in
                // U2 \ U3, in increasing order. Checked without building the sorted holder
                // list: strictly increasing, each a holder of the right status, and as many as
                // the neighbourhood has.
                let graph = self.config.graph();
                let is_holder = |v: PartyId| v == from || graph.adjacent(from, v);
                let (mut in_u2, mut dropped) = (0usize, 0usize);
                graph.for_each_holder(from, |v| match status(v) {
                    IN_U3 => in_u2 += 1,
                    IN_U2 => {
                        in_u2 += 1;
                        dropped += 1;
                    }
                    _ => {}
                });
                let mut prev: Option<PartyId> = None;
                for s in &shares {
                    let st = status(s.owner);
                    if prev.is_some_and(|p| p >= s.owner) || st == 0 || !is_holder(s.owner) {
                        return Err(Error::misbehaved(
                            peer,
                            "must reveal one share per owner in its U2 neighbourhood, in order",
                        ));
                    }
                    prev = Some(s.owner);
                    let want = if st == IN_U3 {
                        ShareKind::SelfMask
                    } else {
                        ShareKind::MaskKey
                    };
                    if s.kind != want {
                        return Err(Error::misbehaved(
                            peer,
                            format!(
                                "revealed the wrong kind of share for {}",
                                super::shown(s.owner)
                            ),
                        ));
                    }
                    if !shamir::is_canonical(&s.value.0) {
                        return Err(Error::misbehaved(
                            peer,
                            "share is not a canonical field element",
                        ));
                    }
                }
                if shares.len() != in_u2 {
                    return Err(Error::misbehaved(
                        peer,
                        "must reveal one share per owner in its U2 neighbourhood, in order",
                    ));
                }
                let mut prev: Option<PartyId> = None;
                let seeds_ok = seeds.len() == dropped
                    && seeds.iter().all(|s| {
                        let ok = prev.is_none_or(|p| p < s.peer)
                            && s.peer != from
                            && status(s.peer) == IN_U2
                            && graph.adjacent(from, s.peer);
                        prev = Some(s.peer);
                        ok
                    });
                if !seeds_ok {
                    return Err(Error::misbehaved(
                        peer,
                        "must reveal one pair seed per neighbour reported dropped (in U2, not in U3), in order, and none for a survivor",
                    ));
                }
                self.unmask.insert(from, Unmasking { shares, seeds });
                self.unmask.len() == self.u3.len()
            }
        };
        if complete {
            self.close_round(now);
        }
        Ok(())
    }

    fn close_keys(&mut self) -> Result<Option<Round>> {
        self.need(Round::AdvertiseKeys, self.keys.len())?;
        let graph = self.config.graph().clone();
        let parties: Vec<PartyId> = self.keys.keys().copied().collect();
        for u in parties {
            let roster: Vec<PartyKeys> = graph
                .holders(u)
                .into_iter()
                .filter_map(|v| self.keys.get(&v).copied())
                .collect();
            let header = self.header(Round::AdvertiseKeys, u);
            self.outbox.push_back((
                u,
                ServerMessage::Roster {
                    header,
                    parties: roster,
                },
            ));
        }
        Ok(Some(Round::ShareKeys))
    }

    fn close_shares(&mut self) -> Result<Option<Round>> {
        self.need(Round::ShareKeys, self.share_msgs.len())?;
        self.u2 = self.share_msgs.keys().copied().collect();
        let mut inbox: BTreeMap<PartyId, Vec<ForwardedShare>> = BTreeMap::new();
        for (from, shares) in std::mem::take(&mut self.share_msgs) {
            self.seed_commitments.insert(
                from,
                shares.iter().map(|s| (s.to, s.seed_commitment)).collect(),
            );
            if self.config.uses_run_keys() {
                self.escrows.insert(
                    from,
                    shares
                        .iter()
                        .filter_map(|s| s.escrowed_seed.map(|e| (s.to, e)))
                        .collect(),
                );
            }
            for s in shares {
                if self.u2.contains(&s.to) {
                    inbox.entry(s.to).or_default().push(ForwardedShare {
                        from,
                        ciphertext: s.ciphertext,
                    });
                }
            }
        }
        for v in self.u2.clone() {
            let shares = inbox.remove(&v).unwrap_or_default();
            let header = self.header(Round::ShareKeys, v);
            self.outbox
                .push_back((v, ServerMessage::Shares { header, shares }));
        }
        Ok(Some(Round::MaskedInput))
    }

    fn close_masked(&mut self) -> Result<Option<Round>> {
        self.need(Round::MaskedInput, self.u3.len())?;
        let survivors: Vec<PartyId> = self.u3.iter().copied().collect();
        self.status = vec![0; self.config.parties()];
        for (set, mark) in [(&self.u2, IN_U2), (&self.u3, IN_U3)] {
            for p in set {
                if let Some(slot) = self.status.get_mut(p.index()) {
                    *slot = mark;
                }
            }
        }
        for &u in &survivors {
            let header = self.header(Round::MaskedInput, u);
            self.outbox.push_back((
                u,
                ServerMessage::Survivors {
                    header,
                    survivors: survivors.clone(),
                },
            ));
        }
        Ok(Some(Round::Unmask))
    }

    /// Reconstructs the secrets of the owners in `owners` (a subset of U2) from the
    /// responders' shares, dropping a responder caught with a bad share and retrying. A
    /// survivor's self-mask secret is checked against its hash commitment, a dropped party's
    /// mask key against its public key.
    ///
    /// Fast path: each secret from the first `t` shares, with the Lagrange coefficients of all
    /// point sets computed in one batch; only a secret failing its check goes through
    /// [`shamir::reconstruct_checked`] to find the bad share.
    fn reconstruct_all(
        &mut self,
        owners: &BTreeSet<PartyId>,
    ) -> Result<BTreeMap<PartyId, SecretScalar>> {
        let t_s = self.config.share_threshold();
        let session = self.config.session();
        let mut cache = BTreeMap::new();
        'retry: loop {
            self.need(Round::Unmask, self.unmask.len())?;
            // Owner lists indexed through a per-party table (no map lookup per share).
            let mut slot = vec![usize::MAX; self.config.parties()];
            // Each owner's shares (responder order; only the first t where the graph has no
            // shared block to prefer) and its share count.
            let graph = self.config.graph();
            let keep = if matches!(graph, MaskGraph::Complete { .. }) {
                t_s
            } else {
                usize::MAX
            };
            let mut by_owner: Vec<OwnerShares<'_>> = Vec::with_capacity(owners.len());
            for &o in owners {
                if let Some(x) = slot.get_mut(o.index()) {
                    *x = by_owner.len();
                    by_owner.push((o, Vec::with_capacity(t_s), 0));
                }
            }
            for (r, msg) in &self.unmask {
                for s in &msg.shares {
                    let i = slot.get(s.owner.index()).copied().unwrap_or(usize::MAX);
                    if let Some((_, list, count)) = by_owner.get_mut(i) {
                        *count += 1;
                        if list.len() < keep {
                            list.push((r.0 + 1, &s.value.0));
                        }
                    }
                }
            }
            // The distinct point sets of the first t shares, and each owner's set (most
            // owners share the previous owner's set, checked first without allocating).
            let mut sets: BTreeMap<Vec<u32>, usize> = BTreeMap::new();
            let mut set_of = Vec::with_capacity(by_owner.len());
            let mut last: Option<(Vec<u32>, usize)> = None;
            for (owner, list, count) in &mut by_owner {
                if *count < t_s {
                    return Err(Error::NotEnoughParties {
                        round: Round::Unmask.name(),
                        available: *count,
                        needed: t_s,
                    });
                }
                // Use the graph's shared block of holders when all of it answered (few
                // distinct point sets, so few Lagrange computations), else the first t.
                let block: Vec<u32> = graph
                    .shared_holder_block(*owner, t_s)
                    .map(|b| b.iter().map(|p| p.0 + 1).collect())
                    .unwrap_or_default();
                let mut want = block.iter().peekable();
                let picked: Vec<(u32, &[u8; 32])> = list
                    .iter()
                    .filter(|e| {
                        while want.next_if(|&&x| x < e.0).is_some() {}
                        want.next_if(|&&x| x == e.0).is_some()
                    })
                    .copied()
                    .collect();
                if !block.is_empty() && picked.len() == t_s {
                    *list = picked;
                } else {
                    list.truncate(t_s);
                }
                if let Some((xs, i)) = &last
                    && list.iter().map(|e| e.0).eq(xs.iter().copied())
                {
                    set_of.push(*i);
                    continue;
                }
                let xs: Vec<u32> = list.iter().map(|e| e.0).collect();
                let next = sets.len();
                let i = *sets.entry(xs.clone()).or_insert(next);
                set_of.push(i);
                last = Some((xs, i));
            }
            let mut ordered: Vec<&[u32]> = vec![&[]; sets.len()];
            for (xs, &i) in &sets {
                if let Some(slot) = ordered.get_mut(i) {
                    *slot = xs;
                }
            }
            let coeffs: Vec<Vec<[u64; 4]>> = shamir::lagrange_at_zero_many(&ordered)?
                .iter()
                .map(|c| c.iter().map(shamir::scalar_limbs).collect())
                .collect();
            let mut out = BTreeMap::new();
            let mut bad = None;
            for ((owner, list, _), &si) in by_owner.iter().zip(&set_of) {
                let owner = *owner;
                let Some(k) = self.keys.get(&owner) else {
                    continue;
                };
                let survivor = self.u3.contains(&owner);
                let (commitment, mask_pk, escrow) =
                    (k.self_mask_commitment, k.mask_pk, k.escrow_commitment);
                let check = |s: &SecretScalar| {
                    if survivor {
                        self_mask_commitment(s, &session, owner).ct_eq(&commitment)
                    } else if let Some(escrow) = &escrow {
                        // Run keys: the secret is this session's escrow key.
                        escrow_commitment(s, &session, owner).ct_eq(escrow)
                    } else {
                        s.public_key() == mask_pk
                    }
                };
                let used: Vec<&[u8; 32]> = list.iter().map(|e| e.1).collect();
                if let Some(s) = coeffs
                    .get(si)
                    .and_then(|c| shamir::combine_canonical(c, &used))
                    .filter(|s| check(s))
                {
                    out.insert(owner, s);
                    continue;
                }
                // Slow path: some share is bad; find whose, among all of the owner's shares.
                let parsed: Vec<(PartyId, u32, SecretScalar)> = self
                    .unmask
                    .iter()
                    .flat_map(|(r, msg)| {
                        msg.shares
                            .iter()
                            .filter(|s| s.owner == owner)
                            .map(move |s| (*r, &s.value))
                    })
                    .filter_map(|(r, v)| SecretScalar::from_canonical(v.0).map(|v| (r, r.0 + 1, v)))
                    .collect();
                let refs: Vec<(PartyId, u32, &SecretScalar)> =
                    parsed.iter().map(|(r, x, v)| (*r, *x, v)).collect();
                match shamir::reconstruct_checked(&refs, t_s, &mut cache, check) {
                    Ok(s) => {
                        out.insert(owner, s);
                    }
                    Err(CheckedFailure::BadShare(r)) => {
                        bad = Some((r, owner));
                        break;
                    }
                    Err(CheckedFailure::Unidentified) => {
                        return Err(Error::InconsistentShares { owner });
                    }
                }
            }
            if let Some((r, owner)) = bad {
                self.misbehaved.push(Error::misbehaved(
                    Peer::Party(r),
                    format!(
                        "sent a bad share of {}'s secret; its shares were ignored",
                        super::shown(owner)
                    ),
                ));
                self.unmask.remove(&r);
                continue 'retry;
            }
            self.stats.secrets_reconstructed += out.len() as u64;
            return Ok(out);
        }
    }

    /// The pair seeds revealed by the responders, checked against the dropped owners'
    /// commitments: (dropped u, survivor v) -> seed, and the pairs whose revealed seed did not
    /// match (with the revealed seed, to tell later who was wrong).
    #[allow(clippy::type_complexity)]
    fn checked_seeds(
        &self,
    ) -> (
        BTreeMap<(PartyId, PartyId), Seed>,
        BTreeMap<(PartyId, PartyId), Seed>,
    ) {
        let session = self.config.session();
        let mut good = BTreeMap::new();
        let mut suspect = BTreeMap::new();
        for (&v, msg) in &self.unmask {
            for rs in &msg.seeds {
                let seed = Seed::from_bytes(rs.seed.0);
                let u = rs.peer;
                if self.matches_commitment(&session, u, v, &seed) {
                    good.insert((u, v), seed);
                } else {
                    suspect.insert((u, v), seed);
                }
            }
        }
        (good, suspect)
    }

    /// Whether `seed` matches `u`'s round-1 commitment to its pair seed with `v`.
    fn matches_commitment(&self, session: &SessionId, u: PartyId, v: PartyId, seed: &Seed) -> bool {
        pair_entry(&self.seed_commitments, u, v)
            .is_some_and(|c| c.ct_eq(&pair_seed_commitment(seed, session, u, v)))
    }

    fn finish(&mut self) -> Result<Option<Round>> {
        let session = self.config.session();
        let (mut seeds, suspect) = self.checked_seeds();
        // Dropped after sharing: U2 \ U3, with their surviving neighbours.
        let dropped: Vec<(PartyId, Vec<PartyId>)> = self
            .u2
            .iter()
            .filter(|u| !self.u3.contains(u))
            .map(|&u| {
                let vs = self
                    .config
                    .graph()
                    .neighbours(u)
                    .into_iter()
                    .filter(|v| self.u3.contains(v))
                    .collect();
                (u, vs)
            })
            .collect();
        // Secrets to reconstruct: every survivor's self-mask secret, and the mask key of a
        // dropped party only if some pair with a survivor has no valid revealed seed.
        let mut owners = self.u3.clone();
        for (u, vs) in &dropped {
            if vs.iter().any(|v| !seeds.contains_key(&(*u, *v))) {
                owners.insert(*u);
            }
        }
        let secrets = self.reconstruct_all(&owners)?;
        let mut sum = std::mem::take(&mut self.sum);
        let dim = sum.len() as u64;
        for &owner in &self.u3 {
            let Some(b) = secrets.get(&owner) else {
                return Err(Error::InvalidState(format!(
                    "no self-mask secret reconstructed for survivor {owner}"
                )));
            };
            prg::sub_mask(&self_mask_seed(b, &session, owner)?, &mut sum);
            self.stats.prg_words += dim;
        }
        for (u, vs) in &dropped {
            let u = *u;
            // u dropped after sharing: remove its pairwise masks from the survivors.
            for &v in vs {
                let seed = match seeds.remove(&(u, v)) {
                    Some(seed) => {
                        self.stats.pair_seeds_revealed += 1;
                        seed
                    }
                    None => {
                        let seed = self.recompute_pair_seed(&secrets, u, v)?;
                        let run_keys = self.config.uses_run_keys();
                        let source = if run_keys { "escrow" } else { "mask" };
                        let revealed = suspect.get(&(u, v));
                        let same_as_revealed = revealed.is_some_and(|r| -> bool {
                            r.as_bytes().ct_eq(seed.as_bytes()).into()
                        });
                        // An escrowed seed (run keys) is only as good as its commitment; a
                        // seed recomputed from the mask key is authoritative.
                        if run_keys
                            && !same_as_revealed
                            && !self.matches_commitment(&session, u, v, &seed)
                        {
                            return Err(Error::misbehaved(
                                Peer::Party(u),
                                format!(
                                    "its escrowed pair-mask seed with {v} does not match its round-1 commitment and {v} revealed no matching seed; the sum cannot be unmasked",
                                    v = super::shown(v)
                                ),
                            ));
                        }
                        if revealed.is_some() {
                            let same = same_as_revealed;
                            self.misbehaved.push(if same {
                                Error::misbehaved(
                                    Peer::Party(u),
                                    format!(
                                        "committed in round 1 to a wrong pair-mask seed with {v}; the seed was recomputed from its {source} key"
                                    ),
                                )
                            } else {
                                Error::misbehaved(
                                    Peer::Party(v),
                                    format!(
                                        "revealed a wrong pair-mask seed for its pair with {u} (it does not match {u}'s commitment); the seed was recomputed from {u}'s {source} key"
                                    ),
                                )
                            });
                        }
                        self.stats.pair_seeds_recomputed += 1;
                        seed
                    }
                };
                // y_v holds +PRG if v < u, -PRG otherwise: undo it.
                prg::apply_mask(&seed, &mut sum, v < u);
                self.stats.prg_words += dim;
            }
        }
        self.result = Some(Ok(AggregateOutput {
            sum,
            survivors: self.u3.iter().copied().collect(),
        }));
        self.unmask.clear();
        Ok(None)
    }

    /// The fallback: the pair seed of dropped `u` and survivor `v` from `u`'s reconstructed
    /// mask key and `v`'s public key (one X25519 and one HKDF), or with run keys from `u`'s
    /// reconstructed escrow key and its escrowed seed (one HKDF).
    fn recompute_pair_seed(
        &self,
        secrets: &BTreeMap<PartyId, SecretScalar>,
        u: PartyId,
        v: PartyId,
    ) -> Result<Seed> {
        let (Some(secret), Some(k)) = (secrets.get(&u), self.keys.get(&v)) else {
            return Err(Error::InvalidState(format!(
                "no mask key reconstructed for dropped {u} (pair with {v})"
            )));
        };
        let session = self.config.session();
        if self.config.uses_run_keys() {
            let Some(escrowed) = pair_entry(&self.escrows, u, v) else {
                return Err(Error::InvalidState(format!(
                    "no escrowed pair seed of dropped {u} with {v}"
                )));
            };
            // The escrow is a one-time pad: applying it again recovers the seed.
            return Ok(Seed::from_bytes(escrow_seed(
                secret, &session, u, v, escrowed,
            )?));
        }
        let shared = secret.diffie_hellman(&k.mask_pk, Peer::Party(v))?;
        pair_mask_seed(&shared, &session, v, u)
    }
}
