"""The dedup stage: hash every scan (per case), then find, verify and group duplicates (finalize).

Runs after ingest, before harmonize. Reads ``cases`` (and ``raw_labels`` for the keep
policy); writes ``hashes`` (one row per scan), ``duplicates`` (one row per member of each
group) and ``dedup_overrides`` (one row per reviewed override row: what it changed). Dropped
members stay in ``cases``: select the kept scans with

    select * from cases where case_id not in (select case_id from duplicates where not kept)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa

from curator.config import StageConfig, finalize_only
from curator.dedup.detect import MatchCache, PairResult, key_of, verify_candidates
from curator.dedup.features import HashSettings, scan_features
from curator.dedup.group import KEEP_CRITERIA, Member
from curator.dedup.hashing import SlabHashes
from curator.dedup.override_record import override_rows
from curator.dedup.overrides import (
    checked_overrides,
    keep_problems,
    kept_apart,
    reviewed_pairs,
    with_keeps,
    with_reviewed,
)
from curator.dedup.search import SearchSettings, find_candidates
from curator.dedup.tables import duplicate_rows, header_geometry
from curator.dedup.thumbnail import Thumbnail
from curator.dedup.verify import Match, VerifySettings
from curator.errors import ConfigError, CuratorError, InputError
from curator.io.confined import resolve_inside
from curator.io.formats import read_volume
from curator.io.fsutil import atomic_write_bytes
from curator.registry.fixes import non_finite_fill
from curator.runner.freshness import file_digest
from curator.runner.stage import CaseEnv, CaseOutput, CaseResult, Stage, Task, problem_row
from curator.schema import to_arrow

if TYPE_CHECKING:
    from curator.runner.context import Context
    from curator.taxonomy.model import Taxonomy

log = logging.getLogger("curator")
THUMBS = "thumbs"
MIN_VOXEL_MATCH = 4096  # voxels an array needs before byte-identity says "one scan" (a 16³ cube)


def voxel_key(case: dict[str, Any]) -> str | None:
    """The case's ``voxel_sha256`` where two byte-identical arrays can only be one scan; ``None``
    for a case without an image (label-only), a tiny array, or one that is constant or nearly so
    (its 1st and 99th percentiles equal: ≥ 98 % of it one value) — blank volumes or
    placeholders of one shape share every byte without being one acquisition."""
    if not case.get("has_image") or not case.get("voxel_sha256"):
        return None
    if int(case.get("n_voxels") or 0) < MIN_VOXEL_MATCH:
        return None
    p01, p99 = case.get("intensity_p01"), case.get("intensity_p99")
    if p01 is None or p99 is None or not p01 < p99:
        return None
    return str(case["voxel_sha256"])


@dataclass(frozen=True)
class DedupConfig(StageConfig):
    """Settings of ``stages.dedup`` in pipeline.yaml (defaults measured by ``benchmarks/dedup_eval.py``)."""

    # hashing (per case: a change re-hashes every scan)
    grid_voxels: int = 262_144
    slab_mm: float = 8.0
    slab_step_mm: float = 5.0
    # candidate search (this and all below run in finalize over the cached hashes: no re-hashing)
    global_radius: int = finalize_only(4)
    global_neighbours: int = finalize_only(8)
    slab_radius: int = finalize_only(3)
    short_scan_slabs: int = finalize_only(8)
    short_slab_radius: int = finalize_only(6)
    min_slab_votes: int = finalize_only(2)
    small_fov_cm3: float = finalize_only(1000.0)
    small_neighbours: int = finalize_only(8)
    # verification
    min_score: float = finalize_only(0.5)
    min_detail: float = finalize_only(0.5)
    min_coverage: float = finalize_only(0.5)
    max_warp: float = finalize_only(0.75)
    # keep policy: ordered criteria among clean, terms, version, datasets, fov, voxels, case_id
    keep: tuple[str, ...] = finalize_only(("clean", "terms", "version", "fov", "case_id"))
    prefer_datasets: tuple[str, ...] = finalize_only(())
    # a person's reviewed word (YAML: same / different / keep rows with a reason; docs/dedup.md)
    overrides: str | None = finalize_only(None, added=True)

    def __post_init__(self) -> None:
        bad = [k for k in self.keep if k not in KEEP_CRITERIA]
        if bad:
            raise ConfigError("config_error", f"stages.dedup.keep: unknown criteria {bad}; "
                              f"choose from {list(KEEP_CRITERIA)}")
        for name in ("global_radius", "slab_radius", "short_slab_radius"):
            if not 0 <= getattr(self, name) <= 12:
                raise ConfigError("config_error", f"stages.dedup.{name} must be 0..12 bits")
        if self.global_neighbours < 0:
            raise ConfigError("config_error", "stages.dedup.global_neighbours must be >= 0 (0: every scan within "
                              "global_radius is a candidate, however many)")
        if self.small_neighbours < 0 or self.small_fov_cm3 < 0:
            raise ConfigError("config_error", "stages.dedup.small_neighbours and small_fov_cm3 must be >= 0 "
                              "(small_neighbours: 0 turns the small-scan tier off)")
        for name in ("slab_mm", "slab_step_mm", "grid_voxels"):
            if not getattr(self, name) > 0:
                raise ConfigError("config_error", f"stages.dedup.{name} = {getattr(self, name)} must be positive")
        for name in ("min_score", "min_detail", "min_coverage"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError("config_error", f"stages.dedup.{name} = {getattr(self, name)} must be in [0, 1]")
        if not self.max_warp >= 0.0:
            raise ConfigError("config_error", f"stages.dedup.max_warp = {self.max_warp} must be >= 0 (voxels)")
        if self.min_slab_votes < 1:
            raise ConfigError("config_error", "stages.dedup.min_slab_votes must be 1 or more")
        if self.prefer_datasets and "datasets" not in self.keep:
            raise ConfigError("config_error", "stages.dedup.prefer_datasets is set but keep does not list "
                              "'datasets', so it would be ignored", remedy="add datasets to stages.dedup.keep "
                              "where it should decide, e.g. keep: [clean, datasets, terms, version, case_id]")
        if "datasets" in self.keep and not self.prefer_datasets:
            raise ConfigError("config_error", "stages.dedup.keep lists 'datasets' but prefer_datasets is empty",
                              remedy="list the datasets to keep first in stages.dedup.prefer_datasets")

    @property
    def hashing(self) -> HashSettings:
        return HashSettings(slab_mm=self.slab_mm, slab_step_mm=self.slab_step_mm, grid_voxels=self.grid_voxels)

    @property
    def search(self) -> SearchSettings:
        return SearchSettings(global_radius=self.global_radius, global_neighbours=self.global_neighbours,
                              slab_radius=self.slab_radius,
                              short_scan_slabs=self.short_scan_slabs, short_slab_radius=self.short_slab_radius,
                              min_slab_votes=self.min_slab_votes, small_fov_cm3=self.small_fov_cm3,
                              small_neighbours=self.small_neighbours)

    @property
    def verify(self) -> VerifySettings:
        return VerifySettings(min_score=self.min_score, min_detail=self.min_detail, min_coverage=self.min_coverage,
                              max_warp=self.max_warp)


def scan_warning(row: Mapping[str, Any], case: Mapping[str, Any]) -> bool:
    """Whether an ingest ``problems`` row is a warning about the case's scan — what the keep
    criterion ``clean`` counts: a kind about a scan's file, voxels or header
    (:attr:`~curator.problem_kinds.ProblemKind.scan`) in a row naming the case's image (its file,
    or a file of its series folder). A warning about the labels (undeclared values, a label file
    missing or unreadable) is not one: only a labelled case can have it, and counting it kept an
    unlabelled copy over the labelled original.

    >>> case = {"source": "A", "image_path": "img/a1.nii.gz"}
    >>> scan_warning({"severity": "warning", "kind": "ct_intensity_offset", "path": "A:img/a1.nii.gz"}, case)
    True
    >>> scan_warning({"severity": "warning", "kind": "label_values_undeclared", "path": "A:lab/a1.nii.gz"}, case)
    False
    >>> scan_warning({"severity": "warning", "kind": "corrupt_file", "path": "A:lab/a1.nii.gz"}, case)  # its label
    False
    """
    from curator.problem_kinds import PROBLEM_KINDS

    kind = PROBLEM_KINDS.get(str(row.get("kind")))
    if row.get("severity") != "warning" or kind is None or not kind.scan:
        return False
    image = f"{case.get('source')}:{case.get('image_path')}"
    path = str(row.get("path") or "")
    return path == image or path.startswith(image + "/") or path == f"{case.get('source')}:{case.get('case_id')}"


def thumbnail_relpath(case_id: str, digest: str) -> str:
    shard = hashlib.sha1(case_id.encode()).hexdigest()[:2]
    return f"stages/dedup/{THUMBS}/{shard}/{case_id}.{digest[:12]}.npz"


def by_study(members: dict[str, Member], study_keys: Mapping[str, str],
             held: Mapping[str, set[str]], names: Mapping[str, str] | None = None) -> dict[str, Member]:
    """``members`` with each case of a multi-case study (several cases share its study key)
    ranked as its whole study: the warnings of all its cases, the distinct terms any of them
    annotates (``held``: case id → terms), the largest field of view and voxel count, its number
    of cases, whether the last run kept any of them, and ``study`` set — so the keep policy picks one study's members in every group two studies share.
    ``study_first`` is the smallest of its cases' ``names`` (case id → a name that does not
    depend on the workspace key; the case id when not given): what study ties break by.

    >>> ms = {c: Member(c, "B", None, 1, 10, w) for c, w in (("B__1__t1", 0), ("B__1__t2", 1), ("B__2__t1", 0))}
    >>> out = by_study(ms, {"B__1__t1": "s1", "B__1__t2": "s1", "B__2__t1": "s2"}, {})
    >>> out["B__1__t1"].warnings, out["B__1__t1"].study, out["B__2__t1"].study
    (1, 's1', None)
    >>> by_study(ms, {"B__1__t1": "s1", "B__1__t2": "s1"}, {}, {"B__1__t1": "z", "B__1__t2": "y"})["B__1__t1"].study_first
    'y'
    """
    studies: dict[str, list[str]] = {}
    for cid in members:
        if study_keys.get(cid) is not None:
            studies.setdefault(study_keys[cid], []).append(cid)
    out = dict(members)
    for key, cids in studies.items():
        if len(cids) < 2:
            continue
        ms = [members[c] for c in cids]
        terms = len(set().union(*(held.get(c, set()) for c in cids)))
        for m in ms:
            out[m.case_id] = dataclasses.replace(m, terms=terms, voxels=max(x.voxels for x in ms),
                                                 warnings=sum(x.warnings for x in ms),
                                                 fov_ml=max(x.fov_ml for x in ms), study=key,
                                                 study_first=min((names or {}).get(c, c) for c in cids),
                                                 study_cases=len(cids), kept_before=any(x.kept_before for x in ms))
    return out


def annotated_codes(spec: Any, tax: Taxonomy) -> dict[str, list[str]]:
    """Raw value (label maps) or structure key -> the terms it annotates in ``tax`` (no derived
    ones; ignored values left out): what the keep policy's ``terms`` criterion counts."""
    from curator.preprocess.terms import value_terms

    return value_terms(spec, tax, include_derived=False)


class DedupStage(Stage):
    name = "dedup"
    # 2: body mask filled per axial slice; 3: constant padding inside the intensity range (0 HU
    # around a CT) left out of the body; 4: only the perceptual hashes use the filled outline,
    # verification the tissue mask again; 5: the exact hash is the coronal projection (one pass),
    # the analysis grid averages 2 picks per axis of each block instead of 4; 6: the projection's
    # integer sums kept modulo 2**16 (16-bit lanes); 7: exact sums again (modulo 2**16 a +1024
    # copy hashed as identical voxels); 8: hashes keep the global hash's DCT coefficients (phash_dct);
    # 9: one patient's studies of one source are grouped only when identical (dedup_other_study),
    # and a group of multi-case studies keeps one study's members in every group it shares
    version = "9"
    config_class = DedupConfig
    tables = ("hashes", "duplicates", "dedup_overrides")
    requires = ("cases",)
    settings_files = ("the taxonomy file (the keep policy counts each case's annotated terms) or the overrides "
                      "file")

    @classmethod
    def settings_files_digest(cls, ctx: Context, config: StageConfig) -> str | None:
        """The taxonomy's checksum, as harmonize's: a changed name can change a case's annotated
        terms and so the member a group keeps (the hashes are cached: only the grouping re-runs);
        and the overrides file's, when one is set (an edit re-groups the cached hashes)."""
        from curator.harmonize.stage import HarmonizeStage

        tax = HarmonizeStage.settings_files_digest(ctx, config)
        overrides = cast(DedupConfig, config).overrides
        return f"{tax}+overrides:{file_digest(ctx.config.path(overrides))}" if overrides else tax

    @classmethod
    def settings_files_missing(cls, ctx: Context, config: StageConfig) -> list[str]:
        overrides = cast(DedupConfig, config).overrides
        return [str(overrides)] if overrides and not ctx.config.path(overrides).is_file() else []

    def plan(self) -> list[Task]:
        self.extra_problems: list[dict[str, Any]] = []
        cases = self.ctx.workspace.read_table("cases")
        known = set(cases.column("dataset").to_pylist()) if cases is not None else set()
        unknown = [d for d in cast(DedupConfig, self.config).prefer_datasets if d not in known]
        if unknown and known:  # a typo ranks nothing, and the reasons would say "no other criterion differs"
            err = ConfigError("config_error", f"stages.dedup.prefer_datasets names {unknown}, which no case's "
                              f"dataset is (the datasets are {sorted(known)})",
                              remedy="fix the names in stages.dedup.prefer_datasets")
            self.extra_problems.append(problem_row(self.name, err, dataset=None, case_id=None,
                                                   path="pipeline.yaml", severity="warning"))
        tasks = []
        for c in cases.to_pylist() if cases is not None else []:
            if not c.get("has_image") or not c.get("image_path"):
                continue  # label-only case: nothing to hash
            payload = {"source": c["source"], "image": c["image_path"], "channel": c.get("image_channel"),
                       "dataset": c["dataset"]}
            fill = self._non_finite(c)
            if fill is not None:  # only then: the other cases' cache keys stay as they were
                payload["non_finite"] = fill
            fp = f"{c.get('image_sha256')}|{c.get('voxel_sha256')}"
            tasks.append(Task(c["case_id"], payload, fp, dataset=c["dataset"], path=f"{c['source']}:{c['image_path']}"))
        return tasks

    def _non_finite(self, case: dict[str, Any]) -> float | str | None:
        """The dataset's ``fixes.non_finite`` value for the case's image (ingest read it so)."""
        src = self.ctx.sources.get(case["source"])
        return non_finite_fill(src.spec.fixes, case["image_path"]) if src is not None else None

    def outputs_exist(self, result: CaseResult) -> bool:
        """A cached case's verification thumbnail must still be there (without it the case
        could only match exact copies, and its groups would silently vanish). Existence only:
        a cached re-run stays cheap; a changed file is caught by its checksum when loaded."""
        ws = self.ctx.workspace.root
        return all((ws / r["thumbnail"]).is_file() for r in result.rows.get("hashes", []))

    @classmethod
    def process(cls, task: Task, config: StageConfig, env: CaseEnv) -> CaseOutput:
        cfg = cast(DedupConfig, config)
        p = task.payload
        root = Path(env.sources[p["source"]])
        vol = read_volume(resolve_inside(root, root / p["image"]), role="image", channel=p["channel"],
                          non_finite=p.get("non_finite"))
        f = scan_features(vol.array, vol.geometry, cfg.hashing)
        data = f.thumbnail.to_bytes()
        digest = hashlib.sha256(data).hexdigest()
        rel = thumbnail_relpath(task.case_id, digest)
        atomic_write_bytes(Path(env.workspace) / rel, data)
        row = {"case_id": task.case_id, "dataset": p["dataset"], **f.row(), "thumbnail": rel,
               "thumbnail_sha256": digest}
        out = CaseOutput(rows={"hashes": [row]})
        if f.phash is None and not f.slabs.hashes:
            err = InputError("dedup_hash_limited", "the scan's body is too small for the perceptual hashes; only "
                             "an identical copy (exact hash) can be found", path=str(root / p["image"]))
            out.problems.append(problem_row(cls.name, err, dataset=p["dataset"], case_id=task.case_id,
                                            path=task.path, severity="info"))
        return out

    def finalize(self, results: list[CaseResult]) -> dict[str, pa.Table]:
        cfg = cast(DedupConfig, self.config)
        rows = sorted((r for res in results for r in res.rows.get("hashes", [])), key=lambda r: r["case_id"])
        thumb = self._thumbnail_loader({r["case_id"]: r for r in rows})
        keys = [key_of(r["case_id"], r["exact_sha256"], r["phash"],
                       SlabHashes(tuple(r["slab_hashes"]), tuple(r["slab_z_mm"])), r["grid_shape"],
                       r["grid_spacing_mm"], functools.partial(thumb, r["case_id"]), cfg.search,
                       r.get("phash_dct"), voxel_key(self._cases.get(r["case_id"], {}))) for r in rows]
        overrides = (checked_overrides(self.ctx.config.path(cfg.overrides), set(self._cases),
                                       {r["case_id"] for r in rows}, self._same_study) if cfg.overrides else [])
        found = [c for c in find_candidates(keys, cfg.search) if not self._same_study(c.a, c.b)]
        candidates = with_reviewed(found, overrides)
        cache = MatchCache(self.ctx.workspace.stage_dir(self.name) / "matches.json", cfg.verify.overlap_ratio)
        digest = {r["case_id"]: r["thumbnail_sha256"] for r in rows}

        def compare_cases(a: str, b: str) -> Match | None:
            ta, tb = thumb(a), thumb(b)  # loaded (and checked) even when the comparison is cached
            if ta is None or tb is None:
                return None
            return cache.compare(digest[a], ta, digest[b], tb, cfg.verify.overlap_ratio)

        pairs = verify_candidates(candidates, thumb, cfg.verify, self._study_keys, compare_cases, self._visits,
                                  kept_apart(overrides))
        self._report_other_studies(pairs)
        log.info("dedup: %d scans, %d candidate pairs, %d accepted (%s)", len(rows),
                 len(candidates), sum(p.accepted for p in pairs), cache.said())
        headers = {cid: header_geometry(c) for cid, c in self._cases.items()}
        members = self._members()
        dup = duplicate_rows(pairs, with_keeps(members, overrides), cfg.keep, cfg.prefer_datasets, compare_cases,
                             headers, reviewed_pairs(overrides))
        if overrides:
            self.extra_problems += keep_problems(overrides, dup, str(cfg.overrides),
                                                 self.ctx.config.path(str(cfg.overrides)),
                                                 {c: r.get("dataset") for c, r in self._cases.items()}, self.name)
        # what the overrides changed: the same candidates verified without them (comparisons cached)
        base = (verify_candidates(found, thumb, cfg.verify, self._study_keys, compare_cases, self._visits)
                if any(o.action != "keep" for o in overrides) else pairs)
        record = override_rows(overrides, pairs, base, dup, members, cfg.keep, cfg.prefer_datasets,
                               lambda a, b: compare_cases(a, b) if a in digest and b in digest else None, cfg.verify)
        cache.save()
        return {"hashes": to_arrow("hashes", rows), "duplicates": to_arrow("duplicates", dup),
                "dedup_overrides": to_arrow("dedup_overrides", record)}

    def _thumbnail_loader(self, rows: dict[str, dict[str, Any]]) -> Any:
        ws = self.ctx.workspace.root

        reported: set[str] = set()

        @functools.lru_cache(maxsize=256)
        def load(case_id: str) -> Thumbnail | None:
            r = rows[case_id]
            path = ws / r["thumbnail"]
            try:
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest() == r["thumbnail_sha256"]:
                    return Thumbnail.from_bytes(data)
            except (OSError, ValueError):
                pass
            if case_id not in reported:  # the run goes on; the case can only match exactly
                reported.add(case_id)
                err = InputError("dedup_thumbnail_missing", "the verification thumbnail is missing or changed",
                                 path=r["thumbnail"])
                self.extra_problems.append(problem_row(self.name, err, dataset=r["dataset"], case_id=case_id,
                                                       path=r["thumbnail"], severity="warning"))
            return None

        return load

    def _codes(self, spec: Any) -> dict[str, list[str]]:
        """:func:`annotated_codes` in the pipeline's taxonomy (a lab's own names count, as
        harmonize reads them)."""
        from curator.harmonize.stage import harmonize_taxonomy

        return annotated_codes(spec, harmonize_taxonomy(self.ctx))

    @functools.cached_property
    def _cases(self) -> dict[str, dict[str, Any]]:
        """The workspace's cases by id (read once for the study links and the keep policy)."""
        cases = self.ctx.workspace.read_table("cases")
        return {r["case_id"]: r for r in (cases.to_pylist() if cases is not None else [])}

    @functools.cached_property
    def _kept_before(self) -> set[str]:
        """The cases the workspace's last dedup run kept (its ``duplicates`` table, read before this
        run replaces it): on a tie of every criterion they stay kept, so a dataset added later does
        not move a group's kept member by case id. Empty on a fresh workspace."""
        try:
            dup = self.ctx.workspace.read_table("duplicates", ["case_id", "kept"])
        except CuratorError:  # a damaged table: this run writes it again, and ties go by case id
            return set()
        if dup is None or "kept" not in dup.column_names:
            return set()
        return {r["case_id"] for r in dup.select(["case_id", "kept"]).to_pylist() if r["kept"]}

    @functools.cached_property
    def _study_keys(self) -> dict[str, str]:
        """Case id → study key, for the cases of a study (sequences or channels of one patient visit)."""
        return {cid: str(c["study_key"]) for cid, c in self._cases.items() if c.get("study_key") is not None}

    def _same_study(self, a: str, b: str) -> bool:
        """Two sequences (or channels) of one study: linked by study_key, one split unit, never
        duplicates of each other — T1 and T1gd look alike, and dropping one loses a sequence."""
        k = self._study_keys.get(a)
        return k is not None and k == self._study_keys.get(b)

    @functools.cached_property
    def _visits(self) -> dict[str, str]:
        """Case id → its source and patient id, for the patients with several studies in one
        source (BraTS' time points of a subject): what keeps those studies apart
        (:func:`~curator.dedup.detect.verify_candidates`'s ``patients``). Only the dataset's own
        patient ids count, within its own source: two patients are never linked by it, and another
        source's copy (another dataset, or another version of this one) is compared as before."""
        keys: dict[tuple[str, str], set[str]] = {}
        for c in self._cases.values():
            if c.get("patient_id") and c.get("study_key") is not None and c.get("source"):
                keys.setdefault((str(c["source"]), str(c["patient_id"])), set()).add(str(c["study_key"]))
        return {cid: f"{c['source']}\x00{c['patient_id']}" for cid, c in self._cases.items()
                if len(keys.get((str(c.get("source")), str(c.get("patient_id"))), ())) > 1}

    def _report_other_studies(self, pairs: list[PairResult]) -> None:
        """An ``info`` row for each verified pair left apart as two studies of one patient: the
        pair that would have been grouped, with its numbers, so the decision can be checked."""
        for p in pairs:
            if p.refused != "other_study" or p.match is None:
                continue
            a, b = self._cases.get(p.a, {}), self._cases.get(p.b, {})
            if a.get("sequence") and b.get("sequence") and a["sequence"] != b["sequence"]:
                continue  # one visit's t1c against the other's t1n: said by their own sequences' pair, if at all
            m = p.match
            said = f"not grouped with {p.a}, which it resembles as closely as a copy (rank correlation {m.score:.3f}, " \
                   f"texture {m.detail:.3f}): "
            if (a.get("source"), a.get("patient_id")) == (b.get("source"), b.get("patient_id")):
                said += (f"the two are studies {b.get('study_key')} and {a.get('study_key')} of one patient of source "
                         f"{b.get('source')} (its patient_id {b.get('patient_id')}), e.g. two time points")
            else:  # refused through their groups: each already holds one of two studies of one patient
                said += ("grouping them would join two studies of one patient of one source (each is grouped with, "
                         "or is, one of them), e.g. two time points")
            err = InputError("dedup_other_study", said + "; only identical voxels would make them one scan")
            self.extra_problems.append(problem_row(self.name, err, dataset=b.get("dataset"), case_id=p.b,
                                                   path=f"{b.get('source')}:{b.get('image_path')}", severity="info"))

    def _members(self) -> dict[str, Member]:
        ws = self.ctx.workspace
        codes = {name: self._codes(src.spec) for name, src in self.ctx.sources.items()}
        held: dict[str, set[str]] = {}
        raw = ws.read_table("raw_labels")
        if raw is not None:  # distinct annotated terms: ignored, undeclared and repeated codes do not count
            for r in raw.select(["case_id", "label_key", "raw_value", "voxels"]).to_pylist():
                table = codes.get(self._cases.get(r["case_id"], {}).get("source", ""), {})
                ids = table.get(r["label_key"]) if r["label_key"] else table.get(str(r["raw_value"]))
                if r["voxels"] and ids:
                    held.setdefault(r["case_id"], set()).update(ids)
        warnings: dict[str, int] = {}
        problems = ws.read_table("problems__ingest")
        if problems is not None:
            for r in problems.select(["case_id", "severity", "kind", "path"]).to_pylist():
                if r["case_id"] and scan_warning(r, self._cases.get(r["case_id"], {})):
                    warnings[r["case_id"]] = warnings.get(r["case_id"], 0) + 1
        out = {}
        for c in self._cases.values():
            fov = (math.prod(c["shape"]) * math.prod(c["spacing_mm"]) / 1000.0
                   if c.get("shape") and c.get("spacing_mm") else 0.0)
            out[c["case_id"]] = Member(c["case_id"], c["dataset"], c.get("dataset_version"),
                                       len(held.get(c["case_id"], ())), int(c.get("n_voxels") or 0),
                                       warnings.get(c["case_id"], 0), fov, kept_before=c["case_id"] in self._kept_before)
        keyed = {n for n, src in self.ctx.sources.items() if src.pseudonymous_ids}  # keyed case ids
        names = {cid: f"{c['source']}:{c.get('image_path') or ''}:{c.get('image_channel') or 0}"
                 for cid, c in self._cases.items() if c.get("source") in keyed}
        return by_study(out, self._study_keys, held, names)
