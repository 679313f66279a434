//! Golden tests of the accountants against Google's `dp_accounting` (0.6.0).
//!
//! The reference values in `tests/data/accounting_golden.json` come from
//! `scripts/accounting_golden.py` (see its header for how to regenerate them). Tolerances:
//! RDP within 1% relative (in practice ~1e-9: the same formulas), PLD within 2% (same
//! discretization, different FFT and floating-point details).
//!
//! The long PLD cases (10^4 steps) are `#[ignore]`d; run them with
//! `cargo test -p sotto-dp --test accounting_golden -- --ignored`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::Value;
use sotto_dp::accounting::{
    AccountantKind, PldAccountant, RdpAccountant, advanced_composition, analytic_gaussian_sigma,
    basic_composition, dp_sgd_epsilon, dp_sgd_noise_multiplier, gaussian_epsilon, zcdp_to_epsilon,
};

fn golden() -> Value {
    let text = include_str!("data/accounting_golden.json");
    serde_json::from_str(text).unwrap()
}

/// A number from the JSON, where the strings "NaN" / "Infinity" stand for the IEEE values.
fn num(v: &Value, key: &str) -> f64 {
    match &v[key] {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) if s == "NaN" => f64::NAN,
        Value::String(s) if s == "Infinity" => f64::INFINITY,
        other => panic!("bad number for {key}: {other}"),
    }
}

fn cases<'a>(g: &'a Value, key: &str) -> &'a Vec<Value> {
    let list = g[key].as_array().unwrap();
    assert!(!list.is_empty(), "no golden cases for {key}");
    list
}

fn assert_close(ours: f64, theirs: f64, rel: f64, what: &str) {
    let err = ((ours - theirs) / theirs).abs();
    assert!(
        err <= rel,
        "{what}: ours {ours} vs dp_accounting {theirs} (relative error {err:.3e} > {rel})"
    );
}

#[test]
fn rdp_poisson_subsampled_gaussian_matches_dp_accounting() {
    let g = golden();
    for c in cases(&g, "rdp_subsampled_gaussian") {
        let (q, sigma, delta) = (num(c, "q"), num(c, "sigma"), num(c, "delta"));
        let steps = c["steps"].as_u64().unwrap();
        let ours = dp_sgd_epsilon(q, sigma, steps, delta, AccountantKind::Rdp).unwrap();
        let theirs = num(c, "epsilon");
        assert_close(ours, theirs, 0.01, &format!("RDP {c}"));
        // Rounded against the user: never below the reference by more than float noise.
        assert!(ours >= theirs * (1.0 - 1e-9), "RDP {c}: {ours} < {theirs}");
    }
}

#[test]
fn rdp_gaussian_matches_dp_accounting() {
    let g = golden();
    for c in cases(&g, "rdp_gaussian") {
        let mut acc = RdpAccountant::new();
        acc.compose_gaussian(num(c, "sigma"), c["count"].as_u64().unwrap())
            .unwrap();
        let ours = acc.epsilon(num(c, "delta")).unwrap();
        assert_close(ours, num(c, "epsilon"), 0.01, &format!("RDP Gaussian {c}"));
    }
}

fn check_pld_subsampled(slow: bool) {
    let g = golden();
    let mut n = 0;
    for c in cases(&g, "pld_subsampled_gaussian") {
        if c["slow"].as_bool().unwrap() != slow {
            continue;
        }
        n += 1;
        let (q, sigma, delta) = (num(c, "q"), num(c, "sigma"), num(c, "delta"));
        let steps = c["steps"].as_u64().unwrap();
        let ours = dp_sgd_epsilon(q, sigma, steps, delta, AccountantKind::Pld).unwrap();
        assert_close(ours, num(c, "epsilon"), 0.02, &format!("PLD {c}"));
    }
    assert!(n > 0);
}

#[test]
fn pld_poisson_subsampled_gaussian_matches_dp_accounting() {
    check_pld_subsampled(false);
}

/// Up to 10^4 steps at discretization 1e-4 (a few seconds each in the debug profile).
/// Run with `cargo test -p sotto-dp --test accounting_golden -- --ignored`.
#[test]
#[ignore = "slow: cargo test -p sotto-dp --test accounting_golden -- --ignored"]
fn pld_poisson_subsampled_gaussian_long_runs_match_dp_accounting() {
    check_pld_subsampled(true);
}

#[test]
fn pld_gaussian_matches_dp_accounting_and_never_beats_the_exact_curve() {
    let g = golden();
    for c in cases(&g, "pld_gaussian") {
        let (sigma, delta) = (num(c, "sigma"), num(c, "delta"));
        let count = c["count"].as_u64().unwrap();
        let mut acc = PldAccountant::new();
        acc.compose_gaussian(sigma, count).unwrap();
        let ours = acc.epsilon(delta).unwrap();
        assert_close(ours, num(c, "epsilon"), 0.02, &format!("PLD Gaussian {c}"));
        // `count` Gaussians = one Gaussian with sigma / sqrt(count): the PLD is pessimistic,
        // so it can never report less than the exact analytic epsilon.
        let exact = gaussian_epsilon(sigma / (count as f64).sqrt(), delta).unwrap();
        assert!(
            ours >= exact * (1.0 - 1e-9),
            "PLD {ours} below the exact Gaussian epsilon {exact} for {c}"
        );
    }
}

#[test]
fn pld_laplace_matches_dp_accounting() {
    let g = golden();
    for c in cases(&g, "pld_laplace") {
        let mut acc = PldAccountant::new();
        let count = c["count"].as_u64().unwrap();
        acc.compose_laplace(num(c, "b"), count).unwrap();
        let ours = acc.epsilon(num(c, "delta")).unwrap();
        assert_close(ours, num(c, "epsilon"), 0.02, &format!("PLD Laplace {c}"));
        // Never worse than basic composition of count * (1/b)-DP.
        assert!(ours <= count as f64 / num(c, "b") * (1.0 + 1e-3));
    }
}

#[test]
fn pld_randomized_response_matches_dp_accounting() {
    let g = golden();
    for c in cases(&g, "pld_randomized_response") {
        let mut acc = PldAccountant::new();
        acc.compose_randomized_response(
            num(c, "noise_parameter"),
            c["num_buckets"].as_u64().unwrap(),
            c["count"].as_u64().unwrap(),
        )
        .unwrap();
        let ours = acc.epsilon(num(c, "delta")).unwrap();
        assert_close(ours, num(c, "epsilon"), 0.02, &format!("PLD RR {c}"));
    }
}

#[test]
fn analytic_gaussian_matches_dp_accounting() {
    let g = golden();
    for c in cases(&g, "gaussian_analytic") {
        let (sigma, delta) = (num(c, "sigma"), num(c, "delta"));
        let ours = gaussian_epsilon(sigma, delta).unwrap();
        let theirs = num(c, "epsilon");
        assert_close(ours, theirs, 1e-6, &format!("analytic Gaussian {c}"));
        assert!(ours >= theirs * (1.0 - 1e-9), "{c}: {ours} < {theirs}");
        // Calibration round trip: the sigma found for this epsilon is at most the original.
        let s = analytic_gaussian_sigma(theirs, delta, 1.0).unwrap();
        assert!(
            s >= sigma * (1.0 - 1e-6) && s <= sigma * (1.0 + 1e-6),
            "{c}: {s}"
        );
    }
}

#[test]
fn bad_inputs_are_rejected() {
    let g = golden();
    for c in cases(&g, "bad_dp_sgd") {
        let (q, sigma, delta) = (num(c, "q"), num(c, "sigma"), num(c, "delta"));
        let steps = c["steps"].as_u64().unwrap();
        for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
            let err = dp_sgd_epsilon(q, sigma, steps, delta, kind);
            assert!(err.is_err(), "{c} accepted by {kind}");
            let msg = err.unwrap_err().to_string();
            assert!(
                msg.contains("sampling_rate")
                    || msg.contains("noise_multiplier")
                    || msg.contains("delta"),
                "error does not name the parameter: {msg}"
            );
        }
    }
    for c in cases(&g, "bad_gaussian") {
        let (sigma, delta) = (num(c, "sigma"), num(c, "delta"));
        assert!(gaussian_epsilon(sigma, delta).is_err(), "{c}");
        // The same bad value is rejected by the calibration (as delta, or as sensitivity).
        if delta > 0.0 && delta < 1.0 {
            assert!(analytic_gaussian_sigma(1.0, delta, sigma).is_err(), "{c}");
        } else {
            assert!(analytic_gaussian_sigma(1.0, delta, 1.0).is_err(), "{c}");
        }
    }
    for c in cases(&g, "bad_zcdp") {
        assert!(
            zcdp_to_epsilon(num(c, "rho"), num(c, "delta")).is_err(),
            "{c}"
        );
    }
    for c in cases(&g, "bad_composition") {
        let (e, d) = (num(c, "epsilon"), num(c, "delta"));
        let k = c["count"].as_u64().unwrap();
        assert!(basic_composition(e, d, k).is_err(), "{c}");
        assert!(advanced_composition(e, d, k, 1e-6).is_err(), "{c}");
    }
    assert!(dp_sgd_noise_multiplier(0.01, 100, -1.0, 1e-5, AccountantKind::Rdp).is_err());
    assert!(dp_sgd_noise_multiplier(0.01, 0, 1.0, 1e-5, AccountantKind::Rdp).is_err());
    assert!(dp_sgd_noise_multiplier(f64::NAN, 10, 1.0, 1e-5, AccountantKind::Rdp).is_err());
    assert!("gdp".parse::<AccountantKind>().is_err());
}

#[test]
fn noise_multiplier_search_round_trips() {
    for &(q, steps, target, delta) in &[
        (0.01, 1000, 1.0, 1e-5),
        (0.001, 10_000, 0.5, 1e-6),
        (0.1, 100, 8.0, 1e-5),
        (1.0, 10, 2.0, 1e-5),
    ] {
        let sigma = dp_sgd_noise_multiplier(q, steps, target, delta, AccountantKind::Rdp).unwrap();
        let eps = dp_sgd_epsilon(q, sigma, steps, delta, AccountantKind::Rdp).unwrap();
        assert!(eps <= target, "sigma {sigma} gives {eps} > {target}");
        // Smallest to 1e-3: 0.2% less noise must overshoot the target.
        let less = dp_sgd_epsilon(q, sigma / 1.002, steps, delta, AccountantKind::Rdp).unwrap();
        assert!(
            less > target,
            "sigma {sigma} is not minimal: {less} <= {target}"
        );
    }
    // PLD search, short run.
    let sigma = dp_sgd_noise_multiplier(0.05, 20, 1.0, 1e-5, AccountantKind::Pld).unwrap();
    let eps = dp_sgd_epsilon(0.05, sigma, 20, 1e-5, AccountantKind::Pld).unwrap();
    assert!(eps <= 1.0 && eps > 0.95, "PLD sigma {sigma} gives {eps}");
    let rdp_sigma = dp_sgd_noise_multiplier(0.05, 20, 1.0, 1e-5, AccountantKind::Rdp).unwrap();
    assert!(
        sigma <= rdp_sigma * 1.001,
        "PLD needs more noise ({sigma}) than RDP ({rdp_sigma})"
    );
}

#[test]
fn zcdp_conversion_is_consistent_with_rdp() {
    // rho-zCDP is RDP alpha * rho at every order; the CKS conversion with the infimum over all
    // alpha must be at least as good as the same conversion over the discrete default orders.
    for &rho in &[0.01, 0.1, 1.0, 5.0] {
        let mut acc = RdpAccountant::new();
        acc.compose_zcdp(rho, 1).unwrap();
        let over_orders = acc.epsilon(1e-6).unwrap();
        let tight = zcdp_to_epsilon(rho, 1e-6).unwrap();
        assert!(
            tight <= over_orders * (1.0 + 1e-9),
            "rho {rho}: {tight} > {over_orders}"
        );
        assert!(
            tight >= over_orders * 0.95,
            "rho {rho}: {tight} << {over_orders}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn advanced_composition_is_never_worse_than_basic(
        eps in 1e-4f64..5.0,
        delta in prop_oneof![Just(0.0), 1e-12f64..1e-3],
        count in 1u64..100_000,
        slack in 1e-12f64..0.1,
    ) {
        let (be, bd) = basic_composition(eps, delta, count).unwrap();
        let (ae, ad) = advanced_composition(eps, delta, count, slack).unwrap();
        prop_assert!(ae <= be, "advanced {ae} > basic {be}");
        prop_assert!(ae >= eps, "composed epsilon {ae} below a single release's {eps}");
        prop_assert!(ad >= delta && ad <= 1.0);
        if ae < be {
            prop_assert!(ad >= slack);
        } else {
            prop_assert_eq!(ad, bd);
        }
    }

    #[test]
    fn dp_sgd_epsilon_is_monotone(
        q in 0.001f64..0.5,
        sigma in 0.6f64..5.0,
        steps in 1u64..2000,
    ) {
        let e1 = dp_sgd_epsilon(q, sigma, steps, 1e-5, AccountantKind::Rdp).unwrap();
        let more_steps = dp_sgd_epsilon(q, sigma, steps + 100, 1e-5, AccountantKind::Rdp).unwrap();
        let more_noise = dp_sgd_epsilon(q, sigma * 1.1, steps, 1e-5, AccountantKind::Rdp).unwrap();
        prop_assert!(more_steps >= e1 * (1.0 - 1e-12));
        prop_assert!(more_noise <= e1 * (1.0 + 1e-12));
    }
}
