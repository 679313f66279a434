//! Dangerous helpers for benchmarks and protocol analysis. Never use them in a deployment.
//!
//! # Security
//! Each function here breaks an invariant the protocol relies on; they exist so benchmarks can
//! time one round in isolation without re-running the whole protocol.

use super::{SecAggClient, ServerMessage};
use crate::error::Result;
use crate::ring::RingWord;

/// A copy of `client`, its secrets included.
///
/// # Security
/// If two copies both send a masked input for different inputs, the difference of the two
/// masked vectors is the difference of the inputs: a copy must never reach a real aggregator.
pub fn duplicate_client<W: RingWord>(client: &SecAggClient<W>) -> SecAggClient<W> {
    client.duplicate()
}

/// Handles the round-1 shares but skips computing and sending the masked input, so a
/// benchmark can feed the aggregator vectors of its own.
///
/// # Errors
/// As [`SecAggClient::handle_message`].
///
/// # Security
/// The party behaves as if it had masked an input it never sent; use only in benchmarks.
pub fn accept_shares_without_masking<W: RingWord>(
    client: &mut SecAggClient<W>,
    msg: ServerMessage,
) -> Result<()> {
    client.accept_shares_unmasked(msg)
}
