"""Multi-index hashing (Norouzi et al., CVPR 2012) over 64-bit codes: sub-quadratic near-duplicate search.

A 64-bit code is cut into ``m`` chunks. Two codes within Hamming distance ``r`` agree,
by the pigeonhole principle, to within ``r // m`` bits on at least one chunk, so a query
only looks at the entries whose chunk value lies within ``r // m`` of its own, for each
chunk, then checks the full distance of those few candidates. Each chunk is a sorted
array (``numpy.searchsorted`` finds a bucket), and a whole batch of queries is answered
with array operations, no Python loop per query.

>>> import numpy as np
>>> codes = np.array([0b1011, 0xFFFF_0000_FFFF_0000, 0b1000], dtype=np.uint64)
>>> ix = HashIndex(codes, chunks=4)
>>> q, i, d = ix.query(np.array([0b1010], dtype=np.uint64), radius=2)
>>> sorted(zip(i.tolist(), d.tolist()))
[(0, 1), (2, 1)]
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

U64 = np.uint64
MAX_PROBES = 20_000  # bucket look-ups per query and chunk


def _masks(bits: int, radius: int) -> NDArray[np.uint64]:
    """Every ``bits``-bit value with at most ``radius`` bits set (the probes around a chunk value)."""
    out = [0]
    for r in range(1, radius + 1):
        for pos in itertools.combinations(range(bits), r):
            out.append(sum(1 << p for p in pos))
    return np.asarray(out, dtype=U64)


@dataclass(frozen=True)
class _Chunk:
    shift: int
    bits: int
    keys: NDArray[np.uint64]  # sorted chunk values
    order: NDArray[np.int64]  # entry index of each sorted key


def popcount(x: NDArray[np.uint64]) -> NDArray[np.uint8]:
    return np.bitwise_count(x)


class HashIndex:
    """An index of 64-bit codes answering "which codes lie within Hamming radius r of each query"."""

    def __init__(self, codes: NDArray[np.uint64], chunks: int = 4) -> None:
        if not 1 <= chunks <= 16:
            raise ValueError(f"chunks must be 1..16, got {chunks}")
        self.codes = np.ascontiguousarray(codes, dtype=U64)
        self.m = chunks
        widths = [64 // chunks + (1 if i < 64 % chunks else 0) for i in range(chunks)]
        self._chunks: list[_Chunk] = []
        shift = 0
        for w in widths:
            vals = (self.codes >> U64(shift)) & U64((1 << w) - 1)
            order = np.argsort(vals, kind="stable")
            self._chunks.append(_Chunk(shift, w, vals[order], order.astype(np.int64)))
            shift += w

    def __len__(self) -> int:
        return int(self.codes.size)

    def query(self, queries: NDArray[np.uint64], radius: int, max_hits: int | None = None
              ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint8]]:
        """All (query index, entry index, distance) with distance <= ``radius``, sorted by query then entry.

        ``max_hits`` bounds the candidates examined per query and chunk probe (a guard against
        a degenerate code shared by a huge number of entries); ``None`` = exact.
        """
        q = np.ascontiguousarray(queries, dtype=U64)
        per_chunk = radius // self.m
        widest = max(ch.bits for ch in self._chunks)
        if sum(math.comb(widest, r) for r in range(per_chunk + 1)) > MAX_PROBES:
            raise ValueError(f"radius {radius} with {self.m} chunks needs over {MAX_PROBES:,} probes per chunk; "
                             "build the index with more chunks")
        found_q: list[NDArray[np.int64]] = []
        found_i: list[NDArray[np.int64]] = []
        for ch in self._chunks:
            masks = _masks(ch.bits, per_chunk)
            qv = (q >> U64(ch.shift)) & U64((1 << ch.bits) - 1)
            probes = (qv[:, None] ^ masks[None, :]).ravel()
            owner = np.repeat(np.arange(q.size, dtype=np.int64), masks.size)
            lo = np.searchsorted(ch.keys, probes, side="left")
            hi = np.searchsorted(ch.keys, probes, side="right")
            n = hi - lo
            if max_hits is not None:
                n = np.minimum(n, max_hits)
            keep = n > 0
            lo, n, owner = lo[keep], n[keep], owner[keep]
            total = int(n.sum())
            if total == 0:
                continue
            # positions lo..lo+n-1 of every probe, flattened without a Python loop
            starts = np.repeat(lo - np.cumsum(n) + n, n)
            pos = starts + np.arange(total, dtype=np.int64)
            found_i.append(ch.order[pos])
            found_q.append(np.repeat(owner, n))
        if not found_q:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0, dtype=np.uint8)
        qi = np.concatenate(found_q)
        ii = np.concatenate(found_i)
        d = popcount(self.codes[ii] ^ q[qi])
        ok = d <= radius
        qi, ii, d = qi[ok], ii[ok], d[ok]
        # an entry found through several chunks is reported once
        key = qi * np.int64(max(len(self), 1)) + ii
        key, first = np.unique(key, return_index=True)
        return qi[first], ii[first], d[first]
