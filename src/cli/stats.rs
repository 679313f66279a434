//! Private statistics in `sotto party` / `sotto aggregator`: the `[session.stats]` table, the
//! CSV reader, the privacy-budget ledger and the printed release.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sotto_dp::PrivacyLoss;
use sotto_dp::accounting::PrivacyBudget;
use sotto_mpc::securesum::{PrivacySpent, RingBits};
use sotto_mpc::stats::{ColumnSpec, Records, StatsPlan, StatsQuery, StatsRelease};

use super::UsageError;

/// `[session.stats]`: a statistics query over the parties' CSV records.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsFile {
    /// Target epsilon of the release, for one record.
    pub epsilon: f64,
    /// Target delta.
    pub delta: f64,
    /// The most records (CSV rows) one party may contribute.
    pub max_records: u64,
    /// Confidence level of the intervals (default 0.95).
    #[serde(default = "ninety_five")]
    pub confidence: f64,
    /// The columns (`[[session.stats.columns]]`).
    pub columns: Vec<ColumnFile>,
    /// A privacy budget shared by the queries of this data set (optional).
    pub budget: Option<BudgetFile>,
}

fn ninety_five() -> f64 {
    0.95
}

/// `[[session.stats.columns]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnFile {
    /// The CSV header of the column.
    pub name: String,
    /// Values below are clamped to it.
    pub lower: f64,
    /// Values above are clamped to it.
    pub upper: f64,
    /// Histogram bin edges (optional).
    pub bins: Option<Vec<f64>>,
    /// Largest rounding step wanted for the sum (optional).
    pub accuracy: Option<f64>,
}

/// `[session.stats.budget]`: every role charges its own ledger before each query.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetFile {
    /// Total epsilon of all queries (for one record).
    pub epsilon: f64,
    /// Total delta.
    pub delta: f64,
    /// JSON file recording what earlier queries spent (created if missing).
    pub ledger: PathBuf,
}

/// One line of the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LedgerEntry {
    session: String,
    rho: f64,
    epsilon: f64,
    delta: f64,
}

impl StatsFile {
    /// The plan for `parties` parties, `threshold` survivors and `colluders` colluders, with
    /// the ring checked (one message says what to change).
    pub fn plan(
        &self,
        parties: usize,
        threshold: usize,
        colluders: usize,
        ring: RingBits,
    ) -> anyhow::Result<StatsPlan> {
        sotto_dp::error::check_open_unit("session.stats.confidence", self.confidence)?;
        let columns = self
            .columns
            .iter()
            .map(|c| ColumnSpec {
                name: c.name.clone(),
                lower: c.lower,
                upper: c.upper,
                bins: c.bins.clone(),
                accuracy: c.accuracy,
            })
            .collect();
        let query = StatsQuery {
            columns,
            max_records: self.max_records,
            epsilon: self.epsilon,
            delta: self.delta,
        };
        let plan = StatsPlan::new(query, parties, threshold, colluders)
            .map_err(|e| UsageError(format!("invalid [session.stats]: {e}")))?;
        match ring {
            RingBits::U32 => plan.check_ring::<u32>(),
            RingBits::U64 => plan.check_ring::<u64>(),
        }
        .map_err(|e| UsageError(format!("[session.stats]: {e}")))?;
        Ok(plan)
    }

    /// Charges this query to the ledger of `[session.stats.budget]` (if any) before it runs;
    /// refuses (exit status 2) if it would overspend, stating requested and remaining.
    /// Returns the budget line to print.
    pub fn charge(&self, plan: &StatsPlan, session: &str) -> anyhow::Result<Option<String>> {
        let Some(b) = &self.budget else {
            return Ok(None);
        };
        let mut budget = PrivacyBudget::zcdp_for(b.epsilon, b.delta)
            .map_err(|e| UsageError(format!("[session.stats.budget]: {e}")))?;
        let mut entries: Vec<LedgerEntry> = match std::fs::read_to_string(&b.ledger) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                UsageError(format!(
                    "privacy ledger {}: {e} (it must be the JSON list sotto writes)",
                    b.ledger.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(UsageError(format!(
                    "cannot read the privacy ledger {}: {e}",
                    b.ledger.display()
                ))
                .into());
            }
        };
        for (i, entry) in entries.iter().enumerate() {
            budget.spend(PrivacyLoss::zcdp(entry.rho)?).map_err(|e| {
                UsageError(format!(
                    "privacy ledger {} entry {}: {e}",
                    b.ledger.display(),
                    i + 1
                ))
            })?;
        }
        let loss = plan.privacy_loss()?;
        let release = plan.privacy(plan.honest_shares())?;
        if let Err(e) = budget.spend(loss) {
            return Err(UsageError(format!(
                "{e} (zCDP rho; this query is epsilon = {:.4} at delta = {:e} for one \
                 record, and {} earlier quer{} in {} spent the rest of the budget epsilon = {} \
                 at delta = {:e}): lower `epsilon` in [session.stats], or stop querying this data",
                release.epsilon,
                release.delta,
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" },
                b.ledger.display(),
                b.epsilon,
                b.delta
            ))
            .into());
        }
        entries.push(LedgerEntry {
            session: session.to_owned(),
            rho: release.rho,
            epsilon: release.epsilon,
            delta: release.delta,
        });
        std::fs::write(&b.ledger, serde_json::to_string_pretty(&entries)?).map_err(|e| {
            UsageError(format!(
                "cannot write the privacy ledger {}: {e}",
                b.ledger.display()
            ))
        })?;
        let spent = budget.epsilon_spent(b.delta)?;
        Ok(Some(format!(
            "privacy budget: {} quer{} of this data spent epsilon = {spent:.4} of {} at delta = {:e} (ledger {})",
            entries.len(),
            if entries.len() == 1 { "y" } else { "ies" },
            b.epsilon,
            b.delta,
            b.ledger.display()
        )))
    }
}

/// Reads a party's records from a CSV file with a header row: the query's columns, by name
/// (other columns are ignored; quoting as in RFC 4180).
pub fn read_csv(path: &Path, plan: &StatsPlan) -> anyhow::Result<Records> {
    let origin = path.display().to_string();
    let file = std::fs::File::open(path)
        .map_err(|e| UsageError(format!("cannot read --csv {origin}: {e}")))?;
    sotto::stats::read_csv(std::io::BufReader::new(file), plan.query(), &origin)
        .map_err(|e| UsageError(e.0).into())
}

/// The printed result of a statistics query.
#[derive(Debug, Serialize)]
pub struct StatsReport {
    /// The released statistics.
    pub statistics: StatsRelease,
    /// Epsilon for one record, with the honest shares counted.
    pub epsilon: Option<f64>,
    /// Delta.
    pub delta: Option<f64>,
    /// Honest noise shares counted.
    pub honest_shares: Option<usize>,
    /// Parties assumed to collude with the aggregator.
    pub colluders: Option<usize>,
    /// Survivors (transport ids).
    pub survivors: Vec<u32>,
    /// The budget line, if a budget was configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
}

/// Decodes the released sum (integer units at scale 1) into the statistics.
pub fn report(
    plan: &StatsPlan,
    sum: &[f64],
    privacy: Option<PrivacySpent>,
    confidence: f64,
    survivors: Vec<u32>,
    budget: Option<String>,
) -> anyhow::Result<StatsReport> {
    let privacy = privacy.ok_or_else(|| {
        anyhow::anyhow!("the aggregator released statistics without the privacy of the noise")
    })?;
    // Exact: the fixed-point sum is an integer below 2^53 (checked by the ring plan).
    let fixed: Vec<i64> = sum.iter().map(|v| v.round() as i64).collect();
    let statistics = plan.release(&fixed, privacy.noise_std, confidence)?;
    Ok(StatsReport {
        statistics,
        epsilon: Some(privacy.epsilon),
        delta: Some(privacy.delta),
        honest_shares: Some(privacy.contributors),
        colluders: Some(privacy.colluders),
        survivors,
        budget,
    })
}

fn line(label: &str, e: &sotto_dp::estimators::Estimate) -> String {
    format!(
        "{label:<16}{:>14.2}  [{:.2}, {:.2}]  (std. error {:.2})\n",
        e.estimate, e.ci_low, e.ci_high, e.std_error
    )
}

/// The report as text.
pub fn report_text(r: &StatsReport) -> String {
    let s = &r.statistics;
    let pct = s.count.confidence * 100.0;
    let mut t = format!(
        "statistics of {} parties' records ({pct:.0}% intervals, each on its own)\n",
        r.survivors.len()
    );
    t.push_str(&line("records", &s.count));
    for c in &s.columns {
        let _ = writeln!(t, "{} (clamped to [{}, {}])", c.name, c.lower, c.upper);
        t.push_str(&line("  mean", &c.mean));
        t.push_str(&line("  sum", &c.sum));
        if let Some(h) = &c.histogram {
            for (i, b) in h.iter().enumerate() {
                let close = if i + 1 == h.len() { "]" } else { ")" };
                t.push_str(&line(&format!("  [{}, {}{close}", b.low, b.high), &b.count));
            }
        }
    }
    let _ = write!(t, "unit of privacy: {}", s.unit_of_privacy);
    if let (Some(e), Some(d), Some(h), Some(c)) = (r.epsilon, r.delta, r.honest_shares, r.colluders)
    {
        let _ = write!(
            t,
            "; epsilon = {e:.4} at delta = {d:e} per record, counting {h} honest noise share(s) \
             (up to {c} parties may collude with the aggregator)"
        );
    }
    if let Some(b) = &r.budget {
        let _ = write!(t, "\n{b}");
    }
    t
}
