//! QUIC endpoints (quinn on tokio): an accepting [`Server`], a dialing [`Client`], and
//! authenticated [`Connection`]s that carry [`Envelope`]s.
//!
//! # Connection life cycle
//! 1. TLS 1.3 handshake with mutual authentication ([`crate::transport::tls`]), bounded by
//!    [`TransportOptions::handshake_timeout`].
//! 2. The server reads the client's identity from its certificate and refuses it (closing with
//!    [`CLOSE_REFUSED`] and a reason such as "unknown party 7") unless it is an expected peer.
//!    The client likewise checks that the server is the identity it dialed.
//! 3. The server admits the client by sending an admission message; [`Client::connect`]
//!    returns only after receiving it, so a refusal surfaces at connect time as
//!    [`Error::Refused`].
//! 4. Each side then sends its envelopes, in order, on one unidirectional stream of its own
//!    (opened at its first send); peers may open no other stream.
//!
//! # Time
//! Every step is bounded: handshakes by `handshake_timeout`, sends by `write_timeout`, receives
//! by the caller's deadline ([`Connection::recv`], [`collect`]), and dead peers by the QUIC
//! idle timeout ([`TransportOptions::idle_timeout`], kept alive by pings while both ends live).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{ConnectionError, IdleTimeout, ReadError, VarInt};
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::error::{Error, Misbehavior, Result};
use super::frame::{
    Envelope, FrameDecoder, MAX_FRAME, check_max_frame, decode_envelope, encode_frame,
};
use super::identity::{Identity, Peer, SessionId};
use super::tls::TlsConfig;

/// QUIC application close code: normal close.
pub const CLOSE_DONE: u32 = 0;
/// QUIC application close code: the peer was refused (not an expected identity).
pub const CLOSE_REFUSED: u32 = 1;
/// QUIC application close code: the peer broke the framing or the set-up.
pub const CLOSE_MISBEHAVED: u32 = 2;
/// QUIC application close code: the endpoint shut down.
pub const CLOSE_SHUTDOWN: u32 = 3;
/// QUIC application close code: a send timed out (the stream cannot be resumed).
pub const CLOSE_TIMEOUT: u32 = 4;
/// QUIC application close code: the protocol dropped this peer from the run (it was silent
/// past a deadline, its message was rejected, or its parameters disagree); the reason says
/// why. The peer sees [`Error::Dropped`].
pub const CLOSE_DROPPED: u32 = 5;

/// Most connection attempts a server handles at once before authentication; more are refused.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Default of [`TransportOptions::max_pending_per_address`].
pub const MAX_PENDING_PER_ADDRESS: usize = 64;

/// Version of the connection set-up (admission message).
const SETUP_VERSION: u16 = 1;

/// Limits and timeouts of an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportOptions {
    /// Largest accepted frame payload in bytes (default [`MAX_FRAME`], 64 MiB). Both ends
    /// should agree: a sender refuses to send more, a receiver refuses to read more.
    pub max_frame: usize,
    /// Bound on connection set-up: TLS handshake plus admission (default 10 s).
    pub handshake_timeout: Duration,
    /// A connection with no packets for this long is dead (default 30 s).
    pub idle_timeout: Duration,
    /// Interval of keep-alive pings, below `idle_timeout` (default 5 s).
    pub keep_alive: Duration,
    /// Bound on sending one message, flow control included (default 60 s).
    pub write_timeout: Duration,
    /// Servers: most connection attempts from one IP address in set-up at once (default
    /// [`MAX_PENDING_PER_ADDRESS`]); more are refused with QUIC's `CONNECTION_REFUSED`, which
    /// a client sees as [`Error::Busy`] and may retry. One flooding address then cannot fill
    /// the server's [`MAX_PENDING_HANDSHAKES`] slots.
    pub max_pending_per_address: usize,
    /// Servers: answer a connection attempt from an address not yet validated with a QUIC
    /// Retry (a stateless token the client must echo), so that handshakes from spoofed
    /// addresses cost no state and no slot (default true; one extra round trip per
    /// connection).
    pub validate_addresses: bool,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            max_frame: MAX_FRAME,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            write_timeout: Duration::from_secs(60),
            max_pending_per_address: MAX_PENDING_PER_ADDRESS,
            validate_addresses: true,
        }
    }
}

impl TransportOptions {
    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the field: `max_frame` outside `1..=u32::MAX`, a zero
    /// timeout, an idle timeout beyond QUIC's range, or `keep_alive >= idle_timeout`.
    pub fn validate(&self) -> Result<()> {
        check_max_frame(self.max_frame)?;
        for (name, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
            ("keep_alive", self.keep_alive),
            ("write_timeout", self.write_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::invalid(name, "must be positive"));
            }
        }
        if self.max_pending_per_address == 0 {
            return Err(Error::invalid(
                "max_pending_per_address",
                "must be at least 1 (or no connection is ever accepted)",
            ));
        }
        IdleTimeout::try_from(self.idle_timeout).map_err(|_| {
            Error::invalid(
                "idle_timeout",
                format!("{:?} is too long for QUIC", self.idle_timeout),
            )
        })?;
        if self.keep_alive >= self.idle_timeout {
            return Err(Error::invalid(
                "keep_alive",
                format!(
                    "{:?} must be shorter than idle_timeout ({:?}), or live connections time out",
                    self.keep_alive, self.idle_timeout
                ),
            ));
        }
        Ok(())
    }

    fn transport_config(&self) -> Result<Arc<quinn::TransportConfig>> {
        self.validate()?;
        let mut config = quinn::TransportConfig::default();
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| Error::invalid("idle_timeout", "too long for QUIC"))?;
        config
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(Some(self.keep_alive))
            // One stream per direction; anything else is refused by flow control.
            .max_concurrent_uni_streams(VarInt::from_u32(1))
            .max_concurrent_bidi_streams(VarInt::from_u32(0))
            .datagram_receive_buffer_size(None)
            // Room for multi-megabyte vectors in flight.
            .stream_receive_window(VarInt::from_u32(8 << 20))
            .receive_window(VarInt::from_u32(16 << 20))
            .send_window(16 << 20);
        Ok(Arc::new(config))
    }
}

/// `now + after`, saturating far in the future instead of overflowing on huge durations.
fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(Duration::from_secs(30 * 365 * 86_400)))
        .unwrap_or(now)
}

/// The admission message a server sends first on its stream.
#[derive(Debug, Serialize, Deserialize)]
struct Admission {
    version: u16,
    admitted_as: Identity,
}

/// The session id used by connection set-up messages (never a protocol session).
const SETUP_SESSION: SessionId = SessionId([0; 16]);

enum SendState {
    NotOpened,
    Open(quinn::SendStream),
    Broken,
}

struct RecvState {
    stream: Option<quinn::RecvStream>,
    decoder: FrameDecoder,
    broken: bool,
}

struct Inner {
    quic: quinn::Connection,
    local: Identity,
    peer: Identity,
    options: TransportOptions,
    send: Mutex<SendState>,
    recv: Mutex<RecvState>,
    /// Bytes of frames written to the send stream (length prefixes included).
    frame_bytes_sent: std::sync::atomic::AtomicU64,
}

/// An authenticated connection to one peer. Cheap to clone (clones share the connection).
///
/// Dropping the last clone closes the connection at once, discarding messages still in
/// flight: keep it until the peer has answered, or use [`Connection::close_gracefully`].
///
/// Sends are serialized and receives are serialized, so concurrent callers never interleave
/// frames. [`Connection::recv_envelope`] is cancel-safe: a receive abandoned half-way (e.g. at a
/// deadline) resumes where it stopped on the next call. Sends are not: a send interrupted by
/// its timeout closes the connection.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("local", &self.inner.local)
            .field("peer", &self.inner.peer)
            .field("remote", &self.inner.quic.remote_address())
            .finish()
    }
}

impl Connection {
    fn new(
        quic: quinn::Connection,
        local: Identity,
        peer: Identity,
        options: TransportOptions,
    ) -> Result<Self> {
        let decoder = FrameDecoder::new(options.max_frame)?;
        Ok(Connection {
            inner: Arc::new(Inner {
                quic,
                local,
                peer,
                options,
                send: Mutex::new(SendState::NotOpened),
                recv: Mutex::new(RecvState {
                    stream: None,
                    decoder,
                    broken: false,
                }),
                frame_bytes_sent: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The peer's authenticated identity (from its certificate).
    pub fn peer(&self) -> Identity {
        self.inner.peer
    }

    /// This endpoint's identity.
    pub fn local_identity(&self) -> Identity {
        self.inner.local
    }

    /// The peer's network address.
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.quic.remote_address()
    }

    /// The underlying quinn connection, for statistics or custom streams.
    ///
    /// # Security
    /// Bytes written on it bypass framing and envelopes; the peer will treat anything other
    /// than well-formed frames on the first stream as misbehaviour.
    pub fn quic(&self) -> &quinn::Connection {
        &self.inner.quic
    }

    /// Bytes of frames (length prefix, envelope and body) this side has written on its
    /// message stream: the protocol's traffic, without QUIC/TLS/UDP overhead or
    /// retransmissions (for those, see `quic().stats().udp_tx`).
    pub fn frame_bytes_sent(&self) -> u64 {
        self.inner
            .frame_bytes_sent
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends `body` as the envelope `(session, round, sender = this endpoint)`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if the encoded message exceeds `max_frame`;
    /// [`Error::Timeout`] if it could not be sent within `write_timeout` (the connection is then
    /// closed); [`Error::ConnectionLost`] / [`Error::Refused`] if the connection ended.
    pub async fn send<T: Serialize>(&self, session: SessionId, round: u64, body: &T) -> Result<()> {
        let envelope = Envelope {
            session,
            round,
            sender: self.inner.local,
            body,
        };
        let frame = encode_frame(&envelope, self.inner.options.max_frame)?;
        self.send_frame(&frame).await
    }

    /// Sends one pre-encoded frame (see [`encode_frame`]).
    async fn send_frame(&self, frame: &[u8]) -> Result<()> {
        let peer = Peer::Known(self.inner.peer);
        let mut state = self.inner.send.lock().await;
        let write = async {
            if matches!(*state, SendState::NotOpened) {
                let stream = self.inner.quic.open_uni().await.map_err(|e| self.lost(e))?;
                *state = SendState::Open(stream);
            }
            match &mut *state {
                SendState::Open(stream) => stream.write_all(frame).await.map_err(|e| match e {
                    quinn::WriteError::ConnectionLost(e) => self.lost(e),
                    other => Error::ConnectionLost {
                        party: peer,
                        reason: other.to_string(),
                    },
                }),
                _ => Err(Error::ConnectionLost {
                    party: peer,
                    reason: "an earlier send failed; the connection is closed".to_owned(),
                }),
            }
        };
        let result = match tokio::time::timeout(self.inner.options.write_timeout, write).await {
            Ok(result) => result,
            Err(_) => {
                self.close_with(CLOSE_TIMEOUT, "send timed out");
                Err(Error::Timeout {
                    party: peer,
                    what: "sending a message (flow control)",
                })
            }
        };
        match result {
            Ok(()) => {
                self.inner.frame_bytes_sent.fetch_add(
                    u64::try_from(frame.len()).unwrap_or(u64::MAX),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            Err(_) => *state = SendState::Broken,
        }
        result
    }

    /// Receives the next envelope, checking that it decodes exactly and that its sender is the
    /// authenticated peer. Waits without limit: wrap it in a timeout, or use
    /// [`Connection::recv`]. Cancel-safe.
    ///
    /// # Errors
    /// [`Error::PeerMisbehaved`] for an oversized, malformed or truncated frame, trailing bytes
    /// or a wrong sender (framing errors close the connection, since the stream cannot be
    /// resynchronized); [`Error::ConnectionLost`] when the connection or stream ended.
    pub async fn recv_envelope<T: DeserializeOwned>(&self) -> Result<Envelope<T>> {
        let payload = self.recv_payload().await?;
        let envelope = decode_envelope::<T>(&payload).map_err(|reason| self.misbehaved(reason))?;
        if envelope.sender != self.inner.peer {
            return Err(self.misbehaved(Misbehavior::WrongSender {
                claimed: envelope.sender,
            }));
        }
        Ok(envelope)
    }

    /// Receives the body of the next message, which must name `session` and `round`, waiting
    /// at most `timeout`.
    ///
    /// # Errors
    /// As [`Connection::recv_envelope`], plus [`Error::PeerMisbehaved`] with
    /// [`Misbehavior::WrongSession`] (e.g. a replay from an earlier run) or
    /// [`Misbehavior::WrongRound`], and [`Error::Timeout`] if nothing arrived in time.
    pub async fn recv<T: DeserializeOwned>(
        &self,
        session: SessionId,
        round: u64,
        timeout: Duration,
    ) -> Result<T> {
        self.recv_until(session, round, deadline_after(timeout))
            .await
    }

    /// [`Connection::recv`] with an absolute deadline.
    ///
    /// # Errors
    /// As [`Connection::recv`].
    pub async fn recv_until<T: DeserializeOwned>(
        &self,
        session: SessionId,
        round: u64,
        deadline: Instant,
    ) -> Result<T> {
        let envelope = tokio::time::timeout_at(deadline, self.recv_envelope::<T>())
            .await
            .map_err(|_| Error::Timeout {
                party: Peer::Known(self.inner.peer),
                what: "a message",
            })??;
        envelope
            .check(self.inner.peer, session, round)
            .map_err(|reason| self.misbehaved(reason))?;
        Ok(envelope.body)
    }

    /// Finishes this side's message stream, waits (at most `timeout`) until the peer has
    /// acknowledged every byte sent, then closes the connection with code [`CLOSE_DONE`].
    ///
    /// Use it after a last message that gets no answer: dropping the last clone of a
    /// connection, [`Connection::close`], or shutting the endpoint down discard data still in
    /// flight.
    ///
    /// # Errors
    /// [`Error::Timeout`] if the peer did not acknowledge in time (the connection is closed
    /// anyway); [`Error::ConnectionLost`] if the connection had already ended.
    pub async fn close_gracefully(&self, timeout: Duration) -> Result<()> {
        let peer = Peer::Known(self.inner.peer);
        let mut state = self.inner.send.lock().await;
        let result = match &mut *state {
            SendState::Open(stream) => {
                let _ = stream.finish();
                match tokio::time::timeout(timeout, stream.stopped()).await {
                    Ok(Ok(None)) => Ok(()),
                    Ok(Ok(Some(code))) => Err(Error::ConnectionLost {
                        party: peer,
                        reason: format!("the peer stopped reading our messages (code {code})"),
                    }),
                    Ok(Err(e)) => Err(Error::ConnectionLost {
                        party: peer,
                        reason: e.to_string(),
                    }),
                    Err(_) => Err(Error::Timeout {
                        party: peer,
                        what: "acknowledgement of our last messages",
                    }),
                }
            }
            SendState::NotOpened => Ok(()),
            SendState::Broken => Err(Error::ConnectionLost {
                party: peer,
                reason: "an earlier send failed; the connection is closed".to_owned(),
            }),
        };
        *state = SendState::Broken;
        self.close_with(CLOSE_DONE, "done");
        result
    }

    /// Closes the connection at once with code [`CLOSE_DONE`]; the peer sees `reason`. Data
    /// still in flight is discarded (see [`Connection::close_gracefully`]).
    pub fn close(&self, reason: &str) {
        self.close_with(CLOSE_DONE, reason);
    }

    /// Tells the peer it was dropped from the run and closes the connection (code
    /// [`CLOSE_DROPPED`]): its next receive fails with [`Error::Dropped`] carrying `reason`
    /// (keep it free of secrets; at most 200 bytes are sent).
    pub fn close_dropped(&self, reason: &str) {
        self.close_with(CLOSE_DROPPED, reason);
    }

    fn close_with(&self, code: u32, reason: &str) {
        let reason = reason.as_bytes();
        // Keep the reason well inside one packet.
        let reason = reason.get(..reason.len().min(200)).unwrap_or_default();
        self.inner.quic.close(VarInt::from_u32(code), reason);
    }

    /// Reads one complete frame payload from the peer's stream. Cancel-safe: partial frames
    /// stay in the decoder.
    async fn recv_payload(&self) -> Result<Vec<u8>> {
        let mut guard = self.inner.recv.lock().await;
        let state = &mut *guard;
        if state.broken {
            return Err(Error::ConnectionLost {
                party: Peer::Known(self.inner.peer),
                reason: "the message stream failed earlier".to_owned(),
            });
        }
        let stream = match &mut state.stream {
            Some(stream) => stream,
            None => {
                let stream = self
                    .inner
                    .quic
                    .accept_uni()
                    .await
                    .map_err(|e| self.lost(e))?;
                state.stream.insert(stream)
            }
        };
        loop {
            let wanted = state.decoder.wanted();
            let chunk = match stream.read_chunk(wanted, true).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    state.broken = true;
                    if state.decoder.is_at_boundary() {
                        return Err(Error::ConnectionLost {
                            party: Peer::Known(self.inner.peer),
                            reason: "the peer finished its message stream".to_owned(),
                        });
                    }
                    let reason = Misbehavior::Truncated {
                        missing: state.decoder.missing(),
                    };
                    self.close_with(CLOSE_MISBEHAVED, &reason.to_string());
                    return Err(self.misbehaved(reason));
                }
                Err(ReadError::ConnectionLost(e)) => {
                    state.broken = true;
                    return Err(self.lost(e));
                }
                Err(other) => {
                    state.broken = true;
                    return Err(Error::ConnectionLost {
                        party: Peer::Known(self.inner.peer),
                        reason: format!("message stream failed: {other}"),
                    });
                }
            };
            match state.decoder.push(&chunk.bytes) {
                Ok((_, Some(payload))) => return Ok(payload),
                Ok((_, None)) => {}
                Err(reason) => {
                    state.broken = true;
                    self.close_with(CLOSE_MISBEHAVED, &reason.to_string());
                    return Err(self.misbehaved(reason));
                }
            }
        }
    }

    fn misbehaved(&self, reason: Misbehavior) -> Error {
        Error::PeerMisbehaved {
            party: Peer::Known(self.inner.peer),
            reason,
        }
    }

    fn lost(&self, e: ConnectionError) -> Error {
        connection_error(e, Peer::Known(self.inner.peer), false)
    }
}

/// Maps a quinn connection error to ours. During set-up, a close by the peer is a refusal.
fn connection_error(e: ConnectionError, peer: Peer, setup: bool) -> Error {
    match e {
        ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            if close.error_code == VarInt::from_u32(CLOSE_REFUSED) {
                Error::Refused { by: peer, reason }
            } else if close.error_code == VarInt::from_u32(CLOSE_DROPPED) {
                Error::Dropped { by: peer, reason }
            } else {
                Error::ConnectionLost {
                    party: peer,
                    reason: format!("closed by the peer (code {}): {reason}", close.error_code),
                }
            }
        }
        ConnectionError::ConnectionClosed(close)
            if setup && close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            Error::Busy { by: peer }
        }
        ConnectionError::ConnectionClosed(close) if setup => Error::Refused {
            by: peer,
            reason: format!("TLS/QUIC alert: {close}"),
        },
        ConnectionError::TransportError(err) if setup => Error::Unauthorized {
            peer,
            reason: format!("TLS handshake failed: {err}"),
        },
        ConnectionError::TimedOut => Error::ConnectionLost {
            party: peer,
            reason: "idle timeout (no packets from the peer)".to_owned(),
        },
        ConnectionError::LocallyClosed => Error::ConnectionLost {
            party: peer,
            reason: "closed locally".to_owned(),
        },
        other => Error::ConnectionLost {
            party: peer,
            reason: other.to_string(),
        },
    }
}

/// The verified certificate chain of a connection's peer.
fn peer_chain(
    quic: &quinn::Connection,
) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    quic.peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .map(|chain| *chain)
        .ok_or_else(|| "the peer presented no certificate".to_owned())
}

/// Runs the server side of connection set-up for one incoming connection.
async fn admit(
    incoming: quinn::Incoming,
    tls: TlsConfig,
    options: TransportOptions,
) -> Result<Connection> {
    let addr = incoming.remote_address();
    let unauthorized = |reason: String| Error::Unauthorized {
        peer: Peer::Address(addr),
        reason,
    };
    let deadline = deadline_after(options.handshake_timeout);
    let connecting = incoming
        .accept()
        .map_err(|e| unauthorized(format!("connection attempt failed: {e}")))?;
    let quic = tokio::time::timeout_at(deadline, connecting)
        .await
        .map_err(|_| Error::Timeout {
            party: Peer::Address(addr),
            what: "the TLS handshake",
        })?
        .map_err(|e| unauthorized(format!("TLS handshake failed: {e}")))?;
    let identity = match peer_chain(&quic).and_then(|chain| tls.authenticate_peer(&chain)) {
        Ok(identity) => identity,
        Err(reason) => {
            let short = reason.get(..reason.len().min(200)).unwrap_or_default();
            quic.close(VarInt::from_u32(CLOSE_REFUSED), short.as_bytes());
            return Err(unauthorized(reason));
        }
    };
    let connection = Connection::new(quic, tls.local_identity(), identity, options)?;
    let admission = Admission {
        version: SETUP_VERSION,
        admitted_as: identity,
    };
    tokio::time::timeout_at(deadline, connection.send(SETUP_SESSION, 0, &admission))
        .await
        .map_err(|_| Error::Timeout {
            party: Peer::Known(identity),
            what: "the admission",
        })??;
    Ok(connection)
}

/// An endpoint accepting authenticated connections: the aggregator, or a peer in
/// peer-to-peer mode.
///
/// Handshakes run concurrently in background tasks, so a slow or hostile client cannot hold
/// up the others.
pub struct Server {
    endpoint: quinn::Endpoint,
    tls: TlsConfig,
    local_addr: SocketAddr,
    events: Mutex<mpsc::Receiver<Result<Connection>>>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("identity", &self.tls.local_identity())
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// What [`Server::accept_peers`] gathered before its deadline.
#[derive(Debug, Default)]
pub struct Accepted {
    /// Authenticated connections, by peer.
    pub connections: BTreeMap<Identity, Connection>,
    /// Expected peers that did not connect in time.
    pub missing: BTreeSet<Identity>,
    /// Connection attempts that were refused or failed (other CA, unknown party, timeouts).
    pub refused: Vec<Error>,
}

impl Server {
    /// Binds a UDP socket at `addr` (port 0 picks a free port) and starts accepting.
    /// Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for invalid options; [`Error::Io`] if the socket cannot be
    /// bound (port in use, no permission) or no tokio runtime is running.
    pub fn bind(addr: SocketAddr, tls: &TlsConfig, options: TransportOptions) -> Result<Self> {
        let transport = options.transport_config()?;
        let crypto: Arc<QuicServerConfig> = tls.quic_server();
        let mut config = quinn::ServerConfig::with_crypto(crypto);
        config.transport_config(transport);
        // Bound the unauthenticated work a flood of connection attempts can cause.
        config.max_incoming(MAX_PENDING_HANDSHAKES);
        let endpoint = quinn::Endpoint::server(config, addr)
            .map_err(|e| Error::io(format!("cannot bind a QUIC server to {addr}"), e))?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|e| Error::io("cannot read the bound address", e))?;
        let (events_tx, events_rx) = mpsc::channel(256);
        let accept_task = tokio::spawn(accept_loop(
            endpoint.clone(),
            tls.clone(),
            options,
            events_tx,
        ));
        Ok(Server {
            endpoint,
            tls: tls.clone(),
            local_addr,
            events: Mutex::new(events_rx),
            accept_task,
        })
    }

    /// The bound address (with the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This server's identity.
    pub fn identity(&self) -> Identity {
        self.tls.local_identity()
    }

    /// The next connection attempt: an admitted, authenticated connection, or the error that
    /// refused it (callers usually log it and call again).
    ///
    /// # Errors
    /// [`Error::Unauthorized`] / [`Error::Timeout`] for a refused attempt; [`Error::Closed`]
    /// once the server is shut down.
    pub async fn accept(&self) -> Result<Connection> {
        self.events
            .lock()
            .await
            .recv()
            .await
            .unwrap_or(Err(Error::Closed))
    }

    /// Accepts connections until every identity in `expected` is connected or `within` has
    /// passed. Refused attempts are collected, not fatal; a second connection from an already
    /// connected peer replaces the first only if the first is closed, and is refused otherwise.
    pub async fn accept_peers(
        &self,
        expected: impl IntoIterator<Item = Identity>,
        within: Duration,
    ) -> Accepted {
        let deadline = deadline_after(within);
        let mut missing: BTreeSet<Identity> = expected.into_iter().collect();
        let mut accepted = Accepted::default();
        while !missing.is_empty() {
            let next = match tokio::time::timeout_at(deadline, self.accept()).await {
                Err(_) => break,
                Ok(next) => next,
            };
            match next {
                Ok(connection) => {
                    let peer = connection.peer();
                    if missing.remove(&peer) {
                        accepted.connections.insert(peer, connection);
                    } else if let Some(old) = accepted.connections.get(&peer) {
                        if old.quic().close_reason().is_some() {
                            accepted.connections.insert(peer, connection);
                        } else {
                            connection.close_with(CLOSE_REFUSED, "duplicate connection");
                            accepted.refused.push(Error::Unauthorized {
                                peer: Peer::Known(peer),
                                reason: "duplicate connection".to_owned(),
                            });
                        }
                    } else {
                        // Allowed by the TLS set but not wanted now: keep it out of this round.
                        connection.close_with(CLOSE_REFUSED, "not expected in this session");
                        accepted.refused.push(Error::Unauthorized {
                            peer: Peer::Known(peer),
                            reason: "not expected in this session".to_owned(),
                        });
                    }
                }
                Err(Error::Closed) => break,
                Err(err) => {
                    tracing::info!(error = %err, "refused a connection attempt");
                    accepted.refused.push(err);
                }
            }
        }
        accepted.missing = missing;
        accepted
    }

    /// Closes all connections (code [`CLOSE_SHUTDOWN`]), waits (at most 2 s) for the peers to
    /// be told, and releases the UDP port.
    ///
    /// The port is free when this returns if every [`Connection`] from this server has been
    /// dropped; otherwise it is released when the last one is.
    pub async fn shutdown(self) {
        self.accept_task.abort();
        // The accept loop holds a handle on the endpoint: wait until it is gone.
        let _ = self.accept_task.await;
        close_endpoint(self.endpoint, true).await;
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    tls: TlsConfig,
    options: TransportOptions,
    events: mpsc::Sender<Result<Connection>>,
) {
    let mut handshakes = JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    // Pending handshakes per source IP address (entries removed when they reach zero).
    let per_address: Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>> = Arc::default();
    let mut refused_busy: u64 = 0;
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let remote = incoming.remote_address();
                // Stateless address validation first: a source that cannot echo the Retry
                // token (spoofed, or a probe that never answers) costs no slot.
                if options.validate_addresses
                    && !incoming.remote_address_validated()
                    && incoming.may_retry()
                {
                    if let Err(error) = incoming.retry() {
                        tracing::debug!(%remote, %error, "cannot send a QUIC retry");
                    }
                    continue;
                }
                let Some(slot) = AddressSlot::take(&per_address, remote.ip(), options.max_pending_per_address) else {
                    refused_busy += 1;
                    // Logged at a rate that a flood cannot turn into a log flood.
                    if refused_busy.is_power_of_two() {
                        tracing::warn!(%remote, refused = refused_busy, "too many pending handshakes from this address; refusing");
                    }
                    incoming.refuse();
                    continue;
                };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    refused_busy += 1;
                    if refused_busy.is_power_of_two() {
                        tracing::warn!(%remote, refused = refused_busy, "too many pending handshakes; refusing");
                    }
                    incoming.refuse();
                    continue;
                };
                let (tls, options, events) = (tls.clone(), options.clone(), events.clone());
                handshakes.spawn(async move {
                    let result = admit(incoming, tls, options).await;
                    drop(permit);
                    drop(slot);
                    let _ = events.send(result).await;
                });
            }
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
        }
    }
}

/// One pending handshake counted against its source address; released on drop.
struct AddressSlot {
    counts: Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl AddressSlot {
    /// A slot for `ip` if it has fewer than `limit` pending handshakes.
    fn take(
        counts: &Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
        limit: usize,
    ) -> Option<Self> {
        // A poisoned lock only means another task panicked while counting: keep counting.
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            counts: Arc::clone(counts),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// How long [`close_endpoint`] waits for connections to drain.
const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How long [`close_endpoint`] waits for the UDP port to be released.
const RELEASE_GRACE: Duration = Duration::from_millis(500);

async fn close_endpoint(endpoint: quinn::Endpoint, drain: bool) {
    let local = endpoint.local_addr().ok();
    endpoint.close(VarInt::from_u32(CLOSE_SHUTDOWN), b"shutdown");
    // Bounded: closed connections drain in a few round trips on a live network. An endpoint
    // that never established a connection has nobody to tell.
    if drain {
        let _ = tokio::time::timeout(DRAIN_GRACE, endpoint.wait_idle()).await;
    }
    drop(endpoint);
    // quinn releases the socket once the endpoint and every connection handle are gone (live
    // `Connection` clones keep it). Wait, bounded, until the port can be bound again, so that
    // callers who dropped their connections may rebind it at once.
    let Some(local) = local else { return };
    if local.port() == 0 {
        return;
    }
    let deadline = deadline_after(RELEASE_GRACE);
    loop {
        if std::net::UdpSocket::bind(local).is_ok() {
            return;
        }
        if Instant::now() >= deadline {
            tracing::debug!(
                %local,
                "UDP port still held after shutdown: connections from this endpoint are still alive"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An endpoint that dials servers: a party connecting to the aggregator, or a peer dialing
/// other peers. One client can hold many connections.
pub struct Client {
    endpoint: quinn::Endpoint,
    tls: TlsConfig,
    options: TransportOptions,
    /// Whether a connection was ever established (else shutdown need not drain).
    established: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("identity", &self.tls.local_identity())
            .finish()
    }
}

impl Client {
    /// A client on an ephemeral IPv4 port (`0.0.0.0:0`). Use [`Client::bind`] with `[::]:0` to
    /// reach IPv6 servers. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// As [`Client::bind`].
    pub fn new(tls: &TlsConfig, options: TransportOptions) -> Result<Self> {
        Client::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), tls, options)
    }

    /// A client bound to `local`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for invalid options, [`Error::Io`] if the socket cannot be
    /// bound.
    pub fn bind(local: SocketAddr, tls: &TlsConfig, options: TransportOptions) -> Result<Self> {
        let transport = options.transport_config()?;
        let mut endpoint = quinn::Endpoint::client(local)
            .map_err(|e| Error::io(format!("cannot bind a QUIC client to {local}"), e))?;
        let mut config = quinn::ClientConfig::new(tls.quic_client());
        config.transport_config(transport);
        endpoint.set_default_client_config(config);
        Ok(Client {
            endpoint,
            tls: tls.clone(),
            options,
            established: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Connects to `expected` at `addr`, authenticates it, and waits to be admitted.
    ///
    /// The TLS server name is `expected.dns_name()` (e.g. `aggregator.sotto`), which the
    /// server's certificate must carry; `addr` may be any address where it listens.
    ///
    /// ```rust
    /// use std::time::Duration;
    /// use sotto_mpc::transport::certs::generate_dev_pki;
    /// use sotto_mpc::transport::{Client, Identity, Server, SessionId, TlsConfig, TransportOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), sotto_mpc::transport::Error> {
    /// let dir = std::env::temp_dir().join(format!("sotto-doc-connect-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// generate_dev_pki(&dir, 1, &[])?;
    /// let server_tls = TlsConfig::from_dir(&dir, Identity::Aggregator, [Identity::party(1)])?;
    /// let client_tls = TlsConfig::from_dir(&dir, Identity::party(1), [Identity::Aggregator])?;
    ///
    /// let server = Server::bind("127.0.0.1:0".parse().unwrap(), &server_tls, TransportOptions::default())?;
    /// let client = Client::new(&client_tls, TransportOptions::default())?;
    /// let session = SessionId([7; 16]);
    ///
    /// let (to_server, from_client) =
    ///     tokio::join!(client.connect(server.local_addr(), Identity::Aggregator), server.accept());
    /// let (to_server, from_client) = (to_server?, from_client?);
    /// assert_eq!(from_client.peer(), Identity::party(1));
    /// to_server.send(session, 0, &vec![1u64, 2, 3]).await?;
    /// let got: Vec<u64> = from_client.recv(session, 0, Duration::from_secs(5)).await?;
    /// assert_eq!(got, [1, 2, 3]);
    ///
    /// client.shutdown().await;
    /// server.shutdown().await;
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `expected` is not an allowed peer of this client's TLS
    /// configuration; [`Error::Timeout`] if set-up takes longer than `handshake_timeout`;
    /// [`Error::Refused`] if the server refused us (e.g. "unknown party 7", or a TLS alert when
    /// our certificate is not from its CA); [`Error::Unauthorized`] if the server's certificate
    /// is not from our CA or does not name `expected`.
    pub async fn connect(&self, addr: SocketAddr, expected: Identity) -> Result<Connection> {
        if !self.tls.allows(expected) {
            return Err(Error::invalid(
                "expected",
                format!("{expected} is not an allowed peer of this endpoint's TLS configuration"),
            ));
        }
        let deadline = deadline_after(self.options.handshake_timeout);
        let at_addr = Peer::Address(addr);
        let connecting = self
            .endpoint
            .connect(addr, &expected.dns_name())
            .map_err(|e| Error::invalid("addr", format!("cannot connect to {addr}: {e}")))?;
        let quic = tokio::time::timeout_at(deadline, connecting)
            .await
            .map_err(|_| Error::Timeout {
                party: at_addr,
                what: "the TLS handshake",
            })?
            .map_err(|e| connection_error(e, at_addr, true))?;
        self.established
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let identity = peer_chain(&quic).and_then(|chain| self.tls.authenticate_peer(&chain));
        match identity {
            Ok(identity) if identity == expected => {}
            Ok(other) => {
                quic.close(
                    VarInt::from_u32(CLOSE_REFUSED),
                    b"unexpected server identity",
                );
                return Err(Error::Unauthorized {
                    peer: at_addr,
                    reason: format!("dialed {expected} but the server is {other}"),
                });
            }
            Err(reason) => {
                quic.close(VarInt::from_u32(CLOSE_REFUSED), b"server refused");
                return Err(Error::Unauthorized {
                    peer: at_addr,
                    reason,
                });
            }
        }
        let connection = Connection::new(
            quic,
            self.tls.local_identity(),
            expected,
            self.options.clone(),
        )?;
        let admission = tokio::time::timeout_at(deadline, connection.recv_envelope::<Admission>())
            .await
            .map_err(|_| Error::Timeout {
                party: Peer::Known(expected),
                what: "the admission",
            })?
            .map_err(|e| match e {
                Error::ConnectionLost { party, reason } => Error::Refused { by: party, reason },
                other => other,
            })?;
        let local = self.tls.local_identity();
        if admission.session != SETUP_SESSION
            || admission.round != 0
            || admission.body.version != SETUP_VERSION
            || admission.body.admitted_as != local
        {
            connection.close_with(CLOSE_MISBEHAVED, "bad admission");
            return Err(connection.misbehaved(Misbehavior::BadHandshake {
                detail: format!(
                    "admission version {} for {}, expected version {SETUP_VERSION} for {local}",
                    admission.body.version, admission.body.admitted_as
                ),
            }));
        }
        Ok(connection)
    }

    /// [`Client::connect`] until it succeeds or `within` has passed (each attempt is cut at
    /// the deadline too, so the call returns after about `within` at most). Failures that may
    /// be transient (nobody listening yet, timeouts, lost set-up, a server busy with other
    /// handshakes as during a flood of connection attempts: [`Error::Busy`]) are retried with
    /// exponential backoff (100 ms doubling to 2 s) and jitter; refusals and certificate
    /// errors are returned at once.
    ///
    /// # Errors
    /// As [`Client::connect`]; [`Error::Timeout`] (or the last transient error) when the
    /// deadline passes.
    pub async fn connect_with_retry(
        &self,
        addr: SocketAddr,
        expected: Identity,
        within: Duration,
    ) -> Result<Connection> {
        const RETRY_FIRST: Duration = Duration::from_millis(100);
        const RETRY_MAX: Duration = Duration::from_secs(2);
        let deadline = deadline_after(within);
        let mut pause = RETRY_FIRST;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match tokio::time::timeout_at(deadline, self.connect(addr, expected)).await
            {
                Ok(Ok(connection)) => return Ok(connection),
                Ok(Err(
                    error @ (Error::Timeout { .. }
                    | Error::ConnectionLost { .. }
                    | Error::Busy { .. }),
                )) => error,
                Ok(Err(error)) => return Err(error),
                Err(_) => Error::Timeout {
                    party: Peer::Address(addr),
                    what: "the connection set-up (the deadline passed)",
                },
            };
            if Instant::now() + pause / 2 >= deadline {
                tracing::warn!(%addr, attempts, %error, "no connection by the deadline");
                return Err(error);
            }
            tracing::debug!(%addr, %error, ?pause, "not reachable or busy; retrying");
            // Jitter from the clock's low bits (nothing secret) spreads the retries of many
            // clients refused at the same moment.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let jitter = pause.mul_f64(f64::from(nanos % 1000) / 2000.0);
            tokio::time::sleep_until((Instant::now() + pause / 2 + jitter).min(deadline)).await;
            pause = (pause * 2).min(RETRY_MAX);
        }
    }

    /// Closes all connections of this client and releases its UDP port (once every
    /// [`Connection`] from it has been dropped, as for [`Server::shutdown`]).
    pub async fn shutdown(self) {
        let drain = self.established.load(std::sync::atomic::Ordering::Relaxed);
        close_endpoint(self.endpoint, drain).await;
    }
}

/// What [`collect`] received by its deadline.
#[derive(Debug)]
pub struct Collected<T> {
    /// One message body per peer that sent a valid one in time.
    pub messages: BTreeMap<Identity, T>,
    /// Expected peers with no message by the deadline (including peers with no connection):
    /// treated as dropped out, the round goes on without them.
    pub silent: BTreeSet<Identity>,
    /// Peers whose message was rejected (misbehaviour) or whose connection failed.
    pub failed: BTreeMap<Identity, Error>,
}

impl<T> Collected<T> {
    /// All peers without a valid message: silent or failed.
    pub fn dropped(&self) -> BTreeSet<Identity> {
        self.silent
            .iter()
            .chain(self.failed.keys())
            .copied()
            .collect()
    }
}

/// Above this many futures [`concurrently`] spawns tasks instead of polling them in the calling
/// task (whose every wake-up polls all pending ones).
const IN_TASK_FUTURES: usize = 64;

/// Runs `futures` concurrently and returns their outputs in order (`None` for a spawned
/// future whose task panicked). Up to
/// [`IN_TASK_FUTURES`] are polled in the calling task: a spawned task costs a scheduler round
/// trip (about 0.1 ms per message exchange on a busy 2-core machine, measured with
/// `sotto train`); more are spawned on the runtime, so that one wake-up does not poll them all.
async fn concurrently<F>(futures: Vec<F>) -> Vec<Option<F::Output>>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use std::task::Poll;
    if futures.len() > IN_TASK_FUTURES {
        let mut tasks = JoinSet::new();
        let mut order = HashMap::new();
        for (i, f) in futures.into_iter().enumerate() {
            order.insert(tasks.spawn(f).id(), i);
        }
        let mut outputs: Vec<Option<F::Output>> = order.iter().map(|_| None).collect();
        while let Some(joined) = tasks.join_next_with_id().await {
            match joined {
                Ok((id, output)) => {
                    if let Some(slot) = order.get(&id).and_then(|&i| outputs.get_mut(i)) {
                        *slot = Some(output);
                    }
                }
                // Only a panic ends a task early; its output stays `None`.
                Err(error) => tracing::warn!(%error, "transport: a concurrent task failed"),
            }
        }
        return outputs;
    }
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (future, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
}

/// Receives one message of `(session, round)` from each of `expected`, over `connections`,
/// until `deadline`. Never fails as a whole: each peer ends up in exactly one of
/// `messages`, `silent` or `failed`.
///
/// A peer that is late keeps its partial message in its connection (receives are
/// cancel-safe); its next receive will see that stale message and reject it as
/// [`Misbehavior::WrongRound`].
pub async fn collect<T>(
    connections: &BTreeMap<Identity, Connection>,
    expected: impl IntoIterator<Item = Identity>,
    session: SessionId,
    round: u64,
    deadline: Instant,
) -> Collected<T>
where
    T: DeserializeOwned + Send + 'static,
{
    let mut collected = Collected {
        messages: BTreeMap::new(),
        silent: BTreeSet::new(),
        failed: BTreeMap::new(),
    };
    let mut receiving = Vec::new();
    let mut peers = Vec::new();
    for peer in expected.into_iter().collect::<BTreeSet<_>>() {
        match connections.get(&peer) {
            None => {
                collected.silent.insert(peer);
            }
            Some(connection) => {
                let connection = connection.clone();
                peers.push(peer);
                receiving.push(async move {
                    connection.recv_until::<T>(session, round, deadline).await
                });
            }
        }
    }
    for (peer, outcome) in peers.into_iter().zip(concurrently(receiving).await) {
        let outcome = outcome.unwrap_or_else(|| {
            Err(Error::ConnectionLost {
                party: Peer::Known(peer),
                reason: "the receive task failed".to_owned(),
            })
        });
        match outcome {
            Ok(body) => {
                collected.messages.insert(peer, body);
            }
            Err(Error::Timeout { .. }) => {
                collected.silent.insert(peer);
            }
            Err(err) => {
                collected.failed.insert(peer, err);
            }
        }
    }
    collected
}

/// [`collect`] that hands each message to `handle` as soon as it arrives (in arrival order)
/// instead of keeping every message until the deadline: a caller that folds the messages into
/// a running state (a sum) then holds only the few messages in flight, not one per peer. The
/// returned [`Collected::messages`] is empty; `silent` and `failed` are filled as by
/// [`collect`].
pub async fn collect_each<T, F>(
    connections: &BTreeMap<Identity, Connection>,
    expected: impl IntoIterator<Item = Identity>,
    session: SessionId,
    round: u64,
    deadline: Instant,
    mut handle: F,
) -> Collected<T>
where
    T: DeserializeOwned + Send + 'static,
    F: FnMut(Identity, T),
{
    let mut collected = Collected {
        messages: BTreeMap::new(),
        silent: BTreeSet::new(),
        failed: BTreeMap::new(),
    };
    let mut tasks = JoinSet::new();
    let mut peers = HashMap::new();
    for peer in expected.into_iter().collect::<BTreeSet<_>>() {
        match connections.get(&peer) {
            None => {
                collected.silent.insert(peer);
            }
            Some(connection) => {
                let connection = connection.clone();
                let task = tasks.spawn(async move {
                    connection.recv_until::<T>(session, round, deadline).await
                });
                peers.insert(task.id(), peer);
            }
        }
    }
    while let Some(joined) = tasks.join_next_with_id().await {
        let (peer, outcome) = match joined {
            Ok((id, outcome)) => (peers.get(&id).copied(), outcome),
            Err(error) => {
                let peer = peers.get(&error.id()).copied();
                (
                    peer,
                    Err(Error::ConnectionLost {
                        party: peer.map_or(Peer::Known(Identity::Aggregator), Peer::Known),
                        reason: "the receive task failed".to_owned(),
                    }),
                )
            }
        };
        let Some(peer) = peer else { continue };
        match outcome {
            Ok(body) => handle(peer, body),
            Err(Error::Timeout { .. }) => {
                collected.silent.insert(peer);
            }
            Err(err) => {
                collected.failed.insert(peer, err);
            }
        }
    }
    collected
}

/// Sends each message to its own recipient concurrently and returns the recipients it reached.
/// A recipient without a connection is skipped; a failed send is logged (prefixed by
/// `context`, e.g. the protocol's name) and the recipient left out, so the caller can treat it
/// as dropped.
pub async fn send_each<T: Serialize + Send + Sync + 'static>(
    connections: &BTreeMap<Identity, Connection>,
    session: SessionId,
    round: u64,
    outgoing: Vec<(Identity, T)>,
    context: &'static str,
) -> BTreeSet<Identity> {
    let mut sending = Vec::new();
    for (to, message) in outgoing {
        let Some(connection) = connections.get(&to) else {
            continue;
        };
        let connection = connection.clone();
        sending.push(async move { (to, connection.send(session, round, &message).await) });
    }
    let mut reached = BTreeSet::new();
    for output in concurrently(sending).await {
        match output {
            Some((to, Ok(()))) => {
                reached.insert(to);
            }
            Some((to, Err(error))) => {
                tracing::warn!(party = %to, %error, "{context}: send failed; dropped");
            }
            None => tracing::warn!("{context}: a send task failed; its recipient is dropped"),
        }
    }
    reached
}

/// Sends the same `(session, round, body)` to every connection concurrently (the message is
/// encoded once). Returns the peers the send failed for, with why.
///
/// # Errors
/// [`Error::InvalidParameter`] if the message exceeds a connection's `max_frame` (nothing is
/// sent then).
pub async fn send_all<T: Serialize>(
    connections: &BTreeMap<Identity, Connection>,
    session: SessionId,
    round: u64,
    body: &T,
) -> Result<BTreeMap<Identity, Error>> {
    let mut failures = BTreeMap::new();
    let Some(first) = connections.values().next() else {
        return Ok(failures);
    };
    let envelope = Envelope {
        session,
        round,
        sender: first.local_identity(),
        body,
    };
    let max_frame = connections
        .values()
        .map(|c| c.inner.options.max_frame)
        .min()
        .unwrap_or(MAX_FRAME);
    let frame: Arc<[u8]> = encode_frame(&envelope, max_frame)?.into();
    let sending = connections.values().map(|connection| {
        let (connection, frame) = (connection.clone(), Arc::clone(&frame));
        async move { connection.send_frame(&frame).await }
    });
    for (peer, result) in connections
        .keys()
        .zip(concurrently(sending.collect()).await)
    {
        let result = result.unwrap_or_else(|| {
            Err(Error::ConnectionLost {
                party: Peer::Known(*peer),
                reason: "the send task failed".to_owned(),
            })
        });
        if let Err(err) = result {
            failures.insert(*peer, err);
        }
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outputs come back in input order, whether the futures run in the calling task (few) or
    /// as spawned tasks (many), and whatever order they finish in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrently_keeps_the_order_in_both_modes() {
        for n in [0, 1, 5, IN_TASK_FUTURES, IN_TASK_FUTURES + 1, 200] {
            let n = n as u64;
            let futures: Vec<_> = (0..n)
                .map(|i| async move {
                    // Later futures finish first.
                    tokio::time::sleep(Duration::from_micros((n - i) * 20)).await;
                    i * 3
                })
                .collect();
            let out = concurrently(futures).await;
            let want: Vec<Option<u64>> = (0..n).map(|i| Some(i * 3)).collect();
            assert_eq!(out, want, "n = {n}");
        }
    }

    /// In the calling task the futures overlap: ten sleeps of 100 ms take far less than the
    /// 1 s they would take one after another (a logic check with a wide margin, not a timing).
    #[tokio::test(flavor = "current_thread")]
    async fn concurrently_overlaps_in_task() {
        let start = tokio::time::Instant::now();
        let futures: Vec<_> = (0..10)
            .map(|i| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                i
            })
            .collect();
        assert_eq!(concurrently(futures).await.len(), 10);
        assert!(start.elapsed() < Duration::from_millis(600));
    }
}
