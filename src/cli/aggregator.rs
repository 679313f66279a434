//! `sotto aggregator`: run one secure sum for the parties of a deployment.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use sotto_mpc::securesum::{AggregatorConfig, SecureSumAggregator, SumOutcome};

use super::Output;
use super::party::{SessionFile, read_toml, resolve};

/// The aggregator's configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorFile {
    /// UDP `host:port` to listen on (e.g. "0.0.0.0:4433").
    pub listen: String,
    /// Directory with `ca.pem` and `aggregator.{pem,key}`.
    pub certs: PathBuf,
    /// The session (the same table as in the parties' files).
    pub session: SessionFile,
}

/// Arguments of `sotto aggregator`.
#[derive(Debug, Args)]
pub struct AggregatorArgs {
    /// The aggregator's TOML configuration.
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(Serialize)]
struct AggregatorReport {
    sum: Vec<f64>,
    survivors: Vec<u32>,
    dropped: Vec<u32>,
    epsilon: Option<f64>,
    delta: Option<f64>,
    noise_std: Option<f64>,
    /// Parties assumed to collude with the aggregator (their noise not counted).
    colluders: Option<usize>,
    /// Honest noise shares the epsilon counts.
    honest_shares: Option<usize>,
    /// With noise: per coordinate, the 95% interval for the un-noised sum
    /// (`sum +- 1.96 noise_std`; the noise is a sum of discrete Gaussians, close to normal).
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_95: Option<Vec<[f64; 2]>>,
}

/// Runs `sotto aggregator`: waits for the parties, runs one secure sum, prints the result and
/// exits (the UDP port is released).
pub fn run(args: AggregatorArgs, out: &Output) -> anyhow::Result<()> {
    let file: AggregatorFile = read_toml(&args.config)?;
    let (params, stats) = file.session.params_and_stats()?;
    let listen = resolve("listen", &file.listen)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (outcome, budget): (SumOutcome, Option<String>) = runtime.block_on(async {
        let config = AggregatorConfig::from_dir(params, listen, &file.certs)?;
        let aggregator = SecureSumAggregator::bind(config)?;
        // Statistics: charge the query to the budget once the set-up has succeeded, before
        // anything is released.
        let budget = match (&stats, &file.session.stats) {
            (Some(plan), Some(table)) => table.charge(plan, &file.session.id)?,
            _ => None,
        };
        eprintln!("aggregator listening on {}", aggregator.local_addr());
        Ok::<_, anyhow::Error>((aggregator.serve().await?, budget))
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let (Some(plan), Some(table)) = (&stats, &file.session.stats) {
        let fixed: Vec<f64> = outcome.sum_fixed.iter().map(|v| *v as f64).collect();
        let report = super::stats::report(
            plan,
            &fixed,
            outcome.privacy,
            table.confidence,
            outcome.survivors.iter().map(|p| p.0).collect(),
            budget,
        )?;
        return out.emit(&report, || super::stats::report_text(&report));
    }
    let report = AggregatorReport {
        sum: outcome.sum.clone(),
        survivors: outcome.survivors.iter().map(|p| p.0).collect(),
        dropped: outcome.dropped.iter().map(|p| p.0).collect(),
        epsilon: outcome.privacy.map(|p| p.epsilon),
        delta: outcome.privacy.map(|p| p.delta),
        noise_std: outcome.privacy.map(|p| p.noise_std),
        colluders: outcome.privacy.map(|p| p.colluders),
        honest_shares: outcome.privacy.map(|p| p.contributors),
        interval_95: outcome.privacy.map(|p| {
            let half = 1.959_963_984_540_054 * p.noise_std;
            outcome.sum.iter().map(|x| [x - half, x + half]).collect()
        }),
    };
    out.emit(&report, || {
        let mut text = format!(
            "sum {:?}\nsurvivors {:?}\ndropped {:?}",
            report.sum, report.survivors, report.dropped
        );
        if let (Some(e), Some(d), Some(s), Some(c), Some(h), Some(ci)) = (
            report.epsilon,
            report.delta,
            report.noise_std,
            report.colluders,
            report.honest_shares,
            &report.interval_95,
        ) {
            let shown: Vec<String> = ci
                .iter()
                .take(8)
                .map(|[lo, hi]| format!("[{lo:.3}, {hi:.3}]"))
                .collect();
            text.push_str(&format!(
                "\n95% interval of the un-noised sum: {}{}",
                shown.join(", "),
                if ci.len() > 8 {
                    ", ... (all in --json)"
                } else {
                    ""
                }
            ));
            text.push_str(&format!(
                "\nepsilon = {e:.4} at delta = {d:e} for any one party's input (noise standard \
                 deviation {s:.3}; counting {h} honest noise shares: up to {c} parties may \
                 collude with the aggregator)"
            ));
        }
        text
    })
}
