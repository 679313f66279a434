//! Private selection: the exponential mechanism as permute-and-flip, and report-noisy-max.

use rand_core::{CryptoRng, RngCore};

use super::Grid;
use super::rational::{Round, to_rational};
use crate::error::check_positive;
use crate::sampling::{DiscreteLaplace, bernoulli_exp_neg, uniform_below};
use crate::{Error, PrivacyLoss, Result};

fn check_scores_nonempty(len: usize) -> Result<()> {
    if len == 0 {
        Err(Error::invalid(
            "scores",
            "[]",
            "need at least one candidate",
        ))
    } else {
        Ok(())
    }
}

/// Float scores snapped to the default grid for `sensitivity` (spacing <= sensitivity / 2^20),
/// and the sensitivity in grid units after charging the rounding (one step per score).
fn snap_scores(scores: &[f64], sensitivity: f64) -> Result<(Vec<i64>, f64)> {
    let grid = Grid::for_scale(sensitivity)?;
    let units = scores
        .iter()
        .map(|s| grid.snap(*s))
        .collect::<Result<Vec<i64>>>()?;
    Ok((units, grid.charged_l1_sensitivity(sensitivity, 1)?))
}

/// The exponential mechanism in its permute-and-flip form (McKenna and Sheldon 2020): visit
/// the candidates in a uniformly random order and stop at candidate `r` with probability
/// `exp(-epsilon (q_max - q_r) / (2 sensitivity))`.
///
/// The best candidate is always accepted, so at most one pass is made. Its expected score is
/// never worse than that of the classic exponential mechanism and up to twice as good; its
/// output distribution equals report-noisy-max with exponential noise (Ding et al. 2021).
///
/// Exactness: the permutation comes from [`uniform_below`], each flip from
/// [`bernoulli_exp_neg`] on an exact rational `gap * c`, where the coefficient
/// `c = epsilon / (2 sensitivity)` is rounded *down* (less privacy loss). Integer scores are
/// used as they are; `f64` scores ([`Self::select`]) are snapped to a power-of-two grid of
/// spacing at most `sensitivity / 2^20` and one grid step is charged to the sensitivity.
///
/// # Privacy
/// `epsilon`-DP when no score changes by more than `sensitivity` between neighbouring
/// datasets (McKenna and Sheldon 2020, Theorem 1). No monotonicity is assumed (no factor-two
/// saving is applied).
///
/// ```
/// use sotto_dp::mechanisms::PermuteAndFlip;
/// use sotto_dp::rng::seeded_rng;
///
/// // Pick the most common answer among four, each vote changes one count by 1.
/// let counts = [120, 80, 410, 95];
/// let selector = PermuteAndFlip::new(1.0, 1.0)?;
/// let winner = selector.select_integer(&mut seeded_rng(2), &counts)?;
/// assert_eq!(winner, 2); // 290 votes ahead: any other answer has probability < e^-145
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PermuteAndFlip {
    epsilon: f64,
    sensitivity: f64,
}

impl PermuteAndFlip {
    /// Permute-and-flip at privacy `epsilon` for scores of sensitivity `sensitivity`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if either is NaN, infinite, zero or negative.
    pub fn new(epsilon: f64, sensitivity: f64) -> Result<Self> {
        Ok(PermuteAndFlip {
            epsilon: check_positive("epsilon", epsilon)?,
            sensitivity: check_positive("sensitivity", sensitivity)?,
        })
    }

    /// The privacy loss of one selection: pure `epsilon`.
    ///
    /// # Privacy
    /// See the type-level documentation.
    pub fn privacy_loss(&self) -> PrivacyLoss {
        PrivacyLoss::Pure {
            epsilon: self.epsilon,
        }
    }

    /// The index of the selected candidate, for integer scores.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `scores` is empty; [`Error::Overflow`] if the
    /// coefficient `epsilon / (2 sensitivity)` is above 2^64.
    pub fn select_integer<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        scores: &[i64],
    ) -> Result<usize> {
        self.select_units(rng, scores, self.sensitivity)
    }

    /// The index of the selected candidate, for `f64` scores (snapped to a grid, the rounding
    /// charged to the sensitivity).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `scores` is empty or a score is not finite.
    pub fn select<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        scores: &[f64],
    ) -> Result<usize> {
        check_scores_nonempty(scores.len())?;
        let (units, sensitivity) = snap_scores(scores, self.sensitivity)?;
        self.select_units(rng, &units, sensitivity)
    }

    fn select_units<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        scores: &[i64],
        sensitivity: f64,
    ) -> Result<usize> {
        check_scores_nonempty(scores.len())?;
        let coefficient = (self.epsilon / (2.0 * sensitivity)).next_down();
        let (c_num, c_den) = to_rational(
            "epsilon / (2 sensitivity)",
            coefficient.max(0.0),
            Round::Down,
        )?;
        let q_max = scores.iter().copied().max().unwrap_or(0);
        let mut order: Vec<usize> = (0..scores.len()).collect();
        let n = order.len();
        for i in 0..n {
            // Fisher-Yates, one step at a time: order[i] is uniform among the unvisited.
            let remaining = (n - i) as u64;
            let offset = usize::try_from(uniform_below(rng, remaining)?)
                .map_err(|_| Error::invalid("scores.len()", n, "too many candidates"))?;
            order.swap(i, i + offset);
            let r = order[i];
            let score = scores.get(r).copied().unwrap_or(q_max);
            let gap = u128::try_from(i128::from(q_max) - i128::from(score)).unwrap_or(0);
            let num = gap.checked_mul(c_num).ok_or_else(|| Error::Overflow {
                context: "permute-and-flip",
                hint: "score gap times epsilon / (2 sensitivity) exceeds 2^128; use smaller scores or a larger sensitivity".into(),
            })?;
            if bernoulli_exp_neg(rng, num, c_den)? {
                return Ok(r);
            }
        }
        // Unreachable in exact arithmetic (the best candidate accepts with probability 1);
        // returning the best one keeps the function total.
        Ok(scores.iter().position(|s| *s == q_max).unwrap_or(0))
    }
}

/// Report-noisy-max with discrete Laplace noise: add independent discrete Laplace noise of
/// scale `(2 sensitivity + 1) / epsilon` to every integer score and report the index of the
/// largest noisy score, breaking ties uniformly at random.
///
/// The `+ 1` pays for ties, which have positive probability with integer noise: fixing the
/// other candidates' noise, candidate `i` wins on one dataset with probability at most
/// `P(Z >= x)` and on a neighbour with probability at least `P(Z > x + 2 sensitivity)`, and
/// for the discrete Laplace `P(Z >= x) / P(Z >= x + m) <= exp(m / scale)` for every integer `x`.
/// `f64` scores are snapped to a grid as in [`PermuteAndFlip`].
///
/// # Privacy
/// `epsilon`-DP when no score changes by more than `sensitivity` between neighbouring
/// datasets (scores need not be monotone).
///
/// ```
/// use sotto_dp::mechanisms::ReportNoisyMax;
/// use sotto_dp::rng::seeded_rng;
///
/// let selector = ReportNoisyMax::new(1.0, 1.0)?;
/// let winner = selector.select_integer(&mut seeded_rng(4), &[3, 1000, 7])?;
/// assert_eq!(winner, 1);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ReportNoisyMax {
    epsilon: f64,
    sensitivity: f64,
    noise: DiscreteLaplace,
}

impl ReportNoisyMax {
    /// Report-noisy-max at privacy `epsilon` for integer scores of sensitivity `sensitivity`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if either is NaN, infinite, zero or negative, or the noise
    /// scale cannot be sampled exactly.
    pub fn new(epsilon: f64, sensitivity: f64) -> Result<Self> {
        check_positive("epsilon", epsilon)?;
        check_positive("sensitivity", sensitivity)?;
        Ok(ReportNoisyMax {
            epsilon,
            sensitivity,
            noise: Self::noise_for(epsilon, sensitivity)?,
        })
    }

    fn noise_for(epsilon: f64, sensitivity: f64) -> Result<DiscreteLaplace> {
        let scale = ((2.0 * sensitivity + 1.0) / epsilon).next_up();
        DiscreteLaplace::new(check_positive("noise scale", scale)?)
    }

    /// The privacy loss of one selection: pure `epsilon`.
    ///
    /// # Privacy
    /// See the type-level documentation.
    pub fn privacy_loss(&self) -> PrivacyLoss {
        PrivacyLoss::Pure {
            epsilon: self.epsilon,
        }
    }

    /// The noise scale used for integer scores.
    pub fn scale(&self) -> f64 {
        self.noise.scale()
    }

    /// The index of the candidate with the largest noisy score, for integer scores.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `scores` is empty.
    pub fn select_integer<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        scores: &[i64],
    ) -> Result<usize> {
        Self::select_with(&self.noise, rng, scores)
    }

    /// The index of the candidate with the largest noisy score, for `f64` scores (snapped to
    /// a grid, the rounding charged to the sensitivity).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `scores` is empty or a score is not finite.
    pub fn select<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        scores: &[f64],
    ) -> Result<usize> {
        check_scores_nonempty(scores.len())?;
        let (units, sensitivity) = snap_scores(scores, self.sensitivity)?;
        let noise = Self::noise_for(self.epsilon, sensitivity)?;
        Self::select_with(&noise, rng, &units)
    }

    fn select_with<R: RngCore + CryptoRng + ?Sized>(
        noise: &DiscreteLaplace,
        rng: &mut R,
        scores: &[i64],
    ) -> Result<usize> {
        check_scores_nonempty(scores.len())?;
        let mut best = 0usize;
        let mut best_score = i128::MIN;
        let mut ties = 0u64;
        for (i, s) in scores.iter().enumerate() {
            let noisy = i128::from(*s) + i128::from(noise.sample(rng));
            if noisy > best_score {
                best = i;
                best_score = noisy;
                ties = 1;
            } else if noisy == best_score {
                // Reservoir sampling: each of the tied candidates ends up chosen w.p. 1/ties.
                ties += 1;
                if uniform_below(rng, ties)? == 0 {
                    best = i;
                }
            }
        }
        Ok(best)
    }
}
