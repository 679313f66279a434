//! Empirical privacy tests: run a mechanism many times on two neighbouring inputs, histogram
//! the outputs and check that in every bin with enough mass the likelihood ratio does not
//! exceed `e^epsilon` beyond what sampling error explains.
//!
//! For each bin we compute rigorous one-sided Chernoff (binomial KL) confidence bounds on the
//! two bin probabilities, `P(n KL(p_hat || p) > ln(1/a)) <= a`, and reject when the *lower*
//! bound of the ratio, `lower(p_x) / upper(p_x')`, exceeds `e^epsilon` in either direction.
//! With a Bonferroni split of the overall significance level `ALPHA = 1e-6` over all bounds,
//! a correct mechanism fails with probability below 1e-6 (and the seeds are fixed anyway).
//! The negative controls run the same test on mechanisms with too little noise and must fail.
//!
//! The default sizes run in a few seconds; the `#[ignore]`d versions draw many more samples:
//! `cargo test -p sotto-dp --test empirical_privacy -- --ignored`.

use std::collections::BTreeMap;

use sotto_dp::mechanisms::{
    BinaryRandomizedResponse, FloatLaplaceMechanism, Grid, KaryRandomizedResponse,
    LaplaceMechanism, TwoCoinResponse,
};
use sotto_dp::rng::seeded_rng;

/// Overall significance level of one privacy check.
const ALPHA: f64 = 1e-6;
/// Bins where either side has fewer samples are skipped (too little mass to say anything).
const MIN_COUNT: u64 = 30;

/// Binomial KL divergence KL(a || b).
fn kl(a: f64, b: f64) -> f64 {
    let term = |x: f64, y: f64| if x == 0.0 { 0.0 } else { x * (x / y).ln() };
    term(a, b) + term(1.0 - a, 1.0 - b)
}

/// Chernoff bound: the largest (`upper`) or smallest p with `n KL(k/n || p) <= ln(1/a)`.
fn kl_bound(k: u64, n: u64, a: f64, upper: bool) -> f64 {
    let p_hat = k as f64 / n as f64;
    let budget = (1.0 / a).ln() / n as f64;
    let (mut lo, mut hi) = if upper { (p_hat, 1.0) } else { (0.0, p_hat) };
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        let inside = kl(p_hat, mid) <= budget;
        if upper == inside {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if upper { hi } else { lo }
}

/// The largest lower confidence bound on the likelihood ratio over all bins with enough
/// mass, in both directions.
fn max_ratio_lower_bound(
    a: &BTreeMap<i64, u64>,
    b: &BTreeMap<i64, u64>,
    n: u64,
) -> (f64, i64, usize) {
    let bins: Vec<i64> = a
        .keys()
        .chain(b.keys())
        .copied()
        .filter(|k| {
            a.get(k).copied().unwrap_or(0) >= MIN_COUNT
                && b.get(k).copied().unwrap_or(0) >= MIN_COUNT
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // Four bounds per bin (lower and upper for each side).
    let per_bound = ALPHA / (4.0 * bins.len().max(1) as f64);
    let mut worst = (0.0, 0, bins.len());
    for &bin in &bins {
        let (ka, kb) = (a[&bin], b[&bin]);
        let forward = kl_bound(ka, n, per_bound, false) / kl_bound(kb, n, per_bound, true);
        let backward = kl_bound(kb, n, per_bound, false) / kl_bound(ka, n, per_bound, true);
        let ratio = forward.max(backward);
        if ratio > worst.0 {
            worst = (ratio, bin, bins.len());
        }
    }
    worst
}

fn histogram(samples: impl Iterator<Item = i64>) -> BTreeMap<i64, u64> {
    let mut h = BTreeMap::new();
    for s in samples {
        *h.entry(s).or_insert(0) += 1;
    }
    h
}

/// Passes if no bin shows a ratio above e^epsilon at significance ALPHA.
fn privacy_holds(a: &BTreeMap<i64, u64>, b: &BTreeMap<i64, u64>, n: u64, epsilon: f64) -> bool {
    let (ratio, bin, bins) = max_ratio_lower_bound(a, b, n);
    assert!(bins >= 2, "too few bins with mass to test anything");
    eprintln!(
        "{}: max ratio lower bound {ratio:.4} (bin {bin}, {bins} bins) vs e^eps = {:.4}",
        std::thread::current().name().unwrap_or("?"),
        epsilon.exp()
    );
    ratio <= epsilon.exp()
}

fn laplace_check(mechanism: &LaplaceMechanism, claimed_epsilon: f64, n: u64, seed: u64) -> bool {
    let mut rng = seeded_rng(seed);
    let zero = histogram((0..n).map(|_| mechanism.release(&mut rng, 0)));
    let one = histogram((0..n).map(|_| mechanism.release(&mut rng, 1)));
    privacy_holds(&zero, &one, n, claimed_epsilon)
}

fn binary_check(respond: &mut dyn FnMut(bool) -> bool, claimed_epsilon: f64, n: u64) -> bool {
    let yes = histogram((0..n).map(|_| i64::from(respond(true))));
    let no = histogram((0..n).map(|_| i64::from(respond(false))));
    privacy_holds(&yes, &no, n, claimed_epsilon)
}

#[test]
fn laplace_on_neighbouring_counts_respects_epsilon() {
    let mechanism = LaplaceMechanism::new(1.0, 1.0).unwrap();
    assert!(laplace_check(&mechanism, 1.0, 200_000, 1));
}

#[test]
fn laplace_negative_control_detects_too_little_noise() {
    // Claims epsilon = 1 but adds the noise of epsilon = 2 (half the scale).
    let leaky = LaplaceMechanism::new(1.0, 2.0).unwrap();
    assert!(!laplace_check(&leaky, 1.0, 200_000, 2));
}

#[test]
fn float_laplace_on_neighbouring_values_respects_epsilon() {
    // Coarse grid (spacing 1/2) so that bins are grid points: inputs 0.0 and 1.0 (sensitivity 1).
    let grid = Grid::from_exponent(-1).unwrap();
    let mechanism = FloatLaplaceMechanism::with_grid(1.0, 1.0, 1, grid).unwrap();
    let mut rng = seeded_rng(3);
    let n = 200_000;
    let units = |y: f64| (y * 2.0) as i64;
    let a = histogram((0..n).map(|_| units(mechanism.release(&mut rng, 0.0).unwrap())));
    let b = histogram((0..n).map(|_| units(mechanism.release(&mut rng, 1.0).unwrap())));
    assert!(privacy_holds(&a, &b, n, 1.0));
    // Worst-case off-grid neighbours: 0.25 rounds up to 1 step, -0.75 down to -2 steps, so
    // inputs 1 apart are 3 steps apart after snapping; the charged scale (3 steps) covers it.
    let c = histogram((0..n).map(|_| units(mechanism.release(&mut rng, 0.25).unwrap())));
    let d = histogram((0..n).map(|_| units(mechanism.release(&mut rng, -0.75).unwrap())));
    assert!(privacy_holds(&c, &d, n, 1.0));
}

#[test]
fn negative_control_snapping_without_charging_the_rounding_leaks() {
    // The same worst-case neighbours, snapped to the same grid, but with noise calibrated on
    // the raw sensitivity only (2 steps): the test must catch the excess loss (e^1.5).
    let grid = Grid::from_exponent(-1).unwrap();
    let uncharged = LaplaceMechanism::new(2.0, 1.0).unwrap();
    let mut rng = seeded_rng(6);
    let n = 200_000;
    let (x, x_prime) = (grid.snap(0.25).unwrap(), grid.snap(-0.75).unwrap());
    assert_eq!(x - x_prime, 3);
    let c = histogram((0..n).map(|_| uncharged.release(&mut rng, x)));
    let d = histogram((0..n).map(|_| uncharged.release(&mut rng, x_prime)));
    assert!(!privacy_holds(&c, &d, n, 1.0));
}

#[test]
fn randomized_response_respects_epsilon() {
    let n = 200_000;
    let mut rng = seeded_rng(4);
    let rr = BinaryRandomizedResponse::new(1.0).unwrap();
    assert!(binary_check(
        &mut |t| rr.respond(&mut rng, t).unwrap(),
        1.0,
        n
    ));
    let two_coin = TwoCoinResponse::new();
    let eps = 3f64.ln().next_up();
    assert!(binary_check(&mut |t| two_coin.respond(&mut rng, t), eps, n));
    let kary = KaryRandomizedResponse::new(1.0, 4).unwrap();
    let a = histogram((0..n).map(|_| kary.respond(&mut rng, 0).unwrap() as i64));
    let b = histogram((0..n).map(|_| kary.respond(&mut rng, 1).unwrap() as i64));
    assert!(privacy_holds(&a, &b, n, 1.0));
}

#[test]
fn randomized_response_negative_control_detects_too_little_noise() {
    let n = 200_000;
    let mut rng = seeded_rng(5);
    // epsilon 1.5 sold as epsilon 1.
    let rr = BinaryRandomizedResponse::new(1.5).unwrap();
    assert!(!binary_check(
        &mut |t| rr.respond(&mut rng, t).unwrap(),
        1.0,
        n
    ));
    // The two-coin poll is ln 3 ~ 1.0986, not 1.
    let two_coin = TwoCoinResponse::new();
    assert!(!binary_check(
        &mut |t| two_coin.respond(&mut rng, t),
        1.0,
        n
    ));
}

/// Larger version: `cargo test -p sotto-dp --test empirical_privacy -- --ignored` (about
/// 10 s on the 2-core build machine; 5 million samples per input).
#[test]
#[ignore = "slow: many more samples"]
fn large_laplace_and_rr_privacy_checks() {
    let n = 5_000_000;
    let mechanism = LaplaceMechanism::new(1.0, 0.5).unwrap();
    assert!(laplace_check(&mechanism, 0.5, n, 10));
    // A 5% noise shortfall is caught with this many samples.
    let leaky = LaplaceMechanism::new(1.0, 0.55).unwrap();
    assert!(!laplace_check(&leaky, 0.5, n, 11));
    let mut rng = seeded_rng(12);
    let rr = BinaryRandomizedResponse::new(0.5).unwrap();
    assert!(binary_check(
        &mut |t| rr.respond(&mut rng, t).unwrap(),
        0.5,
        n
    ));
}
