//! How long one message exchange between an aggregator and `n` parties takes over the QUIC
//! transport on loopback: the aggregator sends each party a message ([`send_all`]) and waits
//! for every answer ([`collect`]), as a SecAgg unmasking step does. Prints the median and the
//! 10th / 90th percentiles over the exchanges, for one runtime layout.
//!
//! ```text
//! cargo run --release -p sotto-mpc --example round_trip -- [parties] [bytes] [runtime] [exchanges]
//! ```
//!
//! `runtime` is `current` (every endpoint on one current-thread runtime, as `sotto train`
//! runs them; the default) or `multi` (a multi-threaded runtime with one worker per core).
//! Defaults: 4 parties, 100-byte messages, 3000 exchanges.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sotto_mpc::SessionId;
use sotto_mpc::transport::certs::generate_dev_pki;
use sotto_mpc::transport::{
    Client, Connection, Identity, Server, TlsConfig, TransportOptions, collect, send_all,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn arg<T: std::str::FromStr>(i: usize, default: T) -> Result<T, BoxError> {
    match std::env::args().nth(i) {
        None => Ok(default),
        Some(a) => a
            .parse()
            .map_err(|_| format!("argument {i}: cannot read {a:?}").into()),
    }
}

fn main() -> Result<(), BoxError> {
    let parties: usize = arg(1, 4)?;
    let bytes: usize = arg(2, 100)?;
    let layout: String = arg(3, "current".to_owned())?;
    let exchanges: u64 = arg(4, 3000)?;
    if parties == 0 || exchanges == 0 {
        return Err("parties and exchanges must be positive".into());
    }
    let runtime = match layout.as_str() {
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        other => return Err(format!("runtime: {other:?}; use `current` or `multi`").into()),
    };
    let times = runtime.block_on(run(parties, bytes, exchanges))?;
    let pick = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "{parties} parties, {bytes}-byte messages, {layout} runtime, {exchanges} exchanges: median {:.1} us (p10 {:.1}, p90 {:.1})",
        pick(0.5),
        pick(0.1),
        pick(0.9)
    );
    Ok(())
}

async fn run(parties: usize, bytes: usize, exchanges: u64) -> Result<Vec<f64>, BoxError> {
    let dir = std::env::temp_dir().join(format!("sotto-round-trip-{}", std::process::id()));
    generate_dev_pki(&dir, parties, &[])?;
    let ids: Vec<Identity> = (1..=parties as u32).map(Identity::party).collect();
    let options = TransportOptions::default();
    let tls = TlsConfig::from_dir(&dir, Identity::Aggregator, ids.iter().copied())?;
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), &tls, options.clone())?;
    let addr = server.local_addr();
    let session = SessionId([1; 16]);
    let wait = Duration::from_secs(10);
    let mut echoes = Vec::new();
    for &id in &ids {
        let tls = TlsConfig::from_dir(&dir, id, [Identity::Aggregator])?;
        let options = options.clone();
        echoes.push(tokio::spawn(async move {
            let client = Client::bind(SocketAddr::from(([127, 0, 0, 1], 0)), &tls, options)?;
            let connection = client.connect(addr, Identity::Aggregator).await?;
            for round in 0..exchanges {
                let message: Vec<u8> = connection.recv(session, round, wait).await?;
                connection.send(session, round, &message).await?;
            }
            connection.close_gracefully(Duration::from_secs(1)).await?;
            client.shutdown().await;
            Ok::<(), sotto_mpc::transport::Error>(())
        }));
    }
    let accepted = server.accept_peers(ids.iter().copied(), wait).await;
    let connections: BTreeMap<Identity, Connection> = accepted.connections;
    if connections.len() != parties {
        return Err(format!("only {} of {parties} parties connected", connections.len()).into());
    }
    let body = vec![7u8; bytes];
    let mut times = Vec::with_capacity(exchanges as usize);
    for round in 0..exchanges {
        let t0 = Instant::now();
        let failed = send_all(&connections, session, round, &body).await?;
        let deadline = tokio::time::Instant::now() + wait;
        let got =
            collect::<Vec<u8>>(&connections, ids.iter().copied(), session, round, deadline).await;
        if !failed.is_empty() || got.messages.len() != parties {
            return Err(format!("exchange {round}: not every party answered").into());
        }
        times.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    for echo in echoes {
        echo.await??;
    }
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    times.sort_by(f64::total_cmp);
    Ok(times)
}
