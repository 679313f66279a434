//! Chooses `CentralConfig` defaults on a validation split, never on the test set: the digits
//! training split (80%) is split again 80/20 into fit / validation, and a small grid is scored
//! at epsilon = 1 (delta = 1e-5), mean of 2 seeds.
//!
//! ```text
//! cargo run --release -p sotto-training --example tune_validation
//! ```

use sotto_training::central::{CentralConfig, DIGITS_SPLIT_SEED, train_central};
use sotto_training::data::{Dataset, Standardizer, digits};
use sotto_training::model::ModelSpec;
use sotto_training::optim::OptimizerKind;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The same 80% training part as `digits_split(DIGITS_SPLIT_SEED)`, raw, split again.
    let (train, _test) = digits()?.split(0.2, DIGITS_SPLIT_SEED)?;
    let (fit, val) = train.split(0.2, 99)?;
    let st = Standardizer::fit(&fit)?;
    let (fit, val): (Dataset, Dataset) = (st.apply(&fit)?, st.apply(&val)?);
    println!("| model | optimizer | lr | epochs | q | validation accuracy (eps = 1) |");
    println!("|---|---|---|---|---|---|");
    let adam = OptimizerKind::default();
    let sgd = OptimizerKind::Sgd { momentum: 0.0 };
    for model in [ModelSpec::Logistic, ModelSpec::Mlp { hidden: vec![64] }] {
        for (opt, lrs) in [(adam, [0.02, 0.05, 0.1]), (sgd, [1.0, 2.0, 4.0])] {
            for lr in lrs {
                for (epochs, q) in [(10, 0.2), (20, 0.2), (40, 0.2), (20, 0.1)] {
                    let mut acc = 0.0;
                    for seed in [10u64, 11] {
                        let config = CentralConfig {
                            model: model.clone(),
                            optimizer: opt,
                            learning_rate: lr,
                            epochs,
                            sampling_rate: q,
                            target_epsilon: Some(1.0),
                            seed,
                            reproducible_noise: true,
                            audit: false,
                            ..CentralConfig::default()
                        };
                        acc += train_central(&config, &fit, &val, |_| {})?.1.accuracy / 2.0;
                    }
                    let name = match (&model, opt) {
                        (ModelSpec::Logistic, _) => "logistic",
                        _ => "mlp[64]",
                    };
                    let o = if matches!(opt, OptimizerKind::Adam { .. }) {
                        "adam"
                    } else {
                        "sgd"
                    };
                    println!(
                        "| {name} | {o} | {lr} | {epochs} | {q} | {:.2}% |",
                        100.0 * acc
                    );
                }
            }
        }
    }
    Ok(())
}
