//! Length-prefixed frames carrying postcard-encoded [`Envelope`]s.
//!
//! On the wire a frame is a 4-byte big-endian payload length followed by the payload:
//!
//! ```text
//! +----------------+---------------------------------------------+
//! | len: u32 (BE)  | postcard(Envelope { session, round, sender, |
//! |                |                     body })    (len bytes)  |
//! +----------------+---------------------------------------------+
//! ```
//!
//! Decoding is strict and never panics on any input:
//! - a header announcing more than the configured limit ([`MAX_FRAME`] by default) is rejected
//!   as soon as its 4 bytes are read, before anything is allocated for the payload; the payload
//!   buffer then grows only as bytes actually arrive;
//! - the payload must decode to exactly one envelope: leftover bytes are an error;
//! - the envelope must name the expected session and round and the authenticated sender
//!   ([`Envelope::check`]).
//!
//! [`FrameDecoder`] is sans-IO: feed it whatever bytes arrive, in any chunking, and it hands
//! back complete payloads. The QUIC endpoint drives it from a stream; tests drive it from
//! slices.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{Error, Misbehavior, Result};
use super::identity::{Identity, SessionId};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// The default limit on a frame's payload: 64 MiB. A vector of 10^6 `u64` values takes at most
/// about 10 MB in postcard's varint encoding, so this leaves room for larger models while
/// bounding what one peer can make us buffer.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// One protocol message with the context that makes it unambiguous: which run (`session`),
/// which step (`round`), and who sent it (`sender`, checked against the peer's certificate).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// The protocol run this message belongs to.
    pub session: SessionId,
    /// The round (step) of the run.
    pub round: u64,
    /// The sender's identity as it claims it; must equal the authenticated peer.
    pub sender: Identity,
    /// The message proper.
    pub body: T,
}

impl<T> Envelope<T> {
    /// Checks that this envelope names `session` and `round` and comes from `peer` (the
    /// identity authenticated by TLS).
    ///
    /// # Errors
    /// [`Misbehavior::WrongSender`], [`Misbehavior::WrongSession`] (e.g. a message replayed
    /// from an earlier run) or [`Misbehavior::WrongRound`].
    pub fn check(&self, peer: Identity, session: SessionId, round: u64) -> Result<(), Misbehavior> {
        if self.sender != peer {
            return Err(Misbehavior::WrongSender {
                claimed: self.sender,
            });
        }
        if self.session != session {
            return Err(Misbehavior::WrongSession {
                session: self.session,
                round: self.round,
                expected: session,
            });
        }
        if self.round != round {
            return Err(Misbehavior::WrongRound {
                session: self.session,
                round: self.round,
                expected: round,
            });
        }
        Ok(())
    }
}

/// Checks a frame-size limit given by a caller.
///
/// # Errors
/// [`Error::InvalidParameter`] naming `max_frame` unless `1 <= max_frame <= u32::MAX`.
pub fn check_max_frame(max_frame: usize) -> Result<()> {
    if max_frame == 0 || u32::try_from(max_frame).is_err() {
        return Err(Error::invalid(
            "max_frame",
            format!(
                "{max_frame} bytes is outside 1..={}; frames carry a u32 length (default {MAX_FRAME})",
                u32::MAX
            ),
        ));
    }
    Ok(())
}

/// Encodes `envelope` as one frame (header and payload).
///
/// # Errors
/// [`Error::InvalidParameter`] naming `max_frame` if it is out of range or the encoded message
/// is larger than it (split the message, or raise the limit on both ends);
/// [`Error::InvalidParameter`] naming `body` if serialization fails.
pub fn encode_frame<T: Serialize>(envelope: &Envelope<T>, max_frame: usize) -> Result<Vec<u8>> {
    check_max_frame(max_frame)?;
    // Reserve the header, then let postcard append the payload after it.
    let frame = postcard::to_extend(envelope, vec![0u8; HEADER_LEN])
        .map_err(|e| Error::invalid("body", format!("cannot be encoded: {e}")))?;
    let payload_len = frame.len().saturating_sub(HEADER_LEN);
    let len = u32::try_from(payload_len)
        .ok()
        .filter(|_| payload_len <= max_frame)
        .ok_or_else(|| {
            Error::invalid(
                "max_frame",
                format!(
                    "the encoded message takes {payload_len} bytes, more than the frame limit of \
                     {max_frame} bytes; split it or raise the limit on both ends"
                ),
            )
        })?;
    let mut frame = frame;
    if let Some(header) = frame.get_mut(..HEADER_LEN) {
        header.copy_from_slice(&len.to_be_bytes());
    }
    Ok(frame)
}

/// Decodes one frame payload as an envelope. The payload must be consumed exactly.
///
/// # Errors
/// [`Misbehavior::Malformed`] if the bytes are not an envelope of `T`,
/// [`Misbehavior::TrailingBytes`] if bytes are left over.
pub fn decode_envelope<T: DeserializeOwned>(payload: &[u8]) -> Result<Envelope<T>, Misbehavior> {
    let (envelope, rest) =
        postcard::take_from_bytes::<Envelope<T>>(payload).map_err(|e| Misbehavior::Malformed {
            detail: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(Misbehavior::TrailingBytes { extra: rest.len() });
    }
    Ok(envelope)
}

/// Incremental, allocation-bounded frame decoder (sans-IO).
///
/// # Security
/// The payload buffer is allocated only as payload bytes arrive, and never beyond the limit, so
/// a peer that announces a huge frame and then stalls costs nothing.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: usize,
    header: [u8; HEADER_LEN],
    header_filled: usize,
    /// `Some(len)` once the header is complete.
    payload_len: Option<usize>,
    payload: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder accepting payloads of at most `max_frame` bytes.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming `max_frame` unless `1 <= max_frame <= u32::MAX`.
    pub fn new(max_frame: usize) -> Result<Self> {
        check_max_frame(max_frame)?;
        Ok(FrameDecoder {
            max_frame,
            header: [0; HEADER_LEN],
            header_filled: 0,
            payload_len: None,
            payload: Vec::new(),
        })
    }

    /// The most bytes [`FrameDecoder::push`] will consume now: the rest of the header, or the
    /// rest of the payload. Never zero.
    pub fn wanted(&self) -> usize {
        match self.payload_len {
            None => HEADER_LEN - self.header_filled,
            // A zero-length payload completes inside `push`, so here len > payload.len().
            Some(len) => len.saturating_sub(self.payload.len()).max(1),
        }
    }

    /// Whether the decoder is between frames (nothing of a next frame received yet).
    pub fn is_at_boundary(&self) -> bool {
        self.header_filled == 0 && self.payload_len.is_none()
    }

    /// Bytes still missing from the current frame (0 at a boundary), for truncation reports.
    pub fn missing(&self) -> usize {
        match self.payload_len {
            None if self.header_filled == 0 => 0,
            None => HEADER_LEN - self.header_filled,
            Some(len) => len.saturating_sub(self.payload.len()),
        }
    }

    /// Feeds bytes. Consumes at most up to the end of the current frame and returns how many
    /// bytes were consumed and, if the frame is now complete, its payload.
    ///
    /// # Errors
    /// [`Misbehavior::FrameTooLarge`] as soon as a header announces more than the limit. The
    /// decoder must not be used after an error (the stream cannot be resynchronized).
    pub fn push(&mut self, data: &[u8]) -> Result<(usize, Option<Vec<u8>>), Misbehavior> {
        let mut consumed = 0;
        if self.payload_len.is_none() {
            let take = (HEADER_LEN - self.header_filled).min(data.len());
            let (src, dst) = (
                data.get(..take),
                self.header
                    .get_mut(self.header_filled..self.header_filled + take),
            );
            if let (Some(src), Some(dst)) = (src, dst) {
                dst.copy_from_slice(src);
            }
            self.header_filled += take;
            consumed += take;
            if self.header_filled < HEADER_LEN {
                return Ok((consumed, None));
            }
            let announced = u32::from_be_bytes(self.header);
            let len = usize::try_from(announced)
                .ok()
                .filter(|len| *len <= self.max_frame)
                .ok_or(Misbehavior::FrameTooLarge {
                    len: u64::from(announced),
                    max: self.max_frame,
                })?;
            self.payload_len = Some(len);
            // Allocate at most what is already here (bounded by the limit), never the whole
            // announced length up front.
            self.payload = Vec::with_capacity(len.min(data.len() - consumed));
        }
        let len = self.payload_len.unwrap_or(0);
        let take = (len - self.payload.len()).min(data.len() - consumed);
        if let Some(src) = data.get(consumed..consumed + take) {
            self.payload.extend_from_slice(src);
        }
        consumed += take;
        if self.payload.len() == len {
            let payload = std::mem::take(&mut self.payload);
            self.payload_len = None;
            self.header_filled = 0;
            return Ok((consumed, Some(payload)));
        }
        Ok((consumed, None))
    }
}

/// Decodes a buffer holding whole frames, for tests and offline tools: every frame must decode
/// and the buffer must end on a frame boundary.
///
/// # Errors
/// The first [`Misbehavior`] met, including [`Misbehavior::Truncated`] for a partial last frame.
pub fn decode_frames<T: DeserializeOwned>(
    mut bytes: &[u8],
    max_frame: usize,
) -> Result<Vec<Envelope<T>>, Misbehavior> {
    let mut decoder = FrameDecoder::new(max_frame).map_err(|e| Misbehavior::Malformed {
        detail: e.to_string(),
    })?;
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (consumed, payload) = decoder.push(bytes)?;
        bytes = bytes.get(consumed..).unwrap_or_default();
        if let Some(payload) = payload {
            out.push(decode_envelope(&payload)?);
        }
    }
    if !decoder.is_at_boundary() {
        return Err(Misbehavior::Truncated {
            missing: decoder.missing(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn envelope(round: u64, body: Vec<u64>) -> Envelope<Vec<u64>> {
        Envelope {
            session: SessionId([9; 16]),
            round,
            sender: Identity::party(2),
            body,
        }
    }

    #[test]
    fn round_trip_one_frame() {
        let env = envelope(7, vec![1, 2, u64::MAX]);
        let frame = encode_frame(&env, MAX_FRAME).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - HEADER_LEN);
        assert_eq!(
            decode_frames::<Vec<u64>>(&frame, MAX_FRAME).unwrap(),
            vec![env]
        );
    }

    #[test]
    fn oversized_header_is_rejected_before_the_payload() {
        let mut decoder = FrameDecoder::new(1024).unwrap();
        // Only the header: the payload never arrives, and the decoder already refuses.
        let err = decoder.push(&u32::MAX.to_be_bytes()).unwrap_err();
        assert_eq!(
            err,
            Misbehavior::FrameTooLarge {
                len: u64::from(u32::MAX),
                max: 1024
            }
        );
        assert_eq!(decoder.payload.capacity(), 0);
    }

    #[test]
    fn encoder_refuses_messages_over_the_limit() {
        let env = envelope(0, vec![u64::MAX; 100]);
        let err = encode_frame(&env, 50).unwrap_err();
        assert!(err.to_string().contains("max_frame"), "{err}");
        assert!(encode_frame(&env, 0).is_err());
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let env = envelope(1, vec![5]);
        let mut payload = postcard::to_allocvec(&env).unwrap();
        payload.push(0);
        assert_eq!(
            decode_envelope::<Vec<u64>>(&payload).unwrap_err(),
            Misbehavior::TrailingBytes { extra: 1 }
        );
        payload.pop();
        assert_eq!(decode_envelope::<Vec<u64>>(&payload).unwrap(), env);
    }

    #[test]
    fn truncated_stream_is_reported() {
        let frame = encode_frame(&envelope(1, vec![1, 2, 3]), MAX_FRAME).unwrap();
        let err = decode_frames::<Vec<u64>>(&frame[..frame.len() - 2], MAX_FRAME).unwrap_err();
        assert_eq!(err, Misbehavior::Truncated { missing: 2 });
    }

    #[test]
    fn check_names_session_round_and_sender() {
        let env = envelope(5, vec![]);
        let me = Identity::party(2);
        assert!(env.check(me, SessionId([9; 16]), 5).is_ok());
        assert!(matches!(
            env.check(me, SessionId([9; 16]), 6),
            Err(Misbehavior::WrongRound {
                round: 5,
                expected: 6,
                ..
            })
        ));
        assert!(matches!(
            env.check(me, SessionId([8; 16]), 5),
            Err(Misbehavior::WrongSession { round: 5, .. })
        ));
        assert!(matches!(
            env.check(Identity::party(3), SessionId([9; 16]), 5),
            Err(Misbehavior::WrongSender { claimed }) if claimed == me
        ));
    }

    #[test]
    fn million_u64_fit_the_default_limit() {
        let env = envelope(0, vec![u64::MAX; 1_000_000]);
        let frame = encode_frame(&env, MAX_FRAME).unwrap();
        assert!(frame.len() < MAX_FRAME / 4, "{}", frame.len());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frames::<Vec<u64>>(&bytes, 256);
            let _ = decode_envelope::<Vec<u64>>(&bytes);
            let _ = decode_envelope::<(String, Option<Vec<u32>>)>(&bytes);
        }

        #[test]
        fn round_trip_in_any_chunking(
            rounds in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u64>(), 0..20)), 1..5),
            chunk in 1usize..40,
        ) {
            let envs: Vec<_> = rounds.into_iter().map(|(r, b)| envelope(r, b)).collect();
            let mut stream = Vec::new();
            for env in &envs {
                stream.extend(encode_frame(env, MAX_FRAME).unwrap());
            }
            let mut decoder = FrameDecoder::new(MAX_FRAME).unwrap();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                let mut piece = piece;
                while !piece.is_empty() {
                    let (n, payload) = decoder.push(piece).unwrap();
                    prop_assert!(n > 0);
                    piece = &piece[n..];
                    if let Some(p) = payload {
                        got.push(decode_envelope::<Vec<u64>>(&p).unwrap());
                    }
                }
            }
            prop_assert!(decoder.is_at_boundary());
            prop_assert_eq!(got, envs);
        }

        #[test]
        fn single_corrupted_byte_never_panics(
            body in proptest::collection::vec(any::<u64>(), 0..20),
            pos in any::<prop::sample::Index>(),
            value in any::<u8>(),
        ) {
            let mut frame = encode_frame(&envelope(3, body), MAX_FRAME).unwrap();
            let i = pos.index(frame.len());
            frame[i] = value;
            let _ = decode_frames::<Vec<u64>>(&frame, MAX_FRAME);
        }
    }
}
