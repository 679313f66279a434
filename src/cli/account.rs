//! `sotto account`: privacy accounting from the command line.

use clap::{Args, Subcommand};
use serde::Serialize;
use sotto_dp::accounting::{self, AccountantKind};

use super::Output;

/// Accounting subcommands.
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Epsilon of DP-SGD (Poisson-subsampled Gaussian mechanism, composed over steps).
    DpSgd(DpSgdArgs),
    /// Epsilon of one Gaussian mechanism (noise multiplier sigma, L2 sensitivity 1), analytic.
    Gaussian(GaussianArgs),
    /// Composition of `count` (epsilon, delta)-DP releases: basic and advanced.
    Compose(ComposeArgs),
}

/// Arguments of `sotto account dp-sgd`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct DpSgdArgs {
    /// Poisson sampling rate q (expected batch size / data set size), in (0, 1].
    #[arg(long)]
    pub sampling_rate: f64,
    /// Noise multiplier: noise standard deviation divided by the clipping norm.
    #[arg(long)]
    pub noise_multiplier: f64,
    /// Number of steps (compositions).
    #[arg(long)]
    pub steps: u64,
    /// Target delta, in (0, 1).
    #[arg(long)]
    pub delta: f64,
    /// Accountant: `rdp` (Rényi DP) or `pld` (privacy-loss distributions, tighter).
    #[arg(long, default_value = "rdp")]
    pub accountant: AccountantKind,
}

/// Arguments of `sotto account gaussian`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct GaussianArgs {
    /// Noise multiplier: noise standard deviation divided by the L2 sensitivity.
    #[arg(long)]
    pub sigma: f64,
    /// Target delta, in (0, 1).
    #[arg(long)]
    pub delta: f64,
}

/// Arguments of `sotto account compose`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct ComposeArgs {
    /// Epsilon of each release.
    #[arg(long)]
    pub epsilon: f64,
    /// Delta of each release, in [0, 1).
    #[arg(long)]
    pub delta: f64,
    /// Number of releases.
    #[arg(long)]
    pub count: u64,
    /// Extra delta for advanced composition; without it only basic composition is reported.
    #[arg(long)]
    pub delta_slack: Option<f64>,
}

#[derive(Serialize)]
struct EpsilonReport {
    epsilon: f64,
    delta: f64,
    accountant: String,
}

#[derive(Serialize)]
struct Pair {
    epsilon: f64,
    delta: f64,
}

#[derive(Serialize)]
struct ComposeReport {
    /// The better (smaller epsilon) of the bounds below.
    epsilon: f64,
    delta: f64,
    method: &'static str,
    basic: Pair,
    #[serde(skip_serializing_if = "Option::is_none")]
    advanced: Option<Pair>,
}

/// Runs an accounting subcommand.
pub fn run(cmd: AccountCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        AccountCommand::DpSgd(a) => {
            let epsilon = accounting::dp_sgd_epsilon(
                a.sampling_rate,
                a.noise_multiplier,
                a.steps,
                a.delta,
                a.accountant,
            )?;
            let report = EpsilonReport {
                epsilon,
                delta: a.delta,
                accountant: a.accountant.to_string(),
            };
            out.emit(&report, || {
                format!(
                    "epsilon = {epsilon:.6} at delta = {} ({} accountant; q = {}, sigma = {}, {} steps)",
                    a.delta, a.accountant, a.sampling_rate, a.noise_multiplier, a.steps
                )
            })
        }
        AccountCommand::Gaussian(a) => {
            let epsilon = accounting::gaussian_epsilon(a.sigma, a.delta)?;
            let report = EpsilonReport {
                epsilon,
                delta: a.delta,
                accountant: "analytic".to_string(),
            };
            out.emit(&report, || {
                format!(
                    "epsilon = {epsilon:.6} at delta = {} (analytic Gaussian, Balle-Wang 2018; sigma = {})",
                    a.delta, a.sigma
                )
            })
        }
        AccountCommand::Compose(a) => {
            let (be, bd) = accounting::basic_composition(a.epsilon, a.delta, a.count)?;
            let advanced = match a.delta_slack {
                Some(slack) => {
                    let (e, d) =
                        accounting::advanced_composition(a.epsilon, a.delta, a.count, slack)?;
                    Some(Pair {
                        epsilon: e,
                        delta: d,
                    })
                }
                None => None,
            };
            let (epsilon, delta, method) = match &advanced {
                Some(p) if p.epsilon < be => (p.epsilon, p.delta, "advanced"),
                _ => (be, bd, "basic"),
            };
            let report = ComposeReport {
                epsilon,
                delta,
                method,
                basic: Pair {
                    epsilon: be,
                    delta: bd,
                },
                advanced,
            };
            out.emit(&report, || {
                let mut s = format!(
                    "{} releases of (epsilon = {}, delta = {}):\n  basic:    epsilon = {be:.6}, delta = {bd:.3e}",
                    a.count, a.epsilon, a.delta
                );
                if let Some(p) = &report.advanced {
                    s.push_str(&format!(
                        "\n  advanced: epsilon = {:.6}, delta = {:.3e}",
                        p.epsilon, p.delta
                    ));
                }
                s.push_str(&format!(
                    "\n  best:     epsilon = {epsilon:.6}, delta = {delta:.3e} ({method})"
                ));
                s
            })
        }
    }
}
