//! Secure aggregation through an aggregator, after Bonawitz et al. 2017 ("Practical Secure
//! Aggregation for Privacy-Preserving Machine Learning"), with the sparse SecAgg+ graphs of
//! Bell et al. 2020.
//!
//! Rounds (each message carries session id, round, sender and recipient):
//!
//! | round | party -> aggregator | aggregator -> party |
//! |---|---|---|
//! | 0 `AdvertiseKeys` | two X25519 public keys + a hash commitment to the self-mask secret | the roster U1 (keys of the neighbours) |
//! | 1 `ShareKeys` | Shamir shares of the mask key and self-mask secret, encrypted to each holder, + a hash commitment to the pair-mask seed with each neighbour | the ciphertexts addressed to the party (from U2) |
//! | 2 `MaskedInput` | `x + PRG(b) + sum_v +-PRG(s_uv)` | the survivor list U3 |
//! | 3 `Unmask` | for each v in U2: the self-mask share if v in U3, else the mask-key share; + the pair-mask seed `s_uv` for each neighbour v in U2 \ U3 | (the aggregator outputs the sum) |
//!
//! The revealed pair seeds let the aggregator remove a dropped party's pairwise masks without
//! reconstructing its mask key and running X25519 per pair; it falls back to the key shares
//! (Bonawitz et al.'s recovery) for any pair whose seed is missing or does not match its
//! commitment.
//!
//! See `docs/protocol.md` for the full description and `docs/threat-model.md` for what is and
//! is not protected.

use serde::{Deserialize, Serialize};

use crate::crypto::{Commitment, SecretScalar, SharedSecret};
use crate::error::{Error, PartyId, Peer, Result};
use crate::prg::Seed;

pub mod aggregator;
pub mod client;
#[cfg(test)]
mod collusion_tests;
pub mod graph;
pub mod hazmat;
pub mod messages;
pub mod run_keys;

pub use aggregator::{AggregateOutput, SecAggAggregator};
pub use client::SecAggClient;
pub use graph::MaskGraph;
pub use messages::{ClientMessage, Header, ServerMessage};
pub use run_keys::RunKeys;

/// Names one run of a protocol: 16 bytes, fresh for every aggregation (all keys are per
/// session). Every message carries it, and a message naming another session (for instance,
/// replayed from an earlier run) is rejected, by the protocol core and by the transport alike.
///
/// Choose it at random per run ([`SessionId::random`]) so that sessions never collide.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub [u8; 16]);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl SessionId {
    /// A fresh random session id.
    pub fn random<R: rand_core::RngCore + rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        SessionId(b)
    }
}

/// The protocol rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Round {
    /// Round 0: public keys.
    AdvertiseKeys,
    /// Round 1: encrypted Shamir shares.
    ShareKeys,
    /// Round 2: masked inputs.
    MaskedInput,
    /// Round 3: shares for unmasking.
    Unmask,
}

impl Round {
    /// The round's name.
    pub fn name(self) -> &'static str {
        match self {
            Round::AdvertiseKeys => "advertise-keys",
            Round::ShareKeys => "share-keys",
            Round::MaskedInput => "masked-input",
            Round::Unmask => "unmask",
        }
    }
    fn tag(self) -> u8 {
        self as u8
    }
}

/// How a core party id appears inside an error message: as its certificate number (`party
/// k + 1` for core id `k`), the numbering every log and error uses
/// (`crate::securesum::PartyNumbering`). Structured `party` fields are renumbered by the
/// drivers; ids inside a reason string must be written with this.
pub(crate) fn shown(p: PartyId) -> String {
    format!("party {}", u64::from(p.0) + 1)
}

/// Above this many parties [`SecAggConfig::with_auto_graph`] considers the SecAgg+ sparse graph.
pub const SPARSE_ABOVE: usize = 100;

/// The rate of random dropouts [`SecAggConfig::with_auto_graph`] sizes the sparse graph for.
pub const AUTO_DROPOUT: f64 = 0.1;

/// How parties mask: complete graph or SecAgg+ sparse graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphKind {
    /// Every pair masks (SecAgg); shares go to all parties with threshold `t`.
    Complete,
    /// Each party masks with `degree` neighbours of a random Harary graph and shares among
    /// them and itself with threshold `share_threshold` (SecAgg+).
    Sparse {
        /// Even degree k.
        degree: usize,
        /// Threshold among the k + 1 holders.
        share_threshold: usize,
    },
}

/// The public parameters of one aggregation, known to all parties and the aggregator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecAggConfig {
    session: SessionId,
    parties: usize,
    threshold: usize,
    dim: usize,
    kind: GraphKind,
    graph: MaskGraph,
    run_keys: bool,
}

impl SecAggConfig {
    /// A complete-graph configuration: `parties` parties with ids `0..parties`, at least
    /// `threshold` of which must survive every round, vectors of length `dim`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `parties < 2`, `parties > 2^20`, `dim == 0`, or
    /// `threshold` is not in `(parties / 2, parties]` (a majority threshold, Bonawitz et al.).
    ///
    /// # Security
    /// The aggregator together with at most `threshold - 1` parties learns nothing about an
    /// honest party's input beyond the sum of the survivors' inputs.
    pub fn new(session: SessionId, parties: usize, threshold: usize, dim: usize) -> Result<Self> {
        if !(2..=1 << 20).contains(&parties) {
            return Err(Error::invalid(
                "parties",
                parties,
                "must be between 2 and 2^20",
            ));
        }
        if dim == 0 || dim > crate::wire::MAX_FRAME / 8 {
            return Err(Error::invalid(
                "dim",
                dim,
                "must be between 1 and MAX_FRAME / 8",
            ));
        }
        if threshold * 2 <= parties || threshold > parties {
            return Err(Error::invalid(
                "threshold",
                threshold,
                format!(
                    "must be a majority of the {parties} parties (more than half, at most all)"
                ),
            ));
        }
        Ok(Self {
            session,
            parties,
            threshold,
            dim,
            kind: GraphKind::Complete,
            graph: MaskGraph::complete(parties),
            run_keys: false,
        })
    }

    /// Switches to the SecAgg+ sparse graph of even `degree` with `share_threshold` of the
    /// `degree + 1` holders (see [`SparseParams::recommended`] for a principled choice).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `degree` is odd, below 2 or not below `parties`, or
    /// `share_threshold` is not between 2 and `degree + 1`.
    ///
    /// # Security
    /// Against a semi-honest aggregator, an honest party's secrets stay hidden as long as fewer
    /// than `share_threshold` of its holders collude with it; unlike the complete graph, no
    /// majority is required (a majority only matters against an aggregator that lies about
    /// who dropped, which needs the consistency round this crate does not implement yet).
    pub fn sparse(mut self, degree: usize, share_threshold: usize) -> Result<Self> {
        if degree < 2 || !degree.is_multiple_of(2) || degree >= self.parties {
            return Err(Error::invalid(
                "degree",
                degree,
                format!(
                    "must be even, at least 2 and below parties = {}",
                    self.parties
                ),
            ));
        }
        if share_threshold < 2 || share_threshold > degree + 1 {
            return Err(Error::invalid(
                "share_threshold",
                share_threshold,
                format!("must be between 2 and degree + 1 = {}", degree + 1),
            ));
        }
        self.kind = GraphKind::Sparse {
            degree,
            share_threshold,
        };
        self.graph = MaskGraph::harary(self.parties, degree, &self.session);
        Ok(self)
    }

    /// Switches to the SecAgg+ sparse graph when that is cheaper and meets the targets:
    /// above [`SPARSE_ABOVE`] parties, the degree [`SparseParams::recommended`] gives for
    /// [`AUTO_DROPOUT`] random dropouts and a corruption rate of `colluders / parties`
    /// (2^-20 failure, 2^-40 insecurity), if it is below `parties - 1`. Otherwise the complete
    /// graph is kept. The choice depends only on public parameters, so every party and the
    /// aggregator make the same one.
    ///
    /// # Errors
    /// As [`Self::sparse`] (not expected: the recommended degree is valid).
    ///
    /// # Security
    /// The sparse graph's guarantee holds under SecAgg+'s assumption (Bell et al. 2020) that
    /// the corrupt parties are not chosen with knowledge of the session's random graph; see
    /// `docs/threat-model.md`.
    pub fn with_auto_graph(self, colluders: usize) -> Result<Self> {
        match SparseParams::auto(self.parties, colluders) {
            Some(p) => self.sparse(p.degree, p.share_threshold),
            None => Ok(self),
        }
    }

    /// The number of neighbours each party masks with: `degree` of a sparse graph, `parties -
    /// 1` for the complete graph.
    pub fn neighbour_count(&self) -> usize {
        match self.kind {
            GraphKind::Complete => self.parties.saturating_sub(1),
            GraphKind::Sparse { degree, .. } => degree,
        }
    }

    /// Switches the session to **run keys**: each party advertises its long-term X25519 keys
    /// ([`RunKeys`], the same in every session of a run, so a party runs its two X25519
    /// agreements with each neighbour once per run instead of in every session), and escrows
    /// its per-session pair seeds under a fresh per-session escrow key whose Shamir shares take
    /// the place of the mask-key shares. Parties must be given their keys with [`SecAggClient::with_run_keys`].
    ///
    /// # Security
    /// Pair seeds and share keys are HKDF outputs of the long-term secrets separated by the
    /// session id, so a session's seeds say nothing about another session's. The recovery of a
    /// dropped party reconstructs only that session's escrow key and decrypts only that
    /// session's seeds; the long-term keys are never shared or reconstructed. Sessions of a
    /// run must have distinct ids. What changes against per-session keys: a party that later
    /// leaks its long-term private key exposes the pair seeds of every session of the run (no
    /// forward secrecy within a run), and a party could escrow a seed that does not match its
    /// commitment, which the aggregator detects (the sum then fails naming it) but cannot
    /// repair as it can with per-session keys. See `docs/protocol.md`.
    pub fn with_run_keys(mut self) -> Self {
        self.run_keys = true;
        self
    }

    /// Whether the session uses run keys ([`Self::with_run_keys`]).
    pub fn uses_run_keys(&self) -> bool {
        self.run_keys
    }

    /// The session id.
    pub fn session(&self) -> SessionId {
        self.session
    }
    /// Number of parties n.
    pub fn parties(&self) -> usize {
        self.parties
    }
    /// The global threshold t (minimum survivors).
    pub fn threshold(&self) -> usize {
        self.threshold
    }
    /// Vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// Complete or sparse.
    pub fn kind(&self) -> GraphKind {
        self.kind
    }
    /// The masking graph.
    pub fn graph(&self) -> &MaskGraph {
        &self.graph
    }
    /// The Shamir threshold among a party's holders.
    pub fn share_threshold(&self) -> usize {
        match self.kind {
            GraphKind::Complete => self.threshold,
            GraphKind::Sparse {
                share_threshold, ..
            } => share_threshold,
        }
    }

    pub(crate) fn check_header(
        &self,
        h: &Header,
        expected_from: Peer,
        expected_to: Peer,
        round: Round,
    ) -> Result<()> {
        let blame = expected_from;
        if h.from != expected_from {
            return Err(Error::misbehaved(
                blame,
                format!("message claims to come from {} (spoofed sender)", h.from),
            ));
        }
        if h.session != self.session {
            return Err(Error::misbehaved(
                blame,
                "message for another session (replayed?)",
            ));
        }
        if h.to != expected_to {
            return Err(Error::misbehaved(
                blame,
                format!("message addressed to {}", h.to),
            ));
        }
        if h.round != round {
            return Err(Error::misbehaved(
                blame,
                format!(
                    "out-of-round message: it belongs to round {}, the current round is {}",
                    h.round.name(),
                    round.name()
                ),
            ));
        }
        Ok(())
    }
}

/// The seed of the pairwise mask between `a` and `b`: HKDF of their X25519 secret, separated by
/// session, round and (ordered) pair.
pub(crate) fn pair_mask_seed(
    shared: &SharedSecret,
    session: &SessionId,
    a: PartyId,
    b: PartyId,
) -> Result<Seed> {
    derive_for_pair(shared, b"pair-mask", session, Round::MaskedInput, a, b)
}

/// HKDF of a pair's X25519 secret with `label || session || round || min(a,b) || max(a,b)`:
/// the same value for both members of the pair.
fn derive_for_pair(
    shared: &SharedSecret,
    label: &[u8],
    session: &SessionId,
    round: Round,
    a: PartyId,
    b: PartyId,
) -> Result<Seed> {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    shared.derive(&[
        label,
        &session.0,
        &[round.tag()],
        &lo.0.to_le_bytes(),
        &hi.0.to_le_bytes(),
    ])
}

/// Domain of the self-mask commitment.
const SELF_MASK_COMMITMENT: &[u8] = b"sotto-mpc/secagg/v1 self-mask commitment";
/// Domain of the escrow-key commitment (run keys).
const ESCROW_COMMITMENT: &[u8] = b"sotto-mpc/secagg/v1 escrow-key commitment";
/// Domain of the pair-mask seed commitment.
const PAIR_SEED_COMMITMENT: &[u8] = b"sotto-mpc/secagg/v1 pair-mask seed commitment";

/// The commitment `H(domain || session || party || b)` to `party`'s self-mask secret `b`
/// (SHA-256). Hiding for a uniformly random 252-bit `b` in the random-oracle model, binding by
/// collision resistance; checking a reconstructed `b` against it costs one hash.
pub(crate) fn self_mask_commitment(
    b: &SecretScalar,
    session: &SessionId,
    party: PartyId,
) -> Commitment {
    secret_commitment(SELF_MASK_COMMITMENT, b, session, party)
}

/// The commitment `H(domain || session || party || e)` to `party`'s escrow key `e` of one
/// session (run keys; SHA-256, hiding for a uniformly random `e`): checks the escrow key the
/// aggregator reconstructs for a dropped party.
pub(crate) fn escrow_commitment(
    e: &SecretScalar,
    session: &SessionId,
    party: PartyId,
) -> Commitment {
    secret_commitment(ESCROW_COMMITMENT, e, session, party)
}

/// `H(domain || session || party || secret)` for a party's Shamir-shared secret.
fn secret_commitment(
    domain: &[u8],
    secret: &SecretScalar,
    session: &SessionId,
    party: PartyId,
) -> Commitment {
    let bytes = zeroize::Zeroizing::new(secret.to_bytes());
    Commitment::of(
        domain,
        &[&session.0, &party.0.to_le_bytes(), bytes.as_ref()],
    )
}

/// The escrowed form of `owner`'s pair seed with `peer` (run keys): the seed XOR a one-time
/// pad HKDF(e, session, owner, peer) from `owner`'s escrow key `e`. The pad is used for this
/// one seed only; the seed's integrity is checked against `owner`'s seed commitment.
pub(crate) fn escrow_seed(
    e: &SecretScalar,
    session: &SessionId,
    owner: PartyId,
    peer: PartyId,
    seed: &[u8; 32],
) -> Result<[u8; 32]> {
    let pad = e.derive_seed(&[
        b"pair-seed escrow",
        &session.0,
        &owner.0.to_le_bytes(),
        &peer.0.to_le_bytes(),
    ])?;
    let mut out = [0u8; 32];
    for ((o, s), p) in out.iter_mut().zip(seed).zip(pad.as_bytes()) {
        *o = s ^ p;
    }
    Ok(out)
}

/// The commitment `H(domain || session || lo || hi || s)` to the pair-mask seed `s` of the
/// (unordered) pair `{a, b}` (SHA-256).
pub(crate) fn pair_seed_commitment(
    seed: &Seed,
    session: &SessionId,
    a: PartyId,
    b: PartyId,
) -> Commitment {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    Commitment::of(
        PAIR_SEED_COMMITMENT,
        &[
            &session.0,
            &lo.0.to_le_bytes(),
            &hi.0.to_le_bytes(),
            seed.as_bytes(),
        ],
    )
}

/// The seed of `party`'s self mask, from its self-mask secret `b`.
pub(crate) fn self_mask_seed(
    b: &SecretScalar,
    session: &SessionId,
    party: PartyId,
) -> Result<Seed> {
    b.derive_seed(&[
        b"self-mask",
        &session.0,
        &[Round::MaskedInput.tag()],
        &party.0.to_le_bytes(),
    ])
}

/// The AEAD key for shares between `a` and `b` (both directions; the nonce holds the
/// direction).
pub(crate) fn share_key(
    shared: &SharedSecret,
    session: &SessionId,
    a: PartyId,
    b: PartyId,
) -> Result<Seed> {
    derive_for_pair(shared, b"share-encryption", session, Round::ShareKeys, a, b)
}

/// Nonce and associated data of the share ciphertext from `from` to `to`.
pub(crate) fn share_nonce_aad(
    session: &SessionId,
    from: PartyId,
    to: PartyId,
) -> ([u8; 12], [u8; 25]) {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&from.0.to_le_bytes());
    nonce[4..8].copy_from_slice(&to.0.to_le_bytes());
    let mut aad = [0u8; 25];
    aad[..16].copy_from_slice(&session.0);
    aad[16] = Round::ShareKeys.tag();
    aad[17..21].copy_from_slice(&from.0.to_le_bytes());
    aad[21..25].copy_from_slice(&to.0.to_le_bytes());
    (nonce, aad)
}

/// Parameters of the SecAgg+ sparse graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SparseParams {
    /// Even degree k.
    pub degree: usize,
    /// Shamir threshold among the k + 1 holders.
    pub share_threshold: usize,
    /// log2 of the bound on the probability that a run fails for lack of shares (random
    /// dropouts at the assumed rate).
    pub log2_failure: f64,
    /// log2 of the bound on the probability that corrupt parties hold a threshold of some
    /// honest party's shares (random corruptions at the assumed rate).
    pub log2_insecurity: f64,
    /// log2 of the bound on the probability that some party has no honest surviving
    /// neighbour (its masks would then all be known or removed).
    pub log2_isolation: f64,
}

impl SparseParams {
    /// The smallest even degree k (and a threshold) for `parties` parties such that, with each
    /// party dropping independently with probability `dropout` and corrupt with probability
    /// `corrupt`, (a) some party's holders keep fewer than `share_threshold` survivors with
    /// probability at most 2^-`correctness_bits`, (b) corrupt parties hold `share_threshold`
    /// shares of some party with probability at most 2^-`security_bits`, and (c) some party
    /// has no honest surviving neighbour with probability at most 2^-`security_bits` (union
    /// bounds over parties with exact binomial tails; the conditions of Bell et al. 2020,
    /// Section 3, under their random-dropout/corruption assumption). k grows as O(log n):
    /// for n = 1000, 30% dropouts, 10% corrupt, 20 and 40 bits it gives k = 100, t = 41; for
    /// n = 10^6, k = 126.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for rates outside `[0, 1)`, `dropout + corrupt >= 1`, or when
    /// no degree below `parties` meets the targets ([`SecAggConfig::new`]'s complete graph is
    /// then the right choice).
    pub fn recommended(
        parties: usize,
        dropout: f64,
        corrupt: f64,
        correctness_bits: f64,
        security_bits: f64,
    ) -> Result<Self> {
        for (name, v) in [("dropout", dropout), ("corrupt", corrupt)] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::invalid(name, v, "must lie in [0, 1)"));
            }
        }
        if dropout + corrupt >= 1.0 {
            return Err(Error::invalid(
                "dropout",
                dropout,
                "dropout + corrupt must be below 1",
            ));
        }
        let log2n = (parties.max(1) as f64).log2();
        let mut k = 2;
        while k < parties {
            let holders = k + 1;
            let isolation = log2n + k as f64 * (1.0 - (1.0 - dropout) * (1.0 - corrupt)).log2();
            for s in 2..=holders {
                // (a) fewer than s survivors among k + 1 holders.
                let fail = log2_binomial_lower_tail(holders, 1.0 - dropout, s) + log2n;
                // (b) at least s corrupt among the k + 1 holders (conservatively including
                // the party itself).
                let insec = log2_binomial_upper_tail(holders, corrupt, s) + log2n;
                if fail <= -correctness_bits
                    && insec <= -security_bits
                    && isolation <= -security_bits
                {
                    return Ok(SparseParams {
                        degree: k,
                        share_threshold: s,
                        log2_failure: fail,
                        log2_insecurity: insec,
                        log2_isolation: isolation,
                    });
                }
            }
            k += 2;
        }
        Err(Error::invalid(
            "parties",
            parties,
            "no sparse degree meets the targets; use the complete graph",
        ))
    }
}

impl SparseParams {
    /// The sparse graph [`SecAggConfig::with_auto_graph`] chooses for `parties` parties of
    /// which `colluders` may collude, or `None` for the complete graph. Memoized: the search
    /// costs milliseconds at a thousand parties, and every role of a local run asks.
    pub fn auto(parties: usize, colluders: usize) -> Option<SparseParams> {
        use std::collections::HashMap;
        use std::sync::{Mutex, OnceLock};
        type Memo = Mutex<HashMap<(usize, usize), Option<SparseParams>>>;
        static MEMO: OnceLock<Memo> = OnceLock::new();
        if parties <= SPARSE_ABOVE {
            return None;
        }
        let memo = MEMO.get_or_init(Memo::default);
        if let Some(known) = memo
            .lock()
            .ok()
            .and_then(|m| m.get(&(parties, colluders)).copied())
        {
            return known;
        }
        let corrupt = colluders as f64 / parties as f64;
        let chosen = SparseParams::recommended(parties, AUTO_DROPOUT, corrupt, 20.0, 40.0)
            .ok()
            .filter(|p| p.degree + 1 < parties);
        if let Ok(mut m) = memo.lock() {
            m.insert((parties, colluders), chosen);
        }
        chosen
    }
}

fn log2_binomial_pmfs(m: usize, p: f64) -> Vec<f64> {
    // ln C(m, i) + i ln p + (m - i) ln(1 - p)
    let lp = p.ln();
    let lq = (1.0 - p).ln();
    let mut lc = 0.0f64;
    let mut out = Vec::with_capacity(m + 1);
    for i in 0..=m {
        if i > 0 {
            lc += ((m - i + 1) as f64).ln() - (i as f64).ln();
        }
        let term = lc
            + if i > 0 { i as f64 * lp } else { 0.0 }
            + if m > i { (m - i) as f64 * lq } else { 0.0 };
        out.push(term / std::f64::consts::LN_2);
    }
    out
}

fn log2_sum(terms: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = terms.collect();
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    max + v.iter().map(|t| (t - max).exp2()).sum::<f64>().log2()
}

/// log2 P[Bin(m, p) < s].
fn log2_binomial_lower_tail(m: usize, p: f64, s: usize) -> f64 {
    let pm = log2_binomial_pmfs(m, p);
    log2_sum(pm.into_iter().take(s))
}

/// log2 P[Bin(m, p) >= s].
fn log2_binomial_upper_tail(m: usize, p: f64, s: usize) -> f64 {
    if p == 0.0 {
        return if s == 0 { 0.0 } else { f64::NEG_INFINITY };
    }
    let pm = log2_binomial_pmfs(m, p);
    log2_sum(pm.into_iter().skip(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation_names_parameters() {
        let s = SessionId([0; 16]);
        assert!(
            SecAggConfig::new(s, 1, 1, 4)
                .unwrap_err()
                .to_string()
                .contains("parties")
        );
        assert!(
            SecAggConfig::new(s, 10, 5, 4)
                .unwrap_err()
                .to_string()
                .contains("threshold")
        );
        assert!(SecAggConfig::new(s, 10, 11, 4).is_err());
        assert!(
            SecAggConfig::new(s, 10, 6, 0)
                .unwrap_err()
                .to_string()
                .contains("dim")
        );
        let c = SecAggConfig::new(s, 10, 6, 4).unwrap();
        assert!(
            c.clone()
                .sparse(3, 3)
                .unwrap_err()
                .to_string()
                .contains("degree")
        );
        assert!(
            c.clone()
                .sparse(4, 1)
                .unwrap_err()
                .to_string()
                .contains("share_threshold")
        );
        assert!(c.clone().sparse(4, 6).is_err());
        assert!(c.sparse(4, 3).is_ok());
    }

    #[test]
    fn sparse_parameters_grow_slowly() {
        let p1 = SparseParams::recommended(1000, 0.3, 0.1, 20.0, 40.0).unwrap();
        let p2 = SparseParams::recommended(1_000_000, 0.3, 0.1, 20.0, 40.0).unwrap();
        assert_eq!((p1.degree, p1.share_threshold), (100, 41));
        assert_eq!(p2.degree, 126);
        assert!(p1.log2_failure <= -20.0 && p1.log2_insecurity <= -40.0);
        assert!(p1.log2_isolation <= -40.0);
        // A tail sanity check: P[Bin(10, 0.5) >= 10] = 2^-10.
        assert!((log2_binomial_upper_tail(10, 0.5, 10) + 10.0).abs() < 1e-9);
        assert!((log2_binomial_lower_tail(10, 0.5, 11)).abs() < 1e-9);
        assert!(SparseParams::recommended(1000, 0.6, 0.5, 20.0, 40.0).is_err());
    }

    #[test]
    fn the_sparse_graph_is_chosen_only_above_the_size_and_when_cheaper() {
        let s = SessionId([0; 16]);
        let small = SecAggConfig::new(s, 100, 51, 4)
            .unwrap()
            .with_auto_graph(50)
            .unwrap();
        assert_eq!(small.kind(), GraphKind::Complete);
        assert_eq!(small.neighbour_count(), 99);
        // 1000 parties, the default t - 1 = 500 colluders: degree 222 of 999.
        let big = SecAggConfig::new(s, 1000, 501, 4)
            .unwrap()
            .with_auto_graph(500)
            .unwrap();
        assert_eq!(
            big.kind(),
            GraphKind::Sparse {
                degree: 222,
                share_threshold: 170
            }
        );
        // 200 parties with half of them colluding: no sparse degree meets the targets.
        let mid = SecAggConfig::new(s, 200, 101, 4)
            .unwrap()
            .with_auto_graph(100)
            .unwrap();
        assert_eq!(mid.kind(), GraphKind::Complete);
    }
}
