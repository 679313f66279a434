//! Statistical tests of the exact samplers against their exact distributions.
//!
//! Method: Pearson chi-square goodness of fit. The exact pmf is computed in `f64` from its
//! formula, using the *effective* rational parameter the sampler reports, normalized over a
//! support wide enough that the mass outside is below 1e-15 (samples outside are counted in the
//! edge bins). Adjacent bins are pooled until every expected count is at least 5. Each test
//! rejects at significance level ALPHA = 1e-4 (the p-value comes from the regularized upper
//! incomplete gamma function). Seeds are fixed, so every run is reproducible; with about 30
//! tests the chance that a correct sampler fails some seed is about 3e-3.
//!
//! `tests_can_fail_*` check that the same machinery rejects a deliberately wrong distribution.
//!
//! The default run uses about 10^5 samples per test. Big-sample versions (10^7 samples per
//! test; several minutes) are `#[ignore]`d; run them with
//! `cargo test -p sotto-dp --release --test sampler_stats -- --ignored`.

#![allow(clippy::unwrap_used, clippy::panic)]

use rand_core::RngCore;
use sotto_dp::rng::seeded_rng;
use sotto_dp::sampling::{
    DiscreteGaussian, DiscreteLaplace, DistributedDiscreteGaussian, bernoulli_exp_neg,
    bernoulli_rational, uniform_below,
};

/// Significance level of every goodness-of-fit test.
const ALPHA: f64 = 1e-4;
/// Samples per test in the default run.
const N: usize = 100_000;
/// Samples per test in the ignored big-sample run.
const BIG_N: usize = 10_000_000;

// ---------------------------------------------------------------------------------------------
// Chi-square machinery
// ---------------------------------------------------------------------------------------------

/// ln Gamma(x) for x > 0 (Lanczos, g = 7, n = 9; relative error ~1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized upper incomplete gamma Q(a, x) (Numerical Recipes: series for x < a + 1,
/// continued fraction otherwise).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let gln = ln_gamma(a);
    if x < a + 1.0 {
        let mut ap = a;
        let mut sum = 1.0 / a;
        let mut del = sum;
        for _ in 0..100_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        1.0 - sum * (-x + a * x.ln() - gln).exp()
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..100_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (-x + a * x.ln() - gln).exp() * h
    }
}

/// The outcome of one goodness-of-fit test.
#[derive(Debug)]
struct Gof {
    stat: f64,
    dof: usize,
    p_value: f64,
}

/// Pearson chi-square of `observed` counts against `probs` (summing to 1) with `n` samples,
/// pooling adjacent bins until every expected count is at least 5.
fn chi_square(observed: &[u64], probs: &[f64], n: usize) -> Gof {
    assert_eq!(observed.len(), probs.len());
    let total: f64 = probs.iter().sum();
    assert!((total - 1.0).abs() < 1e-9, "probabilities sum to {total}");
    let n = n as f64;
    let mut bins: Vec<(f64, f64)> = Vec::new(); // (observed, expected)
    let (mut o, mut e) = (0.0, 0.0);
    for (&obs, &p) in observed.iter().zip(probs) {
        o += obs as f64;
        e += p * n;
        if e >= 5.0 {
            bins.push((o, e));
            o = 0.0;
            e = 0.0;
        }
    }
    if e > 0.0 || o > 0.0 {
        match bins.last_mut() {
            Some(last) => {
                last.0 += o;
                last.1 += e;
            }
            None => bins.push((o, e)),
        }
    }
    assert!(bins.len() >= 2, "too few bins for a test");
    let stat: f64 = bins.iter().map(|(o, e)| (o - e) * (o - e) / e).sum();
    let dof = bins.len() - 1;
    let p_value = gamma_q(dof as f64 / 2.0, stat / 2.0);
    Gof { stat, dof, p_value }
}

/// Goodness of fit of integer samples against an unnormalized pmf `weight` on `[lo, hi]`,
/// in bins of `width` consecutive integers (samples outside go to the edge bins).
fn gof_integers(samples: &[i64], weight: impl Fn(i64) -> f64, lo: i64, hi: i64, width: i64) -> Gof {
    let bins = ((hi - lo) / width + 1) as usize;
    let mut probs = vec![0.0; bins];
    for x in lo..=hi {
        probs[((x - lo) / width) as usize] += weight(x);
    }
    let z: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= z);
    let mut counts = vec![0u64; bins];
    for &x in samples {
        let idx = ((x.clamp(lo, hi) - lo) / width) as usize;
        counts[idx] += 1;
    }
    chi_square(&counts, &probs, samples.len())
}

/// Goodness of fit of integer samples in bins of `width` integers on `[lo, hi]` (samples
/// outside go to the edge bins), with bin probabilities from `mass(a, b)`, the (unnormalized)
/// mass of the integers `a..=b`.
fn gof_binned(
    samples: &[i64],
    mass: impl Fn(i64, i64) -> f64,
    lo: i64,
    hi: i64,
    width: i64,
) -> Gof {
    let bins = ((hi - lo) / width + 1) as usize;
    let mut probs: Vec<f64> = (0..bins as i64)
        .map(|i| {
            let a = lo + i * width;
            mass(a, (a + width - 1).min(hi))
        })
        .collect();
    let z: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= z);
    let mut counts = vec![0u64; bins];
    for &x in samples {
        counts[((x.clamp(lo, hi) - lo) / width) as usize] += 1;
    }
    chi_square(&counts, &probs, samples.len())
}

/// The unnormalized discrete Laplace mass of `a..=b` in closed form (geometric sums), for
/// scales too large to sum term by term.
fn laplace_mass(lap: &DiscreteLaplace) -> impl Fn(i64, i64) -> f64 {
    let (t, s) = lap.scale_rational();
    let rate = s as f64 / t as f64; // q = exp(-rate)
    let one_minus_q = -(-rate).exp_m1();
    // sum_{x=a}^{b} q^x for 0 <= a <= b
    let pos = move |a: i64, b: i64| {
        ((-rate * a as f64).exp() - (-rate * (b + 1) as f64).exp()) / one_minus_q
    };
    move |a, b| {
        if a >= 0 {
            pos(a, b)
        } else if b <= 0 {
            pos(-b, -a)
        } else {
            pos(1, -a) + pos(0, b)
        }
    }
}

fn assert_fits(name: &str, g: &Gof) {
    eprintln!(
        "{name}: chi-square {:.1} on {} dof, p = {:.3}",
        g.stat, g.dof, g.p_value
    );
    assert!(
        g.p_value >= ALPHA,
        "{name}: chi-square {:.1} on {} dof, p = {:.2e} < {ALPHA:e}",
        g.stat,
        g.dof,
        g.p_value
    );
}

fn assert_rejects(name: &str, g: &Gof) {
    eprintln!(
        "{name} (must reject): chi-square {:.1} on {} dof, p = {:.2e}",
        g.stat, g.dof, g.p_value
    );
    assert!(
        g.p_value < ALPHA,
        "{name}: the test failed to reject a wrong distribution (chi-square {:.1} on {} dof, p = {:.2e})",
        g.stat,
        g.dof,
        g.p_value
    );
}

// ---------------------------------------------------------------------------------------------
// Exact pmfs
// ---------------------------------------------------------------------------------------------

fn gaussian_weight(dg: &DiscreteGaussian) -> impl Fn(i64) -> f64 {
    let (n, d) = dg.sigma_squared_rational();
    let var = n as f64 / d as f64;
    move |x| (-(x as f64) * (x as f64) / (2.0 * var)).exp()
}

fn laplace_weight(lap: &DiscreteLaplace) -> impl Fn(i64) -> f64 {
    let (t, s) = lap.scale_rational();
    let inv = s as f64 / t as f64;
    move |x| (-(x.unsigned_abs() as f64) * inv).exp()
}

/// Support half-width containing all but ~1e-20 of a discrete Gaussian's mass.
fn gaussian_range(sigma: f64) -> i64 {
    (10.0 * sigma).ceil() as i64 + 2
}

// ---------------------------------------------------------------------------------------------
// Samplers under test
// ---------------------------------------------------------------------------------------------

fn check_uniform(n: u64, samples: usize, seed: u64) {
    let mut rng = seeded_rng(seed);
    // At most 1000 bins: value * bins / n (exact integer binning, equal-probability bins
    // when bins divides n; otherwise exact bin probabilities).
    let bins = n.min(1000);
    let mut counts = vec![0u64; bins as usize];
    for _ in 0..samples {
        let v = uniform_below(&mut rng, n).unwrap();
        assert!(v < n);
        let idx = (u128::from(v) * u128::from(bins) / u128::from(n)) as usize;
        counts[idx] += 1;
    }
    // Exact bin sizes: #{v < n : floor(v * bins / n) = i}.
    let probs: Vec<f64> = (0..bins)
        .map(|i| {
            let start = (u128::from(i) * u128::from(n)).div_ceil(u128::from(bins));
            let end = (u128::from(i + 1) * u128::from(n)).div_ceil(u128::from(bins));
            (end - start) as f64 / n as f64
        })
        .collect();
    assert_fits(
        &format!("uniform_below({n})"),
        &chi_square(&counts, &probs, samples),
    );
}

fn check_bernoulli(num: u128, den: u128, samples: usize, seed: u64) {
    let mut rng = seeded_rng(seed);
    let hits = (0..samples)
        .filter(|_| bernoulli_rational(&mut rng, num, den).unwrap())
        .count() as u64;
    let p = num as f64 / den as f64;
    if num == 0 || num == den {
        assert_eq!(hits, if num == 0 { 0 } else { samples as u64 });
        return;
    }
    let g = chi_square(&[samples as u64 - hits, hits], &[1.0 - p, p], samples);
    assert_fits(&format!("bernoulli_rational({num}/{den})"), &g);
}

fn check_bernoulli_exp(num: u128, den: u128, samples: usize, seed: u64) {
    let mut rng = seeded_rng(seed);
    let hits = (0..samples)
        .filter(|_| bernoulli_exp_neg(&mut rng, num, den).unwrap())
        .count() as u64;
    let p = (-(num as f64) / den as f64).exp();
    if num == 0 {
        assert_eq!(hits, samples as u64);
        return;
    }
    let g = chi_square(&[samples as u64 - hits, hits], &[1.0 - p, p], samples);
    assert_fits(&format!("bernoulli_exp_neg({num}/{den})"), &g);
}

fn check_laplace(scale: f64, samples: usize, seed: u64) {
    let lap = DiscreteLaplace::new(scale).unwrap();
    let mut xs = vec![0i64; samples];
    lap.fill(&mut seeded_rng(seed), &mut xs);
    let eff = lap.scale();
    let half = (50.0 * eff).ceil() as i64 + 2;
    let width = ((eff / 5.0).floor() as i64).max(1);
    let g = gof_binned(&xs, laplace_mass(&lap), -half, half, width);
    assert_fits(&format!("DiscreteLaplace({scale})"), &g);
}

fn check_gaussian(sigma: f64, samples: usize, seed: u64) {
    let dg = DiscreteGaussian::new(sigma).unwrap();
    let mut xs = vec![0i64; samples];
    dg.fill(&mut seeded_rng(seed), &mut xs);
    let half = gaussian_range(dg.sigma());
    // Bins of about sigma / 10 integers for large sigma.
    let width = ((dg.sigma() / 10.0).floor() as i64).max(1);
    let g = gof_integers(&xs, gaussian_weight(&dg), -half, half, width);
    assert_fits(&format!("DiscreteGaussian({sigma})"), &g);
}

// ---------------------------------------------------------------------------------------------
// Default (fast) tests
// ---------------------------------------------------------------------------------------------

#[test]
fn uniform_below_is_uniform() {
    for (i, n) in [
        2u64,
        3,
        6,
        7,
        100,
        1000,
        1 << 20,
        (1 << 32) + 1,
        3 << 62,
        u64::MAX,
    ]
    .into_iter()
    .enumerate()
    {
        check_uniform(n, N, 100 + i as u64);
    }
    let mut rng = seeded_rng(1);
    assert_eq!(uniform_below(&mut rng, 1), Ok(0));
}

#[test]
fn bernoulli_rational_matches_p() {
    let cases: [(u128, u128); 9] = [
        (0, 1),
        (1, 1),
        (7, 7),
        (1, 2),
        (1, 3),
        (2, 7),
        (999, 1000),
        (1, 1000),
        // Near the top of the u128 range: p = (2^127 - 1) / (2^128 - 1), about 1/2.
        ((1 << 127) - 1, u128::MAX),
    ];
    for (i, (num, den)) in cases.into_iter().enumerate() {
        check_bernoulli(num, den, N, 200 + i as u64);
    }
}

#[test]
fn bernoulli_exp_neg_matches_exp() {
    // x in {0, 0.3, 1, 2.5}, plus x = 1 with a denominator near 2^128 (overflow-free path)
    // and x = 0.3 given as a non-reduced fraction.
    let cases: [(u128, u128); 6] = [
        (0, 1),
        (3, 10),
        (1, 1),
        (5, 2),
        (u128::MAX, u128::MAX),
        (3 << 100, 10 << 100),
    ];
    for (i, (num, den)) in cases.into_iter().enumerate() {
        check_bernoulli_exp(num, den, N, 300 + i as u64);
    }
}

#[test]
fn discrete_laplace_matches_pmf() {
    // 3e9: the scale numerator is below 2^32 but t * K is not (mixed 32-bit / 128-bit path);
    // 1e12: the scale numerator itself exceeds 2^32 (general path).
    for (i, scale) in [0.3, 1.0, 2.5, 7.0, 100.0, 3e9, 1e12]
        .into_iter()
        .enumerate()
    {
        check_laplace(scale, N, 400 + i as u64);
    }
}

#[test]
fn discrete_gaussian_matches_pmf() {
    for (i, sigma) in [0.5, 1.0, 3.0, 10.0, 1000.0].into_iter().enumerate() {
        check_gaussian(sigma, N, 500 + i as u64);
    }
}

/// The unnormalized mass of the integers `a..=b` under exp(-x^2 / (2 var)) for a large
/// sigma, as the integral over [a - 1/2, b + 1/2] (composite Simpson, 256 intervals). For
/// sigma >= 10^4 the sum-versus-integral difference (Euler-Maclaurin: derivative terms of
/// relative size 1 / sigma^2) and the quadrature error are both below 1e-9 of a bin's mass,
/// far below what 10^5 samples can see.
fn gaussian_mass_smooth(dg: &DiscreteGaussian) -> impl Fn(i64, i64) -> f64 {
    let (n, d) = dg.sigma_squared_rational();
    let var = n as f64 / d as f64;
    move |a, b| {
        let (lo, hi) = (a as f64 - 0.5, b as f64 + 0.5);
        let steps = 256;
        let h = (hi - lo) / steps as f64;
        let f = |x: f64| (-x * x / (2.0 * var)).exp();
        let mut sum = f(lo) + f(hi);
        for i in 1..steps {
            sum += f(lo + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        sum * h / 3.0
    }
}

/// Goodness of fit for a large sigma (table-driven sampler), binned in sigma / 10 with
/// integral bin masses.
fn check_gaussian_large(sigma: f64, samples: usize, seed: u64) {
    let dg = DiscreteGaussian::new(sigma).unwrap();
    let mut xs = vec![0i64; samples];
    dg.fill(&mut seeded_rng(seed), &mut xs);
    let width = (dg.sigma() / 10.0).floor() as i64;
    let half = 100 * width;
    let g = gof_binned(&xs, gaussian_mass_smooth(&dg), -half, half - 1, width);
    assert_fits(&format!("DiscreteGaussian({sigma}) [table sampler]"), &g);
}

/// The table-driven sampler (sigma >= 16) against the exact pmf: integer sums for 16, 100
/// and 7.5 (CKS path, for comparison); integral bin masses for 3e5 and 2^26 (the largest
/// supported sigma).
#[test]
fn discrete_gaussian_table_sampler_matches_pmf() {
    for (i, sigma) in [7.5, 16.0, 100.0, 1234.5].into_iter().enumerate() {
        check_gaussian(sigma, N, 700 + i as u64);
    }
    for (i, sigma) in [3e5, 67_108_864.0].into_iter().enumerate() {
        check_gaussian_large(sigma, N, 710 + i as u64);
    }
}

/// Mean, variance and sign symmetry at sigma = 3e5 (the DP-SGD noise scale): z-tests at
/// |z| < 3.89 (two-sided level 1e-4 each). The exact variance of the discrete Gaussian equals
/// sigma^2 up to a relative exp(-2 pi^2 sigma^2) (CKS), and Var(x^2) = 2 sigma^4 likewise.
#[test]
fn discrete_gaussian_large_sigma_moments_and_symmetry() {
    let dg = DiscreteGaussian::new(3e5).unwrap();
    let (n, d) = dg.sigma_squared_rational();
    let var = n as f64 / d as f64;
    let mut xs = vec![0i64; 4 * N];
    dg.fill(&mut seeded_rng(720), &mut xs);
    let m = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / m;
    let z_mean = mean / (var / m).sqrt();
    let second = xs.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / m;
    let z_var = (second - var) / (2.0 * var * var / m).sqrt();
    let pos = xs.iter().filter(|&&x| x > 0).count() as f64;
    let neg = xs.iter().filter(|&&x| x < 0).count() as f64;
    let z_sym = (pos - neg) / (pos + neg).sqrt();
    eprintln!("sigma 3e5: z(mean) = {z_mean:.2}, z(var) = {z_var:.2}, z(sign) = {z_sym:.2}");
    for (name, z) in [("mean", z_mean), ("variance", z_var), ("sign", z_sym)] {
        assert!(z.abs() < 3.89, "{name}: z = {z}");
    }
}

/// Two-sample chi-square test of homogeneity between two integer samples of equal size, on
/// bins of `width` over [-half, half) (outside values go to the edge bins), pooling adjacent
/// bins until both counts together reach 10.
fn two_sample(a: &[i64], b: &[i64], half: i64, width: i64) -> Gof {
    assert_eq!(a.len(), b.len());
    let bins = (2 * half / width) as usize;
    let bin = |x: i64| ((x.clamp(-half, half - 1) + half) / width) as usize;
    let (mut ca, mut cb) = (vec![0u64; bins], vec![0u64; bins]);
    a.iter().for_each(|&x| ca[bin(x)] += 1);
    b.iter().for_each(|&x| cb[bin(x)] += 1);
    let (mut stat, mut k, mut oa, mut ob) = (0.0, 0usize, 0.0, 0.0);
    for (x, y) in ca.iter().zip(&cb) {
        oa += *x as f64;
        ob += *y as f64;
        if oa + ob >= 10.0 {
            stat += (oa - ob) * (oa - ob) / (oa + ob);
            k += 1;
            oa = 0.0;
            ob = 0.0;
        }
    }
    if oa + ob > 0.0 {
        stat += (oa - ob) * (oa - ob) / (oa + ob);
        k += 1;
    }
    let dof = k - 1;
    Gof {
        stat,
        dof,
        p_value: gamma_q(dof as f64 / 2.0, stat / 2.0),
    }
}

/// The table-driven sampler and CKS Algorithm 3 (`fill_cks`) sample the same distribution:
/// two-sample chi-square at level 1e-4, bins of sigma / 4 over +-6 sigma.
#[test]
fn table_sampler_agrees_with_cks() {
    for (i, sigma) in [16.0, 100.0, 3e5].into_iter().enumerate() {
        let dg = DiscreteGaussian::new(sigma).unwrap();
        let mut fast = vec![0i64; N];
        let mut cks = vec![0i64; N];
        dg.fill(&mut seeded_rng(730 + i as u64), &mut fast);
        dg.fill_cks(&mut seeded_rng(740 + i as u64), &mut cks);
        let width = ((sigma / 4.0) as i64).max(1);
        let g = two_sample(&fast, &cks, 24 * width, width);
        assert_fits(&format!("table vs CKS, sigma {sigma}"), &g);
    }
}

#[test]
fn tests_can_fail_two_sample() {
    // sigma 100 against sigma 106 (both exact samplers): must be told apart.
    let a = DiscreteGaussian::new(100.0).unwrap();
    let b = DiscreteGaussian::new(106.0).unwrap();
    let mut xa = vec![0i64; N];
    let mut xb = vec![0i64; N];
    a.fill(&mut seeded_rng(750), &mut xa);
    b.fill_cks(&mut seeded_rng(751), &mut xb);
    assert_rejects(
        "table sigma 100 vs CKS sigma 106",
        &two_sample(&xa, &xb, 600, 25),
    );
}

#[test]
fn discrete_gaussian_small_and_awkward_sigmas() {
    // Non-dyadic sigma (rounded sigma^2), sigma < 1/2, sigma just below an integer.
    for (i, sigma) in [0.3, 0.7, 1.4, 1.5, 1.9999, std::f64::consts::E]
        .into_iter()
        .enumerate()
    {
        check_gaussian(sigma, N, 550 + i as u64);
    }
}

/// The pmf of the sum of `k` independent copies of a discrete Gaussian, by convolution.
fn convolved_pmf(dg: &DiscreteGaussian, k: usize) -> (i64, Vec<f64>) {
    let half = gaussian_range(dg.sigma());
    let w = gaussian_weight(dg);
    let single: Vec<f64> = (-half..=half).map(&w).collect();
    let z: f64 = single.iter().sum();
    let single: Vec<f64> = single.iter().map(|p| p / z).collect();
    let mut acc = vec![1.0];
    for _ in 0..k {
        let mut next = vec![0.0; acc.len() + single.len() - 1];
        for (i, a) in acc.iter().enumerate() {
            for (j, b) in single.iter().enumerate() {
                next[i + j] += a * b;
            }
        }
        acc = next;
    }
    (-(half * k as i64), acc)
}

#[test]
fn distributed_shares_sum_to_the_convolution() {
    // 5 parties with a target sigma of 4.5 (party sigma ~2.01): the sum of one share from each
    // party must follow the 5-fold convolution of the party's discrete Gaussian.
    let parties = 5;
    let ddg = DistributedDiscreteGaussian::new(4.5, parties).unwrap();
    let mut rng = seeded_rng(600);
    let mut share = vec![0i64; N];
    let mut sum = vec![0i64; N];
    for _ in 0..parties {
        ddg.fill_share(&mut rng, &mut share);
        sum.iter_mut().zip(&share).for_each(|(s, x)| *s += x);
    }
    let (lo, pmf) = convolved_pmf(ddg.party_sampler(), parties);
    let hi = lo + pmf.len() as i64 - 1;
    let g = gof_integers(&sum, |x| pmf[(x - lo) as usize], lo, hi, 1);
    assert_fits("sum of 5 distributed discrete Gaussian shares", &g);
}

#[test]
fn distributed_shares_sum_has_target_variance() {
    // 10 parties, target sigma 100: party sigma ~31.6. The variance of the sum must match
    // 10 * Var(party) (exact from the pmf), which is >= 100^2 minus the discrete Gaussian's
    // tiny variance deficit. z-test on the sample variance at |z| < 4.4 (two-sided ~1e-5).
    let parties = 10;
    let ddg = DistributedDiscreteGaussian::new(100.0, parties).unwrap();
    let dg = ddg.party_sampler();
    let half = gaussian_range(dg.sigma());
    let w = gaussian_weight(dg);
    let z: f64 = (-half..=half).map(&w).sum();
    let var_party: f64 = (-half..=half).map(|x| (x * x) as f64 * w(x) / z).sum();
    let m4_party: f64 = (-half..=half)
        .map(|x| ((x * x) as f64).powi(2) * w(x) / z)
        .sum();
    let var_sum = parties as f64 * var_party;
    // Fourth moment of a sum of iid symmetric variables: k m4 + 3 k (k - 1) var^2.
    let k = parties as f64;
    let m4_sum = k * m4_party + 3.0 * k * (k - 1.0) * var_party * var_party;
    assert!(var_sum >= 100.0 * 100.0 * 0.999_999);

    let mut rng = seeded_rng(700);
    let mut share = vec![0i64; N];
    let mut sum = vec![0i64; N];
    for _ in 0..parties {
        ddg.fill_share(&mut rng, &mut share);
        sum.iter_mut().zip(&share).for_each(|(s, x)| *s += x);
    }
    let n = N as f64;
    let mean = sum.iter().map(|&x| x as f64).sum::<f64>() / n;
    let sample_var = sum.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / n;
    let se_mean = (var_sum / n).sqrt();
    assert!(mean.abs() < 4.4 * se_mean, "mean {mean}, se {se_mean}");
    let se_var = ((m4_sum - var_sum * var_sum) / n).sqrt();
    let zv = (sample_var - var_sum) / se_var;
    assert!(
        zv.abs() < 4.4,
        "variance {sample_var} vs {var_sum}: z = {zv}"
    );
}

// ---------------------------------------------------------------------------------------------
// The tests can fail
// ---------------------------------------------------------------------------------------------

#[test]
fn tests_can_fail_wrong_sigma() {
    // Samples with sigma 3 tested against the pmf of sigma 3.15 (5% off): must reject.
    let dg = DiscreteGaussian::new(3.0).unwrap();
    let wrong = DiscreteGaussian::new(3.15).unwrap();
    let mut xs = vec![0i64; N];
    dg.fill(&mut seeded_rng(800), &mut xs);
    let half = gaussian_range(3.15);
    assert_rejects(
        "sigma 3 vs 3.15",
        &gof_integers(&xs, gaussian_weight(&wrong), -half, half, 1),
    );
    // ... and accepts the right one on the same samples.
    assert_fits(
        "sigma 3 vs 3",
        &gof_integers(&xs, gaussian_weight(&dg), -half, half, 1),
    );
}

#[test]
fn tests_can_fail_wrong_laplace_scale_and_gaussian_shape() {
    let lap = DiscreteLaplace::new(2.0).unwrap();
    let wrong = DiscreteLaplace::new(2.1).unwrap();
    let mut xs = vec![0i64; N];
    lap.fill(&mut seeded_rng(801), &mut xs);
    assert_rejects(
        "laplace 2 vs 2.1",
        &gof_integers(&xs, laplace_weight(&wrong), -120, 120, 1),
    );
    // A discrete Gaussian with the Laplace's variance (2 b^2 / ... close) is the wrong shape.
    let dg = DiscreteGaussian::new(2.83).unwrap();
    assert_rejects(
        "laplace vs gaussian",
        &gof_integers(&xs, gaussian_weight(&dg), -120, 120, 1),
    );
}

#[test]
fn tests_can_fail_modulo_bias() {
    // The textbook mistake: next_u32() % n. For n = 3 * 2^30, values below 2^30 are twice as
    // likely as the rest; the uniformity test must catch it.
    let n: u64 = 3 << 30;
    let mut rng = seeded_rng(802);
    let bins = 1000u64;
    let mut counts = vec![0u64; bins as usize];
    for _ in 0..N {
        let v = u64::from(rng.next_u32()) % n;
        counts[(v * bins / n) as usize] += 1;
    }
    let probs: Vec<f64> = (0..bins)
        .map(|i| {
            ((i + 1) * n).div_ceil(bins) as f64 / n as f64
                - (i * n).div_ceil(bins) as f64 / n as f64
        })
        .collect();
    assert_rejects("modulo-biased uniform", &chi_square(&counts, &probs, N));
}

#[test]
fn chi_square_p_values_are_calibrated() {
    // Known quantiles: chi-square(1) at 3.841 is p = 0.05; chi-square(10) at 29.59 is 0.001;
    // chi-square(100) at 124.34 is 0.05.
    assert!((gamma_q(0.5, 3.841 / 2.0) - 0.05).abs() < 1e-4);
    assert!((gamma_q(5.0, 29.588 / 2.0) - 0.001).abs() < 1e-5);
    assert!((gamma_q(50.0, 124.342 / 2.0) - 0.05).abs() < 1e-4);
}

// ---------------------------------------------------------------------------------------------
// Big-sample versions (ignored by default)
// ---------------------------------------------------------------------------------------------

// cargo test -p sotto-dp --release --test sampler_stats -- --ignored
#[test]
#[ignore = "10^7 samples per case; run with --release -- --ignored"]
fn big_uniform_and_bernoulli() {
    for (i, n) in [3u64, 1000, (1 << 32) + 1, 3 << 62].into_iter().enumerate() {
        check_uniform(n, BIG_N, 1100 + i as u64);
    }
    for (i, (num, den)) in [(1u128, 3u128), (2, 7), ((1 << 127) - 1, u128::MAX)]
        .into_iter()
        .enumerate()
    {
        check_bernoulli(num, den, BIG_N, 1200 + i as u64);
    }
    for (i, (num, den)) in [(3u128, 10u128), (1, 1), (5, 2)].into_iter().enumerate() {
        check_bernoulli_exp(num, den, BIG_N, 1300 + i as u64);
    }
}

// cargo test -p sotto-dp --release --test sampler_stats -- --ignored
#[test]
#[ignore = "10^7 samples per case; run with --release -- --ignored"]
fn big_laplace_and_gaussian() {
    for (i, scale) in [0.3, 1.0, 2.5, 100.0].into_iter().enumerate() {
        check_laplace(scale, BIG_N, 1400 + i as u64);
    }
    for (i, sigma) in [
        0.5,
        1.0,
        1.4,
        std::f64::consts::E,
        3.0,
        10.0,
        16.0,
        1000.0,
        1e5,
    ]
    .into_iter()
    .enumerate()
    {
        check_gaussian(sigma, BIG_N, 1500 + i as u64);
    }
    for (i, sigma) in [3e5, 1e7, 67_108_864.0].into_iter().enumerate() {
        check_gaussian_large(sigma, BIG_N, 1600 + i as u64);
    }
}

// cargo test -p sotto-dp --release --test sampler_stats -- --ignored
#[test]
#[ignore = "10^7 samples per case; run with --release -- --ignored"]
fn big_table_sampler_agrees_with_cks() {
    for (i, sigma) in [16.0, 64.5, 1000.0, 3e5].into_iter().enumerate() {
        let dg = DiscreteGaussian::new(sigma).unwrap();
        let mut fast = vec![0i64; BIG_N];
        let mut cks = vec![0i64; BIG_N];
        dg.fill(&mut seeded_rng(1700 + i as u64), &mut fast);
        dg.fill_cks(&mut seeded_rng(1710 + i as u64), &mut cks);
        let width = ((sigma / 8.0) as i64).max(1);
        let g = two_sample(&fast, &cks, 48 * width, width);
        assert_fits(&format!("table vs CKS, sigma {sigma}, 10^7"), &g);
    }
}

#[test]
fn chi_square_pooling_handles_sparse_tails() {
    // Sanity check of the pooling: a pmf with a long sparse tail still gives >= 2 bins and a
    // finite statistic.
    let counts = [50u64, 30, 15, 4, 1, 0, 0];
    let probs = [0.5, 0.3, 0.15, 0.04, 0.009, 0.0009, 0.0001];
    let g = chi_square(&counts, &probs, 100);
    assert!(g.dof >= 1 && g.stat.is_finite());
}
