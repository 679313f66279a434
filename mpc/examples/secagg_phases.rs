//! CPU time of each step of a SecAgg session with run keys, per session, summed over the
//! parties: the sans-IO roles driven in memory (no transport), as `sotto train` drives them
//! once per round. The default is `sotto train`'s: 4 parties, threshold 3, 650 words.
//!
//! ```text
//! cargo run --release -p sotto-mpc --example secagg_phases -- [parties] [threshold] [dim] [sessions]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sotto_mpc::secagg::{RunKeys, SecAggAggregator, SecAggClient, SecAggConfig};
use sotto_mpc::{PartyId, SessionId};

type BoxError = Box<dyn std::error::Error>;

fn arg(i: usize, default: usize) -> Result<usize, BoxError> {
    match std::env::args().nth(i) {
        None => Ok(default),
        Some(a) => a
            .parse()
            .map_err(|_| format!("argument {i}: not a number: {a}").into()),
    }
}

/// The steps timed, in protocol order (party steps summed over the parties).
const STEPS: [&str; 8] = [
    "parties: start (keys, commitments)",
    "aggregator: roster",
    "parties: share keys",
    "aggregator: forward shares",
    "parties: open shares, expand masks",
    "aggregator: masked inputs",
    "parties: unmasking shares",
    "aggregator: unmask the sum",
];

fn main() -> Result<(), BoxError> {
    let n = arg(1, 4)?;
    let t = arg(2, 3)?;
    let dim = arg(3, 650)?;
    let sessions = arg(4, 2000)?;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let keys: Vec<Arc<RunKeys>> = (0..n)
        .map(|_| Arc::new(RunKeys::generate(&mut rng)))
        .collect();
    let mut spent = [Duration::ZERO; STEPS.len()];
    for s in 0..sessions {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(s as u64 + 1).to_le_bytes());
        let config = SecAggConfig::new(SessionId(id), n, t, dim)?.with_run_keys();
        let mut agg = SecAggAggregator::<u64>::new(config.clone(), Duration::from_secs(10));
        agg.start(Instant::now())?;
        let c0 = Instant::now();
        let mut parties = Vec::with_capacity(n);
        for (i, k) in keys.iter().enumerate() {
            let mut p = SecAggClient::<u64>::new_deferred(config.clone(), PartyId(i as u32))?
                .with_run_keys(Arc::clone(k))?;
            p.start(&mut rng)?;
            parties.push(p);
        }
        spent[0] += c0.elapsed();
        for step in 0..4 {
            let c0 = Instant::now();
            let before = agg.round();
            for (i, p) in parties.iter_mut().enumerate() {
                while let Some(m) = p.poll_transmit() {
                    agg.handle_message(Instant::now(), PartyId(i as u32), m)?;
                }
            }
            if before.is_some() && agg.round() == before {
                agg.close_round(Instant::now());
            }
            let mut out = Vec::new();
            while let Some(m) = agg.poll_transmit() {
                out.push(m);
            }
            spent[2 * step + 1] += c0.elapsed();
            if step == 3 {
                break;
            }
            let c0 = Instant::now();
            for (to, m) in out {
                let p = parties
                    .get_mut(to.index())
                    .ok_or("message for an unknown party")?;
                p.handle_message(m, &mut rng)?;
                if step == 1 {
                    // The input arrives after the mask is expanded, as in `sotto train`.
                    p.provide_input(vec![5; dim])?;
                }
            }
            spent[2 * step + 2] += c0.elapsed();
        }
        let out = agg.take_result().ok_or("the session did not finish")??;
        if out.sum().first() != Some(&(5 * n as u64)) {
            return Err("wrong sum".into());
        }
    }
    println!("{n} parties, threshold {t}, {dim} words, {sessions} sessions with run keys:");
    for (name, d) in STEPS.iter().zip(spent) {
        let us = d.as_secs_f64() * 1e6 / sessions as f64;
        println!("  {name:38} {us:8.1} us per session");
    }
    Ok(())
}
