//! The privacy-utility table of `docs/training.md`: digits, delta = 1e-5, the default
//! [`CentralConfig`] at each target epsilon (and non-private), mean of 3 seeds, with the
//! membership-inference audit beside each row.
//!
//! ```text
//! cargo run --release -p sotto-training --example privacy_utility
//! ```
//! Pass a JSON `CentralConfig` as the first argument to override defaults (e.g. the model).

use sotto_training::central::{CentralConfig, train_central_digits};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base: CentralConfig = match std::env::args().nth(1) {
        Some(json) => serde_json::from_str(&json)?,
        None => CentralConfig::default(),
    };
    let seeds = [0u64, 1, 2];
    println!("config: {}", serde_json::to_string(&base)?);
    println!();
    println!(
        "| target epsilon | epsilon (reported) | noise multiplier | test accuracy (mean ± sd) | MIA AUC | MIA TPR @ 1% FPR |"
    );
    println!("|---|---|---|---|---|---|");
    for target in [Some(0.5), Some(1.0), Some(2.0), Some(4.0), Some(8.0), None] {
        let mut acc = Vec::new();
        let mut auc = Vec::new();
        let mut tpr = Vec::new();
        let mut eps = Vec::new();
        let mut sigma = None;
        for &seed in &seeds {
            let config = CentralConfig {
                target_epsilon: target,
                non_private: target.is_none(),
                seed,
                reproducible_noise: true,
                audit: true,
                ..base.clone()
            };
            let r = train_central_digits(&config, |_| {})?;
            acc.push(r.accuracy);
            if let Some(a) = &r.audit {
                auc.push(a.auc);
                tpr.push(a.tpr_at_1pct_fpr);
            }
            if let Some(e) = r.epsilon {
                eps.push(e);
            }
            sigma = r.noise_multiplier;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let sd = |v: &[f64]| {
            let m = mean(v);
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64).sqrt()
        };
        let label = target.map_or("non-private".to_string(), |t| t.to_string());
        let eps_s = if eps.is_empty() {
            "∞".to_string()
        } else {
            format!("{:.3}", mean(&eps))
        };
        let sigma_s = sigma.map_or("-".to_string(), |s| format!("{s:.3}"));
        println!(
            "| {label} | {eps_s} | {sigma_s} | {:.2}% ± {:.2} | {:.3} | {:.3} |",
            100.0 * mean(&acc),
            100.0 * sd(&acc),
            mean(&auc),
            mean(&tpr)
        );
    }
    Ok(())
}
