//! Per-sample gradient clipping in one backward pass (book-keeping, Bu et al. 2023).
//!
//! For a linear layer with input activations `a` `(B, T, d)` and output gradients `g`
//! `(B, T, p)` (read from the layer's zero probe variable), sample `i`'s weight gradient is
//! `g_i^T a_i` and its bias gradient `sum_t g_i,t`. The squared Frobenius norm of `g_i^T a_i`
//! is computed either from Gram matrices, `<a_i a_i^T, g_i g_i^T>` (the *ghost norm*, cost
//! ~ `2 B T^2 (p + d)`), or by materializing `g_i^T a_i` (cost ~ `B T p d`), whichever is
//! cheaper: ghost when `2 T^2 <= p d`. With `T = 1` the ghost norm is `|a_i|^2 |g_i|^2`. The
//! clipped sum `sum_i c_i g_i^T a_i` is one matmul per layer, `(c * g)^T a` over all `B`
//! rows, when `T = 1`; with `T > 1` each record's product `g_i^T a_i` is one GEMM of its own
//! (in the model's dtype, the same shape whatever the batch) and the records are summed in
//! f64; both are accumulated in f64 with the factors computed from certified upper bounds on the
//! norms, so that its floating-point error has a proved bound ([`clipped_sum_error_bound`]).
//! Embeddings use the same two routes with the one-hot token matrix in place of `a` (ghost:
//! `<[id_s = id_t], g_i g_i^T>`; sum: an index-add), and layer norms materialize their small
//! per-sample scale and shift gradients directly.

use std::collections::HashMap;

use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::Batch;
use crate::model::Model;
use crate::nn::{Entry, Tape, Trainable};
use crate::{Error, Result};

/// How each sample's gradient is scaled before summing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipMode {
    /// Standard clipping (Abadi et al. 2016): `g_i * min(1, R / |g_i|)`.
    Standard,
    /// Automatic clipping (Bu et al. 2022): `g_i * R / (|g_i| + gamma)`, a normalization with
    /// no threshold to tune; every scaled gradient has norm below `R`.
    #[default]
    Automatic,
}

/// How per-sample norms of weight matrices are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormStrategy {
    /// Per layer, whichever is cheaper: ghost norm when `2 T^2 <= p d`, else materialized.
    #[default]
    Auto,
    /// Always Gram matrices (ghost norm).
    Ghost,
    /// Always materialized per-sample gradients.
    Materialize,
}

/// Clipping settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Clipping {
    /// Standard or automatic clipping.
    pub mode: ClipMode,
    /// `R`: the bound on each sample's scaled gradient norm, hence the L2 sensitivity of the
    /// clipped sum.
    pub clip_norm: f64,
    /// `gamma` of automatic clipping (stability constant, > 0).
    pub gamma: f64,
    /// Which parameters are trained (DP-BiTFiT: bias terms only).
    pub trainable: Trainable,
    /// How per-sample norms of weights are computed.
    pub strategy: NormStrategy,
}

impl Default for Clipping {
    fn default() -> Self {
        Clipping {
            mode: ClipMode::Automatic,
            clip_norm: 1.0,
            gamma: 0.01,
            trainable: Trainable::All,
            strategy: NormStrategy::Auto,
        }
    }
}

impl Clipping {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `clip_norm` or (for automatic clipping) `gamma` is not
    /// a finite positive number.
    pub fn validate(&self) -> Result<()> {
        sotto_dp::error::check_positive("clip_norm", self.clip_norm)?;
        if self.mode == ClipMode::Automatic {
            sotto_dp::error::check_positive("gamma", self.gamma)?;
        }
        Ok(())
    }

    /// The scale factor of a sample with gradient norm `norm`.
    pub fn factor(&self, norm: f64) -> f64 {
        match self.mode {
            ClipMode::Standard => {
                if norm > self.clip_norm {
                    self.clip_norm / norm
                } else {
                    1.0
                }
            }
            ClipMode::Automatic => self.clip_norm / (norm + self.gamma),
        }
    }
}

/// The clipped gradient sum of one batch, per trained parameter.
#[derive(Debug, Clone)]
pub struct ClippedGradients {
    /// `sum_i c_i g_i` for each trained parameter, in [`crate::nn::ParamStore`] order
    /// (accumulated in f64, returned in the model's dtype).
    pub grads: Vec<Tensor>,
    /// `|g_i|` over the trained parameters, per sample, before scaling.
    pub norms: Vec<f64>,
    /// Sum of the per-sample losses of the batch.
    pub loss_sum: f64,
}

/// A party's clipped gradient sum for one batch, flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct ClippedSum {
    /// `sum_i c_i g_i`, the trained parameters flattened in order (accumulated in f64, rounded
    /// to f32); its L2 norm changes by at most [`clipped_sum_sensitivity`] when one sample is
    /// added or removed.
    pub values: Vec<f32>,
    /// Number of samples in the batch.
    pub batch_size: usize,
    /// Sum of the per-sample losses (for progress display only; not privatized).
    pub loss_sum: f64,
}

/// Unit roundoff of `f32` (round to nearest): `2^-24`.
const F32_UNIT: f64 = 1.0 / 16_777_216.0;

/// Unit roundoff of `f64` (round to nearest): `2^-53`.
const F64_UNIT: f64 = 1.0 / 9_007_199_254_740_992.0;

/// Relative slack on the certified upper bound of a per-sample norm, for the f64 operations
/// that combine the per-layer bounds (a few dozen roundings of nonnegative numbers, each at most
/// `2^-53` relative).
const UPPER_NORM_SLACK: f64 = 1e-10;

/// Relative slack on one record's clipped contribution: its exact L2 norm is at most
/// `clip_norm * (1 + CONTRIBUTION_SLACK)` (the clip factor is computed in f64 from a certified
/// upper bound on the norm; two roundings of `2^-53`).
pub const CONTRIBUTION_SLACK: f64 = 1e-12;

/// `k`: with several rows per record, every record's clip factor is also capped at
/// `k R / A_i`, where `A_i` bounds the absolute size that its summation error is proportional
/// to (see [`clipped_sum_error_bound`]). The cap only binds when a record's per-row terms
/// cancel by a factor above `k`.
const CANCEL_AMPLIFICATION: f64 = 1024.0;

/// `gamma_n = n u / (1 - n u)` (Higham 2002, Lemma 3.1), rounded up.
///
/// # Errors
/// [`Error::InvalidParameter`] when `n u > 1/4`: no useful bound exists in that precision.
fn gamma(n: f64, u: f64) -> Result<f64> {
    let nu = n * u;
    if !(nu.is_finite() && nu <= 0.25) {
        return Err(Error::invalid(
            "terms",
            n,
            format!(
                "too many terms to bound the rounding error of a sum at unit roundoff {u:e}; \
                 use an f64 model or the ghost-norm strategy"
            ),
        ));
    }
    Ok(nu / (1.0 - nu) * (1.0 + 1e-12))
}

/// A data-independent bound on the L2 norm of the floating-point error of the clipped sum
/// that [`Model::clipped_gradient_sum`] (and [`Model::clipped_gradients`] followed by
/// [`flatten`]) returns, for batches of at most `max_batch` records, `rows_per_sample` rows
/// per record in every layer ([`Model::rows_per_sample`]) and `dims` trained scalars.
///
/// The error is measured against `sum_i V_i`, where `V_i = c_i W_i` is record `i`'s clipped
/// contribution in exact arithmetic: `W_i` the per-sample gradient formed exactly from the
/// activations and output gradients the forward and backward passes computed for record `i`,
/// `c_i` the clip factor as computed. Each `|V_i| <= R (1 + CONTRIBUTION_SLACK)` (below), so
/// the L2 sensitivity of the computed sum is at most
/// `R (1 + CONTRIBUTION_SLACK) + 2 clipped_sum_error_bound(..)`, which
/// [`clipped_sum_sensitivity`] returns. The full argument, with the numbers for the default
/// runs, is `docs/privacy/sensitivity.md`.
///
/// # Derivation
/// `u32 = 2^-24`, `u64 = 2^-53`, `gamma_n(u) = n u / (1 - n u)`. Higham (2002, Eq. 3.5 and
/// Lemma 3.1): a sum of `n` products computed in precision `u` **in any order** (so also by a
/// blocked or FMA-based GEMM, or an index-add) is off by at most `gamma_n(u) sum_r |x_r y_r|`.
///
/// 1. **Per-sample norms** (model dtype, precision `u`) are only used to choose `c_i`. Routes
///    that sum nonnegative terms (`|a|^2 |g|^2` with one row, a per-sample vector's squares:
///    bias, layer norm, and every route of a one-row layer) have relative error `gamma_k(u)`,
///    `k` the number of terms plus the roundings of squares and products. Routes with several
///    rows per record can cancel; with `A = sum_t |g_t| |a_t|` (`sum_t |g_t|` for embeddings;
///    computed from nonnegative terms and rounded up), the Gram route `<a a^T, g g^T>` is off by
///    at most `(2 gd + gd^2 + gamma_{T^2+1} (1 + gd)^2) A^2` (`gd = gamma_max(d,p)`; only in the
///    squared norm, so the certificate moves a norm by a relative `~ gd (A / |W|)^2`), and a
///    materialized `g^T a` by at most `gamma_T A` in norm. Weights with `T > 1` are summed as
///    each record's own product `fl(g_i^T a_i)`, which is off the exact one by at most
///    `gamma_T A`: that is added to the layer's bound on the norm (twice for the materialized
///    route), so it bounds what is summed. The layers' upper bounds are added
///    in f64 and rounded up, giving `U_i >= |W_i|`. The factor is `c_i = min(1, R / U_i)` or
///    `R / (U_i + gamma)`, so `c_i |W_i| <= R (1 + 2 u64) <= R (1 + CONTRIBUTION_SLACK)`.
/// 2. **Summation.** The operands (f32 or f64 values) are exact in f64; `c_i g` is rounded
///    once, and the f64 matmul / index-add sums at most `n = max_batch * rows_per_sample`
///    products per coordinate. Per coordinate the error is `<= gamma_{n+1}(u64) sum |c_i g a|`,
///    and by Minkowski's inequality over coordinates the L2 error is
///    `<= gamma_{n+1}(u64) sum_i c_i A_i`, where `A_i` is the L2 norm over parameters of
///    `A` (weights and embeddings) and `|P_i|` (per-sample vectors). With one row per record
///    `A_i = |W_i|`, so `c_i A_i <= R (1 + CONTRIBUTION_SLACK)`. With more, the factor is also
///    capped at `k R / A_i` with `k = 1024` (it binds only for a record whose row terms cancel
///    by more than a factor 1024). Hence
///    `E64 <= gamma_{n+1}(u64) * max_batch * k * R (1 + CONTRIBUTION_SLACK)`, `k = 1` for one
///    row per record.
/// 3. **Rounding to f32** (the returned vector): `u32 |S64| + sqrt(dims) 2^-150` (the second
///    term for subnormals; underflow in f64 adds far less), with
///    `|S64| <= max_batch R (1 + CONTRIBUTION_SLACK) + E64`.
///
/// The bound is `(E64 + u32 (max_batch R (1 + CONTRIBUTION_SLACK) + E64) + sqrt(dims) 2^-149)`
/// rounded up. Overflow is not covered: it produces a non-finite value, which the noise
/// ([`crate::noise::GradientNoise::privatize`]) and the ring encoder reject.
///
/// # Assumptions
/// Record `i`'s activations and output gradients (hence `W_i`, `abs_i` and `c_i`) depend on
/// record `i` and the model only, not on the other records of the batch, so that adding a
/// record changes the exact sum by that record's contribution only. Every layer acts on each
/// record separately, but the GEMM kernels may sum in an order that depends on the batch
/// shape: on CPU (`tests/sensitivity.rs`) the assumption holds bit for bit for logistic
/// regression and fails in the last bits for models with hidden layers (a record's norm moves
/// by ~5e-8 relative with the batch size), which this bound does not cover.
///
/// # Errors
/// [`Error::InvalidParameter`] when `clip_norm` is not finite and positive, `rows_per_sample`
/// or `dims` is zero, or `max_batch * rows_per_sample` is too large for a bound in f64.
///
/// ```rust
/// use sotto_training::clipping::clipped_sum_error_bound;
/// // Default digits run, central: 1438 records, logistic regression (650 trained scalars).
/// let e = clipped_sum_error_bound(1.0, 1438, 1, 650)?;
/// assert!(e < 9e-5);
/// # Ok::<(), sotto_training::Error>(())
/// ```
pub fn clipped_sum_error_bound(
    clip_norm: f64,
    max_batch: usize,
    rows_per_sample: usize,
    dims: usize,
) -> Result<f64> {
    sotto_dp::error::check_positive("clip_norm", clip_norm)?;
    if rows_per_sample == 0 {
        return Err(Error::invalid("rows_per_sample", 0, "must be at least 1"));
    }
    if dims == 0 {
        return Err(Error::invalid("dims", 0, "must be at least 1"));
    }
    let b = max_batch as f64;
    let n = b * rows_per_sample as f64;
    let g64 = gamma(n + 1.0, F64_UNIT)?;
    let k = if rows_per_sample == 1 {
        1.0
    } else {
        CANCEL_AMPLIFICATION
    };
    let r = clip_norm * (1.0 + CONTRIBUTION_SLACK);
    let e64 = g64 * b * k * r;
    let bound = e64 + F32_UNIT * (b * r + e64) + (dims as f64).sqrt() * 2f64.powi(-149);
    Ok(bound * (1.0 + 1e-12))
}

/// The L2 sensitivity to charge for a clipped sum as computed (see [`clipped_sum_error_bound`]):
/// `(R (1 + CONTRIBUTION_SLACK) + 2 clipped_sum_error_bound(..)) (1 + 1e-12)`. Under add or
/// remove one record, `f(D') - f(D) = V_x + e(D') - e(D)` (the other records' contributions
/// are unchanged), and both errors are bounded for every batch of at most `max_batch` records.
/// With Poisson sampling `max_batch` must be the number of records the batch is drawn from.
///
/// # Errors
/// As [`clipped_sum_error_bound`].
///
/// ```rust
/// use sotto_training::clipping::clipped_sum_sensitivity;
/// let s = clipped_sum_sensitivity(1.0, 360, 1, 650)?;
/// assert!(s > 1.0 && s < 1.0 + 5e-5);
/// # Ok::<(), sotto_training::Error>(())
/// ```
pub fn clipped_sum_sensitivity(
    clip_norm: f64,
    max_batch: usize,
    rows_per_sample: usize,
    dims: usize,
) -> Result<f64> {
    let e = clipped_sum_error_bound(clip_norm, max_batch, rows_per_sample, dims)?;
    Ok((clip_norm * (1.0 + CONTRIBUTION_SLACK) + 2.0 * e) * (1.0 + 1e-12))
}

/// Flattens per-parameter tensors into one `f32` vector, in order.
///
/// # Errors
/// [`Error::Tensor`] on device errors.
pub fn flatten(grads: &[Tensor]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(grads.iter().map(Tensor::elem_count).sum());
    for g in grads {
        // f32 tensors in host memory are copied once, straight from their storage.
        if cpu::with_f32(g, |v| out.extend_from_slice(v))?.is_none() {
            out.extend(g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
    }
    Ok(out)
}

impl Model {
    /// Number of trained scalars (the length of a flattened gradient).
    pub fn trainable_len(&self, trainable: Trainable) -> usize {
        let ps = self.params().params();
        self.params()
            .trainable_indices(trainable)
            .iter()
            .map(|&i| ps[i].numel())
            .sum()
    }

    /// Rows per record in the widest layer: 1 for feature vectors, the sequence length for
    /// token sequences (the `rows_per_sample` of [`clipped_sum_error_bound`]).
    pub fn rows_per_sample(&self) -> usize {
        match self.input_shape() {
            crate::model::InputShape::Features(_) => 1,
            crate::model::InputShape::Tokens { seq_len, .. } => seq_len.max(1),
        }
    }

    /// Per-sample clipped gradient sum of a batch, by book-keeping: one forward pass recording
    /// activations and probes, one backward pass, then per layer the per-sample norms and one
    /// matmul for the clipped sum.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for invalid clipping settings; [`Error::Data`] when the batch
    /// does not fit the model; [`Error::Tensor`] on device errors.
    pub fn clipped_gradients(
        &self,
        batch: &Batch,
        clipping: &Clipping,
    ) -> Result<ClippedGradients> {
        clipping.validate()?;
        let b = batch.size()?;
        let trained = self.params().trainable_indices(clipping.trainable);
        if b == 0 {
            return Ok(ClippedGradients {
                grads: self.zero_grads(&trained)?,
                norms: Vec::new(),
                loss_sum: 0.0,
            });
        }
        let mut tape = Tape::recording();
        let losses = self.per_sample_loss(&mut tape, batch)?;
        let loss_sum = losses.sum_all()?;
        let grads = loss_sum.backward()?;
        let loss_sum = loss_sum.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let is_trained = |idx: usize| trained.contains(&idx);

        // Pass 1: per-sample squared norms (with their error certificates), keeping what
        // pass 2 needs.
        let unit = unit_roundoff(self.dtype());
        let max_rows = self.rows_per_sample();
        let mut seen = vec![false; self.params().params().len()];
        let mut prepared = Vec::with_capacity(tape.entries.len());
        for entry in &tape.entries {
            let (probe, owned) = match entry {
                Entry::Linear {
                    probe,
                    weight,
                    bias,
                    ..
                } => (probe, vec![*weight, *bias]),
                Entry::Embedding { probe, table, .. } => (probe, vec![*table]),
                Entry::LayerNorm {
                    probe,
                    scale,
                    shift,
                    ..
                } => (probe, vec![*scale, *shift]),
            };
            for &p in &owned {
                if std::mem::replace(&mut seen[p], true) {
                    return Err(Error::Data(format!(
                        "parameter {} is used twice in one forward pass; per-sample clipping needs each parameter used once",
                        self.params().get(p)?.name()
                    )));
                }
            }
            if !owned.iter().any(|&p| is_trained(p)) {
                continue;
            }
            let g = match grads.get(probe.as_tensor()) {
                Some(g) => g.clone(),
                None => probe.as_tensor().zeros_like()?,
            };
            prepared.push(prepare(
                entry,
                g,
                b,
                &is_trained,
                clipping.strategy,
                (unit, max_rows),
            )?);
        }
        // Per sample: the computed norm (reported) and a certified upper bound on the exact
        // norm of the per-sample gradient that pass 2 sums (used for the clip factor).
        let mut totals = NormTotals {
            computed: vec![0.0; b],
            upper: vec![0.0; b],
            abs: vec![0.0; b],
        };
        for prep in &prepared {
            for part in &prep.norms {
                part.accumulate(&mut totals)?;
            }
        }
        let norms: Vec<f64> = totals.computed.iter().map(|&v| v.max(0.0).sqrt()).collect();
        // Pass 2 needs only `prepared`: free the gradient store, the loss graph and the tape
        // (their tensors would otherwise stay alive through the clipped-sum matmuls).
        drop(grads);
        drop(losses);
        drop(tape);
        let factors: Vec<f64> = totals
            .upper
            .iter()
            .zip(&totals.abs)
            .map(|(&upper_sq, &abs_sq)| {
                let upper = upper_sq.sqrt() * (1.0 + UPPER_NORM_SLACK);
                // Bound on the L2 norm over parameters of `A_i` (cancellation routes) and the
                // per-sample norms (the others): what the summation error is proportional to.
                let abs = (abs_sq + upper_sq).sqrt() * (1.0 + UPPER_NORM_SLACK);
                if !(upper.is_finite() && abs.is_finite()) {
                    return 0.0;
                }
                let c = clipping.factor(upper);
                if abs > 0.0 {
                    c.min(CANCEL_AMPLIFICATION * clipping.clip_norm / abs)
                } else {
                    c
                }
            })
            .collect();
        // The clipped sums are accumulated in f64 (see [`clipped_sum_error_bound`]).
        let c = Tensor::from_vec(factors, b, self.device())?;

        // Pass 2: clipped sums, one matmul (or index-add) per parameter.
        let mut sums: HashMap<usize, Tensor> = HashMap::new();
        for prep in &prepared {
            prep.clipped_sums(&c, &mut sums)?;
        }
        let mut out = Vec::with_capacity(trained.len());
        for &idx in &trained {
            out.push(match sums.remove(&idx) {
                Some(t) => t.to_dtype(self.dtype())?,
                None => self.params().get(idx)?.value().zeros_like()?,
            });
        }
        Ok(ClippedGradients {
            grads: out,
            norms,
            loss_sum,
        })
    }

    /// The flattened clipped gradient sum of a batch, as a party sends it to secure
    /// aggregation (see [`Model::clipped_gradients`]).
    ///
    /// # Privacy
    /// The result is NOT private: it is the clipped sum of the party's samples. Its L2
    /// sensitivity to one sample is `clipping.clip_norm` plus twice its floating-point error,
    /// [`clipped_sum_sensitivity`] for batches of at most the party's record count; noise scaled
    /// to that must be added (by [`crate::noise::GradientNoise::for_clipped_sums`], or as
    /// distributed noise shares inside secure aggregation) before anything derived from it
    /// leaves the party.
    ///
    /// # Errors
    /// As [`Model::clipped_gradients`].
    ///
    /// ```rust
    /// use candle_core::{DType, Device};
    /// use sotto_training::{clipping::Clipping, data, model::{InputShape, Model, ModelSpec}};
    /// let (train, _) = data::digits_split(0)?;
    /// let model = Model::new(&ModelSpec::Logistic, InputShape::of(&train), 10, DType::F32, &Device::Cpu, 1)?;
    /// let batch = train.batch(&[0, 1, 2, 3], &Device::Cpu)?;
    /// let sum = model.clipped_gradient_sum(&batch, &Clipping::default())?;
    /// assert_eq!(sum.values.len(), 64 * 10 + 10);
    /// let norm = sum.values.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    /// assert!(norm <= 4.0 * 1.0 + 1e-4); // 4 samples, each scaled to norm < clip_norm = 1
    /// # Ok::<(), sotto_training::Error>(())
    /// ```
    pub fn clipped_gradient_sum(&self, batch: &Batch, clipping: &Clipping) -> Result<ClippedSum> {
        let g = self.clipped_gradients(batch, clipping)?;
        Ok(ClippedSum {
            values: flatten(&g.grads)?,
            batch_size: g.norms.len(),
            loss_sum: g.loss_sum,
        })
    }

    /// The same as [`Model::clipped_gradients`] by the naive route: one forward and backward
    /// pass per sample. A slow reference for tests and benchmarks.
    ///
    /// # Errors
    /// As [`Model::clipped_gradients`].
    pub fn clipped_gradients_naive(
        &self,
        batch: &Batch,
        clipping: &Clipping,
    ) -> Result<ClippedGradients> {
        clipping.validate()?;
        let b = batch.size()?;
        let trained = self.params().trainable_indices(clipping.trainable);
        let mut sums = self.zero_grads(&trained)?;
        let mut norms = Vec::with_capacity(b);
        let mut loss_sum = 0.0;
        for i in 0..b {
            let one = Batch {
                inputs: batch.inputs.narrow(0, i, 1)?,
                labels: batch.labels.narrow(0, i, 1)?,
            };
            let (loss, grads) = self.gradient_of_sum(&one, &trained)?;
            loss_sum += loss;
            let mut sq = 0.0;
            for g in &grads {
                sq += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
            }
            let norm = sq.sqrt();
            let c = clipping.factor(norm);
            for (s, g) in sums.iter_mut().zip(&grads) {
                *s = s.add(&g.affine(c, 0.0)?)?;
            }
            norms.push(norm);
        }
        Ok(ClippedGradients {
            grads: sums,
            norms,
            loss_sum,
        })
    }

    /// The ordinary (non-private) gradient of the mean loss of a batch, per trained parameter:
    /// one forward and one backward pass with the parameters as variables.
    ///
    /// # Privacy
    /// Not private: no clipping, no noise. For the non-private baseline only.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an empty batch; as [`Model::clipped_gradients`].
    pub fn mean_gradient(&self, batch: &Batch, trainable: Trainable) -> Result<(f64, Vec<Tensor>)> {
        let b = batch.size()?;
        if b == 0 {
            return Err(Error::invalid("batch", 0, "needs at least one example"));
        }
        let trained = self.params().trainable_indices(trainable);
        let (loss, grads) = self.gradient_of_sum(batch, &trained)?;
        let inv = 1.0 / b as f64;
        let grads = grads
            .iter()
            .map(|g| Ok(g.affine(inv, 0.0)?))
            .collect::<Result<Vec<_>>>()?;
        Ok((loss * inv, grads))
    }

    fn gradient_of_sum(&self, batch: &Batch, trained: &[usize]) -> Result<(f64, Vec<Tensor>)> {
        let mut tape = Tape::plain();
        let loss = self.per_sample_loss(&mut tape, batch)?.sum_all()?;
        let store = loss.backward()?;
        let mut out = Vec::with_capacity(trained.len());
        for &idx in trained {
            let p = self.params().get(idx)?;
            out.push(match store.get(p.value()) {
                Some(g) => g.clone(),
                None => p.value().zeros_like()?,
            });
        }
        Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, out))
    }

    fn zero_grads(&self, trained: &[usize]) -> Result<Vec<Tensor>> {
        trained
            .iter()
            .map(|&i| Ok(self.params().get(i)?.value().zeros_like()?))
            .collect()
    }
}

/// A layer's per-sample quantities after the backward pass.
struct Prepared {
    norms: Vec<NormPart>,
    sums: Vec<SumPlan>,
}

/// One parameter's per-sample squared norm as computed in the model's dtype, with what bounds
/// its error (see [`clipped_sum_error_bound`], "Derivation", step 1).
struct NormPart {
    /// `s`: computed squared norms `(B,)`.
    sq: Tensor,
    /// Relative error bound of `s` (routes that sum nonnegative terms; 0 otherwise).
    rel: f64,
    /// The error bound of a route with cancellation.
    cancel: Option<Cancel>,
}

/// Error bound of a per-sample norm computed with cancellation, in terms of
/// `A_i = abs_rel * abs_i >= sum_t |g_t| |a_t|` (or `sum_t |g_t|`).
struct Cancel {
    /// `abs_i` as computed `(B,)`.
    abs: Tensor,
    /// `1 / (1 - gamma)` for the rounding of `abs` (nonnegative terms).
    abs_rel: f64,
    /// The norm of what pass 2 sums for this record is at most
    /// `sqrt(s' + coef_sq * A^2) + coef_root * A` (`s'`: `s` after `rel`).
    coef_sq: f64,
    coef_root: f64,
}

impl NormPart {
    /// A Gram-matrix route (`T > 1`): the computed `sq` may cancel; the exact squared norm is
    /// at most `sq + coef * A^2`, and what pass 2 sums is off the exact gradient by at most
    /// `summed * A` in norm.
    fn gram(sq: Tensor, abs: Tensor, abs_rel: f64, coef: f64, summed: f64) -> Self {
        NormPart {
            sq,
            rel: 0.0,
            cancel: Some(Cancel {
                abs,
                abs_rel,
                coef_sq: coef,
                coef_root: summed,
            }),
        }
    }

    /// A materialized per-sample gradient (`T > 1`): `sq` has relative error `rel` for the
    /// gradient as computed, and what pass 2 sums is off it by at most `coef * A` in norm.
    fn materialized(sq: Tensor, rel: f64, abs: Tensor, abs_rel: f64, coef: f64) -> Self {
        NormPart {
            sq,
            rel,
            cancel: Some(Cancel {
                abs,
                abs_rel,
                coef_sq: 0.0,
                coef_root: coef,
            }),
        }
    }
}

/// Per-sample accumulators for the certified norms (f64, nonnegative terms only).
struct NormTotals {
    /// Sum of the computed squared norms (what [`ClippedGradients::norms`] reports).
    computed: Vec<f64>,
    /// Upper bound on the squared norm of the per-sample gradient pass 2 sums.
    upper: Vec<f64>,
    /// Sum of `A_i^2` over the routes with cancellation.
    abs: Vec<f64>,
}

impl NormPart {
    /// Adds this part to the per-sample totals.
    fn accumulate(&self, totals: &mut NormTotals) -> Result<()> {
        let s = self.sq.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let abs = match &self.cancel {
            Some(c) => Some((c.abs.to_dtype(DType::F64)?.to_vec1::<f64>()?, c)),
            None => None,
        };
        let b = totals.computed.len();
        if s.len() != b || abs.as_ref().is_some_and(|(a, _)| a.len() != b) {
            return Err(Error::Data(
                "per-sample norms do not match the batch size".into(),
            ));
        }
        let inv = 1.0 / (1.0 - self.rel);
        let rows = totals
            .computed
            .iter_mut()
            .zip(totals.upper.iter_mut())
            .zip(totals.abs.iter_mut());
        for (i, ((computed, upper), abs_total)) in rows.enumerate() {
            let v = s.get(i).copied().unwrap_or(f64::NAN);
            *computed += v;
            // NaN stays NaN (`max(NaN, 0)` is 0 in Rust, so test it first): the factor is then 0.
            let base = if v.is_nan() {
                f64::NAN
            } else {
                v.max(0.0) * inv
            };
            *upper += match &abs {
                Some((a, c)) => {
                    let big_a = a.get(i).copied().unwrap_or(f64::NAN) * c.abs_rel;
                    *abs_total += big_a * big_a;
                    let root = (base + c.coef_sq * big_a * big_a).sqrt() + c.coef_root * big_a;
                    root * root
                }
                None => base,
            };
        }
        Ok(())
    }
}

/// How to form one parameter's clipped sum from the scale factors `c` `(B,)` (f64).
enum SumPlan {
    /// `((c * g)^T a)`: `g` `(B, 1, p)`, `a` `(B, d)` (one row per record).
    Outer { param: usize, g: Tensor, a: Tensor },
    /// `sum_i c_i fl(g_i^T a_i)`: `g` `(B, T, p)`, `a` `(B, T, d)`; every record's product is
    /// formed on its own in the model's dtype, then the records are summed in f64.
    PerRecord { param: usize, g: Tensor, a: Tensor },
    /// `c^T P` with per-sample gradients `P` `(B, k)`, reshaped to `shape`.
    PerSample {
        param: usize,
        per_sample: Tensor,
        shape: Vec<usize>,
    },
    /// Index-add of `c * g` rows `(B*T, dim)` at `ids` into a `(vocab, dim)` table.
    Scatter {
        param: usize,
        g: Tensor,
        ids: Tensor,
        vocab: usize,
    },
}

fn sq_sum_rows(x: &Tensor) -> Result<Tensor> {
    // (B, ...) -> (B,)
    let b = x.dim(0)?;
    Ok(x.reshape((b, ()))?.sqr()?.sum(1)?)
}

/// Per-row Euclidean norms of the last axis: `(B, T, k)` -> `(B, T)`.
fn row_norms(x: &Tensor) -> Result<Tensor> {
    Ok(x.sqr()?.sum(D::Minus1)?.sqrt()?)
}

/// Unit roundoff of the per-sample norm computation.
fn unit_roundoff(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => F64_UNIT,
        // Models are F32 or F64 (checked by `Model::new`); anything else is bounded by the
        // f32 analysis only if it is at least as precise, so treat it as half precision.
        DType::F32 => F32_UNIT,
        _ => 2f64.powi(-8),
    }
}

fn prepare(
    entry: &Entry,
    g: Tensor,
    b: usize,
    is_trained: &dyn Fn(usize) -> bool,
    strategy: NormStrategy,
    (u, max_rows): (f64, usize),
) -> Result<Prepared> {
    let gam = |n: usize| gamma(n as f64, u);
    // The error bound of the clipped sum assumes at most `max_rows` rows per record.
    let check_rows = |t: usize| {
        if t > max_rows {
            Err(Error::Data(format!(
                "a layer sees {t} rows per record, more than the {max_rows} the model declares"
            )))
        } else {
            Ok(())
        }
    };
    let mut norms = Vec::new();
    let mut sums = Vec::new();
    match entry {
        Entry::Linear {
            input,
            weight,
            bias,
            ..
        } => {
            let (n, d) = input.dims2()?;
            let t = n / b;
            let p = g.elem_count() / n;
            check_rows(t)?;
            let g3 = g.reshape((b, t, p))?;
            if is_trained(*weight) {
                let ghost = match strategy {
                    NormStrategy::Auto => 2 * t * t <= p * d,
                    NormStrategy::Ghost => true,
                    NormStrategy::Materialize => false,
                };
                let part = if t == 1 && ghost {
                    // |a|^2 |g|^2: nonnegative sums of d and p squares and one product.
                    let sq = input
                        .sqr()?
                        .sum(1)?
                        .mul(&g3.reshape((b, p))?.sqr()?.sum(1)?)?;
                    NormPart {
                        sq,
                        rel: gam(d + p + 1)?,
                        cancel: None,
                    }
                } else if t == 1 {
                    // g^T a with one row: every entry is one rounded product.
                    let per = g3.t()?.matmul(&input.reshape((b, 1, d))?)?;
                    NormPart {
                        sq: sq_sum_rows(&per)?,
                        rel: gam(p * d + 1)?,
                        cancel: None,
                    }
                } else {
                    let a3 = input.reshape((b, t, d))?;
                    // abs_i = sum_t |g_t| |a_t|, computed from nonnegative terms.
                    let abs = row_norms(&g3)?.mul(&row_norms(&a3)?)?.sum(1)?;
                    let abs_rel = 1.0 / (1.0 - gam(d + p + t + 4)?);
                    if ghost {
                        // <a a^T, g g^T>: |s - E| <= ((1 + gam(max(d, p)))^2 (1 + gam(T^2 + 1))
                        // - 1) abs^2.
                        let aa = a3.matmul(&a3.t()?)?;
                        let gg = g3.matmul(&g3.t()?)?;
                        let gd = gam(d.max(p))?;
                        let e2 = 2.0 * gd + gd * gd + gam(t * t + 1)? * (1.0 + gd) * (1.0 + gd);
                        // Pass 2 sums fl(g_i^T a_i): off the exact product by <= gam(T) abs.
                        NormPart::gram(aa.mul(&gg)?.sum((1, 2))?, abs, abs_rel, e2, gam(t)?)
                    } else {
                        // fl(g^T a) is off the exact product by at most gam(T) abs in Frobenius
                        // norm, and so is pass 2's own fl(g_i^T a_i): 2 gam(T) abs apart.
                        let per = g3.t()?.matmul(&a3)?; // (B, p, d)
                        NormPart::materialized(
                            sq_sum_rows(&per)?,
                            gam(p * d + 1)?,
                            abs,
                            abs_rel,
                            2.0 * gam(t)?,
                        )
                    }
                };
                norms.push(part);
                sums.push(if t == 1 {
                    SumPlan::Outer {
                        param: *weight,
                        g: g3.clone(),
                        a: input.clone(),
                    }
                } else {
                    SumPlan::PerRecord {
                        param: *weight,
                        g: g3.clone(),
                        a: input.reshape((b, t, d))?,
                    }
                });
            }
            if is_trained(*bias) {
                // (B, p); with T = 1 a view of the output gradient, no copy. This computed
                // vector is what pass 2 sums, so its norm has no cancellation error.
                let per = if t == 1 {
                    g3.reshape((b, p))?
                } else {
                    g3.sum(1)?
                };
                norms.push(NormPart {
                    sq: sq_sum_rows(&per)?,
                    rel: gam(p + 1)?,
                    cancel: None,
                });
                sums.push(SumPlan::PerSample {
                    param: *bias,
                    per_sample: per,
                    shape: vec![p],
                });
            }
        }
        Entry::Embedding {
            ids, table, vocab, ..
        } => {
            if is_trained(*table) {
                let (_, t) = ids.dims2()?;
                check_rows(t)?;
                let dim = g.dim(D::Minus1)?;
                let ghost = match strategy {
                    NormStrategy::Auto => 2 * t * t <= vocab * dim,
                    NormStrategy::Ghost => true,
                    NormStrategy::Materialize => false,
                };
                let part = if t == 1 {
                    // One token: the per-sample gradient is the single row g_1.
                    NormPart {
                        sq: sq_sum_rows(&g)?,
                        rel: gam(dim + 1)?,
                        cancel: None,
                    }
                } else {
                    let abs = row_norms(&g)?.sum(1)?; // sum_t |g_t|
                    let abs_rel = 1.0 / (1.0 - gam(dim + t + 2)?);
                    if ghost {
                        let same = ids
                            .unsqueeze(2)?
                            .broadcast_eq(&ids.unsqueeze(1)?)?
                            .to_dtype(g.dtype())?; // (B, T, T)
                        let gg = g.matmul(&g.t()?)?;
                        let gd = gam(dim)?;
                        let e2 = gd + gam(t * t + 1)? * (1.0 + gd);
                        // Pass 2 sums the exact rows in f64: nothing to add to the root.
                        NormPart::gram(same.mul(&gg)?.sum((1, 2))?, abs, abs_rel, e2, 0.0)
                    } else {
                        let range = Tensor::arange(0u32, *vocab as u32, g.device())?
                            .reshape((1, 1, *vocab))?;
                        let onehot = ids
                            .unsqueeze(2)?
                            .broadcast_eq(&range)?
                            .to_dtype(g.dtype())?; // (B,T,V)
                        let per = onehot.t()?.matmul(&g)?; // (B, V, dim)
                        NormPart::materialized(
                            sq_sum_rows(&per)?,
                            gam(vocab * dim + 1)?,
                            abs,
                            abs_rel,
                            gam(t)?,
                        )
                    }
                };
                norms.push(part);
                sums.push(SumPlan::Scatter {
                    param: *table,
                    g: g.clone(),
                    ids: ids.flatten_all()?,
                    vocab: *vocab,
                });
            }
        }
        Entry::LayerNorm {
            normed,
            scale,
            shift,
            ..
        } => {
            let g3 = g.reshape(normed.shape())?;
            let d = normed.dim(2)?;
            // The computed per-sample vectors are what pass 2 sums: no cancellation error.
            if is_trained(*scale) {
                let per = g3.mul(normed)?.sum(1)?; // (B, d)
                norms.push(NormPart {
                    sq: sq_sum_rows(&per)?,
                    rel: gam(d + 1)?,
                    cancel: None,
                });
                sums.push(SumPlan::PerSample {
                    param: *scale,
                    per_sample: per,
                    shape: vec![d],
                });
            }
            if is_trained(*shift) {
                let per = g3.sum(1)?;
                norms.push(NormPart {
                    sq: sq_sum_rows(&per)?,
                    rel: gam(d + 1)?,
                    cancel: None,
                });
                sums.push(SumPlan::PerSample {
                    param: *shift,
                    per_sample: per,
                    shape: vec![d],
                });
            }
        }
    }
    Ok(Prepared { norms, sums })
}

impl Prepared {
    /// The clipped sums in f64: the operands (exact in f64) are scaled by the f64 factors and
    /// summed by an f64 matmul or index-add.
    fn clipped_sums(&self, c: &Tensor, out: &mut HashMap<usize, Tensor>) -> Result<()> {
        let b = c.dim(0)?;
        let f64_of = |t: &Tensor| t.to_dtype(DType::F64);
        for plan in &self.sums {
            let (param, sum) = match plan {
                SumPlan::Outer { param, g, a } => {
                    let (_, t, p) = g.dims3()?;
                    let gc = f64_of(g)?
                        .broadcast_mul(&c.reshape((b, 1, 1))?)?
                        .reshape((b * t, p))?;
                    (*param, gc.t()?.matmul(&f64_of(a)?)?)
                }
                SumPlan::PerRecord { param, g, a } => (*param, per_record_sum(g, a, c)?),
                SumPlan::PerSample {
                    param,
                    per_sample,
                    shape,
                } => (
                    *param,
                    c.reshape((1, b))?
                        .matmul(&f64_of(per_sample)?)?
                        .reshape(shape.as_slice())?,
                ),
                SumPlan::Scatter {
                    param,
                    g,
                    ids,
                    vocab,
                } => {
                    if let Some(sum) = cpu::scatter_sum(g, ids, c, *vocab)? {
                        out.insert(*param, sum);
                        continue;
                    }
                    let (_, t, dim) = g.dims3()?;
                    let gc = f64_of(g)?
                        .broadcast_mul(&c.reshape((b, 1, 1))?)?
                        .reshape((b * t, dim))?;
                    let zeros = Tensor::zeros((*vocab, dim), DType::F64, g.device())?;
                    (*param, zeros.index_add(ids, &gc, 0)?)
                }
            };
            out.insert(param, sum);
        }
        Ok(())
    }
}

/// Records per chunk of [`per_record_sum`]: at most this many scalars of per-record products
/// are alive at once (128 MiB of f32).
const PER_RECORD_CHUNK: usize = 1 << 25;

/// `sum_i c_i fl(g_i^T a_i)` for `g` `(B, T, p)`, `a` `(B, T, d)`: each record's product is
/// one GEMM of the same shape whatever the batch (so it depends on that record only), in the
/// model's dtype; the records are then scaled and summed in f64 (in record order on the host;
/// the tensor route sums within a chunk first, an order the error bound also covers), and the
/// sum is returned in the model's dtype (f32 models on the CPU) or in f64.
fn per_record_sum(g: &Tensor, a: &Tensor, c: &Tensor) -> Result<Tensor> {
    per_record_sum_in(g, a, c, PER_RECORD_CHUNK)
}

/// [`per_record_sum`] with at most `chunk` scalars of products per step.
fn per_record_sum_in(g: &Tensor, a: &Tensor, c: &Tensor, chunk: usize) -> Result<Tensor> {
    let (b, _, p) = g.dims3()?;
    let d = a.dim(2)?;
    let step = (chunk / (p * d).max(1)).clamp(1, b.max(1));
    let factors = c.to_vec1::<f64>()?;
    let device = g.device();
    // f32 products in host memory are summed by the host loops, anything else (f64 models,
    // GPU) by the same arithmetic in tensor operations.
    let host = g.dtype() == DType::F32 && device.is_cpu();
    let products = |start: usize, len: usize| -> Result<Tensor> {
        Ok(g.narrow(0, start, len)?
            .t()?
            .matmul(&a.narrow(0, start, len)?)?) // (len, p, d)
    };
    if host && step >= b {
        // One chunk: straight to f32, without an f64 buffer.
        let sum = cpu::with_f32(&products(0, b)?, |v| cpu::scaled_sum(v, &factors, p * d))?
            .unwrap_or_default();
        return Ok(Tensor::from_vec(sum, (p, d), device)?);
    }
    let mut acc = vec![0f64; if host { p * d } else { 0 }];
    let mut total = Tensor::zeros((p, d), DType::F64, device)?;
    for start in (0..b).step_by(step) {
        let len = step.min(b - start);
        let prod = products(start, len)?;
        if host {
            let cs = factors.get(start..start + len).unwrap_or_default();
            cpu::with_f32(&prod, |v| cpu::add_scaled(&mut acc, v, cs))?;
        } else {
            let cs = c.narrow(0, start, len)?.reshape((len, 1, 1))?;
            total = total.add(&prod.to_dtype(DType::F64)?.broadcast_mul(&cs)?.sum(0)?)?;
        }
    }
    if host {
        let sum: Vec<f32> = acc.iter().map(|&v| v as f32).collect();
        return Ok(Tensor::from_vec(sum, (p, d), device)?);
    }
    Ok(total)
}

/// Host-memory fast paths of the clipped sums (f32 tensors on the CPU), with the same
/// arithmetic as the tensor routes they replace: products `c_i x` rounded once in f64, summed
/// in f64 in record order, the sum rounded once to f32.
mod cpu {
    use candle_core::{DType, Storage, Tensor};

    use crate::{Error, Result};

    /// Column block of the host sums: a block of f64 partial sums stays in the L1 cache while
    /// every row is added to it.
    const BLOCK: usize = 512;

    /// The f32 values of a contiguous CPU tensor, or `None` for any other tensor.
    pub(super) fn with_f32<T>(t: &Tensor, f: impl FnOnce(&[f32]) -> T) -> Result<Option<T>> {
        if t.dtype() != DType::F32 || !t.device().is_cpu() {
            return Ok(None);
        }
        let t = t.contiguous()?;
        let (storage, layout) = t.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return Ok(None);
        };
        let all = cpu.as_slice::<f32>()?;
        let values = all
            .get(layout.start_offset()..layout.start_offset() + t.elem_count())
            .ok_or_else(|| Error::Data("tensor storage is shorter than its layout".into()))?;
        Ok(Some(f(values)))
    }

    /// Adds `sum_i cs[i] row_i` to `sums`, the columns `start..start + sums.len()` of the
    /// rows of `width` values in `rows`, each coordinate in row order.
    fn add_rows(sums: &mut [f64], rows: &[f32], width: usize, start: usize, cs: &[f64]) {
        for (row, &c) in rows.chunks_exact(width.max(1)).zip(cs) {
            let part = row.get(start..start + sums.len()).unwrap_or_default();
            for (s, &x) in sums.iter_mut().zip(part) {
                *s += c * f64::from(x);
            }
        }
    }

    /// Adds `sum_i cs[i] row_i` (rows of `acc.len()` values in `rows`) to `acc`.
    pub(super) fn add_scaled(acc: &mut [f64], rows: &[f32], cs: &[f64]) {
        let width = acc.len();
        for (k, block) in acc.chunks_mut(BLOCK).enumerate() {
            add_rows(block, rows, width, k * BLOCK, cs);
        }
    }

    /// `sum_i cs[i] row_i` (rows of `width` values in `rows`) in f64, rounded to f32.
    pub(super) fn scaled_sum(rows: &[f32], cs: &[f64], width: usize) -> Vec<f32> {
        let mut out = vec![0f32; width];
        let mut buf = [0f64; BLOCK];
        for (k, o) in out.chunks_mut(BLOCK).enumerate() {
            let buf = buf.get_mut(..o.len()).unwrap_or_default();
            buf.fill(0.0);
            add_rows(buf, rows, width, k * BLOCK, cs);
            for (o, &s) in o.iter_mut().zip(buf.iter()) {
                *o = s as f32;
            }
        }
        out
    }

    /// The embedding table's clipped sum `sum_r c_(i(r)) g_r` into row `ids[r]` (`g`
    /// `(B, T, dim)`, `ids` `(B*T,)`, `c` `(B,)`), for f32 CPU tensors: rows of the same token
    /// are summed in f64 in row order, each table row rounded once to f32; untouched rows
    /// stay zero. `None` for other tensors.
    pub(super) fn scatter_sum(
        g: &Tensor,
        ids: &Tensor,
        c: &Tensor,
        vocab: usize,
    ) -> Result<Option<Tensor>> {
        let (b, t, dim) = g.dims3()?;
        let ids = ids.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let cs = c.to_vec1::<f64>()?;
        if ids.len() != b * t || cs.len() != b {
            return Err(Error::Data(
                "token ids do not match the embedding's output gradient".into(),
            ));
        }
        let table = with_f32(g, |rows| -> Result<Vec<f32>> {
            // Rows grouped by token, each group in row order.
            let mut order: Vec<usize> = (0..ids.len()).collect();
            order.sort_by_key(|&r| ids.get(r).copied().unwrap_or(0));
            let mut table = vec![0f32; vocab * dim];
            let mut acc = vec![0f64; dim];
            let mut k = 0;
            while let Some(&first) = order.get(k) {
                let token = ids.get(first).copied().unwrap_or(0) as usize;
                acc.fill(0.0);
                while let Some(&r) = order.get(k) {
                    if ids.get(r).copied().unwrap_or(0) as usize != token {
                        break;
                    }
                    let ci = cs.get(r / t.max(1)).copied().unwrap_or(f64::NAN);
                    let row = rows.get(r * dim..(r + 1) * dim).unwrap_or_default();
                    for (s, &x) in acc.iter_mut().zip(row) {
                        *s += ci * f64::from(x);
                    }
                    k += 1;
                }
                let dest = table
                    .get_mut(token * dim..(token + 1) * dim)
                    .ok_or_else(|| {
                        Error::Data(format!(
                            "token id {token} is outside the vocabulary of {vocab}"
                        ))
                    })?;
                for (o, &s) in dest.iter_mut().zip(&acc) {
                    *o = s as f32;
                }
            }
            Ok(table)
        })?;
        match table {
            Some(table) => Ok(Some(Tensor::from_vec(table?, (vocab, dim), g.device())?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn tensor(len: usize, shape: &[usize], seed: u64) -> Tensor {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The per-record route gives the same bits in one step, record by record, and as the
    /// f64 tensor reference: each record's product alone, scaled and summed in record order.
    #[test]
    fn per_record_sum_is_the_sum_of_each_records_own_product() {
        let (b, t, p, d) = (5, 7, 6, 4);
        let g = tensor(b * t * p, &[b, t, p], 1);
        let a = tensor(b * t * d, &[b, t, d], 2);
        let c = Tensor::new(&[0.5f64, 1.25, 3.0, 1e-3, 0.75], &Device::Cpu).unwrap();
        let whole = per_record_sum(&g, &a, &c).unwrap();
        let one_by_one = per_record_sum_in(&g, &a, &c, 1).unwrap();
        let mut reference = Tensor::zeros((p, d), DType::F64, &Device::Cpu).unwrap();
        for i in 0..b {
            let prod = g
                .narrow(0, i, 1)
                .unwrap()
                .t()
                .unwrap()
                .matmul(&a.narrow(0, i, 1).unwrap())
                .unwrap();
            let ci = c.narrow(0, i, 1).unwrap().reshape((1, 1, 1)).unwrap();
            let scaled = prod
                .to_dtype(DType::F64)
                .unwrap()
                .broadcast_mul(&ci)
                .unwrap();
            reference = reference.add(&scaled.squeeze(0).unwrap()).unwrap();
        }
        let bits = |x: &Tensor| -> Vec<u32> {
            x.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(whole.dtype(), DType::F32);
        assert_eq!(bits(&whole), bits(&one_by_one));
        assert_eq!(bits(&whole), bits(&reference));
        // An f64 model takes the tensor route: the same sum of each record's own product (one
        // record per chunk, so in record order).
        let (g64, a64) = (
            g.to_dtype(DType::F64).unwrap(),
            a.to_dtype(DType::F64).unwrap(),
        );
        let chunked = per_record_sum_in(&g64, &a64, &c, p * d).unwrap();
        let mut reference = Tensor::zeros((p, d), DType::F64, &Device::Cpu).unwrap();
        for i in 0..b {
            let prod = g64
                .narrow(0, i, 1)
                .unwrap()
                .t()
                .unwrap()
                .matmul(&a64.narrow(0, i, 1).unwrap())
                .unwrap();
            let ci = c.narrow(0, i, 1).unwrap().reshape((1, 1, 1)).unwrap();
            reference = reference
                .add(&prod.broadcast_mul(&ci).unwrap().squeeze(0).unwrap())
                .unwrap();
        }
        let v = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(chunked.dtype(), DType::F64);
        assert_eq!(v(&chunked), v(&reference));
    }

    /// The host scatter of the embedding's clipped sum equals the f64 index-add route bit for
    /// bit, repeated tokens included, and rejects ids outside the vocabulary.
    #[test]
    fn embedding_scatter_matches_index_add() {
        let (b, t, dim, vocab) = (3, 6, 5, 9);
        let g = tensor(b * t * dim, &[b, t, dim], 3);
        let ids = Tensor::new(
            &[1u32, 4, 1, 8, 0, 4, 4, 4, 2, 1, 7, 7, 0, 3, 3, 8, 1, 5],
            &Device::Cpu,
        )
        .unwrap();
        let c = Tensor::new(&[0.3f64, 2.0, 0.9], &Device::Cpu).unwrap();
        let fast = cpu::scatter_sum(&g, &ids, &c, vocab).unwrap().unwrap();
        let gc = g
            .to_dtype(DType::F64)
            .unwrap()
            .broadcast_mul(&c.reshape((b, 1, 1)).unwrap())
            .unwrap()
            .reshape((b * t, dim))
            .unwrap();
        let slow = Tensor::zeros((vocab, dim), DType::F64, &Device::Cpu)
            .unwrap()
            .index_add(&ids, &gc, 0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let v = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&fast), v(&slow));
        let bad = Tensor::new(&[9u32; 18], &Device::Cpu).unwrap();
        let err = cpu::scatter_sum(&g, &bad, &c, vocab)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("token id 9 is outside the vocabulary of 9"),
            "{err}"
        );
    }
}
