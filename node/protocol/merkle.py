"""RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs.

Pure functions over hashes, no I/O. Every hash a proof needs is the hash of a range of
leaves [start, end); a range is made of *perfect* subtrees (2^level leaves starting at a
multiple of 2^level), written `(level, index)`. A store that keeps perfect subtree hashes
can therefore serve any proof by fetching a few of them (`nodes_for_*` say which) and
combining them with `range_hash`, without reading the whole log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .errors import ProtocolError, Reason

Node = tuple[int, int]  # (level, index): leaves [index << level, (index + 1) << level)
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(line: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + line).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_nodes(start: int, end: int) -> list[Node]:
    """The perfect subtrees, left to right, whose combination is MTH(D[start:end]).

    `start` must be aligned as it always is inside an RFC 6962 tree: a multiple of the
    largest power of two not above end - start.
    """
    nodes: list[Node] = []
    while start < end:
        level = (end - start).bit_length() - 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def combine(hashes: Sequence[bytes]) -> bytes:
    """Fold the hashes of a range's perfect subtrees (left to right) into the range hash."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = node_hash(h, result)
    return result


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PATH(index, D[size]), in proof order."""
    if not 0 <= index < size:
        raise ProtocolError(Reason.BAD_PROOF, f"leaf index {index} outside tree of size {size}")
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PROOF(old, D[new]) (RFC 6962 SUBPROOF), in order."""
    if not 0 <= old <= new:
        raise ProtocolError(Reason.BAD_PROOF, f"cannot prove size {old} against size {new}")
    if old == 0 or old == new:
        return []
    ranges: list[tuple[int, int]] = []
    start, end, m, complete = 0, new, old, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                ranges.append((start, end))
            break
        k = _split(n)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            complete = False
    ranges.reverse()
    return ranges


def nodes_for_ranges(ranges: Iterable[tuple[int, int]]) -> set[Node]:
    return {node for start, end in ranges for node in perfect_nodes(start, end)}


def hashes_for_ranges(ranges: Sequence[tuple[int, int]], nodes: Mapping[Node, bytes]) -> list[bytes]:
    return [combine([nodes[n] for n in perfect_nodes(s, e)]) for s, e in ranges]


# -- verification (RFC 9162 2.1.3.2 and 2.1.4.2) -------------------------------------------


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    if not 0 <= index < size:
        raise ProtocolError(Reason.BAD_PROOF, f"leaf index {index} outside tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProtocolError(Reason.BAD_PROOF, "inclusion path is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProtocolError(Reason.BAD_PROOF, "inclusion path is too short")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> None:
    if root_from_inclusion(index, size, leaf, path) != root:
        raise ProtocolError(Reason.BAD_PROOF, "inclusion path does not lead to the root")


def verify_consistency(old: int, new: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]) -> None:
    if not 0 <= old <= new:
        raise ProtocolError(Reason.BAD_PROOF, f"size {old} is larger than size {new}")
    if old == new:
        if path or old_root != new_root:
            raise ProtocolError(Reason.BAD_PROOF, "equal sizes need equal roots and an empty proof")
        return
    if old == 0:
        if path:
            raise ProtocolError(Reason.BAD_PROOF, "a proof from the empty tree must be empty")
        return
    if not path:
        raise ProtocolError(Reason.BAD_PROOF, "consistency proof is empty")
    path = list(path)
    if old & (old - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProtocolError(Reason.BAD_PROOF, "consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProtocolError(Reason.BAD_PROOF, "consistency proof is too short")
    if fr != old_root:
        raise ProtocolError(Reason.BAD_PROOF, "consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProtocolError(Reason.BAD_PROOF, "consistency proof does not lead to the new root")


# -- trees held in memory (a batch) and appended to (a ledger) -------------------------------


class MerkleTree:
    """All perfect subtree hashes of a list of leaf hashes; enough for any proof about it."""

    def __init__(self, leaves: Sequence[bytes]):
        self.size = len(leaves)
        self.levels: list[list[bytes]] = [list(leaves)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    @classmethod
    def from_lines(cls, lines: Iterable[bytes]) -> MerkleTree:
        return cls([leaf_hash(line) for line in lines])

    def node(self, n: Node) -> bytes:
        return self.levels[n[0]][n[1]]

    def range_hash(self, start: int, end: int) -> bytes:
        return combine([self.node(n) for n in perfect_nodes(start, end)])

    def root(self, size: int | None = None) -> bytes:
        return self.range_hash(0, self.size if size is None else size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self.size if size is None else size
        return [self.range_hash(s, e) for s, e in inclusion_ranges(index, size)]

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        new = self.size if new is None else new
        return [self.range_hash(s, e) for s, e in consistency_ranges(old, new)]


def merkle_root(lines: Iterable[bytes]) -> bytes:
    return MerkleTree.from_lines(lines).root()


@dataclass(frozen=True)
class Appended:
    """What appending leaves to a log produced: every new perfect node, and the new frontier."""

    nodes: list[tuple[int, int, bytes]]  # (level, index, hash), leaves included
    frontier: list[tuple[int, int, bytes]]
    size: int

    @property
    def root(self) -> bytes:
        return combine([h for _, _, h in self.frontier])


def frontier_nodes(size: int) -> list[Node]:
    """The perfect subtrees covering [0, size): what a log must remember to append."""
    return perfect_nodes(0, size)


def append_leaves(size: int, frontier: Sequence[tuple[int, int, bytes]], leaves: Iterable[bytes]) -> Appended:
    """Append leaf hashes to a log of `size` leaves whose frontier is given (as `frontier_nodes`)."""
    stack = list(frontier)
    created: list[tuple[int, int, bytes]] = []
    for leaf in leaves:
        node = (0, size, leaf)
        size += 1
        created.append(node)
        while stack and stack[-1][0] == node[0]:
            left = stack.pop()
            node = (node[0] + 1, left[1] >> 1, node_hash(left[2], node[2]))
            created.append(node)
        stack.append(node)
    return Appended(created, stack, size)


def get_nodes_then(
    fetch: Callable[[set[Node]], Mapping[Node, bytes]], ranges: Sequence[tuple[int, int]]
) -> list[bytes]:
    """Fetch the perfect nodes a list of ranges needs in one call, then hash the ranges."""
    return hashes_for_ranges(ranges, fetch(nodes_for_ranges(ranges)))


# -- range proofs: a contiguous run of leaves (an exported segment of a log) under a root -----


def range_proof_ranges(start: int, end: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges outside [start, end) whose hashes, with the leaves inside, give MTH(D[size]).

    Walks the RFC 6962 tree from the root: a subtree wholly outside the run is one hash of the
    proof, one wholly inside is computed from the run's leaves, and one that straddles an edge is
    split. At most two ranges per level, in left-to-right order.
    """
    if not 0 <= start < end <= size:
        raise ProtocolError(Reason.BAD_PROOF, f"leaves [{start}, {end}) are not inside a tree of size {size}")
    ranges: list[tuple[int, int]] = []

    def walk(a: int, b: int) -> None:
        if b <= start or a >= end:
            ranges.append((a, b))
        elif not (start <= a and b <= end):
            k = _split(b - a)
            walk(a, a + k)
            walk(a + k, b)

    walk(0, size)
    return ranges


def root_from_range(start: int, size: int, leaves: Sequence[bytes], proof: Sequence[bytes]) -> bytes:
    """The root a run of leaf hashes starting at `start` leads to with a range proof (see above)."""
    end = start + len(leaves)
    if not leaves or not 0 <= start < end <= size:
        raise ProtocolError(Reason.BAD_PROOF, f"leaves [{start}, {end}) are not inside a tree of size {size}")
    hashes = iter(proof)

    def walk(a: int, b: int) -> bytes:
        if b <= start or a >= end:
            try:
                return next(hashes)
            except StopIteration:
                raise ProtocolError(Reason.BAD_PROOF, "range proof is too short") from None
        if start <= a and b <= end:
            return MerkleTree(leaves[a - start:b - start]).root()
        k = _split(b - a)
        left = walk(a, a + k)
        return node_hash(left, walk(a + k, b))

    root = walk(0, size)
    if next(hashes, None) is not None:
        raise ProtocolError(Reason.BAD_PROOF, "range proof is too long")
    return root


def verify_range(start: int, size: int, leaves: Sequence[bytes], proof: Sequence[bytes], root: bytes) -> None:
    if root_from_range(start, size, leaves, proof) != root:
        raise ProtocolError(Reason.BAD_PROOF, "the leaves and the range proof do not lead to the root")
