//! `sotto train` without `--central`: multi-party training over QUIC on loopback, with
//! progress bars and a report folder.

use std::path::Path;

use anyhow::{Context, anyhow};
use candle_core::{DType, Device};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sotto_training::artifact::PrivacySpent;
use sotto_training::clipping::ClipMode;
use sotto_training::federated::{
    FederatedConfig, FederatedReport, LocalOptions, Partition, RoundMetrics, run_local_with,
};
use sotto_training::model::{InputShape, Model, ModelSpec};
use sotto_training::optim::OptimizerKind;

use super::{ClipArg, ModelArg, OptimizerArg, Output, PartitionArg, TrainArgs, UsageError};

/// The settings: defaults, then the `--config` TOML file, then the flags.
fn config(args: &TrainArgs) -> anyhow::Result<FederatedConfig> {
    let mut c = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("cannot read --config {}: {e}", path.display())))?;
            let invalid = |e: toml::de::Error| {
                UsageError(format!(
                    "--config {}: not a valid multi-party training configuration: {e}",
                    path.display()
                ))
            };
            let table: toml::Table = toml::from_str(&text).map_err(invalid)?;
            let mut c: FederatedConfig = toml::from_str(&text).map_err(invalid)?;
            if super::noise_multiplier_alone(Some(&table)) {
                c.target_epsilon = None;
            }
            c
        }
        None => FederatedConfig::default(),
    };
    if args.bitfit && args.pretrained.is_none() {
        eprintln!(
            "warning: --bitfit trains only the bias terms of a randomly initialised model, which \
             learns little; BiTFiT needs a pretrained model (see --central --pretrained DIR)"
        );
    }
    if args.epochs.is_some() {
        return Err(UsageError("--epochs is for --central; use --rounds".into()).into());
    }
    if args.non_private {
        return Err(UsageError(
            "--non-private is for --central: multi-party training is always private".into(),
        )
        .into());
    }
    if let Some(m) = args.model {
        c.model = match m {
            ModelArg::Logistic => ModelSpec::Logistic,
            ModelArg::Mlp => ModelSpec::Mlp {
                hidden: args.hidden.clone().unwrap_or_else(|| vec![64]),
            },
            ModelArg::Transformer => ModelSpec::Transformer {
                dim: 32,
                heads: 4,
                mlp_dim: 64,
                layers: 1,
            },
        };
    } else if args.hidden.is_some() {
        return Err(UsageError("--hidden needs --model mlp".into()).into());
    }
    if let Some(cl) = args.clipping {
        c.clipping = match cl {
            ClipArg::Standard => ClipMode::Standard,
            ClipArg::Automatic => ClipMode::Automatic,
        };
    }
    c.bitfit |= args.bitfit;
    if let Some(o) = args.optimizer {
        c.optimizer = match o {
            OptimizerArg::Adam => OptimizerKind::default(),
            OptimizerArg::Sgd => OptimizerKind::Sgd { momentum: 0.0 },
        };
    }
    if let Some(v) = args.parties {
        c.parties = v;
    }
    if let Some(v) = args.threshold {
        c.threshold = Some(v);
    }
    if let Some(v) = args.colluders {
        c.colluders = Some(v);
    }
    if let Some(v) = args.rounds {
        c.rounds = v;
    }
    if let Some(v) = args.round_deadline {
        c.round_deadline_secs = Some(v);
    }
    match (args.partition, args.shards_per_party) {
        (Some(PartitionArg::Iid), None) => c.partition = Partition::Iid,
        (Some(PartitionArg::LabelSkew), s) => {
            c.partition = Partition::LabelSkew {
                shards_per_party: s.unwrap_or(2),
            }
        }
        (None, None) => {}
        (_, Some(_)) => {
            return Err(
                UsageError("--shards-per-party needs --partition label-skew".into()).into(),
            );
        }
    }
    if let Some(v) = args.sampling_rate {
        c.sampling_rate = v;
    }
    if let Some(v) = args.learning_rate {
        c.learning_rate = v;
    }
    if let Some(v) = args.clip_norm {
        c.clip_norm = v;
    }
    if let Some(v) = args.target_epsilon {
        c.target_epsilon = Some(v);
        c.noise_multiplier = None;
    }
    if let Some(v) = args.noise_multiplier {
        c.noise_multiplier = Some(v);
        c.target_epsilon = None;
    }
    if let Some(v) = args.delta {
        c.delta = v;
    }
    if let Some(v) = args.accountant {
        c.accountant = v;
    }
    if let Some(v) = args.seed {
        c.seed = v;
    }
    c.reproducible |= args.reproducible;
    c.plain |= args.plain;
    c.per_round_keys |= args.per_round_keys;
    if args.no_audit {
        c.audit = false;
    }
    Ok(c)
}

/// The overhead of secure aggregation measured in one invocation.
#[derive(Debug, Serialize)]
struct Overhead {
    /// Secure and plain runs each (`--compare-repeat`), alternating; their rounds are pooled.
    repetitions: u32,
    /// Median round time without evaluation, secure aggregation (seconds).
    secure_round_median: f64,
    /// The same with plain aggregation.
    plain_round_median: f64,
    /// `secure / plain - 1` of the medians.
    overhead: f64,
    /// Mean round time without evaluation, secure aggregation (seconds): includes the rounds
    /// that run the key rounds of a batch of rounds (`key_batch`).
    secure_round_mean: f64,
    /// The same with plain aggregation.
    plain_round_mean: f64,
    /// `secure / plain - 1` of the means: the overhead on the whole training time.
    mean_overhead: f64,
    /// Median of each part of a secure round.
    secure_split: Split,
    /// Median of each part of a plain round.
    plain_split: Split,
}

/// Medians of the parts of a round, seconds.
#[derive(Debug, Serialize)]
struct Split {
    local_compute: f64,
    masking: f64,
    network: f64,
    unmasking: f64,
    step: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Round time without evaluation (which is not part of the protocol).
fn protocol_seconds(m: &RoundMetrics) -> f64 {
    m.seconds - m.timing.eval
}

fn split(rounds: &[RoundMetrics]) -> Split {
    let med = |f: fn(&RoundMetrics) -> f64| median(rounds.iter().map(f).collect());
    Split {
        local_compute: med(|m| m.timing.local_compute),
        masking: med(|m| m.timing.masking),
        network: med(|m| m.timing.network),
        unmasking: med(|m| m.timing.unmasking),
        step: med(|m| m.timing.step),
    }
}

/// Runs the multi-party training and writes the report folder.
pub fn run(args: &TrainArgs, out: &Output) -> anyhow::Result<()> {
    let device = super::device(&args.device)?;
    let mut config = config(args)?;
    // With `--pretrained`: the text CSV tokenized, and the encoder every party and the
    // aggregator start from (its flat parameters; `config.model` becomes its specification).
    let (data, initial) = match &args.pretrained {
        Some(dir) => {
            let (data, model) = super::pretrained_data(args, dir, &device, config.seed)?;
            config.model = model.spec().clone();
            (data, Some(model.to_flat()?))
        }
        None => (args.data()?, None),
    };
    let (train, test) = (data.train.clone(), data.test.clone());
    config.validate(train.len())?;
    let folder = super::report_folder(args.out.as_deref(), "train")?;
    let json = out.is_json();
    if !json {
        eprintln!(
            "multi-party training: {} parties (threshold {}, up to {} assumed to collude with the \
             aggregator) and an aggregator over QUIC on loopback, \
             {} records ({} test), {} rounds at q = {}, {}, {} aggregation",
            config.parties,
            config.threshold(),
            config.colluders(),
            train.len(),
            test.len(),
            config.rounds,
            config.sampling_rate,
            match (config.target_epsilon, config.noise_multiplier) {
                (_, Some(s)) => format!("noise multiplier {s}, delta {}", config.delta),
                (Some(e), None) => format!("target epsilon {e} at delta {}", config.delta),
                (None, None) => String::new(),
            },
            if config.plain {
                "plain (unmasked)"
            } else {
                "secure"
            },
        );
    }
    // One thread for the endpoints of a small model, where a message costs mostly its hops
    // between threads; a multi-threaded runtime for a large one (`runtime_for`).
    let params = sotto_training::federated::update_len(&config, &train, &test)?;
    let runtime = sotto_training::federated::runtime_for_run(params, config.parties)
        .context("cannot start the async runtime")?;
    let checkpoints = sotto_training::checkpoint::CheckpointOptions {
        every: args.checkpoint_every,
        dir: args.checkpoint_every.map(|_| folder.join("checkpoints")),
        resume: args.resume.clone(),
    };
    let (secure, weights) = run_one(
        &runtime,
        &config,
        &train,
        &test,
        &device,
        json,
        "secure",
        checkpoints,
        initial.clone(),
    )?;
    write_report(&folder, &secure)?;
    save_model(&folder, &config, &data, &secure, &weights, &device)?;
    if let Some(dir) = &args.pretrained {
        // The tokenizer travels with the model, so the folder is complete for reuse.
        std::fs::copy(dir.join("tokenizer.json"), folder.join("tokenizer.json"))
            .with_context(|| format!("cannot copy tokenizer.json into {}", folder.display()))?;
    }
    let overhead = if args.compare_plain {
        let plain_config = FederatedConfig {
            plain: true,
            audit: false,
            ..config.clone()
        };
        let run = |config: &FederatedConfig, label: &str| {
            run_one(
                &runtime,
                config,
                &train,
                &test,
                &device,
                json,
                label,
                Default::default(),
                initial.clone(),
            )
        };
        let (plain, _) = run(&plain_config, "plain")?;
        let path = folder.join("plain-metrics.json");
        std::fs::write(&path, serde_json::to_string_pretty(&plain)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        // Further secure / plain pairs, alternating, pooled with the first.
        let (mut secure_rounds, mut plain_rounds) = (secure.metrics.clone(), plain.metrics.clone());
        let extra_secure = FederatedConfig {
            audit: false,
            ..config.clone()
        };
        for _ in 1..args.compare_repeat {
            secure_rounds.extend(run(&extra_secure, "secure")?.0.metrics);
            plain_rounds.extend(run(&plain_config, "plain")?.0.metrics);
        }
        let s = median(secure_rounds.iter().map(protocol_seconds).collect());
        let p = median(plain_rounds.iter().map(protocol_seconds).collect());
        let mean = |r: &[RoundMetrics]| {
            r.iter().map(protocol_seconds).sum::<f64>() / r.len().max(1) as f64
        };
        let (sm, pm) = (mean(&secure_rounds), mean(&plain_rounds));
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b - 1.0 } else { f64::INFINITY };
        let o = Overhead {
            repetitions: args.compare_repeat,
            secure_round_median: s,
            plain_round_median: p,
            overhead: ratio(s, p),
            secure_round_mean: sm,
            plain_round_mean: pm,
            mean_overhead: ratio(sm, pm),
            secure_split: split(&secure_rounds),
            plain_split: split(&plain_rounds),
        };
        let path = folder.join("overhead.json");
        std::fs::write(&path, serde_json::to_string_pretty(&o)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Some(o)
    } else {
        None
    };
    #[derive(Serialize)]
    struct Summary<'a> {
        report_folder: String,
        #[serde(flatten)]
        report: &'a FederatedReport,
        #[serde(skip_serializing_if = "Option::is_none")]
        overhead: Option<&'a Overhead>,
    }
    out.emit(
        &Summary {
            report_folder: folder.display().to_string(),
            report: &secure,
            overhead: overhead.as_ref(),
        },
        || {
            let mut s = format!(
                "{} rounds, {} parties ({} dropped): test accuracy {:.2}%, epsilon {:.4} at delta {} \
                 ({} accountant, noise multiplier {:.4}, q = {})",
                secure.rounds,
                secure.parties,
                secure.dropped.len(),
                100.0 * secure.accuracy,
                secure.epsilon,
                secure.delta,
                secure.accountant,
                secure.noise_multiplier,
                secure.sampling_rate
            );
            s.push_str(&format!("\nepsilon covers {}", secure.guarantee));
            if let Some(stop) = &secure.stopped {
                s.push_str(&format!("\nstopped early: {stop}"));
            }
            if let Some(a) = &secure.audit {
                s.push_str(&format!("\n{a}"));
            }
            let sp = split(&secure.metrics);
            s.push_str(&format!(
                "\nmedian round: local compute {:.1} ms, masking {:.1} ms, network {:.1} ms, unmasking {:.1} ms, step {:.1} ms",
                1e3 * sp.local_compute,
                1e3 * sp.masking,
                1e3 * sp.network,
                1e3 * sp.unmasking,
                1e3 * sp.step
            ));
            if let Some(o) = &overhead {
                s.push_str(&format!(
                    "\nsecure aggregation overhead: median round {:.2} ms secure vs {:.2} ms plain ({:+.1}%); mean round {:.2} vs {:.2} ms ({:+.1}%)",
                    1e3 * o.secure_round_median,
                    1e3 * o.plain_round_median,
                    100.0 * o.overhead,
                    1e3 * o.secure_round_mean,
                    1e3 * o.plain_round_mean,
                    100.0 * o.mean_overhead
                ));
            }
            s.push_str(&format!(
                "\nreport: {}/metrics.json, plot.svg, audit.json, model.json, model.safetensors",
                folder.display()
            ));
            s
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    runtime: &tokio::runtime::Runtime,
    config: &FederatedConfig,
    train: &sotto_training::data::Dataset,
    test: &sotto_training::data::Dataset,
    device: &Device,
    json: bool,
    label: &str,
    checkpoints: sotto_training::checkpoint::CheckpointOptions,
    initial: Option<Vec<f32>>,
) -> anyhow::Result<(FederatedReport, Vec<f32>)> {
    let bar = ProgressBar::new(config.rounds);
    if json {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>7} [{bar:30}] round {pos}/{len} {msg} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    let pb = bar.clone();
    let mut on_round = move |m: &RoundMetrics| {
        pb.set_position(m.round);
        pb.set_message(format!(
            "accuracy {:5.2}%  epsilon {:.3}  survivors {}",
            100.0 * m.accuracy,
            m.epsilon,
            m.survivors.len()
        ));
    };
    let options = LocalOptions {
        device: device.clone(),
        checkpoints,
        initial,
        ..LocalOptions::default()
    };
    let outcome = runtime.block_on(run_local_with(config, train, test, options, &mut on_round));
    bar.finish();
    let outcome = outcome?;
    Ok((outcome.report, outcome.model))
}

/// Writes the aggregator's final model (`model.json`, `model.safetensors`) into the report
/// folder.
fn save_model(
    folder: &Path,
    config: &FederatedConfig,
    data: &super::TrainData,
    report: &FederatedReport,
    weights: &[f32],
    device: &Device,
) -> anyhow::Result<()> {
    // The same model the parties and the aggregator start from (`federated::local_model`).
    let classes = data.train.num_classes().max(data.test.num_classes()).max(2);
    let model = Model::new(
        &config.model,
        InputShape::of(&data.train),
        classes,
        DType::F32,
        device,
        config.seed,
    )?;
    model.load_flat(weights)?;
    let mut info = data.model_info(classes, "sotto train (multi-party)");
    info.trainable = config.trainable();
    info.privacy = Some(PrivacySpent {
        epsilon: report.epsilon,
        delta: report.delta,
        accountant: report.accountant,
        noise_multiplier: report.noise_multiplier,
        sampling_rate: report.sampling_rate,
        steps: report.rounds,
        guarantee: Some(report.guarantee.clone()),
    });
    model
        .save(folder, &info)
        .with_context(|| format!("cannot save the model in {}", folder.display()))
}

fn write_report(folder: &Path, report: &FederatedReport) -> anyhow::Result<()> {
    let path = folder.join("metrics.json");
    std::fs::write(&path, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if let Some(audit) = &report.audit {
        let path = folder.join("audit.json");
        std::fs::write(&path, serde_json::to_string_pretty(audit)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    plot(&folder.join("plot.svg"), report)
}

/// An SVG plot of test accuracy (left axis) and epsilon (right axis) over the rounds.
fn plot(path: &Path, report: &FederatedReport) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let rounds = report.metrics.len().max(1) as u64;
    let max_eps = report
        .metrics
        .iter()
        .map(|m| m.epsilon)
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.05;
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw {}: {e}", path.display());
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "sotto train: {} parties, {} aggregation",
                report.parties, report.mode
            ),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .right_y_label_area_size(55)
        .build_cartesian_2d(0u64..rounds, 0f64..1f64)
        .map_err(|e| err(&e))?
        .set_secondary_coord(0u64..rounds, 0f64..max_eps);
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("test accuracy")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .configure_secondary_axes()
        .y_desc("epsilon")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(
            report.metrics.iter().map(|m| (m.round, m.accuracy)),
            &BLUE,
        ))
        .map_err(|e| err(&e))?
        .label("test accuracy (left)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_secondary_series(LineSeries::new(
            report.metrics.iter().map(|m| (m.round, m.epsilon)),
            &RED,
        ))
        .map_err(|e| err(&e))?
        .label("epsilon (right)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// `YYYYMMDD-HHMMSS` in UTC.
pub(super) fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}
