//! t - 1 colluding parties plus the aggregator cannot unmask an honest party's input.

use std::time::{Duration, Instant};

use sotto_dp::rng::seeded_rng;

use super::messages::ShareKind;
use super::*;
use crate::crypto::SecretScalar;
use crate::prg::{self, Seed};
use crate::shamir;

struct Run {
    seen: Vec<ClientMessage<u64>>,
    aggregator: SecAggAggregator<u64>,
    clients: Vec<SecAggClient<u64>>,
    now: Instant,
}

impl Run {
    fn new(n: usize, t: usize, inputs: &[Vec<u64>]) -> Self {
        let config = SecAggConfig::new(SessionId([42; 16]), n, t, inputs[0].len()).unwrap();
        let clients = (0..n)
            .map(|i| {
                SecAggClient::new(config.clone(), PartyId(i as u32), inputs[i].clone()).unwrap()
            })
            .collect();
        let now = Instant::now();
        let mut aggregator = SecAggAggregator::new(config, Duration::from_secs(1));
        aggregator.start(now).unwrap();
        Run {
            seen: Vec::new(),
            aggregator,
            clients,
            now,
        }
    }

    /// One step: delivers the queued client messages (except from `silent` parties, whose
    /// messages are returned), then the aggregator's messages.
    fn pump(&mut self, silent: &[u32]) -> Vec<ClientMessage<u64>> {
        let mut held_back = Vec::new();
        let mut rng = seeded_rng(1);
        {
            for c in &mut self.clients {
                while let Some(m) = c.poll_transmit() {
                    if silent.contains(&c.id().0) {
                        held_back.push(m);
                    } else {
                        self.seen.push(m.clone());
                        self.aggregator.handle_message(self.now, c.id(), m).unwrap();
                    }
                }
            }
            while let Some((to, m)) = self.aggregator.poll_transmit() {
                let _ = self.clients[to.index()].handle_message(m, &mut rng);
            }
        }
        held_back
    }
}

fn interpolate(shares: &[(PartyId, SecretScalar)]) -> SecretScalar {
    let list: Vec<(u32, SecretScalar)> = shares.iter().map(|(p, s)| (p.0 + 1, s.clone())).collect();
    shamir::reconstruct(&list, list.len()).unwrap()
}

#[test]
fn a_late_honest_party_stays_masked_against_t_minus_1_colluders() {
    let (n, t) = (5, 3);
    let inputs: Vec<Vec<u64>> = (0..n as u64).map(|i| vec![1000 + i; 8]).collect();
    let mut run = Run::new(n, t, &inputs);
    let mut rng = seeded_rng(7);
    for c in &mut run.clients {
        c.start(&mut rng).unwrap();
    }
    run.pump(&[]); // round 0
    run.pump(&[]); // round 1 (shares forwarded, masked inputs computed and queued)
    // Party 4 (honest) is late with its masked input; the coalition keeps its vector anyway.
    let corrupt = [PartyId(0), PartyId(1)]; // t - 1 parties
    let coalition_shares: Vec<_> = corrupt
        .iter()
        .map(|p| run.clients[p.index()].held_for_test())
        .collect();
    // (Test oracle only: an honest holder's share too, to show what t shares would give.)
    let honest2 = run.clients[2].held_for_test();
    let late = run.pump(&[4]);
    run.aggregator.close_round(run.now); // deadline: U3 = {0, 1, 2, 3}
    run.pump(&[]); // survivor lists delivered, unmask shares queued
    run.pump(&[]); // unmask shares delivered
    let out = run.aggregator.take_result().unwrap().unwrap();
    assert_eq!(
        out.survivors(),
        &[PartyId(0), PartyId(1), PartyId(2), PartyId(3)]
    );
    assert!(
        late.iter()
            .any(|m| matches!(m, ClientMessage::MaskedInput { .. }))
    );

    // The coalition's shares of party 4's self-mask secret: t - 1 of them.
    let b_shares: Vec<(PartyId, SecretScalar)> = corrupt
        .iter()
        .zip(&coalition_shares)
        .map(|(p, held)| {
            let (_, _, b) = held.iter().find(|(o, _, _)| *o == PartyId(4)).unwrap();
            (*p, b.clone())
        })
        .collect();
    assert_eq!(b_shares.len(), t - 1);
    let keys4 = run.aggregator.roster()[4];
    assert_eq!(keys4.party, PartyId(4));
    let commitment = keys4.self_mask_commitment;
    let session = SessionId([42; 16]);
    // Interpolating t - 1 shares (as a lower-degree polynomial) does not give the secret.
    assert!(
        !self_mask_commitment(&interpolate(&b_shares), &session, PartyId(4)).ct_eq(&commitment)
    );
    // No party revealed a self-mask share of party 4: everything the aggregator received for
    // owner 4 is a mask-key share, so b_4 (t - 1 shares known) stays hidden and with it x_4.
    let mut revealed_for_4 = 0;
    for m in &run.seen {
        if let ClientMessage::Unmask { shares, .. } = m {
            for s in shares.iter().filter(|s| s.owner == PartyId(4)) {
                assert_eq!(s.kind, ShareKind::MaskKey);
                revealed_for_4 += 1;
            }
        }
    }
    assert_eq!(revealed_for_4, 4);

    // The survivors revealed their pair seeds with party 4 (4 dropped); with them the
    // coalition strips every pairwise mask off the late vector y_4, but what is left,
    // x_4 + PRG(b_4), is still masked by the self mask.
    let mut y4 = late
        .iter()
        .find_map(|m| match m {
            ClientMessage::MaskedInput { masked, .. } => Some(masked.as_slice().to_vec()),
            _ => None,
        })
        .unwrap();
    let mut seeds_for_4 = 0;
    for m in &run.seen {
        if let ClientMessage::Unmask { seeds, .. } = m {
            for s in seeds {
                assert_eq!(s.peer, PartyId(4), "a seed revealed for a survivor");
                // Party 4 subtracted PRG(s_4v) for every v < 4: add it back.
                prg::add_mask(&Seed::from_bytes(s.seed.0), &mut y4);
                seeds_for_4 += 1;
            }
        }
    }
    assert_eq!(seeds_for_4, 4);
    assert_ne!(y4, inputs[4], "x_4 must stay masked by PRG(b_4)");
    assert!(y4.iter().zip(&inputs[4]).all(|(a, b)| a != b));
    // Sanity check of the test itself: with t shares of b_4 (one more, from an honest holder)
    // the same computation does recover x_4, so the assertions above can fail.
    let mut t_shares = b_shares.clone();
    let (_, _, b2) = honest2.iter().find(|(o, _, _)| *o == PartyId(4)).unwrap();
    t_shares.push((PartyId(2), b2.clone()));
    let b4 = interpolate(&t_shares);
    assert!(self_mask_commitment(&b4, &session, PartyId(4)).ct_eq(&commitment));
    prg::sub_mask(&self_mask_seed(&b4, &session, PartyId(4)).unwrap(), &mut y4);
    assert_eq!(y4, inputs[4]);
}

#[test]
fn a_surviving_honest_party_keeps_its_pairwise_masks_against_t_minus_1_colluders() {
    let (n, t) = (5, 3);
    let inputs: Vec<Vec<u64>> = (0..n as u64).map(|i| vec![7 * i; 8]).collect();
    let mut run = Run::new(n, t, &inputs);
    let mut rng = seeded_rng(8);
    for c in &mut run.clients {
        c.start(&mut rng).unwrap();
    }
    run.pump(&[]);
    run.pump(&[]);
    let corrupt = [PartyId(0), PartyId(1)];
    let coalition: Vec<_> = corrupt
        .iter()
        .map(|p| run.clients[p.index()].held_for_test())
        .collect();
    run.pump(&[]);
    run.pump(&[]);
    let out = run.aggregator.take_result().unwrap().unwrap();
    assert_eq!(out.survivors().len(), 5);
    // Party 4 survived: its self mask is (legitimately) removed, but its pairwise masks with the
    // honest parties 2 and 3 need its mask key, of which the coalition holds t - 1 shares.
    let key_shares: Vec<(PartyId, SecretScalar)> = corrupt
        .iter()
        .zip(&coalition)
        .map(|(p, held)| {
            let (_, k, _) = held.iter().find(|(o, _, _)| *o == PartyId(4)).unwrap();
            (*p, k.clone())
        })
        .collect();
    let mask_pk = run.aggregator.roster()[4].mask_pk;
    assert_ne!(interpolate(&key_shares).public_key(), mask_pk);
    // No party revealed a mask-key share of a survivor, nor a pair seed.
    for m in &run.seen {
        if let ClientMessage::Unmask { shares, seeds, .. } = m {
            assert!(shares.iter().all(|s| s.kind == ShareKind::SelfMask));
            assert!(seeds.is_empty());
        }
    }
}
