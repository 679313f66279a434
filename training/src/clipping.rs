//! Per-sample gradient clipping in one backward pass (book-keeping, Bu et al. 2023).
//!
//! For a linear layer with input activations `a` `(B, T, d)` and output gradients `g`
//! `(B, T, p)` (read from the layer's zero probe variable), sample `i`'s weight gradient is
//! `g_i^T a_i` and its bias gradient `sum_t g_i,t`. The squared Frobenius norm of `g_i^T a_i`
//! is computed either from Gram matrices, `<a_i a_i^T, g_i g_i^T>` (the *ghost norm*, cost
//! ~ `2 B T^2 (p + d)`), or by materializing `g_i^T a_i` (cost ~ `B T p d`), whichever is
//! cheaper: ghost when `2 T^2 <= p d`. With `T = 1` the ghost norm is `|a_i|^2 |g_i|^2`. The
//! clipped sum `sum_i c_i g_i^T a_i` is one matmul per layer: `(c * g)^T a` over all `B T`
//! rows. Embeddings use the same two routes with the one-hot token matrix in place of `a`
//! (ghost: `<[id_s = id_t], g_i g_i^T>`; sum: an index-add), and layer norms materialize their
//! small per-sample scale and shift gradients directly.

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
    /// `sum_i c_i g_i` for each trained parameter, in [`crate::nn::ParamStore`] order.
    pub grads: Vec<Tensor>,
    /// `|g_i|` over the trained parameters, per sample, before scaling.
    pub norms: Vec<f64>,
    /// Sum of the per-sample losses of the batch.
    pub loss_sum: f64,
}

/// A party's clipped gradient sum for one batch, flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct ClippedSum {
    /// `sum_i c_i g_i`, the trained parameters flattened in order; its L2 norm changes by at
    /// most `clip_norm` when one sample is added or removed.
    pub values: Vec<f32>,
    /// Number of samples in the batch.
    pub batch_size: usize,
    /// Sum of the per-sample losses (for progress display only; not privatized).
    pub loss_sum: f64,
}

/// Flattens per-parameter tensors into one `f32` vector, in order.
///
/// # Errors
/// [`Error::Tensor`] on device errors.
pub fn flatten(grads: &[Tensor]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for g in grads {
        out.extend(g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
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

        // Pass 1: per-sample squared norms, keeping what pass 2 needs.
        let mut seen = vec![false; self.params().params().len()];
        let mut prepared = Vec::with_capacity(tape.entries.len());
        let mut sq: Option<Tensor> = None;
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
            let prep = prepare(entry, g, b, &is_trained, clipping.strategy)?;
            if let Some(s) = &prep.sq_norm {
                sq = Some(match sq {
                    Some(acc) => acc.add(s)?,
                    None => s.clone(),
                });
            }
            prepared.push(prep);
        }
        let norms: Vec<f64> = match sq {
            Some(s) => s
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?
                .into_iter()
                .map(|v| v.max(0.0).sqrt())
                .collect(),
            None => vec![0.0; b],
        };
        // Pass 2 needs only `prepared`: free the gradient store, the loss graph and the tape
        // (their tensors would otherwise stay alive through the clipped-sum matmuls).
        drop(grads);
        drop(losses);
        drop(tape);
        let factors: Vec<f64> = norms.iter().map(|&n| clipping.factor(n)).collect();
        let c = Tensor::from_vec(factors, b, self.device())?.to_dtype(self.dtype())?;

        // Pass 2: clipped sums, one matmul (or index-add) per parameter.
        let mut sums: HashMap<usize, Tensor> = HashMap::new();
        for prep in &prepared {
            prep.clipped_sums(&c, &mut sums)?;
        }
        let mut out = Vec::with_capacity(trained.len());
        for &idx in &trained {
            out.push(match sums.remove(&idx) {
                Some(t) => t,
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
    /// The result is NOT private: it is the exact clipped sum of the party's samples. Its L2
    /// sensitivity to one sample is `clipping.clip_norm`; noise must be added (by
    /// [`crate::noise::GradientNoise`], or as distributed noise shares inside secure
    /// aggregation) before anything derived from it leaves the party.
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
    sq_norm: Option<Tensor>,
    sums: Vec<SumPlan>,
}

/// How to form one parameter's clipped sum from the scale factors `c` `(B,)`.
enum SumPlan {
    /// `((c * g)^T a)`: `g` `(B, T, p)`, `a` `(B*T, d)`.
    Outer { param: usize, g: Tensor, a: Tensor },
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

fn prepare(
    entry: &Entry,
    g: Tensor,
    b: usize,
    is_trained: &dyn Fn(usize) -> bool,
    strategy: NormStrategy,
) -> Result<Prepared> {
    let mut sq: Option<Tensor> = None;
    let mut add = |t: Tensor| -> Result<()> {
        sq = Some(match sq.take() {
            Some(acc) => acc.add(&t)?,
            None => t,
        });
        Ok(())
    };
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
            let g3 = g.reshape((b, t, p))?;
            if is_trained(*weight) {
                let ghost = match strategy {
                    NormStrategy::Auto => 2 * t * t <= p * d,
                    NormStrategy::Ghost => true,
                    NormStrategy::Materialize => false,
                };
                let nw = if t == 1 && ghost {
                    input
                        .sqr()?
                        .sum(1)?
                        .mul(&g3.reshape((b, p))?.sqr()?.sum(1)?)?
                } else if ghost {
                    let a3 = input.reshape((b, t, d))?;
                    let aa = a3.matmul(&a3.t()?)?;
                    let gg = g3.matmul(&g3.t()?)?;
                    aa.mul(&gg)?.sum((1, 2))?
                } else {
                    let a3 = input.reshape((b, t, d))?;
                    let per = g3.t()?.matmul(&a3)?; // (B, p, d)
                    sq_sum_rows(&per)?
                };
                add(nw)?;
                sums.push(SumPlan::Outer {
                    param: *weight,
                    g: g3.clone(),
                    a: input.clone(),
                });
            }
            if is_trained(*bias) {
                // (B, p); with T = 1 a view of the output gradient, no copy
                let per = if t == 1 {
                    g3.reshape((b, p))?
                } else {
                    g3.sum(1)?
                };
                add(sq_sum_rows(&per)?)?;
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
                let dim = g.dim(D::Minus1)?;
                let ghost = match strategy {
                    NormStrategy::Auto => 2 * t * t <= vocab * dim,
                    NormStrategy::Ghost => true,
                    NormStrategy::Materialize => false,
                };
                let nw = if ghost {
                    let same = ids
                        .unsqueeze(2)?
                        .broadcast_eq(&ids.unsqueeze(1)?)?
                        .to_dtype(g.dtype())?; // (B, T, T)
                    let gg = g.matmul(&g.t()?)?;
                    same.mul(&gg)?.sum((1, 2))?
                } else {
                    let range =
                        Tensor::arange(0u32, *vocab as u32, g.device())?.reshape((1, 1, *vocab))?;
                    let onehot = ids
                        .unsqueeze(2)?
                        .broadcast_eq(&range)?
                        .to_dtype(g.dtype())?; // (B,T,V)
                    let per = onehot.t()?.matmul(&g)?; // (B, V, dim)
                    sq_sum_rows(&per)?
                };
                add(nw)?;
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
            if is_trained(*scale) {
                let per = g3.mul(normed)?.sum(1)?; // (B, d)
                add(sq_sum_rows(&per)?)?;
                sums.push(SumPlan::PerSample {
                    param: *scale,
                    per_sample: per,
                    shape: vec![d],
                });
            }
            if is_trained(*shift) {
                let per = g3.sum(1)?;
                add(sq_sum_rows(&per)?)?;
                sums.push(SumPlan::PerSample {
                    param: *shift,
                    per_sample: per,
                    shape: vec![d],
                });
            }
        }
    }
    Ok(Prepared { sq_norm: sq, sums })
}

impl Prepared {
    fn clipped_sums(&self, c: &Tensor, out: &mut HashMap<usize, Tensor>) -> Result<()> {
        let b = c.dim(0)?;
        for plan in &self.sums {
            let (param, sum) = match plan {
                SumPlan::Outer { param, g, a } => {
                    let (_, t, p) = g.dims3()?;
                    let gc = g
                        .broadcast_mul(&c.reshape((b, 1, 1))?)?
                        .reshape((b * t, p))?;
                    (*param, gc.t()?.matmul(a)?)
                }
                SumPlan::PerSample {
                    param,
                    per_sample,
                    shape,
                } => (
                    *param,
                    c.reshape((1, b))?
                        .matmul(per_sample)?
                        .reshape(shape.as_slice())?,
                ),
                SumPlan::Scatter {
                    param,
                    g,
                    ids,
                    vocab,
                } => {
                    let (_, t, dim) = g.dims3()?;
                    let gc = g
                        .broadcast_mul(&c.reshape((b, 1, 1))?)?
                        .reshape((b * t, dim))?;
                    let zeros = Tensor::zeros((*vocab, dim), g.dtype(), g.device())?;
                    (*param, zeros.index_add(ids, &gc, 0)?)
                }
            };
            out.insert(param, sum);
        }
        Ok(())
    }
}
