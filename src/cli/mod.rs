//! Subcommands of the `sotto` binary.

mod account;
mod aggregator;
mod certs;
mod model;
mod output;
mod party;
mod poll;
mod stats;
mod train;

use clap::{Parser, Subcommand};

pub use output::Output;

/// sotto: compute on private data. Secure sums over QUIC with differential privacy.
#[derive(Debug, Parser)]
#[command(name = "sotto", version, about, long_about = None)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// More logging (-v info, -vv debug); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process: the size of the `train` flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Privacy accounting: epsilon of DP-SGD, of a Gaussian mechanism, of a composition.
    #[command(subcommand)]
    Account(account::AccountCommand),
    /// Private polls with randomized response: simulate one or estimate from responses.
    #[command(subcommand)]
    Poll(poll::PollCommand),
    /// Differentially private training: multi-party over QUIC (default) or `--central`.
    Train(train::TrainArgs),
    /// Accuracy and loss of a saved model (`sotto train`'s report folder) on labelled data.
    Evaluate(model::EvaluateArgs),
    /// Class predictions of a saved model (`sotto train`'s report folder) for feature rows.
    Predict(model::PredictArgs),
    /// Write a deployment's dev CA and certificates (aggregator and parties 1..=N).
    Certs(certs::CertsArgs),
    /// Run the aggregator of one secure sum or statistics query (TOML configuration).
    Aggregator(aggregator::AggregatorArgs),
    /// Contribute a value or vector to a secure sum, or CSV records to statistics (TOML
    /// configuration).
    Party(party::PartyArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output::new(cli.json);
    match cli.command {
        Command::Account(cmd) => account::run(cmd, &out),
        Command::Poll(cmd) => poll::run(cmd, &out),
        Command::Train(args) => train::run(args, &out),
        Command::Evaluate(args) => model::evaluate(args, &out),
        Command::Predict(args) => model::predict(args, &out),
        Command::Certs(args) => certs::run(args, &out),
        Command::Aggregator(args) => aggregator::run(args, &out),
        Command::Party(args) => party::run(args, &out),
    }
}

/// Exit status for an error: 2 for invalid parameters or input (the user can fix the command),
/// 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let invalid = err.chain().any(|cause| {
        is_invalid_dp(cause.downcast_ref::<sotto_dp::Error>())
            || cause.downcast_ref::<UsageError>().is_some()
            || is_invalid_training(cause.downcast_ref::<sotto_training::Error>())
            || is_invalid_mpc(cause.downcast_ref::<sotto_mpc::Error>())
            || is_invalid_transport(cause.downcast_ref::<sotto_mpc::transport::Error>())
            || match cause.downcast_ref::<sotto_mpc::securesum::Error>() {
                Some(sotto_mpc::securesum::Error::Protocol(e)) => is_invalid_mpc(Some(e)),
                Some(sotto_mpc::securesum::Error::Transport(e)) => is_invalid_transport(Some(e)),
                _ => false,
            }
            || match cause.downcast_ref::<sotto_training::federated::Error>() {
                Some(sotto_training::federated::Error::Training(e)) => is_invalid_training(Some(e)),
                Some(sotto_training::federated::Error::Protocol(e)) => is_invalid_mpc(Some(e)),
                Some(sotto_training::federated::Error::Transport(e)) => {
                    is_invalid_transport(Some(e))
                }
                _ => false,
            }
    });
    if invalid { 2 } else { 1 }
}

fn is_invalid_training(err: Option<&sotto_training::Error>) -> bool {
    match err {
        Some(sotto_training::Error::InvalidParameter { .. })
        | Some(sotto_training::Error::Data(_)) => true,
        Some(sotto_training::Error::Dp(e)) => is_invalid_dp(Some(e)),
        _ => false,
    }
}

/// Parameters the protocol refuses (bad values, a ring that could wrap).
fn is_invalid_mpc(err: Option<&sotto_mpc::Error>) -> bool {
    match err {
        Some(sotto_mpc::Error::InvalidParameter { .. } | sotto_mpc::Error::RingOverflow { .. }) => {
            true
        }
        Some(sotto_mpc::Error::Dp(e)) => is_invalid_dp(Some(e)),
        _ => false,
    }
}

/// Transport configuration the user can fix: missing or wrong certificate files, bad options.
fn is_invalid_transport(err: Option<&sotto_mpc::transport::Error>) -> bool {
    matches!(
        err,
        Some(
            sotto_mpc::transport::Error::Certificate { .. }
                | sotto_mpc::transport::Error::InvalidParameter { .. }
        )
    )
}

fn is_invalid_dp(err: Option<&sotto_dp::Error>) -> bool {
    matches!(err, Some(sotto_dp::Error::InvalidParameter { .. }))
}

/// An error in what the user asked for (a bad flag value or input file), reported with exit
/// status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Sets up `tracing` logging to stderr.
pub fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
