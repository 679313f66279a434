//! A seeded in-memory simulator of the aggregator protocol: n parties and an aggregator on a
//! virtual clock, with dropouts at any round, random latency, delayed (late) and duplicated
//! messages, and a hook to tamper with frames in transit. Messages travel as wire frames
//! ([`crate::wire`]), so the codec is exercised too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::error::{Error, PartyId, Peer, Result};
use crate::ring::RingWord;
use crate::secagg::aggregator::AggregatorStats;
use crate::secagg::{
    AggregateOutput, ClientMessage, Round, SecAggAggregator, SecAggClient, SecAggConfig,
    ServerMessage,
};
use crate::wire;

/// A frame in transit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Sender.
    pub from: Peer,
    /// Recipient.
    pub to: Peer,
    /// The protocol round the frame belongs to.
    pub round: Round,
    /// The encoded message.
    pub bytes: Vec<u8>,
}

/// A hook that may modify (tamper with) each frame before delivery; it runs once per frame.
pub type TamperHook = Box<dyn FnMut(&mut Envelope)>;

/// Options of a simulation.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Seed of all randomness (parties' keys, masks, latencies).
    pub seed: u64,
    /// Round timeout of the aggregator.
    pub round_timeout: Duration,
    /// Latency range of a frame.
    pub latency: (Duration, Duration),
    /// Probability that a frame is delivered twice.
    pub duplicate_probability: f64,
    /// Probability that a frame is delayed by `delay` (usually past the round deadline).
    pub delay_probability: f64,
    /// Extra delay of a delayed frame.
    pub delay: Duration,
    /// Party `p` drops before sending its message of round `r` (and stays silent).
    pub dropouts: BTreeMap<PartyId, Round>,
    /// Frames of party `p` in round `r` are delayed by `delay` (a late message).
    pub delayed: BTreeMap<PartyId, Round>,
    /// Record every frame the aggregator receives (its view).
    pub record_view: bool,
    /// One party's long-term keys per party, for a config built with
    /// [`SecAggConfig::with_run_keys`] (empty for per-session keys). Reuse them across
    /// simulations to simulate the sessions of one run.
    pub run_keys: Vec<std::sync::Arc<crate::secagg::RunKeys>>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            round_timeout: Duration::from_secs(1),
            latency: (Duration::from_millis(1), Duration::from_millis(20)),
            duplicate_probability: 0.0,
            delay_probability: 0.0,
            delay: Duration::from_secs(3),
            dropouts: BTreeMap::new(),
            delayed: BTreeMap::new(),
            record_view: false,
            run_keys: Vec::new(),
        }
    }
}

/// What a simulation produced.
#[derive(Debug)]
pub struct SimReport<W: RingWord> {
    /// The aggregator's outcome.
    pub result: Result<AggregateOutput<W>>,
    /// Messages the aggregator rejected.
    pub aggregator_rejections: Vec<Error>,
    /// Messages parties rejected (and fatal party errors).
    pub client_errors: Vec<(PartyId, Error)>,
    /// Parties caught with bad shares during unmasking.
    pub misbehaved: Vec<Error>,
    /// Bytes each party sent, per round.
    pub bytes_sent: BTreeMap<PartyId, BTreeMap<Round, usize>>,
    /// Every frame the aggregator received, decoded (if `record_view`).
    pub aggregator_view: Vec<(PartyId, ClientMessage<W>)>,
    /// The aggregator's work counters.
    pub stats: AggregatorStats,
}

/// The simulator.
pub struct Simulation<W: RingWord> {
    aggregator: SecAggAggregator<W>,
    clients: Vec<SecAggClient<W>>,
    client_rngs: Vec<ChaCha20Rng>,
    dead: BTreeSet<PartyId>,
    net_rng: ChaCha20Rng,
    queue: BTreeMap<(Instant, u64), Envelope>,
    seq: u64,
    now: Instant,
    options: SimOptions,
    tamper: Option<TamperHook>,
    report: SimReport<W>,
}

impl<W: RingWord> std::fmt::Debug for Simulation<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("parties", &self.clients.len())
            .finish_non_exhaustive()
    }
}

impl<W: RingWord> Simulation<W> {
    /// A simulation of `config` with one input per party (already encoded and noised).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if the number of inputs is not `config.parties()` or an
    /// input has the wrong length.
    pub fn new(config: SecAggConfig, inputs: Vec<Vec<W>>, options: SimOptions) -> Result<Self> {
        if inputs.len() != config.parties() {
            return Err(Error::invalid(
                "inputs",
                inputs.len(),
                format!("one input per party ({}) is needed", config.parties()),
            ));
        }
        let run_keys = config.uses_run_keys();
        if run_keys && options.run_keys.len() != config.parties() {
            return Err(Error::invalid(
                "run_keys",
                options.run_keys.len(),
                format!(
                    "the config uses run keys: give one RunKeys per party ({})",
                    config.parties()
                ),
            ));
        }
        let clients = inputs
            .into_iter()
            .enumerate()
            .map(|(i, x)| {
                let client = SecAggClient::new(config.clone(), PartyId(i as u32), x)?;
                match options.run_keys.get(i).filter(|_| run_keys) {
                    Some(keys) => client.with_run_keys(std::sync::Arc::clone(keys)),
                    None => Ok(client),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let client_rngs = (0..clients.len() as u64)
            .map(|i| {
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&options.seed.to_le_bytes());
                s[8..16].copy_from_slice(&i.to_le_bytes());
                s[16..].copy_from_slice(b"sotto-sim-client");
                ChaCha20Rng::from_seed(s)
            })
            .collect();
        let mut net = [0u8; 32];
        net[..8].copy_from_slice(&options.seed.to_le_bytes());
        net[8..].copy_from_slice(b"sotto-sim-network-rand!!");
        Ok(Self {
            aggregator: SecAggAggregator::new(config, options.round_timeout),
            clients,
            client_rngs,
            dead: BTreeSet::new(),
            net_rng: ChaCha20Rng::from_seed(net),
            queue: BTreeMap::new(),
            seq: 0,
            now: Instant::now(),
            options,
            tamper: None,
            report: SimReport {
                result: Err(Error::InvalidState("not run".into())),
                aggregator_rejections: Vec::new(),
                client_errors: Vec::new(),
                misbehaved: Vec::new(),
                bytes_sent: BTreeMap::new(),
                aggregator_view: Vec::new(),
                stats: AggregatorStats::default(),
            },
        })
    }

    /// Installs a tampering hook.
    pub fn with_tamper(mut self, hook: TamperHook) -> Self {
        self.tamper = Some(hook);
        self
    }

    fn unit(&mut self) -> f64 {
        (self.net_rng.next_u64() >> 11) as f64 / 9_007_199_254_740_992.0
    }

    fn schedule(&mut self, mut env: Envelope) {
        if let Some(h) = self.tamper.as_mut() {
            h(&mut env);
        }
        let copies = if self.unit() < self.options.duplicate_probability {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let (lo, hi) = self.options.latency;
            let span = hi.saturating_sub(lo).as_nanos() as f64;
            let mut at = self.now + lo + Duration::from_nanos((span * self.unit()) as u64);
            let forced = match env.from {
                Peer::Party(p) => self.options.delayed.get(&p) == Some(&env.round),
                Peer::Aggregator => false,
            };
            if self.unit() < self.options.delay_probability || forced {
                at += self.options.delay;
            }
            self.seq += 1;
            self.queue.insert((at, self.seq), env.clone());
        }
    }

    fn flush_client(&mut self, i: usize) {
        let id = PartyId(i as u32);
        while let Some(msg) = self.clients.get_mut(i).and_then(|c| c.poll_transmit()) {
            let round = msg.kind_round();
            if self.options.dropouts.get(&id).is_some_and(|r| *r <= round) {
                self.dead.insert(id);
            }
            if self.dead.contains(&id) {
                continue;
            }
            let Ok(bytes) = wire::encode(&msg) else {
                continue;
            };
            *self
                .report
                .bytes_sent
                .entry(id)
                .or_default()
                .entry(round)
                .or_default() += bytes.len();
            self.schedule(Envelope {
                from: Peer::Party(id),
                to: Peer::Aggregator,
                round,
                bytes,
            });
        }
    }

    fn flush_aggregator(&mut self) {
        while let Some((to, msg)) = self.aggregator.poll_transmit() {
            let round = msg.header().round;
            let Ok(bytes) = wire::encode(&msg) else {
                continue;
            };
            self.schedule(Envelope {
                from: Peer::Aggregator,
                to: Peer::Party(to),
                round,
                bytes,
            });
        }
    }

    fn deliver(&mut self, env: Envelope) {
        match (env.from, env.to) {
            (Peer::Party(from), Peer::Aggregator) => {
                match wire::decode_from::<ClientMessage<W>>(env.from, &env.bytes) {
                    Ok(msg) => {
                        if self.options.record_view {
                            self.report.aggregator_view.push((from, msg.clone()));
                        }
                        if let Err(e) = self.aggregator.handle_message(self.now, from, msg) {
                            self.report.aggregator_rejections.push(e);
                        }
                    }
                    Err(e) => self.report.aggregator_rejections.push(e),
                }
                self.flush_aggregator();
            }
            (Peer::Aggregator, Peer::Party(to)) => {
                let i = to.index();
                if self.dead.contains(&to) || i >= self.clients.len() {
                    return;
                }
                let r =
                    wire::decode_from::<ServerMessage>(env.from, &env.bytes).and_then(
                        |msg| match (self.clients.get_mut(i), self.client_rngs.get_mut(i)) {
                            (Some(c), Some(rng)) => c.handle_message(msg, rng),
                            _ => Ok(()),
                        },
                    );
                if let Err(e) = r {
                    self.report.client_errors.push((to, e));
                }
                self.flush_client(i);
            }
            _ => {}
        }
    }

    /// Runs the protocol to its end and reports.
    pub fn run(mut self) -> SimReport<W> {
        if let Err(e) = self.aggregator.start(self.now) {
            self.report.result = Err(e);
            return self.report;
        }
        for i in 0..self.clients.len() {
            let id = PartyId(i as u32);
            if self.options.dropouts.get(&id) == Some(&Round::AdvertiseKeys) {
                self.dead.insert(id);
                continue;
            }
            if let (Some(c), Some(rng)) = (self.clients.get_mut(i), self.client_rngs.get_mut(i))
                && let Err(e) = c.start(rng)
            {
                self.report.client_errors.push((id, e));
            }
            self.flush_client(i);
        }
        // Bounded: every step either delivers a queued frame or closes a round.
        for _ in 0..10_000_000u64 {
            if self.aggregator.result().is_some() {
                break;
            }
            let next_msg = self.queue.keys().next().copied();
            let timeout = self.aggregator.poll_timeout();
            match (next_msg, timeout) {
                (Some((t, s)), to) if to.is_none_or(|d| t <= d) => {
                    self.now = self.now.max(t);
                    if let Some(env) = self.queue.remove(&(t, s)) {
                        self.deliver(env);
                    }
                }
                (_, Some(d)) => {
                    self.now = self.now.max(d);
                    self.aggregator.handle_timeout(self.now);
                    self.flush_aggregator();
                }
                _ => break,
            }
        }
        // Deliver what is still in flight (late frames get rejected).
        let rest: Vec<Envelope> = std::mem::take(&mut self.queue).into_values().collect();
        for env in rest {
            if env.to == Peer::Aggregator {
                self.deliver(env);
            }
        }
        self.report.misbehaved = self.aggregator.misbehaved().to_vec();
        self.report.stats = self.aggregator.stats();
        self.report.result = self
            .aggregator
            .take_result()
            .unwrap_or_else(|| Err(Error::InvalidState("the protocol did not finish".into())));
        self.report
    }
}
