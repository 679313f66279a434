//! # sotto-training: DP training on candle
//!
//! (Filled in on branch `training`.)
#![forbid(unsafe_code)]
