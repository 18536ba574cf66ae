//! The Merkle tree as stored: the hash of every complete subtree, written once when the subtree
//! fills up and never changed, so that a root or a proof reads O(log n) stored hashes instead of
//! every leaf.
//!
//! A node `(level, index)` is the root of the perfect subtree over leaves
//! `index·2^level .. (index+1)·2^level`; level 0 is the leaf hashes (`audit_leaves`), levels 1 and
//! up are in `audit_tree` (migration 0005). Every subtree `[lo, hi)` that the RFC 6962 recursion
//! visits (root, proof element, range boundary) is aligned: `lo` is a multiple of the smallest
//! power of two not below `hi - lo`. Such a subtree is the perfect subtrees given by the binary
//! digits of `hi - lo`, largest first ([`cover`]), and its hash folds them from the right
//! ([`Nodes::hash`]): `MTH(lo, hi) = H(0x01 || P1 || H(0x01 || P2 || ...))`.
//!
//! The functions here only say which subtrees a proof needs and compute hashes from nodes the
//! caller fetched; `erasure_proof::merkle` stays the reference, and the tests check both agree.

use std::collections::HashMap;

use anyhow::Context;

use super::merkle::{self, Hash, node_hash, split};

/// `(level, index)`: the perfect subtree over leaves `index·2^level .. (index+1)·2^level`.
pub type NodeId = (u8, u64);

/// The perfect subtrees that make up the aligned subtree `[lo, hi)`, largest (leftmost) first.
pub fn cover(lo: u64, hi: u64) -> Vec<NodeId> {
    let mut out = Vec::new();
    let mut at = lo;
    for level in (0..64u8).rev() {
        if (hi - lo) >> level & 1 == 1 {
            out.push((level, at >> level));
            at += 1 << level;
        }
    }
    out
}

/// The subtrees whose hashes are the inclusion proof of leaf `index` in a tree of `size` leaves
/// (RFC 6962 `PATH`), bottom-up, as `merkle::inclusion_proof`.
pub fn inclusion_ranges(index: u64, size: u64) -> Vec<(u64, u64)> {
    fn walk(m: u64, lo: u64, hi: u64, out: &mut Vec<(u64, u64)>) {
        if hi - lo <= 1 {
            return;
        }
        let k = split(hi - lo);
        if m < lo + k {
            walk(m, lo, lo + k, out);
            out.push((lo + k, hi));
        } else {
            walk(m, lo + k, hi, out);
            out.push((lo, lo + k));
        }
    }
    let mut out = Vec::new();
    if index < size {
        walk(index, 0, size, &mut out);
    }
    out
}

/// The subtrees of the consistency proof from `old_size` to `size` (RFC 6962 `PROOF`), as
/// `merkle::consistency_proof`.
pub fn consistency_ranges(old_size: u64, size: u64) -> Vec<(u64, u64)> {
    fn walk(m: u64, lo: u64, hi: u64, whole: bool, out: &mut Vec<(u64, u64)>) {
        if m == hi {
            if !whole {
                out.push((lo, hi));
            }
            return;
        }
        let k = split(hi - lo);
        if m <= lo + k {
            walk(m, lo, lo + k, whole, out);
            out.push((lo + k, hi));
        } else {
            walk(m, lo + k, hi, false, out);
            out.push((lo, lo + k));
        }
    }
    let mut out = Vec::new();
    if old_size > 0 && old_size <= size {
        walk(old_size, 0, size, true, &mut out);
    }
    out
}

/// The subtrees of the range proof of `start..end` in a tree of `size` leaves, as
/// `merkle::range_proof`.
pub fn range_ranges(start: u64, end: u64, size: u64) -> Vec<(u64, u64)> {
    fn walk(lo: u64, hi: u64, start: u64, end: u64, out: &mut Vec<(u64, u64)>) {
        if hi <= start || lo >= end {
            out.push((lo, hi));
        } else if !(start <= lo && hi <= end) {
            let k = split(hi - lo);
            walk(lo, lo + k, start, end, out);
            walk(lo + k, hi, start, end, out);
        }
    }
    let mut out = Vec::new();
    if size > 0 && start <= end && end <= size {
        walk(0, size, start, end, &mut out);
    }
    out
}

/// Every node needed to hash the given subtrees, without repeats.
pub fn nodes_for(ranges: &[(u64, u64)]) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = ranges.iter().flat_map(|&(lo, hi)| cover(lo, hi)).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Stored node hashes, as fetched for one computation.
#[derive(Debug, Default)]
pub struct Nodes(pub HashMap<NodeId, Hash>);

impl Nodes {
    /// The hash of the aligned subtree `[lo, hi)`; the empty root for `lo == hi`.
    pub fn hash(&self, lo: u64, hi: u64) -> anyhow::Result<Hash> {
        let mut acc: Option<Hash> = None;
        for id in cover(lo, hi).into_iter().rev() {
            let h = *self
                .0
                .get(&id)
                .with_context(|| format!("the audit tree lacks node {id:?}"))?;
            acc = Some(match acc {
                None => h,
                Some(right) => node_hash(&h, &right),
            });
        }
        Ok(acc.unwrap_or_else(merkle::empty_root))
    }

    /// The hashes of the given subtrees, in order.
    pub fn hashes(&self, ranges: &[(u64, u64)]) -> anyhow::Result<Vec<Hash>> {
        ranges.iter().map(|&(lo, hi)| self.hash(lo, hi)).collect()
    }
}

/// The nodes of levels 1 and up completed when the tree of `old_size` leaves grows by `leaves`
/// (their hashes, in order). `old_peaks` are the hashes of `cover(0, old_size)`, in that order: the
/// only old nodes a new node can have as a child.
pub fn grow(
    old_size: u64,
    old_peaks: &[Hash],
    leaves: &[Hash],
) -> anyhow::Result<Vec<(NodeId, Hash)>> {
    let peak_ids = cover(0, old_size);
    anyhow::ensure!(
        peak_ids.len() == old_peaks.len(),
        "a tree of {old_size} leaves has {} peaks, not {}",
        peak_ids.len(),
        old_peaks.len()
    );
    let peaks: HashMap<u8, Hash> = peak_ids
        .iter()
        .map(|(level, _)| *level)
        .zip(old_peaks.iter().copied())
        .collect();
    let new_size = old_size + leaves.len() as u64;
    let mut out = Vec::new();
    // The nodes of `level` new in this growth, the first of index `old_size >> level`.
    let mut fresh: Vec<Hash> = leaves.to_vec();
    for level in 0..63u8 {
        let (lo, hi) = (old_size >> (level + 1), new_size >> (level + 1));
        if lo == hi {
            break;
        }
        // Children of the new parents start at index 2·lo: an odd first new node's left
        // sibling is an old peak.
        let mut row = Vec::with_capacity(fresh.len() + 1);
        if (old_size >> level) & 1 == 1 {
            row.push(peaks[&level]);
        }
        row.extend(fresh);
        fresh = (0..(hi - lo) as usize)
            .map(|i| node_hash(&row[2 * i], &row[2 * i + 1]))
            .collect();
        out.extend((lo..hi).map(|i| (level + 1, i)).zip(fresh.iter().copied()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use merkle::leaf_hash;
    use rand::Rng;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    /// Builds the stored tree incrementally, in random batches, as the sequencer does.
    fn build(leaves: &[Hash], rng: &mut impl Rng) -> Nodes {
        let mut nodes = Nodes::default();
        let mut size = 0u64;
        while (size as usize) < leaves.len() {
            let batch = rng.random_range(1..=(leaves.len() - size as usize).min(40));
            let peaks = nodes.0.clone();
            let peaks: Vec<Hash> = cover(0, size).iter().map(|id| peaks[id]).collect();
            let new = &leaves[size as usize..size as usize + batch];
            for (i, h) in new.iter().enumerate() {
                nodes.0.insert((0, size + i as u64), *h);
            }
            for (id, h) in grow(size, &peaks, new).unwrap() {
                assert!(nodes.0.insert(id, h).is_none(), "node {id:?} written twice");
            }
            size += batch as u64;
        }
        nodes
    }

    #[test]
    fn every_complete_subtree_is_stored_with_its_rfc6962_hash() {
        let mut rng = rand::rng();
        let all = leaves(300);
        let nodes = build(&all, &mut rng);
        for level in 0..9u8 {
            let width = 1usize << level;
            for index in 0..all.len() / width {
                let want = merkle::root(&all[index * width..(index + 1) * width]);
                assert_eq!(
                    nodes.0[&(level, index as u64)],
                    want,
                    "node {level}/{index}"
                );
            }
        }
        // Nothing more: incomplete subtrees are never stored.
        let complete: usize = (0..9).map(|l| all.len() >> l).sum();
        assert_eq!(nodes.0.len(), complete);
    }

    #[test]
    fn roots_and_proofs_from_stored_nodes_equal_the_reference() {
        let mut rng = rand::rng();
        let all = leaves(150);
        let nodes = build(&all, &mut rng);
        for size in 1..=all.len() {
            let tree = &all[..size];
            let n = size as u64;
            assert_eq!(nodes.hash(0, n).unwrap(), merkle::root(tree), "root {size}");
            for index in 0..size {
                let got = nodes.hashes(&inclusion_ranges(index as u64, n)).unwrap();
                assert_eq!(
                    got,
                    merkle::inclusion_proof(tree, index),
                    "inclusion {index}/{size}"
                );
            }
            for old in 0..=size {
                let got = nodes.hashes(&consistency_ranges(old as u64, n)).unwrap();
                assert_eq!(
                    got,
                    merkle::consistency_proof(tree, old),
                    "consistency {old}/{size}"
                );
            }
            for _ in 0..20 {
                let start = rng.random_range(0..=size);
                let end = rng.random_range(start..=size);
                let got = nodes
                    .hashes(&range_ranges(start as u64, end as u64, n))
                    .unwrap();
                assert_eq!(
                    got,
                    merkle::range_proof(tree, start, end),
                    "range {start}..{end}/{size}"
                );
            }
        }
    }

    #[test]
    fn a_proof_reads_logarithmically_many_nodes() {
        let size = 10_000_000u64;
        let index = 1_234_567;
        let ids = nodes_for(&[inclusion_ranges(index, size), vec![(0, size)]].concat());
        assert!(ids.len() <= 2 * 24 + 2, "{} nodes", ids.len());
        assert_eq!(
            inclusion_ranges(index, size).len(),
            merkle::inclusion_proof_len(index, size)
        );
        let ids = nodes_for(&consistency_ranges(9_999_999, size));
        assert!(ids.len() <= 2 * 24 + 2, "{} nodes", ids.len());
    }

    #[test]
    fn growth_checks_the_peaks_it_is_given() {
        assert!(grow(3, &[[0; 32]], &leaves(2)).is_err());
        assert!(grow(0, &[], &[]).unwrap().is_empty());
    }
}
