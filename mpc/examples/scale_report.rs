//! Growth report of the secure sum: the aggregator and the parties as separate processes on
//! loopback, for several numbers of parties `n` and vector lengths `d`.
//!
//! ```sh
//! # the table of docs/benchmarks-mpc.md (n = 10, 100, 1000; d = 10^4 and 10^6 where feasible)
//! cargo run --release -p sotto-mpc --example scale_report
//! # one case
//! cargo run --release -p sotto-mpc --example scale_report -- one 300 10000
//! ```
//!
//! Each case writes a dev PKI to a temporary directory, starts this program again as the
//! aggregator process (`agg N D DIR`), runs the `n` parties in this process (each with its own
//! QUIC endpoint), and checks that every party receives the exact sum. The aggregator reports
//! its own CPU time and peak resident memory (Linux `/proc/self`); the parties' process reports
//! its CPU time and the bytes the parties sent (UDP, QUIC overhead included).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sotto_mpc::encoding::Clipping;
use sotto_mpc::securesum::{
    AggregatorConfig, PartyConfig, SecureSumAggregator, SecureSumInput, SecureSumParams,
    SecureSumParty,
};
use sotto_mpc::transport::certs::generate_dev_pki;
use sotto_mpc::{PartyId, SessionId};

fn params(n: usize, d: usize) -> SecureSumParams {
    // Integer inputs in [-1000, 1000]: exact sums.
    SecureSumParams::new(
        SessionId([0x5c; 16]),
        n,
        d,
        Clipping::LInf { bound: 1000.0 },
    )
    .unwrap()
}

/// CPU seconds (user + system) of this process, from `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after ')'.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of this process in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The aggregator process: prints `listening ADDR`, serves one sum, prints a result line.
fn aggregator(n: usize, d: usize, dir: &Path) {
    let rt = runtime();
    rt.block_on(async {
        let mut config =
            AggregatorConfig::from_dir(params(n, d), "127.0.0.1:0".parse().unwrap(), dir).unwrap();
        // Every party of this benchmark dials from 127.0.0.1: the per-address handshake limit
        // (a flood protection) would only make them queue.
        config.transport.max_pending_per_address = n.max(64);
        let aggregator = SecureSumAggregator::bind(config).unwrap();
        println!("listening {}", aggregator.local_addr());
        std::io::stdout().flush().unwrap();
        let started = Instant::now();
        let outcome = aggregator.serve().await;
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(o) => println!(
                "result serve_secs={secs:.3} cpu_secs={:.2} peak_rss_mib={:.1} survivors={} dropped={}",
                cpu_secs(),
                peak_rss_mib(),
                o.survivors.len(),
                o.dropped.len()
            ),
            Err(e) => println!("failed {e}"),
        }
    });
}

/// One row of the report.
struct Row {
    n: usize,
    d: usize,
    graph: String,
    wall: f64,
    agg_serve: f64,
    agg_cpu: f64,
    agg_rss: f64,
    parties_cpu: f64,
    bytes_total: u64,
    dropped: usize,
}

fn one(n: usize, d: usize) -> Row {
    let dir = std::env::temp_dir().join(format!("sotto-scale-{}-{n}-{d}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    generate_dev_pki(&dir, n, &[]).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["agg", &n.to_string(), &d.to_string()])
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr: SocketAddr = first.trim_start_matches("listening ").parse().unwrap();
    let graph = match sotto_mpc::secagg::SparseParams::auto(
        n,
        params(n, d).colluders_for(sotto_mpc::securesum::SumMode::Aggregator),
    ) {
        Some(p) => format!("sparse k={} s={}", p.degree, p.share_threshold),
        None => "complete".to_owned(),
    };
    let rt = runtime();
    let cpu_before = cpu_secs();
    let started = Instant::now();
    let outcomes = rt.block_on(async {
        let mut tasks = Vec::new();
        for id in 1..=n as u32 {
            let config = PartyConfig::from_dir(params(n, d), PartyId(id), addr, &dir).unwrap();
            let value = i64::from(id % 1000);
            tasks.push(tokio::spawn(SecureSumParty::run(
                config,
                SecureSumInput::vec_i64(vec![value; d]),
            )));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let wall = started.elapsed().as_secs_f64();
    let parties_cpu = cpu_secs() - cpu_before;
    let expected: f64 = (1..=n as u32).map(|id| f64::from(id % 1000)).sum();
    let mut bytes_total = 0;
    let mut failed = 0;
    for o in &outcomes {
        match o {
            Ok(o) => {
                bytes_total += o.bytes_sent;
                // Exact over the survivors the aggregator reports.
                let want: f64 = o.survivors.iter().map(|p| f64::from(p.0 % 1000)).sum();
                let sum = o.sum.as_deref().unwrap_or(&[]);
                assert!(
                    sum.len() == d && sum.iter().all(|v| *v == want),
                    "party {}: wrong sum",
                    o.id
                );
                if want != expected && o.id.0 == 1 {
                    eprintln!("{} survivors of {n}", o.survivors.len());
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("party failed: {e}");
            }
        }
    }
    let result = lines
        .find_map(|l| {
            l.ok()
                .filter(|l| l.starts_with("result") || l.starts_with("failed"))
        })
        .unwrap_or_default();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(result.starts_with("result"), "aggregator: {result}");
    let field = |name: &str| -> f64 {
        result
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    Row {
        n,
        d,
        graph,
        wall,
        agg_serve: field("serve_secs"),
        agg_cpu: field("cpu_secs"),
        agg_rss: field("peak_rss_mib"),
        parties_cpu,
        bytes_total,
        dropped: field("dropped") as usize + failed,
    }
}

fn print_header() {
    println!(
        "| n | d | graph | sum wall (s) | aggregator CPU (s) | aggregator peak RSS (MiB) | parties' CPU (s) | per party CPU (ms) | bytes sent per party | dropped |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
}

fn print_row(r: &Row) {
    println!(
        "| {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.2} | {:.1} | {:.0} | {} |",
        r.n,
        r.d,
        r.graph,
        r.wall,
        r.agg_cpu,
        r.agg_rss,
        r.parties_cpu,
        1e3 * r.parties_cpu / r.n as f64,
        r.bytes_total as f64 / r.n as f64,
        r.dropped
    );
    let _ = r.agg_serve;
    std::io::stdout().flush().unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> usize { args.get(i).and_then(|v| v.parse().ok()).unwrap() };
    match args.first().map(String::as_str) {
        Some("agg") => aggregator(num(1), num(2), &PathBuf::from(&args[3])),
        Some("one") => {
            print_header();
            print_row(&one(num(1), num(2)));
        }
        _ => {
            print_header();
            for (n, d) in [
                (10, 10_000),
                (10, 1_000_000),
                (100, 10_000),
                (100, 1_000_000),
                (300, 10_000),
                (1000, 10_000),
            ] {
                print_row(&one(n, d));
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}
