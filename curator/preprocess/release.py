"""Release step: stores into the release (hard links), per-term voxel locations, store checksums.

For every case in the ``preprocessed`` table the store is hard-linked (copied across file
systems) to ``<release>/stores/<case_id>.zarr`` and its OME-NGFF metadata brought up to date
(:func:`curator.ome.write_ome`: a store written before curator wrote it gets it, as new files in
the release's copy — the workspace's files stay as they are); every term of every label layer gets a
``store_terms`` row (voxels, bounding box) and up to :data:`MAX_SAMPLES` sampled voxel
locations in ``<release>/locations/<case_id>.npz`` (array ``<layer>/<term_id>``, int32
``(n, 3)``), which the PyTorch loader uses for foreground oversampling, like nnU-Net's
class locations. The release builder hashes every copied store into ``release.json["stores"]``
(:mod:`curator.release.integrity`), which ``curator verify`` re-checks.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from curator.errors import CuratorError, ReleaseError
from curator.io.fsutil import atomic_path
from curator.ome import write_ome
from curator.schema import to_arrow
from curator.store import CaseStore, term_masks
from curator.store_reader import store_damage

if TYPE_CHECKING:  # pragma: no cover
    from curator.release.build import ReleaseBuilder

log = logging.getLogger("curator")
MAX_SAMPLES = 2000
SEED = 1234


def link_tree(src: Path, dst: Path, skip: Collection[str] = ()) -> None:
    """Hard-link every file of ``src`` under ``dst`` (copy when links are not possible), except
    the folders ``skip`` names (paths relative to ``src``)."""
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        dirs[:] = [d for d in dirs if (rel / d).as_posix() not in skip]
        out = dst / rel
        out.mkdir(parents=True, exist_ok=True)
        for f in files:
            try:
                os.link(Path(root) / f, out / f)
            except OSError:
                shutil.copy2(Path(root) / f, out / f)


def term_locations(store: CaseStore, rng: np.random.Generator, max_samples: int = MAX_SAMPLES
                   ) -> tuple[list[dict[str, Any]], dict[str, NDArray[np.int32]]]:
    """Per (layer, term): voxels, bounding box and up to ``max_samples`` sampled voxel indices.

    A layer's planes are read once and each term is found inside its own bounding box
    (:func:`curator.store.term_masks`): memory is the planes plus one term's box — not one
    full-volume mask per term at once (a 41-structure TotalSegmentator case needed 47 bytes
    per voxel that way).
    """
    rows: list[dict[str, Any]] = []
    arrays: dict[str, NDArray[np.int32]] = {}
    ml = store.geometry.voxel_volume_mm3 / 1000.0
    for layer in store.layers():
        planes = [(np.asarray(arr[...]), values) for arr, values in store.planes(layer)]
        for term, box, mask in term_masks(planes):  # box: the term's tight bounding box
            flat = np.flatnonzero(mask)  # C order inside the box is C order in the volume
            n = len(flat)
            pick = flat if n <= max_samples else flat[np.sort(rng.choice(n, max_samples, replace=False))]
            local = np.stack(np.unravel_index(pick, mask.shape), axis=1)
            del mask, flat
            start = [s.start for s in box]
            arrays[f"{layer}/{term}"] = (local + np.asarray(start)).astype(np.int32)
            rows.append({"term_id": term, "layer": layer, "voxels": n, "volume_ml": n * ml,
                         "bbox_start": start, "bbox_stop": [s.stop for s in box], "samples": len(pick)})
        del planes
    return rows, arrays


def _save_npz(path: Path, arrays: dict[str, NDArray[np.int32]]) -> None:
    """A deterministic .npz (fixed zip timestamps), so re-running gives identical bytes."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arrays[name], allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, buf.getvalue())


# ingest's warnings that a case's geometry is the reader's guess (preprocess.stage.geometry_guessed)
GUESSED_KINDS = ("dicom_geometry_missing", "nifti_orientation_missing", "orientation_missing")


def guessed_geometry(problems: Any) -> set[str]:
    """Cases whose image ingest warned has a guessed geometry: a store of theirs written before the
    store said so (``geometry_guessed``) gets no OME world coordinates in the release either."""
    if problems is None or "kind" not in problems.column_names:
        return set()
    return {r["case_id"] for r in problems.select(["case_id", "kind"]).to_pylist()
            if r["kind"] in GUESSED_KINDS and r["case_id"]}


def release_step(b: ReleaseBuilder) -> None:
    table = b.tables.get("preprocessed")
    if table is None:
        return
    ws_stores = b.ctx.workspace.root
    # a disabled pseudolabel stage's layers are an earlier configuration's: the labels table
    # leaves them out, so the released stores (and store_terms, the loader, exports) do too
    skip = () if b.ctx.stage_enabled("pseudolabel") else ("labels/pseudo",)
    rows: list[dict[str, Any]] = []
    damaged: list[str] = []
    problems = b.tables.get("problems")
    _refuse_store_failures(b, problems)
    guessed = guessed_geometry(problems)
    missing = [f"{rec['case_id']} ({rec['store']})" for rec in table.select(["case_id", "store"]).to_pylist()
               if not (ws_stores / rec["store"] / "zarr.json").exists()]
    if missing:  # left out, the release lost the case's store and labels for training without a word
        raise ReleaseError("store_missing", f"{len(missing)} case store(s) preprocess wrote are no longer in the "
                           "workspace: " + _some(missing),
                           remedy=f"run the pipeline (`curator run {b.ctx.config.file_name}`): preprocess rebuilds "
                           "missing stores and pseudolabel their layers, then the release is written")
    for rec in table.select(["case_id", "dataset", "modality", "store"]).to_pylist():
        src = ws_stores / rec["store"]
        dst = b.staging / "stores" / f"{rec['case_id']}.zarr"
        link_tree(src, dst, skip)
        damage = store_damage(dst, chunks=True)  # every chunk's CRC32C: the image is not read here
        rng = np.random.default_rng([SEED, *rec["case_id"].encode()])
        if not damage:  # OME-NGFF metadata a store written before it lacks (or a layer left out changes):
            write_ome(dst, rec["case_id"] in guessed)  # new files in the release's copy, the workspace's stay
        try:
            found, arrays = ([], {}) if damage else term_locations(CaseStore(dst), rng)
        except (CuratorError, ValueError, RuntimeError, OSError) as e:  # a chunk that does not decode
            damage = [f"{type(e).__name__}: {e}"]
        if damage:
            damaged.append(f"{rec['case_id']} ({rec['store']}: {damage[0]})")
            continue
        rel = f"locations/{rec['case_id']}.npz"
        if arrays:
            _save_npz(b.staging / rel, arrays)
        for r in found:
            r.update({"case_id": rec["case_id"], "dataset": rec["dataset"], "modality": rec["modality"],
                      "locations": rel})
        rows += found
    if damaged:  # published, it reads as zeros where a shard was (or crashes the loader): never
        raise ReleaseError("store_damaged", f"{len(damaged)} case store(s) in the workspace are damaged: "
                           + _some(damaged),
                           remedy="delete each damaged case's store folder (<workspace>/stores/<case>.zarr) and run "
                           f"the pipeline (`curator run {b.ctx.config.file_name}`): preprocess rebuilds the store and pseudolabel "
                           "its layer (a cached run notices a missing shard or a broken index itself, not a chunk "
                           "failing its CRC32C: that needs every byte read); then write the release again")
    b.tables["store_terms"] = to_arrow("store_terms", rows)


def _some(items: list[str]) -> str:
    return "; ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def _refuse_store_failures(b: ReleaseBuilder, problems: pa.Table | None) -> None:
    """Refuse a release some of whose cases have no store because preprocess failed on the
    case's store in the workspace (:data:`~curator.runner.stage.STORE_FAULTS`: missing, damaged,
    unreadable), not on its input: such a case would ship without its store and labels for
    training while the release verified OK. (Those failures are no longer cached, so the next
    run of preprocess rebuilds the store; a workspace from before may still hold one.)"""
    from curator.runner.stage import STORE_FAULTS

    if problems is None or not {"stage", "kind", "severity", "case_id"} <= set(problems.column_names):
        return
    bad = sorted({f"{r['case_id']} ({r['kind']})" for r in problems.select(["stage", "kind", "severity", "case_id"])
                  .to_pylist() if r["stage"] == "preprocess" and r["severity"] == "error" and r["kind"] in STORE_FAULTS})
    if bad:
        raise ReleaseError("store_missing", f"{len(bad)} case(s) have no store because preprocess failed on the case's "
                           "store in the workspace, not on its input: " + _some(bad),
                           remedy=f"run the pipeline again (`curator run {b.ctx.config.file_name}`): preprocess "
                           "rebuilds those stores (the problems table lists why each failed: stage = 'preprocess')")
