//! `sotto certs`: a deployment's dev CA and per-role certificates.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use sotto_mpc::transport::certs::{DevPkiOptions, generate_dev_pki_with};

use super::{Output, UsageError};

/// Arguments of `sotto certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write `ca.pem`, `aggregator.{pem,key}` and `party-<i>.{pem,key}` into
    /// (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of parties (certificates `party-1` .. `party-N`).
    #[arg(long)]
    pub parties: usize,
    /// Extra host names or IP addresses where the roles are reached (repeatable); every
    /// certificate also covers localhost, 127.0.0.1 and ::1.
    #[arg(long = "name", value_name = "DNS_OR_IP")]
    pub names: Vec<String>,
    /// Replace an existing deployment in `--out`.
    #[arg(long)]
    pub force: bool,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: u64,
}

#[derive(Serialize)]
struct Written {
    dir: String,
    ca: String,
    aggregator: String,
    parties: Vec<String>,
}

/// Runs `sotto certs`.
pub fn run(args: CertsArgs, out: &Output) -> anyhow::Result<()> {
    if args.parties == 0 {
        return Err(UsageError("--parties must be at least 1".to_owned()).into());
    }
    if args.days == 0 {
        return Err(UsageError("--days must be at least 1".to_owned()).into());
    }
    let mut options = DevPkiOptions::new(args.parties);
    options.extra_names = args.names;
    options.overwrite = args.force;
    options.validity = std::time::Duration::from_secs(args.days.saturating_mul(24 * 3600));
    let pki = generate_dev_pki_with(&args.out, &options)?;
    let written = Written {
        dir: pki.dir.display().to_string(),
        ca: pki.ca.display().to_string(),
        aggregator: pki.aggregator.cert.display().to_string(),
        parties: pki
            .parties
            .iter()
            .map(|p| p.cert.display().to_string())
            .collect(),
    };
    out.emit(&written, || {
        format!(
            "wrote a dev CA and certificates for the aggregator and {} parties to {}\n\
             (copy ca.pem and each role's .pem/.key to its host; keys are mode 0600; the CA key is not kept)",
            written.parties.len(),
            written.dir
        )
    })
}
