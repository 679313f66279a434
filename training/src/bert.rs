//! BERT-style encoders for text classification: the architecture of Hugging Face's
//! `BertForSequenceClassification` (post-norm blocks, GELU, padding mask, `[CLS]` pooler and a
//! linear classifier; no dropout) built from sotto's book-keeping layers, so that DP
//! fine-tuning clips per sample in one backward pass like every other model.
//!
//! [`load_pretrained`] reads a local Hugging Face folder (`config.json`, `model.safetensors`
//! with the usual tensor names, `tokenizer.json`); nothing is downloaded. [`tokenize_csv`]
//! turns a CSV file of texts and labels into token sequences for it.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Inputs};
use crate::model::{InputShape, Model, ModelSpec};
use crate::nn::{Embedding, LayerNorm, Linear, ParamStore, SelfAttention, Tape};
use crate::{Error, Result};

/// The tokenizer type of Hugging Face folders (`tokenizer.json`), re-exported.
pub use tokenizers::Tokenizer;

/// The sizes of a BERT-style encoder (the fields of a Hugging Face `config.json` it needs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertSpec {
    /// Hidden width (`hidden_size`).
    pub hidden: usize,
    /// Blocks (`num_hidden_layers`).
    pub layers: usize,
    /// Attention heads (`num_attention_heads`, divides `hidden`).
    pub heads: usize,
    /// Width of each block's MLP (`intermediate_size`).
    pub intermediate: usize,
    /// Rows of the position embedding (`max_position_embeddings`, at least the sequence
    /// length).
    pub max_positions: usize,
    /// Rows of the token-type embedding (`type_vocab_size`).
    pub type_vocab: usize,
    /// `layer_norm_eps`.
    pub layer_norm_eps: f64,
    /// Id of the padding token (`pad_token_id`): padded positions are masked out of attention.
    pub pad_id: u32,
    /// Low-rank adapters on every block's query and value projections (none: the plain
    /// encoder). Absent from older `model.json` files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSpec>,
}

/// LoRA adapters (Hu et al. 2021) on the attention query and value projections: each
/// projection `W x` becomes `W x + (alpha / rank) B A x` with `A` (`rank x hidden`, random
/// uniform in `+-1/sqrt(hidden)`) and `B` (`hidden x rank`, zero), so the adapted encoder
/// starts as the pretrained one. `A` and `B` are recording linear layers (their biases zero
/// and frozen), so per-sample clipping treats them like any other layer; train them with
/// [`crate::nn::Trainable::Lora`] (adapters and classifier head only).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// Rank `r` (1 to the hidden width).
    pub rank: usize,
    /// Scaling numerator: the adapters' output is multiplied by `alpha / rank`.
    pub alpha: f64,
}

impl BertSpec {
    /// The shape of BERT-base (110M parameters with its 30,522-token vocabulary).
    pub fn base() -> Self {
        BertSpec {
            hidden: 768,
            layers: 12,
            heads: 12,
            intermediate: 3072,
            max_positions: 512,
            type_vocab: 2,
            layer_norm_eps: 1e-12,
            pad_id: 0,
            lora: None,
        }
    }
}

/// The subset of a Hugging Face BERT `config.json` that [`load_pretrained`] reads.
#[derive(Debug, Clone, Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "two")]
    type_vocab_size: usize,
    #[serde(default = "bert_eps")]
    layer_norm_eps: f64,
    #[serde(default = "gelu")]
    hidden_act: String,
    #[serde(default)]
    pad_token_id: Option<u32>,
}

fn two() -> usize {
    2
}
fn bert_eps() -> f64 {
    1e-12
}
fn gelu() -> String {
    "gelu".into()
}

#[derive(Debug, Clone)]
struct Block {
    attn: SelfAttention,
    ln_attn: LayerNorm,
    intermediate: Linear,
    output: Linear,
    ln_out: LayerNorm,
}

/// The layers of a BERT classifier in a [`ParamStore`].
#[derive(Debug, Clone)]
pub(crate) struct Bert {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    ln_emb: LayerNorm,
    blocks: Vec<Block>,
    pooler: Linear,
    classifier: Linear,
    pad_id: u32,
}

impl Bert {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new<R: RngCore + ?Sized>(
        store: &mut ParamStore,
        spec: &BertSpec,
        seq_len: usize,
        vocab: usize,
        classes: usize,
        rng: &mut R,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let h = spec.hidden;
        if h == 0 || spec.layers == 0 || spec.intermediate == 0 || vocab == 0 || seq_len == 0 {
            return Err(Error::invalid(
                "bert",
                format!("{spec:?}"),
                "hidden, layers, intermediate, vocabulary and sequence length must be at least 1",
            ));
        }
        if seq_len > spec.max_positions {
            return Err(Error::invalid(
                "seq_len",
                seq_len,
                format!(
                    "the encoder has {} positions (max_position_embeddings)",
                    spec.max_positions
                ),
            ));
        }
        if spec.type_vocab == 0 || spec.pad_id as usize >= vocab {
            return Err(Error::invalid(
                "bert",
                format!("type_vocab {} pad_id {}", spec.type_vocab, spec.pad_id),
                "needs a token type and a padding id inside the vocabulary",
            ));
        }
        if !(spec.layer_norm_eps.is_finite() && spec.layer_norm_eps > 0.0) {
            return Err(Error::invalid(
                "layer_norm_eps",
                spec.layer_norm_eps,
                "must be positive",
            ));
        }
        let eps = spec.layer_norm_eps;
        let mut emb = |name: &str, rows: usize, store: &mut ParamStore| {
            Embedding::new(
                store,
                &format!("embeddings.{name}"),
                rows,
                h,
                rng,
                dtype,
                device,
            )
        };
        let word = emb("word_embeddings", vocab, store)?;
        let position = emb("position_embeddings", spec.max_positions, store)?;
        let token_type = emb("token_type_embeddings", spec.type_vocab, store)?;
        let ln_emb = LayerNorm::with_eps(store, "embeddings.LayerNorm", h, eps, dtype, device)?;
        let mut blocks = Vec::with_capacity(spec.layers);
        for l in 0..spec.layers {
            let p = format!("encoder.layer.{l}");
            let names = [
                format!("{p}.attention.self.query"),
                format!("{p}.attention.self.key"),
                format!("{p}.attention.self.value"),
                format!("{p}.attention.output.dense"),
            ];
            let mut attn =
                SelfAttention::with_names(store, &names, h, spec.heads, rng, dtype, device)?;
            if let Some(lora) = spec.lora {
                attn.add_lora(store, &names, lora.rank, lora.alpha, rng, dtype, device)?;
            }
            blocks.push(Block {
                attn,
                ln_attn: LayerNorm::with_eps(
                    store,
                    &format!("{p}.attention.output.LayerNorm"),
                    h,
                    eps,
                    dtype,
                    device,
                )?,
                intermediate: Linear::new(
                    store,
                    &format!("{p}.intermediate.dense"),
                    h,
                    spec.intermediate,
                    rng,
                    dtype,
                    device,
                )?,
                output: Linear::new(
                    store,
                    &format!("{p}.output.dense"),
                    spec.intermediate,
                    h,
                    rng,
                    dtype,
                    device,
                )?,
                ln_out: LayerNorm::with_eps(
                    store,
                    &format!("{p}.output.LayerNorm"),
                    h,
                    eps,
                    dtype,
                    device,
                )?,
            });
        }
        let pooler = Linear::new(store, "pooler.dense", h, h, rng, dtype, device)?;
        let classifier = Linear::new(store, "classifier", h, classes, rng, dtype, device)?;
        Ok(Bert {
            word,
            position,
            token_type,
            ln_emb,
            blocks,
            pooler,
            classifier,
            pad_id: spec.pad_id,
        })
    }

    /// Logits `(B, classes)` of token ids `(B, T)` (u32).
    pub(crate) fn forward(&self, s: &ParamStore, tape: &mut Tape, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let device = ids.device();
        let pos = Tensor::arange(0u32, t as u32, device)?
            .unsqueeze(0)?
            .broadcast_as((b, t))?
            .contiguous()?;
        let types = Tensor::zeros((b, t), DType::U32, device)?;
        let x = self
            .word
            .forward(s, tape, ids)?
            .add(&self.position.forward(s, tape, &pos)?)?
            .add(&self.token_type.forward(s, tape, &types)?)?;
        let mut x = self.ln_emb.forward(s, tape, &x)?;
        // 0 where a key is a real token, -10^4 where it is padding.
        let mask = ids
            .ne(self.pad_id)?
            .to_dtype(x.dtype())?
            .affine(1e4, -1e4)?
            .reshape((b, 1, 1, t))?;
        for blk in &self.blocks {
            let a = blk.attn.forward_masked(s, tape, &x, Some(&mask))?;
            x = blk.ln_attn.forward(s, tape, &x.add(&a)?)?;
            let m = blk.intermediate.forward(s, tape, &x)?.gelu_erf()?;
            let m = blk.output.forward(s, tape, &m)?;
            x = blk.ln_out.forward(s, tape, &x.add(&m)?)?;
        }
        let cls = x.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?;
        let pooled = self.pooler.forward(s, tape, &cls)?.tanh()?;
        self.classifier.forward(s, tape, &pooled)
    }
}

/// A BERT classifier loaded from a Hugging Face folder, with its tokenizer.
#[derive(Debug)]
pub struct PretrainedBert {
    /// The model (pretrained encoder; pooler and classifier pretrained when the folder has
    /// them with fitting shapes, else freshly initialised).
    pub model: Model,
    /// The folder's tokenizer.
    pub tokenizer: tokenizers::Tokenizer,
    /// Parameters taken from the folder.
    pub loaded: Vec<String>,
    /// Parameters initialised at random because the folder lacks them (the classifier, and
    /// the pooler of an encoder saved without one).
    pub initialised: Vec<String>,
}

fn folder_err(dir: &Path, what: impl std::fmt::Display) -> Error {
    Error::Data(format!("pretrained model folder {}: {what}", dir.display()))
}

/// The Hugging Face names a sotto parameter may have, most likely first.
fn hf_names(name: &str) -> Vec<String> {
    let (stem, alts): (&str, &[&str]) = if let Some(s) = name.strip_suffix(".table") {
        (s, &["weight"])
    } else if let Some(s) = name.strip_suffix(".scale") {
        (s, &["weight", "gamma"])
    } else if let Some(s) = name.strip_suffix(".shift") {
        (s, &["bias", "beta"])
    } else if let Some(s) = name.strip_suffix(".weight") {
        (s, &["weight"])
    } else if let Some(s) = name.strip_suffix(".bias") {
        (s, &["bias"])
    } else {
        (name, &[])
    };
    let mut out = Vec::new();
    for alt in alts {
        out.push(format!("{stem}.{alt}"));
        out.push(format!("bert.{stem}.{alt}"));
    }
    out
}

/// Loads a BERT-style encoder for `classes`-way classification of sequences of `seq_len`
/// tokens from a local Hugging Face folder: `config.json` (`model_type` `bert`, GELU),
/// `model.safetensors` (tensor names with or without the `bert.` prefix; `LayerNorm.gamma` /
/// `beta` also accepted) and `tokenizer.json`. Nothing is downloaded.
///
/// # Errors
/// [`Error::Data`] naming the file and the problem when a file is missing or unreadable, the
/// configuration is not a BERT one, or an encoder tensor is missing or has the wrong shape;
/// [`Error::InvalidParameter`] when `seq_len` exceeds the encoder's positions.
///
/// ```rust
/// use candle_core::Device;
/// use sotto_training::bert::{encode_text, load_pretrained};
/// // The tiny golden model of the tests (written by scripts/bert_golden.py).
/// let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bert-tiny");
/// let bert = load_pretrained(&dir, 3, 10, &Device::Cpu, 0)?;
/// assert!(bert.initialised.is_empty()); // encoder, pooler and classifier all came from the folder
/// let ids = encode_text(&bert.tokenizer, "the film was good", 10, 0)?;
/// assert_eq!(ids, [2, 9, 8, 10, 4, 3, 0, 0, 0, 0]); // [CLS] ... [SEP] and padding
/// # Ok::<(), sotto_training::Error>(())
/// ```
pub fn load_pretrained(
    dir: &Path,
    classes: usize,
    seq_len: usize,
    device: &Device,
    seed: u64,
) -> Result<PretrainedBert> {
    load_pretrained_with_lora(dir, classes, seq_len, device, seed, None)
}

/// [`load_pretrained`] with LoRA adapters (`lora`) on the query and value projections, freshly
/// initialised from `seed` (listed in [`PretrainedBert::initialised`]).
///
/// # Errors
/// As [`load_pretrained`]; [`Error::InvalidParameter`] for a rank of 0 or above the hidden
/// width, or a non-positive alpha.
pub fn load_pretrained_with_lora(
    dir: &Path,
    classes: usize,
    seq_len: usize,
    device: &Device,
    seed: u64,
    lora: Option<LoraSpec>,
) -> Result<PretrainedBert> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        folder_err(
            dir,
            format!("cannot read config.json: {e} (a Hugging Face folder holds config.json, model.safetensors and tokenizer.json)"),
        )
    })?;
    let hf: HfConfig = serde_json::from_str(&text)
        .map_err(|e| folder_err(dir, format!("config.json is not a BERT configuration: {e}")))?;
    if let Some(t) = &hf.model_type
        && !matches!(t.as_str(), "bert" | "roberta")
    {
        return Err(folder_err(
            dir,
            format!("model_type `{t}` is not supported; sotto loads BERT-style encoders (`bert`)"),
        ));
    }
    if !matches!(hf.hidden_act.as_str(), "gelu" | "gelu_python") {
        return Err(folder_err(
            dir,
            format!(
                "hidden_act `{}` is not supported (only `gelu`)",
                hf.hidden_act
            ),
        ));
    }
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| folder_err(dir, format!("cannot read tokenizer.json: {e}")))?;
    let pad_id = hf
        .pad_token_id
        .or_else(|| tokenizer.token_to_id("[PAD]"))
        .unwrap_or(0);
    let spec = BertSpec {
        hidden: hf.hidden_size,
        layers: hf.num_hidden_layers,
        heads: hf.num_attention_heads,
        intermediate: hf.intermediate_size,
        max_positions: hf.max_position_embeddings,
        type_vocab: hf.type_vocab_size,
        layer_norm_eps: hf.layer_norm_eps,
        pad_id,
        lora,
    };
    let input = InputShape::Tokens {
        seq_len,
        vocab: hf.vocab_size,
    };
    let model = Model::new(
        &ModelSpec::Bert(spec),
        input,
        classes,
        DType::F32,
        device,
        seed,
    )?;
    let weights = dir.join("model.safetensors");
    let mut tensors: HashMap<String, Tensor> = candle_core::safetensors::load(&weights, device)
        .map_err(|e| folder_err(dir, format!("cannot read model.safetensors: {e}")))?;
    let mut loaded = Vec::new();
    let mut initialised = Vec::new();
    for p in model.params().params() {
        let name = p.name();
        let found = hf_names(name)
            .into_iter()
            .find_map(|n| tensors.remove(&n).map(|t| (n, t)));
        let optional = name.starts_with("pooler.")
            || name.starts_with("classifier.")
            || name.contains(".lora_");
        match found {
            Some((_, t)) if t.dims() == p.value().dims() => {
                p.var().set(&t.to_dtype(p.value().dtype())?)?;
                loaded.push(name.to_string());
            }
            Some((_, _)) if name.starts_with("classifier.") => initialised.push(name.to_string()),
            Some((hf_name, t)) => {
                return Err(folder_err(
                    dir,
                    format!(
                        "tensor `{hf_name}` has shape {:?}, config.json implies {:?}",
                        t.dims(),
                        p.value().dims()
                    ),
                ));
            }
            None if optional => initialised.push(name.to_string()),
            None => {
                return Err(folder_err(
                    dir,
                    format!(
                        "model.safetensors lacks `{}` (or `bert.{0}`)",
                        hf_names(name).first().cloned().unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(PretrainedBert {
        model,
        tokenizer,
        loaded,
        initialised,
    })
}

/// Splits CSV text into records: comma-separated fields, double-quoted fields may hold commas,
/// line breaks and doubled quotes (RFC 4180). Blank lines are skipped.
///
/// # Errors
/// [`Error::Data`] for an unterminated quoted field.
pub fn parse_csv_records(text: &str) -> Result<Vec<Vec<String>>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            ',' => record.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                line += 1;
                record.push(std::mem::take(&mut field));
                if !(record.len() == 1 && record.first().is_some_and(|f| f.trim().is_empty())) {
                    records.push(std::mem::take(&mut record));
                } else {
                    record.clear();
                }
            }
            _ => field.push(c),
        }
    }
    if quoted {
        return Err(Error::Data(format!(
            "the CSV text ends inside a quoted field (line {line})"
        )));
    }
    record.push(field);
    if !(record.len() == 1 && record.first().is_some_and(|f| f.trim().is_empty())) {
        records.push(record);
    }
    Ok(records)
}

/// Which CSV columns hold the text and the label: 0-based indexes or header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextColumns {
    /// The text column.
    pub text: String,
    /// The label column.
    pub label: String,
    /// Whether the first record holds column names.
    pub has_header: bool,
}

/// Token ids of one text: `[CLS] ... [SEP]` as the tokenizer encodes it, cut to `seq_len`
/// (keeping the final special token) and padded with `pad_id`.
///
/// # Errors
/// [`Error::Data`] when the tokenizer fails.
pub fn encode_text(
    tokenizer: &tokenizers::Tokenizer,
    text: &str,
    seq_len: usize,
    pad_id: u32,
) -> Result<Vec<u32>> {
    let enc = tokenizer
        .encode(text, true)
        .map_err(|e| Error::Data(format!("cannot tokenize a text: {e}")))?;
    let mut ids = enc.get_ids().to_vec();
    if ids.len() > seq_len {
        let last = ids.last().copied();
        ids.truncate(seq_len);
        if let (Some(l), Some(end)) = (last, ids.last_mut()) {
            *end = l;
        }
    }
    ids.resize(seq_len, pad_id);
    Ok(ids)
}

/// Reads a CSV file of texts and labels and tokenizes every text to `seq_len` ids. Labels
/// become classes `0..k` in sorted order (numeric when all are integers); returns the data
/// set and the class names.
///
/// # Errors
/// [`Error::Data`] naming the file, line and column of a problem (unreadable file, missing
/// column, a record with too few fields, an id outside the vocabulary).
pub fn tokenize_csv(
    path: &Path,
    columns: &TextColumns,
    tokenizer: &tokenizers::Tokenizer,
    seq_len: usize,
    vocab: usize,
    pad_id: u32,
) -> Result<(Dataset, Vec<String>)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Data(format!("cannot read {}: {e}", path.display())))?;
    let mut records = parse_csv_records(&text)
        .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?
        .into_iter();
    let header = if columns.has_header {
        records.next()
    } else {
        None
    };
    let column = |spec: &str, what: &str| -> Result<usize> {
        if let Ok(i) = spec.parse::<usize>() {
            return Ok(i);
        }
        header
            .as_ref()
            .and_then(|h| h.iter().position(|c| c.trim() == spec))
            .ok_or_else(|| {
                Error::Data(format!(
                    "{}: no {what} column named `{spec}` (a named column needs a header line)",
                    path.display()
                ))
            })
    };
    let (tc, lc) = (
        column(&columns.text, "text")?,
        column(&columns.label, "label")?,
    );
    let mut ids = Vec::new();
    let mut raw = Vec::new();
    for (i, rec) in records.enumerate() {
        let (Some(t), Some(l)) = (rec.get(tc), rec.get(lc)) else {
            return Err(Error::Data(format!(
                "{}: record {} has {} fields, the text and label columns are {tc} and {lc}",
                path.display(),
                i + 1,
                rec.len()
            )));
        };
        ids.extend(encode_text(tokenizer, t, seq_len, pad_id)?);
        raw.push(l.trim().to_string());
    }
    if raw.is_empty() {
        return Err(Error::Data(format!("{} has no records", path.display())));
    }
    let mut names = raw.clone();
    if names.iter().all(|s| s.parse::<i64>().is_ok()) {
        names.sort_by_key(|s| s.parse::<i64>().unwrap_or(0));
    } else {
        names.sort();
    }
    names.dedup();
    let labels = raw
        .iter()
        .map(|l| names.iter().position(|n| n == l).unwrap_or(0) as u32)
        .collect();
    let classes = names.len();
    let data = Dataset::new(
        Inputs::Tokens {
            ids,
            seq_len,
            vocab,
        },
        labels,
        classes,
    )
    .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
    Ok((data, names))
}
