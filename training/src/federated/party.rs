//! A party's round driver over an open QUIC connection to the aggregator: receive the model,
//! Poisson-sample, clip, encode, add the noise share, mask (SecAgg client, sans-IO) and send.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use sotto_mpc::ring::RingVector;
use sotto_mpc::secagg::{RunKeys, SecAggClient, ServerMessage};
use sotto_mpc::transport::Connection;
use sotto_mpc::{PartyId, SessionId};
use zeroize::Zeroizing;

use super::{
    Error, FederatedConfig, PLAIN_UPDATE, PartyTiming, PrivacyPlan, Result, RoundStart, START,
    TIMING, round_session,
};
use crate::central::poisson_sample;
use crate::data::Dataset;
use crate::model::Model;

/// A party's fixed inputs.
#[derive(Debug)]
pub struct PartySetup {
    /// This party's transport id (`party-<id>` in its certificate), `1..=n`.
    pub id: PartyId,
    /// Settings (the same as the aggregator's).
    pub config: FederatedConfig,
    /// The privacy calibration (the same as the aggregator's).
    pub plan: PrivacyPlan,
    /// This party's records.
    pub data: Dataset,
    /// A model of the run's architecture (its parameters are replaced by the aggregator's).
    pub model: Model,
    /// The run's session id.
    pub session: SessionId,
    /// Sampling, noise and protocol randomness.
    pub rng: ChaCha20Rng,
}

/// What a party ends with.
#[derive(Debug, Clone, PartialEq)]
pub struct PartyOutcome {
    /// This party.
    pub id: PartyId,
    /// Rounds it took part in.
    pub rounds: u64,
    /// The final model's parameters, as sent by the aggregator.
    pub model: Vec<f32>,
}

/// Takes part in every round until the aggregator sends the final model.
///
/// # Errors
/// [`Error::Transport`] if the aggregator is silent past the deadlines or the connection is
/// lost (for example because the aggregator dropped this party); [`Error::Protocol`] if the
/// aggregator's messages are rejected; [`Error::Training`] for data or tensor problems.
///
/// # Privacy
/// Only masked vectors (or, with `plain`, the noised encoded sum) and encrypted key shares
/// leave the party; the clipped sum and its encoding are zeroized after use. The timing
/// report reveals how long local work took, which depends on the batch size.
pub async fn run_party(setup: PartySetup, connection: Connection) -> Result<PartyOutcome> {
    let PartySetup {
        id,
        config,
        plan,
        data,
        model,
        session,
        rng,
    } = setup;
    let core = PartyId(id.0.saturating_sub(1));
    let deadline = config.round_deadline(model.trainable_len(config.trainable()));
    // The aggregator waits at most 5 deadlines per round (4 protocol steps and timings),
    // plus its own step and evaluation.
    let wait_start = deadline * 6 + Duration::from_secs(60);
    let shared = Arc::new((model, data, plan, config));
    let mut rng = Some(rng);
    // The SecAgg client's keys and shares come from their own stream, so the key rounds can
    // run while the local update (which owns `rng`) is computed on a blocking thread.
    let mut key_rng = {
        let r = rng
            .as_mut()
            .ok_or_else(|| Error::Run("internal: randomness lost".into()))?;
        <ChaCha20Rng as rand_core::SeedableRng>::from_rng(r)
    };
    // The party's X25519 keys for the whole run (unless per-round keys are configured): one
    // key agreement per neighbour for the run instead of two per round.
    let run_keys = (!shared.3.per_round_keys).then(|| Arc::new(RunKeys::generate(&mut key_rng)));
    // SecAgg clients of later rounds whose key rounds already ran (see `key_batch`).
    let mut ahead: BTreeMap<u64, SecAggClient<u64>> = BTreeMap::new();
    // Their round-1 shares, received with the batch (messages arrive in order).
    let mut later_shares: BTreeMap<u64, ServerMessage> = BTreeMap::new();
    let mut round = 0u64;
    loop {
        let rs = round_session(session, round);
        let start: RoundStart = connection.recv(rs, START, wait_start).await?;
        if start.round != round {
            return Err(Error::Run(format!(
                "the aggregator started round {} while round {round} was expected",
                start.round
            )));
        }
        if start.done {
            shared.0.load_flat(&start.model)?;
            return Ok(PartyOutcome {
                id,
                rounds: round,
                model: start.model,
            });
        }
        let job = Arc::clone(&shared);
        let mut job_rng = rng
            .take()
            .ok_or_else(|| Error::Run("internal: randomness lost".into()))?;
        let compute_job = tokio::task::spawn_blocking(move || {
            local_update(&job, &start.model, &mut job_rng).map(|(e, c, m)| (e, c, m, job_rng))
        });
        let await_compute = |job: tokio::task::JoinHandle<_>| async move {
            job.await
                .map_err(|e| Error::Run(format!("local compute failed: {e}")))?
        };
        let config = &shared.3;
        let (compute, masking, job_rng) = if config.plain {
            let (mut encoded, compute, encode_s, job_rng) = await_compute(compute_job).await?;
            // Fixed-width words, as the masked vectors of secure mode.
            let mut update = RingVector(std::mem::take(&mut *encoded));
            let sent = connection.send(rs, PLAIN_UPDATE, &update).await;
            zeroize::Zeroize::zeroize(&mut update.0);
            sent?;
            (compute, encode_s, job_rng)
        } else {
            // The key rounds (advertise keys, share keys) of a batch of rounds and this round's
            // mask expansion run while the update is computed; the update is needed only to
            // finish the masked input.
            let wait = deadline * 2 + Duration::from_secs(5);
            let mut masking = 0.0;
            if let Some((first, end)) = start.key_rounds {
                if first != round || end <= first || end - first > config.key_batch {
                    return Err(Error::Run(format!(
                        "the aggregator asked for key rounds {first}..{end} in round {round}; expected {round}..{round} + at most key_batch = {}",
                        config.key_batch
                    )));
                }
                let dim = shared.2.encoder.dim();
                let batch = KeyBatch {
                    connection: &connection,
                    config,
                    run_session: session,
                    core,
                    dim,
                    run_keys: run_keys.as_ref(),
                    wait,
                };
                masking += batch.run(first..end, &mut key_rng, &mut ahead).await?;
            }
            let mut client = ahead.remove(&round).ok_or_else(|| {
                Error::Run(format!(
                    "the aggregator started round {round} without running its key rounds"
                ))
            })?;
            if let Some((first, end)) = start.key_rounds {
                // The batch's round-1 shares arrive in one message; keep the later rounds'.
                let bundle: Vec<ServerMessage> = connection
                    .recv(round_session(session, first), 1, wait)
                    .await?;
                let rounds: BTreeMap<SessionId, u64> = (first..end)
                    .map(|r| (round_session(session, r), r))
                    .collect();
                for message in bundle {
                    let r = rounds
                        .get(&message.header().session)
                        .ok_or_else(|| bundle_error("share"))?;
                    later_shares.insert(*r, message);
                }
            }
            let shares = later_shares.remove(&round).ok_or_else(|| {
                Error::Run(format!(
                    "the aggregator sent no round-1 shares for round {round}"
                ))
            })?;
            // The masks do not depend on the update: the client opens its round-1 shares and
            // expands its mask while the update is computed, and only adds the update to it.
            // It yields first, so that messages waiting for other endpoints on the same runtime
            // thread (the other parties' round starts, in `sotto train`) are not held up.
            tokio::task::yield_now().await;
            masking += respond(&connection, &mut client, rs, shares, &mut key_rng).await?;
            let (mut encoded, compute, encode_s, job_rng) = await_compute(compute_job).await?;
            let c0 = Instant::now();
            client.provide_input(std::mem::take(&mut *encoded))?;
            let masked = drain(&mut client);
            masking += encode_s + c0.elapsed().as_secs_f64();
            send_queued(&connection, rs, masked).await?;
            masking += exchange(&connection, &mut client, rs, 2, wait, &mut key_rng).await?;
            (compute, masking, job_rng)
        };
        connection
            .send(rs, TIMING, &PartyTiming { compute, masking })
            .await?;
        rng = Some(job_rng);
        round += 1;
    }
}

/// Loads the model, samples, clips and sums, encodes and adds the noise share. Returns the
/// ring vector, the compute time and the encoding time.
fn local_update(
    shared: &(Model, Dataset, PrivacyPlan, FederatedConfig),
    params: &[f32],
    rng: &mut ChaCha20Rng,
) -> Result<(Zeroizing<Vec<u64>>, f64, f64)> {
    let (model, data, plan, config) = shared;
    let c0 = Instant::now();
    model.load_flat(params)?;
    let idx = poisson_sample(rng, data.len(), config.sampling_rate);
    let batch = data.batch(&idx, model.device())?;
    let sum = model.clipped_gradient_sum(&batch, &config.clipping())?;
    let mut values: Zeroizing<Vec<f64>> =
        Zeroizing::new(sum.values.iter().map(|v| f64::from(*v)).collect());
    let mut raw = sum.values;
    zeroize::Zeroize::zeroize(&mut raw);
    let compute = c0.elapsed().as_secs_f64();
    let c1 = Instant::now();
    let mut ints = Zeroizing::new(plan.encoder.encode(&values, rng)?);
    zeroize::Zeroize::zeroize(&mut *values);
    let mut ring: Zeroizing<Vec<u64>> = Zeroizing::new(ints.iter().map(|v| *v as u64).collect());
    zeroize::Zeroize::zeroize(&mut *ints);
    plan.noise.add_share(&mut ring, rng);
    Ok((ring, compute, c1.elapsed().as_secs_f64()))
}

/// What a party needs to run the key rounds of a batch of rounds.
struct KeyBatch<'a> {
    connection: &'a Connection,
    config: &'a FederatedConfig,
    run_session: SessionId,
    core: PartyId,
    dim: usize,
    run_keys: Option<&'a Arc<RunKeys>>,
    wait: Duration,
}

impl KeyBatch<'_> {
    /// Rounds 0 and 1 (advertise keys, share keys) of the SecAgg sessions of `rounds`, with one
    /// message per step for the whole batch (under the first round's session id). The keyed
    /// clients go to `ahead`; returns the CPU time.
    async fn run(
        &self,
        rounds: std::ops::Range<u64>,
        key_rng: &mut ChaCha20Rng,
        ahead: &mut BTreeMap<u64, SecAggClient<u64>>,
    ) -> Result<f64> {
        let c0 = Instant::now();
        let bundle_session = round_session(self.run_session, rounds.start);
        // The key rounds' cryptography (X25519, Shamir shares, their encryption) runs on a
        // blocking thread: with many parties in one process it would otherwise hold the
        // runtime's threads for seconds and starve the QUIC drivers (idle timeouts). The
        // randomness is moved in and back, so the stream of draws is the same.
        let (config, run_session, core, dim) =
            (self.config.clone(), self.run_session, self.core, self.dim);
        let run_keys = self.run_keys.cloned();
        let rng = key_rng.clone();
        let (mut batch, bundle, rng) = blocking(move || {
            let mut rng = rng;
            let mut batch: BTreeMap<SessionId, (u64, SecAggClient<u64>)> = BTreeMap::new();
            let mut bundle = Vec::new();
            for r in rounds {
                let session_r = round_session(run_session, r);
                let secagg = config.secagg(session_r, dim)?;
                let mut client = SecAggClient::<u64>::new_deferred(secagg, core)?;
                if let Some(keys) = &run_keys {
                    client = client.with_run_keys(Arc::clone(keys))?;
                }
                client.start(&mut rng)?;
                bundle.extend(drain(&mut client));
                batch.insert(session_r, (r, client));
            }
            Ok((batch, bundle, rng))
        })
        .await?;
        *key_rng = rng;
        let mut cpu = c0.elapsed().as_secs_f64();
        self.connection.send(bundle_session, 0, &bundle).await?;
        let rosters: Vec<ServerMessage> =
            self.connection.recv(bundle_session, 0, self.wait).await?;
        let c1 = Instant::now();
        let rng = key_rng.clone();
        let (batch_back, bundle, rng) = blocking(move || {
            let mut rng = rng;
            let mut bundle = Vec::new();
            for message in rosters {
                let (_, client) = batch
                    .get_mut(&message.header().session)
                    .ok_or_else(|| bundle_error("roster"))?;
                client
                    .handle_message(message, &mut rng)
                    .map_err(|e| renumber(client.config().parties(), e))?;
                bundle.extend(drain(client));
            }
            Ok((batch, bundle, rng))
        })
        .await?;
        *key_rng = rng;
        let batch = batch_back;
        cpu += c1.elapsed().as_secs_f64();
        self.connection.send(bundle_session, 1, &bundle).await?;
        ahead.extend(batch.into_values());
        Ok(cpu)
    }
}

/// The error for a message of a key-round bundle that names a session outside the batch.
fn bundle_error(what: &str) -> Error {
    Error::Run(format!(
        "the aggregator sent a {what} message for a session outside the key-round batch"
    ))
}

/// Receives the aggregator's message of `step`, lets the client handle it and sends what it
/// queues. Returns the client's CPU time in seconds.
async fn exchange(
    connection: &Connection,
    client: &mut SecAggClient<u64>,
    session: SessionId,
    step: u64,
    wait: Duration,
    rng: &mut ChaCha20Rng,
) -> Result<f64> {
    let message: ServerMessage = connection.recv(session, step, wait).await?;
    respond(connection, client, session, message, rng).await
}

/// Lets the client handle the aggregator's `message` and sends what it queues. Returns the
/// client's CPU time in seconds.
async fn respond(
    connection: &Connection,
    client: &mut SecAggClient<u64>,
    session: SessionId,
    message: ServerMessage,
    rng: &mut ChaCha20Rng,
) -> Result<f64> {
    let c0 = Instant::now();
    client
        .handle_message(message, rng)
        .map_err(|e| renumber(client.config().parties(), e))?;
    let queued = drain(client);
    let cpu = c0.elapsed().as_secs_f64();
    send_queued(connection, session, queued).await?;
    Ok(cpu)
}

fn drain(client: &mut SecAggClient<u64>) -> Vec<sotto_mpc::secagg::ClientMessage<u64>> {
    let mut out = Vec::new();
    while let Some(m) = client.poll_transmit() {
        out.push(m);
    }
    out
}

async fn send_queued(
    connection: &Connection,
    session: SessionId,
    queued: Vec<sotto_mpc::secagg::ClientMessage<u64>>,
) -> Result<()> {
    for message in queued {
        let step = message.kind_round() as u64;
        connection.send(session, step, &message).await?;
    }
    Ok(())
}

/// A protocol-core error with its parties named as their certificates (`party-1` ..).
fn renumber(parties: usize, error: sotto_mpc::Error) -> sotto_mpc::Error {
    sotto_mpc::securesum::PartyNumbering::new(parties).renumber(error)
}

/// Runs CPU-heavy protocol work on tokio's blocking pool, at most one job per CPU at a time
/// in this process: hundreds of parties computing at once would otherwise crowd the runtime's
/// threads off the CPU, and their QUIC connections would miss keep-alives and time out.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    static SLOTS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Arc::new(tokio::sync::Semaphore::new(cpus))
    });
    let permit = Arc::clone(slots)
        .acquire_owned()
        .await
        .map_err(|e| Error::Run(format!("protocol work failed: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let out = work();
        drop(permit);
        out
    })
    .await
    .map_err(|e| Error::Run(format!("protocol work failed: {e}")))?
}
