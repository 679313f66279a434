//! Private statistics with the real `sotto` binary on 127.0.0.1: five parties with CSV files
//! (header, quoting, extra columns) and an aggregator release count, means and histograms with
//! intervals; a value above its bound is reported with its count; a second query that would
//! overspend the budget is refused; a ring that cannot hold the records says what to change.
//! (Coverage over 200 seeded runs is tested in memory: `sotto_mpc::stats` unit tests.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Child;

use serde_json::Value;

mod common;
use common::{TempDir, command as sotto, finish, text};

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

/// The `[session]` table with a statistics query over `age` and `income`.
fn session(id: &str, ledger: &Path, extra: &str) -> String {
    format!(
        "[session]\nid = \"{id}\"\nparties = 5\nthreshold = 3\njoin_timeout_secs = 20\nround_timeout_secs = 5\n{extra}\
         [session.stats]\nepsilon = 1.0\ndelta = 1e-6\nmax_records = 1000\n\
         [session.stats.budget]\nepsilon = 1.2\ndelta = 1e-6\nledger = \"{}\"\n\
         [[session.stats.columns]]\nname = \"age\"\nlower = 0\nupper = 100\nbins = [0, 30, 60, 100]\n\
         [[session.stats.columns]]\nname = \"income\"\nlower = 0\nupper = 200000\nbins = [0, 50000, 100000, 200000]\n",
        ledger.display()
    )
}

/// Party `p`'s CSV: 200 records with a quoted name column; party 1 has one age of 130.
fn csv(p: usize) -> (String, Vec<(f64, f64)>) {
    let mut s = String::from("name,\"age\",income\n");
    let mut rows = Vec::new();
    for i in 0..200usize {
        let age = ((i * 7 + p * 13) % 90) as f64;
        let income = ((i * 7919 + p * 104_729) % 150_000) as f64;
        let age = if p == 1 && i == 0 { 130.0 } else { age };
        s.push_str(&format!("\"Doe, J{i}\",{age},{income}\n"));
        rows.push((age, income));
    }
    (s, rows)
}

#[test]
fn five_parties_release_statistics_with_intervals_and_a_budget() {
    let tmp = TempDir::new("run");
    let pki = tmp.path().join("pki");
    let out = finish(
        sotto(&["certs", "--out", pki.to_str().unwrap(), "--parties", "5"])
            .spawn()
            .unwrap(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let port = free_port();
    let id = "00112233445566778899aabbccddeeff";
    let agg_cfg = write(
        tmp.path(),
        "aggregator.toml",
        &format!(
            "listen = \"127.0.0.1:{port}\"\ncerts = \"{}\"\n{}",
            pki.display(),
            session(id, &tmp.path().join("ledger-aggregator.json"), "")
        ),
    );
    let aggregator = sotto(&["--json", "aggregator", "--config", &agg_cfg])
        .spawn()
        .unwrap();
    let mut truth = Vec::new();
    let mut party_cfgs = Vec::new();
    let parties: Vec<Child> = (1..=5)
        .map(|p| {
            let (data, rows) = csv(p);
            truth.extend(rows);
            let data = write(tmp.path(), &format!("party-{p}.csv"), &data);
            let cfg = write(
                tmp.path(),
                &format!("party-{p}.toml"),
                &format!(
                    "id = {p}\naggregator = \"127.0.0.1:{port}\"\ncerts = \"{}\"\n{}",
                    pki.display(),
                    session(id, &tmp.path().join(format!("ledger-{p}.json")), "")
                ),
            );
            party_cfgs.push((cfg.clone(), data.clone()));
            sotto(&["party", "--config", &cfg, "--csv", &data])
                .spawn()
                .unwrap()
        })
        .collect();
    let out = finish(aggregator);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap();
    let stats = &v["statistics"];
    assert!(
        stats["unit_of_privacy"]
            .as_str()
            .unwrap()
            .contains("one record")
    );
    assert!(v["epsilon"].as_f64().unwrap() <= 1.0, "{v}");
    let n = truth.len() as f64;
    let ages: Vec<f64> = truth.iter().map(|r| r.0.min(100.0)).collect();
    let mean_age = ages.iter().sum::<f64>() / n;
    let mean_income = truth.iter().map(|r| r.1).sum::<f64>() / n;
    let young = ages.iter().filter(|a| **a < 30.0).count() as f64;
    // One run: check the truth lies within 5 standard errors (coverage at 95% over many runs
    // is the in-memory test's job) and that every number carries an interval around it.
    for (e, t) in [
        (&stats["count"], n),
        (&stats["columns"][0]["mean"], mean_age),
        (&stats["columns"][1]["mean"], mean_income),
        (&stats["columns"][0]["histogram"][0]["count"], young),
    ] {
        let (est, lo, hi, se) = (
            e["estimate"].as_f64().unwrap(),
            e["ci_low"].as_f64().unwrap(),
            e["ci_high"].as_f64().unwrap(),
            e["std_error"].as_f64().unwrap(),
        );
        assert!(lo <= est && est <= hi, "{e}");
        assert!((est - t).abs() <= 5.0 * se.max(1e-9), "{e} vs truth {t}");
    }
    assert_eq!(
        stats["columns"][1]["histogram"].as_array().unwrap().len(),
        3
    );
    for (p, party) in parties.into_iter().enumerate() {
        let out = finish(party);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let stdout = text(&out.stdout);
        assert!(stdout.contains("unit of privacy: one record"), "{stdout}");
        assert!(stdout.contains("privacy budget: 1 query"), "{stdout}");
        if p == 0 {
            assert!(
                stderr.contains("warning: clamped 1 value(s) of `age` (0 below the lower bound, 1 above the upper bound)"),
                "{stderr}"
            );
        } else {
            assert!(!stderr.contains("warning"), "{stderr}");
        }
    }
    // A second query at epsilon 1 overspends the budget of 1.2: refused before any network.
    let (cfg, data) = &party_cfgs[0];
    let out = finish(
        sotto(&["party", "--config", cfg, "--csv", data])
            .spawn()
            .unwrap(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("privacy budget exceeded") && stderr.contains("remains"),
        "{stderr}"
    );
}

#[test]
fn bad_statistics_configurations_say_what_to_change() {
    let tmp = TempDir::new("bad");
    let ledger = tmp.path().join("ledger.json");
    let base = |extra: &str| {
        format!(
            "id = 1\naggregator = \"127.0.0.1:9\"\ncerts = \"{}\"\n{}",
            tmp.path().display(),
            session("00112233445566778899aabbccddeeff", &ledger, extra)
        )
    };
    let data = write(tmp.path(), "d.csv", "age,income\n1,2\n");
    // A 32-bit ring cannot hold a billion records per party.
    let cfg = write(
        tmp.path(),
        "ring.toml",
        &base("ring_bits = 32\n").replace("max_records = 1000", "max_records = 1000000000"),
    );
    let out = finish(
        sotto(&["party", "--config", &cfg, "--csv", &data])
            .spawn()
            .unwrap(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ring overflow")
            && stderr.contains("max_records")
            && stderr.contains("64-bit"),
        "{stderr}"
    );
    // A column the CSV lacks is named.
    let cfg = write(tmp.path(), "ok.toml", &base(""));
    let cfg_ok = cfg.clone();
    let other = write(tmp.path(), "other.csv", "age,salary\n1,2\n");
    let out = finish(
        sotto(&["party", "--config", &cfg, "--csv", &other])
            .spawn()
            .unwrap(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no column named `income`"), "{stderr}");
    // A value that is not a number is named by line and column.
    let bad = write(tmp.path(), "bad.csv", "age,income\n1,2\n3,lots\n");
    let out = finish(
        sotto(&["party", "--config", &cfg, "--csv", &bad])
            .spawn()
            .unwrap(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 3: column `income`"), "{stderr}");
    // Bounds in the wrong order.
    let cfg = write(
        tmp.path(),
        "bounds.toml",
        &base("").replace("lower = 0\nupper = 100\n", "lower = 100\nupper = 0\n"),
    );
    let out = finish(
        sotto(&["party", "--config", &cfg, "--csv", &data])
            .spawn()
            .unwrap(),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("lower < upper"), "{stderr}");
    // Missing certificates: a set-up error the user can fix (exit 2, naming the file), and
    // nothing is charged to the budget.
    let out = finish(
        sotto(&["party", "--config", &cfg_ok, "--csv", &data])
            .spawn()
            .unwrap(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("ca.pem"),
        "{}",
        text(&out.stderr)
    );
    assert!(!ledger.exists(), "nothing was charged");
}
