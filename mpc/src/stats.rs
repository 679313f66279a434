//! Private statistics over the parties' records: per column sum, count, mean and histograms,
//! with record-level contribution bounding, distributed DP noise calibrated to one record,
//! and a confidence interval for every released number.
//!
//! Each party holds a table of records (rows) with the query's named columns. It clamps every
//! value to its column's declared `[lower, upper]` bounds (counting what it clamped, for a
//! local warning), sums its records into one integer vector (the *contribution*: the record
//! count, one fixed-point sum per column, one count per histogram bin) and feeds it to a
//! secure sum whose noise is calibrated to the change one record can make
//! ([`StatsPlan::sensitivity`]): **the unit of privacy is one record** (one row of one
//! party's data), added or removed. The released vector is decoded by [`StatsPlan::release`]
//! into estimates with intervals.
//!
//! # Layout of the contribution
//! `[count, sum_0, .., sum_{c-1}, bins of the first column with bins, bins of the next, ..]`.
//!
//! # Fixed-point scale (chosen for you)
//! Each column's sum is encoded at a power-of-two scale `s` ([`StatsPlan::scales`]): a party
//! adds up its clamped values, multiplies by `s` and rounds randomly (unbiased) to an integer.
//! One record moves a party's rounded sum by at most `ceil(B s) + 1` units, `B = max(|lower|,
//! |upper|)` (the rounding is charged to the sensitivity). The scale starts at `B s` in
//! `[1, 2)` and doubles until the rounding of the survivors' sums adds at most 1% to the
//! variance of the noise (the target accuracy: rounding never matters next to the noise),
//! or the `accuracy` of a column (largest rounding step wanted) asks for more. A finer scale
//! would only shift privacy budget from the counts to the sums.
//!
//! # Intervals
//! Noise is the sum of the survivors' discrete Gaussian shares (variance at most the
//! reported `noise_std^2`; the sum of several is very close to normal), so counts and sums get
//! normal intervals `released +- z sd` (the sums' sd includes the rounding); means get the
//! delta-method interval for `sum / count`, intersected with `[lower, upper]` (where every
//! mean of clamped values lies; when the count is not clearly positive the interval is the
//! whole range). Estimates are unbiased for counts and sums (they may be negative); a mean is
//! projected onto `[lower, upper]`, inside its interval. Intervals hold at `confidence` one by
//! one, not jointly.
//!
//! # Example
//! Five parties, two columns, a histogram, all in memory (the secure sum is exact, so the
//! in-memory sum of the contributions plus the noise shares is what it would release):
//! ```rust
//! use sotto_mpc::stats::{ColumnSpec, StatsPlan, StatsQuery, Records};
//! use sotto_dp::rng::seeded_rng;
//!
//! let query = StatsQuery {
//!     columns: vec![
//!         ColumnSpec::new("age", 0.0, 100.0)?.with_bins(vec![0.0, 30.0, 60.0, 100.0])?,
//!         ColumnSpec::new("income", 0.0, 200_000.0)?,
//!     ],
//!     max_records: 1000,
//!     epsilon: 1.0,
//!     delta: 1e-6,
//! };
//! // 5 parties, any 3 survive, up to 2 collude with the aggregator: 1 honest noise share.
//! let plan = StatsPlan::new(query, 5, 3, 2)?;
//! let mut rng = seeded_rng(1);
//! let mut total = vec![0i64; plan.dim()];
//! for party in 0..5 {
//!     let rows: Vec<Vec<f64>> = (0..400).map(|i| vec![(20 + (i + party) % 50) as f64, 50_000.0]).collect();
//!     let records = Records::new(plan.query(), rows)?;
//!     let contribution = plan.contribute(&records, &mut rng)?;
//!     let noised = plan.add_noise_share(contribution.values(), &mut rng);
//!     for (t, v) in total.iter_mut().zip(noised.iter()) { *t += v; }
//! }
//! let release = plan.release(&total, plan.noise_std(5), 0.95)?;
//! assert!(release.count.ci_low < 2000.0 && 2000.0 < release.count.ci_high);
//! let income = &release.columns[1];
//! assert!(income.mean.ci_low <= 50_000.0 && 50_000.0 <= income.mean.ci_high);
//! assert_eq!(release.columns[0].histogram.as_ref().map(Vec::len), Some(3));
//! # Ok::<(), sotto_mpc::Error>(())
//! ```

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sotto_dp::estimators::{Estimate, normal_quantile};
use zeroize::{Zeroize, Zeroizing};

use crate::encoding::check_no_wrap;
use crate::error::{Error, Result};
use crate::noise::{DistributedNoise, Sensitivity};
use crate::ring::RingWord;

/// What one record is, for the privacy guarantee (stated in every release).
pub const UNIT_OF_PRIVACY: &str = "one record (one row of one party's data), added or removed";

/// Share of the noise variance the rounding of the sums may add, at most (the target accuracy
/// of the automatic scale).
const ROUNDING_SHARE: f64 = 0.01;

/// One column of a statistics query: its name, the declared bounds every value is clamped to,
/// and optional histogram bin edges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// The column's name (a CSV header).
    pub name: String,
    /// Lower bound: smaller values are clamped to it.
    pub lower: f64,
    /// Upper bound: larger values are clamped to it.
    pub upper: f64,
    /// Histogram bin edges, strictly increasing (`[e0, e1, .., em]`: bins `[e0, e1)`, ..,
    /// `[e_{m-1}, em]`); a value below `e0` counts in the first bin, above `em` in the last.
    pub bins: Option<Vec<f64>>,
    /// Largest rounding step wanted for the column's sum (optional; the automatic scale is
    /// usually much finer).
    pub accuracy: Option<f64>,
}

impl ColumnSpec {
    /// A column with bounds `[lower, upper]` and no histogram.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if a bound is not finite or `lower >= upper`.
    pub fn new(name: impl Into<String>, lower: f64, upper: f64) -> Result<Self> {
        let c = ColumnSpec {
            name: name.into(),
            lower,
            upper,
            bins: None,
            accuracy: None,
        };
        c.check()?;
        Ok(c)
    }

    /// The same column with a histogram over `edges`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if the edges are fewer than 2, not finite or not strictly
    /// increasing.
    pub fn with_bins(mut self, edges: Vec<f64>) -> Result<Self> {
        self.bins = Some(edges);
        self.check()?;
        Ok(self)
    }

    fn check(&self) -> Result<()> {
        let bad = |what: &str| {
            Error::invalid(
                "columns",
                &self.name,
                format!("column `{}`: {what}", self.name),
            )
        };
        if self.name.trim().is_empty() {
            return Err(Error::invalid(
                "columns",
                "\"\"",
                "every column needs a name",
            ));
        }
        if !self.lower.is_finite() || !self.upper.is_finite() || self.lower >= self.upper {
            return Err(bad(&format!(
                "bounds [{}, {}] must be finite numbers with lower < upper",
                self.lower, self.upper
            )));
        }
        if let Some(edges) = &self.bins
            && (edges.len() < 2
                || edges.iter().any(|e| !e.is_finite())
                || edges.windows(2).any(|w| w.first() >= w.get(1)))
        {
            return Err(bad(
                "bins must be at least 2 finite, strictly increasing edges (e.g. [0, 10, 20])",
            ));
        }
        if let Some(a) = self.accuracy
            && !(a.is_finite() && a > 0.0)
        {
            return Err(bad(&format!("accuracy = {a} must be a positive number")));
        }
        Ok(())
    }

    /// `max(|lower|, |upper|)`: the most one value can add to a sum.
    fn magnitude(&self) -> f64 {
        self.lower.abs().max(self.upper.abs())
    }

    fn bin_count(&self) -> usize {
        self.bins.as_ref().map_or(0, |e| e.len().saturating_sub(1))
    }

    /// The bin of a clamped value.
    fn bin_of(&self, v: f64) -> Option<usize> {
        let edges = self.bins.as_ref()?;
        let bins = edges.len().saturating_sub(1);
        let above = edges.iter().skip(1).take_while(|e| v >= **e).count();
        Some(above.min(bins.saturating_sub(1)))
    }
}

/// A statistics query: the columns, the bound on each party's number of records, and the
/// privacy target of the release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsQuery {
    /// The columns, in the order of [`Records`] rows.
    pub columns: Vec<ColumnSpec>,
    /// The most records one party may contribute (bounds the ring, not the privacy).
    pub max_records: u64,
    /// Target epsilon of the release, for one record.
    pub epsilon: f64,
    /// Target delta.
    pub delta: f64,
}

impl StatsQuery {
    fn check(&self) -> Result<()> {
        if self.columns.is_empty() {
            return Err(Error::invalid(
                "columns",
                "[]",
                "declare at least one column",
            ));
        }
        for (i, c) in self.columns.iter().enumerate() {
            c.check()?;
            if self.columns.iter().take(i).any(|o| o.name == c.name) {
                return Err(Error::invalid(
                    "columns",
                    &c.name,
                    "each column may be declared once",
                ));
            }
        }
        if self.max_records == 0 {
            return Err(Error::invalid(
                "max_records",
                0,
                "must be at least 1 (the most records one party contributes)",
            ));
        }
        sotto_dp::error::check_positive("epsilon", self.epsilon)?;
        sotto_dp::error::check_open_unit("delta", self.delta)?;
        Ok(())
    }
}

/// One party's records: one row per record, one value per query column (in order).
///
/// # Security
/// The values are zeroized on drop and print as `[redacted]`.
pub struct Records {
    rows: Zeroizing<Vec<f64>>,
    width: usize,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Records([redacted], {} rows)", self.len())
    }
}

impl Records {
    /// Records for `query` from rows of values.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the row if a row's length differs from the number
    /// of columns or a value is not finite.
    pub fn new(query: &StatsQuery, rows: Vec<Vec<f64>>) -> Result<Self> {
        let width = query.columns.len();
        let mut flat = Zeroizing::new(Vec::with_capacity(rows.len().saturating_mul(width)));
        for (i, mut row) in rows.into_iter().enumerate() {
            let bad = if row.len() != width {
                Some(format!(
                    "has {} values, the query has {width} columns",
                    row.len()
                ))
            } else {
                row.iter().position(|v| !v.is_finite()).map(|j| {
                    let name = query.columns.get(j).map_or("?", |c| c.name.as_str());
                    format!("column `{name}` is not a finite number")
                })
            };
            if let Some(reason) = bad {
                row.zeroize();
                return Err(Error::invalid("records", format!("row {}", i + 1), reason));
            }
            flat.extend_from_slice(&row);
            row.zeroize();
        }
        Ok(Records { rows: flat, width })
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.rows.len().checked_div(self.width).unwrap_or(0)
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn iter(&self) -> impl Iterator<Item = &[f64]> {
        self.rows.chunks(self.width.max(1))
    }
}

/// How many values of one column a party clamped to the declared bounds (local information
/// for a warning; never sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Clamped {
    /// The column.
    pub column: String,
    /// Values below `lower`.
    pub below: u64,
    /// Values above `upper`.
    pub above: u64,
}

/// A party's contribution: its records summed into one integer vector (before noise).
///
/// # Security
/// Zeroized on drop; prints as `[redacted]`.
pub struct Contribution {
    values: Zeroizing<Vec<i64>>,
    clamped: Vec<Clamped>,
    records: u64,
}

impl std::fmt::Debug for Contribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Contribution([redacted], {} records)", self.records)
    }
}

impl Contribution {
    /// The vector to secure-sum (see the module docs for the layout).
    pub fn values(&self) -> &[i64] {
        &self.values
    }

    /// Consumes the contribution, returning the vector.
    pub fn into_values(self) -> Zeroizing<Vec<i64>> {
        self.values
    }

    /// Per column, the values clamped to the bounds (only columns with any).
    pub fn clamped(&self) -> &[Clamped] {
        &self.clamped
    }

    /// The number of records summed.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// A warning naming the clamped values per column, or `None` if nothing was clamped.
    pub fn clamp_warning(&self) -> Option<String> {
        if self.clamped.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .clamped
            .iter()
            .map(|c| {
                format!(
                    "{} value(s) of `{}` ({} below the lower bound, {} above the upper bound)",
                    c.below + c.above,
                    c.column,
                    c.below,
                    c.above
                )
            })
            .collect();
        Some(format!(
            "clamped {} to the declared bounds: the statistics describe the clamped values; \
             widen the bounds if this is more than a few outliers",
            parts.join(", ")
        ))
    }
}

/// A checked statistics query with everything the parties and the aggregator must agree on:
/// the fixed-point scales, the per-record sensitivity and the noise.
#[derive(Debug, Clone)]
pub struct StatsPlan {
    query: StatsQuery,
    scales: Vec<f64>,
    sensitivity: Sensitivity,
    noise: DistributedNoise,
    honest: usize,
    parties: usize,
    coordinate_bound: u64,
}

/// One released statistic: [`Estimate`] (estimate, std. error, interval, confidence).
pub type Released = Estimate;

/// One histogram bin and its released count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bin {
    /// Lower edge.
    pub low: f64,
    /// Upper edge.
    pub high: f64,
    /// The noised count with its interval.
    pub count: Released,
}

/// The released statistics of one column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnRelease {
    /// The column.
    pub name: String,
    /// Its declared bounds.
    pub lower: f64,
    /// Its declared bounds.
    pub upper: f64,
    /// The noised sum of the clamped values.
    pub sum: Released,
    /// The mean of the clamped values (noised sum over noised count).
    pub mean: Released,
    /// The histogram, if bins were declared.
    pub histogram: Option<Vec<Bin>>,
}

/// Everything a statistics query releases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsRelease {
    /// What one unit of privacy is: [`UNIT_OF_PRIVACY`].
    pub unit_of_privacy: &'static str,
    /// The noised number of records.
    pub count: Released,
    /// Per column.
    pub columns: Vec<ColumnRelease>,
    /// Standard deviation of the total noise per coordinate, in integer units.
    pub noise_std: f64,
}

fn pow2_at_least(x: f64) -> f64 {
    let mut s = 1.0f64;
    while s < x && s < 1e300 {
        s *= 2.0;
    }
    while s / 2.0 >= x && s > 1e-300 {
        s /= 2.0;
    }
    s
}

impl StatsPlan {
    /// Plans `query` for `parties` parties of which at least `threshold` survive and up to
    /// `colluders` may collude with whoever sees the release (their noise does not count):
    /// the noise is calibrated for `threshold - colluders` honest shares.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming a bad column, bound, bin, `max_records`, epsilon,
    /// delta or party count; [`Error::RingOverflow`] (use [`Self::check_ring`]) is not checked
    /// here.
    pub fn new(
        query: StatsQuery,
        parties: usize,
        threshold: usize,
        colluders: usize,
    ) -> Result<Self> {
        query.check()?;
        if parties < 2 || threshold == 0 || threshold > parties {
            return Err(Error::invalid(
                "parties",
                parties,
                format!("need at least 2 parties and 1 <= threshold ({threshold}) <= parties"),
            ));
        }
        let honest = threshold.saturating_sub(colluders);
        if honest == 0 {
            return Err(Error::invalid(
                "colluders",
                colluders,
                format!(
                    "must be below the threshold ({threshold}): otherwise no noise share is honest"
                ),
            ));
        }
        let magnitudes: Vec<f64> = query.columns.iter().map(ColumnSpec::magnitude).collect();
        // Start at B s in [1, 2), at least 1 / accuracy.
        let mut scales: Vec<f64> = query
            .columns
            .iter()
            .zip(&magnitudes)
            .map(|(c, b)| {
                let floor = c.accuracy.map_or(0.0, |a| 1.0 / a);
                pow2_at_least((1.0 / b).max(floor))
            })
            .collect();
        let dim = 1
            + query.columns.len()
            + query
                .columns
                .iter()
                .map(ColumnSpec::bin_count)
                .sum::<usize>();
        let rounding_var = parties as f64 / 4.0;
        let mut attempt = 0;
        loop {
            let sensitivity = Self::sensitivity_of(&query, &scales, &magnitudes);
            let noise =
                DistributedNoise::calibrate(query.epsilon, query.delta, sensitivity, dim, honest)?;
            let sigma_min = noise.sigma_per_party() * (honest as f64).sqrt();
            attempt += 1;
            if rounding_var <= ROUNDING_SHARE * sigma_min * sigma_min || attempt >= 48 {
                let coordinate_bound =
                    Self::coordinate_bound_of(&query, &scales, &magnitudes, parties)?;
                return Ok(StatsPlan {
                    query,
                    scales,
                    sensitivity,
                    noise,
                    honest,
                    parties,
                    coordinate_bound,
                });
            }
            for s in &mut scales {
                *s *= 2.0;
            }
        }
    }

    fn sensitivity_of(query: &StatsQuery, scales: &[f64], magnitudes: &[f64]) -> Sensitivity {
        // One record: 1 in the count, ceil(B s) + 1 in each sum (the +1 is the randomized
        // rounding of the party's sum), 1 in one bin of each histogram.
        let mut l2sq = 1.0;
        let mut l1 = 1.0;
        for ((c, s), b) in query.columns.iter().zip(scales).zip(magnitudes) {
            let d = (b * s * (1.0 + 1e-12)).ceil() + 1.0;
            l2sq += d * d;
            l1 += d;
            if c.bins.is_some() {
                l2sq += 1.0;
                l1 += 1.0;
            }
        }
        Sensitivity {
            l2: l2sq.sqrt() * (1.0 + 1e-12),
            l1,
        }
    }

    fn coordinate_bound_of(
        query: &StatsQuery,
        scales: &[f64],
        magnitudes: &[f64],
        parties: usize,
    ) -> Result<u64> {
        let n = query.max_records as f64;
        let mut bound = n;
        for (s, b) in scales.iter().zip(magnitudes) {
            bound = bound.max((n * b * s * (1.0 + 1e-12)).ceil() + 1.0);
        }
        // Totals stay below 2^52 units, so they decode exactly through an f64.
        if bound * parties as f64 >= 2f64.powi(52) {
            return Err(Error::invalid(
                "max_records",
                query.max_records,
                format!(
                    "{parties} parties with {} records of values up to the bounds reach \
                     {:e} units, beyond the 2^52 that decode exactly: lower max_records or \
                     narrow the bounds",
                    query.max_records,
                    bound * parties as f64
                ),
            ));
        }
        Ok(bound as u64)
    }

    /// Checks that `parties` contributions plus the noise fit the ring `Z_2^W::BITS`.
    ///
    /// # Errors
    /// [`Error::RingOverflow`] with one message saying what to change (the widest column,
    /// `max_records`, epsilon, or the 64-bit ring).
    pub fn check_ring<W: RingWord>(&self) -> Result<()> {
        match check_no_wrap::<W>(
            self.parties,
            self.coordinate_bound,
            self.noise.sigma_per_party(),
            self.dim(),
        ) {
            Ok(_) => Ok(()),
            Err(Error::RingOverflow {
                parties,
                coordinate_bound,
                noise_tail,
                needed,
                ring_bits,
                ..
            }) => {
                let widest = self
                    .query
                    .columns
                    .iter()
                    .max_by(|a, b| a.magnitude().total_cmp(&b.magnitude()))
                    .map_or("?", |c| c.name.as_str());
                let inputs = (parties as u128).saturating_mul(u128::from(coordinate_bound));
                let hint = if inputs >= noise_tail {
                    format!(
                        "the records dominate: lower `max_records` ({}) or narrow the bounds of \
                         `{widest}`{}",
                        self.query.max_records,
                        if ring_bits < 64 {
                            ", or use the 64-bit ring"
                        } else {
                            ""
                        }
                    )
                } else {
                    format!(
                        "the noise dominates: raise `epsilon` ({}) or `delta`, or lower the number \
                         of colluders assumed{}",
                        self.query.epsilon,
                        if ring_bits < 64 {
                            ", or use the 64-bit ring"
                        } else {
                            ""
                        }
                    )
                };
                Err(Error::RingOverflow {
                    parties,
                    coordinate_bound,
                    noise_tail,
                    needed,
                    ring_bits,
                    hint,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The query.
    pub fn query(&self) -> &StatsQuery {
        &self.query
    }

    /// The length of a contribution.
    pub fn dim(&self) -> usize {
        1 + self.query.columns.len()
            + self
                .query
                .columns
                .iter()
                .map(ColumnSpec::bin_count)
                .sum::<usize>()
    }

    /// The fixed-point scale of each column's sum (powers of two).
    pub fn scales(&self) -> &[f64] {
        &self.scales
    }

    /// The change one record can make to the summed vector, in integer units.
    pub fn sensitivity(&self) -> Sensitivity {
        self.sensitivity
    }

    /// The largest magnitude of one coordinate of a contribution, in integer units.
    pub fn coordinate_bound(&self) -> u64 {
        self.coordinate_bound
    }

    /// The per-party noise (calibrated for [`Self::honest_shares`] honest shares).
    pub fn noise(&self) -> &DistributedNoise {
        &self.noise
    }

    /// The honest noise shares the calibration counts (`threshold - colluders`).
    pub fn honest_shares(&self) -> usize {
        self.honest
    }

    /// The privacy of the release: zCDP rho and epsilon at the query's delta, for one record,
    /// with `contributors` honest shares in the sum (at least [`Self::honest_shares`]).
    ///
    /// # Errors
    /// As [`DistributedNoise::release_privacy`].
    pub fn privacy(&self, contributors: usize) -> Result<crate::noise::ReleasePrivacy> {
        self.noise
            .release_privacy(self.sensitivity, self.dim(), contributors, self.query.delta)
    }

    /// The privacy loss to charge to a budget for this release: zCDP `rho` for one record,
    /// with [`Self::honest_shares`] honest shares (the guarantee whoever survives). Spend it
    /// through a [`sotto_dp::accounting::PrivacyBudget`] before running the query, so that
    /// the queries of a session cannot overspend:
    ///
    /// ```rust
    /// use sotto_dp::accounting::PrivacyBudget;
    /// use sotto_mpc::stats::{ColumnSpec, StatsPlan, StatsQuery};
    /// let query = StatsQuery {
    ///     columns: vec![ColumnSpec::new("age", 0.0, 100.0)?],
    ///     max_records: 1000,
    ///     epsilon: 1.0,
    ///     delta: 1e-6,
    /// };
    /// let plan = StatsPlan::new(query, 5, 3, 2)?;
    /// let mut budget = PrivacyBudget::zcdp_for(2.0, 1e-6)?;
    /// let mut queries = 0;
    /// let refused = loop {
    ///     match budget.spend(plan.privacy_loss()?) {
    ///         Ok(()) => queries += 1,
    ///         Err(e) => break e, // states the request and what remains
    ///     }
    ///     assert!(queries < 100);
    /// };
    /// assert!(matches!(refused, sotto_dp::Error::BudgetExceeded { .. }));
    /// assert!(queries >= 2); // zCDP: queries at epsilon 1 compose to less than 1 + 1
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Self::privacy`].
    pub fn privacy_loss(&self) -> Result<sotto_dp::PrivacyLoss> {
        let p = self.privacy(self.honest)?;
        Ok(sotto_dp::PrivacyLoss::zcdp(p.rho)?)
    }

    /// The standard deviation of the noise (per coordinate, integer units) in a sum of
    /// `survivors` parties' shares.
    pub fn noise_std(&self, survivors: usize) -> f64 {
        self.noise.sigma_per_party() * (survivors as f64).sqrt()
    }

    /// Sums a party's records into its contribution: each value clamped to its column's
    /// bounds, each sum scaled and randomly rounded.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if the records do not fit the query or exceed
    /// `max_records`.
    ///
    /// # Privacy
    /// The contribution is secret: send it only through the secure sum, after adding the
    /// noise share. The clamping counts are local information (for the party's warning).
    pub fn contribute<R: RngCore + CryptoRng + ?Sized>(
        &self,
        records: &Records,
        rng: &mut R,
    ) -> Result<Contribution> {
        let cols = self.query.columns.len();
        if records.width != cols {
            return Err(Error::invalid(
                "records",
                records.width,
                format!("values per row; the query has {cols} columns"),
            ));
        }
        let n = records.len() as u64;
        if n > self.query.max_records {
            return Err(Error::invalid(
                "records",
                n,
                format!(
                    "this party has {n} records but the query allows max_records = {} per party: \
                     raise max_records (it sizes the ring, not the privacy) or contribute a sample",
                    self.query.max_records
                ),
            ));
        }
        let mut sums = Zeroizing::new(vec![0f64; cols]);
        let mut bins = Zeroizing::new(vec![0i64; self.dim() - 1 - cols]);
        let mut clamped: Vec<(u64, u64)> = vec![(0, 0); cols];
        for row in records.iter() {
            let mut bin_base = 0usize;
            for (j, (c, v)) in self.query.columns.iter().zip(row).enumerate() {
                let x = v.clamp(c.lower, c.upper);
                if let Some(cl) = clamped.get_mut(j) {
                    if *v < c.lower {
                        cl.0 += 1;
                    } else if *v > c.upper {
                        cl.1 += 1;
                    }
                }
                if let Some(s) = sums.get_mut(j) {
                    *s += x;
                }
                if let Some(b) = c.bin_of(x)
                    && let Some(slot) = bins.get_mut(bin_base + b)
                {
                    *slot += 1;
                }
                bin_base += c.bin_count();
            }
        }
        let mut values = Zeroizing::new(Vec::with_capacity(self.dim()));
        values.push(n as i64);
        for (s, scale) in sums.iter().zip(&self.scales) {
            values.push(randomized_round(s * scale, rng));
        }
        values.extend_from_slice(&bins);
        let clamped = self
            .query
            .columns
            .iter()
            .zip(clamped)
            .filter(|(_, (b, a))| b + a > 0)
            .map(|(c, (below, above))| Clamped {
                column: c.name.clone(),
                below,
                above,
            })
            .collect();
        Ok(Contribution {
            values,
            clamped,
            records: n,
        })
    }

    /// Adds one party's noise share to its contribution (the in-memory path; over QUIC the
    /// secure sum adds it, see [`Self::noise_spec`]).
    pub fn add_noise_share<R: RngCore + CryptoRng + ?Sized>(
        &self,
        contribution: &[i64],
        rng: &mut R,
    ) -> Zeroizing<Vec<i64>> {
        let mut ring: Vec<u64> = contribution.iter().map(|v| u64::from_i64(*v)).collect();
        self.noise.add_share(&mut ring, rng);
        Zeroizing::new(crate::ring::to_signed(&ring))
    }

    /// The released statistics from the noised sum of the contributions (`sum`, integer
    /// units, as decoded by the secure sum) whose noise has standard deviation `noise_std`
    /// (integer units per coordinate; [`Self::noise_std`] of the survivors, or the secure
    /// sum's reported `noise_std` at scale 1).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `sum` has the wrong length, `noise_std` is not positive
    /// or `confidence` is not in (0, 1).
    pub fn release(&self, sum: &[i64], noise_std: f64, confidence: f64) -> Result<StatsRelease> {
        if sum.len() != self.dim() {
            return Err(Error::invalid(
                "sum",
                format!("length {}", sum.len()),
                format!("the query releases {} numbers", self.dim()),
            ));
        }
        sotto_dp::error::check_positive("noise_std", noise_std)?;
        sotto_dp::error::check_open_unit("confidence", confidence)?;
        let z = normal_quantile(0.5 + confidence / 2.0)?;
        let normal = |value: f64, sd: f64| Estimate {
            estimate: value,
            std_error: sd,
            ci_low: value - z * sd,
            ci_high: value + z * sd,
            confidence,
        };
        let at = |i: usize| sum.get(i).copied().unwrap_or(0) as f64;
        let count = normal(at(0), noise_std);
        // Each survivor's randomized rounding adds at most 1/4 unit^2 of variance.
        let rounding = self.parties as f64 / 4.0;
        let mut columns = Vec::with_capacity(self.query.columns.len());
        let mut bin_base = 1 + self.query.columns.len();
        for (j, (c, s)) in self.query.columns.iter().zip(&self.scales).enumerate() {
            let sum_sd = (noise_std * noise_std + rounding).sqrt() / s;
            let total = normal(at(1 + j) / s, sum_sd);
            let mean = mean_estimate(&total, &count, c, z, confidence);
            let histogram = c.bins.as_ref().map(|edges| {
                edges
                    .windows(2)
                    .enumerate()
                    .map(|(b, w)| Bin {
                        low: w.first().copied().unwrap_or(0.0),
                        high: w.get(1).copied().unwrap_or(0.0),
                        count: normal(at(bin_base + b), noise_std),
                    })
                    .collect()
            });
            bin_base += c.bin_count();
            columns.push(ColumnRelease {
                name: c.name.clone(),
                lower: c.lower,
                upper: c.upper,
                sum: total,
                mean,
                histogram,
            });
        }
        Ok(StatsRelease {
            unit_of_privacy: UNIT_OF_PRIVACY,
            count,
            columns,
            noise_std,
        })
    }

    /// The secure sum's noise for this plan: calibrated to one record.
    #[cfg(feature = "transport")]
    pub fn noise_spec(&self) -> crate::securesum::NoiseSpec {
        crate::securesum::NoiseSpec::Record {
            epsilon: self.query.epsilon,
            delta: self.query.delta,
            sensitivity: self.sensitivity,
        }
    }

    /// The clipping for the secure sum of contributions: an L-infinity bound at the
    /// coordinate bound (contributions never exceed it; the sum is exact at scale 1).
    pub fn clipping(&self) -> crate::encoding::Clipping {
        crate::encoding::Clipping::LInf {
            bound: self.coordinate_bound as f64,
        }
    }
}

/// The delta-method interval of `sum / count`, intersected with the column's bounds.
fn mean_estimate(
    sum: &Estimate,
    count: &Estimate,
    c: &ColumnSpec,
    z: f64,
    confidence: f64,
) -> Estimate {
    let whole = Estimate {
        estimate: (c.lower + c.upper) / 2.0,
        std_error: (c.upper - c.lower) / 2.0,
        ci_low: c.lower,
        ci_high: c.upper,
        confidence,
    };
    let n = count.estimate;
    if n <= z * count.std_error || n <= 0.0 {
        return whole;
    }
    let m = sum.estimate / n;
    let sd = (sum.std_error * sum.std_error + m * m * count.std_error * count.std_error).sqrt() / n;
    let (lo, hi) = ((m - z * sd).max(c.lower), (m + z * sd).min(c.upper));
    if lo > hi {
        return whole;
    }
    Estimate {
        estimate: m.clamp(lo, hi),
        std_error: sd,
        ci_low: lo,
        ci_high: hi,
        confidence,
    }
}

/// `x` rounded to `floor(x)` or `floor(x) + 1`, up with probability `x - floor(x)` (unbiased).
fn randomized_round<R: RngCore + CryptoRng + ?Sized>(x: f64, rng: &mut R) -> i64 {
    let f = x.floor();
    let frac = x - f;
    // 53 random bits: P(u < frac) = frac up to 2^-53.
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let up = if u < frac { 1.0 } else { 0.0 };
    (f + up) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_dp::rng::seeded_rng;

    fn query() -> StatsQuery {
        StatsQuery {
            columns: vec![
                ColumnSpec::new("age", 0.0, 100.0)
                    .unwrap()
                    .with_bins(vec![0.0, 30.0, 60.0, 100.0])
                    .unwrap(),
                ColumnSpec::new("income", 0.0, 200_000.0)
                    .unwrap()
                    .with_bins(vec![0.0, 50_000.0, 100_000.0, 200_000.0])
                    .unwrap(),
            ],
            max_records: 500,
            epsilon: 1.0,
            delta: 1e-6,
        }
    }

    /// The data of party `p` in run `seed`: 200 records, deterministic.
    fn rows(p: u64, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = seeded_rng(seed * 100 + p);
        (0..200)
            .map(|_| {
                let age = (rng.next_u32() % 90) as f64;
                let income = (rng.next_u32() % 150_000) as f64 + 0.25;
                vec![age, income]
            })
            .collect()
    }

    #[test]
    fn bad_queries_are_named() {
        assert!(ColumnSpec::new("x", 1.0, 1.0).is_err());
        assert!(ColumnSpec::new("x", 0.0, f64::NAN).is_err());
        assert!(
            ColumnSpec::new("x", 0.0, 1.0)
                .unwrap()
                .with_bins(vec![0.0, 0.0])
                .is_err()
        );
        let mut q = query();
        q.max_records = 0;
        assert!(
            StatsPlan::new(q, 5, 3, 2)
                .unwrap_err()
                .to_string()
                .contains("max_records")
        );
        let mut q = query();
        q.columns.push(q.columns[0].clone());
        assert!(
            StatsPlan::new(q, 5, 3, 2)
                .unwrap_err()
                .to_string()
                .contains("once")
        );
        assert!(
            StatsPlan::new(query(), 5, 3, 3)
                .unwrap_err()
                .to_string()
                .contains("colluders")
        );
    }

    #[test]
    fn contributions_clamp_count_and_bin_each_record() {
        let plan = StatsPlan::new(query(), 5, 3, 2).unwrap();
        let records = Records::new(
            plan.query(),
            vec![
                vec![-5.0, 10.0],
                vec![40.0, 250_000.0],
                vec![70.0, 60_000.0],
            ],
        )
        .unwrap();
        let c = plan.contribute(&records, &mut seeded_rng(1)).unwrap();
        let v = c.values();
        assert_eq!(v[0], 3);
        let s = plan.scales();
        assert!((v[1] as f64 / s[0] - 110.0).abs() <= 1.0 / s[0]);
        assert!((v[2] as f64 / s[1] - 260_010.0).abs() <= 1.0 / s[1]);
        assert_eq!(&v[3..6], &[1, 1, 1]);
        assert_eq!(&v[6..9], &[1, 1, 1]);
        assert_eq!(c.clamped().len(), 2);
        let w = c.clamp_warning().unwrap();
        assert!(
            w.contains("1 value(s) of `age`") && w.contains("1 above"),
            "{w}"
        );
        assert_eq!(format!("{c:?}"), "Contribution([redacted], 3 records)");
        // Too many records are refused with what to change.
        let mut q = query();
        q.max_records = 2;
        let small = StatsPlan::new(q, 5, 3, 2).unwrap();
        let err = small
            .contribute(&records, &mut seeded_rng(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_records = 2"), "{err}");
    }

    #[test]
    fn the_scale_keeps_rounding_below_one_percent_of_the_noise() {
        let plan = StatsPlan::new(query(), 5, 3, 2).unwrap();
        let sd = plan.noise_std(plan.honest_shares());
        assert!(5.0 / 4.0 <= 0.01 * sd * sd, "sd {sd}");
        // The release meets the target for one record.
        let p = plan.privacy(plan.honest_shares()).unwrap();
        assert!(p.epsilon <= 1.0 && p.epsilon > 0.9, "{}", p.epsilon);
        plan.check_ring::<u64>().unwrap();
    }

    #[test]
    fn ring_overflow_says_what_to_change() {
        let mut q = query();
        q.max_records = 1 << 30;
        let plan = StatsPlan::new(q, 5, 3, 2).unwrap();
        let err = plan.check_ring::<u32>().unwrap_err().to_string();
        assert!(
            err.contains("max_records") && err.contains("64-bit"),
            "{err}"
        );
    }

    fn one_run(plan: &StatsPlan, seed: u64) -> (StatsRelease, Vec<Vec<f64>>) {
        let mut rng = seeded_rng(seed);
        let mut total = vec![0i64; plan.dim()];
        let mut all = Vec::new();
        for p in 0..5 {
            let r = rows(p, seed);
            all.extend(r.iter().cloned());
            let records = Records::new(plan.query(), r).unwrap();
            let c = plan.contribute(&records, &mut rng).unwrap();
            let noised = plan.add_noise_share(c.values(), &mut rng);
            for (t, v) in total.iter_mut().zip(noised.iter()) {
                *t += v;
            }
        }
        (plan.release(&total, plan.noise_std(5), 0.95).unwrap(), all)
    }

    /// 5 parties, 200 seeded runs: the 95% intervals of the count, both means and the first
    /// histogram bin of each column cover the truth in about 95% of runs.
    #[test]
    fn intervals_cover_the_truth_in_about_95_percent_of_runs() {
        let plan = StatsPlan::new(query(), 5, 3, 2).unwrap();
        let runs = 200;
        let mut covered = [0u32; 5];
        for seed in 0..runs {
            let (r, all) = one_run(&plan, seed);
            let n = all.len() as f64;
            let mean = |j: usize| all.iter().map(|row| row[j]).sum::<f64>() / n;
            let first_bin =
                |j: usize, edge: f64| all.iter().filter(|row| row[j] < edge).count() as f64;
            let truths = [
                (&r.count, n),
                (&r.columns[0].mean, mean(0)),
                (&r.columns[1].mean, mean(1)),
                (
                    &r.columns[0].histogram.as_ref().unwrap()[0].count,
                    first_bin(0, 30.0),
                ),
                (
                    &r.columns[1].histogram.as_ref().unwrap()[0].count,
                    first_bin(1, 50_000.0),
                ),
            ];
            for (k, (e, t)) in truths.iter().enumerate() {
                assert!(e.ci_low <= e.estimate && e.estimate <= e.ci_high);
                if e.ci_low <= *t && *t <= e.ci_high {
                    covered[k] += 1;
                }
            }
        }
        eprintln!(
            "covered of {runs} (count, mean age, mean income, bin age, bin income): {covered:?}"
        );
        // Binomial(200, 0.95): sd 3.1 runs; accept [178, 200] (about -5.5 sd .. all).
        for (k, c) in covered.iter().enumerate() {
            assert!(
                (178..=200).contains(c),
                "statistic {k}: {c} of {runs} covered"
            );
        }
    }
}
