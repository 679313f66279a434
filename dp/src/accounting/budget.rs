//! A privacy budget (a privacy *filter*): spends [`PrivacyLoss`] values and refuses, without
//! charging anything, any release that would overspend.

use crate::error::{check_non_negative, check_open_unit, check_positive};
use crate::math::{add_up, round_down, sub_down};
use crate::{Error, PrivacyLoss, Result};

use super::zcdp_to_epsilon;

/// The ledger a budget keeps, fixed when the budget is created.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ledger {
    /// An (epsilon, delta) budget, spent by basic composition.
    Approximate {
        epsilon: f64,
        delta: f64,
        spent_epsilon: f64,
        spent_delta: f64,
    },
    /// A rho-zCDP budget, spent by adding rho.
    Zcdp { rho: f64, spent_rho: f64 },
}

/// A privacy budget: the only way to spend the [`PrivacyLoss`] of a release.
///
/// Two kinds of ledger, chosen at creation:
///
/// * [`PrivacyBudget::new`]`(epsilon, delta)`: an (epsilon, delta) budget. Pure and
///   approximate losses are added up by **basic composition** (epsilons add, deltas add). A
///   zCDP loss `rho` is **converted conservatively** when it is spent: it is charged as
///   `(zcdp_to_epsilon(rho, d), d)` with `d` half of the delta that remains (so a zCDP release
///   needs `delta > 0` and never uses up all the delta).
/// * [`PrivacyBudget::zcdp`]`(rho)` (or [`PrivacyBudget::zcdp_for`]`(epsilon, delta)`): a
///   zCDP budget. zCDP losses **add their rho**; a pure `epsilon` loss is charged as
///   `epsilon^2 / 2` (pure DP implies zCDP, Bun and Steinke 2016, Prop. 1.4); approximate
///   (epsilon, delta) losses are refused (they have no zCDP guarantee).
///
/// Use the zCDP ledger when most releases are Gaussian (many zCDP releases compose much
/// better there), the (epsilon, delta) ledger for Laplace, randomized response and other
/// pure or approximate releases.
///
/// # Privacy
/// A release is allowed only if, after it, the spent total still lies within the budget; a
/// refused release charges nothing and its [`Error::BudgetExceeded`] states what it needed
/// and what remains. Both ledgers are valid *filters*, i.e. stay correct when the analyst
/// picks each release (and its privacy parameters) adaptively after seeing earlier outputs:
/// basic composition by Rogers, Roth, Ullman and Vadhan (2016, "Privacy odometers and
/// filters"), additive zCDP by the Rényi filter of Feldman and Zrnic (2021) applied at every
/// order. The two ledgers are deliberately not mixed into one (epsilon, delta) total with a
/// nonlinear conversion at the end: such a stopping rule is not known to be a valid filter
/// under fully adaptive choices. All sums round up, all remainders round down.
///
/// # Examples
/// ```
/// use sotto_dp::accounting::PrivacyBudget;
/// use sotto_dp::{Error, PrivacyLoss};
///
/// let mut budget = PrivacyBudget::new(1.0, 1e-6)?;
/// budget.spend(PrivacyLoss::pure(0.4)?)?;
/// budget.spend(PrivacyLoss::approximate(0.5, 1e-7)?)?;
/// // 0.9 spent: another 0.4 would overspend, so it is refused and nothing is charged.
/// let refused = budget.spend(PrivacyLoss::pure(0.4)?);
/// assert!(matches!(refused, Err(Error::BudgetExceeded { .. })));
/// assert!(budget.remaining_epsilon() > 0.09);
///
/// // A zCDP budget that guarantees (1, 1e-6)-DP, spent by Gaussian releases.
/// let mut z = PrivacyBudget::zcdp_for(1.0, 1e-6)?;
/// z.spend(PrivacyLoss::zcdp(0.005)?)?;
/// assert!(z.epsilon_spent(1e-6)? < 1.0);
/// # Ok::<(), sotto_dp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyBudget {
    ledger: Ledger,
    releases: u64,
}

impl PrivacyBudget {
    /// An (epsilon, delta) budget spent by basic composition. `delta = 0` gives a pure-DP
    /// budget (which then refuses approximate and zCDP losses).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `epsilon` is not finite and positive or `delta` is not
    /// in [0, 1).
    pub fn new(epsilon: f64, delta: f64) -> Result<Self> {
        check_positive("epsilon", epsilon)?;
        check_non_negative("delta", delta)?;
        if delta >= 1.0 {
            return Err(Error::invalid(
                "delta",
                delta,
                "must be below 1 (typically well below 1/n for n records)",
            ));
        }
        Ok(PrivacyBudget {
            ledger: Ledger::Approximate {
                epsilon,
                delta,
                spent_epsilon: 0.0,
                spent_delta: 0.0,
            },
            releases: 0,
        })
    }

    /// A rho-zCDP budget.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `rho` is not finite and positive.
    pub fn zcdp(rho: f64) -> Result<Self> {
        check_positive("rho", rho)?;
        Ok(PrivacyBudget {
            ledger: Ledger::Zcdp {
                rho,
                spent_rho: 0.0,
            },
            releases: 0,
        })
    }

    /// The largest zCDP budget (rho rounded down) whose conversion
    /// ([`super::zcdp_to_epsilon`]) is (epsilon, delta)-DP.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `epsilon` is not finite and positive or `delta` is not
    /// in (0, 1).
    pub fn zcdp_for(epsilon: f64, delta: f64) -> Result<Self> {
        check_positive("epsilon", epsilon)?;
        check_open_unit("delta", delta)?;
        // epsilon(rho) is increasing in rho; bisection keeping `lo` feasible.
        let mut lo = 0.0;
        let mut hi = epsilon;
        while zcdp_to_epsilon(hi, delta)? <= epsilon {
            lo = hi;
            hi *= 2.0;
            if !hi.is_finite() {
                return Err(Error::invalid("epsilon", epsilon, "too large"));
            }
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            if zcdp_to_epsilon(mid, delta)? <= epsilon {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        if lo <= 0.0 {
            return Err(Error::invalid(
                "epsilon",
                epsilon,
                "too small to allow any zCDP spending at this delta",
            ));
        }
        Self::zcdp(lo)
    }

    /// How many releases have been charged.
    pub fn releases(&self) -> u64 {
        self.releases
    }

    /// What has been spent so far: `Approximate` (or `Pure` when no delta was spent) for an
    /// (epsilon, delta) budget, `Zcdp` for a zCDP budget.
    pub fn spent(&self) -> PrivacyLoss {
        match self.ledger {
            Ledger::Approximate {
                spent_epsilon,
                spent_delta,
                ..
            } => loss_of(spent_epsilon, spent_delta),
            Ledger::Zcdp { spent_rho, .. } => PrivacyLoss::Zcdp { rho: spent_rho },
        }
    }

    /// What remains (rounded down), in the same form as [`Self::spent`].
    pub fn remaining(&self) -> PrivacyLoss {
        match self.ledger {
            Ledger::Approximate { .. } => loss_of(self.remaining_epsilon(), self.remaining_delta()),
            Ledger::Zcdp { rho, spent_rho } => PrivacyLoss::Zcdp {
                rho: sub_down(rho, spent_rho).max(0.0),
            },
        }
    }

    /// The epsilon that remains (rounded down); for a zCDP budget, the rho that remains.
    pub fn remaining_epsilon(&self) -> f64 {
        match self.ledger {
            Ledger::Approximate {
                epsilon,
                spent_epsilon,
                ..
            } => sub_down(epsilon, spent_epsilon).max(0.0),
            Ledger::Zcdp { rho, spent_rho } => sub_down(rho, spent_rho).max(0.0),
        }
    }

    /// The delta that remains (rounded down); 0 for a zCDP budget.
    pub fn remaining_delta(&self) -> f64 {
        match self.ledger {
            Ledger::Approximate {
                delta, spent_delta, ..
            } => sub_down(delta, spent_delta).max(0.0),
            Ledger::Zcdp { .. } => 0.0,
        }
    }

    /// The epsilon spent so far, stated at `delta` (rounded up).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `delta` is not in [0, 1) or smaller than the delta an
    /// (epsilon, delta) budget has spent; for a zCDP budget that has spent something,
    /// `delta` must be positive.
    pub fn epsilon_spent(&self, delta: f64) -> Result<f64> {
        match self.ledger {
            Ledger::Zcdp { spent_rho: 0.0, .. } => {
                PrivacyLoss::Pure { epsilon: 0.0 }.epsilon_at(delta)
            }
            _ => self.spent().epsilon_at(delta),
        }
    }

    /// What `loss` would cost in this budget's ledger: `(epsilon, delta)` for an
    /// (epsilon, delta) budget, `(rho, 0)` for a zCDP budget. Charges nothing.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] if this ledger cannot take this kind of loss at all (an
    /// approximate loss in a zCDP budget, a zCDP or approximate loss in a pure budget);
    /// [`Error::InvalidParameter`] for a loss with invalid values.
    pub fn cost(&self, loss: &PrivacyLoss) -> Result<(f64, f64)> {
        let refuse = |why: &str| Error::BudgetExceeded {
            requested: format!("{loss} ({why})"),
            remaining: self.remaining().to_string(),
        };
        match (self.ledger, *loss) {
            (Ledger::Approximate { .. }, PrivacyLoss::Pure { epsilon }) => {
                Ok((check_non_negative("epsilon", epsilon)?, 0.0))
            }
            (
                Ledger::Approximate { delta: total, .. },
                PrivacyLoss::Approximate { epsilon, delta },
            ) => {
                check_non_negative("epsilon", epsilon)?;
                check_open_unit("delta", delta)?;
                if total == 0.0 {
                    return Err(refuse("this is a pure-DP budget (delta = 0)"));
                }
                Ok((epsilon, delta))
            }
            (Ledger::Approximate { .. }, PrivacyLoss::Zcdp { rho }) => {
                check_non_negative("rho", rho)?;
                let d = round_down(self.remaining_delta() / 2.0);
                if d.is_nan() || d <= 0.0 {
                    return Err(refuse(
                        "a zCDP release needs delta to convert, and none remains",
                    ));
                }
                if rho == 0.0 {
                    return Ok((0.0, 0.0));
                }
                Ok((zcdp_to_epsilon(rho, d)?, d))
            }
            (Ledger::Zcdp { .. }, PrivacyLoss::Zcdp { rho }) => {
                Ok((check_non_negative("rho", rho)?, 0.0))
            }
            (Ledger::Zcdp { .. }, PrivacyLoss::Pure { epsilon }) => {
                check_non_negative("epsilon", epsilon)?;
                let half_sq = epsilon * epsilon / 2.0;
                Ok((half_sq + half_sq * 1e-12, 0.0))
            }
            (Ledger::Zcdp { .. }, PrivacyLoss::Approximate { .. }) => Err(refuse(
                "an approximate-DP release has no zCDP guarantee; use an (epsilon, delta) budget",
            )),
        }
    }

    /// Checks whether `loss` fits, without charging it.
    ///
    /// # Errors
    /// As for [`Self::spend`].
    pub fn check(&self, loss: &PrivacyLoss) -> Result<()> {
        self.after(loss).map(|_| ())
    }

    fn after(&self, loss: &PrivacyLoss) -> Result<Ledger> {
        let (cost_a, cost_b) = self.cost(loss)?;
        let exceeded = || Error::BudgetExceeded {
            requested: match self.ledger {
                Ledger::Approximate { .. } => match loss {
                    PrivacyLoss::Zcdp { .. } => {
                        format!("{loss}, charged as {}", loss_of(cost_a, cost_b))
                    }
                    _ => loss.to_string(),
                },
                Ledger::Zcdp { .. } => match loss {
                    PrivacyLoss::Pure { .. } => format!("{loss}, charged as rho = {cost_a}"),
                    _ => loss.to_string(),
                },
            },
            remaining: self.remaining().to_string(),
        };
        match self.ledger {
            Ledger::Approximate {
                epsilon,
                delta,
                spent_epsilon,
                spent_delta,
            } => {
                let e = add_up(spent_epsilon, cost_a);
                let d = add_up(spent_delta, cost_b);
                if e > epsilon || d > delta {
                    return Err(exceeded());
                }
                Ok(Ledger::Approximate {
                    epsilon,
                    delta,
                    spent_epsilon: e,
                    spent_delta: d,
                })
            }
            Ledger::Zcdp { rho, spent_rho } => {
                let r = add_up(spent_rho, cost_a);
                if r > rho {
                    return Err(exceeded());
                }
                Ok(Ledger::Zcdp { rho, spent_rho: r })
            }
        }
    }

    /// Spends `loss` if it fits in what remains; otherwise refuses it and charges nothing.
    ///
    /// # Errors
    /// [`Error::BudgetExceeded`] (stating the request and what remains) if the release would
    /// overspend or this ledger cannot take this kind of loss; [`Error::InvalidParameter`] for
    /// a loss with invalid values. On error the budget is unchanged.
    ///
    /// # Privacy
    /// See the type-level documentation: basic composition for an (epsilon, delta) budget
    /// (zCDP converted at half the remaining delta), rho addition for a zCDP budget.
    pub fn spend(&mut self, loss: PrivacyLoss) -> Result<()> {
        let next = self.after(&loss)?;
        self.ledger = next;
        self.releases += 1;
        Ok(())
    }
}

/// `Approximate { epsilon, delta }`, or `Pure` when `delta` is 0.
fn loss_of(epsilon: f64, delta: f64) -> PrivacyLoss {
    if delta > 0.0 {
        PrivacyLoss::Approximate { epsilon, delta }
    } else {
        PrivacyLoss::Pure { epsilon }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_composition_budget_refuses_and_charges_nothing() {
        let mut b = PrivacyBudget::new(1.0, 1e-6).unwrap();
        b.spend(PrivacyLoss::pure(0.5).unwrap()).unwrap();
        b.spend(PrivacyLoss::approximate(0.25, 5e-7).unwrap())
            .unwrap();
        let before = b.clone();
        let err = b.spend(PrivacyLoss::pure(0.3).unwrap()).unwrap_err();
        assert_eq!(b, before, "a refused release must not be charged");
        let msg = err.to_string();
        assert!(msg.contains("0.3") && msg.contains("0.25"), "{msg}");
        // Delta can also run out.
        let err = b.spend(PrivacyLoss::approximate(0.01, 6e-7).unwrap());
        assert!(matches!(err, Err(Error::BudgetExceeded { .. })));
        b.spend(PrivacyLoss::pure(0.25).unwrap()).unwrap();
        assert_eq!(b.releases(), 3);
        assert!(b.remaining_epsilon() < 1e-12);
    }

    #[test]
    fn exact_fill_is_allowed() {
        let mut b = PrivacyBudget::new(1.0, 0.0).unwrap();
        for _ in 0..4 {
            b.spend(PrivacyLoss::pure(0.25).unwrap()).unwrap();
        }
        assert!(b.spend(PrivacyLoss::pure(1e-9).unwrap()).is_err());
    }

    #[test]
    fn pure_budget_refuses_approximate_and_zcdp() {
        let mut b = PrivacyBudget::new(1.0, 0.0).unwrap();
        assert!(
            b.spend(PrivacyLoss::approximate(0.1, 1e-9).unwrap())
                .is_err()
        );
        assert!(b.spend(PrivacyLoss::zcdp(0.001).unwrap()).is_err());
        assert_eq!(b.releases(), 0);
    }

    #[test]
    fn zcdp_in_an_approximate_budget_is_converted() {
        let mut b = PrivacyBudget::new(2.0, 1e-6).unwrap();
        let (e, d) = b.cost(&PrivacyLoss::zcdp(0.01).unwrap()).unwrap();
        assert!((d - 5e-7).abs() < 1e-15);
        assert_eq!(e, zcdp_to_epsilon(0.01, d).unwrap());
        b.spend(PrivacyLoss::zcdp(0.01).unwrap()).unwrap();
        assert!(b.remaining_delta() > 0.0);
    }

    #[test]
    fn zcdp_budget_adds_rho_and_converts_pure() {
        let mut b = PrivacyBudget::zcdp(0.5).unwrap();
        for _ in 0..10 {
            b.spend(PrivacyLoss::zcdp(0.04).unwrap()).unwrap();
        }
        b.spend(PrivacyLoss::pure(0.4).unwrap()).unwrap(); // rho 0.08
        assert!(b.spend(PrivacyLoss::pure(0.4).unwrap()).is_err());
        assert!(
            b.spend(PrivacyLoss::approximate(0.1, 1e-9).unwrap())
                .is_err()
        );
        assert!(b.epsilon_spent(1e-6).unwrap() > 0.0);
        assert!(b.epsilon_spent(0.0).is_err());
    }

    #[test]
    fn zcdp_for_meets_its_target() {
        let b = PrivacyBudget::zcdp_for(1.0, 1e-6).unwrap();
        let PrivacyLoss::Zcdp { rho } = b.remaining() else {
            panic!("not a zCDP budget")
        };
        assert!(zcdp_to_epsilon(rho, 1e-6).unwrap() <= 1.0);
        assert!(zcdp_to_epsilon(rho * 1.01, 1e-6).unwrap() > 1.0);
    }

    #[test]
    fn bad_budgets_are_rejected() {
        assert!(PrivacyBudget::new(0.0, 1e-6).is_err());
        assert!(PrivacyBudget::new(f64::NAN, 1e-6).is_err());
        assert!(PrivacyBudget::new(1.0, 1.0).is_err());
        assert!(PrivacyBudget::new(1.0, -1e-6).is_err());
        assert!(PrivacyBudget::zcdp(-1.0).is_err());
        assert!(PrivacyBudget::zcdp_for(1.0, 0.0).is_err());
        // Loss values built around the validating constructors are still checked.
        let mut b = PrivacyBudget::new(1.0, 1e-6).unwrap();
        assert!(b.spend(PrivacyLoss::Pure { epsilon: f64::NAN }).is_err());
        assert!(b.spend(PrivacyLoss::Pure { epsilon: -1.0 }).is_err());
        assert_eq!(b.releases(), 0);
    }
}
