//! Central DP training of one party's model: Poisson sampling, per-sample clipping, exact
//! discrete Gaussian noise, DP-SGD or DP-Adam, RDP or PLD accounting, and a membership-inference
//! audit of the result.

use candle_core::{DType, Device};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use sotto_dp::accounting::{AccountantKind, dp_sgd_epsilon, dp_sgd_noise_multiplier};

use crate::audit::{Canaries, CanaryConfig, MiaReport, audit_model};
use crate::checkpoint::{CentralCheckpoint, CheckpointOptions, epoch_folder};
use crate::clipping::{ClipMode, Clipping, NormStrategy, flatten};
use crate::data::{Dataset, shuffle};
use crate::model::{InputShape, Model, ModelSpec};
use crate::nn::Trainable;
use crate::noise::GradientNoise;
use crate::optim::{Optimizer, OptimizerKind};
use crate::{Error, Result};

/// The seed of the fixed 80/20 train/test split of the digits data.
pub const DIGITS_SPLIT_SEED: u64 = 2024;

/// Settings of a central training run. Every field has a default (see [`Default`]); the
/// defaults reach at least 90% test accuracy on digits at epsilon = 2 and 85% at epsilon = 1
/// (delta = 1e-5), see `docs/training.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CentralConfig {
    /// The model.
    pub model: ModelSpec,
    /// Standard or automatic clipping.
    pub clipping: ClipMode,
    /// DP-BiTFiT: train only bias terms.
    pub bitfit: bool,
    /// DP-SGD (with momentum) or DP-Adam.
    pub optimizer: OptimizerKind,
    /// Passes over the data; each has `ceil(1 / sampling_rate)` steps.
    pub epochs: usize,
    /// Poisson sampling rate `q`: each example joins each batch with probability `q`.
    pub sampling_rate: f64,
    /// Learning rate.
    pub learning_rate: f64,
    /// Clip norm `R` (L2 sensitivity of each clipped sum).
    pub clip_norm: f64,
    /// `gamma` of automatic clipping.
    pub gamma: f64,
    /// Noise standard deviation divided by `R`. Ignored when `target_epsilon` is set.
    pub noise_multiplier: Option<f64>,
    /// Choose the smallest noise multiplier whose final epsilon is at most this.
    pub target_epsilon: Option<f64>,
    /// `delta` of the (epsilon, delta) guarantee; must be below `1 / n`.
    pub delta: f64,
    /// RDP or PLD accounting.
    pub accountant: AccountantKind,
    /// Train without clipping or noise (a non-private baseline; epsilon is infinite).
    pub non_private: bool,
    /// Seed of the model initialization (and, with `reproducible_noise`, of sampling and noise).
    pub seed: u64,
    /// Draw batches and noise from a generator seeded by `seed` instead of the OS.
    pub reproducible_noise: bool,
    /// Run the membership-inference audit after training.
    pub audit: bool,
    /// With `audit`: the one-run canary audit (Steinke, Nasr and Jagielski 2023). Random
    /// canaries join the training data (each with probability 1/2) and the report gets an
    /// empirical epsilon lower bound ([`crate::audit::CanaryAudit`]). The canaries change the
    /// model: such runs are for measuring privacy, not for release. `None`: no canaries.
    pub canaries: Option<CanaryConfig>,
    /// DANGER, a testing aid only: skip the noise while still reporting the accounted
    /// epsilon, i.e. a deliberately broken DP run that the canary audit must catch. It cannot
    /// be set from a configuration file or the command line.
    #[doc(hidden)]
    #[serde(skip)]
    pub danger_skip_noise: bool,
}

impl Default for CentralConfig {
    fn default() -> Self {
        CentralConfig {
            model: ModelSpec::Logistic,
            clipping: ClipMode::Automatic,
            bitfit: false,
            optimizer: OptimizerKind::default(),
            epochs: 20,
            sampling_rate: 0.2,
            learning_rate: 0.05,
            clip_norm: 1.0,
            gamma: 0.01,
            noise_multiplier: None,
            target_epsilon: Some(2.0),
            delta: 1e-5,
            accountant: AccountantKind::Rdp,
            non_private: false,
            seed: 0,
            reproducible_noise: false,
            audit: true,
            canaries: None,
            danger_skip_noise: false,
        }
    }
}

/// Progress after one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Steps taken so far.
    pub steps: u64,
    /// Mean training loss over the epoch's batches (not a private release; for display).
    pub train_loss: f64,
    /// Accuracy on the test data.
    pub test_accuracy: f64,
    /// Epsilon spent so far (`None` when non-private).
    pub epsilon: Option<f64>,
}

/// The result of a central training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CentralReport {
    /// Test accuracy of the final model.
    pub accuracy: f64,
    /// Training accuracy of the final model.
    pub train_accuracy: f64,
    /// Mean test loss of the final model.
    pub test_loss: f64,
    /// Final epsilon (`None` when non-private, i.e. infinite).
    pub epsilon: Option<f64>,
    /// The delta of the guarantee.
    pub delta: f64,
    /// The noise multiplier used (`None` when non-private).
    pub noise_multiplier: Option<f64>,
    /// Poisson sampling rate.
    pub sampling_rate: f64,
    /// Total steps.
    pub steps: u64,
    /// The accountant.
    pub accountant: AccountantKind,
    /// Per-epoch progress.
    pub epochs: Vec<EpochMetrics>,
    /// Membership-inference audit (members: the training data, without canaries; non-members:
    /// test data), with the canary audit when the run had canaries.
    pub audit: Option<MiaReport>,
}

impl CentralConfig {
    /// Steps per epoch: `ceil(1 / sampling_rate)`.
    pub fn steps_per_epoch(&self) -> u64 {
        (1.0 / self.sampling_rate).ceil().max(1.0) as u64
    }

    /// Checks the settings against a training set of `n` examples.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first bad field.
    pub fn validate(&self, n: usize) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::invalid("epochs", 0, "must be at least 1"));
        }
        sotto_dp::error::check_open_unit("sampling_rate", self.sampling_rate)?;
        sotto_dp::error::check_positive("learning_rate", self.learning_rate)?;
        if let Some(c) = &self.canaries {
            c.validate()?;
        }
        if self.non_private {
            return Ok(());
        }
        sotto_dp::error::check_positive("clip_norm", self.clip_norm)?;
        sotto_dp::error::check_positive("gamma", self.gamma)?;
        sotto_dp::error::check_open_unit("delta", self.delta)?;
        if n > 0 && self.delta >= 1.0 / n as f64 {
            return Err(Error::invalid(
                "delta",
                self.delta,
                format!(
                    "must be below 1/n = {:.3e} for {n} training examples",
                    1.0 / n as f64
                ),
            ));
        }
        match (self.target_epsilon, self.noise_multiplier) {
            (Some(e), _) => {
                sotto_dp::error::check_positive("target_epsilon", e)?;
            }
            (None, Some(s)) => {
                sotto_dp::error::check_positive("noise_multiplier", s)?;
            }
            (None, None) => {
                return Err(Error::invalid(
                    "noise_multiplier",
                    "none",
                    "set noise_multiplier or target_epsilon (or non_private)",
                ));
            }
        }
        Ok(())
    }

    /// The noise multiplier this run uses: the configured one, or the smallest one meeting
    /// `target_epsilon` after all steps. `None` when non-private.
    ///
    /// # Errors
    /// As [`CentralConfig::validate`], or [`Error::Dp`] when no noise multiplier meets the
    /// target.
    pub fn resolve_noise_multiplier(&self, n: usize) -> Result<Option<f64>> {
        self.validate(n)?;
        if self.non_private {
            return Ok(None);
        }
        let steps = self.epochs as u64 * self.steps_per_epoch();
        Ok(Some(match (self.target_epsilon, self.noise_multiplier) {
            (Some(e), _) => {
                dp_sgd_noise_multiplier(self.sampling_rate, steps, e, self.delta, self.accountant)?
            }
            (None, Some(s)) => s,
            (None, None) => return Err(Error::invalid("noise_multiplier", "none", "missing")),
        }))
    }
}

/// An exact Bernoulli(q) from 53 random bits, `q` rounded down to a multiple of 2^-53 (the
/// realized sampling rate never exceeds the accounted one).
pub(crate) fn poisson_sample<R: RngCore + ?Sized>(rng: &mut R, n: usize, q: f64) -> Vec<usize> {
    let threshold = (q * (1u64 << 53) as f64).floor() as u64;
    (0..n)
        .filter(|_| (rng.next_u64() >> 11) < threshold)
        .collect()
}

/// Trains `config.model` on `train` with DP and evaluates it on `test`. `on_epoch` is called
/// after every epoch. Returns the trained model and the report.
///
/// # Privacy
/// With `non_private = false`, the sequence of models is (epsilon, delta)-DP with respect to
/// adding or removing one example of `train`, with epsilon as reported (an upper bound from
/// `sotto_dp`'s accountant for the Poisson-subsampled Gaussian mechanism with the run's
/// sampling rate, noise multiplier and number of steps). Batches are Poisson samples (exact
/// Bernoulli from random bits), gradients are clipped per sample (sensitivity `clip_norm`), the
/// clipped sum is noised by [`GradientNoise`] (exact discrete Gaussian on a power-of-two grid)
/// and divided by the expected batch size `q n`, never the realized one. The per-epoch
/// `train_loss`, the test metrics and the audit are computed without noise: they are for the
/// data owner, not for release.
///
/// # Security
/// Unless `reproducible_noise` is set, sampling and noise come from a ChaCha20 generator seeded
/// by the operating system. With `reproducible_noise` they are predictable from `seed`: for
/// experiments only, never for real data.
///
/// # Errors
/// [`Error::InvalidParameter`] for bad settings, [`Error::Data`] when the data do not fit the
/// model, [`Error::Dp`] when the accountant fails or no noise meets the target.
pub fn train_central(
    config: &CentralConfig,
    train: &Dataset,
    test: &Dataset,
    on_epoch: impl FnMut(&EpochMetrics),
) -> Result<(Model, CentralReport)> {
    train_central_on(config, train, test, &Device::Cpu, on_epoch)
}

/// [`train_central`] on a given device (e.g. `Device::new_cuda(0)?` with the `cuda` feature).
///
/// # Privacy
/// As [`train_central`].
///
/// # Errors
/// As [`train_central`], or [`Error::Tensor`] when the device fails.
pub fn train_central_on(
    config: &CentralConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    on_epoch: impl FnMut(&EpochMetrics),
) -> Result<(Model, CentralReport)> {
    train_central_checkpointed(
        config,
        train,
        test,
        device,
        &CheckpointOptions::default(),
        on_epoch,
    )
}

/// [`train_central_on`] writing a checkpoint every `checkpoints.every` epochs into
/// `checkpoints.dir` (a folder `epoch-NNNN` each, see [`crate::checkpoint`]), or continuing
/// from the checkpoint folder `checkpoints.resume`. A resumed run ends with the same epsilon
/// as an unbroken one and, with `reproducible_noise`, with the same model.
///
/// # Privacy
/// As [`train_central`]: the accounting covers every step, before and after the resume.
///
/// # Security
/// See [`crate::checkpoint`]: the noise generator is saved only with `reproducible_noise`.
///
/// # Errors
/// As [`train_central`]; [`Error::InvalidParameter`] when the checkpoint was written with
/// other settings (naming the first), [`Error::Data`] when it is missing or corrupt or a
/// checkpoint cannot be written.
///
/// ```rust
/// use candle_core::Device;
/// use sotto_training::central::{train_central_checkpointed, CentralConfig};
/// use sotto_training::checkpoint::{CheckpointOptions, epoch_folder};
/// let dir = std::env::temp_dir().join(format!("sotto-doc-ckpt-{}", std::process::id()));
/// let (train, test) = sotto_training::data::digits_split(1)?;
/// let config = CentralConfig { epochs: 2, audit: false, ..CentralConfig::default() };
/// let every = CheckpointOptions { every: Some(1), dir: Some(dir.clone()), resume: None };
/// let (_, full) = train_central_checkpointed(&config, &train, &test, &Device::Cpu, &every, |_| {})?;
/// let resume = CheckpointOptions { resume: Some(epoch_folder(&dir, 1)), ..CheckpointOptions::default() };
/// let (_, resumed) = train_central_checkpointed(&config, &train, &test, &Device::Cpu, &resume, |_| {})?;
/// assert_eq!(resumed.epsilon, full.epsilon);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), sotto_training::Error>(())
/// ```
pub fn train_central_checkpointed(
    config: &CentralConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
    checkpoints: &CheckpointOptions,
    on_epoch: impl FnMut(&EpochMetrics),
) -> Result<(Model, CentralReport)> {
    if checkpoints.every.is_some() != checkpoints.dir.is_some() {
        return Err(Error::invalid(
            "checkpoint_every",
            format!("{:?}", checkpoints.every),
            "needs a checkpoint folder, and a folder needs an interval",
        ));
    }
    let classes = train.num_classes().max(test.num_classes()).max(2);
    let model = Model::new(
        &config.model,
        InputShape::of(train),
        classes,
        DType::F32,
        device,
        config.seed,
    )?;
    train_central_model(model, config, train, test, checkpoints, on_epoch)
}

/// [`train_central_checkpointed`] starting from a given model (e.g. a pretrained encoder from
/// [`crate::bert::load_pretrained`]) instead of a fresh one; `config.model` is ignored and the
/// model's own device is used.
///
/// # Privacy
/// As [`train_central`]; the starting model must not depend on `train` (a public pretrained
/// model, or one trained on other data).
///
/// # Errors
/// As [`train_central_checkpointed`].
pub fn train_central_model(
    model: Model,
    config: &CentralConfig,
    train: &Dataset,
    test: &Dataset,
    checkpoints: &CheckpointOptions,
    mut on_epoch: impl FnMut(&EpochMetrics),
) -> Result<(Model, CentralReport)> {
    // The canary audit trains on the data plus the included canaries; `members` are the
    // caller's data only.
    let members = train;
    let canaries = match (&config.canaries, config.audit) {
        (Some(c), true) if !train.is_empty() => Some(Canaries::generate(c, train)?),
        _ => None,
    };
    let with_canaries = match &canaries {
        Some(c) => Some(c.insert_into(train)?),
        None => None,
    };
    let train = with_canaries.as_ref().unwrap_or(train);
    if checkpoints.every == Some(0) {
        return Err(Error::invalid("checkpoint_every", 0, "must be at least 1"));
    }
    let n = train.len();
    if n == 0 || test.is_empty() {
        return Err(Error::Data(
            "training and test data must not be empty".into(),
        ));
    }
    let sigma = config.resolve_noise_multiplier(n)?;
    let device = model.device().clone();
    model.check_data(train)?;
    model.check_data(test)?;
    let canary_losses_before = match &canaries {
        Some(c) => Some(c.losses(&model)?),
        None => None,
    };
    let trainable = if config.bitfit {
        Trainable::BiasOnly
    } else if model.has_lora() {
        Trainable::Lora
    } else {
        Trainable::All
    };
    let clipping = Clipping {
        mode: config.clipping,
        clip_norm: config.clip_norm,
        gamma: config.gamma,
        trainable,
        strategy: NormStrategy::Auto,
    };
    let mut opt = Optimizer::new(config.optimizer, config.learning_rate, trainable, &model)?;
    let noise = match sigma {
        // Poisson batches hold at most all `n` records: the float error is charged for that.
        Some(s) => Some(GradientNoise::for_clipped_sums(
            s,
            config.clip_norm,
            model.trainable_len(trainable),
            n,
            model.rows_per_sample(),
        )?),
        None => None,
    };
    let mut rng = if config.reproducible_noise {
        sotto_dp::rng::seeded_rng(config.seed ^ 0x5eed_0fb4_7c4e)
    } else {
        sotto_dp::rng::os_rng()?
    };
    let q = config.sampling_rate;
    let spe = config.steps_per_epoch();
    let expected_batch = q * n as f64;
    let mut steps = 0u64;
    let mut epochs = Vec::with_capacity(config.epochs);
    let mut first = 1;
    if let Some(dir) = &checkpoints.resume {
        let state = crate::checkpoint::load(dir, config, &model, &mut opt, &device)?;
        if state.noise_multiplier != sigma {
            return Err(Error::Data(format!(
                "checkpoint {}: noise multiplier {:?}, this run resolves {sigma:?}",
                dir.display(),
                state.noise_multiplier
            )));
        }
        if state.epoch >= config.epochs {
            return Err(Error::invalid(
                "resume",
                dir.display(),
                format!(
                    "the checkpoint already completed all {} epochs",
                    config.epochs
                ),
            ));
        }
        if let Some(pos) = &state.rng_word_pos {
            let pos: u128 = pos.parse().map_err(|_| {
                Error::Data(format!(
                    "checkpoint {}: bad generator position",
                    dir.display()
                ))
            })?;
            rng.set_word_pos(pos);
        }
        steps = state.steps;
        first = state.epoch + 1;
        epochs = state.epochs;
    }
    for epoch in first..=config.epochs {
        let mut loss_sum = 0.0;
        let mut seen = 0usize;
        if let Some(noise) = &noise {
            for _ in 0..spe {
                let idx = poisson_sample(&mut rng, n, q);
                let batch = train.batch(&idx, &device)?;
                let g = model.clipped_gradients(&batch, &clipping)?;
                loss_sum += g.loss_sum;
                seen += idx.len();
                let mut sum = flatten(&g.grads)?;
                drop(g);
                if !config.danger_skip_noise {
                    noise.privatize_in_place(&mut sum, &mut rng)?;
                }
                opt.apply_sum(&model, &sum, expected_batch)?;
                steps += 1;
            }
        } else {
            let mut order: Vec<usize> = (0..n).collect();
            shuffle(&mut order, &mut rng);
            let size = (expected_batch.round() as usize).max(1);
            for chunk in order.chunks(size) {
                let batch = train.batch(chunk, &device)?;
                let (loss, grads) = model.mean_gradient(&batch, trainable)?;
                loss_sum += loss * chunk.len() as f64;
                seen += chunk.len();
                opt.step(&model, &grads)?;
                steps += 1;
            }
        }
        let epsilon = match sigma {
            Some(s) => Some(dp_sgd_epsilon(
                q,
                s,
                steps,
                config.delta,
                config.accountant,
            )?),
            None => None,
        };
        let m = EpochMetrics {
            epoch,
            steps,
            train_loss: if seen > 0 {
                loss_sum / seen as f64
            } else {
                0.0
            },
            test_accuracy: model.accuracy(test)?,
            epsilon,
        };
        on_epoch(&m);
        let epsilon = m.epsilon;
        epochs.push(m);
        if let (Some(every), Some(dir)) = (checkpoints.every, &checkpoints.dir)
            && (epoch % every == 0 || epoch == config.epochs)
        {
            let state = CentralCheckpoint {
                format: "sotto-checkpoint".into(),
                version: 1,
                config: config.clone(),
                epoch,
                steps,
                noise_multiplier: sigma,
                epsilon,
                epochs: epochs.clone(),
                rng_word_pos: config
                    .reproducible_noise
                    .then(|| rng.get_word_pos().to_string()),
            };
            crate::checkpoint::save(&epoch_folder(dir, epoch), &state, &model, &opt)?;
        }
    }
    let test_losses = model.losses(test)?;
    let epsilon = epochs.last().and_then(|e| e.epsilon);
    let audit = if config.audit {
        let mut a = audit_model(&model, members, test)?;
        if let (Some(c), Some(before)) = (&canaries, &canary_losses_before) {
            let after = c.losses(&model)?;
            a.canary_audit = Some(c.audit(before, &after, config.delta, epsilon)?);
        }
        Some(a)
    } else {
        None
    };
    let report = CentralReport {
        accuracy: model.accuracy(test)?,
        train_accuracy: model.accuracy(members)?,
        test_loss: test_losses.iter().sum::<f64>() / test_losses.len() as f64,
        epsilon,
        delta: config.delta,
        noise_multiplier: sigma,
        sampling_rate: q,
        steps,
        accountant: config.accountant,
        epochs,
        audit,
    };
    Ok((model, report))
}

/// [`train_central`] on the vendored digits data: the fixed 80/20 split
/// ([`DIGITS_SPLIT_SEED`]), standardized with training statistics.
///
/// # Privacy
/// As [`train_central`]; the standardization statistics come from the training split without
/// noise (see [`crate::data::Standardizer`]).
///
/// # Errors
/// As [`train_central`].
///
/// ```rust
/// use sotto_training::central::{train_central_digits, CentralConfig};
/// let config = CentralConfig { target_epsilon: Some(2.0), epochs: 3, ..CentralConfig::default() };
/// let report = train_central_digits(&config, |e| println!("epoch {} acc {:.3}", e.epoch, e.test_accuracy))?;
/// assert!(report.epsilon.unwrap() <= 2.0);
/// # Ok::<(), sotto_training::Error>(())
/// ```
pub fn train_central_digits(
    config: &CentralConfig,
    on_epoch: impl FnMut(&EpochMetrics),
) -> Result<CentralReport> {
    let (train, test) = crate::data::digits_split(DIGITS_SPLIT_SEED)?;
    Ok(train_central(config, &train, &test, on_epoch)?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statistical test, significance ~1e-6 (5 standard deviations): the realized inclusion
    /// rate of Poisson sampling matches q.
    #[test]
    fn poisson_sampling_has_rate_q() {
        let mut rng = sotto_dp::rng::seeded_rng(5);
        let n = 200_000;
        for q in [0.01, 0.2, 0.5] {
            let k = poisson_sample(&mut rng, n, q).len() as f64;
            let sd = (n as f64 * q * (1.0 - q)).sqrt();
            assert!((k - n as f64 * q).abs() < 5.0 * sd, "q = {q}: {k}");
        }
    }

    #[test]
    fn steps_per_epoch_is_ceil_of_inverse_rate() {
        let c = |q| CentralConfig {
            sampling_rate: q,
            ..CentralConfig::default()
        };
        assert_eq!(c(0.2).steps_per_epoch(), 5);
        assert_eq!(c(0.3).steps_per_epoch(), 4);
        assert_eq!(c(0.05).steps_per_epoch(), 20);
    }
}
