//! Data sets: the vendored digits data, a CSV loader, a generated sequence-classification task,
//! splits, standardization and partitioning across parties.
//!
//! A [`Dataset`] holds either dense features (`f32`, one row per example) or token sequences
//! (`u32` ids, fixed length), and one class label per example.

use candle_core::{Device, Tensor};
use rand_core::RngCore;

use crate::{Error, Result};

/// The scikit-learn digits data set (1797 8x8 images, 64 integer features 0..16, labels 0..9),
/// vendored uncompressed. Licence and attribution: `training/data/LICENSE-digits.txt`.
pub const DIGITS_CSV: &str = include_str!("../data/digits.csv");

/// The inputs of a data set.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    /// Dense features, row-major, `dim` values per example.
    Features {
        /// `len * dim` values.
        values: Vec<f32>,
        /// Features per example.
        dim: usize,
    },
    /// Token sequences, row-major, `seq_len` ids per example, each below `vocab`.
    Tokens {
        /// `len * seq_len` token ids.
        ids: Vec<u32>,
        /// Tokens per example.
        seq_len: usize,
        /// Size of the vocabulary (every id is below it).
        vocab: usize,
    },
}

/// A labelled data set for classification.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    inputs: Inputs,
    labels: Vec<u32>,
    num_classes: usize,
}

impl Dataset {
    /// A data set from inputs and labels.
    ///
    /// # Errors
    /// [`Error::Data`] when the number of inputs and labels differ, a label is not below
    /// `num_classes`, a feature is not finite, or a token id is not below `vocab`;
    /// [`Error::InvalidParameter`] when `dim`, `seq_len`, `vocab` or `num_classes` is zero.
    pub fn new(inputs: Inputs, labels: Vec<u32>, num_classes: usize) -> Result<Self> {
        if num_classes == 0 {
            return Err(Error::invalid("num_classes", 0, "must be at least 1"));
        }
        let n = labels.len();
        match &inputs {
            Inputs::Features { values, dim } => {
                if *dim == 0 {
                    return Err(Error::invalid(
                        "dim",
                        0,
                        "a feature row needs at least one value",
                    ));
                }
                if values.len() != n * dim {
                    return Err(Error::Data(format!(
                        "{} feature values do not form {n} rows of {dim}",
                        values.len()
                    )));
                }
                if let Some(pos) = values.iter().position(|v| !v.is_finite()) {
                    return Err(Error::Data(format!(
                        "feature {} of example {} is not a finite number",
                        pos % dim,
                        pos / dim
                    )));
                }
            }
            Inputs::Tokens {
                ids,
                seq_len,
                vocab,
            } => {
                if *seq_len == 0 || *vocab == 0 {
                    return Err(Error::invalid(
                        "seq_len/vocab",
                        format!("{seq_len}/{vocab}"),
                        "both must be at least 1",
                    ));
                }
                if ids.len() != n * seq_len {
                    return Err(Error::Data(format!(
                        "{} token ids do not form {n} sequences of {seq_len}",
                        ids.len()
                    )));
                }
                if let Some(pos) = ids.iter().position(|&t| t as usize >= *vocab) {
                    return Err(Error::Data(format!(
                        "token {} of example {} is not below the vocabulary size {vocab}",
                        pos % seq_len,
                        pos / seq_len
                    )));
                }
            }
        }
        if let Some(pos) = labels.iter().position(|&l| l as usize >= num_classes) {
            return Err(Error::Data(format!(
                "label of example {pos} is not below the number of classes {num_classes}"
            )));
        }
        Ok(Dataset {
            inputs,
            labels,
            num_classes,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the data set has no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes (labels are `0..num_classes`).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The inputs.
    pub fn inputs(&self) -> &Inputs {
        &self.inputs
    }

    /// The labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The examples at `indices`, in that order (repetitions allowed).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset> {
        let n = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::invalid(
                "indices",
                bad,
                format!("must be below the data set size {n}"),
            ));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        let inputs = match &self.inputs {
            Inputs::Features { values, dim } => Inputs::Features {
                values: indices
                    .iter()
                    .flat_map(|&i| values[i * dim..(i + 1) * dim].iter().copied())
                    .collect(),
                dim: *dim,
            },
            Inputs::Tokens {
                ids,
                seq_len,
                vocab,
            } => Inputs::Tokens {
                ids: indices
                    .iter()
                    .flat_map(|&i| ids[i * seq_len..(i + 1) * seq_len].iter().copied())
                    .collect(),
                seq_len: *seq_len,
                vocab: *vocab,
            },
        };
        Ok(Dataset {
            inputs,
            labels,
            num_classes: self.num_classes,
        })
    }

    /// The examples at `indices` as tensors on `device`: inputs `(B, dim)` (`f32`) or
    /// `(B, seq_len)` (`u32`), labels `(B,)` (`u32`).
    ///
    /// # Errors
    /// As [`Dataset::subset`], or [`Error::Tensor`] when the device fails.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<Batch> {
        let sub = self.subset(indices)?;
        let b = sub.len();
        let inputs = match sub.inputs {
            Inputs::Features { values, dim } => Tensor::from_vec(values, (b, dim), device)?,
            Inputs::Tokens { ids, seq_len, .. } => Tensor::from_vec(ids, (b, seq_len), device)?,
        };
        let labels = Tensor::from_vec(sub.labels, b, device)?;
        Ok(Batch { inputs, labels })
    }

    /// The whole data set as one batch.
    ///
    /// # Errors
    /// As [`Dataset::batch`].
    pub fn full_batch(&self, device: &Device) -> Result<Batch> {
        let all: Vec<usize> = (0..self.len()).collect();
        self.batch(&all, device)
    }

    /// Splits into `(train, test)`: a seeded shuffle, then the first
    /// `round(len * (1 - test_fraction))` examples train.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `0 < test_fraction < 1`, or when either part would
    /// be empty.
    pub fn split(&self, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        sotto_dp::error::check_open_unit("test_fraction", test_fraction)?;
        let mut idx: Vec<usize> = (0..self.len()).collect();
        shuffle(&mut idx, &mut sotto_dp::rng::seeded_rng(seed));
        let n_train = ((self.len() as f64) * (1.0 - test_fraction)).round() as usize;
        if n_train == 0 || n_train >= self.len() {
            return Err(Error::invalid(
                "test_fraction",
                test_fraction,
                format!(
                    "leaves an empty train or test part of {} examples",
                    self.len()
                ),
            ));
        }
        Ok((self.subset(&idx[..n_train])?, self.subset(&idx[n_train..])?))
    }
}

/// A batch as tensors: `inputs` `(B, dim)` f32 or `(B, seq_len)` u32, `labels` `(B,)` u32.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Inputs, first dimension the batch.
    pub inputs: Tensor,
    /// Class labels.
    pub labels: Tensor,
}

impl Batch {
    /// Number of examples in the batch.
    ///
    /// # Errors
    /// [`Error::Tensor`] if the labels are not a vector.
    pub fn size(&self) -> Result<usize> {
        Ok(self.labels.dims1()?)
    }
}

/// Per-feature standardization `(x - mean) / std`, fitted on training data.
///
/// # Privacy
/// The fitted means and standard deviations are computed from the data without noise: fit on
/// the party's own data (which it may see), and do not release them. For the digits demo the
/// statistics are fitted on the training split only.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standardizer {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Standardizer {
    /// The fitted per-feature means.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// The fitted per-feature standard deviations (1 for a constant feature).
    pub fn std(&self) -> &[f32] {
        &self.std
    }

    /// Fits means and standard deviations of each feature (a constant feature gets std 1).
    ///
    /// # Errors
    /// [`Error::Data`] when the data set holds tokens or is empty.
    pub fn fit(data: &Dataset) -> Result<Self> {
        let Inputs::Features { values, dim } = &data.inputs else {
            return Err(Error::Data(
                "standardization needs feature inputs, not tokens".into(),
            ));
        };
        let n = data.len();
        if n == 0 {
            return Err(Error::Data("cannot standardize an empty data set".into()));
        }
        let mut mean = vec![0f64; *dim];
        for row in values.chunks_exact(*dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut var = vec![0f64; *dim];
        for row in values.chunks_exact(*dim) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (f64::from(v) - m).powi(2);
            }
        }
        let std = var
            .iter()
            .map(|s| {
                let sd = (s / n as f64).sqrt();
                if sd > 1e-8 { sd as f32 } else { 1.0 }
            })
            .collect();
        Ok(Standardizer {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        })
    }

    /// Applies the standardization.
    ///
    /// # Errors
    /// [`Error::Data`] when the data set holds tokens or has another number of features.
    pub fn apply(&self, data: &Dataset) -> Result<Dataset> {
        let Inputs::Features { values, dim } = &data.inputs else {
            return Err(Error::Data(
                "standardization needs feature inputs, not tokens".into(),
            ));
        };
        if *dim != self.mean.len() {
            return Err(Error::Data(format!(
                "data has {dim} features, the standardizer was fitted on {}",
                self.mean.len()
            )));
        }
        let values = values
            .chunks_exact(*dim)
            .flat_map(|row| {
                row.iter()
                    .zip(&self.mean)
                    .zip(&self.std)
                    .map(|((&v, &m), &s)| (v - m) / s)
            })
            .collect();
        Dataset::new(
            Inputs::Features { values, dim: *dim },
            data.labels.clone(),
            data.num_classes,
        )
    }
}

/// The digits data set (all 1797 examples, raw pixel counts 0..16).
///
/// # Errors
/// Only if the vendored file were corrupt ([`Error::Data`]).
pub fn digits() -> Result<Dataset> {
    let csv = load_csv(
        DIGITS_CSV,
        &CsvOptions {
            has_header: false,
            label_column: LabelColumn::Last,
        },
    )?;
    Ok(csv.dataset)
}

/// The digits data set split 80/20 with a fixed seed and standardized with the training
/// split's statistics: `(train, test)` with 1438 and 359 examples.
///
/// # Errors
/// As [`digits`].
pub fn digits_split(seed: u64) -> Result<(Dataset, Dataset)> {
    let all = digits()?;
    let (train, test) = all.split(0.2, seed)?;
    let st = Standardizer::fit(&train)?;
    Ok((st.apply(&train)?, st.apply(&test)?))
}

/// Which CSV column holds the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelColumn {
    /// The last column.
    Last,
    /// The column at this 0-based index.
    Index(usize),
    /// The column with this header name (needs `has_header`).
    Name(String),
}

/// How to read a CSV file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Whether the first line holds column names.
    pub has_header: bool,
    /// Which column holds the label.
    pub label_column: LabelColumn,
}

/// A data set read from CSV, with the class names its label ids stand for.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvData {
    /// The examples; label `k` stands for `class_names[k]`.
    pub dataset: Dataset,
    /// The distinct label strings, sorted (numerically when all are integers).
    pub class_names: Vec<String>,
}

/// Reads comma-separated tabular data: every column but the label is a numeric feature; the
/// label column may hold any strings, which become classes `0..k` in sorted order (numeric
/// order when all labels are integers). Blank lines are skipped.
///
/// # Errors
/// [`Error::Data`] naming the line and column of a non-numeric or non-finite feature, a row
/// with the wrong number of columns, a missing label column, or an empty file.
///
/// ```rust
/// use sotto_training::data::{load_csv, CsvOptions, LabelColumn};
/// let csv = "x,y,label\n0.5,1,cat\n2,3.5,dog\n";
/// let opts = CsvOptions { has_header: true, label_column: LabelColumn::Name("label".into()) };
/// let data = load_csv(csv, &opts)?;
/// assert_eq!(data.dataset.len(), 2);
/// assert_eq!(data.class_names, ["cat", "dog"]);
/// # Ok::<(), sotto_training::Error>(())
/// ```
pub fn load_csv(text: &str, options: &CsvOptions) -> Result<CsvData> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let mut header: Option<Vec<String>> = None;
    if options.has_header {
        let (_, h) = lines
            .next()
            .ok_or_else(|| Error::Data("the CSV file is empty".into()))?;
        header = Some(h.split(',').map(|c| c.trim().to_string()).collect());
    }
    let mut rows: Vec<(usize, Vec<&str>)> = Vec::new();
    for (no, line) in lines {
        rows.push((no + 1, line.split(',').map(str::trim).collect()));
    }
    let ncols = match (&header, rows.first()) {
        (Some(h), _) => h.len(),
        (None, Some((_, r))) => r.len(),
        (None, None) => return Err(Error::Data("the CSV file has no data rows".into())),
    };
    if ncols < 2 {
        return Err(Error::Data(
            "a CSV row needs at least one feature and a label".into(),
        ));
    }
    let label_col = match &options.label_column {
        LabelColumn::Last => ncols - 1,
        LabelColumn::Index(i) if *i < ncols => *i,
        LabelColumn::Index(i) => {
            return Err(Error::Data(format!(
                "label column {i} does not exist: rows have {ncols} columns"
            )));
        }
        LabelColumn::Name(name) => header
            .as_ref()
            .and_then(|h| h.iter().position(|c| c == name))
            .ok_or_else(|| {
                Error::Data(format!(
                    "no column named `{name}` (a named label column needs has_header)"
                ))
            })?,
    };
    let dim = ncols - 1;
    let mut values = Vec::with_capacity(rows.len() * dim);
    let mut raw_labels = Vec::with_capacity(rows.len());
    for (line_no, row) in &rows {
        if row.len() != ncols {
            return Err(Error::Data(format!(
                "line {line_no} has {} columns, expected {ncols}",
                row.len()
            )));
        }
        for (c, cell) in row.iter().enumerate() {
            if c == label_col {
                raw_labels.push(cell.to_string());
                continue;
            }
            let wide: f64 = cell.parse().map_err(|_| {
                Error::Data(format!(
                    "line {line_no}, column {}: `{cell}` is not a number",
                    c + 1
                ))
            })?;
            if !wide.is_finite() {
                return Err(Error::Data(format!(
                    "line {line_no}, column {}: `{cell}` is not a finite number (features must \
                     not be NaN or infinite)",
                    c + 1
                )));
            }
            // Features are stored as f32: a finite value beyond its range would become infinite.
            let v = wide as f32;
            if !v.is_finite() {
                return Err(Error::Data(format!(
                    "line {line_no}, column {}: `{cell}` is outside the range of the 32-bit \
                     features (magnitude at most {:e}); rescale the column (e.g. take its \
                     logarithm or change its unit)",
                    c + 1,
                    f32::MAX
                )));
            }
            values.push(v);
        }
    }
    if raw_labels.is_empty() {
        return Err(Error::Data("the CSV file has no data rows".into()));
    }
    let mut class_names: Vec<String> = raw_labels.clone();
    let all_int = class_names.iter().all(|s| s.parse::<i64>().is_ok());
    if all_int {
        class_names.sort_by_key(|s| s.parse::<i64>().unwrap_or(0));
    } else {
        class_names.sort();
    }
    class_names.dedup();
    let labels = raw_labels
        .iter()
        .map(|l| {
            class_names
                .iter()
                .position(|c| c == l)
                .map(|p| p as u32)
                .ok_or_else(|| Error::Data("internal: label not found".into()))
        })
        .collect::<Result<Vec<u32>>>()?;
    let num_classes = class_names.len();
    Ok(CsvData {
        dataset: Dataset::new(Inputs::Features { values, dim }, labels, num_classes)?,
        class_names,
    })
}

/// Reads a CSV file from disk; see [`load_csv`].
///
/// # Errors
/// [`Error::Data`] when the file cannot be read, or as [`load_csv`].
pub fn load_csv_file(path: &std::path::Path, options: &CsvOptions) -> Result<CsvData> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Data(format!("cannot read {}: {e}", path.display())))?;
    load_csv(&text, options)
}

/// A generated text-classification task for the transformer: each sequence is `seq_len`
/// random filler tokens in which the keyword of its class (token id `class`) appears at
/// `2` random positions and the keyword of one other class once, as a distractor; filler tokens
/// have ids `num_classes..vocab`. The label is the keyword that appears twice, so the model
/// must compare occurrences across positions (a bag-of-words sum of one-hot tokens suffices,
/// but only after attention or pooling across the sequence).
///
/// # Errors
/// [`Error::InvalidParameter`] when `num_classes < 2`, `seq_len < 4` or
/// `vocab <= num_classes`.
pub fn sequence_task(
    n: usize,
    seq_len: usize,
    vocab: usize,
    num_classes: usize,
    seed: u64,
) -> Result<Dataset> {
    if num_classes < 2 {
        return Err(Error::invalid(
            "num_classes",
            num_classes,
            "must be at least 2",
        ));
    }
    if seq_len < 4 {
        return Err(Error::invalid("seq_len", seq_len, "must be at least 4"));
    }
    if vocab <= num_classes {
        return Err(Error::invalid(
            "vocab",
            vocab,
            format!("must exceed num_classes = {num_classes} (filler tokens need ids)"),
        ));
    }
    let mut rng = sotto_dp::rng::seeded_rng(seed);
    let mut ids = Vec::with_capacity(n * seq_len);
    let mut labels = Vec::with_capacity(n);
    let fillers = (vocab - num_classes) as u64;
    for _ in 0..n {
        let class = below(&mut rng, num_classes as u64) as u32;
        let other = ((u64::from(class) + 1 + below(&mut rng, num_classes as u64 - 1))
            % num_classes as u64) as u32;
        let mut seq: Vec<u32> = (0..seq_len)
            .map(|_| num_classes as u32 + below(&mut rng, fillers) as u32)
            .collect();
        let mut pos: Vec<usize> = (0..seq_len).collect();
        shuffle(&mut pos, &mut rng);
        seq[pos[0]] = class;
        seq[pos[1]] = class;
        seq[pos[2]] = other;
        ids.extend(seq);
        labels.push(class);
    }
    Dataset::new(
        Inputs::Tokens {
            ids,
            seq_len,
            vocab,
        },
        labels,
        num_classes,
    )
}

/// Splits a data set across `parties` parties, IID: a seeded shuffle cut into near-equal parts.
///
/// # Errors
/// [`Error::InvalidParameter`] when `parties` is zero or exceeds the number of examples.
pub fn partition_iid(data: &Dataset, parties: usize, seed: u64) -> Result<Vec<Dataset>> {
    check_parties(data, parties)?;
    let mut idx: Vec<usize> = (0..data.len()).collect();
    shuffle(&mut idx, &mut sotto_dp::rng::seeded_rng(seed));
    let n = data.len();
    (0..parties)
        .map(|p| data.subset(&idx[p * n / parties..(p + 1) * n / parties]))
        .collect()
}

/// Splits a data set across `parties` parties with label skew: examples sorted by label are cut
/// into `parties * shards_per_party` contiguous shards, and each party gets
/// `shards_per_party` shards chosen at random (McMahan et al. 2017). With one or two shards per
/// party, each party sees only a few classes.
///
/// # Errors
/// [`Error::InvalidParameter`] when `parties` or `shards_per_party` is zero or there are fewer
/// examples than shards.
pub fn partition_label_skew(
    data: &Dataset,
    parties: usize,
    shards_per_party: usize,
    seed: u64,
) -> Result<Vec<Dataset>> {
    check_parties(data, parties)?;
    if shards_per_party == 0 {
        return Err(Error::invalid("shards_per_party", 0, "must be at least 1"));
    }
    let shards = parties * shards_per_party;
    if shards > data.len() {
        return Err(Error::invalid(
            "shards_per_party",
            shards_per_party,
            format!("{shards} shards exceed the {} examples", data.len()),
        ));
    }
    let mut rng = sotto_dp::rng::seeded_rng(seed);
    let mut idx: Vec<usize> = (0..data.len()).collect();
    shuffle(&mut idx, &mut rng);
    idx.sort_by_key(|&i| data.labels[i]);
    let mut order: Vec<usize> = (0..shards).collect();
    shuffle(&mut order, &mut rng);
    let n = data.len();
    (0..parties)
        .map(|p| {
            let mut mine = Vec::new();
            for &s in &order[p * shards_per_party..(p + 1) * shards_per_party] {
                mine.extend_from_slice(&idx[s * n / shards..(s + 1) * n / shards]);
            }
            data.subset(&mine)
        })
        .collect()
}

fn check_parties(data: &Dataset, parties: usize) -> Result<()> {
    if parties == 0 || parties > data.len() {
        return Err(Error::invalid(
            "parties",
            parties,
            format!("must be between 1 and the {} examples", data.len()),
        ));
    }
    Ok(())
}

/// A uniform integer below `n` (n >= 1) by rejection, no modulo bias.
pub(crate) fn below<R: RngCore + ?Sized>(rng: &mut R, n: u64) -> u64 {
    if n <= 1 {
        return 0;
    }
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return x % n;
        }
    }
}

/// Fisher-Yates shuffle.
pub(crate) fn shuffle<T, R: RngCore + ?Sized>(items: &mut [T], rng: &mut R) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_has_1797_examples_of_64_features_and_10_classes() {
        let d = digits().unwrap();
        assert_eq!(d.len(), 1797);
        assert_eq!(d.num_classes(), 10);
        let Inputs::Features { values, dim } = d.inputs() else {
            panic!("features expected")
        };
        assert_eq!(*dim, 64);
        assert!(values.iter().all(|&v| (0.0..=16.0).contains(&v)));
        // every class is present, roughly 180 times each
        for c in 0..10 {
            let k = d.labels().iter().filter(|&&l| l == c).count();
            assert!((170..=190).contains(&k), "class {c}: {k}");
        }
    }

    #[test]
    fn digits_split_is_80_20_standardized_and_deterministic() {
        let (tr, te) = digits_split(7).unwrap();
        assert_eq!((tr.len(), te.len()), (1438, 359));
        let (tr2, _) = digits_split(7).unwrap();
        assert_eq!(tr, tr2);
        let Inputs::Features { values, dim } = tr.inputs() else {
            panic!()
        };
        // feature 36 (a central pixel) has mean ~0 and std ~1 on the training split
        let col: Vec<f64> = values.chunks(*dim).map(|r| f64::from(r[36])).collect();
        let mean = col.iter().sum::<f64>() / col.len() as f64;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / col.len() as f64;
        assert!(
            mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
            "{mean} {var}"
        );
    }

    #[test]
    fn csv_errors_name_the_line_and_column() {
        let opts = CsvOptions {
            has_header: false,
            label_column: LabelColumn::Last,
        };
        let e = load_csv("1,2,a\n3,x,b\n", &opts).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("column 2"), "{e}");
        let e = load_csv("1,2,a\n3,b\n", &opts).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("columns"), "{e}");
        assert!(load_csv("", &opts).is_err());
        let e = load_csv("1,inf,a\n", &opts).unwrap_err().to_string();
        assert!(e.contains("not a finite number"), "{e}");
        // Finite but beyond f32: called out of range, not "not finite".
        let e = load_csv("1,1e300,a\n", &opts).unwrap_err().to_string();
        assert!(
            e.contains("outside the range") && !e.contains("not a finite"),
            "{e}"
        );
        let named = CsvOptions {
            has_header: true,
            label_column: LabelColumn::Name("nope".into()),
        };
        assert!(load_csv("a,b\n1,2\n", &named).is_err());
    }

    #[test]
    fn csv_label_column_by_index_and_numeric_order() {
        let opts = CsvOptions {
            has_header: false,
            label_column: LabelColumn::Index(0),
        };
        let d = load_csv("10,1.5\n2,2.5\n10,3\n", &opts).unwrap();
        assert_eq!(d.class_names, ["2", "10"]);
        assert_eq!(d.dataset.labels(), &[1, 0, 1]);
        assert_eq!(
            d.dataset.inputs(),
            &Inputs::Features {
                values: vec![1.5, 2.5, 3.0],
                dim: 1
            }
        );
    }

    #[test]
    fn sequence_task_label_is_the_twice_repeated_keyword() {
        let d = sequence_task(200, 12, 24, 4, 1).unwrap();
        let Inputs::Tokens { ids, seq_len, .. } = d.inputs() else {
            panic!()
        };
        for (seq, &label) in ids.chunks(*seq_len).zip(d.labels()) {
            let count = |k: u32| seq.iter().filter(|&&t| t == k).count();
            assert_eq!(count(label), 2);
            let others: usize = (0..4).filter(|&k| k != label).map(count).sum();
            assert_eq!(others, 1);
        }
        assert!(sequence_task(10, 12, 4, 4, 1).is_err());
        assert!(sequence_task(10, 2, 24, 4, 1).is_err());
    }

    #[test]
    fn partitions_cover_the_data_and_label_skew_limits_classes() {
        let d = digits().unwrap();
        let parts = partition_iid(&d, 4, 3).unwrap();
        assert_eq!(parts.iter().map(Dataset::len).sum::<usize>(), d.len());
        let skew = partition_label_skew(&d, 5, 2, 3).unwrap();
        assert_eq!(skew.iter().map(Dataset::len).sum::<usize>(), d.len());
        for p in &skew {
            let mut classes: Vec<u32> = p.labels().to_vec();
            classes.sort_unstable();
            classes.dedup();
            // a shard of ~180 sorted labels spans at most 3 classes (classes have 174..=183
            // examples), so two shards touch at most 6 of the 10
            assert!(classes.len() <= 6, "{classes:?}");
        }
        assert!(partition_iid(&d, 0, 1).is_err());
        assert!(partition_label_skew(&d, 2, 0, 1).is_err());
    }

    proptest::proptest! {
        /// Arbitrary text never makes the CSV loader panic.
        #[test]
        fn csv_loader_never_panics(text in ".{0,200}", header in proptest::bool::ANY, col in 0usize..4) {
            for label_column in [LabelColumn::Last, LabelColumn::Index(col), LabelColumn::Name("a".into())] {
                let _ = load_csv(&text, &CsvOptions { has_header: header, label_column });
            }
        }
    }

    #[test]
    fn new_rejects_inconsistent_data() {
        let f = |values: Vec<f32>| Inputs::Features { values, dim: 2 };
        assert!(Dataset::new(f(vec![1.0; 3]), vec![0, 1], 2).is_err());
        assert!(Dataset::new(f(vec![1.0; 4]), vec![0, 2], 2).is_err());
        assert!(Dataset::new(f(vec![1.0, f32::NAN, 0.0, 0.0]), vec![0, 1], 2).is_err());
        assert!(Dataset::new(f(vec![1.0; 4]), vec![0, 1], 2).is_ok());
    }
}
