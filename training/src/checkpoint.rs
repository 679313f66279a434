//! Checkpoints of a central training run: everything needed to continue it as if it had never
//! stopped, including the privacy accounting.
//!
//! A checkpoint is a folder `epoch-NNNN` holding `checkpoint.json` ([`CentralCheckpoint`]: the
//! settings, steps and epochs done, the noise multiplier and epsilon so far), the model
//! (`model.json`, `model.safetensors`, as [`Model::save`] writes them) and the optimizer's
//! moments (`optimizer.safetensors`).
//!
//! # Privacy
//! The accountant's state is the number of noised steps at a fixed sampling rate and noise
//! multiplier, so a resumed run's epsilon after `k` steps is exactly an unbroken run's. A
//! checkpoint holds the model and optimizer state, which are as private as the released model
//! (post-processing of noised sums); it holds no training data.
//!
//! # Security
//! The random generator of sampling and noise is saved only when `reproducible_noise` is set
//! (its seed is then public anyway). Otherwise a resumed run draws fresh randomness from the
//! operating system: writing the generator's state to disk would let anyone holding the
//! checkpoint recompute, and subtract, the noise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::artifact::ModelInfo;
use crate::central::{CentralConfig, EpochMetrics};
use crate::model::Model;
use crate::optim::Optimizer;
use crate::{Error, Result};

/// File name of the run state in a checkpoint folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";
/// File name of the optimizer state in a checkpoint folder.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const FORMAT: &str = "sotto-checkpoint";
const VERSION: u32 = 1;

/// When and where to write checkpoints, and where to resume from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointOptions {
    /// Write a checkpoint after every `every` epochs (and after the last one).
    pub every: Option<usize>,
    /// The folder the checkpoints go to (one subfolder `epoch-NNNN` each).
    pub dir: Option<PathBuf>,
    /// A checkpoint folder to continue from.
    pub resume: Option<PathBuf>,
}

/// The run state in `checkpoint.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CentralCheckpoint {
    /// Always `sotto-checkpoint`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// The settings of the run (a resumed run must use the same).
    pub config: CentralConfig,
    /// Epochs completed.
    pub epoch: usize,
    /// Noised (or, non-private, plain) steps taken.
    pub steps: u64,
    /// The noise multiplier of every step (`None` when non-private).
    pub noise_multiplier: Option<f64>,
    /// Epsilon spent so far (`None` when non-private).
    pub epsilon: Option<f64>,
    /// Per-epoch progress so far.
    pub epochs: Vec<EpochMetrics>,
    /// Position of the (seeded) random generator, with `reproducible_noise` only.
    #[serde(default)]
    pub rng_word_pos: Option<String>,
}

/// The folder of the checkpoint after `epoch` epochs.
pub fn epoch_folder(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{epoch:04}"))
}

fn err(dir: &Path, what: impl std::fmt::Display) -> Error {
    Error::Data(format!("checkpoint {}: {what}", dir.display()))
}

pub(crate) fn save(
    dir: &Path,
    state: &CentralCheckpoint,
    model: &Model,
    opt: &Optimizer,
) -> Result<()> {
    save_model_and_optimizer(dir, model, opt, "checkpoint of sotto train --central")?;
    write_state(dir, state)
}

/// Writes the run state `checkpoint.json` of a checkpoint folder.
fn write_state<T: Serialize>(dir: &Path, state: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| err(dir, format!("cannot encode {CHECKPOINT_FILE}: {e}")))?;
    std::fs::write(dir.join(CHECKPOINT_FILE), text)
        .map_err(|e| err(dir, format!("cannot write {CHECKPOINT_FILE}: {e}")))
}

/// Reads the optimizer's first and second moments of `n` trained parameters.
fn read_moments(dir: &Path, n: usize, device: &Device) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    let mut tensors = candle_core::safetensors::load(dir.join(OPTIMIZER_FILE), device)
        .map_err(|e| err(dir, format!("cannot read {OPTIMIZER_FILE}: {e}")))?;
    let mut take = |prefix: &str| -> Result<Vec<Tensor>> {
        (0..n)
            .map(|i| {
                tensors
                    .remove(&format!("{prefix}.{i}"))
                    .ok_or_else(|| err(dir, format!("{OPTIMIZER_FILE} lacks `{prefix}.{i}`")))
            })
            .collect()
    };
    let m = take("m")?;
    let v = take("v")?;
    Ok((m, v))
}

/// Reads `checkpoint.json` of a checkpoint folder.
///
/// # Errors
/// [`Error::Data`] when it is missing, unreadable or not a sotto checkpoint.
pub fn read_state(dir: &Path) -> Result<CentralCheckpoint> {
    let text = std::fs::read_to_string(dir.join(CHECKPOINT_FILE)).map_err(|e| {
        err(
            dir,
            format!("cannot read {CHECKPOINT_FILE}: {e} (give a folder `epoch-NNNN` written by --checkpoint-every)"),
        )
    })?;
    let state: CentralCheckpoint = serde_json::from_str(&text).map_err(|e| {
        err(
            dir,
            format!("{CHECKPOINT_FILE} is not a sotto checkpoint: {e}"),
        )
    })?;
    if state.format != FORMAT || state.version != VERSION {
        return Err(err(
            dir,
            format!(
                "format {} version {}, expected {FORMAT} version {VERSION}",
                state.format, state.version
            ),
        ));
    }
    Ok(state)
}

/// The first setting in which two configurations differ.
fn first_difference<T: Serialize>(a: &T, b: &T) -> Option<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return Some("(settings not comparable)".into());
    };
    a.iter()
        .find(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
}

/// Loads a checkpoint into `model` and `opt` (built from `config`), after checking that it was
/// written by a run with the same settings.
pub(crate) fn load(
    dir: &Path,
    config: &CentralConfig,
    model: &Model,
    opt: &mut Optimizer,
    device: &Device,
) -> Result<CentralCheckpoint> {
    let state = read_state(dir)?;
    if let Some(field) = first_difference(&state.config, config) {
        return Err(Error::invalid(
            "resume",
            dir.display(),
            format!(
                "the checkpoint's setting `{field}` differs from this run's; resume with the settings it was written with"
            ),
        ));
    }
    let (saved, _) = Model::load(dir, device)?;
    if saved.spec() != model.spec()
        || saved.input_shape() != model.input_shape()
        || saved.classes() != model.classes()
    {
        return Err(err(dir, "its model does not fit this run's data"));
    }
    model.load_flat(&saved.to_flat()?)?;
    let (_, m0, _) = opt.state();
    let (m, v) = read_moments(dir, m0.len(), device)?;
    opt.restore(state.steps, m, v).map_err(|e| err(dir, e))?;
    Ok(state)
}

/// The run state of a multi-party checkpoint (`checkpoint.json` in a folder `round-NNNN`),
/// written by the aggregator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederatedCheckpoint {
    /// Always `sotto-federated-checkpoint`.
    pub format: String,
    /// Format version (1).
    pub version: u32,
    /// The settings of the run (a resumed run must use the same).
    pub config: crate::federated::FederatedConfig,
    /// Rounds completed.
    pub rounds_done: u64,
    /// Epsilon spent so far.
    pub epsilon: f64,
    /// Per-round metrics so far.
    pub metrics: Vec<crate::federated::RoundMetrics>,
}

/// The folder of the multi-party checkpoint after `rounds` rounds.
pub fn round_folder(dir: &Path, rounds: u64) -> PathBuf {
    dir.join(format!("round-{rounds:04}"))
}

fn save_model_and_optimizer(dir: &Path, model: &Model, opt: &Optimizer, by: &str) -> Result<()> {
    let info = ModelInfo {
        labels: ModelInfo::numbered_labels(model.classes()),
        trained_by: by.into(),
        ..ModelInfo::default()
    };
    model.save(dir, &info)?;
    let (_, m, v) = opt.state();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (i, t) in m.iter().enumerate() {
        tensors.insert(format!("m.{i}"), t.clone());
    }
    for (i, t) in v.iter().enumerate() {
        tensors.insert(format!("v.{i}"), t.clone());
    }
    candle_core::safetensors::save(&tensors, dir.join(OPTIMIZER_FILE))?;
    Ok(())
}

/// Writes a multi-party checkpoint into `dir`.
pub(crate) fn save_federated(
    dir: &Path,
    state: &FederatedCheckpoint,
    model: &Model,
    opt: &Optimizer,
) -> Result<()> {
    save_model_and_optimizer(dir, model, opt, "checkpoint of sotto train (multi-party)")?;
    write_state(dir, state)
}

/// A loaded multi-party checkpoint: its state, and the optimizer's steps and moments.
pub(crate) type FederatedResume = (FederatedCheckpoint, (u64, Vec<Tensor>, Vec<Tensor>));

/// Loads a multi-party checkpoint into `model` (built from `config`), after checking that it
/// was written by a run with the same settings; returns the state and the optimizer state.
pub(crate) fn load_federated(
    dir: &Path,
    config: &crate::federated::FederatedConfig,
    model: &Model,
    device: &Device,
) -> Result<FederatedResume> {
    let text = std::fs::read_to_string(dir.join(CHECKPOINT_FILE)).map_err(|e| {
        err(
            dir,
            format!("cannot read {CHECKPOINT_FILE}: {e} (give a folder `round-NNNN` written by --checkpoint-every)"),
        )
    })?;
    let state: FederatedCheckpoint = serde_json::from_str(&text).map_err(|e| {
        err(
            dir,
            format!("{CHECKPOINT_FILE} is not a multi-party sotto checkpoint: {e}"),
        )
    })?;
    if state.format != "sotto-federated-checkpoint" || state.version != VERSION {
        return Err(err(dir, "not a multi-party sotto checkpoint of version 1"));
    }
    if let Some(field) = first_difference(&state.config, config) {
        return Err(Error::invalid(
            "resume",
            dir.display(),
            format!(
                "the checkpoint's setting `{field}` differs from this run's; resume with the settings it was written with"
            ),
        ));
    }
    if state.rounds_done >= config.rounds {
        return Err(Error::invalid(
            "resume",
            dir.display(),
            format!(
                "the checkpoint already completed all {} rounds",
                config.rounds
            ),
        ));
    }
    let (saved, _) = Model::load(dir, device)?;
    if saved.spec() != model.spec() || saved.num_params() != model.num_params() {
        return Err(err(dir, "its model does not fit this run's data"));
    }
    model.load_flat(&saved.to_flat()?)?;
    let n = model.params().trainable_indices(config.trainable()).len();
    let (m, v) = read_moments(dir, n, device)?;
    let steps = state.rounds_done;
    Ok((state, (steps, m, v)))
}
