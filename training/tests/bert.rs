//! A BERT-style encoder from a local Hugging Face folder (a tiny randomly initialised one,
//! written by the test: config.json, model.safetensors with HF tensor names, a WordPiece
//! tokenizer.json) loads into sotto's layers and DP fine-tunes on a text CSV, fully or with
//! DP-BiTFiT (only bias terms change).

#![allow(clippy::expect_used, clippy::unwrap_used)] // tests may fail loudly
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sotto_training::bert::{
    BertSpec, LoraSpec, TextColumns, load_pretrained, load_pretrained_with_lora, tokenize_csv,
};
use sotto_training::central::{CentralConfig, train_central_model};
use sotto_training::checkpoint::CheckpointOptions;
use sotto_training::clipping::ClipMode;
use sotto_training::model::{InputShape, Model, ModelSpec};
use sotto_training::nn::ParamKind;

const WORDS: [&str; 12] = [
    "good", "great", "fine", "nice", "bad", "awful", "poor", "sad", "the", "movie", "was", "very",
];

fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(WORDS.iter().map(|s| s.to_string()));
    v
}

fn tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = vocab()
        .into_iter()
        .enumerate()
        .map(|(i, w)| (w, serde_json::json!(i)))
        .collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
    .to_string()
}

/// A tiny BERT folder in the Hugging Face layout; returns it and the tensors written.
fn write_hf_folder(name: &str) -> (PathBuf, HashMap<String, Tensor>) {
    let dir = std::env::temp_dir().join(format!("sotto-bert-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab().len(),
        "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 32, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    // Random weights under HF names (`bert.` prefix, LayerNorm weight/bias), no classifier.
    let spec = BertSpec {
        hidden: 16,
        layers: 2,
        heads: 2,
        intermediate: 32,
        max_positions: 32,
        type_vocab: 2,
        layer_norm_eps: 1e-12,
        pad_id: 0,
        lora: None,
    };
    let input = InputShape::Tokens {
        seq_len: 8,
        vocab: vocab().len(),
    };
    let m = Model::new(
        &ModelSpec::Bert(spec),
        input,
        2,
        DType::F32,
        &Device::Cpu,
        77,
    )
    .unwrap();
    let mut tensors = HashMap::new();
    for p in m.params().params() {
        let n = p.name();
        if n.starts_with("classifier") {
            continue;
        }
        let hf = n
            .replace(".table", ".weight")
            .replace(".scale", ".weight")
            .replace(".shift", ".bias");
        // Layer-norm parameters away from 1 / 0, so that loading them is visible.
        let value = match p.kind() {
            ParamKind::NormScale | ParamKind::NormShift => p.value().affine(1.0, 0.1).unwrap(),
            _ => p.value().clone(),
        };
        tensors.insert(format!("bert.{hf}"), value);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    (dir, tensors)
}

fn write_csv(dir: &Path) -> PathBuf {
    let mut text = String::from("review,label\n");
    let mut rng = 12345u64;
    let mut next = |n: usize| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((rng >> 33) as usize) % n
    };
    for i in 0..240 {
        let positive = i % 2 == 0;
        let words: &[&str] = if positive { &WORDS[0..4] } else { &WORDS[4..8] };
        let a = words[next(4)];
        let b = words[next(4)];
        // Quoted fields with commas and doubled quotes exercise the CSV reader.
        text.push_str(&format!(
            "\"the movie, was \"\"very\"\" {a} {b}\",{}\n",
            if positive { "pos" } else { "neg" }
        ));
    }
    let path = dir.join("reviews.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn load(dir: &Path) -> sotto_training::bert::PretrainedBert {
    load_pretrained(dir, 2, 12, &Device::Cpu, 5).unwrap()
}

#[test]
fn a_hugging_face_folder_loads_under_its_tensor_names() {
    let (dir, tensors) = write_hf_folder("load");
    let bert = load(&dir);
    assert_eq!(bert.initialised, ["classifier.weight", "classifier.bias"]);
    assert_eq!(bert.loaded.len(), bert.model.params().params().len() - 2);
    let ln = bert
        .model
        .params()
        .params()
        .iter()
        .find(|p| p.name() == "encoder.layer.1.output.LayerNorm.scale")
        .unwrap();
    let want = &tensors["bert.encoder.layer.1.output.LayerNorm.weight"];
    assert_eq!(
        ln.value().to_vec1::<f32>().unwrap(),
        want.to_vec1::<f32>().unwrap()
    );
    // A missing tensor and a wrong shape are named.
    let mut broken = tensors.clone();
    broken.remove("bert.encoder.layer.0.intermediate.dense.weight");
    candle_core::safetensors::save(&broken, dir.join("model.safetensors")).unwrap();
    let e = load_pretrained(&dir, 2, 12, &Device::Cpu, 5)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("encoder.layer.0.intermediate.dense.weight"),
        "{e}"
    );
    let e = load_pretrained(&dir.join("nope"), 2, 12, &Device::Cpu, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.json"), "{e}");
    let e = load_pretrained(&dir, 2, 64, &Device::Cpu, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("seq_len"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Every parameter's name, kind and values.
type Snapshot = Vec<(String, ParamKind, Vec<f32>)>;

fn fine_tune(bitfit: bool) -> (Snapshot, Model, f64) {
    fine_tune_with(bitfit, None)
}

fn fine_tune_with(bitfit: bool, lora: Option<LoraSpec>) -> (Snapshot, Model, f64) {
    let name = match (bitfit, lora) {
        (_, Some(_)) => "lora",
        (true, None) => "bitfit",
        (false, None) => "full",
    };
    let (dir, _) = write_hf_folder(name);
    let csv = write_csv(&dir);
    let bert = load_pretrained_with_lora(&dir, 2, 12, &Device::Cpu, 5, lora).unwrap();
    let columns = TextColumns {
        text: "review".into(),
        label: "label".into(),
        has_header: true,
    };
    let (data, names) =
        tokenize_csv(&csv, &columns, &bert.tokenizer, 12, vocab().len(), 0).unwrap();
    assert_eq!(names, ["neg", "pos"]);
    assert_eq!(data.len(), 240);
    let (train, test) = data.split(0.25, 1).unwrap();
    let before = bert
        .model
        .params()
        .params()
        .iter()
        .map(|p| {
            let v = p.value().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (p.name().to_string(), p.kind(), v)
        })
        .collect::<Vec<_>>();
    let config = CentralConfig {
        epochs: 15,
        sampling_rate: 0.25,
        learning_rate: 0.02,
        clipping: ClipMode::Automatic,
        target_epsilon: Some(8.0),
        delta: 1e-3,
        bitfit,
        audit: false,
        reproducible_noise: true,
        ..CentralConfig::default()
    };
    let (model, report) = train_central_model(
        bert.model,
        &config,
        &train,
        &test,
        &CheckpointOptions::default(),
        |_| {},
    )
    .unwrap();
    assert!(report.epsilon.unwrap() <= 8.0);
    std::fs::remove_dir_all(&dir).ok();
    (before, model, report.accuracy)
}

fn changed(before: &Snapshot, model: &Model) -> Vec<(String, ParamKind)> {
    before
        .iter()
        .zip(model.params().params())
        .filter(|((_, _, v), p)| p.value().flatten_all().unwrap().to_vec1::<f32>().unwrap() != *v)
        .map(|((n, k, _), _)| (n.clone(), *k))
        .collect()
}

#[test]
fn bitfit_fine_tuning_changes_only_bias_terms() {
    let (before, model, _) = fine_tune(true);
    let changed = changed(&before, &model);
    assert!(!changed.is_empty());
    for (name, kind) in &changed {
        assert!(
            matches!(kind, ParamKind::Bias | ParamKind::NormShift),
            "BiTFiT changed `{name}`"
        );
    }
    // Every bias term trains.
    let biases = before
        .iter()
        .filter(|(_, k, _)| matches!(k, ParamKind::Bias | ParamKind::NormShift))
        .count();
    assert_eq!(changed.len(), biases);
}

#[test]
fn full_dp_fine_tuning_changes_every_parameter_and_learns() {
    let (before, model, accuracy) = fine_tune(false);
    let changed = changed(&before, &model);
    // The token-type row 1 and unused vocabulary rows get no gradient, but every parameter
    // receives noise, so all of them change.
    assert_eq!(changed.len(), before.len());
    assert!(accuracy > 0.6, "accuracy {accuracy}");
}

#[test]
fn lora_fine_tuning_changes_only_the_adapters_and_the_head_and_learns() {
    let lora = LoraSpec {
        rank: 4,
        alpha: 8.0,
    };
    let (before, model, accuracy) = fine_tune_with(false, Some(lora));
    let changed = changed(&before, &model);
    let mut expected: Vec<String> = before
        .iter()
        .map(|(n, _, _)| n.clone())
        .filter(|n| {
            n.ends_with(".lora_a.weight")
                || n.ends_with(".lora_b.weight")
                || n.starts_with("classifier.")
        })
        .collect();
    // A and B of the query and value projections of both blocks, and the head.
    assert_eq!(expected.len(), 2 * 2 * 2 + 2, "{expected:?}");
    let mut names: Vec<String> = changed.into_iter().map(|(n, _)| n).collect();
    names.sort();
    expected.sort();
    assert_eq!(names, expected);
    // The adapters start at B = 0: the adapted encoder is the pretrained one.
    for (n, _, v) in &before {
        if n.ends_with(".lora_b.weight") {
            assert!(v.iter().all(|&x| x == 0.0), "{n}");
        }
    }
    assert!(accuracy > 0.6, "accuracy {accuracy}");
    // Saved and reloaded with its adapters.
    let dir = std::env::temp_dir().join(format!("sotto-bert-lora-save-{}", std::process::id()));
    let info = sotto_training::artifact::ModelInfo {
        labels: vec!["neg".into(), "pos".into()],
        trainable: sotto_training::nn::Trainable::Lora,
        ..Default::default()
    };
    model.save(&dir, &info).unwrap();
    let (back, info) = Model::load(&dir, &Device::Cpu).unwrap();
    assert_eq!(info.trainable, sotto_training::nn::Trainable::Lora);
    assert_eq!(back.spec(), model.spec());
    assert_eq!(back.to_flat().unwrap(), model.to_flat().unwrap());
    std::fs::remove_dir_all(&dir).ok();
}

/// The golden vector of `scripts/bert_golden.py`: PyTorch's losses of a tiny random BERT
/// (`BertForSequenceClassification` architecture) on padded sequences, and its tokenizer.
#[test]
fn the_encoder_matches_pytorch_on_the_golden_vector() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bert-tiny");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let seq_len = expected["seq_len"].as_u64().unwrap() as usize;
    let bert = load_pretrained(&dir, 3, seq_len, &Device::Cpu, 0).unwrap();
    assert!(bert.initialised.is_empty(), "{:?}", bert.initialised);
    let ids: Vec<Vec<u32>> = serde_json::from_value(expected["ids"].clone()).unwrap();
    for (text, want) in expected["texts"].as_array().unwrap().iter().zip(&ids) {
        let got =
            sotto_training::bert::encode_text(&bert.tokenizer, text.as_str().unwrap(), seq_len, 0)
                .unwrap();
        assert_eq!(&got, want, "tokens of {text}");
    }
    let labels: Vec<u32> = serde_json::from_value(expected["labels"].clone()).unwrap();
    let data = sotto_training::data::Dataset::new(
        sotto_training::data::Inputs::Tokens {
            ids: ids.concat(),
            seq_len,
            vocab: 11,
        },
        labels,
        3,
    )
    .unwrap();
    let losses = bert.model.losses(&data).unwrap();
    let want: Vec<f64> = serde_json::from_value(expected["losses"].clone()).unwrap();
    for (got, want) in losses.iter().zip(&want) {
        assert!((got - want).abs() < 1e-4, "loss {got} vs PyTorch {want}");
    }
}
