"""Harmonize: raw label values → taxonomy terms, one ``labels`` row per (case, term).

Inputs are ingest's ``cases`` and ``raw_labels`` tables; label files are re-read only for a
term made of several structure files in a case whose files overlap (``cases.label_overlap_voxels``
not 0: e.g. LNDb's per-reader nodule masks); without overlaps a union is the sum of its files.
Every raw value or structure file without a term becomes a ``label_unmapped`` problem (the
case is kept).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from curator.config import StageConfig
from curator.errors import CuratorError, InputError
from curator.harmonize.core import case_rows, missing_parts, term_plans
from curator.harmonize.mapping import (
    STRUCTURE_NAME_REMEDY,
    TERM_UNKNOWN_REMEDY,
    DatasetMapping,
    build_mapping,
    declared_values_absent,
    structure_names_disagree,
    unknown_names,
)
from curator.registry.fixes import for_files
from curator.runner.freshness import file_digest
from curator.runner.stage import CaseEnv, CaseOutput, Stage, Task, problem_row

if TYPE_CHECKING:
    from curator.runner.context import Context
    from curator.taxonomy import Taxonomy


@dataclass(frozen=True)
class HarmonizeConfig(StageConfig):
    taxonomy: str | None = None  # path of another taxonomy.yaml (default: the bundled one)


def taxonomy_path(ctx: Context) -> str | None:
    """The taxonomy file the pipeline harmonizes with (``stages.harmonize.taxonomy``; None: bundled)."""
    path = ctx.stage_config(HarmonizeConfig, "harmonize").taxonomy
    return str(ctx.config.path(path)) if path else None


def taxonomy_missing(ctx: Context) -> list[str]:
    """The taxonomy files ``stages.harmonize.taxonomy`` names (it, and the files it extends) that
    do not exist; raises the taxonomy's ``registry_error`` when they all exist but it is broken —
    for ``curator run`` to refuse before any stage runs, not when harmonize starts after hours of
    ingest and dedup."""
    from curator.taxonomy.load import taxonomy_files

    own = taxonomy_path(ctx)
    if own is None:
        return []
    files = taxonomy_files(own)
    missing = [f"taxonomy {f}" + (f" (which {files[i - 1].name} extends)" if i else "")
               for i, f in enumerate(files) if not f.is_file()]
    if not missing:
        harmonize_taxonomy(ctx)
    return missing


def harmonize_taxonomy(ctx: Context) -> Taxonomy:
    """The taxonomy harmonize uses: every stage and release step naming terms uses the same."""
    from curator.taxonomy import load_taxonomy

    return load_taxonomy(taxonomy_path(ctx))


class HarmonizeStage(Stage):
    name = "harmonize"
    # 2: a per-structure term made of several files (its parts) is annotated only where all of them
    # exist (term_incomplete); a bump, as the tables would otherwise pass as current: the cases it
    # changes re-run anyway (their plans key the cache), and preprocess's affected stores with them.
    # Not bumped for a union reading 4-D structure masks by the case's frame: per-structure channel
    # cases carry ``channel`` in their keys (the others failed as not_3d, retried under new code)
    version = "2"
    config_class = HarmonizeConfig
    settings_files = "the taxonomy file"
    tables = ("labels",)
    requires = ("cases", "raw_labels")

    @classmethod
    def settings_files_digest(cls, ctx: Context, config: StageConfig) -> str | None:
        """The taxonomy file's checksum (the bundled one unless ``taxonomy`` names another), joined
        with the checksums of the files it extends."""
        from curator.taxonomy.load import taxonomy_files

        return "+".join(file_digest(f) for f in taxonomy_files(taxonomy_path(ctx)))

    @classmethod
    def settings_files_missing(cls, ctx: Context, config: StageConfig) -> list[str]:
        return taxonomy_missing(ctx)

    def cache_payload(self, task: Task) -> Any:
        """The payload without the taxonomy's machine path and the value -> terms map the SEG check
        reads: the mapping's digest covers both (a moved project re-runs nothing)."""
        return {k: v for k, v in task.payload.items() if k not in ("taxonomy", "value_terms")}

    def plan(self) -> list[Task]:
        from curator.taxonomy import load_taxonomy

        tax = load_taxonomy(taxonomy_path(self.ctx))
        self.extra_problems: list[dict[str, Any]] = []
        ws = self.ctx.workspace
        cases = ws.read_table("cases")
        raw = ws.read_table("raw_labels")
        if cases is None or raw is None:
            return []
        counts: dict[str, list[list[Any]]] = defaultdict(list)
        for cid, key, val, n in zip(*(raw.column(c).to_pylist() for c in ("case_id", "label_key", "raw_value",
                                                                             "voxels")), strict=True):
            counts[cid].append([key, val, n])
        mappings: dict[str, tuple[DatasetMapping, str, dict[str, Any]]] = {}
        unknown: dict[str, dict[str, list[str]]] = {}  # source -> its values mapped to no known term
        for src in self.ctx.sources.values():
            m, issues = build_mapping(src.spec, tax)
            digest = hashlib.sha256(json.dumps([m.to_dict(), tax.version], sort_keys=True).encode()).hexdigest()
            mappings[src.name] = (m, digest, src.spec.fixes)
            unknown[src.name] = unknown_names(src.spec, m)
            for i in issues:
                err = CuratorError(i.kind, f"{i.loc}: {i.message}",
                                   remedy=TERM_UNKNOWN_REMEDY if i.kind == "term_unknown" else None)
                self.extra_problems.append(problem_row(self.name, err, dataset=src.spec.name, case_id=None,
                                                       path=Path(src.spec.path).name or None))
            for i in structure_names_disagree(src.spec, tax):
                err = CuratorError(i.kind, f"{i.loc}: {i.message}", remedy=STRUCTURE_NAME_REMEDY)
                self.extra_problems.append(problem_row(self.name, err, dataset=src.spec.name, case_id=None,
                                                       path=Path(src.spec.path).name or None, severity="warning"))
        plan_cache: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
        rows = [r for r in cases.to_pylist() if r["source"] in mappings and r["has_label"]]
        # no label file: the case annotates nothing ("not annotated", no rows)
        held: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))  # source -> value -> labels
        read: dict[str, int] = defaultdict(int)  # source -> label maps read
        for row in rows:
            if row["label_status"] == "ok" and mappings[row["source"]][0].encoding == "label_map":
                read[row["source"]] += 1
                for v in {int(v) for _, v, n in counts.get(row["case_id"], []) if n}:
                    held[row["source"]][v] += 1
        for name, n in sorted(read.items()):  # a declared code no label holds, and what is done about it
            src = self.ctx.sources[name]
            said, wrong = declared_absent_rows(src.spec, held[name], n)
            self.extra_problems += said
            if wrong:
                m, _, fixes = mappings[name]
                m = not_annotated(m, tax, wrong)
                digest = hashlib.sha256(json.dumps([m.to_dict(), tax.version], sort_keys=True).encode()).hexdigest()
                mappings[name] = (m, digest, fixes)
        tasks = []
        for row in rows:
            m, digest, fixes = mappings[row["source"]]
            if row["label_status"] != "ok":
                err = CuratorError("label_rejected", "ingest rejected this case's label; it gets no labels rows",
                                   remedy="see the ingest problem of this case, fix the file and re-run")
                self.extra_problems.append(problem_row(self.name, err, dataset=row["dataset"], case_id=row["case_id"],
                                                       path=None, severity="info"))
                continue
            keys = tuple(sorted(set(row["label_keys"] or ())))
            ck = (row["source"], keys if m.encoding == "per_structure" else ())
            if ck not in plan_cache:
                plan_cache[ck] = term_plans(m, tax, keys)
            if m.encoding == "per_structure":
                self.extra_problems += incomplete_term_rows(m, keys, row)
            spacing = row["spacing_mm"] or [1.0, 1.0, 1.0]
            payload = {
                "source": row["source"], "dataset": row["dataset"], "case_id": row["case_id"],
                "modality": row["modality"], "encoding": m.encoding, "plans": plan_cache[ck],
                "counts": sorted(counts.get(row["case_id"], [])),
                "known_values": sorted(m.values), "known_keys": sorted(m.structures), "ignore": sorted(m.ignore),
                "files": dict(zip(row["label_keys"] or (), row["label_paths"] or (), strict=True)),
                # only the label fixes of the label files read here (union_voxels applies no other):
                # a one-case fix re-runs one case, an image fix none
                "fixes": for_files(fixes, row["label_paths"] or (), target="label"),
                "voxel_ml": float(np.prod(spacing)) / 1000.0, "mapping": digest,
                "overlap": row.get("label_overlap_voxels"),
                # a DICOM SEG names its segments: a name the YAML maps to another value is said
                "value_terms": {str(v): list(ts) for v, ts in sorted(m.values.items())},
                # values/structures the YAML maps only to names no term resolves (said as term_unknown)
                "unknown_names": unknown[row["source"]],
                "taxonomy": taxonomy_path(self.ctx),
                # the image's grid: structure files are re-indexed onto it before a union
                "grid": ([list(row["shape"]), list(row["affine"])] if row.get("has_image") and row.get("shape")
                         and row.get("affine") else None),
            }
            if m.encoding == "per_structure" and row.get("image_channel") is not None:
                payload["channel"] = row["image_channel"]  # a 4-D mask: the union reads the image's frame
            path = f"{row['source']}:{(row['label_paths'] or [''])[0]}"
            tasks.append(Task(case_id=row["case_id"], payload=payload, fingerprint=row["label_sha256"] or "",
                              dataset=row["dataset"], path=path))
        return tasks

    @classmethod
    def process(cls, task: Task, config: StageConfig, env: CaseEnv) -> CaseOutput:
        p = task.payload
        counts = {(str(k), int(v)): int(n) for k, v, n in p["counts"]}
        root = Path(env.sources[p["source"]])

        def union(keys: list[str]) -> int:
            if p.get("overlap") == 0:  # ingest saw no voxel in two structure files: unions are sums
                return sum(n for (k, _), n in counts.items() if k in keys)
            return union_voxels(root, [p["files"][k] for k in keys], p["fixes"], p.get("grid"), keys,
                                channel=p.get("channel"))

        rows, unmapped = case_rows(p["plans"], counts, known_values=p["known_values"], known_keys=p["known_keys"],
                                   ignore=p["ignore"], encoding=p["encoding"], voxel_ml=p["voxel_ml"], union=union)
        out = CaseOutput()
        for r in rows:
            r.update(case_id=task.case_id, dataset=p["dataset"], modality=p["modality"])
        out.rows = {"labels": rows}
        unknown = p.get("unknown_names") or {}
        for key, value, n in unmapped:
            what = f"structure file {key!r}" if p["encoding"] == "per_structure" else f"raw value {value}"
            names = unknown.get(key if p["encoding"] == "per_structure" else str(value))
            err = InputError("label_unmapped", f"{what} ({n} voxels) maps to no term of the dataset YAML",
                             remedy=UNMAPPED_REMEDY[p["encoding"] == "per_structure"]) if not names else InputError(
                "label_unmapped", f"{what} ({n} voxels) is mapped to {', '.join(map(repr, names))}, which no "
                "taxonomy term resolves (this stage's term_unknown): left out", remedy=TERM_UNKNOWN_REMEDY)
            path = f"{p['source']}:{p['files'].get(key, '')}" if key in p["files"] else task.path
            out.problems.append(problem_row(cls.name, err, dataset=p["dataset"], case_id=task.case_id, path=path,
                                            severity="warning"))
        if p["encoding"] == "label_map":
            for rel in p["files"].values():
                for said in seg_disagreements(root, rel, p):
                    out.problems.append(problem_row(cls.name, said, dataset=p["dataset"], case_id=task.case_id,
                                                    path=f"{p['source']}:{rel}", severity="warning"))
        return out


def declared_absent_rows(spec: Any, held: dict[int, int], labels: int) -> tuple[list[dict[str, Any]], set[int]]:
    """A ``declared_label_absent`` row per term ``labels.values`` declares none of whose values
    any of the dataset's ``labels`` label maps holds, when they hold undeclared values instead, and
    the raw values whose term harmonize leaves out. When most of the labels hold an undeclared value
    (``2: prostate`` over files coding it 1 in every case) the code is almost surely wrong: the row
    is an error, and the declared values are returned, their term to be left out of the dataset's
    labels rows (not annotated) — published annotated and absent in every case, it taught a model
    that no case has the structure. Otherwise (a padding value in a few files beside a code no case
    holds) the term keeps its rows as the YAML declares it, and the row is a warning. Without
    undeclared values a declared value no case holds is a class the download lacks, said by nothing.
    The row's path names the YAML's file and key (``Toy.yaml:labels.values.2``)."""
    declared = spec.labels.declared_values()
    if not any(v not in declared for v in held):
        return [], set()
    rows: list[dict[str, Any]] = []
    wrong: set[int] = set()
    for a in declared_values_absent(spec, held, labels, whose="of the dataset"):
        rows.append(problem_row(HarmonizeStage.name, a.error, dataset=spec.name, case_id=None,
                                path=f"{spec.file_name}:{a.loc}", severity="error" if a.wrong_code else "warning"))
        if a.wrong_code:
            wrong.update(a.values)
    return rows, wrong


def not_annotated(m: DatasetMapping, tax: Taxonomy, values: set[int]) -> DatasetMapping:
    """``m`` with the terms of raw ``values`` no longer annotated (rows only where voxels exist,
    which no label holds), nor the terms derived from them — but a term another value of the
    dataset also carries stays annotated.

    >>> from curator.taxonomy import load_taxonomy
    >>> tax = load_taxonomy()
    >>> m = DatasetMapping("Toy", "label_map", values={1: ("kidney_left",), 2: ("kidney_right",)},
    ...                    annotated=("kidney_left", "kidney_right"), mapped=("kidney_left", "kidney_right"),
    ...                    derived=tax.derived(["kidney_left", "kidney_right"]))
    >>> n = not_annotated(m, tax, {2})
    >>> n.annotated, "kidney" in m.derived, "kidney" in n.derived
    (('kidney_left',), True, False)
    """
    kept = {t for v, ids in m.values.items() if v not in values for t in ids}
    drop = {t for v in values for t in m.values.get(v, ())} - kept
    annotated = tuple(t for t in m.annotated if t not in drop)
    return replace(m, annotated=annotated, derived=MappingProxyType(tax.derived(annotated, m.mapped)))


def incomplete_term_rows(m: DatasetMapping, keys: tuple[str, ...], row: dict[str, Any]) -> list[dict[str, Any]]:
    """An info row ``term_incomplete`` for each term of several structure files (its parts) that
    the case has only some of, naming the files it lacks and those ingest dropped: the term gets
    no labels row (not annotated in this case), where the files it has would give a mask without
    those parts. A term none of whose files exist is the ordinary missing file: said by nothing."""
    dropped = set(row.get("label_dropped") or ())
    out = []
    for tid, lacks in sorted(missing_parts(m, keys).items()):
        gone = [k for k in lacks if k in dropped]
        absent = [k for k in lacks if k not in dropped]
        why = "; ".join(filter(None, [
            f"ingest dropped {' and '.join(gone)} as unusable (see its problem row)" if gone else "",
            f"the case has no {' or '.join(absent)} file" if absent else ""]))
        files = sorted(k for k, ids in m.structures.items() if tid in ids)
        err = CuratorError("term_incomplete", f"{tid!r} is the union of the structure files {' and '.join(files)}, "
                           f"and this case lacks {' and '.join(lacks)} ({why}): {tid} counts as not annotated in "
                           "this case (no labels row, and no derived term holds it), never as annotated without "
                           "that part",
                           remedy="replace the dropped or missing file from the dataset's download and re-run; if "
                           "each of the term's files is a whole annotation of its own (one reader's mask each), "
                           "list the term under `labels.annotated_by_any_file` in the dataset YAML")
        out.append(problem_row(HarmonizeStage.name, err, dataset=row["dataset"], case_id=row["case_id"], path=None,
                               severity="info"))
    return out


# a label_unmapped row's remedy: (label map, per-structure); `labels.ignore` takes raw values only
UNMAPPED_REMEDY = (("map the value in `labels.values` of the dataset YAML, or list it under `labels.ignore` "
                    "if it is no label"),
                   ("map the file in `labels.structures` of the dataset YAML ({file stem: term}), or set "
                    "`labels.other_structures: ignore` to read only the declared files"))


def seg_disagreements(root: Path, rel: str, p: dict[str, Any]) -> list[CuratorError]:
    """A DICOM SEG label whose segment labels name terms the dataset YAML maps to other segment
    numbers (tools number segments differently: a YAML written from one file mislabels another)."""
    from curator.io.dicom_seg import segment_labels
    from curator.taxonomy import load_taxonomy

    names = segment_labels(root / rel)
    if not names:
        return []
    terms = {int(v): ts for v, ts in p.get("value_terms", {}).items()}
    return named_segments_disagree(root / rel, names, terms, load_taxonomy(p.get("taxonomy")))


def named_segments_disagree(path: Path, names: dict[int, str], terms: dict[int, list[str]],
                            tax: Any) -> list[CuratorError]:
    """:func:`seg_disagreements` for a SEG whose segment labels (``names``) are read already;
    ``terms``: the YAML's raw value -> term ids."""
    from curator.harmonize.mapping import disagreement_text, named_elsewhere

    out = []
    for v, name, t, there in named_elsewhere(terms, names, tax):
        mine = ", ".join(terms.get(v, ())) or "nothing"
        out.append(CuratorError("dicom_seg_labels_disagree", disagreement_text("the SEG names segment", "segment number", v, name, t,
                                                                               there, mine), path=str(path),
                                remedy="segment numbers are the raw values, and tools number segments differently: "
                                "check this file's numbering (`curator sources check`) and fix the YAML, or convert "
                                "the files to one numbering" if there else "check the term labels.values gives this "
                                "segment number against the segment's label, and fix whichever is wrong"))
    return out


def union_voxels(root: Path, rel_paths: list[str], fixes: dict[str, Any], grid: list[Any] | None = None,
                 keys: list[str] | None = None, *, channel: int | None = None) -> int:
    """Voxels in the union of several binary (any non-zero) label files of one case, each
    re-indexed onto the case's grid first — the image's (``grid``: shape, affine), else the first
    file's — as ingest and preprocess do: a file stored with its axes flipped or permuted (ingest's
    ``label_reoriented``) covers the same voxels in another order. ``channel``: the case's image
    channel, whose frame a 4-D mask gives (a 3-D mask is every channel's), as ingest reads it."""
    from curator.errors import GeometryError
    from curator.io.confined import resolve_inside
    from curator.io.formats import read_volume
    from curator.io.volume import Geometry
    from curator.registry.fixes import apply_label_fixes

    ref = Geometry.from_affine(tuple(grid[0]), grid[1]) if grid else None
    acc: np.ndarray[Any, Any] | None = None
    for i, rel in enumerate(rel_paths):  # keys: the structures, when a file holds several (SEG, RTSTRUCT)
        vol = apply_label_fixes(read_volume(resolve_inside(root, root / rel), role="label", grid=ref,
                                            structure=keys[i] if keys else None, channel=channel),
                                fixes, rel, ref)
        if ref is None:
            ref = vol.geometry
        else:
            vol = vol.on_grid(ref)
        m = np.asarray(vol.array) != 0
        if acc is None:
            acc = m
        elif acc.shape != m.shape:
            raise GeometryError("shape_mismatch", f"structure files of one term differ in shape ({rel})",
                                path=str(root / rel), remedy="check that the structure files belong to one case")
        else:
            acc |= m
    return int(np.count_nonzero(acc)) if acc is not None else 0
