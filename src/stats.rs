//! Reading a party's records for [`sotto_mpc::stats`] from a CSV file.
//!
//! ```
//! use sotto::mpc::stats::{ColumnSpec, StatsQuery};
//! let query = StatsQuery {
//!     columns: vec![ColumnSpec::new("age", 0.0, 100.0)?],
//!     max_records: 100,
//!     epsilon: 1.0,
//!     delta: 1e-6,
//! };
//! let csv = "name,age\n\"Doe, Jane\",34\n\"Roe, Rick\", 51 \n";
//! let records = sotto::stats::read_csv(csv.as_bytes(), &query, "example.csv")?;
//! assert_eq!(records.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::Read;

use sotto_mpc::stats::{Records, StatsQuery};

/// A CSV file that cannot be read as the query's records; the message names the file, the
/// line and the column, and says what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CsvError(pub String);

/// Reads records for `query` from CSV text with a header row: the query's columns, found by
/// name (other columns are ignored; RFC 4180 quoting; whitespace around fields trimmed).
/// `origin` names the file in errors.
///
/// # Errors
/// [`CsvError`] for a missing column, a value that is not a finite number (by line and
/// column; the value itself is not shown), a ragged row, or no records.
pub fn read_csv<R: Read>(reader: R, query: &StatsQuery, origin: &str) -> Result<Records, CsvError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers = reader
        .headers()
        .map_err(|e| CsvError(format!("{origin}: cannot read the header row: {e}")))?
        .clone();
    let mut index = Vec::with_capacity(query.columns.len());
    for c in &query.columns {
        let i = headers.iter().position(|h| h == c.name).ok_or_else(|| {
            let found: Vec<&str> = headers.iter().take(20).collect();
            CsvError(format!(
                "{origin}: no column named `{}` in the header row (found: {})",
                c.name,
                found.join(", ")
            ))
        })?;
        index.push(i);
    }
    let mut rows = Vec::new();
    for (r, record) in reader.records().enumerate() {
        // Line numbers count the header as line 1.
        let line = r + 2;
        let record = record.map_err(|e| CsvError(format!("{origin} line {line}: {e}")))?;
        let mut row = Vec::with_capacity(index.len());
        for (c, i) in query.columns.iter().zip(&index) {
            let field = record.get(*i).unwrap_or("");
            match field.parse::<f64>() {
                Ok(v) if v.is_finite() => row.push(v),
                _ => {
                    return Err(CsvError(format!(
                        "{origin} line {line}: column `{}` is not a finite number (found {} \
                         characters); fix or remove the row",
                        c.name,
                        field.chars().count()
                    )));
                }
            }
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(CsvError(format!(
            "{origin}: no records below the header row"
        )));
    }
    Records::new(query, rows).map_err(|e| CsvError(format!("{origin}: {e}")))
}
