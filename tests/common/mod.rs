//! Helpers shared by the end-to-end tests of the `sotto` binary (each test file includes this
//! module with `mod common;` and uses what it needs).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const SOTTO: &str = env!("CARGO_BIN_EXE_sotto");

/// How long a spawned `sotto` may run before it is killed ([`finish`]).
pub const LIMIT: Duration = Duration::from_secs(60);

/// A fresh temporary folder, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `sotto-<tag>-<pid>-<n>` in the system's temporary folder, empty.
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sotto-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sotto ARGS` to spawn, with no standard input and captured output.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(SOTTO);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child` at most [`LIMIT`], killing it past that.
pub fn finish(mut child: Child) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "sotto did not exit within {LIMIT:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `sotto ARGS` to completion (bounded by [`LIMIT`]).
pub fn run(args: &[&str]) -> Output {
    finish(command(args).spawn().unwrap())
}

/// Bytes as text, lossily.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `sotto --json ARGS`, which must succeed; its last stdout line as JSON.
pub fn json(args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(
        out.status.success(),
        "sotto {args:?} failed: {}",
        text(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).expect("last line is JSON")
}

/// `sotto ARGS` must exit with status 2 and a message naming `names`, without a panic.
pub fn assert_invalid(args: &[&str], names: &str) {
    let out = run(args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "sotto {args:?}: {stderr}");
    assert!(
        stderr.contains(names),
        "sotto {args:?}: message should name `{names}`: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "sotto {args:?} panicked: {stderr}"
    );
}
