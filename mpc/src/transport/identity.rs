//! Who is who in a deployment: party ids, the aggregator, session ids.
//!
//! [`PartyId`] and [`SessionId`] are the crate-wide types ([`crate::PartyId`],
//! [`crate::SessionId`]), re-exported here. Certificates name parties `party-1` .. `party-n`
//! (transport ids start at 1); the protocol core indexes parties `0..n`. The one place that
//! converts between the two is [`crate::securesum::PartyNumbering`].
//!
//! A peer's [`Identity`] is never taken from what it *says* in a message: it is read from the
//! subject alternative name of the certificate it proved possession of during the TLS handshake
//! (see [`crate::transport::tls`]). Messages only *repeat* it, and a message whose sender field
//! differs from the authenticated identity is rejected.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use crate::error::PartyId;
pub use crate::secagg::SessionId;

/// The DNS suffix under which every role of a deployment is named in its certificate
/// (`aggregator.sotto`, `party-3.sotto`).
pub const IDENTITY_DOMAIN: &str = "sotto";

/// The authenticated role of an endpoint: the aggregator or one numbered party.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Identity {
    /// The (single) aggregator / server of the deployment.
    Aggregator,
    /// A data-holding party.
    Party(PartyId),
}

impl Identity {
    /// Shorthand for `Identity::Party(PartyId(id))`.
    pub const fn party(id: u32) -> Self {
        Identity::Party(PartyId(id))
    }

    /// The party id, or `None` for the aggregator.
    pub const fn party_id(self) -> Option<PartyId> {
        match self {
            Identity::Aggregator => None,
            Identity::Party(id) => Some(id),
        }
    }

    /// The role's file stem in a certificate directory: `aggregator` or `party-3`
    /// (its certificate is `<stem>.pem`, its key `<stem>.key`).
    pub fn file_stem(self) -> String {
        match self {
            Identity::Aggregator => "aggregator".to_owned(),
            Identity::Party(id) => format!("party-{}", id.0),
        }
    }

    /// The DNS name that carries this identity in a certificate's subject alternative names,
    /// e.g. `aggregator.sotto` or `party-3.sotto`. It is also the TLS server name used when
    /// dialing this role, so the address dialed can be any IP or host name.
    pub fn dns_name(self) -> String {
        format!("{}.{IDENTITY_DOMAIN}", self.file_stem())
    }

    /// Parses a name produced by [`Identity::dns_name`]. Only the canonical form is accepted
    /// (`party-3.sotto`, not `party-03.sotto` or `Party-3.sotto`), so that one identity has
    /// exactly one spelling.
    pub fn from_dns_name(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(IDENTITY_DOMAIN)?.strip_suffix('.')?;
        if stem == "aggregator" {
            return Some(Identity::Aggregator);
        }
        let digits = stem.strip_prefix("party-")?;
        let id: u32 = digits.parse().ok()?;
        let identity = Identity::party(id);
        // Reject "+3", "03", ...: the canonical spelling must round-trip.
        (identity.dns_name() == name).then_some(identity)
    }

    /// Whether `name` lies in the identity namespace (`*.sotto`), canonical or not.
    pub(crate) fn in_namespace(name: &str) -> bool {
        name.len() > IDENTITY_DOMAIN.len() + 1
            && name
                .get(name.len() - IDENTITY_DOMAIN.len() - 1..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(".sotto"))
    }
}

impl From<PartyId> for Identity {
    fn from(id: PartyId) -> Self {
        Identity::Party(id)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Aggregator => f.write_str("the aggregator"),
            Identity::Party(id) => id.fmt(f),
        }
    }
}

/// The other end of a connection, as far as it is known: an authenticated identity, or only a
/// network address (before or without authentication). Used in errors to say who is at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A peer authenticated by its certificate.
    Known(Identity),
    /// A peer known only by its address (the handshake did not complete or was refused).
    Address(SocketAddr),
}

impl From<Identity> for Peer {
    fn from(identity: Identity) -> Self {
        Peer::Known(identity)
    }
}

impl From<PartyId> for Peer {
    fn from(id: PartyId) -> Self {
        Peer::Known(Identity::Party(id))
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Known(identity) => identity.fmt(f),
            Peer::Address(addr) => write!(f, "unauthenticated peer {addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_round_trip() {
        for identity in [
            Identity::Aggregator,
            Identity::party(0),
            Identity::party(3),
            Identity::party(u32::MAX),
        ] {
            assert_eq!(
                Identity::from_dns_name(&identity.dns_name()),
                Some(identity)
            );
            assert!(Identity::in_namespace(&identity.dns_name()));
        }
        assert_eq!(Identity::party(3).dns_name(), "party-3.sotto");
        assert_eq!(Identity::Aggregator.dns_name(), "aggregator.sotto");
    }

    #[test]
    fn non_canonical_names_are_not_identities() {
        for name in [
            "party-03.sotto",
            "party-+3.sotto",
            "party-.sotto",
            "party-3",
            "party-3.sotto.example",
            "Party-3.sotto",
            "aggregator",
            "*.sotto",
            "party-4294967296.sotto",
            "localhost",
            "",
        ] {
            assert_eq!(Identity::from_dns_name(name), None, "{name}");
        }
        assert!(Identity::in_namespace("*.sotto"));
        assert!(Identity::in_namespace("PARTY-03.SOTTO"));
        assert!(!Identity::in_namespace(".sotto"));
        assert!(!Identity::in_namespace("localhost"));
    }

    #[test]
    fn session_id_displays_as_hex() {
        let id = SessionId([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
        assert_ne!(SessionId::random(&mut rng), SessionId::random(&mut rng));
    }

    use rand_core::SeedableRng;
}
