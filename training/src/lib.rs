//! # sotto-training: differentially private training on candle
//!
//! Per-sample gradient clipping at (nearly) the cost of ordinary training, DP-SGD and DP-Adam
//! with exact discrete Gaussian noise, Poisson sampling with matching accounting, and a
//! membership-inference audit.
//!
//! * [`data`]: the vendored digits data set, a CSV loader, a generated sequence task, splits
//!   and partitioning across parties.
//! * [`model`]: logistic regression, an MLP, a small transformer-encoder classifier.
//! * [`bert`]: BERT-style encoders loaded from local Hugging Face folders, and text CSVs.
//! * [`clipping`]: per-sample clipping in one backward pass (book-keeping: probes on layer
//!   outputs, ghost norms or materialized per-sample gradients, one matmul per layer for the
//!   clipped sum); standard and automatic clipping; DP-BiTFiT.
//! * [`noise`]: exact discrete Gaussian noise on a power-of-two grid.
//! * [`optim`]: SGD (with momentum) and Adam applied to a (noised) gradient sum.
//! * [`artifact`]: trained models on disk (safetensors weights and a JSON description).
//! * [`central`]: a complete central DP training run with accounting and audit.
//! * [`checkpoint`]: checkpoints of a central run, resumed with the accounting intact.
//! * [`audit`]: the loss-threshold membership-inference attack.
//! * [`federated`]: multi-party training over QUIC: per-round secure aggregation of the
//!   parties' clipped sums with distributed noise, dropout tolerance, accounting and metrics.
//!
//! Multi-party training uses the gradient-level pieces separately: each party calls
//! [`model::Model::clipped_gradient_sum`]; the aggregate is noised (distributed noise in secure
//! aggregation, or [`noise::GradientNoise`]); every party applies it with
//! [`optim::Optimizer::apply_sum`].
#![forbid(unsafe_code)]

pub mod artifact;
pub mod audit;
pub mod bert;
pub mod central;
pub mod checkpoint;
pub mod clipping;
pub mod data;
mod error;
pub mod federated;
pub mod model;
pub mod nn;
pub mod noise;
pub mod optim;

pub use error::{Error, Result};
