//! The random number generators sotto uses: ChaCha20, seeded from the operating system.
//!
//! Every sampler in this crate takes `R: RngCore + CryptoRng`. Use [`os_rng`] in production
//! and [`seeded_rng`] only in tests and reproducible simulations.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub use rand_chacha::ChaCha20Rng as DefaultRng;
pub use rand_core::{CryptoRng, RngCore};

use crate::{Error, Result};

/// A ChaCha20 CSPRNG seeded from the operating system's entropy source.
///
/// # Errors
/// [`Error::InvalidParameter`] naming `os_rng` when the operating system cannot supply entropy.
pub fn os_rng() -> Result<ChaCha20Rng> {
    ChaCha20Rng::try_from_os_rng().map_err(|e| {
        Error::invalid(
            "os_rng",
            "getrandom",
            format!("the OS entropy source failed: {e}"),
        )
    })
}

/// A ChaCha20 generator with a fixed seed, for tests and reproducible simulations only.
///
/// # Security
/// The output is predictable from the seed: never use it to protect real data.
pub fn seeded_rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}
