//! `sotto train`: differentially private training.
//!
//! `sotto train` (no arguments) runs multi-party training: an aggregator and 4 parties as
//! separate QUIC endpoints on loopback, the digits data split across the parties, secure
//! aggregation with distributed noise every round, progress bars on stderr, and a report
//! folder (`metrics.json`, `plot.svg`, `audit.json`). `sotto train --central` trains one
//! party's model with DP-SGD / DP-Adam on the embedded digits data (or the generated sequence
//! task, or the user's CSV), printing per-epoch progress, accuracy and epsilon, and ends with a
//! membership-inference audit.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;
use clap::{Args, ValueEnum};
use serde::Serialize;
use sotto_dp::accounting::AccountantKind;
use sotto_training::artifact::{ModelInfo, PrivacySpent};
use sotto_training::audit::CanaryConfig;
use sotto_training::central::{
    CentralConfig, CentralReport, EpochMetrics, train_central_checkpointed, train_central_model,
};
use sotto_training::checkpoint::CheckpointOptions;
use sotto_training::clipping::ClipMode;
use sotto_training::data::{self, CsvOptions, Dataset, LabelColumn, Standardizer};
use sotto_training::model::{InputShape, ModelSpec};
use sotto_training::optim::OptimizerKind;

use super::{Output, UsageError};

mod deploy;
mod federated;

/// Seed of the fixed 80/20 train/test split of CSV and generated data.
pub(super) const SPLIT_SEED: u64 = 1;

/// Arguments of `sotto train`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Run one role of a deployment on its own host (`aggregator` or `party`).
    #[command(subcommand)]
    pub role: Option<deploy::Role>,

    /// Train one party's model centrally with DP (without it: multi-party training over QUIC).
    #[arg(long)]
    pub central: bool,

    /// A configuration file: TOML (`FederatedConfig`) for multi-party training, JSON
    /// (`CentralConfig`) with `--central`. Flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Multi-party: number of parties.
    #[arg(long)]
    pub parties: Option<usize>,
    /// Multi-party: minimum number of survivors (default parties / 2 + 1).
    #[arg(long)]
    pub threshold: Option<usize>,
    /// Multi-party: parties assumed to collude with the aggregator; their noise shares are
    /// not counted (default threshold - 1, the worst case of the threat model; 0 trusts every
    /// party and needs less noise).
    #[arg(long)]
    pub colluders: Option<usize>,
    /// Multi-party: number of rounds (DP-SGD steps).
    #[arg(long)]
    pub rounds: Option<u64>,
    /// Multi-party: how the data is split: `iid` or `label-skew`.
    #[arg(long, value_enum)]
    pub partition: Option<PartitionArg>,
    /// Multi-party: shards per party with `--partition label-skew` (default 2).
    #[arg(long)]
    pub shards_per_party: Option<usize>,
    /// Multi-party: send noised updates unmasked (a baseline to measure secure aggregation).
    #[arg(long)]
    pub plain: bool,
    /// Multi-party: after the secure run, repeat it with plain aggregation and report the
    /// overhead of secure aggregation per round.
    #[arg(long, conflicts_with = "plain")]
    pub compare_plain: bool,
    /// Multi-party, with `--compare-plain`: run the secure and the plain training this many
    /// times each, alternating, and pool their rounds (steadier on a busy machine).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20), requires = "compare_plain")]
    pub compare_repeat: u32,
    /// Multi-party: generate fresh SecAgg keys every round instead of once per run (forward
    /// secrecy within the run; two key generations per round and two X25519 operations per
    /// neighbour and round).
    #[arg(long)]
    pub per_round_keys: bool,
    /// Multi-party: deadline of each protocol step in seconds; a party silent past it is
    /// dropped (default: derived from the number of parties and the model size).
    #[arg(long, value_name = "SECS")]
    pub round_deadline: Option<f64>,
    /// The report folder, where the metrics and the trained model (`model.json`,
    /// `model.safetensors`) are written (default `reports/train-<UTC timestamp>`, or
    /// `reports/central-<UTC timestamp>` with `--central`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the model computes (multi-party: the parties): `cpu`, or `cuda` (needs a build with
    /// `--features cuda` and a CUDA GPU).
    #[arg(long, default_value = "cpu")]
    pub device: String,

    /// The data: `digits` (embedded), `sequence` (generated text task, for the transformer)
    /// or a CSV file of numeric features and a label column.
    #[arg(long, default_value = "digits")]
    pub data: String,
    /// Label column of a CSV file: `last`, a 0-based index, or a header name.
    #[arg(long, default_value = "last")]
    pub label_column: String,
    /// The CSV file's first line holds column names.
    #[arg(long)]
    pub header: bool,

    /// The model.
    #[arg(long, value_enum)]
    pub model: Option<ModelArg>,
    /// Hidden widths of the MLP, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Per-sample clipping: `automatic` (normalization, no threshold to tune) or `standard`.
    #[arg(long, value_enum)]
    pub clipping: Option<ClipArg>,
    /// DP-BiTFiT: train only the bias terms.
    #[arg(long)]
    pub bitfit: bool,
    /// Optimizer: `adam` (DP-Adam) or `sgd` (DP-SGD).
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// Number of epochs (each is ceil(1 / sampling rate) steps).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Poisson sampling rate q (expected batch size / training-set size).
    #[arg(long)]
    pub sampling_rate: Option<f64>,
    /// Learning rate.
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Clipping norm R (the L2 sensitivity of each clipped gradient sum).
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// Target epsilon: the smallest noise multiplier that meets it is chosen.
    #[arg(long, conflicts_with_all = ["noise_multiplier", "non_private"])]
    pub target_epsilon: Option<f64>,
    /// Fixed noise multiplier (noise standard deviation / clipping norm) instead of a target.
    #[arg(long, conflicts_with = "non_private")]
    pub noise_multiplier: Option<f64>,
    /// Train without clipping or noise (a baseline; no privacy).
    #[arg(long)]
    pub non_private: bool,
    /// delta of the (epsilon, delta) guarantee; must be below 1 / (training-set size).
    #[arg(long)]
    pub delta: Option<f64>,
    /// Accountant: `rdp` or `pld`.
    #[arg(long)]
    pub accountant: Option<AccountantKind>,
    /// Seed of the model initialization.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also draw sampling and noise from `--seed` (reproducible experiments only, never for
    /// real data).
    #[arg(long)]
    pub reproducible: bool,
    /// Skip the membership-inference audit.
    #[arg(long)]
    pub no_audit: bool,
    /// With `--central`: also run the one-run canary audit (Steinke et al. 2023) with this
    /// many random canaries, each joining the training data with probability 1/2, and report
    /// an empirical epsilon lower bound next to the claimed epsilon. The canaries change the
    /// model: for measuring privacy, not for a model to release.
    #[arg(long, conflicts_with = "no_audit")]
    pub canaries: Option<usize>,
    /// Write a checkpoint (model, optimizer, accounting) every N epochs (`--central`, into
    /// `<report folder>/checkpoints/epoch-NNNN`) or N rounds (multi-party, the aggregator's
    /// state, into `<report folder>/checkpoints/round-NNNN`).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Fine-tune a pretrained BERT-style encoder from a local Hugging Face folder
    /// (config.json, model.safetensors, tokenizer.json) on `--data FILE.csv` of texts and
    /// labels (`--text-column`, `--label-column`): centrally with `--central`, else split
    /// among the parties, which all start from the same encoder and classifier (`--seed`).
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    /// With `--pretrained`: the CSV column of the texts (0-based index or header name).
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// With `--pretrained`: tokens per text (longer texts are cut, shorter ones padded).
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// With `--pretrained`: DP fine-tuning with LoRA adapters of this rank on every block's
    /// attention query and value projections; only the adapters and the classifier head train.
    #[arg(
        long,
        value_name = "RANK",
        requires = "pretrained",
        conflicts_with = "bitfit"
    )]
    pub lora: Option<usize>,
    /// With `--lora`: the adapters' scaling numerator (their output is multiplied by
    /// alpha / rank; default 2 * rank).
    #[arg(long, requires = "lora")]
    pub lora_alpha: Option<f64>,
    /// Continue a run from a checkpoint folder (`.../checkpoints/epoch-NNNN` or `round-NNNN`)
    /// with the same settings; the final epsilon equals an unbroken run's.
    #[arg(long)]
    pub resume: Option<PathBuf>,
}

/// Models selectable on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModelArg {
    /// Multinomial logistic regression.
    Logistic,
    /// A multilayer perceptron (`--hidden` widths, default 64).
    Mlp,
    /// A small transformer-encoder text classifier (use with `--data sequence`).
    Transformer,
}

/// Clipping modes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ClipArg {
    /// g_i * min(1, R / ||g_i||).
    Standard,
    /// g_i * R / (||g_i|| + gamma).
    Automatic,
}

/// Data partitions across parties.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PartitionArg {
    /// Near-equal random parts.
    Iid,
    /// Each party holds a few label-sorted shards.
    LabelSkew,
}

/// Optimizers.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OptimizerArg {
    /// DP-Adam.
    Adam,
    /// DP-SGD (no momentum).
    Sgd,
}

impl TrainArgs {
    /// The configuration: defaults, then the `--config` file, then the flags.
    fn config(&self) -> anyhow::Result<CentralConfig> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    UsageError(format!("cannot read --config {}: {e}", path.display()))
                })?;
                serde_json::from_str(&text).map_err(|e| {
                    UsageError(format!(
                        "--config {}: not a valid training configuration: {e}",
                        path.display()
                    ))
                })?
            }
            None => CentralConfig::default(),
        };
        if let Some(m) = self.model {
            c.model = match m {
                ModelArg::Logistic => ModelSpec::Logistic,
                ModelArg::Mlp => ModelSpec::Mlp {
                    hidden: self.hidden.clone().unwrap_or_else(|| vec![64]),
                },
                ModelArg::Transformer => ModelSpec::Transformer {
                    dim: 32,
                    heads: 4,
                    mlp_dim: 64,
                    layers: 1,
                },
            };
        } else if self.hidden.is_some() {
            return Err(UsageError("--hidden needs --model mlp".into()).into());
        }
        if let Some(cl) = self.clipping {
            c.clipping = match cl {
                ClipArg::Standard => ClipMode::Standard,
                ClipArg::Automatic => ClipMode::Automatic,
            };
        }
        c.bitfit |= self.bitfit;
        if let Some(o) = self.optimizer {
            c.optimizer = match o {
                OptimizerArg::Adam => OptimizerKind::default(),
                OptimizerArg::Sgd => OptimizerKind::Sgd { momentum: 0.0 },
            };
        }
        if let Some(v) = self.epochs {
            c.epochs = v;
        }
        if let Some(v) = self.sampling_rate {
            c.sampling_rate = v;
        }
        if let Some(v) = self.learning_rate {
            c.learning_rate = v;
        }
        if let Some(v) = self.clip_norm {
            c.clip_norm = v;
        }
        if let Some(v) = self.target_epsilon {
            c.target_epsilon = Some(v);
            c.noise_multiplier = None;
            c.non_private = false;
        }
        if let Some(v) = self.noise_multiplier {
            c.noise_multiplier = Some(v);
            c.target_epsilon = None;
            c.non_private = false;
        }
        if self.non_private {
            c.non_private = true;
            c.target_epsilon = None;
            c.noise_multiplier = None;
        }
        if let Some(v) = self.delta {
            c.delta = v;
        }
        if let Some(v) = self.accountant {
            c.accountant = v;
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        c.reproducible_noise |= self.reproducible;
        if self.no_audit {
            c.audit = false;
        }
        if let Some(count) = self.canaries {
            c.canaries = Some(CanaryConfig {
                count,
                seed: c.seed,
                ..c.canaries.clone().unwrap_or_default()
            });
        }
        Ok(c)
    }

    /// The train/test split of the chosen data, with its class names and the standardization
    /// fitted on the training split.
    pub(super) fn data(&self) -> anyhow::Result<TrainData> {
        load_data(&self.data, &self.label_column, self.header)
    }
}

/// A data set split for training, with what a saved model needs to read new data the same way.
pub(super) struct TrainData {
    pub train: Dataset,
    pub test: Dataset,
    /// Class names, label `k` first at `k`.
    pub labels: Vec<String>,
    /// Fitted on `train` and already applied to `train` and `test`.
    pub standardizer: Option<Standardizer>,
}

impl TrainData {
    /// What a saved model of `classes` classes records about this data.
    pub fn model_info(&self, classes: usize, trained_by: &str) -> ModelInfo {
        let mut labels = self.labels.clone();
        labels.truncate(classes);
        while labels.len() < classes {
            labels.push(labels.len().to_string());
        }
        ModelInfo {
            labels,
            standardizer: self.standardizer.clone(),
            trained_by: trained_by.to_string(),
            ..ModelInfo::default()
        }
    }
}

/// `--label-column` as the CSV loader takes it.
pub(super) fn label_column(s: &str) -> LabelColumn {
    match s {
        "last" => LabelColumn::Last,
        s => match s.parse::<usize>() {
            Ok(i) => LabelColumn::Index(i),
            Err(_) => LabelColumn::Name(s.to_string()),
        },
    }
}

/// The data named by `--data` (`digits`, `sequence` or a CSV path), split 80/20 with the fixed
/// seed; features are standardized with the training split's statistics.
pub(super) fn load_data(data: &str, label_col: &str, header: bool) -> anyhow::Result<TrainData> {
    let (all, labels, standardize) = match data {
        "digits" => (data::digits()?, ModelInfo::numbered_labels(10), true),
        "sequence" => (
            data::sequence_task(6000, 12, 32, 4, SPLIT_SEED)?,
            ModelInfo::numbered_labels(4),
            false,
        ),
        path => {
            let options = CsvOptions {
                has_header: header,
                label_column: label_column(label_col),
            };
            let csv = data::load_csv_file(std::path::Path::new(path), &options)
                .with_context(|| format!("--data {path}"))?;
            (csv.dataset, csv.class_names, true)
        }
    };
    let seed = if data == "digits" {
        sotto_training::central::DIGITS_SPLIT_SEED
    } else {
        SPLIT_SEED
    };
    let (train, test) = all.split(0.2, seed)?;
    if !standardize {
        return Ok(TrainData {
            train,
            test,
            labels,
            standardizer: None,
        });
    }
    let st = Standardizer::fit(&train)?;
    Ok(TrainData {
        train: st.apply(&train)?,
        test: st.apply(&test)?,
        labels,
        standardizer: Some(st),
    })
}

/// A text CSV tokenized for a pretrained encoder, and the encoder with a classifier for its
/// classes.
fn pretrained_data(
    args: &TrainArgs,
    dir: &std::path::Path,
    device: &Device,
    seed: u64,
) -> anyhow::Result<(TrainData, sotto_training::model::Model)> {
    use sotto_training::bert::{LoraSpec, TextColumns, load_pretrained_with_lora, tokenize_csv};
    if matches!(args.data.as_str(), "digits" | "sequence") || args.model.is_some() {
        return Err(UsageError(
            "--pretrained fine-tunes on a text CSV: give --data FILE.csv (and no --model)".into(),
        )
        .into());
    }
    // Read the folder once for the tokenizer and sizes, tokenize, then build the classifier
    // for the number of classes found.
    let lora = args.lora.map(|rank| LoraSpec {
        rank,
        alpha: args.lora_alpha.unwrap_or(2.0 * rank as f64),
    });
    let load = |classes| load_pretrained_with_lora(dir, classes, args.seq_len, device, seed, lora);
    let probe = load(2).with_context(|| format!("--pretrained {}", dir.display()))?;
    let InputShape::Tokens { vocab, .. } = probe.model.input_shape() else {
        return Err(anyhow::anyhow!("internal: a BERT model takes tokens"));
    };
    let pad = match probe.model.spec() {
        ModelSpec::Bert(b) => b.pad_id,
        _ => 0,
    };
    let label = match args.label_column.as_str() {
        "last" => "label".to_string(),
        s => s.to_string(),
    };
    let columns = TextColumns {
        text: args.text_column.clone(),
        label,
        has_header: args.header || args.text_column.parse::<usize>().is_err(),
    };
    let (all, labels) = tokenize_csv(
        std::path::Path::new(&args.data),
        &columns,
        &probe.tokenizer,
        args.seq_len,
        vocab,
        pad,
    )
    .with_context(|| format!("--data {}", args.data))?;
    let (train, test) = all.split(0.2, SPLIT_SEED)?;
    let classes = labels.len().max(2);
    let model = if classes == 2 {
        probe.model
    } else {
        load(classes)?.model
    };
    Ok((
        TrainData {
            train,
            test,
            labels,
            standardizer: None,
        },
        model,
    ))
}

/// The device named by `--device`: `cpu`, or `cuda` (the first CUDA GPU; needs a build with
/// the `cuda` feature).
pub(super) fn device(name: &str) -> anyhow::Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" if !cfg!(feature = "cuda") => Err(UsageError(
            "--device cuda: this sotto was built without CUDA support; rebuild with \
             `cargo build --release --features cuda` on a machine with the CUDA toolkit, or use \
             --device cpu"
                .into(),
        )
        .into()),
        "cuda" => Device::new_cuda(0).map_err(|e| {
            UsageError(format!(
                "--device cuda: no usable CUDA GPU ({e}); use --device cpu"
            ))
            .into()
        }),
        other => Err(UsageError(format!(
            "--device `{other}` is not a device: use `cpu` or `cuda`"
        ))
        .into()),
    }
}

/// A multi-party training table (`--config` TOML, or a deployment's `[training]`) that gives
/// `noise_multiplier` and no `target_epsilon` runs all its rounds: the default target (epsilon
/// 2) applies only when the file chooses no noise itself. (`FederatedConfig` cannot tell an
/// absent field from the default, so the table is checked before it is deserialized.)
fn noise_multiplier_alone(table: Option<&toml::Table>) -> bool {
    table.is_some_and(|t| t.contains_key("noise_multiplier") && !t.contains_key("target_epsilon"))
}

fn epsilon_text(e: Option<f64>) -> String {
    e.map_or_else(|| "inf (non-private)".to_string(), |x| format!("{x:.4}"))
}

/// The last JSON line: the whole report (with `accuracy` and `epsilon` at the top level).
#[derive(Serialize)]
struct TrainJson<'a> {
    /// Where `metrics.json`, `model.json` and `model.safetensors` are.
    report_folder: &'a str,
    #[serde(flatten)]
    report: &'a CentralReport,
}

/// Runs `sotto train`.
pub fn run(args: TrainArgs, out: &Output) -> anyhow::Result<()> {
    if let Some(role) = &args.role {
        if args.pretrained.is_some() {
            return Err(UsageError(
                "--pretrained does not work with a deployment's roles (`sotto train aggregator|party`) \
                 yet: fine-tune with `sotto train --pretrained DIR` (parties and aggregator in one \
                 process) or with --central"
                    .into(),
            )
            .into());
        }
        return deploy::run(role, out);
    }
    if !args.central {
        if args.canaries.is_some() {
            return Err(UsageError("--canaries needs --central".into()).into());
        }
        return federated::run(&args, out);
    }
    for (set, flag) in [
        (args.parties.is_some(), "--parties"),
        (args.threshold.is_some(), "--threshold"),
        (args.colluders.is_some(), "--colluders"),
        (args.rounds.is_some(), "--rounds"),
        (args.round_deadline.is_some(), "--round-deadline"),
        (args.partition.is_some(), "--partition"),
        (args.plain, "--plain"),
        (args.compare_plain, "--compare-plain"),
    ] {
        if set {
            return Err(UsageError(format!(
                "{flag} is for multi-party training; drop --central"
            ))
            .into());
        }
    }
    let device = device(&args.device)?;
    let config = args.config()?;
    if config.bitfit && args.pretrained.is_none() {
        eprintln!(
            "warning: --bitfit trains only the bias terms of a randomly initialised model, which \
             learns little; BiTFiT needs a pretrained model (--pretrained DIR)"
        );
    }
    let (data, pretrained) = match &args.pretrained {
        Some(dir) => {
            let (data, model) = pretrained_data(&args, dir, &device, config.seed)?;
            (data, Some(model))
        }
        None => (args.data()?, None),
    };
    let (train, test) = (&data.train, &data.test);
    config.validate(train.len())?;
    let folder = report_folder(args.out.as_deref(), "central")?;
    let json = out.is_json();
    if !json {
        println!(
            "training {} on {} examples ({} test), {} epochs, sampling rate {}, {}",
            model_name(&config.model),
            train.len(),
            test.len(),
            config.epochs,
            config.sampling_rate,
            if config.non_private {
                "non-private".to_string()
            } else {
                match (config.target_epsilon, config.noise_multiplier) {
                    (Some(e), _) => format!("target epsilon {e} at delta {}", config.delta),
                    (None, Some(s)) => format!("noise multiplier {s}, delta {}", config.delta),
                    (None, None) => format!("delta {}", config.delta),
                }
            }
        );
    }
    let on_epoch = |e: &EpochMetrics| {
        if !json {
            println!(
                "epoch {:>3}  step {:>5}  train loss {:.4}  test accuracy {:6.2}%  epsilon {}",
                e.epoch,
                e.steps,
                e.train_loss,
                100.0 * e.test_accuracy,
                epsilon_text(e.epsilon)
            );
        }
    };
    let checkpoints = CheckpointOptions {
        every: args.checkpoint_every,
        dir: args.checkpoint_every.map(|_| folder.join("checkpoints")),
        resume: args.resume.clone(),
    };
    let (model, report) = match pretrained {
        Some(model) => train_central_model(model, &config, train, test, &checkpoints, on_epoch)?,
        None => train_central_checkpointed(&config, train, test, &device, &checkpoints, on_epoch)?,
    };
    if let Some(dir) = &args.pretrained {
        // The tokenizer travels with the model, so the folder is complete for reuse.
        std::fs::copy(dir.join("tokenizer.json"), folder.join("tokenizer.json"))
            .with_context(|| format!("cannot copy tokenizer.json into {}", folder.display()))?;
    }
    let path = folder.join("metrics.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut info = data.model_info(model.classes(), "sotto train --central");
    info.trainable = if config.bitfit {
        sotto_training::nn::Trainable::BiasOnly
    } else if model.has_lora() {
        sotto_training::nn::Trainable::Lora
    } else {
        sotto_training::nn::Trainable::All
    };
    info.privacy = match (report.epsilon, report.noise_multiplier) {
        (Some(epsilon), Some(noise_multiplier)) => Some(PrivacySpent {
            epsilon,
            delta: report.delta,
            accountant: report.accountant,
            noise_multiplier,
            sampling_rate: report.sampling_rate,
            steps: report.steps,
            guarantee: None,
        }),
        _ => None,
    };
    model
        .save(&folder, &info)
        .with_context(|| format!("cannot save the model in {}", folder.display()))?;
    let report_folder = folder.display().to_string();
    out.emit(&TrainJson { report_folder: &report_folder, report: &report }, || {
        let mut s = format!(
            "test accuracy {:.2}%, epsilon {} at delta {} ({} accountant, noise multiplier {}, {} steps)",
            100.0 * report.accuracy,
            epsilon_text(report.epsilon),
            report.delta,
            report.accountant,
            report
                .noise_multiplier
                .map_or_else(|| "-".to_string(), |s| format!("{s:.4}")),
            report.steps
        );
        if let Some(a) = &report.audit {
            s.push_str(&format!("\n{a}"));
        }
        s.push_str(&format!(
            "\nreport and model: {report_folder}/metrics.json, model.json, model.safetensors"
        ));
        s
    })
}

/// The report folder: `--out`, or `reports/<kind>-<UTC timestamp>`; created if missing.
pub(super) fn report_folder(out: Option<&std::path::Path>, kind: &str) -> anyhow::Result<PathBuf> {
    let folder = match out {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("reports").join(format!("{kind}-{}", federated::utc_stamp())),
    };
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create the report folder {}", folder.display()))?;
    Ok(folder)
}

fn model_name(m: &ModelSpec) -> String {
    match m {
        ModelSpec::Logistic => "logistic regression".into(),
        ModelSpec::Mlp { hidden } => format!("an MLP {hidden:?}"),
        ModelSpec::Transformer { dim, layers, .. } => {
            format!("a transformer (dim {dim}, {layers} layer(s))")
        }
        ModelSpec::Bert(b) => format!(
            "a BERT encoder (hidden {}, {} layer(s), {} heads{})",
            b.hidden,
            b.layers,
            b.heads,
            b.lora
                .map(|l| format!(", LoRA rank {} alpha {}", l.rank, l.alpha))
                .unwrap_or_default()
        ),
    }
}
