//! Errors of the transport layer, saying who is at fault: a misbehaving or refused peer, a
//! configuration mistake (with the file and the fix), a timeout, or the local system.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::identity::{Identity, Peer, SessionId};

/// A transport result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the transport layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An authenticated (or at least connected) peer sent something that breaks the protocol:
    /// a malformed, oversized or replayed message. The message was dropped; the caller decides
    /// whether to drop the peer (the collector of [`crate::transport::endpoint`] does).
    #[error("{party} misbehaved: {reason}")]
    PeerMisbehaved {
        /// Who sent it.
        party: Peer,
        /// What was wrong.
        reason: Misbehavior,
    },

    /// This endpoint refused a peer during authentication: its certificate does not chain to
    /// the deployment CA, names no identity, or names an identity that is not expected here.
    #[error("refused {peer}: {reason}")]
    Unauthorized {
        /// The refused peer (an address, or the identity it authenticated as).
        peer: Peer,
        /// Why it was refused.
        reason: String,
    },

    /// The remote endpoint refused or closed this connection during set-up (for example,
    /// because our identity is not in its set of expected parties).
    #[error("{by} refused the connection: {reason}")]
    Refused {
        /// The endpoint that refused us.
        by: Peer,
        /// The reason it gave, or the TLS alert it sent.
        reason: String,
    },

    /// The server refused the connection attempt because it has too many handshakes in
    /// progress (QUIC `CONNECTION_REFUSED`, e.g. during a flood of connection attempts).
    /// Transient: retry later, with backoff.
    #[error("{by} is busy (too many connection attempts in progress); retry later")]
    Busy {
        /// The busy server.
        by: Peer,
    },

    /// The remote endpoint dropped us from the protocol run and closed the connection
    /// (`CLOSE_DROPPED`): we were silent past a deadline, a message of ours was rejected, or
    /// our parameters disagree with the session's.
    #[error("{by} dropped us from the run: {reason}")]
    Dropped {
        /// The endpoint that dropped us.
        by: Peer,
        /// The reason it gave.
        reason: String,
    },

    /// A certificate or key file is missing, unreadable or wrong.
    #[error("file {}: {reason}", path.display())]
    Certificate {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it and how to fix it.
        reason: String,
    },

    /// The TLS configuration could not be built (for example, the private key does not match
    /// the certificate).
    #[error("TLS configuration: {reason}")]
    Tls {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// A peer did not complete a step in time.
    #[error("timed out waiting for {what} from {party}")]
    Timeout {
        /// The silent peer.
        party: Peer,
        /// What we were waiting for (`"the TLS handshake"`, `"a message"`, ...).
        what: &'static str,
    },

    /// The connection to a peer ended (closed by the peer, idle timeout, network failure).
    #[error("connection to {party} lost: {reason}")]
    ConnectionLost {
        /// The peer at the other end.
        party: Peer,
        /// How it ended.
        reason: String,
    },

    /// A local input/output operation failed (binding a socket, writing a file).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A caller-supplied parameter is out of range.
    #[error("invalid parameter `{parameter}`: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        parameter: &'static str,
        /// Why it is invalid and what to use instead.
        reason: String,
    },

    /// The endpoint was shut down.
    #[error("the endpoint is shut down")]
    Closed,
}

impl Error {
    /// Builds an [`Error::InvalidParameter`].
    pub(crate) fn invalid(parameter: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            parameter,
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Io`].
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The peer at fault, when the error is a peer's doing (misbehaviour, refusal, timeout,
    /// lost connection).
    pub fn peer(&self) -> Option<Peer> {
        match self {
            Error::PeerMisbehaved { party, .. }
            | Error::Timeout { party, .. }
            | Error::ConnectionLost { party, .. } => Some(*party),
            Error::Unauthorized { peer, .. } => Some(*peer),
            Error::Refused { by, .. } | Error::Busy { by } | Error::Dropped { by, .. } => Some(*by),
            _ => None,
        }
    }
}

/// What a peer did wrong (the `reason` of [`Error::PeerMisbehaved`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Misbehavior {
    /// A frame header announced more bytes than the limit; nothing was allocated for it.
    FrameTooLarge {
        /// The announced payload length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    Truncated {
        /// Bytes of the frame (header included) that never arrived.
        missing: usize,
    },
    /// The payload is not a valid encoding of the expected message type.
    Malformed {
        /// The decoder's complaint.
        detail: String,
    },
    /// The payload decoded, but bytes were left over after the message.
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The message claims a sender other than the authenticated peer.
    WrongSender {
        /// The sender the message claims.
        claimed: Identity,
    },
    /// The message belongs to another session (e.g. replayed from an earlier run).
    WrongSession {
        /// The session the message names.
        session: SessionId,
        /// The round the message names.
        round: u64,
        /// The session expected here.
        expected: SessionId,
    },
    /// The message belongs to another round of this session.
    WrongRound {
        /// The session the message names (the expected one).
        session: SessionId,
        /// The round the message names.
        round: u64,
        /// The round expected here.
        expected: u64,
    },
    /// The peer broke the connection set-up (e.g. a bad admission message).
    BadHandshake {
        /// What was wrong.
        detail: String,
    },
}

impl fmt::Display for Misbehavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misbehavior::FrameTooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max} bytes")
            }
            Misbehavior::Truncated { missing } => {
                write!(
                    f,
                    "stream ended in the middle of a frame ({missing} bytes missing)"
                )
            }
            Misbehavior::Malformed { detail } => write!(f, "malformed message: {detail}"),
            Misbehavior::TrailingBytes { extra } => {
                write!(f, "{extra} trailing bytes after the message")
            }
            Misbehavior::WrongSender { claimed } => {
                write!(f, "message claims to come from {claimed}")
            }
            Misbehavior::WrongSession {
                session,
                round,
                expected,
            } => write!(
                f,
                "message names session {session} round {round}, expected session {expected}"
            ),
            Misbehavior::WrongRound {
                session,
                round,
                expected,
            } => write!(
                f,
                "message names session {session} round {round}, expected round {expected}"
            ),
            Misbehavior::BadHandshake { detail } => write!(f, "bad connection set-up: {detail}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::identity::PartyId;

    #[test]
    fn errors_name_the_peer_and_the_round() {
        let err = Error::PeerMisbehaved {
            party: Peer::from(PartyId(3)),
            reason: Misbehavior::WrongRound {
                session: SessionId([1; 16]),
                round: 5,
                expected: 6,
            },
        };
        let text = err.to_string();
        assert!(text.starts_with("party 3 misbehaved"), "{text}");
        assert!(text.contains("round 5, expected round 6"), "{text}");
        assert_eq!(err.peer(), Some(Peer::Known(Identity::party(3))));
        assert_eq!(Error::Closed.peer(), None);
    }
}
