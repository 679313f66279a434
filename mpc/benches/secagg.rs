//! Benchmarks of the secure-aggregation core (criterion, fixed seeds).
//!
//! Run (all):  cargo bench -p sotto-mpc --bench secagg
//! One group:  cargo bench -p sotto-mpc --bench secagg -- prg
//!
//! Groups:
//! - `prg/{raw_chacha,mask_u32,mask_u64}/d`: mask expansion against the raw rand_chacha
//!   keystream (`ChaCha20Rng::fill_bytes`) of the same number of bytes (the baseline);
//! - `client_masking/{graph}-n{n}-drop{p}/d`: one party's round 2 (decrypt shares, key
//!   agreement, self mask and pairwise masks);
//! - `aggregator_unmask/{graph}-n{n}-drop{p}/d`: the aggregator's round 3 (validate shares,
//!   reconstruct and check secrets, expand and remove masks).
//!
//! After criterion's output, the binary prints a table of medians and ratios against the raw
//! keystream rate measured in the same run, and the wire size per party.
//!
//! Fixture note: parties that are not being timed are built with a 1-word input (their
//! messages in rounds 0, 1 and 3 do not depend on the dimension) and the aggregator's masked
//! inputs are a fixed dummy vector of the right length: the unmasking work does not depend on the
//! vector contents, and the protocol's correctness is tested in `tests/`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sotto_dp::rng::seeded_rng;
use sotto_mpc::prg::{self, Seed};
use sotto_mpc::secagg::hazmat::{accept_shares_without_masking, duplicate_client};
use sotto_mpc::secagg::{
    ClientMessage, SecAggAggregator, SecAggClient, SecAggConfig, ServerMessage, SessionId,
    SparseParams,
};
use sotto_mpc::{PartyId, wire};

static TIMES: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());
static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record(name: &str, secs: f64) {
    TIMES
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default()
        .push(secs);
}

fn median(name: &str) -> Option<f64> {
    let t = TIMES.lock().unwrap();
    let mut v = t.get(name)?.clone();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied()
}

fn filter_allows(id: &str) -> bool {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    // Criterion's filter is a regex; alternatives `a|b` of plain substrings, each optionally
    // anchored at the end with `$` (e.g. `drop10/10000$` leaves out `/1000000`), are
    // understood here.
    args.is_empty()
        || args.iter().any(|f| {
            f.split('|').any(|alt| match alt.strip_suffix('$') {
                Some(a) => id.ends_with(a),
                None => id.contains(alt),
            })
        })
}

/// Times `routine` on fresh `setup()` output per iteration, records the per-iteration mean.
fn timed<S, R>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    key: String,
    mut setup: impl FnMut() -> S,
    mut routine: R,
) where
    R: FnMut(S),
{
    c.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let input = setup();
                let start = Instant::now();
                routine(input);
                total += start.elapsed();
            }
            record(&key, total.as_secs_f64() / iters as f64);
            let target = WORDS_NOW.load(std::sync::atomic::Ordering::Relaxed);
            if let Some(per_word) = interleaved_raw_per_word(target) {
                RAW_SAMPLES
                    .lock()
                    .unwrap()
                    .entry(key.clone())
                    .or_default()
                    .push(per_word);
            }
            total
        })
    });
}

const DIMS: [usize; 2] = [10_000, 1_000_000];

fn bench_prg(c: &mut Criterion) {
    let mut g = c.benchmark_group("prg");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for d in DIMS {
        if !filter_allows(&format!("prg/raw_chacha/{d}")) && !filter_allows("prg") {
            continue;
        }
        let mut buf = vec![0u8; 4 * d];
        timed(
            &mut g,
            BenchmarkId::new("raw_chacha_4B", d),
            format!("raw4/{d}"),
            || (),
            |_| {
                let mut rng = ChaCha20Rng::from_seed([7; 32]);
                rng.fill_bytes(&mut buf);
                black_box(&buf);
            },
        );
        let mut buf8 = vec![0u8; 8 * d];
        timed(
            &mut g,
            BenchmarkId::new("raw_chacha_8B", d),
            format!("raw8/{d}"),
            || (),
            |_| {
                let mut rng = ChaCha20Rng::from_seed([7; 32]);
                rng.fill_bytes(&mut buf8);
                black_box(&buf8);
            },
        );
        let seed = Seed::from_bytes([7; 32]);
        let mut v32 = vec![0u32; d];
        timed(
            &mut g,
            BenchmarkId::new("mask_u32", d),
            format!("mask32/{d}"),
            || (),
            |_| {
                prg::add_mask(&seed, &mut v32);
                black_box(&v32);
            },
        );
        let mut v64 = vec![0u64; d];
        timed(
            &mut g,
            BenchmarkId::new("mask_u64", d),
            format!("mask64/{d}"),
            || (),
            |_| {
                prg::add_mask(&seed, &mut v64);
                black_box(&v64);
            },
        );
    }
    g.finish();
}

struct Fixture {
    /// Party 0 before its round-2 shares arrived.
    client0: SecAggClient<u32>,
    shares0: ServerMessage,
    client0_words: u64,
    aggregator: SecAggAggregator<u32>,
    unmask: Vec<(PartyId, ClientMessage<u32>)>,
    now: Instant,
    upload: usize,
    download: usize,
}

fn fixture(n: usize, d: usize, sparse: Option<SparseParams>, drop: f64) -> Fixture {
    let mut session = [0u8; 16];
    session[..8].copy_from_slice(&(n as u64 * 1_000_003 + d as u64).to_le_bytes());
    let t = n / 2 + 1;
    let mut config = SecAggConfig::new(SessionId(session), n, t, d).unwrap();
    let mut small = SecAggConfig::new(SessionId(session), n, t, 1).unwrap();
    if let Some(p) = sparse {
        config = config.sparse(p.degree, p.share_threshold).unwrap();
        small = small.sparse(p.degree, p.share_threshold).unwrap();
    }
    let mut rng = seeded_rng(1);
    let mut clients: Vec<SecAggClient<u32>> = (0..n)
        .map(|i| {
            if i == 0 {
                SecAggClient::new(config.clone(), PartyId(0), vec![3u32; d]).unwrap()
            } else {
                SecAggClient::new(small.clone(), PartyId(i as u32), vec![3u32]).unwrap()
            }
        })
        .collect();
    let now = Instant::now();
    let mut agg = SecAggAggregator::<u32>::new(config.clone(), Duration::from_secs(60));
    agg.start(now).unwrap();
    let mut upload = 0;
    let mut download = 0;
    let send = |agg: &mut SecAggAggregator<u32>, c: &mut SecAggClient<u32>, up: &mut usize| {
        while let Some(m) = c.poll_transmit() {
            if c.id() == PartyId(0) {
                *up += wire::encode(&m).unwrap().len();
            }
            agg.handle_message(now, c.id(), m).unwrap();
        }
    };
    for c in &mut clients {
        c.start(&mut rng).unwrap();
        send(&mut agg, c, &mut upload);
    }
    // Rosters.
    while let Some((to, m)) = agg.poll_transmit() {
        if to == PartyId(0) {
            download += wire::encode(&m).unwrap().len();
        }
        clients[to.index()].handle_message(m, &mut rng).unwrap();
    }
    for c in &mut clients {
        send(&mut agg, c, &mut upload);
    }
    // Shares: keep party 0's round-2 input for the client benchmark.
    let mut shares0 = None;
    let mut client0 = None;
    while let Some((to, m)) = agg.poll_transmit() {
        if to == PartyId(0) {
            download += wire::encode(&m).unwrap().len();
            shares0 = Some(m.clone());
            client0 = Some(duplicate_client(&clients[0]));
        }
        accept_shares_without_masking(&mut clients[to.index()], m).unwrap();
    }
    let shares0 = shares0.unwrap();
    let client0 = client0.unwrap();
    // Party 0 expands its self mask and one pairwise mask per neighbour that shared.
    let mut words = 0u64;
    if let ServerMessage::Shares { shares, .. } = &shares0 {
        words = (shares.len() as u64 + 1) * d as u64;
    }
    // Dropouts: a seeded choice of parties (never party 0) skip their masked input.
    let mut order: Vec<u32> = (1..n as u32).collect();
    let mut prng = ChaCha20Rng::from_seed([9; 32]);
    for i in (1..order.len()).rev() {
        order.swap(i, (prng.next_u64() % (i as u64 + 1)) as usize);
    }
    let dropped: Vec<u32> = order
        .into_iter()
        .take((n as f64 * drop).round() as usize)
        .collect();
    let masked = vec![0x1234_5678u32; d];
    for i in 0..n as u32 {
        if dropped.contains(&i) {
            continue;
        }
        let msg = ClientMessage::MaskedInput {
            header: sotto_mpc::secagg::Header {
                session: config.session(),
                round: sotto_mpc::secagg::Round::MaskedInput,
                from: sotto_mpc::Peer::Party(PartyId(i)),
                to: sotto_mpc::Peer::Aggregator,
            },
            masked: sotto_mpc::ring::RingVector(masked.clone()),
        };
        if i == 0 {
            upload += wire::encode(&msg).unwrap().len();
        }
        agg.handle_message(now, PartyId(i), msg).unwrap();
    }
    if agg.round() == Some(sotto_mpc::secagg::Round::MaskedInput) {
        agg.close_round(now); // the deadline of the dropped parties
    }
    let mut unmask = Vec::new();
    while let Some((to, m)) = agg.poll_transmit() {
        if to == PartyId(0) {
            download += wire::encode(&m).unwrap().len();
        }
        let c = &mut clients[to.index()];
        c.handle_message(m, &mut rng).unwrap();
        while let Some(u) = c.poll_transmit() {
            if to == PartyId(0) {
                upload += wire::encode(&u).unwrap().len();
            }
            unmask.push((to, u));
        }
    }
    Fixture {
        client0,
        shares0,
        client0_words: words,
        aggregator: agg,
        unmask,
        now,
        upload,
        download,
    }
}

fn cases() -> Vec<(String, usize, Option<SparseParams>)> {
    let sparse = SparseParams::recommended(1000, 0.3, 0.01, 20.0, 40.0).unwrap();
    NOTES.lock().unwrap().push(format!(
        "n = 1000 sparse graph: SparseParams::recommended(1000, dropout 0.3, corrupt 0.01, 20 bits, 40 bits) = degree {}, share threshold {} (log2 failure {:.1}, insecurity {:.1}, isolation {:.1})",
        sparse.degree, sparse.share_threshold, sparse.log2_failure, sparse.log2_insecurity, sparse.log2_isolation
    ));
    vec![
        ("complete-n10".into(), 10, None),
        ("complete-n100".into(), 100, None),
        ("sparse-n1000".into(), 1000, Some(sparse)),
    ]
}

fn bench_protocol(c: &mut Criterion) {
    for (name, n, sparse) in cases() {
        for d in DIMS {
            for drop in [0.0, 0.1, 0.3] {
                let tag = format!("{name}-drop{}/{d}", (drop * 100.0) as u32);
                let cm = format!("client_masking/{tag}");
                let au = format!("aggregator_unmask/{tag}");
                if !filter_allows(&cm) && !filter_allows(&au) {
                    continue;
                }
                let fx = fixture(n, d, sparse, drop);
                if drop == 0.0 && filter_allows(&cm) {
                    // Client masking does not depend on later dropouts: measured once per (n, d).
                    let mut g = c.benchmark_group("client_masking");
                    g.sample_size(10)
                        .warm_up_time(Duration::from_millis(500))
                        .measurement_time(Duration::from_secs(3));
                    let mut rng = seeded_rng(3);
                    let pre = pre_masking_copy(&fx);
                    local_raw_per_word(&format!("client/{name}/{d}"));
                    WORDS_NOW.store(fx.client0_words, std::sync::atomic::Ordering::Relaxed);
                    timed(
                        &mut g,
                        BenchmarkId::new(name.clone(), d),
                        format!("client/{name}/{d}"),
                        || (duplicate_client(&pre), fx.shares0.clone()),
                        |(mut cl, m)| {
                            cl.handle_message(m, &mut rng).unwrap();
                            black_box(cl.poll_transmit());
                        },
                    );
                    g.finish();
                    NOTES
                        .lock()
                        .unwrap()
                        .push(format!("client/{name}/{d}: PRG words {}", fx.client0_words));
                    // Wire size of party 0 with a real masked input.
                    let mut probe = duplicate_client(&pre);
                    probe.handle_message(fx.shares0.clone(), &mut rng).unwrap();
                    let masked_len = probe
                        .poll_transmit()
                        .map(|m| wire::encode(&m).unwrap().len())
                        .unwrap_or(0);
                    NOTES.lock().unwrap().push(format!(
                        "wire/{name}/{d}: party 0 uploads {} bytes, downloads {} bytes; masked-input frame {} bytes; raw ring vector {} bytes; upload / raw = {:.4}",
                        fx.upload, fx.download, masked_len, 4 * d, fx.upload as f64 / (4 * d) as f64
                    ));
                }
                if filter_allows(&au) {
                    let mut g = c.benchmark_group("aggregator_unmask");
                    g.sample_size(10)
                        .warm_up_time(Duration::from_millis(500))
                        .measurement_time(Duration::from_secs(3));
                    let mut probe = fx.aggregator.clone();
                    for (p, m) in fx.unmask.clone() {
                        probe.handle_message(fx.now, p, m).unwrap();
                    }
                    assert!(probe.result().unwrap().is_ok());
                    let words = probe.stats().prg_words;
                    NOTES.lock().unwrap().push(format!(
                        "aggregator/{tag}: PRG words {words}, survivors {}",
                        probe.survivors().len()
                    ));
                    let id = format!("{name}-drop{}", (drop * 100.0) as u32);
                    local_raw_per_word(&format!("agg/{tag}"));
                    WORDS_NOW.store(words, std::sync::atomic::Ordering::Relaxed);
                    timed(
                        &mut g,
                        BenchmarkId::new(id, d),
                        format!("agg/{tag}"),
                        || (fx.aggregator.clone(), fx.unmask.clone()),
                        |(mut a, msgs)| {
                            for (p, m) in msgs {
                                a.handle_message(fx.now, p, m).unwrap();
                            }
                            black_box(a.take_result());
                        },
                    );
                    g.finish();
                    WORDS.lock().unwrap().insert(format!("agg/{tag}"), words);
                }
                if drop == 0.0 {
                    WORDS
                        .lock()
                        .unwrap()
                        .insert(format!("client/{name}/{d}"), fx.client0_words);
                }
            }
        }
    }
}

static WORDS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
/// Raw keystream cost per word, measured right after every sample of a protocol benchmark.
static RAW_SAMPLES: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());
static INTERLEAVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The PRG words of the protocol case being timed (for the interleaved baseline).
static WORDS_NOW: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A raw keystream run of `words` words (capped at 10^8), timed, right after a protocol sample:
/// a sustained run of similar length, because this shared machine runs short bursts about twice
/// as fast as sustained work (a lone 4 MB fill is not a fair baseline).
fn interleaved_raw_per_word(words: u64) -> Option<f64> {
    if !INTERLEAVE.load(std::sync::atomic::Ordering::Relaxed) || words == 0 {
        return None;
    }
    let words = words.min(100_000_000) as usize;
    let chunk = words.min(1_000_000);
    let mut buf = vec![0u8; 4 * chunk];
    let mut done = 0;
    let s = Instant::now();
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    while done < words {
        let n = chunk.min(words - done);
        rng.fill_bytes(&mut buf[..4 * n]);
        black_box(&buf);
        done += n;
    }
    Some(s.elapsed().as_secs_f64() / words as f64)
}
/// Raw keystream seconds per u32 word, measured right before each protocol benchmark.
static LOCAL_RAW: Mutex<BTreeMap<String, f64>> = Mutex::new(BTreeMap::new());

/// The raw rand_chacha keystream cost per 4-byte word now (median of 21 fills of 4 MB), so a
/// protocol benchmark's ratio uses a baseline measured under the same machine load.
fn local_raw_per_word(key: &str) {
    let words = 1_000_000usize;
    let mut buf = vec![0u8; 4 * words];
    let mut t: Vec<f64> = (0..21)
        .map(|_| {
            let s = Instant::now();
            let mut rng = ChaCha20Rng::from_seed([7; 32]);
            rng.fill_bytes(&mut buf);
            black_box(&buf);
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    LOCAL_RAW
        .lock()
        .unwrap()
        .insert(key.to_string(), t[10] / words as f64);
}

/// A copy of party 0 as it was before its round-2 shares arrived.
fn pre_masking_copy(fx: &Fixture) -> SecAggClient<u32> {
    duplicate_client(&fx.client0)
}

/// Interleaved (paired) runs of the raw keystream and the mask expansion, so that load changes
/// on a shared machine hit both alike; medians of 41 runs each.
fn paired_prg() {
    if !filter_allows("prg/paired") {
        return;
    }
    for d in DIMS {
        let seed = Seed::from_bytes([7; 32]);
        for (bytes_per_word, label) in [(4usize, "u32"), (8, "u64")] {
            let mut buf = vec![0u8; bytes_per_word * d];
            let mut v32 = vec![0u32; d];
            let mut v64 = vec![0u64; d];
            let mut raw = Vec::new();
            let mut mask = Vec::new();
            for _ in 0..41 {
                let s = Instant::now();
                let mut rng = ChaCha20Rng::from_seed([7; 32]);
                rng.fill_bytes(&mut buf);
                black_box(&buf);
                raw.push(s.elapsed().as_secs_f64());
                let s = Instant::now();
                if bytes_per_word == 4 {
                    prg::add_mask(&seed, &mut v32);
                    black_box(&v32);
                } else {
                    prg::add_mask(&seed, &mut v64);
                    black_box(&v64);
                }
                mask.push(s.elapsed().as_secs_f64());
            }
            raw.sort_by(|a, b| a.total_cmp(b));
            mask.sort_by(|a, b| a.total_cmp(b));
            let (r, m) = (raw[20], mask[20]);
            NOTES.lock().unwrap().push(format!(
                "prg/paired d={d} {label}: raw keystream {:.3} ms, mask expansion {:.3} ms, mask rate / raw rate = {:.3}",
                r * 1e3,
                m * 1e3,
                r / m
            ));
        }
    }
}

fn report() {
    println!("\n=== sotto-mpc secagg benchmark summary (medians of per-iteration means) ===");
    for d in DIMS {
        if let (Some(raw), Some(m32)) =
            (median(&format!("raw4/{d}")), median(&format!("mask32/{d}")))
        {
            println!(
                "prg d={d}: raw keystream 4d bytes {:.3} ms, mask_u32 {:.3} ms, mask rate / raw rate = {:.3}",
                raw * 1e3,
                m32 * 1e3,
                raw / m32
            );
        }
        if let (Some(raw), Some(m64)) =
            (median(&format!("raw8/{d}")), median(&format!("mask64/{d}")))
        {
            println!(
                "prg d={d}: raw keystream 8d bytes {:.3} ms, mask_u64 {:.3} ms, mask rate / raw rate = {:.3}",
                raw * 1e3,
                m64 * 1e3,
                raw / m64
            );
        }
    }
    let words = WORDS.lock().unwrap().clone();
    let local = LOCAL_RAW.lock().unwrap().clone();
    for (key, w) in &words {
        let Some(t) = median(key) else { continue };
        let interleaved = RAW_SAMPLES.lock().unwrap().get(key).map(|v| {
            let mut v = v.clone();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        });
        if let Some(per_word) = interleaved {
            let prg = per_word * *w as f64;
            println!(
                "{key}: interleaved sustained baseline: raw keystream for the PRG words {:.3} ms; time / PRG time = {:.3} (work beyond PRG: {:.1}%)",
                prg * 1e3,
                t / prg,
                (t / prg - 1.0) * 100.0
            );
        }
        match local.get(key) {
            Some(per_word) => {
                let prg = per_word * *w as f64;
                println!(
                    "{key}: median {:.3} ms; PRG words {w}; raw keystream for them {:.3} ms (rate measured just before); time / PRG time = {:.3} (work beyond PRG: {:.1}%)",
                    t * 1e3,
                    prg * 1e3,
                    t / prg,
                    (t / prg - 1.0) * 100.0
                );
            }
            None => println!("{key}: median {:.3} ms", t * 1e3),
        }
    }
    for n in NOTES.lock().unwrap().iter() {
        println!("{n}");
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_prg(&mut c);
    paired_prg();
    INTERLEAVE.store(true, std::sync::atomic::Ordering::Relaxed);
    bench_protocol(&mut c);
    c.final_summary();
    report();
}
