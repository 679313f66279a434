//! Multi-party DP training, end to end: four hospitals (parties) each hold a quarter of the
//! digits data and train one logistic-regression model together. No hospital sends its data
//! or even its gradients: every round each one Poisson-samples its own records, clips each
//! per-sample gradient, encodes the sum in the ring, adds its share of the noise and masks it
//! (secure aggregation over QUIC with mutual TLS); the aggregator only learns the noised sum
//! of all four, steps the optimizer and sends the new model back.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --release --example federated_training          # 100 rounds, epsilon 2
//! cargo run --release --example federated_training -- 30    # 30 rounds (same target epsilon)
//! RAYON_NUM_THREADS=2 cargo run --release --example federated_training   # faster (see below)
//! ```
//!
//! Set `RAYON_NUM_THREADS` to your core count (the `sotto` binary does this itself): without
//! it candle re-reads `/proc/cpuinfo` for every matrix product, which on Linux takes about
//! 60% of each party's compute for this small model.
//!
//! It prints one line per 10 rounds and the final accuracy and epsilon, then the central DP
//! run with the same `q`, noise multiplier and number of steps, for comparison: the epsilon is
//! the same and the accuracies agree within the run-to-run noise (the noise comes from the
//! operating system, so numbers change from run to run).

use sotto_training::central::{CentralConfig, DIGITS_SPLIT_SEED, train_central};
use sotto_training::federated::{FederatedConfig, run_local};

// One runtime thread for the five endpoints: the fastest way to run them in one process
// (the parties' updates compute on tokio's blocking threads).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: u64 = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|_| format!("rounds: not a number: {a}"))?,
        None => 100,
    };
    let (train, test) = sotto_training::data::digits_split(DIGITS_SPLIT_SEED)?;
    let config = FederatedConfig {
        rounds,
        ..FederatedConfig::default()
    };
    println!(
        "{} parties, {} records, {} rounds at q = {}, target epsilon {:?}",
        config.parties,
        train.len(),
        rounds,
        config.sampling_rate,
        config.target_epsilon
    );
    let report = run_local(&config, &train, &test, |m| {
        if m.round.is_multiple_of(10) || m.round == rounds {
            println!(
                "round {:>4}  accuracy {:6.2}%  epsilon {:.3}  survivors {}  {:.1} ms",
                m.round,
                100.0 * m.accuracy,
                m.epsilon,
                m.survivors.len(),
                1e3 * m.seconds
            );
        }
    })
    .await?;
    println!(
        "multi-party: accuracy {:.2}%, epsilon {:.4} at delta {} (noise multiplier {:.4})",
        100.0 * report.accuracy,
        report.epsilon,
        report.delta,
        report.noise_multiplier
    );
    if let Some(a) = &report.audit {
        println!(
            "membership inference: AUC {:.3}, TPR {:.3} at 1% FPR",
            a.auc, a.tpr_at_1pct_fpr
        );
    }

    // The central run with the same q, sigma and number of steps (steps = epochs * 1/q).
    let steps_per_epoch = (1.0 / config.sampling_rate).ceil() as u64;
    if rounds.is_multiple_of(steps_per_epoch) {
        let central = CentralConfig {
            epochs: (rounds / steps_per_epoch) as usize,
            sampling_rate: config.sampling_rate,
            noise_multiplier: Some(report.noise_multiplier),
            target_epsilon: None,
            audit: false,
            ..CentralConfig::default()
        };
        let (_, c) = train_central(&central, &train, &test, |_| {})?;
        println!(
            "central:     accuracy {:.2}%, epsilon {:.4} ({} steps)",
            100.0 * c.accuracy,
            c.epsilon.unwrap_or(f64::INFINITY),
            c.steps
        );
    }
    Ok(())
}
