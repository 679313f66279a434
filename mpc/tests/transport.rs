//! Transport integration tests: real QUIC + mutual TLS on 127.0.0.1 (port 0), with honest and
//! adversarial peers. Every test is bounded in time.
#![cfg(feature = "transport")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TempDir, bounded, options};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rand_core::{RngCore, SeedableRng};
use sotto_mpc::transport::certs::{
    Credentials, DevPkiOptions, RoleFiles, generate_dev_pki, generate_dev_pki_with, identity_of,
    load_ca,
};
use sotto_mpc::transport::frame::{Envelope, encode_frame};
use sotto_mpc::transport::{
    Client, Connection, Error, Identity, Misbehavior, Peer, Server, SessionId, TlsConfig,
    TransportOptions, collect, send_all,
};
use tokio::time::Instant;

fn parties(ids: impl IntoIterator<Item = u32>) -> Vec<Identity> {
    ids.into_iter().map(Identity::party).collect()
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn aggregator(dir: &Path, allowed: &[Identity], options: TransportOptions) -> Server {
    let tls = TlsConfig::from_dir(dir, Identity::Aggregator, allowed.iter().copied()).unwrap();
    Server::bind(localhost(), &tls, options).unwrap()
}

async fn connect_party(
    dir: &Path,
    id: u32,
    addr: SocketAddr,
) -> Result<(Client, Connection), Error> {
    let tls = TlsConfig::from_dir(dir, Identity::party(id), [Identity::Aggregator])?;
    let client = Client::new(&tls, options())?;
    let conn = client.connect(addr, Identity::Aggregator).await?;
    Ok((client, conn))
}

/// Connects honest parties `ids` and returns their connections with the server's side.
async fn connect_all(
    server: &Server,
    dir: &Path,
    ids: &[u32],
) -> (Vec<(Client, Connection)>, BTreeMap<Identity, Connection>) {
    let addr = server.local_addr();
    let dials = ids.iter().map(|&id| {
        let dir = dir.to_path_buf();
        tokio::spawn(async move { connect_party(&dir, id, addr).await.unwrap() })
    });
    let dials: Vec<_> = dials.collect();
    let accepted = server
        .accept_peers(parties(ids.iter().copied()), Duration::from_secs(10))
        .await;
    assert!(
        accepted.missing.is_empty(),
        "missing: {:?}, refused: {:?}",
        accepted.missing,
        accepted.refused
    );
    let mut clients = Vec::new();
    for dial in dials {
        clients.push(dial.await.unwrap());
    }
    (clients, accepted.connections)
}

/// Honest parties each send `[id, id * 10]` for `(session, round)`; the aggregator must get
/// them all.
async fn honest_round(
    clients: &[(Client, Connection)],
    at_server: &BTreeMap<Identity, Connection>,
    expected: &[Identity],
    session: SessionId,
    round: u64,
) -> sotto_mpc::transport::Collected<Vec<u64>> {
    for (_, conn) in clients {
        let id = u64::from(conn.local_identity().party_id().unwrap().0);
        conn.send(session, round, &vec![id, id * 10]).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    collect::<Vec<u64>>(
        at_server,
        expected.iter().copied(),
        session,
        round,
        deadline,
    )
    .await
}

fn assert_honest_messages(collected: &sotto_mpc::transport::Collected<Vec<u64>>, ids: &[u32]) {
    for &id in ids {
        let got = collected.messages.get(&Identity::party(id));
        assert_eq!(
            got,
            Some(&vec![u64::from(id), u64::from(id) * 10]),
            "party {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_mutual_tls_exchange() {
    bounded(async {
        let dir = TempDir::new("honest");
        generate_dev_pki(dir.path(), 3, &[]).unwrap();
        let expected = parties(1..=3);
        let server = aggregator(dir.path(), &expected, options());
        let (clients, at_server) = connect_all(&server, dir.path(), &[1, 2, 3]).await;

        // Identities come from certificates, on both sides.
        for (id, conn) in &at_server {
            assert_eq!(conn.peer(), *id);
            assert_eq!(conn.local_identity(), Identity::Aggregator);
        }
        for (_, conn) in &clients {
            assert_eq!(conn.peer(), Identity::Aggregator);
        }

        let session = SessionId([42; 16]);
        let round0 = honest_round(&clients, &at_server, &expected, session, 0).await;
        assert_honest_messages(&round0, &[1, 2, 3]);
        assert!(round0.dropped().is_empty(), "{:?}", round0.failed);

        // The aggregator answers everyone; a second round works on the same streams.
        let sum: u64 = round0.messages.values().map(|v| v[0]).sum();
        let failures = send_all(&at_server, session, 1, &sum).await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        for (_, conn) in &clients {
            let got: u64 = conn.recv(session, 1, Duration::from_secs(5)).await.unwrap();
            assert_eq!(got, 6);
        }
        let round2 = honest_round(&clients, &at_server, &expected, session, 2).await;
        assert_honest_messages(&round2, &[1, 2, 3]);

        // A last message followed by a graceful close and shutdown still arrives.
        for (client, conn) in clients {
            let id = u64::from(conn.local_identity().party_id().unwrap().0);
            conn.send(session, 3, &vec![id, id * 10]).await.unwrap();
            conn.close_gracefully(Duration::from_secs(5)).await.unwrap();
            drop(conn);
            client.shutdown().await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let last =
            collect::<Vec<u64>>(&at_server, expected.iter().copied(), session, 3, deadline).await;
        assert_honest_messages(&last, &[1, 2, 3]);
        drop(at_server);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() {
    bounded(async {
        let dir = TempDir::new("ca-a");
        let other = TempDir::new("ca-b");
        generate_dev_pki(dir.path(), 3, &[]).unwrap();
        generate_dev_pki(other.path(), 3, &[]).unwrap();
        let expected = parties(1..=3);
        let server = aggregator(dir.path(), &expected, options());

        // The intruder holds a "party-3" certificate from another CA, and trusts the real CA
        // so that it accepts the real aggregator: only the aggregator's check can stop it.
        let real_ca = load_ca(&dir.path().join("ca.pem")).unwrap();
        let other_ca = load_ca(&other.path().join("ca.pem")).unwrap();
        let forged = Credentials::load_role(other.path(), Identity::party(3), &other_ca).unwrap();
        let intruder_tls = TlsConfig::new(&forged, &real_ca, [Identity::Aggregator]).unwrap();
        let intruder = Client::new(&intruder_tls, options()).unwrap();
        let attempt = intruder
            .connect(server.local_addr(), Identity::Aggregator)
            .await;
        match attempt {
            Err(Error::Refused { .. }) => {}
            other => panic!("expected a refusal, got {other:?}"),
        }
        let refusal = tokio::time::timeout(Duration::from_secs(10), server.accept())
            .await
            .unwrap();
        match refusal {
            Err(Error::Unauthorized {
                peer: Peer::Address(_),
                reason,
            }) => {
                assert!(reason.contains("handshake"), "{reason}");
            }
            other => panic!("expected the server to refuse, got {other:?}"),
        }

        // A party trusting only the other CA does not accept the real aggregator either.
        let wrong_trust = TlsConfig::new(&forged, &other_ca, [Identity::Aggregator]).unwrap();
        let confused = Client::new(&wrong_trust, options()).unwrap();
        match confused
            .connect(server.local_addr(), Identity::Aggregator)
            .await
        {
            Err(Error::Unauthorized { reason, .. }) => {
                assert!(
                    reason.contains("UnknownIssuer") || reason.contains("certificate"),
                    "{reason}"
                )
            }
            other => panic!("expected the client to refuse the server, got {other:?}"),
        }
        // Drain the server's record of that failed handshake.
        let _ = tokio::time::timeout(Duration::from_secs(10), server.accept())
            .await
            .unwrap();

        // The honest parties are unaffected.
        let (clients, at_server) = connect_all(&server, dir.path(), &[1, 2, 3]).await;
        let round = honest_round(&clients, &at_server, &expected, SessionId([1; 16]), 0).await;
        assert_honest_messages(&round, &[1, 2, 3]);
        intruder.shutdown().await;
        confused.shutdown().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_party_is_refused() {
    bounded(async {
        let dir = TempDir::new("unknown");
        // Party 4 has a valid certificate from the deployment CA but is not expected.
        generate_dev_pki(dir.path(), 4, &[]).unwrap();
        let expected = parties(1..=3);
        let server = aggregator(dir.path(), &expected, options());

        match connect_party(dir.path(), 4, server.local_addr()).await {
            Err(Error::Refused { reason, .. }) => {
                assert!(reason.contains("unknown party 4"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        match tokio::time::timeout(Duration::from_secs(10), server.accept())
            .await
            .unwrap()
        {
            Err(err @ Error::Unauthorized { .. }) => {
                assert!(err.to_string().contains("unknown party 4"), "{err}");
            }
            other => panic!("expected the server to refuse party 4, got {other:?}"),
        }

        let (clients, at_server) = connect_all(&server, dir.path(), &[1, 2, 3]).await;
        let round = honest_round(&clients, &at_server, &expected, SessionId([2; 16]), 0).await;
        assert_honest_messages(&round, &[1, 2, 3]);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_message_from_an_earlier_session_is_rejected() {
    bounded(async {
        let dir = TempDir::new("replay");
        generate_dev_pki(dir.path(), 3, &[]).unwrap();
        let expected = parties(1..=3);
        let server = aggregator(dir.path(), &expected, options());
        let (clients, at_server) = connect_all(&server, dir.path(), &[1, 2, 3]).await;

        let earlier = SessionId([0xa1; 16]);
        let current = SessionId([0xb2; 16]);
        let round = honest_round(&clients, &at_server, &expected, earlier, 0).await;
        assert_honest_messages(&round, &[1, 2, 3]);

        // In the new session, party 3 replays its round-0 message of the earlier session.
        let (_, replayer) = &clients[2];
        replayer.send(earlier, 0, &vec![3u64, 30]).await.unwrap();
        for (_, conn) in &clients[..2] {
            let id = u64::from(conn.local_identity().party_id().unwrap().0);
            conn.send(current, 0, &vec![id, id * 10]).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let got =
            collect::<Vec<u64>>(&at_server, expected.iter().copied(), current, 0, deadline).await;
        assert_honest_messages(&got, &[1, 2]);
        let err = got
            .failed
            .get(&Identity::party(3))
            .expect("party 3 must be rejected");
        match err {
            Error::PeerMisbehaved {
                party,
                reason:
                    Misbehavior::WrongSession {
                        session,
                        round,
                        expected,
                    },
            } => {
                assert_eq!(*party, Peer::Known(Identity::party(3)));
                assert_eq!((*session, *round, *expected), (earlier, 0, current));
            }
            other => panic!("expected WrongSession, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("party 3") && text.contains(&earlier.to_string()),
            "{text}"
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_message_is_rejected_in_the_next_round() {
    bounded(async {
        let dir = TempDir::new("late");
        generate_dev_pki(dir.path(), 3, &[]).unwrap();
        let expected = parties(1..=3);
        let server = aggregator(dir.path(), &expected, options());
        let (clients, at_server) = connect_all(&server, dir.path(), &[1, 2, 3]).await;
        let session = SessionId([3; 16]);

        // Round 5: party 3 is late; its round-5 message arrives while round 6 is collected.
        for (_, conn) in &clients[..2] {
            conn.send(session, 5, &vec![0u64]).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_millis(300);
        let round5 =
            collect::<Vec<u64>>(&at_server, expected.iter().copied(), session, 5, deadline).await;
        assert_eq!(round5.silent, [Identity::party(3)].into());
        clients[2].1.send(session, 5, &vec![0u64]).await.unwrap();
        for (_, conn) in &clients[..2] {
            conn.send(session, 6, &vec![0u64]).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let round6 =
            collect::<Vec<u64>>(&at_server, expected.iter().copied(), session, 6, deadline).await;
        assert_eq!(round6.messages.len(), 2);
        let err = round6.failed.get(&Identity::party(3)).unwrap();
        assert!(
            matches!(
                err,
                Error::PeerMisbehaved {
                    reason: Misbehavior::WrongRound {
                        round: 5,
                        expected: 6,
                        ..
                    },
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("round 5, expected round 6"),
            "{err}"
        );

        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_refused_without_waiting_for_it() {
    bounded(async {
        let dir = TempDir::new("oversized");
        generate_dev_pki(dir.path(), 3, &[]).unwrap();
        let expected = parties(1..=3);
        let small = TransportOptions {
            max_frame: 64 * 1024,
            ..options()
        };
        let server = aggregator(dir.path(), &expected, small);
        let (clients, at_server) = connect_all(&server, dir.path(), &[1, 2, 3]).await;
        let session = SessionId([4; 16]);

        // Party 3 announces a 1 GiB frame, sends 1 KiB of it and stalls with the stream open.
        let mut raw = clients[2].1.quic().open_uni().await.unwrap();
        raw.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
        raw.write_all(&[0u8; 1024]).await.unwrap();

        let started = Instant::now();
        let deadline = started + Duration::from_secs(20);
        let got = {
            for (_, conn) in &clients[..2] {
                let id = u64::from(conn.local_identity().party_id().unwrap().0);
                conn.send(session, 0, &vec![id, id * 10]).await.unwrap();
            }
            collect::<Vec<u64>>(&at_server, expected.iter().copied(), session, 0, deadline).await
        };
        assert_honest_messages(&got, &[1, 2]);
        match got.failed.get(&Identity::party(3)) {
            Some(Error::PeerMisbehaved {
                reason: Misbehavior::FrameTooLarge { len, max },
                ..
            }) => {
                assert_eq!((*len, *max), (1 << 30, 64 * 1024));
            }
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        // Refused on the header alone: long before the deadline, with the payload never read.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        // And the offender's connection was closed as misbehaving.
        let closed = tokio::time::timeout(Duration::from_secs(5), clients[2].1.quic().closed())
            .await
            .unwrap();
        assert!(closed.to_string().contains("frame"), "{closed}");

        // A sender refuses to produce such a frame in the first place.
        let big = vec![u64::MAX; 20_000];
        let err = at_server[&Identity::party(1)]
            .send(session, 1, &big)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidParameter {
                    parameter: "max_frame",
                    ..
                }
            ),
            "{err:?}"
        );
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_and_forged_senders_are_rejected() {
    bounded(async {
        let dir = TempDir::new("random");
        generate_dev_pki(dir.path(), 5, &[]).unwrap();
        let expected = parties(1..=5);
        let server = aggregator(dir.path(), &expected, options());
        let (clients, at_server) = connect_all(&server, dir.path(), &[1, 2, 3, 4, 5]).await;
        let session = SessionId([5; 16]);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(20260522);

        // Party 3: random bytes from the first byte (random header).
        let mut noise = vec![0u8; 4096];
        rng.fill_bytes(&mut noise);
        let mut raw3 = clients[2].1.quic().open_uni().await.unwrap();
        raw3.write_all(&noise).await.unwrap();
        // Party 4: a valid header, then random payload.
        let mut payload = vec![0u8; 300];
        rng.fill_bytes(&mut payload);
        let mut raw4 = clients[3].1.quic().open_uni().await.unwrap();
        raw4.write_all(&300u32.to_be_bytes()).await.unwrap();
        raw4.write_all(&payload).await.unwrap();
        // Party 5: a well-formed frame whose envelope claims to come from party 1.
        let forged = Envelope { session, round: 0, sender: Identity::party(1), body: vec![1u64, 10] };
        let frame = encode_frame(&forged, 1 << 20).unwrap();
        let mut raw5 = clients[4].1.quic().open_uni().await.unwrap();
        raw5.write_all(&frame).await.unwrap();

        let got = honest_round(&clients[..2], &at_server, &expected, session, 0).await;
        assert_honest_messages(&got, &[1, 2]);
        assert!(
            matches!(
                got.failed.get(&Identity::party(5)),
                Some(Error::PeerMisbehaved { reason: Misbehavior::WrongSender { claimed }, .. })
                    if *claimed == Identity::party(1)
            ),
            "{:?}",
            got.failed
        );
        for id in [3, 4] {
            let err = got.failed.get(&Identity::party(id));
            assert!(
                matches!(err, Some(Error::PeerMisbehaved { party, .. }) if *party == Peer::Known(Identity::party(id))),
                "party {id}: {err:?}"
            );
        }
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_party_is_reported_dropped_after_the_deadline() {
    bounded(async {
        let dir = TempDir::new("silent");
        generate_dev_pki(dir.path(), 4, &[]).unwrap();
        let expected = parties(1..=4);
        let server = aggregator(dir.path(), &expected, options());
        // Party 4 never connects; party 3 connects but never sends.
        let (clients, at_server) = connect_all(&server, dir.path(), &[1, 2, 3]).await;
        let session = SessionId([6; 16]);
        for (_, conn) in &clients[..2] {
            let id = u64::from(conn.local_identity().party_id().unwrap().0);
            conn.send(session, 0, &vec![id, id * 10]).await.unwrap();
        }
        let started = Instant::now();
        let deadline = started + Duration::from_millis(500);
        let got =
            collect::<Vec<u64>>(&at_server, expected.iter().copied(), session, 0, deadline).await;
        let elapsed = started.elapsed();
        assert_honest_messages(&got, &[1, 2]);
        assert_eq!(got.silent, parties([3, 4]).into_iter().collect());
        assert!(got.failed.is_empty(), "{:?}", got.failed);
        assert_eq!(got.dropped(), parties([3, 4]).into_iter().collect());
        assert!(
            elapsed >= Duration::from_millis(450),
            "returned before the deadline: {elapsed:?}"
        );
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

        // The connection of the silent party still works for the next round.
        for (_, conn) in &clients {
            conn.send(session, 1, &vec![0u64]).await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let next = collect::<Vec<u64>>(&at_server, parties(1..=3), session, 1, deadline).await;
        assert_eq!(next.messages.len(), 3, "{:?}", next.failed);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_frees_the_port() {
    bounded(async {
        let dir = TempDir::new("shutdown");
        generate_dev_pki(dir.path(), 1, &[]).unwrap();
        let expected = parties([1]);
        let server = aggregator(dir.path(), &expected, options());
        let addr = server.local_addr();
        let (clients, at_server) = connect_all(&server, dir.path(), &[1]).await;
        let round = honest_round(&clients, &at_server, &expected, SessionId([7; 16]), 0).await;
        assert_honest_messages(&round, &[1]);
        drop(at_server);
        server.shutdown().await;

        // The party notices the shutdown.
        let (client, conn) = clients.into_iter().next().unwrap();
        let err = conn
            .recv::<u64>(SessionId([7; 16]), 1, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ConnectionLost { .. }), "{err:?}");
        drop(conn);
        client.shutdown().await;

        // The same port can be bound again.
        let tls = TlsConfig::from_dir(dir.path(), Identity::Aggregator, expected).unwrap();
        let again = Server::bind(addr, &tls, options()).expect("port still in use after shutdown");
        assert_eq!(again.local_addr(), addr);
        again.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_silent_address_times_out() {
    bounded(async {
        let dir = TempDir::new("timeout");
        generate_dev_pki(dir.path(), 1, &[]).unwrap();
        // A UDP socket that never answers.
        let blackhole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tls =
            TlsConfig::from_dir(dir.path(), Identity::party(1), [Identity::Aggregator]).unwrap();
        let quick = TransportOptions {
            handshake_timeout: Duration::from_millis(300),
            ..options()
        };
        let client = Client::new(&tls, quick).unwrap();
        let started = Instant::now();
        let err = client
            .connect(blackhole.local_addr().unwrap(), Identity::Aggregator)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Timeout {
                    what: "the TLS handshake",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        // Dialing an identity the TLS configuration does not allow is a caller error.
        let err = client
            .connect(blackhole.local_addr().unwrap(), Identity::party(2))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidParameter {
                    parameter: "expected",
                    ..
                }
            ),
            "{err:?}"
        );
        client.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_options_are_rejected() {
    let dir = TempDir::new("options");
    generate_dev_pki(dir.path(), 1, &[]).unwrap();
    let tls = TlsConfig::from_dir(dir.path(), Identity::Aggregator, parties([1])).unwrap();
    for (bad, name) in [
        (
            TransportOptions {
                max_frame: 0,
                ..options()
            },
            "max_frame",
        ),
        (
            TransportOptions {
                handshake_timeout: Duration::ZERO,
                ..options()
            },
            "handshake_timeout",
        ),
        (
            TransportOptions {
                keep_alive: Duration::from_secs(20),
                ..options()
            },
            "keep_alive",
        ),
    ] {
        match Server::bind(localhost(), &tls, bad) {
            Err(Error::InvalidParameter { parameter, .. }) => assert_eq!(parameter, name),
            other => panic!("{name}: expected InvalidParameter, got {other:?}"),
        }
    }
}

// ---- certificates ----

#[test]
fn dev_pki_layout_identities_and_names() {
    let dir = TempDir::new("pki");
    let pki = generate_dev_pki(
        dir.path(),
        3,
        &["10.1.2.3".to_owned(), "node7.example.org".to_owned()],
    )
    .unwrap();
    assert_eq!(pki.ca, dir.path().join("ca.pem"));
    assert_eq!(
        pki.aggregator,
        RoleFiles::in_dir(dir.path(), Identity::Aggregator)
    );
    assert_eq!(pki.parties.len(), 3);
    assert_eq!(pki.parties[2].cert, dir.path().join("party-3.pem"));
    assert_eq!(pki.parties[2].key, dir.path().join("party-3.key"));

    let ca = load_ca(&pki.ca).unwrap();
    for role in std::iter::once(&pki.aggregator).chain(&pki.parties) {
        let creds = Credentials::load(&role.cert, &role.key, &ca).unwrap();
        assert_eq!(creds.identity(), role.identity);
        assert!(!format!("{creds:?}").contains("BEGIN"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&role.key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", role.key.display());
        }
        // Subject alternative names: identity, localhost, loopback IPs and the extra names.
        let pem = std::fs::read(&role.cert).unwrap();
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(identity_of(&der).unwrap(), role.identity);
        let cert = webpki::EndEntityCert::try_from(&der).unwrap();
        for name in [
            "localhost",
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "node7.example.org",
        ] {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            cert.verify_is_valid_for_subject_name(&name).unwrap();
        }
        let own = rustls::pki_types::ServerName::try_from(role.identity.dns_name()).unwrap();
        cert.verify_is_valid_for_subject_name(&own).unwrap();
    }
}

#[test]
fn loading_errors_name_the_file_and_the_fix() {
    let dir = TempDir::new("load-a");
    let other = TempDir::new("load-b");
    let pki = generate_dev_pki(dir.path(), 2, &[]).unwrap();
    let other_pki = generate_dev_pki(other.path(), 2, &[]).unwrap();
    let ca = load_ca(&pki.ca).unwrap();

    let missing = dir.path().join("nope.pem");
    let err = load_ca(&missing).unwrap_err().to_string();
    assert!(
        err.contains("nope.pem") && err.contains("not found"),
        "{err}"
    );

    // A key file where a certificate belongs.
    let err = load_ca(&pki.parties[0].key).unwrap_err().to_string();
    assert!(
        err.contains("party-1.key") && err.contains("not a PEM certificate"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = load_ca(&garbage).unwrap_err().to_string();
    assert!(err.contains("not a PEM certificate"), "{err}");

    // A certificate from another deployment.
    let foreign = &other_pki.parties[0];
    let err = Credentials::load(&foreign.cert, &foreign.key, &ca)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("certificate not signed by the deployment CA"),
        "{err}"
    );

    // A key that belongs to another certificate.
    let err = Credentials::load(&pki.parties[0].cert, &pki.parties[1].key, &ca)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("party-2.key") && err.contains("does not match"),
        "{err}"
    );

    // A certificate where the key belongs.
    let err = Credentials::load(&pki.parties[0].cert, &pki.parties[0].cert, &ca)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a PEM private key"), "{err}");

    // Loading a role from the wrong file.
    std::fs::copy(&pki.parties[1].cert, dir.path().join("party-9.pem")).unwrap();
    std::fs::copy(&pki.parties[1].key, dir.path().join("party-9.key")).unwrap();
    let err = Credentials::load_role(dir.path(), Identity::party(9), &ca)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("names party 2 but is used as party 9"),
        "{err}"
    );
}

#[test]
fn dev_pki_parameters_are_checked() {
    let dir = TempDir::new("params");
    for (parties, names, parameter) in [
        (0, vec![], "parties"),
        (2, vec!["party-1.sotto".to_owned()], "extra_names"),
        (2, vec!["not a name".to_owned()], "extra_names"),
        (2, vec![String::new()], "extra_names"),
    ] {
        match generate_dev_pki(dir.path(), parties, &names) {
            Err(Error::InvalidParameter { parameter: p, .. }) => assert_eq!(p, parameter),
            other => panic!("expected InvalidParameter {parameter}, got {other:?}"),
        }
    }
    let mut options = DevPkiOptions::new(1);
    options.validity = Duration::ZERO;
    assert!(matches!(
        generate_dev_pki_with(dir.path(), &options),
        Err(Error::InvalidParameter {
            parameter: "validity",
            ..
        })
    ));

    // An existing deployment is not overwritten unless asked.
    let first = generate_dev_pki(dir.path(), 1, &[]).unwrap();
    let before = std::fs::read(&first.ca).unwrap();
    let err = generate_dev_pki(dir.path(), 1, &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(&first.ca).unwrap(), before);
    let mut options = DevPkiOptions::new(1);
    options.overwrite = true;
    generate_dev_pki_with(dir.path(), &options).unwrap();
    assert_ne!(std::fs::read(&first.ca).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_cut_by_the_deadline_resumes_intact() {
    bounded(async {
        let dir = TempDir::new("resume");
        generate_dev_pki(dir.path(), 2, &[]).unwrap();
        let expected = parties(1..=2);
        let server = aggregator(dir.path(), &expected, options());
        let (clients, at_server) = connect_all(&server, dir.path(), &[1, 2]).await;
        let session = SessionId([8; 16]);

        // Party 2 writes the first half of its frame (below the API), then stalls.
        let body: Vec<u64> = (0..5000).collect();
        let frame = encode_frame(
            &Envelope {
                session,
                round: 0,
                sender: Identity::party(2),
                body: body.clone(),
            },
            1 << 20,
        )
        .unwrap();
        let (first, second) = frame.split_at(frame.len() / 2);
        let mut raw = clients[1].1.quic().open_uni().await.unwrap();
        raw.write_all(first).await.unwrap();
        clients[0]
            .1
            .send(session, 0, &vec![1u64, 10])
            .await
            .unwrap();

        let deadline = Instant::now() + Duration::from_millis(300);
        let got =
            collect::<Vec<u64>>(&at_server, expected.iter().copied(), session, 0, deadline).await;
        assert_honest_messages(&got, &[1]);
        assert_eq!(got.silent, parties([2]).into_iter().collect());

        // The rest arrives later: the half already read was kept, the message decodes whole.
        raw.write_all(second).await.unwrap();
        let late: Vec<u64> = at_server[&Identity::party(2)]
            .recv(session, 0, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(late, body);
        drop((clients, at_server));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_u64_vector_crosses_in_one_message() {
    bounded(async {
        let dir = TempDir::new("large");
        generate_dev_pki(dir.path(), 1, &[]).unwrap();
        let expected = parties([1]);
        let server = aggregator(dir.path(), &expected, options());
        let (clients, at_server) = connect_all(&server, dir.path(), &[1]).await;
        let session = SessionId([9; 16]);
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let body: Vec<u64> = (0..1_000_000).map(|_| rng.next_u64()).collect();

        let started = Instant::now();
        let send = clients[0].1.send(session, 0, &body);
        let recv =
            at_server[&Identity::party(1)].recv::<Vec<u64>>(session, 0, Duration::from_secs(30));
        let (sent, received) = tokio::join!(send, recv);
        sent.unwrap();
        assert_eq!(received.unwrap(), body);
        eprintln!(
            "10^6 u64 (random, ~9 MB encoded) over loopback QUIC: {:?}",
            started.elapsed()
        );
        drop((clients, at_server));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_to_peer_and_server_identity_checks() {
    bounded(async {
        let dir = TempDir::new("p2p");
        generate_dev_pki(dir.path(), 3, &[]).unwrap();
        let peers_of = |me: u32| parties((1..=3).filter(move |&p| p != me));
        let tls =
            |me: u32| TlsConfig::from_dir(dir.path(), Identity::party(me), peers_of(me)).unwrap();

        // Party 1 listens; party 2 dials it as a peer.
        let server1 = Server::bind(localhost(), &tls(1), options()).unwrap();
        let client2 = Client::new(&tls(2), options()).unwrap();
        let (dialed, accepted) = tokio::join!(
            client2.connect(server1.local_addr(), Identity::party(1)),
            server1.accept()
        );
        let (dialed, accepted) = (dialed.unwrap(), accepted.unwrap());
        assert_eq!(
            (dialed.peer(), accepted.peer()),
            (Identity::party(1), Identity::party(2))
        );
        let session = SessionId([10; 16]);
        dialed.send(session, 0, &vec![2u64]).await.unwrap();
        accepted.send(session, 0, &vec![1u64]).await.unwrap();
        let at1: Vec<u64> = accepted
            .recv(session, 0, Duration::from_secs(5))
            .await
            .unwrap();
        let at2: Vec<u64> = dialed
            .recv(session, 0, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((at1, at2), (vec![2], vec![1]));

        // Dialing party 3 at party 1's address: the certificate does not name party-3.sotto.
        match client2
            .connect(server1.local_addr(), Identity::party(3))
            .await
        {
            Err(Error::Unauthorized { reason, .. }) => {
                assert!(reason.contains("not valid for name"), "{reason}")
            }
            other => panic!("expected the impostor to be refused, got {other:?}"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), server1.accept())
            .await
            .unwrap();

        // A party's server cannot pose as the aggregator either.
        let to_aggregator =
            TlsConfig::from_dir(dir.path(), Identity::party(3), [Identity::Aggregator]).unwrap();
        let client3 = Client::new(&to_aggregator, options()).unwrap();
        match client3
            .connect(server1.local_addr(), Identity::Aggregator)
            .await
        {
            Err(Error::Unauthorized { reason, .. }) => {
                assert!(reason.contains("not valid for name"), "{reason}")
            }
            other => panic!("expected the fake aggregator to be refused, got {other:?}"),
        }
        drop((dialed, accepted));
        client2.shutdown().await;
        client3.shutdown().await;
        server1.shutdown().await;
    })
    .await;
}
