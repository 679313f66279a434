//! Sampler throughput (filled in on branch `dp-sampling`).
#![allow(missing_docs)]
fn main() {}
