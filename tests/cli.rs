//! End-to-end tests of the `sotto` binary: JSON output, agreement with the library, and exit
//! status 2 with a clear message for every kind of invalid parameter.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may fail loudly

mod common;
use common::{assert_invalid, json, run as sotto};

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
        &[
            "account",
            "compose",
            "--epsilon",
            "nan",
            "--delta",
            "0",
            "--count",
            "3",
        ],
        "epsilon",
    );
    assert_invalid(
        &["account", "gaussian", "--sigma", "abc", "--delta", "1e-5"],
        "sigma",
    );
}

#[test]
fn poll_simulate_reports_an_interval_around_the_true_rate() {
    let args = [
        "poll",
        "simulate",
        "--respondents",
        "20000",
        "--true-rate",
        "0.3",
        "--epsilon",
        "1",
        "--seed",
        "11",
    ];
    let v = json(&args);
    let (est, lo, hi) = (
        v["estimate"].as_f64().expect("estimate"),
        v["ci_low"].as_f64().expect("ci_low"),
        v["ci_high"].as_f64().expect("ci_high"),
    );
    assert!(lo < est && est < hi, "{v}");
    // The seeded run is reproducible, and its 95% interval (width about 0.03) is near 0.3.
    assert!((est - 0.3).abs() < 0.05, "{v}");
    assert_eq!(v["epsilon"].as_f64(), Some(1.0));
    assert_eq!(json(&args), v, "a seeded simulation is reproducible");

    let v = json(&[
        "poll",
        "simulate",
        "--respondents",
        "5000",
        "--true-rate",
        "0.5",
        "--two-coin",
        "--seed",
        "3",
    ]);
    assert!((v["epsilon"].as_f64().expect("epsilon") - 3f64.ln()).abs() < 1e-9);
    assert_eq!(v["scheme"].as_str(), Some("two-coin"));
}

#[test]
fn poll_estimate_reads_responses_and_matches_the_library() {
    let dir = std::env::temp_dir().join(format!("sotto-cli-poll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("responses.txt");
    // 700 yes out of 1000, with blank lines in between.
    let mut text = String::new();
    for i in 0..1000 {
        text.push_str(if i < 700 { "1\n" } else { "0\n" });
        if i % 100 == 0 {
            text.push('\n');
        }
    }
    std::fs::write(&path, text).expect("write responses");
    let p = path.to_str().expect("utf-8 path");
    let v = json(&["poll", "estimate", "--responses", p, "--epsilon", "2"]);
    let expected = sotto_dp::mechanisms::BinaryRandomizedResponse::new(2.0)
        .and_then(|m| m.estimate(700, 1000, 0.95))
        .expect("estimate");
    assert_eq!(v["estimate"].as_f64(), Some(expected.estimate));
    assert_eq!(v["ci_low"].as_f64(), Some(expected.ci_low));
    assert_eq!(v["ci_high"].as_f64(), Some(expected.ci_high));
    assert_eq!(v["respondents"].as_u64(), Some(1000));

    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "1\n0\nmaybe\n").expect("write bad");
    assert_invalid(
        &[
            "poll",
            "estimate",
            "--responses",
            bad.to_str().expect("utf-8"),
            "--epsilon",
            "1",
        ],
        "line 3",
    );
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n\n").expect("write empty");
    assert_invalid(
        &[
            "poll",
            "estimate",
            "--responses",
            empty.to_str().expect("utf-8"),
            "--epsilon",
            "1",
        ],
        "no responses",
    );
    assert_invalid(
        &[
            "poll",
            "estimate",
            "--responses",
            "/nonexistent/answers.txt",
            "--epsilon",
            "1",
        ],
        "cannot open",
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn poll_rejects_invalid_parameters() {
    for bad in ["nan", "inf", "-1", "0"] {
        assert_invalid(
            &[
                "poll",
                "simulate",
                "--respondents",
                "10",
                "--true-rate",
                "0.5",
                "--epsilon",
                bad,
            ],
            "epsilon",
        );
    }
    for bad in ["nan", "-0.1", "1.5"] {
        assert_invalid(
            &[
                "poll",
                "simulate",
                "--respondents",
                "10",
                "--true-rate",
                bad,
                "--epsilon",
                "1",
            ],
            "true-rate",
        );
    }
    assert_invalid(
        &[
            "poll",
            "simulate",
            "--respondents",
            "0",
            "--true-rate",
            "0.5",
            "--epsilon",
            "1",
        ],
        "respondents",
    );
    assert_invalid(
        &[
            "poll",
            "simulate",
            "--respondents",
            "10",
            "--true-rate",
            "0.5",
            "--epsilon",
            "1",
            "--confidence",
            "1",
        ],
        "confidence",
    );
    assert_invalid(
        &["poll", "respond", "--answer", "perhaps", "--epsilon", "1"],
        "answer",
    );
}

#[test]
fn train_central_reports_accuracy_and_the_accountants_epsilon() {
    let dir = std::env::temp_dir().join(format!("sotto-cli-central-{}", std::process::id()));
    let v = json(&[
        "train",
        "--central",
        "--out",
        dir.to_str().expect("utf-8 path"),
        "--epochs",
        "3",
        "--target-epsilon",
        "2",
        "--seed",
        "1",
        "--no-audit",
    ]);
    let accuracy = v["accuracy"].as_f64().expect("accuracy");
    let epsilon = v["epsilon"].as_f64().expect("epsilon");
    let sigma = v["noise_multiplier"].as_f64().expect("noise multiplier");
    let steps = v["steps"].as_u64().expect("steps");
    let q = v["sampling_rate"].as_f64().expect("sampling rate");
    assert!(
        accuracy > 0.5,
        "3 epochs on digits should beat chance by far: {v}"
    );
    assert!(epsilon <= 2.0, "{v}");
    // The same number `sotto account dp-sgd` prints for these settings.
    let expected = sotto_dp::accounting::dp_sgd_epsilon(
        q,
        sigma,
        steps,
        1e-5,
        sotto_dp::accounting::AccountantKind::Rdp,
    )
    .expect("epsilon");
    assert_eq!(epsilon, expected);
    assert!(dir.join("model.safetensors").is_file());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn train_rejects_bad_settings() {
    assert_invalid(
        &["train", "--central", "--target-epsilon", "nan"],
        "target_epsilon",
    );
    assert_invalid(&["train", "--central", "--delta", "0.5"], "delta");
    assert_invalid(
        &["train", "--central", "--data", "/nonexistent/data.csv"],
        "data",
    );
    assert_invalid(&["train", "--central", "--hidden", "8"], "--hidden");
    assert_invalid(&["train", "--parties", "1"], "parties");
    assert_invalid(
        &[
            "train",
            "--parties",
            "4",
            "--threshold",
            "3",
            "--colluders",
            "3",
        ],
        "colluders",
    );
    assert_invalid(&["train", "--central", "--colluders", "1"], "--colluders");
    assert_invalid(&["train", "--central", "--rounds", "5"], "--rounds");
}

#[test]
fn poll_with_four_choices_end_to_end() {
    let dir = std::env::temp_dir().join(format!("sotto-cli-kary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("answers.txt");
    let f = file.to_str().expect("utf-8 path");
    let choices = "red,green,blue,other";
    let sim = json(&[
        "poll",
        "simulate",
        "--respondents",
        "20000",
        "--true-rate",
        "0.4,0.3,0.2,0.1",
        "--choices",
        choices,
        "--epsilon",
        "2",
        "--seed",
        "5",
        "--write-responses",
        f,
    ]);
    let rows = sim["choices"].as_array().expect("choices");
    assert_eq!(rows.len(), 4);
    for (row, truth) in rows.iter().zip([0.4, 0.3, 0.2, 0.1]) {
        let (e, lo, hi) = (
            row["estimate"].as_f64().expect("estimate"),
            row["ci_low"].as_f64().expect("ci_low"),
            row["ci_high"].as_f64().expect("ci_high"),
        );
        assert!(lo <= e && e <= hi, "{row}");
        assert!((e - truth).abs() < 0.05, "{row}");
    }
    // The file records scheme, epsilon and choices: no flags needed, same numbers.
    let est = json(&["poll", "estimate", "--responses", f]);
    assert_eq!(est["choices"][0]["estimate"], sim["choices"][0]["estimate"]);
    assert_eq!(est["scheme"].as_str(), Some("k-ary"));
    assert_eq!(est["epsilon"].as_f64(), Some(2.0));
    // Flags that contradict the file are refused.
    assert_invalid(
        &[
            "poll",
            "estimate",
            "--responses",
            f,
            "--epsilon",
            "1",
            "--choices",
            choices,
        ],
        "epsilon = 2",
    );
    assert_invalid(
        &["poll", "estimate", "--responses", f, "--epsilon", "2"],
        "binary",
    );
    // Respondents' JSON lines carry scheme and epsilon.
    let mut lines = String::new();
    for answer in ["red", "blue", "blue", "other", "green", "red"] {
        let v = json(&[
            "poll",
            "respond",
            "--answer",
            answer,
            "--choices",
            choices,
            "--epsilon",
            "2",
        ]);
        assert_eq!(v["scheme"].as_str(), Some("k-ary"));
        assert!(
            choices
                .split(',')
                .any(|c| Some(c) == v["response"].as_str()),
            "{v}"
        );
        lines.push_str(&serde_json::to_string(&v).expect("json"));
        lines.push('\n');
    }
    let collected = dir.join("collected.txt");
    std::fs::write(&collected, &lines).expect("write");
    let c = collected.to_str().expect("utf-8");
    let v = json(&["poll", "estimate", "--responses", c, "--choices", choices]);
    assert_eq!(v["respondents"].as_u64(), Some(6));
    assert_invalid(
        &[
            "poll",
            "estimate",
            "--responses",
            c,
            "--choices",
            choices,
            "--epsilon",
            "3",
        ],
        "epsilon",
    );
    // --confidence means nothing to a respondent; an unknown answer is named.
    let out = sotto(&[
        "poll",
        "respond",
        "--answer",
        "red",
        "--epsilon",
        "1",
        "--confidence",
        "0.9",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_invalid(
        &[
            "poll",
            "respond",
            "--answer",
            "purple",
            "--choices",
            choices,
            "--epsilon",
            "1",
        ],
        "purple",
    );
    assert_invalid(
        &[
            "poll",
            "simulate",
            "--respondents",
            "10",
            "--true-rate",
            "0.5,0.5",
            "--choices",
            choices,
            "--epsilon",
            "1",
        ],
        "one fraction per choice",
    );
    std::fs::remove_dir_all(&dir).ok();
}
