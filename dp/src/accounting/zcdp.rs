//! zero-concentrated DP (Bun and Steinke 2016) and its conversion to (epsilon, delta).

use crate::Result;
use crate::error::{check_non_negative, check_open_unit};
use crate::math::round_up;

/// `epsilon(alpha)` of the conversion of Canonne, Kamath, Steinke 2020 (Prop. 12 applied to
/// the RDP curve `alpha rho` of rho-zCDP): valid for every `alpha > 1`.
fn cks_epsilon(rho: f64, ln_delta: f64, alpha: f64) -> f64 {
    alpha * rho + (-1.0 / alpha).ln_1p() - (ln_delta + alpha.ln()) / (alpha - 1.0)
}

/// See [`super::zcdp_to_epsilon`].
pub(crate) fn to_epsilon(rho: f64, delta: f64) -> Result<f64> {
    check_non_negative("rho", rho)?;
    check_open_unit("delta", delta)?;
    if rho == 0.0 {
        return Ok(0.0);
    }
    let ln_delta = delta.ln();
    // Classic bound (Bun and Steinke 2016, Prop. 1.3).
    let classic = rho + 2.0 * (rho * -ln_delta).sqrt();
    // Infimum over alpha = 1 + e^t: every evaluated alpha gives a valid bound, so a grid plus
    // a golden-section refinement is safe whatever the shape of the function.
    let f = |t: f64| cks_epsilon(rho, ln_delta, 1.0 + t.exp());
    let (t_min, t_max, step) = (-12.0_f64, 30.0_f64, 0.05_f64);
    let mut best_t = t_min;
    let mut best = f64::INFINITY;
    let mut t = t_min;
    while t <= t_max {
        let v = f(t);
        if v < best {
            best = v;
            best_t = t;
        }
        t += step;
    }
    let (mut a, mut b) = (best_t - step, best_t + step);
    let g = 0.5 * (5.0_f64.sqrt() - 1.0);
    for _ in 0..80 {
        let c = b - g * (b - a);
        let d = a + g * (b - a);
        let (fc, fd) = (f(c), f(d));
        best = best.min(fc).min(fd);
        if fc < fd {
            b = d;
        } else {
            a = c;
        }
    }
    let eps = best.min(classic).max(0.0);
    Ok(round_up(eps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_worse_than_classic_and_positive() {
        for &rho in &[1e-6, 1e-3, 0.05, 0.5, 2.0, 50.0] {
            for &delta in &[1e-3, 1e-6, 1e-10] {
                let e = to_epsilon(rho, delta).unwrap();
                let classic = rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt();
                assert!(
                    e <= classic * (1.0 + 1e-9),
                    "rho {rho} delta {delta}: {e} vs {classic}"
                );
                assert!(e > 0.0);
            }
        }
    }

    #[test]
    fn tighter_than_classic_in_the_usual_regime() {
        let e = to_epsilon(0.5, 1e-6).unwrap();
        let classic = 0.5 + 2.0 * (0.5 * (1e6_f64).ln()).sqrt();
        assert!(e < classic - 0.1, "{e} vs {classic}");
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(to_epsilon(-1.0, 1e-5).is_err());
        assert!(to_epsilon(f64::NAN, 1e-5).is_err());
        assert!(to_epsilon(1.0, 0.0).is_err());
        assert!(to_epsilon(1.0, 1.0).is_err());
    }
}
