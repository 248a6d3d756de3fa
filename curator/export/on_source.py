"""Exports on the source grid (``--grid source``): each case's image as its dataset ships it and
its label from the dataset's own label files, through the harmonize mapping — not the store's
resampled copies.

An evaluation that must score against the dataset's annotation (not a resampled reference), or a
trainer that resamples by itself (nnU-Net plans its own spacing), takes the source grid. The
release does not hold the source files, so the pipeline they were ingested from is given
(``pipeline``: its ``sources:`` name each dataset's root and YAML); the files are read as
preprocess reads them (:func:`curator.preprocess.stage.read_label_planes`: the dataset's label
fixes, per-structure masks, DICOM SEG and RTSTRUCT, a 4-D label's frame) and checked to be the
ones the release was built from: the image's voxels against ``cases.voxel_sha256`` and its grid
against ``cases.affine``, and each exported term's source label, resampled and cropped as
preprocess did, against the store's ``original`` layer, voxel for voxel. A file or a dataset YAML
changed since the release is an error naming the case and file. The export's choices — which
cases, which terms each holds, QC, ``--partial``'s ignore voxels, painting order, regions — are
made as on the store grid; only the voxels come from the source files. So only the ``original``
layer can be exported this way (pseudo and revised labels exist on the store grid alone).

The image is written in physical units as read (the dataset's ``intensity_offset`` and
``image_flip`` fixes applied; preprocess's clipping of far outliers not), on the source image's
grid; other channels of a study are put on the first channel's source grid as on the store grid
(:func:`curator.export.channels.onto`: a voxel shift copies them, another grid is interpolated).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from curator.errors import ConfigError, CuratorError, InputError, ReleaseError
from curator.io.volume import Geometry

if TYPE_CHECKING:
    from curator.export.common import ExportCase
    from curator.preprocess.labels import Plane
    from curator.release.query import Release
    from curator.runner.context import Context, Source
    from curator.store import CaseStore

GRIDS = ("preprocessed", "source")
SOURCE_GRID = ("source: each case's source scan grid — the image as its dataset ships it, the label from the "
               "dataset's own label files through the harmonize mapping (checked against the release) — not the "
               "store grid; `grids` records each case's source grid, the export's")
_COLUMNS = ("case_id", "source", "image_path", "image_channel", "label_paths", "label_keys", "label_status",
            "has_label", "voxel_sha256", "affine", "shape")


def check_request(grid: str, pipeline: str | Path | None, layers: Sequence[str]) -> None:
    """Refuse a ``grid`` other than :data:`GRIDS`, ``source`` without ``pipeline``, and ``source``
    with layers other than ``original``."""
    if grid not in GRIDS:
        raise ConfigError("config_error", f"--grid {grid!r}: give preprocessed (the store grid) or source")
    if grid == "preprocessed":
        if pipeline is not None:
            raise ConfigError("config_error", "--pipeline names the source files for --grid source",
                              remedy="add --grid source, or leave out --pipeline")
        return
    if pipeline is None:
        raise ConfigError("config_error", "--grid source reads each case's source files, which the release does "
                          "not hold", remedy="add --pipeline pipeline.yaml (the pipeline the release was built "
                          "with: its sources' roots)")
    if tuple(layers) != ("original",):
        raise ConfigError("config_error", f"--grid source exports the datasets' own annotation, but --layers asks "
                          f"for {', '.join(layers)}: pseudo and revised labels exist on the store grid only",
                          remedy="add --layers original (or export on the store grid)")


@dataclass
class SourceCase:
    """One case on its source grid: the image in physical units, its grid, the label planes; what
    :func:`curator.export.common.write_case` reads instead of the store (``physical_image``,
    ``geometry``, ``masks_from``), each term checked against ``store`` when it is read."""

    case_id: str
    image: NDArray[Any]
    geometry: Geometry
    planes: list[Plane]
    store: CaseStore
    file: str  # the label file named in errors (the image when there is none)

    def physical_image(self, box: Any = None) -> NDArray[Any]:
        return self.image if box is None else self.image[box]

    def masks_from(self, chosen: Mapping[str, str], terms: Sequence[str], box: Any = None) -> NDArray[np.bool_]:
        """``(len(terms), *shape)`` masks of ``terms`` on the source grid (all False where ``chosen``
        names no layer); each one that ``chosen`` takes from ``original`` is first checked against
        the store's: the source label resampled and cropped as preprocess did must be the store's."""
        if box is not None:
            raise ValueError("a source-grid case is read whole")
        if any(layer != "original" for layer in chosen.values()):
            raise ValueError(f"only the original layer is on the source grid, not {sorted(set(chosen.values()))}")
        out = _term_masks(self.planes, [t if t in chosen else None for t in terms], self.geometry.shape)
        self._check([t for t in terms if t in chosen])
        return out

    def _check(self, terms: Sequence[str]) -> None:
        if not terms:
            return
        from curator.preprocess.resample import reorient, resample_labels, target_grid

        a = self.store.attrs
        missing = [k for k in ("target_spacing", "resampled_shape", "crop_start") if a.get(k) is None]
        if missing:
            raise self._changed(f"its store records no {', '.join(missing)} (written by an older curator), so its "
                                "source labels cannot be checked against it")
        codes = str(a.get("orientation") or "RAS")
        _, ras = reorient(np.broadcast_to(np.uint8(0), self.geometry.shape), self.geometry, codes)
        grid, ratios = target_grid(ras, tuple(float(x) for x in a["target_spacing"]))
        box = tuple(slice(s, s + n) for s, n in zip(a["crop_start"], self.store.geometry.shape, strict=True))
        if list(grid.shape) != list(a["resampled_shape"]) or grid.mismatch(
                _uncropped(self.store.geometry, a["crop_start"], grid.shape), tol_mm=1e-3) is not None:
            raise self._changed("the source image's grid, resampled as preprocess did, is not the store's")
        planes = [(resample_labels(reorient(arr, self.geometry, codes)[0], ratios, grid.shape,
                                   str(a.get("label_interpolation") or "nearest"))[box], values, raw)
                  for arr, values, raw in self.planes]
        mine = _term_masks(planes, list(terms), self.store.geometry.shape)
        theirs = self.store.masks(list(terms), "original")
        for t, x, y in zip(terms, mine, theirs, strict=True):
            if not np.array_equal(x, y):
                raise self._changed(f"its {t} label, resampled as preprocess did, differs from the store's in "
                                    f"{int(np.count_nonzero(x != y))} voxels")

    def _changed(self, detail: str) -> ReleaseError:
        from curator.preprocess.stage import PreprocessStage

        version = str(self.store.attrs.get("stage_version") or "?")
        older = (f"; or the store was written by preprocess stage version {version} (this curator's is "
                 f"{PreprocessStage.version}), which resampled otherwise: build the release again"
                 if version != PreprocessStage.version else "")
        return ReleaseError("release_error", f"case {self.case_id}: {detail}: the source files, or the dataset's "
                            f"YAML (its label values, fixes), are not those the release was built from{older}",
                            path=self.file, remedy="point --pipeline at the pipeline and files the release was "
                            "built from, or export on the store grid (--grid preprocessed)")


def _uncropped(store: Geometry, start: Sequence[int], shape: tuple[int, ...]) -> Geometry:
    """The resampled grid a store was cropped from (its first voxel ``start`` voxels back)."""
    m = store.matrix.copy()
    m[:3, 3] = store.voxel_to_world(-np.asarray(start, dtype=np.float64))[0]
    return Geometry.from_affine(shape, m)


def _term_masks(planes: Sequence[Plane], terms: Sequence[str | None], shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """``(len(terms), *shape)``: each term's union over the planes' codes mapping to it (all False
    for ``None``)."""
    out = np.zeros((len(terms), *shape), dtype=bool)
    for arr, values, _ in planes:
        for i, t in enumerate(terms):
            codes = [c for c, ts in values.items() if t is not None and t in ts]
            if codes:
                out[i] |= np.isin(arr, codes)
    return out


class SourceReader:
    """Reads the exported cases' source files (picklable: an export's worker processes build their
    own pipeline context from ``pipeline``)."""

    def __init__(self, release: Release, pipeline: str | Path, case_ids: Collection[str]) -> None:
        from curator.config import PipelineConfig

        self.pipeline = Path(pipeline)
        PipelineConfig.load(self.pipeline)  # a missing or invalid file is said now, not per case
        table = release.table("cases")
        wanted = set(case_ids)
        self.rows: dict[str, dict[str, Any]] = {r["case_id"]: r for r in table.select(
            [c for c in _COLUMNS if c in table.columns]).to_dicts() if r["case_id"] in wanted}
        self._ctx: Context | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_ctx": None}

    @property
    def ctx(self) -> Context:
        if self._ctx is None:
            from curator.config import PipelineConfig
            from curator.runner.context import Context

            self._ctx = Context(PipelineConfig.load(self.pipeline))
        return self._ctx

    def _source(self, name: str) -> Source:
        src = self.ctx.sources.get(name)
        if src is None:
            raise ConfigError("config_error", f"the release's source {name!r} is not among the sources of "
                              f"{self.pipeline.name}", path=str(self.pipeline),
                              remedy="give the pipeline the release was built with (its sources: list it)")
        return src

    def _paths(self, row: dict[str, Any]) -> dict[str, Any]:
        """The case's file paths: the release's, or the workspace's for a source with
        pseudonymous ids (whose release publishes none)."""
        if row.get("image_path") is not None:
            return row
        table = self.ctx.workspace.read_table("cases", ["case_id", "image_path", "label_paths", "label_keys"])
        found = [r for r in (table.to_pylist() if table is not None else []) if r["case_id"] == row["case_id"]]
        if not found or found[0]["image_path"] is None:
            raise ConfigError("config_error", f"case {row['case_id']}: the release publishes no file paths for its "
                              f"source, and the workspace of {self.pipeline.name} does not list the case",
                              path=str(self.pipeline), remedy="give the pipeline (and workspace) the release was "
                              "built with")
        return {**row, **found[0]}

    def read(self, case: ExportCase, store: CaseStore) -> SourceCase:
        """``case`` on its source grid; ``store``: its store, which each term read is checked against."""
        from curator.harmonize.stage import harmonize_taxonomy
        from curator.ingest.core import voxel_checksum
        from curator.io.confined import resolve_inside
        from curator.io.formats import check_memory, read_volume
        from curator.preprocess import terms as termmap
        from curator.preprocess.stage import image_fixes, read_label_planes
        from curator.registry.fixes import for_files, non_finite_fill

        row = self._paths(self.rows[case.case_id])
        src = self._source(row["source"])
        root = src.root
        rel = row["image_path"]
        path = root / rel
        check_memory(float(np.prod(row["shape"], dtype=np.float64)) * 12, f"the source image {tuple(row['shape'])} "
                     f"of case {case.case_id}", str(path))
        fixes = for_files(src.spec.fixes, [rel, *(row["label_paths"] or [])])
        vol = read_volume(resolve_inside(root, path), role="image", channel=row["image_channel"],
                          non_finite=non_finite_fill(fixes, rel))
        if row.get("voxel_sha256") and voxel_checksum(np.ascontiguousarray(vol.array)) != row["voxel_sha256"]:
            raise ReleaseError("release_error", f"case {case.case_id}: the image's voxels are not those the release "
                               "was built from (cases.voxel_sha256)", path=str(path),
                               remedy="point --pipeline at the pipeline and files the release was built from")
        released = Geometry.from_affine(tuple(row["shape"]), row["affine"])
        if vol.geometry.mismatch(released, tol_mm=1e-4) is not None:
            raise ReleaseError("release_error", f"case {case.case_id}: the image's grid is not the one the release "
                               f"recorded ({vol.geometry.mismatch(released, tol_mm=1e-4)})", path=str(path),
                               remedy="point --pipeline at the pipeline and files the release was built from")
        vol, offset = image_fixes(vol, fixes, rel)
        image = _physical(vol.array, offset)
        planes: list[Plane] = []
        keys = list(row["label_keys"] or [])
        ok = bool(row.get("has_label")) and row.get("label_status") != "rejected"
        if ok and row["label_paths"]:
            spec, tax = src.spec, harmonize_taxonomy(self.ctx)
            per_structure = spec.labels.encoding == "per_structure"
            p = {"image_path": rel, "image_channel": row["image_channel"], "label_paths": list(row["label_paths"]),
                 "label_keys": keys, "encoding": spec.labels.encoding, "fixes": fixes,
                 "ignore": sorted({str(v) for v in spec.labels.ignore}),
                 "declared": sorted(spec.labels.declared_values()),
                 "terms": termmap.structure_terms(spec, keys, tax) if per_structure else termmap.value_terms(spec, tax)}
            try:
                planes, _ = read_label_planes(p, root, vol.geometry, lambda *a, **k: None)  # ingest warned already
            except CuratorError as e:
                raise InputError(e.kind, f"case {case.case_id}: {e.detail}", path=e.path,
                                 remedy=e.remedy) from e
        first = str(root / row["label_paths"][0]) if row["label_paths"] else str(path)
        return SourceCase(case.case_id, image, vol.geometry, planes, store, first)


def _physical(a: NDArray[Any], offset: float) -> NDArray[Any]:
    """``a + offset`` in a dtype that holds it: integer when both are (int16 when it fits), else float32."""
    if offset == 0.0:
        return a
    if a.dtype.kind in "iu" and offset == int(offset):
        out = a.astype(np.int32) + int(offset)
        lo, hi = (int(out.min()), int(out.max())) if out.size else (0, 0)
        info = np.iinfo(np.int16)
        return out.astype(np.int16) if info.min <= lo and hi <= info.max else out
    return a.astype(np.float32) + np.float32(offset)
