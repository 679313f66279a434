//! The error type of `sotto-dp` and the parameter checks every module shares.

use std::fmt::Display;

/// Everything that can go wrong in `sotto-dp`.
///
/// Errors never contain secret values (noise, unnoised inputs); they name the parameter or the
/// budget that is at fault and say how to fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A caller-supplied parameter is NaN, infinite, out of range or inconsistent.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Name of the parameter, as the caller knows it (e.g. `epsilon`).
        name: &'static str,
        /// The offending value, formatted.
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A release was refused because it would overspend the privacy budget. Nothing was charged.
    #[error(
        "privacy budget exceeded: the release needs {requested}, but only {remaining} remains; nothing was charged"
    )]
    BudgetExceeded {
        /// The privacy loss the refused release would have spent.
        requested: String,
        /// What is left of the budget.
        remaining: String,
    },
    /// An exact computation would overflow its integer representation.
    #[error("arithmetic overflow in {context}: {hint}")]
    Overflow {
        /// Where the overflow happened.
        context: &'static str,
        /// Which parameter to change to avoid it.
        hint: String,
    },
    /// A search (e.g. for a noise multiplier) found no value that meets the target.
    #[error("no solution: {0}")]
    NoSolution(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds an [`Error::InvalidParameter`].
    pub fn invalid(name: &'static str, value: impl Display, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Checks that `value` is finite (not NaN, not infinite).
///
/// # Errors
/// [`Error::InvalidParameter`] naming `name`.
pub fn check_finite(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::invalid(name, value, "must be a finite number"))
    }
}

/// Checks that `value` is finite and strictly positive.
///
/// # Errors
/// [`Error::InvalidParameter`] naming `name`.
pub fn check_positive(name: &'static str, value: f64) -> Result<f64> {
    check_finite(name, value)?;
    if value > 0.0 {
        Ok(value)
    } else {
        Err(Error::invalid(name, value, "must be greater than zero"))
    }
}

/// Checks that `value` is finite and at least zero.
///
/// # Errors
/// [`Error::InvalidParameter`] naming `name`.
pub fn check_non_negative(name: &'static str, value: f64) -> Result<f64> {
    check_finite(name, value)?;
    if value >= 0.0 {
        Ok(value)
    } else {
        Err(Error::invalid(name, value, "must not be negative"))
    }
}

/// Checks that `value` lies in the open interval (0, 1), as a `delta` or a sampling rate must.
///
/// # Errors
/// [`Error::InvalidParameter`] naming `name`.
pub fn check_open_unit(name: &'static str, value: f64) -> Result<f64> {
    check_finite(name, value)?;
    if value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(Error::invalid(
            name,
            value,
            "must lie strictly between 0 and 1",
        ))
    }
}

/// Checks that `value` lies in the closed interval [0, 1], as a probability must.
///
/// # Errors
/// [`Error::InvalidParameter`] naming `name`.
pub fn check_probability(name: &'static str, value: f64) -> Result<f64> {
    check_finite(name, value)?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(name, value, "must lie between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_reject_nan_infinite_and_out_of_range() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(check_finite("x", bad).is_err());
            assert!(check_positive("x", bad).is_err());
            assert!(check_open_unit("x", bad).is_err());
        }
        assert!(check_positive("x", 0.0).is_err());
        assert!(check_positive("x", -1.0).is_err());
        assert!(check_non_negative("x", -1e-300).is_err());
        assert!(check_open_unit("delta", 1.0).is_err());
        assert!(check_open_unit("delta", 0.0).is_err());
        assert!(check_probability("p", 1.5).is_err());
        assert_eq!(check_probability("p", 1.0), Ok(1.0));
        let msg = check_positive("epsilon", -2.0).unwrap_err().to_string();
        assert!(msg.contains("epsilon") && msg.contains("-2"), "{msg}");
    }
}
