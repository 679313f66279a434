//! Differentially private mechanisms. Each one reports the [`crate::PrivacyLoss`] it spends.
//!
//! (Filled in on branch `dp-mechanisms`.)
