//! Mask expansion: a 32-byte seed expanded with ChaCha20 straight into ring words, added to or
//! subtracted from a vector in place.
//!
//! The keystream comes from [`rand_chacha::ChaCha20Core`] four blocks (256 bytes) at a time and
//! is folded into the target words without an intermediate byte buffer, so expansion runs at
//! the raw keystream rate (see `benches/secagg.rs`).

use rand_chacha::ChaCha20Core;
use rand_core::SeedableRng;
use rand_core::block::BlockRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::ring::RingWord;

/// A 32-byte PRG seed. Zeroized on drop, printed as `[redacted]`.
///
/// # Security
/// Whoever holds the seed can recompute the mask; seeds only leave a party encrypted (shares)
/// or, for the peer-to-peer protocol, over the authenticated transport to the one peer that
/// owns that share.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct Seed(pub(crate) [u8; 32]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed([redacted])")
    }
}

impl Seed {
    /// A seed from 32 bytes (the caller must have drawn them from a CSPRNG or a KDF).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Seed(bytes)
    }

    /// A fresh random seed.
    pub fn random<R: rand_core::RngCore + rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        Seed(b)
    }

    /// The seed's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn apply<W: RingWord>(seed: &Seed, dst: &mut [W], negate: bool) {
    let mut core = ChaCha20Core::from_seed(seed.0);
    let mut buf = <ChaCha20Core as BlockRngCore>::Results::default();
    let per_block = 64 / W::KEYSTREAM_WORDS;
    for chunk in dst.chunks_mut(per_block) {
        core.generate(&mut buf);
        let ks = buf.as_ref();
        let used = ks.get(..chunk.len() * W::KEYSTREAM_WORDS).unwrap_or(ks);
        W::apply_keystream(chunk, used, negate);
    }
    buf.as_mut().zeroize();
}

/// `dst += PRG(seed)` in the ring.
pub fn add_mask<W: RingWord>(seed: &Seed, dst: &mut [W]) {
    apply(seed, dst, false);
}

/// `dst -= PRG(seed)` in the ring.
pub fn sub_mask<W: RingWord>(seed: &Seed, dst: &mut [W]) {
    apply(seed, dst, true);
}

/// `dst += PRG(seed)` if `negate` is false, `dst -= PRG(seed)` otherwise.
pub fn apply_mask<W: RingWord>(seed: &Seed, dst: &mut [W], negate: bool) {
    apply(seed, dst, negate);
}

/// `PRG(seed)` as `len` ring words.
pub fn expand<W: RingWord>(seed: &Seed, len: usize) -> Vec<W> {
    let mut v = vec![W::default(); len];
    apply(seed, &mut v, false);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_then_sub_cancels_and_prefixes_agree() {
        let seed = Seed::from_bytes([7; 32]);
        let mut v: Vec<u64> = (0..1000).collect();
        add_mask(&seed, &mut v);
        assert_ne!(v, (0..1000).collect::<Vec<u64>>());
        sub_mask(&seed, &mut v);
        assert_eq!(v, (0..1000).collect::<Vec<u64>>());
        // A shorter expansion is a prefix of a longer one.
        let a: Vec<u32> = expand(&seed, 100);
        let b: Vec<u32> = expand(&seed, 1000);
        assert_eq!(a[..], b[..100]);
        // Different seeds differ.
        let c: Vec<u32> = expand(&Seed::from_bytes([8; 32]), 100);
        assert_ne!(a, c);
        assert_eq!(format!("{seed:?}"), "Seed([redacted])");
    }

    #[test]
    fn u32_words_are_uniform() {
        // Chi-square on the top 4 bits of 64k words, 15 degrees of freedom; the critical value
        // at significance 0.001 is 37.7.
        let v: Vec<u32> = expand(&Seed::from_bytes([1; 32]), 1 << 16);
        let mut counts = [0f64; 16];
        for w in &v {
            counts[(w >> 28) as usize] += 1.0;
        }
        let e = v.len() as f64 / 16.0;
        let chi2: f64 = counts.iter().map(|c| (c - e) * (c - e) / e).sum();
        assert!(chi2 < 37.7, "{chi2}");
    }
}
