//! Secure sum over real QUIC connections on loopback: aggregator mode (with dropouts and
//! misbehaving connections), peer-to-peer mode, DP noise, and configuration errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TempDir, bounded, options};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rand_core::{RngCore, SeedableRng};
use sotto_mpc::encoding::Clipping;
use sotto_mpc::secagg::{ClientMessage, Header, Round};
use sotto_mpc::securesum::p2p::{PeerConfig, SecureSumPeer};
use sotto_mpc::securesum::{
    AggregatorConfig, Deadlines, NoiseSpec, PartyConfig, SecureSumAggregator, SecureSumInput,
    SecureSumParams, SecureSumParty,
};
use sotto_mpc::transport::certs::{Credentials, generate_dev_pki, load_ca};
use sotto_mpc::transport::{Client, Identity, TlsConfig};
use sotto_mpc::{PartyId, Peer, SessionId};

const RAISES: [i64; 4] = [3800, 2514, 2982, 3390];

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn params(session: u8, parties: usize, threshold: usize) -> SecureSumParams {
    let mut p = SecureSumParams::new(
        SessionId([session; 16]),
        parties,
        1,
        Clipping::LInf { bound: 10_000.0 },
    )
    .unwrap();
    p.threshold = threshold;
    p.deadlines = Deadlines {
        join: Duration::from_secs(10),
        round: Duration::from_secs(2),
    };
    p.validate().unwrap();
    p
}

fn start_aggregator(params: &SecureSumParams, dir: &Path) -> SecureSumAggregator {
    let mut config = AggregatorConfig::from_dir(params.clone(), localhost(), dir).unwrap();
    config.transport = options();
    SecureSumAggregator::bind(config).unwrap()
}

fn party_config(params: &SecureSumParams, id: u32, addr: SocketAddr, dir: &Path) -> PartyConfig {
    let mut config = PartyConfig::from_dir(params.clone(), PartyId(id), addr, dir).unwrap();
    config.transport = options();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raise_average_in_aggregator_mode() {
    bounded(async {
        let dir = TempDir::new("raise");
        generate_dev_pki(dir.path(), 4, &[]).unwrap();
        let params = params(1, 4, 3);
        let aggregator = start_aggregator(&params, dir.path());
        let addr = aggregator.local_addr();
        let parties: Vec<_> = RAISES
            .iter()
            .zip(1..)
            .map(|(raise, id)| {
                let config = party_config(&params, id, addr, dir.path());
                tokio::spawn(SecureSumParty::run(
                    config,
                    SecureSumInput::scalar_i64(*raise),
                ))
            })
            .collect();
        let outcome = aggregator.serve().await.unwrap();
        assert_eq!(outcome.sum, vec![12686.0]);
        assert_eq!(outcome.sum_fixed, vec![12686]);
        assert_eq!(outcome.sum[0] / 4.0, 3171.5);
        assert_eq!(outcome.survivors, (1..=4).map(PartyId).collect::<Vec<_>>());
        assert!(outcome.dropped.is_empty());
        assert!(outcome.privacy.is_none());
        for party in parties {
            let got = party.await.unwrap().unwrap();
            assert_eq!(got.sum, Some(vec![12686.0]));
            assert_eq!(got.survivors.len(), 4);
            assert!(got.frame_bytes_sent > 0 && got.frame_bytes_sent < got.bytes_sent);
        }
        // The port is free again.
        std::net::UdpSocket::bind(addr).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_party_silent_past_the_deadline_is_dropped_and_the_sum_stays_exact() {
    bounded(async {
        let dir = TempDir::new("drop");
        generate_dev_pki(dir.path(), 4, &[]).unwrap();
        let params = params(2, 4, 3);
        let aggregator = start_aggregator(&params, dir.path());
        let addr = aggregator.local_addr();
        let mut tasks = Vec::new();
        for (raise, id) in RAISES.iter().zip(1..) {
            let mut config = party_config(&params, id, addr, dir.path());
            if id == 2 {
                // Party 2 shares its keys, then stalls past the round deadline.
                config.stall_before_masked_input = Some(Duration::from_secs(4));
            }
            tasks.push(tokio::spawn(SecureSumParty::run(
                config,
                SecureSumInput::scalar_i64(*raise),
            )));
        }
        let outcome = aggregator.serve().await.unwrap();
        assert_eq!(outcome.sum, vec![(3800 + 2982 + 3390) as f64]);
        assert_eq!(outcome.survivors, vec![PartyId(1), PartyId(3), PartyId(4)]);
        assert_eq!(outcome.dropped, vec![PartyId(2)]);
        let stalled = tasks.remove(1);
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().sum, Some(vec![10172.0]));
        }
        // The stalled party wakes up to learn that it was dropped, and why (not "the
        // aggregator misbehaved: malformed message").
        let err = stalled.await.unwrap().unwrap_err().to_string();
        assert!(
            err.contains("dropped") && err.contains("party 2") && err.contains("masked"),
            "{err}"
        );
        assert!(!err.contains("malformed"), "{err}");
    })
    .await;
}

/// A party whose `[session]` disagrees (scale 2 instead of 1) is refused before any input is
/// used: it is told the field, and the others' sum stays exact without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_party_with_other_session_parameters_is_refused_naming_the_field() {
    bounded(async {
        let dir = TempDir::new("agree");
        generate_dev_pki(dir.path(), 4, &[]).unwrap();
        let params = params(7, 4, 3);
        let aggregator = start_aggregator(&params, dir.path());
        let addr = aggregator.local_addr();
        let mut tasks = Vec::new();
        for (raise, id) in RAISES.iter().zip(1..) {
            let mut p = params.clone();
            if id == 2 {
                p.scale = 2.0;
            }
            let config = party_config(&p, id, addr, dir.path());
            tasks.push(tokio::spawn(SecureSumParty::run(
                config,
                SecureSumInput::scalar_i64(*raise),
            )));
        }
        let outcome = aggregator.serve().await.unwrap();
        assert_eq!(outcome.sum, vec![(3800 + 2982 + 3390) as f64]);
        assert_eq!(outcome.dropped, vec![PartyId(2)]);
        let odd = tasks.remove(1).await.unwrap().unwrap_err().to_string();
        assert!(
            odd.contains("scale") && odd.contains("aggregator") && odd.contains("2.0"),
            "{odd}"
        );
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().sum, Some(vec![10172.0]));
        }
    })
    .await;
}

/// A party honours its join deadline: with nobody answering, 2 s means about 2 s (not the
/// join deadline plus a whole handshake timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_gives_up_at_its_join_deadline() {
    bounded(async {
        let dir = TempDir::new("join");
        generate_dev_pki(dir.path(), 4, &[]).unwrap();
        let mut params = params(8, 4, 3);
        params.deadlines.join = Duration::from_secs(2);
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind(localhost()).unwrap();
        let config = party_config(&params, 1, silent.local_addr().unwrap(), dir.path());
        let started = std::time::Instant::now();
        let err = SecureSumParty::run(config, SecureSumInput::scalar_i64(1))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_millis(4500),
            "{took:?}: {err}"
        );
        assert!(err.to_string().contains("timed out"), "{err}");
    })
    .await;
}

/// Misbehaving and unknown connections do not stop the honest parties' sum: a party with a
/// certificate from another CA, an unknown party (valid certificate, not in the session), a
/// party replaying a message of an earlier session, a party sending random bytes, and a party
/// announcing an oversized frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn misbehaving_connections_do_not_stop_the_honest_sum() {
    bounded(async {
        let dir = TempDir::new("adv");
        let other = TempDir::new("adv-other-ca");
        // Certificates for 8 parties; the session has 7 (party 8 is unknown to it).
        generate_dev_pki(dir.path(), 8, &[]).unwrap();
        generate_dev_pki(other.path(), 5, &[]).unwrap();
        let params = params(3, 7, 4);
        let aggregator = start_aggregator(&params, dir.path());
        let addr = aggregator.local_addr();
        let honest: Vec<_> = [(1, 100i64), (2, 20), (3, 3), (4, 4000)]
            .into_iter()
            .map(|(id, v)| {
                let config = party_config(&params, id, addr, dir.path());
                tokio::spawn(SecureSumParty::run(config, SecureSumInput::scalar_i64(v)))
            })
            .collect();
        let real_ca = load_ca(&dir.path().join("ca.pem")).unwrap();

        // An impostor with a "party-4" certificate from another CA: refused at the handshake.
        let other_ca = load_ca(&other.path().join("ca.pem")).unwrap();
        let forged = Credentials::load_role(other.path(), Identity::party(4), &other_ca).unwrap();
        let forged_tls = TlsConfig::new(&forged, &real_ca, [Identity::Aggregator]).unwrap();
        let intruder = Client::new(&forged_tls, options()).unwrap();
        let refused = intruder.connect(addr, Identity::Aggregator).await;
        assert!(
            matches!(refused, Err(sotto_mpc::transport::Error::Refused { .. })),
            "{refused:?}"
        );

        // Party 8: valid certificate, but not in this 7-party session.
        let six = Credentials::load_role(dir.path(), Identity::party(8), &real_ca).unwrap();
        let six_tls = TlsConfig::new(&six, &real_ca, [Identity::Aggregator]).unwrap();
        let unknown = Client::new(&six_tls, options()).unwrap();
        match unknown.connect(addr, Identity::Aggregator).await {
            Err(sotto_mpc::transport::Error::Refused { reason, .. }) => {
                assert!(reason.contains("party 8"), "{reason}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }

        // Party 5: authenticated, but replays a key message of an earlier session.
        let four = Credentials::load_role(dir.path(), Identity::party(5), &real_ca).unwrap();
        let four_tls = TlsConfig::new(&four, &real_ca, [Identity::Aggregator]).unwrap();
        let replayer = Client::new(&four_tls, options()).unwrap();
        let conn4 = replayer.connect(addr, Identity::Aggregator).await.unwrap();
        let old_session = SessionId([99; 16]);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
        let key = |rng: &mut rand_chacha::ChaCha20Rng| {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            sotto_mpc::crypto::PublicKey(b)
        };
        let replayed: ClientMessage<u64> = ClientMessage::AdvertiseKeys {
            header: Header {
                session: old_session,
                round: Round::AdvertiseKeys,
                from: Peer::Party(PartyId(4)),
                to: Peer::Aggregator,
            },
            enc_pk: key(&mut rng),
            mask_pk: key(&mut rng),
            self_mask_commitment: sotto_mpc::crypto::Commitment(key(&mut rng).0),
            escrow_commitment: None,
        };
        conn4.send(old_session, 0, &replayed).await.unwrap();

        // Party 6: authenticated, then random bytes on its stream.
        let five = Credentials::load_role(dir.path(), Identity::party(6), &real_ca).unwrap();
        let five_tls = TlsConfig::new(&five, &real_ca, [Identity::Aggregator]).unwrap();
        let garbler = Client::new(&five_tls, options()).unwrap();
        let conn5 = garbler.connect(addr, Identity::Aggregator).await.unwrap();
        let mut junk = vec![0u8; 4096];
        rng.fill_bytes(&mut junk);
        let mut raw = conn5.quic().open_uni().await.unwrap();
        raw.write_all(&junk).await.unwrap();

        // Party 7: authenticated, then a frame header announcing 4 GiB.
        let seven = Credentials::load_role(dir.path(), Identity::party(7), &real_ca).unwrap();
        let seven_tls = TlsConfig::new(&seven, &real_ca, [Identity::Aggregator]).unwrap();
        let hog = Client::new(&seven_tls, options()).unwrap();
        let conn7 = hog.connect(addr, Identity::Aggregator).await.unwrap();
        let mut raw7 = conn7.quic().open_uni().await.unwrap();
        raw7.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        raw7.write_all(&[0u8; 64]).await.unwrap();

        let outcome = aggregator.serve().await.unwrap();
        assert_eq!(outcome.sum, vec![4123.0]);
        assert_eq!(outcome.survivors, (1..=4).map(PartyId).collect::<Vec<_>>());
        assert_eq!(outcome.dropped, vec![PartyId(5), PartyId(6), PartyId(7)]);
        for party in honest {
            assert_eq!(party.await.unwrap().unwrap().sum, Some(vec![4123.0]));
        }
        drop((conn4, conn5, conn7));
        for client in [intruder, unknown, replayer, garbler, hog] {
            client.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn too_few_survivors_fail_with_a_clear_error() {
    bounded(async {
        let dir = TempDir::new("few");
        generate_dev_pki(dir.path(), 4, &[]).unwrap();
        let mut params = params(4, 4, 3);
        params.deadlines.join = Duration::from_secs(2);
        let aggregator = start_aggregator(&params, dir.path());
        let addr = aggregator.local_addr();
        // Only two of four parties show up; the threshold is 3.
        let tasks: Vec<_> = [1, 2]
            .into_iter()
            .map(|id| {
                let config = party_config(&params, id, addr, dir.path());
                tokio::spawn(SecureSumParty::run(config, SecureSumInput::scalar_i64(1)))
            })
            .collect();
        let err = aggregator.serve().await.unwrap_err().to_string();
        assert!(err.contains("not enough parties"), "{err}");
        for task in tasks {
            assert!(task.await.unwrap().is_err());
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn noised_sum_reports_its_privacy() {
    bounded(async {
        let dir = TempDir::new("noise");
        generate_dev_pki(dir.path(), 4, &[]).unwrap();
        let mut params = params(5, 4, 3);
        params.dim = 3;
        params.clipping = Clipping::L2 { norm: 1.0 };
        params.scale = 1024.0;
        params.noise = NoiseSpec::EpsilonDelta {
            epsilon: 4.0,
            delta: 1e-6,
        };
        let aggregator = start_aggregator(&params, dir.path());
        let addr = aggregator.local_addr();
        let tasks: Vec<_> = (1..=4)
            .map(|id| {
                let config = party_config(&params, id, addr, dir.path());
                tokio::spawn(SecureSumParty::run(
                    config,
                    SecureSumInput::vec_f64(vec![0.5, -0.25, 0.0]),
                ))
            })
            .collect();
        let outcome = aggregator.serve().await.unwrap();
        let privacy = outcome.privacy.unwrap();
        assert!(
            privacy.epsilon <= 4.0 && privacy.epsilon > 0.0,
            "{privacy:?}"
        );
        assert_eq!(privacy.delta, 1e-6);
        // 4 survivors, of which threshold - 1 = 2 may collude with the aggregator (the threat
        // model's default): only 2 honest shares count.
        assert_eq!(privacy.colluders, 2);
        assert_eq!(privacy.contributors, 2);
        // The true sum is [2, -1, 0]; the noise is within 6 standard deviations.
        for (got, want) in outcome.sum.iter().zip([2.0, -1.0, 0.0]) {
            assert!(
                (got - want).abs() < 6.0 * privacy.noise_std + 0.01,
                "{got} vs {want}"
            );
        }
        for task in tasks {
            let got = task.await.unwrap().unwrap();
            assert_eq!(got.sum.as_ref(), Some(&outcome.sum));
            assert_eq!(got.privacy, Some(privacy));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raise_average_peer_to_peer() {
    bounded(async {
        let dir = TempDir::new("p2p");
        generate_dev_pki(dir.path(), 4, &[]).unwrap();
        let params = params(6, 4, 3);
        let mut peers = Vec::new();
        for id in 1..=4 {
            let mut config =
                PeerConfig::from_dir(params.clone(), PartyId(id), localhost(), dir.path()).unwrap();
            config.transport = options();
            peers.push(SecureSumPeer::bind(config).unwrap());
        }
        let addrs: BTreeMap<PartyId, SocketAddr> =
            peers.iter().map(|p| (p.id(), p.local_addr())).collect();
        let runs: Vec<_> = peers
            .into_iter()
            .zip(RAISES)
            .map(|(p, raise)| tokio::spawn(p.run(addrs.clone(), SecureSumInput::scalar_i64(raise))))
            .collect();
        for run in runs {
            let got = run.await.unwrap().unwrap();
            assert_eq!(got.sum, Some(vec![12686.0]));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_to_peer_names_a_missing_peer() {
    bounded(async {
        let dir = TempDir::new("p2p-missing");
        generate_dev_pki(dir.path(), 3, &[]).unwrap();
        let mut params = params(7, 3, 2);
        params.deadlines.join = Duration::from_secs(1);
        let mut config =
            PeerConfig::from_dir(params.clone(), PartyId(1), localhost(), dir.path()).unwrap();
        config.transport = options();
        let peer = SecureSumPeer::bind(config).unwrap();
        let addrs = BTreeMap::from([(PartyId(1), peer.local_addr())]);
        let err = peer
            .run(addrs, SecureSumInput::scalar_i64(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("party 2") && err.contains("did not connect"),
            "{err}"
        );
    })
    .await;
}

#[test]
fn missing_certificates_and_bad_ids_are_named() {
    let dir = TempDir::new("nocerts");
    std::fs::create_dir_all(dir.path()).unwrap();
    let params = params(8, 4, 3);
    let err = AggregatorConfig::from_dir(params.clone(), localhost(), dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("ca.pem") && err.contains("not found"), "{err}");
    generate_dev_pki(dir.path(), 4, &[]).unwrap();
    let err = PartyConfig::from_dir(params.clone(), PartyId(0), localhost(), dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`id`") && err.contains("1 to 4"), "{err}");
    let err = PartyConfig::from_dir(params, PartyId(5), localhost(), dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 to 4"), "{err}");
}

/// Runs `n` parties and the aggregator in this process (each party with its own QUIC
/// endpoint on loopback) summing vectors of length `d`; every party must receive the exact sum
/// and none may be dropped. Above 100 parties the SecAgg+ sparse graph is chosen.
async fn many_parties(n: usize, d: usize) {
    let dir = TempDir::new(&format!("many{n}"));
    generate_dev_pki(dir.path(), n, &[]).unwrap();
    let params = SecureSumParams::new(
        SessionId([0x40 + (n % 64) as u8; 16]),
        n,
        d,
        Clipping::LInf { bound: 1000.0 },
    )
    .unwrap();
    let mut config = AggregatorConfig::from_dir(params.clone(), localhost(), dir.path()).unwrap();
    config.transport = sotto_mpc::transport::TransportOptions::default();
    let aggregator = SecureSumAggregator::bind(config).unwrap();
    let addr = aggregator.local_addr();
    let started = std::time::Instant::now();
    let parties: Vec<_> = (1..=n as u32)
        .map(|id| {
            let config =
                PartyConfig::from_dir(params.clone(), PartyId(id), addr, dir.path()).unwrap();
            tokio::spawn(SecureSumParty::run(
                config,
                SecureSumInput::vec_i64(vec![i64::from(id % 1000); d]),
            ))
        })
        .collect();
    let outcome = aggregator.serve().await.unwrap();
    let expected: f64 = (1..=n as u32).map(|id| f64::from(id % 1000)).sum();
    assert!(outcome.sum.iter().all(|v| *v == expected));
    assert!(outcome.dropped.is_empty(), "dropped: {:?}", outcome.dropped);
    for party in parties {
        assert_eq!(
            party.await.unwrap().unwrap().sum.map(|s| s[0]),
            Some(expected)
        );
    }
    eprintln!(
        "{n} parties, d = {d}: exact sum, none dropped, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// `cargo test --release -p sotto-mpc --test securesum -- --ignored --nocapture --test-threads=1 many_parties`
/// (one at a time: the parties of concurrent tests would share the CPU slots of the process)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "100 parties in one process; see docs/benchmarks-mpc.md"]
async fn many_parties_100() {
    tokio::time::timeout(Duration::from_secs(600), many_parties(100, 1000))
        .await
        .unwrap();
}

/// As [`many_parties_100`], 300 parties (sparse graph).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "300 parties in one process; see docs/benchmarks-mpc.md"]
async fn many_parties_300() {
    tokio::time::timeout(Duration::from_secs(600), many_parties(300, 1000))
        .await
        .unwrap();
}

/// As [`many_parties_100`], 1000 parties (sparse graph).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "1000 parties in one process; see docs/benchmarks-mpc.md"]
async fn many_parties_1000() {
    tokio::time::timeout(Duration::from_secs(900), many_parties(1000, 1000))
        .await
        .unwrap();
}
