//! The `sotto` command-line tool: privacy accounting, private polls, secure sums and DP training.
//!
//! Run `sotto --help` for the subcommands. Errors print one line naming what is wrong and how to
//! fix it; invalid parameters exit with status 2, other failures with status 1.
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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
