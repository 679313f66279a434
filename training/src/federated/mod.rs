//! Multi-party DP training over QUIC: each party Poisson-samples its own records, computes the
//! per-sample clipped gradient sum, encodes it in the ring, adds its share of distributed
//! discrete Gaussian noise and secure-aggregates it (SecAgg, [`sotto_mpc::secagg`]); the
//! aggregator decodes the noised sum, steps the optimizer and sends the new model to the
//! parties at the start of the next round.
//!
//! | piece | API |
//! |---|---|
//! | settings (serde, TOML or JSON, unknown fields rejected) | [`FederatedConfig`] |
//! | the privacy calibration of a run | [`PrivacyPlan`] ([`FederatedConfig::plan`]) |
//! | aggregator and 4 parties as separate QUIC endpoints in one process | [`run_local`], [`run_local_with`] |
//! | the aggregator over already-open connections | [`aggregator::run_aggregator`] |
//! | a party over an open connection | [`party::run_party`] |
//! | per-round metrics and the report | [`RoundMetrics`], [`FederatedReport`] |
//!
//! # Privacy
//! One round is one step of DP-SGD with Poisson sampling over the union of all parties'
//! records: every party includes each of its records with the same probability `q`, clips
//! each per-sample gradient to `R`, and the rounds' sum over parties is noised once (the
//! parties' noise shares). **Unit of privacy:** one record of one party (added or removed).
//! **Threat model:** the aggregator may collude with up to `c` parties (`colluders`, default
//! `t - 1`, the most docs/threat-model.md allows); their noise shares are known to it. At
//! least `t` parties survive every round, so at least `t - c` shares in each released sum are
//! honest, and each party's share is calibrated so that those `t - c` shares alone have
//! standard deviation `sigma * Δ` in ring units, where `Δ = scale * R' + 2 sqrt(d)` is the L2
//! sensitivity of the encoded sum: `scale * R'` for one clipped per-sample gradient (`R'` is
//! `R` plus twice the proved float-error bound of the party's clipped sum,
//! docs/privacy/sensitivity.md) plus the
//! randomized rounding of the party that holds it (each coordinate's rounding error is below
//! 1, before and after, for every realization of the rounding randomness). The update divides
//! by the data-independent `q * n_total`. Accounting is therefore
//! `dp_sgd_epsilon(q, sigma, rounds, delta)`, the value `sotto account dp-sgd` prints for the
//! same `q`, `sigma` and number of steps (more survivors or fewer colluders only add honest
//! noise). The noise is a sum of discrete Gaussians (Kairouz, Liu and Steinke 2021); its zCDP
//! bound at `t - c` contributors is checked to be at most the Gaussian's `1 / (2 sigma^2)`
//! (the noise is raised until it is), and, as for the central run's discrete Gaussian, the
//! subsampled-Gaussian accountant is applied to it (docs/privacy/accounting.md says why).
//! With `plain: true` the aggregator sees each party's update with only its own share: the
//! reported epsilon is then computed for one share ([`PrivacyPlan::accounted_sigma`]). See
//! `docs/federated.md`.
//!
//! # Security
//! Semi-honest aggregator colluding with fewer than `threshold` parties: it only receives
//! masked vectors (uniform in Z_2^64) and the noised sum. With `plain: true` (a benchmark
//! baseline) the parties send their noised encoded sums unmasked: each one is then only
//! protected by that party's own share of the noise.

pub mod aggregator;
pub mod local;
pub mod party;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sotto_dp::accounting::{AccountantKind, dp_sgd_epsilon, dp_sgd_noise_multiplier};
use sotto_mpc::encoding::{Clipping as RingClipping, FixedPointEncoder};
use sotto_mpc::noise::{DistributedNoise, Sensitivity};
use sotto_mpc::secagg::SecAggConfig;
use sotto_mpc::{PartyId, SessionId};

use crate::audit::MiaReport;
use crate::clipping::{ClipMode, Clipping, NormStrategy};
use crate::model::ModelSpec;
use crate::nn::Trainable;
use crate::optim::OptimizerKind;

pub use local::{
    KillAt, LocalOptions, LocalOutcome, SINGLE_THREAD_MAX_PARAMS, SINGLE_THREAD_MAX_PARTIES,
    run_local, run_local_with, runtime_for, runtime_for_run, update_len,
};

/// How the training data is split across the parties of a local run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Partition {
    /// A seeded shuffle cut into near-equal parts.
    #[default]
    Iid,
    /// Label skew: each party gets `shards_per_party` label-sorted shards (McMahan et al.).
    LabelSkew {
        /// Shards per party (1 or 2: each party sees only a few classes).
        shards_per_party: usize,
    },
}

/// Settings of a multi-party training run. Every field has a default; unknown fields are
/// rejected (serde, so it reads from TOML or JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederatedConfig {
    /// The model.
    pub model: ModelSpec,
    /// Standard or automatic clipping.
    pub clipping: ClipMode,
    /// DP-BiTFiT: train only bias terms.
    pub bitfit: bool,
    /// DP-SGD (with momentum) or DP-Adam, applied by the aggregator.
    pub optimizer: OptimizerKind,
    /// Number of parties `n` (2 or more).
    pub parties: usize,
    /// Minimum number of survivors `t`; default `n / 2 + 1`.
    pub threshold: Option<usize>,
    /// Parties assumed to collude with the aggregator (`c`): their noise shares are known to
    /// it and protect nobody. Default (`None`): `t - 1`, the most the threat model allows
    /// (docs/threat-model.md). The noise is calibrated so that the `t - c` honest shares of
    /// any `t` survivors alone reach the noise multiplier; `0` trusts every party (less
    /// noise, a weaker guarantee).
    pub colluders: Option<usize>,
    /// Number of rounds (DP-SGD steps).
    pub rounds: u64,
    /// Poisson sampling rate `q`, the same at every party.
    pub sampling_rate: f64,
    /// Learning rate.
    pub learning_rate: f64,
    /// Clip norm `R` of each per-sample gradient.
    pub clip_norm: f64,
    /// `gamma` of automatic clipping.
    pub gamma: f64,
    /// Noise multiplier `sigma`. With `target_epsilon` also set, the run stops before the
    /// round that would exceed the target.
    pub noise_multiplier: Option<f64>,
    /// Target epsilon: without `noise_multiplier`, the smallest `sigma` whose epsilon after
    /// `rounds` rounds is at most this.
    pub target_epsilon: Option<f64>,
    /// `delta`; must be below `1 / n_total`.
    pub delta: f64,
    /// RDP or PLD accounting.
    pub accountant: AccountantKind,
    /// Fixed-point scale of the ring encoding (a gradient coordinate `v` becomes about
    /// `v * scale`); the rounding slack `2 sqrt(d) / scale` relative to `R` is charged.
    pub scale: f64,
    /// How the data is split across the parties (local runs).
    pub partition: Partition,
    /// Seed of the model initialization and the partition.
    pub seed: u64,
    /// Draw sampling, noise and protocol keys from generators seeded by `seed` (experiments
    /// only, never for real data).
    pub reproducible: bool,
    /// Send the noised updates unmasked (a baseline to measure the cost of secure
    /// aggregation; no input privacy beyond each party's own noise share).
    pub plain: bool,
    /// Generate fresh X25519 keys in every round (per-session SecAgg keys) instead of once
    /// per run. By default each party generates its keys once and agrees on a secret with
    /// each neighbour once per run; every round still uses fresh pair seeds, share keys and
    /// self masks derived for that round, and a dropped party's recovery reveals only that
    /// round's seeds (`sotto_mpc::secagg::SecAggConfig::with_run_keys`). Per-round keys add
    /// forward secrecy within a run at the cost of two key generations per round and two
    /// X25519 operations per neighbour and round.
    pub per_round_keys: bool,
    /// Rounds whose SecAgg key rounds (advertise keys, share keys) run together, ahead of
    /// their rounds: at the start of round `r` (when its key rounds have not run yet) the
    /// parties and the aggregator run them for rounds `r .. r + key_batch` in one exchange,
    /// while the parties compute round `r`'s update. The other rounds of the batch then need
    /// only the masked input and unmasking steps. Every round still has its own session, keys
    /// and secrets; the batch costs the aggregator one session's key state per round ahead.
    /// 1 runs each round's key rounds in that round. At most 1024.
    pub key_batch: u64,
    /// Deadline of each protocol step in seconds; a party silent past it is dropped. The
    /// parties run the SecAgg key rounds while they compute their update, so the step that
    /// collects the masked inputs must also cover a party's local compute time. Default
    /// (`None`): derived from the number of parties, the graph degree, `key_batch` and the
    /// model size ([`FederatedConfig::round_deadline`]).
    pub round_deadline_secs: Option<f64>,
    /// Run the membership-inference audit after training (local runs).
    pub audit: bool,
}

impl Default for FederatedConfig {
    fn default() -> Self {
        FederatedConfig {
            model: ModelSpec::Logistic,
            clipping: ClipMode::Automatic,
            bitfit: false,
            optimizer: OptimizerKind::default(),
            parties: 4,
            threshold: None,
            colluders: None,
            rounds: 100,
            sampling_rate: 0.2,
            learning_rate: 0.05,
            clip_norm: 1.0,
            gamma: 0.01,
            noise_multiplier: None,
            target_epsilon: Some(2.0),
            delta: 1e-5,
            accountant: AccountantKind::Rdp,
            scale: 65536.0,
            partition: Partition::Iid,
            seed: 0,
            reproducible: false,
            plain: false,
            per_round_keys: false,
            key_batch: 16,
            round_deadline_secs: None,
            audit: true,
        }
    }
}

impl FederatedConfig {
    /// The threshold `t` (default `n / 2 + 1`).
    pub fn threshold(&self) -> usize {
        self.threshold.unwrap_or(self.parties / 2 + 1)
    }

    /// The number of parties `c` assumed to collude with the aggregator (default `t - 1`).
    pub fn colluders(&self) -> usize {
        self.colluders
            .unwrap_or_else(|| self.threshold().saturating_sub(1))
    }

    /// The honest noise shares the calibration counts: `t - c` (at least `t` parties survive
    /// every round, at most `c` of them collude).
    pub fn honest_shares(&self) -> usize {
        self.threshold().saturating_sub(self.colluders())
    }

    /// Which parameters are trained.
    pub fn trainable(&self) -> Trainable {
        match &self.model {
            _ if self.bitfit => Trainable::BiasOnly,
            crate::model::ModelSpec::Bert(b) if b.lora.is_some() => Trainable::Lora,
            _ => Trainable::All,
        }
    }

    /// The per-sample clipping.
    pub fn clipping(&self) -> Clipping {
        Clipping {
            mode: self.clipping,
            clip_norm: self.clip_norm,
            gamma: self.gamma,
            trainable: self.trainable(),
            strategy: NormStrategy::Auto,
        }
    }

    /// The SecAgg configuration of one round (session `session`) for vectors of length `dim`:
    /// run keys unless `per_round_keys`.
    ///
    /// # Errors
    /// [`Error::Protocol`] for parameters SecAgg refuses (parties, threshold, dimension).
    pub fn secagg(&self, session: SessionId, dim: usize) -> Result<SecAggConfig> {
        let config = SecAggConfig::new(session, self.parties, self.threshold(), dim)?
            .with_auto_graph(self.colluders())?;
        Ok(if self.per_round_keys {
            config
        } else {
            config.with_run_keys()
        })
    }

    /// The deadline of each protocol step for a model of `dim` trained parameters:
    /// `round_deadline_secs` if set, else derived for the worst case of a local run (every
    /// party on one small machine): 10 s, plus 200 µs per neighbour share a batch of key rounds
    /// costs all parties (`parties * neighbours * min(key_batch, rounds)`: Shamir shares, their
    /// encryption, and the aggregator's routing), plus 10 ns per mask coordinate the parties
    /// expand in a round (`parties * min(parties, 256) * dim`), at most an hour.
    pub fn round_deadline(&self, dim: usize) -> Duration {
        if let Some(secs) = self.round_deadline_secs {
            return Duration::from_secs_f64(secs);
        }
        let n = self.parties as f64;
        let neighbours = sotto_mpc::secagg::SparseParams::auto(self.parties, self.colluders())
            .map_or(self.parties.saturating_sub(1), |p| p.degree) as f64;
        let batch = if self.plain {
            0.0
        } else {
            self.key_batch.min(self.rounds) as f64
        };
        let secs = 10.0 + 2e-4 * n * neighbours * batch + 1e-8 * n * n.min(256.0) * dim as f64;
        Duration::from_secs_f64(secs.min(3600.0))
    }

    /// Checks the settings for `n_total` records in all.
    ///
    /// # Errors
    /// [`crate::Error::InvalidParameter`] naming the first bad field and the fix.
    pub fn validate(&self, n_total: usize) -> crate::Result<()> {
        if self.parties < 2 {
            return Err(crate::Error::invalid(
                "parties",
                self.parties,
                "multi-party training needs at least 2 parties",
            ));
        }
        let t = self.threshold();
        if t <= self.parties / 2 || t > self.parties {
            return Err(crate::Error::invalid(
                "threshold",
                t,
                format!(
                    "must be a majority of the parties: between {} and {}",
                    self.parties / 2 + 1,
                    self.parties
                ),
            ));
        }
        if self.colluders() >= t {
            return Err(crate::Error::invalid(
                "colluders",
                self.colluders(),
                format!(
                    "must be below the threshold t = {t}: with t or more colluders the \
                     aggregator can unmask inputs and no honest noise share is guaranteed \
                     (raise --threshold or lower --colluders)"
                ),
            ));
        }
        if self.rounds == 0 {
            return Err(crate::Error::invalid("rounds", 0, "must be at least 1"));
        }
        if !(1..=MAX_KEY_BATCH).contains(&self.key_batch) {
            return Err(crate::Error::invalid(
                "key_batch",
                self.key_batch,
                format!("must be between 1 and {MAX_KEY_BATCH}"),
            ));
        }
        sotto_dp::error::check_open_unit("sampling_rate", self.sampling_rate)?;
        sotto_dp::error::check_positive("learning_rate", self.learning_rate)?;
        sotto_dp::error::check_positive("clip_norm", self.clip_norm)?;
        sotto_dp::error::check_positive("gamma", self.gamma)?;
        sotto_dp::error::check_positive("scale", self.scale)?;
        if let Some(secs) = self.round_deadline_secs {
            sotto_dp::error::check_positive("round_deadline_secs", secs)?;
            if secs > 3600.0 {
                return Err(crate::Error::invalid(
                    "round_deadline_secs",
                    secs,
                    "must be at most 3600 seconds",
                ));
            }
        }
        sotto_dp::error::check_open_unit("delta", self.delta)?;
        if n_total > 0 && self.delta >= 1.0 / n_total as f64 {
            return Err(crate::Error::invalid(
                "delta",
                self.delta,
                format!(
                    "must be below 1/n = {:.3e} for {n_total} records in all",
                    1.0 / n_total as f64
                ),
            ));
        }
        if let Partition::LabelSkew { shards_per_party } = self.partition
            && shards_per_party == 0
        {
            return Err(crate::Error::invalid(
                "partition.shards_per_party",
                0,
                "must be at least 1",
            ));
        }
        match (self.target_epsilon, self.noise_multiplier) {
            (None, None) => Err(crate::Error::invalid(
                "noise_multiplier",
                "none",
                "set noise_multiplier or target_epsilon",
            )),
            (e, s) => {
                if let Some(e) = e {
                    sotto_dp::error::check_positive("target_epsilon", e)?;
                }
                if let Some(s) = s {
                    sotto_dp::error::check_positive("noise_multiplier", s)?;
                }
                Ok(())
            }
        }
    }

    /// The noise multiplier: the configured one, or the smallest meeting `target_epsilon`
    /// after `rounds` rounds.
    ///
    /// # Errors
    /// As [`Self::validate`]; [`crate::Error::Dp`] when no noise meets the target.
    pub fn resolve_noise_multiplier(&self, n_total: usize) -> crate::Result<f64> {
        self.validate(n_total)?;
        match (self.noise_multiplier, self.target_epsilon) {
            (Some(s), _) => Ok(s),
            (None, Some(e)) => Ok(dp_sgd_noise_multiplier(
                self.sampling_rate,
                self.rounds,
                e,
                self.delta,
                self.accountant,
            )?),
            (None, None) => Err(crate::Error::invalid("noise_multiplier", "none", "missing")),
        }
    }

    /// The privacy calibration of a run with `n_total` records in all, the largest party
    /// holding `max_party` of them, `dim` trained parameters and `rows_per_sample` rows per
    /// record in every layer ([`crate::model::Model::rows_per_sample`]: 1 for feature
    /// inputs, the sequence length for tokens), which the float-error bound of a party's
    /// clipped sum depends on.
    ///
    /// # Errors
    /// As [`Self::resolve_noise_multiplier`]; [`crate::Error::InvalidParameter`] naming
    /// `scale` if the ring could wrap or the encoding is out of range.
    pub fn plan(
        &self,
        n_total: usize,
        max_party: usize,
        dim: usize,
        rows_per_sample: usize,
    ) -> crate::Result<PrivacyPlan> {
        let sigma = self.resolve_noise_multiplier(n_total)?;
        PrivacyPlan::new(self, sigma, max_party, dim, rows_per_sample)
    }
}

/// The privacy calibration of a run: the encoder, the sensitivity in ring units with the
/// rounding charged, and the per-party noise.
///
/// # Privacy
/// In secure mode the aggregator sees only the sum, and the shares it cannot know are those
/// of the honest survivors: at least `honest = t - c`. Each party samples a discrete
/// Gaussian share of `sigma * Δ / sqrt(honest)` (raised until the zCDP bound of `honest`
/// shares is at most the Gaussian's `1 / (2 sigma^2)`), so the accountant's noise multiplier
/// is `sigma`. In plain mode the aggregator sees each party's update with only that party's
/// own share in it: the accountant's multiplier is then one share's, `sigma_party / Δ`
/// (rounded down), which is below `sigma` unless `honest = 1`. [`Self::accounted_sigma`]
/// is the multiplier every printed epsilon is computed with.
#[derive(Debug, Clone)]
pub struct PrivacyPlan {
    /// Noise multiplier `sigma` the run was configured or calibrated for (honest noise std /
    /// sensitivity in secure mode).
    pub sigma: f64,
    /// The noise multiplier of what the aggregator sees, used for every reported epsilon:
    /// `sigma` in secure mode, one party's share in plain mode.
    pub accounted_sigma: f64,
    /// Parties assumed to collude with the aggregator (`c`).
    pub colluders: usize,
    /// Honest noise shares the calibration counts (`t - c`; 1 in plain mode, where the
    /// aggregator sees each share on its own).
    pub honest_shares: usize,
    /// The ring encoder of a party's clipped sum (its L2 bound never clips a party's sum of
    /// `max_party` clipped gradients).
    pub encoder: FixedPointEncoder,
    /// L2 sensitivity of the encoded sum, ring units: `scale * R' + 2 sqrt(d)`, where `R'`
    /// is `R` plus twice the proved float-error bound of a party's clipped sum
    /// ([`crate::clipping::clipped_sum_sensitivity`], docs/privacy/sensitivity.md).
    pub sensitivity_ring: f64,
    /// The per-party noise (calibrated for `t - c` honest contributors).
    pub noise: DistributedNoise,
    /// Threshold `t`.
    pub threshold: usize,
    /// Sampling rate `q`.
    pub sampling_rate: f64,
    /// Delta.
    pub delta: f64,
    /// Accountant.
    pub accountant: AccountantKind,
    /// With the RDP accountant: the orders and the RDP of one round, so that
    /// [`Self::epsilon_after`] converts `rounds` times it instead of recomputing the curve
    /// (the per-order terms take 0.1-0.7 ms, as long as a whole default round).
    rdp_one_round: Option<sotto_dp::accounting::RdpAccountant>,
}

impl PrivacyPlan {
    fn new(
        config: &FederatedConfig,
        sigma: f64,
        max_party: usize,
        dim: usize,
        rows_per_sample: usize,
    ) -> crate::Result<Self> {
        let t = config.threshold();
        let honest = config.honest_shares().max(1);
        let r = config.clip_norm;
        let m = max_party.max(1);
        // A party's computed clipped sum differs from the exact sum of its records' clipped
        // contributions by at most `err` (f64 accumulation, one rounding to the model dtype;
        // docs/privacy/sensitivity.md), so neighbouring sums differ by at most `charged`.
        let err = crate::clipping::clipped_sum_error_bound(r, m, rows_per_sample, dim)?;
        let charged = crate::clipping::clipped_sum_sensitivity(r, m, rows_per_sample, dim)?;
        // The encoder's bound never clips a party's computed sum (m clipped records plus the
        // float error).
        let bound = m as f64 * r * (1.0 + crate::clipping::CONTRIBUTION_SLACK) + err;
        let encoder = FixedPointEncoder::new(RingClipping::L2 { norm: bound }, config.scale, dim)
            .map_err(|e| crate::Error::invalid("scale", config.scale, e.to_string()))?;
        let d = dim as f64;
        let sensitivity_ring = (config.scale * charged + 2.0 * d.sqrt()) * (1.0 + 1e-12);
        let s = Sensitivity {
            l2: sensitivity_ring,
            l1: sensitivity_ring * d.sqrt(),
        };
        let target_rho = 1.0 / (2.0 * sigma * sigma);
        let mut total = sigma * sensitivity_ring;
        let mut noise = None;
        for _ in 0..200 {
            let candidate = DistributedNoise::new(total, honest)
                .map_err(|e| crate::Error::invalid("noise_multiplier", sigma, e.to_string()))?;
            let p = candidate
                .release_privacy(s, dim, honest, config.delta)
                .map_err(|e| crate::Error::invalid("noise_multiplier", sigma, e.to_string()))?;
            if p.rho <= target_rho {
                noise = Some(candidate);
                break;
            }
            total *= 1.0001;
        }
        let noise = noise.ok_or_else(|| {
            crate::Error::invalid(
                "noise_multiplier",
                sigma,
                "the distributed noise cannot match the Gaussian's privacy; raise `scale`",
            )
        })?;
        noise
            .check_no_wrap::<u64>(config.parties, &encoder)
            .map_err(|e| crate::Error::invalid("scale", config.scale, e.to_string()))?;
        // Plain mode: the aggregator sees each party's update with its own share only. One
        // discrete Gaussian share (no sum, so no KLS slack) of sigma_party has the Gaussian's
        // zCDP bound at multiplier sigma_party / Δ (sigma_party rounded down, quotient too).
        let accounted_sigma = if config.plain {
            (noise.sigma_per_party() / sensitivity_ring)
                .next_down()
                .min(sigma)
        } else {
            sigma
        };
        let rdp_one_round = match config.accountant {
            AccountantKind::Rdp => {
                let mut one = sotto_dp::accounting::RdpAccountant::new();
                one.compose_poisson_subsampled_gaussian(config.sampling_rate, accounted_sigma, 1)?;
                Some(one)
            }
            AccountantKind::Pld => None,
        };
        Ok(PrivacyPlan {
            sigma,
            accounted_sigma,
            colluders: config.colluders(),
            honest_shares: if config.plain { 1 } else { honest },
            encoder,
            sensitivity_ring,
            noise,
            threshold: t,
            sampling_rate: config.sampling_rate,
            delta: config.delta,
            accountant: config.accountant,
            rdp_one_round,
        })
    }

    /// What the epsilon protects and against whom, in words (printed and in the report).
    pub fn guarantee(&self, plain: bool) -> String {
        if plain {
            "any one record of any party (added or removed); plain mode: the aggregator \
             sees every party's update with only that party's own noise share (no input \
             privacy)"
                .to_owned()
        } else {
            let who = match self.colluders {
                0 => {
                    "the aggregator, assuming no party colludes with it (--colluders 0)".to_owned()
                }
                1 => "the aggregator colluding with up to 1 party".to_owned(),
                c => format!("the aggregator colluding with up to {c} parties"),
            };
            format!(
                "any one record of any party (added or removed), against {who}; {} honest \
                 noise share{} counted per round",
                self.honest_shares,
                if self.honest_shares == 1 { "" } else { "s" }
            )
        }
    }

    /// Epsilon after `rounds` rounds: `dp_sgd_epsilon(q, accounted_sigma, rounds, delta)`.
    ///
    /// # Errors
    /// [`crate::Error::Dp`] if the accountant fails.
    pub fn epsilon_after(&self, rounds: u64) -> crate::Result<f64> {
        if let (Some(one), true) = (&self.rdp_one_round, rounds > 0) {
            return Ok(one.repeated(rounds).epsilon(self.delta)?);
        }
        Ok(dp_sgd_epsilon(
            self.sampling_rate,
            self.accounted_sigma,
            rounds,
            self.delta,
            self.accountant,
        )?)
    }

    /// The standard deviation of the noise in the released sum, in gradient units, with
    /// `survivors` shares in it.
    pub fn noise_std(&self, survivors: usize) -> f64 {
        self.noise.sigma_per_party() * (survivors as f64).sqrt() / self.encoder.scale()
    }
}

/// Time spent in one round, in seconds. Parties work in parallel: their figures are the
/// largest over the survivors.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RoundTiming {
    /// Loading the model, Poisson sampling and the clipped gradient sum (slowest party).
    pub local_compute: f64,
    /// Encoding, the noise share and the SecAgg client's key agreement, secret sharing and
    /// masking (slowest party); encoding and noise only in plain mode. The key agreement,
    /// secret sharing and mask expansion run while the party computes its update, so
    /// `local_compute + masking` can exceed the time they add to the round.
    pub masking: f64,
    /// The aggregator's protocol work: checking and routing messages and unmasking the sum
    /// (reconstructing dropped parties' masks); summing in plain mode.
    pub unmasking: f64,
    /// The rest of the aggregation: messages in flight and waiting (the round's wall time at
    /// the aggregator minus the three figures above, at least 0; overlapping work makes it an
    /// underestimate).
    pub network: f64,
    /// Decoding and the optimizer step at the aggregator.
    pub step: f64,
    /// Evaluating the model on the test data (not part of the protocol).
    pub eval: f64,
}

/// Progress after one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    /// 1-based round number.
    pub round: u64,
    /// Mean test loss of the new model (not private; for the data owner).
    pub loss: f64,
    /// Test accuracy of the new model.
    pub accuracy: f64,
    /// Epsilon spent after this round.
    pub epsilon: f64,
    /// Parties whose update is in this round's sum (transport ids).
    pub survivors: Vec<PartyId>,
    /// Bytes sent and received by the aggregator in this round (QUIC and TLS overhead
    /// included).
    pub bytes: u64,
    /// Wall time of the round (model broadcast to evaluation).
    pub seconds: f64,
    /// The split of the round's time.
    pub timing: RoundTiming,
}

/// The result of a multi-party training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederatedReport {
    /// `"secure"` (SecAgg) or `"plain"` (unmasked, still noised).
    pub mode: String,
    /// Final test accuracy.
    pub accuracy: f64,
    /// Final mean test loss.
    pub test_loss: f64,
    /// Final epsilon.
    pub epsilon: f64,
    /// Delta.
    pub delta: f64,
    /// Noise multiplier of what the aggregator sees ([`PrivacyPlan::accounted_sigma`]): the
    /// epsilon is `sotto account dp-sgd` at this multiplier, `sampling_rate`, `rounds` and
    /// `delta`.
    pub noise_multiplier: f64,
    /// Parties assumed to collude with the aggregator.
    pub colluders: usize,
    /// Honest noise shares counted in every round (1 in plain mode).
    pub honest_shares: usize,
    /// What the epsilon protects and against whom, in words.
    pub guarantee: String,
    /// Sampling rate `q`.
    pub sampling_rate: f64,
    /// Rounds run.
    pub rounds: u64,
    /// Number of parties.
    pub parties: usize,
    /// Threshold `t`.
    pub threshold: usize,
    /// Records of all parties.
    pub records: usize,
    /// Trained parameters (the vector length of each update).
    pub dim: usize,
    /// The accountant.
    pub accountant: AccountantKind,
    /// Sensitivity of the encoded sum in ring units (`scale * R' + 2 sqrt(d)`, `R'` with the
    /// float error of the clipped sum charged).
    pub sensitivity_ring: f64,
    /// Fixed-point scale.
    pub scale: f64,
    /// Parties dropped during the run.
    pub dropped: Vec<PartyId>,
    /// Why the run stopped early (`None` when it ran all rounds).
    pub stopped: Option<String>,
    /// Per-round metrics.
    pub metrics: Vec<RoundMetrics>,
    /// Membership-inference audit (members: all parties' records; non-members: test data).
    pub audit: Option<MiaReport>,
}

/// Errors of a multi-party run. Each says who is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A training problem: bad settings (naming the field), data, tensors, accounting.
    #[error(transparent)]
    Training(#[from] crate::Error),
    /// A secure-aggregation protocol error, or too few survivors.
    #[error("secure aggregation: {0}")]
    Protocol(#[from] sotto_mpc::Error),
    /// A transport failure (certificates, refused or lost connections, timeouts).
    #[error("transport: {0}")]
    Transport(#[from] sotto_mpc::transport::Error),
    /// The aggregator sent something unexpected, or a task failed.
    #[error("{0}")]
    Run(String),
}

/// `Result` with the multi-party [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Envelope round of the aggregator's round-start message (model broadcast), after the SecAgg
/// rounds `0..=3`.
pub const START: u64 = 8;
/// Envelope round of a party's timing report.
pub const TIMING: u64 = 9;
/// Envelope round of a plain (unmasked) update.
pub const PLAIN_UPDATE: u64 = 2;

/// The session of training round `round` (0-based) of the run `run`: distinct per round, so
/// a message of one round is rejected in another.
pub fn round_session(run: SessionId, round: u64) -> SessionId {
    let mut bytes = run.0;
    let tag = (round.wrapping_add(1)).to_be_bytes();
    for (b, t) in bytes.iter_mut().skip(8).zip(tag) {
        *b ^= t;
    }
    SessionId(bytes)
}

/// The largest [`FederatedConfig::key_batch`].
pub const MAX_KEY_BATCH: u64 = 1024;

/// The aggregator's message at the start of a round: the current model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundStart {
    /// 0-based round.
    pub round: u64,
    /// Rounds `[first, end)` whose key rounds run now, during this round's local compute
    /// (`first` is this round); `None` when this round's key rounds ran earlier (or in plain
    /// mode). See [`FederatedConfig::key_batch`].
    pub key_rounds: Option<(u64, u64)>,
    /// All model parameters (`Model::to_flat`).
    pub model: Vec<f32>,
    /// `true`: training is over and `model` is the final model.
    pub done: bool,
    /// Parties in this round.
    pub parties: Vec<PartyId>,
}

/// A party's timing report after a round (for benchmarking; see `docs/federated.md`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PartyTiming {
    /// Seconds of local compute.
    pub compute: f64,
    /// Seconds of encoding, noise and masking.
    pub masking: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_named() {
        let c = FederatedConfig::default();
        assert!(c.validate(1438).is_ok());
        let bad = |f: fn(&mut FederatedConfig), name: &str| {
            let mut c = FederatedConfig::default();
            f(&mut c);
            let e = c.validate(1438).unwrap_err().to_string();
            assert!(e.contains(name), "{e}");
        };
        bad(|c| c.parties = 1, "parties");
        bad(|c| c.threshold = Some(2), "threshold");
        bad(|c| c.threshold = Some(5), "threshold");
        bad(|c| c.colluders = Some(3), "colluders");
        bad(|c| c.rounds = 0, "rounds");
        bad(|c| c.sampling_rate = f64::NAN, "sampling_rate");
        bad(|c| c.delta = 0.01, "delta");
        bad(|c| c.scale = -1.0, "scale");
        bad(|c| c.round_deadline_secs = Some(0.0), "round_deadline_secs");
        bad(|c| c.key_batch = 0, "key_batch");
        bad(|c| c.key_batch = 5000, "key_batch");
        bad(
            |c| {
                c.target_epsilon = None;
                c.noise_multiplier = None
            },
            "noise_multiplier",
        );
    }

    #[test]
    fn plan_charges_rounding_and_meets_the_gaussian() {
        let c = FederatedConfig::default();
        let plan = c.plan(1438, 360, 650, 1).unwrap();
        assert!(plan.sensitivity_ring > 65536.0);
        assert!(plan.sensitivity_ring < 65536.0 * 1.001);
        // the t - c honest shares of any t survivors reach sigma * Δ (default c = t - 1 = 2:
        // one honest share)
        assert_eq!((plan.colluders, plan.honest_shares), (2, 1));
        let h = plan.honest_shares as f64;
        assert!(plan.noise.sigma_per_party() * h.sqrt() >= plan.sigma * plan.sensitivity_ring);
        assert_eq!(plan.accounted_sigma, plan.sigma);
        let eps = plan.epsilon_after(100).unwrap();
        assert!(eps <= 2.0 && eps > 1.9, "{eps}");
        // with every party surviving there is more noise, never less
        assert!(plan.noise_std(4) > plan.noise_std(3));
    }

    /// The issue's case: 4 parties, t = 3, 2 colluders. The honest share alone has the
    /// multiplier's standard deviation (measured), and the epsilon is the accountant's at
    /// that multiplier. Trusting every party (c = 0) spreads the noise over 3 shares.
    #[test]
    fn colluders_calibrate_the_honest_shares() {
        let c = FederatedConfig {
            threshold: Some(3),
            colluders: Some(2),
            noise_multiplier: Some(1.5),
            target_epsilon: None,
            ..FederatedConfig::default()
        };
        let plan = c.plan(1438, 360, 650, 1).unwrap();
        assert_eq!(plan.honest_shares, 1);
        let mut share = vec![0u64; 1 << 16];
        plan.noise
            .add_share(&mut share, &mut sotto_dp::rng::seeded_rng(3));
        let var = share
            .iter()
            .map(|&w| (w as i64 as f64).powi(2))
            .sum::<f64>()
            / share.len() as f64;
        let measured = var.sqrt() / plan.sensitivity_ring;
        // Relative sd of the estimate: sqrt(2 / 65536) = 0.55%; 5 sd.
        assert!((measured / 1.5 - 1.0).abs() < 0.028, "{measured}");
        let direct = dp_sgd_epsilon(c.sampling_rate, 1.5, 100, c.delta, c.accountant).unwrap();
        assert_eq!(plan.epsilon_after(100).unwrap(), direct);
        let trusting = FederatedConfig {
            colluders: Some(0),
            ..c.clone()
        }
        .plan(1438, 360, 650, 1)
        .unwrap();
        assert_eq!(trusting.honest_shares, 3);
        let ratio = plan.noise.sigma_per_party() / trusting.noise.sigma_per_party();
        assert!((ratio / 3f64.sqrt() - 1.0).abs() < 0.01, "{ratio}");
        assert_eq!(trusting.epsilon_after(100).unwrap(), direct);
    }

    /// Plain mode reports the epsilon of one party's share, which is what the aggregator
    /// sees, not the secure-mode epsilon.
    #[test]
    fn plain_mode_accounts_one_share() {
        let secure = FederatedConfig {
            colluders: Some(0),
            noise_multiplier: Some(2.0),
            target_epsilon: None,
            ..FederatedConfig::default()
        };
        let plain = FederatedConfig {
            plain: true,
            ..secure.clone()
        };
        let s = secure.plan(1438, 360, 650, 1).unwrap();
        let p = plain.plan(1438, 360, 650, 1).unwrap();
        // 3 honest shares in secure mode: one share has about 2 / sqrt(3).
        let one = 2.0 / 3f64.sqrt();
        assert!(p.accounted_sigma <= one * 1.001 && p.accounted_sigma >= one * 0.999);
        assert!(p.accounted_sigma <= p.noise.sigma_per_party() / p.sensitivity_ring);
        assert!(p.epsilon_after(100).unwrap() > 1.5 * s.epsilon_after(100).unwrap());
        // With the default (c = t - 1) one share already carries sigma: the same epsilon.
        let default_plain = FederatedConfig {
            colluders: None,
            ..plain
        }
        .plan(1438, 360, 650, 1)
        .unwrap();
        assert!((default_plain.accounted_sigma / 2.0 - 1.0).abs() < 1e-3);
    }

    #[test]
    fn cached_rdp_epsilon_equals_the_accountant() {
        // `epsilon_after` scales one round's RDP instead of recomputing it: the result must be
        // the accountant's, bit for bit, at every round count (PLD is not cached).
        for accountant in [AccountantKind::Rdp, AccountantKind::Pld] {
            let c = FederatedConfig {
                accountant,
                ..FederatedConfig::default()
            };
            let plan = c.plan(1438, 360, 650, 1).unwrap();
            let rounds: &[u64] = match accountant {
                AccountantKind::Rdp => &[0, 1, 2, 3, 17, 100, 101, 5000],
                AccountantKind::Pld => &[0, 1, 100],
            };
            for &r in rounds {
                let direct = dp_sgd_epsilon(
                    c.sampling_rate,
                    plan.accounted_sigma,
                    r,
                    c.delta,
                    accountant,
                )
                .unwrap();
                assert_eq!(
                    plan.epsilon_after(r).unwrap().to_bits(),
                    direct.to_bits(),
                    "{accountant:?} after {r} rounds"
                );
            }
        }
    }

    #[test]
    fn round_sessions_differ() {
        let s = SessionId([7; 16]);
        assert_ne!(round_session(s, 0), round_session(s, 1));
        assert_ne!(round_session(s, 0), s);
        assert_eq!(round_session(s, 5), round_session(s, 5));
    }

    #[test]
    fn config_reads_toml_and_rejects_unknown_fields() {
        let c: FederatedConfig = serde_json::from_str(r#"{"parties":3,"rounds":5}"#).unwrap();
        assert_eq!(c.parties, 3);
        assert!(serde_json::from_str::<FederatedConfig>(r#"{"partys":3}"#).is_err());
    }
}
