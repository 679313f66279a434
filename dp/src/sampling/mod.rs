//! Exact samplers on integers.
//!
//! Everything here is exact: the output distribution is exactly the stated one, given a
//! uniform random bit source. No sample is ever derived from a floating-point uniform
//! (Mironov 2012); parameters given as `f64` are converted to exact rationals, rounded in the
//! direction that adds noise (against the user).
//!
//! The algorithms are those of Canonne, Kamath and Steinke, "The Discrete Gaussian for
//! Differential Privacy" (NeurIPS 2020, arXiv:2004.00010), called CKS below:
//! Bernoulli(exp(-x)) (their Algorithm 1), discrete Laplace (Algorithm 2) and discrete
//! Gaussian (Algorithm 3), all on integer arithmetic (`u128`; a 256-bit cold path where a
//! square does not fit). Random bits come one at a time from a buffered `u64` (a Bernoulli
//! trial with a large denominator costs about two bits), or as whole 32-bit words where a
//! multiply is cheaper than a data-dependent loop (uniform integers, and Bernoulli trials with
//! denominators up to 2^32, drawn as `uniform_below(den) < num`).
//!
//! # Exactness and its one limit
//! Samples are returned as `i64`. A proposal that does not fit (|x| > 2^63 - 1, or an
//! intermediate `u64` overflow in the discrete Laplace sampler) is rejected and redrawn, so the
//! output is exactly the stated distribution *conditioned on |x| staying below a bound of at
//! least 2^11 scales* (discrete Laplace with the largest supported scale 2^52) or 2^36 sigmas
//! (discrete Gaussian with the largest supported sigma 2^26). That event has probability below
//! exp(-2^11) in the worst case (e^-2048, about 10^-889), far below the probability that the
//! generator itself is broken. The table-driven discrete Gaussian sampler used for
//! sigma >= [`FAST_MIN_SIGMA`] (`fast.rs`) conditions on |x| < 300 sigma instead (probability
//! of the excluded event below exp(-45000)).
//!
//! See `docs/privacy/sampling.md` for the derivations and the statistical tests.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rand_core::{CryptoRng, RngCore};

use crate::error::check_positive;
use crate::{Error, Result};

mod distributed;
mod exact;
mod fast;
mod lazy_exp;
pub use distributed::DistributedDiscreteGaussian;

use exact::Bits;
use fast::FastGaussian;

/// A uniform integer in `[0, n)`, exactly (rejection sampling, no modulo bias).
///
/// Uses Lemire's multiply-shift method with rejection of the biased region (one 32- or 64-bit
/// draw in the common case; powers of two take exactly `log2(n)` bits).
///
/// # Errors
/// [`crate::Error::InvalidParameter`] if `n == 0`.
///
/// # Example
/// ```rust
/// use sotto_dp::{rng::seeded_rng, sampling::uniform_below};
/// let mut rng = seeded_rng(7);
/// let die = uniform_below(&mut rng, 6)? + 1;
/// assert!((1..=6).contains(&die));
/// # Ok::<(), sotto_dp::Error>(())
/// ```
pub fn uniform_below<R: RngCore + CryptoRng + ?Sized>(rng: &mut R, n: u64) -> Result<u64> {
    if n == 0 {
        return Err(Error::invalid(
            "n",
            n,
            "the range [0, n) is empty; pass n >= 1",
        ));
    }
    Ok(Bits::new(rng).below(n))
}

/// Bernoulli(`num / den`), exactly.
///
/// For `den <= 2^32`: one exactly uniform draw in `[0, den)` compared with `num`. Otherwise:
/// compares a lazily drawn uniform binary expansion U = 0.b1 b2 ... with the binary expansion
/// of `num / den` (long division) and returns `U < num / den` at the first differing bit:
/// two random bits in expectation, no division.
///
/// # Errors
/// [`crate::Error::InvalidParameter`] if `den == 0` or `num > den`.
///
/// # Example
/// ```rust
/// use sotto_dp::{rng::seeded_rng, sampling::bernoulli_rational};
/// let mut rng = seeded_rng(7);
/// let heads = (0..1000).filter(|_| bernoulli_rational(&mut rng, 1, 3).unwrap()).count();
/// assert!((250..420).contains(&heads));
/// assert!(bernoulli_rational(&mut rng, 1, 0).is_err());
/// ```
pub fn bernoulli_rational<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<bool> {
    if den == 0 {
        return Err(Error::invalid(
            "den",
            den,
            "the probability num / den needs a positive denominator",
        ));
    }
    if num > den {
        return Err(Error::invalid(
            "num",
            num,
            format!("a probability num / den must be at most 1; pass num <= den = {den}"),
        ));
    }
    Ok(Bits::new(rng).bernoulli_rational(num, den))
}

/// Bernoulli(exp(-`num / den`)), exactly (Canonne, Kamath, Steinke 2020, Algorithm 1).
///
/// For x = `num / den` <= 1: draw A_K ~ Bernoulli(x / K) for K = 1, 2, ... until the first
/// failure and return whether that K is odd. For x > 1: floor(x) independent
/// Bernoulli(exp(-1)) trials must all succeed, then a trial for the fractional part. Only
/// integer arithmetic is used; where `den * K` would overflow, Bernoulli(x / K) is drawn as
/// Bernoulli(x) AND Bernoulli(1 / K), so there is no overflow for any input. The expected
/// running time is bounded for every `x` (a huge `x` fails its first exp(-1) trials quickly).
///
/// # Errors
/// [`crate::Error::InvalidParameter`] if `den == 0`.
///
/// # Example
/// ```rust
/// use sotto_dp::{rng::seeded_rng, sampling::bernoulli_exp_neg};
/// let mut rng = seeded_rng(7);
/// // exp(-0) = 1
/// assert!(bernoulli_exp_neg(&mut rng, 0, 5)?);
/// // exp(-ln 2) is about 1/2: ln 2 ~ 693147 / 1000000
/// let hits = (0..1000).filter(|_| bernoulli_exp_neg(&mut rng, 693_147, 1_000_000).unwrap()).count();
/// assert!((420..580).contains(&hits));
/// # Ok::<(), sotto_dp::Error>(())
/// ```
pub fn bernoulli_exp_neg<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<bool> {
    if den == 0 {
        return Err(Error::invalid(
            "den",
            den,
            "the exponent num / den needs a positive denominator",
        ));
    }
    Ok(Bits::new(rng).bernoulli_exp_neg(num, den))
}

/// Decomposes a positive finite `f64` into `(mantissa, exponent)` with `x = mantissa * 2^exponent`.
fn decompose(x: f64) -> (u64, i32) {
    let bits = x.to_bits();
    let exp_bits = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    if exp_bits == 0 {
        // Subnormal.
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp_bits - 1075)
    }
}

/// ceil(`m * 2^shift`) for `m > 0`, or `None` if it does not fit in a `u128`.
fn ceil_shift(m: u128, shift: i32) -> Option<u128> {
    if shift >= 0 {
        let s = u32::try_from(shift).ok()?;
        if s >= 128 || m.leading_zeros() < s {
            return None;
        }
        Some(m << s)
    } else {
        let s = shift.unsigned_abs();
        if s >= 128 {
            return Some(1);
        }
        let floor = m >> s;
        let exact = floor << s == m;
        Some(if exact { floor } else { floor + 1 })
    }
}

/// The largest discrete Laplace scale supported (2^52): the scale numerator must fit in 52
/// bits so that the conversion is exact.
pub const MAX_LAPLACE_SCALE: f64 = 4_503_599_627_370_496.0;

/// The largest discrete Gaussian sigma supported (2^26, about 6.7e7): sigma^2 must fit in 53
/// bits so that every intermediate value of the exact acceptance test fits in a `u128`.
pub const MAX_GAUSSIAN_SIGMA: f64 = 67_108_864.0;

/// The discrete Laplace distribution on the integers: P(x) proportional to exp(-|x| / scale).
///
/// # Privacy
/// Adding discrete Laplace noise of scale `b` to an integer query of L1 sensitivity `Δ` gives
/// pure `Δ / b`-differential privacy (CKS, and Ghosh, Roughgarden, Sundararajan 2009). The
/// scale really used is a rational `t / s >= scale` (rounded up: more noise, never less); the
/// sampler is exact (CKS Algorithm 2) up to the `i64` conditioning described in the
/// [module documentation](self), an event of probability below exp(-2^11) for every supported
/// scale.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteLaplace {
    /// Scale numerator: scale = t / s.
    t: u64,
    /// Scale denominator (a power of two).
    s: u64,
    /// t / s as an `f64` (exact: t < 2^53 and s is a power of two).
    scale: f64,
}

impl DiscreteLaplace {
    /// A sampler with the given `scale` (> 0). The scale actually used is a rational at least
    /// `scale` (rounded up, never less noise); [`Self::scale`] reports it.
    ///
    /// The rational is `t / 2^k` with `t <= 2^52` and `k <= 62`, as fine as those limits allow
    /// (an `f64` scale with few significant bits is represented exactly; a scale below 2^-62 is
    /// rounded up to 2^-62).
    ///
    /// # Errors
    /// [`crate::Error::InvalidParameter`] if `scale` is NaN, infinite, zero, negative, or too
    /// large to represent exactly (above [`MAX_LAPLACE_SCALE`]).
    ///
    /// # Example
    /// ```rust
    /// use sotto_dp::{rng::seeded_rng, sampling::DiscreteLaplace};
    /// let lap = DiscreteLaplace::new(2.5)?;
    /// assert_eq!(lap.scale(), 2.5); // 5 / 2 exactly
    /// let mut rng = seeded_rng(7);
    /// let mut noise = vec![0i64; 1000];
    /// lap.fill(&mut rng, &mut noise);
    /// let mean = noise.iter().sum::<i64>() as f64 / 1000.0;
    /// assert!(mean.abs() < 0.5);
    /// # Ok::<(), sotto_dp::Error>(())
    /// ```
    pub fn new(scale: f64) -> Result<Self> {
        check_positive("scale", scale)?;
        if scale > MAX_LAPLACE_SCALE {
            return Err(Error::invalid(
                "scale",
                scale,
                format!(
                    "the discrete Laplace sampler supports scales up to 2^52 = {MAX_LAPLACE_SCALE}; use a smaller scale (e.g. rescale the data)"
                ),
            ));
        }
        const T_MAX: u128 = 1 << 52;
        let (m, e) = decompose(scale);
        let m = u128::from(m);
        // The largest k in [0, 62] with t = ceil(scale * 2^k) <= 2^52 (t grows with k).
        let mut chosen = None;
        for k in (0..=62i32).rev() {
            if let Some(t) = ceil_shift(m, e + k)
                && t <= T_MAX
            {
                chosen = Some((t, k));
                break;
            }
        }
        let Some((mut t, mut k)) = chosen else {
            return Err(Error::invalid(
                "scale",
                scale,
                "cannot be represented as an exact rational; use a scale of at most 2^52",
            ));
        };
        // Reduce t / 2^k by common factors of two.
        let tz = t.trailing_zeros().min(k.unsigned_abs());
        t >>= tz;
        k -= tz as i32;
        let t = u64::try_from(t).map_err(|_| Error::Overflow {
            context: "DiscreteLaplace::new",
            hint: "use a smaller scale".into(),
        })?;
        let s = 1u64 << k;
        Ok(DiscreteLaplace {
            t,
            s,
            scale: t as f64 / s as f64,
        })
    }

    /// The scale the sampler really uses (>= the requested one).
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The exact scale as `(numerator, denominator)`: scale = numerator / denominator.
    pub fn scale_rational(&self) -> (u64, u64) {
        (self.t, self.s)
    }

    /// One sample.
    pub fn sample<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R) -> i64 {
        Bits::new(rng).discrete_laplace(self.t, self.s)
    }

    /// Fills `out` with independent samples.
    pub fn fill<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R, out: &mut [i64]) {
        let mut bits = Bits::new(rng);
        for x in out.iter_mut() {
            *x = bits.discrete_laplace(self.t, self.s);
        }
    }
}

/// From this sigma on (compared exactly: sigma^2 = N / D >= 4), [`DiscreteGaussian`] samples
/// with the table-driven exact sampler (`fast.rs`; 5 to 7.7 times faster than CKS Algorithm 3
/// in `docs/benchmarks-dp.md`); below it, with CKS Algorithm 3. Both are exact; the choice
/// affects only speed (and which values a given seed produces).
pub const FAST_MIN_SIGMA: f64 = 2.0;

/// The discrete Gaussian distribution on the integers: P(x) proportional to
/// exp(-x^2 / (2 sigma^2)) (Canonne, Kamath, Steinke 2020).
///
/// # Privacy
/// Adding discrete Gaussian noise with parameter `sigma` to an integer query of L2
/// sensitivity `Δ` gives `Δ^2 / (2 sigma^2)`-zCDP (CKS), the same as the
/// continuous Gaussian. sigma^2 is converted to a rational `N / D >= sigma^2` (rounded up:
/// more noise, never less) and the sampler is exact (CKS Algorithm 3), up to the `i64`
/// conditioning of the [module documentation](self), an event of probability below
/// exp(-2^36) for every supported sigma. The variance of the output is slightly *below*
/// sigma^2 (CKS Proposition 19); the privacy guarantee is stated in terms of sigma.
///
/// For sigma >= [`FAST_MIN_SIGMA`] the samples come from an exact table-driven sampler
/// (alias-table proposal over buckets of width about sigma / 16, acceptance decided by a
/// lazily refined comparison with rigorous integer bounds of exp; see
/// `docs/privacy/sampling.md`), built on the first call to [`Self::sample`] or [`Self::fill`]
/// (1 to 2 ms) and shared by clones made after that. Its output is conditioned on
/// |x| < 300 sigma instead, an event of probability above 1 - exp(-45000).
#[derive(Clone)]
pub struct DiscreteGaussian {
    /// sigma^2 = n / d, d a power of two, n < 2^53.
    n: u128,
    d: u128,
    /// Scale of the discrete Laplace proposal: floor(sigma) or floor(sigma) + 1, at least 1.
    t: u64,
    /// d * t (< 2^63).
    dt: u128,
    /// 2 * n * d * t^2, the denominator of the acceptance exponent.
    b: u128,
    /// The effective sigma, rounded down to an `f64` but never below the requested one.
    sigma: f64,
    /// The table-driven sampler, built on first use (`None` inside: use CKS).
    fast: OnceLock<Option<Arc<FastGaussian>>>,
}

impl PartialEq for DiscreteGaussian {
    /// Two samplers are equal when they sample the same distribution (the same exact
    /// sigma^2); whether the fast table has been built yet does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.n == other.n && self.d == other.d
    }
}

impl fmt::Debug for DiscreteGaussian {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscreteGaussian")
            .field("n", &self.n)
            .field("d", &self.d)
            .field("t", &self.t)
            .field("sigma", &self.sigma)
            .field("fast_table", &self.fast.get().map(Option::is_some))
            .finish_non_exhaustive()
    }
}

impl DiscreteGaussian {
    /// A sampler with the given `sigma` (> 0). sigma^2 is converted to a rational at least
    /// `sigma^2` (rounded up); [`Self::sigma`] reports the sigma really used.
    ///
    /// The rational is `N / 2^k` with `N < 2^53` and `k <= 62`, computed exactly from the bits
    /// of `sigma` (relative rounding below 2^-52 for sigma >= 2^-5; a sigma below 2^-31 is
    /// rounded up to 2^-31).
    ///
    /// # Errors
    /// [`crate::Error::InvalidParameter`] if `sigma` is NaN, infinite, zero, negative, or too
    /// large to sample exactly (above [`MAX_GAUSSIAN_SIGMA`] = 2^26).
    ///
    /// # Example
    /// ```rust
    /// use sotto_dp::{rng::seeded_rng, sampling::DiscreteGaussian};
    /// let dg = DiscreteGaussian::new(3.0)?;
    /// assert!(dg.sigma() >= 3.0);
    /// let mut rng = seeded_rng(7);
    /// let mut noise = vec![0i64; 10_000];
    /// dg.fill(&mut rng, &mut noise);
    /// let var = noise.iter().map(|&x| (x * x) as f64).sum::<f64>() / 10_000.0;
    /// assert!((var - 9.0).abs() < 1.0);
    /// # Ok::<(), sotto_dp::Error>(())
    /// ```
    pub fn new(sigma: f64) -> Result<Self> {
        check_positive("sigma", sigma)?;
        if sigma > MAX_GAUSSIAN_SIGMA {
            return Err(Error::invalid(
                "sigma",
                sigma,
                format!(
                    "the exact discrete Gaussian sampler supports sigma up to 2^26 = {MAX_GAUSSIAN_SIGMA}; use a smaller sigma (e.g. a coarser fixed-point scale)"
                ),
            ));
        }
        const N_LIMIT: u128 = 1 << 53;
        let (m, e) = decompose(sigma);
        let m2 = u128::from(m) * u128::from(m); // < 2^106
        let mut chosen = None;
        for k in (0..=62i32).rev() {
            if let Some(n) = ceil_shift(m2, 2 * e + k)
                && n < N_LIMIT
            {
                chosen = Some((n, k));
                break;
            }
        }
        let Some((mut n, mut k)) = chosen else {
            return Err(Error::invalid(
                "sigma",
                sigma,
                "sigma^2 cannot be represented exactly; use sigma <= 2^26",
            ));
        };
        let tz = n.trailing_zeros().min(k.unsigned_abs());
        n >>= tz;
        k -= tz as i32;
        let d: u128 = 1 << k;
        let overflow = || Error::Overflow {
            context: "DiscreteGaussian::new",
            hint: format!("sigma = {sigma} is too large for exact sampling; use sigma <= 2^26"),
        };
        // Proposal scale t (see `sample_bits`): floor(sigma) or floor(sigma) + 1, at least 1,
        // whichever accepts more often. The acceptance rate is Z_gauss / (Z_lap(t) *
        // exp(sigma^2 / (2 t^2))) with Z_lap(t) = coth(1 / (2 t)); only speed depends on t, so
        // floating point is fine for this choice.
        let s0 = (n / d).isqrt();
        // Exact: n < 2^53 and d is a power of two.
        let var = n as f64 / d as f64;
        let cost = |t: u128| {
            let t = t as f64;
            (1.0 / (2.0 * t)).tanh().recip().ln() + var / (2.0 * t * t)
        };
        let (lo, hi) = (s0.max(1), s0 + 1);
        let t128 = if cost(hi) < cost(lo) { hi } else { lo };
        let t = u64::try_from(t128).map_err(|_| overflow())?;
        let dt = d.checked_mul(t128).ok_or_else(overflow)?;
        if dt >= 1 << 63 {
            return Err(overflow());
        }
        let b = n
            .checked_mul(2)
            .and_then(|x| x.checked_mul(d))
            .and_then(|x| x.checked_mul(t128))
            .and_then(|x| x.checked_mul(t128))
            .filter(|&x| x < 1 << 126)
            .ok_or_else(overflow)?;
        // Effective sigma, rounded down to an f64 (n < 2^53 and d a power of two, so n / d is
        // exact; fix up the correctly rounded square root if it rounded up).
        let mut s = var.sqrt();
        if s.mul_add(s, -var) > 0.0 {
            s = s.next_down();
        }
        // The true effective sigma is >= the requested one, so this only repairs rounding.
        let s = s.max(sigma);
        Ok(DiscreteGaussian {
            n,
            d,
            t,
            dt,
            b,
            sigma: s,
            fast: OnceLock::new(),
        })
    }

    /// The table-driven sampler if sigma >= [`FAST_MIN_SIGMA`] (built on first use).
    fn fast_table(&self) -> Option<&FastGaussian> {
        // n / d >= FAST_MIN_SIGMA^2, exactly in integers (d <= 2^62, so the product fits).
        const MIN_SQ: u128 = (FAST_MIN_SIGMA * FAST_MIN_SIGMA) as u128;
        if self.n < MIN_SQ * self.d {
            return None;
        }
        self.fast
            .get_or_init(|| FastGaussian::new(self.n, self.d).map(Arc::new))
            .as_deref()
    }

    /// The sigma the sampler really uses (>= the requested one).
    ///
    /// The exact value is `sqrt(N / D)` ([`Self::sigma_squared_rational`]); this is that value
    /// rounded down to an `f64`, so it is safe to use in privacy accounting.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// The exact sigma^2 the sampler uses, as `(N, D)` with sigma^2 = N / D.
    pub fn sigma_squared_rational(&self) -> (u128, u128) {
        (self.n, self.d)
    }

    /// One sample.
    pub fn sample<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R) -> i64 {
        let mut bits = Bits::new(rng);
        match self.fast_table() {
            Some(fast) => fast.sample(&mut bits),
            None => self.sample_bits(&mut bits),
        }
    }

    /// Fills `out` with independent samples.
    pub fn fill<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R, out: &mut [i64]) {
        let mut bits = Bits::new(rng);
        match self.fast_table() {
            Some(fast) => {
                for x in out.iter_mut() {
                    *x = fast.sample(&mut bits);
                }
            }
            None => {
                for x in out.iter_mut() {
                    *x = self.sample_bits(&mut bits);
                }
            }
        }
    }

    /// Fills `out` with independent samples from CKS Algorithm 3 (discrete Laplace proposal),
    /// whatever sigma is: the reference sampler the table-driven one is tested and
    /// benchmarked against. Same distribution as [`Self::fill`] (up to the negligible
    /// conditioning events described on [`DiscreteGaussian`]), several times slower for
    /// sigma >= [`FAST_MIN_SIGMA`].
    ///
    /// # Example
    /// ```rust
    /// use sotto_dp::{rng::seeded_rng, sampling::DiscreteGaussian};
    /// let dg = DiscreteGaussian::new(100.0)?;
    /// let (mut a, mut b) = (vec![0i64; 4000], vec![0i64; 4000]);
    /// dg.fill(&mut seeded_rng(1), &mut a); // table-driven
    /// dg.fill_cks(&mut seeded_rng(1), &mut b); // CKS Algorithm 3: other values, same law
    /// let var = |v: &[i64]| v.iter().map(|&x| (x * x) as f64).sum::<f64>() / v.len() as f64;
    /// assert!((var(&a) / 1e4 - 1.0).abs() < 0.1 && (var(&b) / 1e4 - 1.0).abs() < 0.1);
    /// # Ok::<(), sotto_dp::Error>(())
    /// ```
    pub fn fill_cks<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R, out: &mut [i64]) {
        let mut bits = Bits::new(rng);
        for x in out.iter_mut() {
            *x = self.sample_bits(&mut bits);
        }
    }

    /// CKS Algorithm 3: propose Y from the discrete Laplace with scale t, accept with
    /// probability exp(-(|Y| - sigma^2 / t)^2 / (2 sigma^2)).
    ///
    /// The output is exactly the discrete Gaussian for *every* t > 0: the target over the
    /// proposal is proportional to exp(-(|y| - sigma^2/t)^2 / (2 sigma^2)) * exp(sigma^2 /
    /// (2 t^2)), so the acceptance probability above is the target/proposal ratio up to a
    /// constant, and it is at most 1. The choice of t only affects speed. CKS take
    /// t = floor(sigma) + 1; we take whichever of floor(sigma) (but at least one) and
    /// floor(sigma) + 1 has the higher acceptance rate, about 0.76 for large sigma. At
    /// sigma = 1 that is t = 1, which raises the acceptance from 0.54 to 0.70 and makes the
    /// proposal cheaper (t = 1 needs no uniform draw).
    ///
    /// With sigma^2 = N / D the exponent is exactly A^2 / B with A = |Y| D t - N and
    /// B = 2 N D t^2 (both integers).
    #[inline]
    fn sample_bits<R: RngCore + ?Sized>(&self, bits: &mut Bits<'_, R>) -> i64 {
        loop {
            let y = bits.discrete_laplace(self.t, 1);
            // |Y| < 2^63 and dt < 2^63: the product fits in a u128.
            let prod = u128::from(y.unsigned_abs()) * self.dt;
            let a = prod.abs_diff(self.n);
            let accept = match a.checked_mul(a) {
                Some(a2) => bits.bernoulli_exp_neg(a2, self.b),
                None => bits.bernoulli_exp_neg_square_wide(a, self.b),
            };
            if accept {
                return y;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded_rng;

    const BAD: [f64; 6] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -1.0, -0.0];

    #[test]
    fn parameter_validation() {
        let mut rng = seeded_rng(0);
        assert!(uniform_below(&mut rng, 0).is_err());
        assert_eq!(uniform_below(&mut rng, 1), Ok(0));
        assert!(bernoulli_rational(&mut rng, 1, 0).is_err());
        assert!(bernoulli_rational(&mut rng, 3, 2).is_err());
        assert_eq!(bernoulli_rational(&mut rng, 0, 5), Ok(false));
        assert_eq!(bernoulli_rational(&mut rng, 5, 5), Ok(true));
        assert!(bernoulli_exp_neg(&mut rng, 1, 0).is_err());
        assert_eq!(bernoulli_exp_neg(&mut rng, 0, 1), Ok(true));
        for bad in BAD {
            let e = DiscreteLaplace::new(bad).unwrap_err().to_string();
            assert!(e.contains("scale"), "{e}");
            let e = DiscreteGaussian::new(bad).unwrap_err().to_string();
            assert!(e.contains("sigma"), "{e}");
        }
        let e = DiscreteGaussian::new(1e9).unwrap_err().to_string();
        assert!(e.contains("sigma") && e.contains("2^26"), "{e}");
        assert!(DiscreteLaplace::new(1e17).is_err());
        assert!(DiscreteGaussian::new(MAX_GAUSSIAN_SIGMA).is_ok());
        assert!(DiscreteLaplace::new(MAX_LAPLACE_SCALE).is_ok());
    }

    #[test]
    fn effective_sigma_and_scale_round_up() {
        for sigma in [
            1e-300, 1e-12, 0.1, 0.3, 0.5, 0.7, 1.0, 1.1, 2.0, 3.0, 3.3, 10.0, 99.9, 1e3, 1e4,
            12345.678, 1e6, 3e7, 6.7e7,
        ] {
            let dg = DiscreteGaussian::new(sigma).unwrap();
            assert!(dg.sigma() >= sigma, "{sigma}: {}", dg.sigma());
            let (n, d) = dg.sigma_squared_rational();
            // Exact check n / d >= sigma^2 via the exact square of sigma's bits.
            let (m, e) = decompose(sigma);
            let m2 = u128::from(m) * u128::from(m);
            // sigma^2 = m2 * 2^(2e); compare n * 2^(-2e) >= m2 * d (both sides as f64 are
            // too coarse, so compare exactly where it fits).
            let shift = -2 * e;
            if (0..60).contains(&shift) && d < (1 << 60) {
                let lhs = n.checked_shl(shift as u32);
                let rhs = m2.checked_mul(d);
                if let (Some(l), Some(r)) = (lhs, rhs) {
                    assert!(l >= r, "{sigma}");
                }
            }
            // Relative rounding is tiny for ordinary sigma.
            if sigma >= 0.01 {
                assert!(
                    (dg.sigma() - sigma) / sigma < 1e-12,
                    "{sigma}: {}",
                    dg.sigma()
                );
            }
        }
        assert_eq!(
            DiscreteGaussian::new(0.5).unwrap().sigma_squared_rational(),
            (1, 4)
        );
        assert_eq!(
            DiscreteGaussian::new(3.0).unwrap().sigma_squared_rational(),
            (9, 1)
        );
        for scale in [1e-300, 1e-5, 0.1, 0.3, 1.0, 2.5, 7.0, 1e3, 1e9, 4e15] {
            let lap = DiscreteLaplace::new(scale).unwrap();
            assert!(lap.scale() >= scale, "{scale}");
            if scale >= 1e-3 {
                assert!((lap.scale() - scale) / scale < 1e-12, "{scale}");
            }
        }
        assert_eq!(DiscreteLaplace::new(2.5).unwrap().scale_rational(), (5, 2));
        assert_eq!(DiscreteLaplace::new(4.0).unwrap().scale_rational(), (4, 1));
    }

    #[test]
    fn samples_are_reproducible_and_symmetric() {
        let dg = DiscreteGaussian::new(2.0).unwrap();
        let mut a = vec![0i64; 1000];
        let mut b = vec![0i64; 1000];
        dg.fill(&mut seeded_rng(5), &mut a);
        dg.fill(&mut seeded_rng(5), &mut b);
        assert_eq!(a, b);
        assert!(a.iter().any(|&x| x > 0) && a.iter().any(|&x| x < 0));
        let one = dg.sample(&mut seeded_rng(5));
        assert!(one.abs() < 30);
    }

    /// `x * 2^shift` as a 256-bit `(hi, lo)` pair (`x * 2^shift < 2^256`).
    fn shl256(x: u128, shift: u32) -> (u128, u128) {
        if shift < 128 {
            exact::mul_wide(x, 1u128 << shift)
        } else {
            assert!(x.leading_zeros() >= shift - 128, "test helper overflow");
            (x << (shift - 128), 0)
        }
    }

    /// Exact comparison `a * 2^sa >= b * c` with 256-bit arithmetic.
    fn ge_scaled(a: u128, sa: u32, b: u128, c: u128) -> bool {
        shl256(a, sa) >= exact::mul_wide(b, c)
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// sigma^2 = N / D is at least the requested sigma^2, exactly, and the reported sigma
        /// lies between the requested one and the true sqrt(N / D).
        #[test]
        fn gaussian_rational_rounds_up_exactly(sigma in (-6.0f64..7.82).prop_map(|u| 10f64.powf(u))) {
            let dg = DiscreteGaussian::new(sigma).unwrap();
            let (n, d) = dg.sigma_squared_rational();
            let (m, e) = decompose(sigma);
            // sigma^2 = m^2 2^(2e) with 2e < 0 in this range: N / D >= m^2 2^(2e)
            // <=> N 2^(-2e) >= m^2 D.
            let shift = u32::try_from(-2 * e).unwrap();
            let m2 = u128::from(m) * u128::from(m);
            proptest::prop_assert!(ge_scaled(n, shift, m2, d));
            // Reported sigma r: r >= sigma, and r^2 <= N / D <=> N 2^(-2e_r) >= m_r^2 D.
            let r = dg.sigma();
            proptest::prop_assert!(r >= sigma);
            let (mr, er) = decompose(r);
            let shift_r = u32::try_from(-2 * er).unwrap();
            proptest::prop_assert!(ge_scaled(n, shift_r, u128::from(mr) * u128::from(mr), d));
        }

        /// scale = t / s is at least the requested scale, exactly.
        #[test]
        fn laplace_rational_rounds_up_exactly(scale in (-9.0f64..15.6).prop_map(|u| 10f64.powf(u))) {
            let lap = DiscreteLaplace::new(scale).unwrap();
            let (t, s) = lap.scale_rational();
            let (m, e) = decompose(scale);
            if e < 0 {
                // t / s >= m 2^e <=> t 2^(-e) >= m s
                let shift = u32::try_from(-e).unwrap();
                proptest::prop_assert!(ge_scaled(u128::from(t), shift, u128::from(m), u128::from(s)));
            } else {
                // integer scale: represented exactly
                proptest::prop_assert_eq!(u128::from(t), u128::from(m) << e);
                proptest::prop_assert_eq!(s, 1);
            }
            proptest::prop_assert!(lap.scale() >= scale);
        }

        /// Bernoulli parameters are validated, never panic.
        #[test]
        fn bernoulli_validation_total(num in proptest::num::u128::ANY, den in proptest::num::u128::ANY, seed in 0u64..1000) {
            let mut rng = seeded_rng(seed);
            let r = bernoulli_rational(&mut rng, num, den);
            proptest::prop_assert_eq!(r.is_ok(), den > 0 && num <= den);
            let r = bernoulli_exp_neg(&mut rng, num, den);
            proptest::prop_assert_eq!(r.is_ok(), den > 0);
        }
    }

    #[test]
    fn table_sampler_threshold_and_sharing() {
        // sigma^2 >= 4 exactly: the table; just below: CKS.
        let at = DiscreteGaussian::new(FAST_MIN_SIGMA).unwrap();
        assert!(at.fast_table().is_some());
        let below = DiscreteGaussian::new(1.999_999).unwrap();
        assert!(below.fast_table().is_none());
        assert!(
            DiscreteGaussian::new(MAX_GAUSSIAN_SIGMA)
                .unwrap()
                .fast_table()
                .is_some()
        );
        // Equality ignores whether the table has been built; Debug says whether it has.
        let fresh = DiscreteGaussian::new(FAST_MIN_SIGMA).unwrap();
        assert_eq!(at, fresh);
        assert!(format!("{at:?}").contains("fast_table: Some(true)"));
        assert!(format!("{fresh:?}").contains("fast_table: None"));
        // One sampler shared by threads: the table is built once, and each thread's output
        // depends only on its own seed.
        let dg = DiscreteGaussian::new(1e4).unwrap();
        let outs: Vec<Vec<i64>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|i| {
                    let dg = &dg;
                    s.spawn(move || {
                        let mut v = vec![0i64; 1000];
                        dg.fill(&mut seeded_rng(i % 2), &mut v);
                        v
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(outs[0], outs[2]);
        assert_eq!(outs[1], outs[3]);
        assert_ne!(outs[0], outs[1]);
        let mut single = vec![0i64; 1000];
        DiscreteGaussian::new(1e4)
            .unwrap()
            .fill(&mut seeded_rng(0), &mut single);
        assert_eq!(single, outs[0]);
    }

    #[test]
    fn tiny_sigma_is_almost_always_zero() {
        let dg = DiscreteGaussian::new(1e-3).unwrap();
        let mut rng = seeded_rng(9);
        for _ in 0..1000 {
            assert_eq!(dg.sample(&mut rng), 0);
        }
    }

    #[test]
    fn huge_exponents_terminate() {
        let mut rng = seeded_rng(3);
        for _ in 0..1000 {
            assert_eq!(bernoulli_exp_neg(&mut rng, u128::MAX, 1), Ok(false));
        }
        // num == den == u128::MAX is exp(-1): den * K overflows, exercising the
        // Bernoulli(x) AND Bernoulli(1 / K) path. 4000 trials: mean 1471.5, sd 30.5.
        let hits = (0..4000)
            .filter(|_| bernoulli_exp_neg(&mut rng, u128::MAX, u128::MAX).unwrap())
            .count();
        assert!((1320..1623).contains(&hits), "{hits}");
    }
}
