//! Exact discrete Gaussian noise for gradient sums, on a fine power-of-two grid.

use rand_core::{CryptoRng, RngCore};
use sotto_dp::sampling::DiscreteGaussian;

use crate::{Error, Result};

/// The grid is at most `clip_norm / (GRID_DIVISOR * sqrt(dims))`, so snapping to it grows the
/// sensitivity by at most `clip_norm / GRID_DIVISOR`.
const GRID_DIVISOR: f64 = 1024.0;

/// Coordinates per independently seeded noise chunk.
pub const NOISE_CHUNK: usize = 16_384;

/// Noise values drawn per sampler call inside a chunk (16 KiB of `i64`, kept in cache).
const NOISE_BLOCK: usize = 2_048;

/// Relative safety margin for float rounding in the noise scale (rounding against the user).
const ROUND_UP: f64 = 1.0 + 1e-12;

/// The Gaussian mechanism for a clipped gradient sum, sampled exactly: the sum is snapped to a
/// power-of-two grid `2^-k` and integer noise `DiscreteGaussian(sigma * sensitivity / grid)` is
/// added in grid units, so the released value is `grid * (round(sum / grid) + z)`.
///
/// # Privacy
/// * No noise is derived from a floating-point uniform (Mironov 2012): `z` comes from
///   [`sotto_dp::sampling::DiscreteGaussian`], an exact sampler on the integers (a
///   table-driven rejection sampler for the scales used here, see `docs/privacy/sampling.md`),
///   driven by a [`CryptoRng`].
/// * Snapping each coordinate to the grid moves it by at most `grid / 2`, so two neighbouring
///   snapped sums differ by at most `Δ + sqrt(dims) * grid` in L2 norm, where `Δ` is the L2
///   sensitivity of the sum as computed. That value is the sensitivity used to scale the noise
///   (the grid is chosen so that the rounding term is at most `clip_norm / 1024`), and the
///   sampler rounds its variance up. The noise multiplier relative to the true sensitivity is
///   therefore at least the requested one.
/// * For a clipped gradient sum computed in floating point ([`GradientNoise::for_clipped_sums`]),
///   `Δ` = [`crate::clipping::clipped_sum_sensitivity`]: the clip norm plus twice a proved
///   bound on the summation error (`docs/privacy/sensitivity.md`). [`GradientNoise::new`]
///   takes `Δ = clip_norm`, for a sum that is exact (or whose error the caller has added to
///   `clip_norm`).
/// * The accountant treats each release as the (continuous) Gaussian mechanism with that noise
///   multiplier. The discrete Gaussian with the same scale satisfies the same concentrated-DP
///   bound (CKS 2020, Theorem 14 for one coordinate; Theorem 15 for vectors, where the bound
///   holds up to a slack that is negligible at the scales used here, > 1000 grid units).
/// * Noise for large vectors is sampled in parallel: fixed chunks of [`NOISE_CHUNK`]
///   coordinates, each from its own ChaCha20 generator seeded with 32 fresh bytes from the
///   caller's CSPRNG (independent streams; the output depends only on the caller's generator).
/// * The output is an `f32` rounding of `grid * (round(sum/grid) + z)`: post-processing.
#[derive(Debug, Clone)]
pub struct GradientNoise {
    noise_multiplier: f64,
    clip_norm: f64,
    dims: usize,
    grid: f64,
    sensitivity: f64,
    sampler: DiscreteGaussian,
    threads: Option<usize>,
}

impl GradientNoise {
    /// Noise for a `dims`-dimensional sum with L2 sensitivity `clip_norm` (exactly; see
    /// [`Self::for_clipped_sums`] for sums computed in floating point) and standard
    /// deviation `noise_multiplier * clip_norm` (slightly more, see `# Privacy`).
    ///
    /// # Privacy
    /// `clip_norm` must bound the L2 sensitivity of the values passed to
    /// [`Self::privatize`] **including their floating-point error**. A clipped gradient sum
    /// from [`crate::model::Model::clipped_gradient_sum`] needs [`Self::for_clipped_sums`].
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `noise_multiplier` or `clip_norm` is not a finite
    /// positive number or `dims` is zero; [`Error::Dp`] when the sampler cannot be built
    /// (a scale too large to sample exactly).
    ///
    /// ```rust
    /// use sotto_training::noise::GradientNoise;
    /// let noise = GradientNoise::new(1.1, 1.0, 650)?;
    /// let mut rng = sotto_dp::rng::os_rng()?;
    /// let released = noise.privatize(&[0.25f32; 650], &mut rng)?;
    /// assert_eq!(released.len(), 650);
    /// # Ok::<(), sotto_training::Error>(())
    /// ```
    pub fn new(noise_multiplier: f64, clip_norm: f64, dims: usize) -> Result<Self> {
        Self::with_sensitivity(noise_multiplier, clip_norm, clip_norm, dims)
    }

    /// Noise for the clipped gradient sum of batches of at most `max_batch` records computed
    /// by [`crate::model::Model::clipped_gradient_sum`] (or `clipped_gradients` and
    /// [`crate::clipping::flatten`]) of a model with `rows_per_sample` rows per record
    /// ([`crate::model::Model::rows_per_sample`]) and `dims` trained scalars. With Poisson
    /// sampling, `max_batch` is the number of records sampled from.
    ///
    /// # Privacy
    /// The sensitivity is [`crate::clipping::clipped_sum_sensitivity`]: `clip_norm` plus twice
    /// the proved bound on the floating-point error of the sum
    /// ([`crate::clipping::clipped_sum_error_bound`]), plus the grid rounding as for
    /// [`Self::new`]. For the default digits run (1438 records, 650 scalars) the float term is
    /// below `1.8e-4 * clip_norm`.
    ///
    /// # Errors
    /// As [`Self::new`] and [`crate::clipping::clipped_sum_error_bound`].
    ///
    /// ```rust
    /// use sotto_training::noise::GradientNoise;
    /// let noise = GradientNoise::for_clipped_sums(1.1, 1.0, 650, 1438, 1)?;
    /// assert!(noise.sensitivity() > 1.0 + 1e-4);
    /// # Ok::<(), sotto_training::Error>(())
    /// ```
    pub fn for_clipped_sums(
        noise_multiplier: f64,
        clip_norm: f64,
        dims: usize,
        max_batch: usize,
        rows_per_sample: usize,
    ) -> Result<Self> {
        let charged =
            crate::clipping::clipped_sum_sensitivity(clip_norm, max_batch, rows_per_sample, dims)?;
        Self::with_sensitivity(noise_multiplier, clip_norm, charged, dims)
    }

    /// `charged` (at least `clip_norm`) is the L2 sensitivity of the sum before snapping.
    fn with_sensitivity(
        noise_multiplier: f64,
        clip_norm: f64,
        charged: f64,
        dims: usize,
    ) -> Result<Self> {
        sotto_dp::error::check_positive("noise_multiplier", noise_multiplier)?;
        sotto_dp::error::check_positive("clip_norm", clip_norm)?;
        sotto_dp::error::check_positive("sensitivity", charged)?;
        if dims == 0 {
            return Err(Error::invalid(
                "dims",
                0,
                "the gradient needs at least one coordinate",
            ));
        }
        let target = clip_norm / (GRID_DIVISOR * (dims as f64).sqrt());
        let exp = target.log2().floor() as i32;
        if !(-1000..=1000).contains(&exp) {
            return Err(Error::invalid(
                "clip_norm",
                clip_norm,
                "is too small or too large for a power-of-two noise grid",
            ));
        }
        let mut grid = 2f64.powi(exp);
        // log2 may round; make sure the grid really is at most the target.
        while grid > target {
            grid /= 2.0;
        }
        let sensitivity = (charged.max(clip_norm) + (dims as f64).sqrt() * grid) * ROUND_UP;
        let scale = noise_multiplier * sensitivity / grid * ROUND_UP;
        let sampler = DiscreteGaussian::new(scale)?;
        Ok(GradientNoise {
            noise_multiplier,
            clip_norm,
            dims,
            grid,
            sensitivity,
            sampler,
            threads: None,
        })
    }

    /// Samples noise on at most `threads` threads (default: all available cores). The output
    /// does not depend on it.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `threads` is zero.
    pub fn with_threads(mut self, threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(Error::invalid("threads", 0, "must be at least 1"));
        }
        self.threads = Some(threads);
        Ok(self)
    }

    /// The grid spacing (a power of two).
    pub fn grid(&self) -> f64 {
        self.grid
    }

    /// The L2 sensitivity the noise is scaled to: `clip_norm` (plus the floating-point error
    /// for [`Self::for_clipped_sums`]) plus the grid rounding.
    pub fn sensitivity(&self) -> f64 {
        self.sensitivity
    }

    /// The noise multiplier requested (the one to account with).
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// The clip norm requested.
    pub fn clip_norm(&self) -> f64 {
        self.clip_norm
    }

    /// Standard-deviation parameter of the noise per coordinate, in value units.
    pub fn noise_scale(&self) -> f64 {
        self.sampler.sigma() * self.grid
    }

    /// Releases `grid * (round(sum / grid) + z)` for every coordinate (the caller has checked
    /// that every `sum / grid` is finite and below 2^52 in magnitude), `z` fresh noise.
    /// Coordinates are cut into fixed chunks of [`NOISE_CHUNK`]; each chunk gets its own ChaCha20 generator seeded with 32 bytes from
    /// `rng`, and chunks are processed on all available cores (noise, addition and conversion
    /// in one pass per chunk, so no full-length noise vector is ever allocated). The result
    /// depends only on `rng`, not on the number of threads.
    fn noise_in_place<R: RngCore + CryptoRng + ?Sized>(&self, values: &mut [f32], rng: &mut R) {
        let len = values.len();
        let mut seeds: Vec<[u8; 32]> = Vec::with_capacity(len.div_ceil(NOISE_CHUNK));
        for _ in 0..len.div_ceil(NOISE_CHUNK) {
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            seeds.push(seed);
        }
        let threads = self
            .threads
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(std::num::NonZeroUsize::get)
                    .unwrap_or(1)
            })
            .min(seeds.len())
            .max(1);
        let mut jobs: Vec<(&mut [f32], [u8; 32])> = values
            .chunks_mut(NOISE_CHUNK)
            .zip(seeds.iter().copied())
            .collect();
        let per_thread = jobs.len().div_ceil(threads);
        let (sampler, grid) = (&self.sampler, self.grid);
        // The grid is a power of two (at least 2^-1000), so multiplying by its inverse is
        // exactly the division.
        let inv_grid = 1.0 / grid;
        let run = |batch: &mut [(&mut [f32], [u8; 32])]| {
            // Noise is drawn in small blocks that stay in the L1 cache.
            let mut z = [0i64; NOISE_BLOCK];
            for (values, seed) in batch.iter_mut() {
                let mut local =
                    <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(*seed);
                seed.fill(0);
                for block in values.chunks_mut(NOISE_BLOCK) {
                    let z = z.get_mut(..block.len()).unwrap_or_default();
                    sampler.fill(&mut local, z);
                    for (o, &n) in block.iter_mut().zip(z.iter()) {
                        let k = round_half_away(f64::from(*o) * inv_grid);
                        // |k| < 2^52 (checked by the caller) and |n| < 300 sigma < 2^35 (the
                        // sampler's support): the sum cannot overflow.
                        *o = (k.saturating_add(n) as f64 * grid) as f32;
                    }
                }
            }
        };
        if threads <= 1 {
            run(&mut jobs);
        } else {
            std::thread::scope(|scope| {
                for batch in jobs.chunks_mut(per_thread) {
                    scope.spawn(move || run(batch));
                }
            });
        }
        seeds.iter_mut().for_each(|s| s.fill(0));
    }

    /// Snaps `sum` to the grid and adds discrete Gaussian noise to every coordinate; returns
    /// the released vector ([`Self::privatize_in_place`] without the copy).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `sum` has the wrong length, [`Error::Data`] when a
    /// coordinate is not finite or too large for the grid (in which case nothing is released).
    pub fn privatize<R: RngCore + CryptoRng + ?Sized>(
        &self,
        sum: &[f32],
        rng: &mut R,
    ) -> Result<Vec<f32>> {
        let mut out = sum.to_vec();
        self.privatize_in_place(&mut out, rng)?;
        Ok(out)
    }

    /// [`Self::privatize`] in place: `values` (the clipped gradient sum) is replaced by the
    /// released vector, so the un-noised sum is overwritten and no second vector is allocated.
    ///
    /// # Errors
    /// As [`Self::privatize`]; on an error `values` is unchanged and nothing is released.
    ///
    /// ```rust
    /// use sotto_training::noise::GradientNoise;
    /// let noise = GradientNoise::new(1.1, 1.0, 650)?;
    /// let mut sum = vec![0.25f32; 650];
    /// noise.privatize_in_place(&mut sum, &mut sotto_dp::rng::os_rng()?)?;
    /// assert!(sum.iter().any(|&v| v != 0.25));
    /// # Ok::<(), sotto_training::Error>(())
    /// ```
    pub fn privatize_in_place<R: RngCore + CryptoRng + ?Sized>(
        &self,
        values: &mut [f32],
        rng: &mut R,
    ) -> Result<()> {
        if values.len() != self.dims {
            return Err(Error::invalid(
                "sum",
                values.len(),
                format!(
                    "has the wrong length; this noise was built for {} coordinates",
                    self.dims
                ),
            ));
        }
        const LIMIT: f64 = (1u64 << 52) as f64;
        // Check everything before sampling anything: an error releases nothing.
        let inv_grid = 1.0 / self.grid;
        if let Some(i) = values.iter().position(|&v| {
            let x = f64::from(v) * inv_grid;
            !x.is_finite() || x.abs() >= LIMIT
        }) {
            return Err(Error::Data(format!(
                "coordinate {i} of the gradient sum is not finite or too large for the noise grid"
            )));
        }
        self.noise_in_place(values, rng);
        Ok(())
    }
}

/// `x.round()` (half away from zero) for `|x| < 2^52`, without a libm call: truncation is exact
/// there and so is `x - trunc(x)`.
#[inline]
fn round_half_away(x: f64) -> i64 {
    let t = x as i64;
    let frac = x - t as f64;
    // Branch-free: the fraction's side is unpredictable for noisy gradients.
    t + i64::from(frac >= 0.5) - i64::from(frac <= -0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In place and copying give the same release; on bad input nothing changes.
    #[test]
    fn in_place_matches_the_copy_and_releases_nothing_on_error() {
        let n = GradientNoise::new(1.0, 1.0, 300).unwrap();
        let sum: Vec<f32> = (0..300).map(|i| (i as f32 - 150.0) * 1e-3).collect();
        let copied = n
            .privatize(&sum, &mut sotto_dp::rng::seeded_rng(9))
            .unwrap();
        let mut in_place = sum.clone();
        n.privatize_in_place(&mut in_place, &mut sotto_dp::rng::seeded_rng(9))
            .unwrap();
        assert_eq!(copied, in_place);
        assert_ne!(in_place, sum);
        let mut bad = sum.clone();
        bad[17] = f32::NAN;
        let before = bad.clone();
        let e = n
            .privatize_in_place(&mut bad, &mut sotto_dp::rng::seeded_rng(9))
            .unwrap_err();
        assert!(e.to_string().contains("coordinate 17"), "{e}");
        assert!(
            bad.iter()
                .zip(&before)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        assert!(
            n.privatize_in_place(&mut [0.0; 5], &mut sotto_dp::rng::seeded_rng(9))
                .is_err()
        );
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(GradientNoise::new(0.0, 1.0, 10).is_err());
        assert!(GradientNoise::new(f64::NAN, 1.0, 10).is_err());
        assert!(GradientNoise::new(1.0, -1.0, 10).is_err());
        assert!(GradientNoise::new(1.0, 1.0, 0).is_err());
    }

    #[test]
    fn grid_is_a_small_power_of_two_and_sensitivity_covers_rounding() {
        let n = GradientNoise::new(1.0, 1.0, 10_000).unwrap();
        let g = n.grid();
        assert_eq!(g, 2f64.powi(g.log2().round() as i32));
        assert!(g <= 1.0 / (1024.0 * 100.0));
        assert!(n.sensitivity() >= 1.0 + 100.0 * g);
        assert!(n.sensitivity() <= 1.0 + 1.0 / 1024.0 + 1e-9);
        assert!(n.noise_scale() >= n.sensitivity());
    }

    /// `for_clipped_sums` charges exactly the clipped-sum sensitivity plus the grid rounding.
    #[test]
    fn clipped_sums_charge_the_float_error() {
        let plain = GradientNoise::new(1.0, 1.0, 650).unwrap();
        let n = GradientNoise::for_clipped_sums(1.0, 1.0, 650, 1438, 1).unwrap();
        let charged = crate::clipping::clipped_sum_sensitivity(1.0, 1438, 1, 650).unwrap();
        assert_eq!(n.grid(), plain.grid());
        let expected = (charged + 650f64.sqrt() * n.grid()) * ROUND_UP;
        assert_eq!(n.sensitivity(), expected);
        assert!(n.sensitivity() > plain.sensitivity() * (1.0 + 1e-4));
        assert!(n.noise_scale() >= n.sensitivity());
        assert!(GradientNoise::for_clipped_sums(1.0, 1.0, 650, 1438, 0).is_err());
    }

    /// Statistical test at significance level ~1e-6: the noise has mean 0 and standard
    /// deviation `noise_scale` (sample of 20_000, fixed seed).
    #[test]
    fn noise_is_centred_with_the_stated_scale() {
        let n = GradientNoise::new(2.0, 0.5, 20_000).unwrap();
        let mut rng = sotto_dp::rng::seeded_rng(11);
        let out = n.privatize(&vec![0.0; 20_000], &mut rng).unwrap();
        let m = out.iter().map(|&v| f64::from(v)).sum::<f64>() / 20_000.0;
        let var = out.iter().map(|&v| (f64::from(v) - m).powi(2)).sum::<f64>() / 20_000.0;
        let sd = n.noise_scale();
        // mean: 5 standard errors; variance: relative error of the sample variance is
        // sqrt(2/n) = 1%, allow 5%.
        assert!(m.abs() < 5.0 * sd / 20_000f64.sqrt(), "{m}");
        assert!(
            (var.sqrt() / sd - 1.0).abs() < 0.05,
            "{} vs {sd}",
            var.sqrt()
        );
        assert!((sd - 2.0 * 0.5).abs() < 0.01, "{sd}");
    }

    #[test]
    fn noise_is_reproducible_from_the_callers_generator() {
        let n = GradientNoise::new(1.0, 1.0, 3 * NOISE_CHUNK + 5).unwrap();
        let zero = vec![0.0; 3 * NOISE_CHUNK + 5];
        let a = n
            .privatize(&zero, &mut sotto_dp::rng::seeded_rng(4))
            .unwrap();
        let b = n
            .privatize(&zero, &mut sotto_dp::rng::seeded_rng(4))
            .unwrap();
        let c = n
            .privatize(&zero, &mut sotto_dp::rng::seeded_rng(5))
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let single = n.clone().with_threads(1).unwrap();
        assert_eq!(
            single
                .privatize(&zero, &mut sotto_dp::rng::seeded_rng(4))
                .unwrap(),
            a
        );
        assert!(n.clone().with_threads(0).is_err());
        // chunks are independent streams, not copies of one another
        assert_ne!(a[..NOISE_CHUNK], a[NOISE_CHUNK..2 * NOISE_CHUNK]);
    }

    #[test]
    fn rounding_matches_f64_round() {
        for x in [
            0.0,
            0.49999999999999994,
            0.5,
            1.5,
            2.5,
            -0.5,
            -1.5,
            -2.4,
            3.7,
            -3.7,
            1e15 + 0.5,
            -(1e15 + 0.5),
            4503599627370495.0,
            -4503599627370495.0,
        ] {
            assert_eq!(round_half_away(x), x.round() as i64, "{x}");
        }
        let mut rng = sotto_dp::rng::seeded_rng(2);
        for _ in 0..10_000 {
            let x = (rng.next_u64() as i64 as f64) / 2f64.powi((rng.next_u32() % 40) as i32 + 12);
            if x.abs() < 4503599627370496.0 {
                assert_eq!(round_half_away(x), x.round() as i64, "{x}");
            }
        }
    }

    #[test]
    fn rejects_non_finite_sums_and_wrong_lengths() {
        let n = GradientNoise::new(1.0, 1.0, 3).unwrap();
        let mut rng = sotto_dp::rng::seeded_rng(1);
        assert!(n.privatize(&[0.0, f32::NAN, 0.0], &mut rng).is_err());
        assert!(n.privatize(&[0.0, 0.0], &mut rng).is_err());
        assert!(n.privatize(&[0.0, 1e30, 0.0], &mut rng).is_err());
    }
}
