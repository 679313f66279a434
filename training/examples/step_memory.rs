//! Runs 20 training steps of one kind, for peak-memory measurement with `/usr/bin/time -v`:
//!
//! ```text
//! cargo build --release -p sotto-training --example step_memory
//! for m in non_dp dp naive; do /usr/bin/time -v target/release/examples/step_memory mlp $m 2>&1 | grep Maximum; done
//! ```
//! Arguments: `mlp|transformer` and `non_dp|dp|dp_noise|naive` (`dp_noise` is the full DP-SGD
//! step: book-keeping clipping, exact discrete Gaussian noise on one thread, `apply_sum`).

use candle_core::{DType, Device};
use sotto_training::clipping::{Clipping, flatten};
use sotto_training::data::{digits_split, sequence_task};
use sotto_training::model::{InputShape, Model, ModelSpec};
use sotto_training::nn::Trainable;
use sotto_training::noise::GradientNoise;
use sotto_training::optim::{Optimizer, OptimizerKind};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map(String::as_str).unwrap_or("mlp");
    let mode = args.get(2).map(String::as_str).unwrap_or("dp");
    let dev = Device::Cpu;
    let (model, batch, b) = if which == "mlp" {
        let (train, _) = digits_split(1)?;
        let idx: Vec<usize> = (0..256).collect();
        let spec = ModelSpec::Mlp {
            hidden: vec![256, 256],
        };
        (
            Model::new(&spec, InputShape::of(&train), 10, DType::F32, &dev, 1)?,
            train.batch(&idx, &dev)?,
            256,
        )
    } else {
        let seq = sequence_task(64, 16, 64, 4, 2)?;
        let spec = ModelSpec::Transformer {
            dim: 64,
            heads: 4,
            mlp_dim: 128,
            layers: 2,
        };
        (
            Model::new(&spec, InputShape::of(&seq), 4, DType::F32, &dev, 1)?,
            seq.full_batch(&dev)?,
            64,
        )
    };
    let mut opt = Optimizer::new(
        OptimizerKind::Sgd { momentum: 0.0 },
        1e-4,
        Trainable::All,
        &model,
    )?;
    let clip = Clipping::default();
    let noise = GradientNoise::new(1.0, clip.clip_norm, model.trainable_len(Trainable::All))?
        .with_threads(1)?;
    let mut rng = sotto_dp::rng::seeded_rng(7);
    for _ in 0..20 {
        if mode == "dp_noise" {
            // As the training loop does: the gradient tensors go once flattened, and the
            // noise is added in place.
            let g = model.clipped_gradients(&batch, &clip)?;
            let mut sum = flatten(&g.grads)?;
            drop(g);
            noise.privatize_in_place(&mut sum, &mut rng)?;
            opt.apply_sum(&model, &sum, b as f64)?;
            continue;
        }
        let grads = match mode {
            "non_dp" => model.mean_gradient(&batch, Trainable::All)?.1,
            "dp" => model
                .clipped_gradients(&batch, &clip)?
                .grads
                .iter()
                .map(|t| t.affine(1.0 / b as f64, 0.0))
                .collect::<Result<Vec<_>, _>>()?,
            "naive" => model.clipped_gradients_naive(&batch, &clip)?.grads,
            other => return Err(format!("unknown mode {other}").into()),
        };
        opt.step(&model, &grads)?;
    }
    println!("{which} {mode}: {} params, done", model.num_params());
    Ok(())
}
