//! Secure sum vs plain sum over loopback QUIC: n = 8 parties, d = 10^6 f32 values each.
//!
//! Both runs use the same transport (QUIC + mutual TLS, one connection per party), the same
//! encoding (L-infinity clipping to 1, scale 2^16, ring Z_2^32) and the same inputs (fixed
//! seed). "secure" is the full SecAgg protocol of `sotto_mpc::securesum` (key agreement,
//! Shamir shares, pairwise and self masks, unmasking); "plain" sends each party's encoded
//! vector unmasked and adds them. Each iteration includes connection set-up.
//!
//! ```sh
//! cargo bench --bench secure_sum
//! ```
//!
//! Prints the median wall-time ratio secure / plain and the bytes each party sent over UDP
//! divided by the raw ring-encoded vector (4 * 10^6 bytes).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand_core::{RngCore, SeedableRng};
use sotto_mpc::encoding::{Clipping, FixedPointEncoder};
use sotto_mpc::ring::RingVector;
use sotto_mpc::securesum::{
    AggregatorConfig, Deadlines, PartyConfig, RingBits, SecureSumAggregator, SecureSumInput,
    SecureSumParams, SecureSumParty,
};
use sotto_mpc::transport::certs::generate_dev_pki;
use sotto_mpc::transport::{
    Client, Identity, Server, TlsConfig, TransportOptions, collect, send_all,
};
use sotto_mpc::{PartyId, SessionId};

const N: usize = 8;
const D: usize = 1_000_000;
const SCALE: f64 = 65_536.0;

struct Setup {
    dir: PathBuf,
    inputs: Arc<Vec<Vec<f32>>>,
    runtime: tokio::runtime::Runtime,
    session_counter: Mutex<u64>,
}

impl Setup {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("sotto-bench-secure-sum-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        generate_dev_pki(&dir, N, &[]).unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(20261122);
        let inputs = (0..N)
            .map(|_| {
                (0..D)
                    .map(|_| (rng.next_u32() as f32 / u32::MAX as f32) * 2.0 - 1.0)
                    .collect()
            })
            .collect();
        Setup {
            dir,
            inputs: Arc::new(inputs),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap(),
            session_counter: Mutex::new(0),
        }
    }

    fn session(&self) -> SessionId {
        let mut c = self.session_counter.lock().unwrap();
        *c += 1;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&c.to_le_bytes());
        SessionId(id)
    }

    fn params(&self) -> SecureSumParams {
        let mut p =
            SecureSumParams::new(self.session(), N, D, Clipping::LInf { bound: 1.0 }).unwrap();
        p.threshold = N / 2 + 1;
        p.scale = SCALE;
        p.ring = RingBits::U32;
        p.deadlines = Deadlines {
            join: Duration::from_secs(60),
            round: Duration::from_secs(60),
        };
        p.validate().unwrap();
        p
    }
}

fn localhost() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Bytes one party sent: UDP (wire) and frames (protocol messages).
#[derive(Clone, Copy)]
struct Sent {
    udp: u64,
    frames: u64,
}

/// One secure sum; returns the decoded first coordinate and the bytes each party sent.
async fn secure_sum(setup: &Setup) -> (f64, Vec<Sent>) {
    let params = setup.params();
    let aggregator = SecureSumAggregator::bind(
        AggregatorConfig::from_dir(params.clone(), localhost(), &setup.dir).unwrap(),
    )
    .unwrap();
    let addr = aggregator.local_addr();
    let mut parties = Vec::new();
    for id in 1..=N as u32 {
        let config = PartyConfig::from_dir(params.clone(), PartyId(id), addr, &setup.dir).unwrap();
        let inputs = Arc::clone(&setup.inputs);
        parties.push(tokio::spawn(async move {
            let x: Vec<f64> = inputs[id as usize - 1]
                .iter()
                .map(|v| f64::from(*v))
                .collect();
            SecureSumParty::run(config, SecureSumInput::vec_f64(x)).await
        }));
    }
    let outcome = aggregator.serve().await.unwrap();
    assert_eq!(outcome.survivors.len(), N);
    let mut bytes = Vec::new();
    for p in parties {
        let outcome = p.await.unwrap().unwrap();
        bytes.push(Sent {
            udp: outcome.bytes_sent,
            frames: outcome.frame_bytes_sent,
        });
    }
    (outcome.sum[0], bytes)
}

/// The same vectors, encoded the same way, sent unmasked over the same transport.
async fn plain_sum(setup: &Setup, dir: &Path) -> (f64, Vec<Sent>) {
    let session = setup.session();
    let parties: Vec<Identity> = (1..=N as u32).map(Identity::party).collect();
    let tls = TlsConfig::from_dir(dir, Identity::Aggregator, parties.clone()).unwrap();
    let server = Server::bind(localhost(), &tls, TransportOptions::default()).unwrap();
    let addr = server.local_addr();
    let encoder = FixedPointEncoder::new(Clipping::LInf { bound: 1.0 }, SCALE, D).unwrap();
    let mut tasks = Vec::new();
    for id in 1..=N as u32 {
        let tls = TlsConfig::from_dir(dir, Identity::party(id), [Identity::Aggregator]).unwrap();
        let inputs = Arc::clone(&setup.inputs);
        let encoder = encoder.clone();
        tasks.push(tokio::spawn(async move {
            let client = Client::new(&tls, TransportOptions::default()).unwrap();
            let conn = client.connect(addr, Identity::Aggregator).await.unwrap();
            let x: Vec<f64> = inputs[id as usize - 1]
                .iter()
                .map(|v| f64::from(*v))
                .collect();
            let mut rng = sotto_dp::rng::os_rng().unwrap();
            let encoded: Vec<u32> = encoder.encode_ring(&x, &mut rng).unwrap();
            conn.send(session, 0, &RingVector(encoded)).await.unwrap();
            let sum: f64 = conn
                .recv(session, 1, Duration::from_secs(60))
                .await
                .unwrap();
            let bytes = Sent {
                udp: conn.quic().stats().udp_tx.bytes,
                frames: conn.frame_bytes_sent(),
            };
            drop(conn);
            client.shutdown().await;
            (sum, bytes)
        }));
    }
    let accepted = server
        .accept_peers(parties.clone(), Duration::from_secs(60))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let got =
        collect::<RingVector<u32>>(&accepted.connections, parties, session, 0, deadline).await;
    assert_eq!(got.messages.len(), N);
    let mut total = vec![0u32; D];
    for v in got.messages.values() {
        sotto_mpc::ring::add_assign(&mut total, v.as_slice());
    }
    let sum = encoder.decode_sum(&total);
    send_all(&accepted.connections, session, 1, &sum[0])
        .await
        .unwrap();
    let mut bytes = Vec::new();
    for t in tasks {
        let (s, b) = t.await.unwrap();
        assert_eq!(s, sum[0]);
        bytes.push(b);
    }
    drop(accepted);
    server.shutdown().await;
    (sum[0], bytes)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len().is_multiple_of(2) {
        0.5 * (xs[m - 1] + xs[m])
    } else {
        xs[m]
    }
}

fn bench(c: &mut Criterion) {
    let setup = Setup::new();
    let secure_times = Mutex::new(Vec::<f64>::new());
    let plain_times = Mutex::new(Vec::<f64>::new());
    let secure_bytes = Mutex::new(Vec::<Sent>::new());
    let plain_bytes = Mutex::new(Vec::<Sent>::new());

    // Both sums agree (up to randomized rounding, identical here in distribution).
    let (s, _) = setup.runtime.block_on(secure_sum(&setup));
    let (p, _) = setup.runtime.block_on(plain_sum(&setup, &setup.dir));
    let exact: f64 = setup.inputs.iter().map(|x| f64::from(x[0])).sum();
    assert!(
        (s - exact).abs() < 1e-3 && (p - exact).abs() < 1e-3,
        "{s} {p} {exact}"
    );

    let mut group = c.benchmark_group("sum_8_parties_loopback_quic");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_with_input(BenchmarkId::new("plain", D), &D, |b, _| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let (_, bytes) = setup.runtime.block_on(plain_sum(&setup, &setup.dir));
                let t = start.elapsed();
                total += t;
                plain_times.lock().unwrap().push(t.as_secs_f64());
                plain_bytes.lock().unwrap().extend(bytes);
            }
            total
        });
    });
    group.bench_with_input(BenchmarkId::new("secure", D), &D, |b, _| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let (_, bytes) = setup.runtime.block_on(secure_sum(&setup));
                let t = start.elapsed();
                total += t;
                secure_times.lock().unwrap().push(t.as_secs_f64());
                secure_bytes.lock().unwrap().extend(bytes);
            }
            total
        });
    });
    group.finish();

    let raw = (D * 4) as f64;
    let st = median(&mut secure_times.lock().unwrap());
    let pt = median(&mut plain_times.lock().unwrap());
    let per = |v: &Mutex<Vec<Sent>>, f: fn(&Sent) -> u64| -> f64 {
        median(
            &mut v
                .lock()
                .unwrap()
                .iter()
                .map(|s| f(s) as f64)
                .collect::<Vec<_>>(),
        )
    };
    let (sf, pf) = (
        per(&secure_bytes, |s| s.frames),
        per(&plain_bytes, |s| s.frames),
    );
    let (su, pu) = (per(&secure_bytes, |s| s.udp), per(&plain_bytes, |s| s.udp));
    println!("secure sum, n = {N}, d = {D} (ring Z_2^32, loopback QUIC):");
    println!(
        "  median wall time: secure {st:.3} s, plain {pt:.3} s, ratio secure/plain = {:.3}",
        st / pt
    );
    println!(
        "  protocol bytes sent per party (frames): secure {sf:.0}, plain {pf:.0}, raw ring vector {raw:.0}; \
         secure/raw = {:.4}, plain/raw = {:.4}",
        sf / raw,
        pf / raw
    );
    println!(
        "  UDP bytes sent per party (QUIC+TLS, ACKs, retransmissions): secure {su:.0}, plain {pu:.0}; \
         secure/raw = {:.4}, plain/raw = {:.4}, secure/plain = {:.4}",
        su / raw,
        pu / raw,
        su / pu
    );
    let _ = std::fs::remove_dir_all(&setup.dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
