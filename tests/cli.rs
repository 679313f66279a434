//! End-to-end tests of the `sotto` binary: JSON output, agreement with the library, and exit
//! status 2 with a clear message for every kind of invalid parameter.

use std::process::{Command, Output};

use serde_json::Value;

fn sotto(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args(args)
        .output()
        .expect("run sotto")
}

fn json(args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = sotto(&all);
    assert!(
        out.status.success(),
        "sotto {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).expect("last line is JSON")
}

fn assert_invalid(args: &[&str], names: &str) {
    let out = sotto(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "sotto {args:?}: {stderr}");
    assert!(stderr.contains(names), "sotto {args:?}: message should name `{names}`: {stderr}");
    assert!(!stderr.contains("panicked"), "sotto {args:?} panicked: {stderr}");
}

#[test]
fn account_dp_sgd_json_matches_the_library() {
    for (accountant, kind) in [
        ("rdp", sotto_dp::accounting::AccountantKind::Rdp),
        ("pld", sotto_dp::accounting::AccountantKind::Pld),
    ] {
        let v = json(&[
            "account",
            "dp-sgd",
            "--sampling-rate",
            "0.02",
            "--noise-multiplier",
            "1.2",
            "--steps",
            "500",
            "--delta",
            "1e-5",
            "--accountant",
            accountant,
        ]);
        let expected =
            sotto_dp::accounting::dp_sgd_epsilon(0.02, 1.2, 500, 1e-5, kind).expect("epsilon");
        assert_eq!(v["epsilon"].as_f64(), Some(expected));
        assert_eq!(v["delta"].as_f64(), Some(1e-5));
        assert_eq!(v["accountant"].as_str(), Some(accountant));
    }
}

#[test]
fn account_gaussian_and_compose() {
    let v = json(&["account", "gaussian", "--sigma", "2", "--delta", "1e-5"]);
    let eps = v["epsilon"].as_f64().expect("epsilon");
    assert_eq!(
        Some(eps),
        sotto_dp::accounting::gaussian_epsilon(2.0, 1e-5).ok()
    );
    let v = json(&[
        "account",
        "compose",
        "--epsilon",
        "0.1",
        "--delta",
        "1e-7",
        "--count",
        "200",
        "--delta-slack",
        "1e-6",
    ]);
    let basic = v["basic"]["epsilon"].as_f64().expect("basic");
    let best = v["epsilon"].as_f64().expect("best");
    assert!((basic - 20.0).abs() < 1e-9);
    assert!(best <= basic);
    assert_eq!(v["method"].as_str(), Some("advanced"));
}

#[test]
fn invalid_parameters_exit_with_status_2_and_name_the_parameter() {
    for bad in ["nan", "inf", "-inf", "-0.5", "0"] {
        assert_invalid(
            &["account", "gaussian", "--sigma", bad, "--delta", "1e-5"],
            "sigma",
        );
        assert_invalid(
            &[
                "account",
                "dp-sgd",
                "--sampling-rate",
                bad,
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                "1e-5",
            ],
            "sampling",
        );
        assert_invalid(
            &[
                "account",
                "dp-sgd",
                "--sampling-rate",
                "0.1",
                "--noise-multiplier",
                "1",
                "--steps",
                "10",
                "--delta",
                bad,
            ],
            "delta",
        );
    }
    assert_invalid(
        &["account", "gaussian", "--sigma", "1", "--delta", "1.5"],
        "delta",
    );
    assert_invalid(
        &["account", "compose", "--epsilon", "nan", "--delta", "0", "--count", "3"],
        "epsilon",
    );
    assert_invalid(
        &["account", "gaussian", "--sigma", "abc", "--delta", "1e-5"],
        "sigma",
    );
}
