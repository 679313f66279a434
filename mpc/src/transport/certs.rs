//! Deployment certificates: a development CA and one certificate per role, and loading them
//! back with checks and clear errors.
//!
//! # Layout
//!
//! [`generate_dev_pki`] writes into one directory:
//!
//! | file | content | mode |
//! |------|---------|------|
//! | `ca.pem` | the deployment CA certificate (the trust anchor everyone shares) | 0644 |
//! | `aggregator.pem`, `aggregator.key` | the aggregator's certificate and private key | 0644 / 0600 |
//! | `party-<i>.pem`, `party-<i>.key` | party `i`'s (for `i` in `1..=parties`) | 0644 / 0600 |
//!
//! Each role's certificate carries its identity as a DNS subject alternative name
//! (`aggregator.sotto`, `party-3.sotto`, see [`Identity::dns_name`]) plus `localhost`,
//! `127.0.0.1`, `::1` and any extra names given (host names or IPs where the roles will run).
//! Keys are ECDSA P-256; certificates are valid for both TLS client and server use (a party is
//! a server in peer-to-peer mode).
//!
//! The CA private key is **not** written: it signs the certificates and is then dropped.
//! To add a party, generate a new deployment.
//!
//! # Security
//! A dev CA is for tests and small trusted deployments. Every `.key` file must reach only its
//! role's machine. Anyone holding the CA certificate can check identities but not mint them.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::sign::CertifiedKey;
use zeroize::{Zeroize, Zeroizing};

use super::error::{Error, Result};
use super::identity::{Identity, PartyId};

/// The CA certificate's file name in a deployment directory.
pub const CA_FILE: &str = "ca.pem";

/// The default validity of dev certificates: one year.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The most parties [`generate_dev_pki`] will issue certificates for.
pub const MAX_DEV_PARTIES: usize = 100_000;

/// Options for [`generate_dev_pki_with`].
#[derive(Clone, Debug)]
pub struct DevPkiOptions {
    /// Number of parties; they get ids `1..=parties`. At least 1.
    pub parties: usize,
    /// Extra subject alternative names for every certificate: host names or IP addresses where
    /// the roles will be reached (each role is identified by its `*.sotto` name, never by these).
    pub extra_names: Vec<String>,
    /// How long the certificates stay valid from now. Default [`DEFAULT_VALIDITY`].
    pub validity: Duration,
    /// Replace existing files. Default `false`: refuse to overwrite a deployment.
    pub overwrite: bool,
}

impl DevPkiOptions {
    /// Options for `parties` parties with defaults otherwise.
    pub fn new(parties: usize) -> Self {
        DevPkiOptions {
            parties,
            extra_names: Vec::new(),
            validity: DEFAULT_VALIDITY,
            overwrite: false,
        }
    }
}

/// The files of one role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleFiles {
    /// The role.
    pub identity: Identity,
    /// Its certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8, mode 0600).
    pub key: PathBuf,
}

impl RoleFiles {
    /// The conventional paths of `identity`'s files in deployment directory `dir`.
    pub fn in_dir(dir: &Path, identity: Identity) -> Self {
        let stem = identity.file_stem();
        RoleFiles {
            identity,
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        }
    }
}

/// What [`generate_dev_pki`] wrote.
#[derive(Clone, Debug)]
pub struct DevPki {
    /// The deployment directory.
    pub dir: PathBuf,
    /// The CA certificate (`ca.pem`).
    pub ca: PathBuf,
    /// The aggregator's files.
    pub aggregator: RoleFiles,
    /// The parties' files, by id `1..=parties`.
    pub parties: Vec<RoleFiles>,
}

/// Generates a dev CA and certificates for the aggregator and parties `1..=parties` into
/// `out_dir` (created if missing), with default validity and no overwriting.
///
/// ```rust
/// use sotto_mpc::transport::certs::{generate_dev_pki, load_ca, Credentials};
/// use sotto_mpc::transport::Identity;
///
/// let dir = std::env::temp_dir().join(format!("sotto-doc-pki-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let pki = generate_dev_pki(&dir, 3, &["10.0.0.5".to_owned()])?;
/// assert_eq!(pki.parties.len(), 3);
///
/// let ca = load_ca(&pki.ca)?;
/// let party2 = Credentials::load_role(&dir, Identity::party(2), &ca)?;
/// assert_eq!(party2.identity(), Identity::party(2));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), sotto_mpc::transport::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidParameter`] for `parties` outside `1..=MAX_DEV_PARTIES` or an extra name
/// that is neither an IP nor a DNS name; [`Error::Io`] if a file exists already or cannot be
/// written.
///
/// # Security
/// Key files are created with mode 0600 (owner only) on Unix. The CA key is discarded.
pub fn generate_dev_pki(out_dir: &Path, parties: usize, extra_names: &[String]) -> Result<DevPki> {
    let mut options = DevPkiOptions::new(parties);
    options.extra_names = extra_names.to_vec();
    generate_dev_pki_with(out_dir, &options)
}

/// [`generate_dev_pki`] with all options.
///
/// # Errors
/// As [`generate_dev_pki`], plus [`Error::InvalidParameter`] naming `validity` if it is zero
/// or longer than 100 years.
pub fn generate_dev_pki_with(out_dir: &Path, options: &DevPkiOptions) -> Result<DevPki> {
    if options.parties == 0 || options.parties > MAX_DEV_PARTIES {
        return Err(Error::invalid(
            "parties",
            format!("{} is outside 1..={MAX_DEV_PARTIES}", options.parties),
        ));
    }
    let max_validity = Duration::from_secs(100 * 365 * 24 * 3600);
    if options.validity.is_zero() || options.validity > max_validity {
        return Err(Error::invalid(
            "validity",
            format!(
                "{:?} is outside (0, 100 years]; the default is one year",
                options.validity
            ),
        ));
    }
    let extra = checked_extra_names(&options.extra_names)?;
    let party_count = u32::try_from(options.parties)
        .map_err(|_| Error::invalid("parties", "does not fit a u32 party id"))?;

    let dir = out_dir.to_path_buf();
    let aggregator = RoleFiles::in_dir(&dir, Identity::Aggregator);
    let party_files: Vec<RoleFiles> = (1..=party_count)
        .map(|i| RoleFiles::in_dir(&dir, Identity::party(i)))
        .collect();
    let ca_path = dir.join(CA_FILE);

    if !options.overwrite {
        let all = std::iter::once(&ca_path).chain(
            std::iter::once(&aggregator)
                .chain(&party_files)
                .flat_map(|r| [&r.cert, &r.key]),
        );
        for path in all {
            if path.exists() {
                return Err(Error::io(
                    format!(
                        "refusing to overwrite {} (remove the old deployment or set `overwrite`)",
                        path.display()
                    ),
                    std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                ));
            }
        }
    }
    fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("cannot create directory {}", dir.display()), e))?;

    let (not_before, not_after) = validity_window(options.validity);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let (not_before, not_after) = (epoch + not_before, epoch + not_after);

    // The CA: self-signed, may sign end-entity certificates only (path length 0).
    let ca_key = Zeroizing::new(KeyPair::generate().map_err(rcgen_error)?);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    // A random tag in the name tells deployments apart (and their certificates' issuers).
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("sotto deployment dev CA {}", deployment_tag()?),
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_cert = ca_params.self_signed(&*ca_key).map_err(rcgen_error)?;
    let issuer = Issuer::from_params(&ca_params, &*ca_key);

    write_file(&ca_path, ca_cert.pem().as_bytes(), false, options.overwrite)?;
    for role in std::iter::once(&aggregator).chain(&party_files) {
        let mut names = vec![role.identity.dns_name(), "localhost".to_owned()];
        names.extend(["127.0.0.1".to_owned(), "::1".to_owned()]);
        names.extend(extra.iter().cloned());
        let mut params = CertificateParams::new(names).map_err(rcgen_error)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("sotto {}", role.identity.file_stem()),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let key = Zeroizing::new(KeyPair::generate().map_err(rcgen_error)?);
        let cert = params.signed_by(&*key, &issuer).map_err(rcgen_error)?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        write_file(&role.cert, cert.pem().as_bytes(), false, options.overwrite)?;
        write_file(&role.key, key_pem.as_bytes(), true, options.overwrite)?;
    }
    Ok(DevPki {
        dir,
        ca: ca_path,
        aggregator,
        parties: party_files,
    })
}

fn checked_extra_names(names: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::invalid("extra_names", "contains an empty name"));
        }
        if Identity::in_namespace(name) {
            return Err(Error::invalid(
                "extra_names",
                format!(
                    "{name:?} lies in the reserved identity domain `.sotto`; roles get their identity names automatically"
                ),
            ));
        }
        if name.parse::<std::net::IpAddr>().is_err()
            && rustls::pki_types::DnsName::try_from(name).is_err()
        {
            return Err(Error::invalid(
                "extra_names",
                format!("{name:?} is neither an IP address nor a valid DNS name"),
            ));
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

/// (now - 1 hour, now + validity) as offsets from the Unix epoch: the hour absorbs clock skew
/// between machines.
fn validity_window(validity: Duration) -> (Duration, Duration) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let skew = Duration::from_secs(3600);
    (now.saturating_sub(skew), now.saturating_add(validity))
}

/// 8 random bytes in hex.
fn deployment_tag() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Tls {
            reason: "the operating system's random number generator failed".to_owned(),
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn rcgen_error(e: rcgen::Error) -> Error {
    Error::Tls {
        reason: format!("certificate generation failed: {e}"),
    }
}

/// Writes `contents` to `path`; secret files get mode 0600 on Unix.
fn write_file(path: &Path, contents: &[u8], secret: bool, overwrite: bool) -> Result<()> {
    let mut open = fs::OpenOptions::new();
    open.write(true);
    if overwrite {
        open.create(true).truncate(true);
    } else {
        open.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(if secret { 0o600 } else { 0o644 });
    }
    let context = || format!("cannot write {}", path.display());
    let mut file = open.open(path).map_err(|e| Error::io(context(), e))?;
    #[cfg(unix)]
    if secret {
        // `mode` applies only to new files; an overwritten key file must be tightened too.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(context(), e))?;
    }
    file.write_all(contents)
        .map_err(|e| Error::io(context(), e))?;
    file.sync_all().map_err(|e| Error::io(context(), e))
}

/// The deployment's trust anchor: the CA certificate every role shares.
#[derive(Clone, Debug)]
pub struct DeploymentCa {
    path: PathBuf,
    der: CertificateDer<'static>,
}

impl DeploymentCa {
    /// Parses a CA certificate from PEM text; `origin` names where it came from, for errors.
    ///
    /// # Errors
    /// [`Error::Certificate`] if the text holds no PEM certificate or the certificate cannot
    /// serve as a trust anchor.
    pub fn from_pem(pem: &[u8], origin: &Path) -> Result<Self> {
        let der = first_certificate(pem, origin)?;
        webpki::anchor_from_trusted_cert(&der).map_err(|e| Error::Certificate {
            path: origin.to_path_buf(),
            reason: format!("not usable as a CA certificate ({e}); expected the `ca.pem` written by `sotto certs`"),
        })?;
        Ok(DeploymentCa {
            path: origin.to_path_buf(),
            der,
        })
    }

    /// Where the certificate was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The certificate (DER).
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// Checks that `chain[0]` is signed (through `chain[1..]`) by this CA and currently valid
    /// for the `client` or server usage. `origin` names the certificate's file, for errors.
    pub(crate) fn verify(
        &self,
        chain: &[CertificateDer<'static>],
        client: bool,
        origin: &Path,
    ) -> Result<()> {
        let cert_error = |reason: String| Error::Certificate {
            path: origin.to_path_buf(),
            reason,
        };
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| cert_error("holds no certificate".to_owned()))?;
        let anchor =
            webpki::anchor_from_trusted_cert(&self.der).map_err(|e| Error::Certificate {
                path: self.path.clone(),
                reason: format!("not usable as a CA certificate: {e}"),
            })?;
        let end_entity = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| cert_error(format!("not a valid X.509 certificate: {e}")))?;
        let usage = if client {
            webpki::KeyUsage::client_auth()
        } else {
            webpki::KeyUsage::server_auth()
        };
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &[anchor],
                intermediates,
                UnixTime::now(),
                usage,
                None,
                None,
            )
            .map(|_| ())
            .map_err(|e| cert_error(describe_webpki_error(&e, &self.path)))
    }
}

/// Explains a certificate verification failure with the fix.
pub(crate) fn describe_webpki_error(e: &webpki::Error, ca: &Path) -> String {
    match e {
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => format!(
            "certificate not signed by the deployment CA {}; use the certificates generated together with that `ca.pem` (or regenerate the deployment with `sotto certs`)",
            ca.display()
        ),
        webpki::Error::CertExpired { .. } => {
            "certificate expired; regenerate the deployment with `sotto certs`".to_owned()
        }
        webpki::Error::CertNotValidYet { .. } => {
            "certificate not valid yet; check this machine's clock".to_owned()
        }
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "certificate lacks the TLS client/server extended key usage; use certificates generated by `sotto certs`".to_owned()
        }
        other => format!("certificate rejected: {other}"),
    }
}

/// Loads the deployment CA certificate from `path` (usually `<dir>/ca.pem`).
///
/// # Errors
/// [`Error::Certificate`] if the file is missing, unreadable or holds no PEM certificate.
pub fn load_ca(path: &Path) -> Result<DeploymentCa> {
    let pem = read_file(path)?;
    DeploymentCa::from_pem(&pem, path)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| Error::Certificate {
        path: path.to_path_buf(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => {
                "file not found; generate the deployment's certificates with `sotto certs` or fix the path".to_owned()
            }
            std::io::ErrorKind::PermissionDenied => {
                "permission denied; the file must be readable by the user running sotto".to_owned()
            }
            _ => format!("cannot read: {e}"),
        },
    })
}

fn certificates(pem: &[u8], origin: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let not_pem = |detail: String| Error::Certificate {
        path: origin.to_path_buf(),
        reason: format!(
            "not a PEM certificate ({detail}); expected a `-----BEGIN CERTIFICATE-----` block as written by `sotto certs`"
        ),
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| not_pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(not_pem("no certificate block found".to_owned()));
    }
    Ok(certs)
}

fn first_certificate(pem: &[u8], origin: &Path) -> Result<CertificateDer<'static>> {
    certificates(pem, origin)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Certificate {
            path: origin.to_path_buf(),
            reason: "not a PEM certificate".to_owned(),
        })
}

/// Reads the identity a certificate carries: the one DNS subject alternative name in the
/// `.sotto` domain (see [`Identity::dns_name`]).
///
/// # Errors
/// A description if the certificate does not parse, names no identity, names two, or has a
/// malformed name in the `.sotto` domain (such as a wildcard).
pub fn identity_of(cert: &CertificateDer<'_>) -> std::result::Result<Identity, String> {
    let end_entity = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let mut found: Option<Identity> = None;
    for name in end_entity.valid_dns_names() {
        if !Identity::in_namespace(name) {
            continue;
        }
        let identity = Identity::from_dns_name(name).ok_or_else(|| {
            format!(
                "malformed identity name {name:?} (expected aggregator.sotto or party-<n>.sotto)"
            )
        })?;
        match found {
            Some(previous) if previous != identity => {
                return Err(format!(
                    "certificate names two identities, {previous} and {identity}"
                ));
            }
            _ => found = Some(identity),
        }
    }
    found.ok_or_else(|| {
        "certificate names no sotto identity (expected a DNS subject alternative name aggregator.sotto or party-<n>.sotto)".to_owned()
    })
}

/// A role's certificate chain and private key, checked against the deployment CA.
///
/// # Security
/// The private key is parsed into a signing key at load time and its encoded form is zeroized
/// at once; only the signing key (inside rustls/ring) stays in memory. `Debug` does not show it.
#[derive(Clone)]
pub struct Credentials {
    identity: Identity,
    certified: Arc<CertifiedKey>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("chain_len", &self.certified.cert.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

impl Credentials {
    /// Loads a certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, SEC1 or
    /// PKCS#1), and checks that the certificate is signed by `ca`, is currently valid, names
    /// exactly one identity, and matches the key.
    ///
    /// # Errors
    /// [`Error::Certificate`] naming the offending file: missing or unreadable, not PEM,
    /// "certificate not signed by the deployment CA", expired, no identity, or a key that does
    /// not match the certificate.
    ///
    /// # Security
    /// Warns (through `tracing`) when the key file is readable by other users.
    pub fn load(cert_path: &Path, key_path: &Path, ca: &DeploymentCa) -> Result<Self> {
        let chain = certificates(&read_file(cert_path)?, cert_path)?;
        let key_pem = Zeroizing::new(read_file(key_path)?);
        warn_if_key_exposed(key_path);
        let identity = chain
            .first()
            .ok_or_else(|| Error::Certificate {
                path: cert_path.to_path_buf(),
                reason: "holds no certificate".to_owned(),
            })
            .and_then(|leaf| {
                identity_of(leaf).map_err(|reason| Error::Certificate {
                    path: cert_path.to_path_buf(),
                    reason,
                })
            })?;
        ca.verify(&chain, identity != Identity::Aggregator, cert_path)?;

        let mut key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| Error::Certificate {
            path: key_path.to_path_buf(),
            reason: format!(
                "not a PEM private key ({e}); expected a `-----BEGIN PRIVATE KEY-----` block as written by `sotto certs`"
            ),
        })?;
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key);
        key.zeroize();
        let signing_key = signing_key.map_err(|e| Error::Certificate {
            path: key_path.to_path_buf(),
            reason: format!(
                "unsupported private key ({e}); use ECDSA P-256/P-384, Ed25519 or RSA keys"
            ),
        })?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified.keys_match().map_err(|_| Error::Certificate {
            path: key_path.to_path_buf(),
            reason: format!(
                "private key does not match the certificate {}; use the key generated with it",
                cert_path.display()
            ),
        })?;
        Ok(Credentials {
            identity,
            certified: Arc::new(certified),
        })
    }

    /// Loads `identity`'s files from deployment directory `dir` (see [`RoleFiles::in_dir`]) and
    /// checks that the certificate really names `identity`.
    ///
    /// # Errors
    /// As [`Credentials::load`], plus [`Error::Certificate`] if the certificate names another
    /// role.
    pub fn load_role(dir: &Path, identity: Identity, ca: &DeploymentCa) -> Result<Self> {
        let files = RoleFiles::in_dir(dir, identity);
        let credentials = Credentials::load(&files.cert, &files.key, ca)?;
        if credentials.identity != identity {
            return Err(Error::Certificate {
                path: files.cert,
                reason: format!(
                    "certificate names {} but is used as {identity}; check the file names",
                    credentials.identity
                ),
            });
        }
        Ok(credentials)
    }

    /// The identity the certificate names.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The party id, or `None` for the aggregator.
    pub fn party_id(&self) -> Option<PartyId> {
        self.identity.party_id()
    }

    /// The certificate chain and signing key, for rustls.
    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }
}

fn warn_if_key_exposed(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{:o}", mode & 0o777),
                    "private key file is readable by other users; run `chmod 600` on it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
