//! The error type of `sotto-training`.

/// Everything that can go wrong in `sotto-training`.
///
/// Errors never contain training data, gradients or noise; they name the parameter, the file
/// position or the tensor operation at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A caller-supplied parameter is NaN, infinite, out of range or inconsistent.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Name of the parameter, as the caller knows it (e.g. `learning_rate`).
        name: &'static str,
        /// The offending value, formatted.
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Input data (a CSV file, a data set, a batch) is malformed.
    #[error("invalid data: {0}")]
    Data(String),
    /// A tensor operation failed (shape mismatch, device error).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A privacy primitive (sampler, accountant) rejected its parameters.
    #[error(transparent)]
    Dp(#[from] sotto_dp::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds an [`Error::InvalidParameter`].
    pub fn invalid(
        name: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidParameter {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
