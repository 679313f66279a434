//! Membership-inference audit: the loss-threshold attack (Yeom et al. 2018).
//!
//! The attacker guesses "member" when a sample's loss under the trained model is below a
//! threshold. Over all thresholds this gives a ROC curve; we report its area (AUC, 0.5 = no
//! better than guessing) and the true-positive rate at a false-positive rate of at most 1%,
//! the low-FPR regime that matters for privacy (Carlini et al. 2022).

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::model::Model;
use crate::{Error, Result};

/// The result of a membership-inference attack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MiaReport {
    /// Area under the ROC curve of the attack (ties count one half).
    pub auc: f64,
    /// True-positive rate at the largest threshold whose false-positive rate is at most 1%.
    pub tpr_at_1pct_fpr: f64,
    /// The false-positive rate actually reached at that threshold (<= 0.01).
    pub fpr: f64,
    /// Number of members (training samples) attacked.
    pub members: usize,
    /// Number of held-out samples attacked.
    pub non_members: usize,
}

/// The loss-threshold attack on given per-sample losses.
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
    if member_losses.is_empty() || non_member_losses.is_empty() {
        return Err(Error::invalid(
            "losses",
            format!(
                "{} members, {} non-members",
                member_losses.len(),
                non_member_losses.len()
            ),
            "the attack needs at least one member and one non-member",
        ));
    }
    if member_losses
        .iter()
        .chain(non_member_losses)
        .any(|l| l.is_nan())
    {
        return Err(Error::invalid("losses", "NaN", "losses must not be NaN"));
    }
    let m = member_losses.len() as f64;
    let n = non_member_losses.len() as f64;
    // AUC by the Mann-Whitney statistic with midranks: score = -loss, member = positive.
    let mut all: Vec<(f64, bool)> = member_losses
        .iter()
        .map(|&l| (-l, true))
        .chain(non_member_losses.iter().map(|&l| (-l, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let midrank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += all[i..=j].iter().filter(|x| x.1).count() as f64 * midrank;
        i = j + 1;
    }
    let auc = (rank_sum - m * (m + 1.0) / 2.0) / (m * n);

    // TPR at FPR <= 1%: predict "member" when score > tau; pick the smallest tau among
    // non-member scores (and +inf) that keeps FPR <= 1%.
    let mut neg: Vec<f64> = non_member_losses.iter().map(|&l| -l).collect();
    neg.sort_by(|a, b| b.total_cmp(a)); // descending
    let allowed = (0.01 * n).floor() as usize;
    let tau = neg.get(allowed).copied().unwrap_or(f64::NEG_INFINITY);
    let fp = neg.iter().filter(|&&s| s > tau).count() as f64;
    let tp = member_losses.iter().filter(|&&l| -l > tau).count() as f64;
    Ok(MiaReport {
        auc,
        tpr_at_1pct_fpr: tp / m,
        fpr: fp / n,
        members: member_losses.len(),
        non_members: non_member_losses.len(),
    })
}

/// Runs the loss-threshold attack on a trained model: `members` are (a subset of) its training
/// data, `non_members` held-out data from the same distribution.
///
/// # Privacy
/// The audit itself reads the training data without protection: it is a diagnostic for the
/// data owner, not something to release. A DP guarantee bounds every attack: at
/// (epsilon, delta), TPR <= e^epsilon * FPR + delta.
///
/// # Errors
/// As [`Model::losses`] and [`loss_threshold_attack`].
pub fn audit_model(model: &Model, members: &Dataset, non_members: &Dataset) -> Result<MiaReport> {
    loss_threshold_attack(&model.losses(members)?, &model.losses(non_members)?)
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
        assert!(r.fpr <= 0.01);
        // 2 non-members (losses 1, 2) may be flagged; threshold below loss 3 catches the 0.5s
        assert!((r.tpr_at_1pct_fpr - 0.5).abs() < 1e-12, "{r:?}");
        assert!(loss_threshold_attack(&[], &non).is_err());
        assert!(loss_threshold_attack(&[f64::NAN], &non).is_err());
    }
}
