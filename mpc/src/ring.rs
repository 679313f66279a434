//! Arithmetic in the ring Z_2^k with k = 32 or 64: wrapping `u32` / `u64` words.
//!
//! A signed integer `x` is encoded as `x mod 2^k`; a sum is decoded by the centered lift
//! (two's complement), which is exact as long as the true sum has magnitude below 2^(k-1)
//! (see [`crate::encoding::check_no_wrap`]).

use std::fmt::Debug;
use std::hash::Hash;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

mod sealed {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

/// A word of the ring Z_2^k: `u32` (k = 32) or `u64` (k = 64). Sealed.
pub trait RingWord:
    sealed::Sealed + Copy + Default + Eq + Ord + Hash + Debug + Send + Sync + Zeroize + 'static
{
    /// k, the number of bits.
    const BITS: u32;
    /// Bytes per word on the wire (little endian).
    const BYTES: usize;
    /// Keystream `u32` words consumed per ring word.
    const KEYSTREAM_WORDS: usize;
    /// Wrapping addition.
    fn add(self, other: Self) -> Self;
    /// Wrapping subtraction.
    fn sub(self, other: Self) -> Self;
    /// Wrapping negation.
    fn neg(self) -> Self;
    /// `x mod 2^k`.
    fn from_i64(x: i64) -> Self;
    /// The centered lift: the integer in `[-2^(k-1), 2^(k-1))` congruent to `self`.
    fn to_i64(self) -> i64;
    /// Builds a word from keystream words (`KEYSTREAM_WORDS` of them, little endian).
    fn from_keystream(words: &[u32]) -> Self;
    /// Writes the little-endian bytes into `out` (`BYTES` long).
    fn write_le(self, out: &mut [u8]);
    /// Reads a word from `BYTES` little-endian bytes (missing bytes read as zero).
    fn read_le(bytes: &[u8]) -> Self;
    /// Adds (or subtracts, if `negate`) keystream words into `dst`, word by word; `ks` holds
    /// `dst.len() * KEYSTREAM_WORDS` words.
    fn apply_keystream(dst: &mut [Self], ks: &[u32], negate: bool);
}

/// The `RingWord` methods that read the same for every word type: wrapping arithmetic.
macro_rules! wrapping_ring_ops {
    () => {
        #[inline]
        fn add(self, o: Self) -> Self {
            self.wrapping_add(o)
        }
        #[inline]
        fn sub(self, o: Self) -> Self {
            self.wrapping_sub(o)
        }
        #[inline]
        fn neg(self) -> Self {
            self.wrapping_neg()
        }
    };
}

/// The `RingWord` methods that read the same for every word type: little-endian bytes
/// (`read_le` treats missing bytes as zero).
macro_rules! le_bytes_ops {
    () => {
        #[inline]
        fn write_le(self, out: &mut [u8]) {
            for (o, b) in out.iter_mut().zip(self.to_le_bytes()) {
                *o = b;
            }
        }
        #[inline]
        fn read_le(bytes: &[u8]) -> Self {
            let mut b = [0u8; Self::BYTES];
            for (o, i) in b.iter_mut().zip(bytes) {
                *o = *i;
            }
            Self::from_le_bytes(b)
        }
    };
}

impl RingWord for u32 {
    const BITS: u32 = 32;
    const BYTES: usize = 4;
    const KEYSTREAM_WORDS: usize = 1;
    wrapping_ring_ops!();
    #[inline]
    fn from_i64(x: i64) -> Self {
        x as u32
    }
    #[inline]
    fn to_i64(self) -> i64 {
        i64::from(self as i32)
    }
    #[inline]
    fn from_keystream(words: &[u32]) -> Self {
        words.first().copied().unwrap_or(0)
    }
    le_bytes_ops!();
    #[inline]
    fn apply_keystream(dst: &mut [Self], ks: &[u32], negate: bool) {
        if negate {
            for (d, k) in dst.iter_mut().zip(ks) {
                *d = d.wrapping_sub(*k);
            }
        } else {
            for (d, k) in dst.iter_mut().zip(ks) {
                *d = d.wrapping_add(*k);
            }
        }
    }
}

impl RingWord for u64 {
    const BITS: u32 = 64;
    const BYTES: usize = 8;
    const KEYSTREAM_WORDS: usize = 2;
    wrapping_ring_ops!();
    #[inline]
    fn from_i64(x: i64) -> Self {
        x as u64
    }
    #[inline]
    fn to_i64(self) -> i64 {
        self as i64
    }
    #[inline]
    fn from_keystream(words: &[u32]) -> Self {
        let lo = u64::from(words.first().copied().unwrap_or(0));
        let hi = u64::from(words.get(1).copied().unwrap_or(0));
        lo | (hi << 32)
    }
    le_bytes_ops!();
    #[inline]
    fn apply_keystream(dst: &mut [Self], ks: &[u32], negate: bool) {
        // Fast path for a full ChaCha buffer (4 blocks = 32 words): fixed sizes vectorize.
        if let (Ok(d), Ok(k)) = (
            <&mut [u64; 32]>::try_from(&mut *dst),
            <&[u32; 64]>::try_from(ks),
        ) {
            if negate {
                for (i, a) in d.iter_mut().enumerate() {
                    let w = u64::from(k[2 * i]) | (u64::from(k[2 * i + 1]) << 32);
                    *a = a.wrapping_sub(w);
                }
            } else {
                for (i, a) in d.iter_mut().enumerate() {
                    let w = u64::from(k[2 * i]) | (u64::from(k[2 * i + 1]) << 32);
                    *a = a.wrapping_add(w);
                }
            }
            return;
        }
        let pairs = ks.chunks_exact(2);
        if negate {
            for (d, k) in dst.iter_mut().zip(pairs) {
                let w = u64::from(k[0]) | (u64::from(k[1]) << 32);
                *d = d.wrapping_sub(w);
            }
        } else {
            for (d, k) in dst.iter_mut().zip(pairs) {
                let w = u64::from(k[0]) | (u64::from(k[1]) << 32);
                *d = d.wrapping_add(w);
            }
        }
    }
}

/// `a += b` in the ring, element-wise (over the common length).
pub fn add_assign<W: RingWord>(a: &mut [W], b: &[W]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.add(*y);
    }
}

/// `a -= b` in the ring, element-wise (over the common length).
pub fn sub_assign<W: RingWord>(a: &mut [W], b: &[W]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.sub(*y);
    }
}

/// Encodes signed integers into the ring (`x mod 2^k`).
pub fn from_signed<W: RingWord>(xs: &[i64]) -> Vec<W> {
    xs.iter().map(|&x| W::from_i64(x)).collect()
}

/// Decodes ring words by the centered lift (exact when every true value has magnitude below
/// 2^(k-1)).
pub fn to_signed<W: RingWord>(xs: &[W]) -> Vec<i64> {
    xs.iter().map(|&x| x.to_i64()).collect()
}

/// A vector of ring words that serializes as one byte string (`len * W::BYTES` little-endian
/// bytes), so that the wire size is the raw ring-encoded size plus a length prefix.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RingVector<W: RingWord>(pub Vec<W>);

impl<W: RingWord> Debug for RingVector<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Masked vectors look random, but they are still not printed: the length is enough.
        write!(f, "RingVector<u{}>(len {})", W::BITS, self.0.len())
    }
}

impl<W: RingWord> RingVector<W> {
    /// Number of words.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether it holds no word.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The words.
    pub fn as_slice(&self) -> &[W] {
        &self.0
    }
}

impl<W: RingWord> Serialize for RingVector<W> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = vec![0u8; self.0.len() * W::BYTES];
        for (chunk, w) in bytes.chunks_exact_mut(W::BYTES).zip(&self.0) {
            w.write_le(chunk);
        }
        serializer.serialize_bytes(&bytes)
    }
}

struct RingVectorVisitor<W>(std::marker::PhantomData<W>);

impl<'de, W: RingWord> Visitor<'de> for RingVectorVisitor<W> {
    type Value = RingVector<W>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a byte string of {}-byte ring words", W::BYTES)
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        if !v.len().is_multiple_of(W::BYTES) {
            return Err(E::custom(format!(
                "ring vector of {} bytes is not a multiple of {}",
                v.len(),
                W::BYTES
            )));
        }
        Ok(RingVector(
            v.chunks_exact(W::BYTES).map(W::read_le).collect(),
        ))
    }
    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        self.visit_bytes(v)
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        self.visit_bytes(&v)
    }
}

impl<'de, W: RingWord> Deserialize<'de> for RingVector<W> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(RingVectorVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn centered_lift_round_trips() {
        for x in [0i64, 1, -1, i64::from(i32::MAX), i64::from(i32::MIN), 12686] {
            assert_eq!(u32::from_i64(x).to_i64(), x);
            assert_eq!(u64::from_i64(x).to_i64(), x);
        }
        assert_eq!(u64::from_i64(i64::MIN).to_i64(), i64::MIN);
        assert_eq!(u32::from_i64(1 << 31).to_i64(), -(1 << 31));
    }

    #[test]
    fn keystream_u64_is_little_endian_pairs() {
        let mut v = [0u64; 2];
        u64::apply_keystream(&mut v, &[1, 2, 3, 4], false);
        assert_eq!(v, [1 | (2 << 32), 3 | (4 << 32)]);
        u64::apply_keystream(&mut v, &[1, 2, 3, 4], true);
        assert_eq!(v, [0, 0]);
    }

    proptest! {
        #[test]
        fn signed_sums_survive_the_ring(xs in proptest::collection::vec(-1_000_000i64..1_000_000, 0..50)) {
            let total: i64 = xs.iter().sum();
            let mut acc = [0u32];
            for x in &xs {
                add_assign(&mut acc, &[u32::from_i64(*x)]);
            }
            prop_assert_eq!(acc[0].to_i64(), total);
        }

        #[test]
        fn ring_vector_bytes_round_trip(xs in proptest::collection::vec(any::<u64>(), 0..40)) {
            let v = RingVector(xs.clone());
            let bytes = postcard::to_allocvec(&v).unwrap();
            prop_assert!(bytes.len() <= xs.len() * 8 + 2);
            let back: RingVector<u64> = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(back.0, xs);
        }
    }
}
