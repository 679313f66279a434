//! The exact sampling core: a buffered bit source and the integer algorithms of Canonne,
//! Kamath and Steinke (2020) on top of it.
//!
//! Everything here works on integers only and is infallible once the caller has validated
//! its parameters (the public wrappers in [`super`] do that). Random bits are consumed
//! one at a time from a buffered `u64` (a Bernoulli trial with a large denominator costs about
//! two bits), or as whole 32-bit words where one multiply beats a data-dependent loop
//! (uniform integers below 2^32, and Bernoulli trials with such denominators).
//!
//! Timing: none of this is constant-time; the work done depends on the values drawn (see
//! `docs/privacy/sampling.md`, "Known weaknesses").

use rand_core::RngCore;

/// A source of uniform random bits, buffered from `RngCore::next_u64`.
///
/// Bits left in the buffer when the source is dropped are discarded (never reused), so every
/// bit handed out is fresh and independent of all others.
pub(crate) struct Bits<'a, R: RngCore + ?Sized> {
    rng: &'a mut R,
    word: u64,
    left: u32,
}

impl<'a, R: RngCore + ?Sized> Bits<'a, R> {
    /// A bit source drawing from `rng`.
    #[inline]
    pub(crate) fn new(rng: &'a mut R) -> Self {
        Bits {
            rng,
            word: 0,
            left: 0,
        }
    }

    /// One uniform 64-bit word straight from the generator (the bit buffer is untouched).
    #[inline(always)]
    pub(crate) fn word(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// One uniform 32-bit word straight from the generator (the bit buffer is untouched).
    #[inline(always)]
    pub(crate) fn word32(&mut self) -> u32 {
        self.rng.next_u32()
    }

    /// The underlying generator (for the lazily drawn words of an exact slow path).
    #[inline]
    pub(crate) fn rng(&mut self) -> &mut R {
        self.rng
    }

    /// One uniform bit.
    #[inline(always)]
    pub(crate) fn bit(&mut self) -> bool {
        if self.left == 0 {
            self.word = self.rng.next_u64();
            self.left = 64;
        }
        let b = self.word & 1 == 1;
        self.word >>= 1;
        self.left -= 1;
        b
    }

    /// A uniform integer in `[0, n)` for `n >= 1` (Lemire 2019, "Fast random integer
    /// generation in an interval": multiply-shift with rejection of the biased low region,
    /// so the result is exactly uniform).
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        if n <= 1 << 32 {
            return self.below32(n);
        }
        if n.is_power_of_two() {
            return self.bits_exact(n.trailing_zeros());
        }
        let mut m = u128::from(self.rng.next_u64()) * u128::from(n);
        let mut lo = m as u64;
        if lo < n {
            let threshold = n.wrapping_neg() % n;
            while lo < threshold {
                m = u128::from(self.rng.next_u64()) * u128::from(n);
                lo = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// `k` (< 64) uniform bits as an integer, from the buffer; when fewer than `k` bits are
    /// buffered, they become the low bits of the result and a fresh word supplies the rest
    /// (and refills the buffer). Every generated bit is used once, none is dropped.
    #[inline(always)]
    pub(crate) fn bits_exact(&mut self, k: u32) -> u64 {
        debug_assert!(k < 64);
        // Invariant: the bits of `word` above the `left` buffered ones are zero.
        let mask = |n: u32| (1u64 << n) - 1;
        if k <= self.left {
            let v = self.word & mask(k);
            // k < 64, so the shift is in range.
            self.word = self.word.checked_shr(k).unwrap_or(0);
            self.left -= k;
            v
        } else {
            let fresh = self.rng.next_u64();
            // 1 <= need <= 63.
            let need = k - self.left;
            let v = self.word | ((fresh & mask(need)) << self.left);
            self.word = fresh >> need;
            self.left = 64 - need;
            v
        }
    }

    /// A uniform integer in `[0, n)` for `2 <= n <= 2^32`, exactly: `log2(n)` buffered bits for
    /// a power of two, otherwise Lemire's multiply-shift on one 32-bit word with rejection of
    /// the biased region.
    #[inline(always)]
    fn below32(&mut self, n: u64) -> u64 {
        debug_assert!((2..=1u64 << 32).contains(&n));
        if n & (n - 1) == 0 {
            return self.bits_exact(n.trailing_zeros());
        }
        // n < 2^32 here (2^32 is a power of two).
        let mut m = u64::from(self.rng.next_u32()) * n;
        if (m as u32 as u64) < n {
            let threshold = (n as u32).wrapping_neg() as u64 % n;
            while (m as u32 as u64) < threshold {
                m = u64::from(self.rng.next_u32()) * n;
            }
        }
        m >> 32
    }

    /// Bernoulli(`num / den`) for `0 <= num <= den`, `1 <= den <= 2^32`: one uniform draw in
    /// `[0, den)` compared with `num` (no data-dependent loop).
    #[inline(always)]
    fn bernoulli_small(&mut self, num: u64, den: u64) -> bool {
        if num >= den {
            return true;
        }
        // den >= 2 here because 0 <= num < den.
        self.below32(den) < num
    }

    /// Bernoulli(exp(-`num / den`)) for `num <= den <= 2^32` (CKS Algorithm 1 with 64-bit
    /// arithmetic; falls back to the general path if `den * K` leaves 32 bits).
    #[inline]
    fn bernoulli_exp_neg_small32(&mut self, num: u64, den: u64) -> bool {
        if num == 0 {
            return true;
        }
        let mut k: u64 = 1;
        loop {
            let dk = den * k; // den <= 2^32 and k < 2^32 below: no overflow
            let a = if dk <= 1 << 32 {
                self.bernoulli_small(num, dk)
            } else {
                self.bernoulli_rational(u128::from(num), u128::from(dk))
            };
            if !a {
                return k & 1 == 1;
            }
            if k >= 1 << 31 {
                // Astronomically unlikely (probability < 1 / (2^31)!); stay exact anyway.
                return self.bernoulli_exp_neg_small_from(
                    u128::from(num),
                    u128::from(den),
                    u128::from(k) + 1,
                );
            }
            k += 1;
        }
    }

    /// Bernoulli(`num / den`), exactly, for `den > 0`. Denominators up to 2^32 take one
    /// uniform draw (see [`Self::bernoulli_rational_u64`]); larger ones compare a lazily drawn
    /// uniform binary expansion with the binary expansion of `num / den` (computed by long
    /// division) and stop at the first differing bit. Expected cost: two random bits.
    #[inline(always)]
    pub(crate) fn bernoulli_rational(&mut self, num: u128, den: u128) -> bool {
        if num == 0 {
            return false;
        }
        if num >= den {
            return true;
        }
        if let (Ok(num), Ok(den)) = (u64::try_from(num), u64::try_from(den)) {
            return self.bernoulli_rational_u64(num, den);
        }
        let mut r = num; // invariant: 0 < r < den, p's remaining expansion is r / den
        loop {
            // Next bit of r / den is 1 iff 2r >= den, i.e. r >= den - r (no overflow).
            let gap = den - r;
            let p_bit = r >= gap;
            r = if p_bit { r - gap } else { r << 1 };
            let u_bit = self.bit();
            if u_bit != p_bit {
                // First difference: U < p iff U's bit is 0 where p's is 1.
                return p_bit;
            }
            if r == 0 {
                // p's expansion has ended (all further bits 0): U >= p unless U == p, an
                // event of probability zero.
                return false;
            }
        }
    }

    /// [`Self::bernoulli_rational`] on 64-bit integers, for `0 < num < den`.
    ///
    /// For `den <= 2^32` this draws an exactly uniform integer in `[0, den)` (one 32-bit word,
    /// Lemire) and compares it with `num`: more random bits than the lazy comparison, but no
    /// data-dependent loop, which is faster on real CPUs. Larger denominators use the lazy
    /// bit-by-bit comparison.
    #[inline(always)]
    fn bernoulli_rational_u64(&mut self, num: u64, den: u64) -> bool {
        if den <= 1 << 32 {
            return self.below32(den) < num;
        }
        let mut r = num;
        loop {
            let gap = den - r;
            let p_bit = r >= gap;
            r = if p_bit { r - gap } else { r << 1 };
            let u_bit = self.bit();
            if u_bit != p_bit {
                return p_bit;
            }
            if r == 0 {
                return false;
            }
        }
    }

    /// Bernoulli(exp(-`num / den`)) for `num <= den`, `den > 0` (CKS Algorithm 1, the case
    /// gamma in [0, 1]): draw A_K ~ Bernoulli(gamma / K) for K = 1, 2, ... until the first
    /// failure and return whether that K is odd.
    #[inline]
    pub(crate) fn bernoulli_exp_neg_small(&mut self, num: u128, den: u128) -> bool {
        if num == 0 {
            return true;
        }
        self.bernoulli_exp_neg_small_from(num, den, 1)
    }

    /// The K-loop of [`Self::bernoulli_exp_neg_small`], resumed at `K = k` (all earlier
    /// trials having succeeded).
    fn bernoulli_exp_neg_small_from(&mut self, num: u128, den: u128, mut k: u128) -> bool {
        loop {
            let a = match den.checked_mul(k) {
                Some(dk) => self.bernoulli_rational(num, dk),
                // Bernoulli(gamma / K) = Bernoulli(gamma) AND Bernoulli(1 / K), independent.
                None => self.bernoulli_rational(num, den) && self.bernoulli_rational(1, k),
            };
            if !a {
                return k & 1 == 1;
            }
            k = k.saturating_add(1);
        }
    }

    /// Bernoulli(exp(-1)).
    #[inline(always)]
    pub(crate) fn bernoulli_exp_neg_one(&mut self) -> bool {
        // CKS Algorithm 1 with gamma = 1: A_1 ~ Bernoulli(1) always succeeds; A_2 is one bit.
        if !self.bit() {
            return false; // K = 2
        }
        let mut k: u64 = 3;
        loop {
            let a = if k <= 1 << 32 {
                self.below32(k) == 0
            } else {
                self.bernoulli_rational_u64(1, k)
            };
            if !a {
                return k & 1 == 1;
            }
            k = k.saturating_add(1);
        }
    }

    /// Bernoulli(exp(-`num / den`)) for any `num`, `den > 0` (CKS Algorithm 1): floor(x)
    /// independent Bernoulli(exp(-1)) trials that must all succeed, then the fractional part.
    ///
    /// The integer part is peeled off one trial at a time (subtracting `den`), so there is no
    /// division, and a large `x` costs only as many trials as it takes to see the first
    /// failure (1.6 in expectation).
    #[inline]
    pub(crate) fn bernoulli_exp_neg(&mut self, num: u128, den: u128) -> bool {
        let mut rest = num;
        while rest > den {
            if !self.bernoulli_exp_neg_one() {
                return false;
            }
            rest -= den;
        }
        self.bernoulli_exp_neg_small(rest, den)
    }

    /// Bernoulli(exp(-`a^2 / b`)) where `a^2` may not fit in a `u128` (`0 < b < 2^127`).
    /// Cold path: 256-bit square and long division.
    #[cold]
    pub(crate) fn bernoulli_exp_neg_square_wide(&mut self, a: u128, b: u128) -> bool {
        let (hi, lo) = mul_wide(a, a);
        let ((mut q_hi, mut q_lo), r) = div_rem_wide(hi, lo, b);
        while q_hi != 0 || q_lo != 0 {
            if !self.bernoulli_exp_neg_one() {
                return false;
            }
            if q_lo == 0 {
                q_hi -= 1;
                q_lo = u128::MAX;
            } else {
                q_lo -= 1;
            }
        }
        self.bernoulli_exp_neg_small(r, b)
    }

    /// The geometric part of CKS Algorithm 2: the number of successes of independent
    /// Bernoulli(exp(-1)) trials before the first failure.
    #[inline]
    fn geometric_exp_neg_one(&mut self) -> u64 {
        let mut v: u64 = 0;
        while self.bernoulli_exp_neg_one() {
            v = v.saturating_add(1);
        }
        v
    }

    /// A discrete Laplace sample with scale `t / s` (`t, s >= 1`), CKS Algorithm 2:
    /// P(z) proportional to exp(-|z| s / t).
    ///
    /// The result is conditioned on fitting in an `i64` (a proposal beyond it is rejected and
    /// redrawn); see the module documentation of [`super`] for why that is harmless.
    #[inline]
    pub(crate) fn discrete_laplace(&mut self, t: u64, s: u64) -> i64 {
        loop {
            let u = self.below(t);
            let keep = if t <= 1 << 32 {
                self.bernoulli_exp_neg_small32(u, t)
            } else {
                self.bernoulli_exp_neg_small(u128::from(u), u128::from(t))
            };
            if !keep {
                continue;
            }
            let v = self.geometric_exp_neg_one();
            // X = U + t V is geometric: P(X = x) proportional to exp(-x / t).
            let Some(x) = t.checked_mul(v).and_then(|tv| tv.checked_add(u)) else {
                continue;
            };
            let y = if s == 1 { x } else { x / s };
            let negative = self.bit();
            if negative && y == 0 {
                continue;
            }
            let Ok(y) = i64::try_from(y) else {
                continue;
            };
            return if negative { -y } else { y };
        }
    }
}

/// The full 256-bit product `x * y` as `(high, low)` halves.
#[inline]
pub(crate) fn mul_wide(x: u128, y: u128) -> (u128, u128) {
    const MASK: u128 = u64::MAX as u128;
    let (x1, x0) = (x >> 64, x & MASK);
    let (y1, y0) = (y >> 64, y & MASK);
    let p00 = x0 * y0;
    let p01 = x0 * y1;
    let p10 = x1 * y0;
    let p11 = x1 * y1;
    let (mid, c1) = p01.overflowing_add(p10);
    let (mid, c2) = mid.overflowing_add(p00 >> 64);
    let lo = (mid << 64) | (p00 & MASK);
    let carries = (u128::from(c1) + u128::from(c2)) << 64;
    let hi = p11.wrapping_add(mid >> 64).wrapping_add(carries);
    (hi, lo)
}

/// `(hi * 2^128 + lo) / b` and the remainder, for `0 < b < 2^127` (binary long division).
pub(crate) fn div_rem_wide(hi: u128, lo: u128, b: u128) -> ((u128, u128), u128) {
    debug_assert!(b > 0 && b < (1u128 << 127));
    let mut r: u128 = 0;
    let (mut q_hi, mut q_lo) = (0u128, 0u128);
    for i in (0..256u32).rev() {
        let bit = if i >= 128 {
            (hi >> (i - 128)) & 1
        } else {
            (lo >> i) & 1
        };
        r = (r << 1) | bit;
        if r >= b {
            r -= b;
            if i >= 128 {
                q_hi |= 1 << (i - 128);
            } else {
                q_lo |= 1 << i;
            }
        }
    }
    ((q_hi, q_lo), r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded_rng;

    /// `bits_exact` and `bit` hand out the generator's bit stream in order, low bits first,
    /// without dropping or repeating any bit, across word boundaries (request sizes 0..=63).
    #[test]
    fn bit_buffer_uses_every_bit_once_in_order() {
        let mut source = seeded_rng(21);
        let words: Vec<u64> = (0..64).map(|_| source.next_u64()).collect();
        let stream: Vec<bool> = words
            .iter()
            .flat_map(|w| (0..64).map(move |i| (w >> i) & 1 == 1))
            .collect();
        struct Replay(std::vec::IntoIter<u64>);
        impl RngCore for Replay {
            fn next_u32(&mut self) -> u32 {
                self.next_u64() as u32
            }
            fn next_u64(&mut self) -> u64 {
                self.0.next().expect("test stream long enough")
            }
            fn fill_bytes(&mut self, _: &mut [u8]) {
                unreachable!()
            }
        }
        let mut rng = Replay(words.into_iter());
        let mut bits = Bits::new(&mut rng);
        let mut got = Vec::new();
        let mut k = 0u32;
        while got.len() + 64 <= stream.len() {
            if k % 7 == 3 {
                got.push(bits.bit());
            } else {
                let v = bits.bits_exact(k % 64);
                got.extend((0..k % 64).map(|i| (v >> i) & 1 == 1));
                assert!(
                    k % 64 == 63 || v >> (k % 64) == 0,
                    "value wider than requested"
                );
            }
            k += 5;
        }
        assert_eq!(got[..], stream[..got.len()]);
    }

    #[test]
    fn mul_wide_matches_u128_when_small_and_known_values() {
        assert_eq!(mul_wide(3, 5), (0, 15));
        assert_eq!(mul_wide(u64::MAX as u128, u64::MAX as u128).0, 0);
        // (2^128 - 1)^2 = 2^256 - 2^129 + 1
        assert_eq!(mul_wide(u128::MAX, u128::MAX), (u128::MAX - 1, 1));
        assert_eq!(mul_wide(1u128 << 100, 1u128 << 100), (1u128 << 72, 0));
    }

    #[test]
    fn div_rem_wide_matches_u128_division() {
        for (n, d) in [
            (1000u128, 7u128),
            (u128::MAX, 3),
            (12345678901234567890, 1u128 << 100),
        ] {
            assert_eq!(div_rem_wide(0, n, d), ((0, n / d), n % d));
        }
        // (2^200 + 5) / 2^100 = 2^100 rem 5
        assert_eq!(
            div_rem_wide(1u128 << 72, 5, 1u128 << 100),
            ((0, 1u128 << 100), 5)
        );
        // 2^255 / 3: check q * 3 + r == 2^255 with the 256-bit helpers.
        let ((qh, ql), r) = div_rem_wide(1u128 << 127, 0, 3);
        assert_eq!(r, 2); // 2^255 = (-1)^255 = 2 (mod 3)
        let (carry, low) = mul_wide(ql, 3);
        let (low, c) = low.overflowing_add(r);
        assert_eq!(low, 0);
        assert_eq!(qh * 3 + carry + u128::from(c), 1u128 << 127);
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = seeded_rng(1);
        let mut bits = Bits::new(&mut rng);
        for n in [
            1u64,
            2,
            3,
            7,
            8,
            1000,
            (1 << 32) - 1,
            1 << 32,
            (1 << 32) + 1,
            1 << 40,
            u64::MAX,
        ] {
            for _ in 0..200 {
                assert!(bits.below(n) < n);
            }
        }
    }

    /// The 256-bit path gives Bernoulli(exp(-a^2 / b)): frequency within 5 standard errors
    /// (two-sided level about 6e-7) over 40,000 trials, for a small `a` (where the narrow path
    /// would also apply) and for `a = 2^64` (where a^2 does not fit in a `u128`).
    #[test]
    fn wide_exp_path_has_the_right_frequency() {
        let b_big = (u128::MAX / 5) * 2; // about 2^128 / 2.5, below 2^127
        let cases = [(3u128, 4u128), (5, 7), (1u128 << 64, b_big)];
        let mut rng = seeded_rng(4);
        let mut bits = Bits::new(&mut rng);
        for (a, b) in cases {
            let x = (a as f64) * (a as f64) / b as f64;
            let p = (-x).exp();
            let n = 40_000;
            let hits = (0..n)
                .filter(|_| bits.bernoulli_exp_neg_square_wide(a, b))
                .count() as f64;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            let z = (hits / n as f64 - p) / se;
            assert!(z.abs() < 5.0, "a = {a}, b = {b}: x = {x}, z = {z}");
        }
    }

    #[test]
    fn wide_and_narrow_exp_paths_agree_on_certain_outcomes() {
        let mut rng = seeded_rng(2);
        let mut bits = Bits::new(&mut rng);
        // exp(-0) = 1 always.
        assert!(bits.bernoulli_exp_neg_square_wide(0, 5));
        // exp(-(2^70)^2 / 3) is astronomically small: never accepted in practice.
        for _ in 0..100 {
            assert!(!bits.bernoulli_exp_neg_square_wide(1 << 70, 3));
        }
    }
}
