//! The ```console blocks of README.md, docs/ and examples/README.md, run against the built
//! `sotto` binary so they cannot go stale.
//!
//! In a block, a line `$ CMD` is a command and the lines up to the next `$ ` are its expected
//! output (stdout and stderr together). Commands run with `sh -c` in one temporary directory
//! per file (so a file written by one command is read by the next), with the built `sotto`
//! first on `PATH`. Only `sotto account` and `sotto poll` commands run (they are fast and,
//! seeded, deterministic); others (`cargo run`, `sotto train`, network roles) are skipped with
//! their output. In expected output, a line `...` matches any number of lines and `[..]`
//! within a line matches any text (the `trycmd` conventions).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Subcommands whose console examples run.
const RUN: &[&str] = &["sotto account", "sotto poll"];

struct Example {
    file: String,
    line: usize,
    command: String,
    expected: Vec<String>,
}

fn examples(path: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut in_block = false;
    for (i, line) in text.lines().enumerate() {
        if !in_block {
            in_block = line.trim_start() == "```console";
            continue;
        }
        if line.trim_start().starts_with("```") {
            in_block = false;
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            out.push(Example {
                file: path.display().to_string(),
                line: i + 1,
                command: cmd.to_owned(),
                expected: Vec::new(),
            });
        } else if let Some(e) = out.last_mut() {
            e.expected.push(line.to_owned());
        }
    }
    out
}

/// Whether `actual` matches `pattern`, where `[..]` matches any text.
fn line_matches(pattern: &str, actual: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (k, part) in parts.iter().enumerate() {
        if k + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether the `actual` lines match the `expected` ones (`...` matches any lines).
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((e, rest)) if e.trim() == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((e, rest)) => match actual.split_first() {
            Some((a, more)) => line_matches(e, a) && lines_match(rest, more),
            None => false,
        },
    }
}

fn doc_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("examples/README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "md") {
                files.push(p);
            }
        }
    }
    files
}

#[test]
fn console_blocks_in_the_docs_match_the_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_sotto"));
    let bin_dir = bin.parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    let mut failures = Vec::new();
    for (k, file) in doc_files(root).iter().enumerate() {
        let work =
            std::env::temp_dir().join(format!("sotto-doc-console-{}-{k}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        for ex in examples(file) {
            if !RUN.iter().any(|p| ex.command.starts_with(p)) {
                continue;
            }
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("exec 2>&1; {}", ex.command))
                .current_dir(&work)
                .env("PATH", &path)
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            ran += 1;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let actual: Vec<&str> = stdout.lines().collect();
            if !lines_match(&ex.expected, &actual) {
                failures.push(format!(
                    "{}:{}: $ {}\n--- expected\n{}\n--- got\n{}",
                    ex.file,
                    ex.line,
                    ex.command,
                    ex.expected.join("\n"),
                    stdout.trim_end()
                ));
            }
        }
        let _ = std::fs::remove_dir_all(&work);
    }
    assert!(
        ran >= 8,
        "only {ran} console examples ran: did the README change format?"
    );
    assert!(
        failures.is_empty(),
        "{} of {ran} console examples are stale (update the docs or the code):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_matcher_understands_the_wildcards() {
    assert!(line_matches("a[..]c", "abbbc"));
    assert!(line_matches(
        "{\"r\":\"[..]\",\"e\":2}",
        "{\"r\":\"blue\",\"e\":2}"
    ));
    assert!(!line_matches("a[..]c", "abbbd"));
    assert!(line_matches("abc", "abc"));
    assert!(!line_matches("abc", "abcd"));
    let exp: Vec<String> = ["x", "...", "z"].iter().map(|s| (*s).to_owned()).collect();
    assert!(lines_match(&exp, &["x", "1", "2", "z"]));
    assert!(lines_match(&exp, &["x", "z"]));
    assert!(!lines_match(&exp, &["x", "y"]));
}
