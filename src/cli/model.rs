//! `sotto evaluate` and `sotto predict`: use a model saved by `sotto train` (its report folder,
//! holding `model.json` and `model.safetensors`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use serde::Serialize;
use sotto_training::artifact::ModelInfo;
use sotto_training::data::{self, CsvOptions, Dataset, Inputs, LabelColumn};
use sotto_training::model::{InputShape, Model};

use super::train::{SPLIT_SEED, device, label_column};
use super::{Output, UsageError};

/// Which part of the data to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// Every example.
    All,
    /// The 80% training part of `sotto train`'s fixed split of the same data.
    Train,
    /// The 20% test part of `sotto train`'s fixed split (reproduces the reported accuracy).
    Test,
}

/// Arguments of `sotto evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The model folder (the report folder of `sotto train`).
    #[arg(long)]
    pub model: PathBuf,
    /// The labelled data: `digits`, `sequence` or a CSV file (features and a label column,
    /// like the training data).
    #[arg(long)]
    pub data: String,
    /// Label column of a CSV file: `last`, a 0-based index, or a header name.
    #[arg(long, default_value = "last")]
    pub label_column: String,
    /// The CSV file's first line holds column names.
    #[arg(long)]
    pub header: bool,
    /// For a text model (`--pretrained`): the CSV column of the texts (index or header name).
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Evaluate on all of the data, or on the train or test part of `sotto train`'s split.
    #[arg(long, value_enum, default_value = "all")]
    pub split: SplitArg,
    /// Where the model computes: `cpu` or `cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Arguments of `sotto predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model folder (the report folder of `sotto train`).
    #[arg(long)]
    pub model: PathBuf,
    /// A CSV file of feature rows (a label column, if present, is skipped), of texts for a text
    /// model, or `digits`.
    #[arg(long)]
    pub data: String,
    /// The label column to skip when rows have one column more than the model's features:
    /// `last`, a 0-based index, or a header name.
    #[arg(long, default_value = "last")]
    pub label_column: String,
    /// The CSV file's first line holds column names.
    #[arg(long)]
    pub header: bool,
    /// For a text model (`--pretrained`): the CSV column of the texts (index or header name).
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Where the model computes: `cpu` or `cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn load(dir: &Path, device_name: &str) -> anyhow::Result<(Model, ModelInfo)> {
    let device = device(device_name)?;
    Model::load(dir, &device).with_context(|| format!("--model {}", dir.display()))
}

/// Relabels `data` (whose label `k` stands for `names[k]`) with the model's label ids.
fn relabel(
    data: &Dataset,
    names: &[String],
    info: &ModelInfo,
    source: &str,
) -> anyhow::Result<Dataset> {
    let map = names
        .iter()
        .map(|n| {
            info.labels.iter().position(|l| l == n).ok_or_else(|| {
                UsageError(format!(
                    "--data {source}: label `{n}` is not one of the model's classes {:?}",
                    info.labels
                ))
            })
        })
        .collect::<Result<Vec<usize>, UsageError>>()?;
    let labels = data
        .labels()
        .iter()
        .map(|&l| {
            map.get(l as usize)
                .map(|&m| m as u32)
                .ok_or_else(|| UsageError(format!("--data {source}: label id {l} out of range")))
        })
        .collect::<Result<Vec<u32>, UsageError>>()?;
    Ok(Dataset::new(
        data.inputs().clone(),
        labels,
        info.labels.len(),
    )?)
}

/// Applies the model's standardization and checks that the data fits it.
fn prepare(
    model: &Model,
    info: &ModelInfo,
    data: Dataset,
    dir: &Path,
    source: &str,
) -> anyhow::Result<Dataset> {
    if let (InputShape::Features(dim), Inputs::Features { dim: have, .. }) =
        (model.input_shape(), data.inputs())
        && dim != *have
    {
        return Err(UsageError(format!(
            "--data {source} has {have} features per example, the model in {} takes {dim}",
            dir.display()
        ))
        .into());
    }
    let data = match &info.standardizer {
        Some(st) => st.apply(&data)?,
        None => data,
    };
    model.check_data(&data).with_context(|| {
        format!(
            "--data {source} does not fit the model in {}",
            dir.display()
        )
    })?;
    Ok(data)
}

/// A text CSV tokenized with the tokenizer saved next to a fine-tuned encoder.
fn text_data(
    model: &Model,
    args: &EvaluateArgs,
    path: &str,
) -> anyhow::Result<(Dataset, Vec<String>, u64)> {
    use sotto_training::bert::{TextColumns, tokenize_csv};
    let file = args.model.join("tokenizer.json");
    let tokenizer = tokenizers_from(&file)?;
    let (InputShape::Tokens { seq_len, vocab }, sotto_training::model::ModelSpec::Bert(b)) =
        (model.input_shape(), model.spec())
    else {
        return Err(anyhow::anyhow!("internal: a BERT model takes tokens"));
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
    let (data, names) = tokenize_csv(
        Path::new(path),
        &columns,
        &tokenizer,
        seq_len,
        vocab,
        b.pad_id,
    )
    .with_context(|| format!("--data {path}"))?;
    Ok((data, names, SPLIT_SEED))
}

fn tokenizers_from(file: &Path) -> anyhow::Result<sotto_training::bert::Tokenizer> {
    sotto_training::bert::Tokenizer::from_file(file).map_err(|e| {
        UsageError(format!(
            "{}: {e} (a fine-tuned text model keeps its tokenizer.json beside model.json)",
            file.display()
        ))
        .into()
    })
}

/// The result of `sotto evaluate`.
#[derive(Debug, Serialize)]
struct Evaluation {
    model: String,
    data: String,
    split: String,
    examples: usize,
    accuracy: f64,
    loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    epsilon: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<f64>,
}

/// Runs `sotto evaluate`.
pub fn evaluate(args: EvaluateArgs, out: &Output) -> anyhow::Result<()> {
    let (model, info) = load(&args.model, &args.device)?;
    let (all, names, seed) = match args.data.as_str() {
        "digits" => (
            data::digits()?,
            ModelInfo::numbered_labels(10),
            sotto_training::central::DIGITS_SPLIT_SEED,
        ),
        "sequence" => (
            data::sequence_task(6000, 12, 32, 4, SPLIT_SEED)?,
            ModelInfo::numbered_labels(4),
            SPLIT_SEED,
        ),
        path if matches!(model.spec(), sotto_training::model::ModelSpec::Bert(_)) => {
            text_data(&model, &args, path)?
        }
        path => {
            let csv = data::load_csv_file(
                Path::new(path),
                &CsvOptions {
                    has_header: args.header,
                    label_column: label_column(&args.label_column),
                },
            )
            .with_context(|| format!("--data {path}"))?;
            (csv.dataset, csv.class_names, SPLIT_SEED)
        }
    };
    let part = match args.split {
        SplitArg::All => all,
        SplitArg::Train => all.split(0.2, seed)?.0,
        SplitArg::Test => all.split(0.2, seed)?.1,
    };
    let part = relabel(&part, &names, &info, &args.data)?;
    let part = prepare(&model, &info, part, &args.model, &args.data)?;
    let losses = model.losses(&part)?;
    let e = Evaluation {
        model: args.model.display().to_string(),
        data: args.data.clone(),
        split: format!("{:?}", args.split).to_lowercase(),
        examples: part.len(),
        accuracy: model.accuracy(&part)?,
        loss: losses.iter().sum::<f64>() / losses.len().max(1) as f64,
        epsilon: info.privacy.as_ref().map(|p| p.epsilon),
        delta: info.privacy.as_ref().map(|p| p.delta),
    };
    out.emit(&e, || {
        format!(
            "{} examples ({} of {}): accuracy {:.2}%, mean loss {:.4}; the model cost {}",
            e.examples,
            e.split,
            e.data,
            100.0 * e.accuracy,
            e.loss,
            match &info.privacy {
                Some(p) => format!("epsilon {:.4} at delta {}", p.epsilon, p.delta),
                None => "no privacy (trained without noise)".to_string(),
            }
        )
    })
}

/// Feature rows of a CSV file for a model of `dim` features: rows of `dim` numbers, or of
/// `dim + 1` columns of which `label` is skipped.
fn feature_rows(
    text: &str,
    header: bool,
    dim: usize,
    label: &LabelColumn,
    source: &str,
) -> anyhow::Result<Vec<f32>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let names: Option<Vec<&str>> = if header {
        lines
            .next()
            .map(|(_, h)| h.split(',').map(str::trim).collect())
    } else {
        None
    };
    let mut values = Vec::new();
    for (no, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let skip = if cells.len() == dim {
            None
        } else if cells.len() == dim + 1 {
            Some(match label {
                LabelColumn::Last => dim,
                LabelColumn::Index(i) if *i <= dim => *i,
                LabelColumn::Index(i) => {
                    return Err(UsageError(format!(
                        "--label-column {i}: rows of {source} have {} columns",
                        dim + 1
                    ))
                    .into());
                }
                LabelColumn::Name(n) => names
                    .as_ref()
                    .and_then(|h| h.iter().position(|c| c == n))
                    .ok_or_else(|| {
                        UsageError(format!(
                            "--label-column {n}: no such column in {source} (a named column needs --header)"
                        ))
                    })?,
            })
        } else {
            return Err(UsageError(format!(
                "{source}, line {}: {} columns; the model takes {dim} features (optionally plus a label column)",
                no + 1,
                cells.len()
            ))
            .into());
        };
        for (c, cell) in cells.iter().enumerate() {
            if Some(c) == skip {
                continue;
            }
            let v: f32 = cell
                .parse()
                .ok()
                .filter(|v: &f32| v.is_finite())
                .ok_or_else(|| {
                    UsageError(format!(
                        "{source}, line {}, column {}: `{cell}` is not a finite number",
                        no + 1,
                        c + 1
                    ))
                })?;
            values.push(v);
        }
    }
    if values.is_empty() {
        return Err(UsageError(format!("{source} has no data rows")).into());
    }
    Ok(values)
}

/// The result of `sotto predict`.
#[derive(Debug, Serialize)]
struct Predictions {
    model: String,
    data: String,
    /// One class name per row, in order.
    predictions: Vec<String>,
}

/// Runs `sotto predict`.
pub fn predict(args: PredictArgs, out: &Output) -> anyhow::Result<()> {
    let (model, info) = load(&args.model, &args.device)?;
    let data = match (args.data.as_str(), model.input_shape()) {
        ("digits", _) => data::digits()?,
        (path, InputShape::Features(dim)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("cannot read --data {path}: {e}")))?;
            let values = feature_rows(
                &text,
                args.header,
                dim,
                &label_column(&args.label_column),
                path,
            )?;
            let n = values.len() / dim.max(1);
            Dataset::new(Inputs::Features { values, dim }, vec![0; n], 1)?
        }
        (path, InputShape::Tokens { seq_len, vocab }) => {
            let sotto_training::model::ModelSpec::Bert(b) = model.spec() else {
                return Err(UsageError(format!(
                    "--data {path}: this model reads generated token sequences, not a CSV file"
                ))
                .into());
            };
            // A text model: one text per record in `--text-column`.
            let tokenizer = tokenizers_from(&args.model.join("tokenizer.json"))?;
            let text = std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("cannot read --data {path}: {e}")))?;
            let mut records = sotto_training::bert::parse_csv_records(&text)
                .with_context(|| format!("--data {path}"))?
                .into_iter();
            let has_header = args.header || args.text_column.parse::<usize>().is_err();
            let header = if has_header { records.next() } else { None };
            let col = match args.text_column.parse::<usize>() {
                Ok(i) => i,
                Err(_) => header
                    .as_ref()
                    .and_then(|h| h.iter().position(|c| c.trim() == args.text_column))
                    .ok_or_else(|| {
                        UsageError(format!(
                            "--text-column {}: no such column in {path}",
                            args.text_column
                        ))
                    })?,
            };
            let mut ids = Vec::new();
            let mut n = 0;
            for (i, r) in records.enumerate() {
                let t = r.get(col).ok_or_else(|| {
                    UsageError(format!("{path}, record {}: no column {col}", i + 1))
                })?;
                ids.extend(sotto_training::bert::encode_text(
                    &tokenizer, t, seq_len, b.pad_id,
                )?);
                n += 1;
            }
            Dataset::new(
                Inputs::Tokens {
                    ids,
                    seq_len,
                    vocab,
                },
                vec![0; n],
                1,
            )?
        }
    };
    let data = Dataset::new(data.inputs().clone(), vec![0; data.len()], 1)?;
    let data = prepare(&model, &info, data, &args.model, &args.data)?;
    let predictions = model
        .predict(&data)?
        .into_iter()
        .map(|k| {
            info.labels
                .get(k as usize)
                .cloned()
                .unwrap_or_else(|| k.to_string())
        })
        .collect::<Vec<_>>();
    let p = Predictions {
        model: args.model.display().to_string(),
        data: args.data.clone(),
        predictions,
    };
    out.emit(&p, || p.predictions.join("\n"))
}
