//! Estimators with error bars for noisy releases.
//!
//! (Filled in on branch `dp-mechanisms`.)
