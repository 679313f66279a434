//! Step time and peak memory of DP and non-DP fine-tuning of a BERT-base-shaped encoder
//! (110M parameters, random weights and tokens; the time does not depend on the values), a
//! report command rather than a timed test. One configuration per process, so that the peak
//! resident memory (`VmHWM`) belongs to it:
//!
//! ```text
//! cargo build --release -p sotto-training --example bert_step
//! for t in full bitfit; do for m in non_dp dp dp_noise; do
//!   RAYON_NUM_THREADS=1 target/release/examples/bert_step $t $m 4 128 3
//! done; done
//! ```
//! Arguments: `full|bitfit`, `non_dp|dp|dp_noise`, batch size, sequence length, measured
//! steps (after one warm-up step), and `cpu` (default) or `cuda` (a build with
//! `--features cuda`; the step is timed up to `Device::synchronize`, peak RSS is host memory). `non_dp` is an ordinary backward pass and an SGD step; `dp`
//! is book-keeping per-sample clipping (one backward pass) and the step on the clipped sum;
//! `dp_noise` adds the exact discrete Gaussian noise on one thread (the whole DP-SGD step).
//! Prints one JSON line: median and every step's seconds, parameters, peak RSS.

use std::time::Instant;

use candle_core::{DType, Device};
use sotto_training::bert::BertSpec;
use sotto_training::clipping::{Clipping, flatten};
use sotto_training::data::{Dataset, Inputs};
use sotto_training::model::{InputShape, Model, ModelSpec};
use sotto_training::nn::Trainable;
use sotto_training::noise::GradientNoise;
use sotto_training::optim::{Optimizer, OptimizerKind};

/// Peak and current resident memory of this process, MiB (Linux; 0 elsewhere).
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    let tuning = arg(1, "full");
    let mode = arg(2, "dp");
    let batch: usize = arg(3, "4").parse()?;
    let seq_len: usize = arg(4, "128").parse()?;
    let steps: usize = arg(5, "3").parse()?;
    let trainable = match tuning.as_str() {
        "full" => Trainable::All,
        "bitfit" => Trainable::BiasOnly,
        other => return Err(format!("unknown tuning {other}: full or bitfit").into()),
    };
    let dev = match arg(6, "cpu").as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0)?,
        other => return Err(format!("unknown device {other}: cpu or cuda").into()),
    };
    let vocab = 30_522;
    let spec = ModelSpec::Bert(BertSpec::base());
    let input = InputShape::Tokens { seq_len, vocab };
    let model = Model::new(&spec, input, 2, DType::F32, &dev, 1)?;
    let mut rng = sotto_dp::rng::seeded_rng(3);
    let ids: Vec<u32> = (0..batch * seq_len)
        .map(|_| 1000 + (rand_core::RngCore::next_u32(&mut rng) % 29_000))
        .collect();
    let labels = (0..batch as u32).map(|i| i % 2).collect();
    let data = Dataset::new(
        Inputs::Tokens {
            ids,
            seq_len,
            vocab,
        },
        labels,
        2,
    )?;
    let b = data.full_batch(&dev)?;
    let mut opt = Optimizer::new(
        OptimizerKind::Sgd { momentum: 0.0 },
        1e-5,
        trainable,
        &model,
    )?;
    let clip = Clipping {
        trainable,
        ..Clipping::default()
    };
    let dims = model.trainable_len(trainable);
    let noise = GradientNoise::new(1.0, clip.clip_norm, dims)?.with_threads(1)?;
    let (_, rss_model) = memory_mib();
    let mut times = Vec::new();
    for step in 0..=steps {
        let t = Instant::now();
        match mode.as_str() {
            "non_dp" => {
                let (_, grads) = model.mean_gradient(&b, trainable)?;
                opt.step(&model, &grads)?;
            }
            "dp" | "dp_noise" => {
                let g = model.clipped_gradients(&b, &clip)?;
                let mut sum = flatten(&g.grads)?;
                drop(g);
                if mode == "dp_noise" {
                    noise.privatize_in_place(&mut sum, &mut rng)?;
                }
                opt.apply_sum(&model, &sum, batch as f64)?;
            }
            other => return Err(format!("unknown mode {other}: non_dp, dp or dp_noise").into()),
        }
        dev.synchronize()?;
        if step > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let (peak, _) = memory_mib();
    println!(
        "{{\"impl\":\"sotto\",\"avx512\":{},\"device\":\"{}\",\"tuning\":\"{tuning}\",\"mode\":\"{mode}\",\"batch\":{batch},\"seq_len\":{seq_len},\
         \"params\":{},\"trained\":{dims},\"median_s\":{median:.3},\"steps_s\":{times:?},\
         \"rss_after_init_mib\":{rss_model:.0},\"peak_rss_mib\":{peak:.0}}}",
        cfg!(feature = "avx512"),
        arg(6, "cpu"),
        model.num_params()
    );
    Ok(())
}
