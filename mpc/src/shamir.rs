//! t-of-n Shamir secret sharing over the prime field of order
//! l = 2^252 + 27742317777372353535851937790883648493 (curve25519-dalek's `Scalar`).
//!
//! A secret is the constant term of a random polynomial of degree `t - 1`; the share of the
//! holder with evaluation point `x` (never 0) is the polynomial at `x`. Any `t` shares
//! determine the secret by Lagrange interpolation at 0; any `t - 1` shares are uniformly
//! distributed and independent of the secret.

use std::collections::BTreeMap;

use curve25519_dalek::Scalar;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

use crate::crypto::SecretScalar;
use crate::error::{Error, Result};

/// Evaluations of a fresh random polynomial of degree `threshold - 1` with constant term
/// `secret` at the points `xs` (all distinct and non-zero).
///
/// # Errors
/// [`Error::InvalidParameter`] if `threshold == 0`, a point is 0, or points repeat.
///
/// # Example
/// ```rust
/// use sotto_mpc::crypto::SecretScalar;
/// use sotto_mpc::shamir::{reconstruct, split};
/// let mut rng = sotto_dp::rng::seeded_rng(1);
/// let secret = SecretScalar::random(&mut rng);
/// let shares = split(&secret, 3, &[1, 2, 3, 4, 5], &mut rng)?;
/// let some: Vec<_> = [(2, shares[1].clone()), (4, shares[3].clone()), (5, shares[4].clone())].into();
/// let back = reconstruct(&some, 3)?;
/// assert!(back.ct_eq(&secret));
/// # Ok::<(), sotto_mpc::Error>(())
/// ```
pub fn split<R: RngCore + CryptoRng + ?Sized>(
    secret: &SecretScalar,
    threshold: usize,
    xs: &[u32],
    rng: &mut R,
) -> Result<Vec<SecretScalar>> {
    if threshold == 0 {
        return Err(Error::invalid("threshold", threshold, "must be at least 1"));
    }
    check_points(xs.iter().copied())?;
    let mut coeffs: Vec<SecretScalar> = Vec::with_capacity(threshold);
    coeffs.push(secret.clone());
    for _ in 1..threshold {
        coeffs.push(SecretScalar::random(rng));
    }
    let out = xs
        .iter()
        .map(|&x| {
            let x = Scalar::from(x);
            let mut acc = Scalar::ZERO;
            for c in coeffs.iter().rev() {
                acc = acc * x + c.0;
            }
            SecretScalar(acc)
        })
        .collect();
    drop(coeffs);
    Ok(out)
}

fn check_points(xs: impl Iterator<Item = u32>) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for x in xs {
        if x == 0 {
            return Err(Error::invalid("x", x, "evaluation points must be non-zero"));
        }
        if !seen.insert(x) {
            return Err(Error::invalid("x", x, "evaluation points must be distinct"));
        }
    }
    Ok(())
}

/// Lagrange coefficients at 0 for the points `xs` (distinct, non-zero):
/// `lambda_i = prod_{j != i} x_j / (x_j - x_i)`.
///
/// # Errors
/// [`Error::InvalidParameter`] for a zero or repeated point.
pub fn lagrange_at_zero(xs: &[u32]) -> Result<Vec<Scalar>> {
    Ok(lagrange_at_zero_many(&[xs])?.pop().unwrap_or_default())
}

/// Lagrange coefficients at 0 for several point sets at once (each as in
/// [`lagrange_at_zero`]), with one batch inversion for all of them. The products
/// `x_i * prod_{j != i} (x_j - x_i)` are accumulated in 128-bit integers (the points are
/// below 2^32, so at least four differences fit, more for smaller ids) and only then lifted to
/// the field, which is several times cheaper than doing the products in the field.
///
/// The coefficients depend only on the (public) points, and a training run unmasks with the
/// same responders round after round, so computed sets are kept in a small process-wide cache
/// ([`LAGRANGE_CACHE_SCALARS`] coefficients at most; it is emptied when full). A cached set
/// costs a copy instead of a field inversion (about 8 us per session with 4 parties, half of
/// the aggregator's unmasking work besides the mask expansion).
///
/// # Errors
/// [`Error::InvalidParameter`] for a zero or repeated point in any set.
pub fn lagrange_at_zero_many(sets: &[&[u32]]) -> Result<Vec<Vec<Scalar>>> {
    let cached: Vec<Option<Vec<Scalar>>> = match LAGRANGE_CACHE.lock() {
        Ok(cache) => sets.iter().map(|xs| cache.get(xs).cloned()).collect(),
        Err(_) => vec![None; sets.len()],
    };
    let missing: Vec<&[u32]> = sets
        .iter()
        .zip(&cached)
        .filter(|(_, c)| c.is_none())
        .map(|(xs, _)| *xs)
        .collect();
    let mut fresh = Vec::new();
    if !missing.is_empty() {
        fresh = lagrange_uncached(missing.iter().copied())?;
        if let Ok(mut cache) = LAGRANGE_CACHE.lock() {
            for (xs, coeffs) in missing.iter().zip(&fresh) {
                cache.insert(xs, coeffs);
            }
        }
    }
    // The fresh sets fill the cache misses in order.
    let mut fresh = fresh.into_iter();
    Ok(cached
        .into_iter()
        .map(|c| c.or_else(|| fresh.next()).unwrap_or_default())
        .collect())
}

/// The most coefficients [`lagrange_at_zero_many`] keeps cached (2 MiB).
pub const LAGRANGE_CACHE_SCALARS: usize = 1 << 16;

/// Cached Lagrange coefficients by point set (public values only).
struct LagrangeCache {
    sets: std::collections::HashMap<Vec<u32>, Vec<Scalar>>,
    scalars: usize,
}

impl LagrangeCache {
    fn get(&self, xs: &[u32]) -> Option<&Vec<Scalar>> {
        self.sets.get(xs)
    }

    fn insert(&mut self, xs: &[u32], coeffs: &[Scalar]) {
        if coeffs.len() > LAGRANGE_CACHE_SCALARS {
            return;
        }
        if self.scalars + coeffs.len() > LAGRANGE_CACHE_SCALARS {
            self.sets.clear();
            self.scalars = 0;
        }
        if self.sets.insert(xs.to_vec(), coeffs.to_vec()).is_none() {
            self.scalars += coeffs.len();
        }
    }
}

static LAGRANGE_CACHE: std::sync::LazyLock<std::sync::Mutex<LagrangeCache>> =
    std::sync::LazyLock::new(|| {
        std::sync::Mutex::new(LagrangeCache {
            sets: std::collections::HashMap::new(),
            scalars: 0,
        })
    });

/// [`lagrange_at_zero_many`] without the cache.
fn lagrange_uncached<'a>(
    sets: impl Iterator<Item = &'a [u32]> + Clone,
) -> Result<Vec<Vec<Scalar>>> {
    let mut dens = Vec::new();
    let mut nums = Vec::new();
    for xs in sets.clone() {
        check_points(xs.iter().copied())?;
        // N = prod_j x_j; lambda_i = N / (x_i * prod_{j != i} (x_j - x_i)).
        nums.push(product(xs.iter().map(|&x| (u64::from(x), false))));
        for (i, &xi) in xs.iter().enumerate() {
            let diffs = xs
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &xj)| {
                    let (a, b) = (u64::from(xj), u64::from(xi));
                    if a > b { (a - b, false) } else { (b - a, true) }
                });
            dens.push(product(
                std::iter::once((u64::from(xi), false)).chain(diffs),
            ));
        }
    }
    Scalar::invert_batch_alloc(&mut dens);
    let mut it = dens.into_iter();
    Ok(sets
        .zip(nums)
        .map(|(xs, n)| it.by_ref().take(xs.len()).map(|d| n * d).collect())
        .collect())
}

/// The product in the field of the signed integers `(magnitude < 2^32, negative)`: as many
/// factors as fit are multiplied exactly in a `u128` before each field multiplication (about
/// twelve party-id-sized factors per field multiplication for a thousand parties). The
/// branches depend only on the (public) evaluation points.
fn product(factors: impl Iterator<Item = (u64, bool)>) -> Scalar {
    let mut acc = Scalar::ONE;
    let mut chunk: u128 = 1;
    let mut negative = false;
    for (m, neg) in factors {
        negative ^= neg;
        let bits_chunk = 128 - chunk.leading_zeros();
        let bits_m = 64 - m.leading_zeros();
        if bits_chunk + bits_m > 128 {
            acc *= Scalar::from(chunk);
            chunk = 1;
        }
        chunk *= u128::from(m);
    }
    if chunk != 1 {
        acc *= Scalar::from(chunk);
    }
    if negative { -acc } else { acc }
}

/// Whether `bytes` is the canonical encoding of a field element (little-endian, below l),
/// in constant time, without the field reduction [`Scalar::from_canonical_bytes`] performs.
pub(crate) fn is_canonical(bytes: &[u8; 32]) -> bool {
    // l = 2^252 + 27742317777372353535851937790883648493, little-endian 64-bit limbs.
    const L: [u64; 4] = [
        0x5812_631a_5cf5_d3ed,
        0x14de_f9de_a2f7_9cd6,
        0,
        0x1000_0000_0000_0000,
    ];
    let mut borrow = 0u64;
    for (i, l) in L.iter().enumerate() {
        let mut limb = [0u8; 8];
        limb.copy_from_slice(&bytes[8 * i..8 * i + 8]);
        let v = u64::from_le_bytes(limb);
        let (d1, b1) = v.overflowing_sub(*l);
        let (_, b2) = d1.overflowing_sub(borrow);
        borrow = u64::from(b1 | b2);
    }
    // bytes - l borrows exactly when bytes < l.
    borrow == 1
}

/// Combines share values with precomputed Lagrange coefficients.
pub fn combine(coeffs: &[Scalar], ys: &[&SecretScalar]) -> SecretScalar {
    let mut acc = Scalar::ZERO;
    for (c, y) in coeffs.iter().zip(ys) {
        acc += c * y.0;
    }
    SecretScalar(acc)
}

/// Combines canonical share encodings with precomputed Lagrange coefficients; `None` if an
/// encoding is not canonical.
///
/// The products `c_i * y_i` are summed as exact 512-bit integers (up to 63 at a time, which
/// cannot overflow since each is below 2^506) and reduced modulo l once per 63 terms, instead of
/// one field multiplication and addition per share. Constant time; the accumulator is zeroized.
pub(crate) fn combine_canonical(coeffs: &[[u64; 4]], ys: &[&[u8; 32]]) -> Option<SecretScalar> {
    if !ys.iter().all(|y| is_canonical(y)) {
        return None;
    }
    let mut total = SecretScalar(Scalar::ZERO);
    // Column sums of the 64x64-bit partial products (low halves in column i + j, high halves
    // in column i + j + 1): at most 8 terms below 2^64 per share and column, so 63 shares stay
    // below 2^73; one carry pass per chunk gives the exact 512-bit sum.
    let mut cols = zeroize::Zeroizing::new([0u128; 8]);
    let mut wide = zeroize::Zeroizing::new([0u8; 64]);
    let n = coeffs.len().min(ys.len());
    let mut start = 0;
    while start < n {
        let end = (start + 63).min(n);
        cols.fill(0);
        let cs = coeffs.get(start..end).unwrap_or_default();
        let vs = ys.get(start..end).unwrap_or_default();
        for (a, y) in cs.iter().zip(vs) {
            let mut b = limbs(y);
            for i in 0..4 {
                for j in 0..4 {
                    let p = u128::from(a[i]) * u128::from(b[j]);
                    cols[i + j] += u128::from(p as u64);
                    cols[i + j + 1] += p >> 64;
                }
            }
            b.zeroize();
        }
        let mut carry: u128 = 0;
        for (k, col) in cols.iter().enumerate() {
            let t = *col + carry;
            wide[8 * k..8 * k + 8].copy_from_slice(&(t as u64).to_le_bytes());
            carry = t >> 64;
        }
        // carry == 0: the sum of at most 63 products of values below 2^253 is below 2^512.
        let mut part = SecretScalar(Scalar::from_bytes_mod_order_wide(&wide));
        total.0 += part.0;
        part.0.zeroize();
        start = end;
    }
    Some(total)
}

/// The little-endian 64-bit limbs of a (public) coefficient, for [`combine_canonical`].
pub(crate) fn scalar_limbs(s: &Scalar) -> [u64; 4] {
    limbs(s.as_bytes())
}

/// Little-endian 64-bit limbs of a 32-byte little-endian integer.
fn limbs(b: &[u8; 32]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (o, chunk) in out.iter_mut().zip(b.chunks_exact(8)) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        *o = u64::from_le_bytes(w);
    }
    out
}

/// The secret from the first `threshold` of `shares` (`(x, y)` pairs).
///
/// # Errors
/// [`Error::InvalidParameter`] if fewer than `threshold` shares are given (or `threshold`
/// is 0) or points repeat.
pub fn reconstruct(shares: &[(u32, SecretScalar)], threshold: usize) -> Result<SecretScalar> {
    if threshold == 0 || shares.len() < threshold {
        return Err(Error::invalid(
            "shares",
            shares.len(),
            format!("at least threshold = {threshold} (>= 1) shares are needed"),
        ));
    }
    let used = shares.get(..threshold).unwrap_or(shares);
    let xs: Vec<u32> = used.iter().map(|(x, _)| *x).collect();
    let coeffs = lagrange_at_zero(&xs)?;
    let ys: Vec<&SecretScalar> = used.iter().map(|(_, y)| y).collect();
    Ok(combine(&coeffs, &ys))
}

/// Outcome of [`reconstruct_checked`] when the shares are inconsistent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckedFailure<H> {
    /// Leaving out this holder's share gives a secret that passes the check: its share is bad.
    BadShare(H),
    /// No single bad share explains the failure (or there are too few shares to tell).
    Unidentified,
}

/// Reconstructs from `shares` (holder, x, y) and verifies the result with `check` (e.g.
/// against a public key). If the check fails and there are spare shares, finds a single
/// holder whose share, left out, makes the check pass. Lagrange coefficients are cached in
/// `cache` by point set.
///
/// # Errors
/// `Err(CheckedFailure)` when the check cannot be satisfied (or fewer than `threshold` shares).
pub fn reconstruct_checked<H: Copy>(
    shares: &[(H, u32, &SecretScalar)],
    threshold: usize,
    cache: &mut BTreeMap<Vec<u32>, Vec<Scalar>>,
    check: impl Fn(&SecretScalar) -> bool,
) -> std::result::Result<SecretScalar, CheckedFailure<H>> {
    let attempt = |skip: Option<usize>, cache: &mut BTreeMap<Vec<u32>, Vec<Scalar>>| {
        let chosen: Vec<&(H, u32, &SecretScalar)> = shares
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(_, s)| s)
            .take(threshold)
            .collect();
        if threshold == 0 || chosen.len() < threshold {
            return None;
        }
        let xs: Vec<u32> = chosen.iter().map(|s| s.1).collect();
        let coeffs = match cache.get(&xs) {
            Some(c) => c.clone(),
            None => {
                let c = lagrange_at_zero(&xs).ok()?;
                cache.insert(xs, c.clone());
                c
            }
        };
        let ys: Vec<&SecretScalar> = chosen.iter().map(|s| s.2).collect();
        let secret = combine(&coeffs, &ys);
        check(&secret).then_some(secret)
    };
    if let Some(s) = attempt(None, cache) {
        return Ok(s);
    }
    if shares.len() > threshold {
        for i in 0..shares.len().min(threshold + 1) {
            if attempt(Some(i), cache).is_some()
                && let Some((h, _, _)) = shares.get(i)
            {
                return Err(CheckedFailure::BadShare(*h));
            }
        }
    }
    Err(CheckedFailure::Unidentified)
}

impl SecretScalar {
    /// Constant-time equality.
    pub fn ct_eq(&self, other: &SecretScalar) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.ct_eq(&other.0))
    }

    /// The canonical 32-byte encoding (for an explicit wire share).
    pub(crate) fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Parses a canonical encoding; `None` if not canonical.
    pub(crate) fn from_canonical(mut bytes: [u8; 32]) -> Option<SecretScalar> {
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(bytes));
        bytes.zeroize();
        s.map(SecretScalar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sotto_dp::rng::seeded_rng;

    proptest! {
        #[test]
        fn any_t_shares_reconstruct(n in 1usize..20, t_frac in 0.0f64..1.0, seed in any::<u64>(), pick in any::<u64>()) {
            let t = 1 + ((n - 1) as f64 * t_frac) as usize;
            let mut rng = seeded_rng(seed);
            let secret = SecretScalar::random(&mut rng);
            let xs: Vec<u32> = (1..=n as u32).collect();
            let shares = split(&secret, t, &xs, &mut rng).unwrap();
            // A pseudo-random subset of size t.
            let mut idx: Vec<usize> = (0..n).collect();
            let mut p = pick;
            for i in (1..n).rev() { idx.swap(i, (p % (i as u64 + 1)) as usize); p = p.rotate_left(7) ^ 0x9e37; }
            let subset: Vec<(u32, SecretScalar)> = idx[..t].iter().map(|&i| (xs[i], shares[i].clone())).collect();
            prop_assert!(reconstruct(&subset, t).unwrap().ct_eq(&secret));
            if t > 1 {
                // t - 1 shares interpolate (as if degree t - 2) to something else.
                let fewer = &subset[..t - 1];
                prop_assert!(!reconstruct(fewer, t - 1).unwrap().ct_eq(&secret));
                prop_assert!(reconstruct(fewer, t).is_err());
            }
        }
    }

    /// `lambda_i = prod_{j != i} x_j / (x_j - x_i)` computed directly in the field: the
    /// reference for the integer-product implementation.
    fn lagrange_reference(xs: &[u32]) -> Vec<Scalar> {
        let pts: Vec<Scalar> = xs.iter().map(|&x| Scalar::from(x)).collect();
        pts.iter()
            .enumerate()
            .map(|(i, xi)| {
                let (mut num, mut den) = (Scalar::ONE, Scalar::ONE);
                for (j, xj) in pts.iter().enumerate() {
                    if i != j {
                        num *= xj;
                        den *= xj - xi;
                    }
                }
                num * den.invert()
            })
            .collect()
    }

    proptest! {
        #[test]
        fn batched_lagrange_matches_the_plain_one(sets in proptest::collection::vec(
            proptest::collection::btree_set(1u32..=(1 << 20) + 1, 1..40), 1..5)) {
            let sets: Vec<Vec<u32>> = sets.into_iter().map(|s| s.into_iter().rev().collect()).collect();
            let refs: Vec<&[u32]> = sets.iter().map(|s| s.as_slice()).collect();
            let many = lagrange_at_zero_many(&refs).unwrap();
            for (xs, got) in sets.iter().zip(&many) {
                prop_assert_eq!(&lagrange_reference(xs), got);
                prop_assert_eq!(&lagrange_at_zero(xs).unwrap(), got);
            }
        }

        #[test]
        fn wide_combination_matches_field_arithmetic(n in 1usize..140, seed in any::<u64>()) {
            let mut rng = seeded_rng(seed);
            let cs: Vec<Scalar> = (0..n).map(|_| SecretScalar::random(&mut rng).0).collect();
            let mut ys: Vec<[u8; 32]> = (0..n).map(|_| SecretScalar::random(&mut rng).to_bytes()).collect();
            // Extreme values too: l - 1 everywhere in the first few.
            for y in ys.iter_mut().take(3) {
                *y = (-Scalar::ONE).to_bytes();
            }
            let refs: Vec<&[u8; 32]> = ys.iter().collect();
            let mut expect = Scalar::ZERO;
            for (c, y) in cs.iter().zip(&ys) {
                expect += c * Scalar::from_canonical_bytes(*y).unwrap();
            }
            let cl: Vec<[u64; 4]> = cs.iter().map(scalar_limbs).collect();
            let got = combine_canonical(&cl, &refs).unwrap();
            prop_assert_eq!(got.0, expect);
            let mut bad = ys.clone();
            bad[n - 1] = [0xff; 32];
            let refs: Vec<&[u8; 32]> = bad.iter().collect();
            prop_assert!(combine_canonical(&cl, &refs).is_none());
        }

        #[test]
        fn canonical_check_matches_dalek(mut bytes in any::<[u8; 32]>(), top in 0u8..3) {
            // Bias the top byte towards l's (0x10) so both outcomes are common.
            bytes[31] = [0x0f, 0x10, 0x11][top as usize];
            let dalek = bool::from(Scalar::from_canonical_bytes(bytes).is_some());
            prop_assert_eq!(is_canonical(&bytes), dalek);
        }
    }

    #[test]
    fn cached_lagrange_coefficients_match_fresh_ones() {
        let sets: [&[u32]; 3] = [&[1, 2, 3], &[2, 5, 9, 11], &[1, 2, 3]];
        let fresh = lagrange_uncached(sets.iter().copied()).unwrap();
        // The first call may fill the cache, the second reads it; both match the reference.
        for _ in 0..2 {
            let got = lagrange_at_zero_many(&sets).unwrap();
            assert_eq!(got, fresh);
            for (xs, c) in sets.iter().zip(&got) {
                assert_eq!(c, &lagrange_reference(xs));
            }
        }
        // Invalid sets are refused whether or not valid ones around them are cached.
        assert!(lagrange_at_zero_many(&[&[1, 2, 3], &[4, 4]]).is_err());
        assert!(lagrange_at_zero_many(&[&[0, 1]]).is_err());
    }

    #[test]
    fn canonical_check_edges() {
        let mut l = (-Scalar::ONE).to_bytes();
        l[0] += 1; // l - 1 + 1 (no carry: the low byte of l is 0xed)
        assert!(!is_canonical(&l));
        let mut below = l;
        below[0] -= 1;
        assert!(is_canonical(&below));
        let mut above = l;
        above[0] += 1;
        assert!(!is_canonical(&above));
        assert!(is_canonical(&[0; 32]));
        assert!(!is_canonical(&[0xff; 32]));
        assert!(lagrange_at_zero_many(&[&[1, 2], &[3, 0]]).is_err());
        assert!(lagrange_at_zero_many(&[&[2, 2]]).is_err());
    }

    #[test]
    fn checked_reconstruction_finds_a_bad_share() {
        let mut rng = seeded_rng(9);
        let secret = SecretScalar::random(&mut rng);
        let pk = secret.public_key();
        let xs: Vec<u32> = (1..=6).collect();
        let mut shares = split(&secret, 3, &xs, &mut rng).unwrap();
        shares[1] = SecretScalar::random(&mut rng);
        let list: Vec<(u32, u32, &SecretScalar)> = xs
            .iter()
            .zip(&shares)
            .map(|(&x, s)| (x * 10, x, s))
            .collect();
        let mut cache = BTreeMap::new();
        let r = reconstruct_checked(&list, 3, &mut cache, |s| s.public_key() == pk);
        assert_eq!(r.unwrap_err(), CheckedFailure::BadShare(20));
        let r = reconstruct_checked(&list[2..], 3, &mut cache, |s| s.public_key() == pk);
        assert!(r.unwrap().ct_eq(&secret));
        assert!(split(&secret, 2, &[1, 1], &mut rng).is_err());
        assert!(split(&secret, 2, &[0, 1], &mut rng).is_err());
    }
}
