//! Peer-to-peer mode over QUIC: the article's protocol ([`crate::additive::AdditivePeer`]).
//!
//! Every peer listens on its own address and holds a mutually authenticated connection to
//! every other peer: peer `i` dials the peers with smaller ids and accepts the ones with larger
//! ids. Round 0 sends one share (a 32-byte PRG seed) to each peer; round 1 publishes partial
//! sums; every peer adds the partial sums and learns the total.
//!
//! # Security
//! Semi-honest peers; any `n - 1` colluding peers learn nothing about the remaining peer's
//! input beyond the sum. With noise, every peer sees the total and knows its own share, so the
//! release's privacy counts `parties - max(colluders, 1)` honest shares
//! ([`SecureSumParams::honest_noise_shares`]; by default `colluders = parties - 1`, one honest
//! share, the worst case of this threat model). There is no dropout tolerance: a silent peer stops the run, and the
//! error names it (use aggregator mode when parties may drop out).
//!
//! # Example
//! ```rust
//! use std::collections::BTreeMap;
//! use sotto_mpc::encoding::Clipping;
//! use sotto_mpc::securesum::p2p::{PeerConfig, SecureSumPeer};
//! use sotto_mpc::securesum::{SecureSumInput, SecureSumParams};
//! use sotto_mpc::transport::certs::generate_dev_pki;
//! use sotto_mpc::{PartyId, SessionId};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("sotto-doc-p2p-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! generate_dev_pki(&dir, 3, &[])?;
//! let params = SecureSumParams::new(SessionId([9; 16]), 3, 1, Clipping::LInf { bound: 100.0 })?;
//! let mut peers = Vec::new();
//! for id in 1..=3 {
//!     let config = PeerConfig::from_dir(params.clone(), PartyId(id), "127.0.0.1:0".parse()?, &dir)?;
//!     peers.push(SecureSumPeer::bind(config)?);
//! }
//! let addrs: BTreeMap<PartyId, _> = peers.iter().map(|p| (p.id(), p.local_addr())).collect();
//! let runs: Vec<_> = peers
//!     .into_iter()
//!     .map(|p| {
//!         let value = 10 * i64::from(p.id().0);
//!         tokio::spawn(p.run(addrs.clone(), SecureSumInput::scalar_i64(value)))
//!     })
//!     .collect();
//! for run in runs {
//!     assert_eq!(run.await??.sum, Some(vec![60.0]));
//! }
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::task::JoinSet;

use super::party::{connect_with_retry, local_for};
use super::{
    Error, PartyOutcome, Plan, PrivacySpent, Result, RingBits, SLACK, SecureSumInput,
    SecureSumParams, SumMode,
};
use crate::PartyId;
use crate::additive::{AdditiveMessage, AdditivePeer, ShareEncoding};
use crate::error::Peer;
use crate::ring::RingWord;
use crate::transport::{
    Client, Connection, Identity, Server, TlsConfig, TransportOptions, collect,
};

/// A peer's configuration in peer-to-peer mode.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The public parameters (`threshold` is ignored: every peer must take part).
    pub params: SecureSumParams,
    /// This peer's id as in its certificate, in `1..=n`.
    pub id: PartyId,
    /// UDP address to listen on for peers with larger ids.
    pub listen: SocketAddr,
    /// TLS configuration: this party's credentials, allowing every other party.
    pub tls: TlsConfig,
    /// Transport limits and timeouts.
    pub transport: TransportOptions,
}

impl PeerConfig {
    /// Loads `dir/ca.pem` and `dir/party-<id>.{pem,key}` and allows the other parties.
    ///
    /// # Errors
    /// As [`super::PartyConfig::from_dir`].
    pub fn from_dir(
        params: SecureSumParams,
        id: PartyId,
        listen: SocketAddr,
        dir: &Path,
    ) -> Result<Self> {
        let plan = params.plan_for(SumMode::PeerToPeer)?;
        core_id(&plan, id)?;
        let others = plan
            .numbering
            .all()
            .filter(|p| *p != id)
            .map(Identity::Party);
        let tls = TlsConfig::from_dir(dir, Identity::Party(id), others)?;
        Ok(PeerConfig {
            params,
            id,
            listen,
            tls,
            transport: TransportOptions::default(),
        })
    }
}

fn core_id(plan: &Plan, id: PartyId) -> Result<PartyId> {
    plan.numbering.to_core(id).ok_or_else(|| {
        Error::Protocol(crate::Error::invalid(
            "id",
            id.0,
            format!("party ids run from 1 to {}", plan.secagg.parties()),
        ))
    })
}

/// One peer of the peer-to-peer secure sum over QUIC.
#[derive(Debug)]
pub struct SecureSumPeer {
    config: PeerConfig,
    plan: Plan,
    server: Server,
}

impl SecureSumPeer {
    /// Binds this peer's QUIC server. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`Error::Protocol`] for invalid parameters; [`Error::Transport`] if the address cannot
    /// be bound.
    pub fn bind(config: PeerConfig) -> Result<Self> {
        let plan = config.params.plan_for(SumMode::PeerToPeer)?;
        core_id(&plan, config.id)?;
        let server = Server::bind(config.listen, &config.tls, config.transport.clone())?;
        Ok(SecureSumPeer {
            config,
            plan,
            server,
        })
    }

    /// This peer's id.
    pub fn id(&self) -> PartyId {
        self.config.id
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Connects to every other peer (`addresses` maps each id `1..=n` to its listening
    /// address), runs the two rounds, and returns the sum. Frees its ports on return.
    ///
    /// # Errors
    /// [`Error::Transport`] naming a peer that could not be reached, was refused or timed out;
    /// [`Error::Protocol`] naming a peer whose message was rejected or that stayed silent.
    ///
    /// # Privacy
    /// Only a random-looking share (a PRG seed) of the input goes to each peer, and only the
    /// sum of the shares held is published.
    pub async fn run(
        self,
        addresses: BTreeMap<PartyId, SocketAddr>,
        input: SecureSumInput,
    ) -> Result<PartyOutcome> {
        let SecureSumPeer {
            config,
            plan,
            server,
        } = self;
        let client = match Client::bind(
            local_for(config.listen),
            &config.tls,
            config.transport.clone(),
        ) {
            Ok(client) => client,
            Err(error) => {
                server.shutdown().await;
                return Err(error.into());
            }
        };
        let result = match config.params.ring {
            RingBits::U32 => {
                run_ring::<u32>(&config, &plan, &server, &client, &addresses, input).await
            }
            RingBits::U64 => {
                run_ring::<u64>(&config, &plan, &server, &client, &addresses, input).await
            }
        };
        client.shutdown().await;
        server.shutdown().await;
        if let Err(error) = &result {
            tracing::error!(party = %config.id, %error, "secure sum (p2p): failed");
        }
        result
    }
}

async fn run_ring<W: RingWord>(
    config: &PeerConfig,
    plan: &Plan,
    server: &Server,
    client: &Client,
    addresses: &BTreeMap<PartyId, SocketAddr>,
    input: SecureSumInput,
) -> Result<PartyOutcome> {
    let params = &config.params;
    let session = params.session;
    let numbering = plan.numbering;
    let me = core_id(plan, config.id)?;
    let mut rng = super::os_rng()?;
    let mut encoded = input.encode::<W, _>(&plan.encoder, &mut rng)?;
    drop(input);
    if let Some((noise, _)) = &plan.noise {
        noise.add_share(&mut encoded, &mut rng);
    }
    let mut peer = AdditivePeer::new(
        session,
        me,
        params.parties,
        std::mem::take(&mut *encoded),
        ShareEncoding::Seed,
    )?;
    drop(encoded);

    // Connect: dial the smaller ids, accept the larger ones.
    let lower: Vec<PartyId> = numbering.all().filter(|p| *p < config.id).collect();
    let higher: Vec<Identity> = numbering
        .all()
        .filter(|p| *p > config.id)
        .map(Identity::Party)
        .collect();
    let join = params.deadlines.join;
    let dial = async {
        let mut dialed = BTreeMap::new();
        for id in &lower {
            let Some(addr) = addresses.get(id) else {
                return Err(Error::Protocol(crate::Error::invalid(
                    "addresses",
                    format!("no address for party {}", id.0),
                    "give the listening address of every peer",
                )));
            };
            let connection = connect_with_retry(client, *addr, Identity::Party(*id), join).await?;
            dialed.insert(Identity::Party(*id), connection);
        }
        Ok::<_, Error>(dialed)
    };
    let (dialed, accepted) = tokio::join!(dial, server.accept_peers(higher, join));
    let mut connections: BTreeMap<Identity, Connection> = dialed?;
    for refused in &accepted.refused {
        tracing::warn!(party = %config.id, error = %refused, "secure sum (p2p): refused a connection");
    }
    if let Some(missing) = accepted.missing.first() {
        return Err(Error::Protocol(crate::Error::misbehaved(
            Peer::Party(missing.party_id().unwrap_or(PartyId(0))),
            "did not connect before the join deadline (peer-to-peer mode needs every peer)",
        )));
    }
    connections.extend(accepted.connections);
    tracing::info!(party = %config.id, peers = connections.len(), "secure sum (p2p): connected to every peer");

    peer.start(&mut rng)?;
    let others: BTreeSet<Identity> = connections.keys().copied().collect();
    for round in 0u64..=1 {
        // Send this round's messages, then collect the others'.
        let mut tasks = JoinSet::new();
        while let Some(message) = peer.poll_transmit() {
            let to = numbering.identity(message.header.to);
            let Some(connection) = connections.get(&to).cloned() else {
                continue;
            };
            tasks.spawn(async move { (to, connection.send(session, round, &message).await) });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Ok((to, Err(error))) = joined {
                tracing::warn!(party = %config.id, peer = %to, %error, "secure sum (p2p): send failed");
                return Err(error.into());
            }
        }
        let deadline = tokio::time::Instant::now() + params.deadlines.round + SLACK;
        let got = collect::<AdditiveMessage<W>>(
            &connections,
            others.iter().copied(),
            session,
            round,
            deadline,
        )
        .await;
        if let Some((who, error)) = got.failed.into_iter().next() {
            tracing::warn!(party = %config.id, peer = %who, "secure sum (p2p): peer failed");
            return Err(Error::Transport(error));
        }
        if let Some(silent) = got.silent.first() {
            return Err(Error::Protocol(crate::Error::misbehaved(
                Peer::Party(silent.party_id().unwrap_or(PartyId(0))),
                format!("silent in round {round} (peer-to-peer mode needs every peer)"),
            )));
        }
        for (from, message) in got.messages {
            // The sender named in the message must be the authenticated peer.
            if numbering.identity(message.header.from) != from {
                return Err(Error::Protocol(crate::Error::misbehaved(
                    Peer::Party(from.party_id().unwrap_or(PartyId(0))),
                    "message claims another sender",
                )));
            }
            peer.handle_message(message)
                .map_err(|e| numbering.renumber(e))?;
        }
        tracing::info!(party = %config.id, round, "secure sum (p2p): round done");
    }
    let Some(total) = peer.result() else {
        return Err(Error::Protocol(crate::Error::InvalidState(
            "the peer-to-peer sum did not complete".to_owned(),
        )));
    };
    let sum = plan.encoder.decode_sum(total);
    let privacy = match &plan.noise {
        None => None,
        Some((noise, delta)) => {
            let colluders = params.colluders_for(SumMode::PeerToPeer);
            let honest = params.honest_noise_shares(SumMode::PeerToPeer);
            let p = noise.release_privacy(plan.sensitivity, params.dim, honest, *delta)?;
            Some(PrivacySpent::from_release(
                p,
                colluders,
                params.parties,
                noise.sigma_per_party(),
                plan.encoder.scale(),
            ))
        }
    };
    let bytes_sent = connections
        .values()
        .map(|c| c.quic().stats().udp_tx.bytes)
        .sum();
    let frame_bytes_sent = connections.values().map(|c| c.frame_bytes_sent()).sum();
    let mut closing = JoinSet::new();
    for connection in connections.values() {
        let connection = connection.clone();
        closing.spawn(async move { connection.close_gracefully(Duration::from_secs(1)).await });
    }
    while closing.join_next().await.is_some() {}
    Ok(PartyOutcome {
        id: config.id,
        sum: Some(sum),
        survivors: numbering.all().collect(),
        privacy,
        bytes_sent,
        frame_bytes_sent,
    })
}
