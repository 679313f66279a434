//! Trained models on disk: `sotto train` (multi-party and central) saves the final model in its
//! report folder; `sotto evaluate` reloads it and reproduces the reported accuracy; `sotto
//! predict` labels feature rows; a missing, corrupt or mismatched model exits with status 2.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may fail loudly
use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{assert_invalid, json, run as sotto};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sotto-model-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_multi_party_model_is_saved_and_evaluates_to_the_reported_accuracy() {
    let dir = temp("federated");
    let trained = json(&["train", "--rounds", "15", "--no-audit", "--out", s(&dir)]);
    let model = dir.join("model.json");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(&model).expect("model.json")).unwrap();
    assert_eq!(config["architecture"]["kind"], "logistic");
    assert_eq!(config["privacy"]["epsilon"], trained["epsilon"]);
    assert_eq!(config["labels"].as_array().map(Vec::len), Some(10));
    let eval = json(&[
        "evaluate",
        "--model",
        s(&dir),
        "--data",
        "digits",
        "--split",
        "test",
    ]);
    assert_eq!(eval["accuracy"], trained["accuracy"], "{eval} vs {trained}");
    assert_eq!(eval["examples"], 359);

    // The same data as a CSV file: every row gets a prediction, the label column is skipped.
    let csv = dir.join("digits.csv");
    std::fs::write(&csv, sotto_training::data::DIGITS_CSV).unwrap();
    let all = json(&["evaluate", "--model", s(&dir), "--data", s(&csv)]);
    assert_eq!(all["examples"], 1797);
    let p = json(&["predict", "--model", s(&dir), "--data", s(&csv)]);
    let predictions = p["predictions"].as_array().expect("predictions");
    assert_eq!(predictions.len(), 1797);
    let labels: Vec<&str> = sotto_training::data::DIGITS_CSV
        .lines()
        .filter_map(|l| l.rsplit(',').next())
        .collect();
    let correct = predictions
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p.as_str() == Some(**l))
        .count();
    let accuracy = all["accuracy"].as_f64().unwrap();
    assert_eq!(correct, (accuracy * 1797.0).round() as usize);

    // Misuse: wrong data, missing files, corrupt weights, a wrong format.
    let narrow = dir.join("narrow.csv");
    std::fs::write(&narrow, "1,2,3\n4,5,6\n").unwrap();
    assert_invalid(
        &["predict", "--model", s(&dir), "--data", s(&narrow)],
        "64 features",
    );
    assert_invalid(
        &["evaluate", "--model", s(&dir), "--data", s(&narrow)],
        "features",
    );
    let other = dir.join("other.csv");
    std::fs::write(&other, "1,2,cat\n4,5,dog\n").unwrap();
    assert_invalid(
        &["evaluate", "--model", s(&dir), "--data", s(&other)],
        "label `cat`",
    );
    assert_invalid(
        &[
            "evaluate",
            "--model",
            s(&dir.join("nope")),
            "--data",
            "digits",
        ],
        "nope",
    );
    let weights = dir.join("model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &good[..good.len() / 2]).unwrap();
    assert_invalid(
        &["evaluate", "--model", s(&dir), "--data", "digits"],
        "model.safetensors",
    );
    std::fs::remove_file(&weights).unwrap();
    assert_invalid(
        &["evaluate", "--model", s(&dir), "--data", "digits"],
        "model.safetensors is missing",
    );
    std::fs::write(&weights, &good).unwrap();
    let text = std::fs::read_to_string(&model).unwrap();
    std::fs::write(&model, text.replace("\"dim\": 64", "\"dim\": 65")).unwrap();
    assert_invalid(
        &["evaluate", "--model", s(&dir), "--data", "digits"],
        "65 features",
    );
    std::fs::write(&model, "{not json").unwrap();
    assert_invalid(
        &["evaluate", "--model", s(&dir), "--data", "digits"],
        "model.json",
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_central_model_is_saved_and_evaluates_to_the_reported_accuracy() {
    let dir = temp("central");
    let trained = json(&[
        "train",
        "--central",
        "--epochs",
        "2",
        "--no-audit",
        "--model",
        "mlp",
        "--hidden",
        "16",
        "--out",
        s(&dir),
    ]);
    let eval = json(&[
        "evaluate",
        "--model",
        s(&dir),
        "--data",
        "digits",
        "--split",
        "test",
    ]);
    assert_eq!(eval["accuracy"], trained["accuracy"]);
    assert_eq!(eval["epsilon"], trained["epsilon"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_device_is_never_ignored() {
    for args in [
        &["train", "--central", "--device", "nonsense"][..],
        &["train", "--device", "nonsense"][..],
        &[
            "evaluate", "--model", "x", "--data", "digits", "--device", "tpu",
        ][..],
    ] {
        assert_invalid(args, "is not a device");
    }
    if !cfg!(feature = "cuda") {
        assert_invalid(
            &["train", "--central", "--device", "cuda"],
            "without CUDA support",
        );
        assert_invalid(&["train", "--device", "cuda"], "without CUDA support");
    }
}

#[test]
fn sotto_train_central_resumes_from_a_checkpoint_with_the_same_epsilon() {
    let dir = temp("resume");
    let args = [
        "train",
        "--central",
        "--epochs",
        "3",
        "--no-audit",
        "--reproducible",
        "--seed",
        "4",
    ];
    let mut full_args = args.to_vec();
    full_args.extend(["--checkpoint-every", "1", "--out", s(&dir)]);
    let full = json(&full_args);
    let checkpoint = dir.join("checkpoints").join("epoch-0001");
    let again = dir.join("again");
    let mut resume_args = args.to_vec();
    resume_args.extend(["--resume", s(&checkpoint), "--out", s(&again)]);
    let resumed = json(&resume_args);
    assert_eq!(resumed["epsilon"], full["epsilon"]);
    assert_eq!(resumed["accuracy"], full["accuracy"]);
    let mut changed = resume_args.clone();
    changed.extend(["--learning-rate", "0.3"]);
    assert_invalid(&changed, "learning_rate");
    // Multi-party: the aggregator's checkpoints, resumed in a fresh session.
    let mp = dir.join("mp");
    let full = json(&[
        "train",
        "--rounds",
        "6",
        "--no-audit",
        "--checkpoint-every",
        "3",
        "--out",
        s(&mp),
    ]);
    let round3 = mp.join("checkpoints").join("round-0003");
    let resumed = json(&[
        "train",
        "--rounds",
        "6",
        "--no-audit",
        "--resume",
        s(&round3),
        "--out",
        s(&dir.join("mp2")),
    ]);
    assert_eq!(resumed["epsilon"], full["epsilon"]);
    assert_eq!(resumed["rounds"], 6);
    assert_invalid(
        &[
            "train",
            "--rounds",
            "7",
            "--no-audit",
            "--resume",
            s(&round3),
            "--out",
            s(&dir.join("mp3")),
        ],
        "rounds",
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A tiny randomly initialised BERT in the Hugging Face layout (see
/// `training/tests/bert.rs` for the library-level tests).
fn tiny_bert_folder(dir: &Path) {
    use candle_core::{DType, Device};
    use sotto_training::bert::BertSpec;
    use sotto_training::model::{InputShape, Model, ModelSpec};
    std::fs::create_dir_all(dir).unwrap();
    let words = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "great", "bad", "awful", "film",
    ];
    let vocab: serde_json::Map<String, Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let config = serde_json::json!({
        "model_type": "bert", "vocab_size": words.len(), "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
        "max_position_embeddings": 16, "type_vocab_size": 2, "hidden_act": "gelu"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let spec = BertSpec {
        hidden: 8,
        layers: 1,
        heads: 2,
        intermediate: 16,
        max_positions: 16,
        type_vocab: 2,
        layer_norm_eps: 1e-12,
        pad_id: 0,
        lora: None,
    };
    let input = InputShape::Tokens {
        seq_len: 8,
        vocab: words.len(),
    };
    let m = Model::new(
        &ModelSpec::Bert(spec),
        input,
        2,
        DType::F32,
        &Device::Cpu,
        1,
    )
    .unwrap();
    let tensors: std::collections::HashMap<String, candle_core::Tensor> = m
        .params()
        .params()
        .iter()
        .filter(|p| !p.name().starts_with("classifier"))
        .map(|p| {
            let n = p
                .name()
                .replace(".table", ".weight")
                .replace(".scale", ".weight");
            (n.replace(".shift", ".bias"), p.value().clone())
        })
        .collect();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let mut csv = String::from("text,label\n");
    for i in 0..60 {
        let (w, l) = if i % 2 == 0 {
            ("good great", "pos")
        } else {
            ("bad awful", "neg")
        };
        csv.push_str(&format!("\"a {w}, film\",{l}\n"));
    }
    std::fs::write(dir.join("reviews.csv"), csv).unwrap();
}

#[test]
fn sotto_train_fine_tunes_a_pretrained_encoder_on_a_text_csv() {
    let dir = temp("bert");
    let hf = dir.join("hf");
    tiny_bert_folder(&hf);
    let csv = hf.join("reviews.csv");
    let out = dir.join("run");
    let trained = json(&[
        "train",
        "--central",
        "--pretrained",
        s(&hf),
        "--data",
        s(&csv),
        "--seq-len",
        "8",
        "--bitfit",
        "--epochs",
        "2",
        "--delta",
        "1e-3",
        "--no-audit",
        "--out",
        s(&out),
    ]);
    assert!(trained["epsilon"].as_f64().unwrap() <= 2.0);
    assert!(out.join("tokenizer.json").is_file());
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(config["architecture"]["kind"], "bert");
    assert_eq!(config["trainable"], "bias_only");
    let eval = json(&[
        "evaluate",
        "--model",
        s(&out),
        "--data",
        s(&csv),
        "--split",
        "test",
    ]);
    assert_eq!(eval["accuracy"], trained["accuracy"]);
    let p = json(&["predict", "--model", s(&out), "--data", s(&csv)]);
    let predictions = p["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 60);
    assert!(predictions.iter().all(|l| l == "pos" || l == "neg"), "{p}");
    // LoRA, central: the artifact holds the adapters and says what was trained.
    let lora_out = dir.join("lora");
    let trained = json(&[
        "train",
        "--central",
        "--pretrained",
        s(&hf),
        "--data",
        s(&csv),
        "--seq-len",
        "8",
        "--lora",
        "2",
        "--lora-alpha",
        "4",
        "--epochs",
        "2",
        "--delta",
        "1e-3",
        "--no-audit",
        "--out",
        s(&lora_out),
    ]);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(lora_out.join("model.json")).unwrap())
            .unwrap();
    assert_eq!(config["trainable"], "lora");
    assert_eq!(config["architecture"]["lora"]["rank"], 2, "{config}");
    assert_eq!(config["architecture"]["lora"]["alpha"], 4.0, "{config}");
    let eval = json(&[
        "evaluate",
        "--model",
        s(&lora_out),
        "--data",
        s(&csv),
        "--split",
        "test",
    ]);
    assert_eq!(eval["accuracy"], trained["accuracy"]);
    // BiTFiT without a pretrained model warns.
    let plain = sotto(&[
        "train",
        "--central",
        "--bitfit",
        "--epochs",
        "1",
        "--no-audit",
        "--out",
        s(&dir.join("p")),
    ]);
    assert!(plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("BiTFiT needs a pretrained model"));
    assert_invalid(
        &[
            "train",
            "--central",
            "--pretrained",
            s(&dir.join("none")),
            "--data",
            s(&csv),
        ],
        "config.json",
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The parameters of a model as `(name, kind, values)`.
fn snapshot(
    model: &sotto_training::model::Model,
) -> Vec<(String, sotto_training::nn::ParamKind, Vec<f32>)> {
    model
        .params()
        .params()
        .iter()
        .map(|p| {
            let v = p.value().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (p.name().to_string(), p.kind(), v)
        })
        .collect()
}

#[test]
fn a_multi_party_run_fine_tunes_a_pretrained_encoder_and_saves_it() {
    use sotto_training::nn::ParamKind;
    let dir = temp("bert-federated");
    let hf = dir.join("hf");
    tiny_bert_folder(&hf);
    let csv = hf.join("reviews.csv");
    // What every party starts from: the encoder of the folder and the classifier initialised
    // with the run's seed (the default, 0).
    let start = sotto_training::bert::load_pretrained(&hf, 2, 8, &candle_core::Device::Cpu, 0)
        .unwrap()
        .model;
    let before = snapshot(&start);
    for mode in ["bitfit", "full", "lora"] {
        let bitfit = mode == "bitfit";
        let out = dir.join(mode);
        let mut args = vec![
            "train",
            "--pretrained",
            s(&hf),
            "--data",
            s(&csv),
            "--seq-len",
            "8",
            "--parties",
            "3",
            "--rounds",
            "3",
            "--delta",
            "1e-3",
            "--no-audit",
            "--out",
            s(&out),
        ];
        match mode {
            "bitfit" => args.push("--bitfit"),
            "lora" => args.extend(["--lora", "2"]),
            _ => {}
        }
        let trained = json(&args);
        assert_eq!(trained["rounds"], 3, "{trained}");
        assert_eq!(trained["parties"], 3, "{trained}");
        assert!(trained["epsilon"].as_f64().unwrap() <= 2.0, "{trained}");
        assert!(out.join("tokenizer.json").is_file());
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("model.json")).unwrap())
                .unwrap();
        assert_eq!(config["architecture"]["kind"], "bert");
        assert_eq!(
            config["trainable"],
            match mode {
                "bitfit" => "bias_only",
                "lora" => "lora",
                _ => "all",
            },
            "{config}"
        );
        // The multi-party accounting: whose noise the epsilon counts.
        assert_eq!(config["privacy"]["guarantee"], trained["guarantee"]);
        assert_eq!(config["privacy"]["epsilon"], trained["epsilon"]);
        let eval = json(&[
            "evaluate",
            "--model",
            s(&out),
            "--data",
            s(&csv),
            "--split",
            "test",
        ]);
        assert_eq!(eval["accuracy"], trained["accuracy"], "{eval} vs {trained}");
        assert_eq!(eval["examples"], 12);

        let (model, _) =
            sotto_training::model::Model::load(&out, &candle_core::Device::Cpu).unwrap();
        let after = snapshot(&model);
        if mode == "lora" {
            // The adapters (A and B of the query and value projections) and the head changed,
            // nothing else (compared by name: the adapters are not in the pretrained model).
            let start: std::collections::HashMap<_, _> = before
                .iter()
                .map(|(n, _, v)| (n.clone(), v.clone()))
                .collect();
            let mut changed = Vec::new();
            for (name, _, v) in &after {
                match start.get(name) {
                    Some(v0) if v0 == v => {}
                    Some(_) => changed.push(name.clone()),
                    None => assert!(name.contains(".lora_"), "{name}"),
                }
            }
            assert_eq!(changed, ["classifier.weight", "classifier.bias"]);
            let adapters: Vec<_> = after
                .iter()
                .filter(|(n, _, _)| n.ends_with(".lora_b.weight"))
                .collect();
            assert_eq!(adapters.len(), 2);
            assert!(adapters.iter().all(|(_, _, v)| v.iter().any(|&x| x != 0.0)));
            continue;
        }
        assert_eq!(before.len(), after.len());
        let mut changed = Vec::new();
        for ((name, kind, v0), (name1, _, v1)) in before.iter().zip(&after) {
            assert_eq!(name, name1);
            if v0 != v1 {
                changed.push((name.clone(), *kind));
            }
        }
        if bitfit {
            assert!(!changed.is_empty());
            for (name, kind) in &changed {
                assert!(
                    matches!(kind, ParamKind::Bias | ParamKind::NormShift),
                    "BiTFiT changed {name} ({kind:?})"
                );
            }
        } else {
            assert!(
                changed.iter().any(|(_, k)| *k == ParamKind::Weight)
                    && changed.iter().any(|(_, k)| *k == ParamKind::Embedding),
                "{changed:?}"
            );
        }
    }
    // --lora needs --pretrained and does not go with --bitfit.
    assert_invalid(&["train", "--central", "--lora", "2"], "--pretrained");
    assert_invalid(
        &[
            "train",
            "--pretrained",
            s(&hf),
            "--data",
            s(&csv),
            "--lora",
            "2",
            "--bitfit",
        ],
        "--bitfit",
    );
    assert_invalid(
        &[
            "train",
            "--pretrained",
            s(&hf),
            "--data",
            s(&csv),
            "--seq-len",
            "8",
            "--lora",
            "0",
        ],
        "lora rank",
    );
    // Not (yet) for a deployment's roles.
    assert_invalid(
        &[
            "train",
            "--pretrained",
            s(&hf),
            "aggregator",
            "--config",
            "x.toml",
            "--test",
            "t.csv",
        ],
        "--pretrained",
    );
    // --model does not go with --pretrained, in multi-party runs too.
    assert_invalid(
        &[
            "train",
            "--pretrained",
            s(&hf),
            "--data",
            s(&csv),
            "--model",
            "mlp",
        ],
        "--pretrained",
    );
    std::fs::remove_dir_all(&dir).ok();
}
