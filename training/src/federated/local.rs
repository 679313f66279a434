//! A whole multi-party run in one process: an aggregator and `n` parties, each its own QUIC
//! endpoint on loopback with its own certificate from a fresh dev PKI, as tokio tasks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use candle_core::{DType, Device};
use sotto_mpc::transport::certs::generate_dev_pki;
use sotto_mpc::transport::{Client, Identity, Server, TlsConfig, TransportOptions};
use sotto_mpc::{PartyId, SessionId};

use super::aggregator::{AggregatorRun, AggregatorStart, AggregatorView, run_aggregator_from};
use super::party::{PartyOutcome, PartySetup, run_party};
use super::{Error, FederatedConfig, FederatedReport, Partition, Result, RoundMetrics};
use crate::audit::audit_model;
use crate::data::{Dataset, partition_iid, partition_label_skew};
use crate::model::{InputShape, Model};

/// Testing aid: abort a party's task (its endpoint and connection are dropped, as when the
/// process is killed) in the middle of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillAt {
    /// The party (transport id, `1..=n`).
    pub party: PartyId,
    /// 0-based round; the party is aborted once the aggregator has received its encrypted key
    /// shares (SecAgg step 1) and before they are forwarded, so it never sends its masked
    /// input and the survivors must recover its pairwise masks. In plain mode it is aborted
    /// after its update was collected (it drops out from the next round on).
    pub round: u64,
}

/// Options of a local run that are not part of the (serializable) settings.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Where the parties compute (`Device::Cpu`, or a CUDA device with the `cuda` feature).
    pub device: Device,
    /// Abort one party mid-round.
    pub kill: Option<KillAt>,
    /// Record every update vector the aggregator receives ([`LocalOutcome::view`]).
    pub record_view: bool,
    /// Checkpoints of the aggregator's state every `every` rounds into `dir` (a folder
    /// `round-NNNN` each), or a checkpoint folder to resume from (see [`crate::checkpoint`]).
    pub checkpoints: crate::checkpoint::CheckpointOptions,
    /// The parameters every party and the aggregator start from ([`Model::to_flat`] order of
    /// `config.model`), e.g. a pretrained encoder from [`crate::bert::load_pretrained`]; `None`
    /// starts from `config.model` initialised with `config.seed`.
    pub initial: Option<Vec<f32>>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            device: Device::Cpu,
            kill: None,
            record_view: false,
            checkpoints: crate::checkpoint::CheckpointOptions::default(),
            initial: None,
        }
    }
}

/// The result of [`run_local_with`].
#[derive(Debug, Clone)]
pub struct LocalOutcome {
    /// The report.
    pub report: FederatedReport,
    /// What the aggregator received, if recorded.
    pub view: Option<AggregatorView>,
    /// The final model's parameters.
    pub model: Vec<f32>,
    /// What each party that finished ended with.
    pub parties: Vec<PartyOutcome>,
}

/// The largest update (trainable parameters) for which [`runtime_for`] runs every endpoint on
/// one thread.
///
/// Measured with `sotto train --compare-plain` on the 2-core machine (2026-11-22): with the
/// default logistic model (650 parameters, 5 kB updates) rounds take 0.55-0.7 ms on one thread
/// and 0.8-1.0 ms on a two-worker runtime, because a small message costs mostly its hops
/// between threads (one exchange with 4 parties: 76 us against 126-143 us, `cargo run
/// --release -p sotto-mpc --example round_trip`); MLPs of 2,410 and 4,810 parameters take
/// the same time either way; with 19,210 parameters (150 kB updates) one thread is 4 times
/// slower (33 ms against 7.6 ms), because the encryption and packets of all five endpoints
/// then wait for it.
pub const SINGLE_THREAD_MAX_PARAMS: usize = 4096;

/// The tokio runtime [`run_local`] is fastest in for an update of `params` trainable
/// parameters: a current-thread runtime up to [`SINGLE_THREAD_MAX_PARAMS`] (the parties'
/// updates still compute on blocking threads), a multi-threaded one above.
///
/// # Errors
/// The I/O error if the runtime cannot be built.
pub fn runtime_for(params: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if params <= SINGLE_THREAD_MAX_PARAMS {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
}

/// [`runtime_for`] for a run of `parties` parties: above [`SINGLE_THREAD_MAX_PARTIES`] parties
/// always a multi-threaded runtime, whose threads keep the QUIC connections of many parties
/// served while others compute.
///
/// # Errors
/// The I/O error if the runtime cannot be built.
pub fn runtime_for_run(params: usize, parties: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if parties > SINGLE_THREAD_MAX_PARTIES {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        runtime_for(params)
    }
}

/// Most parties [`runtime_for_run`] runs on one thread.
pub const SINGLE_THREAD_MAX_PARTIES: usize = 32;

/// The number of trainable parameters (the length of each party's update) of the model
/// `config` trains on this data.
///
/// # Errors
/// [`Error::Training`] if the model cannot be built for the data.
pub fn update_len(config: &FederatedConfig, train: &Dataset, test: &Dataset) -> Result<usize> {
    let model = local_model(config, train, test, &Device::Cpu)?;
    Ok(model.trainable_len(config.trainable()))
}

/// The model every party and the aggregator start from.
fn local_model(
    config: &FederatedConfig,
    train: &Dataset,
    test: &Dataset,
    device: &Device,
) -> crate::Result<Model> {
    let classes = train.num_classes().max(test.num_classes()).max(2);
    Model::new(
        &config.model,
        InputShape::of(train),
        classes,
        DType::F32,
        device,
        config.seed,
    )
}

/// Trains with `config.parties` parties holding a partition of `train` and an aggregator
/// evaluating on `test`, all in this process over QUIC on loopback. Runs in any tokio runtime
/// with I/O and time enabled; [`runtime_for`] builds the fastest one for the model's size.
///
/// ```rust
/// use sotto_training::federated::{run_local, FederatedConfig};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), sotto_training::federated::Error> {
/// let (train, test) = sotto_training::data::digits_split(4)?;
/// let config = FederatedConfig { rounds: 3, audit: false, ..FederatedConfig::default() };
/// let report = run_local(&config, &train, &test, |m| println!("round {} acc {:.3}", m.round, m.accuracy)).await?;
/// assert_eq!(report.metrics.len(), 3);
/// assert!(report.epsilon < 2.0);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// As [`run_local_with`].
///
/// # Privacy
/// As [`super::aggregator::run_aggregator`]; see the module documentation.
pub async fn run_local(
    config: &FederatedConfig,
    train: &Dataset,
    test: &Dataset,
    mut on_round: impl FnMut(&RoundMetrics) + Send,
) -> Result<FederatedReport> {
    Ok(
        run_local_with(config, train, test, LocalOptions::default(), &mut on_round)
            .await?
            .report,
    )
}

/// [`run_local`] with options (device, initial parameters such as a pretrained encoder, a
/// party killed mid-round, recording the aggregator's view).
///
/// # Errors
/// [`Error::Training`] for bad settings (naming the field) or data; [`Error::Transport`] if
/// the endpoints cannot be set up; [`Error::Protocol`] if fewer than `threshold` parties
/// remain.
pub async fn run_local_with(
    config: &FederatedConfig,
    train: &Dataset,
    test: &Dataset,
    options: LocalOptions,
    on_round: &mut (dyn FnMut(&RoundMetrics) + Send),
) -> Result<LocalOutcome> {
    if train.is_empty() || test.is_empty() {
        return Err(crate::Error::Data("training and test data must not be empty".into()).into());
    }
    config.validate(train.len())?;
    let n = config.parties;
    let parts = match config.partition {
        Partition::Iid => partition_iid(train, n, config.seed)?,
        Partition::LabelSkew { shards_per_party } => {
            partition_label_skew(train, n, shards_per_party, config.seed)?
        }
    };
    let n_total: usize = parts.iter().map(Dataset::len).sum();
    let max_party = parts.iter().map(Dataset::len).max().unwrap_or(0);
    // Every party and the aggregator start from the same parameters: the seeded
    // initialisation, or the given ones (a pretrained encoder).
    let new_model = || -> crate::Result<Model> {
        let model = local_model(config, train, test, &options.device)?;
        if let Some(initial) = &options.initial {
            if initial.len() != model.num_params() {
                return Err(crate::Error::invalid(
                    "initial",
                    initial.len(),
                    format!(
                        "expected the {} parameters of config.model (the initial parameters \
                         must come from a model of the same specification)",
                        model.num_params()
                    ),
                ));
            }
            model.load_flat(initial)?;
        }
        Ok(model)
    };
    let model = new_model()?;
    model.check_data(test)?;
    let dim = model.trainable_len(config.trainable());
    let plan = config.plan(n_total, max_party, dim, model.rows_per_sample())?;
    let ck = &options.checkpoints;
    if ck.every == Some(0) || ck.every.is_some() != ck.dir.is_some() {
        return Err(crate::Error::invalid(
            "checkpoint_every",
            format!("{:?}", ck.every),
            "must be at least 1, with a checkpoint folder",
        )
        .into());
    }
    let (start, earlier) = match &ck.resume {
        Some(dir) => {
            let (state, optimizer) =
                crate::checkpoint::load_federated(dir, config, &model, &options.device)?;
            (
                AggregatorStart {
                    rounds_done: state.rounds_done,
                    optimizer: Some(optimizer),
                },
                state.metrics,
            )
        }
        None => (AggregatorStart::default(), Vec::new()),
    };
    let mut rng = if config.reproducible {
        sotto_dp::rng::seeded_rng(config.seed ^ 0xfed0_5eed)
    } else {
        sotto_dp::rng::os_rng().map_err(crate::Error::from)?
    };
    let session = SessionId::random(&mut rng);

    let pki = PkiDir::new(n)?;
    let parties: Vec<Identity> = (1..=n as u32).map(Identity::party).collect();
    // Every party of a local run dials from 127.0.0.1: the per-address handshake limit (a
    // flood protection) would only make them queue.
    // The idle timeout is at least a step deadline: an overloaded machine running many parties
    // may not answer keep-alives for a while.
    let defaults = TransportOptions::default();
    let options_t = TransportOptions {
        max_pending_per_address: n.max(sotto_mpc::transport::endpoint::MAX_PENDING_PER_ADDRESS),
        idle_timeout: defaults.idle_timeout.max(config.round_deadline(dim)),
        ..defaults
    };
    let tls = TlsConfig::from_dir(&pki.0, Identity::Aggregator, parties.iter().copied())?;
    let server = Server::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &tls,
        options_t.clone(),
    )?;
    let addr = server.local_addr();

    // Handshakes are serial work at the aggregator: 30 s plus 20 ms per party.
    let join = sotto_mpc::securesum::Deadlines::for_size(n, 1).join;
    let mut tasks = BTreeMap::new();
    for (i, data) in parts.into_iter().enumerate() {
        let id = PartyId(i as u32 + 1);
        let tls = TlsConfig::from_dir(&pki.0, Identity::Party(id), [Identity::Aggregator])?;
        let setup = PartySetup {
            id,
            config: config.clone(),
            plan: plan.clone(),
            data,
            model: new_model()?,
            session,
            rng: if config.reproducible {
                sotto_dp::rng::seeded_rng(
                    config.seed.wrapping_mul(31).wrapping_add(u64::from(id.0)),
                )
            } else {
                sotto_dp::rng::os_rng().map_err(crate::Error::from)?
            },
        };
        let topts = options_t.clone();
        let handle = tokio::spawn(async move {
            let client = Client::bind(SocketAddr::from(([127, 0, 0, 1], 0)), &tls, topts)?;
            let result = match client
                .connect_with_retry(addr, Identity::Aggregator, join)
                .await
            {
                Ok(connection) => run_party(setup, connection).await,
                Err(e) => Err(Error::from(e)),
            };
            client.shutdown().await;
            result
        });
        tasks.insert(id, handle);
    }
    let accepted = server.accept_peers(parties.iter().copied(), join).await;
    for refused in &accepted.refused {
        tracing::warn!(error = %refused, "federated: refused a connection");
    }
    let aborts: BTreeMap<PartyId, tokio::task::AbortHandle> = tasks
        .iter()
        .map(|(id, h)| (*id, h.abort_handle()))
        .collect();
    let kill = options.kill;
    let kill_step = if config.plain { super::PLAIN_UPDATE } else { 1 };
    let mut after_step = move |round: u64, step: u64| {
        if let Some(k) = kill
            && k.round == round
            && step == kill_step
            && let Some(h) = aborts.get(&k.party)
        {
            tracing::warn!(party = %k.party, round, "federated: killing a party (testing aid)");
            h.abort();
        }
    };
    let mut view = options.record_view.then(AggregatorView::default);
    let so_far = std::sync::Mutex::new(earlier.clone());
    let mut record = |m: &RoundMetrics| {
        if let Ok(mut v) = so_far.lock() {
            v.push(m.clone());
        }
        on_round(m);
    };
    let every = ck.every.map(|e| e as u64);
    let ck_dir = ck.dir.clone();
    let mut after_round = |done: u64, model: &Model, opt: &crate::optim::Optimizer| {
        let (Some(every), Some(dir)) = (every, &ck_dir) else {
            return Ok(());
        };
        if !done.is_multiple_of(every) && done != config.rounds {
            return Ok(());
        }
        let state = crate::checkpoint::FederatedCheckpoint {
            format: "sotto-federated-checkpoint".into(),
            version: 1,
            config: config.clone(),
            rounds_done: done,
            epsilon: plan.epsilon_after(done)?,
            metrics: so_far.lock().map(|v| v.clone()).unwrap_or_default(),
        };
        crate::checkpoint::save_federated(
            &crate::checkpoint::round_folder(dir, done),
            &state,
            model,
            opt,
        )
    };
    let outcome = run_aggregator_from(
        AggregatorRun {
            config,
            plan: &plan,
            model: &model,
            test,
            n_total,
            session,
        },
        start,
        &mut after_round,
        accepted.connections,
        &mut after_step,
        view.as_mut(),
        &mut record,
    )
    .await;
    let mut finished = Vec::new();
    for (id, handle) in tasks {
        match handle.await {
            Ok(Ok(p)) => finished.push(p),
            Ok(Err(error)) => tracing::info!(party = %id, %error, "federated: party ended early"),
            Err(error) => tracing::info!(party = %id, %error, "federated: party task ended"),
        }
    }
    server.shutdown().await;
    drop(pki);
    let mut outcome = outcome?;
    if !earlier.is_empty() {
        let mut all = earlier;
        all.append(&mut outcome.metrics);
        outcome.metrics = all;
    }
    let test_losses = model.losses(test)?;
    let last = outcome.metrics.last();
    let report = FederatedReport {
        mode: if config.plain { "plain" } else { "secure" }.to_owned(),
        accuracy: model.accuracy(test)?,
        test_loss: test_losses.iter().sum::<f64>() / test_losses.len().max(1) as f64,
        epsilon: last.map_or(0.0, |m| m.epsilon),
        delta: config.delta,
        noise_multiplier: plan.accounted_sigma,
        colluders: plan.colluders,
        honest_shares: plan.honest_shares,
        guarantee: plan.guarantee(config.plain),
        sampling_rate: config.sampling_rate,
        rounds: outcome.metrics.len() as u64,
        parties: n,
        threshold: plan.threshold,
        records: n_total,
        dim,
        accountant: config.accountant,
        sensitivity_ring: plan.sensitivity_ring,
        scale: config.scale,
        dropped: outcome.dropped,
        stopped: outcome.stopped,
        metrics: outcome.metrics,
        audit: if config.audit {
            Some(audit_model(&model, train, test)?)
        } else {
            None
        },
    };
    Ok(LocalOutcome {
        report,
        view,
        model: model.to_flat()?,
        parties: finished,
    })
}

/// A fresh dev PKI in a temporary directory, removed on drop.
struct PkiDir(PathBuf);

impl PkiDir {
    fn new(parties: usize) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("sotto-train-{}-{nanos}", std::process::id()));
        generate_dev_pki(&dir, parties, &[])?;
        Ok(PkiDir(dir))
    }
}

impl Drop for PkiDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_models_get_one_thread_and_large_ones_a_pool() {
        use tokio::runtime::RuntimeFlavor;
        let (train, test) = crate::data::digits_split(4).unwrap();
        let logistic = FederatedConfig::default();
        let params = update_len(&logistic, &train, &test).unwrap();
        assert_eq!(params, 64 * 10 + 10);
        let flavor = |p| runtime_for(p).unwrap().handle().runtime_flavor();
        assert_eq!(flavor(params), RuntimeFlavor::CurrentThread);
        assert_eq!(
            flavor(SINGLE_THREAD_MAX_PARAMS),
            RuntimeFlavor::CurrentThread
        );
        assert_eq!(
            flavor(SINGLE_THREAD_MAX_PARAMS + 1),
            RuntimeFlavor::MultiThread
        );
    }
}
