//! Who masks with whom: the complete graph (SecAgg) or a sparse random regular graph
//! (SecAgg+, Bell et al. 2020).
//!
//! The sparse graph is a Harary graph H(k, n) (node at position `p` is joined to positions
//! `p +- 1, ..., p +- k/2` mod n) under a random relabeling of the parties. The relabeling is
//! derived from the session id, so every party and the aggregator compute the same graph
//! without extra messages. Each party masks with its `k` neighbours and Shamir-shares its
//! secrets among its neighbours and itself (`k + 1` holders) with threshold `share_threshold`.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::SessionId;
use crate::error::PartyId;

/// The masking graph of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskGraph {
    /// Every pair of parties shares a mask.
    Complete {
        /// Number of parties.
        parties: usize,
    },
    /// A randomly relabeled Harary graph of even degree `degree`.
    Harary {
        /// Number of parties.
        parties: usize,
        /// The degree k (even, 2 <= k < n).
        degree: usize,
        /// Position of each party.
        position: Vec<u32>,
        /// Party at each position.
        party_at: Vec<u32>,
    },
}

impl MaskGraph {
    /// The complete graph on `parties` nodes.
    pub fn complete(parties: usize) -> Self {
        MaskGraph::Complete { parties }
    }

    /// The Harary graph of degree `degree` relabeled by a permutation derived from `session`.
    /// The caller ([`super::SecAggConfig`]) validates `degree`.
    pub fn harary(parties: usize, degree: usize, session: &SessionId) -> Self {
        let mut seed = [0u8; 32];
        seed[..16].copy_from_slice(&session.0);
        seed[16..].copy_from_slice(b"sotto-mask-graph");
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut party_at: Vec<u32> = (0..parties as u32).collect();
        for i in (1..parties).rev() {
            // Uniform in [0, i] by rejection.
            let bound = i as u64 + 1;
            let zone = u64::MAX - (u64::MAX % bound);
            let j = loop {
                let r = rng.next_u64();
                if r < zone {
                    break (r % bound) as usize;
                }
            };
            party_at.swap(i, j);
        }
        let mut position = vec![0u32; parties];
        for (pos, &p) in party_at.iter().enumerate() {
            if let Some(slot) = position.get_mut(p as usize) {
                *slot = pos as u32;
            }
        }
        MaskGraph::Harary {
            parties,
            degree,
            position,
            party_at,
        }
    }

    /// Number of parties.
    pub fn parties(&self) -> usize {
        match self {
            MaskGraph::Complete { parties } | MaskGraph::Harary { parties, .. } => *parties,
        }
    }

    /// The neighbours of `party` (sorted, without `party` itself).
    pub fn neighbours(&self, party: PartyId) -> Vec<PartyId> {
        let mut out = Vec::new();
        self.for_each_holder(party, |v| {
            if v != party {
                out.push(v);
            }
        });
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether `a` and `b` are neighbours.
    pub fn adjacent(&self, a: PartyId, b: PartyId) -> bool {
        if a == b || a.index() >= self.parties() || b.index() >= self.parties() {
            return false;
        }
        match self {
            MaskGraph::Complete { .. } => true,
            MaskGraph::Harary {
                parties,
                degree,
                position,
                ..
            } => {
                let (Some(&pa), Some(&pb)) = (position.get(a.index()), position.get(b.index()))
                else {
                    return false;
                };
                let diff = (pa as usize + parties - pb as usize) % parties;
                let dist = diff.min(parties - diff);
                dist >= 1 && dist <= degree / 2
            }
        }
    }

    /// Calls `f` on each holder of `party` (its neighbours and itself), in no particular order
    /// and without allocating; see [`Self::holders`] for the sorted list. (For the Harary graph
    /// the `k / 2` offsets on each side are distinct positions since `k < n`.)
    pub fn for_each_holder(&self, party: PartyId, mut f: impl FnMut(PartyId)) {
        match self {
            MaskGraph::Complete { parties } => (0..*parties as u32).map(PartyId).for_each(f),
            MaskGraph::Harary {
                parties,
                degree,
                position,
                party_at,
            } => {
                let n = *parties;
                let Some(&p) = position.get(party.index()) else {
                    return;
                };
                f(party);
                for off in 1..=(degree / 2).min((n - 1) / 2) {
                    for pos in [(p as usize + off) % n, (p as usize + n - off) % n] {
                        if let Some(&v) = party_at.get(pos) {
                            f(PartyId(v));
                        }
                    }
                }
            }
        }
    }

    /// A choice of `t` of `owner`'s holders (sorted) that many owners have in common, so an
    /// aggregator interpolating from it computes few distinct sets of Lagrange coefficients:
    /// for the Harary graph, the holders at the `t` consecutive positions starting at the
    /// first multiple of `k + 2 - t` in the owner's window of `k + 1` positions (every window
    /// contains one such block, so about `n / (k + 2 - t)` blocks serve all owners). `None`
    /// for the complete graph (the first `t` responders are already common to all owners) or
    /// `t` outside `1..=k + 1`.
    pub fn shared_holder_block(&self, owner: PartyId, t: usize) -> Option<Vec<PartyId>> {
        let MaskGraph::Harary {
            parties,
            degree,
            position,
            party_at,
        } = self
        else {
            return None;
        };
        let (n, k) = (*parties, *degree);
        if t == 0 || t > k + 1 || k >= n {
            return None;
        }
        let p = *position.get(owner.index())? as usize;
        let step = k + 2 - t;
        let lo = (p + n - k / 2) % n;
        let mut start = lo.div_ceil(step) * step;
        if start >= n {
            start = 0;
        }
        let offset = (start + n - lo) % n;
        if offset + t > k + 1 {
            return None;
        }
        let mut out: Vec<PartyId> = (0..t)
            .map(|i| party_at.get((start + i) % n).copied().map(PartyId))
            .collect::<Option<_>>()?;
        out.sort_unstable();
        Some(out)
    }

    /// The holders of `party`'s shares: its neighbours and itself, sorted.
    pub fn holders(&self, party: PartyId) -> Vec<PartyId> {
        let mut h = self.neighbours(party);
        h.push(party);
        h.sort_unstable();
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harary_graph_is_regular_and_symmetric() {
        let g = MaskGraph::harary(50, 6, &SessionId([5; 16]));
        for u in 0..50u32 {
            let nb = g.neighbours(PartyId(u));
            assert_eq!(nb.len(), 6);
            for v in &nb {
                assert!(g.adjacent(PartyId(u), *v));
                assert!(g.neighbours(*v).contains(&PartyId(u)));
            }
            let non: usize = (0..50u32)
                .filter(|&v| g.adjacent(PartyId(u), PartyId(v)))
                .count();
            assert_eq!(non, 6);
        }
        // for_each_holder visits exactly the holders, once each; the holders are the party and
        // the parties `adjacent` (its own distance arithmetic) says are its neighbours.
        for (n, k) in [(50usize, 6usize), (10, 8), (12, 10), (7, 6), (1000, 48)] {
            let g = MaskGraph::harary(n, k, &SessionId([8; 16]));
            for u in 0..n as u32 {
                let mut seen = Vec::new();
                g.for_each_holder(PartyId(u), |v| seen.push(v));
                seen.sort_unstable();
                assert_eq!(seen, g.holders(PartyId(u)), "n={n} k={k} u={u}");
                let by_distance: Vec<PartyId> = (0..n as u32)
                    .map(PartyId)
                    .filter(|&v| v == PartyId(u) || g.adjacent(PartyId(u), v))
                    .collect();
                assert_eq!(seen, by_distance, "n={n} k={k} u={u}");
            }
        }
        let mut all = Vec::new();
        MaskGraph::complete(4).for_each_holder(PartyId(2), |v| all.push(v));
        assert_eq!(all, MaskGraph::complete(4).holders(PartyId(2)));
        // Shared holder blocks: t of the owner's holders, few distinct ones across owners.
        for (n, k, t) in [
            (50usize, 6usize, 3usize),
            (1000, 48, 14),
            (101, 10, 11),
            (37, 4, 1),
        ] {
            let g = MaskGraph::harary(n, k, &SessionId([7; 16]));
            let mut blocks = std::collections::BTreeSet::new();
            for u in 0..n as u32 {
                let b = g.shared_holder_block(PartyId(u), t).unwrap();
                assert_eq!(b.len(), t);
                let holders = g.holders(PartyId(u));
                assert!(b.iter().all(|v| holders.contains(v)), "n={n} u={u}");
                assert!(b.windows(2).all(|w| w[0] < w[1]));
                blocks.insert(b);
            }
            assert!(
                blocks.len() <= n / (k + 2 - t) + 2,
                "{} blocks",
                blocks.len()
            );
            assert!(g.shared_holder_block(PartyId(0), k + 2).is_none());
            assert!(g.shared_holder_block(PartyId(0), 0).is_none());
        }
        assert!(
            MaskGraph::complete(5)
                .shared_holder_block(PartyId(0), 3)
                .is_none()
        );
        // Different sessions relabel differently.
        let h = MaskGraph::harary(50, 6, &SessionId([6; 16]));
        assert_ne!(g, h);
    }
}
