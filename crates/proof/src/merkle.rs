//! The Merkle tree of RFC 9162 (Certificate Transparency 2.0, same tree as RFC 6962), SHA-256.
//!
//! Pure functions over the list of leaf hashes:
//! - a leaf is `H(0x00 || data)`, an inner node `H(0x01 || left || right)`;
//! - the root of `n > 1` leaves splits at `k`, the largest power of two below `n`:
//!   `MTH(D[0:n]) = H(0x01 || MTH(D[0:k]) || MTH(D[k:n]))`; the root of no leaves is `SHA-256("")`;
//! - inclusion proofs (RFC 6962 2.1.1 `PATH`, verified as in RFC 9162 2.1.3.2), consistency proofs
//!   (RFC 6962 2.1.2 `PROOF`/`SUBPROOF`, verified as in RFC 9162 2.1.4.2) and range proofs (below).
//!
//! A note on what a proof binds: an inclusion proof ties a leaf to a root at an index, and the
//! tree size only through the shape of the path. Two sizes can share a shape (leaf 0 of a tree of
//! 3 or of 4 leaves both have a right sibling, then a right sibling), so the size must come with
//! the root from the same signed checkpoint, never from the party that supplies the proof.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error(
        "the proof has {got} hashes where {expected} are needed for this index and tree size \
         (a proof for another tree size?)"
    )]
    ProofLength { got: usize, expected: usize },
    #[error(
        "the proof leads to root {} but the expected root is {}",
        hex::encode(.computed),
        hex::encode(.expected)
    )]
    RootMismatch { computed: Hash, expected: Hash },
    #[error(
        "the proof leads to old root {} but the expected old root is {}",
        hex::encode(.computed),
        hex::encode(.expected)
    )]
    OldRootMismatch { computed: Hash, expected: Hash },
    #[error("the old tree size {old} is larger than the new tree size {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("the range {start}..{end} does not lie within a tree of size {size}")]
    RangeOutOfBounds { start: u64, end: u64, size: u64 },
    #[error("the range {start}..{end} has {expected} leaves but {got} leaf hashes were given")]
    RangeLeafCount {
        start: u64,
        end: u64,
        got: usize,
        expected: u64,
    },
}

/// `H(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0x00])
        .chain_update(data)
        .finalize()
        .into()
}

/// `H(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The Merkle tree hash of the given leaf hashes (`MTH`); `SHA-256("")` for none.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof of leaf `index` in the tree of all `leaves` (RFC 6962 `PATH(m, D[0:n])`),
/// bottom-up.
///
/// # Panics
/// When `index >= leaves.len()`.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Vec<Hash> {
    assert!(
        index < leaves.len(),
        "inclusion_proof: index {index} is not below the tree size {}",
        leaves.len()
    );
    let mut proof = Vec::new();
    path(index, leaves, &mut proof);
    proof
}

fn path(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n as u64) as usize;
    if m < k {
        path(m, &leaves[..k], out);
        out.push(root(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], out);
        out.push(root(&leaves[..k]));
    }
}

/// The consistency proof between the tree of the first `old_size` leaves and the tree of all
/// `leaves` (RFC 6962 `PROOF(m, D[0:n])`). Empty when `old_size` is 0 or `leaves.len()`.
///
/// # Panics
/// When `old_size > leaves.len()`.
pub fn consistency_proof(leaves: &[Hash], old_size: usize) -> Vec<Hash> {
    assert!(
        old_size <= leaves.len(),
        "consistency_proof: old size {old_size} is larger than the tree size {}",
        leaves.len()
    );
    let mut proof = Vec::new();
    if old_size > 0 {
        subproof(old_size, leaves, true, &mut proof);
    }
    proof
}

fn subproof(m: usize, leaves: &[Hash], whole: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !whole {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n as u64) as usize;
    if m <= k {
        subproof(m, &leaves[..k], whole, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, out);
        out.push(root(&leaves[..k]));
    }
}

/// How many hashes the inclusion proof of `index` in a tree of `size` leaves has.
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let (inner, border) = decompose(index, size);
    (inner + border) as usize
}

/// How many hashes the consistency proof from `old_size` to `new_size` has.
pub fn consistency_proof_len(old_size: u64, new_size: u64) -> usize {
    if old_size == 0 || old_size >= new_size {
        return 0;
    }
    let (inner, border) = decompose(old_size - 1, new_size);
    let shift = old_size.trailing_zeros();
    let seed = if old_size.is_power_of_two() { 0 } else { 1 };
    (seed + inner - shift + border) as usize
}

/// The path of `index` in a tree of `size` has `inner` levels below the right border of the tree
/// and `border` levels on it (as transparency-dev's `decompInclProof`).
fn decompose(index: u64, size: u64) -> (u32, u32) {
    let inner = u64::BITS - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner, border)
}

/// Checks that `leaf` (a leaf hash) is at `index` in the tree of `size` leaves with `root`
/// (RFC 9162 2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(MerkleError::ProofLength {
            got: proof.len(),
            expected,
        });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(MerkleError::ProofLength {
                got: proof.len(),
                expected,
            });
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(MerkleError::ProofLength {
            got: proof.len(),
            expected,
        });
    }
    if r != *root {
        return Err(MerkleError::RootMismatch {
            computed: r,
            expected: *root,
        });
    }
    Ok(())
}

/// Checks that the tree of `old_size` leaves with `old_root` is a prefix of the tree of
/// `new_size` leaves with `new_root` (RFC 9162 2.1.4.2). Equal sizes need an empty proof and
/// equal roots; old size 0 needs an empty proof and the empty root.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::SizesOutOfOrder {
            old: old_size,
            new: new_size,
        });
    }
    let expected = consistency_proof_len(old_size, new_size);
    if proof.len() != expected {
        return Err(MerkleError::ProofLength {
            got: proof.len(),
            expected,
        });
    }
    if old_size == 0 {
        let empty = empty_root();
        if *old_root != empty {
            return Err(MerkleError::OldRootMismatch {
                computed: empty,
                expected: *old_root,
            });
        }
        return Ok(());
    }
    if old_size == new_size {
        if old_root != new_root {
            return Err(MerkleError::RootMismatch {
                computed: *old_root,
                expected: *new_root,
            });
        }
        return Ok(());
    }
    let (seed, rest) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        (proof[0], &proof[1..])
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (seed, seed);
    for c in rest {
        if s == 0 {
            return Err(MerkleError::ProofLength {
                got: proof.len(),
                expected,
            });
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(MerkleError::ProofLength {
            got: proof.len(),
            expected,
        });
    }
    if fr != *old_root {
        return Err(MerkleError::OldRootMismatch {
            computed: fr,
            expected: *old_root,
        });
    }
    if sr != *new_root {
        return Err(MerkleError::RootMismatch {
            computed: sr,
            expected: *new_root,
        });
    }
    Ok(())
}

/// The range proof of leaves `start..end` in the tree of all `leaves`: the hashes of the maximal
/// subtrees that lie wholly outside `[start, end)`, in the order a left-to-right `MTH` recursion
/// meets them. With them and the range's leaf hashes a verifier recomputes the root
/// ([`root_from_range`]), which proves the range is exactly leaves `start..end` of that tree.
///
/// The recursion, shared by prover and verifier: for `MTH(lo, hi)`, if `[lo, hi)` is disjoint
/// from `[start, end)` it is one proof element; else if `hi - lo == 1` it is the next leaf of the
/// range; else split at `k`, the largest power of two below `hi - lo`, and go left, then right.
/// An empty range (`start == end`) is allowed: its proof is the tree cut at `start`.
///
/// # Panics
/// Unless `start <= end <= leaves.len()`.
pub fn range_proof(leaves: &[Hash], start: usize, end: usize) -> Vec<Hash> {
    assert!(
        start <= end && end <= leaves.len(),
        "range_proof: range {start}..{end} is not within a tree of size {}",
        leaves.len()
    );
    let mut proof = Vec::new();
    if !leaves.is_empty() {
        range_walk(leaves, 0, start, end, &mut proof);
    }
    proof
}

fn range_walk(leaves: &[Hash], lo: usize, start: usize, end: usize, out: &mut Vec<Hash>) {
    let hi = lo + leaves.len();
    if hi <= start || lo >= end {
        out.push(root(leaves));
        return;
    }
    if start <= lo && hi <= end {
        return; // wholly inside: the verifier rebuilds it from the range's leaves
    }
    let k = split(leaves.len() as u64) as usize;
    range_walk(&leaves[..k], lo, start, end, out);
    range_walk(&leaves[k..], lo + k, start, end, out);
}

/// How many hashes the range proof of `start..end` in a tree of `size` leaves has.
pub fn range_proof_len(start: u64, end: u64, size: u64) -> usize {
    fn count(lo: u64, hi: u64, start: u64, end: u64) -> usize {
        if hi <= start || lo >= end {
            1
        } else if start <= lo && hi <= end {
            0
        } else {
            let k = split(hi - lo);
            count(lo, lo + k, start, end) + count(lo + k, hi, start, end)
        }
    }
    if size == 0 {
        0
    } else {
        count(0, size, start, end)
    }
}

/// Recomputes the root of the tree of `size` leaves from the leaf hashes of `start..end` and
/// their range proof (see [`range_proof`]). The caller compares it with a trusted root.
pub fn root_from_range(
    start: u64,
    end: u64,
    size: u64,
    range_leaves: &[Hash],
    proof: &[Hash],
) -> Result<Hash, MerkleError> {
    if start <= end && range_leaves.len() as u64 != end - start {
        return Err(MerkleError::RangeLeafCount {
            start,
            end,
            got: range_leaves.len(),
            expected: end - start,
        });
    }
    let mut leaves = range_leaves.iter();
    root_from_range_with(start, end, size, proof, || {
        Ok::<_, MerkleError>(*leaves.next().expect("the leaf count was checked"))
    })
}

/// [`root_from_range`] with the range's leaf hashes pulled one at a time, in order, from
/// `next_leaf` (called exactly `end - start` times unless an error stops it), so that a verifier
/// can stream millions of leaves in constant memory. The caller's own errors pass through.
pub fn root_from_range_with<E, F>(
    start: u64,
    end: u64,
    size: u64,
    proof: &[Hash],
    mut next_leaf: F,
) -> Result<Hash, E>
where
    E: From<MerkleError>,
    F: FnMut() -> Result<Hash, E>,
{
    if start > end || end > size {
        return Err(MerkleError::RangeOutOfBounds { start, end, size }.into());
    }
    let expected = range_proof_len(start, end, size);
    if proof.len() != expected {
        return Err(MerkleError::ProofLength {
            got: proof.len(),
            expected,
        }
        .into());
    }
    if size == 0 {
        return Ok(empty_root());
    }
    let mut proof = proof.iter();
    let root = rebuild(0, size, start, end, &mut proof, &mut next_leaf)?;
    debug_assert!(proof.next().is_none(), "the proof length was checked");
    Ok(root)
}

fn rebuild<E, F>(
    lo: u64,
    hi: u64,
    start: u64,
    end: u64,
    proof: &mut std::slice::Iter<'_, Hash>,
    next_leaf: &mut F,
) -> Result<Hash, E>
where
    E: From<MerkleError>,
    F: FnMut() -> Result<Hash, E>,
{
    if hi <= start || lo >= end {
        // The length was checked, so this cannot run out; keep the error for safety.
        return proof.next().copied().ok_or_else(|| {
            MerkleError::ProofLength {
                got: 0,
                expected: 1,
            }
            .into()
        });
    }
    if hi - lo == 1 {
        return next_leaf();
    }
    let k = split(hi - lo);
    let left = rebuild(lo, lo + k, start, end, proof, next_leaf)?;
    let right = rebuild(lo + k, hi, start, end, proof, next_leaf)?;
    Ok(node_hash(&left, &right))
}

/// The largest power of two below `n` (`n >= 2`): where RFC 9162 splits a tree of `n` leaves
/// (public for the service's stored tree, `erasure::audit::tree`).
pub fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The leaves of the RFC 6962 test vectors (certificate-transparency / transparency-dev).
    fn vector_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|d| leaf_hash(&hex::decode(d).unwrap()))
        .collect()
    }

    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn rfc6962_roots() {
        assert_eq!(
            hex::encode(root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let leaves = vector_leaves();
        for (n, want) in ROOTS.iter().enumerate() {
            assert_eq!(hex::encode(root(&leaves[..n + 1])), *want, "size {}", n + 1);
        }
    }

    #[test]
    fn rfc6962_inclusion_vectors() {
        let leaves = vector_leaves();
        let cases: &[(usize, usize, &[&str])] = &[
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                3,
                &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
            ),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (index, size, want) in cases {
            let proof = inclusion_proof(&leaves[..*size], *index);
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(proof, want, "index {index} size {size}");
            let r = h(ROOTS[size - 1]);
            verify_inclusion(&leaves[*index], *index as u64, *size as u64, &want, &r).unwrap();
        }
    }

    #[test]
    fn rfc6962_consistency_vectors() {
        let leaves = vector_leaves();
        let cases: &[(usize, usize, &[&str])] = &[
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, want) in cases {
            let proof = consistency_proof(&leaves[..*new], *old);
            let want: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert_eq!(proof, want, "{old} -> {new}");
            verify_consistency(
                *old as u64,
                *new as u64,
                &h(ROOTS[old - 1]),
                &h(ROOTS[new - 1]),
                &want,
            )
            .unwrap();
        }
    }

    /// Distinct leaf hashes for the property tests.
    fn leaves(n: usize) -> Vec<Hash> {
        (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// Every hash with one bit flipped in each of its bytes, one at a time.
    fn flips(hashes: &[Hash]) -> impl Iterator<Item = Vec<Hash>> + '_ {
        (0..hashes.len()).flat_map(move |i| {
            (0..32).map(move |byte| {
                let mut v = hashes.to_vec();
                v[i][byte] ^= 1 << (byte % 8);
                v
            })
        })
    }

    fn flip(hash: &Hash, byte: usize) -> Hash {
        let mut h = *hash;
        h[byte] ^= 1 << (byte % 8);
        h
    }

    const MAX: usize = 40;

    #[test]
    fn every_inclusion_proof_verifies_and_mutations_fail() {
        let all = leaves(MAX + 1);
        let roots: Vec<Hash> = (0..=MAX + 1).map(|n| root(&all[..n])).collect();
        for n in 1..=MAX {
            let tree = &all[..n];
            let r = roots[n];
            for i in 0..n {
                let proof = inclusion_proof(tree, i);
                assert_eq!(proof.len(), inclusion_proof_len(i as u64, n as u64));
                verify_inclusion(&tree[i], i as u64, n as u64, &proof, &r).unwrap();
                let bad = |leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash| {
                    verify_inclusion(leaf, index, size, proof, root).is_err()
                };
                // A flipped bit in the leaf, the root or any proof hash.
                for byte in 0..32 {
                    assert!(bad(&flip(&tree[i], byte), i as u64, n as u64, &proof, &r));
                    assert!(bad(&tree[i], i as u64, n as u64, &proof, &flip(&r, byte)));
                }
                for p in flips(&proof) {
                    assert!(bad(&tree[i], i as u64, n as u64, &p, &r));
                }
                // Wrong index, index at or past the size.
                for j in 0..n + 2 {
                    if j != i {
                        assert!(
                            bad(&tree[i], j as u64, n as u64, &proof, &r),
                            "n {n} i {i} j {j}"
                        );
                    }
                }
                assert!(matches!(
                    verify_inclusion(&tree[i], n as u64, n as u64, &proof, &r),
                    Err(MerkleError::IndexOutOfRange { .. })
                ));
                // A wrong size, with the real root of that size.
                for (m, root_m) in roots.iter().enumerate().skip(i + 1) {
                    if m != n {
                        assert!(
                            bad(&tree[i], i as u64, m as u64, &proof, root_m),
                            "n {n} i {i} m {m}"
                        );
                    }
                }
                // Too short, too long.
                if !proof.is_empty() {
                    assert!(bad(
                        &tree[i],
                        i as u64,
                        n as u64,
                        &proof[..proof.len() - 1],
                        &r
                    ));
                    assert!(bad(&tree[i], i as u64, n as u64, &proof[1..], &r));
                }
                let mut longer = proof.clone();
                longer.push(r);
                assert!(matches!(
                    verify_inclusion(&tree[i], i as u64, n as u64, &longer, &r),
                    Err(MerkleError::ProofLength { .. })
                ));
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_mutations_fail() {
        let all = leaves(MAX + 1);
        let roots: Vec<Hash> = (0..=MAX + 1).map(|n| root(&all[..n])).collect();
        for n in 1..=MAX {
            for m in 0..=n {
                let proof = consistency_proof(&all[..n], m);
                assert_eq!(
                    proof.len(),
                    consistency_proof_len(m as u64, n as u64),
                    "{m} -> {n}"
                );
                let (m64, n64) = (m as u64, n as u64);
                verify_consistency(m64, n64, &roots[m], &roots[n], &proof).unwrap();
                let bad = |m: u64, n: u64, old: &Hash, new: &Hash, proof: &[Hash]| {
                    verify_consistency(m, n, old, new, proof).is_err()
                };
                for byte in 0..32 {
                    assert!(bad(m64, n64, &flip(&roots[m], byte), &roots[n], &proof));
                    // Every tree extends the empty tree: from size 0 the new root is not checked.
                    if m > 0 {
                        assert!(bad(m64, n64, &roots[m], &flip(&roots[n], byte), &proof));
                    }
                }
                for p in flips(&proof) {
                    assert!(bad(m64, n64, &roots[m], &roots[n], &p), "{m} -> {n}");
                }
                // Wrong sizes, with the real roots of those sizes: the proof only verifies where
                // it is the genuine proof for those sizes too (the empty proof of equal sizes).
                for m2 in 1..=n {
                    if m2 != m && !bad(m2 as u64, n64, &roots[m2], &roots[n], &proof) {
                        assert_eq!(proof, consistency_proof(&all[..n], m2), "{m}({m2}) -> {n}");
                    }
                }
                for n2 in m.max(1)..=MAX + 1 {
                    if n2 != n && m > 0 && !bad(m64, n2 as u64, &roots[m], &roots[n2], &proof) {
                        assert_eq!(proof, consistency_proof(&all[..n2], m), "{m} -> {n}({n2})");
                    }
                }
                if !proof.is_empty() {
                    assert!(bad(
                        m64,
                        n64,
                        &roots[m],
                        &roots[n],
                        &proof[..proof.len() - 1]
                    ));
                    assert!(bad(m64, n64, &roots[m], &roots[n], &proof[1..]));
                }
                let mut longer = proof.clone();
                longer.push(roots[n]);
                assert!(bad(m64, n64, &roots[m], &roots[n], &longer));
                if m < n {
                    assert!(matches!(
                        verify_consistency(n64, m64, &roots[n], &roots[m], &proof),
                        Err(MerkleError::SizesOutOfOrder { .. })
                    ));
                }
            }
        }
    }

    #[test]
    fn every_range_round_trips_and_mutations_fail() {
        let all = leaves(MAX + 1);
        for n in 0..=MAX {
            let tree = &all[..n];
            let r = root(tree);
            for start in 0..=n {
                for end in start..=n {
                    let proof = range_proof(tree, start, end);
                    let (s, e, n64) = (start as u64, end as u64, n as u64);
                    assert_eq!(proof.len(), range_proof_len(s, e, n64));
                    let range = &tree[start..end];
                    assert_eq!(
                        root_from_range(s, e, n64, range, &proof).unwrap(),
                        r,
                        "{start}..{end} of {n}"
                    );
                    let rebuilt = |s: u64, e: u64, size: u64, leaves: &[Hash], proof: &[Hash]| {
                        root_from_range(s, e, size, leaves, proof).ok()
                    };
                    let holds = |got: Option<Hash>| got == Some(r);
                    // One flipped bit in each proof hash, and in the first, middle and last leaf
                    // (a byte that moves with the position, to cover all bytes over the loop).
                    for k in 0..proof.len() {
                        let mut p = proof.clone();
                        p[k] = flip(&p[k], (k + start + end) % 32);
                        assert!(!holds(rebuilt(s, e, n64, range, &p)));
                    }
                    if !range.is_empty() {
                        for k in [0, range.len() / 2, range.len() - 1] {
                            let mut l = range.to_vec();
                            l[k] = flip(&l[k], (k + start + n) % 32);
                            assert!(!holds(rebuilt(s, e, n64, &l, &proof)));
                        }
                    }
                    if !proof.is_empty() {
                        assert!(rebuilt(s, e, n64, range, &proof[1..]).is_none());
                    }
                    let mut longer = proof.clone();
                    longer.push(r);
                    assert!(rebuilt(s, e, n64, range, &longer).is_none());
                    if end > start {
                        // A missing, an extra, a shifted or a swapped leaf.
                        assert!(!holds(rebuilt(s, e, n64, &range[1..], &proof)));
                        assert!(!holds(rebuilt(s + 1, e, n64, &range[1..], &proof)));
                        assert!(!holds(rebuilt(
                            s,
                            e - 1,
                            n64,
                            &range[..range.len() - 1],
                            &proof
                        )));
                        if end < n {
                            assert!(!holds(rebuilt(s + 1, e + 1, n64, range, &proof)));
                            assert!(!holds(rebuilt(
                                s,
                                e + 1,
                                n64,
                                &tree[start..end + 1],
                                &proof
                            )));
                        }
                        if end - start >= 2 {
                            let mut swapped = range.to_vec();
                            swapped.swap(0, 1);
                            assert!(!holds(rebuilt(s, e, n64, &swapped, &proof)));
                        }
                    }
                }
            }
            assert!(matches!(
                root_from_range(0, n as u64 + 1, n as u64, &all[..n + 1], &[]),
                Err(MerkleError::RangeOutOfBounds { .. })
            ));
        }
    }

    #[test]
    fn range_proof_errors_are_precise() {
        let all = leaves(10);
        let proof = range_proof(&all, 3, 7);
        assert_eq!(
            root_from_range(3, 7, 10, &all[3..6], &proof),
            Err(MerkleError::RangeLeafCount {
                start: 3,
                end: 7,
                got: 3,
                expected: 4
            })
        );
        assert_eq!(
            root_from_range(3, 7, 10, &all[3..7], &proof[1..]),
            Err(MerkleError::ProofLength {
                got: proof.len() - 1,
                expected: proof.len()
            })
        );
        assert_eq!(
            root_from_range(7, 3, 10, &[], &proof),
            Err(MerkleError::RangeOutOfBounds {
                start: 7,
                end: 3,
                size: 10
            })
        );
    }

    #[test]
    fn errors_read_well() {
        let e = verify_inclusion(&[0; 32], 3, 8, &[[0; 32]; 3], &[1; 32]).unwrap_err();
        assert!(e.to_string().starts_with("the proof leads to root "), "{e}");
        let e = verify_inclusion(&[0; 32], 3, 8, &[[0; 32]; 2], &[1; 32]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the proof has 2 hashes where 3 are needed for this index and tree size \
             (a proof for another tree size?)"
        );
    }
}
