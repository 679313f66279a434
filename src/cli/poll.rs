//! `sotto poll`: private polls with randomized response.
//!
//! Each respondent randomizes their own answer before it leaves their device; the pollster
//! only ever sees randomized answers and estimates the true rate (or, with `--choices`, the
//! fraction choosing each answer) from them, with a confidence interval.
//!
//! # Estimates and intervals
//! The debiased (unbiased) estimate of a fraction can fall outside [0, 1] when the true
//! fraction is near an edge. The interval is the Wilson score interval of the report
//! probability mapped through the debiasing and intersected with [0, 1]. The reported
//! `estimate` is the unbiased one projected onto [0, 1], so it always lies inside its interval
//! (the Wilson interval contains the observed fraction, and the same clamp is applied to both);
//! `unbiased_estimate` is the raw value (it sums to 1 over the choices of a k-ary poll).
//!
//! # Responses files
//! `poll estimate --responses FILE` reads one randomized answer per line: `0`/`1` (binary),
//! a choice name (k-ary), or the JSON line `poll respond --json` prints. Lines starting with
//! `#` are comments, except `# scheme: ...`, `# epsilon: ...` and `# choices: a,b,c`, which
//! record how the answers were randomized (`poll simulate --write-responses` writes them, and
//! every `respond --json` line carries its scheme and epsilon). `estimate` uses the recorded
//! scheme and refuses flags or lines that contradict it: debiasing with the wrong epsilon
//! silently biases the estimate.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use sotto_dp::estimators::Estimate;
use sotto_dp::mechanisms::{BinaryRandomizedResponse, KaryRandomizedResponse, TwoCoinResponse};
use sotto_dp::rng::{self, CryptoRng, RngCore};

use super::{Output, UsageError};

/// Poll subcommands.
#[derive(Debug, Subcommand)]
pub enum PollCommand {
    /// Simulate a poll: respondents with known true rates answer by randomized response.
    Simulate(SimulateArgs),
    /// Estimate the true rate(s) from a file of randomized answers (one per line).
    Estimate(EstimateArgs),
    /// Randomize one respondent's answer (what a respondent's device runs).
    Respond(RespondArgs),
}

/// The randomized-response scheme, shared by the poll subcommands.
#[derive(Debug, Args, Clone, Default)]
#[command(allow_negative_numbers = true)]
pub struct Scheme {
    /// Privacy parameter epsilon: a binary poll tells the truth with probability
    /// e^eps / (1 + e^eps); a k-ary poll (`--choices`) reports the true choice with
    /// probability e^eps / (e^eps + k - 1), otherwise one of the others uniformly.
    #[arg(long)]
    pub epsilon: Option<f64>,
    /// Use the two-coin scheme instead (truth on heads, otherwise a second coin answers;
    /// epsilon = ln 3; binary polls only).
    #[arg(long, conflicts_with_all = ["epsilon", "choices"])]
    pub two_coin: bool,
    /// The answers of a k-ary poll, comma-separated (e.g. `--choices red,green,blue`);
    /// without it the poll is yes/no.
    #[arg(long, value_delimiter = ',')]
    pub choices: Option<Vec<String>>,
}

/// Arguments of `sotto poll simulate`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct SimulateArgs {
    /// Number of respondents.
    #[arg(long)]
    pub respondents: u64,
    /// The true fraction answering yes, in [0, 1]; with `--choices`, one fraction per
    /// choice, comma-separated, summing to 1.
    #[arg(long, value_delimiter = ',', required = true)]
    pub true_rate: Vec<f64>,
    /// Seed for a reproducible simulation (never use a seed for a real poll).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write the randomized answers, with the scheme and epsilon, to this file (for
    /// `poll estimate --responses`).
    #[arg(long, value_name = "FILE")]
    pub write_responses: Option<PathBuf>,
    /// Confidence level of the intervals.
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    #[command(flatten)]
    pub scheme: Scheme,
}

/// Arguments of `sotto poll estimate`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct EstimateArgs {
    /// File with one randomized answer per line (`-` reads standard input): `0`/`1`, a choice
    /// name, or `poll respond --json` lines; `# scheme:`, `# epsilon:` and `# choices:` lines
    /// record the scheme. Blank lines and other `#` lines are ignored.
    #[arg(long)]
    pub responses: PathBuf,
    /// Confidence level of the intervals (each interval on its own).
    #[arg(long, default_value_t = 0.95)]
    pub confidence: f64,
    #[command(flatten)]
    pub scheme: Scheme,
}

/// Arguments of `sotto poll respond`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct RespondArgs {
    /// The respondent's true answer: `1`/`yes` or `0`/`no`, or one of `--choices`.
    #[arg(long)]
    pub answer: String,
    #[command(flatten)]
    pub scheme: Scheme,
}

/// The estimate for one answer, as printed.
#[derive(Debug, Serialize)]
struct ChoiceReport {
    choice: String,
    responses: u64,
    /// The unbiased estimate projected onto [0, 1] (always inside the interval).
    estimate: f64,
    /// The unbiased estimate (may fall outside [0, 1]).
    unbiased_estimate: f64,
    std_error: f64,
    ci_low: f64,
    ci_high: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    true_rate: Option<f64>,
}

/// A binary poll's result, as printed.
#[derive(Debug, Serialize)]
struct PollReport {
    /// The unbiased estimate projected onto [0, 1] (always inside the interval).
    estimate: f64,
    /// The unbiased estimate (may fall outside [0, 1]).
    unbiased_estimate: f64,
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

/// A k-ary poll's result, as printed.
#[derive(Debug, Serialize)]
struct KaryReport {
    choices: Vec<ChoiceReport>,
    confidence: f64,
    epsilon: f64,
    scheme: &'static str,
    respondents: u64,
}

/// The randomized-response scheme in use, with its answer names.
#[derive(Debug, Clone)]
enum Randomizer {
    TwoCoin(TwoCoinResponse),
    Binary(BinaryRandomizedResponse),
    Kary(KaryRandomizedResponse, Vec<String>),
}

/// What a responses file says about its scheme (from `#` lines or JSON lines).
#[derive(Debug, Clone, Default, PartialEq)]
struct Recorded {
    scheme: Option<String>,
    epsilon: Option<f64>,
    choices: Option<Vec<String>>,
}

/// One `poll respond --json` line.
#[derive(Debug, Serialize, Deserialize)]
struct ResponseLine {
    response: String,
    scheme: String,
    epsilon: f64,
}

fn check_choices(choices: &[String]) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = choices.iter().map(|c| c.trim().to_owned()).collect();
    if names.len() < 2 {
        return Err(UsageError(format!(
            "--choices {}: a poll needs at least 2 choices, comma-separated (e.g. --choices red,green,blue)",
            names.join(",")
        ))
        .into());
    }
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() || name.starts_with('#') || name.starts_with('{') {
            return Err(UsageError(format!(
                "--choices: choice {} ({name:?}) must be a non-empty name not starting with `#` or `{{`",
                i + 1
            ))
            .into());
        }
        if names[..i].contains(name) {
            return Err(UsageError(format!("--choices: {name:?} is listed twice")).into());
        }
    }
    Ok(names)
}

impl Randomizer {
    fn from_args(scheme: &Scheme) -> anyhow::Result<Self> {
        match (scheme.two_coin, scheme.epsilon, &scheme.choices) {
            (true, _, _) => Ok(Randomizer::TwoCoin(TwoCoinResponse::new())),
            (false, Some(epsilon), None) => {
                Ok(Randomizer::Binary(BinaryRandomizedResponse::new(epsilon)?))
            }
            (false, Some(epsilon), Some(choices)) => {
                let names = check_choices(choices)?;
                Ok(Randomizer::Kary(
                    KaryRandomizedResponse::new(epsilon, names.len())?,
                    names,
                ))
            }
            (false, None, _) => Err(UsageError(
                "give --epsilon E (with --choices a,b,c for a k-ary poll) or --two-coin".into(),
            )
            .into()),
        }
    }

    /// The scheme a responses file recorded, if it recorded one.
    fn from_recorded(rec: &Recorded, origin: &str) -> anyhow::Result<Option<Self>> {
        let Some(scheme) = rec.scheme.as_deref() else {
            return Ok(None);
        };
        let need_epsilon = || {
            rec.epsilon.ok_or_else(|| {
                anyhow::Error::from(UsageError(format!(
                    "{origin}: records `scheme: {scheme}` but no `epsilon:` line"
                )))
            })
        };
        let args = match scheme {
            "two-coin" => Scheme {
                two_coin: true,
                ..Scheme::default()
            },
            "binary" => Scheme {
                epsilon: Some(need_epsilon()?),
                ..Scheme::default()
            },
            "k-ary" => Scheme {
                epsilon: Some(need_epsilon()?),
                choices: Some(rec.choices.clone().ok_or_else(|| {
                    UsageError(format!(
                        "{origin}: records `scheme: k-ary` but no `choices:` line"
                    ))
                })?),
                ..Scheme::default()
            },
            other => {
                return Err(UsageError(format!(
                    "{origin}: unknown scheme {other:?} (expected binary, two-coin or k-ary)"
                ))
                .into());
            }
        };
        Self::from_args(&args).map(Some)
    }

    fn name(&self) -> &'static str {
        match self {
            Randomizer::TwoCoin(_) => "two-coin",
            Randomizer::Binary(_) => "binary",
            Randomizer::Kary(..) => "k-ary",
        }
    }

    fn choices(&self) -> Option<&[String]> {
        match self {
            Randomizer::Kary(_, names) => Some(names),
            _ => None,
        }
    }

    /// The epsilon each respondent spends (pure DP).
    fn epsilon(&self) -> anyhow::Result<f64> {
        let loss = match self {
            Randomizer::TwoCoin(m) => m.privacy_loss(),
            Randomizer::Binary(m) => m.privacy_loss(),
            Randomizer::Kary(m, _) => m.privacy_loss(),
        };
        Ok(loss.epsilon_at(0.0)?)
    }

    /// The file header that records this scheme.
    fn header(&self) -> anyhow::Result<String> {
        let mut s = format!(
            "# sotto poll responses\n# scheme: {}\n# epsilon: {}\n",
            self.name(),
            self.epsilon()?
        );
        if let Some(names) = self.choices() {
            let _ = writeln!(s, "# choices: {}", names.join(","));
        }
        Ok(s)
    }

    /// Randomizes the answer with index `value` (0 = no, 1 = yes for binary polls).
    fn respond<R: RngCore + CryptoRng>(&self, rng: &mut R, value: usize) -> anyhow::Result<usize> {
        Ok(match self {
            Randomizer::TwoCoin(m) => usize::from(m.respond(rng, value == 1)),
            Randomizer::Binary(m) => usize::from(m.respond(rng, value == 1)?),
            Randomizer::Kary(m, _) => m.respond(rng, value)?,
        })
    }

    /// The printed name of answer `value`.
    fn answer_name(&self, value: usize) -> String {
        match self.choices().and_then(|c| c.get(value)) {
            Some(name) => name.clone(),
            None => value.to_string(),
        }
    }

    /// Parses a true answer (`--answer`, or a line of a responses file).
    fn parse_answer(&self, s: &str) -> Option<usize> {
        let s = s.trim();
        match self.choices() {
            Some(names) => names.iter().position(|n| n == s),
            None => match s.to_ascii_lowercase().as_str() {
                "1" | "yes" | "y" | "true" => Some(1),
                "0" | "no" | "n" | "false" => Some(0),
                _ => None,
            },
        }
    }

    /// Checks that flags given on the command line agree with the scheme a file recorded.
    fn check_agrees(&self, flags: &Randomizer, origin: &str) -> anyhow::Result<()> {
        let (mine, theirs) = (self.epsilon()?, flags.epsilon()?);
        if self.name() != flags.name() || mine != theirs || self.choices() != flags.choices() {
            let describe = |r: &Randomizer| -> anyhow::Result<String> {
                let mut s = format!(
                    "{} randomized response at epsilon = {}",
                    r.name(),
                    r.epsilon()?
                );
                if let Some(c) = r.choices() {
                    let _ = write!(s, " with choices {}", c.join(","));
                }
                Ok(s)
            };
            return Err(UsageError(format!(
                "{origin} was randomized with {}, but the flags say {}: debiasing with the \
                 wrong scheme biases the estimate; drop the flags (the file's scheme is used) \
                 or fix them",
                describe(self)?,
                describe(flags)?
            ))
            .into());
        }
        Ok(())
    }

    /// Estimates from the per-answer response counts (binary: [no, yes]).
    fn report(
        &self,
        counts: &[u64],
        confidence: f64,
        true_rates: Option<&[f64]>,
    ) -> anyhow::Result<Report> {
        sotto_dp::error::check_open_unit("confidence", confidence)?;
        let n: u64 = counts.iter().sum();
        let epsilon = self.epsilon()?;
        let truth = |i: usize| true_rates.and_then(|t| t.get(i).copied());
        match self {
            Randomizer::Kary(m, names) => {
                let estimates = m.estimate(counts, confidence)?;
                let choices = names
                    .iter()
                    .zip(counts)
                    .zip(&estimates)
                    .enumerate()
                    .map(|(i, ((name, c), e))| choice_report(name, *c, e, truth(i)))
                    .collect();
                Ok(Report::Kary(KaryReport {
                    choices,
                    confidence,
                    epsilon,
                    scheme: self.name(),
                    respondents: n,
                }))
            }
            Randomizer::TwoCoin(_) | Randomizer::Binary(_) => {
                let yes = counts.get(1).copied().unwrap_or(0);
                let e = match self {
                    Randomizer::TwoCoin(m) => m.estimate(yes, n, confidence)?,
                    Randomizer::Binary(m) => m.estimate(yes, n, confidence)?,
                    Randomizer::Kary(..) => {
                        return Err(anyhow::anyhow!("internal: k-ary poll in the binary branch"));
                    }
                };
                let c = choice_report("yes", yes, &e, truth(1));
                Ok(Report::Binary(PollReport {
                    estimate: c.estimate,
                    unbiased_estimate: c.unbiased_estimate,
                    ci_low: c.ci_low,
                    ci_high: c.ci_high,
                    std_error: c.std_error,
                    confidence,
                    epsilon,
                    scheme: self.name(),
                    respondents: n,
                    yes_responses: yes,
                    true_rate: c.true_rate,
                }))
            }
        }
    }
}

fn choice_report(name: &str, responses: u64, e: &Estimate, true_rate: Option<f64>) -> ChoiceReport {
    // The interval lies in [0, 1] and contains the unbiased estimate before both are clamped
    // to [0, 1]; clamping keeps the estimate inside.
    ChoiceReport {
        choice: name.to_owned(),
        responses,
        estimate: e.projected().estimate,
        unbiased_estimate: e.estimate,
        std_error: e.std_error,
        ci_low: e.ci_low,
        ci_high: e.ci_high,
        true_rate,
    }
}

enum Report {
    Binary(PollReport),
    Kary(KaryReport),
}

impl Report {
    fn emit(&self, out: &Output) -> anyhow::Result<()> {
        match self {
            Report::Binary(r) => out.emit(r, || binary_text(r)),
            Report::Kary(r) => out.emit(r, || kary_text(r)),
        }
    }
}

fn binary_text(r: &PollReport) -> String {
    let mut s = String::new();
    if let Some(t) = r.true_rate {
        let _ = writeln!(s, "true rate:       {t:.4}");
    }
    let _ = write!(
        s,
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
    );
    if r.estimate != r.unbiased_estimate {
        let _ = write!(
            s,
            "\n(the unbiased estimate {:.4} lies outside [0, 1]; the estimate is projected onto it)",
            r.unbiased_estimate
        );
    }
    s
}

fn kary_text(r: &KaryReport) -> String {
    let width = r
        .choices
        .iter()
        .map(|c| c.choice.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    let simulated = r.choices.iter().any(|c| c.true_rate.is_some());
    let mut s = format!(
        "{:<width$}  {:>9}  {:>8}  {:>3.0}% interval        std. error{}",
        "choice",
        "responses",
        "estimate",
        r.confidence * 100.0,
        if simulated { "  true rate" } else { "" }
    );
    for c in &r.choices {
        let _ = write!(
            s,
            "\n{:<width$}  {:>9}  {:>8.4}  [{:.4}, {:.4}]  {:>10.4}",
            c.choice, c.responses, c.estimate, c.ci_low, c.ci_high, c.std_error
        );
        if let Some(t) = c.true_rate {
            let _ = write!(s, "  {t:>9.4}");
        }
    }
    let _ = write!(
        s,
        "\n{} respondents; privacy: epsilon = {:.4} per respondent ({}-choice randomized response)",
        r.respondents,
        r.epsilon,
        r.choices.len()
    );
    if r.choices.iter().any(|c| c.estimate != c.unbiased_estimate) {
        s.push_str(
            "\n(some unbiased estimates lie outside [0, 1] and are projected onto it; --json has them)",
        );
    }
    s
}

/// The true answer of each simulated respondent: the first `round(cum_i * n)` respondents
/// (cumulatively) hold answer `i`.
fn true_counts(rates: &[f64], n: u64) -> Vec<u64> {
    let mut counts = Vec::with_capacity(rates.len());
    let (mut cum, mut before) = (0.0, 0u64);
    for r in rates {
        cum += r;
        let upto = ((cum * n as f64).round() as u64).min(n);
        counts.push(upto.saturating_sub(before));
        before = upto.max(before);
    }
    counts
}

fn check_true_rates(randomizer: &Randomizer, rates: &[f64]) -> anyhow::Result<Vec<f64>> {
    for r in rates {
        sotto_dp::error::check_probability("true-rate", *r)?;
    }
    match randomizer.choices() {
        None => match rates {
            [p] => Ok(vec![1.0 - p, *p]),
            _ => Err(UsageError(format!(
                "--true-rate: a yes/no poll takes one fraction, got {} (give --choices for a k-ary poll)",
                rates.len()
            ))
            .into()),
        },
        Some(names) => {
            let total: f64 = rates.iter().sum();
            if rates.len() != names.len() || (total - 1.0).abs() > 1e-9 {
                return Err(UsageError(format!(
                    "--true-rate: give one fraction per choice ({}: {}), summing to 1 (got {} summing to {total})",
                    names.len(),
                    names.join(","),
                    rates.len()
                ))
                .into());
            }
            Ok(rates.to_vec())
        }
    }
}

/// Runs a poll subcommand.
pub fn run(cmd: PollCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        PollCommand::Simulate(a) => {
            let randomizer = Randomizer::from_args(&a.scheme)?;
            sotto_dp::error::check_open_unit("confidence", a.confidence)?;
            let rates = check_true_rates(&randomizer, &a.true_rate)?;
            if a.respondents == 0 {
                return Err(UsageError("--respondents must be at least 1".into()).into());
            }
            let mut rng = match a.seed {
                Some(seed) => rng::seeded_rng(seed),
                None => rng::os_rng()?,
            };
            let truth = true_counts(&rates, a.respondents);
            let mut counts = vec![0u64; rates.len()];
            let mut lines = a.write_responses.as_ref().map(|_| String::new());
            for (value, holders) in truth.iter().enumerate() {
                for _ in 0..*holders {
                    let answer = randomizer.respond(&mut rng, value)?;
                    if let Some(c) = counts.get_mut(answer) {
                        *c += 1;
                    }
                    if let Some(text) = lines.as_mut() {
                        text.push_str(&randomizer.answer_name(answer));
                        text.push('\n');
                    }
                }
            }
            if let (Some(path), Some(text)) = (&a.write_responses, lines) {
                std::fs::write(path, randomizer.header()? + &text).map_err(|e| {
                    UsageError(format!(
                        "cannot write --write-responses {}: {e}",
                        path.display()
                    ))
                })?;
            }
            let realized: Vec<f64> = truth
                .iter()
                .map(|c| *c as f64 / a.respondents as f64)
                .collect();
            randomizer
                .report(&counts, a.confidence, Some(&realized))?
                .emit(out)
        }
        PollCommand::Estimate(a) => {
            // `--choices` alone names the answers of `respond --json` lines (which carry
            // scheme and epsilon but not the list of choices).
            let flags = if a.scheme.epsilon.is_some() || a.scheme.two_coin {
                Some(Randomizer::from_args(&a.scheme)?)
            } else {
                None
            };
            let (randomizer, counts) =
                read_responses(&a.responses, flags, a.scheme.choices.as_deref())?;
            randomizer.report(&counts, a.confidence, None)?.emit(out)
        }
        PollCommand::Respond(a) => {
            let randomizer = Randomizer::from_args(&a.scheme)?;
            let truth = randomizer.parse_answer(&a.answer).ok_or_else(|| {
                UsageError(match randomizer.choices() {
                    Some(names) => format!(
                        "--answer {:?}: expected one of the choices {}",
                        a.answer,
                        names.join(", ")
                    ),
                    None => format!(
                        "--answer {:?}: expected 1, yes, true, 0, no or false",
                        a.answer
                    ),
                })
            })?;
            let mut rng = rng::os_rng()?;
            let answer = randomizer.respond(&mut rng, truth)?;
            let r = ResponseLine {
                response: randomizer.answer_name(answer),
                scheme: randomizer.name().to_owned(),
                epsilon: randomizer.epsilon()?,
            };
            out.emit(&r, || r.response.clone())
        }
    }
}

/// Parses a `# key: value` metadata line into `rec`; other comments are ignored.
fn parse_meta(line: &str, rec: &mut Recorded, origin: &str) -> anyhow::Result<()> {
    let body = line.trim_start_matches('#').trim();
    let Some((key, value)) = body.split_once(':') else {
        return Ok(());
    };
    let value = value.trim();
    match key.trim() {
        "scheme" => rec.scheme = Some(value.to_owned()),
        "epsilon" => {
            let e: f64 = value.parse().map_err(|_| {
                UsageError(format!("{origin}: `# epsilon: {value}` is not a number"))
            })?;
            rec.epsilon = Some(e);
        }
        "choices" => rec.choices = Some(value.split(',').map(|c| c.trim().to_owned()).collect()),
        _ => {}
    }
    Ok(())
}

/// Reads randomized answers and returns the scheme to debias with and the per-answer counts
/// (binary: [no, yes]).
fn read_responses(
    path: &Path,
    flags: Option<Randomizer>,
    choices: Option<&[String]>,
) -> anyhow::Result<(Randomizer, Vec<u64>)> {
    let origin = path.display().to_string();
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(path)
                .map_err(|e| UsageError(format!("cannot open --responses {origin}: {e}")))?,
        )
    };
    let mut rec = Recorded::default();
    // The scheme is fixed at the first answer line: from the header, else from the flags.
    let mut scheme: Option<Randomizer> = None;
    let mut counts: Vec<u64> = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.with_context(|| format!("reading {origin}"))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if scheme.is_some() {
                let before = rec.clone();
                parse_meta(line, &mut rec, &origin)?;
                if rec != before {
                    return Err(UsageError(format!(
                        "{origin} line {}: scheme lines must come before the answers",
                        i + 1
                    ))
                    .into());
                }
            } else {
                parse_meta(line, &mut rec, &origin)?;
            }
            continue;
        }
        let (answer, line_scheme) = if line.starts_with('{') {
            let r: ResponseLine = serde_json::from_str(line).map_err(|e| {
                UsageError(format!(
                    "{origin} line {}: not a `poll respond --json` line: {e}",
                    i + 1
                ))
            })?;
            (r.response, Some((r.scheme, r.epsilon)))
        } else {
            (line.to_owned(), None)
        };
        if scheme.is_none() {
            let mut first = rec.clone();
            if let Some((s, e)) = &line_scheme {
                first.scheme.get_or_insert_with(|| s.clone());
                first.epsilon.get_or_insert(*e);
                if first.choices.is_none() {
                    first.choices = choices.map(<[String]>::to_vec);
                }
            }
            let chosen = match (Randomizer::from_recorded(&first, &origin)?, &flags) {
                (Some(recorded), Some(f)) => {
                    recorded.check_agrees(f, &origin)?;
                    recorded
                }
                (Some(recorded), None) => recorded,
                (None, Some(f)) => f.clone(),
                (None, None) if choices.is_some() => {
                    return Err(UsageError(format!(
                        "{origin} does not record how its answers were randomized: give \
                         --epsilon E with --choices"
                    ))
                    .into());
                }
                (None, None) => {
                    return Err(UsageError(format!(
                        "{origin} does not record how its answers were randomized: give \
                         --epsilon E (with --choices a,b,c for a k-ary poll) or --two-coin"
                    ))
                    .into());
                }
            };
            counts = vec![0; chosen.choices().map_or(2, <[String]>::len)];
            scheme = Some(chosen);
        }
        let Some(active) = scheme.as_ref() else {
            continue;
        };
        if let Some((s, e)) = &line_scheme
            && (s != active.name() || *e != active.epsilon()?)
        {
            return Err(UsageError(format!(
                "{origin} line {}: answer randomized with {s} at epsilon = {e}, but the poll \
                 uses {} at epsilon = {}: answers of different polls cannot be mixed",
                i + 1,
                active.name(),
                active.epsilon()?
            ))
            .into());
        }
        let strict = match active.choices() {
            Some(names) => names.iter().position(|n| n == answer.as_str()),
            None => match answer.as_str() {
                "1" => Some(1),
                "0" => Some(0),
                _ => None,
            },
        };
        match strict.and_then(|v| counts.get_mut(v)) {
            Some(c) => *c += 1,
            None => {
                let shown: String = answer.chars().take(40).collect();
                let expected = match active.choices() {
                    Some(names) => format!("one of the choices {}", names.join(", ")),
                    None => "0 or 1".to_owned(),
                };
                return Err(UsageError(format!(
                    "{origin} line {}: expected {expected}, found {shown:?}",
                    i + 1
                ))
                .into());
            }
        }
    }
    match scheme {
        Some(s) if counts.iter().sum::<u64>() > 0 => Ok((s, counts)),
        _ => Err(UsageError(format!("{origin}: no responses found")).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_counts_cover_every_respondent() {
        assert_eq!(true_counts(&[0.7, 0.3], 10), vec![7, 3]);
        assert_eq!(
            true_counts(&[0.25, 0.25, 0.25, 0.25], 10)
                .iter()
                .sum::<u64>(),
            10
        );
        assert_eq!(true_counts(&[1.0, 0.0], 3), vec![3, 0]);
    }

    #[test]
    fn projected_estimates_stay_inside_their_intervals() {
        let rr = Randomizer::from_args(&Scheme {
            epsilon: Some(0.5),
            ..Scheme::default()
        })
        .unwrap();
        // Few yes answers: the unbiased estimate is negative.
        let report = rr.report(&[90, 10], 0.95, None).unwrap();
        let Report::Binary(r) = report else {
            unreachable!("binary report expected")
        };
        assert!(r.unbiased_estimate < 0.0);
        assert!(r.ci_low <= r.estimate && r.estimate <= r.ci_high, "{r:?}");
        assert_eq!(r.estimate, 0.0);
    }

    #[test]
    fn choices_are_checked() {
        let bad = |c: &[&str]| {
            check_choices(&c.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).is_err()
        };
        assert!(bad(&["a"]));
        assert!(bad(&["a", "a"]));
        assert!(bad(&["a", ""]));
        assert!(bad(&["a", "#b"]));
        assert!(!bad(&["a", "b", "c"]));
    }
}
