//! Parameters, layers and the tape that records what per-sample clipping needs.
//!
//! Every layer with parameters (linear, embedding, layer norm) reads its parameters through a
//! `Tape` (crate-private). In plain mode the parameters are candle [`Var`]s, so an ordinary
//! backward pass gives their (batch-summed) gradients. In recording mode the parameters are
//! detached and the layer adds a zero *probe* variable to its output and keeps its input activation
//! (or, for a layer norm, its normalized input; for an embedding, its token ids). candle keeps
//! gradients only for variables, so one backward pass of the summed loss then yields, in the
//! probes' gradients, each sample's gradient with respect to each layer output — everything needed
//! to compute per-sample gradient norms and the clipped gradient sum (book-keeping, Bu et al.
//! 2023).

use candle_core::{D, DType, Device, Tensor, Var};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What role a parameter plays; decides whether DP-BiTFiT trains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// A linear layer's weight matrix `(out, in)`.
    Weight,
    /// A linear layer's bias `(out,)`.
    Bias,
    /// An embedding table `(vocab, dim)` (token or position).
    Embedding,
    /// A layer norm's scale (gamma).
    NormScale,
    /// A layer norm's shift (beta), a bias term.
    NormShift,
}

/// Which parameters are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trainable {
    /// Every parameter.
    #[default]
    All,
    /// Only bias terms (linear biases and layer-norm shifts): DP-BiTFiT (Bu et al. 2022).
    /// The other parameters stay frozen.
    BiasOnly,
    /// Only the low-rank adapters (`*.lora_a.weight`, `*.lora_b.weight`, see
    /// [`crate::bert::LoraSpec`]) and the classifier head (`classifier.*`): DP fine-tuning with
    /// LoRA (Hu et al. 2021; Yu et al. 2022). The encoder stays frozen.
    Lora,
}

impl Trainable {
    /// Whether the parameter `name` of this kind is trained.
    pub fn includes(self, name: &str, kind: ParamKind) -> bool {
        match self {
            Trainable::All => true,
            Trainable::BiasOnly => matches!(kind, ParamKind::Bias | ParamKind::NormShift),
            Trainable::Lora => {
                name.ends_with(".lora_a.weight")
                    || name.ends_with(".lora_b.weight")
                    || name.starts_with("classifier.")
            }
        }
    }
}

/// One named parameter (not `Clone`: the underlying candle variable would be shared).
#[derive(Debug)]
pub struct Param {
    name: String,
    kind: ParamKind,
    var: Var,
}

impl Param {
    /// The parameter's name, e.g. `block0.attn.q.weight`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its role.
    pub fn kind(&self) -> ParamKind {
        self.kind
    }

    /// Its current value.
    pub fn value(&self) -> &Tensor {
        self.var.as_tensor()
    }

    /// Number of scalars.
    pub fn numel(&self) -> usize {
        self.var.as_tensor().elem_count()
    }

    pub(crate) fn var(&self) -> &Var {
        &self.var
    }
}

/// All parameters of a model, in a fixed order (the order of flattened gradient vectors).
#[derive(Debug, Default)]
pub struct ParamStore {
    params: Vec<Param>,
}

impl ParamStore {
    /// The parameters in order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub(crate) fn add(&mut self, name: String, kind: ParamKind, value: Tensor) -> Result<usize> {
        self.params.push(Param {
            name,
            kind,
            var: Var::from_tensor(&value)?,
        });
        Ok(self.params.len() - 1)
    }

    pub(crate) fn get(&self, idx: usize) -> Result<&Param> {
        self.params
            .get(idx)
            .ok_or_else(|| Error::Data(format!("internal: no parameter {idx}")))
    }

    /// Indices of the trained parameters, in order.
    pub fn trainable_indices(&self, trainable: Trainable) -> Vec<usize> {
        (0..self.params.len())
            .filter(|&i| trainable.includes(&self.params[i].name, self.params[i].kind))
            .collect()
    }
}

/// A layer's record for per-sample clipping.
#[derive(Debug)]
pub(crate) enum Entry {
    /// `y = x W^T + b`; `input` is `x` flattened to `(B*T, in)`.
    Linear {
        input: Tensor,
        probe: Var,
        weight: usize,
        bias: usize,
    },
    /// `y = E[ids]`; `ids` is `(B, T)` u32.
    Embedding {
        ids: Tensor,
        probe: Var,
        table: usize,
        vocab: usize,
    },
    /// `y = xhat * gamma + beta`; `normed` is `xhat` as `(B, T, d)`.
    LayerNorm {
        normed: Tensor,
        probe: Var,
        scale: usize,
        shift: usize,
    },
}

/// Records layer activations and probes during a forward pass (see the module docs).
#[derive(Debug)]
pub(crate) struct Tape {
    recording: bool,
    pub(crate) entries: Vec<Entry>,
}

impl Tape {
    /// A tape for an ordinary forward pass (parameters are variables, nothing recorded).
    pub(crate) fn plain() -> Self {
        Tape {
            recording: false,
            entries: Vec::new(),
        }
    }

    /// A tape that records probes and activations (parameters are detached).
    pub(crate) fn recording() -> Self {
        Tape {
            recording: true,
            entries: Vec::new(),
        }
    }

    fn param(&self, store: &ParamStore, idx: usize) -> Result<Tensor> {
        let p = store.get(idx)?;
        Ok(if self.recording {
            p.var.as_detached_tensor()
        } else {
            p.var.as_tensor().clone()
        })
    }

    /// When recording, attaches a probe to the layer output `y`: a zero variable added to it
    /// when `y` is part of the autograd graph, or, when nothing upstream needs a gradient
    /// (first layer, embeddings), `y` itself turned into a leaf variable, so that no gradient
    /// is computed or stored for anything below it. Either way the probe's gradient is the
    /// gradient with respect to the layer output.
    fn probe(&self, y: Tensor) -> Result<(Tensor, Option<Var>)> {
        if !self.recording {
            return Ok((y, None));
        }
        if y.track_op() {
            let probe = Var::zeros(y.shape(), y.dtype(), y.device())?;
            let y = y.add(probe.as_tensor())?;
            Ok((y, Some(probe)))
        } else {
            let probe = Var::from_tensor(&y)?;
            Ok((probe.as_tensor().clone(), Some(probe)))
        }
    }
}

/// Uniform initialization in `[-bound, bound]` from a seeded generator. Initialization is not
/// a privacy mechanism, so a float uniform is fine here.
pub(crate) fn uniform_init<R: RngCore + ?Sized>(
    rng: &mut R,
    shape: &[usize],
    bound: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n)
        .map(|_| {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            (2.0 * u - 1.0) * bound
        })
        .collect();
    Ok(Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)
}

/// A fully connected layer `y = x W^T + b` applied to the last dimension.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: usize,
    bias: usize,
}

impl Linear {
    pub(crate) fn new<R: RngCore + ?Sized>(
        store: &mut ParamStore,
        name: &str,
        in_dim: usize,
        out_dim: usize,
        rng: &mut R,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let w = uniform_init(rng, &[out_dim, in_dim], bound, dtype, device)?;
        let b = uniform_init(rng, &[out_dim], bound, dtype, device)?;
        Ok(Linear {
            weight: store.add(format!("{name}.weight"), ParamKind::Weight, w)?,
            bias: store.add(format!("{name}.bias"), ParamKind::Bias, b)?,
        })
    }

    /// A linear layer with the given weight `(out, in)` and bias `(out,)`.
    pub(crate) fn from_tensors(
        store: &mut ParamStore,
        name: &str,
        weight: Tensor,
        bias: Tensor,
    ) -> Result<Self> {
        Ok(Linear {
            weight: store.add(format!("{name}.weight"), ParamKind::Weight, weight)?,
            bias: store.add(format!("{name}.bias"), ParamKind::Bias, bias)?,
        })
    }

    pub(crate) fn forward(
        &self,
        store: &ParamStore,
        tape: &mut Tape,
        x: &Tensor,
    ) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (&in_dim, lead) = dims
            .split_last()
            .ok_or_else(|| Error::Data("linear layer input has no dimensions".into()))?;
        let n: usize = lead.iter().product();
        let x2 = x.reshape((n, in_dim))?;
        let w = tape.param(store, self.weight)?;
        let b = tape.param(store, self.bias)?;
        let p = w.dim(0)?;
        let mut out_dims = lead.to_vec();
        out_dims.push(p);
        if tape.recording && x2.track_op() {
            // The probe is the bias itself, expanded to one copy per row: `y = x W^T + P` with
            // `P = b` broadcast, so the probe's gradient is the output gradient. Backward
            // computes only that and the input gradient; the weight gradient an ordinary matmul
            // would also compute (and keep) is not needed, the clipped sum replaces it.
            let probe = Var::from_tensor(&b.broadcast_as((n, p))?)?;
            let y = x2.apply_op3(&w, probe.as_tensor(), RecordingLinear)?;
            tape.entries.push(Entry::Linear {
                input: x2.detach(),
                probe,
                weight: self.weight,
                bias: self.bias,
            });
            return Ok(y.reshape(out_dims)?);
        }
        // Plain mode; or the first recorded layer, where nothing upstream needs a gradient and
        // (with detached parameters) no graph node is built at all.
        let y = x2.matmul(&w.t()?)?.broadcast_add(&b)?;
        let (y, probe) = tape.probe(y.reshape(out_dims)?)?;
        if let Some(probe) = probe {
            tape.entries.push(Entry::Linear {
                input: x2.detach(),
                probe,
                weight: self.weight,
                bias: self.bias,
            });
        }
        Ok(y)
    }
}

/// `x W^T + P` for `x` `(n, d)`, `W` `(p, d)`, `P` `(n, p)` (the bias expanded per row, the
/// probe variable), whose backward pass returns the gradients for `x` (`g W`) and `P` (`g`),
/// never for `W` (frozen while recording).
struct RecordingLinear;

fn linear_fwd<S: candle_core::backend::BackendStorage>(
    s1: &S,
    l1: &candle_core::Layout,
    s2: &S,
    l2: &candle_core::Layout,
    s3: &S,
    l3: &candle_core::Layout,
) -> candle_core::Result<(S, candle_core::Shape)> {
    let (n, d) = l1.shape().dims2()?;
    let (p, d2) = l2.shape().dims2()?;
    if d != d2 {
        return Err(candle_core::Error::Msg(format!(
            "linear layer: input width {d} differs from weight width {d2}"
        )));
    }
    if l3.shape().dims() != [n, p] {
        return Err(candle_core::Error::Msg(
            "linear layer: probe shape mismatch".into(),
        ));
    }
    let y = s1.matmul(s2, (1, n, p, d), l1, &l2.transpose(0, 1)?)?;
    let y_layout = candle_core::Layout::contiguous((n, p));
    let out = y.binary_impl::<candle_core::op::Add>(s3, &y_layout, l3)?;
    Ok((out, candle_core::Shape::from((n, p))))
}

impl candle_core::CustomOp3 for RecordingLinear {
    fn name(&self) -> &'static str {
        "sotto-recording-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        linear_fwd(s1, l1, s2, l2, s3, l3)
    }

    // Not cfg-gated: without the `cuda` feature candle substitutes a stub storage type, so
    // this GPU path is type-checked in every build (and runs with `--features cuda`).
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CudaStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
        linear_fwd(s1, l1, s2, l2, s3, l3)
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _probe: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(w)?), None, Some(grad.clone())))
    }
}

/// `xhat * gamma + P` (`gamma` broadcast over the last dimension; `P` the shift expanded to the
/// shape of `xhat`, the probe variable), whose backward pass returns the gradients for `xhat`
/// and `P`, never for `gamma` (frozen while recording).
struct RecordingNormAffine;

fn norm_affine_fwd<S: candle_core::backend::BackendStorage>(
    s1: &S,
    l1: &candle_core::Layout,
    s2: &S,
    l2: &candle_core::Layout,
    s3: &S,
    l3: &candle_core::Layout,
) -> candle_core::Result<(S, candle_core::Shape)> {
    let shape = l1.shape().clone();
    let y = s1.binary_impl::<candle_core::op::Mul>(s2, l1, &l2.broadcast_as(shape.clone())?)?;
    let y_layout = candle_core::Layout::contiguous(shape.clone());
    let out =
        y.binary_impl::<candle_core::op::Add>(s3, &y_layout, &l3.broadcast_as(shape.clone())?)?;
    Ok((out, shape))
}

impl candle_core::CustomOp3 for RecordingNormAffine {
    fn name(&self) -> &'static str {
        "sotto-recording-norm-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &candle_core::CpuStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CpuStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CpuStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        norm_affine_fwd(s1, l1, s2, l2, s3, l3)
    }

    // Not cfg-gated: without the `cuda` feature candle substitutes a stub storage type, so
    // this GPU path is type-checked in every build (and runs with `--features cuda`).
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &candle_core::Layout,
        s2: &candle_core::CudaStorage,
        l2: &candle_core::Layout,
        s3: &candle_core::CudaStorage,
        l3: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
        norm_affine_fwd(s1, l1, s2, l2, s3, l3)
    }

    fn bwd(
        &self,
        _xhat: &Tensor,
        gamma: &Tensor,
        _probe: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.broadcast_mul(gamma)?), None, Some(grad.clone())))
    }
}

/// A lookup table `(vocab, dim)` mapping token ids `(B, T)` to `(B, T, dim)`.
#[derive(Debug, Clone)]
pub(crate) struct Embedding {
    table: usize,
    vocab: usize,
}

impl Embedding {
    pub(crate) fn new<R: RngCore + ?Sized>(
        store: &mut ParamStore,
        name: &str,
        vocab: usize,
        dim: usize,
        rng: &mut R,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let t = uniform_init(rng, &[vocab, dim], 3f64.sqrt() * 0.3, dtype, device)?;
        Ok(Embedding {
            table: store.add(format!("{name}.table"), ParamKind::Embedding, t)?,
            vocab,
        })
    }

    pub(crate) fn forward(
        &self,
        store: &ParamStore,
        tape: &mut Tape,
        ids: &Tensor,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let table = tape.param(store, self.table)?;
        let dim = table.dim(1)?;
        let y = table
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, dim))?;
        let (y, probe) = tape.probe(y)?;
        if let Some(probe) = probe {
            tape.entries.push(Entry::Embedding {
                ids: ids.clone(),
                probe,
                table: self.table,
                vocab: self.vocab,
            });
        }
        Ok(y)
    }
}

/// Layer normalization over the last dimension, with scale and shift.
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    scale: usize,
    shift: usize,
    eps: f64,
}

/// Added to the variance in layer normalization.
pub(crate) const LAYER_NORM_EPS: f64 = 1e-5;

impl LayerNorm {
    pub(crate) fn new(
        store: &mut ParamStore,
        name: &str,
        dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::with_eps(store, name, dim, LAYER_NORM_EPS, dtype, device)
    }

    /// A layer norm adding `eps` to the variance (BERT: 1e-12).
    pub(crate) fn with_eps(
        store: &mut ParamStore,
        name: &str,
        dim: usize,
        eps: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Ok(LayerNorm {
            eps,
            scale: store.add(
                format!("{name}.scale"),
                ParamKind::NormScale,
                Tensor::ones(dim, dtype, device)?,
            )?,
            shift: store.add(
                format!("{name}.shift"),
                ParamKind::NormShift,
                Tensor::zeros(dim, dtype, device)?,
            )?,
        })
    }

    pub(crate) fn forward(
        &self,
        store: &ParamStore,
        tape: &mut Tape,
        x: &Tensor,
    ) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xhat = xc.broadcast_div(&var.affine(1.0, self.eps)?.sqrt()?)?;
        let gamma = tape.param(store, self.scale)?;
        let beta = tape.param(store, self.shift)?;
        let (y, probe) = if tape.recording && xhat.track_op() {
            // The probe is the shift expanded to the output shape (see `RecordingNormAffine`).
            let probe = Var::from_tensor(&beta.broadcast_as(xhat.shape())?)?;
            let y = xhat.apply_op3(&gamma, probe.as_tensor(), RecordingNormAffine)?;
            (y, Some(probe))
        } else {
            tape.probe(xhat.broadcast_mul(&gamma)?.broadcast_add(&beta)?)?
        };
        if let Some(probe) = probe {
            let dims = xhat.dims();
            let b = dims.first().copied().unwrap_or(1);
            let d = dims.last().copied().unwrap_or(1);
            let n = xhat.elem_count() / (b * d).max(1);
            tape.entries.push(Entry::LayerNorm {
                normed: xhat.detach().reshape((b, n, d))?,
                probe,
                scale: self.scale,
                shift: self.shift,
            });
        }
        Ok(y)
    }
}

/// Softmax over the last dimension (max-subtracted for stability).
pub(crate) fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Multi-head self-attention with query, key, value and output projections (all [`Linear`]).
#[derive(Debug, Clone)]
pub(crate) struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    lora: Option<LoraAdapters>,
}

/// Low-rank adapters on the query and value projections: `q = x Wq^T + bq + s B_q A_q x`
/// (the same for `v`), `s = alpha / r`. Each factor is a recording [`Linear`] layer (its bias
/// zero and frozen), so per-sample clipping sees two ordinary linear layers.
#[derive(Debug, Clone)]
struct LoraAdapters {
    q_a: Linear,
    q_b: Linear,
    v_a: Linear,
    v_b: Linear,
    scale: f64,
}

impl LoraAdapters {
    /// Adapters of rank `rank` for projections of width `dim`, named `{q,v}.lora_{a,b}`:
    /// `A` (`(rank, dim)`) uniform in `+-1/sqrt(dim)`, `B` (`(dim, rank)`) zero, so the adapted
    /// model starts as the pretrained one.
    #[allow(clippy::too_many_arguments)]
    fn new<R: RngCore + ?Sized>(
        store: &mut ParamStore,
        q: &str,
        v: &str,
        dim: usize,
        rank: usize,
        alpha: f64,
        rng: &mut R,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if rank == 0 || rank > dim {
            return Err(Error::invalid(
                "lora rank",
                rank,
                format!("must be between 1 and the hidden width {dim}"),
            ));
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(Error::invalid("lora alpha", alpha, "must be positive"));
        }
        let bound = 1.0 / (dim as f64).sqrt();
        let mut pair = |name: &str, rng: &mut R| -> Result<(Linear, Linear)> {
            let a = Linear::from_tensors(
                store,
                &format!("{name}.lora_a"),
                uniform_init(rng, &[rank, dim], bound, dtype, device)?,
                Tensor::zeros(rank, dtype, device)?,
            )?;
            let b = Linear::from_tensors(
                store,
                &format!("{name}.lora_b"),
                Tensor::zeros((dim, rank), dtype, device)?,
                Tensor::zeros(dim, dtype, device)?,
            )?;
            Ok((a, b))
        };
        let (q_a, q_b) = pair(q, rng)?;
        let (v_a, v_b) = pair(v, rng)?;
        Ok(LoraAdapters {
            q_a,
            q_b,
            v_a,
            v_b,
            scale: alpha / rank as f64,
        })
    }
}

impl SelfAttention {
    pub(crate) fn new<R: RngCore + ?Sized>(
        store: &mut ParamStore,
        name: &str,
        dim: usize,
        heads: usize,
        rng: &mut R,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let names = ["q", "k", "v", "o"].map(|part| format!("{name}.{part}"));
        Self::with_names(store, &names, dim, heads, rng, dtype, device)
    }

    /// Self-attention whose query, key, value and output projections are named `names`.
    pub(crate) fn with_names<R: RngCore + ?Sized>(
        store: &mut ParamStore,
        names: &[String; 4],
        dim: usize,
        heads: usize,
        rng: &mut R,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if heads == 0 || !dim.is_multiple_of(heads) {
            return Err(Error::invalid(
                "heads",
                heads,
                format!("must be at least 1 and divide the model dimension {dim}"),
            ));
        }
        let [q, k, v, o] = names;
        let mut lin = |name: &str| Linear::new(store, name, dim, dim, rng, dtype, device);
        Ok(SelfAttention {
            q: lin(q)?,
            k: lin(k)?,
            v: lin(v)?,
            o: lin(o)?,
            heads,
            lora: None,
        })
    }

    /// Adds LoRA adapters of `rank` (scaling `alpha / rank`) to the query and value
    /// projections, named after them (`{query}.lora_a`, ...).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_lora<R: RngCore + ?Sized>(
        &mut self,
        store: &mut ParamStore,
        names: &[String; 4],
        rank: usize,
        alpha: f64,
        rng: &mut R,
        dtype: DType,
        device: &Device,
    ) -> Result<()> {
        let dim = store.get(self.q.weight)?.value().dim(0)?;
        self.lora = Some(LoraAdapters::new(
            store, &names[0], &names[2], dim, rank, alpha, rng, dtype, device,
        )?);
        Ok(())
    }

    pub(crate) fn forward(
        &self,
        store: &ParamStore,
        tape: &mut Tape,
        x: &Tensor,
    ) -> Result<Tensor> {
        self.forward_masked(store, tape, x, None)
    }

    /// Attention with an additive mask `(B, 1, 1, T)` on the scores (0 to attend, a large
    /// negative number to ignore a key, e.g. padding).
    pub(crate) fn forward_masked(
        &self,
        store: &ParamStore,
        tape: &mut Tape,
        x: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, t, dim) = x.dims3()?;
        let h = self.heads;
        let dh = dim / h;
        let split = |y: Tensor| -> Result<Tensor> {
            Ok(y.reshape((b, t, h, dh))?.transpose(1, 2)?.contiguous()?)
        };
        let (mut q, mut v) = (
            self.q.forward(store, tape, x)?,
            self.v.forward(store, tape, x)?,
        );
        if let Some(l) = &self.lora {
            let low = |a: &Linear, b: &Linear, tape: &mut Tape| -> Result<Tensor> {
                let ax = a.forward(store, tape, x)?;
                Ok(b.forward(store, tape, &ax)?.affine(l.scale, 0.0)?)
            };
            q = q.add(&low(&l.q_a, &l.q_b, tape)?)?;
            v = v.add(&low(&l.v_a, &l.v_b, tape)?)?;
        }
        let q = split(q)?;
        let k = split(self.k.forward(store, tape, x)?)?;
        let v = split(v)?;
        let scores = q
            .matmul(&k.t()?.contiguous()?)?
            .affine(1.0 / (dh as f64).sqrt(), 0.0)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let attn = softmax_last(&scores)?;
        let ctx = attn
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, dim))?;
        self.o.forward(store, tape, &ctx)
    }
}
