//! One training step: non-DP vs book-keeping DP (per-sample clipping in one backward pass) vs
//! the naive per-sample loop, for the MLP and the transformer, same model and batch in the same
//! run. Prints the DP / non-DP ratio of medians.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo bench -p sotto-training --bench step`
//!
//! `SOTTO_STEP_CASES=mlp-256,transformer-64` runs only the named cases (`<model>-<batch>`);
//! `SOTTO_STEP_ROUNDS=400` sets the interleaved rounds behind the `RATIO` (medians) and
//! `MEANS` lines (default 40).

// A benchmark aborts on any error; unwrap is the clearest way to say so.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use candle_core::{DType, Device};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sotto_training::clipping::{Clipping, flatten};
use sotto_training::data::{Batch, Dataset, digits_split, sequence_task};
use sotto_training::model::{InputShape, Model, ModelSpec};
use sotto_training::nn::Trainable;
use sotto_training::noise::GradientNoise;
use sotto_training::optim::{Optimizer, OptimizerKind};

struct Case {
    name: &'static str,
    model: Model,
    batch: Batch,
    batch_size: usize,
}

fn cases() -> Vec<Case> {
    let dev = Device::Cpu;
    let (train, _) = digits_split(1).unwrap();
    let mlp = || {
        Model::new(
            &ModelSpec::Mlp {
                hidden: vec![256, 256],
            },
            InputShape::of(&train),
            10,
            DType::F32,
            &dev,
            1,
        )
        .unwrap()
    };
    let first = |b: usize| -> Vec<usize> { (0..b).collect() };
    let seq: Dataset = sequence_task(64, 16, 64, 4, 2).unwrap();
    let spec = ModelSpec::Transformer {
        dim: 64,
        heads: 4,
        mlp_dim: 128,
        layers: 2,
    };
    let transformer = Model::new(&spec, InputShape::of(&seq), 4, DType::F32, &dev, 1).unwrap();
    vec![
        Case {
            name: "mlp",
            model: mlp(),
            batch: train.batch(&first(256), &dev).unwrap(),
            batch_size: 256,
        },
        // The noise costs the same at any batch size; DP-SGD is usually run with large batches.
        Case {
            name: "mlp",
            model: mlp(),
            batch: train.batch(&first(1024), &dev).unwrap(),
            batch_size: 1024,
        },
        Case {
            name: "transformer",
            model: transformer,
            batch: seq.full_batch(&dev).unwrap(),
            batch_size: 64,
        },
    ]
}

fn sgd(model: &Model) -> Optimizer {
    Optimizer::new(
        OptimizerKind::Sgd { momentum: 0.0 },
        1e-4,
        Trainable::All,
        model,
    )
    .unwrap()
}

fn non_dp_step(c: &Case, opt: &mut Optimizer) {
    let (_, g) = c.model.mean_gradient(&c.batch, Trainable::All).unwrap();
    opt.step(&c.model, &g).unwrap();
}

fn dp_step(c: &Case, opt: &mut Optimizer, clip: &Clipping) {
    let g = c.model.clipped_gradients(&c.batch, clip).unwrap();
    let scale = 1.0 / c.batch_size as f64;
    let g: Vec<_> = g
        .grads
        .iter()
        .map(|t| t.affine(scale, 0.0).unwrap())
        .collect();
    opt.step(&c.model, &g).unwrap();
}

fn dp_step_noised(
    c: &Case,
    opt: &mut Optimizer,
    clip: &Clipping,
    noise: &GradientNoise,
    rng: &mut rand_chacha::ChaCha20Rng,
) {
    let g = c.model.clipped_gradients(&c.batch, clip).unwrap();
    let mut sum = flatten(&g.grads).unwrap();
    drop(g);
    noise.privatize_in_place(&mut sum, rng).unwrap();
    opt.apply_sum(&c.model, &sum, c.batch_size as f64).unwrap();
}

fn naive_step(c: &Case, opt: &mut Optimizer, clip: &Clipping) {
    let g = c.model.clipped_gradients_naive(&c.batch, clip).unwrap();
    opt.step(&c.model, &g.grads).unwrap();
}

/// Median and mean milliseconds of each closure, measured interleaved (a b c a b c ...) so
/// that load from other processes hits all of them alike.
fn interleaved_median_mean(rounds: usize, fs: &mut [&mut dyn FnMut()]) -> Vec<(f64, f64)> {
    for f in fs.iter_mut() {
        f();
    }
    let mut times = vec![Vec::with_capacity(rounds); fs.len()];
    for _ in 0..rounds {
        for (f, t) in fs.iter_mut().zip(times.iter_mut()) {
            let s = Instant::now();
            f();
            t.push(s.elapsed().as_secs_f64() * 1e3);
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            let mean = t.iter().sum::<f64>() / t.len() as f64;
            (t[t.len() / 2], mean)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let clip = Clipping::default();
    let only = std::env::var("SOTTO_STEP_CASES").ok();
    let rounds = std::env::var("SOTTO_STEP_ROUNDS")
        .ok()
        .and_then(|r| r.parse::<usize>().ok())
        .filter(|&r| r > 0)
        .unwrap_or(40);
    let wanted = |case: &Case| {
        only.as_deref().is_none_or(|list| {
            list.split(',')
                .any(|w| w.trim() == format!("{}-{}", case.name, case.batch_size))
        })
    };
    for case in cases().into_iter().filter(|c| wanted(c)) {
        let mut opt = sgd(&case.model);
        // Single-threaded, like candle under RAYON_NUM_THREADS=1 (see docs/training.md).
        let noise = GradientNoise::new(
            1.0,
            clip.clip_norm,
            case.model.trainable_len(Trainable::All),
        )
        .unwrap()
        .with_threads(1)
        .unwrap();
        // The library's default: noise chunks sampled on all cores.
        let noise_all_cores = GradientNoise::new(
            1.0,
            clip.clip_norm,
            case.model.trainable_len(Trainable::All),
        )
        .unwrap();
        let mut rng = sotto_dp::rng::seeded_rng(7);
        let mut g = c.benchmark_group(format!("step/{}", case.name));
        g.sample_size(20);
        let id = |what: &str| BenchmarkId::new(what, case.batch_size);
        g.bench_function(id("non_dp"), |b| {
            b.iter(|| non_dp_step(black_box(&case), &mut opt))
        });
        g.bench_function(id("dp_bookkeeping"), |b| {
            b.iter(|| dp_step(black_box(&case), &mut opt, &clip))
        });
        g.bench_function(id("dp_bookkeeping_with_noise"), |b| {
            b.iter(|| dp_step_noised(black_box(&case), &mut opt, &clip, &noise, &mut rng))
        });
        g.sample_size(10);
        g.bench_function(id("naive_per_sample"), |b| {
            b.iter(|| naive_step(black_box(&case), &mut opt, &clip))
        });
        g.finish();

        // Ratio of medians, measured interleaved in this run.
        let mut opt2 = sgd(&case.model);
        let mut opt3 = sgd(&case.model);
        let mut opt4 = sgd(&case.model);
        let mut opt5 = sgd(&case.model);
        let mut rng2 = sotto_dp::rng::seeded_rng(8);
        let m = interleaved_median_mean(
            rounds,
            &mut [
                &mut || non_dp_step(&case, &mut opt),
                &mut || dp_step(&case, &mut opt2, &clip),
                &mut || dp_step_noised(&case, &mut opt3, &clip, &noise, &mut rng),
                &mut || dp_step_noised(&case, &mut opt5, &clip, &noise_all_cores, &mut rng2),
            ],
        );
        let naive =
            interleaved_median_mean(3, &mut [&mut || naive_step(&case, &mut opt4, &clip)])[0].0;
        let [base, dp, dpn, dpn_all] = [m[0], m[1], m[2], m[3]];
        println!(
            "RATIO {} (B={}, {} params), median of {rounds} interleaved rounds: non-DP {:.3} ms | DP book-keeping {:.3} ms ({:.2}x) | with noise {:.3} ms ({:.2}x) | with noise on all {} cores {:.3} ms ({:.2}x) | naive loop {naive:.3} ms ({:.2}x)",
            case.name,
            case.batch_size,
            case.model.num_params(),
            base.0,
            dp.0,
            dp.0 / base.0,
            dpn.0,
            dpn.0 / base.0,
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            dpn_all.0,
            dpn_all.0 / base.0,
            naive / base.0
        );
        println!(
            "MEANS {} (B={}): non-DP {:.3} ms | DP book-keeping {:.3} ms ({:.2}x) | with noise {:.3} ms ({:.2}x) | with noise on all cores {:.3} ms ({:.2}x)",
            case.name,
            case.batch_size,
            base.1,
            dp.1,
            dp.1 / base.1,
            dpn.1,
            dpn.1 / base.1,
            dpn_all.1,
            dpn_all.1 / base.1
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
