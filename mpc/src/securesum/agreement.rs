//! Session agreement: before any input is used, every party and the aggregator exchange a
//! digest of the session's public parameters, with the parameters themselves so that a
//! mismatch can name the field that differs.
//!
//! The digest is SHA-256 over a canonical text of the fields (name, value) in a fixed order,
//! prefixed by a version tag and the session id. Values are printed exactly: integers in
//! decimal, reals with Rust's shortest round-trip representation, so two configurations agree
//! exactly when their digests do.

use serde::{Deserialize, Serialize};

use super::{NoiseSpec, RingBits, SecureSumParams, SumMode};
use crate::encoding::Clipping;

/// The envelope round of the agreement messages (outside the protocol rounds `0..=4`).
pub const AGREEMENT_ROUND: u64 = 100;

/// Version tag hashed into the digest; bump it when the field list changes.
const DIGEST_VERSION: &str = "sotto-securesum-agreement-v1";

/// The public parameters of a session as (name, value) pairs, with their digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDigest {
    /// SHA-256 of the canonical text of `fields` (and the session id).
    pub digest: [u8; 32],
    /// The parameters, in a fixed order.
    pub fields: Vec<(String, String)>,
}

/// A difference between two parties' session parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The field that differs (`"scale"`, `"bound"`, ...; `"digest"` if the fields agree but
    /// the digests do not).
    pub field: String,
    /// Its value here.
    pub ours: String,
    /// Its value at the other end.
    pub theirs: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {} here but {}", self.field, self.ours, self.theirs)
    }
}

impl SessionDigest {
    /// The digest of `params` for a run in `mode`. The deadlines are local policy and not part
    /// of it.
    pub fn of(params: &SecureSumParams, mode: SumMode) -> Self {
        let (clipping, bound) = match params.clipping {
            Clipping::L2 { norm } => ("l2", norm),
            Clipping::LInf { bound } => ("linf", bound),
        };
        let noise = match params.noise {
            NoiseSpec::None => "none".to_owned(),
            NoiseSpec::EpsilonDelta { epsilon, delta } => {
                format!("epsilon {epsilon:?} delta {delta:?}")
            }
            NoiseSpec::Multiplier { multiplier, delta } => {
                format!("multiplier {multiplier:?} delta {delta:?}")
            }
            NoiseSpec::Record {
                epsilon,
                delta,
                sensitivity,
            } => format!(
                "per-record epsilon {epsilon:?} delta {delta:?} sensitivity l2 {:?} l1 {:?}",
                sensitivity.l2, sensitivity.l1
            ),
        };
        let ring = match params.ring {
            RingBits::U32 => "32",
            RingBits::U64 => "64",
        };
        let mode_name = match mode {
            SumMode::Aggregator => "aggregator",
            SumMode::PeerToPeer => "peer-to-peer",
        };
        let fields: Vec<(String, String)> = [
            ("mode", mode_name.to_owned()),
            ("parties", params.parties.to_string()),
            ("party_set", format!("party-1 .. party-{}", params.parties)),
            ("threshold", params.threshold.to_string()),
            ("colluders", params.colluders_for(mode).to_string()),
            ("dim", params.dim.to_string()),
            ("clipping", clipping.to_owned()),
            ("bound", format!("{bound:?}")),
            ("scale", format!("{:?}", params.scale)),
            ("ring_bits", ring.to_owned()),
            ("noise", noise),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let digest = digest_of(&params.session.0, &fields);
        SessionDigest { digest, fields }
    }

    /// Compares `theirs` (received from a peer) with this digest: `None` if they agree, else
    /// the first differing field.
    pub fn mismatch(&self, theirs: &SessionDigest) -> Option<Mismatch> {
        if self.digest == theirs.digest {
            return None;
        }
        for (name, ours) in &self.fields {
            let other = theirs
                .fields
                .iter()
                .find(|(n, _)| n == name)
                .map_or_else(|| "(missing)".to_owned(), |(_, v)| v.clone());
            if *ours != other {
                return Some(Mismatch {
                    field: name.clone(),
                    ours: ours.clone(),
                    theirs: other,
                });
            }
        }
        Some(Mismatch {
            field: "digest".to_owned(),
            ours: hex(&self.digest),
            theirs: hex(&theirs.digest),
        })
    }
}

fn digest_of(session: &[u8; 16], fields: &[(String, String)]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(DIGEST_VERSION.as_bytes());
    ctx.update(&[0]);
    ctx.update(session);
    for (name, value) in fields {
        // Length-prefixed, so that no two field lists share a text.
        ctx.update(&(name.len() as u64).to_le_bytes());
        ctx.update(name.as_bytes());
        ctx.update(&(value.len() as u64).to_le_bytes());
        ctx.update(value.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionId;

    fn params() -> SecureSumParams {
        SecureSumParams::new(SessionId([5; 16]), 4, 1, Clipping::LInf { bound: 10_000.0 }).unwrap()
    }

    #[test]
    fn equal_parameters_agree_and_a_changed_field_is_named() {
        let a = SessionDigest::of(&params(), SumMode::Aggregator);
        assert_eq!(
            a.mismatch(&SessionDigest::of(&params(), SumMode::Aggregator)),
            None
        );
        let mut p = params();
        p.scale = 2.0;
        let m = a
            .mismatch(&SessionDigest::of(&p, SumMode::Aggregator))
            .unwrap();
        assert_eq!(m.field, "scale");
        assert_eq!(m.to_string(), "scale = 1.0 here but 2.0");
        let mut p = params();
        p.clipping = Clipping::LInf { bound: 5000.0 };
        assert_eq!(
            a.mismatch(&SessionDigest::of(&p, SumMode::Aggregator))
                .unwrap()
                .field,
            "bound"
        );
        let mut p = params();
        p.colluders = Some(0);
        assert_eq!(
            a.mismatch(&SessionDigest::of(&p, SumMode::Aggregator))
                .unwrap()
                .field,
            "colluders"
        );
        // Deadlines are local policy.
        let mut p = params();
        p.deadlines.round *= 3;
        assert_eq!(
            a.mismatch(&SessionDigest::of(&p, SumMode::Aggregator)),
            None
        );
        // Another session, same fields: the digest differs.
        let mut p = params();
        p.session = SessionId([6; 16]);
        assert_eq!(
            a.mismatch(&SessionDigest::of(&p, SumMode::Aggregator))
                .unwrap()
                .field,
            "digest"
        );
        // A tampered digest with equal fields is caught too.
        let mut t = a.clone();
        t.digest[0] ^= 1;
        assert_eq!(a.mismatch(&t).unwrap().field, "digest");
    }
}
