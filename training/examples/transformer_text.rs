//! DP training of the small transformer-encoder classifier on the generated sequence task.
//!
//! ```text
//! cargo run --release -p sotto-training --example transformer_text [target_epsilon|none]
//! ```

use sotto_training::central::{CentralConfig, train_central};
use sotto_training::data::sequence_task;
use sotto_training::model::ModelSpec;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = match std::env::args().nth(1).as_deref() {
        None => Some(8.0),
        Some("none") => None,
        Some(s) => Some(s.parse::<f64>()?),
    };
    let data = sequence_task(6000, 12, 32, 4, 1)?;
    let (train, test) = data.split(0.2, 1)?;
    let config = CentralConfig {
        model: ModelSpec::Transformer {
            dim: 32,
            heads: 4,
            mlp_dim: 64,
            layers: 1,
        },
        target_epsilon: target,
        non_private: target.is_none(),
        epochs: 10,
        sampling_rate: 0.05,
        learning_rate: 0.005,
        reproducible_noise: true,
        ..CentralConfig::default()
    };
    let (_, report) = train_central(&config, &train, &test, |e| {
        println!(
            "epoch {:>2}  loss {:.4}  test accuracy {:.2}%  epsilon {}",
            e.epoch,
            e.train_loss,
            100.0 * e.test_accuracy,
            e.epsilon.map_or("inf".into(), |x| format!("{x:.3}"))
        );
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
