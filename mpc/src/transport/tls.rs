//! TLS 1.3 with mutual authentication against the deployment CA (rustls, `ring` provider).
//!
//! Both ends present a certificate issued by the deployment CA, and both verify the other's
//! chain against that CA alone (no system roots). After the handshake, the peer's identity is
//! read from its certificate ([`crate::transport::certs::identity_of`]) and must belong to the
//! set of peers this endpoint expects; anyone else is refused.
//!
//! Choices, all fixed (there is nothing to misconfigure):
//! - TLS 1.3 only (QUIC requires it); the `ring` crypto provider;
//! - ALPN [`ALPN`] (`sotto/1`), so a sotto endpoint never talks to another QUIC service;
//! - no session resumption and no 0-RTT: every connection runs a full handshake with
//!   certificates, so no message is ever accepted before the peer is authenticated;
//! - the TLS server name used when dialing is the role's identity name (`aggregator.sotto`,
//!   `party-3.sotto`), so the dialed address may be any IP or host name.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::client::Resumption;
use rustls::pki_types::CertificateDer;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;

use super::certs::{CA_FILE, Credentials, DeploymentCa, identity_of, load_ca};
use super::error::{Error, Result};
use super::identity::Identity;

/// The ALPN protocol identifier of sotto's transport, version 1.
pub const ALPN: &[u8] = b"sotto/1";

/// One endpoint's TLS set-up: its credentials, the deployment CA, and the peers it accepts.
///
/// Build one per process and share it (it is cheap to clone).
#[derive(Clone)]
pub struct TlsConfig {
    local: Identity,
    allowed: Arc<BTreeSet<Identity>>,
    server: Arc<QuicServerConfig>,
    client: Arc<QuicClientConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("local", &self.local)
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Builds the client and server configurations for `credentials`, trusting only `ca`, and
    /// accepting only peers whose certificate names one of `allowed_peers` (this endpoint's own
    /// identity is removed from the set).
    ///
    /// Typical sets: the aggregator allows `Identity::party(1..=n)`; a party talking to the
    /// aggregator allows `[Identity::Aggregator]`; a peer-to-peer party allows the other parties.
    ///
    /// ```rust
    /// use sotto_mpc::transport::certs::{generate_dev_pki, load_ca, Credentials};
    /// use sotto_mpc::transport::{Identity, TlsConfig};
    ///
    /// let dir = std::env::temp_dir().join(format!("sotto-doc-tls-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// generate_dev_pki(&dir, 2, &[])?;
    /// let ca = load_ca(&dir.join("ca.pem"))?;
    /// let creds = Credentials::load_role(&dir, Identity::Aggregator, &ca)?;
    /// let tls = TlsConfig::new(&creds, &ca, (1..=2).map(Identity::party))?;
    /// assert!(tls.allows(Identity::party(2)));
    /// assert!(!tls.allows(Identity::party(3)));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), sotto_mpc::transport::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming `allowed_peers` if it is empty (after removing the own
    /// identity); [`Error::Tls`] if rustls refuses the configuration.
    ///
    /// # Security
    /// Mutual authentication is mandatory: the server half requires a client certificate and
    /// the client half presents one. Trust is limited to `ca`.
    pub fn new(
        credentials: &Credentials,
        ca: &DeploymentCa,
        allowed_peers: impl IntoIterator<Item = Identity>,
    ) -> Result<Self> {
        let local = credentials.identity();
        let allowed: BTreeSet<Identity> = allowed_peers
            .into_iter()
            .filter(|peer| *peer != local)
            .collect();
        if allowed.is_empty() {
            return Err(Error::invalid(
                "allowed_peers",
                format!(
                    "no peer other than {local} is allowed; list the identities this endpoint talks to"
                ),
            ));
        }
        let tls_error = |what: &str, e: &dyn fmt::Display| Error::Tls {
            reason: format!("{what}: {e}"),
        };

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.der().clone())
            .map_err(|e| Error::Certificate {
                path: ca.path().to_path_buf(),
                reason: format!("not usable as a trust anchor: {e}"),
            })?;
        let roots = Arc::new(roots);
        let certified = (*credentials.certified_key()).clone();

        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| tls_error("client certificate verifier", &e))?;
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_error("server protocol versions", &e))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified.clone())));
        server.alpn_protocols = vec![ALPN.to_vec()];
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        server.max_early_data_size = 0;
        let server = QuicServerConfig::try_from(server)
            .map_err(|e| tls_error("QUIC server configuration", &e))?;

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_error("client protocol versions", &e))?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        client.alpn_protocols = vec![ALPN.to_vec()];
        client.resumption = Resumption::disabled();
        client.enable_early_data = false;
        let client = QuicClientConfig::try_from(client)
            .map_err(|e| tls_error("QUIC client configuration", &e))?;

        Ok(TlsConfig {
            local,
            allowed: Arc::new(allowed),
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// Loads `dir/ca.pem` and `identity`'s certificate and key from deployment directory `dir`
    /// (the layout of [`crate::transport::certs`]) and builds the configuration.
    ///
    /// # Errors
    /// As [`load_ca`], [`Credentials::load_role`] and [`TlsConfig::new`].
    pub fn from_dir(
        dir: &Path,
        identity: Identity,
        allowed_peers: impl IntoIterator<Item = Identity>,
    ) -> Result<Self> {
        let ca = load_ca(&dir.join(CA_FILE))?;
        let credentials = Credentials::load_role(dir, identity, &ca)?;
        TlsConfig::new(&credentials, &ca, allowed_peers)
    }

    /// This endpoint's identity.
    pub fn local_identity(&self) -> Identity {
        self.local
    }

    /// The identities this endpoint accepts as peers.
    pub fn allowed_peers(&self) -> &BTreeSet<Identity> {
        &self.allowed
    }

    /// Whether `peer` is an accepted peer.
    pub fn allows(&self, peer: Identity) -> bool {
        self.allowed.contains(&peer)
    }

    /// Reads the identity from a peer's certificate chain (already verified against the CA by
    /// the TLS handshake) and checks that it is an accepted peer.
    ///
    /// # Errors
    /// A description naming the problem: no certificate, no or malformed identity, or an
    /// identity outside the accepted set ("unknown party 7").
    pub fn authenticate_peer(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> std::result::Result<Identity, String> {
        let leaf = chain.first().ok_or("the peer presented no certificate")?;
        let identity = identity_of(leaf)?;
        if !self.allows(identity) {
            return Err(match identity {
                Identity::Party(id) => format!(
                    "unknown {id}: its certificate is valid but {id} is not in this deployment's set of expected peers"
                ),
                Identity::Aggregator => {
                    "the aggregator is not an expected peer of this endpoint".to_owned()
                }
            });
        }
        Ok(identity)
    }

    pub(crate) fn quic_server(&self) -> Arc<QuicServerConfig> {
        Arc::clone(&self.server)
    }

    pub(crate) fn quic_client(&self) -> Arc<QuicClientConfig> {
        Arc::clone(&self.client)
    }
}
