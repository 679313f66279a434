//! Optimizers applied to a (noised) gradient: SGD with momentum and Adam.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::model::Model;
use crate::nn::Trainable;
use crate::{Error, Result};

/// Which optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Stochastic gradient descent with optional heavy-ball momentum (0 for none).
    Sgd {
        /// Momentum in `[0, 1)`.
        momentum: f64,
    },
    /// Adam (Kingma and Ba 2015); on a noised gradient this is DP-Adam.
    Adam {
        /// First-moment decay, in `[0, 1)`.
        beta1: f64,
        /// Second-moment decay, in `[0, 1)`.
        beta2: f64,
        /// Added to the root of the second moment (> 0).
        eps: f64,
    },
}

impl Default for OptimizerKind {
    fn default() -> Self {
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Optimizer state for the trained parameters of one model.
///
/// # Privacy
/// The optimizer only post-processes the gradient it is given: when that gradient is a noised
/// clipped sum (divided by a data-independent denominator), the updates are as private as the
/// noised sums.
#[derive(Debug, Clone)]
pub struct Optimizer {
    kind: OptimizerKind,
    learning_rate: f64,
    trainable: Trainable,
    trained: Vec<usize>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    steps: u64,
}

impl Optimizer {
    /// An optimizer for the parameters of `model` selected by `trainable`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the learning rate is not finite and positive, a
    /// momentum or beta is outside `[0, 1)`, or `eps` is not positive.
    pub fn new(
        kind: OptimizerKind,
        learning_rate: f64,
        trainable: Trainable,
        model: &Model,
    ) -> Result<Self> {
        sotto_dp::error::check_positive("learning_rate", learning_rate)?;
        let unit = |name: &'static str, v: f64| -> Result<()> {
            sotto_dp::error::check_finite(name, v)?;
            if (0.0..1.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::invalid(name, v, "must lie in [0, 1)"))
            }
        };
        match kind {
            OptimizerKind::Sgd { momentum } => unit("momentum", momentum)?,
            OptimizerKind::Adam { beta1, beta2, eps } => {
                unit("beta1", beta1)?;
                unit("beta2", beta2)?;
                sotto_dp::error::check_positive("eps", eps)?;
            }
        }
        let trained = model.params().trainable_indices(trainable);
        let zeros = trained
            .iter()
            .map(|&i| Ok(model.params().get(i)?.value().zeros_like()?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Optimizer {
            kind,
            learning_rate,
            trainable,
            trained,
            m: zeros.clone(),
            v: zeros,
            steps: 0,
        })
    }

    /// Which parameters it trains.
    pub fn trainable(&self) -> Trainable {
        self.trainable
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The state a checkpoint keeps: steps taken, first and second moments (one tensor per
    /// trained parameter).
    pub(crate) fn state(&self) -> (u64, &[Tensor], &[Tensor]) {
        (self.steps, &self.m, &self.v)
    }

    /// Restores a state saved by [`Optimizer::state`] of an optimizer of the same model.
    pub(crate) fn restore(&mut self, steps: u64, m: Vec<Tensor>, v: Vec<Tensor>) -> Result<()> {
        let fits = |new: &[Tensor], old: &[Tensor]| {
            new.len() == old.len() && new.iter().zip(old).all(|(a, b)| a.dims() == b.dims())
        };
        if !fits(&m, &self.m) || !fits(&v, &self.v) {
            return Err(Error::Data(
                "the optimizer state does not fit the model's trained parameters".into(),
            ));
        }
        let dtype = self.m.first().map(|t| t.dtype());
        let cast = |ts: Vec<Tensor>| -> Result<Vec<Tensor>> {
            ts.into_iter()
                .map(|t| {
                    Ok(match dtype {
                        Some(d) => t.to_dtype(d)?,
                        None => t,
                    })
                })
                .collect()
        };
        self.m = cast(m)?;
        self.v = cast(v)?;
        self.steps = steps;
        Ok(())
    }

    /// One step along `grads` (one tensor per trained parameter, in order, already averaged).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the number or shapes of `grads` do not match.
    pub fn step(&mut self, model: &Model, grads: &[Tensor]) -> Result<()> {
        self.step_scaled(model, grads, 1.0)
    }

    /// [`Self::step`] along `scale * grads` (for SGD without momentum the scale is folded into
    /// the learning rate, so no scaled copy of the gradient is made).
    fn step_scaled(&mut self, model: &Model, grads: &[Tensor], scale: f64) -> Result<()> {
        if grads.len() != self.trained.len() {
            return Err(Error::invalid(
                "grads",
                grads.len(),
                format!(
                    "expected one gradient per trained parameter ({})",
                    self.trained.len()
                ),
            ));
        }
        self.steps += 1;
        let lr = self.learning_rate;
        for (k, (&idx, g)) in self.trained.iter().zip(grads).enumerate() {
            let param = model.params().get(idx)?;
            let w = param.value();
            if g.dims() != w.dims() {
                return Err(Error::invalid(
                    "grads",
                    format!("{:?}", g.dims()),
                    format!(
                        "gradient shape differs from parameter {} {:?}",
                        param.name(),
                        w.dims()
                    ),
                ));
            }
            let g = g.to_dtype(w.dtype())?;
            let (g, lr) = match self.kind {
                OptimizerKind::Sgd { momentum } if momentum <= 0.0 => (g, lr * scale),
                _ if scale != 1.0 => (g.affine(scale, 0.0)?, lr),
                _ => (g, lr),
            };
            let update = match self.kind {
                OptimizerKind::Sgd { momentum } => {
                    if momentum > 0.0 {
                        self.m[k] = self.m[k].affine(momentum, 0.0)?.add(&g)?;
                        self.m[k].clone()
                    } else {
                        g
                    }
                }
                OptimizerKind::Adam { beta1, beta2, eps } => {
                    self.m[k] = self.m[k]
                        .affine(beta1, 0.0)?
                        .add(&g.affine(1.0 - beta1, 0.0)?)?;
                    self.v[k] = self.v[k]
                        .affine(beta2, 0.0)?
                        .add(&g.sqr()?.affine(1.0 - beta2, 0.0)?)?;
                    let t = self.steps as i32;
                    let mhat = self.m[k].affine(1.0 / (1.0 - beta1.powi(t)), 0.0)?;
                    let vhat = self.v[k].affine(1.0 / (1.0 - beta2.powi(t)), 0.0)?;
                    mhat.div(&vhat.sqrt()?.affine(1.0, eps)?)?
                }
            };
            param
                .var()
                .set(&w.sub(&update.affine(lr, 0.0)?)?.detach())?;
        }
        Ok(())
    }

    /// One step along `sum / denominator`, where `sum` is a flattened gradient sum over the
    /// trained parameters (e.g. an aggregated noised clipped sum from secure aggregation).
    ///
    /// # Privacy
    /// `denominator` must not depend on the data: use the expected batch size
    /// `sampling_rate * n` under Poisson sampling, never the realized batch size.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `sum` has the wrong length, holds a non-finite value,
    /// or `denominator` is not finite and positive.
    pub fn apply_sum(&mut self, model: &Model, sum: &[f32], denominator: f64) -> Result<()> {
        sotto_dp::error::check_positive("denominator", denominator)?;
        if sum.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "sum",
                "non-finite",
                "every coordinate must be finite",
            ));
        }
        let expected = model.trainable_len(self.trainable);
        if sum.len() != expected {
            return Err(Error::invalid(
                "sum",
                sum.len(),
                format!("expected {expected} values (the trained parameters, flattened)"),
            ));
        }
        let mut grads = Vec::with_capacity(self.trained.len());
        let mut offset = 0;
        for &idx in &self.trained {
            let p = model.params().get(idx)?;
            let n = p.numel();
            let part = sum
                .get(offset..offset + n)
                .ok_or_else(|| Error::invalid("sum", sum.len(), "is too short"))?;
            offset += n;
            grads.push(Tensor::from_slice(part, p.value().dims(), model.device())?);
        }
        self.step_scaled(model, &grads, 1.0 / denominator)
    }
}
