//! Randomized response: each respondent randomizes their own answer before sending it.
//!
//! These are *local* mechanisms: the guarantee holds for each response on its own, against
//! anyone who sees it (the pollster included), whatever the other respondents do.

use rand_core::{CryptoRng, RngCore};

use super::rational::{Round, to_f64_down, to_rational};
use crate::error::check_positive;
use crate::estimators::{self, Estimate};
use crate::sampling::{bernoulli_exp_neg, uniform_below};
use crate::{Error, PrivacyLoss, Result};

/// One fair coin straight from the CSPRNG: the lowest bit of a uniform word is an exact
/// Bernoulli(1/2).
fn fair_coin<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> bool {
    rng.next_u32() & 1 == 1
}

/// The randomized-response poll of the article: flip a fair coin; on tails answer truthfully;
/// on heads flip a second fair coin and answer "yes" on heads, "no" on tails.
///
/// A "yes" respondent answers yes with probability 3/4, a "no" respondent with probability
/// 1/4, so the expected fraction of yes answers is `p / 2 + 1/4` and `2 N / n - 1/2` is an
/// unbiased estimate of the true fraction `p` ([`estimators::two_coin_estimate`]).
///
/// # Privacy
/// Local `ln 3`-DP per respondent: the probability of any answer changes by at most a
/// factor `(3/4) / (1/4) = 3` when the respondent's bit changes. The coins are exact (one bit
/// of a CSPRNG each). The reported epsilon is `ln 3` rounded up.
///
/// ```
/// use sotto_dp::mechanisms::TwoCoinResponse;
/// use sotto_dp::rng::seeded_rng;
///
/// let poll = TwoCoinResponse::new();
/// let mut rng = seeded_rng(42);
/// // 10_000 respondents, 30% of whom would truthfully answer yes.
/// let answers: Vec<bool> = (0..10_000).map(|i| poll.respond(&mut rng, i % 10 < 3)).collect();
/// let yes = answers.iter().filter(|a| **a).count() as u64;
/// let estimate = poll.estimate(yes, 10_000, 0.95)?;
/// assert!(estimate.ci_low < 0.3 && 0.3 < estimate.ci_high);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TwoCoinResponse;

impl TwoCoinResponse {
    /// The two-coin randomizer.
    pub fn new() -> Self {
        TwoCoinResponse
    }

    /// The answer to send for the true answer `truth`.
    pub fn respond<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R, truth: bool) -> bool {
        let first_heads = fair_coin(rng);
        if first_heads { fair_coin(rng) } else { truth }
    }

    /// The privacy loss of one response: pure `ln 3` (rounded up).
    ///
    /// # Privacy
    /// See the type-level documentation.
    pub fn privacy_loss(&self) -> PrivacyLoss {
        PrivacyLoss::Pure {
            epsilon: 3f64.ln().next_up(),
        }
    }

    /// The probability that a respondent answers truthfully: 3/4.
    pub fn truth_probability(&self) -> f64 {
        0.75
    }

    /// The unbiased estimate `2 yes / n - 1/2` of the fraction of true "yes", with a standard
    /// error and a confidence interval (see [`estimators::two_coin_estimate`]).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `n == 0`, `yes > n` or `confidence` is not in (0, 1).
    pub fn estimate(&self, yes: u64, n: u64, confidence: f64) -> Result<Estimate> {
        estimators::two_coin_estimate(yes, n, confidence)
    }
}

/// Binary randomized response with any epsilon: answer truthfully with probability
/// `e^eps / (1 + e^eps)`, otherwise lie.
///
/// Sampled exactly by rejection: propose the truth or a lie with a fair coin, accept the
/// truth always and a lie with probability `exp(-eps')`, where `eps'` is `epsilon` as an
/// exact rational, rounded *down* when it is not representable (with a denominator up to
/// 2^64); the truth then has probability exactly `e^eps' / (1 + e^eps')`. At most two
/// proposals are needed on average, and how many are needed does not depend on the answer.
///
/// # Privacy
/// Local `epsilon`-DP per respondent: the probability of any answer changes by a factor of
/// at most `e^eps' <= e^epsilon` when the respondent's bit changes. The reported epsilon is
/// the requested one, at least the effective one.
///
/// ```
/// use sotto_dp::mechanisms::BinaryRandomizedResponse;
/// use sotto_dp::rng::seeded_rng;
///
/// let rr = BinaryRandomizedResponse::new(1.0)?;
/// let mut rng = seeded_rng(9);
/// let mut yes = 0;
/// for i in 0..20_000u64 {
///     if rr.respond(&mut rng, i % 5 == 0)? { yes += 1; } // true fraction 0.2
/// }
/// let estimate = rr.estimate(yes, 20_000, 0.99)?;
/// assert!(estimate.ci_low < 0.2 && 0.2 < estimate.ci_high);
/// assert_eq!(rr.privacy_loss(), sotto_dp::PrivacyLoss::pure(1.0)?);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BinaryRandomizedResponse {
    epsilon: f64,
    eps_num: u128,
    eps_den: u128,
}

impl BinaryRandomizedResponse {
    /// Binary randomized response at privacy `epsilon`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `epsilon` is NaN, infinite, zero or negative;
    /// [`Error::Overflow`] if it is above 2^64.
    pub fn new(epsilon: f64) -> Result<Self> {
        check_positive("epsilon", epsilon)?;
        let (eps_num, eps_den) = to_rational("epsilon", epsilon, Round::Down)?;
        Ok(BinaryRandomizedResponse {
            epsilon,
            eps_num,
            eps_den,
        })
    }

    /// The answer to send for the true answer `truth`.
    ///
    /// # Errors
    /// Only if the exact sampler rejects its parameters, which the constructor rules out.
    pub fn respond<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        truth: bool,
    ) -> Result<bool> {
        loop {
            if fair_coin(rng) {
                return Ok(truth);
            }
            if bernoulli_exp_neg(rng, self.eps_num, self.eps_den)? {
                return Ok(!truth);
            }
        }
    }

    /// The privacy loss of one response: pure `epsilon` (the requested value).
    ///
    /// # Privacy
    /// See the type-level documentation.
    pub fn privacy_loss(&self) -> PrivacyLoss {
        PrivacyLoss::Pure {
            epsilon: self.epsilon,
        }
    }

    /// The epsilon the sampler really uses (at most the requested one), rounded down.
    pub fn effective_epsilon(&self) -> f64 {
        to_f64_down(self.eps_num, self.eps_den)
    }

    /// The probability of a truthful answer, `e^eps' / (1 + e^eps')` for the effective
    /// epsilon (as an `f64`, for estimation).
    pub fn truth_probability(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let eps = self.eps_num as f64 / self.eps_den as f64;
        1.0 / (1.0 + (-eps).exp())
    }

    /// The unbiased estimate of the fraction of true "yes" from `yes` yes-answers out of `n`
    /// (see [`estimators::binary_rr_estimate`]).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `n == 0`, `yes > n` or `confidence` is not in (0, 1).
    pub fn estimate(&self, yes: u64, n: u64, confidence: f64) -> Result<Estimate> {
        estimators::binary_rr_estimate(yes, n, self.truth_probability(), confidence)
    }
}

/// k-ary randomized response (generalized randomized response): report the true category
/// with probability `e^eps / (e^eps + k - 1)`, otherwise one of the `k - 1` others uniformly.
///
/// Sampled exactly by rejection: propose a uniformly random category; accept it if it is the
/// true one, and otherwise with probability `exp(-eps')` (`eps'` = epsilon as an exact rational,
/// rounded down). Each proposal is accepted with probability `1/k + (k-1)/k e^-eps'`, whatever
/// the true category, so the running time reveals nothing; the expected number of proposals is
/// at most `k` (about `e^eps'` for large `k`).
///
/// # Privacy
/// Local `epsilon`-DP per respondent: any report has probability between
/// `1 / (e^eps' + k - 1)` and `e^eps' / (e^eps' + k - 1)` whatever the true category.
///
/// ```
/// use sotto_dp::mechanisms::KaryRandomizedResponse;
/// use sotto_dp::rng::seeded_rng;
///
/// let rr = KaryRandomizedResponse::new(2.0, 4)?;
/// let mut rng = seeded_rng(11);
/// let mut counts = [0u64; 4];
/// for i in 0..20_000usize {
///     counts[rr.respond(&mut rng, i % 2)?] += 1; // half category 0, half category 1
/// }
/// let estimates = rr.estimate(&counts, 0.99)?;
/// assert!((estimates[0].estimate - 0.5).abs() < 0.05);
/// assert!(estimates[3].estimate.abs() < 0.05);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct KaryRandomizedResponse {
    epsilon: f64,
    k: usize,
    eps_num: u128,
    eps_den: u128,
}

impl KaryRandomizedResponse {
    /// k-ary randomized response over categories `0..k` at privacy `epsilon`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `epsilon` is not finite and positive or `k < 2`;
    /// [`Error::Overflow`] if `epsilon` is above 2^64.
    pub fn new(epsilon: f64, k: usize) -> Result<Self> {
        check_positive("epsilon", epsilon)?;
        if k < 2 {
            return Err(Error::invalid("k", k, "needs at least 2 categories"));
        }
        let (eps_num, eps_den) = to_rational("epsilon", epsilon, Round::Down)?;
        Ok(KaryRandomizedResponse {
            epsilon,
            k,
            eps_num,
            eps_den,
        })
    }

    /// The number of categories.
    pub fn categories(&self) -> usize {
        self.k
    }

    /// The category to report for the true category `value`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `value >= k`.
    pub fn respond<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        value: usize,
    ) -> Result<usize> {
        if value >= self.k {
            return Err(Error::invalid(
                "value",
                value,
                format!("must be a category in 0..{}", self.k),
            ));
        }
        let k = self.k as u64;
        loop {
            let proposal = usize::try_from(uniform_below(rng, k)?)
                .map_err(|_| Error::invalid("k", self.k, "too many categories"))?;
            if proposal == value || bernoulli_exp_neg(rng, self.eps_num, self.eps_den)? {
                return Ok(proposal);
            }
        }
    }

    /// The privacy loss of one response: pure `epsilon` (the requested value).
    ///
    /// # Privacy
    /// See the type-level documentation.
    pub fn privacy_loss(&self) -> PrivacyLoss {
        PrivacyLoss::Pure {
            epsilon: self.epsilon,
        }
    }

    /// The epsilon the sampler really uses (at most the requested one), rounded down.
    pub fn effective_epsilon(&self) -> f64 {
        to_f64_down(self.eps_num, self.eps_den)
    }

    /// The probability of reporting the true category, `e^eps' / (e^eps' + k - 1)`.
    pub fn truth_probability(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let (eps, others) = (
            self.eps_num as f64 / self.eps_den as f64,
            (self.k - 1) as f64,
        );
        1.0 / (1.0 + others * (-eps).exp())
    }

    /// The probability of reporting one particular other category, `1 / (e^eps' + k - 1)`.
    pub fn other_probability(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let others = (self.k - 1) as f64;
        (1.0 - self.truth_probability()) / others
    }

    /// Unbiased estimates of the fraction of respondents in each category from the `counts`
    /// of reports (see [`estimators::kary_rr_estimate`]).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `counts.len() != k`, the counts sum to zero (or
    /// overflow), or `confidence` is not in (0, 1).
    pub fn estimate(&self, counts: &[u64], confidence: f64) -> Result<Vec<Estimate>> {
        if counts.len() != self.k {
            return Err(Error::invalid(
                "counts.len()",
                counts.len(),
                format!("must equal the number of categories k = {}", self.k),
            ));
        }
        estimators::kary_rr_estimate(
            counts,
            self.truth_probability(),
            self.other_probability(),
            confidence,
        )
    }
}
