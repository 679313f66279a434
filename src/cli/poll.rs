//! `sotto poll`: private polls with randomized response.

use clap::Subcommand;

use super::Output;

/// Poll subcommands.
#[derive(Debug, Subcommand)]
pub enum PollCommand {}

/// Runs a poll subcommand.
pub fn run(cmd: PollCommand, _out: &Output) -> anyhow::Result<()> {
    match cmd {}
}
