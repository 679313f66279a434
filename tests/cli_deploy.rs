//! The deployment commands of the real `sotto` binary on 127.0.0.1: `sotto certs`,
//! `sotto aggregator --config`, `sotto party --config --value/--input`, their errors for
//! missing or wrong certificates and bad configurations, and the port being freed on exit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Child;

mod common;
use common::{TempDir, command as sotto, finish, run, text};

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn session_table(parties: usize, session: &str) -> String {
    format!(
        "[session]\nid = \"{session}\"\nparties = {parties}\nthreshold = {}\nbound = 100000.0\njoin_timeout_secs = 20\nround_timeout_secs = 3\n",
        parties / 2 + 1
    )
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

fn certs(dir: &Path, parties: usize) {
    let out = run(&[
        "certs",
        "--out",
        dir.to_str().unwrap(),
        "--parties",
        &parties.to_string(),
        "--name",
        "10.77.0.1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn certs_writes_a_deployment_and_refuses_to_overwrite_it() {
    let tmp = TempDir::new("certs");
    let dir = tmp.path().join("pki");
    certs(&dir, 2);
    for f in [
        "ca.pem",
        "aggregator.pem",
        "aggregator.key",
        "party-1.pem",
        "party-2.key",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let again = run(&["certs", "--out", dir.to_str().unwrap(), "--parties", "2"]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("error:"),
        "{}",
        text(&again.stderr)
    );
    let zero = run(&["certs", "--out", dir.to_str().unwrap(), "--parties", "0"]);
    assert_eq!(zero.status.code(), Some(2), "{}", text(&zero.stderr));
}

#[test]
fn aggregator_and_parties_sum_exactly_and_free_the_port() {
    let tmp = TempDir::new("round");
    let pki = tmp.path().join("pki");
    certs(&pki, 3);
    let port = free_port();
    let session = session_table(3, "0123456789abcdef0123456789abcdef");
    let agg_cfg = write(
        tmp.path(),
        "aggregator.toml",
        &format!(
            "listen = \"127.0.0.1:{port}\"\ncerts = \"{}\"\n{session}",
            pki.display()
        ),
    );
    let aggregator = sotto(&["-v", "aggregator", "--config", &agg_cfg])
        .spawn()
        .unwrap();
    let csv = write(tmp.path(), "v3.csv", "-100\n");
    let parties: Vec<Child> = [
        ("1", Some("3800"), None),
        ("2", Some("2514"), None),
        ("3", None, Some(csv)),
    ]
    .into_iter()
    .map(|(id, value, input)| {
        let cfg = write(
            tmp.path(),
            &format!("party-{id}.toml"),
            &format!(
                "id = {id}\naggregator = \"127.0.0.1:{port}\"\ncerts = \"{}\"\n{session}",
                pki.display()
            ),
        );
        let mut args = vec!["party".to_owned(), "--config".to_owned(), cfg];
        if let Some(v) = value {
            args.extend(["--value".to_owned(), v.to_owned()]);
        }
        if let Some(path) = input {
            args.extend(["--input".to_owned(), path]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sotto(&args).spawn().unwrap()
    })
    .collect();
    let out = finish(aggregator);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("sum [6214.0]"), "{stdout}");
    assert!(stdout.contains("dropped []"), "{stdout}");
    assert!(
        text(&out.stderr).contains("secure sum: done"),
        "{}",
        text(&out.stderr)
    );
    for party in parties {
        let out = finish(party);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("[6214.0]"),
            "{}",
            text(&out.stdout)
        );
    }
    // The aggregator has exited and its UDP port is free again.
    std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
}

#[test]
fn missing_certificates_are_a_clear_error() {
    let tmp = TempDir::new("missing");
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let session = session_table(3, "00000000000000000000000000000001");
    let cfg = write(
        tmp.path(),
        "aggregator.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ncerts = \"{}\"\n{session}",
            empty.display()
        ),
    );
    let out = run(&["aggregator", "--config", &cfg]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ca.pem") && stderr.contains("file not found"),
        "{stderr}"
    );
    assert!(stderr.contains("sotto certs"), "{stderr}");
}

#[test]
fn a_certificate_from_another_deployment_is_a_clear_error() {
    let tmp = TempDir::new("wrong");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    certs(&a, 2);
    certs(&b, 2);
    // Deployment a's CA, but party 1's certificate and key from deployment b.
    for f in ["party-1.pem", "party-1.key"] {
        std::fs::copy(b.join(f), a.join(f)).unwrap();
    }
    let session = session_table(2, "00000000000000000000000000000002");
    let cfg = write(
        tmp.path(),
        "party.toml",
        &format!(
            "id = 1\naggregator = \"127.0.0.1:9\"\ncerts = \"{}\"\n{session}",
            a.display()
        ),
    );
    let out = run(&["party", "--config", &cfg, "--value", "1"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("party-1.pem") && stderr.contains("not signed by the deployment CA"),
        "{stderr}"
    );
}

#[test]
fn bad_configurations_exit_with_status_2() {
    let tmp = TempDir::new("badcfg");
    let session = session_table(3, "00000000000000000000000000000003");
    let unknown = write(
        tmp.path(),
        "unknown.toml",
        &format!("listen = \"127.0.0.1:0\"\ncerts = \"x\"\nport = 4\n{session}"),
    );
    let out = run(&["aggregator", "--config", &unknown]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("port"), "{}", text(&out.stderr));

    let bad_session = write(
        tmp.path(),
        "session.toml",
        "id = 1\naggregator = \"127.0.0.1:1\"\ncerts = \"x\"\n[session]\nid = \"xyz\"\nparties = 3\nbound = 1.0\n",
    );
    let out = run(&["party", "--config", &bad_session, "--value", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("32 hex digits"),
        "{}",
        text(&out.stderr)
    );

    let good = write(
        tmp.path(),
        "party.toml",
        &format!("id = 1\naggregator = \"127.0.0.1:1\"\ncerts = \"x\"\n{session}"),
    );
    let out = run(&["party", "--config", &good, "--value", "1,2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("dim = 1"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["party", "--config", &good, "--value", "nan"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // Values the protocol refuses (a party id outside 1..=n) and missing certificate files
    // are invalid configuration too: status 2, naming what is wrong.
    let outsider = write(
        tmp.path(),
        "outsider.toml",
        &format!("id = 9\naggregator = \"127.0.0.1:1\"\ncerts = \"x\"\n{session}"),
    );
    let out = run(&["party", "--config", &outsider, "--value", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("`id`"), "{}", text(&out.stderr));
    let out = run(&["party", "--config", &good, "--value", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("ca.pem"),
        "{}",
        text(&out.stderr)
    );
}
