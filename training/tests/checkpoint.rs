//! Checkpoint and resume of a central run: the resumed run ends with the unbroken run's epsilon
//! and (reproducible noise) the same model; a checkpoint of other settings is refused.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests may fail loudly
use candle_core::Device;
use sotto_training::central::{CentralConfig, train_central_checkpointed};
use sotto_training::checkpoint::{CheckpointOptions, epoch_folder};
use sotto_training::data::digits_split;

#[test]
fn a_resumed_run_matches_an_unbroken_one() {
    let dir = std::env::temp_dir().join(format!("sotto-ckpt-test-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let (train, test) = digits_split(3).unwrap();
    let config = CentralConfig {
        epochs: 4,
        audit: false,
        reproducible_noise: true,
        seed: 9,
        ..CentralConfig::default()
    };
    let every = CheckpointOptions {
        every: Some(2),
        dir: Some(dir.clone()),
        resume: None,
    };
    let (full_model, full) =
        train_central_checkpointed(&config, &train, &test, &Device::Cpu, &every, |_| {}).unwrap();
    assert!(epoch_folder(&dir, 2).join("checkpoint.json").is_file());
    assert!(epoch_folder(&dir, 4).join("checkpoint.json").is_file());
    let resume = CheckpointOptions {
        resume: Some(epoch_folder(&dir, 2)),
        ..CheckpointOptions::default()
    };
    let mut seen = Vec::new();
    let (model, resumed) =
        train_central_checkpointed(&config, &train, &test, &Device::Cpu, &resume, |e| {
            seen.push(e.epoch)
        })
        .unwrap();
    assert_eq!(seen, [3, 4], "only the remaining epochs run");
    assert_eq!(resumed.epsilon, full.epsilon);
    assert_eq!(resumed.steps, full.steps);
    assert_eq!(resumed.epochs, full.epochs);
    assert_eq!(model.to_flat().unwrap(), full_model.to_flat().unwrap());

    // Other settings, a finished run, a missing folder: refused with the reason.
    let other = CentralConfig {
        learning_rate: 0.5,
        ..config.clone()
    };
    let e = train_central_checkpointed(&other, &train, &test, &Device::Cpu, &resume, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("learning_rate"), "{e}");
    let done = CheckpointOptions {
        resume: Some(epoch_folder(&dir, 4)),
        ..CheckpointOptions::default()
    };
    let e = train_central_checkpointed(&config, &train, &test, &Device::Cpu, &done, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("already completed"), "{e}");
    let missing = CheckpointOptions {
        resume: Some(dir.join("nope")),
        ..CheckpointOptions::default()
    };
    let e = train_central_checkpointed(&config, &train, &test, &Device::Cpu, &missing, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("checkpoint.json"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_resumed_multi_party_run_ends_with_the_unbroken_epsilon() {
    use sotto_training::checkpoint::round_folder;
    use sotto_training::federated::{FederatedConfig, LocalOptions, run_local_with};
    let dir = std::env::temp_dir().join(format!("sotto-ckpt-fed-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let (train, test) = digits_split(3).unwrap();
    let config = FederatedConfig {
        rounds: 6,
        audit: false,
        reproducible: true,
        ..FederatedConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run = |checkpoints: CheckpointOptions| {
        let options = LocalOptions {
            checkpoints,
            ..LocalOptions::default()
        };
        rt.block_on(run_local_with(&config, &train, &test, options, &mut |_| {}))
    };
    let full = run(CheckpointOptions {
        every: Some(3),
        dir: Some(dir.clone()),
        resume: None,
    })
    .unwrap();
    assert!(round_folder(&dir, 3).join("checkpoint.json").is_file());
    assert!(round_folder(&dir, 6).join("checkpoint.json").is_file());
    let resumed = run(CheckpointOptions {
        resume: Some(round_folder(&dir, 3)),
        ..CheckpointOptions::default()
    })
    .unwrap();
    assert_eq!(resumed.report.epsilon, full.report.epsilon);
    assert_eq!(resumed.report.rounds, 6);
    let rounds: Vec<u64> = resumed.report.metrics.iter().map(|m| m.round).collect();
    assert_eq!(rounds, [1, 2, 3, 4, 5, 6]);
    for (a, b) in resumed.report.metrics.iter().zip(&full.report.metrics) {
        assert_eq!(a.epsilon, b.epsilon, "round {}", a.round);
    }
    let done = run(CheckpointOptions {
        resume: Some(round_folder(&dir, 6)),
        ..CheckpointOptions::default()
    });
    assert!(done.unwrap_err().to_string().contains("already completed"));
    std::fs::remove_dir_all(&dir).ok();
}
