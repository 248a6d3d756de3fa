"""Candidate pairs from the hash tiers, without comparing every pair of scans.

* ``exact`` — scans with the same exact content hash;
* ``voxels`` — scans whose voxel arrays are byte-identical as read (ingest's
  ``cases.voxel_sha256``: dtype, shape, bytes) but whose exact hashes differ: the same array
  under a header that orders it differently in RAS (a negated slice direction, swapped
  columns, a header-only rotation). One of the two headers is wrong, but it is one scan;
* ``global`` — 3-D perceptual hashes within ``global_radius`` bits (multi-index hashing), each
  scan's ``global_neighbours`` nearest of them by the hash's DCT coefficients (a pair is a
  candidate when either scan counts the other among its nearest): patients of one protocol may
  share most bits, and without the bound the pairs to verify grow as the square of the scans
  (20 % of all pairs of 200 synthetic patients on one grid);
* ``slab`` — axial slab hashes within ``slab_radius`` bits; a pair needs ``min_slab_votes``
  slabs of one scan that match slabs of the other *at one consistent height offset*
  (a z-crop or a partial overlap shifts every slab by the same amount; chance matches
  between different patients do not line up);
* ``small`` — scans whose field of view is at most ``small_fov_cm3`` (crops of an organ, a
  few slices: a 64-bit hash of a few thousand voxels does not survive resampling them to
  5 mm or cutting them to a quarter) are compared with their ``small_neighbours`` nearest
  small scans of compatible size, nearest by :func:`~curator.dedup.thumbnail.axial_profile`.
  Quadratic only within the small scans, in blocks; verification then decides.

Every candidate is then verified (:mod:`curator.dedup.verify`).

>>> import numpy as np
>>> from curator.dedup.hashing import SlabHashes
>>> keys = [HashKeys("a", "x", 0b1011, SlabHashes((1, 2, 3), (0.0, 5.0, 10.0))),
...         HashKeys("b", "y", 0b1010, SlabHashes((2, 3), (0.0, 5.0))),
...         HashKeys("c", "z", None, SlabHashes((), ()))]
>>> [(c.a, c.b, sorted(c.tiers)) for c in find_candidates(keys, SearchSettings())]
[('a', 'b', ['global', 'slab'])]
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.dedup.hashing import SlabHashes
from curator.dedup.index import HashIndex


@dataclass(frozen=True)
class SearchSettings:
    global_radius: int = 4
    global_neighbours: int = 8  # per scan: its nearest within global_radius (by phash_dct); 0 = all of them
    slab_radius: int = 3
    short_scan_slabs: int = 8  # scans with at most this many slabs (≈ 40 mm) search their slabs wider:
    short_slab_radius: int = 6  # a short stack has few slabs to vote, and its edge slabs are less stable
    min_slab_votes: int = 2  # or every slab of a scan that has fewer
    z_tolerance_mm: float = 7.5  # slab matches within this of the modal offset count as consistent
    max_slab_hits: int = 64  # per query slab and chunk probe: guards against a code shared by thousands
    small_fov_cm3: float = 1000.0  # a field of view at most this (less than a head or torso) is a small scan
    small_neighbours: int = 8  # small scans of compatible size each is compared with, nearest profiles first
    small_inplane_ratio: float = 0.7  # compatible size: in-plane extents within this ratio ...
    small_z_ratio: float = 0.2  # ... and z extents within this one (a copy may keep a quarter of the slices)


@dataclass(frozen=True)
class HashKeys:
    """The hashes of one scan, as the search needs them."""

    case_id: str
    exact: str
    phash: int | None
    slabs: SlabHashes
    fov_mm: tuple[float, float, float] | None = None  # RAS field of view (the small-scan tier)
    profile: NDArray[np.float32] | None = None  # axial_profile, for small scans only
    dct: NDArray[np.float32] | None = None  # hashing.dct_signature of the global hash (ranks its neighbours)
    voxels: str | None = None  # SHA-256 of the array as read (ingest's voxel_sha256); None: not to be matched by it


@dataclass
class Candidate:
    a: str
    b: str  # a < b
    tiers: set[str] = field(default_factory=set)
    global_distance: int | None = None
    slab_votes: int = 0
    slab_offset_mm: float | None = None  # height of b's first slab above a's, from the slab matches


IDENTICAL_TIERS = ("exact", "voxels")  # tiers that prove one scan: accepted whatever verification says


def identical(c: Candidate) -> bool:
    """Whether a candidate's two scans hold identical voxels (one of :data:`IDENTICAL_TIERS`)."""
    return any(t in c.tiers for t in IDENTICAL_TIERS)


def _u64(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.uint64)


def find_candidates(keys: list[HashKeys], s: SearchSettings) -> list[Candidate]:
    """Candidate pairs (sorted by case ids) from every tier."""
    found: dict[tuple[str, str], Candidate] = {}

    def cand(x: str, y: str) -> Candidate:
        k = (x, y) if x < y else (y, x)
        if k not in found:
            found[k] = Candidate(*k)
        return found[k]

    by_exact: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        by_exact[k.exact].append(k.case_id)
    for ids in by_exact.values():
        for i, x in enumerate(ids):
            for y in ids[i + 1:]:
                cand(x, y).tiers.add("exact")
    by_voxels: dict[str, list[HashKeys]] = defaultdict(list)
    for k in keys:
        if k.voxels:
            by_voxels[k.voxels].append(k)
    for same in by_voxels.values():
        for i, ka in enumerate(same):
            for kb in same[i + 1:]:
                if ka.exact != kb.exact:  # equal exact hashes: the exact tier has them already
                    cand(ka.case_id, kb.case_id).tiers.add("voxels")

    _global_tier(keys, s, cand)
    _slab_tier(keys, s, cand)
    _small_tier(keys, s, cand)
    return [found[k] for k in sorted(found)]


def _global_tier(keys: list[HashKeys], s: SearchSettings, cand: Any, block: int = 1024) -> None:
    with_phash = [k for k in keys if k.phash is not None]
    if len(with_phash) < 2:
        return
    codes = _u64([k.phash for k in with_phash])  # type: ignore[misc]
    index = HashIndex(codes)
    signed = np.asarray([k.dct is not None for k in with_phash])
    sig = np.stack([k.dct if k.dct is not None else np.zeros(64, np.float32) for k in with_phash]).astype(np.float32)
    pairs: dict[tuple[int, int], int] = {}
    for lo in range(0, len(with_phash), block):  # a block of queries at a time: hits stay bounded in memory
        qi, ii, d = index.query(codes[lo:lo + block], s.global_radius)
        qi = qi + lo
        other = qi != ii
        qi, ii, d = qi[other], ii[other], d[other]
        if s.global_neighbours > 0 and qi.size:
            # nearest first: 1 - cos of the coefficients where both scans have them, after every
            # such pair the hash distance alone (a scan hashed before the coefficients were kept)
            both = signed[qi] & signed[ii]
            far = np.where(both, 1.0 - np.einsum("ij,ij->i", sig[qi], sig[ii]), 2.0 + d.astype(np.float64))
            order = np.lexsort((ii, far, qi))
            qi, ii, d = qi[order], ii[order], d[order]
            rank = np.arange(qi.size) - np.searchsorted(qi, qi, side="left")
            near = rank < s.global_neighbours
            qi, ii, d = qi[near], ii[near], d[near]
        for q, i, dist in zip(qi.tolist(), ii.tolist(), d.tolist(), strict=True):
            pairs[(min(q, i), max(q, i))] = int(dist)
    for (q, i), dist in sorted(pairs.items()):
        c = cand(with_phash[q].case_id, with_phash[i].case_id)
        c.tiers.add("global")
        c.global_distance = dist


def is_small(fov_mm: tuple[float, ...] | None, s: SearchSettings) -> bool:
    return fov_mm is not None and float(np.prod(fov_mm)) / 1000.0 <= s.small_fov_cm3


def _small_tier(keys: list[HashKeys], s: SearchSettings, cand: Any, block: int = 512) -> None:
    small = [k for k in keys if k.profile is not None and is_small(k.fov_mm, s)]
    if len(small) < 2 or s.small_neighbours <= 0:
        return
    prof = np.stack([np.asarray(k.profile, dtype=np.float32) for k in small])
    fov = np.asarray([k.fov_mm for k in small], dtype=np.float64)
    k_nn = min(s.small_neighbours, len(small) - 1)
    for lo in range(0, len(small), block):
        rows = slice(lo, min(lo + block, len(small)))
        dist = 2.0 - 2.0 * (prof[rows] @ prof.T)  # squared distance of unit vectors
        ok = np.ones(dist.shape, dtype=bool)
        for ax, least in ((0, s.small_inplane_ratio), (1, s.small_inplane_ratio), (2, s.small_z_ratio)):
            a, b = fov[rows, ax, None], fov[None, :, ax]
            ok &= np.minimum(a, b) >= least * np.maximum(a, b)
        ok[np.arange(rows.stop - lo), np.arange(lo, rows.stop)] = False
        dist = np.where(ok, dist, np.inf)
        nearest = np.argpartition(dist, k_nn - 1, axis=1)[:, :k_nn] if k_nn < len(small) else np.argsort(dist, axis=1)
        for r, cols in enumerate(nearest):
            for c in cols.tolist():
                if np.isfinite(dist[r, c]):
                    cand(small[lo + r].case_id, small[c].case_id).tiers.add("small")


SLAB_QUERY_BLOCK = 8192  # query slabs per index query in the slab tier (bounds its memory)


def _slab_tier(keys: list[HashKeys], s: SearchSettings, cand: Any) -> None:
    owner, zs, codes = [], [], []
    for n, k in enumerate(keys):
        owner += [n] * len(k.slabs.hashes)
        zs += list(k.slabs.z_mm)
        codes += list(k.slabs.hashes)
    if not codes:
        return
    own = np.asarray(owner, dtype=np.int64)
    z = np.asarray(zs, dtype=np.float64)
    code = _u64(codes)
    index = HashIndex(code)
    n_slabs = np.bincount(own, minlength=len(keys))
    short = n_slabs[own] <= s.short_scan_slabs
    found: list[NDArray[np.int64]] = [np.zeros(0, dtype=np.int64)]
    for sel, radius in ((~short, s.slab_radius), (short, s.short_slab_radius)):
        rows = np.nonzero(sel)[0]
        # a block of query slabs at a time: a query examines up to max_slab_hits entries per chunk
        # probe before the distance check, so all of them at once held ~10 kB per slab
        # (670 MB for 1,000 look-alike scans of 76 slabs; growing with the scans)
        for lo_row in range(0, rows.size, SLAB_QUERY_BLOCK):
            block = rows[lo_row:lo_row + SLAB_QUERY_BLOCK]
            q, i, _ = index.query(code[block], radius, max_hits=s.max_slab_hits)
            q = block[q]
            # unordered slab pairs of two different scans, each once (a short scan's wider query finds more)
            lo, hi = np.minimum(q, i), np.maximum(q, i)
            keep = own[lo] != own[hi]
            found.append(np.unique(lo[keep] * np.int64(code.size) + hi[keep]))
    pair = np.unique(np.concatenate(found))
    qi, ii = pair // code.size, pair % code.size
    swap = own[qi] > own[ii]
    qi, ii = np.where(swap, ii, qi), np.where(swap, qi, ii)
    # per case pair: the offsets of matched slabs; votes = slabs agreeing with the modal offset
    pairs: dict[tuple[int, int], list[tuple[int, int, float]]] = defaultdict(list)
    for q, i in zip(qi.tolist(), ii.tolist(), strict=True):
        pairs[(int(own[q]), int(own[i]))].append((q, i, float(z[i] - z[q])))
    for (x, y), hits in pairs.items():
        offs = np.array([h[2] for h in hits])
        best, votes = 0.0, 0
        for o in offs:  # few hits per pair: the densest offset window
            near = np.abs(offs - o) <= s.z_tolerance_mm
            n = min(len({hits[j][0] for j in np.nonzero(near)[0]}), len({hits[j][1] for j in np.nonzero(near)[0]}))
            if n > votes:
                votes, best = n, float(np.median(offs[near]))
        need = min(s.min_slab_votes, len(keys[x].slabs.hashes), len(keys[y].slabs.hashes))
        if votes >= need:
            c = cand(keys[x].case_id, keys[y].case_id)
            c.tiers.add("slab")
            c.slab_votes = votes
            c.slab_offset_mm = best if keys[x].case_id < keys[y].case_id else -best
