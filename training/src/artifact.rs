//! Trained models on disk: the weights as safetensors (`model.safetensors`, one tensor per
//! parameter under its [`crate::nn::Param::name`]) and a small JSON description
//! (`model.json`: architecture, input shape, labels, standardization and the privacy spent).
//!
//! [`Model::save`] writes both into a folder (`sotto train` uses its report folder);
//! [`Model::load`] reads them back and checks that they fit each other, naming what is wrong
//! otherwise (missing file, corrupt weights, a tensor of the wrong shape, unknown format).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sotto_dp::accounting::AccountantKind;

use crate::data::{Dataset, Standardizer};
use crate::model::{InputShape, Model, ModelSpec};
use crate::nn::Trainable;
use crate::{Error, Result};

/// File name of the weights in a model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the description in a model folder.
pub const CONFIG_FILE: &str = "model.json";
/// The `format` field of [`ModelConfig`].
pub const FORMAT: &str = "sotto-model";
/// The `version` field of [`ModelConfig`] this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The input shape as stored in `model.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SavedInput {
    /// Dense feature vectors.
    Features {
        /// Features per example.
        dim: usize,
    },
    /// Token sequences.
    Tokens {
        /// Tokens per sequence.
        seq_len: usize,
        /// Vocabulary size.
        vocab: usize,
    },
}

impl From<InputShape> for SavedInput {
    fn from(s: InputShape) -> Self {
        match s {
            InputShape::Features(dim) => SavedInput::Features { dim },
            InputShape::Tokens { seq_len, vocab } => SavedInput::Tokens { seq_len, vocab },
        }
    }
}

impl From<SavedInput> for InputShape {
    fn from(s: SavedInput) -> Self {
        match s {
            SavedInput::Features { dim } => InputShape::Features(dim),
            SavedInput::Tokens { seq_len, vocab } => InputShape::Tokens { seq_len, vocab },
        }
    }
}

/// The privacy a trained model cost: the released model is (epsilon, delta)-DP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpent {
    /// Epsilon spent by the whole run.
    pub epsilon: f64,
    /// Delta of the guarantee.
    pub delta: f64,
    /// The accountant that computed epsilon.
    pub accountant: AccountantKind,
    /// Noise standard deviation divided by the clip norm (as accounted).
    pub noise_multiplier: f64,
    /// Poisson sampling rate.
    pub sampling_rate: f64,
    /// Noised steps (rounds) taken.
    pub steps: u64,
    /// What epsilon covers, in words (multi-party: whose noise is counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guarantee: Option<String>,
}

/// What a saved model needs besides its weights and architecture.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Class names: label `k` stands for `labels[k]` (as many as the model has classes).
    pub labels: Vec<String>,
    /// The standardization applied to feature inputs before the model (fitted on the
    /// training split); `None` when inputs go in unchanged.
    #[serde(default)]
    pub standardizer: Option<Standardizer>,
    /// The privacy spent; `None` for a non-private model.
    #[serde(default)]
    pub privacy: Option<PrivacySpent>,
    /// Which parameters were trained (`bias_only` for DP-BiTFiT).
    #[serde(default)]
    pub trainable: Trainable,
    /// How the model was trained, e.g. `sotto train --central`.
    #[serde(default)]
    pub trained_by: String,
}

impl ModelInfo {
    /// Labels `"0"`, `"1"`, ... for `classes` classes.
    pub fn numbered_labels(classes: usize) -> Vec<String> {
        (0..classes).map(|k| k.to_string()).collect()
    }
}

/// The contents of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The architecture.
    pub architecture: ModelSpec,
    /// The input shape.
    pub input: SavedInput,
    /// Number of classes.
    pub classes: usize,
    /// Element type of the stored weights (`f32`).
    pub dtype: String,
    /// Number of scalar parameters.
    pub parameters: usize,
    /// Labels, standardization, privacy.
    #[serde(flatten)]
    pub info: ModelInfo,
}

fn data_err(dir: &Path, what: impl std::fmt::Display) -> Error {
    Error::Data(format!("model folder {}: {what}", dir.display()))
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that a crash never
/// leaves a half-written file under the final name.
fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write(&tmp)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::Data(format!("cannot write {}: {e}", path.display())))
}

impl Model {
    /// Writes the model into the folder `dir` (created if missing): `model.safetensors` (every
    /// parameter under its name, `f32`) and `model.json` ([`ModelConfig`] with `info`).
    ///
    /// # Errors
    /// [`Error::Data`] when the folder or a file cannot be written, or `info.labels` does not
    /// hold one name per class; [`Error::Tensor`] on device errors.
    ///
    /// ```rust
    /// use candle_core::{DType, Device};
    /// use sotto_training::artifact::ModelInfo;
    /// use sotto_training::model::{InputShape, Model, ModelSpec};
    /// let dir = std::env::temp_dir().join(format!("sotto-doc-save-{}", std::process::id()));
    /// let model = Model::new(&ModelSpec::Logistic, InputShape::Features(4), 3, DType::F32, &Device::Cpu, 7)?;
    /// let info = ModelInfo { labels: ModelInfo::numbered_labels(3), ..ModelInfo::default() };
    /// model.save(&dir, &info)?;
    /// let (loaded, loaded_info) = Model::load(&dir, &Device::Cpu)?;
    /// assert_eq!(loaded.to_flat()?, model.to_flat()?);
    /// assert_eq!(loaded_info, info);
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), sotto_training::Error>(())
    /// ```
    pub fn save(&self, dir: &Path, info: &ModelInfo) -> Result<()> {
        if info.labels.len() != self.classes() {
            return Err(Error::invalid(
                "labels",
                info.labels.len(),
                format!(
                    "a model with {} classes needs as many labels",
                    self.classes()
                ),
            ));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Data(format!("cannot create {}: {e}", dir.display())))?;
        let tensors = self
            .params()
            .params()
            .iter()
            .map(|p| Ok((p.name().to_string(), p.value().to_dtype(DType::F32)?)))
            .collect::<Result<HashMap<String, Tensor>>>()?;
        write_atomically(&dir.join(WEIGHTS_FILE), |tmp| {
            Ok(candle_core::safetensors::save(&tensors, tmp)?)
        })?;
        let config = ModelConfig {
            format: FORMAT.to_string(),
            version: FORMAT_VERSION,
            architecture: self.spec().clone(),
            input: self.input_shape().into(),
            classes: self.classes(),
            dtype: "f32".to_string(),
            parameters: self.num_params(),
            info: info.clone(),
        };
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| Error::Data(format!("cannot encode {CONFIG_FILE}: {e}")))?;
        write_atomically(&dir.join(CONFIG_FILE), |tmp| {
            std::fs::write(tmp, text)
                .map_err(|e| Error::Data(format!("cannot write {}: {e}", tmp.display())))
        })
    }

    /// Reads a model written by [`Model::save`] from the folder `dir` onto `device`.
    ///
    /// # Errors
    /// [`Error::Data`] naming the problem when `model.json` or `model.safetensors` is missing
    /// or unreadable, `model.json` is not a sotto model description of this version, the
    /// weights are corrupt, a parameter is missing, extra, of the wrong shape or not finite, or
    /// the labels or standardization do not fit the model.
    pub fn load(dir: &Path, device: &Device) -> Result<(Model, ModelInfo)> {
        let config = read_config(dir)?;
        let input: InputShape = config.input.into();
        if config.info.labels.len() != config.classes {
            return Err(data_err(
                dir,
                format!(
                    "{CONFIG_FILE} lists {} labels for {} classes",
                    config.info.labels.len(),
                    config.classes
                ),
            ));
        }
        if let Some(st) = &config.info.standardizer {
            check_standardizer(dir, st, input)?;
        }
        let model = Model::new(
            &config.architecture,
            input,
            config.classes,
            DType::F32,
            device,
            0,
        )
        .map_err(|e| data_err(dir, format!("{CONFIG_FILE} describes no valid model: {e}")))?;
        if model.num_params() != config.parameters {
            return Err(data_err(
                dir,
                format!(
                    "{CONFIG_FILE} says {} parameters, its architecture has {}",
                    config.parameters,
                    model.num_params()
                ),
            ));
        }
        let path = dir.join(WEIGHTS_FILE);
        if !path.is_file() {
            return Err(data_err(
                dir,
                format!(
                    "{WEIGHTS_FILE} is missing (a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE})"
                ),
            ));
        }
        let mut tensors = candle_core::safetensors::load(&path, device).map_err(|e| {
            data_err(
                dir,
                format!("{WEIGHTS_FILE} is not a readable safetensors file: {e}"),
            )
        })?;
        load_params(&model, &mut tensors, dir)?;
        if let Some(name) = tensors.keys().min() {
            return Err(data_err(
                dir,
                format!(
                    "{WEIGHTS_FILE} holds tensor `{name}`, which this architecture does not have"
                ),
            ));
        }
        Ok((model, config.info))
    }

    /// The predicted class of every example of `data` (its labels are ignored).
    ///
    /// # Errors
    /// As [`Model::losses`].
    pub fn predict(&self, data: &Dataset) -> Result<Vec<u32>> {
        self.check_data(data)?;
        let mut out = Vec::with_capacity(data.len());
        for chunk in (0..data.len()).collect::<Vec<_>>().chunks(512) {
            let batch = data.batch(chunk, self.device())?;
            let logits = self.forward(&mut crate::nn::Tape::plain(), &batch.inputs)?;
            out.extend(logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?);
        }
        Ok(out)
    }
}

/// Reads and checks `model.json` of a model folder.
///
/// # Errors
/// As [`Model::load`].
pub fn read_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join(CONFIG_FILE);
    if !dir.is_dir() {
        return Err(data_err(
            dir,
            "is not a folder (give the report folder of `sotto train`, holding model.json and model.safetensors)",
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        data_err(
            dir,
            format!("cannot read {CONFIG_FILE}: {e} (a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE})"),
        )
    })?;
    let config: ModelConfig = serde_json::from_str(&text).map_err(|e| {
        data_err(
            dir,
            format!("{CONFIG_FILE} is not a sotto model description: {e}"),
        )
    })?;
    if config.format != FORMAT {
        return Err(data_err(
            dir,
            format!(
                "{CONFIG_FILE} has format `{}`, expected `{FORMAT}`",
                config.format
            ),
        ));
    }
    if config.version != FORMAT_VERSION {
        return Err(data_err(
            dir,
            format!(
                "{CONFIG_FILE} has version {}, this build reads version {FORMAT_VERSION}",
                config.version
            ),
        ));
    }
    if config.dtype != "f32" {
        return Err(data_err(
            dir,
            format!("{CONFIG_FILE} has dtype `{}`, expected `f32`", config.dtype),
        ));
    }
    Ok(config)
}

fn check_standardizer(dir: &Path, st: &Standardizer, input: InputShape) -> Result<()> {
    let InputShape::Features(dim) = input else {
        return Err(data_err(dir, "a token model cannot have a standardizer"));
    };
    if st.mean().len() != dim || st.std().len() != dim {
        return Err(data_err(
            dir,
            format!(
                "the standardizer has {} means and {} deviations for {dim} features",
                st.mean().len(),
                st.std().len()
            ),
        ));
    }
    if st.mean().iter().any(|m| !m.is_finite())
        || st.std().iter().any(|s| !(s.is_finite() && *s > 0.0))
    {
        return Err(data_err(
            dir,
            "the standardizer needs finite means and positive finite deviations",
        ));
    }
    Ok(())
}

/// Moves every parameter's tensor out of `tensors` into `model`.
pub(crate) fn load_params(
    model: &Model,
    tensors: &mut HashMap<String, Tensor>,
    dir: &Path,
) -> Result<()> {
    for p in model.params().params() {
        let t = tensors.remove(p.name()).ok_or_else(|| {
            data_err(
                dir,
                format!("{WEIGHTS_FILE} lacks the parameter `{}`", p.name()),
            )
        })?;
        if t.dims() != p.value().dims() {
            return Err(data_err(
                dir,
                format!(
                    "parameter `{}` has shape {:?} in {WEIGHTS_FILE}, the architecture needs {:?}",
                    p.name(),
                    t.dims(),
                    p.value().dims()
                ),
            ));
        }
        let t = t.to_dtype(p.value().dtype())?;
        let finite = t
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            return Err(data_err(
                dir,
                format!("parameter `{}` holds non-finite values", p.name()),
            ));
        }
        p.var().set(&t)?;
    }
    Ok(())
}
