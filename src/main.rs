//! The `sotto` command-line tool: privacy accounting, private polls, secure sums and DP training.
//!
//! Run `sotto --help` for the subcommands. Errors print one line naming what is wrong and how to
//! fix it; invalid parameters exit with status 2, other failures with status 1.
#![deny(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    pin_threads();
    let args = cli::Cli::parse();
    cli::init_tracing(args.verbose);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(cli::exit_code(&err))
        }
    }
}

/// Fixes candle's CPU thread count for the process by setting `RAYON_NUM_THREADS` (when it is
/// not set already) to the count candle would pick itself.
///
/// Why: without the variable, candle works out its default thread count again for every
/// matrix product, and on Linux that parses `/proc/cpuinfo` each time. Measured with `perf` on
/// `sotto train` (2026-11-22, 2-core machine): 60% of a party's local compute went to that
/// parsing (331 of 549 samples in `clipped_gradient_sum`); with the variable set the default
/// run's rounds take about half the time. The value is the one candle computes, so its matrix
/// products keep their parallelism; rayon's global pool, which only they use here, is sized to
/// it too (rather than to the logical CPU count).
///
/// This is the binary's only `unsafe` code. `std::env::set_var` is unsafe because another
/// thread could read the environment at the same time; it runs first thing in `main`, before
/// any thread (runtime, thread pool, logger) exists.
#[allow(unsafe_code)]
fn pin_threads() {
    let set = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|n| n > 0);
    if !set {
        let threads = candle_core::utils::get_num_threads();
        // SAFETY: single-threaded here (see above), so no other thread reads the environment.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    }
}
