//! The RDP accountant treats discrete Gaussian noise on a grid as the continuous Gaussian
//! (`docs/privacy/accounting.md`, "Discrete noise under the continuous accountant"). This test
//! computes the exact Rényi divergences of the Poisson-subsampled discrete Gaussian in one
//! dimension (shift of `delta` grid units, `N_Z(0, sigma^2)` with `sigma = s * delta`, mixture
//! `(1 - q) N_Z(0) + q N_Z(delta)`), in both directions, at integer orders, and checks them
//! against `poisson_subsampled_gaussian_rdp`, the value the accountant uses:
//!
//! * remove, `D_a(mixture || N_Z(0))`: equal to the continuous value (proved: see the doc);
//! * add, `D_a(N_Z(0) || mixture)`: at most the continuous value (checked here, not proved).
//!
//! Sums run over every integer in a window of +-12 sigma around the mass (the tail beyond is
//! below e^-58 relative), with compensated summation; near-zero divergences are computed as
//! `ln1p(E[h] - 1)` so that the comparison is accurate to ~1e-12 relative.

// Test helpers abort the test on any error.
#![allow(clippy::unwrap_used)]

use sotto_dp::accounting::rdp::poisson_subsampled_gaussian_rdp;
use sotto_dp::accounting::{AccountantKind, RdpAccountant, dp_sgd_noise_multiplier};

/// Neumaier-compensated sum.
#[derive(Default)]
struct Sum {
    s: f64,
    c: f64,
}

impl Sum {
    fn add(&mut self, x: f64) {
        let t = self.s + x;
        if self.s.abs() >= x.abs() {
            self.c += (self.s - t) + x;
        } else {
            self.c += (x - t) + self.s;
        }
        self.s = t;
    }
    fn value(&self) -> f64 {
        self.s + self.c
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Direction {
    /// `D_a(mixture || N_Z(0))`: `h = (1 - q + q L)^a`.
    Remove,
    /// `D_a(N_Z(0) || mixture)`: `h = (1 - q + q L)^(1 - a)`.
    Add,
}

/// Exact order-`a` Rényi divergence of the Poisson-subsampled discrete Gaussian, as
/// `ln E_{N_Z(0)}[h(k)] / (a - 1)`, `L(k) = exp((2 k delta - delta^2) / (2 sigma^2))`.
fn discrete_rdp(q: f64, sigma: f64, delta: i64, a: u32, dir: Direction) -> f64 {
    let af = f64::from(a);
    let d = delta as f64;
    let two_s2 = 2.0 * sigma * sigma;
    let w = (12.0 * sigma).ceil() as i64;
    let (lo, hi) = match dir {
        Direction::Remove => (-w, i64::from(a) * delta + w),
        Direction::Add => (-w - delta, w + delta),
    };
    let power = match dir {
        Direction::Remove => af,
        Direction::Add => 1.0 - af,
    };
    let (ln1mq, lnq) = ((-q).ln_1p(), q.ln());
    // ln h(k) = power * ln(1 - q + q L(k))
    let ln_h = |k: i64| {
        let l = (2.0 * k as f64 * d - d * d) / two_s2;
        let m = if l < 30.0 {
            (q * l.exp_m1()).ln_1p()
        } else {
            let (x, y) = (ln1mq, lnq + l);
            x.max(y) + (-(x - y).abs()).exp().ln_1p()
        };
        power * m
    };
    // Divergences of order > 1 nats: log space (max-shifted). Else E[h] - 1 directly.
    let large = poisson_subsampled_gaussian_rdp(q, sigma / d, af).unwrap() * (af - 1.0) > 1.0;
    let mut norm = Sum::default();
    for k in lo..=hi {
        norm.add((-(k as f64).powi(2) / two_s2).exp());
    }
    let norm = norm.value();
    if large {
        let mut top = f64::NEG_INFINITY;
        for k in lo..=hi {
            top = top.max(-(k as f64).powi(2) / two_s2 + ln_h(k));
        }
        let mut s = Sum::default();
        for k in lo..=hi {
            s.add((-(k as f64).powi(2) / two_s2 + ln_h(k) - top).exp());
        }
        (top + s.value().ln() - norm.ln()) / (af - 1.0)
    } else {
        let mut s = Sum::default();
        for k in lo..=hi {
            let wk = (-(k as f64).powi(2) / two_s2).exp();
            s.add(wk * ln_h(k).exp_m1());
        }
        (s.value() / norm).ln_1p() / (af - 1.0)
    }
}

const ORDERS: [u32; 11] = [2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64];

/// Returns the smallest relative margin `(continuous - discrete) / continuous` over the grid
/// for each direction, asserting `discrete <= continuous * (1 + 1e-9) + 1e-15` (the
/// accountant's own rounding margin is 1e-9 relative).
fn check(deltas: &[i64], multipliers: &[f64], rates: &[f64]) -> (f64, f64) {
    let mut smallest = (f64::INFINITY, f64::INFINITY);
    for &delta in deltas {
        for &s in multipliers {
            for &q in rates {
                for &a in &ORDERS {
                    let cont = poisson_subsampled_gaussian_rdp(q, s, f64::from(a)).unwrap();
                    let sigma = s * delta as f64;
                    for dir in [Direction::Remove, Direction::Add] {
                        let disc = discrete_rdp(q, sigma, delta, a, dir);
                        assert!(
                            disc.is_finite() && disc >= 0.0,
                            "{dir:?} delta {delta} s {s} q {q} a {a}: {disc}"
                        );
                        assert!(
                            disc <= cont * (1.0 + 1e-9) + 1e-15,
                            "{dir:?} delta {delta} s {s} q {q} a {a}: discrete {disc} > continuous {cont}"
                        );
                        let margin = (cont - disc) / cont;
                        let slot = match dir {
                            Direction::Remove => &mut smallest.0,
                            Direction::Add => &mut smallest.1,
                        };
                        if margin < *slot {
                            *slot = margin;
                            println!(
                                "  new smallest {dir:?} margin {margin:e} at delta {delta} s {s} q {q} a {a}: discrete {disc:e}, continuous {cont:e}"
                            );
                        }
                        if dir == Direction::Remove {
                            // proved equal at integer orders and integer shifts
                            assert!(
                                (disc - cont).abs() <= cont * 1e-9 + 1e-15,
                                "delta {delta} s {s} q {q} a {a}: {disc} vs {cont}"
                            );
                        }
                    }
                }
            }
        }
    }
    smallest
}

/// Grid scales of the central and federated releases (the sensitivity is at least 1024 grid
/// units), noise multipliers 0.5 to 5, q in {0.01, 0.2}.
#[test]
fn subsampled_discrete_gaussian_is_within_the_continuous_rdp() {
    let (remove, add) = check(
        &[64, 256, 1024, 4096],
        &[0.5, 0.8, 1.0, 2.0, 5.0],
        &[0.01, 0.2],
    );
    println!("smallest relative margin: remove {remove:e}, add {add:e}");
    assert!(add > 1e-3, "{add}");
}

/// Coarse grids (sensitivity 1 to 16 grid units), where the discrete Gaussian differs visibly
/// from the continuous one.
#[test]
fn coarse_grids_are_within_the_continuous_rdp_too() {
    let (remove, add) = check(&[1, 2, 4, 16], &[0.5, 1.0, 2.0, 5.0], &[0.01, 0.2]);
    println!("smallest relative margin (coarse): remove {remove:e}, add {add:e}");
    assert!(add > 1e-3, "{add}");
}

/// What restricting the accountant to integer orders costs for the default central run
/// (q = 0.2, 100 steps, delta = 1e-5, noise calibrated to epsilon 2 with the default orders).
#[test]
fn integer_orders_cost_little_epsilon_for_the_default_run() {
    let (q, steps, delta) = (0.2, 100, 1e-5);
    let sigma = dp_sgd_noise_multiplier(q, steps, 2.0, delta, AccountantKind::Rdp).unwrap();
    let mut all = RdpAccountant::new();
    all.compose_poisson_subsampled_gaussian(q, sigma, steps)
        .unwrap();
    let ints: Vec<f64> = (2..=64)
        .map(f64::from)
        .chain([128.0, 256.0, 512.0, 1024.0])
        .collect();
    let mut int = RdpAccountant::with_orders(ints).unwrap();
    int.compose_poisson_subsampled_gaussian(q, sigma, steps)
        .unwrap();
    let (e_all, e_int) = (all.epsilon(delta).unwrap(), int.epsilon(delta).unwrap());
    println!("sigma {sigma}: epsilon default orders {e_all}, integer orders {e_int}");
    assert!(e_int >= e_all);
    assert!(e_int <= e_all * 1.05, "{e_int} vs {e_all}");
}
