//! `sotto train aggregator|party --config deploy.toml`: the same multi-party training with each
//! role started separately (on different hosts), authenticated by the deployment's certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use candle_core::{DType, Device};
use clap::{Args, Subcommand};
use serde::Deserialize;
use sotto_mpc::transport::{Client, Identity, Server, TlsConfig, TransportOptions};
use sotto_mpc::{PartyId, SessionId};
use sotto_training::data::{self, CsvOptions, Dataset, Inputs, LabelColumn};
use sotto_training::federated::aggregator::{AggregatorRun, run_aggregator};
use sotto_training::federated::party::{PartySetup, run_party};
use sotto_training::federated::{FederatedConfig, RoundMetrics};
use sotto_training::model::{InputShape, Model};

use super::{Output, UsageError};

/// The roles of a deployment.
#[derive(Debug, Subcommand)]
pub enum Role {
    /// Run the aggregator: wait for the parties, run every round, print the report.
    Aggregator(AggregatorArgs),
    /// Run one party with its own data.
    Party(PartyArgs),
}

/// Arguments of `sotto train aggregator`.
#[derive(Debug, Args)]
pub struct AggregatorArgs {
    /// The deployment file (TOML): address, certificates, public data sizes, training settings.
    #[arg(long)]
    pub config: PathBuf,
    /// Held-out data (CSV, integer labels in the last column) for the per-round metrics.
    #[arg(long)]
    pub test: PathBuf,
    /// Where to write `metrics.json`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A folder for the final model (`model.json`, `model.safetensors`; for `sotto evaluate`
    /// and `sotto predict`).
    #[arg(long)]
    pub model_out: Option<PathBuf>,
}

/// Arguments of `sotto train party`.
#[derive(Debug, Args)]
pub struct PartyArgs {
    /// The deployment file (TOML), the same as the aggregator's.
    #[arg(long)]
    pub config: PathBuf,
    /// This party's id (its certificate is `party-<id>`).
    #[arg(long)]
    pub id: u32,
    /// This party's records (CSV, numeric features, integer labels in the last column).
    #[arg(long)]
    pub data: PathBuf,
}

/// A deployment: public facts every role agrees on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// The aggregator's address (it listens there; parties dial it).
    pub aggregator: SocketAddr,
    /// The certificate directory (`ca.pem`, and this role's `<role>.pem` / `<role>.key`).
    pub certs: PathBuf,
    /// The run's session id: 32 hex digits, fresh for each run.
    pub session: String,
    /// Records of all parties together (public: the update divides by `q * records`).
    pub records: usize,
    /// The most records any one party holds (sizes the ring encoding).
    pub max_party_records: usize,
    /// Features per record.
    pub features: usize,
    /// Number of classes (labels `0..classes`).
    pub classes: usize,
    /// Seconds the aggregator waits for the parties to connect (default 60).
    #[serde(default = "default_join")]
    pub join_secs: u64,
    /// The training settings (the same at every role).
    #[serde(default)]
    pub training: FederatedConfig,
}

fn default_join() -> u64 {
    60
}

impl Deployment {
    fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read --config {}: {e}", path.display())))?;
        let invalid = |e: toml::de::Error| {
            UsageError(format!(
                "--config {}: not a valid deployment: {e}",
                path.display()
            ))
        };
        let table: toml::Table = toml::from_str(&text).map_err(invalid)?;
        let mut d: Deployment = toml::from_str(&text).map_err(invalid)?;
        let training = table.get("training").and_then(toml::Value::as_table);
        if super::noise_multiplier_alone(training) {
            d.training.target_epsilon = None;
        }
        d.training.validate(d.records)?;
        Ok(d)
    }

    fn session(&self) -> anyhow::Result<SessionId> {
        let s = self.session.trim();
        let bad = || UsageError(format!("session = {s:?}: must be 32 hex digits (16 bytes)"));
        if s.len() != 32 {
            return Err(bad().into());
        }
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            let pair = s.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            *b = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(SessionId(bytes))
    }

    fn model(&self) -> anyhow::Result<Model> {
        Ok(Model::new(
            &self.training.model,
            InputShape::Features(self.features),
            self.classes,
            DType::F32,
            &Device::Cpu,
            self.training.seed,
        )?)
    }
}

/// Reads a CSV whose last column holds integer labels `0..classes`.
fn load(path: &Path, d: &Deployment) -> anyhow::Result<Dataset> {
    let csv = data::load_csv_file(
        path,
        &CsvOptions {
            has_header: false,
            label_column: LabelColumn::Last,
        },
    )
    .with_context(|| format!("{}", path.display()))?;
    let labels = csv
        .dataset
        .labels()
        .iter()
        .map(|&k| {
            csv.class_names
                .get(k as usize)
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|&l| (l as usize) < d.classes)
                .ok_or_else(|| {
                    UsageError(format!(
                        "{}: labels must be integers 0..{} (classes in the deployment)",
                        path.display(),
                        d.classes
                    ))
                })
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let inputs = csv.dataset.inputs().clone();
    if let Inputs::Features { dim, .. } = &inputs
        && *dim != d.features
    {
        return Err(UsageError(format!(
            "{}: {dim} features, the deployment says {}",
            path.display(),
            d.features
        ))
        .into());
    }
    Ok(Dataset::new(inputs, labels, d.classes)?)
}

/// Runs one role.
pub fn run(role: &Role, out: &Output) -> anyhow::Result<()> {
    // A party has one connection: a single-threaded runtime (its update computes on a
    // blocking thread) answers a message in about a third of the time a multi-threaded one
    // takes, which hops threads per message. The aggregator serves every party and keeps the
    // multi-threaded runtime.
    let runtime = match role {
        Role::Aggregator(_) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        Role::Party(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .context("cannot start the async runtime")?;
    match role {
        Role::Aggregator(a) => runtime.block_on(aggregator(a, out)),
        Role::Party(p) => runtime.block_on(party(p, out)),
    }
}

async fn aggregator(args: &AggregatorArgs, out: &Output) -> anyhow::Result<()> {
    let d = Deployment::load(&args.config)?;
    let test = load(&args.test, &d)?;
    let model = d.model()?;
    let c = &d.training;
    let dim = model.trainable_len(c.trainable());
    let plan = c.plan(d.records, d.max_party_records, dim, model.rows_per_sample())?;
    let parties: Vec<Identity> = (1..=c.parties as u32).map(Identity::party).collect();
    let tls = TlsConfig::from_dir(&d.certs, Identity::Aggregator, parties.iter().copied())?;
    let server = Server::bind(d.aggregator, &tls, TransportOptions::default())?;
    let accepted = server
        .accept_peers(parties.iter().copied(), Duration::from_secs(d.join_secs))
        .await;
    for refused in &accepted.refused {
        tracing::warn!(error = %refused, "train: refused a connection");
    }
    let json = out.is_json();
    let mut on_round = |m: &RoundMetrics| {
        if !json {
            eprintln!(
                "round {:>4}  accuracy {:6.2}%  epsilon {:.4}  survivors {:?}",
                m.round,
                100.0 * m.accuracy,
                m.epsilon,
                m.survivors.iter().map(|p| p.0).collect::<Vec<_>>()
            );
        }
    };
    let outcome = run_aggregator(
        AggregatorRun {
            config: c,
            plan: &plan,
            model: &model,
            test: &test,
            n_total: d.records,
            session: d.session()?,
        },
        accepted.connections,
        &mut |_, _| {},
        None,
        &mut on_round,
    )
    .await;
    server.shutdown().await;
    let outcome = outcome?;
    let last = outcome.metrics.last();
    let summary = serde_json::json!({
        "rounds": outcome.metrics.len(),
        "accuracy": last.map(|m| m.accuracy),
        "epsilon": last.map(|m| m.epsilon),
        "delta": c.delta,
        "noise_multiplier": plan.accounted_sigma,
        "colluders": plan.colluders,
        "honest_shares": plan.honest_shares,
        "guarantee": plan.guarantee(c.plain),
        "dropped": outcome.dropped,
        "stopped": outcome.stopped,
        "metrics": outcome.metrics,
    });
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let (Some(dir), Some(last)) = (&args.model_out, last) {
        let info = sotto_training::artifact::ModelInfo {
            labels: sotto_training::artifact::ModelInfo::numbered_labels(model.classes()),
            standardizer: None,
            privacy: Some(sotto_training::artifact::PrivacySpent {
                epsilon: last.epsilon,
                delta: c.delta,
                accountant: c.accountant,
                noise_multiplier: plan.accounted_sigma,
                sampling_rate: c.sampling_rate,
                steps: outcome.metrics.len() as u64,
                guarantee: Some(plan.guarantee(c.plain)),
            }),
            trainable: c.trainable(),
            trained_by: "sotto train aggregator".into(),
        };
        model
            .save(dir, &info)
            .with_context(|| format!("cannot save the model in {}", dir.display()))?;
    }
    out.emit(&summary, || {
        format!(
            "{} rounds: test accuracy {:.2}%, epsilon {:.4} at delta {}, dropped {}{}",
            summary["rounds"],
            100.0 * last.map_or(0.0, |m| m.accuracy),
            last.map_or(0.0, |m| m.epsilon),
            c.delta,
            summary["dropped"],
            summary["stopped"]
                .as_str()
                .map_or_else(String::new, |s| format!("\nstopped early: {s}"))
        )
    })
}

async fn party(args: &PartyArgs, out: &Output) -> anyhow::Result<()> {
    let d = Deployment::load(&args.config)?;
    let c = &d.training;
    if args.id == 0 || args.id as usize > c.parties {
        return Err(UsageError(format!("--id {}: parties are 1..={}", args.id, c.parties)).into());
    }
    let id = PartyId(args.id);
    let data = load(&args.data, &d)?;
    if data.len() > d.max_party_records {
        return Err(UsageError(format!(
            "--data has {} records, above max_party_records = {}",
            data.len(),
            d.max_party_records
        ))
        .into());
    }
    let model = d.model()?;
    let dim = model.trainable_len(c.trainable());
    let plan = c.plan(d.records, d.max_party_records, dim, model.rows_per_sample())?;
    let tls = TlsConfig::from_dir(&d.certs, Identity::Party(id), [Identity::Aggregator])?;
    let local: SocketAddr = if d.aggregator.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let client = Client::bind(local, &tls, TransportOptions::default())?;
    // Retries (with backoff) while the aggregator is not up yet or busy, until join_secs.
    let connection = match client
        .connect_with_retry(
            d.aggregator,
            Identity::Aggregator,
            Duration::from_secs(d.join_secs),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            client.shutdown().await;
            return Err(e.into());
        }
    };
    let setup = PartySetup {
        id,
        config: c.clone(),
        plan,
        data,
        model,
        session: d.session()?,
        rng: sotto_dp::rng::os_rng()?,
    };
    let result = run_party(setup, connection).await;
    client.shutdown().await;
    let outcome = result?;
    out.emit(
        &serde_json::json!({"party": id, "rounds": outcome.rounds}),
        || format!("party {}: took part in {} rounds", id.0, outcome.rounds),
    )
}
