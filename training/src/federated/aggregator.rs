//! The aggregator's round driver over already-open QUIC connections: one SecAgg session per
//! training round ([`sotto_mpc::secagg::SecAggAggregator`], sans-IO), model broadcast, the
//! optimizer step, accounting and per-round metrics.
//!
//! `sotto_mpc::securesum` runs one secure sum per connection set-up; training needs one per
//! round over connections that stay open, so this module drives the sans-IO aggregator role
//! itself with the transport primitives ([`collect`], [`send_all`]), as the securesum driver
//! does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sotto_mpc::PartyId;
use sotto_mpc::SessionId;
use sotto_mpc::ring::RingVector;
use sotto_mpc::secagg::{ClientMessage, SecAggAggregator, ServerMessage};
use sotto_mpc::securesum::PartyNumbering;
use sotto_mpc::transport::{Collected, Connection, Identity, collect, send_all, send_each};
use tokio::task::JoinSet;

use super::{
    Error, FederatedConfig, PLAIN_UPDATE, PartyTiming, PrivacyPlan, Result, RoundMetrics,
    RoundStart, RoundTiming, START, TIMING, round_session,
};
use crate::data::Dataset;
use crate::model::Model;
use crate::optim::Optimizer;

/// What the aggregator received from the parties, recorded for tests and audits of the
/// protocol (`record_view`): every update vector as it arrived.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AggregatorView {
    /// One entry per update received.
    pub updates: Vec<ViewedUpdate>,
    /// The released (noised) sums, ring units, one per round.
    pub sums: Vec<Vec<u64>>,
}

/// One update vector as the aggregator received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewedUpdate {
    /// 0-based round.
    pub round: u64,
    /// Sender (transport id).
    pub party: PartyId,
    /// The vector: masked in secure mode, the noised encoded sum in plain mode.
    pub values: Vec<u64>,
}

/// The fixed inputs of an aggregator run.
#[derive(Debug)]
pub struct AggregatorRun<'a> {
    /// Settings (the same at every party).
    pub config: &'a FederatedConfig,
    /// The privacy calibration (the same at every party).
    pub plan: &'a PrivacyPlan,
    /// The model, updated in place.
    pub model: &'a Model,
    /// Held-out data for the per-round metrics.
    pub test: &'a Dataset,
    /// Records of all parties (the update divides by `q * n_total`).
    pub n_total: usize,
    /// The run's session id.
    pub session: SessionId,
}

/// What an aggregator run produced.
#[derive(Debug, Clone)]
pub struct AggregatorOutcome {
    /// Per-round metrics.
    pub metrics: Vec<RoundMetrics>,
    /// Parties dropped during the run.
    pub dropped: Vec<PartyId>,
    /// Why the run stopped early.
    pub stopped: Option<String>,
}

/// Runs all rounds over `connections` (one per party, authenticated), then sends the final
/// model to the parties still connected. `after_step(round, step)` is called in each round
/// once the messages of each protocol step (0..=3 secure, 2 plain) are collected, before the
/// aggregator answers them; for key rounds (steps 0 and 1) run ahead in an earlier round's
/// batch (`key_batch`), it is called for both just before the round's start message is sent.
/// `on_round` is called after each round.
///
/// # Errors
/// [`Error::Protocol`] when fewer than `threshold` parties remain (the round's noise would be
/// short of the target) or the aggregation fails; [`Error::Training`] for the optimizer,
/// evaluation or the accountant.
///
/// # Privacy
/// Epsilon after round `r` is `dp_sgd_epsilon(q, sigma, r, delta)`, charged when the round
/// starts. The per-round loss and accuracy read the test data without noise (for the data
/// owner, not for release).
pub async fn run_aggregator(
    run: AggregatorRun<'_>,
    connections: BTreeMap<Identity, Connection>,
    after_step: &mut (dyn FnMut(u64, u64) + Send),
    view: Option<&mut AggregatorView>,
    on_round: &mut (dyn FnMut(&RoundMetrics) + Send),
) -> Result<AggregatorOutcome> {
    run_aggregator_from(
        run,
        AggregatorStart::default(),
        &mut |_, _, _| Ok(()),
        connections,
        after_step,
        view,
        on_round,
    )
    .await
}

/// Where a resumed run continues (see [`run_aggregator_from`]).
#[derive(Debug, Default)]
pub struct AggregatorStart {
    /// Rounds the run already took (the model passed in is the model after them).
    pub rounds_done: u64,
    /// The optimizer's steps and moments after them (`None`: a fresh optimizer).
    pub optimizer: Option<(u64, Vec<candle_core::Tensor>, Vec<candle_core::Tensor>)>,
}

/// [`run_aggregator`] continuing a run after `start.rounds_done` rounds (a fresh SecAgg
/// session; the parties only need the model, which every round start carries), calling
/// `after_round(rounds_done, model, optimizer)` after every round (e.g. to write a
/// checkpoint). Round numbers in the metrics and the accounting count the earlier rounds, so
/// epsilon after `r` rounds is the unbroken run's.
///
/// # Errors
/// As [`run_aggregator`], and whatever `after_round` returns.
///
/// # Privacy
/// As [`run_aggregator`], counting the rounds before the resume.
#[allow(clippy::too_many_arguments)]
pub async fn run_aggregator_from(
    run: AggregatorRun<'_>,
    start: AggregatorStart,
    after_round: &mut (dyn FnMut(u64, &Model, &Optimizer) -> crate::Result<()> + Send),
    connections: BTreeMap<Identity, Connection>,
    after_step: &mut (dyn FnMut(u64, u64) + Send),
    mut view: Option<&mut AggregatorView>,
    on_round: &mut (dyn FnMut(&RoundMetrics) + Send),
) -> Result<AggregatorOutcome> {
    let AggregatorRun {
        config,
        plan,
        model,
        test,
        n_total,
        session,
    } = run;
    let all = connections.clone();
    let mut active = connections;
    let mut dropped: BTreeSet<PartyId> = BTreeSet::new();
    for id in 1..=config.parties as u32 {
        if !active.contains_key(&Identity::party(id)) {
            dropped.insert(PartyId(id));
        }
    }
    let trainable = config.trainable();
    let mut opt = Optimizer::new(config.optimizer, config.learning_rate, trainable, model)?;
    if let Some((steps, m, v)) = start.optimizer {
        opt.restore(steps, m, v)?;
    }
    let offset = start.rounds_done;
    let dim = model.trainable_len(trainable);
    let denominator = config.sampling_rate * n_total as f64;
    let deadline = config.round_deadline(dim);
    let mut metrics = Vec::with_capacity(config.rounds as usize);
    let mut stopped = None;
    let mut round = 0u64;
    // SecAgg sessions of later rounds whose key rounds already ran (see `key_batch`).
    let mut ahead: BTreeMap<u64, Keyed> = BTreeMap::new();
    while offset + round < config.rounds {
        let epsilon = plan.epsilon_after(offset + round + 1)?;
        if let (Some(target), Some(_)) = (config.target_epsilon, config.noise_multiplier)
            && epsilon > target
        {
            stopped = Some(format!(
                "target epsilon {target} reached: round {} would spend {epsilon:.4}",
                offset + round + 1
            ));
            break;
        }
        let t_round = Instant::now();
        let bytes_before = total_bytes(&all);
        let rs = round_session(session, round);
        // This round's key rounds ran in an earlier batch, or run now for a new batch.
        let key_rounds = (!config.plain && !ahead.contains_key(&round)).then(|| {
            (
                round,
                round
                    .saturating_add(config.key_batch.max(1))
                    .min(config.rounds),
            )
        });
        if ahead.contains_key(&round) {
            // The hooks of key rounds run ahead fire when their round starts.
            after_step(round, 0);
            after_step(round, 1);
        }
        let start = RoundStart {
            round,
            key_rounds,
            model: model.to_flat()?,
            done: false,
            parties: active.keys().filter_map(|i| i.party_id()).collect(),
        };
        for (peer, error) in send_all(&active, rs, START, &start).await? {
            tracing::warn!(party = %peer, %error, "federated: round start not delivered; dropped");
            drop_party(&mut active, &mut dropped, peer);
        }
        let t_agg = Instant::now();
        let (sum, survivors, unmasking) = if config.plain {
            plain_round(
                config, plan, &active, rs, round, deadline, &mut view, after_step,
            )
            .await?
        } else {
            let mut key_cpu = 0.0;
            if let Some((first, end)) = key_rounds {
                key_cpu = run_key_rounds(
                    config,
                    dim,
                    &active,
                    session,
                    first..end,
                    deadline,
                    after_step,
                    &mut ahead,
                )
                .await?;
            }
            let keyed = ahead.remove(&round).ok_or_else(|| {
                Error::Run(format!("round {}: no SecAgg session was keyed", round + 1))
            })?;
            let (sum, survivors, cpu) =
                secure_round(keyed, &active, rs, round, deadline, &mut view, after_step).await?;
            (sum, survivors, cpu + key_cpu)
        };
        let survivor_ids: BTreeSet<Identity> =
            survivors.iter().map(|p| Identity::Party(*p)).collect();
        let timings = collect::<PartyTiming>(
            &active,
            survivor_ids.iter().copied(),
            rs,
            TIMING,
            tokio::time::Instant::now() + deadline,
        )
        .await;
        let agg_wall = t_agg.elapsed().as_secs_f64();
        for peer in active.keys().copied().collect::<Vec<_>>() {
            if !survivor_ids.contains(&peer) {
                tracing::warn!(party = %peer, round, "federated: party not in the sum; dropped");
                drop_party(&mut active, &mut dropped, peer);
            }
        }
        let local_compute = timings
            .messages
            .values()
            .map(|t| t.compute)
            .fold(0.0, f64::max);
        let masking = timings
            .messages
            .values()
            .map(|t| t.masking)
            .fold(0.0, f64::max);

        let t_step = Instant::now();
        let decoded: Vec<f32> = plan
            .encoder
            .decode_sum(&sum)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        if let Some(v) = view.as_deref_mut() {
            v.sums.push(sum);
        }
        opt.apply_sum(model, &decoded, denominator)?;
        let step = t_step.elapsed().as_secs_f64();
        let t_eval = Instant::now();
        let losses = model.losses(test)?;
        let loss = losses.iter().sum::<f64>() / losses.len().max(1) as f64;
        let accuracy = model.accuracy(test)?;
        let eval = t_eval.elapsed().as_secs_f64();
        let m = RoundMetrics {
            round: offset + round + 1,
            loss,
            accuracy,
            epsilon,
            survivors,
            bytes: total_bytes(&all).saturating_sub(bytes_before),
            seconds: t_round.elapsed().as_secs_f64(),
            timing: RoundTiming {
                local_compute,
                masking,
                unmasking,
                network: (agg_wall - local_compute - masking - unmasking).max(0.0),
                step,
                eval,
            },
        };
        on_round(&m);
        metrics.push(m);
        round += 1;
        after_round(offset + round, model, &opt)?;
    }
    let done = RoundStart {
        round,
        key_rounds: None,
        model: model.to_flat()?,
        done: true,
        parties: active.keys().filter_map(|i| i.party_id()).collect(),
    };
    if let Ok(failures) = send_all(&active, round_session(session, round), START, &done).await {
        for (peer, error) in failures {
            tracing::info!(party = %peer, %error, "federated: final model not delivered");
        }
    }
    let mut closing = JoinSet::new();
    for connection in active.into_values() {
        closing.spawn(async move { connection.close_gracefully(Duration::from_secs(2)).await });
    }
    while closing.join_next().await.is_some() {}
    Ok(AggregatorOutcome {
        metrics,
        dropped: dropped.into_iter().collect(),
        stopped,
    })
}

fn drop_party(
    active: &mut BTreeMap<Identity, Connection>,
    dropped: &mut BTreeSet<PartyId>,
    peer: Identity,
) {
    if let Some(c) = active.remove(&peer) {
        c.close_dropped(&format!(
            "{peer} was dropped from the training run (silent past a deadline, a rejected \
             message, or not in the round's sum)"
        ));
    }
    if let Some(p) = peer.party_id() {
        dropped.insert(p);
    }
}

fn total_bytes(connections: &BTreeMap<Identity, Connection>) -> u64 {
    connections
        .values()
        .map(|c| {
            let s = c.quic().stats();
            s.udp_tx.bytes + s.udp_rx.bytes
        })
        .sum()
}

fn core_of(identity: Identity, parties: usize) -> Option<PartyId> {
    let p = identity.party_id()?;
    (p.0 >= 1 && p.0 as usize <= parties).then(|| PartyId(p.0 - 1))
}

/// Collects the message of protocol step `step` of `session` (training round `round`) from
/// each of `expected` within `deadline`, logging the parties whose `what` failed or did not
/// come (the callers leave them out, and the round drops them).
async fn collect_step<T: serde::de::DeserializeOwned + Send + 'static>(
    active: &BTreeMap<Identity, Connection>,
    expected: impl IntoIterator<Item = Identity>,
    (session, round, step): (SessionId, u64, u64),
    deadline: Duration,
    what: &str,
) -> Collected<T> {
    let got = collect::<T>(
        active,
        expected,
        session,
        step,
        tokio::time::Instant::now() + deadline,
    )
    .await;
    for (party, error) in &got.failed {
        tracing::warn!(party = %party, round, step, %error, "federated: {what} rejected or connection lost; dropped");
    }
    for party in &got.silent {
        tracing::warn!(party = %party, round, step, "federated: no {what} by the deadline; dropped");
    }
    got
}

/// A round's SecAgg session after its key rounds: the aggregator, and the parties it sent
/// their round-1 shares to (those it expects a masked input from).
struct Keyed {
    agg: SecAggAggregator<u64>,
    expected: BTreeSet<Identity>,
}

/// Closes the aggregator's current round if handling the collected messages did not
/// (`before` is the round it was in), and takes the messages it queued, addressed by
/// transport identity.
fn close_and_take(
    agg: &mut SecAggAggregator<u64>,
    before: Option<sotto_mpc::secagg::Round>,
) -> Vec<(Identity, ServerMessage)> {
    if before.is_some() && agg.round() == before {
        agg.close_round(Instant::now());
    }
    let mut outgoing = Vec::new();
    while let Some((to, message)) = agg.poll_transmit() {
        outgoing.push((Identity::Party(PartyId(to.0 + 1)), message));
    }
    outgoing
}

/// One protocol step of `agg`: collects the parties' messages of `step` from `expected`,
/// hands them to the aggregator (recording masked inputs in `view`), calls
/// `after_step(round, step)`, sends the aggregator's answers, and returns the parties they
/// reached and the aggregator's CPU time.
#[allow(clippy::too_many_arguments)]
async fn protocol_step(
    agg: &mut SecAggAggregator<u64>,
    active: &BTreeMap<Identity, Connection>,
    expected: &BTreeSet<Identity>,
    session: SessionId,
    round: u64,
    step: u64,
    deadline: Duration,
    view: &mut Option<&mut AggregatorView>,
    after_step: &mut (dyn FnMut(u64, u64) + Send),
) -> (BTreeSet<Identity>, Duration) {
    let n = agg.config().parties();
    let Some(core_round) = agg.round() else {
        return (expected.clone(), Duration::ZERO);
    };
    let got = collect_step::<ClientMessage<u64>>(
        active,
        expected.iter().copied(),
        (session, round, step),
        deadline,
        "message",
    )
    .await;
    let c0 = Instant::now();
    for (identity, message) in got.messages {
        let Some(core) = core_of(identity, n) else {
            continue;
        };
        if let (Some(v), ClientMessage::MaskedInput { masked, .. }) =
            (view.as_deref_mut(), &message)
        {
            v.updates.push(ViewedUpdate {
                round,
                party: PartyId(core.0 + 1),
                values: masked.0.clone(),
            });
        }
        if let Err(error) = agg.handle_message(Instant::now(), core, message) {
            let error = PartyNumbering::new(agg.config().parties()).renumber(error);
            tracing::warn!(%error, round, step, "federated: message rejected");
        }
    }
    let outgoing = close_and_take(agg, Some(core_round));
    let cpu = c0.elapsed();
    after_step(round, step);
    let reached = send_each(active, session, step, outgoing, "federated").await;
    (reached, cpu)
}

/// The key rounds (advertise keys, share keys) of the SecAgg sessions of `rounds`, in one
/// batch: each party sends one message per step holding its messages of every session of the
/// batch, and gets one answer holding the aggregator's (all under the first round's session
/// id). The keyed sessions go to `ahead`; returns the aggregator's CPU time. `after_step`
/// fires here only for the first round (the current one); the others' fire when their round
/// starts.
#[allow(clippy::too_many_arguments)]
async fn run_key_rounds(
    config: &FederatedConfig,
    dim: usize,
    active: &BTreeMap<Identity, Connection>,
    run_session: SessionId,
    rounds: std::ops::Range<u64>,
    deadline: Duration,
    after_step: &mut (dyn FnMut(u64, u64) + Send),
    ahead: &mut BTreeMap<u64, Keyed>,
) -> Result<f64> {
    let current = rounds.start;
    let bundle_session = round_session(run_session, current);
    let mut batch: BTreeMap<SessionId, (u64, SecAggAggregator<u64>)> = BTreeMap::new();
    for round in rounds {
        let session = round_session(run_session, round);
        let mut agg = SecAggAggregator::<u64>::new(config.secagg(session, dim)?, deadline);
        agg.start(Instant::now())?;
        batch.insert(session, (round, agg));
    }
    let n = config.parties;
    let mut expected: BTreeSet<Identity> = active.keys().copied().collect();
    let mut cpu = Duration::ZERO;
    for step in 0u64..=1 {
        let got = collect_step::<Vec<ClientMessage<u64>>>(
            active,
            expected.iter().copied(),
            (bundle_session, current, step),
            deadline,
            "key-round bundle",
        )
        .await;
        let c0 = Instant::now();
        let open: Vec<(SessionId, Option<sotto_mpc::secagg::Round>)> = batch
            .iter()
            .map(|(s, (_, agg))| (*s, agg.round()))
            .collect();
        for (identity, bundle) in got.messages {
            let Some(core) = core_of(identity, n) else {
                continue;
            };
            if bundle.len() > batch.len() {
                tracing::warn!(party = %identity, len = bundle.len(), "federated: key-round bundle longer than the batch; ignored");
                continue;
            }
            for message in bundle {
                let session = message.header().session;
                let Some((round, agg)) = batch.get_mut(&session) else {
                    tracing::warn!(party = %identity, "federated: key-round message for a session outside the batch; ignored");
                    continue;
                };
                if let Err(error) = agg.handle_message(Instant::now(), core, message) {
                    let error = PartyNumbering::new(agg.config().parties()).renumber(error);
                    tracing::warn!(%error, round = *round, step, "federated: message rejected");
                }
            }
        }
        let mut outgoing: BTreeMap<Identity, Vec<ServerMessage>> = BTreeMap::new();
        for (session, before) in open {
            let Some((_, agg)) = batch.get_mut(&session) else {
                continue;
            };
            for (to, message) in close_and_take(agg, before) {
                outgoing.entry(to).or_default().push(message);
            }
        }
        cpu += c0.elapsed();
        after_step(current, step);
        expected = send_each(
            active,
            bundle_session,
            step,
            outgoing.into_iter().collect(),
            "federated",
        )
        .await;
    }
    for (round, agg) in batch.into_values() {
        ahead.insert(
            round,
            Keyed {
                agg,
                expected: expected.clone(),
            },
        );
    }
    Ok(cpu.as_secs_f64())
}

/// The rest of a keyed SecAgg session (masked inputs, unmasking): returns the noised sum
/// (ring), the survivors (transport ids) and the aggregator's protocol CPU time. Parties that
/// left the run since the key rounds are not waited for.
async fn secure_round(
    keyed: Keyed,
    active: &BTreeMap<Identity, Connection>,
    session: SessionId,
    round: u64,
    deadline: Duration,
    view: &mut Option<&mut AggregatorView>,
    after_step: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<(Vec<u64>, Vec<PartyId>, f64)> {
    let Keyed { mut agg, expected } = keyed;
    let mut expected: BTreeSet<Identity> = expected
        .into_iter()
        .filter(|p| active.contains_key(p))
        .collect();
    let mut cpu = Duration::ZERO;
    for step in 2u64..=3 {
        let (reached, c) = protocol_step(
            &mut agg, active, &expected, session, round, step, deadline, view, after_step,
        )
        .await;
        expected = reached;
        cpu += c;
    }
    let c0 = Instant::now();
    let output = match agg.take_result() {
        Some(Ok(output)) => output,
        Some(Err(error)) => {
            return Err(Error::Protocol(
                PartyNumbering::new(agg.config().parties()).renumber(error),
            ));
        }
        None => {
            return Err(Error::Run(format!(
                "round {}: the aggregation did not finish",
                round + 1
            )));
        }
    };
    let survivors = output
        .survivors()
        .iter()
        .map(|p| PartyId(p.0 + 1))
        .collect();
    let sum = output.sum().to_vec();
    cpu += c0.elapsed();
    Ok((sum, survivors, cpu.as_secs_f64()))
}

/// The plain baseline: each party's noised encoded sum arrives unmasked and is added up.
#[allow(clippy::too_many_arguments)]
async fn plain_round(
    config: &FederatedConfig,
    plan: &PrivacyPlan,
    active: &BTreeMap<Identity, Connection>,
    session: SessionId,
    round: u64,
    deadline: Duration,
    view: &mut Option<&mut AggregatorView>,
    after_step: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<(Vec<u64>, Vec<PartyId>, f64)> {
    // Fixed-width words, as the masked vectors of secure mode (a like-for-like baseline).
    let got = collect_step::<RingVector<u64>>(
        active,
        active.keys().copied(),
        (session, round, PLAIN_UPDATE),
        deadline,
        "plain update",
    )
    .await;
    after_step(round, PLAIN_UPDATE);
    let c0 = Instant::now();
    let dim = plan.encoder.dim();
    let mut sum = vec![0u64; dim];
    let mut survivors = Vec::new();
    for (identity, RingVector(values)) in got.messages {
        let Some(party) = identity.party_id() else {
            continue;
        };
        if values.len() != dim {
            tracing::warn!(%party, len = values.len(), "federated: update of the wrong length; dropped");
            continue;
        }
        sotto_mpc::ring::add_assign(&mut sum, &values);
        if let Some(v) = view.as_deref_mut() {
            v.updates.push(ViewedUpdate {
                round,
                party,
                values,
            });
        }
        survivors.push(party);
    }
    if survivors.len() < config.threshold() {
        return Err(Error::Protocol(sotto_mpc::Error::invalid(
            "survivors",
            survivors.len(),
            format!(
                "round {}: fewer than threshold = {} updates; the noise would fall short of the target",
                round + 1,
                config.threshold()
            ),
        )));
    }
    Ok((sum, survivors, c0.elapsed().as_secs_f64()))
}
