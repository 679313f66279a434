//! `Model::save` / `Model::load`: a round trip keeps every parameter and the predictions; a
//! folder whose files do not fit each other is refused with an error naming the problem.

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests may fail loudly
use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use sotto_training::artifact::{ModelInfo, WEIGHTS_FILE};
use sotto_training::data::sequence_task;
use sotto_training::model::{InputShape, Model, ModelSpec};

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sotto-artifact-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn transformer() -> Model {
    let spec = ModelSpec::Transformer {
        dim: 16,
        heads: 2,
        mlp_dim: 32,
        layers: 2,
    };
    let input = InputShape::Tokens {
        seq_len: 12,
        vocab: 32,
    };
    Model::new(&spec, input, 4, DType::F32, &Device::Cpu, 3).unwrap()
}

#[test]
fn a_transformer_round_trips_with_its_predictions() {
    let dir = temp("roundtrip");
    let model = transformer();
    let info = ModelInfo {
        labels: ModelInfo::numbered_labels(4),
        ..ModelInfo::default()
    };
    model.save(&dir, &info).unwrap();
    let (loaded, back) = Model::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(back, info);
    assert_eq!(loaded.spec(), model.spec());
    assert_eq!(loaded.to_flat().unwrap(), model.to_flat().unwrap());
    let data = sequence_task(50, 12, 32, 4, 1).unwrap();
    assert_eq!(
        loaded.predict(&data).unwrap(),
        model.predict(&data).unwrap()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mismatched_weights_are_refused_by_name() {
    let dir = temp("mismatch");
    let model = transformer();
    let info = ModelInfo {
        labels: ModelInfo::numbered_labels(4),
        ..ModelInfo::default()
    };
    model.save(&dir, &info).unwrap();
    let path = dir.join(WEIGHTS_FILE);
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let err = |dir: &std::path::Path| Model::load(dir, &Device::Cpu).unwrap_err().to_string();

    let head = tensors.remove("head.weight").unwrap();
    candle_core::safetensors::save(&tensors, &path).unwrap();
    assert!(
        err(&dir).contains("lacks the parameter `head.weight`"),
        "{}",
        err(&dir)
    );

    tensors.insert(
        "head.weight".into(),
        Tensor::zeros((5, 16), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &path).unwrap();
    assert!(err(&dir).contains("shape [5, 16]"), "{}", err(&dir));

    tensors.insert("head.weight".into(), head.clone());
    tensors.insert("extra".into(), head);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    assert!(err(&dir).contains("tensor `extra`"), "{}", err(&dir));

    let nan: HashMap<String, Tensor> = HashMap::new();
    candle_core::safetensors::save(&nan, &path).unwrap();
    assert!(err(&dir).contains("lacks"), "{}", err(&dir));

    std::fs::write(&path, b"garbage").unwrap();
    assert!(
        err(&dir).contains("not a readable safetensors file"),
        "{}",
        err(&dir)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn saving_needs_one_label_per_class() {
    let model = transformer();
    let info = ModelInfo {
        labels: ModelInfo::numbered_labels(3),
        ..ModelInfo::default()
    };
    assert!(model.save(&temp("labels"), &info).is_err());
}
