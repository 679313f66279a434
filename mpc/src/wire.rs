//! The wire encoding: postcard, with a frame size limit and strict decoding.
//!
//! Every protocol message carries its session id, round and sender (and recipient) in a
//! header; roles check the header before looking at the body. Decoding never panics on
//! arbitrary bytes: oversized frames, malformed encodings and trailing bytes are errors.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The largest frame accepted or produced: 256 MiB (a 10^7-word u64 vector fits).
pub const MAX_FRAME: usize = 256 << 20;

/// Encodes a message.
///
/// # Errors
/// [`Error::InvalidParameter`] naming `message` if the encoding exceeds [`MAX_FRAME`] or
/// cannot be produced.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>> {
    let bytes = postcard::to_allocvec(message)
        .map_err(|e| Error::invalid("message", "unencodable", e.to_string()))?;
    if bytes.len() > MAX_FRAME {
        return Err(Error::invalid(
            "message",
            format!("{} bytes", bytes.len()),
            format!("frames are limited to MAX_FRAME = {MAX_FRAME} bytes: lower `dim`"),
        ));
    }
    Ok(bytes)
}

/// Decodes a message, rejecting frames over [`MAX_FRAME`], malformed encodings and trailing
/// bytes.
///
/// # Errors
/// [`Error::Decode`] saying what is wrong (the caller knows who sent the frame and should
/// report [`Error::PeerMisbehaved`]).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.len() > MAX_FRAME {
        return Err(Error::Decode(format!(
            "frame of {} bytes exceeds MAX_FRAME = {MAX_FRAME}",
            bytes.len()
        )));
    }
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| Error::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::Decode(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

/// Decodes a frame received from `peer`, blaming it on failure.
///
/// # Errors
/// [`Error::PeerMisbehaved`] naming `peer`.
pub fn decode_from<T: DeserializeOwned>(peer: crate::Peer, bytes: &[u8]) -> Result<T> {
    decode(bytes).map_err(|e| Error::misbehaved(peer, e.to_string()))
}
