//! `sotto train aggregator` and `sotto train party` as separate processes on loopback, with
//! the deployment's certificates; one party is killed (SIGKILL) during training.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may fail loudly
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::Value;
use sotto_training::data::{Inputs, digits_split, partition_iid};

#[test]
fn separate_processes_train_and_survive_a_killed_party() {
    let dir = std::env::temp_dir().join(format!("sotto-deploy-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    sotto_mpc::transport::certs::generate_dev_pki(&dir.join("certs"), 3, &[]).unwrap();
    let (train, test) = digits_split(sotto_training::central::DIGITS_SPLIT_SEED).unwrap();
    let write = |name: &str, d: &sotto_training::data::Dataset| {
        let Inputs::Features { values, dim } = d.inputs() else {
            panic!("features")
        };
        let mut f = std::fs::File::create(dir.join(name)).unwrap();
        for (row, label) in values.chunks(*dim).zip(d.labels()) {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:?}")).collect();
            writeln!(f, "{},{label}", cells.join(",")).unwrap();
        }
    };
    let parts = partition_iid(&train, 3, 0).unwrap();
    for (i, p) in parts.iter().enumerate() {
        write(&format!("party-{}.csv", i + 1), p);
    }
    write("test.csv", &test);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let max_party = parts.iter().map(|p| p.len()).max().unwrap();
    let config = dir.join("deploy.toml");
    std::fs::write(
        &config,
        format!(
            "aggregator = \"127.0.0.1:{port}\"\ncerts = {:?}\nsession = \"00112233445566778899aabbccddeeff\"\n\
             records = {}\nmax_party_records = {max_party}\nfeatures = 64\nclasses = 10\n\n\
             [training]\nparties = 3\nrounds = 40\nsampling_rate = 0.25\nnoise_multiplier = 1.0\ntarget_epsilon = 100.0\n\
             round_deadline_secs = 5.0\n",
            dir.join("certs").display().to_string(),
            train.len()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_sotto");
    let out = dir.join("summary.json");
    let mut aggregator = Command::new(bin)
        .args(["train", "aggregator", "--config"])
        .arg(&config)
        .arg("--test")
        .arg(dir.join("test.csv"))
        .arg("--out")
        .arg(&out)
        .arg("--model-out")
        .arg(dir.join("model"))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut parties: Vec<_> = (1..=3)
        .map(|i| {
            Command::new(bin)
                .args(["train", "party", "--id", &i.to_string(), "--config"])
                .arg(&config)
                .arg("--data")
                .arg(dir.join(format!("party-{i}.csv")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let stderr = BufReader::new(aggregator.stderr.take().unwrap());
    let mut killed = false;
    for line in stderr.lines() {
        let line = line.unwrap();
        eprintln!("aggregator: {line}");
        if !killed && line.starts_with("round") && line.contains(" 2 ") {
            parties[1].kill().unwrap(); // party 2, mid-training
            killed = true;
        }
    }
    assert!(aggregator.wait().unwrap().success());
    assert!(killed, "the aggregator never reported round 2");
    for (i, p) in parties.iter_mut().enumerate() {
        let status = p.wait().unwrap();
        assert_eq!(status.success(), i != 1, "party {}", i + 1);
    }
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(summary["rounds"], 40);
    assert_eq!(summary["dropped"], serde_json::json!([2]));
    let expected = sotto_dp::accounting::dp_sgd_epsilon(
        0.25,
        1.0,
        40,
        1e-5,
        sotto_dp::accounting::AccountantKind::Rdp,
    )
    .unwrap();
    assert_eq!(summary["epsilon"].as_f64().unwrap(), expected);
    let last = summary["metrics"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["survivors"], serde_json::json!([1, 3]));
    assert!(summary["accuracy"].as_f64().unwrap() > 0.8);
    // The aggregator's final model, reloaded, scores the same on the same test data.
    let eval = Command::new(bin)
        .args(["--json", "evaluate", "--model"])
        .arg(dir.join("model"))
        .arg("--data")
        .arg(dir.join("test.csv"))
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let eval: Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(eval["accuracy"], summary["accuracy"]);
    assert_eq!(eval["epsilon"], summary["epsilon"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
