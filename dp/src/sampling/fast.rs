//! A table-driven exact discrete Gaussian sampler for sigma >= 2 (used by
//! [`super::DiscreteGaussian`] above [`super::FAST_MIN_SIGMA`]).
//!
//! **Proposal.** Magnitudes |x| are split into `J` buckets of width `w` (a power of two, about
//! sigma / 26 to sigma / 13) up to
//! L = J w >= 9 sigma, plus a tail entry for |x| >= L. An integer alias table (Vose) over
//! 256 slots of 2^56 units each picks bucket `j` with probability exactly W_j / 2^64, where the
//! integer weight W_j >= Q exp(-(j w)^2 / (2 sigma^2)) is a rigorous upper bound (big-integer
//! bounds, see [`super::lazy_exp`]); the unused mass 2^64 - sum W goes to a "reject" entry.
//! The magnitude is j w + u with u uniform in [0, w), and a uniform sign; (negative, 0) is
//! rejected so that 0 is not proposed twice. Random bits are drawn lazily (see
//! [`FastGaussian::sample`]): usually 64 per attempt.
//!
//! **Acceptance.** x in bucket j is accepted with probability
//! p(x) = (Q / W_j) exp(-x^2 / (2 sigma^2)) <= 1, so the accepted x has probability
//! proportional to (W_j / w) (1/2) p(x) = Q exp(-x^2 / (2 sigma^2)) / (2 w): exactly the
//! discrete Gaussian. p(x) = c_j exp(-r) with c_j = Q exp(-g_j) / W_j and
//! r = (x^2 - (j w)^2) / (2 sigma^2) in [0, 2); the decision V < p(x) for a uniform real V is
//! taken by [`super::lazy_exp`]: a precomputed per-bucket lower bound ("squeeze") of p over
//! the bucket settles most trials with one comparison, a 64-bit fixed-point evaluation with a
//! proved error bound settles all but about 2^-57 of the rest, and an exact big-integer slow
//! path settles those.
//!
//! **Tail.** The tail entry (weight W_T >= Q (2B / w) exp(-L^2 / (2 sigma^2))) proposes block
//! k >= 0 of width B = ceil(sigma^2 / L) with probability 2^-(k+1) and a uniform point in it;
//! since exp(-x^2 / (2 sigma^2)) <= exp(-L^2 / (2 sigma^2)) 2^-k on block k, the acceptance
//! probability (Q B 2^(k+1) / (w W_T)) exp(-x^2 / (2 sigma^2)) is at most 1, and accepted
//! points again have probability proportional to exp(-x^2 / (2 sigma^2)). The tail is decided
//! on the slow path (it is reached with probability about 1e-18 per sample at L = 9 sigma).
//! Blocks k >= 2^12 (|x| >= L + 2^12 B >= 4096 sigma^2 / L > 300 sigma, as L is below
//! 9 (sigma + 1) plus w <= sigma / 13 + 2, hence below 13.6 sigma for sigma >= 2) are rejected: the output is
//! conditioned on |x| below that bound, which fails with probability below exp(-45000).

use std::fmt;

use num_bigint::BigUint;
use rand_core::RngCore;

use super::exact::Bits;
use super::lazy_exp::{Q64_ERROR, bernoulli_scaled_exp_slow, exp_neg_bounds, exp_neg_q64};

/// Alias-table slots (one byte of the selection word).
const SLOTS: usize = 256;
/// Units per slot: the other 56 bits of the selection word.
const SLOT_BITS: u32 = 56;
const SLOT_CAP: u64 = 1 << SLOT_BITS;
/// The bucket width is the smallest power of two >= ceil(floor(sigma) / WIDTH_DIVISOR): at
/// most 243 buckets up to 9 sigma (at floor(sigma) = 26), so they fit the 256 slots with the
/// tail and reject entries.
const WIDTH_DIVISOR: u64 = 26;
/// The tail starts at L >= TAIL_SIGMAS * sigma.
const TAIL_SIGMAS: u64 = 9;
/// The largest tail block index tried (blocks beyond it are rejected; see the module docs).
const MAX_TAIL_BLOCK: u32 = 1 << 12;
/// Working precision (bits) of the big-integer bounds used to build the table.
const BUILD_PREC: u64 = 192;
/// Margin of the fast comparison, in units of 2^-64: above the proved error of the fixed-point
/// acceptance probability (below 10 units, see [`FastGaussian::p_q64`]).
const MARGIN: u64 = 32;

/// The precomputed table of one sigma (about 6 KiB).
#[derive(Clone, PartialEq)]
pub(crate) struct FastGaussian {
    /// Alias thresholds: slot i yields entry i if the low 56 bits are below `thr[i]`.
    thr: [u64; SLOTS],
    /// Alias targets.
    alias: [u8; SLOTS],
    /// Per bucket: floor(2^64 c_j) up to 2 units (c_j = Q exp(-g_j) / W_j <= 1).
    c: [u64; SLOTS],
    /// Per bucket: a lower bound of 2^64 p(x) over the whole bucket.
    squeeze: [u64; SLOTS],
    /// Bucket width w >= 1, a power of two.
    width: u64,
    /// log2(w).
    width_bits: u32,
    /// Number of buckets J (entries 0..J); entry J is the tail, J + 1 the reject entry.
    buckets: usize,
    /// 1 / (2 sigma^2) in fixed point: c_fix = floor(2^(64 + shift) D / (2 N)), in [2^63, 2^64).
    c_fix: u64,
    shift: u32,
    /// L = J w.
    tail_start: u64,
    /// B = ceil(sigma^2 / L).
    tail_block: u64,
    /// sigma^2 = n / d.
    n: u128,
    d: u128,
    /// The common scale Q of the weights.
    q: u64,
    /// W_0, ..., W_{J-1}, W_T, reject mass (sum 2^64).
    weights: Vec<u64>,
}

impl fmt::Debug for FastGaussian {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FastGaussian")
            .field("width", &self.width)
            .field("buckets", &self.buckets)
            .field("tail_start", &self.tail_start)
            .field("tail_block", &self.tail_block)
            .finish_non_exhaustive()
    }
}

/// Exact integer Vose alias table for `weights` (at most [`SLOTS`] entries, sum exactly
/// `SLOTS * SLOT_CAP`): slot i yields entry i with `thr[i]` units and `alias[i]` with the rest.
///
/// Invariant: every pending entry keeps its exact remaining mass, pairing a small entry s
/// (mass < cap) with a large one l takes exactly cap - mass(s) units from l, and the total
/// remaining mass is always cap times the number of unfilled slots; so when either list runs
/// out, every remaining entry has exactly cap units. `None` if the weights do not fit.
fn build_alias(weights: &[u64]) -> Option<([u64; SLOTS], [u8; SLOTS])> {
    if weights.len() > SLOTS {
        return None;
    }
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if total != (SLOTS as u128) << SLOT_BITS {
        return None;
    }
    let mut mass = [0u64; SLOTS];
    mass[..weights.len()].copy_from_slice(weights);
    let mut thr = [SLOT_CAP; SLOTS];
    let mut alias = [0u8; SLOTS];
    let (mut small, mut large): (Vec<usize>, Vec<usize>) =
        (0..SLOTS).partition(|&i| mass[i] < SLOT_CAP);
    while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
        small.pop();
        thr[s] = mass[s];
        alias[s] = u8::try_from(l).ok()?;
        mass[l] -= SLOT_CAP - mass[s];
        if mass[l] < SLOT_CAP {
            large.pop();
            small.push(l);
        }
    }
    // Leftovers (exactly cap each, by the invariant) keep thr = cap: always themselves.
    for i in small.into_iter().chain(large) {
        if mass[i] != SLOT_CAP {
            return None;
        }
    }
    Some((thr, alias))
}

/// `BigUint` from a `u128`.
fn big(x: u128) -> BigUint {
    BigUint::from(x)
}

impl FastGaussian {
    /// The table for sigma^2 = n / d >= 4 (sigma >= 2); `None` below, or if a bound does not
    /// fit, in which case the caller keeps the CKS sampler. The in-bucket exponent r stays
    /// below 2, as the fixed-point path needs: r = 0 for w = 1 (sigma < 17), and
    /// r < (2J - 1) w^2 / (2 sigma^2) < 1.2 for w >= 2 (w < 2 ceil(s / 26)) (checked below: the squeeze of the last
    /// bucket is computed at the largest r).
    pub(crate) fn new(n: u128, d: u128) -> Option<Self> {
        Self::with_tail_at(n, d, TAIL_SIGMAS)
    }

    /// As [`Self::new`] with the tail starting at `tail_sigmas` sigmas (tests use a small one
    /// to exercise the tail).
    pub(crate) fn with_tail_at(n: u128, d: u128, tail_sigmas: u64) -> Option<Self> {
        if d == 0 || n < 4 * d || tail_sigmas == 0 {
            return None;
        }
        let sigma_floor = u64::try_from((n / d).isqrt()).ok()?;
        // A power of two, so that the offset in a bucket takes exactly log2(w) random bits.
        let width = sigma_floor
            .div_ceil(WIDTH_DIVISOR)
            .checked_next_power_of_two()?;
        // L >= tail_sigmas * sigma (sigma < sigma_floor + 1).
        let span = tail_sigmas.checked_mul(sigma_floor + 1)?;
        let buckets = span.div_ceil(width);
        let buckets_usize = usize::try_from(buckets).ok()?;
        if buckets_usize + 2 > SLOTS {
            return None;
        }
        let tail_start = buckets.checked_mul(width)?;
        // B = ceil(n / (d L)).
        let tail_block = u64::try_from(n.div_ceil(d.checked_mul(u128::from(tail_start))?)).ok()?;
        let g_den = big(n) * 2u32;
        let dd = big(d);
        let exp_at =
            |x: u64| exp_neg_bounds(&(big(u128::from(x)).pow(2) * &dd), &g_den, BUILD_PREC);

        // Bounds of exp(-g_j) for each bucket start and of exp(-g_L) at the tail.
        let bounds: Vec<(BigUint, BigUint)> = (0..buckets).map(|j| exp_at(j * width)).collect();
        let (_, tail_hi) = exp_at(tail_start);
        let two_b = big(u128::from(tail_block)) * 2u32;
        let wbig = big(u128::from(width));
        let tail_factor_hi = (&two_b * &tail_hi + &wbig - 1u32) / &wbig;
        // Q = floor((2^64 - J - 2) 2^prec / H), H = sum of the upper bounds (plus the tail's),
        // so that sum_j ceil(Q hi_j / 2^prec) + W_T <= Q H / 2^prec + J + 1 < 2^64.
        let h: BigUint = bounds.iter().map(|(_, hi)| hi).sum::<BigUint>() + &tail_factor_hi;
        let room = (BigUint::from(1u32) << 64u32) - big(u128::from(buckets) + 2);
        let q_big = (room << BUILD_PREC) / &h;
        let q = u64::try_from(&q_big).ok()?;
        let ceil_shift =
            |x: BigUint| (x + (BigUint::from(1u32) << BUILD_PREC) - 1u32) >> BUILD_PREC;
        let mut weights: Vec<u64> = Vec::with_capacity(buckets_usize + 2);
        for (_, hi) in &bounds {
            weights.push(u64::try_from(ceil_shift(&q_big * hi)).ok()?);
        }
        let w_tail = u64::try_from(ceil_shift(&q_big * &tail_factor_hi)).ok()?;
        weights.push(w_tail);
        let used: u128 = weights.iter().map(|&w| u128::from(w)).sum();
        let reject = (1u128 << 64).checked_sub(used)?;
        weights.push(u64::try_from(reject).ok()?);
        let (thr, alias) = build_alias(&weights)?;

        // 1 / (2 sigma^2) = d / (2n) in fixed point with 64 significant bits.
        let mut shift = 0u32;
        let c_fix = loop {
            let v = (&dd << (64 + shift)) / &g_den;
            if v >= BigUint::from(1u64 << 63) {
                break u64::try_from(v).ok()?;
            }
            shift += 1;
            if shift > 120 {
                return None;
            }
        };
        if shift == 0 {
            return None; // sigma^2 <= 1; excluded above anyway.
        }

        let mut table = FastGaussian {
            thr,
            alias,
            c: [0; SLOTS],
            squeeze: [0; SLOTS],
            width,
            width_bits: width.trailing_zeros(),
            buckets: buckets_usize,
            c_fix,
            shift,
            tail_start,
            tail_block,
            n,
            d,
            q,
            weights,
        };
        for (j, (lo, _)) in bounds.iter().enumerate() {
            // c_j >= Q lo_j / (W_j 2^prec); floor(2^64 of that), capped at 2^64 - 1.
            let wj = *table.weights.get(j)?;
            if wj == 0 {
                return None; // impossible (Q >= 1 and the upper bounds are >= 1 unit)
            }
            let wj = big(u128::from(wj));
            let cj = ((&q_big * lo) >> (BUILD_PREC - 64)) / wj;
            let cj = u64::try_from(cj).unwrap_or(u64::MAX);
            *table.c.get_mut(j)? = cj;
            // The largest offset u = w - 1 gives the smallest p in the bucket.
            let m_max = table.m(j as u64, width - 1)?;
            let p_min = table.p_q64(cj, table.r_q64(m_max))?;
            *table.squeeze.get_mut(j)? = p_min.saturating_sub(MARGIN);
        }
        Some(table)
    }

    /// m = x^2 - (j w)^2 = u (2 j w + u) for x = j w + u.
    #[inline]
    fn m(&self, j: u64, u: u64) -> Option<u64> {
        let two_jw = j.checked_mul(self.width)?.checked_mul(2)?;
        u.checked_mul(two_jw.checked_add(u)?)
    }

    /// r = m / (2 sigma^2) in fixed point (units of 2^-64), rounded down: the true value
    /// exceeds it by less than 5 units when r < 2 (the error of c_fix is below one unit of
    /// 2^-(64 + shift), times m < 2^(shift + 2); plus the final floor).
    #[inline]
    fn r_q64(&self, m: u64) -> u128 {
        (u128::from(m) * u128::from(self.c_fix)) >> self.shift
    }

    /// 2^64 c_j exp(-r) from the fixed-point parts, within 10 units of the exact value:
    /// `exp_neg_q64` is within (-6.54, 3.09) units of 2^64 exp(-r_q), which exceeds
    /// 2^64 exp(-r) by less than 5 units (r_q <= r < r_q + 5 units); `c` is within 2 units
    /// below 2^64 c_j; the product (both factors <= 2^64) keeps these absolute errors and the
    /// final floor adds at most one: total in (-9.6, 8.1). `None` for r >= 2.
    #[inline]
    fn p_q64(&self, c: u64, r: u128) -> Option<u64> {
        const _: () = assert!(Q64_ERROR + 5 + 2 + 1 < MARGIN);
        let e = exp_neg_q64(r)?;
        Some(((u128::from(c) * u128::from(e)) >> 64) as u64)
    }

    /// The alias entry for a uniform slot and a uniform 56-bit offset, drawn lazily: the
    /// first 32-bit word gives the slot (8 bits) and the offset's top 24 bits, which settle
    /// the comparison with the slot's 56-bit threshold unless they equal its top 24 bits
    /// (probability 2^-24); then 32 more bits complete the offset and the comparison is exact.
    #[inline(always)]
    fn entry<R: RngCore + ?Sized>(&self, bits: &mut Bits<'_, R>) -> usize {
        let first = bits.word32();
        let slot = (first >> 24) as usize;
        let top = u64::from(first & 0x00FF_FFFF);
        let thr = self.thr[slot];
        let thr_top = thr >> 32;
        let below = if top == thr_top {
            ((top << 32) | u64::from(bits.word32())) < thr
        } else {
            // top < thr_top: offset < (top + 1) 2^32 <= thr. top > thr_top: offset >=
            // top 2^32 >= (thr_top + 1) 2^32 > thr (thr_top = 2^24 for a full slot).
            top < thr_top
        };
        if below {
            slot
        } else {
            usize::from(self.alias[slot])
        }
    }

    /// One sample. An attempt draws 32 bits for the entry (8 for the alias slot, 24 for the
    /// top of its offset), log2(w) bits for the offset u in [0, w) (w is a power of two), one
    /// for the sign and 16 for the first test of the uniform V: 64 bits in all for w <= 2^15
    /// (sigma below about 8.5e5). The rare paths draw more.
    #[inline]
    pub(crate) fn sample<R: RngCore + ?Sized>(&self, bits: &mut Bits<'_, R>) -> i64 {
        loop {
            let entry = self.entry(bits);
            if entry >= self.buckets {
                if entry == self.buckets
                    && let Some(x) = self.tail_attempt(bits)
                {
                    return x;
                }
                continue;
            }
            let u = bits.bits_exact(self.width_bits);
            let negative = bits.bit();
            let j = entry as u64;
            // j < 256 and w <= 2^22 (sigma <= 2^26): no overflow.
            let mag = j * self.width + u;
            if negative && mag == 0 {
                continue;
            }
            // V's first 16 bits settle the squeeze most of the time: V < (hi + 1) 2^-16 <=
            // squeeze 2^-64 <= p(x) when hi < squeeze / 2^48. Otherwise 48 more bits complete
            // V's first 64-bit word.
            let squeeze = self.squeeze[entry];
            let hi = bits.bits_exact(16);
            let accept = if hi < squeeze >> 48 {
                true
            } else {
                let v = (hi << 48) | (bits.word() >> 16);
                v < squeeze || self.decide(bits, v, entry, u, mag)
            };
            if accept {
                // mag < 2^30: fits in an i64.
                let x = mag as i64;
                return if negative { -x } else { x };
            }
        }
    }

    /// The acceptance decision V < p(x) past the squeeze: fixed point with a margin, then the
    /// exact slow path.
    #[inline]
    fn decide<R: RngCore + ?Sized>(
        &self,
        bits: &mut Bits<'_, R>,
        v: u64,
        entry: usize,
        u: u64,
        mag: u64,
    ) -> bool {
        let fast = self
            .m(entry as u64, u)
            .and_then(|m| self.p_q64(self.c[entry], self.r_q64(m)));
        if let Some(p) = fast {
            // |p - 2^64 p(x)| < 10 < MARGIN: V < U + 1 <= p - MARGIN < p(x), or
            // V >= U >= p + MARGIN > p(x).
            if u128::from(v) + u128::from(MARGIN) < u128::from(p) {
                return true;
            }
            if u128::from(v) >= u128::from(p) + u128::from(MARGIN) {
                return false;
            }
        }
        self.slow_bucket(bits, v, entry, mag)
    }

    /// The exact decision for x in bucket `entry`: V < (Q / W_j) exp(-x^2 d / (2 n)).
    #[cold]
    fn slow_bucket<R: RngCore + ?Sized>(
        &self,
        bits: &mut Bits<'_, R>,
        v: u64,
        entry: usize,
        mag: u64,
    ) -> bool {
        let Some(&wj) = self.weights.get(entry) else {
            return false;
        };
        let g_num = big(u128::from(mag)).pow(2) * big(self.d);
        bernoulli_scaled_exp_slow(
            bits.rng(),
            v,
            &big(u128::from(self.q)),
            &big(u128::from(wj)),
            &g_num,
            &(big(self.n) * 2u32),
        )
    }

    /// One attempt from the tail entry: block k with probability 2^-(k+1), a uniform point in
    /// it, a sign, and the exact acceptance test. `None` means rejected.
    #[cold]
    fn tail_attempt<R: RngCore + ?Sized>(&self, bits: &mut Bits<'_, R>) -> Option<i64> {
        let mut k: u32 = 0;
        loop {
            let w = bits.word();
            if w != 0 {
                k += w.trailing_zeros();
                break;
            }
            k += 64;
            if k >= MAX_TAIL_BLOCK {
                return None;
            }
        }
        if k >= MAX_TAIL_BLOCK {
            return None;
        }
        let u = bits.below(self.tail_block);
        let negative = bits.bit();
        let mag = u64::from(k)
            .checked_mul(self.tail_block)?
            .checked_add(self.tail_start)?
            .checked_add(u)?;
        let x = i64::try_from(mag).ok()?;
        let v = bits.word();
        let w_tail = *self.weights.get(self.buckets)?;
        // R = Q B 2^(k+1) / (w W_T), gamma = x^2 d / (2 n).
        let r_num = (big(u128::from(self.q)) * big(u128::from(self.tail_block))) << (k + 1);
        let r_den = big(u128::from(self.width)) * big(u128::from(w_tail));
        let g_num = big(u128::from(mag)).pow(2) * big(self.d);
        let accept =
            bernoulli_scaled_exp_slow(bits.rng(), v, &r_num, &r_den, &g_num, &(big(self.n) * 2u32));
        accept.then_some(if negative { -x } else { x })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded_rng;
    use crate::sampling::DiscreteGaussian;
    use crate::sampling::lazy_exp::scaled_exp_neg_bounds;

    fn table(sigma: f64) -> FastGaussian {
        let (n, d) = DiscreteGaussian::new(sigma)
            .unwrap()
            .sigma_squared_rational();
        FastGaussian::new(n, d).unwrap()
    }

    const SIGMAS: [f64; 10] = [
        2.0,
        5.5,
        8.0,
        16.0,
        17.0,
        33.3,
        100.0,
        12345.678,
        3e5,
        67_108_864.0,
    ];

    /// Mass each entry receives from the alias table: must equal its weight exactly.
    fn alias_masses(thr: &[u64; SLOTS], alias: &[u8; SLOTS]) -> Vec<u128> {
        let mut mass = vec![0u128; SLOTS];
        for i in 0..SLOTS {
            mass[i] += u128::from(thr[i]);
            mass[usize::from(alias[i])] += u128::from(SLOT_CAP - thr[i]);
        }
        mass
    }

    #[test]
    fn alias_table_reproduces_integer_weights_exactly() {
        for sigma in SIGMAS {
            let t = table(sigma);
            let mass = alias_masses(&t.thr, &t.alias);
            for (e, m) in mass.iter().enumerate() {
                let w = t.weights.get(e).copied().unwrap_or(0);
                assert_eq!(*m, u128::from(w), "sigma {sigma}, entry {e}");
            }
            assert_eq!(t.weights.len(), t.buckets + 2);
            // The reject entry holds only the rounding slack: at most J + 2 + H / 2^prec units
            // (H / 2^prec = sum of exp(-g_j) plus the tail term, below 40), under 300.
            assert!(*t.weights.last().unwrap() < 300);
        }
        // Synthetic weights: uneven, with zeros, summing to 2^64.
        let mut rng = seeded_rng(3);
        for _ in 0..50 {
            let k = 1 + (rng.next_u64() % 256) as usize;
            let mut w: Vec<u64> = (0..k)
                .map(|_| rng.next_u64() >> (8 + rng.next_u64() % 40))
                .collect();
            let sum: u128 = w.iter().map(|&x| u128::from(x)).sum();
            let rest = (1u128 << 64) - sum;
            let last = w.len() - 1;
            w[last] = u64::try_from(u128::from(w[last]) + rest).unwrap();
            let (thr, alias) = build_alias(&w).unwrap();
            let mass = alias_masses(&thr, &alias);
            for (e, m) in mass.iter().enumerate() {
                assert_eq!(*m, u128::from(w.get(e).copied().unwrap_or(0)));
            }
        }
        // Weights that do not sum to 2^64 are refused.
        assert!(build_alias(&[1, 2, 3]).is_none());
    }

    #[test]
    fn parameter_edges() {
        // sigma < 2 (sigma^2 < 4): no table, the caller uses CKS.
        assert!(FastGaussian::new(3, 1).is_none());
        assert!(FastGaussian::new(15, 4).is_none());
        assert!(FastGaussian::new(1, 0).is_none());
        let t = FastGaussian::new(4, 1).unwrap();
        assert_eq!(
            (t.width, t.buckets, t.tail_start, t.tail_block),
            (1, 27, 27, 1)
        );
        let t = FastGaussian::new(64, 1).unwrap();
        assert_eq!((t.width, t.buckets), (1, 81));
        let t = table(67_108_864.0);
        assert_eq!(t.width, 1 << 22);
        assert!(t.tail_start >= 9 * (1 << 26));
        let dbg = format!("{t:?}");
        assert!(dbg.contains("FastGaussian") && dbg.contains("width"));
    }

    /// W_j >= Q exp(-g_j) (so every acceptance probability is at most 1), c_j's fixed-point
    /// value does not exceed 2^64 c_j, and W_T covers the tail envelope, checked with bounds
    /// at 320 bits (the table was built at 192).
    #[test]
    fn weights_are_rigorous_upper_bounds() {
        for sigma in SIGMAS {
            let t = table(sigma);
            let g_den = BigUint::from(t.n) * 2u32;
            let q = BigUint::from(t.q);
            for j in 0..t.buckets {
                let x = BigUint::from(j as u64 * t.width);
                let (lo, hi) = exp_neg_bounds(&(x.pow(2) * t.d), &g_den, 320);
                let wj = BigUint::from(t.weights[j]);
                assert!(&q * &hi <= &wj << 320u32, "sigma {sigma}: W_{j} too small");
                assert!(
                    (BigUint::from(t.c[j]) * &wj) << 256u32 <= &q * &lo,
                    "c_{j} too big"
                );
            }
            let x = BigUint::from(t.tail_start);
            let (_, hi) = exp_neg_bounds(&(x.pow(2) * t.d), &g_den, 320);
            let env = q * 2u32 * t.tail_block * hi;
            let wt = BigUint::from(t.weights[t.buckets]) * t.width;
            assert!(env <= wt << 320u32, "sigma {sigma}: W_T too small");
        }
    }

    /// The fixed-point acceptance probability is within 10 units of 2^64 p(x), and the squeeze
    /// is below p(x), for random points of random buckets.
    #[test]
    fn fixed_point_acceptance_is_within_its_error_bound() {
        let mut rng = seeded_rng(8);
        for sigma in SIGMAS {
            let t = table(sigma);
            let g_den = BigUint::from(t.n) * 2u32;
            for i in 0..600 {
                let j = (rng.next_u64() % t.buckets as u64) as usize;
                let u = match i % 3 {
                    0 => t.width - 1,
                    1 => 0,
                    _ => rng.next_u64() % t.width,
                };
                let mag = j as u64 * t.width + u;
                let p = t.p_q64(t.c[j], t.r_q64(t.m(j as u64, u).unwrap())).unwrap();
                let (lo, hi) = scaled_exp_neg_bounds(
                    &BigUint::from(t.q),
                    &BigUint::from(t.weights[j]),
                    &(BigUint::from(mag).pow(2) * t.d),
                    &g_den,
                    128,
                );
                let lo = i128::try_from(lo >> 64u32).unwrap();
                let hi = i128::try_from((hi >> 64u32) + 1u32).unwrap();
                let p = i128::from(p);
                assert!(
                    p > lo - 10 && p < hi + 10,
                    "sigma {sigma} j {j} u {u}: {p} vs [{lo}, {hi}]"
                );
                assert!(
                    i128::from(t.squeeze[j]) <= lo,
                    "sigma {sigma} j {j}: squeeze too high"
                );
            }
        }
    }

    /// A generator that replays a script of 32-bit words (`next_u64` takes two, low first).
    struct Script(Vec<u32>, usize);

    impl RngCore for Script {
        fn next_u32(&mut self) -> u32 {
            let w = self.0[self.1];
            self.1 += 1;
            w
        }
        fn next_u64(&mut self) -> u64 {
            let lo = u64::from(self.next_u32());
            (u64::from(self.next_u32()) << 32) | lo
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for b in dest {
                *b = self.next_u32() as u8;
            }
        }
    }

    /// The lazy alias choice (24 offset bits first, 32 more only on a tie with the threshold's
    /// top bits) equals the plain 56-bit comparison, on random words and on forced ties, and
    /// draws the second word only on a tie.
    #[test]
    fn lazy_alias_choice_equals_the_full_comparison() {
        let mut rng = seeded_rng(12);
        for sigma in SIGMAS {
            let t = table(sigma);
            for i in 0..4000 {
                let slot = (rng.next_u64() % SLOTS as u64) as usize;
                let tie = i % 2 == 0 && t.thr[slot] < SLOT_CAP;
                let top = if tie {
                    t.thr[slot] >> 32
                } else {
                    rng.next_u64() & 0x00FF_FFFF
                };
                let rest = match i % 8 {
                    0 => t.thr[slot] as u32,
                    2 => (t.thr[slot] as u32).wrapping_sub(1),
                    _ => rng.next_u32(),
                };
                let first = ((slot as u32) << 24) | top as u32;
                let mut script = Script(vec![first, rest], 0);
                let got = t.entry(&mut Bits::new(&mut script));
                let offset = (top << 32) | u64::from(rest);
                let want = if offset < t.thr[slot] {
                    slot
                } else {
                    usize::from(t.alias[slot])
                };
                assert_eq!(got, want, "sigma {sigma} slot {slot} offset {offset}");
                assert_eq!(script.1, if tie { 2 } else { 1 }, "words drawn");
            }
        }
    }

    /// Bucket widths are powers of two (the offset takes exactly log2(w) bits), about
    /// sigma / 26.
    #[test]
    fn bucket_width_is_a_power_of_two() {
        for sigma in SIGMAS {
            let t = table(sigma);
            assert!(t.width.is_power_of_two(), "sigma {sigma}: w = {}", t.width);
            // ceil(floor(sigma) / 26) <= w < 2 ceil(floor(sigma) / 26).
            let base = (sigma.floor() / 26.0).ceil();
            assert!(t.width as f64 >= base && (t.width as f64) < 2.0 * base);
        }
    }

    /// The fast decision (squeeze, fixed point, slow fallback) and the exact slow path give
    /// the same answer for the same uniform V, including V's first word close to p(x).
    #[test]
    fn fast_and_slow_decisions_agree() {
        let mut rng = seeded_rng(9);
        let mut near = 0;
        for sigma in [2.5, 16.0, 100.0, 3e5] {
            let t = table(sigma);
            for i in 0..3000 {
                let j = (rng.next_u64() % t.buckets as u64) as usize;
                let u = rng.next_u64() % t.width;
                let mag = j as u64 * t.width + u;
                let p = t.p_q64(t.c[j], t.r_q64(t.m(j as u64, u).unwrap())).unwrap();
                let v = if i % 2 == 0 {
                    near += 1;
                    p.wrapping_add(rng.next_u64() % 4096).wrapping_sub(2048)
                } else {
                    rng.next_u64()
                };
                let seed = rng.next_u64();
                let mut r1 = seeded_rng(seed);
                let mut r2 = seeded_rng(seed);
                let fast = if v < t.squeeze[j] {
                    true
                } else {
                    t.decide(&mut Bits::new(&mut r1), v, j, u, mag)
                };
                let slow = t.slow_bucket(&mut Bits::new(&mut r2), v, j, mag);
                assert_eq!(fast, slow, "sigma {sigma} j {j} u {u} v {v} p {p}");
            }
        }
        assert!(near > 4000);
    }

    /// With the tail moved in to L ~ 1 or 2 sigma (so that it carries real mass), the tail
    /// path is taken as often as the exact tail mass says, and the samples follow the exact
    /// pmf (chi-square on bins of sigma / 4; both tests at level about 1e-4, fixed seeds).
    #[test]
    fn tail_path_frequency_and_distribution() {
        for (sigma, at, seed) in [(3.0, 1u64, 3u64), (20.0, 1, 1), (1000.0, 2, 2)] {
            let (n, d) = DiscreteGaussian::new(sigma)
                .unwrap()
                .sigma_squared_rational();
            let t = FastGaussian::with_tail_at(n, d, at).unwrap();
            let var = n as f64 / d as f64;
            let l = t.tail_start as i64;
            let samples = 40_000;
            let mut rng = seeded_rng(seed);
            let mut bits = Bits::new(&mut rng);
            let xs: Vec<i64> = (0..samples).map(|_| t.sample(&mut bits)).collect();
            let half = (12.0 * sigma) as i64;
            let weight = |x: i64| (-(x as f64).powi(2) / (2.0 * var)).exp();
            let z: f64 = (-half..=half).map(weight).sum();
            let tail: f64 = (-half..=half)
                .filter(|x| x.abs() >= l)
                .map(weight)
                .sum::<f64>()
                / z;
            let observed = xs.iter().filter(|x| x.abs() >= l).count() as f64 / samples as f64;
            let se = (tail * (1.0 - tail) / samples as f64).sqrt();
            assert!(
                ((observed - tail) / se).abs() < 3.9,
                "sigma {sigma}: tail {observed} vs {tail}"
            );
            assert!(tail > 0.04, "the test must exercise the tail: {tail}");
            // Chi-square over bins of width sigma / 4 (pooled to >= 5 expected).
            let width = ((sigma / 4.0) as i64).max(1);
            let bins = (2 * half / width + 1) as usize;
            let mut probs = vec![0.0; bins];
            for x in -half..=half {
                probs[((x + half) / width) as usize] += weight(x) / z;
            }
            let mut counts = vec![0.0; bins];
            for &x in &xs {
                counts[((x.clamp(-half, half) + half) / width) as usize] += 1.0;
            }
            let (mut stat, mut dof, mut o, mut e) = (0.0, 0usize, 0.0, 0.0);
            for (c, p) in counts.iter().zip(&probs) {
                o += c;
                e += p * samples as f64;
                if e >= 5.0 {
                    stat += (o - e) * (o - e) / e;
                    dof += 1;
                    o = 0.0;
                    e = 0.0;
                }
            }
            // Chi-square critical value at level 1e-4 (Wilson-Hilferty approximation).
            let k = (dof - 1) as f64;
            let crit = k * (1.0 - 2.0 / (9.0 * k) + 3.719 * (2.0 / (9.0 * k)).sqrt()).powi(3);
            assert!(
                stat < crit,
                "sigma {sigma}: chi-square {stat} on {k} dof > {crit}"
            );
        }
    }

    #[test]
    fn sampling_is_reproducible() {
        let t = table(300.0);
        let draw = |seed| {
            let mut rng = seeded_rng(seed);
            let mut bits = Bits::new(&mut rng);
            (0..500).map(|_| t.sample(&mut bits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(4), draw(4));
        assert_ne!(draw(4), draw(5));
    }
}
