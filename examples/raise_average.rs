//! The average raise, computed without anyone seeing another's raise ("Computing on private
//! data", Amazon Science).
//!
//! Alice (3800), Bob (2514), Carlos (2982) and David (3390) are four separate QUIC endpoints on
//! loopback, each with its own certificate from a throw-away deployment CA. Three runs:
//!
//! 1. **peer-to-peer**, the article's protocol: each engineer splits the raise into four random
//!    shares, keeps one, sends one to each colleague; everyone publishes the sum of the shares
//!    held, and everyone adds the published sums.
//! 2. **aggregator mode** (SecAgg): the engineers send pairwise-masked raises to an aggregator,
//!    which learns only the sum (and would still get it if one engineer dropped out).
//! 3. **aggregator mode with differential privacy**: each engineer also adds a share of
//!    discrete Gaussian noise, so the released average says almost nothing about any one raise.
//!
//! Run it with:
//!
//! ```sh
//! cargo run --example raise_average
//! ```
//!
//! Set `RUST_LOG=info` to see every round of the protocols.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use sotto_mpc::encoding::Clipping;
use sotto_mpc::securesum::p2p::{PeerConfig, SecureSumPeer};
use sotto_mpc::securesum::{
    AggregatorConfig, NoiseSpec, PartyConfig, SecureSumAggregator, SecureSumInput, SecureSumParams,
    SecureSumParty,
};
use sotto_mpc::transport::certs::generate_dev_pki;
use sotto_mpc::{PartyId, SessionId};

const ENGINEERS: [(&str, i64); 4] = [
    ("Alice", 3800),
    ("Bob", 2514),
    ("Carlos", 2982),
    ("David", 3390),
];
/// Nobody's raise is above this (the range bound: a raise is clamped to [-10000, 10000]).
const MAX_RAISE: f64 = 10_000.0;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let dir = std::env::temp_dir().join(format!("sotto-raise-average-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    generate_dev_pki(&dir, ENGINEERS.len(), &[])?;
    let result = run(&dir).await;
    std::fs::remove_dir_all(&dir)?;
    result
}

async fn run(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let n = ENGINEERS.len();
    let mut rng = sotto_dp::rng::os_rng()?;
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let clipping = Clipping::LInf { bound: MAX_RAISE };
    println!("Four engineers, four QUIC endpoints on loopback, one secret each.\n");

    // 1. Peer to peer (the article's protocol).
    let params = SecureSumParams::new(SessionId::random(&mut rng), n, 1, clipping)?;
    let mut peers = Vec::new();
    for id in 1..=n as u32 {
        let config = PeerConfig::from_dir(params.clone(), PartyId(id), loopback, dir)?;
        peers.push(SecureSumPeer::bind(config)?);
    }
    let addresses: BTreeMap<PartyId, SocketAddr> =
        peers.iter().map(|p| (p.id(), p.local_addr())).collect();
    let mut runs = Vec::new();
    for (peer, (_, raise)) in peers.into_iter().zip(ENGINEERS) {
        runs.push(tokio::spawn(
            peer.run(addresses.clone(), SecureSumInput::scalar_i64(raise)),
        ));
    }
    println!("1. Peer to peer (each engineer sends a random share to each colleague):");
    for (run, (name, _)) in runs.into_iter().zip(ENGINEERS) {
        let outcome = run.await??;
        let sum = first(&outcome.sum)?;
        println!(
            "   {name:<7} computes the sum {sum} and the average {}",
            sum / n as f64
        );
    }

    // 2. Aggregator mode, exact.
    let params = SecureSumParams::new(SessionId::random(&mut rng), n, 1, clipping)?;
    let outcome = aggregator_round(dir, &params).await?;
    let sum = first(&Some(outcome.sum.clone()))?;
    println!("\n2. Through an aggregator that sees only masked raises:");
    println!(
        "   sum {sum}, average {}, survivors {}",
        sum / n as f64,
        outcome.survivors.len()
    );

    // 3. Aggregator mode with distributed DP noise.
    let mut params = SecureSumParams::new(SessionId::random(&mut rng), n, 1, clipping)?;
    params.noise = NoiseSpec::EpsilonDelta {
        epsilon: 1.0,
        delta: 1e-6,
    };
    let outcome = aggregator_round(dir, &params).await?;
    let sum = first(&Some(outcome.sum.clone()))?;
    let privacy = outcome
        .privacy
        .ok_or("the noised run reports its privacy")?;
    let average = sum / n as f64;
    let half_width = 1.96 * privacy.noise_std / n as f64;
    println!("\n3. With differential privacy (each engineer adds a share of the noise):");
    println!(
        "   noised average {average:.1}, 95% interval [{:.1}, {:.1}]",
        average - half_width,
        average + half_width
    );
    println!(
        "   epsilon = {:.3} at delta = {:e} (for any one raise in [-{MAX_RAISE}, {MAX_RAISE}], \
         even if the aggregator colludes with {} of the engineers)",
        privacy.epsilon, privacy.delta, privacy.colluders
    );
    println!(
        "   (with four people, noise that hides any one raise swamps the average: DP pays off with many contributors)"
    );
    Ok(())
}

async fn aggregator_round(
    dir: &std::path::Path,
    params: &SecureSumParams,
) -> Result<sotto_mpc::securesum::SumOutcome, Box<dyn std::error::Error>> {
    let config = AggregatorConfig::from_dir(params.clone(), "127.0.0.1:0".parse()?, dir)?;
    let aggregator = SecureSumAggregator::bind(config)?;
    let addr = aggregator.local_addr();
    let mut parties = Vec::new();
    for (id, (_, raise)) in (1..).zip(ENGINEERS) {
        let config = PartyConfig::from_dir(params.clone(), PartyId(id), addr, dir)?;
        parties.push(tokio::spawn(SecureSumParty::run(
            config,
            SecureSumInput::scalar_i64(raise),
        )));
    }
    let outcome = aggregator.serve().await?;
    for party in parties {
        party.await??;
    }
    Ok(outcome)
}

fn first(sum: &Option<Vec<f64>>) -> Result<f64, &'static str> {
    sum.as_ref()
        .and_then(|s| s.first().copied())
        .ok_or("no sum released")
}
