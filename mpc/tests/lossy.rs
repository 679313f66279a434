//! A faulty network on loopback, without `tc netem`: the parties reach the aggregator through a
//! UDP proxy on 127.0.0.1 that drops 5% of the datagrams and delays the others by 50 ms with
//! about 10 ms of jitter, in both directions (so datagrams are also reordered). The secure sum
//! of the raise example must still be exact with no party dropped.
//!
//! `scripts/netns-netem.sh` runs the same conditions with `tc netem` between network
//! namespaces (for a secure sum and a training run) where the kernel offers netem.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TempDir, bounded, options};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sotto_mpc::encoding::Clipping;
use sotto_mpc::securesum::{
    AggregatorConfig, Deadlines, PartyConfig, SecureSumAggregator, SecureSumInput, SecureSumParams,
    SecureSumParty,
};
use sotto_mpc::transport::certs::generate_dev_pki;
use sotto_mpc::{PartyId, SessionId};
use tokio::net::UdpSocket;

/// Loss and delay of the proxy, per direction.
#[derive(Clone, Copy)]
struct Faults {
    loss: f64,
    delay_ms: f64,
    jitter_ms: f64,
}

/// A seeded xorshift generator (test randomness only).
struct Xorshift(u64);

impl Xorshift {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Whether to drop the next datagram, and otherwise its delay (a sum of three uniforms:
/// nearly normal with the given standard deviation, cut at 3 of them).
fn fate(rng: &Mutex<Xorshift>, f: Faults) -> Option<Duration> {
    let mut r = rng.lock().unwrap();
    if r.uniform() < f.loss {
        return None;
    }
    let z = (r.uniform() + r.uniform() + r.uniform() - 1.5) / 0.5;
    Some(Duration::from_secs_f64(
        (f.delay_ms + f.jitter_ms * z).max(0.0) / 1e3,
    ))
}

/// Forwards datagrams between clients and `upstream` with `faults`; returns its address and
/// the task (abort it to stop).
async fn lossy_proxy(
    upstream: SocketAddr,
    faults: Faults,
    seed: u64,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let rng = Arc::new(Mutex::new(Xorshift(seed | 1)));
    let task = tokio::spawn(async move {
        let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut backs = tokio::task::JoinSet::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((len, client)) = front.recv_from(&mut buf).await else {
                break;
            };
            let up = match flows.get(&client) {
                Some(up) => Arc::clone(up),
                None => {
                    let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                    up.connect(upstream).await.unwrap();
                    flows.insert(client, Arc::clone(&up));
                    // The way back: upstream -> client, with the same faults.
                    let (up2, front2, rng2) =
                        (Arc::clone(&up), Arc::clone(&front), Arc::clone(&rng));
                    backs.spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok(len) = up2.recv(&mut buf).await {
                            if let Some(delay) = fate(&rng2, faults) {
                                let data = buf[..len].to_vec();
                                let front3 = Arc::clone(&front2);
                                tokio::spawn(async move {
                                    tokio::time::sleep(delay).await;
                                    let _ = front3.send_to(&data, client).await;
                                });
                            }
                        }
                    });
                    up
                }
            };
            if let Some(delay) = fate(&rng, faults) {
                let data = buf[..len].to_vec();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = up.send(&data).await;
                });
            }
        }
    });
    (addr, task)
}

/// The raise example through a proxy with 5% loss and 50 +- 10 ms delay in each direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exact_sum_over_a_lossy_delayed_link() {
    bounded(async {
        let dir = TempDir::new("lossy");
        generate_dev_pki(dir.path(), 4, &[]).unwrap();
        let mut params = SecureSumParams::new(
            SessionId([0x1c; 16]),
            4,
            1,
            Clipping::LInf { bound: 10_000.0 },
        )
        .unwrap();
        params.deadlines = Deadlines {
            join: Duration::from_secs(20),
            round: Duration::from_secs(10),
        };
        let mut config =
            AggregatorConfig::from_dir(params.clone(), "127.0.0.1:0".parse().unwrap(), dir.path())
                .unwrap();
        config.transport = options();
        let aggregator = SecureSumAggregator::bind(config).unwrap();
        let faults = Faults {
            loss: 0.05,
            delay_ms: 50.0,
            jitter_ms: 10.0,
        };
        let (proxy, proxy_task) = lossy_proxy(aggregator.local_addr(), faults, 7).await;
        let started = std::time::Instant::now();
        let parties: Vec<_> = [3800, 2514, 2982, 3390]
            .into_iter()
            .zip(1..)
            .map(|(raise, id)| {
                let mut config =
                    PartyConfig::from_dir(params.clone(), PartyId(id), proxy, dir.path()).unwrap();
                config.transport = options();
                tokio::spawn(SecureSumParty::run(
                    config,
                    SecureSumInput::scalar_i64(raise),
                ))
            })
            .collect();
        let outcome = aggregator.serve().await.unwrap();
        assert_eq!(outcome.sum, vec![12686.0]);
        assert!(outcome.dropped.is_empty(), "{:?}", outcome.dropped);
        for party in parties {
            assert_eq!(party.await.unwrap().unwrap().sum, Some(vec![12686.0]));
        }
        eprintln!(
            "lossy link (5% loss, 50 +- 10 ms each way): exact sum in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        proxy_task.abort();
    })
    .await;
}
