//! Sampler throughput: exact discrete Gaussian and discrete Laplace against the raw speed of
//! the generator they consume (ChaCha20 `next_u64`), measured in the same run.
//!
//! Run: `cargo bench -p sotto-dp --bench samplers`
//!
//! Table sampler vs CKS Algorithm 3 only:
//! `cargo bench -p sotto-dp --bench samplers -- table_vs_cks`
//!
//! Load-independent instruction counts: see [`profile_mode`].
//!
//! After criterion's groups, `main` times each case itself (median of 21 fills of 2^16
//! values) and prints samples per second, raw `next_u64` per second and their ratio, so the
//! ratio is always printed even when criterion's own reports are filtered out.
#![allow(missing_docs, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;
use sotto_dp::rng::seeded_rng;
use sotto_dp::sampling::{DiscreteGaussian, DiscreteLaplace};

const BUF: usize = 1 << 16;
const SIGMAS: [f64; 5] = [1.0, 10.0, 100.0, 1e3, 1e4];
const SCALES: [f64; 6] = [0.3, 1.0, 1.7, 10.0, 100.0, 1e4];
const SEED: u64 = 42;
/// Sigmas of the table-driven sampler vs CKS comparison (`DiscreteGaussian::fill` vs
/// `DiscreteGaussian::fill_cks`, same distribution).
const TABLE_SIGMAS: [f64; 4] = [10.0, 1e3, 3e5, 1e7];

fn fill_raw(rng: &mut ChaCha20Rng, out: &mut [u64]) {
    for x in out.iter_mut() {
        *x = rng.next_u64();
    }
}

/// One criterion case: `fill` run repeatedly on `out` with a generator seeded by [`SEED`].
fn fill_case<T>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    out: &mut [T],
    mut fill: impl FnMut(&mut ChaCha20Rng, &mut [T]),
) {
    let mut rng = seeded_rng(SEED);
    group.bench_function(id, |b| {
        b.iter(|| {
            fill(&mut rng, out);
            black_box(&*out);
        })
    });
}

fn bench_baseline(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline_chacha20_next_u64");
    group.throughput(Throughput::Elements(BUF as u64));
    let mut out = vec![0u64; BUF];
    fill_case(
        &mut group,
        BenchmarkId::from_parameter(BUF),
        &mut out,
        fill_raw,
    );
    group.finish();
}

fn bench_gaussian(c: &mut Criterion) {
    let mut group = c.benchmark_group("discrete_gaussian_fill_65536");
    group.throughput(Throughput::Elements(BUF as u64));
    let mut out = vec![0i64; BUF];
    for sigma in SIGMAS {
        let dg = DiscreteGaussian::new(sigma).expect("valid sigma");
        fill_case(
            &mut group,
            BenchmarkId::from_parameter(sigma),
            &mut out,
            |r, o| dg.fill(r, o),
        );
    }
    group.finish();
}

fn bench_table_vs_cks(c: &mut Criterion) {
    let mut group = c.benchmark_group("discrete_gaussian_table_vs_cks_65536");
    group.throughput(Throughput::Elements(BUF as u64));
    let mut out = vec![0i64; BUF];
    for sigma in TABLE_SIGMAS {
        let dg = DiscreteGaussian::new(sigma).expect("valid sigma");
        dg.fill(&mut seeded_rng(SEED), &mut out[..1]); // build the table outside the timing
        fill_case(
            &mut group,
            BenchmarkId::new("table", sigma),
            &mut out,
            |r, o| dg.fill(r, o),
        );
        fill_case(
            &mut group,
            BenchmarkId::new("cks", sigma),
            &mut out,
            |r, o| dg.fill_cks(r, o),
        );
    }
    group.finish();
}

fn bench_laplace(c: &mut Criterion) {
    let mut group = c.benchmark_group("discrete_laplace_fill_65536");
    group.throughput(Throughput::Elements(BUF as u64));
    let mut out = vec![0i64; BUF];
    for scale in SCALES {
        let lap = DiscreteLaplace::new(scale).expect("valid scale");
        fill_case(
            &mut group,
            BenchmarkId::from_parameter(scale),
            &mut out,
            |r, o| lap.fill(r, o),
        );
    }
    group.finish();
}

fn bench_million(c: &mut Criterion) {
    // DESIGN: a million-coordinate gradient is noised in well under a second.
    const DIM: usize = 1_000_000;
    let mut group = c.benchmark_group("discrete_gaussian_fill_1000000");
    group.sample_size(10);
    group.throughput(Throughput::Elements(DIM as u64));
    let mut out = vec![0i64; DIM];
    for sigma in [10.0, 1e4] {
        let dg = DiscreteGaussian::new(sigma).expect("valid sigma");
        fill_case(
            &mut group,
            BenchmarkId::from_parameter(sigma),
            &mut out,
            |r, o| dg.fill(r, o),
        );
    }
    let mut raw = vec![0u64; DIM];
    fill_case(
        &mut group,
        BenchmarkId::new("baseline_next_u64", DIM),
        &mut raw,
        fill_raw,
    );
    group.finish();
}

/// Median seconds of `reps` runs of `f`.
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[reps / 2]
}

fn print_ratios() {
    const REPS: usize = 21;
    let mut rng = seeded_rng(SEED);
    let mut raw = vec![0u64; BUF];
    let raw_secs = median_secs(REPS, || {
        fill_raw(&mut rng, &mut raw);
        black_box(&raw);
    });
    let raw_rate = BUF as f64 / raw_secs;
    println!();
    println!(
        "== ratio summary (own timing: median of {REPS} fills of {BUF} values, seed {SEED}) =="
    );
    println!("baseline ChaCha20 next_u64: {:.1} M/s", raw_rate / 1e6);
    let mut out = vec![0i64; BUF];
    for sigma in SIGMAS {
        let dg = DiscreteGaussian::new(sigma).expect("valid sigma");
        let mut rng = seeded_rng(SEED);
        let secs = median_secs(REPS, || {
            dg.fill(&mut rng, &mut out);
            black_box(&out);
        });
        let rate = BUF as f64 / secs;
        println!(
            "discrete Gaussian sigma = {sigma:>7}: {:>6.2} M samples/s, {:>6.1} ns/sample, ratio to raw next_u64 = {:.4} ({:.1} u64-times per sample)",
            rate / 1e6,
            secs / BUF as f64 * 1e9,
            rate / raw_rate,
            raw_rate / rate
        );
    }
    for scale in SCALES {
        let lap = DiscreteLaplace::new(scale).expect("valid scale");
        let mut rng = seeded_rng(SEED);
        let secs = median_secs(REPS, || {
            lap.fill(&mut rng, &mut out);
            black_box(&out);
        });
        let rate = BUF as f64 / secs;
        println!(
            "discrete Laplace scale = {scale:>7}: {:>6.2} M samples/s, {:>6.1} ns/sample, ratio to raw next_u64 = {:.4}",
            rate / 1e6,
            secs / BUF as f64 * 1e9,
            rate / raw_rate
        );
    }
    println!("-- table-driven sampler (fill) vs CKS Algorithm 3 (fill_cks), same run --");
    for sigma in TABLE_SIGMAS {
        let build = median_secs(REPS, || {
            let dg = DiscreteGaussian::new(sigma).expect("valid sigma");
            dg.fill(&mut seeded_rng(SEED), &mut out[..1]);
            black_box(&out);
        });
        let dg = DiscreteGaussian::new(sigma).expect("valid sigma");
        let mut rng = seeded_rng(SEED);
        let table = median_secs(REPS, || {
            dg.fill(&mut rng, &mut out);
            black_box(&out);
        });
        let mut rng = seeded_rng(SEED);
        let cks = median_secs(REPS, || {
            dg.fill_cks(&mut rng, &mut out);
            black_box(&out);
        });
        println!(
            "sigma = {sigma:>8}: table {:>6.1} ns/sample, CKS {:>6.1} ns/sample, speedup {:.2}x (table build + first sample {:.2} ms)",
            table / BUF as f64 * 1e9,
            cks / BUF as f64 * 1e9,
            cks / table,
            build * 1e3
        );
    }
    let mut big = vec![0i64; 1_000_000];
    let dg = DiscreteGaussian::new(1e3).expect("valid sigma");
    let mut rng = seeded_rng(SEED);
    let secs = median_secs(5, || {
        dg.fill(&mut rng, &mut big);
        black_box(&big);
    });
    println!(
        "1,000,000-coordinate discrete Gaussian vector (sigma 1000): {:.1} ms",
        secs * 1e3
    );
}

/// Profiling mode for instruction counts that do not depend on machine load:
/// `SOTTO_PROFILE_SIGMA=100 valgrind --tool=callgrind target/release/deps/samplers-<hash>`
/// draws 100,000 discrete Gaussian samples with `fill` and exits. `SOTTO_PROFILE_N` changes
/// the count (the difference of two counts gives a per-sample figure without the one-time
/// table build); `SOTTO_PROFILE_CKS=1` uses `fill_cks` (CKS Algorithm 3) instead.
fn profile_mode() -> bool {
    let Some(sigma) = std::env::var("SOTTO_PROFILE_SIGMA")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    else {
        return false;
    };
    let n = std::env::var("SOTTO_PROFILE_N")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(100_000);
    let cks = std::env::var("SOTTO_PROFILE_CKS").is_ok_and(|v| v == "1");
    let dg = DiscreteGaussian::new(sigma).expect("valid sigma");
    let mut out = vec![0i64; n];
    if cks {
        dg.fill_cks(&mut seeded_rng(SEED), &mut out);
    } else {
        dg.fill(&mut seeded_rng(SEED), &mut out);
    }
    black_box(&out);
    true
}

fn main() {
    if profile_mode() {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_baseline(&mut c);
    bench_gaussian(&mut c);
    bench_table_vs_cks(&mut c);
    bench_laplace(&mut c);
    bench_million(&mut c);
    c.final_summary();
    print_ratios();
}
