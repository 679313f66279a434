//! End-to-end multi-party training over real QUIC on loopback: an aggregator and 3-4 parties,
//! each its own endpoint with its own certificate, in one process.

// Test helpers abort the test on any error.
#![allow(clippy::unwrap_used)]

use sotto_dp::accounting::{AccountantKind, dp_sgd_epsilon};
use sotto_mpc::PartyId;
use sotto_training::central::{CentralConfig, train_central};
use sotto_training::data::{Dataset, digits_split};
use sotto_training::federated::{
    FederatedConfig, KillAt, LocalOptions, LocalOutcome, run_local_with, runtime_for, update_len,
};

fn data() -> (Dataset, Dataset) {
    digits_split(sotto_training::central::DIGITS_SPLIT_SEED).unwrap()
}

fn small(parties: usize, rounds: u64) -> FederatedConfig {
    FederatedConfig {
        parties,
        rounds,
        sampling_rate: 0.25,
        noise_multiplier: Some(1.0),
        target_epsilon: None,
        audit: false,
        round_deadline_secs: Some(5.0),
        ..FederatedConfig::default()
    }
}

/// Runs on the runtime `sotto train` picks (one thread for these small models; the
/// too-few-survivors test below runs on a multi-threaded one).
fn run(config: &FederatedConfig, options: LocalOptions) -> LocalOutcome {
    let (train, test) = data();
    let rt = runtime_for(update_len(config, &train, &test).unwrap()).unwrap();
    rt.block_on(run_local_with(config, &train, &test, options, &mut |_| {}))
        .unwrap()
}

/// The largest centered magnitude a genuine (noised, encoded) update or sum can have here:
/// far below 2^40, while a masked coordinate is uniform on Z_2^64 (below 2^40 with
/// probability 2^-23).
const PLAUSIBLE: u64 = 1 << 40;

fn small_coordinates(values: &[u64]) -> usize {
    values
        .iter()
        .filter(|&&v| (v as i64).unsigned_abs() < PLAUSIBLE)
        .count()
}

#[test]
fn secure_rounds_learn_and_account_like_the_central_run() {
    let config = small(4, 4);
    let out = run(&config, LocalOptions::default());
    let r = &out.report;
    assert_eq!(r.mode, "secure");
    assert_eq!(r.metrics.len(), 4);
    assert_eq!(r.records, 1438);
    for (i, m) in r.metrics.iter().enumerate() {
        assert_eq!(m.round, i as u64 + 1);
        assert_eq!(m.survivors.len(), 4);
        assert!(
            m.bytes > 4 * 650 * 8,
            "round {} moved {} bytes",
            m.round,
            m.bytes
        );
        let eps = dp_sgd_epsilon(0.25, 1.0, m.round, 1e-5, AccountantKind::Rdp).unwrap();
        assert_eq!(m.epsilon, eps);
        assert!(m.timing.local_compute > 0.0 && m.timing.masking > 0.0);
    }
    // The same q, sigma and steps in the central run give the same epsilon: one epoch at
    // q = 0.25 is 4 steps.
    let (train, test) = data();
    let central = CentralConfig {
        epochs: 1,
        sampling_rate: 0.25,
        noise_multiplier: Some(1.0),
        target_epsilon: None,
        audit: false,
        ..CentralConfig::default()
    };
    let (_, c) = train_central(&central, &train, &test, |_| {}).unwrap();
    assert_eq!(c.steps, 4);
    assert_eq!(c.epsilon, Some(r.epsilon));
    // Four DP-Adam steps already move a logistic regression far from chance (10%).
    assert!(r.accuracy > 0.5, "accuracy {}", r.accuracy);
    // Every party ends with the aggregator's final model.
    assert_eq!(out.parties.len(), 4);
    for p in &out.parties {
        assert_eq!(p.model, out.model);
        assert_eq!(p.rounds, 4);
    }
}

#[test]
fn aggregator_view_holds_only_masked_updates() {
    let mut config = small(3, 2);
    let options = LocalOptions {
        record_view: true,
        ..LocalOptions::default()
    };
    let out = run(&config, options.clone());
    let view = out.view.unwrap();
    assert_eq!(view.updates.len(), 3 * 2);
    assert_eq!(view.sums.len(), 2);
    for u in &view.updates {
        assert_eq!(u.values.len(), 650);
        // A masked vector: essentially no coordinate in the range of a real update.
        assert!(
            small_coordinates(&u.values) <= 2,
            "round {} party {}: {} plausible coordinates: an unmasked update",
            u.round,
            u.party,
            small_coordinates(&u.values)
        );
    }
    for s in &view.sums {
        // The released sum itself is in range (it is the noised sum of clipped gradients).
        assert_eq!(small_coordinates(s), 650);
    }

    // The same check on the plain baseline fails: there the updates arrive unmasked and add
    // up to the released sum.
    config.plain = true;
    let out = run(&config, options);
    let view = out.view.unwrap();
    assert_eq!(view.updates.len(), 3 * 2);
    for u in &view.updates {
        assert_eq!(small_coordinates(&u.values), 650);
    }
    for (round, s) in view.sums.iter().enumerate() {
        let mut sum = vec![0u64; 650];
        for u in view.updates.iter().filter(|u| u.round == round as u64) {
            for (a, b) in sum.iter_mut().zip(&u.values) {
                *a = a.wrapping_add(*b);
            }
        }
        assert_eq!(&sum, s);
    }
}

#[test]
fn a_party_killed_mid_round_does_not_stop_training() {
    // With run keys (the default) and with fresh keys every round.
    for per_round_keys in [false, true] {
        let config = FederatedConfig {
            per_round_keys,
            ..small(4, 4)
        };
        let options = LocalOptions {
            kill: Some(KillAt {
                party: PartyId(2),
                round: 1,
            }),
            ..LocalOptions::default()
        };
        let out = run(&config, options);
        let r = &out.report;
        assert_eq!(r.metrics.len(), 4, "training stopped: {:?}", r.stopped);
        assert_eq!(r.dropped, vec![PartyId(2)]);
        assert_eq!(r.metrics[0].survivors.len(), 4);
        // Killed after sending its key shares, before its masked input: its pairwise masks are
        // recovered by the others and its input is not in the sum.
        for m in &r.metrics[1..] {
            assert_eq!(
                m.survivors,
                vec![PartyId(1), PartyId(3), PartyId(4)],
                "round {}",
                m.round
            );
        }
        // The noise was calibrated for threshold = 3 survivors, so epsilon is unchanged.
        assert_eq!(
            r.epsilon,
            dp_sgd_epsilon(0.25, 1.0, 4, 1e-5, AccountantKind::Rdp).unwrap()
        );
        assert!(r.accuracy > 0.5, "accuracy {}", r.accuracy);
        assert_eq!(out.parties.len(), 3);
    }
}

#[test]
fn too_few_survivors_stop_the_run_with_an_error() {
    // 3 parties, threshold 3: killing one leaves too little noise, so the run must stop.
    let config = FederatedConfig {
        threshold: Some(3),
        ..small(3, 3)
    };
    let (train, test) = data();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = LocalOptions {
        kill: Some(KillAt {
            party: PartyId(1),
            round: 0,
        }),
        ..LocalOptions::default()
    };
    let err = rt
        .block_on(run_local_with(&config, &train, &test, options, &mut |_| {}))
        .unwrap_err();
    assert!(err.to_string().contains("secure aggregation"), "{err}");
}

#[test]
fn bad_settings_fail_before_any_connection() {
    let (train, test) = data();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = FederatedConfig {
        sampling_rate: 1.5,
        ..FederatedConfig::default()
    };
    let err = rt
        .block_on(run_local_with(
            &config,
            &train,
            &test,
            LocalOptions::default(),
            &mut |_| {},
        ))
        .unwrap_err();
    assert!(err.to_string().contains("sampling_rate"), "{err}");
}

#[test]
fn bitfit_with_label_skew_and_standard_clipping_trains_only_biases() {
    use candle_core::{DType, Device};
    use sotto_training::clipping::ClipMode;
    use sotto_training::federated::Partition;
    use sotto_training::model::{InputShape, Model};
    let config = FederatedConfig {
        bitfit: true,
        clipping: ClipMode::Standard,
        partition: Partition::LabelSkew {
            shards_per_party: 2,
        },
        ..small(3, 2)
    };
    let out = run(&config, LocalOptions::default());
    assert_eq!(out.report.dim, 10, "BiTFiT updates only the 10 biases");
    assert_eq!(out.report.metrics.len(), 2);
    let (train, _) = data();
    let initial = Model::new(
        &config.model,
        InputShape::of(&train),
        10,
        DType::F32,
        &Device::Cpu,
        config.seed,
    )
    .unwrap()
    .to_flat()
    .unwrap();
    let changed = initial
        .iter()
        .zip(&out.model)
        .filter(|(a, b)| a != b)
        .count();
    assert!(changed > 0 && changed <= 10, "{changed} parameters changed");
}

#[test]
fn initial_parameters_of_another_model_are_refused() {
    let config = small(3, 1);
    let (train, test) = data();
    let options = LocalOptions {
        initial: Some(vec![0.0; 10]),
        ..LocalOptions::default()
    };
    let rt = runtime_for(650).unwrap();
    let e = rt
        .block_on(run_local_with(&config, &train, &test, options, &mut |_| {}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("initial") && e.contains("650"), "{e}");
}
