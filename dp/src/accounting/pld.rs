//! Privacy-loss-distribution (PLD) accounting with pessimistic discretization, following
//! Google's `dp_accounting` (`pld/`): Koskela, Jälkö, Honkela 2020; Meiser, Mohammadi 2018
//! ("privacy buckets"); Doroshenko, Ghazi, Kamath, Kumar, Manurangsi 2022 ("Connect the
//! Dots").
//!
//! A discretized PLD is a probability mass function on the grid `{k * d : k integer}` plus a
//! mass at `+inf`. Composition is convolution (by FFT); the epsilon-hockey-stick divergence of
//! the composed PLD is the delta of the composed mechanism.

use std::collections::BTreeMap;

use crate::error::{check_non_negative, check_open_unit, check_positive, check_probability};
use crate::math::{
    Complex, convolve, fft_in_place, ln_add_exp, ln_normal_cdf, ln_sub_exp, ln_sum_exp, normal_cdf,
    round_up,
};
use crate::{Error, Result};

/// Default discretization interval of the privacy loss (as in `dp_accounting`).
pub const DEFAULT_VALUE_DISCRETIZATION_INTERVAL: f64 = 1e-4;

/// Mass that may be truncated from the tails of each composition (added to the infinity mass,
/// so the estimate stays pessimistic), as in `dp_accounting`.
const TAIL_MASS_TRUNCATION: f64 = 1e-15;

/// `ln` of the noise mass left out of the Gaussian PLD construction (`dp_accounting`'s
/// `log_mass_truncation_bound`); it is charged to the infinity mass.
const LOG_MASS_TRUNCATION_BOUND: f64 = -50.0;

/// Largest number of grid points of one PLD (and of one FFT), to bound memory (a complex
/// buffer of this length takes 128 MiB).
const MAX_POINTS: usize = 1 << 23;

/// A dense discretized privacy-loss distribution: `probs[i]` is the mass at loss
/// `(lower + i) * d`, `infinity_mass` the mass at `+inf`.
#[derive(Debug, Clone, PartialEq)]
struct Pmf {
    lower: i64,
    probs: Vec<f64>,
    infinity_mass: f64,
}

fn overflow(context: &'static str) -> Error {
    Error::Overflow {
        context,
        hint: "use fewer compositions or a coarser discretization interval".into(),
    }
}

fn too_many_points(points: f64, d: f64) -> Error {
    Error::invalid(
        "value_discretization_interval",
        d,
        format!(
            "the privacy-loss distribution would need {points:.3e} grid points (limit \
             {MAX_POINTS}); use a coarser discretization interval or more noise"
        ),
    )
}

impl Pmf {
    fn identity() -> Self {
        Pmf {
            lower: 0,
            probs: vec![1.0],
            infinity_mass: 0.0,
        }
    }

    fn from_sparse(map: &BTreeMap<i64, f64>, infinity_mass: f64, d: f64) -> Result<Self> {
        let (Some((&lo, _)), Some((&hi, _))) = (map.first_key_value(), map.last_key_value()) else {
            return Ok(Pmf {
                lower: 0,
                probs: vec![0.0],
                infinity_mass,
            });
        };
        let span = hi as f64 - lo as f64 + 1.0;
        if span > MAX_POINTS as f64 {
            return Err(too_many_points(span, d));
        }
        let mut probs = vec![0.0; (hi - lo + 1) as usize];
        for (&k, &p) in map {
            if let Some(slot) = probs.get_mut((k - lo) as usize) {
                *slot += p;
            }
        }
        Ok(Pmf {
            lower: lo,
            probs,
            infinity_mass,
        })
    }

    /// Truncates at most `tail / 2` of mass from each end: the left part is added to the first
    /// kept point, the right part to the infinity mass (pessimistic).
    fn truncate_tails(mut self, tail: f64) -> Self {
        let n = self.probs.len();
        let half = tail / 2.0;
        let mut left = 0;
        let mut s = 0.0;
        while left < n {
            s += self.probs[left];
            if s > half {
                break;
            }
            left += 1;
        }
        let mut right = n;
        let mut s = 0.0;
        while right > 0 {
            s += self.probs[right - 1];
            if s > half {
                break;
            }
            right -= 1;
        }
        let right = right.max(left + 1).min(n);
        let left = left.min(right.saturating_sub(1));
        let left_mass: f64 = self.probs[..left].iter().sum();
        let right_mass: f64 = self.probs[right..].iter().sum();
        let mut kept = self.probs[left..right].to_vec();
        if let Some(first) = kept.first_mut() {
            *first += left_mass;
        }
        self.lower += left as i64;
        self.probs = kept;
        self.infinity_mass += right_mass;
        self
    }

    fn compose(&self, other: &Pmf, d: f64) -> Result<Pmf> {
        let len = self.probs.len() + other.probs.len() - 1;
        if len.next_power_of_two() > MAX_POINTS {
            return Err(too_many_points(len as f64, d));
        }
        let probs = convolve(&self.probs, &other.probs);
        let infinity_mass =
            self.infinity_mass + other.infinity_mass - self.infinity_mass * other.infinity_mass;
        let lower = self
            .lower
            .checked_add(other.lower)
            .ok_or_else(|| overflow("PLD composition"))?;
        Ok(Pmf {
            lower,
            probs,
            infinity_mass,
        }
        .truncate_tails(TAIL_MASS_TRUNCATION))
    }

    /// Composes the PMF with itself `n` times: one FFT, a pointwise `n`-th power, one inverse
    /// FFT, on a window given by a Chernoff bound (the mass outside it, at most
    /// [`TAIL_MASS_TRUNCATION`], is charged to the infinity mass), as `dp_accounting` does.
    fn self_compose(&self, n: u64, d: f64) -> Result<Pmf> {
        if n <= 1 {
            return Ok(self.clone());
        }
        let m = self.probs.len();
        let nf = n as f64;
        let (lo, hi) = self_convolve_bounds(&self.probs, nf, TAIL_MASS_TRUNCATION);
        let out_len = (hi - lo + 1).max(1);
        let size = (out_len.max(m as i64)) as f64;
        if size > MAX_POINTS as f64 {
            return Err(too_many_points(size, d));
        }
        let fft_len = (size as usize).next_power_of_two();
        let mut buf = vec![Complex::default(); fft_len];
        for (b, &p) in buf.iter_mut().zip(&self.probs) {
            b.re = p;
        }
        fft_in_place(&mut buf, false)?;
        for z in buf.iter_mut() {
            *z = complex_powu(*z, n);
        }
        fft_in_place(&mut buf, true)?;
        let scale = 1.0 / fft_len as f64;
        let len_i = fft_len as i64;
        let probs: Vec<f64> = (0..out_len)
            .map(|i| {
                let idx = (i + lo).rem_euclid(len_i) as usize;
                buf.get(idx).map_or(0.0, |z| (z.re * scale).max(0.0))
            })
            .collect();
        let base_lower = i64::try_from(n)
            .ok()
            .and_then(|n| self.lower.checked_mul(n))
            .and_then(|l| l.checked_add(lo))
            .ok_or_else(|| overflow("PLD self-composition"))?;
        // 1 - (1 - inf)^n, plus the truncated tails.
        let inf = TAIL_MASS_TRUNCATION - (nf * (-self.infinity_mass).ln_1p()).exp_m1();
        Ok(Pmf {
            lower: base_lower,
            probs,
            infinity_mass: inf.min(1.0),
        })
    }

    fn loss(&self, i: usize, d: f64) -> f64 {
        (self.lower + i as i64) as f64 * d
    }

    /// The epsilon-hockey-stick divergence at `epsilon`.
    fn delta_for_epsilon(&self, d: f64, epsilon: f64) -> f64 {
        let mut delta = self.infinity_mass;
        for (i, &p) in self.probs.iter().enumerate() {
            let l = self.loss(i, d);
            if l > epsilon {
                delta += -(epsilon - l).exp_m1() * p;
            }
        }
        delta
    }

    /// The smallest epsilon whose hockey-stick divergence is at most `delta` (`+inf` if none).
    fn epsilon_for_delta(&self, d: f64, delta: f64) -> f64 {
        if self.infinity_mass > delta {
            return f64::INFINITY;
        }
        let mut mass_upper = self.infinity_mass;
        let mut mass_lower = 0.0;
        for i in (0..self.probs.len()).rev() {
            let loss = self.loss(i, d);
            let p = self.probs[i];
            if mass_upper > delta
                && mass_lower > 0.0
                && ((mass_upper - delta) / mass_lower).ln() >= loss
            {
                break;
            }
            mass_upper += p;
            mass_lower += (-loss).exp() * p;
            if mass_upper >= delta && mass_lower == 0.0 {
                return loss.max(0.0);
            }
        }
        if mass_upper <= mass_lower + delta {
            return 0.0;
        }
        ((mass_upper - delta) / mass_lower).ln()
    }
}

/// `z^n` by repeated squaring.
fn complex_powu(z: Complex, mut n: u64) -> Complex {
    let mut result = Complex { re: 1.0, im: 0.0 };
    let mut base = z;
    while n > 0 {
        if n & 1 == 1 {
            result = cmul(result, base);
        }
        base = cmul(base, base);
        n >>= 1;
    }
    result
}

fn cmul(a: Complex, b: Complex) -> Complex {
    Complex {
        re: a.re * b.re - a.im * b.im,
        im: a.re * b.im + a.im * b.re,
    }
}

/// Chernoff bounds on the index range of the `n`-fold self-convolution outside which at most
/// `tail` of the mass lies (`dp_accounting`'s `compute_self_convolve_bounds`).
fn self_convolve_bounds(probs: &[f64], n: f64, tail: f64) -> (i64, i64) {
    let m = probs.len();
    let mut upper = ((m - 1) as f64 * n).min(i64::MAX as f64 / 4.0) as i64;
    let mut lower = 0_i64;
    let log_probs: Vec<f64> = probs.iter().map(|&p| p.ln()).collect();
    let mut terms = vec![0.0; m];
    let ln_2_over_tail = (2.0 / tail).ln();
    for k in (-20..0).chain(1..=20) {
        let t = f64::from(k) / m as f64;
        for (i, (term, &lp)) in terms.iter_mut().zip(&log_probs).enumerate() {
            *term = lp + i as f64 * t;
        }
        let log_mgf = ln_sum_exp(&terms);
        let bound = (n * log_mgf + ln_2_over_tail) / t;
        if !bound.is_finite() {
            continue;
        }
        if t > 0.0 {
            upper = upper.min(bound.ceil() as i64);
        } else {
            lower = lower.max(bound.floor() as i64);
        }
    }
    (lower, upper.max(lower))
}

/// Whether the upper distribution is the one shifted towards the neighbor with the extra
/// record (remove) or not (add), as in `dp_accounting`'s `AdjacencyType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adjacency {
    Remove,
    Add,
}

/// Symmetric additive noise with sensitivity 1.
#[derive(Debug, Clone, Copy)]
enum Noise {
    Gaussian { sigma: f64 },
    Laplace { b: f64 },
}

impl Noise {
    fn cdf(self, x: f64) -> f64 {
        match self {
            Noise::Gaussian { sigma } => normal_cdf(x / sigma),
            Noise::Laplace { b } => {
                if x < 0.0 {
                    0.5 * (x / b).exp()
                } else {
                    1.0 - 0.5 * (-x / b).exp()
                }
            }
        }
    }

    fn log_cdf(self, x: f64) -> f64 {
        match self {
            Noise::Gaussian { sigma } => ln_normal_cdf(x / sigma),
            Noise::Laplace { b } => {
                if x < 0.0 {
                    0.5_f64.ln() + x / b
                } else {
                    (-0.5 * (-x / b).exp()).ln_1p()
                }
            }
        }
    }

    /// Privacy loss at `x` without subsampling, remove adjacency: `ln(mu(x + 1) / mu(x))`.
    fn loss_remove(self, x: f64) -> f64 {
        match self {
            Noise::Gaussian { sigma } => (-0.5 - x) / (sigma * sigma),
            Noise::Laplace { b } => (x.abs() - (x + 1.0).abs()) / b,
        }
    }

    /// The largest `x` whose (unsubsampled, remove) privacy loss is at least `loss`.
    fn inverse_loss_remove(self, loss: f64) -> f64 {
        match self {
            Noise::Gaussian { sigma } => -0.5 - loss * sigma * sigma,
            Noise::Laplace { b } => {
                let t = loss * b;
                if t > 1.0 {
                    f64::NEG_INFINITY
                } else if t <= -1.0 {
                    f64::INFINITY
                } else {
                    0.5 * (-1.0 - t)
                }
            }
        }
    }
}

/// `ln(a e^b + c)` for `a > 0` (any sign of `c`, the result must exist).
fn ln_a_exp_b_plus_c(a: f64, b: f64, c: f64) -> f64 {
    let lead = b + a.ln();
    if c == 0.0 {
        lead
    } else if c < 0.0 {
        ln_sub_exp(lead, (-c).ln())
    } else {
        ln_add_exp(lead, c.ln())
    }
}

/// An additive-noise mechanism with Poisson subsampling at rate `q`, for one adjacency.
#[derive(Debug, Clone, Copy)]
struct Additive {
    noise: Noise,
    q: f64,
    adjacency: Adjacency,
}

impl Additive {
    fn loss_remove_subsampled(&self, x: f64) -> f64 {
        let l0 = self.noise.loss_remove(x);
        if self.q == 1.0 {
            l0
        } else {
            ln_a_exp_b_plus_c(self.q, l0, 1.0 - self.q)
        }
    }

    fn privacy_loss(&self, x: f64) -> f64 {
        match self.adjacency {
            Adjacency::Remove => self.loss_remove_subsampled(x),
            Adjacency::Add => -self.loss_remove_subsampled(-x),
        }
    }

    fn inverse_privacy_loss(&self, loss: f64) -> f64 {
        let q = self.q;
        match self.adjacency {
            Adjacency::Remove => {
                if q == 1.0 {
                    return self.noise.inverse_loss_remove(loss);
                }
                let floor = (-q).ln_1p();
                if is_close(loss, floor) || loss <= floor {
                    return self.noise.inverse_loss_remove(f64::NEG_INFINITY);
                }
                let l0 = ln_a_exp_b_plus_c(1.0 / q, loss, 1.0 - 1.0 / q);
                self.noise.inverse_loss_remove(l0)
            }
            Adjacency::Add => {
                let inv_add = |l: f64| 1.0 + self.noise.inverse_loss_remove(l);
                if q == 1.0 {
                    return inv_add(loss);
                }
                let ceiling = -(-q).ln_1p();
                if is_close(loss, ceiling) || loss >= ceiling {
                    return inv_add(f64::INFINITY);
                }
                let l0 = -ln_a_exp_b_plus_c(1.0 / q, -loss, 1.0 - 1.0 / q);
                inv_add(l0)
            }
        }
    }

    fn mu_upper_cdf(&self, x: f64) -> f64 {
        match self.adjacency {
            Adjacency::Add => self.noise.cdf(x),
            Adjacency::Remove => {
                if self.q == 1.0 {
                    self.noise.cdf(x + 1.0)
                } else {
                    (1.0 - self.q) * self.noise.cdf(x) + self.q * self.noise.cdf(x + 1.0)
                }
            }
        }
    }

    fn mu_lower_log_cdf(&self, x: f64) -> f64 {
        match self.adjacency {
            Adjacency::Remove => self.noise.log_cdf(x),
            Adjacency::Add => {
                if self.q == 1.0 {
                    self.noise.log_cdf(x - 1.0)
                } else {
                    ln_add_exp(
                        (-self.q).ln_1p() + self.noise.log_cdf(x),
                        self.q.ln() + self.noise.log_cdf(x - 1.0),
                    )
                }
            }
        }
    }

    /// The exact epsilon-hockey-stick divergence (delta) of the mechanism at `epsilon`.
    fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        if self.q < 1.0 {
            match self.adjacency {
                Adjacency::Add if epsilon >= -(-self.q).ln_1p() => return 0.0,
                Adjacency::Remove if epsilon <= (-self.q).ln_1p() => {
                    return (-epsilon.exp_m1()).clamp(0.0, 1.0);
                }
                _ => {}
            }
        }
        let x = self.inverse_privacy_loss(epsilon);
        let delta = self.mu_upper_cdf(x) - (epsilon + self.mu_lower_log_cdf(x)).exp();
        if delta.is_nan() {
            return 1.0;
        }
        delta.clamp(0.0, 1.0)
    }

    /// `(epsilon_lower, epsilon_upper)`: the range of losses to discretize
    /// (`dp_accounting`'s `connect_dots_bounds`).
    fn connect_dots_bounds(&self) -> (f64, f64) {
        match self.noise {
            Noise::Gaussian { sigma } => {
                let mut lower_x =
                    sigma * normal_quantile_from_ln(0.5_f64.ln() + LOG_MASS_TRUNCATION_BOUND);
                let mut upper_x = -lower_x;
                match self.adjacency {
                    Adjacency::Add => upper_x += 1.0,
                    Adjacency::Remove => lower_x -= 1.0,
                }
                (self.privacy_loss(upper_x), self.privacy_loss(lower_x))
            }
            Noise::Laplace { b } => {
                let max_eps = 1.0 / b;
                let q = self.q;
                if q == 1.0 {
                    return (-max_eps, max_eps);
                }
                let up = ((1.0 - q) + q * max_eps.exp()).ln();
                let down = ((1.0 - q) + q * (-max_eps).exp()).ln();
                match self.adjacency {
                    Adjacency::Add => (-up, -down),
                    Adjacency::Remove => (down, up),
                }
            }
        }
    }

    /// The pessimistic Connect-the-Dots PMF on the grid of step `d`
    /// (`create_pmf_pessimistic_connect_dots_fixed_gap`).
    fn connect_the_dots(&self, d: f64) -> Result<Pmf> {
        let (eps_lower, eps_upper) = self.connect_dots_bounds();
        let hi_f = (eps_upper / d).ceil();
        let lo_f = (eps_lower / d).floor();
        if !(hi_f.is_finite() && lo_f.is_finite()) || hi_f < lo_f {
            return Err(Error::invalid(
                "noise",
                format!("{:?}", self.noise),
                "the privacy-loss range of this mechanism is not finite; use more noise",
            ));
        }
        let span = hi_f - lo_f + 1.0;
        if span > MAX_POINTS as f64 {
            return Err(too_many_points(span, d));
        }
        let lo = lo_f as i64;
        let n = span as usize;
        let mut deltas: Vec<f64> = (0..n)
            .map(|i| self.delta_for_epsilon((lo + i as i64) as f64 * d))
            .collect();
        // Deltas must be non-increasing; enforce it (pessimistically, as dp_accounting does).
        for i in 1..n {
            if deltas[i] > deltas[i - 1] {
                deltas[i] = deltas[i - 1];
            }
        }
        let last = deltas.last().copied().unwrap_or(1.0);
        if n == 1 {
            return Ok(Pmf {
                lower: lo,
                probs: vec![1.0 - deltas[0]],
                infinity_mass: deltas[0],
            });
        }
        let em1 = d.exp_m1();
        let ed = d.exp();
        let diffs: Vec<f64> = deltas.windows(2).map(|w| w[1] - w[0]).collect();
        let mut probs = vec![0.0; n];
        probs[0] = 1.0 - deltas[0] + diffs[0] / em1;
        for i in 1..n - 1 {
            probs[i] = (diffs[i] - diffs[i - 1] * ed) / em1;
        }
        probs[n - 1] = diffs[n - 2] / (-d).exp_m1();
        for p in probs.iter_mut() {
            *p = p.max(0.0);
        }
        Ok(Pmf {
            lower: lo,
            probs,
            infinity_mass: last,
        })
    }
}

fn is_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// The standard normal quantile `z` with `ln Phi(z) = ln_p` (for `ln_p < ln 0.5`), by
/// bisection on the accurate [`ln_normal_cdf`].
fn normal_quantile_from_ln(ln_p: f64) -> f64 {
    let (mut lo, mut hi) = (-60.0_f64, 0.0_f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if ln_normal_cdf(mid) < ln_p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A privacy-loss-distribution accountant: tracks the discretized PLDs of the composed
/// mechanisms (for both the "remove" and the "add" neighbor, since subsampled mechanisms are
/// not symmetric) and converts them to (epsilon, delta).
///
/// # Privacy
/// Every discretization is pessimistic: each PLD is built with the pessimistic
/// Connect-the-Dots construction (continuous noise) or by rounding losses up (discrete
/// mechanisms), mass cut off in the tails is added to the infinity mass, and the reported
/// epsilon is rounded up. The result is an upper bound on the true epsilon of the composition
/// (up to floating-point error in the construction, as in `dp_accounting`), usually much
/// tighter than RDP. Subsampled mechanisms assume Poisson sampling and add-or-remove-one
/// neighbors; randomized response assumes replace-one neighbors.
///
/// # Examples
/// ```
/// use sotto_dp::accounting::PldAccountant;
/// let mut acc = PldAccountant::with_discretization(1e-3)?;
/// acc.compose_poisson_subsampled_gaussian(0.01, 1.0, 100)?;
/// let eps = acc.epsilon(1e-5)?;
/// assert!(eps > 0.1 && eps < 2.0);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PldAccountant {
    d: f64,
    remove: Pmf,
    /// `None` while every composed mechanism is symmetric (add PLD = remove PLD).
    add: Option<Pmf>,
}

impl Default for PldAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl PldAccountant {
    /// An empty accountant with the default discretization interval
    /// ([`DEFAULT_VALUE_DISCRETIZATION_INTERVAL`], 1e-4).
    pub fn new() -> Self {
        PldAccountant {
            d: DEFAULT_VALUE_DISCRETIZATION_INTERVAL,
            remove: Pmf::identity(),
            add: None,
        }
    }

    /// An empty accountant with discretization interval `d` (the privacy-loss grid step;
    /// smaller is tighter and slower).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `d` is not finite and positive, or above 1.
    pub fn with_discretization(d: f64) -> Result<Self> {
        check_positive("value_discretization_interval", d)?;
        if d > 1.0 {
            return Err(Error::invalid(
                "value_discretization_interval",
                d,
                "must be at most 1 (typical values: 1e-4 to 1e-2)",
            ));
        }
        Ok(PldAccountant {
            d,
            remove: Pmf::identity(),
            add: None,
        })
    }

    /// The discretization interval.
    pub fn discretization(&self) -> f64 {
        self.d
    }

    /// Composes `count` copies of a mechanism given by its (remove, add) PMFs into the state.
    /// Nothing changes on error.
    fn compose_pmfs(&mut self, remove: Pmf, add: Option<Pmf>, count: u64) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let remove_n = remove.self_compose(count, self.d)?;
        let add_n = match &add {
            Some(a) => Some(a.self_compose(count, self.d)?),
            None => None,
        };
        let new_remove = self.remove.compose(&remove_n, self.d)?;
        let new_add = match (&self.add, add_n) {
            (None, None) => None,
            (Some(mine), None) => Some(mine.compose(&remove_n, self.d)?),
            (None, Some(theirs)) => Some(self.remove.compose(&theirs, self.d)?),
            (Some(mine), Some(theirs)) => Some(mine.compose(&theirs, self.d)?),
        };
        self.remove = new_remove;
        self.add = new_add;
        Ok(())
    }

    /// Composes `count` Gaussian mechanisms with noise multiplier `sigma` (L2 sensitivity 1).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a non-finite or non-positive `sigma`, or a PLD too large
    /// for the discretization interval.
    pub fn compose_gaussian(&mut self, sigma: f64, count: u64) -> Result<()> {
        check_positive("noise_multiplier", sigma)?;
        if count == 0 {
            return Ok(());
        }
        // `count` Gaussians with sensitivity 1 are one Gaussian with noise
        // sigma / sqrt(count) (rounded down: less noise is the conservative side).
        let s = (sigma / (count as f64).sqrt()).next_down();
        let mech = Additive {
            noise: Noise::Gaussian { sigma: s },
            q: 1.0,
            adjacency: Adjacency::Remove,
        };
        let pmf = mech.connect_the_dots(self.d)?;
        self.compose_pmfs(pmf, None, 1)
    }

    /// Composes `count` Laplace mechanisms with scale `b` (L1 sensitivity 1, so each is
    /// `1/b`-DP).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a non-finite or non-positive `b`, or a PLD too large for
    /// the discretization interval.
    pub fn compose_laplace(&mut self, b: f64, count: u64) -> Result<()> {
        check_positive("laplace_scale", b)?;
        let mech = Additive {
            noise: Noise::Laplace { b },
            q: 1.0,
            adjacency: Adjacency::Remove,
        };
        let pmf = mech.connect_the_dots(self.d)?;
        self.compose_pmfs(pmf, None, count)
    }

    /// Composes `count` Poisson-subsampled Gaussian mechanisms (sampling rate `q`, noise
    /// multiplier `sigma`): `count` steps of DP-SGD.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `q` is not in [0, 1], `sigma` is not finite and
    /// positive, or the PLD is too large for the discretization interval.
    pub fn compose_poisson_subsampled_gaussian(
        &mut self,
        q: f64,
        sigma: f64,
        count: u64,
    ) -> Result<()> {
        check_probability("sampling_rate", q)?;
        check_positive("noise_multiplier", sigma)?;
        if q == 0.0 || count == 0 {
            return Ok(());
        }
        if q == 1.0 {
            return self.compose_gaussian(sigma, count);
        }
        let noise = Noise::Gaussian { sigma };
        let remove = Additive {
            noise,
            q,
            adjacency: Adjacency::Remove,
        }
        .connect_the_dots(self.d)?;
        let add = Additive {
            noise,
            q,
            adjacency: Adjacency::Add,
        }
        .connect_the_dots(self.d)?;
        self.compose_pmfs(remove, Some(add), count)
    }

    /// Composes `count` randomized-response releases over `num_buckets` values: with
    /// probability `noise_parameter` the output is uniform over the buckets, otherwise it is
    /// the true value (`dp_accounting`'s `RandomizedResponseDpEvent`, replace-one neighbors).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `noise_parameter` is not in (0, 1) or `num_buckets < 2`.
    pub fn compose_randomized_response(
        &mut self,
        noise_parameter: f64,
        num_buckets: u64,
        count: u64,
    ) -> Result<()> {
        check_open_unit("noise_parameter", noise_parameter)?;
        if num_buckets < 2 {
            return Err(Error::invalid(
                "num_buckets",
                num_buckets,
                "randomized response needs at least 2 buckets",
            ));
        }
        let p = noise_parameter;
        let k = num_buckets as f64;
        let ln_keep = (1.0 - p * (k - 1.0) / k).ln();
        let ln_other = (p / k).ln();
        let d = self.d;
        if (ln_keep - ln_other) / d > MAX_POINTS as f64 {
            return Err(too_many_points(2.0 * (ln_keep - ln_other) / d, d));
        }
        let mut map = BTreeMap::new();
        let mut add = |loss: f64, mass: f64| {
            *map.entry((loss / d).ceil() as i64).or_insert(0.0) += mass;
        };
        add(ln_keep - ln_other, ln_keep.exp());
        add(ln_other - ln_keep, ln_other.exp());
        if num_buckets > 2 {
            add(0.0, (k - 2.0) * p / k);
        }
        let pmf = Pmf::from_sparse(&map, 0.0, d)?;
        self.compose_pmfs(pmf, None, count)
    }

    /// Composes `count` releases that are each (epsilon, delta)-DP, with the pessimistic PLD
    /// of an (epsilon, delta)-DP mechanism (`dp_accounting`'s `from_privacy_parameters`).
    /// `delta = 0` gives pure DP.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `epsilon` is negative or not finite, or `delta` is not in
    /// [0, 1).
    pub fn compose_approximate_dp(&mut self, epsilon: f64, delta: f64, count: u64) -> Result<()> {
        check_non_negative("epsilon", epsilon)?;
        check_probability("delta", delta)?;
        if delta >= 1.0 {
            return Err(Error::invalid("delta", delta, "must be below 1"));
        }
        let d = self.d;
        if epsilon / d > MAX_POINTS as f64 {
            return Err(too_many_points(2.0 * epsilon / d, d));
        }
        let mut map = BTreeMap::new();
        *map.entry((epsilon / d).ceil() as i64).or_insert(0.0) +=
            (1.0 - delta) / (1.0 + (-epsilon).exp());
        *map.entry((-epsilon / d).ceil() as i64).or_insert(0.0) +=
            (1.0 - delta) / (1.0 + epsilon.exp());
        let pmf = Pmf::from_sparse(&map, delta, d)?;
        self.compose_pmfs(pmf, None, count)
    }

    /// The smallest epsilon for which everything composed so far is (epsilon, delta)-DP,
    /// rounded up; `+inf` when the infinity mass alone exceeds `delta`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `delta` is not in (0, 1).
    pub fn epsilon(&self, delta: f64) -> Result<f64> {
        check_open_unit("delta", delta)?;
        let mut eps = self.remove.epsilon_for_delta(self.d, delta);
        if let Some(add) = &self.add {
            eps = eps.max(add.epsilon_for_delta(self.d, delta));
        }
        Ok(round_up(eps.max(0.0)))
    }

    /// The delta of everything composed so far at `epsilon`, rounded up.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `epsilon` is negative or not finite.
    pub fn delta(&self, epsilon: f64) -> Result<f64> {
        check_non_negative("epsilon", epsilon)?;
        let mut delta = self.remove.delta_for_epsilon(self.d, epsilon);
        if let Some(add) = &self.add {
            delta = delta.max(add.delta_for_epsilon(self.d, epsilon));
        }
        Ok(round_up(delta).clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_the_dots_is_a_distribution() {
        for q in [1.0, 0.1] {
            for adjacency in [Adjacency::Remove, Adjacency::Add] {
                let m = Additive {
                    noise: Noise::Gaussian { sigma: 1.0 },
                    q,
                    adjacency,
                };
                let pmf = m.connect_the_dots(1e-3).unwrap();
                let total: f64 = pmf.probs.iter().sum::<f64>() + pmf.infinity_mass;
                assert!((total - 1.0).abs() < 1e-6, "q {q} {adjacency:?}: {total}");
            }
        }
    }

    #[test]
    fn gaussian_pld_is_pessimistic_and_close_to_exact() {
        let mut acc = PldAccountant::with_discretization(1e-3).unwrap();
        acc.compose_gaussian(1.0, 1).unwrap();
        let exact = super::super::gaussian::epsilon(1.0, 1e-5).unwrap();
        let pld = acc.epsilon(1e-5).unwrap();
        assert!(pld >= exact * (1.0 - 1e-9), "{pld} < {exact}");
        assert!(pld <= exact * 1.01, "{pld} vs {exact}");
    }

    #[test]
    fn self_compose_matches_repeated_composition() {
        let m = Additive {
            noise: Noise::Laplace { b: 1.0 },
            q: 1.0,
            adjacency: Adjacency::Remove,
        };
        let pmf = m.connect_the_dots(1e-2).unwrap();
        let fast = pmf.self_compose(5, 1e-2).unwrap();
        let mut slow = pmf.clone();
        for _ in 1..5 {
            slow = slow.compose(&pmf, 1e-2).unwrap();
        }
        let a = fast.epsilon_for_delta(1e-2, 1e-6);
        let b = slow.epsilon_for_delta(1e-2, 1e-6);
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    #[test]
    fn pure_dp_composes_to_at_most_basic() {
        let mut acc = PldAccountant::with_discretization(1e-3).unwrap();
        acc.compose_laplace(1.0, 10).unwrap();
        let eps = acc.epsilon(1e-6).unwrap();
        assert!(eps < 10.0 && eps > 1.0, "{eps}");
    }

    #[test]
    fn randomized_response_single_release() {
        // RR with keep probability such that epsilon = ln 3: p = 0.5, k = 2 gives
        // Pr[keep] = 0.75, Pr[flip] = 0.25.
        let mut acc = PldAccountant::with_discretization(1e-4).unwrap();
        acc.compose_randomized_response(0.5, 2, 1).unwrap();
        let eps = acc.epsilon(1e-9).unwrap();
        assert!(eps >= 3.0_f64.ln() && eps <= 3.0_f64.ln() + 2e-4, "{eps}");
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(PldAccountant::with_discretization(0.0).is_err());
        assert!(PldAccountant::with_discretization(f64::NAN).is_err());
        let mut acc = PldAccountant::new();
        assert!(acc.compose_gaussian(-1.0, 1).is_err());
        assert!(
            acc.compose_poisson_subsampled_gaussian(1.5, 1.0, 1)
                .is_err()
        );
        assert!(acc.compose_randomized_response(1.0, 2, 1).is_err());
        assert!(acc.compose_randomized_response(0.5, 1, 1).is_err());
        assert!(acc.epsilon(0.0).is_err());
        assert!(acc.epsilon(1.0).is_err());
        // A state untouched by failed calls.
        assert_eq!(acc, PldAccountant::new());
        let mut tiny = PldAccountant::new();
        assert!(tiny.compose_gaussian(1e-4, 1).is_err());
        assert!(tiny.compose_approximate_dp(1e300, 0.0, 1).is_err());
        let msg = tiny
            .compose_randomized_response(1e-300, 2, 1)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("value_discretization_interval"), "{msg}");
        assert!(tiny.compose_gaussian(1.0, u64::MAX).is_err());
        assert!(
            tiny.compose_poisson_subsampled_gaussian(0.01, 1.0, u64::MAX)
                .is_err()
        );
        assert_eq!(tiny, PldAccountant::new());
        // Coarser grids take extreme mechanisms.
        let mut coarse = PldAccountant::with_discretization(1e-2).unwrap();
        coarse.compose_randomized_response(1e-300, 2, 1).unwrap();
        assert!(coarse.epsilon(1e-6).unwrap() > 690.0);
    }
}
