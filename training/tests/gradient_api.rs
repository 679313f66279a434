//! The gradient-level API that multi-party rounds use: parties compute clipped sums
//! separately, the aggregate is noised once, every party applies the same update.

// Test helpers abort the test on any error.
#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device};
use sotto_training::clipping::Clipping;
use sotto_training::data::{digits_split, partition_iid};
use sotto_training::model::{InputShape, Model, ModelSpec};
use sotto_training::nn::Trainable;
use sotto_training::noise::GradientNoise;
use sotto_training::optim::{Optimizer, OptimizerKind};

#[test]
fn parties_sum_clipped_gradients_and_stay_in_sync() {
    let (train, test) = digits_split(4).unwrap();
    let parts = partition_iid(&train, 3, 9).unwrap();
    let dev = Device::Cpu;
    let spec = ModelSpec::Logistic;
    let models: Vec<Model> = (0..3)
        .map(|_| Model::new(&spec, InputShape::of(&train), 10, DType::F32, &dev, 17).unwrap())
        .collect();
    let mut opts: Vec<Optimizer> = models
        .iter()
        .map(|m| Optimizer::new(OptimizerKind::default(), 0.05, Trainable::All, m).unwrap())
        .collect();
    let clipping = Clipping::default();
    let dims = models[0].trainable_len(Trainable::All);
    let noise = GradientNoise::new(2.0, clipping.clip_norm, dims).unwrap();
    let mut rng = sotto_dp::rng::seeded_rng(3);
    let before = models[0].accuracy(&test).unwrap();
    let q = 0.25;
    for round in 0..30 {
        let mut total = vec![0f32; dims];
        for (p, (model, data)) in models.iter().zip(&parts).enumerate() {
            // each party's own batch (deterministic here; Poisson in real runs)
            let n = data.len();
            let idx: Vec<usize> = (0..n).filter(|i| (i + round + p) % 4 == 0).collect();
            let sum = model
                .clipped_gradient_sum(&data.batch(&idx, &dev).unwrap(), &clipping)
                .unwrap();
            assert_eq!(sum.values.len(), dims);
            for (t, v) in total.iter_mut().zip(&sum.values) {
                *t += v;
            }
        }
        let noised = noise.privatize(&total, &mut rng).unwrap();
        for (model, opt) in models.iter().zip(opts.iter_mut()) {
            opt.apply_sum(model, &noised, q * train.len() as f64)
                .unwrap();
        }
    }
    let flat0 = models[0].to_flat().unwrap();
    for m in &models[1..] {
        assert_eq!(m.to_flat().unwrap(), flat0, "parties' models diverged");
    }
    let after = models[0].accuracy(&test).unwrap();
    assert!(after > 0.85 && after > before + 0.5, "{before} -> {after}");
}

#[test]
fn flat_parameters_round_trip_and_reject_bad_input() {
    let (train, test) = digits_split(4).unwrap();
    let spec = ModelSpec::Mlp { hidden: vec![8] };
    let a = Model::new(
        &spec,
        InputShape::of(&train),
        10,
        DType::F32,
        &Device::Cpu,
        1,
    )
    .unwrap();
    let b = Model::new(
        &spec,
        InputShape::of(&train),
        10,
        DType::F32,
        &Device::Cpu,
        2,
    )
    .unwrap();
    assert_ne!(a.to_flat().unwrap(), b.to_flat().unwrap());
    b.load_flat(&a.to_flat().unwrap()).unwrap();
    assert_eq!(a.to_flat().unwrap(), b.to_flat().unwrap());
    assert_eq!(a.losses(&test).unwrap(), b.losses(&test).unwrap());
    assert!(b.load_flat(&[0.0; 3]).is_err());
    let mut bad = a.to_flat().unwrap();
    bad[0] = f32::NAN;
    assert!(b.load_flat(&bad).is_err());
    let mut opt = Optimizer::new(OptimizerKind::default(), 0.1, Trainable::All, &a).unwrap();
    assert!(opt.apply_sum(&a, &[0.0; 5], 1.0).is_err());
    assert!(opt.apply_sum(&a, &vec![0.0; a.num_params()], 0.0).is_err());
    assert!(
        Optimizer::new(
            OptimizerKind::Sgd { momentum: 1.0 },
            0.1,
            Trainable::All,
            &a
        )
        .is_err()
    );
    assert!(Optimizer::new(OptimizerKind::default(), -0.1, Trainable::All, &a).is_err());
}
