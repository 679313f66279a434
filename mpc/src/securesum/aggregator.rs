//! The aggregator's tokio driver: accepts the parties over QUIC, runs
//! [`crate::secagg::SecAggAggregator`] round by round with deadlines, and releases the sum.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

use tokio::task::JoinSet;

use super::agreement::{AGREEMENT_ROUND, SessionDigest};
use super::{
    Error, Plan, PrivacySpent, RELEASE_ROUND, Release, Result, RingBits, SecureSumParams, SumMode,
    SumOutcome, dropped_of,
};
use crate::PartyId;
use crate::ring::{self, RingWord};
use crate::secagg::{ClientMessage, SecAggAggregator, ServerMessage};
use crate::transport::{
    Connection, Identity, Server, TlsConfig, TransportOptions, collect, collect_each, send_all,
    send_each,
};

/// How long the aggregator waits for each party to acknowledge the release before closing.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The aggregator's configuration: public parameters, where to listen, its TLS identity.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// The public parameters (same at every party).
    pub params: SecureSumParams,
    /// UDP address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// TLS configuration: the aggregator's credentials, allowing parties `1..=n`.
    pub tls: TlsConfig,
    /// Transport limits and timeouts.
    pub transport: TransportOptions,
    /// Whether to send the released sum to the parties after the last round (default true).
    pub publish: bool,
}

impl AggregatorConfig {
    /// Loads `dir/ca.pem` and `dir/aggregator.{pem,key}` (the layout written by
    /// `sotto certs`) and allows parties `party-1` .. `party-n`.
    ///
    /// # Errors
    /// [`Error::Protocol`] for invalid parameters; [`Error::Transport`] with
    /// [`crate::transport::Error::Certificate`] naming the missing or wrong file and the fix.
    pub fn from_dir(params: SecureSumParams, listen: SocketAddr, dir: &Path) -> Result<Self> {
        let plan = params.plan()?;
        let parties = plan.numbering.all().map(Identity::Party);
        let tls = TlsConfig::from_dir(dir, Identity::Aggregator, parties)?;
        let transport = super::transport_for(&params);
        Ok(AggregatorConfig {
            params,
            listen,
            tls,
            transport,
            publish: true,
        })
    }
}

/// The aggregator of a secure sum over QUIC.
///
/// # Security
/// Semi-honest aggregator: it only ever sees masked vectors and the final (noised) sum; the
/// parties' connections are mutually authenticated, and a message from an unknown party, of
/// another session, or malformed is rejected without stopping the round.
#[derive(Debug)]
pub struct SecureSumAggregator {
    config: AggregatorConfig,
    plan: Plan,
    server: Server,
}

impl SecureSumAggregator {
    /// Binds the QUIC server (so that [`Self::local_addr`] is known) without starting the
    /// round. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`Error::Protocol`] for invalid parameters; [`Error::Transport`] if the address cannot
    /// be bound.
    pub fn bind(config: AggregatorConfig) -> Result<Self> {
        let plan = config.params.plan()?;
        let server = Server::bind(config.listen, &config.tls, config.transport.clone())?;
        Ok(SecureSumAggregator {
            config,
            plan,
            server,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Binds, runs one secure sum and shuts down (freeing the port): see [`Self::serve`].
    ///
    /// # Errors
    /// As [`Self::bind`] and [`Self::serve`].
    pub async fn run(config: AggregatorConfig) -> Result<SumOutcome> {
        Self::bind(config)?.serve().await
    }

    /// Waits for the parties (until the join deadline), runs the four rounds, sends the
    /// release to the parties, and shuts the server down (the UDP port is free on return).
    ///
    /// # Errors
    /// [`Error::Protocol`] with [`crate::Error::NotEnoughParties`] if fewer than `threshold`
    /// parties remain in some round; other protocol errors name the party at fault.
    ///
    /// # Privacy
    /// With noise, `privacy` is computed for the survivors' noise shares minus those of the
    /// assumed colluders ([`SecureSumParams::colluders_for`]),
    /// rounded up; the calibration guarantees the target with any `threshold` of them.
    pub async fn serve(self) -> Result<SumOutcome> {
        let SecureSumAggregator {
            config,
            plan,
            server,
        } = self;
        let result = match config.params.ring {
            RingBits::U32 => serve_ring::<u32>(&config, &plan, &server).await,
            RingBits::U64 => serve_ring::<u64>(&config, &plan, &server).await,
        };
        server.shutdown().await;
        result
    }
}

async fn serve_ring<W: RingWord>(
    config: &AggregatorConfig,
    plan: &Plan,
    server: &Server,
) -> Result<SumOutcome> {
    let params = &config.params;
    let session = params.session;
    let numbering = plan.numbering;
    let expected_ids: Vec<Identity> = numbering.all().map(Identity::Party).collect();
    tracing::info!(
        listen = %server.local_addr(),
        parties = params.parties,
        threshold = params.threshold,
        dim = params.dim,
        %session,
        "secure sum: waiting for parties"
    );
    let accepted = server
        .accept_peers(expected_ids.iter().copied(), params.deadlines.join)
        .await;
    for refused in &accepted.refused {
        tracing::warn!(error = %refused, "secure sum: refused a connection");
    }
    if !accepted.missing.is_empty() {
        tracing::warn!(
            missing = ?accepted.missing,
            "secure sum: parties did not connect before the join deadline; treated as dropped"
        );
    }
    let mut connections = accepted.connections;
    tracing::info!(
        connected = connections.len(),
        graph = ?plan.secagg.kind(),
        "secure sum: parties connected"
    );
    agree_on_session(params, &mut connections).await;

    let mut aggregator = SecAggAggregator::<W>::new(plan.secagg.clone(), params.deadlines.round);
    aggregator.start(std::time::Instant::now())?;
    let mut expected: BTreeSet<Identity> = connections.keys().copied().collect();
    for round in 0u64..=3 {
        let Some(core_round) = aggregator.round() else {
            break;
        };
        let deadline = tokio::time::Instant::now() + params.deadlines.round;
        // Each message is handled as it arrives: the core folds masked inputs into its
        // running sum, so the aggregator never holds every party's vector at once.
        let got = collect_each::<ClientMessage<W>, _>(
            &connections,
            expected.iter().copied(),
            session,
            round,
            deadline,
            |identity, message| {
                let Some(core) = identity.party_id().and_then(|p| numbering.to_core(p)) else {
                    tracing::warn!(peer = %identity, "secure sum: message from a peer outside the session ignored");
                    return;
                };
                if let Err(error) =
                    aggregator.handle_message(std::time::Instant::now(), core, message)
                {
                    let error = numbering.renumber(error);
                    tracing::warn!(%error, round = core_round.name(), "secure sum: message rejected");
                }
            },
        )
        .await;
        for silent in &got.silent {
            tracing::warn!(party = %silent, round = core_round.name(), "secure sum: no message by the deadline; dropped");
            drop_connection(
                &mut connections,
                *silent,
                &format!("no {} message by the round deadline", core_round.name()),
            );
        }
        for (party, error) in &got.failed {
            tracing::warn!(party = %party, round = core_round.name(), %error, "secure sum: message rejected or connection failed; dropped");
            drop_connection(
                &mut connections,
                *party,
                &format!("its {} message was rejected", core_round.name()),
            );
        }
        // The core closes a round by itself once every expected party has answered; close
        // it here only if some were silent (the deadline has passed).
        if aggregator.round() == Some(core_round) {
            aggregator.close_round(std::time::Instant::now());
        }
        let mut outgoing: Vec<(Identity, ServerMessage)> = Vec::new();
        while let Some((to, message)) = aggregator.poll_transmit() {
            outgoing.push((numbering.identity(to), message));
        }
        let reached = send_each(&connections, session, round, outgoing, "secure sum").await;
        // Parties the core left out (a rejected message) or the send missed: tell them. (The
        // last round gets no answer; the release follows.)
        let left_out: Vec<Identity> = if round < 3 {
            expected.difference(&reached).copied().collect()
        } else {
            Vec::new()
        };
        for party in &left_out {
            drop_connection(
                &mut connections,
                *party,
                &format!("left out after the {} round", core_round.name()),
            );
        }
        expected = reached;
        tracing::info!(
            round = core_round.name(),
            continuing = expected.len(),
            "secure sum: round closed"
        );
    }
    let output = match aggregator.take_result() {
        Some(Ok(output)) => output,
        Some(Err(error)) => {
            let error = numbering.renumber(error);
            tracing::error!(%error, "secure sum: aggregation failed");
            close_all(&connections, &format!("aggregation failed: {error}"));
            return Err(Error::Protocol(error));
        }
        None => {
            let error =
                crate::Error::InvalidState("the protocol did not finish in four rounds".to_owned());
            close_all(&connections, "aggregation failed");
            return Err(Error::Protocol(error));
        }
    };
    let survivors: Vec<PartyId> = output
        .survivors()
        .iter()
        .map(|p| numbering.to_transport(*p))
        .collect();
    let sum_fixed = ring::to_signed(output.sum());
    let sum = plan.encoder.decode_sum(output.sum());
    let privacy = match &plan.noise {
        None => None,
        Some((noise, delta)) => {
            let colluders = params.colluders_for(SumMode::Aggregator);
            let p = noise.privacy_of(&output, plan.sensitivity, colluders, *delta)?;
            Some(PrivacySpent::from_release(
                p,
                colluders,
                output.survivors().len(),
                noise.sigma_per_party(),
                plan.encoder.scale(),
            ))
        }
    };
    let dropped = dropped_of(numbering, &survivors);
    // Connected parties whose input is not in the sum get no release: they are told why.
    for party in &dropped {
        drop_connection(
            &mut connections,
            Identity::Party(*party),
            "not among the survivors whose inputs are in the sum",
        );
    }
    tracing::info!(survivors = ?survivors, dropped = ?dropped, epsilon = privacy.map(|p| p.epsilon), "secure sum: done");
    if config.publish {
        let release = Release {
            sum: sum.clone(),
            survivors: survivors.clone(),
            privacy,
        };
        match send_all(&connections, session, RELEASE_ROUND, &release).await {
            Ok(failures) => {
                for (party, error) in failures {
                    tracing::info!(party = %party, %error, "secure sum: release not delivered");
                }
            }
            Err(error) => tracing::warn!(%error, "secure sum: release not sent"),
        }
    }
    // Many parties' acknowledgements of a long release take longer than a few.
    let grace = CLOSE_GRACE.max(params.deadlines.round / 4);
    let mut closing = JoinSet::new();
    for connection in connections.values() {
        let connection = connection.clone();
        closing.spawn(async move { connection.close_gracefully(grace).await });
    }
    while closing.join_next().await.is_some() {}
    Ok(SumOutcome {
        sum,
        sum_fixed,
        survivors,
        dropped,
        privacy,
    })
}

fn close_all(connections: &BTreeMap<Identity, Connection>, reason: &str) {
    for connection in connections.values() {
        connection.close(reason);
    }
}

/// Removes `party`'s connection and tells it that it was dropped, and why.
fn drop_connection(
    connections: &mut BTreeMap<Identity, Connection>,
    party: Identity,
    reason: &str,
) {
    if let Some(connection) = connections.remove(&party) {
        connection.close_dropped(&format!(
            "{party} was dropped from the secure sum: {reason}"
        ));
    }
}

/// Sends the session digest to every party, collects theirs (within the round deadline) and
/// drops the parties whose parameters differ, naming the field, before any input is used.
async fn agree_on_session(
    params: &SecureSumParams,
    connections: &mut BTreeMap<Identity, Connection>,
) {
    let ours = SessionDigest::of(params, SumMode::Aggregator);
    match send_all(connections, params.session, AGREEMENT_ROUND, &ours).await {
        Ok(failures) => {
            for (party, error) in failures {
                tracing::warn!(party = %party, %error, "secure sum: session digest not delivered; dropped");
                drop_connection(connections, party, "the session digest could not be sent");
            }
        }
        Err(error) => tracing::warn!(%error, "secure sum: session digest not sent"),
    }
    let deadline = tokio::time::Instant::now() + params.deadlines.round;
    let got = collect::<SessionDigest>(
        connections,
        connections.keys().copied().collect::<Vec<_>>(),
        params.session,
        AGREEMENT_ROUND,
        deadline,
    )
    .await;
    for (party, theirs) in &got.messages {
        if let Some(m) = ours.mismatch(theirs) {
            let error = Error::SessionMismatch {
                peer: *party,
                field: m.field.clone(),
                ours: m.ours.clone(),
                theirs: m.theirs.clone(),
            };
            tracing::error!(party = %party, field = %m.field, %error, "secure sum: session parameters disagree; dropped");
            drop_connection(
                connections,
                *party,
                &format!(
                    "its session parameters disagree with the aggregator's: {} = {} at the aggregator but {} at {party}",
                    m.field, m.ours, m.theirs
                ),
            );
        }
    }
    for party in got.dropped() {
        tracing::warn!(party = %party, "secure sum: no session digest by the deadline; dropped");
        drop_connection(connections, party, "no session digest by the deadline");
    }
}
