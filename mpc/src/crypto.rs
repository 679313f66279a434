//! Key agreement (X25519), key derivation (HKDF-SHA256) and authenticated encryption
//! (ChaCha20-Poly1305) for the aggregator protocol, with secret newtypes.
//!
//! Every secret type here zeroizes on drop, prints as `[redacted]`, and has no `Serialize`
//! impl: it leaves a party only through an explicit share or ciphertext.

use curve25519_dalek::Scalar;
use curve25519_dalek::montgomery::MontgomeryPoint;
use rand_core::{CryptoRng, RngCore};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::prg::Seed;

/// The HKDF salt of every derivation in this crate (protocol and version).
const HKDF_SALT: &[u8] = b"sotto-mpc/secagg/v1";

/// A secret element of the prime field of order l = 2^252 + ... (the Ristretto/Ed25519 scalar
/// field), used as a Shamir secret and as an X25519 private key. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretScalar(pub(crate) Scalar);

impl std::fmt::Debug for SecretScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretScalar([redacted])")
    }
}

impl SecretScalar {
    /// A uniformly random field element (64 random bytes reduced mod l).
    pub fn random<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut wide = [0u8; 64];
        rng.fill_bytes(&mut wide);
        let s = Scalar::from_bytes_mod_order_wide(&wide);
        wide.zeroize();
        SecretScalar(s)
    }

    /// The X25519 public key of this scalar used as a private key (`bytes` clamped).
    pub fn public_key(&self) -> PublicKey {
        let mut b = self.0.to_bytes();
        let pk = MontgomeryPoint::mul_base_clamped(b);
        b.zeroize();
        PublicKey(pk.to_bytes())
    }

    /// X25519 with `peer`: the shared secret.
    ///
    /// # Errors
    /// [`Error::PeerMisbehaved`] naming `peer_name` if the result is the all-zero point (a
    /// low-order public key).
    pub fn diffie_hellman(&self, peer: &PublicKey, peer_name: crate::Peer) -> Result<SharedSecret> {
        let mut b = self.0.to_bytes();
        let shared = MontgomeryPoint(peer.0).mul_clamped(b);
        b.zeroize();
        let bytes = shared.to_bytes();
        if bool::from(bytes.ct_eq(&[0u8; 32])) {
            return Err(Error::misbehaved(peer_name, "low-order X25519 public key"));
        }
        Ok(SharedSecret(bytes))
    }

    /// Derives a PRG seed from this scalar (used for the self mask) with domain separation.
    ///
    /// # Errors
    /// Never in practice (HKDF output length is fixed); mapped to [`Error::InvalidState`].
    pub fn derive_seed(&self, info: &[&[u8]]) -> Result<Seed> {
        let mut b = self.0.to_bytes();
        let s = derive_key(&b, info);
        b.zeroize();
        Ok(Seed::from_bytes(s?))
    }
}

/// An X25519 public key (32 bytes, Montgomery u-coordinate).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PublicKey({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// A hash commitment (SHA-256, domain-separated) to a high-entropy secret: the self-mask secret
/// of a party or a pairwise mask seed. Public: it reveals nothing about a uniformly random
/// 252- or 256-bit secret (random-oracle model) and binds the committer to it (collision
/// resistance).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Commitment(pub [u8; 32]);

impl std::fmt::Debug for Commitment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Commitment({:02x}{:02x}{:02x}{:02x}..)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

impl Commitment {
    /// SHA-256 of `domain`, a zero byte, then `parts` concatenated. The callers in this crate
    /// pass parts of fixed lengths, so the encoding is unambiguous.
    pub(crate) fn of(domain: &[u8], parts: &[&[u8]]) -> Commitment {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(domain);
        ctx.update(&[0]);
        for p in parts {
            ctx.update(p);
        }
        let d = ctx.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Commitment(out)
    }

    /// Constant-time equality (the committed secrets are compared through their hashes).
    pub fn ct_eq(&self, other: &Commitment) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

/// An X25519 shared secret. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SharedSecret([u8; 32]);

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret([redacted])")
    }
}

impl SharedSecret {
    /// Derives a 32-byte key or seed with HKDF-SHA256 and the given `info` parts.
    ///
    /// # Errors
    /// Never in practice; mapped to [`Error::InvalidState`].
    pub fn derive(&self, info: &[&[u8]]) -> Result<Seed> {
        Ok(Seed::from_bytes(derive_key(&self.0, info)?))
    }
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// HKDF-SHA256 (salt fixed to the protocol name) of `ikm` with `info`, 32 bytes.
fn derive_key(ikm: &[u8], info: &[&[u8]]) -> Result<[u8; 32]> {
    // The salt's HMAC key is set up once (it is public and fixed).
    static SALT: std::sync::LazyLock<hkdf::Salt> =
        std::sync::LazyLock::new(|| hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT));
    let prk = SALT.extract(ikm);
    let okm = prk
        .expand(info, Len32)
        .map_err(|_| Error::InvalidState("HKDF expand failed".into()))?;
    let mut out = [0u8; 32];
    okm.fill(&mut out)
        .map_err(|_| Error::InvalidState("HKDF fill failed".into()))?;
    Ok(out)
}

/// Length of the Poly1305 tag appended by [`seal`].
pub const TAG_LEN: usize = 16;

fn aead_key(key: &Seed) -> Result<LessSafeKey> {
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, key.as_bytes())
        .map_err(|_| Error::InvalidState("AEAD key setup failed".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// ChaCha20-Poly1305 encryption of `plaintext` (the tag is appended).
///
/// # Security
/// A (key, nonce) pair must never be used twice: the protocol derives a fresh key per session
/// and pair, and the nonce encodes the direction.
///
/// # Errors
/// [`Error::InvalidState`] if the AEAD refuses (not expected for valid inputs).
pub fn seal(key: &Seed, nonce: [u8; 12], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let k = aead_key(key)?;
    let mut buf = plaintext.to_vec();
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| Error::InvalidState("AEAD seal failed".into()))?;
    Ok(buf)
}

/// ChaCha20-Poly1305 decryption; `None` if authentication fails.
///
/// # Errors
/// [`Error::InvalidState`] if the key cannot be set up (not expected).
pub fn open(key: &Seed, nonce: [u8; 12], aad: &[u8], ciphertext: &[u8]) -> Result<Option<Vec<u8>>> {
    let k = aead_key(key)?;
    let mut buf = ciphertext.to_vec();
    let len = match k.open_in_place(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    ) {
        Ok(pt) => pt.len(),
        Err(_) => {
            buf.zeroize();
            return Ok(None);
        }
    };
    buf.truncate(len);
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PartyId;
    use sotto_dp::rng::seeded_rng;

    #[test]
    fn x25519_agrees_and_aead_round_trips() {
        let mut rng = seeded_rng(3);
        let a = SecretScalar::random(&mut rng);
        let b = SecretScalar::random(&mut rng);
        let peer = crate::Peer::Party(PartyId(1));
        let ab = a.diffie_hellman(&b.public_key(), peer).unwrap();
        let ba = b.diffie_hellman(&a.public_key(), peer).unwrap();
        let k1 = ab.derive(&[b"x"]).unwrap();
        let k2 = ba.derive(&[b"x"]).unwrap();
        assert_eq!(k1, k2);
        assert_ne!(k1, ab.derive(&[b"y"]).unwrap());
        let ct = seal(&k1, [1; 12], b"aad", b"hello").unwrap();
        assert_eq!(ct.len(), 5 + TAG_LEN);
        assert_eq!(open(&k2, [1; 12], b"aad", &ct).unwrap().unwrap(), b"hello");
        assert!(open(&k2, [2; 12], b"aad", &ct).unwrap().is_none());
        assert!(open(&k2, [1; 12], b"bad", &ct).unwrap().is_none());
        let mut t = ct.clone();
        t[0] ^= 1;
        assert!(open(&k2, [1; 12], b"aad", &t).unwrap().is_none());
        // Low-order point rejected, naming the peer.
        let e = a.diffie_hellman(&PublicKey([0; 32]), peer).unwrap_err();
        assert_eq!(e.culprit(), Some(peer));
        assert_eq!(format!("{a:?}"), "SecretScalar([redacted])");
        assert_eq!(format!("{ab:?}"), "SharedSecret([redacted])");
    }
}
