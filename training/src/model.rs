//! Models: logistic regression, a multilayer perceptron, and a small transformer-encoder text
//! classifier (tokens -> embedding -> self-attention -> MLP -> mean pool -> linear).

use candle_core::{D, DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::{Batch, Dataset, Inputs};
use crate::nn::{Embedding, LayerNorm, Linear, ParamStore, SelfAttention, Tape};
use crate::{Error, Result};

/// Which model to build.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    /// Multinomial logistic regression: one linear layer.
    #[default]
    Logistic,
    /// A multilayer perceptron with ReLU activations and the given hidden widths.
    Mlp {
        /// Widths of the hidden layers.
        hidden: Vec<usize>,
    },
    /// A transformer-encoder classifier over token sequences: token and position embeddings,
    /// `layers` pre-norm blocks (multi-head self-attention and a ReLU MLP, both residual),
    /// a final layer norm, mean pooling and a linear head.
    Transformer {
        /// Model (embedding) width.
        dim: usize,
        /// Attention heads (must divide `dim`).
        heads: usize,
        /// Hidden width of each block's MLP.
        mlp_dim: usize,
        /// Number of blocks.
        layers: usize,
    },
    /// A BERT-style encoder classifier (Hugging Face `BertForSequenceClassification`
    /// architecture; see [`crate::bert`]), usually loaded pretrained with
    /// [`crate::bert::load_pretrained`].
    Bert(crate::bert::BertSpec),
}

/// The shape of a model's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputShape {
    /// Dense feature vectors of this width.
    Features(usize),
    /// Token sequences of `seq_len` ids below `vocab`.
    Tokens {
        /// Tokens per sequence.
        seq_len: usize,
        /// Vocabulary size.
        vocab: usize,
    },
}

impl InputShape {
    /// The input shape of a data set.
    pub fn of(data: &Dataset) -> Self {
        match data.inputs() {
            Inputs::Features { dim, .. } => InputShape::Features(*dim),
            Inputs::Tokens { seq_len, vocab, .. } => InputShape::Tokens {
                seq_len: *seq_len,
                vocab: *vocab,
            },
        }
    }
}

#[derive(Debug, Clone)]
struct Block {
    ln1: LayerNorm,
    attn: SelfAttention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

#[derive(Debug, Clone)]
enum Arch {
    Mlp(Vec<Linear>),
    Transformer {
        tokens: Embedding,
        positions: Embedding,
        blocks: Vec<Block>,
        ln_final: LayerNorm,
        head: Linear,
    },
    Bert(Box<crate::bert::Bert>),
}

/// A classifier whose parameters live in a [`ParamStore`].
///
/// Not `Clone`: candle variables share storage, so a shallow copy would alias the parameters
/// and an optimizer step on one copy would silently change the other. Build a second model
/// with [`Model::new`] and load values with [`Model::load_flat`] instead.
#[derive(Debug)]
pub struct Model {
    spec: ModelSpec,
    input: InputShape,
    classes: usize,
    store: ParamStore,
    arch: Arch,
    dtype: DType,
    device: Device,
}

impl Model {
    /// Builds a model with seeded random initialization.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when a width is zero, `heads` does not divide `dim`, a
    /// feature model is given token inputs (or the reverse), or `classes < 2`.
    ///
    /// ```rust
    /// use candle_core::{DType, Device};
    /// use sotto_training::model::{InputShape, Model, ModelSpec};
    /// let mlp = ModelSpec::Mlp { hidden: vec![32] };
    /// let model = Model::new(&mlp, InputShape::Features(64), 10, DType::F32, &Device::Cpu, 1)?;
    /// assert_eq!(model.num_params(), 64 * 32 + 32 + 32 * 10 + 10);
    /// # Ok::<(), sotto_training::Error>(())
    /// ```
    pub fn new(
        spec: &ModelSpec,
        input: InputShape,
        classes: usize,
        dtype: DType,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        if classes < 2 {
            return Err(Error::invalid(
                "classes",
                classes,
                "a classifier needs at least 2",
            ));
        }
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(Error::invalid(
                "dtype",
                format!("{dtype:?}"),
                "must be f32 or f64",
            ));
        }
        let mut rng = sotto_dp::rng::seeded_rng(seed);
        let mut store = ParamStore::default();
        let arch = match (spec, input) {
            (ModelSpec::Logistic, InputShape::Features(d))
            | (ModelSpec::Mlp { .. }, InputShape::Features(d)) => {
                let hidden = match spec {
                    ModelSpec::Mlp { hidden } => hidden.clone(),
                    _ => Vec::new(),
                };
                if d == 0 || hidden.contains(&0) {
                    return Err(Error::invalid(
                        "hidden",
                        format!("{hidden:?}"),
                        "widths must be at least 1",
                    ));
                }
                let mut widths = vec![d];
                widths.extend(hidden);
                widths.push(classes);
                let layers = widths
                    .windows(2)
                    .enumerate()
                    .map(|(i, w)| {
                        Linear::new(
                            &mut store,
                            &format!("fc{i}"),
                            w[0],
                            w[1],
                            &mut rng,
                            dtype,
                            device,
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                Arch::Mlp(layers)
            }
            (
                ModelSpec::Transformer {
                    dim,
                    heads,
                    mlp_dim,
                    layers,
                },
                InputShape::Tokens { seq_len, vocab },
            ) => {
                if *dim == 0 || *mlp_dim == 0 || *layers == 0 || seq_len == 0 || vocab == 0 {
                    return Err(Error::invalid(
                        "transformer",
                        format!("dim={dim} mlp_dim={mlp_dim} layers={layers}"),
                        "all sizes must be at least 1",
                    ));
                }
                let tokens =
                    Embedding::new(&mut store, "tokens", vocab, *dim, &mut rng, dtype, device)?;
                let positions = Embedding::new(
                    &mut store,
                    "positions",
                    seq_len,
                    *dim,
                    &mut rng,
                    dtype,
                    device,
                )?;
                let blocks = (0..*layers)
                    .map(|l| {
                        let n = format!("block{l}");
                        Ok(Block {
                            ln1: LayerNorm::new(
                                &mut store,
                                &format!("{n}.ln1"),
                                *dim,
                                dtype,
                                device,
                            )?,
                            attn: SelfAttention::new(
                                &mut store,
                                &format!("{n}.attn"),
                                *dim,
                                *heads,
                                &mut rng,
                                dtype,
                                device,
                            )?,
                            ln2: LayerNorm::new(
                                &mut store,
                                &format!("{n}.ln2"),
                                *dim,
                                dtype,
                                device,
                            )?,
                            fc1: Linear::new(
                                &mut store,
                                &format!("{n}.fc1"),
                                *dim,
                                *mlp_dim,
                                &mut rng,
                                dtype,
                                device,
                            )?,
                            fc2: Linear::new(
                                &mut store,
                                &format!("{n}.fc2"),
                                *mlp_dim,
                                *dim,
                                &mut rng,
                                dtype,
                                device,
                            )?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let ln_final = LayerNorm::new(&mut store, "ln_final", *dim, dtype, device)?;
                let head = Linear::new(&mut store, "head", *dim, classes, &mut rng, dtype, device)?;
                Arch::Transformer {
                    tokens,
                    positions,
                    blocks,
                    ln_final,
                    head,
                }
            }
            (ModelSpec::Bert(bert), InputShape::Tokens { seq_len, vocab }) => {
                Arch::Bert(Box::new(crate::bert::Bert::new(
                    &mut store, bert, seq_len, vocab, classes, &mut rng, dtype, device,
                )?))
            }
            (spec, input) => {
                return Err(Error::invalid(
                    "model",
                    format!("{spec:?}"),
                    format!(
                        "does not accept inputs of shape {input:?}: logistic and mlp take features, transformer and bert take tokens"
                    ),
                ));
            }
        };
        Ok(Model {
            spec: spec.clone(),
            input,
            classes,
            store,
            arch,
            dtype,
            device: device.clone(),
        })
    }

    /// The specification it was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Whether it has LoRA adapters (a BERT encoder with [`crate::bert::LoraSpec`]): its
    /// training then updates only them and the classifier head ([`crate::nn::Trainable::Lora`]).
    pub fn has_lora(&self) -> bool {
        matches!(&self.spec, ModelSpec::Bert(b) if b.lora.is_some())
    }

    /// Its input shape.
    pub fn input_shape(&self) -> InputShape {
        self.input
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The parameters.
    pub fn params(&self) -> &ParamStore {
        &self.store
    }

    /// Total number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.store.params().iter().map(|p| p.numel()).sum()
    }

    /// All parameters flattened to `f32`, in [`ParamStore`] order (e.g. to broadcast the model
    /// after a round).
    ///
    /// # Errors
    /// [`Error::Tensor`] on device errors.
    pub fn to_flat(&self) -> Result<Vec<f32>> {
        let values: Vec<Tensor> = self
            .store
            .params()
            .iter()
            .map(|p| p.value().clone())
            .collect();
        crate::clipping::flatten(&values)
    }

    /// Overwrites all parameters from a flat vector produced by [`Model::to_flat`] of a model
    /// with the same specification.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the length differs from [`Model::num_params`] or a
    /// value is not finite.
    pub fn load_flat(&self, values: &[f32]) -> Result<()> {
        if values.len() != self.num_params() {
            return Err(Error::invalid(
                "values",
                values.len(),
                format!("expected {} parameters", self.num_params()),
            ));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "values",
                "non-finite",
                "every parameter must be finite",
            ));
        }
        let mut offset = 0;
        for p in self.store.params() {
            let n = p.numel();
            let part = values
                .get(offset..offset + n)
                .ok_or_else(|| Error::invalid("values", values.len(), "is too short"))?;
            offset += n;
            let t =
                Tensor::from_slice(part, p.value().dims(), &self.device)?.to_dtype(self.dtype)?;
            p.var().set(&t)?;
        }
        Ok(())
    }

    /// Floating-point type of the parameters.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Logits `(B, classes)`.
    pub(crate) fn forward(&self, tape: &mut Tape, inputs: &Tensor) -> Result<Tensor> {
        let s = &self.store;
        match &self.arch {
            Arch::Mlp(layers) => {
                if !matches!(self.input, InputShape::Features(_)) {
                    return Err(Error::Data(
                        "internal: feature model without features".into(),
                    ));
                }
                let mut x = inputs.to_dtype(self.dtype)?;
                for (i, layer) in layers.iter().enumerate() {
                    if i > 0 {
                        x = x.relu()?;
                    }
                    x = layer.forward(s, tape, &x)?;
                }
                Ok(x)
            }
            Arch::Transformer {
                tokens,
                positions,
                blocks,
                ln_final,
                head,
            } => {
                let ids = inputs.to_dtype(DType::U32)?;
                let (b, t) = ids.dims2()?;
                let pos = Tensor::arange(0u32, t as u32, &self.device)?
                    .unsqueeze(0)?
                    .broadcast_as((b, t))?
                    .contiguous()?;
                let mut x = tokens
                    .forward(s, tape, &ids)?
                    .add(&positions.forward(s, tape, &pos)?)?;
                for blk in blocks {
                    let a = blk.ln1.forward(s, tape, &x)?;
                    x = x.add(&blk.attn.forward(s, tape, &a)?)?;
                    let m = blk.ln2.forward(s, tape, &x)?;
                    let m = blk.fc1.forward(s, tape, &m)?.relu()?;
                    x = x.add(&blk.fc2.forward(s, tape, &m)?)?;
                }
                let pooled = ln_final.forward(s, tape, &x)?.mean(1)?;
                head.forward(s, tape, &pooled)
            }
            Arch::Bert(bert) => bert.forward(s, tape, &inputs.to_dtype(DType::U32)?),
        }
    }

    /// Per-sample cross-entropy losses `(B,)` of a forward pass through `tape`.
    pub(crate) fn per_sample_loss(&self, tape: &mut Tape, batch: &Batch) -> Result<Tensor> {
        let logits = self.forward(tape, &batch.inputs)?;
        cross_entropy(&logits, &batch.labels)
    }

    /// Per-sample cross-entropy losses on a data set, in chunks of 512 examples.
    ///
    /// # Errors
    /// [`Error::Data`] when the data set does not fit the model's input shape; [`Error::Tensor`]
    /// on device errors.
    pub fn losses(&self, data: &Dataset) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(data.len());
        self.check_data(data)?;
        for chunk in (0..data.len()).collect::<Vec<_>>().chunks(512) {
            let batch = data.batch(chunk, &self.device)?;
            let l = self.per_sample_loss(&mut Tape::plain(), &batch)?;
            out.extend(l.to_dtype(DType::F64)?.detach().to_vec1::<f64>()?);
        }
        Ok(out)
    }

    /// Fraction of correctly classified examples.
    ///
    /// # Errors
    /// As [`Model::losses`].
    pub fn accuracy(&self, data: &Dataset) -> Result<f64> {
        self.check_data(data)?;
        if data.is_empty() {
            return Ok(0.0);
        }
        let mut correct = 0usize;
        for chunk in (0..data.len()).collect::<Vec<_>>().chunks(512) {
            let batch = data.batch(chunk, &self.device)?;
            let logits = self.forward(&mut Tape::plain(), &batch.inputs)?;
            let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            let labels = batch.labels.to_vec1::<u32>()?;
            correct += pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
        }
        Ok(correct as f64 / data.len() as f64)
    }

    /// Checks that a data set fits the model.
    ///
    /// # Errors
    /// [`Error::Data`] on a mismatch of input shape or classes.
    pub fn check_data(&self, data: &Dataset) -> Result<()> {
        let shape = InputShape::of(data);
        let ok = match (shape, self.input) {
            (InputShape::Features(a), InputShape::Features(b)) => a == b,
            (
                InputShape::Tokens {
                    seq_len: s1,
                    vocab: v1,
                },
                InputShape::Tokens {
                    seq_len: s2,
                    vocab: v2,
                },
            ) => s1 == s2 && v1 <= v2,
            _ => false,
        };
        if !ok || data.num_classes() > self.classes {
            return Err(Error::Data(format!(
                "data of shape {shape:?} with {} classes does not fit a model for {:?} with {} classes",
                data.num_classes(),
                self.input,
                self.classes
            )));
        }
        Ok(())
    }
}

/// Per-sample cross-entropy `(B,)` of logits `(B, K)` against labels `(B,)`.
pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let z = logits.broadcast_sub(&m)?;
    let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let logp = z.broadcast_sub(&lse)?;
    let picked = logp.gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?;
    Ok(picked.squeeze(1)?.neg()?)
}
