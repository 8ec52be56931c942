"""RFC 6962 Merkle trees against a naive recursive reference, published vectors, and the append log."""

from __future__ import annotations

import hashlib
import random
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cx.protocol.errors import ProtocolError, Reason
from cx.protocol.merkle import (
    EMPTY_ROOT, MerkleTree, append_leaves, combine, consistency_ranges, frontier_nodes, get_nodes_then,
    hashes_for_ranges, inclusion_ranges, leaf_hash, merkle_root, node_hash, nodes_for_ranges, perfect_nodes,
    root_from_inclusion, verify_consistency, verify_inclusion,
)

# -- the reference: RFC 6962 section 2.1, transcribed literally over D[start:end] ------------------

N = 2100
DATA = [f"leaf {i} 叶".encode() * (i % 3 + 1) for i in range(N)]


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def k_for(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@lru_cache(maxsize=None)
def mth(start: int, end: int) -> bytes:
    n = end - start
    if n == 0:
        return sha(b"")
    if n == 1:
        return sha(b"\x00" + DATA[start])
    k = k_for(n)
    return sha(b"\x01" + mth(start, start + k) + mth(start + k, end))


def ref_path(m: int, start: int, end: int) -> list[bytes]:
    """PATH(m, D[start:end]), m relative to start."""
    n = end - start
    if n == 1:
        return []
    k = k_for(n)
    if m < k:
        return ref_path(m, start, start + k) + [mth(start + k, end)]
    return ref_path(m - k, start + k, end) + [mth(start, start + k)]


def ref_proof(m: int, n: int) -> list[bytes]:
    """PROOF(m, D[0:n])."""
    return ref_subproof(m, 0, n, True)


def ref_subproof(m: int, start: int, end: int, b: bool) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if b else [mth(start, end)]
    k = k_for(n)
    if m <= k:
        return ref_subproof(m, start, start + k, b) + [mth(start + k, end)]
    return ref_subproof(m - k, start + k, end, False) + [mth(start, start + k)]



_BIG = MerkleTree.from_lines(DATA)


@pytest.fixture(scope="module")
def big_tree() -> MerkleTree:
    return _BIG


def bad_proof(fn, *args):
    with pytest.raises(ProtocolError) as info:
        fn(*args)
    assert info.value.reason == Reason.BAD_PROOF
    return info.value


# -- published vectors (certificate-transparency / Trillian test data) -----------------------

CT_LEAVES = [bytes.fromhex(h) for h in
             ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # empty tree: SHA-256("")
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PATHS = {
    (0, 1): [],
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}
CT_CONSISTENCY = {
    (1, 1): [],
    (1, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (6, 8): ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
    (2, 5): ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"],
}


def test_empty_root():
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert MerkleTree([]).root() == EMPTY_ROOT == merkle_root([])


@pytest.mark.parametrize("n", range(0, 9))
def test_ct_vector_roots(n):
    assert merkle_root(CT_LEAVES[:n]).hex() == CT_ROOTS[n]


@pytest.mark.parametrize(("index", "size"), sorted(CT_PATHS))
def test_ct_vector_inclusion_paths(index, size):
    tree = MerkleTree.from_lines(CT_LEAVES[:size])
    path = tree.inclusion_proof(index)
    assert [h.hex() for h in path] == CT_PATHS[(index, size)]
    verify_inclusion(index, size, leaf_hash(CT_LEAVES[index]), path, bytes.fromhex(CT_ROOTS[size]))


@pytest.mark.parametrize(("old", "new"), sorted(CT_CONSISTENCY))
def test_ct_vector_consistency_proofs(old, new):
    tree = MerkleTree.from_lines(CT_LEAVES[:new])
    proof = tree.consistency_proof(old)
    assert [h.hex() for h in proof] == CT_CONSISTENCY[(old, new)]
    verify_consistency(old, new, bytes.fromhex(CT_ROOTS[old]), bytes.fromhex(CT_ROOTS[new]), proof)


def test_leaf_and_node_hash_domain_separation():
    assert leaf_hash(b"abc") == sha(b"\x00abc")
    assert node_hash(b"L" * 32, b"R" * 32) == sha(b"\x01" + b"L" * 32 + b"R" * 32)
    assert leaf_hash(b"\x01" + b"L" * 32 + b"R" * 32) != node_hash(b"L" * 32, b"R" * 32)


# -- roots and inclusion proofs against the reference ------------------------------------------

def test_roots_for_every_size_up_to_300():
    for n in range(1, 301):
        tree = MerkleTree.from_lines(DATA[:n])
        assert tree.root() == mth(0, n), n
        assert tree.size == n


def test_inclusion_proofs_for_every_index_of_every_size_up_to_300(big_tree):
    for n in range(1, 301):
        tree = MerkleTree.from_lines(DATA[:n])
        root = mth(0, n)
        for m in range(n):
            path = tree.inclusion_proof(m)
            assert path == ref_path(m, 0, n), (m, n)
            verify_inclusion(m, n, leaf_hash(DATA[m]), path, root)
            # a bigger tree proves the same thing about its own prefix
            assert big_tree.inclusion_proof(m, n) == path


def test_roots_of_prefixes_of_one_big_tree(big_tree):
    for n in list(range(0, 300)) + [511, 512, 513, 1000, 1023, 1024, 1025, 2047, 2048, 2049, N]:
        assert big_tree.root(n) == mth(0, n), n


@pytest.mark.parametrize("n", [511, 512, 513, 1000, 1024, 1025, 2049, N])
def test_inclusion_proofs_dense_sample_for_big_sizes(big_tree, n):
    rng = random.Random(n)
    indices = set(range(0, n, 7)) | {0, 1, n - 2, n - 1} | {rng.randrange(n) for _ in range(50)}
    root = mth(0, n)
    for m in sorted(indices):
        path = big_tree.inclusion_proof(m, n)
        assert path == ref_path(m, 0, n), (m, n)
        assert root_from_inclusion(m, n, leaf_hash(DATA[m]), path) == root


def test_wrong_leaf_index_size_or_root_fails():
    for n in [1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 31, 33, 100]:
        tree = MerkleTree.from_lines(DATA[:n])
        root = mth(0, n)
        for m in range(n):
            path = tree.inclusion_proof(m)
            leaf = leaf_hash(DATA[m])
            bad_proof(verify_inclusion, m, n, leaf_hash(DATA[m] + b"x"), path, root)
            bad_proof(verify_inclusion, m, n, leaf_hash(DATA[(m + 1) % N]), path, root)
            bad_proof(verify_inclusion, m, n, leaf, path, sha(root))
            for other in range(n):
                if other != m:
                    bad_proof(verify_inclusion, other, n, leaf, path, root)
            for size in range(1, n + 4):
                if size != n:
                    bad_proof(verify_inclusion, m, size, leaf, path, mth(0, size))
            for j in range(len(path)):
                flipped = list(path)
                flipped[j] = bytes([path[j][0] ^ 1]) + path[j][1:]
                bad_proof(verify_inclusion, m, n, leaf, flipped, root)
            bad_proof(verify_inclusion, m, n, leaf, path + [root], root)
            if path:
                bad_proof(verify_inclusion, m, n, leaf, path[:-1], root)
                bad_proof(verify_inclusion, m, n, leaf, path[1:], root)
            if len(path) > 1:
                bad_proof(verify_inclusion, m, n, leaf, list(reversed(path)), root)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 1), (5, 5), (-1, 4), (10, 3)])
def test_index_outside_the_tree(index, size):
    bad_proof(verify_inclusion, index, size, leaf_hash(b"x"), [], EMPTY_ROOT)
    bad_proof(inclusion_ranges, index, size)


# -- consistency proofs --------------------------------------------------------------------------

def test_consistency_proofs_exhaustive_up_to_64(big_tree):
    for n in range(1, 65):
        new_root = mth(0, n)
        for m in range(1, n + 1):
            proof = big_tree.consistency_proof(m, n)
            assert proof == ref_proof(m, n), (m, n)
            verify_consistency(m, n, mth(0, m), new_root, proof)


def test_consistency_wrong_roots_sizes_and_proofs_fail(big_tree):
    for n in range(2, 40):
        for m in range(1, n):
            proof = big_tree.consistency_proof(m, n)
            old_root, new_root = mth(0, m), mth(0, n)
            bad_proof(verify_consistency, m, n, sha(old_root), new_root, proof)
            bad_proof(verify_consistency, m, n, old_root, sha(new_root), proof)
            bad_proof(verify_consistency, m, n, mth(1, m + 1), new_root, proof)  # another history
            bad_proof(verify_consistency, n, m, new_root, old_root, proof)  # sizes swapped
            for other in range(1, n + 1):
                if other != m:
                    bad_proof(verify_consistency, other, n, mth(0, other), new_root, proof)
            for other in (n - 1, n + 1, 2 * n):
                if other > m:
                    bad_proof(verify_consistency, m, other, old_root, mth(0, other), proof)
            for j in range(len(proof)):
                flipped = list(proof)
                flipped[j] = sha(proof[j])
                bad_proof(verify_consistency, m, n, old_root, new_root, flipped)
            bad_proof(verify_consistency, m, n, old_root, new_root, proof + [new_root])
            bad_proof(verify_consistency, m, n, old_root, new_root, proof[:-1])
            bad_proof(verify_consistency, m, n, old_root, new_root, [])


def test_consistency_edge_cases(big_tree):
    root5 = mth(0, 5)
    verify_consistency(5, 5, root5, root5, [])
    bad_proof(verify_consistency, 5, 5, root5, mth(0, 4), [])
    bad_proof(verify_consistency, 5, 5, root5, root5, [root5])
    verify_consistency(0, 5, EMPTY_ROOT, root5, [])
    bad_proof(verify_consistency, 0, 5, EMPTY_ROOT, root5, [root5])
    bad_proof(verify_consistency, 6, 5, root5, root5, [])
    bad_proof(verify_consistency, -1, 5, root5, root5, [])
    assert big_tree.consistency_proof(0, 5) == [] == big_tree.consistency_proof(5, 5)
    bad_proof(consistency_ranges, 6, 5)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, N).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))))
def test_consistency_random_pairs(pair):
    m, n = pair
    tree = _BIG
    proof = tree.consistency_proof(m, n)
    assert proof == ref_proof(m, n)
    assert len(proof) <= 2 * n.bit_length()
    verify_consistency(m, n, mth(0, m), mth(0, n), proof)
    if m < n:
        bad_proof(verify_consistency, m, n, mth(0, m), sha(mth(0, n)), proof)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, N).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_inclusion_random(pair):
    m, n = pair
    path = _BIG.inclusion_proof(m, n)
    assert path == ref_path(m, 0, n)
    verify_inclusion(m, n, leaf_hash(DATA[m]), path, mth(0, n))



# -- ranges and perfect nodes: how a store serves proofs -----------------------------------------

def test_perfect_nodes_cover_ranges_and_hash_to_them(big_tree):
    for n in range(0, 130):
        nodes = perfect_nodes(0, n)
        assert sum(1 << level for level, _ in nodes) == n
        assert [level for level, _ in nodes] == sorted((level for level, _ in nodes), reverse=True)
        assert combine([big_tree.node(x) for x in nodes]) == mth(0, n)
        assert frontier_nodes(n) == nodes
        assert len(nodes) == bin(n).count("1")


def test_proofs_from_fetched_perfect_nodes(big_tree):
    store = {(level, i): h for level, row in enumerate(big_tree.levels) for i, h in enumerate(row)}
    fetched: list[set] = []

    def fetch(wanted):
        fetched.append(set(wanted))
        return {node: store[node] for node in wanted}

    for n in [1, 2, 3, 7, 8, 100, 1000, N]:
        for m in {0, n // 3, n - 1}:
            ranges = inclusion_ranges(m, n)
            assert get_nodes_then(fetch, ranges) == ref_path(m, 0, n)
            assert hashes_for_ranges(ranges, store) == ref_path(m, 0, n)
            assert fetched[-1] == nodes_for_ranges(ranges)
        for m in {1, max(1, n // 2), n}:
            ranges = consistency_ranges(m, n)
            assert get_nodes_then(fetch, ranges) == ref_proof(m, n)


# -- the append-only log --------------------------------------------------------------------------

def all_perfect_nodes(tree: MerkleTree) -> dict[tuple[int, int], bytes]:
    return {(level, i): h for level, row in enumerate(tree.levels) for i, h in enumerate(row)}


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300), st.lists(st.integers(1, 40), max_size=60))
def test_append_in_random_chunks_matches_merkle_tree(total, cuts):
    leaves = [leaf_hash(d) for d in DATA[:total]]
    size, frontier, nodes = 0, [], {}
    start = 0
    chunks = []
    for cut in cuts:
        if start >= total:
            break
        chunks.append(leaves[start:start + cut])
        start += cut
    if start < total:
        chunks.append(leaves[start:])
    for chunk in chunks:
        appended = append_leaves(size, frontier, chunk)
        for level, index, h in appended.nodes:
            assert (level, index) not in nodes  # every perfect node is created exactly once
            nodes[(level, index)] = h
        size, frontier = appended.size, appended.frontier
        assert [(level, index) for level, index, _ in frontier] == frontier_nodes(size)
        assert appended.root == mth(0, size)
    tree = MerkleTree(leaves)
    assert size == total
    assert nodes == all_perfect_nodes(tree)
    assert (appended.root if chunks else EMPTY_ROOT) == tree.root() == mth(0, total)
    for level, index, h in frontier:
        assert tree.node((level, index)) == h


def test_append_one_by_one_and_all_at_once():
    leaves = [leaf_hash(d) for d in DATA[:257]]
    at_once = append_leaves(0, [], leaves)
    size, frontier = 0, []
    for leaf in leaves:
        step = append_leaves(size, frontier, [leaf])
        size, frontier = step.size, step.frontier
        assert step.root == mth(0, size)
    assert frontier == at_once.frontier
    assert at_once.size == 257
    assert len(at_once.nodes) == 2 * 257 - bin(257).count("1")  # leaves plus completed parents
    assert append_leaves(5, append_leaves(0, [], leaves[:5]).frontier, []).root == mth(0, 5)


def test_empty_append():
    appended = append_leaves(0, [], [])
    assert appended.size == 0 and appended.nodes == [] and appended.frontier == []
    assert appended.root == EMPTY_ROOT
