//! Integration tests of the mechanisms and estimators: unbiasedness, interval coverage, grid
//! charging and parameter validation.
//!
//! Statistical checks use fixed seeds and tolerances of about 4.5 standard errors (a
//! two-sided significance level of about 1e-5 per check), so a correct implementation fails
//! them only with negligible probability, while an estimator biased by more than the stated
//! tolerance fails.

use sotto_dp::PrivacyLoss;
use sotto_dp::estimators::{Estimate, two_coin_estimate};
use sotto_dp::mechanisms::{
    BinaryRandomizedResponse, FloatGaussianMechanism, FloatLaplaceMechanism, GaussianCalibration,
    GaussianMechanism, Grid, KaryRandomizedResponse, LaplaceMechanism, PermuteAndFlip,
    ReportNoisyMax, TwoCoinResponse,
};
use sotto_dp::rng::{DefaultRng, seeded_rng};
use sotto_dp::sampling::bernoulli_rational;

/// Number of standard errors allowed in the checks below (two-sided p ~ 7e-6).
const Z_TOL: f64 = 4.5;

/// A respondent drawn at random from a population where a fraction `num / den` would answer
/// yes: the estimators target this population fraction (respondents are a random sample).
fn random_respondent(rng: &mut DefaultRng, num: u128, den: u128) -> bool {
    bernoulli_rational(rng, num, den).is_ok_and(|yes| yes)
}

fn mean_and_se(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// Asserts the empirical coverage of `covered` out of `trials` intervals at nominal level
/// `confidence` is at least nominal minus 4.5 binomial standard errors, and (if `exact`) not
/// above nominal plus the same tolerance.
fn assert_coverage(covered: usize, trials: usize, confidence: f64, exact: bool, what: &str) {
    let rate = covered as f64 / trials as f64;
    let se = (confidence * (1.0 - confidence) / trials as f64).sqrt();
    assert!(
        rate >= confidence - Z_TOL * se,
        "{what}: coverage {rate} < {confidence}"
    );
    if exact {
        assert!(
            rate <= confidence + Z_TOL * se,
            "{what}: coverage {rate} >> {confidence}"
        );
    }
}

#[test]
fn two_coin_poll_is_unbiased_and_intervals_cover() {
    let poll = TwoCoinResponse::new();
    let mut rng = seeded_rng(2024);
    let (n, true_fraction, polls) = (1_000u64, 0.3, 400usize);
    let mut estimates = Vec::new();
    let mut covered = 0;
    for _ in 0..polls {
        let mut yes = 0u64;
        for _ in 0..n {
            let truth = random_respondent(&mut rng, 3, 10);
            yes += u64::from(poll.respond(&mut rng, truth));
        }
        let e = poll.estimate(yes, n, 0.95).unwrap();
        assert_eq!(e.estimate, 2.0 * yes as f64 / n as f64 - 0.5);
        covered += usize::from(e.ci_low <= true_fraction && true_fraction <= e.ci_high);
        estimates.push(e.estimate);
    }
    let (mean, se) = mean_and_se(&estimates);
    assert!(
        (mean - true_fraction).abs() < Z_TOL * se,
        "mean {mean} +- {se}"
    );
    assert_coverage(covered, polls, 0.95, true, "two-coin");
    assert_eq!(
        poll.privacy_loss(),
        PrivacyLoss::Pure {
            epsilon: 3f64.ln().next_up()
        }
    );
}

#[test]
fn binary_rr_is_unbiased_and_intervals_cover() {
    for (epsilon, (num, den)) in [(0.5, (1, 10)), (2.0, (13, 20))] {
        let true_fraction = num as f64 / den as f64;
        let rr = BinaryRandomizedResponse::new(epsilon).unwrap();
        let expected_truth = epsilon.exp() / (1.0 + epsilon.exp());
        assert!((rr.truth_probability() - expected_truth).abs() < 1e-12);
        let mut rng = seeded_rng(7);
        let (n, polls) = (1_000u64, 300usize);
        let mut estimates = Vec::new();
        let mut covered = 0;
        for _ in 0..polls {
            let mut yes = 0u64;
            for _ in 0..n {
                let truth = random_respondent(&mut rng, num, den);
                yes += u64::from(rr.respond(&mut rng, truth).unwrap());
            }
            let e = rr.estimate(yes, n, 0.9).unwrap();
            covered += usize::from(e.ci_low <= true_fraction && true_fraction <= e.ci_high);
            estimates.push(e.estimate);
        }
        let (mean, se) = mean_and_se(&estimates);
        assert!(
            (mean - true_fraction).abs() < Z_TOL * se,
            "eps {epsilon}: {mean} +- {se}"
        );
        assert_coverage(covered, polls, 0.9, true, "binary rr");
    }
}

#[test]
fn binary_rr_truth_rate_matches_e_eps_over_one_plus_e_eps() {
    let rr = BinaryRandomizedResponse::new(1.0).unwrap();
    let mut rng = seeded_rng(99);
    let trials = 100_000;
    let truthful = (0..trials)
        .filter(|_| rr.respond(&mut rng, true).unwrap())
        .count();
    let p = 1f64.exp() / (1.0 + 1f64.exp());
    let se = (p * (1.0 - p) / trials as f64).sqrt();
    assert!((truthful as f64 / trials as f64 - p).abs() < Z_TOL * se);
}

#[test]
fn kary_rr_is_unbiased_per_category() {
    let k = 5;
    let rr = KaryRandomizedResponse::new(1.5, k).unwrap();
    let truth = [0.4, 0.3, 0.2, 0.1, 0.0];
    let (n, polls) = (2_000usize, 100usize);
    let mut rng = seeded_rng(31);
    let mut per_category: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut covered = vec![0usize; k];
    for _ in 0..polls {
        let mut counts = vec![0u64; k];
        for _ in 0..n {
            // A random respondent from a population with the fractions in `truth`.
            let f = sotto_dp::sampling::uniform_below(&mut rng, 10).unwrap();
            let category = match f {
                0..=3 => 0,
                4..=6 => 1,
                7..=8 => 2,
                _ => 3,
            };
            counts[rr.respond(&mut rng, category).unwrap()] += 1;
        }
        let estimates = rr.estimate(&counts, 0.95).unwrap();
        let total: f64 = estimates.iter().map(|e| e.estimate).sum();
        assert!((total - 1.0).abs() < 1e-9, "estimates sum to {total}");
        for (j, e) in estimates.iter().enumerate() {
            per_category[j].push(e.estimate);
            covered[j] += usize::from(e.ci_low <= truth[j] && truth[j] <= e.ci_high);
        }
    }
    for j in 0..k {
        let (mean, se) = mean_and_se(&per_category[j]);
        assert!(
            (mean - truth[j]).abs() < Z_TOL * se,
            "category {j}: {mean} +- {se}"
        );
        assert_coverage(covered[j], polls, 0.95, true, "k-ary");
    }
}

#[test]
fn kary_rr_report_distribution_is_exact() {
    let rr = KaryRandomizedResponse::new(1.0, 3).unwrap();
    let mut rng = seeded_rng(5);
    let trials = 60_000;
    let mut counts = [0usize; 3];
    for _ in 0..trials {
        counts[rr.respond(&mut rng, 1).unwrap()] += 1;
    }
    let e = 1f64.exp();
    let expected = [1.0 / (e + 2.0), e / (e + 2.0), 1.0 / (e + 2.0)];
    for j in 0..3 {
        let p = expected[j];
        let se = (p * (1.0 - p) / trials as f64).sqrt();
        let got = counts[j] as f64 / trials as f64;
        assert!((got - p).abs() < Z_TOL * se, "category {j}: {got} vs {p}");
    }
    assert!((rr.truth_probability() - expected[1]).abs() < 1e-12);
}

#[test]
fn laplace_release_is_unbiased_and_exact_interval_covers() {
    let mechanism = LaplaceMechanism::new(1.0, 0.5).unwrap();
    assert!(mechanism.scale() >= 2.0 && mechanism.scale() < 2.0 * (1.0 + 1e-9));
    let mut rng = seeded_rng(11);
    let trials = 4_000;
    let value = 1_000i64;
    let mut noisy = Vec::new();
    let mut covered = 0;
    for _ in 0..trials {
        let y = mechanism.release(&mut rng, value);
        let ci = mechanism.confidence_interval(y, 0.9).unwrap();
        covered += usize::from(ci.ci_low <= value as f64 && value as f64 <= ci.ci_high);
        noisy.push(y as f64);
    }
    let (mean, se) = mean_and_se(&noisy);
    assert!((mean - value as f64).abs() < Z_TOL * se);
    // The interval is exact but discrete, so coverage is at least nominal.
    assert_coverage(covered, trials, 0.9, false, "laplace");
    let ci = mechanism.confidence_interval(0, 0.9).unwrap();
    let std = ci.std_error;
    let (_, sample_se) = mean_and_se(&noisy);
    let sample_std = sample_se * (trials as f64).sqrt();
    assert!(
        (sample_std / std - 1.0).abs() < 0.1,
        "std {sample_std} vs {std}"
    );
}

#[test]
fn gaussian_release_is_unbiased_and_conservative_interval_covers() {
    let mechanism = GaussianMechanism::new(1.0, GaussianCalibration::Zcdp { rho: 0.125 }).unwrap();
    assert!(mechanism.sigma() >= 2.0 && mechanism.sigma() < 2.0 * (1.0 + 1e-6));
    let mut rng = seeded_rng(12);
    let trials = 4_000;
    let mut noisy = Vec::new();
    let mut covered = 0;
    for _ in 0..trials {
        let y = mechanism.release(&mut rng, -50);
        let ci = mechanism.confidence_interval(y, 0.8).unwrap();
        covered += usize::from(ci.ci_low <= -50.0 && -50.0 <= ci.ci_high);
        noisy.push(y as f64);
    }
    let (mean, se) = mean_and_se(&noisy);
    assert!((mean + 50.0).abs() < Z_TOL * se);
    assert_coverage(covered, trials, 0.8, false, "gaussian");
    let PrivacyLoss::Zcdp { rho } = mechanism.privacy_loss() else {
        panic!("Gaussian reports zCDP")
    };
    assert!(rho >= 1.0 / (2.0 * mechanism.sigma().powi(2)));
    assert!(rho <= 0.125 * (1.0 + 1e-6));
}

#[test]
fn gaussian_calibrations() {
    // Classic: sigma = sqrt(2 ln(1.25/delta)) / eps, only for eps < 1.
    let classic = GaussianCalibration::Classic {
        epsilon: 0.5,
        delta: 1e-5,
    };
    let expected = (2.0 * (1.25f64 / 1e-5).ln()).sqrt() / 0.5;
    let sigma = classic.sigma(1.0).unwrap();
    assert!(sigma >= expected && sigma < expected * (1.0 + 1e-9));
    let err = GaussianCalibration::Classic {
        epsilon: 1.0,
        delta: 1e-5,
    }
    .sigma(1.0)
    .unwrap_err();
    assert!(err.to_string().contains("analytic"), "{err}");
    // Analytic (Balle-Wang) needs less noise than classic where both apply, and works for eps >= 1.
    let analytic = GaussianCalibration::Analytic {
        epsilon: 0.5,
        delta: 1e-5,
    };
    assert!(analytic.sigma(1.0).unwrap() < sigma);
    let high = GaussianCalibration::Analytic {
        epsilon: 4.0,
        delta: 1e-5,
    };
    assert!(high.sigma(1.0).unwrap() > 0.0);
    // Noise multiplier is linear in the sensitivity.
    let nm = GaussianCalibration::NoiseMultiplier {
        noise_multiplier: 1.1,
    };
    assert!((nm.sigma(2.0).unwrap() - 2.2).abs() < 1e-9);
    // The reported zCDP converts to an (epsilon, delta) guarantee.
    let mechanism = GaussianMechanism::new(1.0, analytic).unwrap();
    let eps = mechanism.privacy_loss().epsilon_at(1e-5).unwrap();
    assert!(eps.is_finite() && eps > 0.0);
}

#[test]
fn float_laplace_charges_the_grid_rounding() {
    let grid = Grid::from_exponent(-3).unwrap(); // spacing 1/8
    let mechanism = FloatLaplaceMechanism::with_grid(1.0, 1.0, 1, grid).unwrap();
    // sensitivity 1 = 8 steps, plus one step for rounding: scale >= 9 steps = 9/8.
    assert!(mechanism.charged_sensitivity() >= 9.0);
    assert!(mechanism.scale() >= 9.0 / 8.0);
    let vector = FloatLaplaceMechanism::with_grid(1.0, 1.0, 4, grid).unwrap();
    assert!(vector.charged_sensitivity() >= 12.0 && vector.charged_sensitivity() < 12.0 + 1e-9);
    let mut rng = seeded_rng(3);
    for _ in 0..100 {
        let y = mechanism.release(&mut rng, 0.3).unwrap();
        assert_eq!((y * 8.0).fract(), 0.0, "{y} is not on the grid");
    }
    let ys = vector
        .release_vector(&mut rng, &[0.1, 0.2, 0.3, 0.4])
        .unwrap();
    assert!(ys.iter().all(|y| (y * 8.0).fract() == 0.0));
    assert!(vector.release_vector(&mut rng, &[0.1]).is_err());
    assert!(vector.release(&mut rng, 0.1).is_err());
    assert!(mechanism.release(&mut rng, f64::NAN).is_err());
    assert!(mechanism.release(&mut rng, f64::INFINITY).is_err());
    // The default grid is 2^20 times finer than the noise scale: negligible charge.
    let fine = FloatLaplaceMechanism::new(1.0, 1.0, 1).unwrap();
    assert_eq!(fine.grid().exponent(), -20);
    assert!(fine.scale() < 1.0 + 2e-6);
}

#[test]
fn float_laplace_interval_covers_the_raw_value() {
    let mechanism = FloatLaplaceMechanism::new(2500.0, 1.0, 1).unwrap();
    let mut rng = seeded_rng(17);
    let trials = 2_000;
    let value = 3171.5;
    let mut covered = 0;
    let mut noisy = Vec::new();
    for _ in 0..trials {
        let y = mechanism.release(&mut rng, value).unwrap();
        let ci = mechanism.confidence_interval(y, 0.9).unwrap();
        covered += usize::from(ci.ci_low <= value && value <= ci.ci_high);
        noisy.push(y);
    }
    assert_coverage(covered, trials, 0.9, false, "float laplace");
    let (mean, se) = mean_and_se(&noisy);
    assert!((mean - value).abs() < Z_TOL * se);
}

#[test]
fn float_gaussian_charges_sqrt_dim_steps() {
    let grid = Grid::from_exponent(-2).unwrap(); // spacing 1/4
    let calibration = GaussianCalibration::Zcdp { rho: 0.5 };
    let mechanism = FloatGaussianMechanism::with_grid(1.0, calibration, 9, grid).unwrap();
    // 4 steps of sensitivity plus sqrt(9) = 3 steps of rounding.
    assert!(mechanism.charged_sensitivity() >= 7.0 && mechanism.charged_sensitivity() < 7.0 + 1e-9);
    // Calibrated on the charged sensitivity: rho stays the requested 0.5.
    let PrivacyLoss::Zcdp { rho } = mechanism.privacy_loss() else {
        panic!()
    };
    assert!(
        (0.5 * (1.0 - 1e-6)..=0.5 * (1.0 + 1e-6)).contains(&rho),
        "{rho}"
    );
    assert!(mechanism.sigma() >= 7.0 / 4.0);
    let ys = mechanism
        .release_vector(&mut seeded_rng(1), &[0.3; 9])
        .unwrap();
    assert!(ys.iter().all(|y| (y * 4.0).fract() == 0.0));
    let mut rng = seeded_rng(2);
    let scalar = FloatGaussianMechanism::new(1.0, calibration, 1).unwrap();
    let trials = 2_000;
    let mut covered = 0;
    for _ in 0..trials {
        let y = scalar.release(&mut rng, 0.123).unwrap();
        let ci = scalar.confidence_interval(y, 0.9).unwrap();
        covered += usize::from(ci.ci_low <= 0.123 && 0.123 <= ci.ci_high);
    }
    assert_coverage(covered, trials, 0.9, false, "float gaussian");
}

#[test]
fn default_grids_stay_within_the_sampler_limits() {
    // DP-SGD-like: a million coordinates, noise multiplier 20 (sigma = 20 * sensitivity).
    let calibration = GaussianCalibration::NoiseMultiplier {
        noise_multiplier: 20.0,
    };
    let mechanism = FloatGaussianMechanism::new(1.0, calibration, 1_000_000).unwrap();
    let units = mechanism.sigma() / mechanism.grid().spacing();
    assert!(units <= sotto_dp::sampling::MAX_GAUSSIAN_SIGMA, "{units}");
    // The coarser grid costs little: the charge sqrt(dim) * spacing is small next to sigma.
    assert!(mechanism.sigma() < 20.0 * 1.01, "{}", mechanism.sigma());
    let values = vec![0.001; 1_000_000];
    let noisy = mechanism
        .release_vector(&mut seeded_rng(1), &values)
        .unwrap();
    let (mean, _) = mean_and_se(&noisy);
    assert!(mean.abs() < 0.2, "{mean}");
    // Laplace with tiny epsilon and many coordinates.
    let laplace = FloatLaplaceMechanism::new(1.0, 1e-6, 100_000).unwrap();
    assert!(laplace.scale() / laplace.grid().spacing() <= sotto_dp::sampling::MAX_LAPLACE_SCALE);
    assert!(laplace.scale() < 1e6 * 1.01);
}

/// The exact permute-and-flip distribution for small candidate sets, by enumerating orders.
fn permute_and_flip_distribution(scores: &[i64], coefficient: f64) -> Vec<f64> {
    fn permutations(items: Vec<usize>) -> Vec<Vec<usize>> {
        if items.len() <= 1 {
            return vec![items];
        }
        let mut out = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.clone();
            let first = rest.remove(i);
            for mut p in permutations(rest) {
                p.insert(0, first);
                out.push(p);
            }
        }
        out
    }
    let max = scores.iter().copied().max().unwrap_or(0);
    let accept: Vec<f64> = scores
        .iter()
        .map(|s| (-coefficient * (max - s) as f64).exp())
        .collect();
    let perms = permutations((0..scores.len()).collect());
    let mut probs = vec![0.0; scores.len()];
    for p in &perms {
        let mut reach = 1.0;
        for &r in p {
            probs[r] += reach * accept[r] / perms.len() as f64;
            reach *= 1.0 - accept[r];
        }
    }
    probs
}

#[test]
fn permute_and_flip_matches_its_exact_distribution() {
    let scores = [0i64, -1, -3, 0];
    let selector = PermuteAndFlip::new(2.0, 1.0).unwrap(); // coefficient eps/(2 Delta) = 1
    let expected = permute_and_flip_distribution(&scores, 1.0);
    let mut rng = seeded_rng(8);
    let trials = 40_000;
    let mut counts = [0usize; 4];
    for _ in 0..trials {
        counts[selector.select_integer(&mut rng, &scores).unwrap()] += 1;
    }
    for j in 0..4 {
        let p = expected[j];
        let se = (p * (1.0 - p) / trials as f64).sqrt();
        let got = counts[j] as f64 / trials as f64;
        assert!((got - p).abs() < Z_TOL * se, "candidate {j}: {got} vs {p}");
    }
    // Float scores on a grid behave the same up to the (tiny) rounding charge.
    let float_scores = [0.0, -1.0, -3.0, 0.0];
    let mut counts_f = [0usize; 4];
    for _ in 0..trials {
        counts_f[selector.select(&mut rng, &float_scores).unwrap()] += 1;
    }
    for j in 0..4 {
        let p = expected[j];
        let se = (p * (1.0 - p) / trials as f64).sqrt();
        let got = counts_f[j] as f64 / trials as f64;
        assert!(
            (got - p).abs() < Z_TOL * se + 1e-4,
            "float candidate {j}: {got} vs {p}"
        );
    }
    assert_eq!(selector.privacy_loss(), PrivacyLoss::Pure { epsilon: 2.0 });
}

#[test]
fn report_noisy_max_breaks_ties_uniformly_and_prefers_the_best() {
    let selector = ReportNoisyMax::new(1.0, 1.0).unwrap();
    assert!(selector.scale() >= 3.0); // (2 * 1 + 1) / 1
    let mut rng = seeded_rng(21);
    let trials = 20_000;
    let mut counts = [0usize; 3];
    for _ in 0..trials {
        counts[selector.select_integer(&mut rng, &[5, 5, 5]).unwrap()] += 1;
    }
    let se = (2.0 / 9.0 / trials as f64).sqrt();
    for c in counts {
        assert!(
            (c as f64 / trials as f64 - 1.0 / 3.0).abs() < Z_TOL * se,
            "{counts:?}"
        );
    }
    let wins = (0..2_000)
        .filter(|_| selector.select(&mut rng, &[0.0, 40.0, 1.0]).unwrap() == 1)
        .count();
    assert!(wins > 1_900, "{wins}");
}

#[test]
fn constructors_reject_bad_parameters() {
    let bad = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -1.0];
    for b in bad {
        assert!(LaplaceMechanism::new(b, 1.0).is_err());
        assert!(LaplaceMechanism::new(1.0, b).is_err());
        assert!(FloatLaplaceMechanism::new(b, 1.0, 1).is_err());
        assert!(FloatLaplaceMechanism::new(1.0, b, 1).is_err());
        assert!(GaussianMechanism::new(b, GaussianCalibration::Zcdp { rho: 1.0 }).is_err());
        assert!(GaussianMechanism::new(1.0, GaussianCalibration::Zcdp { rho: b }).is_err());
        assert!(
            GaussianMechanism::new(
                1.0,
                GaussianCalibration::Analytic {
                    epsilon: b,
                    delta: 1e-5
                }
            )
            .is_err()
        );
        assert!(
            GaussianMechanism::new(
                1.0,
                GaussianCalibration::Classic {
                    epsilon: 0.5,
                    delta: b
                }
            )
            .is_err()
        );
        assert!(
            GaussianMechanism::new(
                1.0,
                GaussianCalibration::NoiseMultiplier {
                    noise_multiplier: b
                }
            )
            .is_err()
        );
        assert!(FloatGaussianMechanism::new(b, GaussianCalibration::Zcdp { rho: 1.0 }, 2).is_err());
        assert!(BinaryRandomizedResponse::new(b).is_err());
        assert!(KaryRandomizedResponse::new(b, 3).is_err());
        assert!(PermuteAndFlip::new(b, 1.0).is_err());
        assert!(PermuteAndFlip::new(1.0, b).is_err());
        assert!(ReportNoisyMax::new(b, 1.0).is_err());
        assert!(ReportNoisyMax::new(1.0, b).is_err());
        assert!(Grid::with_granularity(b).is_err());
    }
    for delta in [0.0, 1.0, 1.5] {
        assert!(
            GaussianMechanism::new(
                1.0,
                GaussianCalibration::Analytic {
                    epsilon: 1.0,
                    delta
                }
            )
            .is_err()
        );
    }
    assert!(FloatLaplaceMechanism::new(1.0, 1.0, 0).is_err());
    assert!(FloatGaussianMechanism::new(1.0, GaussianCalibration::Zcdp { rho: 1.0 }, 0).is_err());
    assert!(KaryRandomizedResponse::new(1.0, 1).is_err());
    let kary = KaryRandomizedResponse::new(1.0, 3).unwrap();
    assert!(kary.respond(&mut seeded_rng(0), 3).is_err());
    assert!(kary.estimate(&[1, 2], 0.9).is_err());
    assert!(
        PermuteAndFlip::new(1.0, 1.0)
            .unwrap()
            .select_integer(&mut seeded_rng(0), &[])
            .is_err()
    );
    assert!(
        ReportNoisyMax::new(1.0, 1.0)
            .unwrap()
            .select(&mut seeded_rng(0), &[1.0, f64::NAN])
            .is_err()
    );
    // Errors name the parameter.
    let msg = LaplaceMechanism::new(1.0, -0.5).unwrap_err().to_string();
    assert!(msg.contains("epsilon") && msg.contains("-0.5"), "{msg}");
}

#[test]
fn tiny_epsilon_is_rounded_against_the_user() {
    // 1e-30 is not representable with a 2^64 denominator: the sampler uses a smaller
    // epsilon (here 0: a fair coin), never a larger one, and reports the requested value.
    let rr = BinaryRandomizedResponse::new(1e-30).unwrap();
    assert!(rr.effective_epsilon() <= 1e-30);
    assert_eq!(rr.privacy_loss(), PrivacyLoss::Pure { epsilon: 1e-30 });
    assert!((rr.truth_probability() - 0.5).abs() < 1e-12);
    let rr = BinaryRandomizedResponse::new(0.1).unwrap();
    assert!(rr.effective_epsilon() <= 0.1);
}

#[test]
fn estimate_json_has_the_cli_keys() {
    let e: Estimate = two_coin_estimate(300, 1000, 0.95).unwrap();
    let json = serde_json::to_string(&e).unwrap();
    for key in [
        "\"estimate\"",
        "\"ci_low\"",
        "\"ci_high\"",
        "\"std_error\"",
        "\"confidence\"",
    ] {
        assert!(json.contains(key), "{json}");
    }
}

mod grid_properties {
    use proptest::prelude::*;
    use sotto_dp::mechanisms::Grid;

    proptest! {
        /// Snapping moves a value by at most half a step, and neighbours (|x - x'| <= delta)
        /// land at most the charged sensitivity apart: the charge covers the worst case.
        #[test]
        fn snapping_error_is_covered_by_the_charge(
            exponent in -30i32..10,
            x in -1.0e6f64..1.0e6,
            delta in 1.0e-3f64..1.0e3,
            t in -1.0f64..=1.0,
        ) {
            let grid = Grid::from_exponent(exponent).unwrap();
            let spacing = grid.spacing();
            let units = grid.snap(x).unwrap();
            prop_assert!((grid.value(units) - x).abs() <= spacing / 2.0 * (1.0 + 1e-12) + x.abs() * 1e-15);
            let neighbour = x + t * delta;
            let gap = (grid.snap(neighbour).unwrap() - units).unsigned_abs() as f64;
            prop_assert!(gap <= grid.charged_l1_sensitivity(delta, 1).unwrap());
            prop_assert!(gap <= grid.charged_l2_sensitivity(delta, 1).unwrap());
        }
    }
}
