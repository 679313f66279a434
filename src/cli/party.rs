//! `sotto party`: contribute a value to a secure sum run by `sotto aggregator`; also the TOML
//! session description both roles share.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use sotto_mpc::encoding::Clipping;
use sotto_mpc::securesum::{
    Deadlines, NoiseSpec, PartyConfig, PartyOutcome, RingBits, SecureSumInput, SecureSumParams,
    SecureSumParty,
};
use sotto_mpc::stats::StatsPlan;
use sotto_mpc::{PartyId, SessionId};

use super::stats::{StatsFile, read_csv};
use super::{Output, UsageError};

/// The `[session]` table shared by the aggregator's and the parties' configuration files: the
/// public parameters of one secure sum. Every role must use the same values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionFile {
    /// 32 hex digits, fresh for every run (messages of other sessions are rejected).
    pub id: String,
    /// Number of parties n (certificates party-1 .. party-n).
    pub parties: usize,
    /// Minimum survivors (default n / 2 + 1).
    pub threshold: Option<usize>,
    /// Parties assumed to collude with the aggregator: their noise shares are not counted
    /// (default: threshold - 1, the worst case the threat model allows).
    pub colluders: Option<usize>,
    /// Vector length (default 1).
    #[serde(default = "one")]
    pub dim: usize,
    /// Clipping norm: `"linf"` (default; a range bound, exact for integers) or `"l2"`.
    #[serde(default = "linf")]
    pub clipping: String,
    /// The clipping bound (not with `[session.stats]`, whose columns carry their bounds).
    pub bound: Option<f64>,
    /// Fixed-point scale (default 1: exact integer sums).
    #[serde(default = "unit")]
    pub scale: f64,
    /// Ring size in bits: 32 or 64 (default).
    #[serde(default = "sixty_four")]
    pub ring_bits: u32,
    /// Seconds the aggregator waits for parties to connect, and a party keeps trying to reach
    /// it (default: 30 s plus 20 ms per party, `Deadlines::for_size`).
    pub join_timeout_secs: Option<f64>,
    /// Seconds each round lasts at most; silent parties are dropped (default: 10 s, longer
    /// for many parties and long vectors, `Deadlines::for_size`).
    pub round_timeout_secs: Option<f64>,
    /// Distributed DP noise (omit for none).
    pub noise: Option<NoiseFile>,
    /// Private statistics over the parties' CSV records instead of a plain sum.
    pub stats: Option<StatsFile>,
}

/// `[session.noise]`: either `epsilon` + `delta`, or `noise_multiplier` + `delta`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseFile {
    /// Target epsilon.
    pub epsilon: Option<f64>,
    /// Noise standard deviation / L2 sensitivity.
    pub noise_multiplier: Option<f64>,
    /// Delta.
    pub delta: f64,
}

fn one() -> usize {
    1
}
fn linf() -> String {
    "linf".to_owned()
}
fn unit() -> f64 {
    1.0
}
fn sixty_four() -> u32 {
    64
}

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            UsageError(format!(
                "session.{name} = {value}: must be a positive number of seconds"
            ))
            .into()
        })
}

impl SessionFile {
    /// The checked parameters, and the statistics plan when `[session.stats]` is given (the
    /// secure sum then adds up the parties' contributions with noise calibrated to one record).
    pub fn params_and_stats(&self) -> anyhow::Result<(SecureSumParams, Option<StatsPlan>)> {
        let session = parse_session(&self.id)?;
        let threshold = self.threshold.unwrap_or(self.parties / 2 + 1);
        let ring = match self.ring_bits {
            32 => RingBits::U32,
            64 => RingBits::U64,
            other => {
                return Err(
                    UsageError(format!("session.ring_bits = {other}: use 32 or 64")).into(),
                );
            }
        };
        // Configured deadlines, or ones derived from the number of parties and the length.
        let deadlines_for = |dim: usize| -> anyhow::Result<Deadlines> {
            let derived = Deadlines::for_size(self.parties, dim);
            Ok(Deadlines {
                join: match self.join_timeout_secs {
                    Some(s) => seconds("join_timeout_secs", s)?,
                    None => derived.join,
                },
                round: match self.round_timeout_secs {
                    Some(s) => seconds("round_timeout_secs", s)?,
                    None => derived.round,
                },
            })
        };
        if let Some(stats) = &self.stats {
            // `dim`, `clipping` and `scale` have defaults; anything else was set by hand.
            if self.noise.is_some()
                || self.bound.is_some()
                || self.dim != 1
                || self.clipping != "linf"
                || self.scale != 1.0
            {
                return Err(UsageError(
                    "[session.stats] carries its own `epsilon`, `delta` and per-column bounds, \
                     and sotto picks the layout and fixed-point scale: remove `bound`, `dim`, \
                     `clipping`, `scale` and [session.noise] from [session]"
                        .to_owned(),
                )
                .into());
            }
            let colluders = self.colluders.unwrap_or(threshold.saturating_sub(1));
            let plan = stats.plan(self.parties, threshold, colluders, ring)?;
            let params = SecureSumParams {
                session,
                parties: self.parties,
                threshold,
                colluders: self.colluders,
                dim: plan.dim(),
                clipping: plan.clipping(),
                scale: 1.0,
                ring,
                noise: plan.noise_spec(),
                deadlines: deadlines_for(plan.dim())?,
            };
            params
                .validate()
                .map_err(|e| UsageError(format!("invalid [session]: {e}")))?;
            return Ok((params, Some(plan)));
        }
        let bound = self.bound.ok_or_else(|| {
            UsageError(
                "[session] needs `bound` (the clipping bound of each party's input), or a \
                 [session.stats] table for statistics over CSV records"
                    .to_owned(),
            )
        })?;
        let clipping = match self.clipping.as_str() {
            "linf" => Clipping::LInf { bound },
            "l2" => Clipping::L2 { norm: bound },
            other => {
                return Err(UsageError(format!(
                    "session.clipping = {other:?}: use \"linf\" (a range bound) or \"l2\""
                ))
                .into());
            }
        };
        let noise = match &self.noise {
            None => NoiseSpec::None,
            Some(NoiseFile {
                epsilon: Some(epsilon),
                noise_multiplier: None,
                delta,
            }) => NoiseSpec::EpsilonDelta {
                epsilon: *epsilon,
                delta: *delta,
            },
            Some(NoiseFile {
                epsilon: None,
                noise_multiplier: Some(multiplier),
                delta,
            }) => NoiseSpec::Multiplier {
                multiplier: *multiplier,
                delta: *delta,
            },
            Some(_) => {
                return Err(UsageError(
                    "session.noise: give exactly one of `epsilon` or `noise_multiplier` (with `delta`)"
                        .to_owned(),
                )
                .into());
            }
        };
        let params = SecureSumParams {
            session,
            parties: self.parties,
            threshold,
            colluders: self.colluders,
            dim: self.dim,
            clipping,
            scale: self.scale,
            ring,
            noise,
            deadlines: deadlines_for(self.dim)?,
        };
        params
            .validate()
            .map_err(|e| UsageError(format!("invalid [session]: {e}")))?;
        Ok((params, None))
    }
}

fn parse_session(hex: &str) -> anyhow::Result<SessionId> {
    let bad = || {
        UsageError(format!(
            "session.id = {hex:?}: must be 32 hex digits (e.g. from `openssl rand -hex 16`), fresh for every run"
        ))
    };
    if hex.len() != 32 || !hex.is_ascii() {
        return Err(bad().into());
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2).ok_or_else(bad)?;
        *b = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(SessionId(bytes))
}

/// Reads and parses a TOML configuration file, rejecting unknown keys.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError(format!(
            "cannot read the configuration {}: {e}",
            path.display()
        ))
    })?;
    toml::from_str(&text)
        .map_err(|e| UsageError(format!("configuration {}: {e}", path.display())).into())
}

/// Resolves `host:port` (an IP address or a host name).
pub fn resolve(what: &str, addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            UsageError(format!(
                "{what} = {addr:?}: not a host:port address (e.g. \"10.0.0.1:4433\")"
            ))
            .into()
        })
}

/// A party's configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyFile {
    /// This party's id, as in its certificate `party-<id>.pem`.
    pub id: u32,
    /// The aggregator's `host:port`.
    pub aggregator: String,
    /// Directory with `ca.pem` and `party-<id>.{pem,key}`.
    pub certs: PathBuf,
    /// The session.
    pub session: SessionFile,
}

/// Arguments of `sotto party`.
#[derive(Debug, Args)]
pub struct PartyArgs {
    /// The party's TOML configuration.
    #[arg(long)]
    pub config: PathBuf,
    /// The value to contribute (integers are summed exactly).
    #[arg(
        long,
        allow_hyphen_values = true,
        conflicts_with_all = ["input", "csv"],
        required_unless_present_any = ["input", "csv"]
    )]
    pub value: Option<String>,
    /// A CSV file with the vector to contribute (commas or newlines between values).
    #[arg(long, conflicts_with = "csv")]
    pub input: Option<PathBuf>,
    /// With `[session.stats]`: a CSV file with a header row whose named columns hold this
    /// party's records (one row each).
    #[arg(long, value_name = "FILE.csv")]
    pub csv: Option<PathBuf>,
    /// Testing aid: sleep SECS after the key exchange, before sending the masked input.
    #[arg(long, hide = true, value_name = "SECS")]
    pub debug_stall_before_input: Option<f64>,
}

#[derive(Serialize)]
struct PartyReport {
    party: u32,
    sum: Option<Vec<f64>>,
    survivors: Vec<u32>,
    epsilon: Option<f64>,
    delta: Option<f64>,
    /// Parties assumed to collude with the aggregator (their noise not counted).
    colluders: Option<usize>,
    /// Honest noise shares the epsilon counts.
    honest_shares: Option<usize>,
    bytes_sent: u64,
}

/// Parses values: all integers give an exact integer input, otherwise reals.
fn parse_values(text: &str, origin: &str) -> anyhow::Result<SecureSumInput> {
    let fields: Vec<&str> = text
        .split([',', '\n', '\r', ';'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if fields.is_empty() {
        return Err(UsageError(format!("{origin}: no values")).into());
    }
    if let Ok(ints) = fields
        .iter()
        .map(|f| f.parse::<i64>())
        .collect::<Result<Vec<_>, _>>()
    {
        return Ok(SecureSumInput::vec_i64(ints));
    }
    let mut reals = Vec::with_capacity(fields.len());
    for (i, f) in fields.iter().enumerate() {
        match f.parse::<f64>() {
            Ok(v) if v.is_finite() => reals.push(v),
            _ => {
                return Err(UsageError(format!(
                    "{origin}: value {} ({f:?}) is not a finite number",
                    i + 1
                ))
                .into());
            }
        }
    }
    Ok(SecureSumInput::vec_f64(reals))
}

/// Runs `sotto party`.
pub fn run(args: PartyArgs, out: &Output) -> anyhow::Result<()> {
    let file: PartyFile = read_toml(&args.config)?;
    let (params, stats) = file.session.params_and_stats()?;
    let aggregator = resolve("aggregator", &file.aggregator)?;
    if let Some(plan) = stats {
        return run_stats(args, &file, params, aggregator, plan, out);
    }
    if args.csv.is_some() {
        return Err(UsageError(
            "--csv needs a [session.stats] table in the configuration (the columns to compute); \
             for a plain sum use --value or --input"
                .to_owned(),
        )
        .into());
    }
    let input = match (&args.value, &args.input) {
        (Some(v), None) => parse_values(v, "--value")?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("cannot read --input {}: {e}", path.display())))?;
            parse_values(&text, &path.display().to_string())?
        }
        _ => return Err(UsageError("give --value V or --input FILE.csv".to_owned()).into()),
    };
    if input.len() != params.dim {
        return Err(UsageError(format!(
            "the input has {} values but the session sums vectors of dim = {}",
            input.len(),
            params.dim
        ))
        .into());
    }
    let stall = match args.debug_stall_before_input {
        None => None,
        Some(s) => Some(seconds("debug_stall_before_input", s)?),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome: PartyOutcome = runtime.block_on(async {
        let mut config = PartyConfig::from_dir(params, PartyId(file.id), aggregator, &file.certs)?;
        config.stall_before_masked_input = stall;
        Ok::<_, anyhow::Error>(SecureSumParty::run(config, input).await?)
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    let report = PartyReport {
        party: outcome.id.0,
        sum: outcome.sum.clone(),
        survivors: outcome.survivors.iter().map(|p| p.0).collect(),
        epsilon: outcome.privacy.map(|p| p.epsilon),
        delta: outcome.privacy.map(|p| p.delta),
        colluders: outcome.privacy.map(|p| p.colluders),
        honest_shares: outcome.privacy.map(|p| p.contributors),
        bytes_sent: outcome.bytes_sent,
    };
    out.emit(&report, || {
        let mut text = format!(
            "party {}: released sum {:?} over {} survivors {:?}",
            report.party,
            report.sum.clone().unwrap_or_default(),
            report.survivors.len(),
            report.survivors
        );
        if let (Some(e), Some(d), Some(c), Some(h)) = (
            report.epsilon,
            report.delta,
            report.colluders,
            report.honest_shares,
        ) {
            text.push_str(&format!(
                " (epsilon = {e:.4} at delta = {d:e} for any one party's input, \
                 counting {h} honest noise shares: up to {c} parties may collude with the aggregator)"
            ));
        }
        text
    })
}

/// `sotto party --csv` with `[session.stats]`: clamp, sum and contribute the records, then
/// print the released statistics.
fn run_stats(
    args: PartyArgs,
    file: &PartyFile,
    params: SecureSumParams,
    aggregator: SocketAddr,
    plan: StatsPlan,
    out: &Output,
) -> anyhow::Result<()> {
    let Some(stats) = &file.session.stats else {
        return Err(anyhow::anyhow!(
            "internal: statistics plan without [session.stats]"
        ));
    };
    let path = args.csv.as_ref().ok_or_else(|| {
        UsageError(
            "this session computes statistics ([session.stats]): give --csv FILE.csv with a \
             header row naming the columns"
                .to_owned(),
        )
    })?;
    let records = read_csv(path, &plan)?;
    let mut rng = sotto_dp::rng::os_rng()?;
    let contribution = plan.contribute(&records, &mut rng)?;
    drop(records);
    if let Some(w) = contribution.clamp_warning() {
        // Local information about this party's own data: printed here, never sent.
        eprintln!("warning: {w}");
    }
    // Certificates first: a set-up error charges nothing to the budget.
    let config = PartyConfig::from_dir(params, PartyId(file.id), aggregator, &file.certs)?;
    let budget = stats.charge(&plan, &file.session.id)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome: PartyOutcome = runtime.block_on(async {
        let input = SecureSumInput::I64(contribution.into_values());
        Ok::<_, anyhow::Error>(SecureSumParty::run(config, input).await?)
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    let sum = outcome
        .sum
        .ok_or_else(|| anyhow::anyhow!("the aggregator sent no release"))?;
    let report = super::stats::report(
        &plan,
        &sum,
        outcome.privacy,
        stats.confidence,
        outcome.survivors.iter().map(|p| p.0).collect(),
        budget,
    )?;
    out.emit(&report, || super::stats::report_text(&report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_and_values_parse_strictly() {
        assert_eq!(
            parse_session("000102030405060708090a0b0c0d0e0f").unwrap().0[15],
            15
        );
        assert!(parse_session("00").is_err());
        assert!(parse_session("zz0102030405060708090a0b0c0d0e0f").is_err());
        assert!(
            matches!(parse_values("1, 2\n3", "x").unwrap(), SecureSumInput::I64(v) if *v == vec![1, 2, 3])
        );
        assert!(matches!(
            parse_values("1.5,2", "x").unwrap(),
            SecureSumInput::F64(_)
        ));
        assert!(parse_values("1,NaN", "x").is_err());
        assert!(parse_values("", "x").is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = "id = 1\naggregator = \"127.0.0.1:1\"\ncerts = \"d\"\ncolour = 3\n[session]\nid = \"000102030405060708090a0b0c0d0e0f\"\nparties = 3\nbound = 10.0\n";
        let err = toml::from_str::<PartyFile>(text).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        let text = "id = 1\naggregator = \"127.0.0.1:1\"\ncerts = \"d\"\n[session]\nid = \"000102030405060708090a0b0c0d0e0f\"\nparties = 3\nbound = 10.0\nsalt = 1\n";
        assert!(
            toml::from_str::<PartyFile>(text)
                .unwrap_err()
                .to_string()
                .contains("salt")
        );
        let text = "id = 1\naggregator = \"127.0.0.1:1\"\ncerts = \"d\"\n[session]\nid = \"000102030405060708090a0b0c0d0e0f\"\nparties = 3\nbound = 10.0\n";
        let file: PartyFile = toml::from_str(text).unwrap();
        let params = file.session.params_and_stats().unwrap().0;
        assert_eq!(params.threshold, 2);
    }

    #[test]
    fn statistics_sessions_plan_the_sum_and_reject_manual_layout() {
        let stats = "[session.stats]\nepsilon = 1.0\ndelta = 1e-6\nmax_records = 100\n\
                     [[session.stats.columns]]\nname = \"age\"\nlower = 0\nupper = 100\nbins = [0, 50, 100]\n";
        let head = "id = 1\naggregator = \"127.0.0.1:1\"\ncerts = \"d\"\n[session]\nid = \"000102030405060708090a0b0c0d0e0f\"\nparties = 5\nthreshold = 3\n";
        let file: PartyFile = toml::from_str(&format!("{head}{stats}")).unwrap();
        let (params, plan) = file.session.params_and_stats().unwrap();
        let plan = plan.unwrap();
        // count, one sum, two bins; scale 1 with noise calibrated to one record.
        assert_eq!(params.dim, 4);
        assert_eq!(plan.dim(), 4);
        assert!(matches!(
            params.noise,
            sotto_mpc::securesum::NoiseSpec::Record { .. }
        ));
        for extra in ["bound = 10.0\n", "dim = 4\n", "scale = 8.0\n"] {
            let file: PartyFile = toml::from_str(&format!("{head}{extra}{stats}")).unwrap();
            let err = file.session.params_and_stats().unwrap_err().to_string();
            assert!(err.contains("[session.stats]"), "{extra}: {err}");
        }
        // Without stats, `bound` is required and named.
        let file: PartyFile = toml::from_str(head).unwrap();
        let err = file.session.params_and_stats().unwrap_err().to_string();
        assert!(err.contains("bound"), "{err}");
    }
}
