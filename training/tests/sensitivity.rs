//! The floating-point error of the clipped gradient sum is bounded and charged
//! (`docs/privacy/sensitivity.md`): the per-record quantities do not depend on the rest of the
//! batch (the assumption of the proof), neighbouring batches' sums differ by at most the charged
//! sensitivity, and the charged numbers for the default runs.

// Test helpers abort the test on any error.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device};
use sotto_training::clipping::{
    CONTRIBUTION_SLACK, ClipMode, Clipping, clipped_sum_error_bound, clipped_sum_sensitivity,
};
use sotto_training::data::{Dataset, digits_split, sequence_task};
use sotto_training::model::{InputShape, Model, ModelSpec};
use sotto_training::nn::Trainable;
use sotto_training::noise::GradientNoise;

fn models() -> Vec<(&'static str, Model, Dataset)> {
    let dev = Device::Cpu;
    let (digits, _) = digits_split(0).unwrap();
    let seq = sequence_task(300, 12, 16, 3, 5).unwrap();
    let logistic = Model::new(
        &ModelSpec::Logistic,
        InputShape::of(&digits),
        10,
        DType::F32,
        &dev,
        1,
    )
    .unwrap();
    let mlp = Model::new(
        &ModelSpec::Mlp {
            hidden: vec![64, 32],
        },
        InputShape::of(&digits),
        10,
        DType::F32,
        &dev,
        2,
    )
    .unwrap();
    let spec = ModelSpec::Transformer {
        dim: 32,
        heads: 4,
        mlp_dim: 64,
        layers: 2,
    };
    let transformer = Model::new(&spec, InputShape::of(&seq), 3, DType::F32, &dev, 3).unwrap();
    vec![
        ("logistic", logistic, digits.clone()),
        ("mlp", mlp, digits),
        ("transformer", transformer, seq),
    ]
}

/// The proof's assumption: record `x`'s activations and output gradients, hence its computed
/// norm, are the same bits whatever the other records of the batch. Checked on CPU for batch
/// sizes 1 to 300: it HOLDS for logistic regression (the default run's model) and does NOT hold
/// for the MLP and the transformer, whose hidden-layer GEMMs pick different kernels by batch
/// size (measured: the per-record norm moves by up to ~2e-7 relative). That deviation is not
/// covered by the proof (`docs/privacy/sensitivity.md`, "What is not covered"); the test pins
/// its measured size so that a change of kernels is noticed.
#[test]
fn per_record_norms_and_the_batch_size() {
    let dev = Device::Cpu;
    let clipping = Clipping::default();
    for (name, model, data) in models() {
        let x = 7usize;
        let alone = model
            .clipped_gradients(&data.batch(&[x], &dev).unwrap(), &clipping)
            .unwrap()
            .norms[0];
        let mut worst: f64 = 0.0;
        for (size, offset) in [
            (2usize, 0usize),
            (3, 0),
            (5, 11),
            (8, 1),
            (16, 1),
            (17, 2),
            (64, 3),
            (257, 20),
            (300, 0),
        ] {
            // x in the middle of the batch, `size - 1` other records around it
            let mut idx = vec![x];
            idx.extend(
                (0..data.len())
                    .map(|i| (i + offset) % data.len())
                    .filter(|&i| i != x)
                    .take(size - 1),
            );
            let at = idx.len() / 2;
            idx.swap(0, at);
            let g = model
                .clipped_gradients(&data.batch(&idx, &dev).unwrap(), &clipping)
                .unwrap();
            // The AVX-512 kernels (feature `avx512`) break this for logistic regression too.
            if name == "logistic" && !cfg!(feature = "avx512") {
                assert_eq!(g.norms[at].to_bits(), alone.to_bits(), "batch of {size}");
            }
            worst = worst.max((g.norms[at] / alone - 1.0).abs());
        }
        println!("{name}: largest relative change of a record's norm with the batch: {worst:e}");
        assert!(worst < 1e-6, "{name}: {worst}");
    }
}

fn l2_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Adding one record to a batch moves the computed clipped sum by at most the charged
/// sensitivity (and the clip norm is reached, so the check is not vacuous).
#[test]
fn neighbouring_batches_differ_by_at_most_the_charged_sensitivity() {
    let dev = Device::Cpu;
    for (name, model, data) in models() {
        let dims = model.trainable_len(Trainable::All);
        for mode in [ClipMode::Standard, ClipMode::Automatic] {
            let clipping = Clipping {
                mode,
                clip_norm: 0.5,
                ..Clipping::default()
            };
            let mut largest: f64 = 0.0;
            for x in [0usize, 13, 99] {
                let rest: Vec<usize> = (0..200).filter(|&i| i != x).collect();
                let mut with = rest.clone();
                with.insert(57, x);
                let a = model
                    .clipped_gradient_sum(&data.batch(&rest, &dev).unwrap(), &clipping)
                    .unwrap();
                let b = model
                    .clipped_gradient_sum(&data.batch(&with, &dev).unwrap(), &clipping)
                    .unwrap();
                let bound = clipped_sum_sensitivity(0.5, with.len(), model.rows_per_sample(), dims)
                    .unwrap();
                let diff = l2_diff(&a.values, &b.values);
                assert!(diff <= bound, "{name} {mode:?}: {diff} > {bound}");
                largest = largest.max(diff);
            }
            assert!(largest > 0.4, "{name} {mode:?}: {largest}");
        }
    }
}

/// One record's clipped sum has norm at most the clip norm (plus its float error bound).
#[test]
fn a_single_record_is_clipped_to_the_clip_norm() {
    let dev = Device::Cpu;
    for (name, model, data) in models() {
        let dims = model.trainable_len(Trainable::All);
        for mode in [ClipMode::Standard, ClipMode::Automatic] {
            let clipping = Clipping {
                mode,
                clip_norm: 1e-3,
                ..Clipping::default()
            };
            for x in 0..20 {
                let s = model
                    .clipped_gradient_sum(&data.batch(&[x], &dev).unwrap(), &clipping)
                    .unwrap();
                let norm = l2_diff(&s.values, &vec![0.0; s.values.len()]);
                let bound = 1e-3 * (1.0 + CONTRIBUTION_SLACK)
                    + clipped_sum_error_bound(1e-3, 1, model.rows_per_sample(), dims).unwrap();
                assert!(
                    norm <= bound,
                    "{name} {mode:?} record {x}: {norm} > {bound}"
                );
            }
        }
    }
}

/// The charged float error for the default digits runs (`docs/privacy/sensitivity.md`):
/// logistic regression on 650 scalars, central over 1438 records, federated parties of at most
/// 360 records; and its growth for long sequences.
#[test]
fn charged_float_error_for_the_default_runs() {
    let central = clipped_sum_error_bound(1.0, 1438, 1, 650).unwrap();
    let party = clipped_sum_error_bound(1.0, 360, 1, 650).unwrap();
    let transformer = clipped_sum_error_bound(1.0, 10_000, 64, 100_000).unwrap();
    println!("central {central:e}, party {party:e}, transformer 1e4 x 64 rows {transformer:e}");
    // u32 * B * R dominates: 2^-24 * 1438 = 8.571e-5, 2^-24 * 360 = 2.146e-5
    assert!((8.57e-5..8.58e-5).contains(&central), "{central}");
    assert!((2.14e-5..2.15e-5).contains(&party), "{party}");
    assert!(transformer < 2e-3, "{transformer}");
    let s = clipped_sum_sensitivity(1.0, 1438, 1, 650).unwrap();
    assert!((s - 1.0 - 2.0 * central).abs() < 1e-11, "{s}");
    let noise = GradientNoise::for_clipped_sums(1.0, 1.0, 650, 1438, 1).unwrap();
    assert!(noise.sensitivity() >= s + 650f64.sqrt() * noise.grid());
    // bad parameters
    assert!(clipped_sum_error_bound(0.0, 10, 1, 650).is_err());
    assert!(clipped_sum_error_bound(1.0, 10, 0, 650).is_err());
    assert!(clipped_sum_error_bound(1.0, 10, 1, 0).is_err());
    assert!(clipped_sum_error_bound(1.0, usize::MAX, usize::MAX, 650).is_err());
}

/// Timing (not a check): the f64 accumulation of pass 2 against the same matmuls in f32, and
/// the whole clipped-gradient computation, for the bench's MLP (batch 256) and transformer
/// (batch 64 x 16 tokens) shapes. `cargo test -p sotto-training --test sensitivity -- --ignored
/// --nocapture timing`.
#[test]
#[ignore = "timing only"]
fn timing_of_the_f64_accumulation() {
    use candle_core::Tensor;
    use std::time::Instant;
    let dev = Device::Cpu;
    let time = |f: &dyn Fn()| {
        f();
        let reps = 20;
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        t.elapsed().as_secs_f64() / f64::from(reps) * 1e3
    };
    // (rows, p, d) of each Outer plan: MLP 64-256-256-10 at B = 256; transformer blocks at
    // B*T = 1024 (q, k, v, o: 64x64, mlp: 64x128 and 128x64, head at B = 64).
    type Case = (&'static str, usize, Vec<(usize, usize, usize)>);
    let cases: [Case; 2] = [
        (
            "mlp-256",
            256,
            vec![(256, 256, 64), (256, 256, 256), (256, 10, 256)],
        ),
        (
            "transformer-64",
            64,
            [(1024, 64, 64); 8]
                .into_iter()
                .chain([
                    (1024, 128, 64),
                    (1024, 64, 128),
                    (1024, 128, 64),
                    (1024, 64, 128),
                ])
                .chain([(64, 4, 64)])
                .collect(),
        ),
    ];
    for (name, b, shapes) in cases {
        let mut t32 = 0.0;
        let mut t64 = 0.0;
        for (rows, p, d) in shapes {
            let g = Tensor::randn(0f32, 1.0, (b, rows / b, p), &dev).unwrap();
            let a = Tensor::randn(0f32, 1.0, (rows, d), &dev).unwrap();
            let c32 = Tensor::randn(0f32, 1.0, b, &dev).unwrap();
            let c64 = c32.to_dtype(DType::F64).unwrap();
            let t = rows / b;
            t32 += time(&|| {
                let gc = g
                    .broadcast_mul(&c32.reshape((b, 1, 1)).unwrap())
                    .unwrap()
                    .reshape((rows, p))
                    .unwrap();
                let _ = gc.t().unwrap().matmul(&a).unwrap();
            });
            t64 += time(&|| {
                let gc = g
                    .to_dtype(DType::F64)
                    .unwrap()
                    .broadcast_mul(&c64.reshape((b, 1, 1)).unwrap())
                    .unwrap()
                    .reshape((b * t, p))
                    .unwrap();
                let _ = gc
                    .t()
                    .unwrap()
                    .matmul(&a.to_dtype(DType::F64).unwrap())
                    .unwrap();
            });
        }
        println!("{name}: pass-2 matmuls f32 {t32:.3} ms, f64 {t64:.3} ms");
    }
    let (digits, _) = digits_split(1).unwrap();
    let mlp = Model::new(
        &ModelSpec::Mlp {
            hidden: vec![256, 256],
        },
        InputShape::of(&digits),
        10,
        DType::F32,
        &dev,
        1,
    )
    .unwrap();
    let batch = digits.batch(&(0..256).collect::<Vec<_>>(), &dev).unwrap();
    let whole = time(&|| {
        let _ = mlp.clipped_gradients(&batch, &Clipping::default()).unwrap();
    });
    println!("mlp-256: whole clipped_gradients {whole:.3} ms");
    let seq = sequence_task(64, 16, 64, 4, 2).unwrap();
    let spec = ModelSpec::Transformer {
        dim: 64,
        heads: 4,
        mlp_dim: 128,
        layers: 2,
    };
    let tr = Model::new(&spec, InputShape::of(&seq), 4, DType::F32, &dev, 1).unwrap();
    let batch = seq.full_batch(&dev).unwrap();
    let whole = time(&|| {
        let _ = tr.clipped_gradients(&batch, &Clipping::default()).unwrap();
    });
    println!("transformer-64: whole clipped_gradients {whole:.3} ms");
}
