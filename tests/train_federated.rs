//! `sotto train` (multi-party over QUIC on loopback): the report folder and the JSON summary.

#![allow(clippy::expect_used, clippy::unwrap_used)] // test helpers may fail loudly
use std::process::Command;

use serde_json::Value;

#[test]
fn train_writes_the_report_folder() {
    let dir = std::env::temp_dir().join(format!("sotto-train-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .args([
            "--json",
            "train",
            "--rounds",
            "5",
            "--parties",
            "3",
            "--out",
        ])
        .arg(&dir)
        .output()
        .expect("run sotto");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["rounds"], 5);
    assert_eq!(summary["mode"], "secure");
    let epsilon = summary["epsilon"].as_f64().unwrap();
    assert!(epsilon > 1.9 && epsilon <= 2.0, "{epsilon}");

    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap();
    let rounds = metrics["metrics"].as_array().unwrap();
    assert_eq!(rounds.len(), 5);
    for (i, r) in rounds.iter().enumerate() {
        assert_eq!(r["round"], i as u64 + 1);
        for key in ["loss", "accuracy", "epsilon", "seconds"] {
            assert!(r[key].as_f64().unwrap() >= 0.0, "{key}");
        }
        assert_eq!(r["survivors"].as_array().unwrap().len(), 3);
        assert!(r["bytes"].as_u64().unwrap() > 0);
        for key in ["local_compute", "masking", "network", "unmasking"] {
            assert!(r["timing"][key].as_f64().is_some(), "{key}");
        }
    }
    // epsilon grows every round and ends at the reported value
    let eps: Vec<f64> = rounds
        .iter()
        .map(|r| r["epsilon"].as_f64().unwrap())
        .collect();
    assert!(eps.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(eps[4], epsilon);
    let audit: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("audit.json")).unwrap()).unwrap();
    assert_eq!(audit["members"], 1438);
    let svg = std::fs::read_to_string(dir.join("plot.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("epsilon") && svg.contains("<polyline"));
    std::fs::remove_dir_all(&dir).unwrap();
}
