//! A private poll, end to end, with randomized response.
//!
//! 100,000 respondents are asked a sensitive yes/no question ("have you ever cheated on an
//! exam?"). Each respondent's device randomizes the answer locally before sending it, so the
//! pollster never learns any one person's true answer, yet the share of "yes" is estimated
//! within about a percentage point. A second question with four answers uses k-ary randomized
//! response. Each respondent's privacy is tracked by a [`PrivacyBudget`] that refuses a third
//! question which would overspend it.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --release --example private_poll
//! ```
//!
//! The randomness comes from the operating system, so the numbers change from run to run; the
//! intervals cover the true values 95% of the time.

use sotto_dp::accounting::PrivacyBudget;
use sotto_dp::mechanisms::{BinaryRandomizedResponse, KaryRandomizedResponse, TwoCoinResponse};
use sotto_dp::rng::os_rng;

const RESPONDENTS: u64 = 100_000;
const CONFIDENCE: f64 = 0.95;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = os_rng()?;

    // Ground truth the pollster never sees: 18% of respondents cheated once.
    let true_rate = 0.18;
    let truly_yes = (true_rate * RESPONDENTS as f64) as u64;

    // Every respondent allows a total privacy loss of epsilon = 3 for this survey.
    let mut budgets: Vec<PrivacyBudget> = (0..RESPONDENTS)
        .map(|_| PrivacyBudget::new(3.0, 0.0))
        .collect::<Result<_, _>>()?;

    println!("A private poll of {RESPONDENTS} respondents\n");

    // Question 1, the article's two-coin scheme: flip a coin; on heads answer truthfully,
    // on tails flip again and answer yes on heads. epsilon = ln 3.
    let two_coin = TwoCoinResponse::new();
    let mut yes = 0;
    for (i, budget) in budgets.iter_mut().enumerate() {
        budget.spend(two_coin.privacy_loss())?;
        if two_coin.respond(&mut rng, (i as u64) < truly_yes) {
            yes += 1;
        }
    }
    // Projected into its interval (the unbiased estimate can fall below 0 near 0).
    let e = two_coin.estimate(yes, RESPONDENTS, CONFIDENCE)?.projected();
    println!("Q1 \"Have you ever cheated on an exam?\" (two-coin randomized response)");
    println!("   {yes} of {RESPONDENTS} randomized answers were yes");
    println!(
        "   estimate 2N/n - 1/2 = {:.4}, 95% interval [{:.4}, {:.4}]  (true rate {true_rate})",
        e.estimate, e.ci_low, e.ci_high
    );
    println!(
        "   privacy: epsilon = {:.4} per respondent\n",
        two_coin.privacy_loss().epsilon_at(0.0)?
    );

    // Question 2, four answers, k-ary randomized response with epsilon = 1.5.
    let languages = ["Rust", "Python", "C++", "Go"];
    let true_shares = [0.40, 0.35, 0.15, 0.10];
    let kary = KaryRandomizedResponse::new(1.5, languages.len())?;
    let mut counts = vec![0u64; languages.len()];
    let mut boundary = 0.0;
    let mut next = 0usize;
    for (i, budget) in budgets.iter_mut().enumerate() {
        // Respondents 0.. answer Rust, then Python, ... in the true proportions.
        while next + 1 < true_shares.len()
            && (i as f64) >= (boundary + true_shares[next]) * RESPONDENTS as f64
        {
            boundary += true_shares[next];
            next += 1;
        }
        budget.spend(kary.privacy_loss())?;
        let answer = kary.respond(&mut rng, next)?;
        if let Some(c) = counts.get_mut(answer) {
            *c += 1;
        }
    }
    println!("Q2 \"Your favourite language?\" (4-ary randomized response)");
    for ((name, truth), e) in languages
        .iter()
        .zip(true_shares)
        .zip(kary.estimate(&counts, CONFIDENCE)?)
    {
        println!(
            "   {name:<7} estimate {:.4}, 95% interval [{:.4}, {:.4}]  (true share {truth})",
            e.projected().estimate,
            e.ci_low,
            e.ci_high
        );
    }
    println!(
        "   privacy: epsilon = {:.4} per respondent\n",
        kary.privacy_loss().epsilon_at(0.0)?
    );

    // Question 3 would need epsilon = 1 more: the budget (3.0 in all) refuses it, and
    // charges nothing for the refused release.
    let q3 = BinaryRandomizedResponse::new(1.0)?;
    let budget = &mut budgets[0];
    match budget.spend(q3.privacy_loss()) {
        Ok(()) => println!("Q3 allowed"),
        Err(err) => println!("Q3 refused by each respondent's budget:\n   {err}"),
    }
    Ok(())
}
