"""Ingest: native layouts → ``cases`` (+ ``raw_labels``), every unusable input a ``problems`` row."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from curator.config import StageConfig
from curator.errors import ConfigError, CuratorError, InputError
from curator.ingest import core
from curator.ingest.coverage import Coverage
from curator.ingest.metadata import load_metadata
from curator.ingest.phase import case_phases
from curator.io.confined import regular_inside, resolve_inside
from curator.io.formats import DEFAULT_MAX_VOXELS, read_volume
from curator.io.fsutil import sha256_file, sha256_files
from curator.io.volume import Geometry, Volume
from curator.problem_kinds import remedy_for
from curator.registry.fixes import apply_label_fixes, for_files, intensity_offset, non_finite_fill
from curator.registry.layout import SpecKeyError, discover, scan
from curator.registry.spec import holds_structures
from curator.registry.splits import split_columns
from curator.runner.stage import CaseEnv, CaseOutput, Stage, Task, problem_row, with_warnings
from curator.workspace import ChecksumCache, files_below

log = logging.getLogger(__name__)

# a source's file refused unread (a link out of the root, a FIFO or device, an endless file)
_REFUSED = frozenset({"path_escape", "not_a_regular_file", "file_too_large"})
# layout problems that say what was left out on purpose, not that a file was lost
_LAYOUT_SEVERITY = {"sequence_undeclared": "warning", "image_is_label": "warning", "series_not_image": "info",
                    "image_in_two_cases": "warning", "declared_label_absent": "warning", "case_overridden": "info",
                    "exclude_no_match": "warning"}

@dataclass(frozen=True)
class IngestConfig(StageConfig):
    geometry_tolerance_mm: float = 0.01
    max_voxels: int = DEFAULT_MAX_VOXELS

    def __post_init__(self) -> None:
        if self.geometry_tolerance_mm < 0:  # -1 warned "qform/sform up to 0 mm apart" on every case
            raise ConfigError("config_error", f"stages.ingest.geometry_tolerance_mm = {self.geometry_tolerance_mm}; "
                              "give 0 or more millimetres (default 0.01)")
        if self.max_voxels < 1:
            raise ConfigError("config_error", f"stages.ingest.max_voxels = {self.max_voxels}; give a positive number")


def pseudonymous_id(ws: Any, source: str, case_id: str) -> str:
    """``<source>__c_<20 hex>``: a keyed hash of the name-derived case id (stable while the
    workspace key is), for a source with ``pseudonymous_ids``."""
    body = case_id.split("__", 1)[1] if "__" in case_id else case_id
    return f"{case_id.split('__', 1)[0]}__{ws.pseudonym(source, body, prefix='c')}"


def _display(source: str, root: Path, path: str | None) -> str | None:
    if not path:
        return None
    p = Path(path)
    if not p.is_absolute():
        return f"{source}:{p.as_posix()}"
    rel = os.path.relpath(p, root)  # no resolve(): the path may be a looping link
    return f"{source}:{Path(rel).as_posix()}"


def _written_after(path: Path, since_ns: int) -> bool:
    """Whether the file was modified after ``since_ns`` (its mtime: a copy of the project by
    ``cp -a`` or ``rsync -a`` keeps it); a missing file counts as changed."""
    try:
        return path.lstat().st_mtime_ns > since_ns
    except OSError:
        return True


def _edited(path: Path, before: list[Any] | None, now: list[Any] | None, since_ns: int) -> bool:
    """Whether a case's file changed since the checksums the last plan took (``before``, the checksum
    cache's entry: size, times, inode, SHA-256): by content when both entries are there (a copied
    tree, with new times and inodes, is no edit), else by its modification time (a file first seen)."""
    if not path.exists():
        return True
    if before is not None and now is not None and len(before) >= 5 and len(now) >= 5:
        return bool(before[4] != now[4])
    return _written_after(path, since_ns)


class IngestStage(Stage):
    name = "ingest"
    # 2: label defects reject the label, not the case; 3: CT intensity warnings; 4: NIfTI without
    # sform or qform warned (nifti_orientation_missing); 5: a per-structure mask that fails drops its
    # structure (label_dropped), not the case's whole label; 6: a NRRD or MetaImage without a patient
    # orientation warned (orientation_missing). Not bumped for NIfTI labels whose header scales their
    # codes by whole numbers, read as the stored codes since (label_scaling_ignored): those cases' keys
    # carry the scaling (``label_scaling`` in their payload), so they alone are read again; nor for a 4-D
    # label split with its image's channels: the keys of channel cases holding a 4-D label file carry
    # ``label_frames`` (its header read once per file into the checksum cache, as the scaling is);
    # nor for the cardiac phase (the dataset YAML's ``phase:``): its dataset's cases carry it in their keys;
    # nor for the mr_looks_like_ct warning: only cases read since say it (``sources check`` reads anew)
    version = "6"
    config_class = IngestConfig
    tables = ("cases", "raw_labels")
    reads_sources = True

    def edited_inputs(self, task: Task, since_ns: int) -> list[str]:
        """The case's image and label files (every file of a series folder) written after
        ``since_ns``; a ``pseudonymous_ids`` source's are named by the case (its file names may
        name a patient)."""
        p = task.payload
        src = self.ctx.sources.get(p["source"])
        if src is None:
            return []
        rels = ([p["image"]] if p["image"] else []) + [rel for _, rel in p["labels"]]
        before, now = self.checksums_before.get(src.name, {}), self.checksums_now.get(src.name, {})
        edited = [rel for rel in rels for rel in sorted(files_below(src.root, rel))
                  if _edited(src.root / rel, before.get(rel), now.get(rel), since_ns)]
        if edited and src.pseudonymous_ids:
            return [f"{src.name}:{task.case_id} ({len(edited)} file(s))"]
        return [f"{src.name}:{rel}" for rel in edited]

    def edited_source_files(self, since_ns: int) -> list[str]:
        """The metadata, official split and index files the dataset YAMLs name, written after ``since_ns``."""
        out = []
        for src in self.ctx.sources.values():
            spec = src.spec
            named = {str(f) for f in (spec.metadata.get("file"), spec.official_split.get("file")) if f}
            named |= {e.index for e in spec.layout if e.index}
            # a missing one is no edit: ingest's problem rows say it (and the cases it then loses are gone)
            out += [f"{src.name}:{rel}" for rel in sorted(named)
                    if (src.root / rel).exists() and _written_after(src.root / rel, since_ns)]
        return out

    def plan(self) -> list[Task]:
        # each source's checksum cache entries before and after this plan (relative path -> entry)
        self.checksums_before: dict[str, dict[str, list[Any]]] = {}
        self.checksums_now: dict[str, dict[str, list[Any]]] = {}
        tasks: list[Task] = []
        self.extra_problems: list[dict[str, Any]] = []
        ws = self.ctx.workspace
        sources = self.ctx.sources
        self.extra_problems += self.ctx.source_problems
        from curator.harmonize.mapping import index_disagreements
        from curator.harmonize.stage import harmonize_taxonomy

        tax = harmonize_taxonomy(self.ctx) if any(e.index for s in sources.values() for e in s.spec.layout) else None
        for src in sources.values():
            spec, root = src.spec, src.root
            tree = scan(root, spec.exclude)
            cases, problems = discover(spec, root, tree, name=src.name)
            if src.pseudonymous_ids:  # the names stay in the workspace; the release gets keyed ids
                cases = [dataclasses.replace(c, case_id=pseudonymous_id(ws, src.name, c.case_id)) for c in cases]
            for err in problems:  # a problem about a key of the YAML is named by its file and key
                self.extra_problems.append(problem_row(self.name, err, dataset=spec.name, case_id=None,
                                                       path=err.path if isinstance(err, SpecKeyError)
                                                       else _display(src.name, root, err.path),
                                                       severity=_LAYOUT_SEVERITY.get(err.kind, "error")))
            if not root.is_dir():  # said above; its metadata file is not a second problem
                continue
            # a swapped pair in the YAML maps every label wrongly: the index's own names can tell
            for said in index_disagreements(spec, root, tax) if tax is not None else ():
                self.extra_problems.append(problem_row(self.name, said, dataset=spec.name, case_id=None,
                                                       path=_display(src.name, root, said.path), severity="warning"))
            dropped: set[str] = set()
            try:
                meta = load_metadata(spec.metadata, root, dropped)
                dropped -= split_columns(spec)  # published as cases.official_split
                if dropped:  # names only: their values never leave the metadata file
                    said = InputError("metadata_fields_dropped", f"{len(dropped)} field(s) of the metadata file are "
                                      f"not published: {', '.join(sorted(dropped)[:20])}"
                                      + (" …" if len(dropped) > 20 else ""), path=str(spec.metadata.get("file")))
                    self.extra_problems.append(problem_row(self.name, said, dataset=spec.name, case_id=None,
                                                           path=_display(src.name, root, said.path), severity="info"))
            except CuratorError as err:  # no case gets metadata; a file refused unread is an error
                meta = {}
                self.extra_problems.append(problem_row(self.name, err, dataset=spec.name, case_id=None,
                                                       path=_display(src.name, root, err.path),
                                                       severity="error" if err.kind in _REFUSED else "warning"))
            # each case's cardiac phase, from its file name's frame and the phase file beside it
            phases = case_phases(spec.phase, root, cases) if spec.phase else {}
            checksums = ChecksumCache(ws, src.name)
            self.checksums_before[src.name] = dict(checksums.entries)  # entries are replaced, never changed in place
            self.checksums_now[src.name] = checksums.entries
            for c in cases:
                files = ([c.image] if c.image else []) + [p for _, p in c.labels]
                study = [c.fields.get(k, "") for k in sorted(c.fields) if k not in ("sequence", "structure")]
                payload = {
                    "source": src.name, "dataset": spec.name, "dataset_version": spec.version,
                    "case_id": c.case_id, "source_case": c.source_case, "sequence": c.sequence,
                    # a patient is the dataset's (one person in two versions of it is one split
                    # unit); a study is the source's: the same scan in two versions is a duplicate
                    # for dedup, not two sequences of one study
                    "patient_id": ws.pseudonym(spec.name, c.patient_raw),
                    "study_key": ws.pseudonym(src.name, *study, prefix="s"),
                    "modality": c.modality, "region": spec.region, "split": c.split,
                    "image": c.image, "image_is_dir": c.image_is_dir, "channel": c.channel, "channels": c.channels,
                    "format": c.format, "labels": [list(x) for x in c.labels], "label_expected": c.label_expected,
                    "encoding": spec.labels.encoding, "any_nonzero": spec.labels.any_nonzero,
                    "fixes": for_files(spec.fixes, files),  # only this case's: a one-case fix re-runs one case
                    "declared": sorted(spec.labels.declared_values()),
                    "metadata": meta.get(c.source_case, {}),
                }
                if spec.phase:  # only then: other datasets' cases keep their cache keys
                    phase, why = phases.get(c.case_id, (None, None))
                    payload["phase"] = phase
                    payload["phase_problem"] = None if why is None else {
                        "kind": why.kind, "detail": why.detail, "path": why.path, "remedy": why.remedy}
                if any(holds_structures(rel) for _, rel in c.labels):  # read anew since SEG/RTSTRUCT labels are
                    payload["dicom_labels"] = 2  # placed on the image's grid (a SEG was read as a frame stack)
                shown = f"{src.name}:{c.case_id}" if src.pseudonymous_ids else _display(src.name, root, c.image or files[0])
                # a broken link is never read (one leading out of the root least of all): its kind stands for it
                links = "".join(f"|{f}:{tree.broken[f].kind}" for f in files if f in tree.broken)
                fingerprint = checksums.paths(root, [f for f in files if f not in tree.broken]) + links
                # a NIfTI label whose header scales its codes is read as its stored codes (unless the
                # YAML declares the scaled ones): only the cases holding one are keyed by it, so they
                # alone are read again after that change, and again if the header's scaling changes
                scaled = {rel: s for _, rel in c.labels if rel not in tree.broken
                          and (s := checksums.label_scaling(root, rel)) is not None}
                if scaled:
                    payload["label_scaling"] = scaled
                # read anew since a 4-D label gives each channel's case its frame (it was refused as
                # not_3d): only cases holding one, so a 3-D label's channel cases keep their results
                if c.channel is not None and any(rel not in tree.broken and checksums.label_4d(root, rel)
                                                 for _, rel in c.labels):
                    payload["label_frames"] = 1
                tasks.append(Task(case_id=c.case_id, payload=payload, fingerprint=fingerprint,
                                  dataset=spec.name, path=shown))
            if self.save_checksums:
                checksums.save()
            _say_gone(ws, src.name, {t.case_id for t in tasks if t.payload["source"] == src.name})
        return tasks

    @classmethod
    def process(cls, task: Task, config: StageConfig, env: CaseEnv) -> CaseOutput:
        config = cast(IngestConfig, config)
        p = task.payload
        root = Path(env.sources[p["source"]])
        out = CaseOutput()
        warn = out.problems

        def warning(err: CuratorError, severity: str = "warning") -> None:
            warn.append(problem_row(cls.name, err, dataset=p["dataset"], case_id=task.case_id,
                                    path=_display(p["source"], root, err.path) or task.path, severity=severity))

        row: dict[str, Any] = {
            "case_id": task.case_id, "dataset": p["dataset"], "dataset_version": p["dataset_version"],
            "source": p["source"], "source_case": p["source_case"], "sequence": p["sequence"],
            "patient_id": p["patient_id"], "study_key": p["study_key"], "modality": p["modality"],
            "region": p["region"], "official_split": p["split"], "has_image": p["image"] is not None,
            "has_label": bool(p["labels"]), "image_path": p["image"], "image_channel": p["channel"],
            "label_paths": [x[1] for x in p["labels"]], "label_keys": [x[0] for x in p["labels"]],
            "label_only": p["image"] is None, "label_status": "ok" if p["labels"] else "missing",
        }
        row.update(p["metadata"], phase=p.get("phase"))
        if p.get("phase_problem"):  # the case goes on without a phase
            why = p["phase_problem"]
            warning(InputError(why["kind"], why["detail"], path=why["path"], remedy=why["remedy"]))
        ref_geom: Geometry | None = None
        series: str | None = None
        voxels: Any = None  # the image's voxels: a label file holding the very same is refused
        if p["image"] is not None:
            path = resolve_inside(root, root / p["image"])  # a series folder's files: list_files checks them
            fill = non_finite_fill(p.get("fixes") or {}, p["image"])
            try:
                vol = read_volume(path, role="image", channel=p["channel"], channels=p.get("channels"),
                                  max_voxels=config.max_voxels, non_finite=fill)
            except InputError as e:
                if fill is None and e.kind == "non_finite_values":
                    raise _non_finite_hint(e, p["image"], p["modality"]) from e
                raise
            if vol.meta.get("non_finite_filled"):
                warning(_non_finite_filled(vol, path), severity="info")
            ref_geom, voxels = vol.geometry, vol.array
            series = vol.meta.get("series_uid") or None  # a DICOM image's series (in memory): what SEG/RTSTRUCT cite
            facts, low = _image_facts(vol, path, p["image_is_dir"], low_end=p["modality"] == "CT")
            row.update(facts)
            if low is not None:
                implausible = _ct_intensities(p, facts, low[0], path, air=low[1])
                if implausible is not None:
                    warning(implausible)
            elif p["modality"] in ("MR", "PET"):  # the converse: a CT in HU declared MR or PET
                looks_ct = _looks_like_ct(p["modality"], facts, core.air_share(voxels), path)
                if looks_ct is not None:
                    warning(looks_ct)
            gaps = vol.meta.get("geometry_missing")
            if gaps:
                said, hint = "", ""
                if vol.meta.get("header_slice_spacing"):
                    keyword, mm = vol.meta["header_slice_spacing"]
                    used = abs(vol.geometry.spacing[2] - mm) <= 1e-3
                    said = (f"; the header does state {keyword} {mm:g} mm, " + ("which the reader used between slices"
                            if used else f"which the reader did not use (it read {vol.geometry.spacing[2]:g} mm "
                            "between slices)"))
                    hint = f" (the header's {keyword}, {mm:g} mm, is a hint for the slice spacing)"
                warning(InputError("dicom_geometry_missing", f"the DICOM header gives no {gaps}: the reader assumed "
                                   "1 mm voxels and an identity orientation, so sizes in mm (and the resampled grid) "
                                   f"are a guess{said}; the case store gets no OME-Zarr world coordinates",
                                   path=str(path),
                                   remedy=f"find the voxel size in the dataset's documentation{hint} and re-export the "
                                   "scan with it (e.g. dcm2niix, then edit the NIfTI header), or leave the case out"))
            if vol.meta.get("orientation_missing") or vol.meta.get("world_space_missing"):
                warning(_orientation_missing(path, vol.meta))
            if vol.meta.get("unread_files"):
                warning(_unread_files(vol, path))
            if vol.meta.get("duplicate_files"):  # a repeated download's copies of a slice
                copies = vol.meta["duplicate_files"]
                warning(InputError("dicom_duplicate_slices", f"{len(copies)} file(s) of the series are byte-for-byte "
                                   f"copies of another slice and were left out: {'; '.join(copies[:5])}"
                                   + (f"; and {len(copies) - 5} more" if len(copies) > 5 else ""), path=str(path),
                                   remedy="nothing; delete the copies (a repeated download's 'IM0005 (1).dcm') to "
                                   "silence this"), severity="info")
            apart = vol.meta.get("qform_sform_mm")
            if apart is not None and apart > config.geometry_tolerance_mm:
                itk = ("so do ITK-based tools (SimpleITK, 3D Slicer) at sform code 1, but older ITK and "
                       "qform-first tools use the qform" if vol.meta.get("sform_code") == 1 else
                       f"ITK-based tools (SimpleITK, 3D Slicer) use the qform at sform code {vol.meta.get('sform_code')}")
                warning(InputError("nifti_qform_sform", f"the header's qform and sform place the volume up to "
                                   f"{apart:.3g} mm apart; curator uses the sform (as nibabel does); {itk}",
                                   path=str(path),
                                   remedy="check which one the dataset meant by overlaying its label; re-save the "
                                   "file with one affine if the sform is wrong"))
            if p.get("label_expected"):
                warning(InputError("label_missing", f"no file matches the label pattern {p['label_expected']!r} for "
                                   "this image, though it matched for other images; the case was ingested without "
                                   "labels", path=str(path),
                                   remedy="if the label exists under another name, rename it or widen the pattern; "
                                   "if the case has no label, nothing is to be done"))
        else:
            warning(InputError("image_missing", "no image for this label; ingested as label-only",
                               path=str(root / p["labels"][0][1])), severity="info")
        coverage = Coverage()
        blank: set[str] = set()  # frames of 4-D labels holding only background: not annotated
        counts_rows, label_sha, values, failures, label_geom, dropped = _labels(p, root, config, ref_geom, warning,
                                                                               coverage, series, voxels, blank)
        if p["image"] is None and label_geom is None:  # no label could be read: nothing of the case is left
            cause, *rest = failures or [InputError("label_empty", "a label-only case whose labels could not be "
                                                   "read", path=str(root / p["labels"][0][1]))]
            for err in rest:
                warning(err)
            raise with_warnings(cause, warn)  # the real cause is the case's error; earlier warnings are kept
        for err in failures:
            warning(err)
        kept = [x for x in p["labels"] if x[0] not in dropped]
        for key, err in dropped.items():
            warning(_structure_dropped(key, err, len(kept)))
        if dropped:  # what harmonize and preprocess read: the structure is not annotated in this case
            row["label_paths"], row["label_keys"] = [x[1] for x in kept], [x[0] for x in kept]
        row["label_dropped"] = sorted(dropped)
        if p["labels"]:
            row["label_sha256"] = label_sha
            row["label_values"] = values
            row["label_overlap_voxels"] = None if failures else coverage.overlap_voxels()
            if failures:
                row["label_status"] = "rejected"
        if p["labels"] and not failures and p["image"] is not None and blank == {rel for _, rel in p["labels"]}:
            row.update(has_label=False, label_status="missing", label_paths=[], label_keys=[], label_sha256=None,
                       label_values=None, label_overlap_voxels=None)
            counts_rows = []
            warning(InputError("label_frame_unannotated", f"frame {p['channel']} of the 4-D label map holds only "
                               "background: that frame was not annotated (a cine's masks annotate a few frames, "
                               "ED and ES), so the case is ingested without labels, not with its structures "
                               "annotated and absent", path=str(root / p["labels"][0][1])), severity="info")
        if label_geom is not None and p["image"] is None:  # label-only: the label's grid describes the case
            row.update(_geometry_columns(label_geom))
            row["format"] = "none"
        out.rows = {"cases": [row], "raw_labels": counts_rows}
        if p.get("centroids"):  # asked by sources check (curator.ingest.check): apart from raw_labels
            out.rows["label_centroids"] = [{"label_key": r["label_key"], "raw_value": r["raw_value"],
                                            "voxels": r["voxels"], "centroid_mm": r.pop("centroid_mm")}
                                           for r in counts_rows if "centroid_mm" in r]
        return out


def _unread_files(vol: Volume, path: Path) -> InputError:
    """A DICOM series folder holding files named like its slices that are empty or not DICOM."""
    kind, text, n = vol.meta["unread_files"]
    it, was, slices = ("it", "was", "a slice") if n == 1 else ("they", "were", "slices")
    return InputError(kind, f"{text}; {it} {was} left out of the series, whose volume holds {vol.shape[2]} "
                      f"slice(s): if {it} {was} {slices} of the scan, the volume is shorter than the scan (a label "
                      "drawn on the whole scan will not fit it)", path=str(path),
                      remedy="download the series again if the file is a slice; otherwise move it out of the "
                      "series folder")


def _orientation_missing(path: Path, meta: dict[str, Any]) -> InputError:
    gap = meta.get("world_space_missing")
    if gap:  # a NRRD or MetaImage (read by SimpleITK)
        return InputError("orientation_missing", f"the header gives no patient orientation ({gap}): its voxels have "
                          "no defined place in the patient — curator (as ITK) reads it as LPS axes at the stated "
                          "origin (0 when none) — so left and right (and the labels' left/right terms against the "
                          "image) are a guess", path=str(path),
                          remedy="find the orientation in the dataset's documentation (or a DICOM original) and "
                          "re-save the file with one (NRRD: `space: left-posterior-superior`, `space directions`, "
                          "`space origin`; MetaImage: TransformMatrix and Offset), or leave the case out")
    return InputError("nifti_orientation_missing", "the NIfTI header sets neither an sform nor a qform "
                      "(both codes 0): its voxels have no defined place in the patient — curator (nibabel) reads "
                      "it as LAS, ITK as LPS, the NIfTI standard as RAS — so left and right (and the labels' "
                      "left/right terms against the image) are a guess", path=str(path),
                      remedy="find the orientation in the dataset's documentation (or a DICOM original) and "
                      "re-save the file with an sform, or leave the case out")


def _geometry_columns(g: Geometry) -> dict[str, Any]:
    return {"shape": list(g.shape), "spacing_mm": list(g.spacing), "origin_mm": list(g.origin),
            "direction": [float(x) for x in g.direction.ravel()], "affine": list(g.affine),
            "orientation": g.orientation, "n_voxels": g.n_voxels}


def _image_facts(vol: Volume, path: Path, is_dir: bool, low_end: bool = False,
                 ) -> tuple[dict[str, Any], tuple[float, float | None] | None]:
    """The ``cases`` columns of an image, and its 0.5th percentile and air peak when ``low_end``
    (CT checks)."""
    from curator.io.dicom_files import list_files

    facts = _geometry_columns(vol.geometry)
    a = np.ascontiguousarray(vol.array)  # readers keep native (often Fortran) order; both below need C order
    facts.update(core.intensity_summary(a))
    low = None
    if low_end:
        p05 = core.low_end(a)
        low = (p05, core.air_peak(a, p05))
    facts["dtype"] = str(a.dtype)
    facts["format"] = vol.meta.get("format")
    facts["voxel_sha256"] = core.voxel_checksum(a)
    del a
    facts["image_sha256"] = sha256_files(list_files(path), path) if is_dir else sha256_file(path)
    for k in ("manufacturer", "scanner_model", "field_strength_t"):
        if k in vol.meta:
            facts[k] = vol.meta[k]
    return facts, low


_FIXES_DOC = "docs/registry.md, `fixes`"


def _ct_intensities(p: dict[str, Any], facts: dict[str, Any], low: float, path: Path,
                    air: float | None = None) -> InputError | None:
    """A warning when a CT's intensities are not Hounsfield units (after the dataset's declared
    ``intensity_offset``, which preprocess applies): offset (air far above -1000) or 8-bit.
    ``low`` is the 0.5th percentile, ``air`` the air peak (:func:`curator.ingest.core.air_peak`)."""
    offset = intensity_offset(p.get("fixes") or {}, p["image"])
    lo, hi = facts["intensity_min"] + offset, facts["intensity_max"] + offset
    issue = core.ct_intensity_issue(low + offset, lo, hi, None if air is None else air + offset)
    if issue is None:
        return None
    kind, x = issue
    declared = f" after the declared intensity_offset of {offset:+g}" if offset else ""
    when = _when(p["image"])
    if kind == "ct_intensity_8bit":
        return InputError(kind, f"every value lies in 0..255 ({lo:g}..{hi:g}{declared}): the CT looks like an "
                          "8-bit (windowed) export, not Hounsfield units; preprocess's HU window will misread it",
                          path=str(path), remedy="use the original scan in Hounsfield units (DICOM or a NIfTI "
                          "export with its rescale slope/intercept); an 8-bit export cannot be undone by a fix")
    # a window, not an offset: at least 0.5 % of the voxels on the floor and 1 % on the ceiling
    top = facts["intensity_p99"] + offset
    if low + offset <= lo and top >= hi and hi - lo < 1500 and x not in core.CT_COMMON_OFFSETS:
        return InputError("ct_intensity_clipped", f"the intensities are clipped to a window ({lo:g}..{hi:g}{declared}"
                          ": voxels pile up on its floor and its ceiling): air and bone were cut off, so no "
                          "offset would bring back Hounsfield units", path=str(path),
                          remedy="use the original scan in Hounsfield units if it exists; a clipped scan still "
                          "trains, but its intensities differ from the other CTs outside the window")
    fix = offset - x
    unusual = "" if x in core.CT_COMMON_OFFSETS else (" (not a usual offset: if the scan is cropped so tightly "
                                                      "that it holds no air, nothing to do)")
    peak = "" if air is None else f", air outside the patient peaking at {air + offset:g}"
    usual = "" if x not in core.CT_COMMON_OFFSETS else (
        ". +1000 and +1024 differ by only 24 HU: +1024 when the lowest values are the scanner's floor of -1024 HU "
        "(a uint16 file starting at 0, DICOM's RescaleIntercept -1024 dropped) and air peaks about 24 above them; "
        "+1000 when air itself peaks at 0")
    return InputError(kind, f"the low end of the intensities (0.5th percentile {low + offset:g}{peak}{declared}) is "
                      f"far above air (-1000 HU): the CT looks offset by about {x:+g}{unusual}{usual}; preprocess "
                      "would clip it",
                      path=str(path), remedy="if the scan is not a CT (an MR's intensities also start near 0), "
                      "set the right `modality:` of the dataset or its layout entry; otherwise declare the offset "
                      f"in the dataset YAML ({_FIXES_DOC}): "
                      f"`fixes: {{intensity_offset: {{value: {fix:g}, when: {when}, reason: \"stored with "
                      f"{x:+g}\"}}}}` (drop `when` if every scan of the dataset is offset; widen it to the "
                      "affected subset); air outside the patient should then be near -1000 and the lowest "
                      "values at -1024 or a padding value below it")


def _looks_like_ct(modality: str, facts: dict[str, Any], share: float, path: Path) -> InputError | None:
    """A warning when an image declared MR or PET holds a CT's air: a large share of its voxels
    near -1000 (:func:`curator.ingest.core.air_share`). Preprocess would z-score it as an MR (or
    scale it as a PET) instead of windowing it in Hounsfield units; the converse, a CT declared
    for MR data, is ``ct_intensity_offset``'s."""
    if share < core.CT_LIKE_AIR_SHARE:
        return None
    lo, hi = core.CT_AIR_BAND_HU
    a = "an" if modality == "MR" else "a"
    return InputError("mr_looks_like_ct", f"the image is declared {modality}, but {share:.0%} of its voxels lie at "
                      f"air in Hounsfield units ({lo:g}..{hi:g}; its intensities run {facts['intensity_min']:g}.."
                      f"{facts['intensity_max']:g}): it looks like a CT, which preprocess would normalise as {a} "
                      f"{modality} instead of windowing it in HU", path=str(path),
                      remedy="if the scans are CTs, set `modality: CT` in the dataset YAML (or on its layout entry, "
                      f"or the sequence's modality under `sequences:`); if this really is {a} "
                      f"{modality} stored with such values, nothing to do")


def _when(rel: str) -> str:
    """A YAML ``when:`` regex matching exactly the file at ``rel``, single-quoted."""
    return "'^" + re.escape(rel).replace("'", "''") + "$'"


def _non_finite_hint(err: InputError, rel: str, modality: str) -> InputError:
    """A ``non_finite_values`` refusal with the fix to declare for this very file (the reader's
    remedy says it in general)."""
    value = "-1024" if modality == "CT" else "0"
    return InputError(err.kind, err.detail, path=err.path, remedy=(
        "re-export the image; NaN/Inf voxels cannot be normalised. If they only mark voxels without data "
        "(outside a registered or resampled field of view), declare what they become in the dataset YAML "
        f"({_FIXES_DOC}): `fixes: {{non_finite: {{value: {value}, when: {_when(rel)}, reason: \"NaN outside the "
        "field of view\"}}` (" + ("-1024: air" if modality == "CT" else "0: background") + "; or 'min', the "
        "image's smallest finite value; drop `when` for every image of the dataset)"))


def _non_finite_filled(vol: Volume, path: Path) -> InputError:
    n, value = vol.meta["non_finite_filled"]
    return InputError("non_finite_replaced", f"{n} of {vol.array.size} voxels ({100 * n / vol.array.size:.2g} %) "
                      f"were NaN or infinite and were set to {value:g}, as the dataset YAML's fixes.non_finite "
                      "declares", path=str(path),
                      remedy="nothing, if they mark voxels without data; if they lie inside the body, re-export "
                      "the image instead")


def _structure_dropped(key: str, err: CuratorError, kept: int) -> CuratorError:
    """A per-structure mask that could not be used, said as the structure left out of its case
    (the error's own kind, so a query by kind still finds it)."""
    remedy = err.remedy or remedy_for(err.kind)
    return type(err)(err.kind, f"structure {key!r} was dropped from this case ({err.detail}); it counts as not "
                     f"annotated here, not as absent, and the case keeps its {kept} other structure file(s)",
                     path=err.path, remedy=f"{remedy}; then re-run ingest, which reads the structure again")


def _reoriented(root: Path, turned: dict[str, tuple[str, str]], files: int, noun: str) -> InputError:
    """One ``label_reoriented`` row for a case, however many of its label files are stored in
    another axis order than its image (a TotalSegmentator case: 117 structure masks, one row)."""
    rel, (order, image) = next(iter(turned.items()))
    orders = sorted({o for o, _ in turned.values()})
    if len(turned) == 1 and files == 1:
        what = f"the label's axes are ordered {order}"
    else:
        what = (f"{len(turned)} of the case's {files} {noun} (e.g. {rel.rsplit('/', 1)[-1]}) have their axes "
                f"ordered {' or '.join(orders)}")
    return InputError("label_reoriented", f"{what} where the image's are {image}; same voxel centres, accepted",
                      path=str(root / rel), remedy="nothing to do; later stages re-index the label")


def _labels(p: dict[str, Any], root: Path, config: IngestConfig, ref: Geometry | None,
            warning: Any, coverage: Coverage | None = None, series: str | None = None, voxels: Any = None,
            blank: set[str] | None = None) -> tuple[list[dict[str, Any]], str | None, list[int], list[CuratorError], Geometry | None,
                       dict[str, CuratorError]]:
    """Read every label file: grid check, raw value counts, declared-value check.

    A label file that is missing, unreadable or does not fit is returned in the list of
    failures (the caller reports it); a case with a failure keeps no ``raw_labels`` rows.
    Per-structure masks are separate annotations: a mask that fails is returned apart, by
    structure key (dropped: the case keeps the others), unless every mask of the case failed.
    ``blank`` collects the label files read as one frame of a 4-D label that hold only background.
    """
    rows: list[dict[str, Any]] = []
    h = hashlib.sha256()
    values: set[int] = set()
    failures: list[CuratorError] = []
    failed_keys: list[str] = []
    declared = set(p["declared"])
    digests: dict[str, str] = {}
    said: set[str] = set()
    unread_said: set[str] = set()
    turned: dict[str, tuple[str, str]] = {}  # label file -> (its axis order, the image's)
    for key, rel in p["labels"]:
        digest = "-"
        try:
            path = resolve_inside(root, root / rel)
            if rel in digests:  # a file holding several structures (SEG, RTSTRUCT): hashed once
                digest = digests[rel]
            elif path.is_dir():  # a folder of slice images
                from curator.io.dicom_files import list_files

                digest = digests[rel] = sha256_files(list_files(path), path)
            else:  # checked first: a FIFO is never opened to hash it
                digest = digests[rel] = sha256_file(regular_inside(root, path))
            per_structure = p["encoding"] == "per_structure"
            lab = read_volume(path, role="label", max_voxels=config.max_voxels, grid=ref,
                              structure=key if per_structure else None, declared=None if per_structure else declared,
                              channel=p["channel"], channels=p.get("channels"))  # a 4-D label: the image's frame
            if lab.meta.get("label_scaling"):  # the header scales the codes: said which were read
                from curator.io.nifti import label_scaling_problem

                warning(label_scaling_problem(lab.meta["label_scaling"], str(path)))
            if lab.meta.get("unread_files") and rel not in unread_said:  # a label stored as a DICOM series
                unread_said.add(rel)
                warning(_unread_files(lab, path))
            cited = lab.meta.get("references") or []
            if series and cited and series not in cited and rel not in said:  # once per file
                said.add(rel)
                warning(InputError("label_other_series", "the label (a DICOM SEG or RTSTRUCT) says it was drawn on "
                                   "another series than the case's image; its positions fit the image's grid, so it "
                                   "was read", path=str(path), remedy="check that it belongs to this scan (not "
                                   "another phase of a 4-D CT or another reconstruction of the study), and narrow the "
                                   "image or label pattern if not"))
            image = root / p["image"] if p["image"] is not None and p["image_is_dir"] else None
            lab = apply_label_fixes(lab, p.get("fixes") or {}, rel, ref, image)
            if ref is None:  # a label-only case: its first label places the case
                ref = lab.geometry
                if lab.meta.get("orientation_missing") or lab.meta.get("world_space_missing"):
                    warning(_orientation_missing(path, lab.meta))
            reoriented = core.check_grid(ref, lab.geometry, config.geometry_tolerance_mm, str(path))
            if reoriented and rel not in turned:  # said once per case, below
                turned[rel] = (lab.geometry.orientation, ref.orientation)
            counts = core.label_counts(lab.array)
            if blank is not None and lab.meta.get("label_frames") and not set(counts) - {0}:
                blank.add(rel)  # a frame of a 4-D label with nothing drawn in it
            if p["encoding"] == "per_structure":
                if set(counts) - {0, 1} and not p.get("any_nonzero"):
                    warning(InputError("label_values_undeclared",
                                       f"a structure mask holds values {core.some(sorted(set(counts) - {0, 1}), 8)}; "
                                       "every non-zero voxel is counted as the structure", path=str(path),
                                       remedy="if the dataset's masks use other values than 1 for the "
                                       "structure, set `labels.any_nonzero: true` in the dataset YAML"))
                if coverage is not None:  # voxel for voxel with the other masks: on the image's axes
                    coverage.add(lab.on_grid(ref, config.geometry_tolerance_mm).array if reoriented else lab.array)
                n1 = sum(c for v, c in counts.items() if v != 0)
                counts = {1: n1} if n1 else {}
            else:
                undeclared = core.check_label_map(counts, declared, str(path), lab.array, voxels)
                if undeclared:
                    warning(InputError("label_values_undeclared",
                                       f"values {core.some(undeclared, 12)} are not declared by the dataset YAML",
                                       path=str(path), remedy="add them to `labels.values` (or `ignore`) in "
                                       "the dataset YAML; harmonize reports them until then"))
        except CuratorError as err:
            failures.append(err)
            failed_keys.append(key)
            continue
        finally:
            h.update(f"{key}|{rel}|{digest}\n".encode())
        vml = lab.geometry.voxel_volume_mm3 / 1000.0
        # sources check's left/right test asks for each value's place (no raw_labels column)
        at = core.value_centroids(lab.array, lab.geometry, p["encoding"] == "per_structure") if p.get("centroids") else {}
        for v, c in sorted(counts.items()):
            if v == 0:
                continue
            values.add(v)
            rows.append({"case_id": p["case_id"], "label_key": key, "raw_value": v, "voxels": c,
                         "volume_ml": c * vml, **({"centroid_mm": at[v]} if v in at else {})})
    if turned:
        noun = "structure files" if p["encoding"] == "per_structure" else "label files"
        warning(_reoriented(root, turned, len({rel for _, rel in p["labels"]}), noun), severity="info")
    dropped: dict[str, CuratorError] = {}
    if p["encoding"] == "per_structure" and len(failures) < len(p["labels"]):
        dropped, failures = dict(zip(failed_keys, failures, strict=True)), []
    if failures:  # a label map (or every mask of the case) failed: the case's label is rejected as a whole
        rows, values = [], set()
    elif p["labels"] and not rows and not blank:  # an empty frame of a 4-D label is said by the caller
        warning(InputError("label_empty", "the label holds only background",
                           path=str(root / p["labels"][0][1])), severity="info")
    return rows, (h.hexdigest() if p["labels"] else None), sorted(values), failures, ref, dropped


def _say_gone(ws: Any, source: str, found: set[str]) -> None:
    """Log the cases of ``source`` the last run's ``cases`` table holds that its files no longer
    give (a deleted folder, a partial re-download): otherwise only the case count said so."""
    t = ws.read_table("cases", columns=["case_id", "source"]) if ws.has_table("cases") else None
    if t is None:
        return
    gone = sorted(c for c, s in zip(t.column("case_id").to_pylist(), t.column("source").to_pylist(), strict=True)
                  if s == source and c not in found)
    if gone:
        log.warning("ingest: %d case(s) of %s no longer found since the last run (their files deleted or moved, "
                    "or their ids changed by an edit of the dataset YAML): %s%s", len(gone), source,
                    ", ".join(gone[:10]), f" … ({len(gone) - 10} more)" if len(gone) > 10 else "")
