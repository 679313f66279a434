//! Fixed-point encoding of real vectors into the ring, and the check that a sum cannot wrap.
//!
//! Encoding a party's vector `x` (Kairouz, Liu and Steinke 2021, "The distributed discrete
//! Gaussian mechanism"):
//! 1. **clip**: L2 (scale `x` down to norm at most `c`) or L-infinity (clamp every coordinate
//!    to `[-c, c]`);
//! 2. **scale** by the fixed-point factor `s` (use a power of two for exact decoding);
//! 3. **randomized rounding**: each coordinate rounds up with probability equal to its
//!    fractional part (unbiased). With L2 clipping the rounding is *conditional*: it is
//!    repeated until the integer vector has L2 norm at most [`FixedPointEncoder::l2_bound`], so
//!    that bound is a hard sensitivity bound for the noise calibration.
//!
//! Before any round, [`check_no_wrap`] proves that `n` encoded inputs plus the tail of the
//! summed noise shares fit in the signed range of Z_2^k, so the centered lift of the ring sum
//! is the true integer sum.

use rand_core::{CryptoRng, RngCore};
use sotto_dp::error::check_positive;

use crate::error::{Error, Result};
use crate::ring::RingWord;

/// The probability with which the noise tail bound of [`check_no_wrap`] may be exceeded in one
/// aggregation (over all coordinates): 2^-40.
pub const WRAP_FAILURE_LOG2: u32 = 40;

/// Largest scaled magnitude accepted, so that all fixed-point arithmetic stays exact in `f64`.
const MAX_SCALED: f64 = 4_503_599_627_370_496.0; // 2^52

/// The clipping applied to each input vector before scaling.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Clipping {
    /// Scale the vector down so its L2 norm is at most `norm`.
    L2 {
        /// The L2 bound (> 0).
        norm: f64,
    },
    /// Clamp every coordinate to `[-bound, bound]`.
    LInf {
        /// The per-coordinate bound (> 0).
        bound: f64,
    },
}

/// Clips, scales and randomly rounds real vectors into integers (and the ring).
#[derive(Debug, Clone, PartialEq)]
pub struct FixedPointEncoder {
    clipping: Clipping,
    scale: f64,
    dim: usize,
    l2_bound: f64,
    coordinate_bound: u64,
}

/// `ln(1/beta)` for the conditional randomized rounding, beta = exp(-1/2) as in Kairouz et al.
const ROUNDING_LN_INV_BETA: f64 = 0.5;
/// Attempts of conditional rounding before falling back to rounding toward zero.
const ROUNDING_ATTEMPTS: usize = 64;

impl FixedPointEncoder {
    /// An encoder for vectors of length `dim` with the given clipping and fixed-point `scale`
    /// (a real `v` becomes about `v * scale`).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a clipping bound or scale that is NaN, infinite, zero or
    /// negative, `dim == 0`, or `bound * scale` of 2^52 or more.
    ///
    /// # Example
    /// ```rust
    /// use sotto_mpc::encoding::{Clipping, FixedPointEncoder};
    /// let enc = FixedPointEncoder::new(Clipping::LInf { bound: 1.0 }, 1024.0, 3)?;
    /// let mut rng = sotto_dp::rng::seeded_rng(1);
    /// let z = enc.encode(&[0.5, -2.0, 0.25], &mut rng)?;
    /// assert_eq!(z, vec![512, -1024, 256]);
    /// # Ok::<(), sotto_mpc::Error>(())
    /// ```
    pub fn new(clipping: Clipping, scale: f64, dim: usize) -> Result<Self> {
        let c = match clipping {
            Clipping::L2 { norm } => check_positive("clipping.norm", norm)?,
            Clipping::LInf { bound } => check_positive("clipping.bound", bound)?,
        };
        check_positive("scale", scale)?;
        if dim == 0 {
            return Err(Error::invalid("dim", dim, "must be at least 1"));
        }
        let cs = c * scale;
        if cs.is_nan() || cs >= MAX_SCALED {
            return Err(Error::invalid(
                "scale",
                scale,
                format!(
                    "clipping bound times scale is {cs:e}; it must stay below 2^52: lower `scale` or the clipping bound"
                ),
            ));
        }
        let d = dim as f64;
        let (l2_bound, coordinate_bound) = match clipping {
            Clipping::L2 { .. } => {
                // Kairouz et al. 2021, Theorem 1: conditional rounding bound.
                let sq =
                    cs * cs + d / 4.0 + (2.0 * ROUNDING_LN_INV_BETA).sqrt() * (cs + d.sqrt() / 2.0);
                let b = sq.sqrt() * (1.0 + 1e-12);
                // |z_i| <= min(floor(B), ceil(cs)) for an integer vector of norm <= B.
                let coord = b.floor().min(cs.ceil());
                (b, coord as u64)
            }
            Clipping::LInf { .. } => {
                let coord = cs.ceil();
                (coord * d.sqrt() * (1.0 + 1e-12), coord as u64)
            }
        };
        Ok(Self {
            clipping,
            scale,
            dim,
            l2_bound,
            coordinate_bound,
        })
    }

    /// The clipping.
    pub fn clipping(&self) -> Clipping {
        self.clipping
    }

    /// The fixed-point scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// A hard bound on the L2 norm of one encoded vector (ring units): the L2 sensitivity of
    /// the sum when one party's input is added or removed (double it for replacement).
    pub fn l2_bound(&self) -> f64 {
        self.l2_bound
    }

    /// A hard bound on the L1 norm of one encoded vector (ring units):
    /// `min(sqrt(d) * l2, l2^2, d * coordinate_bound)` (integer vectors have `|z_i| <= z_i^2`).
    pub fn l1_bound(&self) -> f64 {
        let d = self.dim as f64;
        (d.sqrt() * self.l2_bound)
            .min(self.l2_bound * self.l2_bound)
            .min(d * self.coordinate_bound as f64)
    }

    /// The largest magnitude of one encoded coordinate.
    pub fn coordinate_bound(&self) -> u64 {
        self.coordinate_bound
    }

    /// Clips, scales and randomly rounds `x` into integers.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming `input` if `x.len() != dim` or a value is NaN or
    /// infinite.
    pub fn encode<R: RngCore + CryptoRng + ?Sized>(
        &self,
        x: &[f64],
        rng: &mut R,
    ) -> Result<Vec<i64>> {
        if x.len() != self.dim {
            return Err(Error::invalid(
                "input",
                format!("length {}", x.len()),
                format!("the encoder expects vectors of length {}", self.dim),
            ));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "input",
                format!("coordinate {i}"),
                "every coordinate must be finite (no NaN or infinity)",
            ));
        }
        let scaled: Vec<f64> = match self.clipping {
            Clipping::LInf { bound } => x
                .iter()
                .map(|v| v.clamp(-bound, bound) * self.scale)
                .collect(),
            Clipping::L2 { norm } => {
                let n2 = x.iter().map(|v| v * v).sum::<f64>().sqrt();
                let f = if n2 > norm { norm / n2 } else { 1.0 };
                x.iter().map(|v| v * f * self.scale).collect()
            }
        };
        let bound_sq = self.l2_bound * self.l2_bound;
        let mut out = vec![0i64; self.dim];
        for _ in 0..ROUNDING_ATTEMPTS {
            let mut sq = 0.0;
            for (o, &y) in out.iter_mut().zip(&scaled) {
                let fl = y.floor();
                let frac = y - fl;
                let up = uniform_unit(rng) < frac;
                let z = fl + if up { 1.0 } else { 0.0 };
                sq += z * z;
                *o = z as i64;
            }
            if matches!(self.clipping, Clipping::LInf { .. }) || sq <= bound_sq {
                return Ok(out);
            }
        }
        // Fallback (probability below beta^64): round toward zero, whose norm is at most the
        // clipped norm, so the bound still holds.
        for (o, &y) in out.iter_mut().zip(&scaled) {
            *o = y.trunc() as i64;
        }
        Ok(out)
    }

    /// Encodes straight into ring words.
    ///
    /// # Errors
    /// As [`Self::encode`].
    pub fn encode_ring<W: RingWord, R: RngCore + CryptoRng + ?Sized>(
        &self,
        x: &[f64],
        rng: &mut R,
    ) -> Result<Vec<W>> {
        Ok(self.encode(x, rng)?.into_iter().map(W::from_i64).collect())
    }

    /// Decodes a ring sum (centered lift, divided by the scale).
    pub fn decode_sum<W: RingWord>(&self, sum: &[W]) -> Vec<f64> {
        sum.iter().map(|w| w.to_i64() as f64 / self.scale).collect()
    }
}

fn uniform_unit<R: RngCore + ?Sized>(rng: &mut R) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// Proof that a configuration cannot wrap: returned by [`check_no_wrap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoWrap {
    /// The largest magnitude the sum can reach (inputs plus noise tail).
    pub needed: u128,
    /// The largest magnitude the ring holds, 2^(k-1) - 1.
    pub capacity: u128,
}

/// The tail bound of the sum of `parties` discrete Gaussian shares of standard deviation
/// `sigma_per_party` over `dim` coordinates: exceeded with probability at most
/// 2^-[`WRAP_FAILURE_LOG2`] (discrete Gaussians are sigma-subgaussian, Canonne, Kamath and
/// Steinke 2020; union bound over coordinates and both signs), rounded up.
pub fn noise_tail(parties: usize, sigma_per_party: f64, dim: usize) -> u128 {
    if sigma_per_party.is_nan() || sigma_per_party <= 0.0 || parties == 0 {
        return 0;
    }
    let ln_terms =
        (2.0 * dim.max(1) as f64).ln() + f64::from(WRAP_FAILURE_LOG2) * std::f64::consts::LN_2;
    let t = sigma_per_party * (parties as f64).sqrt() * (2.0 * ln_terms).sqrt();
    let t = (t * (1.0 + 1e-9)).ceil() + 1.0;
    if t >= 1.7e38 { u128::MAX } else { t as u128 }
}

/// Checks, before any round, that the sum of `parties` encoded inputs (each coordinate of
/// magnitude at most `coordinate_bound`) plus the summed noise shares (each party's share of
/// standard deviation `noise_sigma_per_party`; 0 for none) stays within the signed range of
/// Z_2^k, so decoding by the centered lift is exact (the noise tail bound fails with
/// probability at most 2^-40).
///
/// # Errors
/// [`Error::InvalidParameter`] for a NaN, infinite or negative sigma or zero parties;
/// [`Error::RingOverflow`] when the configuration could wrap, with a hint naming the bound to
/// change.
///
/// # Example
/// ```rust
/// use sotto_mpc::encoding::check_no_wrap;
/// assert!(check_no_wrap::<u32>(100, 1 << 20, 0.0, 10).is_ok());
/// let err = check_no_wrap::<u32>(10_000, 1 << 20, 0.0, 10).unwrap_err();
/// assert!(err.to_string().contains("scale"));
/// ```
pub fn check_no_wrap<W: RingWord>(
    parties: usize,
    coordinate_bound: u64,
    noise_sigma_per_party: f64,
    dim: usize,
) -> Result<NoWrap> {
    if parties == 0 {
        return Err(Error::invalid("parties", parties, "must be at least 1"));
    }
    if !noise_sigma_per_party.is_finite() || noise_sigma_per_party < 0.0 {
        return Err(Error::invalid(
            "noise_sigma_per_party",
            noise_sigma_per_party,
            "must be a finite number, zero or more",
        ));
    }
    let inputs = (parties as u128).saturating_mul(u128::from(coordinate_bound));
    let tail = noise_tail(parties, noise_sigma_per_party, dim);
    let needed = inputs.saturating_add(tail);
    let capacity = (1u128 << (W::BITS - 1)) - 1;
    if needed <= capacity {
        return Ok(NoWrap { needed, capacity });
    }
    let mut hint = if inputs >= tail {
        format!(
            "the inputs dominate ({inputs}): lower the fixed-point `scale` or the clipping bound, or lower `parties`"
        )
    } else {
        format!(
            "the noise tail dominates ({tail}): lower the noise `sigma` (or raise `min_parties`), or lower the fixed-point `scale` together with the noise"
        )
    };
    if W::BITS < 64 {
        hint.push_str(", or use the 64-bit ring (u64)");
    }
    Err(Error::RingOverflow {
        parties,
        coordinate_bound,
        noise_tail: tail,
        needed,
        ring_bits: W::BITS,
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sotto_dp::rng::seeded_rng;

    #[test]
    fn rejects_bad_parameters_by_name() {
        let e = FixedPointEncoder::new(Clipping::L2 { norm: f64::NAN }, 1.0, 3).unwrap_err();
        assert!(e.to_string().contains("clipping.norm"), "{e}");
        let e = FixedPointEncoder::new(Clipping::LInf { bound: 1.0 }, -1.0, 3).unwrap_err();
        assert!(e.to_string().contains("scale"), "{e}");
        let e = FixedPointEncoder::new(Clipping::LInf { bound: 1.0 }, 1.0, 0).unwrap_err();
        assert!(e.to_string().contains("dim"), "{e}");
        let e = FixedPointEncoder::new(Clipping::LInf { bound: 1e10 }, 1e10, 3).unwrap_err();
        assert!(e.to_string().contains("scale"), "{e}");
        let enc = FixedPointEncoder::new(Clipping::LInf { bound: 1.0 }, 1.0, 2).unwrap();
        let mut rng = seeded_rng(0);
        assert!(enc.encode(&[1.0], &mut rng).is_err());
        assert!(enc.encode(&[1.0, f64::NAN], &mut rng).is_err());
    }

    #[test]
    fn randomized_rounding_is_unbiased() {
        // 0.3 * 10 = 3 rounds to 3 exactly; 0.25 * 10 = 2.5 rounds up half the time.
        let enc = FixedPointEncoder::new(Clipping::LInf { bound: 1.0 }, 10.0, 1).unwrap();
        let mut rng = seeded_rng(7);
        let n = 20_000;
        let ups = (0..n)
            .filter(|_| enc.encode(&[0.25], &mut rng).unwrap()[0] == 3)
            .count();
        // Binomial(20000, 0.5): sd 70.7; 5 sd (two-sided significance ~6e-7).
        assert!((ups as f64 - 10_000.0).abs() < 354.0, "{ups}");
    }

    #[test]
    fn wrap_check_names_the_bound() {
        let e = check_no_wrap::<u32>(1000, 1 << 22, 0.0, 100).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("scale") && msg.contains("u64"), "{msg}");
        let e = check_no_wrap::<u32>(10, 1, 1e9, 100).unwrap_err();
        assert!(e.to_string().contains("sigma"), "{e}");
        assert!(check_no_wrap::<u64>(1000, 1 << 22, 1e6, 1_000_000).is_ok());
        assert!(check_no_wrap::<u32>(0, 1, 0.0, 1).is_err());
        assert!(check_no_wrap::<u32>(1, 1, f64::NAN, 1).is_err());
        // The boundary: n * M = 2^31 - 1 fits exactly, one more does not.
        assert!(check_no_wrap::<u32>(1, (1 << 31) - 1, 0.0, 1).is_ok());
        assert!(check_no_wrap::<u32>(1, 1 << 31, 0.0, 1).is_err());
    }

    proptest! {
        #[test]
        fn encoded_vectors_respect_their_bounds(
            xs in proptest::collection::vec(-100.0f64..100.0, 1..64),
            c in 0.01f64..10.0,
            scale in 1.0f64..4096.0,
            l2 in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let clipping = if l2 { Clipping::L2 { norm: c } } else { Clipping::LInf { bound: c } };
            let enc = FixedPointEncoder::new(clipping, scale, xs.len()).unwrap();
            let z = enc.encode(&xs, &mut seeded_rng(seed)).unwrap();
            let norm = z.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt();
            let l1 = z.iter().map(|&v| (v as f64).abs()).sum::<f64>();
            prop_assert!(norm <= enc.l2_bound());
            prop_assert!(l1 <= enc.l1_bound() + 1e-9);
            for &v in &z {
                prop_assert!(v.unsigned_abs() <= enc.coordinate_bound());
            }
            // Each coordinate is within one unit of the scaled clipped value.
            let back = enc.decode_sum(&crate::ring::from_signed::<u64>(&z));
            for (b, x) in back.iter().zip(&xs) {
                prop_assert!((b - x.clamp(-c, c)).abs() <= 1.0 / scale + 1e-9 || l2);
            }
        }

        #[test]
        fn accepted_configurations_never_wrap(
            n in 1usize..200,
            bound in 0u64..(1 << 24),
        ) {
            if check_no_wrap::<u32>(n, bound, 0.0, 1).is_ok() {
                // n inputs at the extreme still decode exactly.
                let mut acc = 0u32;
                for _ in 0..n { acc = acc.wrapping_add(u32::from_i64(-(bound as i64))); }
                prop_assert_eq!(acc.to_i64(), -(n as i64) * bound as i64);
            }
        }
    }
}
