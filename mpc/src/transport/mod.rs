//! Network transport: QUIC (quinn) with TLS 1.3 mutual authentication (rustls, `ring`), and
//! strict length-prefixed framing of session- and round-tagged messages.
//!
//! This layer only moves bytes and time; the protocol logic lives in the sans-IO state machines
//! of this crate. It gives them:
//!
//! - [`certs`]: a deployment's dev CA and per-role certificates ([`certs::generate_dev_pki`]),
//!   and loading them back with checks ([`certs::Credentials`]);
//! - [`tls`]: the rustls configurations and peer authentication ([`TlsConfig`]): a peer is
//!   whoever its certificate names (`party-3.sotto`), and only expected peers are admitted;
//! - [`frame`]: the wire format: a `u32` big-endian length, then a postcard-encoded
//!   [`Envelope`] `{ session, round, sender, body }`, with a size limit and strict decoding;
//! - [`endpoint`]: tokio endpoints ([`Server`], [`Client`]), authenticated [`Connection`]s, and
//!   [`collect`]: "one message from each of these peers by this deadline", reporting the silent
//!   ones as dropped.
//!
//! See `docs/transport.md` for the certificate layout, limits, timeouts and errors.
//!
//! # Security
//! Every connection is mutually authenticated against the deployment CA before any message is
//! read; messages claiming another sender, session or round are rejected; no input from the
//! network can make this layer panic or allocate more than the frame limit per peer.
//!
//! ```rust
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use sotto_mpc::transport::certs::generate_dev_pki;
//! use sotto_mpc::transport::{collect, Client, Identity, Server, SessionId, TlsConfig, TransportOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), sotto_mpc::transport::Error> {
//! let dir = std::env::temp_dir().join(format!("sotto-doc-transport-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! generate_dev_pki(&dir, 2, &[])?;
//! let parties = [Identity::party(1), Identity::party(2)];
//! let aggregator = TlsConfig::from_dir(&dir, Identity::Aggregator, parties)?;
//! let server = Server::bind("127.0.0.1:0".parse().unwrap(), &aggregator, TransportOptions::default())?;
//! let addr = server.local_addr();
//! let session = SessionId([1; 16]);
//!
//! // Each party connects and sends its value for round 0.
//! let mut party_tasks = Vec::new();
//! for party in parties {
//!     let tls = TlsConfig::from_dir(&dir, party, [Identity::Aggregator])?;
//!     party_tasks.push(tokio::spawn(async move {
//!         let client = Client::new(&tls, TransportOptions::default())?;
//!         let conn = client.connect(addr, Identity::Aggregator).await?;
//!         conn.send(session, 0, &vec![10u64 * u64::from(party.party_id().unwrap().0)]).await?;
//!         conn.recv::<()>(session, 1, Duration::from_secs(5)).await?; // wait for "done"
//!         client.shutdown().await;
//!         Ok::<_, sotto_mpc::transport::Error>(())
//!     }));
//! }
//!
//! let accepted = server.accept_peers(parties, Duration::from_secs(5)).await;
//! let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
//! let round0 = collect::<Vec<u64>>(&accepted.connections, parties, session, 0, deadline).await;
//! let sum: u64 = round0.messages.values().flatten().sum();
//! assert_eq!(sum, 30);
//! assert!(round0.dropped().is_empty());
//! sotto_mpc::transport::send_all(&accepted.connections, session, 1, &()).await?;
//! for task in party_tasks {
//!     task.await.unwrap()?;
//! }
//! server.shutdown().await;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! ```

pub mod certs;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod identity;
pub mod tls;

pub use endpoint::{
    Accepted, Client, Collected, Connection, Server, TransportOptions, collect, collect_each,
    send_all, send_each,
};
pub use error::{Error, Misbehavior, Result};
pub use frame::{Envelope, MAX_FRAME};
pub use identity::{Identity, PartyId, Peer, SessionId};
pub use tls::{ALPN, TlsConfig};
