"""Cross-case detection: candidates from the hash tiers, each verified on the thumbnails.

:func:`detect` is what the stage's ``finalize`` and ``benchmarks/dedup_eval.py`` both run.

>>> import numpy as np
>>> from curator.dedup.features import HashSettings, scan_features
>>> from curator.testing.perturb import offset, crop
>>> from curator.testing.phantoms import Subject, grid, render
>>> g = grid((60, 48, 30), (5.0, 5.0, 8.0), "LPS")
>>> scans = {}
>>> for seed in (1, 2):
...     img, _ = render(Subject.random(seed), g, "CT", seed=seed)
...     scans[f"p{seed}"] = (g, np.rint(img).astype(np.int16))
>>> scans["copy"] = offset(*crop(*scans["p1"], (slice(5, 55), slice(4, 44), slice(6, 30))), 1024)
>>> feats = {k: scan_features(a, gg, HashSettings()) for k, (gg, a) in scans.items()}
>>> pairs = detect(feats, DetectSettings())
>>> [(p.a, p.b) for p in pairs if p.accepted]
[('copy', 'p1')]
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curator.dedup import thumbnail as _thumbnail_module
from curator.dedup import verify as _verify_module
from curator.dedup.features import ScanFeatures
from curator.dedup.hashing import SlabHashes
from curator.dedup.search import (
    Candidate,
    HashKeys,
    SearchSettings,
    find_candidates,
    identical,
    is_small,
)
from curator.dedup.thumbnail import Thumbnail, axial_profile, field_of_view_mm
from curator.dedup.verify import NO_MATCH, Match, VerifySettings, accepts, compare
from curator.errors import WorkspaceError
from curator.io.fsutil import atomic_write_json

log = logging.getLogger("curator")


@dataclass(frozen=True)
class DetectSettings:
    search: SearchSettings = field(default_factory=SearchSettings)
    verify: VerifySettings = field(default_factory=VerifySettings)


@dataclass(frozen=True)
class PairResult:
    candidate: Candidate
    match: Match | None  # None: not compared, the two scans were already joined by other pairs
    accepted: bool
    # why a pair that verified was not joined: "" (it was, or it did not verify), or
    # "other_study" (it would join two studies of one patient of one source; see verify_candidates)
    refused: str = ""

    @property
    def a(self) -> str:
        return self.candidate.a

    @property
    def b(self) -> str:
        return self.candidate.b


def keys_of(features: Mapping[str, ScanFeatures], search: SearchSettings | None = None) -> list[HashKeys]:
    s = search or SearchSettings()
    return [key_of(cid, f.exact, f.phash, f.slabs, f.thumbnail.ranks.shape, f.thumbnail.spacing,
                   functools.partial(getattr, f, "thumbnail"), s, f.phash_dct) for cid, f in sorted(features.items())]


def key_of(case_id: str, exact: str, phash: int | None, slabs: SlabHashes, grid_shape: Sequence[int],
           grid_spacing: Sequence[float], thumbnail: Callable[[], Thumbnail | None], s: SearchSettings,
           phash_dct: Sequence[float] | None = None, voxels: str | None = None) -> HashKeys:
    """A scan's search keys; the thumbnail is loaded only for a small scan (its axial profile).
    ``voxels``: the SHA-256 of its array as read (``cases.voxel_sha256``), or ``None`` for an
    array too degenerate to tell two scans apart by it."""
    fov = field_of_view_mm(tuple(grid_shape), tuple(grid_spacing))
    t = thumbnail() if is_small(fov, s) else None
    dct = None if phash_dct is None else np.asarray(phash_dct, dtype=np.float32)
    return HashKeys(case_id, exact, phash, slabs, fov, axial_profile(t) if t is not None else None, dct, voxels)


REVIEWED = "reviewed"  # the tier of a pair a person said is one scan (stages.dedup.overrides `same`)


def certain(c: Candidate) -> bool:
    """A pair accepted whatever verification says: identical voxels, or a person's ``same``."""
    return identical(c) or REVIEWED in c.tiers


def strength(c: Candidate) -> tuple[int, int, int, str, str]:
    """Strongest evidence first: identical voxels or a reviewed pair, then close global hashes, then
    many slab votes."""
    return (0 if certain(c) else 1, c.global_distance if c.global_distance is not None else 65,
            -c.slab_votes, c.a, c.b)


class MatchCache:
    """:func:`~curator.dedup.verify.compare` results kept between runs, by the two thumbnails'
    SHA-256 digests (in that order: ``compare`` maps ``b`` onto ``a``).

    Verification is most of the dedup stage's finalize (≈ 0.08 s a pair on this machine; 67 pairs
    took 5 s of the demo's 5.5 s), and every run used to verify every candidate again — after a
    keep-policy change, or with one dataset added to thousands of scans. A comparison depends only
    on the two thumbnails, the overlap ratio and the comparison code, so entries are reused while
    all of them are unchanged: the file is keyed by a digest of ``verify.py`` and ``thumbnail.py``
    and the ratio, and a code change starts it afresh. Results are stored exactly (JSON floats
    round-trip), so a cached run decides exactly as a fresh one.

    While verifying it is saved every ``save_every_s`` seconds, so a killed run resumes its
    comparisons; :meth:`save` at the end keeps only the pairs this run asked for.
    """

    def __init__(self, path: Path, overlap_ratio: float, save_every_s: float = 60.0) -> None:
        self.path = Path(path)
        self.salt = self.code_salt(overlap_ratio)
        self.save_every_s = save_every_s
        self.entries: dict[str, dict[str, Any]] = {}
        self.used: set[str] = set()
        # hits: comparisons an earlier run made; reused: ones this run made already (copies with
        # byte-identical thumbnails give one pair of digests to several pairs of cases)
        self.hits = self.misses = self.reused = 0
        self._saved_at = time.monotonic()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("salt") == self.salt and isinstance(data.get("matches"), dict):
                self.entries = data["matches"]
        except (OSError, ValueError):
            pass  # no cache yet, or a damaged one: compare afresh
        self.earlier = set(self.entries)

    @staticmethod
    def code_salt(overlap_ratio: float) -> str:
        h = hashlib.sha256(repr(float(overlap_ratio)).encode())
        for mod in (_verify_module, _thumbnail_module):
            h.update(Path(str(mod.__file__)).read_bytes())
        return h.hexdigest()

    def compare(self, digest_a: str, a: Thumbnail, digest_b: str, b: Thumbnail, overlap_ratio: float) -> Match:
        key = f"{digest_a}:{digest_b}"
        self.used.add(key)
        hit = self.entries.get(key)
        if hit is not None:
            try:
                m = Match(**{**hit, "offset_mm": tuple(hit["offset_mm"])})
                if key in self.earlier:
                    self.hits += 1
                else:
                    self.reused += 1
                return m
            except (TypeError, KeyError):
                pass
        m = compare(a, b, overlap_ratio)
        self.misses += 1
        self.entries[key] = dataclasses.asdict(m)
        if time.monotonic() - self._saved_at > self.save_every_s:
            self._write(self.entries)
        return m

    def said(self) -> str:
        """``21 compared, 6 reused: identical thumbnails`` — what the stage's summary says of them."""
        parts = [f"{self.misses} compared"]
        if self.hits:
            parts.append(f"{self.hits} from earlier runs")
        if self.reused:
            parts.append(f"{self.reused} reused: copies with identical thumbnails, compared once in this run")
        return ", ".join(parts)

    def save(self) -> None:
        """Write the comparisons this run used (a pair no longer a candidate is dropped)."""
        self._write({k: v for k, v in self.entries.items() if k in self.used})

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, {"salt": self.salt, "matches": entries}, indent=None)
        except (OSError, WorkspaceError) as e:  # a cache (a full disk, a read-only folder): the run goes on without it
            log.warning("dedup: could not save the verification cache %s: %s", self.path, e)
        self._saved_at = time.monotonic()


def verify_candidates(candidates: list[Candidate], thumbnail: Callable[[str], Thumbnail | None],
                      settings: VerifySettings, apart: Mapping[str, str] | None = None,
                      compare_pair: Callable[[str, str], Match | None] | None = None,
                      patients: Mapping[str, str] | None = None,
                      kept_apart: Mapping[str, set[str]] | None = None) -> list[PairResult]:
    """Align and compare candidates, strongest first; pairs of identical voxels (the ``exact`` and
    ``voxels`` tiers) are accepted whatever the comparison says (a copy whose spacing was
    rewritten does not line up in millimetres, nor one whose header direction was).

    A thumbnail the loader cannot give (``None``) leaves its pairs unverified (only an exact
    match is then accepted). A candidate whose two scans are already joined through accepted pairs is not compared again
    (``PairResult.match`` is ``None``): with many copies of one scan this saves most of the work.

    ``apart`` (case id → study key) keeps the sequences of one study in different groups: a pair
    that would join a group holding one sequence of a study with a group holding another is not
    accepted. Dataset A's T1 and T1gd and dataset B's copies of both (MSD BrainTumour and BraTS)
    otherwise chain into one group through a cross-sequence pair (same patient, same frame: it
    verifies), and keeping one member dropped A's other sequence. Pairs touching a study-keyed
    case are all compared and joined best match first (exact, then texture correlation), so a
    copy of the same sequence is joined before a cross-sequence look-alike, which then conflicts.

    ``patients`` (case id → its source and patient id, for cases of a study-keyed source) keeps
    one patient's studies apart: two studies of one patient in one source are two visits by the
    source's own word (BraTS' time points of a subject share the patient id and differ in study),
    and a follow-up co-registered to the first visit verifies like a copy of it. A pair that would
    join a group holding one of the patient's studies with a group holding another is accepted
    only when its two scans are identical (the ``exact`` or ``voxels`` tier: a re-upload); a
    verified pair refused so has ``refused="other_study"``. Another source's copies (another
    dataset, or another version of this one) are grouped as before, and so are two patients' scans.

    ``kept_apart`` (case id → tokens, one per reviewed ``different`` override naming it) keeps two
    cases out of one group as ``apart`` keeps a study's sequences: no pair joins a group holding
    one of them with a group holding the other. A candidate with the ``reviewed`` tier (a ``same``
    override) is accepted like identical voxels, also between two studies of one patient.

    ``compare_pair(a, b)`` (case ids) replaces loading both thumbnails and comparing them, e.g.
    with a :class:`MatchCache`; ``None`` from it means a thumbnail was missing.
    """
    parent: dict[str, str] = {}
    studies: dict[str, set[str]] = {}  # root -> study keys of its group
    visits: dict[str, set[str]] = {}  # root -> the (source, patient) of its study-keyed members
    refused: set[tuple[str, str]] = set()

    def find(x: str) -> str:
        if x not in parent:
            parent[x] = x
            studies[x] = ({apart[x]} if apart and apart.get(x) else set()) | set((kept_apart or {}).get(x, ()))
            visits[x] = {patients[x]} if patients and patients.get(x) else set()
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def join(c: Candidate, verified: bool) -> bool:
        ra, rb = find(c.a), find(c.b)
        if ra == rb:
            return verified
        if not verified or studies[ra] & studies[rb]:
            return False
        if visits[ra] & visits[rb] and not certain(c):  # one patient's two studies of one source
            refused.add((c.a, c.b))
            return False
        parent[ra] = rb
        studies[rb] |= studies.pop(ra)
        visits[rb] |= visits.pop(ra)
        return True

    def result(c: Candidate, m: Match | None, accepted: bool) -> PairResult:
        return PairResult(c, m, accepted, "other_study" if (c.a, c.b) in refused else "")

    out = []
    keyed: list[tuple[Candidate, Match, bool]] = []
    for c in sorted(candidates, key=strength):
        is_keyed = (apart is not None and (c.a in apart or c.b in apart)) or (
            patients is not None and (c.a in patients or c.b in patients)) or (
            kept_apart is not None and (c.a in kept_apart or c.b in kept_apart))
        if not is_keyed and find(c.a) == find(c.b):
            out.append(PairResult(c, None, True))
            continue
        if compare_pair is not None:
            m = compare_pair(c.a, c.b) or NO_MATCH
        else:
            ta, tb = thumbnail(c.a), thumbnail(c.b)
            m = compare(ta, tb, settings.overlap_ratio) if ta is not None and tb is not None else NO_MATCH
        verified = certain(c) or accepts(m, settings)
        if is_keyed:
            keyed.append((c, m, verified))
        else:
            out.append(result(c, m, join(c, verified)))
    for c, m, verified in sorted(keyed, key=lambda t: (0 if certain(t[0]) else 1, -t[1].detail,
                                                         -t[1].score, t[0].a, t[0].b)):
        out.append(result(c, m, join(c, verified)))
    return sorted(out, key=lambda p: (p.a, p.b))


def detect(features: Mapping[str, ScanFeatures], settings: DetectSettings) -> list[PairResult]:
    """Every candidate pair with its verification (accepted or not), sorted by case ids."""
    candidates = find_candidates(keys_of(features, settings.search), settings.search)
    return verify_candidates(candidates, lambda cid: features[cid].thumbnail, settings.verify)
