//! Long-term party keys for a run of aggregations (see [`super::SecAggConfig::with_run_keys`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rand_core::{CryptoRng, RngCore};

use super::{SessionId, pair_mask_seed, share_key};
use crate::crypto::{PublicKey, SecretScalar, SharedSecret};
use crate::error::{PartyId, Peer, Result};
use crate::prg::Seed;

/// The two X25519 secrets agreed with one neighbour, for the public keys it advertised.
struct Agreed {
    enc_pk: PublicKey,
    mask_pk: PublicKey,
    enc: SharedSecret,
    mask: SharedSecret,
}

/// A party's X25519 keys for every session of a run (for instance, every round of a training
/// run), with the secrets it agreed on with each neighbour, computed once per neighbour.
///
/// With per-session keys a party runs one key generation and one X25519 per neighbour for each
/// of its two keys in every session; with run keys it runs them once per run, and a session
/// costs only hashes, symmetric encryption and Shamir sharing. Share the keys between the
/// sessions of one party with an [`std::sync::Arc`]; never between parties.
///
/// # Security
/// The private keys and agreed secrets zeroize on drop and never print. They are never
/// Shamir-shared: the recovery of a dropped party uses a per-session escrow key instead (see
/// [`super::SecAggConfig::with_run_keys`]).
///
/// # Example
/// ```rust
/// use std::sync::Arc;
/// use sotto_mpc::secagg::{RunKeys, SecAggClient, SecAggConfig, SessionId};
/// use sotto_mpc::PartyId;
/// let mut rng = sotto_dp::rng::seeded_rng(1);
/// let keys = Arc::new(RunKeys::generate(&mut rng));
/// for round in 0u8..3 {
///     // One session per round, each with its own id, all with the same keys.
///     let config = SecAggConfig::new(SessionId([round; 16]), 3, 2, 4)?.with_run_keys();
///     let mut party = SecAggClient::<u64>::new_deferred(config, PartyId(0))?
///         .with_run_keys(Arc::clone(&keys))?;
///     party.start(&mut rng)?;
///     assert!(party.poll_transmit().is_some());
/// }
/// # Ok::<(), sotto_mpc::Error>(())
/// ```
pub struct RunKeys {
    enc_sk: SecretScalar,
    mask_sk: SecretScalar,
    enc_pk: PublicKey,
    mask_pk: PublicKey,
    agreed: Mutex<BTreeMap<PartyId, Agreed>>,
    agreements: AtomicU64,
}

impl std::fmt::Debug for RunKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunKeys")
            .field("enc_pk", &self.enc_pk)
            .field("mask_pk", &self.mask_pk)
            .field("agreements", &self.agreements())
            .finish_non_exhaustive()
    }
}

impl RunKeys {
    /// Fresh key pairs (two X25519 base-point multiplications).
    pub fn generate<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let enc_sk = SecretScalar::random(rng);
        let mask_sk = SecretScalar::random(rng);
        Self {
            enc_pk: enc_sk.public_key(),
            mask_pk: mask_sk.public_key(),
            enc_sk,
            mask_sk,
            agreed: Mutex::new(BTreeMap::new()),
            agreements: AtomicU64::new(0),
        }
    }

    /// The share-encryption public key.
    pub fn enc_pk(&self) -> PublicKey {
        self.enc_pk
    }

    /// The pair-mask public key.
    pub fn mask_pk(&self) -> PublicKey {
        self.mask_pk
    }

    /// How many X25519 key agreements these keys have run (two per neighbour and per change of
    /// a neighbour's advertised keys).
    pub fn agreements(&self) -> u64 {
        self.agreements.load(Ordering::Relaxed)
    }

    /// The share key and the pair-mask seed of `me` with `peer` in `session`, from the
    /// secrets agreed with `peer`'s advertised keys (agreed on first use, or again if `peer`
    /// advertises other keys).
    ///
    /// # Errors
    /// [`crate::Error::PeerMisbehaved`] naming `peer` for a low-order public key.
    pub(crate) fn pair_secrets(
        &self,
        session: &SessionId,
        me: PartyId,
        peer: PartyId,
        enc_pk: PublicKey,
        mask_pk: PublicKey,
    ) -> Result<(Seed, Seed)> {
        // A poisoned lock only means another thread panicked mid-insert; the map itself holds
        // complete entries, so keep using it.
        let mut agreed = self
            .agreed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = agreed
            .get(&peer)
            .is_none_or(|a| a.enc_pk != enc_pk || a.mask_pk != mask_pk);
        if fresh {
            let name = Peer::Party(peer);
            let entry = Agreed {
                enc_pk,
                mask_pk,
                enc: self.enc_sk.diffie_hellman(&enc_pk, name)?,
                mask: self.mask_sk.diffie_hellman(&mask_pk, name)?,
            };
            self.agreements.fetch_add(2, Ordering::Relaxed);
            agreed.insert(peer, entry);
        }
        let Some(a) = agreed.get(&peer) else {
            return Err(crate::Error::InvalidState(
                "run keys: agreed secret missing".into(),
            ));
        };
        Ok((
            share_key(&a.enc, session, me, peer)?,
            pair_mask_seed(&a.mask, session, me, peer)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::secagg::messages::ShareKind;
    use crate::secagg::{ClientMessage, Round, SecAggConfig, escrow_seed};
    use crate::shamir;
    use crate::sim::{SimOptions, Simulation};

    /// Party 0's escrowed seeds with each neighbour, from a recorded view.
    fn escrows(view: &[(PartyId, ClientMessage<u64>)]) -> BTreeMap<PartyId, [u8; 32]> {
        view.iter()
            .filter(|(from, _)| *from == PartyId(0))
            .filter_map(|(_, m)| match m {
                ClientMessage::ShareKeys { shares, .. } => Some(shares),
                _ => None,
            })
            .flatten()
            .filter_map(|s| s.escrowed_seed.map(|e| (s.to, e)))
            .collect()
    }

    /// The aggregator reconstructs a dropped party's escrow key of one session. With it, it
    /// opens that session's escrowed seeds (control) but none of the party's seeds of another
    /// session of the same run, whose escrows it also holds: recovery is per session.
    #[test]
    fn a_reconstructed_escrow_key_opens_only_its_own_session() {
        let (n, t) = (5, 3);
        let mut rng = sotto_dp::rng::seeded_rng(40);
        let keys: Vec<Arc<RunKeys>> = (0..n)
            .map(|_| Arc::new(RunKeys::generate(&mut rng)))
            .collect();
        let inputs: Vec<Vec<u64>> = (0..n).map(|i| vec![i as u64; 4]).collect();
        let run = |session: SessionId, dropouts: BTreeMap<PartyId, Round>| {
            let config = SecAggConfig::new(session, n, t, 4).unwrap().with_run_keys();
            // Each session draws from its own stream, as a party's one generator does.
            let options = SimOptions {
                seed: u64::from(session.0[0]),
                dropouts,
                record_view: true,
                run_keys: keys.clone(),
                ..SimOptions::default()
            };
            let report = Simulation::new(config, inputs.clone(), options)
                .unwrap()
                .run();
            assert!(report.result.is_ok());
            report.aggregator_view
        };
        let (s1, s2) = (SessionId([1; 16]), SessionId([2; 16]));
        // Session 1: everyone survives. Session 2: party 0 drops after sharing, party 1 is
        // silent in the unmasking round, so 0's escrow key is reconstructed.
        let view1 = run(s1, BTreeMap::new());
        let view2 = run(
            s2,
            BTreeMap::from([
                (PartyId(0), Round::MaskedInput),
                (PartyId(1), Round::Unmask),
            ]),
        );
        let shares: Vec<(u32, SecretScalar)> = view2
            .iter()
            .filter_map(|(from, m)| match m {
                ClientMessage::Unmask { shares, .. } => Some((from, shares)),
                _ => None,
            })
            .flat_map(|(from, shares)| {
                shares
                    .iter()
                    .filter(|s| s.owner == PartyId(0))
                    .map(move |s| {
                        assert_eq!(s.kind, ShareKind::MaskKey);
                        (from.0 + 1, SecretScalar::from_canonical(s.value.0).unwrap())
                    })
            })
            .collect();
        assert_eq!(shares.len(), 3);
        let e0 = shamir::reconstruct(&shares, t).unwrap();
        let (esc1, esc2) = (escrows(&view1), escrows(&view2));
        assert_eq!(esc1.len(), n - 1);
        for v in 1..n as u32 {
            let v = PartyId(v);
            let seed = |session: &SessionId| {
                let k = &keys[v.index()];
                keys[0]
                    .pair_secrets(session, PartyId(0), v, k.enc_pk(), k.mask_pk())
                    .unwrap()
                    .1
            };
            let (seed1, seed2) = (seed(&s1), seed(&s2));
            assert_ne!(seed1.as_bytes(), seed2.as_bytes());
            // Control: session 2's escrow opens to session 2's seed.
            let opened = escrow_seed(&e0, &s2, PartyId(0), v, &esc2[&v]).unwrap();
            assert_eq!(&opened, seed2.as_bytes());
            // Session 1's escrow stays closed, whichever session the pad is taken for.
            for session in [&s1, &s2] {
                let tried = escrow_seed(&e0, session, PartyId(0), v, &esc1[&v]).unwrap();
                assert_ne!(&tried, seed1.as_bytes());
            }
        }
    }

    #[test]
    fn keys_never_print_and_agree_once_per_neighbour() {
        let mut rng = sotto_dp::rng::seeded_rng(41);
        let (a, b) = (RunKeys::generate(&mut rng), RunKeys::generate(&mut rng));
        let dbg = format!("{a:?}");
        assert!(
            dbg.contains("agreements") && !dbg.contains("enc_sk"),
            "{dbg}"
        );
        let s = SessionId([3; 16]);
        let (ka, sa) = a
            .pair_secrets(&s, PartyId(0), PartyId(1), b.enc_pk(), b.mask_pk())
            .unwrap();
        let (kb, sb) = b
            .pair_secrets(&s, PartyId(1), PartyId(0), a.enc_pk(), a.mask_pk())
            .unwrap();
        // Both ends derive the same share key and seed.
        assert_eq!(ka.as_bytes(), kb.as_bytes());
        assert_eq!(sa.as_bytes(), sb.as_bytes());
        // Another session: other values, no new agreement.
        let (_, sa2) = a
            .pair_secrets(
                &SessionId([4; 16]),
                PartyId(0),
                PartyId(1),
                b.enc_pk(),
                b.mask_pk(),
            )
            .unwrap();
        assert_ne!(sa.as_bytes(), sa2.as_bytes());
        assert_eq!(a.agreements(), 2);
        // A neighbour advertising other keys triggers a new agreement.
        let c = RunKeys::generate(&mut rng);
        a.pair_secrets(&s, PartyId(0), PartyId(1), c.enc_pk(), c.mask_pk())
            .unwrap();
        assert_eq!(a.agreements(), 4);
        // A low-order key is refused, naming the peer.
        let e = a
            .pair_secrets(&s, PartyId(0), PartyId(2), PublicKey([0; 32]), c.mask_pk())
            .unwrap_err();
        assert_eq!(e.culprit(), Some(Peer::Party(PartyId(2))));
    }
}
