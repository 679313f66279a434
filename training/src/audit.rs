//! Privacy audits of trained models: the loss-threshold membership-inference attack (Yeom et
//! al. 2018) and one-run auditing with canaries (Steinke, Nasr and Jagielski 2023).
//!
//! **Loss threshold.** The attacker guesses "member" when a sample's loss under the trained
//! model is below a threshold. Over all thresholds this gives a ROC curve; we report its area
//! (AUC, 0.5 = no better than guessing) and the true-positive rate at the largest
//! false-positive rate that a threshold actually reaches at or below 1%, the low-FPR regime
//! that matters for privacy (Carlini et al. 2022). Thresholds lie only between distinct
//! scores: tied scores are flagged together, so they move TPR and FPR together. Losses are
//! recomputed in `f64` from the logits ([`precise_losses`]), so confidently classified samples
//! do not all tie at an `f32` loss of exactly zero.
//!
//! **One-run canary audit.** [`Canaries`] are `m` random examples with random labels; each is
//! added to the training set independently with probability 1/2. After one training run the
//! auditor scores every canary (how much its loss dropped during training), guesses "in" for
//! the highest scores and "out" for the lowest, abstains on the rest, and turns the number of
//! correct guesses into an empirical lower bound on epsilon ([`one_run_epsilon_lower_bound`]):
//! a mechanism that is (epsilon, delta)-DP cannot make that many correct guesses except with
//! small probability. A bound above the claimed epsilon means the claim is false (or the
//! implementation is broken); a bound below it is consistent with the claim (it does not prove
//! it: the audit is a lower bound).

use std::fmt;

use candle_core::DType;
use rand_core::RngCore;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Inputs};
use crate::model::Model;
use crate::nn::Tape;
use crate::{Error, Result};

/// The largest false-positive rate of the low-FPR operating point.
pub const LOW_FPR: f64 = 0.01;

/// The result of a membership-inference audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiaReport {
    /// Area under the ROC curve of the loss-threshold attack (ties count one half).
    pub auc: f64,
    /// True-positive rate at the threshold with the largest false-positive rate that is at most
    /// 1% ([`LOW_FPR`]); see `fpr`.
    pub tpr_at_1pct_fpr: f64,
    /// The false-positive rate actually reached at that threshold (<= 0.01). Zero when no
    /// threshold reaches a nonzero FPR <= 1% (see `smallest_nonzero_fpr`).
    pub fpr: f64,
    /// The smallest nonzero false-positive rate any threshold reaches (1 / non-members unless
    /// the highest-scoring non-members tie). Above 0.01, the 1%-FPR point does not exist.
    #[serde(default)]
    pub smallest_nonzero_fpr: f64,
    /// Number of members (training samples) attacked.
    pub members: usize,
    /// Number of held-out samples attacked.
    pub non_members: usize,
    /// The one-run canary audit, when the run trained with canaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_audit: Option<CanaryAudit>,
}

impl MiaReport {
    /// Whether some threshold reaches a nonzero false-positive rate of at most 1%.
    pub fn low_fpr_reachable(&self) -> bool {
        self.smallest_nonzero_fpr > 0.0 && self.smallest_nonzero_fpr <= LOW_FPR
    }
}

impl fmt::Display for MiaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "membership-inference audit (loss threshold, {} members vs {} held out): AUC {:.3}, ",
            self.members, self.non_members, self.auc
        )?;
        if self.low_fpr_reachable() {
            write!(
                f,
                "TPR {:.3} at FPR {:.4} (the largest FPR <= 1% a threshold reaches; \
                 AUC 0.5 and TPR = FPR mean the attack learns nothing)",
                self.tpr_at_1pct_fpr, self.fpr
            )?;
        } else {
            write!(
                f,
                "TPR {:.3} at FPR 0; no threshold reaches a nonzero FPR <= 1% (the smallest \
                 nonzero FPR is {:.4}), so the 1%-FPR point is not measurable on this data",
                self.tpr_at_1pct_fpr, self.smallest_nonzero_fpr
            )?;
        }
        if let Some(c) = &self.canary_audit {
            write!(f, "\n{c}")?;
        }
        Ok(())
    }
}

/// One point of a ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// False-positive rate: fraction of negatives flagged.
    pub fpr: f64,
    /// True-positive rate: fraction of positives flagged.
    pub tpr: f64,
}

fn check_scores(positives: &[f64], negatives: &[f64], what: &'static str) -> Result<()> {
    if positives.is_empty() || negatives.is_empty() {
        return Err(Error::invalid(
            what,
            format!(
                "{} positives, {} negatives",
                positives.len(),
                negatives.len()
            ),
            "the attack needs at least one member and one non-member",
        ));
    }
    if positives.iter().chain(negatives).any(|s| s.is_nan()) {
        return Err(Error::invalid(what, "NaN", "scores must not be NaN"));
    }
    Ok(())
}

/// The ROC curve of the rule "flag a sample when its score is at least t", over every
/// threshold t: one point per distinct score (descending), starting at (0, 0) and ending at
/// (1, 1). Samples with equal scores are flagged together, so a tie of positives and
/// negatives moves TPR and FPR in the same step.
///
/// # Errors
/// [`Error::InvalidParameter`] when either list is empty or holds a NaN.
///
/// ```rust
/// use sotto_training::audit::roc_curve;
/// let roc = roc_curve(&[3.0, 2.0], &[2.0, 1.0])?;
/// // thresholds 3, 2, 1: the tie at 2 flags a positive and a negative together
/// let points: Vec<(f64, f64)> = roc.iter().map(|p| (p.fpr, p.tpr)).collect();
/// assert_eq!(points, [(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
/// # Ok::<(), sotto_training::Error>(())
/// ```
pub fn roc_curve(positives: &[f64], negatives: &[f64]) -> Result<Vec<RocPoint>> {
    check_scores(positives, negatives, "scores")?;
    let mut all: Vec<(f64, bool)> = positives
        .iter()
        .map(|&s| (s, true))
        .chain(negatives.iter().map(|&s| (s, false)))
        .collect();
    // descending; -0.0 and 0.0 are one score
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (p, n) = (positives.len() as f64, negatives.len() as f64);
    let mut points = vec![RocPoint { fpr: 0.0, tpr: 0.0 }];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut rest = all.as_slice();
    while let Some(&(score, _)) = rest.first() {
        let tied = rest.iter().take_while(|x| x.0 == score).count();
        let (group, tail) = rest.split_at(tied);
        let pos = group.iter().filter(|x| x.1).count();
        tp += pos;
        fp += tied - pos;
        points.push(RocPoint {
            fpr: fp as f64 / n,
            tpr: tp as f64 / p,
        });
        rest = tail;
    }
    Ok(points)
}

/// Area under a ROC curve by the trapezoid rule (for [`roc_curve`]'s output this is the
/// Mann-Whitney statistic with ties counted one half).
pub fn roc_auc(points: &[RocPoint]) -> f64 {
    points
        .windows(2)
        .map(|w| match w {
            [a, b] => (b.fpr - a.fpr) * (a.tpr + b.tpr) / 2.0,
            _ => 0.0,
        })
        .sum()
}

/// The operating point with the largest false-positive rate at most `max_fpr` (the highest
/// TPR among equal FPRs). [`roc_curve`] starts at (0, 0), so one always exists for
/// `max_fpr >= 0`; it is (0, TPR) when no threshold reaches a nonzero FPR <= `max_fpr`.
pub fn tpr_at_fpr(points: &[RocPoint], max_fpr: f64) -> RocPoint {
    points
        .iter()
        .filter(|p| p.fpr <= max_fpr)
        .fold(RocPoint { fpr: 0.0, tpr: 0.0 }, |best, p| {
            if (p.fpr, p.tpr) > (best.fpr, best.tpr) {
                *p
            } else {
                best
            }
        })
}

/// The loss-threshold attack on given per-sample losses (lower loss: more likely a member).
///
/// # Errors
/// [`Error::InvalidParameter`] when either list is empty or holds a NaN.
///
/// ```rust
/// use sotto_training::audit::loss_threshold_attack;
/// // members have lower loss: a perfect attack
/// let r = loss_threshold_attack(&[0.1, 0.2], &[1.0, 2.0, 3.0])?;
/// assert_eq!(r.auc, 1.0);
/// # Ok::<(), sotto_training::Error>(())
/// ```
pub fn loss_threshold_attack(
    member_losses: &[f64],
    non_member_losses: &[f64],
) -> Result<MiaReport> {
    check_scores(member_losses, non_member_losses, "losses")?;
    let neg = |l: &[f64]| l.iter().map(|&x| -x).collect::<Vec<_>>();
    let roc = roc_curve(&neg(member_losses), &neg(non_member_losses))?;
    let low = tpr_at_fpr(&roc, LOW_FPR);
    let smallest_nonzero_fpr = roc.iter().map(|p| p.fpr).find(|&f| f > 0.0).unwrap_or(0.0);
    Ok(MiaReport {
        auc: roc_auc(&roc),
        tpr_at_1pct_fpr: low.tpr,
        fpr: low.fpr,
        smallest_nonzero_fpr,
        members: member_losses.len(),
        non_members: non_member_losses.len(),
        canary_audit: None,
    })
}

/// Per-sample cross-entropy losses computed in `f64` from the model's logits, accurate down to
/// about 1e-300 (the model's own `f32` losses round every confident prediction to exactly 0,
/// which makes them tie).
///
/// # Errors
/// As [`Model::losses`].
pub fn precise_losses(model: &Model, data: &Dataset) -> Result<Vec<f64>> {
    model.check_data(data)?;
    let mut out = Vec::with_capacity(data.len());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(512) {
        let batch = data.batch(chunk, model.device())?;
        let logits = model
            .forward(&mut Tape::plain(), &batch.inputs)?
            .to_dtype(DType::F64)?
            .detach()
            .to_vec2::<f64>()?;
        let labels = batch.labels.to_vec1::<u32>()?;
        for (row, &y) in logits.iter().zip(&labels) {
            out.push(cross_entropy_f64(row, y as usize)?);
        }
    }
    Ok(out)
}

/// `-log softmax(z)[y]` without cancellation: `log1p(sum_{j != y} exp(z_j - z_y))` when `y`
/// has the largest logit.
fn cross_entropy_f64(z: &[f64], y: usize) -> Result<f64> {
    let zy = *z
        .get(y)
        .ok_or_else(|| Error::Data(format!("label {y} outside {} logits", z.len())))?;
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if zy >= max {
        let rest: f64 = z
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != y)
            .map(|(_, &v)| (v - zy).exp())
            .sum();
        Ok(rest.ln_1p())
    } else {
        let sum: f64 = z.iter().map(|&v| (v - max).exp()).sum();
        Ok(max - zy + sum.ln())
    }
}

/// Runs the loss-threshold attack on a trained model: `members` are (a subset of) its training
/// data, `non_members` held-out data from the same distribution. Losses come from
/// [`precise_losses`].
///
/// # Privacy
/// The audit itself reads the training data without protection: it is a diagnostic for the
/// data owner, not something to release. A DP guarantee bounds every attack: at
/// (epsilon, delta), TPR <= e^epsilon * FPR + delta.
///
/// # Errors
/// As [`Model::losses`] and [`loss_threshold_attack`].
pub fn audit_model(model: &Model, members: &Dataset, non_members: &Dataset) -> Result<MiaReport> {
    loss_threshold_attack(
        &precise_losses(model, members)?,
        &precise_losses(model, non_members)?,
    )
}

// ---------------------------------------------------------------------------------------------
// One-run auditing with canaries
// ---------------------------------------------------------------------------------------------

/// Settings of the one-run canary audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CanaryConfig {
    /// Number of canaries `m`; each joins the training set with probability 1/2.
    pub count: usize,
    /// Seed of the canaries and of their inclusion.
    pub seed: u64,
    /// Confidence of the epsilon lower bound (e.g. 0.95).
    pub confidence: f64,
    /// Standard deviation of the canaries' (Gaussian) features; standardized data have 1.
    pub feature_scale: f64,
}

impl Default for CanaryConfig {
    /// 1000 canaries, 95% confidence, features of standard deviation 1.
    fn default() -> Self {
        CanaryConfig {
            count: 1000,
            seed: 0,
            confidence: 0.95,
            feature_scale: 1.0,
        }
    }
}

impl CanaryConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first bad field.
    pub fn validate(&self) -> Result<()> {
        if self.count < 2 {
            return Err(Error::invalid(
                "canaries.count",
                self.count,
                "the audit needs at least 2 canaries",
            ));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(Error::invalid(
                "canaries.confidence",
                self.confidence,
                "must lie strictly between 0 and 1",
            ));
        }
        if !(self.feature_scale.is_finite() && self.feature_scale > 0.0) {
            return Err(Error::invalid(
                "canaries.feature_scale",
                self.feature_scale,
                "must be positive and finite",
            ));
        }
        Ok(())
    }
}

/// Random canaries for the one-run audit: examples shaped like a data set (Gaussian features,
/// or uniform token ids) with uniformly random labels, each included in training
/// independently with probability 1/2. Mislabeled random points are what a model can only
/// predict by memorizing them, so they are the easiest members to detect.
#[derive(Debug, Clone, PartialEq)]
pub struct Canaries {
    data: Dataset,
    included: Vec<bool>,
    confidence: f64,
}

impl Canaries {
    /// Draws `config.count` canaries shaped like `like` (same feature dimension or sequence
    /// length and vocabulary, same classes) and their inclusion, from a generator seeded by
    /// `config.seed`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for bad settings; [`Error::Data`] when `like` has fewer
    /// than 2 classes.
    pub fn generate(config: &CanaryConfig, like: &Dataset) -> Result<Self> {
        config.validate()?;
        let classes = like.num_classes();
        if classes < 2 {
            return Err(Error::Data(
                "canaries need a data set with at least 2 classes".into(),
            ));
        }
        let mut rng = sotto_dp::rng::seeded_rng(config.seed ^ 0xca4a_71e5_a0d1_7000);
        let m = config.count;
        let inputs = match like.inputs() {
            Inputs::Features { dim, .. } => Inputs::Features {
                values: (0..m * dim)
                    .map(|_| (config.feature_scale * standard_normal(&mut rng)) as f32)
                    .collect(),
                dim: *dim,
            },
            Inputs::Tokens { seq_len, vocab, .. } => Inputs::Tokens {
                ids: (0..m * seq_len)
                    .map(|_| uniform_below(&mut rng, *vocab) as u32)
                    .collect(),
                seq_len: *seq_len,
                vocab: *vocab,
            },
        };
        let labels = (0..m)
            .map(|_| uniform_below(&mut rng, classes) as u32)
            .collect();
        let included = (0..m).map(|_| rng.next_u32() & 1 == 1).collect();
        Ok(Canaries {
            data: Dataset::new(inputs, labels, classes)?,
            included,
            confidence: config.confidence,
        })
    }

    /// All canaries, included or not.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// Whether each canary joins the training set.
    pub fn included(&self) -> &[bool] {
        &self.included
    }

    /// `train` followed by the included canaries.
    ///
    /// # Errors
    /// [`Error::Data`] when `train` is not shaped like the canaries.
    pub fn insert_into(&self, train: &Dataset) -> Result<Dataset> {
        let idx: Vec<usize> = (0..self.included.len())
            .filter(|&i| self.included.get(i).copied().unwrap_or(false))
            .collect();
        let add = self.data.subset(&idx)?;
        let mismatch = || Error::Data("the canaries are not shaped like the training data".into());
        let inputs = match (train.inputs(), add.inputs()) {
            (Inputs::Features { values, dim }, Inputs::Features { values: c, dim: cd })
                if dim == cd =>
            {
                Inputs::Features {
                    values: values.iter().chain(c).copied().collect(),
                    dim: *dim,
                }
            }
            (
                Inputs::Tokens {
                    ids,
                    seq_len,
                    vocab,
                },
                Inputs::Tokens {
                    ids: c,
                    seq_len: cl,
                    vocab: cv,
                },
            ) if seq_len == cl && vocab == cv => Inputs::Tokens {
                ids: ids.iter().chain(c).copied().collect(),
                seq_len: *seq_len,
                vocab: *vocab,
            },
            _ => return Err(mismatch()),
        };
        let labels = train.labels().iter().chain(add.labels()).copied().collect();
        Dataset::new(
            inputs,
            labels,
            train.num_classes().max(self.data.num_classes()),
        )
    }

    /// The canaries' losses under `model` ([`precise_losses`]); call it before training and
    /// after, and pass both to [`Canaries::audit`].
    ///
    /// # Errors
    /// As [`precise_losses`].
    pub fn losses(&self, model: &Model) -> Result<Vec<f64>> {
        precise_losses(model, &self.data)
    }

    /// The audit: each canary's score is how much its loss dropped in training
    /// (`before - after`), then [`one_run_audit`] at this audit's confidence.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the loss lists do not have one entry per canary, hold
    /// a NaN, or `delta` is not in [0, 1).
    pub fn audit(
        &self,
        losses_before: &[f64],
        losses_after: &[f64],
        delta: f64,
        claimed_epsilon: Option<f64>,
    ) -> Result<CanaryAudit> {
        let m = self.included.len();
        if losses_before.len() != m || losses_after.len() != m {
            return Err(Error::invalid(
                "losses",
                format!("{} and {}", losses_before.len(), losses_after.len()),
                format!("need one loss per canary ({m})"),
            ));
        }
        let scores: Vec<f64> = losses_before
            .iter()
            .zip(losses_after)
            .map(|(b, a)| b - a)
            .collect();
        let mut audit = one_run_audit(&scores, &self.included, delta, self.confidence)?;
        audit.claimed_epsilon = claimed_epsilon;
        Ok(audit)
    }
}

/// A standard normal draw (Box-Muller). Canaries need no exact sampling: they are public test
/// inputs, not noise.
fn standard_normal<R: RngCore + ?Sized>(rng: &mut R) -> f64 {
    let u = |rng: &mut R| ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let (u1, u2) = (u(rng), u(rng));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Uniform in `0..n` (`n >= 1`) by rejection.
fn uniform_below<R: RngCore + ?Sized>(rng: &mut R, n: usize) -> usize {
    let n = n.max(1) as u64;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return (x % n) as usize;
        }
    }
}

/// The result of a one-run canary audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryAudit {
    /// Number of canaries `m`.
    pub canaries: usize,
    /// How many of them were in the training set.
    pub included: usize,
    /// Guesses made (`guessed_in + guessed_out`); the rest are abstentions.
    pub guesses: usize,
    /// "In" guesses (the highest scores).
    pub guessed_in: usize,
    /// "Out" guesses (the lowest scores).
    pub guessed_out: usize,
    /// Correct guesses.
    pub correct: usize,
    /// Number of (in, out) guess counts tried; the confidence is split among them
    /// (Bonferroni).
    pub candidates: usize,
    /// Confidence of the bound (e.g. 0.95).
    pub confidence: f64,
    /// The delta at which the bound holds.
    pub delta: f64,
    /// Empirical lower bound: with probability at least `confidence`, the training run is not
    /// (epsilon, delta)-DP for any epsilon below this.
    pub epsilon_lower_bound: f64,
    /// The epsilon the run claims (`None`: non-private, infinite).
    pub claimed_epsilon: Option<f64>,
}

impl CanaryAudit {
    /// Whether the empirical lower bound exceeds the claimed epsilon: then the claim is false
    /// at the audit's confidence (a privacy bug, or a wrong accountant).
    pub fn contradicts_claim(&self) -> bool {
        self.claimed_epsilon
            .is_some_and(|e| self.epsilon_lower_bound > e)
    }
}

impl fmt::Display for CanaryAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "one-run canary audit (Steinke et al. 2023; {} canaries, {} in training): \
             {} correct of {} guesses ({} in, {} out) -> epsilon >= {:.3} at {}% confidence \
             (delta {}), claimed epsilon {}",
            self.canaries,
            self.included,
            self.correct,
            self.guesses,
            self.guessed_in,
            self.guessed_out,
            self.epsilon_lower_bound,
            100.0 * self.confidence,
            self.delta,
            self.claimed_epsilon
                .map_or_else(|| "inf (non-private)".to_string(), |e| format!("{e:.3}")),
        )?;
        if self.contradicts_claim() {
            write!(f, ": THE CLAIM IS FALSE (privacy bug?)")
        } else if self.claimed_epsilon.is_some() {
            write!(f, ": consistent with the claim")
        } else {
            Ok(())
        }
    }
}

/// Fractions of the canaries guessed "in" (and, independently, "out") that the audit tries.
const GUESS_FRACTIONS: [f64; 5] = [0.0, 0.05, 0.1, 0.2, 0.4];

/// The one-run audit on given canary scores (higher: more likely included).
///
/// Sorts the canaries by score (ties broken by index, which is independent of inclusion),
/// and for every pair `(k_in, k_out)` with `k_in / m` and `k_out / m` in
/// {0, 0.05, 0.1, 0.2, 0.4} (not both 0) guesses "in" for the `k_in` highest and "out" for
/// the `k_out` lowest. Each of these `C = 24` candidates gets the bound
/// [`one_run_epsilon_lower_bound`] at failure probability `(1 - confidence) / C`; the largest
/// is reported. By the union bound it holds with probability at least `confidence`.
///
/// # Errors
/// [`Error::InvalidParameter`] when the lists differ in length, hold fewer than 2 canaries
/// or a NaN, or `delta` / `confidence` are out of range.
pub fn one_run_audit(
    scores: &[f64],
    included: &[bool],
    delta: f64,
    confidence: f64,
) -> Result<CanaryAudit> {
    let m = scores.len();
    if m != included.len() || m < 2 {
        return Err(Error::invalid(
            "scores",
            format!("{m} scores, {} inclusion bits", included.len()),
            "need one score per canary and at least 2 canaries",
        ));
    }
    if scores.iter().any(|s| s.is_nan()) {
        return Err(Error::invalid("scores", "NaN", "scores must not be NaN"));
    }
    check_delta_confidence(delta, confidence)?;
    let mut order: Vec<usize> = (0..m).collect();
    // descending score, ascending index
    let score = |i: usize| scores.get(i).copied().unwrap_or(f64::NEG_INFINITY);
    order.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
    let is_in = |i: &usize| included.get(*i).copied().unwrap_or(false);
    let mut candidates = Vec::new();
    for fi in GUESS_FRACTIONS {
        for fo in GUESS_FRACTIONS {
            let (k_in, k_out) = (
                (fi * m as f64).round() as usize,
                (fo * m as f64).round() as usize,
            );
            if k_in + k_out == 0 || k_in + k_out > m {
                continue;
            }
            candidates.push((k_in, k_out));
        }
    }
    let failure = (1.0 - confidence) / candidates.len().max(1) as f64;
    let mut best: Option<CanaryAudit> = None;
    for &(k_in, k_out) in &candidates {
        let correct_in = order.iter().take(k_in).filter(|i| is_in(i)).count();
        let correct_out = order.iter().rev().take(k_out).filter(|i| !is_in(i)).count();
        let (r, v) = (k_in + k_out, correct_in + correct_out);
        let eps = one_run_epsilon_lower_bound(m, r, v, delta, failure)?;
        if best.as_ref().is_none_or(|b| eps > b.epsilon_lower_bound) {
            best = Some(CanaryAudit {
                canaries: m,
                included: included.iter().filter(|&&b| b).count(),
                guesses: r,
                guessed_in: k_in,
                guessed_out: k_out,
                correct: v,
                candidates: candidates.len(),
                confidence,
                delta,
                epsilon_lower_bound: eps,
                claimed_epsilon: None,
            });
        }
    }
    best.ok_or_else(|| Error::invalid("scores", m, "no guess count fits"))
}

fn check_delta_confidence(delta: f64, confidence: f64) -> Result<()> {
    if !(0.0..1.0).contains(&delta) {
        return Err(Error::invalid("delta", delta, "must lie in [0, 1)"));
    }
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(Error::invalid(
            "confidence",
            confidence,
            "must lie strictly between 0 and 1",
        ));
    }
    Ok(())
}

/// `ln(k!)` for `k = 0..=n`.
fn ln_factorials(n: usize) -> Vec<f64> {
    let mut t = Vec::with_capacity(n + 1);
    let mut acc = 0.0;
    t.push(0.0);
    for k in 1..=n {
        acc += (k as f64).ln();
        t.push(acc);
    }
    t
}

/// `ln(e^a + e^b)`.
fn ln_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if hi == f64::NEG_INFINITY {
        hi
    } else {
        hi + (lo - hi).exp().ln_1p()
    }
}

/// `ln(1 + e^x)` without overflow.
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// The natural log of the p-value of `v` correct guesses out of `r` (with `m` canaries) under
/// the hypothesis that training is (epsilon, delta)-DP: Steinke, Nasr and Jagielski 2023,
/// Theorem 3 / Corollary 5.4 (their Appendix D's `p_value_DP_audit`):
///
/// p = min(1, beta + 2 m delta alpha), beta = P[Binomial(r, q) >= v],
/// alpha = max_{1 <= i <= v} P[v - i <= Binomial(r, q) < v] / i, q = e^eps / (1 + e^eps).
///
/// Computed in log space (log-factorials, log-sum-exp), so tails far below 1e-300 are exact.
/// Requires `v <= r <= m` (checked by the callers).
fn ln_p_value(ln_fact: &[f64], m: usize, r: usize, v: usize, eps: f64, delta: f64) -> f64 {
    if v == 0 {
        return 0.0;
    }
    let ln_q = -softplus(-eps);
    let ln_1mq = -softplus(eps);
    let lf = |k: usize| ln_fact.get(k).copied().unwrap_or(f64::INFINITY);
    let ln_pmf = |k: usize| lf(r) - lf(k) - lf(r - k) + k as f64 * ln_q + (r - k) as f64 * ln_1mq;
    let ln_beta = (v..=r).map(ln_pmf).fold(f64::NEG_INFINITY, ln_add);
    let mut ln_p = ln_beta;
    if delta > 0.0 {
        let mut ln_sum = f64::NEG_INFINITY;
        let mut ln_alpha = f64::NEG_INFINITY;
        for i in 1..=v {
            ln_sum = ln_add(ln_sum, ln_pmf(v - i));
            ln_alpha = ln_alpha.max(ln_sum - (i as f64).ln());
        }
        ln_p = ln_add(ln_beta, ln_alpha + (2.0 * m as f64 * delta).ln());
    }
    ln_p.min(0.0)
}

/// The p-value of `v` correct guesses out of `r` (with `m` canaries, each included with
/// probability 1/2) under the hypothesis that training is (epsilon, delta)-DP; see
/// [`one_run_epsilon_lower_bound`].
///
/// # Errors
/// [`Error::InvalidParameter`] unless `v <= r <= m`, `epsilon >= 0` and `delta` in [0, 1).
pub fn one_run_p_value(m: usize, r: usize, v: usize, epsilon: f64, delta: f64) -> Result<f64> {
    check_counts(m, r, v)?;
    if !(epsilon >= 0.0 && epsilon.is_finite()) {
        return Err(Error::invalid(
            "epsilon",
            epsilon,
            "must be finite and non-negative",
        ));
    }
    check_delta_confidence(delta, 0.5)?;
    Ok(ln_p_value(&ln_factorials(r), m, r, v, epsilon, delta).exp())
}

fn check_counts(m: usize, r: usize, v: usize) -> Result<()> {
    if !(v <= r && r <= m) {
        return Err(Error::invalid(
            "guesses",
            format!("m = {m}, r = {r}, v = {v}"),
            "need correct <= guesses <= canaries",
        ));
    }
    Ok(())
}

/// The empirical epsilon lower bound of a one-run audit (Steinke, Nasr and Jagielski 2023,
/// "Privacy Auditing with One (1) Training Run", Theorem 3 and Appendix D): the largest
/// epsilon (to 1e-9) at which [`one_run_p_value`] of `v` correct out of `r` guesses among `m`
/// canaries is still below `failure`. With probability at least `1 - failure` over the
/// canaries' inclusion, an (epsilon, delta)-DP training run (with respect to adding or
/// removing one example) makes fewer correct guesses, so a run that makes `v` is not
/// (epsilon, delta)-DP for any epsilon below the returned value. 0 when even epsilon = 0 is
/// not rejected. Found by bisection (the p-value grows with epsilon).
///
/// # Errors
/// [`Error::InvalidParameter`] unless `v <= r <= m`, `delta` in [0, 1) and `failure` in
/// (0, 1).
///
/// ```rust
/// use sotto_training::audit::one_run_epsilon_lower_bound;
/// // 100 guesses, all correct, 95% confidence, pure DP: q^100 = 0.05, eps = ln(q / (1 - q))
/// let eps = one_run_epsilon_lower_bound(1000, 100, 100, 0.0, 0.05)?;
/// let q = 0.05f64.powf(0.01);
/// assert!((eps - (q / (1.0 - q)).ln()).abs() < 1e-6);
/// // half right is what guessing achieves: no evidence of leakage
/// assert_eq!(one_run_epsilon_lower_bound(1000, 100, 50, 1e-5, 0.05)?, 0.0);
/// # Ok::<(), sotto_training::Error>(())
/// ```
pub fn one_run_epsilon_lower_bound(
    m: usize,
    r: usize,
    v: usize,
    delta: f64,
    failure: f64,
) -> Result<f64> {
    check_counts(m, r, v)?;
    check_delta_confidence(delta, 1.0 - failure)?;
    let ln_fact = ln_factorials(r);
    let ln_failure = failure.ln();
    let rejected = |eps: f64| ln_p_value(&ln_fact, m, r, v, eps, delta) < ln_failure;
    if !rejected(0.0) {
        return Ok(0.0);
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while rejected(hi) {
        lo = hi;
        hi *= 2.0;
        if hi > 1e3 {
            // p-values of this size do not occur for r < 2^64; stay finite regardless
            return Ok(lo);
        }
    }
    while hi - lo > 1e-9 {
        let mid = 0.5 * (lo + hi);
        if rejected(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_identical_distributions_is_one_half() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let r = loss_threshold_attack(&a, &a).unwrap();
        assert!((r.auc - 0.5).abs() < 1e-12);
    }

    #[test]
    fn auc_matches_pairwise_count() {
        let mem = [0.1, 0.5, 0.9, 1.3, 0.5];
        let non = [0.4, 0.5, 2.0];
        let mut wins = 0.0;
        for &a in &mem {
            for &b in &non {
                wins += if a < b {
                    1.0
                } else if a == b {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let r = loss_threshold_attack(&mem, &non).unwrap();
        assert!(
            (r.auc - wins / 15.0).abs() < 1e-12,
            "{} {}",
            r.auc,
            wins / 15.0
        );
    }

    #[test]
    fn tpr_at_low_fpr_respects_the_fpr_bound() {
        // 200 non-members with losses 1..=200, members with losses 0.5 (50) and 100 (50)
        let non: Vec<f64> = (1..=200).map(f64::from).collect();
        let mem: Vec<f64> = (0..100).map(|i| if i < 50 { 0.5 } else { 100.0 }).collect();
        let r = loss_threshold_attack(&mem, &non).unwrap();
        // 2 non-members (losses 1, 2) may be flagged: FPR exactly 1%
        assert!((r.fpr - 0.01).abs() < 1e-12, "{r:?}");
        assert!((r.tpr_at_1pct_fpr - 0.5).abs() < 1e-12, "{r:?}");
        assert!(r.low_fpr_reachable());
        assert!(loss_threshold_attack(&[], &non).is_err());
        assert!(loss_threshold_attack(&[f64::NAN], &non).is_err());
    }

    /// The bug this module had: many losses exactly 0 (f32 underflow), members and
    /// non-members alike. A threshold cannot separate tied scores, so the 0-loss group is
    /// flagged as a whole or not at all.
    #[test]
    fn heavy_ties_move_tpr_and_fpr_together() {
        // 300 non-members: 30 at loss 0, the rest 1..=270; 100 members: 60 at 0, 40 at 5
        let mut non = vec![0.0; 30];
        non.extend((1..=270).map(f64::from));
        let mut mem = vec![0.0; 60];
        mem.extend(vec![5.0; 40]);
        let roc = roc_curve(
            &mem.iter().map(|l| -l).collect::<Vec<_>>(),
            &non.iter().map(|l| -l).collect::<Vec<_>>(),
        )
        .unwrap();
        // first step flags the whole tie: 60 members and 30 non-members together
        assert_eq!(roc[1], RocPoint { fpr: 0.1, tpr: 0.6 });
        // no point between (0, 0) and (0.1, 0.6): a threshold cannot split a tie
        assert_eq!(roc[0], RocPoint { fpr: 0.0, tpr: 0.0 });
        let r = loss_threshold_attack(&mem, &non).unwrap();
        assert_eq!((r.fpr, r.tpr_at_1pct_fpr), (0.0, 0.0));
        assert!((r.smallest_nonzero_fpr - 0.1).abs() < 1e-12);
        assert!(!r.low_fpr_reachable());
        assert!(r.to_string().contains("no threshold reaches"), "{r}");
        // AUC: members at 0 beat 240 non-members and tie 30; members at 5 beat 265, tie 1
        let wins = 60.0 * (270.0 + 0.5 * 30.0) + 40.0 * (265.0 + 0.5 * 1.0);
        assert!((r.auc - wins / 30_000.0).abs() < 1e-12, "{}", r.auc);
    }

    #[test]
    fn signed_zeros_are_one_score() {
        let roc = roc_curve(&[0.0, 1.0], &[-0.0]).unwrap();
        assert_eq!(roc.len(), 3);
        assert_eq!(roc[2], RocPoint { fpr: 1.0, tpr: 1.0 });
        assert!((roc_auc(&roc) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn precise_cross_entropy_does_not_underflow() {
        // f32 would give exactly 0 for a margin of 40
        let l = cross_entropy_f64(&[40.0, 0.0, 0.0], 0).unwrap();
        assert!((l - 2.0 * (-40.0f64).exp()).abs() < 1e-30, "{l}");
        let l = cross_entropy_f64(&[0.0, 3.0], 0).unwrap();
        assert!((l - (1.0 + 3.0f64.exp()).ln()).abs() < 1e-12);
        assert!(cross_entropy_f64(&[0.0, 3.0], 2).is_err());
    }

    fn binom_pmf(r: usize, k: usize, q: f64) -> f64 {
        let mut c = 1.0;
        for i in 0..k {
            c *= (r - i) as f64 / (i + 1) as f64;
        }
        c * q.powi(k as i32) * (1.0 - q).powi((r - k) as i32)
    }

    /// Appendix D's `p_value_DP_audit`, written directly in f64.
    fn naive_p_value(m: usize, r: usize, v: usize, eps: f64, delta: f64) -> f64 {
        let q = 1.0 / (1.0 + (-eps).exp());
        let beta: f64 = (v..=r).map(|k| binom_pmf(r, k, q)).sum();
        let (mut alpha, mut sum) = (0.0f64, 0.0);
        for i in 1..=v {
            sum += binom_pmf(r, v - i, q);
            alpha = alpha.max(sum / i as f64);
        }
        (beta + alpha * delta * 2.0 * m as f64).min(1.0)
    }

    #[test]
    fn p_value_matches_the_direct_formula() {
        for &(m, r, v) in &[(100, 20, 15), (100, 40, 40), (50, 30, 10), (1000, 60, 55)] {
            for &eps in &[0.0, 0.5, 1.0, 2.0, 4.0] {
                for &delta in &[0.0, 1e-5, 1e-3] {
                    let got = one_run_p_value(m, r, v, eps, delta).unwrap();
                    let want = naive_p_value(m, r, v, eps, delta);
                    assert!(
                        (got - want).abs() <= 1e-10 * want.max(1e-300) + 1e-300,
                        "m {m} r {r} v {v} eps {eps} delta {delta}: {got} vs {want}"
                    );
                }
            }
        }
        assert!(one_run_p_value(10, 5, 6, 1.0, 0.0).is_err());
        assert!(one_run_p_value(10, 11, 6, 1.0, 0.0).is_err());
        assert!(one_run_p_value(10, 5, 3, -1.0, 0.0).is_err());
    }

    #[test]
    fn epsilon_bound_is_the_rejection_boundary() {
        let (m, r, v, delta, failure) = (1000, 200, 180, 1e-5, 0.05 / 24.0);
        let eps = one_run_epsilon_lower_bound(m, r, v, delta, failure).unwrap();
        assert!(eps > 1.0 && eps < 3.0, "{eps}");
        assert!(one_run_p_value(m, r, v, eps, delta).unwrap() < failure);
        assert!(one_run_p_value(m, r, v, eps + 1e-6, delta).unwrap() >= failure);
        // more correct guesses, stronger evidence; delta weakens it
        let more = one_run_epsilon_lower_bound(m, r, v + 10, delta, failure).unwrap();
        assert!(more > eps);
        let pure = one_run_epsilon_lower_bound(m, r, v, 0.0, failure).unwrap();
        assert!(pure > eps);
        assert_eq!(
            one_run_epsilon_lower_bound(m, r, 100, delta, failure).unwrap(),
            0.0
        );
        assert_eq!(
            one_run_epsilon_lower_bound(m, 0, 0, delta, 0.05).unwrap(),
            0.0
        );
        assert!(one_run_epsilon_lower_bound(m, r, v, 1.0, 0.05).is_err());
        assert!(one_run_epsilon_lower_bound(m, r, v, delta, 0.0).is_err());
    }

    fn inclusion(m: usize, seed: u64) -> Vec<bool> {
        let mut rng = sotto_dp::rng::seeded_rng(seed);
        (0..m).map(|_| rng.next_u32() & 1 == 1).collect()
    }

    #[test]
    fn perfect_scores_give_a_large_bound_and_random_scores_none() {
        let m = 1000;
        let included = inclusion(m, 7);
        let perfect: Vec<f64> = included.iter().map(|&b| f64::from(u8::from(b))).collect();
        let a = one_run_audit(&perfect, &included, 1e-5, 0.95).unwrap();
        assert_eq!(a.correct, a.guesses);
        assert_eq!(a.candidates, 24);
        assert!(a.epsilon_lower_bound > 4.0, "{a:?}");
        // scores independent of inclusion: at most 5% of seeds may show a positive bound
        let mut positive = 0;
        for seed in 0..20 {
            let mut rng = sotto_dp::rng::seeded_rng(100 + seed);
            let scores: Vec<f64> = (0..m).map(|_| rng.next_u32() as f64).collect();
            let a = one_run_audit(&scores, &included, 1e-5, 0.95).unwrap();
            assert!(a.epsilon_lower_bound < 0.5, "{a:?}");
            positive += usize::from(a.epsilon_lower_bound > 0.0);
        }
        assert!(positive <= 2, "{positive} of 20 seeds");
        // all scores tied: the tie-break by index is independent of inclusion
        let a = one_run_audit(&vec![1.0; m], &included, 1e-5, 0.95).unwrap();
        assert!(a.epsilon_lower_bound < 0.5, "{a:?}");
        assert!(one_run_audit(&perfect[..10], &included, 1e-5, 0.95).is_err());
        assert!(one_run_audit(&[f64::NAN, 1.0], &[true, false], 1e-5, 0.95).is_err());
        assert!(one_run_audit(&perfect, &included, 1e-5, 1.0).is_err());
    }

    #[test]
    fn canaries_are_seeded_and_inserted() {
        let (train, _) = crate::data::digits_split(1).unwrap();
        let config = CanaryConfig {
            count: 200,
            seed: 3,
            ..CanaryConfig::default()
        };
        let c = Canaries::generate(&config, &train).unwrap();
        assert_eq!(c, Canaries::generate(&config, &train).unwrap());
        assert_ne!(
            c,
            Canaries::generate(
                &CanaryConfig {
                    seed: 4,
                    ..config.clone()
                },
                &train
            )
            .unwrap()
        );
        let k = c.included().iter().filter(|&&b| b).count();
        assert!((70..=130).contains(&k), "{k}");
        let all = c.insert_into(&train).unwrap();
        assert_eq!(all.len(), train.len() + k);
        assert_eq!(all.labels()[..train.len()], *train.labels());
        assert!(c.data().labels().iter().all(|&l| l < 10));
        assert!(Canaries::generate(&CanaryConfig { count: 1, ..config }, &train).is_err());
    }
}
