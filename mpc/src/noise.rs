//! Distributed discrete Gaussian noise for secure aggregation, and the privacy of the released
//! sum.
//!
//! Each party adds its noise share (a discrete Gaussian of sigma / sqrt(t) per coordinate,
//! [`sotto_dp::sampling::DistributedDiscreteGaussian`]) to its encoded input in the ring
//! *before* masking, so the aggregator only ever unmasks a noised sum. Calibration uses the
//! threshold `t` as the minimum number of contributors: the shares of any `t` survivors alone
//! meet the target; more survivors only add noise.
//!
//! # Privacy
//! The released sum of `k` survivors is rho-zCDP with rho from Kairouz, Liu and Steinke 2021
//! (Theorem 1) evaluated at `k - c` contributors, where `c` is the number of parties assumed
//! to collude with the observer (their noise is known to it and protects nobody).
//! [`DistributedNoise::release_privacy`] returns rho and the (epsilon, delta) it implies
//! (Canonne, Kamath, Steinke 2020 conversion), both rounded up.

use rand_core::{CryptoRng, RngCore};
use sotto_dp::accounting::zcdp_to_epsilon;
use sotto_dp::error::check_open_unit;
use sotto_dp::sampling::DistributedDiscreteGaussian;
use zeroize::Zeroize;

use crate::encoding::{FixedPointEncoder, NoWrap, check_no_wrap};
use crate::error::{Error, Result};
use crate::ring::RingWord;
use crate::secagg::AggregateOutput;

/// Which datasets are neighbours: one party's input added/removed, or replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neighbouring {
    /// One party's contribution added or removed (sensitivity = norm bound).
    AddRemove,
    /// One party's contribution replaced by another (sensitivity = twice the norm bound).
    Replace,
}

/// L2 and L1 sensitivities of the sum, in ring units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sensitivity {
    /// L2 sensitivity.
    pub l2: f64,
    /// L1 sensitivity.
    pub l1: f64,
}

impl Sensitivity {
    /// The sensitivity of a sum of vectors encoded by `encoder`, for the given neighbouring
    /// relation (the encoder's hard norm bounds, doubled for replacement).
    pub fn of_encoder(encoder: &FixedPointEncoder, neighbouring: Neighbouring) -> Self {
        let f = match neighbouring {
            Neighbouring::AddRemove => 1.0,
            Neighbouring::Replace => 2.0,
        };
        Sensitivity {
            l2: encoder.l2_bound() * f,
            l1: encoder.l1_bound() * f,
        }
    }
}

/// The privacy of one released (noised) sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReleasePrivacy {
    /// Number of honest noise contributors counted.
    pub contributors: usize,
    /// zCDP rho (rounded up).
    pub rho: f64,
    /// Epsilon at `delta` (rounded up).
    pub epsilon: f64,
    /// Delta.
    pub delta: f64,
}

/// The per-party noise of a secure sum.
#[derive(Debug, Clone, PartialEq)]
pub struct DistributedNoise {
    ddg: DistributedDiscreteGaussian,
}

impl DistributedNoise {
    /// Noise whose sum over any `min_parties` (use the protocol threshold `t`) contributors
    /// has standard deviation at least `sigma` (ring units) per coordinate.
    ///
    /// # Errors
    /// [`Error::Dp`] with an invalid-parameter error for a NaN, infinite, zero or negative
    /// `sigma` or `min_parties == 0`.
    ///
    /// # Example
    /// ```rust
    /// use sotto_mpc::encoding::{Clipping, FixedPointEncoder};
    /// use sotto_mpc::noise::{DistributedNoise, Neighbouring, Sensitivity};
    /// let enc = FixedPointEncoder::new(Clipping::L2 { norm: 1.0 }, 256.0, 16)?;
    /// let noise = DistributedNoise::new(2000.0, 6)?;
    /// noise.check_no_wrap::<u32>(10, &enc)?;
    /// let mut x = enc.encode_ring::<u32, _>(&[0.1; 16], &mut sotto_dp::rng::seeded_rng(1))?;
    /// noise.add_share(&mut x, &mut sotto_dp::rng::seeded_rng(2));
    /// let p = noise.release_privacy(Sensitivity::of_encoder(&enc, Neighbouring::AddRemove), 16, 6, 1e-6)?;
    /// assert!(p.epsilon > 0.0 && p.epsilon < 10.0);
    /// # Ok::<(), sotto_mpc::Error>(())
    /// ```
    pub fn new(sigma: f64, min_parties: usize) -> Result<Self> {
        Ok(Self {
            ddg: DistributedDiscreteGaussian::new(sigma, min_parties)?,
        })
    }

    /// The smallest noise (up to a 10^-6 relative bisection step, rounded up: it errs toward
    /// more noise) whose release with `contributors` honest shares is `(epsilon, delta)`-DP
    /// for the given `sensitivity` (ring units) of a `dim`-coordinate sum.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming `noise.epsilon` if no noise level reaches
    /// `epsilon`; [`Error::Dp`] for invalid parameters.
    ///
    /// # Example
    /// ```rust
    /// use sotto_mpc::noise::{DistributedNoise, Sensitivity};
    /// let s = Sensitivity { l2: 10.0, l1: 10.0 };
    /// let noise = DistributedNoise::calibrate(1.0, 1e-6, s, 1, 3)?;
    /// let p = noise.release_privacy(s, 1, 3, 1e-6)?;
    /// assert!(p.epsilon <= 1.0 && p.epsilon > 0.9);
    /// # Ok::<(), sotto_mpc::Error>(())
    /// ```
    pub fn calibrate(
        epsilon: f64,
        delta: f64,
        sensitivity: Sensitivity,
        dim: usize,
        contributors: usize,
    ) -> Result<Self> {
        let eps_at = |sigma: f64| -> Result<f64> {
            let noise = DistributedNoise::new(sigma, contributors)?;
            Ok(noise
                .release_privacy(sensitivity, dim, contributors, delta)?
                .epsilon)
        };
        let mut hi = sensitivity.l2.max(1.0);
        let mut steps = 0;
        while eps_at(hi)? > epsilon {
            hi *= 2.0;
            steps += 1;
            if steps > 80 {
                return Err(Error::invalid(
                    "noise.epsilon",
                    epsilon,
                    "no noise level reaches this epsilon; use a larger epsilon or delta",
                ));
            }
        }
        let mut lo = hi / 2.0;
        for _ in 0..60 {
            if hi - lo <= hi * 1e-6 {
                break;
            }
            let mid = 0.5 * (lo + hi);
            if eps_at(mid)? > epsilon {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        DistributedNoise::new(hi, contributors)
    }

    /// The sigma each party really samples with (>= sigma / sqrt(min_parties)).
    pub fn sigma_per_party(&self) -> f64 {
        self.ddg.party_sampler().sigma()
    }

    /// The minimum number of contributors the calibration assumes.
    pub fn min_parties(&self) -> usize {
        self.ddg.min_parties()
    }

    /// Adds this party's noise share to its encoded input, in the ring.
    ///
    /// # Privacy
    /// The share is secret: it is zeroized after use. Call this before masking.
    pub fn add_share<W: RingWord, R: RngCore + CryptoRng + ?Sized>(
        &self,
        input: &mut [W],
        rng: &mut R,
    ) {
        let mut z = vec![0i64; input.len()];
        self.ddg.fill_share(rng, &mut z);
        for (x, n) in input.iter_mut().zip(&z) {
            *x = x.add(W::from_i64(*n));
        }
        z.zeroize();
    }

    /// [`check_no_wrap`] for `parties` inputs from `encoder` plus this noise.
    ///
    /// # Errors
    /// [`Error::RingOverflow`] naming the bound to change.
    pub fn check_no_wrap<W: RingWord>(
        &self,
        parties: usize,
        encoder: &FixedPointEncoder,
    ) -> Result<NoWrap> {
        check_no_wrap::<W>(
            parties,
            encoder.coordinate_bound(),
            self.sigma_per_party(),
            encoder.dim(),
        )
    }

    /// The privacy of a sum released with `contributors` honest noise shares in it.
    ///
    /// # Errors
    /// [`Error::Dp`] if `contributors` is below `min_parties` (too little noise) or the
    /// parameters are invalid; [`Error::InvalidParameter`] for `delta` outside (0, 1).
    pub fn release_privacy(
        &self,
        sensitivity: Sensitivity,
        dim: usize,
        contributors: usize,
        delta: f64,
    ) -> Result<ReleasePrivacy> {
        check_open_unit("delta", delta)?;
        let rho = self
            .ddg
            .zcdp_rho(sensitivity.l2, sensitivity.l1, dim, contributors)?;
        let epsilon = zcdp_to_epsilon(rho, delta)?;
        Ok(ReleasePrivacy {
            contributors,
            rho,
            epsilon,
            delta,
        })
    }

    /// The privacy of an aggregation's output, assuming `colluding` of its survivors collude
    /// with the observer (their noise does not count).
    ///
    /// # Errors
    /// As [`Self::release_privacy`]; [`Error::InvalidParameter`] naming `colluding` if it is
    /// not below the number of survivors.
    pub fn privacy_of<W: RingWord>(
        &self,
        output: &AggregateOutput<W>,
        sensitivity: Sensitivity,
        colluding: usize,
        delta: f64,
    ) -> Result<ReleasePrivacy> {
        let k = output.survivors().len();
        if colluding >= k {
            return Err(Error::invalid(
                "colluding",
                colluding,
                format!("must be below the number of survivors ({k})"),
            ));
        }
        self.release_privacy(sensitivity, output.sum().len(), k - colluding, delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring;
    use sotto_dp::rng::seeded_rng;

    #[test]
    fn shares_sum_to_the_target_sigma() {
        let t = 4;
        let noise = DistributedNoise::new(100.0, t).unwrap();
        assert!(noise.sigma_per_party() >= 50.0);
        let d = 20_000;
        let mut total = vec![0u64; d];
        let mut rng = seeded_rng(5);
        for _ in 0..t {
            noise.add_share(&mut total, &mut rng);
        }
        let v = ring::to_signed(&total);
        let var = v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / d as f64;
        // Sample variance of 20000 normals: relative sd sqrt(2/d) = 1%; 5 sd band.
        assert!((var / 10_000.0 - 1.0).abs() < 0.05, "{var}");
    }

    #[test]
    fn privacy_needs_enough_honest_contributors() {
        let noise = DistributedNoise::new(50.0, 5).unwrap();
        let s = Sensitivity { l2: 10.0, l1: 30.0 };
        let p5 = noise.release_privacy(s, 10, 5, 1e-6).unwrap();
        let p8 = noise.release_privacy(s, 10, 8, 1e-6).unwrap();
        assert!(p8.rho < p5.rho && p8.epsilon < p5.epsilon);
        assert!(noise.release_privacy(s, 10, 4, 1e-6).is_err());
        assert!(noise.release_privacy(s, 10, 5, 1.5).is_err());
        assert!(DistributedNoise::new(f64::NAN, 5).is_err());
    }
}
