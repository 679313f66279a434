//! t - 1 colluding parties plus the aggregator cannot unmask an honest party's input.

use std::time::{Duration, Instant};

use sotto_dp::rng::seeded_rng;

use super::messages::ShareKind;
use super::*;
use crate::crypto::SecretScalar;
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
    // Interpolating t - 1 shares (as a lower-degree polynomial) does not give the secret.
    assert_ne!(interpolate(&b_shares).public_key(), commitment);
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
    // No party revealed a mask-key share of a survivor.
    for m in &run.seen {
        if let ClientMessage::Unmask { shares, .. } = m {
            assert!(shares.iter().all(|s| s.kind == ShareKind::SelfMask));
        }
    }
}
