//! Private statistics over CSV files, 5 parties, through the sans-IO SecAgg simulator: over
//! 200 seeded runs the 95% intervals of the count, the means of two columns and a histogram
//! bin of each cover the truth in about 95% of runs, and a value above its bound is reported
//! with its count. (One run over real QUIC with the binary: `tests/cli_stats.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_core::RngCore;
use sotto::dp::rng::seeded_rng;
use sotto::mpc::secagg::{SecAggConfig, SessionId};
use sotto::mpc::sim::{SimOptions, Simulation};
use sotto::mpc::stats::{ColumnSpec, StatsPlan, StatsQuery, StatsRelease};

const PARTIES: usize = 5;
const RUNS: u64 = 200;

fn query() -> StatsQuery {
    StatsQuery {
        columns: vec![
            ColumnSpec::new("age", 0.0, 100.0)
                .unwrap()
                .with_bins(vec![0.0, 30.0, 60.0, 100.0])
                .unwrap(),
            ColumnSpec::new("income", 0.0, 200_000.0)
                .unwrap()
                .with_bins(vec![0.0, 50_000.0, 100_000.0, 200_000.0])
                .unwrap(),
        ],
        max_records: 1000,
        epsilon: 1.0,
        delta: 1e-6,
    }
}

/// Party `p`'s CSV in run `seed` (header, a quoted name column with commas, an extra column),
/// and its true (age, income) rows. With `outlier`, party 0's first age is 130.
fn party_csv(p: usize, seed: u64, outlier: bool) -> (String, Vec<(f64, f64)>) {
    let mut rng = seeded_rng(seed * 1000 + p as u64);
    let records = 150 + (rng.next_u32() % 100) as usize;
    let mut text = String::from("name,age,\"city\",income\n");
    let mut rows = Vec::with_capacity(records);
    for i in 0..records {
        let mut age = f64::from(18 + rng.next_u32() % 70);
        if outlier && p == 0 && i == 0 {
            age = 130.0;
        }
        let income = f64::from(15_000 + rng.next_u32() % 140_000) + 0.5;
        text.push_str(&format!("\"Doe, J. {i}\",{age},Lyon,{income}\n"));
        rows.push((age, income));
    }
    (text, rows)
}

/// One run: every party reads its CSV, contributes and adds its noise share; the SecAgg
/// simulator sums the masked vectors; the release is decoded.
fn run(plan: &StatsPlan, seed: u64, outlier: bool) -> (StatsRelease, Vec<(f64, f64)>, Vec<String>) {
    let mut rng = seeded_rng(seed);
    let mut inputs = Vec::with_capacity(PARTIES);
    let mut truth = Vec::new();
    let mut warnings = Vec::new();
    for p in 0..PARTIES {
        let (text, rows) = party_csv(p, seed, outlier);
        truth.extend(rows);
        let records =
            sotto::stats::read_csv(text.as_bytes(), plan.query(), &format!("party-{p}.csv"))
                .unwrap();
        let contribution = plan.contribute(&records, &mut rng).unwrap();
        warnings.extend(contribution.clamp_warning());
        let mut ring: Vec<u64> = contribution
            .values()
            .iter()
            .map(|v| *v as u64) // two's complement: the ring embedding of an i64
            .collect();
        plan.noise().add_share(&mut ring, &mut rng);
        inputs.push(ring);
    }
    let config = SecAggConfig::new(SessionId([seed as u8; 16]), PARTIES, 3, plan.dim()).unwrap();
    let options = SimOptions {
        seed,
        ..SimOptions::default()
    };
    let out = Simulation::new(config, inputs, options)
        .unwrap()
        .run()
        .result
        .unwrap();
    assert_eq!(out.survivors().len(), PARTIES);
    let sum = sotto::mpc::ring::to_signed(out.sum());
    let release = plan.release(&sum, plan.noise_std(PARTIES), 0.95).unwrap();
    (release, truth, warnings)
}

#[test]
fn intervals_over_csv_files_cover_the_truth_in_about_95_percent_of_200_runs() {
    // 5 parties, threshold 3, up to 2 colluders: the noise counts 1 honest share.
    let plan = StatsPlan::new(query(), PARTIES, 3, 2).unwrap();
    plan.check_ring::<u64>().unwrap();
    let mut covered = [0u32; 5];
    for seed in 0..RUNS {
        let (r, truth, warnings) = run(&plan, seed, false);
        assert!(warnings.is_empty());
        let n = truth.len() as f64;
        let mean_age = truth.iter().map(|t| t.0).sum::<f64>() / n;
        let mean_income = truth.iter().map(|t| t.1).sum::<f64>() / n;
        let young = truth.iter().filter(|t| t.0 < 30.0).count() as f64;
        let rich = truth.iter().filter(|t| t.1 >= 100_000.0).count() as f64;
        let checks = [
            (&r.count, n),
            (&r.columns[0].mean, mean_age),
            (&r.columns[1].mean, mean_income),
            (&r.columns[0].histogram.as_ref().unwrap()[0].count, young),
            (&r.columns[1].histogram.as_ref().unwrap()[2].count, rich),
        ];
        for (k, (e, t)) in checks.into_iter().enumerate() {
            assert!(e.ci_low <= e.estimate && e.estimate <= e.ci_high, "{e:?}");
            if e.ci_low <= t && t <= e.ci_high {
                covered[k] += 1;
            }
        }
        assert_eq!(r.unit_of_privacy, sotto::mpc::stats::UNIT_OF_PRIVACY);
    }
    eprintln!(
        "covered of {RUNS} runs (count, mean age, mean income, ages < 30, incomes >= 100000): {covered:?}"
    );
    // Binomial(200, 0.95): mean 190, sd 3.1; accept 178..=200 (the intervals are normal ones
    // with the exact noise variance; only the mean's delta method is approximate).
    for (k, c) in covered.iter().enumerate() {
        assert!(
            (178..=200).contains(c),
            "statistic {k}: {c} of {RUNS} covered"
        );
    }
}

#[test]
fn a_value_above_the_bound_is_reported_with_its_count() {
    let plan = StatsPlan::new(query(), PARTIES, 3, 2).unwrap();
    let (release, truth, warnings) = run(&plan, 7, true);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .contains("1 value(s) of `age` (0 below the lower bound, 1 above the upper bound)"),
        "{}",
        warnings[0]
    );
    // The release describes the clamped value (100), within its interval.
    let n = truth.len() as f64;
    let clamped_mean = truth.iter().map(|t| t.0.min(100.0)).sum::<f64>() / n;
    let m = &release.columns[0].mean;
    assert!(
        (m.estimate - clamped_mean).abs() < 6.0 * m.std_error,
        "{m:?} vs {clamped_mean}"
    );
}
