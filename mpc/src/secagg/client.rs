//! The party (client) role of the aggregator protocol, as a sans-IO state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::messages::{
    ClientMessage, EncryptedShare, Header, PartyKeys, RevealedSeed, RevealedShare, SeedValue,
    ServerMessage, ShareKind, ShareValue,
};
use super::{
    Round, RunKeys, SecAggConfig, escrow_commitment, escrow_seed, pair_mask_seed,
    pair_seed_commitment, self_mask_commitment, self_mask_seed, share_key, share_nonce_aad,
};
use crate::crypto::{Commitment, PublicKey, SecretScalar, open, seal};
use crate::error::{Error, PartyId, Peer, Result};
use crate::prg::{self, Seed};
use crate::ring::{RingVector, RingWord};
use crate::shamir;

/// A secret vector (an unmasked input): zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretVec<W: RingWord>(pub(crate) Vec<W>);

impl<W: RingWord> std::fmt::Debug for SecretVec<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretVec([redacted])")
    }
}

/// A holder's shares of one owner's secrets: the mask key (with run keys: the escrow key)
/// and the self-mask secret.
#[derive(Clone)]
struct Held {
    mask_key: SecretScalar,
    self_mask: SecretScalar,
}

/// The keys of one session: fresh X25519 private keys, or the run's keys plus this session's
/// escrow key (the secret shared in place of the mask key).
#[derive(Clone)]
enum SessionKeys {
    Fresh {
        enc_sk: SecretScalar,
        mask_sk: SecretScalar,
    },
    Run {
        keys: Arc<RunKeys>,
        escrow: SecretScalar,
    },
}

/// What the party advertised in round 0 (checked against the roster).
#[derive(Clone)]
struct Advertised {
    enc_pk: PublicKey,
    mask_pk: PublicKey,
    self_mask: Commitment,
    escrow: Option<Commitment>,
}

#[derive(Clone)]
enum State<W: RingWord> {
    Init {
        input: Option<SecretVec<W>>,
    },
    AwaitRoster {
        input: Option<SecretVec<W>>,
        keys: SessionKeys,
        b: SecretScalar,
        /// This party's advertised keys (computed once, checked against the roster).
        advertised: Advertised,
    },
    AwaitShares {
        input: Option<SecretVec<W>>,
        b: SecretScalar,
        /// The share-encryption key with each neighbour in U1 (one X25519 per pair, used for
        /// both directions).
        share_keys: BTreeMap<PartyId, Seed>,
        own: Held,
        /// The pair-mask seed with each neighbour in U1.
        seeds: BTreeMap<PartyId, Seed>,
    },
    /// A deferred party that handled the round-1 shares before its input arrived: its mask
    /// is expanded and waits for [`SecAggClient::provide_input`].
    AwaitInput {
        /// `PRG(b) + sum_{v in U2} +-PRG(s_uv)`: the input plus this is the masked input.
        mask: SecretVec<W>,
        held: BTreeMap<PartyId, Held>,
        seeds: BTreeMap<PartyId, Seed>,
    },
    AwaitSurvivors {
        held: BTreeMap<PartyId, Held>,
        /// The pair-mask seed with each neighbour in U2 (those it masked with).
        seeds: BTreeMap<PartyId, Seed>,
    },
    Done,
    Aborted,
}

/// A party in the aggregator protocol (SecAgg / SecAgg+).
///
/// Drive it with [`Self::start`], then [`Self::handle_message`] for each aggregator message,
/// and send what [`Self::poll_transmit`] returns. Randomness is passed in; there is no clock
/// (the aggregator decides when rounds end).
///
/// # Security
/// The input, private keys and self-mask secret are zeroized when no longer needed and on
/// drop. The party reveals, for every other party, either the share of its self-mask secret
/// (if the aggregator lists it as a survivor) or the share of its mask key (if not), never
/// both; it reveals its pair-mask seed with a neighbour only if the aggregator lists that
/// neighbour as dropped (the seed is a function of the neighbour's mask key, revealed anyway),
/// never for a neighbour listed as a survivor; if the aggregator lists *this* party as dropped,
/// it reveals nothing.
///
/// # Example
/// ```rust
/// use sotto_mpc::secagg::{SecAggConfig, SessionId};
/// use sotto_mpc::sim::{SimOptions, Simulation};
/// // Three parties, threshold 2, vectors of length 4, simulated in memory.
/// let config = SecAggConfig::new(SessionId([1; 16]), 3, 2, 4)?;
/// let inputs: Vec<Vec<u32>> = vec![vec![1, 2, 3, 4], vec![10, 20, 30, 40], vec![5, 5, 5, 5]];
/// let report = Simulation::new(config, inputs, SimOptions::default())?.run();
/// assert_eq!(report.result?.sum(), &[16, 27, 38, 49]);
/// # Ok::<(), sotto_mpc::Error>(())
/// ```
pub struct SecAggClient<W: RingWord> {
    config: SecAggConfig,
    id: PartyId,
    state: State<W>,
    outbox: VecDeque<ClientMessage<W>>,
    run_keys: Option<Arc<RunKeys>>,
}

impl<W: RingWord> std::fmt::Debug for SecAggClient<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecAggClient")
            .field("id", &self.id)
            .field("round", &self.round())
            .finish_non_exhaustive()
    }
}

impl<W: RingWord> SecAggClient<W> {
    /// A party with id `id` and its (encoded, noised) input in the ring.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `id` is not below the number of parties or the input
    /// length is not `config.dim()`.
    pub fn new(config: SecAggConfig, id: PartyId, input: Vec<W>) -> Result<Self> {
        let mut client = Self::new_deferred(config, id)?;
        client.provide_input(input)?;
        Ok(client)
    }

    /// A party whose input is not known yet: it can run the key rounds (advertise keys,
    /// share keys) while the input is still being computed, and receives it with
    /// [`Self::provide_input`]. Given before the aggregator's round-1 shares are handled, the
    /// input is masked when they are; given after, the party has already expanded its mask
    /// (the masks do not depend on the input) and `provide_input` only adds it and queues the
    /// masked input. Either way the key rounds and the mask expansion come off the critical
    /// path of a round, e.g. while a training party computes its gradients.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `id` is not below the number of parties.
    ///
    /// # Example
    /// ```rust
    /// use sotto_mpc::secagg::{SecAggClient, SecAggConfig, SessionId};
    /// use sotto_mpc::PartyId;
    /// let config = SecAggConfig::new(SessionId([1; 16]), 3, 2, 4)?;
    /// let mut rng = sotto_dp::rng::seeded_rng(1);
    /// let mut party = SecAggClient::<u32>::new_deferred(config, PartyId(0))?;
    /// party.start(&mut rng)?; // round 0 goes out before the input exists
    /// assert!(party.poll_transmit().is_some());
    /// party.provide_input(vec![1, 2, 3, 4])?;
    /// # Ok::<(), sotto_mpc::Error>(())
    /// ```
    pub fn new_deferred(config: SecAggConfig, id: PartyId) -> Result<Self> {
        if id.index() >= config.parties() {
            return Err(Error::invalid(
                "id",
                id.0,
                format!("party ids run from 0 to {}", config.parties() - 1),
            ));
        }
        Ok(Self {
            config,
            id,
            state: State::Init { input: None },
            outbox: VecDeque::new(),
            run_keys: None,
        })
    }

    /// Gives the party its long-term keys for a session that uses run keys
    /// ([`SecAggConfig::with_run_keys`]); required there before [`Self::start`].
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if the session does not use run keys;
    /// [`Error::InvalidState`] if the party has already started.
    pub fn with_run_keys(mut self, keys: Arc<RunKeys>) -> Result<Self> {
        if !self.config.uses_run_keys() {
            return Err(Error::invalid(
                "run_keys",
                "given",
                "this session uses per-session keys; build its config with SecAggConfig::with_run_keys to use run keys",
            ));
        }
        if !matches!(self.state, State::Init { .. }) {
            return Err(Error::InvalidState(
                "run keys must be given before the party starts".into(),
            ));
        }
        self.run_keys = Some(keys);
        Ok(self)
    }

    /// Supplies the (encoded, noised) input of a party made with [`Self::new_deferred`]. Valid
    /// until the party has sent its masked input: before the round-1 shares are handled it is
    /// kept for masking; after, it is added to the mask expanded then and the masked input is
    /// queued for [`Self::poll_transmit`].
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if the length is not `config.dim()` (the vector is
    /// zeroized); [`Error::InvalidState`] if an input was already given or the party is past
    /// the point where it masks its input.
    pub fn provide_input(&mut self, input: Vec<W>) -> Result<()> {
        let mut input = SecretVec(input);
        if input.0.len() != self.config.dim() {
            return Err(Error::invalid(
                "input",
                format!("length {}", input.0.len()),
                format!(
                    "the session's vectors have length dim = {}",
                    self.config.dim()
                ),
            ));
        }
        if matches!(self.state, State::AwaitInput { .. }) {
            let State::AwaitInput { mask, held, seeds } =
                std::mem::replace(&mut self.state, State::Aborted)
            else {
                return Err(Error::InvalidState("state changed".into()));
            };
            crate::ring::add_assign(&mut input.0, &mask.0);
            self.outbox.push_back(ClientMessage::MaskedInput {
                header: self.header(Round::MaskedInput),
                masked: RingVector(std::mem::take(&mut input.0)),
            });
            // The mask is zeroized with it.
            drop(mask);
            self.state = State::AwaitSurvivors { held, seeds };
            return Ok(());
        }
        let slot = match &mut self.state {
            State::Init { input }
            | State::AwaitRoster { input, .. }
            | State::AwaitShares { input, .. } => input,
            _ => {
                return Err(Error::InvalidState(
                    "the input can only be given before the party sends its masked input".into(),
                ));
            }
        };
        if slot.is_some() {
            return Err(Error::InvalidState(
                "this party already has its input".into(),
            ));
        }
        *slot = Some(input);
        Ok(())
    }

    /// Whether the party still waits for [`Self::provide_input`].
    pub fn needs_input(&self) -> bool {
        matches!(
            &self.state,
            State::Init { input: None }
                | State::AwaitRoster { input: None, .. }
                | State::AwaitShares { input: None, .. }
                | State::AwaitInput { .. }
        )
    }

    /// A party that adds its share of `noise` to its encoded input in the ring before masking
    /// (the aggregator then never holds an un-noised sum).
    ///
    /// # Errors
    /// As [`Self::new`].
    ///
    /// # Privacy
    /// Calibrate `noise` with `min_parties = config.threshold()`: the shares of any `t`
    /// survivors alone meet the target.
    pub fn new_noised<R: RngCore + CryptoRng + ?Sized>(
        config: SecAggConfig,
        id: PartyId,
        mut input: Vec<W>,
        noise: &crate::noise::DistributedNoise,
        rng: &mut R,
    ) -> Result<Self> {
        noise.add_share(&mut input, rng);
        Self::new(config, id, input)
    }

    /// The public parameters of this aggregation.
    pub fn config(&self) -> &SecAggConfig {
        &self.config
    }

    /// This party's id.
    pub fn id(&self) -> PartyId {
        self.id
    }

    /// The round whose aggregator message the party waits for (`None` when finished).
    pub fn round(&self) -> Option<Round> {
        match self.state {
            State::Init { .. } | State::AwaitRoster { .. } => Some(Round::AdvertiseKeys),
            State::AwaitShares { .. } => Some(Round::ShareKeys),
            State::AwaitInput { .. } | State::AwaitSurvivors { .. } => Some(Round::MaskedInput),
            State::Done | State::Aborted => None,
        }
    }

    /// Whether the party has sent its last message.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The decrypted shares this party holds (owner, mask-key share, self-mask share): what a
    /// corrupt party would hand to a colluding aggregator. Test-only.
    #[cfg(test)]
    pub(crate) fn held_for_test(&self) -> Vec<(PartyId, SecretScalar, SecretScalar)> {
        match &self.state {
            State::AwaitSurvivors { held, .. } => held
                .iter()
                .map(|(p, h)| (*p, h.mask_key.clone(), h.self_mask.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The next message to send to the aggregator.
    pub fn poll_transmit(&mut self) -> Option<ClientMessage<W>> {
        self.outbox.pop_front()
    }

    fn header(&self, round: Round) -> Header {
        Header {
            session: self.config.session(),
            round,
            from: Peer::Party(self.id),
            to: Peer::Aggregator,
        }
    }

    /// Round 0: generates the session keys and queues `AdvertiseKeys`.
    ///
    /// # Errors
    /// [`Error::InvalidState`] if already started.
    pub fn start<R: RngCore + CryptoRng + ?Sized>(&mut self, rng: &mut R) -> Result<()> {
        if !matches!(self.state, State::Init { .. }) {
            return Err(Error::InvalidState("the party has already started".into()));
        }
        let session = self.config.session();
        let keys = match (&self.run_keys, self.config.uses_run_keys()) {
            (Some(keys), true) => SessionKeys::Run {
                keys: Arc::clone(keys),
                escrow: SecretScalar::random(rng),
            },
            (None, false) => SessionKeys::Fresh {
                enc_sk: SecretScalar::random(rng),
                mask_sk: SecretScalar::random(rng),
            },
            _ => {
                return Err(Error::InvalidState(
                    "this session uses run keys: give the party its keys with SecAggClient::with_run_keys before starting it"
                        .into(),
                ));
            }
        };
        let State::Init { input } = std::mem::replace(&mut self.state, State::Aborted) else {
            return Err(Error::InvalidState("the party has already started".into()));
        };
        let b = SecretScalar::random(rng);
        let advertised = match &keys {
            SessionKeys::Fresh { enc_sk, mask_sk } => Advertised {
                enc_pk: enc_sk.public_key(),
                mask_pk: mask_sk.public_key(),
                self_mask: self_mask_commitment(&b, &session, self.id),
                escrow: None,
            },
            SessionKeys::Run { keys, escrow } => Advertised {
                enc_pk: keys.enc_pk(),
                mask_pk: keys.mask_pk(),
                self_mask: self_mask_commitment(&b, &session, self.id),
                escrow: Some(escrow_commitment(escrow, &session, self.id)),
            },
        };
        self.outbox.push_back(ClientMessage::AdvertiseKeys {
            header: self.header(Round::AdvertiseKeys),
            enc_pk: advertised.enc_pk,
            mask_pk: advertised.mask_pk,
            self_mask_commitment: advertised.self_mask,
            escrow_commitment: advertised.escrow,
        });
        self.state = State::AwaitRoster {
            input,
            keys,
            b,
            advertised,
        };
        Ok(())
    }

    /// Handles a message from the aggregator.
    ///
    /// # Errors
    /// [`Error::PeerMisbehaved`] naming the aggregator (bad header, out of round, malformed
    /// list) or the party whose share ciphertext fails authentication; the message is then
    /// ignored and the state is unchanged. [`Error::NotEnoughParties`] (fatal) if fewer than the
    /// threshold remain; [`Error::InvalidState`] (fatal) if the aggregator lists this party as
    /// dropped, in which case it reveals nothing.
    pub fn handle_message<R: RngCore + CryptoRng + ?Sized>(
        &mut self,
        msg: ServerMessage,
        rng: &mut R,
    ) -> Result<()> {
        let agg = Peer::Aggregator;
        let expected = match self.state {
            State::AwaitRoster { .. } => Round::AdvertiseKeys,
            State::AwaitShares { .. } => Round::ShareKeys,
            State::AwaitSurvivors { .. } => Round::MaskedInput,
            State::Init { .. } => {
                return Err(Error::misbehaved(agg, "message before the party started"));
            }
            State::AwaitInput { .. } => {
                return Err(Error::misbehaved(
                    agg,
                    "message before this party sent its masked input",
                ));
            }
            State::Done | State::Aborted => {
                return Err(Error::misbehaved(agg, "message after the party finished"));
            }
        };
        self.config
            .check_header(msg.header(), agg, Peer::Party(self.id), expected)?;
        match msg {
            ServerMessage::Roster { parties, .. } => self.on_roster(parties, rng),
            ServerMessage::Shares { shares, .. } => self.on_shares(shares, true),
            ServerMessage::Survivors { survivors, .. } => self.on_survivors(survivors),
        }
        .inspect_err(|e| {
            if !matches!(e, Error::PeerMisbehaved { .. }) {
                self.state = State::Aborted;
            }
        })
    }

    fn on_roster<R: RngCore + CryptoRng + ?Sized>(
        &mut self,
        parties: Vec<PartyKeys>,
        rng: &mut R,
    ) -> Result<()> {
        let agg = Peer::Aggregator;
        let State::AwaitRoster {
            keys,
            b,
            advertised,
            ..
        } = &self.state
        else {
            return Err(Error::misbehaved(agg, "roster in the wrong round"));
        };
        let holders: BTreeSet<PartyId> = self.config.graph().holders(self.id).into_iter().collect();
        let mut prev: Option<PartyId> = None;
        let mut keys_seen = BTreeSet::new();
        let mut found_self = false;
        for k in &parties {
            if prev.is_some_and(|p| p >= k.party) {
                return Err(Error::misbehaved(
                    agg,
                    "roster not sorted or has duplicates",
                ));
            }
            prev = Some(k.party);
            if !holders.contains(&k.party) {
                return Err(Error::misbehaved(
                    agg,
                    format!("roster lists {}, not a neighbour", super::shown(k.party)),
                ));
            }
            if !keys_seen.insert(k.enc_pk) || !keys_seen.insert(k.mask_pk) {
                return Err(Error::misbehaved(agg, "roster repeats a public key"));
            }
            if k.party == self.id {
                let escrow_ok = match (&k.escrow_commitment, &advertised.escrow) {
                    (Some(a), Some(b)) => a.ct_eq(b),
                    (None, None) => true,
                    _ => false,
                };
                if k.enc_pk != advertised.enc_pk
                    || k.mask_pk != advertised.mask_pk
                    || !k.self_mask_commitment.ct_eq(&advertised.self_mask)
                    || !escrow_ok
                {
                    return Err(Error::misbehaved(
                        agg,
                        "roster has wrong keys for this party",
                    ));
                }
                found_self = true;
            }
        }
        if !found_self {
            return Err(Error::misbehaved(agg, "roster omits this party"));
        }
        let needed = self.config.share_threshold();
        if parties.len() < needed {
            return Err(Error::NotEnoughParties {
                round: Round::AdvertiseKeys.name(),
                available: parties.len(),
                needed,
            });
        }
        // Shamir-share the mask key (with run keys: the escrow key) and the self-mask secret
        // among the holders in U1.
        let xs: Vec<u32> = parties.iter().map(|k| k.party.0 + 1).collect();
        let shared_secret = match keys {
            SessionKeys::Fresh { mask_sk, .. } => mask_sk,
            SessionKeys::Run { escrow, .. } => escrow,
        };
        let key_shares = shamir::split(shared_secret, needed, &xs, rng)?;
        let b_shares = shamir::split(b, needed, &xs, rng)?;
        let session = self.config.session();
        let mut out = Vec::with_capacity(parties.len().saturating_sub(1));
        let mut own = None;
        let mut seeds = BTreeMap::new();
        let mut share_keys = BTreeMap::new();
        for ((k, ks), bs) in parties.iter().zip(key_shares).zip(b_shares) {
            if k.party == self.id {
                own = Some(Held {
                    mask_key: ks,
                    self_mask: bs,
                });
                continue;
            }
            // The pair-mask seed with k (used in round 2, revealed in round 3 only if k is
            // reported dropped) and the commitment that lets the aggregator check it.
            let (key, seed, escrowed_seed) = match keys {
                SessionKeys::Fresh { enc_sk, mask_sk } => {
                    let peer = Peer::Party(k.party);
                    let mask_shared = mask_sk.diffie_hellman(&k.mask_pk, peer)?;
                    let seed = pair_mask_seed(&mask_shared, &session, self.id, k.party)?;
                    let shared = enc_sk.diffie_hellman(&k.enc_pk, peer)?;
                    (share_key(&shared, &session, self.id, k.party)?, seed, None)
                }
                SessionKeys::Run { keys, escrow } => {
                    let (key, seed) =
                        keys.pair_secrets(&session, self.id, k.party, k.enc_pk, k.mask_pk)?;
                    let escrowed =
                        escrow_seed(escrow, &session, self.id, k.party, seed.as_bytes())?;
                    (key, seed, Some(escrowed))
                }
            };
            let seed_commitment = pair_seed_commitment(&seed, &session, self.id, k.party);
            seeds.insert(k.party, seed);
            let (nonce, aad) = share_nonce_aad(&session, self.id, k.party);
            let mut pt = [0u8; 64];
            pt[..32].copy_from_slice(&ks.to_bytes());
            pt[32..].copy_from_slice(&bs.to_bytes());
            let ct = seal(&key, nonce, &aad, &pt);
            pt.zeroize();
            // The same key (derived from the pair sorted) opens k's share to this party.
            share_keys.insert(k.party, key);
            out.push(EncryptedShare {
                to: k.party,
                ciphertext: ct?,
                seed_commitment,
                escrowed_seed,
            });
        }
        let own = own.ok_or_else(|| Error::misbehaved(agg, "roster omits this party"))?;
        // The private keys are no longer needed: the mask key's shares went out, the seeds and
        // the share keys are derived.
        let State::AwaitRoster { input, b, .. } =
            std::mem::replace(&mut self.state, State::Aborted)
        else {
            return Err(Error::InvalidState("state changed".into()));
        };
        self.outbox.push_back(ClientMessage::ShareKeys {
            header: self.header(Round::ShareKeys),
            shares: out,
        });
        self.state = State::AwaitShares {
            input,
            b,
            share_keys,
            own,
            seeds,
        };
        Ok(())
    }

    /// Hazmat: a copy of this party, state and secrets included.
    pub(crate) fn duplicate(&self) -> Self {
        Self {
            config: self.config.clone(),
            id: self.id,
            state: self.state.clone(),
            outbox: self.outbox.clone(),
            run_keys: self.run_keys.clone(),
        }
    }

    /// Hazmat: handles the round-1 shares without computing (or sending) a masked input.
    pub(crate) fn accept_shares_unmasked(&mut self, msg: ServerMessage) -> Result<()> {
        self.config.check_header(
            msg.header(),
            Peer::Aggregator,
            Peer::Party(self.id),
            Round::ShareKeys,
        )?;
        match msg {
            ServerMessage::Shares { shares, .. } => self.on_shares(shares, false),
            _ => Err(Error::misbehaved(
                Peer::Aggregator,
                "expected the round-1 shares",
            )),
        }
    }

    fn on_shares(
        &mut self,
        shares: Vec<super::messages::ForwardedShare>,
        mask: bool,
    ) -> Result<()> {
        let agg = Peer::Aggregator;
        let State::AwaitShares {
            input,
            b,
            share_keys,
            seeds,
            ..
        } = &self.state
        else {
            return Err(Error::misbehaved(agg, "shares in the wrong round"));
        };
        let session = self.config.session();
        let mut held = BTreeMap::new();
        let mut prev: Option<PartyId> = None;
        for s in &shares {
            if prev.is_some_and(|p| p >= s.from) {
                return Err(Error::misbehaved(agg, "shares not sorted or duplicated"));
            }
            prev = Some(s.from);
            if s.from == self.id {
                return Err(Error::misbehaved(
                    agg,
                    "forwarded a share from this party to itself",
                ));
            }
            let Some(key) = share_keys.get(&s.from) else {
                return Err(Error::misbehaved(
                    agg,
                    format!("share from {}, not in the roster", super::shown(s.from)),
                ));
            };
            let culprit = Peer::Party(s.from);
            let (nonce, aad) = share_nonce_aad(&session, s.from, self.id);
            let Some(mut pt) = open(key, nonce, &aad, &s.ciphertext)? else {
                return Err(Error::misbehaved(
                    culprit,
                    "share ciphertext fails authentication (tampered in transit or by the sender)",
                ));
            };
            let parsed = (|| {
                let a: [u8; 32] = pt.get(..32)?.try_into().ok()?;
                let c: [u8; 32] = pt.get(32..64)?.try_into().ok()?;
                if pt.len() != 64 {
                    return None;
                }
                Some(Held {
                    mask_key: SecretScalar::from_canonical(a)?,
                    self_mask: SecretScalar::from_canonical(c)?,
                })
            })();
            pt.zeroize();
            let Some(h) = parsed else {
                return Err(Error::misbehaved(culprit, "share plaintext is malformed"));
            };
            held.insert(s.from, h);
        }
        let needed = self.config.share_threshold();
        if held.len() + 1 < needed {
            return Err(Error::NotEnoughParties {
                round: Round::ShareKeys.name(),
                available: held.len() + 1,
                needed,
            });
        }
        // Mask: y = x + PRG(b) + sum_{v in U2} +-PRG(s_uv). Without the input yet (a deferred
        // party), the mask alone is expanded (from zero) and the input is added when it comes.
        let mut y = match (mask, input) {
            (false, _) => SecretVec(Vec::new()),
            (true, Some(input)) => input.clone(),
            (true, None) => SecretVec(vec![W::default(); self.config.dim()]),
        };
        let deferred = mask && input.is_none();
        if mask {
            prg::add_mask(&self_mask_seed(b, &session, self.id)?, &mut y.0);
        }
        for v in held.keys() {
            if !seeds.contains_key(v) {
                return Err(Error::InvalidState(format!(
                    "no pair-mask seed with {v} although it is in the roster"
                )));
            }
        }
        for (v, seed) in seeds.iter().filter(|(v, _)| mask && held.contains_key(*v)) {
            prg::apply_mask(seed, &mut y.0, self.id > *v);
        }
        let State::AwaitShares { own, mut seeds, .. } =
            std::mem::replace(&mut self.state, State::Aborted)
        else {
            return Err(Error::InvalidState("state changed".into()));
        };
        // Keep the seeds of the neighbours it masked with (U2); the others are zeroized.
        seeds.retain(|v, _| held.contains_key(v));
        held.insert(self.id, own);
        if deferred {
            // b is dropped (zeroized) with the old state; the mask waits for the input.
            self.state = State::AwaitInput {
                mask: y,
                held,
                seeds,
            };
            return Ok(());
        }
        if mask {
            self.outbox.push_back(ClientMessage::MaskedInput {
                header: self.header(Round::MaskedInput),
                masked: RingVector(std::mem::take(&mut y.0)),
            });
        }
        // input, keys and b are dropped (zeroized) with the old state.
        self.state = State::AwaitSurvivors { held, seeds };
        Ok(())
    }

    fn on_survivors(&mut self, survivors: Vec<PartyId>) -> Result<()> {
        let agg = Peer::Aggregator;
        let State::AwaitSurvivors { held, seeds } = &self.state else {
            return Err(Error::misbehaved(agg, "survivor list in the wrong round"));
        };
        let mut prev: Option<PartyId> = None;
        for s in &survivors {
            if prev.is_some_and(|p| p >= *s) || s.index() >= self.config.parties() {
                return Err(Error::misbehaved(
                    agg,
                    "survivor list not sorted, duplicated or out of range",
                ));
            }
            prev = Some(*s);
            if (*s == self.id || self.config.graph().adjacent(self.id, *s)) && !held.contains_key(s)
            {
                return Err(Error::misbehaved(
                    agg,
                    format!(
                        "{} listed as a survivor but it never shared its keys",
                        super::shown(*s)
                    ),
                ));
            }
        }
        let set: BTreeSet<PartyId> = survivors.into_iter().collect();
        if !set.contains(&self.id) {
            self.state = State::Aborted;
            return Err(Error::InvalidState(
                "the aggregator reports this party as dropped; it reveals nothing".into(),
            ));
        }
        if set.len() < self.config.threshold() {
            return Err(Error::NotEnoughParties {
                round: Round::MaskedInput.name(),
                available: set.len(),
                needed: self.config.threshold(),
            });
        }
        let shares = held
            .iter()
            .map(|(owner, h)| {
                if set.contains(owner) {
                    RevealedShare {
                        owner: *owner,
                        kind: ShareKind::SelfMask,
                        value: ShareValue(h.self_mask.to_bytes()),
                    }
                } else {
                    RevealedShare {
                        owner: *owner,
                        kind: ShareKind::MaskKey,
                        value: ShareValue(h.mask_key.to_bytes()),
                    }
                }
            })
            .collect();
        // Pair seeds only for neighbours reported dropped, never for a listed survivor.
        let seeds = seeds
            .iter()
            .filter(|(v, _)| !set.contains(*v))
            .map(|(v, seed)| RevealedSeed {
                peer: *v,
                seed: SeedValue(*seed.as_bytes()),
            })
            .collect();
        self.outbox.push_back(ClientMessage::Unmask {
            header: self.header(Round::Unmask),
            shares,
            seeds,
        });
        self.state = State::Done;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secagg::SessionId;
    use sotto_dp::rng::seeded_rng;

    #[test]
    fn secrets_are_never_printed() {
        let config = SecAggConfig::new(SessionId([1; 16]), 3, 2, 2).unwrap();
        let mut c =
            SecAggClient::<u32>::new(config, PartyId(0), vec![123_456_789, 987_654_321]).unwrap();
        c.start(&mut seeded_rng(1)).unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("123456789") && !dbg.contains("987654321"),
            "{dbg}"
        );
        let v = SecretVec(vec![123_456_789u32]);
        assert_eq!(format!("{v:?}"), "SecretVec([redacted])");
        let share = RevealedShare {
            owner: PartyId(1),
            kind: ShareKind::SelfMask,
            value: ShareValue([0xAB; 32]),
        };
        let dbg = format!("{share:?}");
        assert!(dbg.contains("[redacted]") && !dbg.contains("171"), "{dbg}");
        let seed = RevealedSeed {
            peer: PartyId(1),
            seed: SeedValue([0xCD; 32]),
        };
        let dbg = format!("{seed:?}");
        assert!(dbg.contains("[redacted]") && !dbg.contains("205"), "{dbg}");
        // A party outside the session's range or with a wrong-length input is a clean error.
        let config = SecAggConfig::new(SessionId([1; 16]), 3, 2, 2).unwrap();
        assert!(SecAggClient::<u32>::new(config.clone(), PartyId(3), vec![0, 0]).is_err());
        assert!(SecAggClient::<u32>::new(config, PartyId(0), vec![0]).is_err());
    }

    #[test]
    fn deferred_input_runs_the_key_rounds_first_and_sums_exactly() {
        use crate::secagg::SecAggAggregator;
        use std::time::{Duration, Instant};
        let config = SecAggConfig::new(SessionId([7; 16]), 3, 2, 2).unwrap();
        let mut rng = seeded_rng(3);
        let mut clients: Vec<SecAggClient<u64>> = (0..3)
            .map(|i| SecAggClient::new_deferred(config.clone(), PartyId(i)).unwrap())
            .collect();
        let now = Instant::now();
        let mut aggregator = SecAggAggregator::new(config, Duration::from_secs(10));
        aggregator.start(now).unwrap();
        for c in &mut clients {
            assert!(c.needs_input());
            c.start(&mut rng).unwrap();
        }
        let mut pump = |clients: &mut Vec<SecAggClient<u64>>| {
            for c in clients.iter_mut() {
                while let Some(msg) = c.poll_transmit() {
                    aggregator.handle_message(now, c.id(), msg).unwrap();
                }
            }
            let mut results = Vec::new();
            while let Some((to, msg)) = aggregator.poll_transmit() {
                results.push(clients[to.index()].handle_message(msg, &mut rng));
            }
            results
        };
        // Round 0 (roster delivered: each party shares its keys without an input).
        assert!(pump(&mut clients).iter().all(Result::is_ok));
        // Party 2 gets its input late; parties 0 and 1 now.
        clients[0].provide_input(vec![1, 10]).unwrap();
        clients[1].provide_input(vec![2, 20]).unwrap();
        // A second input, or one of the wrong length, is refused without losing the first.
        assert!(matches!(
            clients[0].provide_input(vec![9, 9]),
            Err(Error::InvalidState(_))
        ));
        assert!(matches!(
            clients[2].provide_input(vec![1]),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(clients[2].needs_input());
        clients[2].provide_input(vec![3, 30]).unwrap();
        assert!(!clients[2].needs_input());
        // Round 1 (shares forwarded, masked inputs), then survivors and unmasking.
        for _ in 0..3 {
            assert!(pump(&mut clients).iter().all(Result::is_ok));
        }
        let out = aggregator.take_result().unwrap().unwrap();
        assert_eq!(out.sum(), &[6, 60]);
        // After masking, an input can no longer be given.
        assert!(clients[0].provide_input(vec![0, 0]).is_err());
    }

    #[test]
    fn deferred_party_expands_its_mask_before_the_input_and_sums_exactly() {
        use crate::secagg::SecAggAggregator;
        use std::time::{Duration, Instant};
        // Party 1 handles the round-1 shares before it has its input; parties 0 and 2 have
        // theirs. The sum must be exact, and party 1 must send nothing until its input comes.
        let config = SecAggConfig::new(SessionId([8; 16]), 3, 2, 3).unwrap();
        let mut rng = seeded_rng(4);
        let mut clients = vec![
            SecAggClient::<u32>::new(config.clone(), PartyId(0), vec![5, 6, 7]).unwrap(),
            SecAggClient::<u32>::new_deferred(config.clone(), PartyId(1)).unwrap(),
            SecAggClient::<u32>::new(config.clone(), PartyId(2), vec![u32::MAX, 1, 2]).unwrap(),
        ];
        let now = Instant::now();
        let mut aggregator = SecAggAggregator::new(config, Duration::from_secs(10));
        aggregator.start(now).unwrap();
        for c in &mut clients {
            c.start(&mut rng).unwrap();
        }
        let pump = |clients: &mut Vec<SecAggClient<u32>>,
                    aggregator: &mut SecAggAggregator<u32>| {
            for c in clients.iter_mut() {
                while let Some(msg) = c.poll_transmit() {
                    aggregator.handle_message(now, c.id(), msg).unwrap();
                }
            }
            let mut out = Vec::new();
            while let Some((to, msg)) = aggregator.poll_transmit() {
                out.push((to, msg));
            }
            out
        };
        // Round 0 (roster) and round 1 (shares) reach every party.
        for _ in 0..2 {
            for (to, msg) in pump(&mut clients, &mut aggregator) {
                clients[to.index()].handle_message(msg, &mut rng).unwrap();
            }
        }
        // Party 1's mask is expanded, nothing is queued, and it still needs its input.
        assert!(clients[1].needs_input());
        assert_eq!(clients[1].round(), Some(Round::MaskedInput));
        assert!(clients[1].poll_transmit().is_none());
        // Parties 0 and 2 sent their masked inputs; the aggregator waits for party 1.
        assert!(pump(&mut clients, &mut aggregator).is_empty());
        // A message meant for a later round is refused while the input is missing, and the
        // party stays usable.
        let early = ServerMessage::Survivors {
            header: Header {
                session: SessionId([8; 16]),
                round: Round::MaskedInput,
                from: Peer::Aggregator,
                to: Peer::Party(PartyId(1)),
            },
            survivors: vec![PartyId(0), PartyId(1), PartyId(2)],
        };
        let err = clients[1].handle_message(early, &mut rng).unwrap_err();
        assert!(matches!(err, Error::PeerMisbehaved { .. }), "{err}");
        // A wrong length is refused without leaving the state.
        assert!(matches!(
            clients[1].provide_input(vec![1]),
            Err(Error::InvalidParameter { .. })
        ));
        clients[1].provide_input(vec![10, 20, 30]).unwrap();
        assert!(!clients[1].needs_input());
        assert!(clients[1].provide_input(vec![0, 0, 0]).is_err());
        // Masked input, survivors, unmasking.
        for _ in 0..2 {
            for (to, msg) in pump(&mut clients, &mut aggregator) {
                clients[to.index()].handle_message(msg, &mut rng).unwrap();
            }
        }
        pump(&mut clients, &mut aggregator);
        let out = aggregator.take_result().unwrap().unwrap();
        assert_eq!(out.sum(), &[14, 27, 39]);
    }
}
