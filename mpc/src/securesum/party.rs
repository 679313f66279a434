//! A party's tokio driver: connects to the aggregator over QUIC and runs
//! [`crate::secagg::SecAggClient`] round by round.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::agreement::{AGREEMENT_ROUND, SessionDigest};
use super::{
    Error, PartyOutcome, Plan, RELEASE_ROUND, Release, Result, RingBits, SLACK, SecureSumInput,
    SecureSumParams, SumMode,
};
use crate::PartyId;
use crate::ring::RingWord;
use crate::secagg::{SecAggClient, ServerMessage};
use crate::transport::{Client, Connection, Identity, TlsConfig, TransportOptions};

/// A party's configuration.
#[derive(Debug, Clone)]
pub struct PartyConfig {
    /// The public parameters (same at every party and the aggregator).
    pub params: SecureSumParams,
    /// This party's id as in its certificate (`party-<id>`), in `1..=n`.
    pub id: PartyId,
    /// The aggregator's address.
    pub aggregator: SocketAddr,
    /// TLS configuration: this party's credentials, allowing the aggregator.
    pub tls: TlsConfig,
    /// Transport limits and timeouts.
    pub transport: TransportOptions,
    /// Testing aid: sleep this long after receiving the other parties' key shares and before
    /// sending the masked input (so that a test can kill the party at a known point of the
    /// round). `None` in real deployments.
    pub stall_before_masked_input: Option<Duration>,
}

impl PartyConfig {
    /// Loads `dir/ca.pem` and `dir/party-<id>.{pem,key}` (the layout written by
    /// `sotto certs`) and allows the aggregator.
    ///
    /// # Errors
    /// [`Error::Protocol`] for invalid parameters or an id outside `1..=n`;
    /// [`Error::Transport`] with [`transport::Error::Certificate`] naming the missing or wrong
    /// file and the fix.
    pub fn from_dir(
        params: SecureSumParams,
        id: PartyId,
        aggregator: SocketAddr,
        dir: &Path,
    ) -> Result<Self> {
        let plan = params.plan()?;
        check_id(&plan, id)?;
        let tls = TlsConfig::from_dir(dir, Identity::Party(id), [Identity::Aggregator])?;
        let transport = super::transport_for(&params);
        Ok(PartyConfig {
            params,
            id,
            aggregator,
            tls,
            transport,
            stall_before_masked_input: None,
        })
    }
}

fn check_id(plan: &Plan, id: PartyId) -> Result<PartyId> {
    plan.numbering.to_core(id).ok_or_else(|| {
        Error::Protocol(crate::Error::invalid(
            "id",
            id.0,
            format!(
                "party ids run from 1 to {} (as in the certificates party-1 .. party-{})",
                plan.secagg.parties(),
                plan.secagg.parties()
            ),
        ))
    })
}

/// A party of a secure sum over QUIC.
#[derive(Debug)]
pub struct SecureSumParty;

impl SecureSumParty {
    /// Contributes `input` to the secure sum: connects to the aggregator (retrying until the
    /// join deadline), runs the four rounds, and returns the release the aggregator sends.
    /// Must be called inside a tokio runtime; the client's UDP port is freed on return.
    ///
    /// # Errors
    /// [`Error::Protocol`] for invalid parameters or input (wrong length, NaN), or when the
    /// aggregator misbehaves or reports this party as dropped; [`Error::Transport`] for
    /// certificate problems, a refused connection (e.g. "unknown party 7"), or an aggregator
    /// silent past the deadlines.
    ///
    /// # Privacy
    /// The input is encoded, noised (if configured) and masked locally; only the masked vector
    /// and encrypted key shares leave the party. The plain input is zeroized after encoding.
    pub async fn run(config: PartyConfig, input: SecureSumInput) -> Result<PartyOutcome> {
        let plan = config.params.plan()?;
        let core = check_id(&plan, config.id)?;
        let client = Client::bind(
            local_for(config.aggregator),
            &config.tls,
            config.transport.clone(),
        )?;
        let result = match config.params.ring {
            RingBits::U32 => run_ring::<u32>(&config, &plan, core, &client, input).await,
            RingBits::U64 => run_ring::<u64>(&config, &plan, core, &client, input).await,
        };
        client.shutdown().await;
        if let Err(error) = &result {
            tracing::error!(party = %config.id, %error, "secure sum: party failed");
        }
        result
    }
}

/// The unspecified local address of the family of `remote`.
pub(crate) fn local_for(remote: SocketAddr) -> SocketAddr {
    if remote.is_ipv6() {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    }
}

/// Dials `expected` at `addr`, retrying transient failures until `within` has passed
/// ([`Client::connect_with_retry`]).
pub(crate) async fn connect_with_retry(
    client: &Client,
    addr: SocketAddr,
    expected: Identity,
    within: Duration,
) -> Result<Connection> {
    Ok(client.connect_with_retry(addr, expected, within).await?)
}

async fn run_ring<W: RingWord>(
    config: &PartyConfig,
    plan: &Plan,
    core: PartyId,
    client: &Client,
    input: SecureSumInput,
) -> Result<PartyOutcome> {
    let params = &config.params;
    let session = params.session;
    let mut rng = super::os_rng()?;
    let mut encoded = input.encode::<W, _>(&plan.encoder, &mut rng)?;
    drop(input);
    if let Some((noise, _)) = &plan.noise {
        noise.add_share(&mut encoded, &mut rng);
    }
    let mut party = SecAggClient::new(plan.secagg.clone(), core, std::mem::take(&mut *encoded))
        .map_err(|e| plan.numbering.renumber(e))?;
    drop(encoded);

    let connection = connect_with_retry(
        client,
        config.aggregator,
        Identity::Aggregator,
        params.deadlines.join,
    )
    .await?;
    tracing::info!(party = %config.id, aggregator = %config.aggregator, "secure sum: connected");
    // Session agreement: both sides send their digest; the input is used only once the
    // aggregator's digest matches ours (and the aggregator drops us if ours does not match).
    let ours = SessionDigest::of(params, SumMode::Aggregator);
    connection.send(session, AGREEMENT_ROUND, &ours).await?;
    // The aggregator waits up to `join` for everyone, then up to `round` per round.
    let mut wait = params.deadlines.join + params.deadlines.round + SLACK;
    let theirs: SessionDigest = connection.recv(session, AGREEMENT_ROUND, wait).await?;
    if let Some(m) = ours.mismatch(&theirs) {
        connection.close("session parameters disagree");
        return Err(Error::SessionMismatch {
            peer: Identity::Aggregator,
            field: m.field,
            ours: m.ours,
            theirs: m.theirs,
        });
    }
    party.start(&mut rng)?;
    send_queued(&mut party, &connection, session).await?;
    let numbering = plan.numbering;
    for round in 0u64..=2 {
        let message: ServerMessage = connection.recv(session, round, wait).await?;
        // Key agreement, Shamir shares and mask expansion run on a blocking thread (at most
        // one per CPU), so that many parties in one process do not starve the QUIC drivers.
        (party, rng) = super::cpu_bound(move || {
            let (mut party, mut rng) = (party, rng);
            party
                .handle_message(message, &mut rng)
                .map_err(|e| numbering.renumber(e))?;
            Ok((party, rng))
        })
        .await?;
        tracing::info!(party = %config.id, round, "secure sum: round done");
        if round == 1
            && let Some(stall) = config.stall_before_masked_input
        {
            tracing::warn!(party = %config.id, ?stall, "secure sum: stalling before the masked input (testing aid)");
            tokio::time::sleep(stall).await;
        }
        send_queued(&mut party, &connection, session).await?;
        wait = params.deadlines.round * 2 + SLACK;
    }
    let bytes_sent = connection.quic().stats().udp_tx.bytes;
    let frame_bytes_sent = connection.frame_bytes_sent();
    let release = connection
        .recv::<Release>(session, RELEASE_ROUND, wait)
        .await;
    let outcome = match release {
        Ok(release) => PartyOutcome {
            id: config.id,
            sum: Some(release.sum),
            survivors: release.survivors,
            privacy: release.privacy,
            bytes_sent,
            frame_bytes_sent,
        },
        Err(error) => {
            tracing::warn!(party = %config.id, %error, "secure sum: no release from the aggregator");
            return Err(error.into());
        }
    };
    tracing::info!(party = %config.id, "secure sum: release received");
    let _ = connection.close_gracefully(Duration::from_secs(1)).await;
    Ok(outcome)
}

async fn send_queued<W: RingWord>(
    party: &mut SecAggClient<W>,
    connection: &Connection,
    session: crate::SessionId,
) -> Result<()> {
    while let Some(message) = party.poll_transmit() {
        let round = message.kind_round() as u64;
        connection.send(session, round, &message).await?;
    }
    Ok(())
}
