//! Book-keeping per-sample clipping equals the naive per-sample loop, for every layer type
//! (linear with T = 1 and T > 1 on both the ghost-norm and the materialized route, embedding,
//! layer norm, attention projections), for standard and automatic clipping and DP-BiTFiT.

// Test helpers abort the test on any error.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use sotto_training::clipping::{ClipMode, ClippedGradients, Clipping, NormStrategy};
use sotto_training::data::{Batch, sequence_task};
use sotto_training::model::{InputShape, Model, ModelSpec};
use sotto_training::nn::Trainable;

const TOL: f64 = 1e-5;

/// CPU always; the first CUDA device too when built with `--features cuda` and one is present
/// (candle's habit of running each test on every available device).
fn devices() -> Vec<Device> {
    #[allow(unused_mut)]
    let mut devices = vec![Device::Cpu];
    #[cfg(feature = "cuda")]
    if let Ok(cuda) = Device::new_cuda(0) {
        devices.push(cuda);
    }
    devices
}

fn on(batch: &Batch, dev: &Device) -> Batch {
    Batch {
        inputs: batch.inputs.to_device(dev).unwrap(),
        labels: batch.labels.to_device(dev).unwrap(),
    }
}

fn feature_batch(b: usize, d: usize, classes: u32, seed: u64) -> Batch {
    let mut rng = sotto_dp::rng::seeded_rng(seed);
    use rand_core::RngCore;
    let x: Vec<f32> = (0..b * d)
        .map(|_| (rng.next_u32() as f32 / u32::MAX as f32) * 4.0 - 2.0)
        .collect();
    let y: Vec<u32> = (0..b).map(|_| rng.next_u32() % classes).collect();
    Batch {
        inputs: Tensor::from_vec(x, (b, d), &Device::Cpu).unwrap(),
        labels: Tensor::from_vec(y, b, &Device::Cpu).unwrap(),
    }
}

fn token_batch(b: usize, seq_len: usize, vocab: usize, seed: u64) -> Batch {
    let data = sequence_task(b, seq_len, vocab, 3, seed).unwrap();
    data.full_batch(&Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Asserts per-sample norms and every parameter's clipped sum agree within `tol` (relative to
/// max(1, |naive|)).
fn assert_same(
    model: &Model,
    fast: &ClippedGradients,
    naive: &ClippedGradients,
    trainable: Trainable,
    tol: f64,
) {
    assert_eq!(fast.norms.len(), naive.norms.len());
    for (i, (a, b)) in fast.norms.iter().zip(&naive.norms).enumerate() {
        assert!(
            (a - b).abs() <= tol * b.abs().max(1.0),
            "norm of sample {i}: {a} vs {b}"
        );
    }
    assert!((fast.loss_sum - naive.loss_sum).abs() <= tol * naive.loss_sum.abs().max(1.0));
    let names: Vec<String> = model
        .params()
        .trainable_indices(trainable)
        .iter()
        .map(|&i| model.params().params()[i].name().to_string())
        .collect();
    assert_eq!(fast.grads.len(), names.len());
    for ((f, n), name) in fast.grads.iter().zip(&naive.grads).zip(&names) {
        assert_eq!(f.dims(), n.dims(), "{name}");
        for (a, b) in values(f).iter().zip(values(n)) {
            assert!(
                (a - b).abs() <= tol * b.abs().max(1.0),
                "{name}: {a} vs {b}"
            );
        }
    }
}

fn check(model: &Model, batch: &Batch, tol: f64) {
    check_trainable(model, batch, tol, &[Trainable::All, Trainable::BiasOnly]);
}

fn check_trainable(model: &Model, batch: &Batch, tol: f64, trainables: &[Trainable]) {
    for mode in [ClipMode::Standard, ClipMode::Automatic] {
        for &trainable in trainables {
            for strategy in [
                NormStrategy::Auto,
                NormStrategy::Ghost,
                NormStrategy::Materialize,
            ] {
                // a small clip norm, so that standard clipping really clips some samples
                let clipping = Clipping {
                    mode,
                    clip_norm: 0.5,
                    gamma: 0.01,
                    trainable,
                    strategy,
                };
                let fast = model.clipped_gradients(batch, &clipping).unwrap();
                let naive = model.clipped_gradients_naive(batch, &clipping).unwrap();
                assert_same(model, &fast, &naive, trainable, tol);
                if mode == ClipMode::Standard {
                    // some samples are clipped and the test is not vacuous
                    assert!(naive.norms.iter().any(|&n| n > 0.5), "{:?}", naive.norms);
                }
            }
        }
    }
}

#[test]
fn logistic_regression_linear_t1() {
    for dev in devices() {
        let model = Model::new(
            &ModelSpec::Logistic,
            InputShape::Features(7),
            4,
            DType::F64,
            &dev,
            3,
        )
        .unwrap();
        check(&model, &on(&feature_batch(9, 7, 4, 1), &dev), TOL);
    }
}

#[test]
fn mlp_linear_layers() {
    let spec = ModelSpec::Mlp { hidden: vec![6, 5] };
    for dev in devices() {
        let model = Model::new(&spec, InputShape::Features(8), 3, DType::F64, &dev, 4).unwrap();
        check(&model, &on(&feature_batch(11, 8, 3, 2), &dev), TOL);
    }
}

#[test]
fn transformer_embedding_layer_norm_attention_and_linear_t_gt_1() {
    // seq_len 6, so 2 T^2 = 72: Auto materializes the 8x8 attention projections (p d = 64 < 72)
    // and uses the ghost norm for the 8x16 MLP layers (p d = 128 >= 72); the Ghost and
    // Materialize strategies force each route everywhere.
    let spec = ModelSpec::Transformer {
        dim: 8,
        heads: 2,
        mlp_dim: 16,
        layers: 2,
    };
    let shape = InputShape::Tokens {
        seq_len: 6,
        vocab: 10,
    };
    for dev in devices() {
        let model = Model::new(&spec, shape, 3, DType::F64, &dev, 5).unwrap();
        check(&model, &on(&token_batch(7, 6, 10, 3), &dev), TOL);
    }
}

#[test]
fn f32_models_agree_to_single_precision() {
    let spec = ModelSpec::Mlp { hidden: vec![16] };
    let model = Model::new(
        &spec,
        InputShape::Features(12),
        5,
        DType::F32,
        &Device::Cpu,
        6,
    )
    .unwrap();
    let batch = feature_batch(16, 12, 5, 4);
    let clipping = Clipping::default();
    let fast = model.clipped_gradients(&batch, &clipping).unwrap();
    let naive = model.clipped_gradients_naive(&batch, &clipping).unwrap();
    assert_same(&model, &fast, &naive, Trainable::All, 1e-4);
}

#[test]
fn clipped_sum_respects_the_sensitivity_bound() {
    let spec = ModelSpec::Mlp { hidden: vec![10] };
    let model = Model::new(
        &spec,
        InputShape::Features(5),
        3,
        DType::F64,
        &Device::Cpu,
        8,
    )
    .unwrap();
    let batch = feature_batch(1, 5, 3, 9);
    for mode in [ClipMode::Standard, ClipMode::Automatic] {
        let clipping = Clipping {
            mode,
            clip_norm: 0.01,
            ..Clipping::default()
        };
        let s = model.clipped_gradient_sum(&batch, &clipping).unwrap();
        let norm = s
            .values
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(norm <= 0.01 * (1.0 + 1e-5), "{mode:?}: {norm}");
        assert!(norm > 0.005, "{mode:?}: {norm}");
    }
}

#[test]
fn empty_batch_gives_zero_sum() {
    let model = Model::new(
        &ModelSpec::Logistic,
        InputShape::Features(3),
        2,
        DType::F32,
        &Device::Cpu,
        1,
    )
    .unwrap();
    let batch = Batch {
        inputs: Tensor::zeros((0, 3), DType::F32, &Device::Cpu).unwrap(),
        labels: Tensor::zeros(0, DType::U32, &Device::Cpu).unwrap(),
    };
    let s = model
        .clipped_gradient_sum(&batch, &Clipping::default())
        .unwrap();
    assert_eq!(s.batch_size, 0);
    assert!(s.values.iter().all(|&v| v == 0.0));
    assert_eq!(s.values.len(), 3 * 2 + 2);
}

#[test]
fn invalid_clipping_is_rejected() {
    let model = Model::new(
        &ModelSpec::Logistic,
        InputShape::Features(3),
        2,
        DType::F32,
        &Device::Cpu,
        1,
    )
    .unwrap();
    let batch = feature_batch(2, 3, 2, 1);
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let c = Clipping {
            clip_norm: bad,
            ..Clipping::default()
        };
        let e = model.clipped_gradients(&batch, &c).unwrap_err().to_string();
        assert!(e.contains("clip_norm"), "{e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn mlp_matches_naive_on_random_shapes(b in 1usize..6, d in 1usize..6, h in 1usize..6, seed in 0u64..1000) {
        let spec = ModelSpec::Mlp { hidden: vec![h] };
        let model = Model::new(&spec, InputShape::Features(d), 3, DType::F64, &Device::Cpu, seed).unwrap();
        let batch = feature_batch(b, d, 3, seed + 1);
        let clipping = Clipping { mode: ClipMode::Standard, clip_norm: 0.3, ..Clipping::default() };
        let fast = model.clipped_gradients(&batch, &clipping).unwrap();
        let naive = model.clipped_gradients_naive(&batch, &clipping).unwrap();
        assert_same(&model, &fast, &naive, Trainable::All, TOL);
    }

    #[test]
    fn transformer_matches_naive_on_random_shapes(b in 1usize..4, t in 4usize..7, seed in 0u64..1000) {
        let spec = ModelSpec::Transformer { dim: 4, heads: 2, mlp_dim: 6, layers: 1 };
        let model = Model::new(&spec, InputShape::Tokens { seq_len: t, vocab: 8 }, 3, DType::F64, &Device::Cpu, seed).unwrap();
        let batch = token_batch(b, t, 8, seed + 1);
        let clipping = Clipping::default();
        let fast = model.clipped_gradients(&batch, &clipping).unwrap();
        let naive = model.clipped_gradients_naive(&batch, &clipping).unwrap();
        assert_same(&model, &fast, &naive, Trainable::All, TOL);
    }
}

/// LoRA adapters on a BERT encoder's query and value projections are recording linear layers:
/// the book-keeping clipped sum over the adapters and the head equals the naive loop.
#[test]
fn bert_lora_adapters_match_naive() {
    let spec = ModelSpec::Bert(sotto_training::bert::BertSpec {
        hidden: 8,
        layers: 2,
        heads: 2,
        intermediate: 12,
        max_positions: 8,
        type_vocab: 2,
        layer_norm_eps: 1e-12,
        pad_id: 0,
        lora: Some(sotto_training::bert::LoraSpec {
            rank: 2,
            alpha: 4.0,
        }),
    });
    let model = Model::new(
        &spec,
        InputShape::Tokens {
            seq_len: 6,
            vocab: 8,
        },
        3,
        DType::F64,
        &Device::Cpu,
        3,
    )
    .unwrap();
    // B starts at zero (the adapted model is the pretrained one), which would leave A without
    // gradient: give B values so that both factors are tested.
    let mut flat = model.to_flat().unwrap();
    let (mut adapters, mut at) = (0, 0);
    for p in model.params().params() {
        let n = p.value().elem_count();
        if p.name().ends_with(".lora_b.weight") {
            for (j, x) in flat[at..at + n].iter_mut().enumerate() {
                *x = ((j * 7 + adapters) % 11) as f32 * 0.1 - 0.5;
            }
            adapters += 1;
        }
        at += n;
    }
    model.load_flat(&flat).unwrap();
    assert_eq!(adapters, 4); // query and value of 2 blocks
    let lora = model.params().trainable_indices(Trainable::Lora);
    let names: Vec<&str> = lora
        .iter()
        .map(|&i| model.params().params()[i].name())
        .collect();
    assert_eq!(names.len(), 2 * 4 + 2, "{names:?}"); // A and B of 4 projections, head
    assert!(
        names
            .iter()
            .all(|n| n.contains(".lora_") || n.starts_with("classifier."))
    );
    let batch = token_batch(5, 6, 8, 4);
    check_trainable(&model, &batch, TOL, &[Trainable::Lora, Trainable::All]);
}
