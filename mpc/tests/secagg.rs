//! End-to-end tests of the aggregator protocol through the simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use sotto_mpc::secagg::messages::ShareKind;
use sotto_mpc::secagg::{ClientMessage, Round, RunKeys, SecAggConfig, ServerMessage, SessionId};
use sotto_mpc::sim::{Envelope, SimOptions, Simulation};
use sotto_mpc::{Error, PartyId, Peer, wire};

fn inputs_u32(n: usize, dim: usize, seed: u64) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            (0..dim)
                .map(|j| {
                    (seed
                        .wrapping_mul(31)
                        .wrapping_add((i * 1000 + j) as u64 * 2654435761)
                        >> 7) as u32
                })
                .collect()
        })
        .collect()
}

fn sum_of(inputs: &[Vec<u32>], who: &[PartyId]) -> Vec<u32> {
    let mut s = vec![0u32; inputs[0].len()];
    for p in who {
        for (a, b) in s.iter_mut().zip(&inputs[p.index()]) {
            *a = a.wrapping_add(*b);
        }
    }
    s
}

/// One party's run keys per party, from a fixed seed.
fn run_keys(n: usize, seed: u64) -> Vec<Arc<RunKeys>> {
    let mut rng = sotto_dp::rng::seeded_rng(seed);
    (0..n)
        .map(|_| Arc::new(RunKeys::generate(&mut rng)))
        .collect()
}

fn round_of(k: u8) -> Option<Round> {
    match k {
        0 => Some(Round::AdvertiseKeys),
        1 => Some(Round::ShareKeys),
        2 => Some(Round::MaskedInput),
        3 => Some(Round::Unmask),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn sums_are_exact_for_any_dropout_pattern(
        n in 2usize..10,
        t_extra in 0usize..5,
        dim in 1usize..40,
        drops in proptest::collection::vec(0u8..12, 10),
        seed in any::<u64>(),
        sparse in any::<bool>(),
        long_term in any::<bool>(),
    ) {
        let t = (n / 2 + 1 + t_extra).min(n);
        let mut config = SecAggConfig::new(SessionId([seed as u8; 16]), n, t, dim).unwrap();
        if long_term {
            config = config.with_run_keys();
        }
        let sparse = sparse && n >= 5;
        if sparse {
            config = config.sparse(4, 3).unwrap();
        }
        let inputs = inputs_u32(n, dim, seed);
        let mut dropouts = BTreeMap::new();
        for (i, d) in drops.iter().take(n).enumerate() {
            if let Some(r) = round_of(*d) { dropouts.insert(PartyId(i as u32), r); }
        }
        let alive = |r: Round| (0..n).filter(|i| dropouts.get(&PartyId(*i as u32)).is_none_or(|d| *d > r)).count();
        let enough_global = [Round::AdvertiseKeys, Round::ShareKeys, Round::MaskedInput, Round::Unmask]
            .iter().all(|r| alive(*r) >= t);
        let keys = if long_term { run_keys(n, seed) } else { Vec::new() };
        let options = SimOptions { seed, dropouts: dropouts.clone(), run_keys: keys, ..SimOptions::default() };
        let report = Simulation::new(config, inputs.clone(), options).unwrap().run();
        match report.result {
            Ok(out) => {
                prop_assert!(out.survivors().len() >= t);
                let expected = sum_of(&inputs, out.survivors());
                prop_assert_eq!(out.sum(), &expected[..]);
                // Survivors are exactly the parties that sent a masked input.
                for p in out.survivors() {
                    prop_assert!(dropouts.get(p).is_none_or(|d| *d > Round::MaskedInput));
                }
                prop_assert!(enough_global);
            }
            Err(e) => {
                // Only a lack of parties may stop the protocol (sparse: a neighbourhood may
                // run short even when enough parties survive globally).
                prop_assert!(matches!(e, Error::NotEnoughParties { .. }), "{e}");
                prop_assert!(!enough_global || sparse, "{e}");
            }
        }
        prop_assert!(report.aggregator_rejections.is_empty());
        prop_assert!(report.misbehaved.is_empty());
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = wire::decode::<ClientMessage<u32>>(&bytes);
        let _ = wire::decode::<ClientMessage<u64>>(&bytes);
        let _ = wire::decode::<ServerMessage>(&bytes);
        let _ = wire::decode::<sotto_mpc::additive::AdditiveMessage<u32>>(&bytes);
        let _ = wire::decode::<sotto_mpc::additive::AdditiveMessage<u64>>(&bytes);
    }
}

#[test]
fn fewer_than_t_survivors_is_a_clean_error() {
    let config = SecAggConfig::new(SessionId([1; 16]), 5, 4, 8).unwrap();
    let mut dropouts = BTreeMap::new();
    dropouts.insert(PartyId(0), Round::MaskedInput);
    dropouts.insert(PartyId(1), Round::MaskedInput);
    let options = SimOptions {
        dropouts,
        ..SimOptions::default()
    };
    let report = Simulation::new(config, inputs_u32(5, 8, 1), options)
        .unwrap()
        .run();
    let e = report.result.unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotEnoughParties {
                round: "masked-input",
                available: 3,
                needed: 4
            }
        ),
        "{e}"
    );
}

#[test]
fn duplicated_messages_are_rejected_and_the_sum_is_exact() {
    let config = SecAggConfig::new(SessionId([2; 16]), 6, 4, 16).unwrap();
    let inputs = inputs_u32(6, 16, 2);
    let options = SimOptions {
        seed: 2,
        duplicate_probability: 0.5,
        ..SimOptions::default()
    };
    let report = Simulation::new(config, inputs.clone(), options)
        .unwrap()
        .run();
    let out = report.result.unwrap();
    assert_eq!(out.sum(), &sum_of(&inputs, out.survivors())[..]);
    assert!(!report.aggregator_rejections.is_empty());
    for e in &report.aggregator_rejections {
        assert!(matches!(e.culprit(), Some(Peer::Party(_))), "{e}");
    }
}

#[test]
fn a_late_masked_vector_is_rejected_and_its_owner_stays_hidden() {
    let n = 6;
    let config = SecAggConfig::new(SessionId([3; 16]), n, 4, 16).unwrap();
    let inputs = inputs_u32(n, 16, 3);
    let mut delayed = BTreeMap::new();
    delayed.insert(PartyId(5), Round::MaskedInput);
    let options = SimOptions {
        seed: 3,
        delayed,
        record_view: true,
        ..SimOptions::default()
    };
    let report = Simulation::new(config, inputs.clone(), options)
        .unwrap()
        .run();
    let out = report.result.unwrap();
    assert!(!out.survivors().contains(&PartyId(5)));
    assert_eq!(out.sum(), &sum_of(&inputs, out.survivors())[..]);
    // The late vector was rejected, naming party 5 ...
    assert!(
        report
            .aggregator_rejections
            .iter()
            .any(|e| e.culprit() == Some(Peer::Party(PartyId(5))))
    );
    // ... and no self-mask share of party 5 ever reached the aggregator, so its masked vector
    // (which the aggregator did see) can never be unmasked.
    for (_, msg) in &report.aggregator_view {
        if let ClientMessage::Unmask { shares, .. } = msg {
            for s in shares {
                if s.owner == PartyId(5) {
                    assert_eq!(s.kind, ShareKind::MaskKey);
                }
            }
        }
    }
}

fn tamper_run(hook: impl FnMut(&mut Envelope) + 'static) -> sotto_mpc::sim::SimReport<u32> {
    let config = SecAggConfig::new(SessionId([4; 16]), 6, 4, 8).unwrap();
    Simulation::new(
        config,
        inputs_u32(6, 8, 4),
        SimOptions {
            seed: 4,
            ..SimOptions::default()
        },
    )
    .unwrap()
    .with_tamper(Box::new(hook))
    .run()
}

#[test]
fn tampered_headers_are_rejected_naming_the_party() {
    // Party 3's masked input is re-stamped with another session: rejected, 3 treated as dropped.
    let report = tamper_run(|env| {
        if env.from == Peer::Party(PartyId(3)) && env.round == Round::MaskedInput {
            let mut msg: ClientMessage<u32> = wire::decode(&env.bytes).unwrap();
            msg.header_mut().session = SessionId([9; 16]);
            env.bytes = wire::encode(&msg).unwrap();
        }
    });
    assert!(
        report
            .aggregator_rejections
            .iter()
            .any(|e| e.culprit() == Some(Peer::Party(PartyId(3))))
    );
    let out = report.result.unwrap();
    assert!(!out.survivors().contains(&PartyId(3)));

    // Garbage bytes and trailing bytes from party 2 in round 0.
    let report = tamper_run(|env| {
        if env.from == Peer::Party(PartyId(2)) && env.round == Round::AdvertiseKeys {
            env.bytes.push(0);
        }
    });
    let e = &report.aggregator_rejections[0];
    assert_eq!(e.culprit(), Some(Peer::Party(PartyId(2))), "{e}");
    assert!(e.to_string().contains("trailing"), "{e}");
}

#[test]
fn out_of_round_replays_are_rejected_naming_the_party() {
    let mut saved: Option<Vec<u8>> = None;
    let report = tamper_run(move |env| {
        if env.from == Peer::Party(PartyId(1)) {
            if env.round == Round::AdvertiseKeys {
                saved = Some(env.bytes.clone());
            } else if env.round == Round::MaskedInput {
                // Replace the masked input by the old key advertisement.
                if let Some(b) = saved.clone() {
                    env.bytes = b;
                }
            }
        }
    });
    let e = report
        .aggregator_rejections
        .iter()
        .find(|e| e.culprit() == Some(Peer::Party(PartyId(1))))
        .unwrap();
    assert!(e.to_string().contains("out-of-round"), "{e}");
}

#[test]
fn tampered_share_ciphertexts_are_rejected_naming_the_owner() {
    let report = tamper_run(|env| {
        if env.to == Peer::Party(PartyId(0)) && env.round == Round::ShareKeys {
            let mut msg: ServerMessage = wire::decode(&env.bytes).unwrap();
            if let ServerMessage::Shares { shares, .. } = &mut msg {
                for s in shares.iter_mut() {
                    if s.from == PartyId(2) {
                        s.ciphertext[5] ^= 1;
                    }
                }
            }
            env.bytes = wire::encode(&msg).unwrap();
        }
    });
    let (who, e) = &report.client_errors[0];
    assert_eq!(*who, PartyId(0));
    assert_eq!(e.culprit(), Some(Peer::Party(PartyId(2))), "{e}");
}

#[test]
fn a_bad_unmasking_share_is_caught_and_its_sender_named() {
    let inputs = inputs_u32(6, 8, 4);
    let report = tamper_run(|env| {
        // Party 0's shares are among the first t used for interpolation.
        if env.from == Peer::Party(PartyId(0)) && env.round == Round::Unmask {
            let mut msg: ClientMessage<u32> = wire::decode(&env.bytes).unwrap();
            if let ClientMessage::Unmask { shares, .. } = &mut msg {
                shares[0].value.0 = [1; 32];
            }
            env.bytes = wire::encode(&msg).unwrap();
        }
    });
    assert_eq!(report.misbehaved.len(), 1);
    assert_eq!(
        report.misbehaved[0].culprit(),
        Some(Peer::Party(PartyId(0)))
    );
    let out = report.result.unwrap();
    assert_eq!(out.sum(), &sum_of(&inputs, out.survivors())[..]);
}

#[test]
fn sparse_graph_with_many_parties_sums_exactly() {
    let n = 60;
    let config = SecAggConfig::new(SessionId([5; 16]), n, 31, 4)
        .unwrap()
        .sparse(10, 7)
        .unwrap();
    let inputs = inputs_u32(n, 4, 5);
    let mut dropouts = BTreeMap::new();
    for i in (0..n).step_by(7) {
        dropouts.insert(PartyId(i as u32), round_of((i % 4) as u8).unwrap());
    }
    let options = SimOptions {
        seed: 5,
        dropouts,
        ..SimOptions::default()
    };
    let report = Simulation::new(config, inputs.clone(), options)
        .unwrap()
        .run();
    let out = report.result.unwrap();
    assert_eq!(out.sum(), &sum_of(&inputs, out.survivors())[..]);
    // Each party sent O(degree) keys and shares, not O(n): at most one ~114-byte entry per
    // neighbour (80-byte ciphertext, 32-byte pair-seed commitment, ids), against ~6,800 bytes
    // for all 59 other parties.
    let b = &report.bytes_sent[&PartyId(1)];
    assert!(b[&Round::ShareKeys] < 11 * 120, "{b:?}");
}

/// The aggregator's view (every masked vector) does not depend on the inputs: the top 4 bits
/// of masked words are uniform for all-zero inputs and for large inputs, and the two
/// histograms agree (chi-square tests at significance 0.001 each).
#[test]
fn aggregator_view_is_independent_of_the_inputs() {
    let n = 3;
    let dim = 64;
    let hist = |big: bool| {
        let mut h = [0f64; 16];
        for run in 0..120u64 {
            let config = SecAggConfig::new(SessionId([run as u8; 16]), n, 2, dim).unwrap();
            let inputs: Vec<Vec<u32>> = (0..n)
                .map(|_| vec![if big { 0xF000_0000 } else { 0 }; dim])
                .collect();
            let options = SimOptions {
                seed: run + if big { 1 << 32 } else { 0 },
                record_view: true,
                ..SimOptions::default()
            };
            let report = Simulation::new(config, inputs, options).unwrap().run();
            assert!(report.result.is_ok());
            for (_, msg) in &report.aggregator_view {
                if let ClientMessage::MaskedInput { masked, .. } = msg {
                    for w in masked.as_slice() {
                        h[(w >> 28) as usize] += 1.0;
                    }
                }
            }
        }
        h
    };
    let a = hist(false);
    let b = hist(true);
    let total: f64 = a.iter().sum();
    let e = total / 16.0;
    let chi_a: f64 = a.iter().map(|c| (c - e) * (c - e) / e).sum();
    let chi_b: f64 = b.iter().map(|c| (c - e) * (c - e) / e).sum();
    // 15 degrees of freedom: critical value 37.70 at 0.001.
    assert!(chi_a < 37.7 && chi_b < 37.7, "{chi_a} {chi_b}");
    // Two-sample homogeneity test, 15 degrees of freedom.
    let chi_ab: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x - y) / (x + y))
        .sum();
    assert!(chi_ab < 37.7, "{chi_ab}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Tampering with the header of any one frame, or replacing it by an earlier frame of the
    /// same sender (replay), or appending/truncating bytes, is rejected with an error that
    /// names the sender; the run still ends with the exact sum or a clean lack of parties.
    #[test]
    fn any_tampered_or_replayed_frame_is_rejected_naming_its_sender(
        target in 0usize..40,
        kind in 0u8..6,
        seed in any::<u64>(),
    ) {
        let n = 6;
        let inputs = inputs_u32(n, 8, seed);
        let config = SecAggConfig::new(SessionId([6; 16]), n, 4, 8).unwrap();
        let mut count = 0usize;
        let mut history: Vec<Envelope> = Vec::new();
        let tampered_from = std::rc::Rc::new(std::cell::Cell::new(None));
        let tf = tampered_from.clone();
        let hook = move |env: &mut Envelope| {
            count += 1;
            history.push(env.clone());
            if count - 1 != target {
                return;
            }
            let before = env.bytes.clone();
            match (kind, env.from) {
                (0..=2, Peer::Party(_)) => {
                    let mut m: ClientMessage<u32> = wire::decode(&env.bytes).unwrap();
                    let h = m.header_mut();
                    match kind {
                        0 => h.session = SessionId([0xEE; 16]),
                        1 => h.to = Peer::Party(PartyId(0)),
                        _ => h.round = if h.round == Round::AdvertiseKeys { Round::Unmask } else { Round::AdvertiseKeys },
                    }
                    env.bytes = wire::encode(&m).unwrap();
                }
                (0..=2, Peer::Aggregator) => {
                    let mut m: ServerMessage = wire::decode(&env.bytes).unwrap();
                    let h = m.header_mut();
                    match kind {
                        0 => h.session = SessionId([0xEE; 16]),
                        1 => h.to = Peer::Aggregator,
                        _ => h.round = if h.round == Round::AdvertiseKeys { Round::Unmask } else { Round::AdvertiseKeys },
                    }
                    env.bytes = wire::encode(&m).unwrap();
                }
                (3, _) => {
                    if let Some(old) = history.iter().find(|o| o.from == env.from && o.to == env.to && o.round < env.round) {
                        env.bytes = old.bytes.clone();
                    }
                }
                (4, _) => env.bytes.push(1),
                _ => { env.bytes.pop(); }
            }
            if env.bytes != before {
                tf.set(Some(env.from));
            }
        };
        let options = SimOptions { seed, ..SimOptions::default() };
        let report = Simulation::new(config, inputs.clone(), options).unwrap().with_tamper(Box::new(hook)).run();
        if let Some(culprit) = tampered_from.get() {
            let named = report.aggregator_rejections.iter().map(|e| e.culprit())
                .chain(report.client_errors.iter().map(|(_, e)| e.culprit()))
                .any(|c| c == Some(culprit));
            prop_assert!(named, "no rejection named {culprit}: {:?} {:?}", report.aggregator_rejections, report.client_errors);
        }
        for e in &report.aggregator_rejections {
            prop_assert!(e.culprit().is_some(), "{e}");
        }
        match report.result {
            Ok(out) => prop_assert_eq!(out.sum(), &sum_of(&inputs, out.survivors())[..]),
            Err(e) => prop_assert!(matches!(e, Error::NotEnoughParties { .. }), "{e}"),
        }
    }
}

/// n = 6, t = 4, dim 8; party 5 drops before its masked input (after sharing its keys), and
/// `extra` adds more dropouts. Records the aggregator's view.
fn seed_run(
    extra: &[(u32, Round)],
    hook: impl FnMut(&mut Envelope) + 'static,
) -> (sotto_mpc::sim::SimReport<u32>, Vec<Vec<u32>>) {
    seed_run_keys(false, extra, hook)
}

/// [`seed_run`] with per-session keys or, with `long_term`, run keys.
fn seed_run_keys(
    long_term: bool,
    extra: &[(u32, Round)],
    hook: impl FnMut(&mut Envelope) + 'static,
) -> (sotto_mpc::sim::SimReport<u32>, Vec<Vec<u32>>) {
    let mut config = SecAggConfig::new(SessionId([6; 16]), 6, 4, 8).unwrap();
    if long_term {
        config = config.with_run_keys();
    }
    let inputs = inputs_u32(6, 8, 6);
    let mut dropouts = BTreeMap::new();
    dropouts.insert(PartyId(5), Round::MaskedInput);
    for &(p, r) in extra {
        dropouts.insert(PartyId(p), r);
    }
    let report = Simulation::new(
        config,
        inputs.clone(),
        SimOptions {
            seed: 6,
            dropouts,
            record_view: true,
            run_keys: if long_term {
                run_keys(6, 60)
            } else {
                Vec::new()
            },
            ..SimOptions::default()
        },
    )
    .unwrap()
    .with_tamper(Box::new(hook))
    .run();
    (report, inputs)
}

#[test]
fn dropped_pairwise_masks_are_removed_with_revealed_seeds() {
    let (report, inputs) = seed_run(&[], |_| {});
    assert!(report.misbehaved.is_empty(), "{:?}", report.misbehaved);
    let out = report.result.unwrap();
    assert_eq!(out.survivors().len(), 5);
    assert_eq!(out.sum(), &sum_of(&inputs, out.survivors())[..]);
    // One revealed seed per (dropped 5, survivor) pair, no X25519 fallback, and only the five
    // self-mask secrets reconstructed (party 5's mask key is not needed).
    assert_eq!(report.stats.pair_seeds_revealed, 5);
    assert_eq!(report.stats.pair_seeds_recomputed, 0);
    assert_eq!(report.stats.secrets_reconstructed, 5);
}

#[test]
fn a_wrong_revealed_seed_is_detected_its_sender_named_and_the_sum_exact() {
    for long_term in [false, true] {
        let (report, inputs) = seed_run_keys(long_term, &[], |env| {
            if env.from == Peer::Party(PartyId(1)) && env.round == Round::Unmask {
                let mut msg: ClientMessage<u32> = wire::decode(&env.bytes).unwrap();
                if let ClientMessage::Unmask { seeds, .. } = &mut msg {
                    assert_eq!(seeds.len(), 1);
                    assert_eq!(seeds[0].peer, PartyId(5));
                    seeds[0].seed.0[3] ^= 0x40;
                }
                env.bytes = wire::encode(&msg).unwrap();
            }
        });
        assert_eq!(report.misbehaved.len(), 1, "{:?}", report.misbehaved);
        let e = &report.misbehaved[0];
        assert_eq!(e.culprit(), Some(Peer::Party(PartyId(1))), "{e}");
        assert!(e.to_string().contains("pair-mask seed"), "{e}");
        // The pair (5, 1) was recovered the fallback way (party 5's mask key, or with run keys
        // its escrow key, from shares).
        assert_eq!(report.stats.pair_seeds_revealed, 4);
        assert_eq!(report.stats.pair_seeds_recomputed, 1);
        assert_eq!(report.stats.secrets_reconstructed, 6);
        let out = report.result.unwrap();
        assert_eq!(out.sum(), &sum_of(&inputs, out.survivors())[..]);
    }
}

#[test]
fn a_survivor_silent_in_the_unmask_round_forces_the_fallback_and_the_sum_is_exact() {
    // Party 2 sends its masked input (so it is in U3) but never answers the unmasking round:
    // nobody reveals the seed of the pair (5, 2), which must be recomputed from 5's mask key
    // (with run keys: opened from 5's escrow with its reconstructed escrow key).
    for long_term in [false, true] {
        let (report, inputs) = seed_run_keys(long_term, &[(2, Round::Unmask)], |_| {});
        assert!(report.misbehaved.is_empty(), "{:?}", report.misbehaved);
        let out = report.result.unwrap();
        assert!(out.survivors().contains(&PartyId(2)));
        assert_eq!(out.survivors().len(), 5);
        assert_eq!(out.sum(), &sum_of(&inputs, out.survivors())[..]);
        // Pairs (5, v) for the survivors v = 0..=4: four seeds revealed, (5, 2) recomputed.
        assert_eq!(report.stats.pair_seeds_revealed, 4);
        assert_eq!(report.stats.pair_seeds_recomputed, 1);
    }
}

/// With run keys a wrong escrowed seed cannot be repaired: when the aggregator needs it, the
/// sum fails with an error naming its owner (never a wrong sum).
#[test]
fn a_wrong_escrowed_seed_fails_the_sum_naming_its_owner() {
    let (report, _) = seed_run_keys(true, &[(2, Round::Unmask)], |env| {
        if env.from == Peer::Party(PartyId(5)) && env.round == Round::ShareKeys {
            let mut msg: ClientMessage<u32> = wire::decode(&env.bytes).unwrap();
            if let ClientMessage::ShareKeys { shares, .. } = &mut msg {
                for s in shares.iter_mut().filter(|s| s.to == PartyId(2)) {
                    if let Some(e) = s.escrowed_seed.as_mut() {
                        e[0] ^= 1;
                    }
                }
            }
            env.bytes = wire::encode(&msg).unwrap();
        }
    });
    let e = report.result.unwrap_err();
    assert_eq!(e.culprit(), Some(Peer::Party(PartyId(5))), "{e}");
    assert!(e.to_string().contains("escrowed pair-mask seed"), "{e}");
}

/// Run keys: the same long-term keys serve several sessions (one key agreement per neighbour
/// and key for the whole run), every session's sum is exact, with dropouts too, and the
/// sessions use distinct escrow commitments and the same advertised public keys.
#[test]
fn run_keys_serve_many_sessions_with_one_agreement_per_neighbour() {
    let n = 5;
    let keys = run_keys(n, 77);
    let mut advertised = Vec::new();
    for session in 0u8..4 {
        let config = SecAggConfig::new(SessionId([session; 16]), n, 3, 6)
            .unwrap()
            .with_run_keys();
        let inputs = inputs_u32(n, 6, u64::from(session));
        let mut dropouts = BTreeMap::new();
        if session == 2 {
            dropouts.insert(PartyId(0), Round::MaskedInput);
            dropouts.insert(PartyId(1), Round::Unmask);
        }
        let report = Simulation::new(
            config,
            inputs.clone(),
            SimOptions {
                seed: u64::from(session),
                dropouts,
                record_view: true,
                run_keys: keys.clone(),
                ..SimOptions::default()
            },
        )
        .unwrap()
        .run();
        assert!(report.misbehaved.is_empty(), "{:?}", report.misbehaved);
        let out = report.result.unwrap();
        assert_eq!(out.sum(), &sum_of(&inputs, out.survivors())[..]);
        if session == 2 {
            // (0, 1) had nobody to reveal its seed: opened from 0's escrow.
            assert_eq!(report.stats.pair_seeds_recomputed, 1);
        }
        for (from, msg) in &report.aggregator_view {
            if let ClientMessage::AdvertiseKeys {
                enc_pk,
                mask_pk,
                escrow_commitment,
                ..
            } = msg
            {
                advertised.push((*from, session, *enc_pk, *mask_pk, *escrow_commitment));
            }
        }
    }
    for k in &keys {
        assert_eq!(k.agreements(), 2 * (n as u64 - 1), "{k:?}");
    }
    for (from, session, enc_pk, mask_pk, escrow) in &advertised {
        assert_eq!(*enc_pk, keys[from.index()].enc_pk());
        assert_eq!(*mask_pk, keys[from.index()].mask_pk());
        let escrow = escrow.expect("run keys advertise an escrow commitment");
        for (f2, s2, _, _, e2) in &advertised {
            if f2 == from && s2 != session {
                assert_ne!(
                    Some(escrow),
                    *e2,
                    "escrow commitments repeat across sessions"
                );
            }
        }
    }
}

/// Run keys and per-session keys do not mix: each side refuses the other's messages or setup
/// with a clear error.
#[test]
fn key_modes_must_match() {
    let per_session = SecAggConfig::new(SessionId([1; 16]), 3, 2, 2).unwrap();
    let run = per_session.clone().with_run_keys();
    let keys = run_keys(1, 5).pop().unwrap();
    let mut rng = sotto_dp::rng::seeded_rng(1);
    // Keys for a per-session config: refused.
    let e = sotto_mpc::secagg::SecAggClient::<u32>::new_deferred(per_session.clone(), PartyId(0))
        .unwrap()
        .with_run_keys(Arc::clone(&keys))
        .unwrap_err();
    assert!(e.to_string().contains("with_run_keys"), "{e}");
    // A run-keys config without keys: start is refused.
    let mut c =
        sotto_mpc::secagg::SecAggClient::<u32>::new_deferred(run.clone(), PartyId(0)).unwrap();
    let e = c.start(&mut rng).unwrap_err();
    assert!(e.to_string().contains("run keys"), "{e}");
    // Simulation with a run-keys config but no keys: a parameter error.
    assert!(Simulation::new(run, inputs_u32(3, 2, 1), SimOptions::default()).is_err());
    // An aggregator refuses an advertisement of the other mode.
    let mut per_session_party =
        sotto_mpc::secagg::SecAggClient::<u32>::new_deferred(per_session, PartyId(0)).unwrap();
    per_session_party.start(&mut rng).unwrap();
    let msg = per_session_party.poll_transmit().unwrap();
    let run_config = SecAggConfig::new(SessionId([1; 16]), 3, 2, 2)
        .unwrap()
        .with_run_keys();
    let mut agg = sotto_mpc::secagg::SecAggAggregator::<u32>::new(
        run_config,
        std::time::Duration::from_secs(1),
    );
    agg.start(std::time::Instant::now()).unwrap();
    let e = agg
        .handle_message(std::time::Instant::now(), PartyId(0), msg)
        .unwrap_err();
    assert!(e.to_string().contains("run keys"), "{e}");
}

#[test]
fn clients_reveal_seeds_only_for_neighbours_reported_dropped() {
    // Dropouts in several rounds: 5 after sharing (in U2 \ U3), 4 before sharing (not in U2).
    let (report, inputs) = seed_run(&[(4, Round::ShareKeys)], |_| {});
    let out = report.result.unwrap();
    assert_eq!(out.sum(), &sum_of(&inputs, out.survivors())[..]);
    let survivors = out.survivors().to_vec();
    assert_eq!(survivors.len(), 4);
    let mut unmask_msgs = 0;
    for (from, msg) in &report.aggregator_view {
        if let ClientMessage::Unmask { seeds, shares, .. } = msg {
            unmask_msgs += 1;
            assert!(survivors.contains(from));
            // Exactly the one neighbour in U2 \ U3 (party 5): never a survivor, never party 4
            // (which never shared, so nobody masked with it).
            let peers: Vec<PartyId> = seeds.iter().map(|s| s.peer).collect();
            assert_eq!(peers, vec![PartyId(5)], "from {from}");
            for p in &peers {
                assert!(!survivors.contains(p));
            }
            // ... and for party 5 only its mask-key share, never a self-mask share.
            for s in shares.iter().filter(|s| s.owner == PartyId(5)) {
                assert_eq!(s.kind, ShareKind::MaskKey);
            }
        }
    }
    assert_eq!(unmask_msgs, 4);
    // Without dropouts nobody reveals a seed.
    let config = SecAggConfig::new(SessionId([7; 16]), 5, 3, 4).unwrap();
    let report = Simulation::new(
        config,
        inputs_u32(5, 4, 7),
        SimOptions {
            seed: 7,
            record_view: true,
            ..SimOptions::default()
        },
    )
    .unwrap()
    .run();
    assert!(report.result.is_ok());
    for (_, msg) in &report.aggregator_view {
        if let ClientMessage::Unmask { seeds, .. } = msg {
            assert!(seeds.is_empty());
        }
    }
    assert_eq!(report.stats.pair_seeds_revealed, 0);
}

#[test]
fn an_unmask_message_with_a_seed_for_a_survivor_is_rejected_naming_its_sender() {
    // Party 0 adds a seed "for" survivor 1 (as a buggy or malicious client would): the whole
    // message is rejected, party 0 is named, and the others still unmask the sum.
    let (report, inputs) = seed_run(&[], |env| {
        if env.from == Peer::Party(PartyId(0)) && env.round == Round::Unmask {
            let mut msg: ClientMessage<u32> = wire::decode(&env.bytes).unwrap();
            if let ClientMessage::Unmask { seeds, .. } = &mut msg {
                seeds.insert(
                    0,
                    sotto_mpc::secagg::messages::RevealedSeed {
                        peer: PartyId(1),
                        seed: sotto_mpc::secagg::messages::SeedValue([7; 32]),
                    },
                );
            }
            env.bytes = wire::encode(&msg).unwrap();
        }
    });
    let e = report
        .aggregator_rejections
        .iter()
        .find(|e| e.culprit() == Some(Peer::Party(PartyId(0))))
        .unwrap();
    assert!(e.to_string().contains("pair seed"), "{e}");
    let out = report.result.unwrap();
    assert_eq!(out.sum(), &sum_of(&inputs, out.survivors())[..]);
    // Party 0's pair with 5 had no accepted seed: recomputed.
    assert_eq!(report.stats.pair_seeds_recomputed, 1);
}
