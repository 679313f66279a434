//! `sotto poll`: private polls with randomized response.
//!
//! Each respondent randomizes their own answer before it leaves their device; the pollster
//! only ever sees randomized answers and estimates the true rate from them, with a confidence
//! interval.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use sotto_dp::estimators::Estimate;
use sotto_dp::mechanisms::{BinaryRandomizedResponse, TwoCoinResponse};
use sotto_dp::rng::{self, CryptoRng, RngCore};

use super::{Output, UsageError};

/// Poll subcommands.
#[derive(Debug, Subcommand)]
pub enum PollCommand {
    /// Simulate a poll: respondents with a known true rate answer by randomized response.
    Simulate(SimulateArgs),
    /// Estimate the true rate from a file of randomized answers (one 0 or 1 per line).
    Estimate(EstimateArgs),
    /// Randomize one respondent's answer (what a respondent's device runs).
    Respond(RespondArgs),
}

/// The randomized-response scheme, shared by the poll subcommands.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct Scheme {
    /// Privacy parameter epsilon of binary randomized response: each respondent tells the
    /// truth with probability e^epsilon / (1 + e^epsilon).
    #[arg(long, required_unless_present = "two_coin")]
    pub epsilon: Option<f64>,
    /// Use the two-coin scheme instead (truth on heads, otherwise a second coin answers;
    /// epsilon = ln 3).
    #[arg(long, conflicts_with = "epsilon")]
    pub two_coin: bool,
    /// Confidence level of the interval.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
}

/// Arguments of `sotto poll simulate`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct SimulateArgs {
    /// Number of respondents.
    #[arg(long)]
    pub respondents: u64,
    /// The true fraction of respondents whose answer is yes, in [0, 1].
    #[arg(long)]
    pub true_rate: f64,
    /// Seed for a reproducible simulation (never use a seed for a real poll).
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub scheme: Scheme,
}

/// Arguments of `sotto poll estimate`.
#[derive(Debug, Args)]
pub struct EstimateArgs {
    /// File with one randomized answer per line: `0` or `1` (`-` reads standard input).
    /// Blank lines are ignored.
    #[arg(long)]
    pub responses: PathBuf,
    #[command(flatten)]
    pub scheme: Scheme,
}

/// Arguments of `sotto poll respond`.
#[derive(Debug, Args)]
pub struct RespondArgs {
    /// The respondent's true answer: `1`/`yes` or `0`/`no`.
    #[arg(long)]
    pub answer: String,
    #[command(flatten)]
    pub scheme: Scheme,
}

/// A poll's result, as printed.
#[derive(Debug, Serialize)]
struct PollReport {
    estimate: f64,
    ci_low: f64,
    ci_high: f64,
    std_error: f64,
    confidence: f64,
    epsilon: f64,
    scheme: &'static str,
    respondents: u64,
    yes_responses: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    true_rate: Option<f64>,
}

/// Either randomized-response scheme, as chosen on the command line.
enum Randomizer {
    TwoCoin(TwoCoinResponse),
    Binary(BinaryRandomizedResponse),
}

impl Randomizer {
    fn from_args(scheme: &Scheme) -> anyhow::Result<Self> {
        sotto_dp::error::check_open_unit("confidence", scheme.confidence)?;
        match (scheme.two_coin, scheme.epsilon) {
            (true, _) => Ok(Randomizer::TwoCoin(TwoCoinResponse::new())),
            (false, Some(epsilon)) => {
                Ok(Randomizer::Binary(BinaryRandomizedResponse::new(epsilon)?))
            }
            (false, None) => Err(UsageError("give --epsilon E or --two-coin".into()).into()),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Randomizer::TwoCoin(_) => "two-coin",
            Randomizer::Binary(_) => "binary",
        }
    }

    /// The epsilon each respondent spends (pure DP).
    fn epsilon(&self) -> anyhow::Result<f64> {
        let loss = match self {
            Randomizer::TwoCoin(m) => m.privacy_loss(),
            Randomizer::Binary(m) => m.privacy_loss(),
        };
        Ok(loss.epsilon_at(0.0)?)
    }

    fn respond<R: RngCore + CryptoRng>(&self, rng: &mut R, truth: bool) -> anyhow::Result<bool> {
        Ok(match self {
            Randomizer::TwoCoin(m) => m.respond(rng, truth),
            Randomizer::Binary(m) => m.respond(rng, truth)?,
        })
    }

    fn estimate(&self, yes: u64, n: u64, confidence: f64) -> anyhow::Result<Estimate> {
        Ok(match self {
            Randomizer::TwoCoin(m) => m.estimate(yes, n, confidence)?,
            Randomizer::Binary(m) => m.estimate(yes, n, confidence)?,
        })
    }

    fn report(
        &self,
        yes: u64,
        n: u64,
        confidence: f64,
        true_rate: Option<f64>,
    ) -> anyhow::Result<PollReport> {
        let e = self.estimate(yes, n, confidence)?;
        Ok(PollReport {
            estimate: e.estimate,
            ci_low: e.ci_low,
            ci_high: e.ci_high,
            std_error: e.std_error,
            confidence: e.confidence,
            epsilon: self.epsilon()?,
            scheme: self.name(),
            respondents: n,
            yes_responses: yes,
            true_rate,
        })
    }
}

fn report_text(r: &PollReport) -> String {
    let mut s = String::new();
    if let Some(t) = r.true_rate {
        s.push_str(&format!("true rate:       {t:.4}\n"));
    }
    s.push_str(&format!(
        "responses:       {} of {} answered yes ({:.4})\n\
         estimate:        {:.4} (std. error {:.4})\n\
         {:.0}% interval:    [{:.4}, {:.4}]\n\
         privacy:         epsilon = {:.4} per respondent ({} randomized response)",
        r.yes_responses,
        r.respondents,
        r.yes_responses as f64 / r.respondents.max(1) as f64,
        r.estimate,
        r.std_error,
        r.confidence * 100.0,
        r.ci_low,
        r.ci_high,
        r.epsilon,
        r.scheme
    ));
    s
}

/// Runs a poll subcommand.
pub fn run(cmd: PollCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        PollCommand::Simulate(a) => {
            let randomizer = Randomizer::from_args(&a.scheme)?;
            sotto_dp::error::check_probability("true-rate", a.true_rate)?;
            if a.respondents == 0 {
                return Err(UsageError("--respondents must be at least 1".into()).into());
            }
            let mut rng = match a.seed {
                Some(seed) => rng::seeded_rng(seed),
                None => rng::os_rng()?,
            };
            // The first round(true_rate * n) respondents truly answer yes.
            let true_yes = (a.true_rate * a.respondents as f64).round() as u64;
            let mut yes = 0u64;
            for i in 0..a.respondents {
                if randomizer.respond(&mut rng, i < true_yes)? {
                    yes += 1;
                }
            }
            let realized = true_yes as f64 / a.respondents as f64;
            let report =
                randomizer.report(yes, a.respondents, a.scheme.confidence, Some(realized))?;
            out.emit(&report, || report_text(&report))
        }
        PollCommand::Estimate(a) => {
            let randomizer = Randomizer::from_args(&a.scheme)?;
            let (yes, n) = read_responses(&a.responses)?;
            let report = randomizer.report(yes, n, a.scheme.confidence, None)?;
            out.emit(&report, || report_text(&report))
        }
        PollCommand::Respond(a) => {
            let randomizer = Randomizer::from_args(&a.scheme)?;
            let truth = parse_answer(&a.answer).ok_or_else(|| {
                UsageError(format!(
                    "--answer {:?}: expected 1, yes, true, 0, no or false",
                    a.answer
                ))
            })?;
            let mut rng = rng::os_rng()?;
            let answer = randomizer.respond(&mut rng, truth)?;
            let epsilon = randomizer.epsilon()?;
            #[derive(Serialize)]
            struct Response {
                response: u8,
                epsilon: f64,
            }
            let r = Response {
                response: u8::from(answer),
                epsilon,
            };
            out.emit(&r, || r.response.to_string())
        }
    }
}

fn parse_answer(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" => Some(true),
        "0" | "no" | "n" | "false" => Some(false),
        _ => None,
    }
}

/// Reads randomized answers (`0`/`1` per line) and returns (yes count, respondents).
fn read_responses(path: &PathBuf) -> anyhow::Result<(u64, u64)> {
    let reader: Box<dyn Read> =
        if path.as_os_str() == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(std::fs::File::open(path).map_err(|e| {
                UsageError(format!("cannot open --responses {}: {e}", path.display()))
            })?)
        };
    let (mut yes, mut n) = (0u64, 0u64);
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        match line.trim() {
            "" => continue,
            "1" => yes += 1,
            "0" => {}
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(UsageError(format!(
                    "{} line {}: expected 0 or 1, found {shown:?}",
                    path.display(),
                    i + 1
                ))
                .into());
            }
        }
        n += 1;
    }
    if n == 0 {
        return Err(UsageError(format!("{}: no responses found", path.display())).into());
    }
    Ok((yes, n))
}
