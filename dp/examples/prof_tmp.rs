#![allow(missing_docs, clippy::unwrap_used)]
use sotto_dp::{rng::seeded_rng, sampling::DiscreteLaplace};
fn main() {
    for scale in [1.7, 2.0, 0.3, 0.25, 1000.3, 1000.0] {
        let lap = DiscreteLaplace::new(scale).unwrap();
        let mut out = vec![0i64; 1_000_000];
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            lap.fill(&mut seeded_rng(1), &mut out);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("scale {scale}: {:?} -> {:.1} M/s (best of 5)", lap.scale_rational(), 1.0 / best);
    }
}
