"""The grid of each exported case's source scan, and the way from the export's grid back to it.

Both exports write a case on its **store grid**, not on the grid of the dataset's own files: the
scan reoriented to RAS, resampled to the release's target spacing and cropped to the body
(docs/preprocess.md). A model trained on the export predicts on that grid, and scoring there
compares with a resampled reference. So each export records, per exported case (under ``grids``
in nnU-Net's ``curator_export.json`` and MONAI's ``datalist.json``; :func:`grid_records`), the
source scan's grid — its shape and voxel-to-RAS affine as curator read it, the image and label
files (relative to the source root, as the release's ``cases`` table publishes them) — and the
export grid: its shape and affine, the resampled grid's shape and where the crop starts in it.

:func:`to_source` puts a label map on the export grid onto the source grid through physical
space: each source voxel takes the value of the export voxel whose centre is nearest its own
(background outside the export grid's crop). The store grid is the source grid with its axes
permuted or flipped and scaled (reorientation and resampling keep every direction), so the map
is separable: one index per source row, column and slice. Where the export grid is finer than
the source's along every axis (an upsampled 5 mm scan) a label mapped back is the source label
exactly; along an axis the export is coarser (0.78 mm resampled to 1 mm) it keeps the export's
resolution — ``curator export map-back`` (:mod:`curator.export.map_back`) notes those cases.

>>> import numpy as np
>>> from curator.io.volume import Geometry
>>> src = Geometry.from_affine((4, 2, 2), np.diag([-3.0, -3.0, 5.0, 1.0]))   # LPS, 3 x 3 x 5 mm
>>> lab = np.zeros((4, 2, 2), np.uint8); lab[1, 0, 1] = 2
>>> exp = Geometry.from_affine((12, 6, 2), [[1.0, 0, 0, -10], [0, 1, 0, -4], [0, 0, 5, 0], [0, 0, 0, 1]])
>>> on_export = np.zeros(exp.shape, np.uint8); on_export[6:9, 3:6, 1] = 2   # the same voxel, 1 mm RAS
>>> back = to_source(on_export, exp, src)
>>> bool(np.array_equal(back, lab))
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from curator.io.volume import Geometry

if TYPE_CHECKING:
    from curator.release.query import Release

GRIDS_KEY = "grids"  # the export JSON's key: exported name -> its record
GRID_KEY = "grid"  # what grid the export's files are on
STORE_GRID = ("preprocessed: each case's store grid (reoriented to RAS, resampled to the release's target "
              "spacing, cropped to the body), not its source scan's; `grids` records each case's source grid, "
              "and `curator export map-back` puts predictions on it")
_QUERY = """select c.case_id, c.source, c.dataset, c.image_path, c.image_channel, c.label_paths, c.shape,
c.affine, c.orientation, p.shape, p.affine, p.orientation, p.spacing_mm, p.resampled_shape, p.crop_start
from cases c join preprocessed p using (case_id)"""


def grid_records(release: Release, names: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Each exported name's record (``names``: exported name -> the case whose grid it has, a
    study's first channel), in ``names``' order: ``case_id``, ``source``, ``dataset``,
    ``image_path``, ``image_channel`` and ``label_paths`` (as the release's ``cases`` table
    publishes them: relative to the source root, null for a source with pseudonymous ids),
    ``source_shape``, ``source_affine`` (voxel -> RAS mm, row-major 4 x 4, as curator read the
    image), ``source_orientation``, ``export_shape``, ``export_affine``, ``export_orientation``,
    ``export_spacing_mm``, ``resampled_shape`` and ``crop_start`` (the export grid's first voxel
    in the resampled grid)."""
    wanted = set(names.values())
    rows = {r[0]: r for r in release.sql(_QUERY).fetchall() if r[0] in wanted}
    out = {}
    for name, cid in names.items():
        r = rows[cid]
        out[name] = {
            "case_id": cid, "source": r[1], "dataset": r[2], "image_path": r[3], "image_channel": r[4],
            "label_paths": list(r[5]) if r[5] is not None else None,
            "source_shape": list(r[6]), "source_affine": list(r[7]), "source_orientation": r[8],
            "export_shape": list(r[9]), "export_affine": list(r[10]), "export_orientation": r[11],
            "export_spacing_mm": list(r[12]), "resampled_shape": list(r[13]), "crop_start": list(r[14]),
        }
    return out


def grid_section(release: Release, names: Mapping[str, str], grid: str = "preprocessed") -> dict[str, Any]:
    """The export JSON's ``grid`` (what grid its files are on, in words) and ``grids``
    (:func:`grid_records`); on the source ``grid`` (:mod:`curator.export.on_source`) each record's
    export grid is its source grid, and ``resampled_shape`` and ``crop_start`` are null."""
    from curator.export.on_source import SOURCE_GRID

    records = grid_records(release, names)
    if grid == "source":
        for r in records.values():
            r.update(export_shape=r["source_shape"], export_affine=r["source_affine"],
                     export_orientation=r["source_orientation"], resampled_shape=None, crop_start=None,
                     export_spacing_mm=list(Geometry.from_affine(tuple(r["source_shape"]), r["source_affine"]).spacing))
    return {GRID_KEY: SOURCE_GRID if grid == "source" else STORE_GRID, GRIDS_KEY: records}


def grids_of(record: Mapping[str, Any]) -> tuple[Geometry, Geometry]:
    """The export grid and the source grid of one :func:`grid_records` record."""
    return (Geometry.from_affine(tuple(record["export_shape"]), record["export_affine"]),
            Geometry.from_affine(tuple(record["source_shape"]), record["source_affine"]))


def source_indices(export: Geometry, source: Geometry) -> tuple[tuple[int, int, int], list[NDArray[np.intp]]]:
    """How the source grid indexes the export grid: ``perm`` (source axis ``a`` runs along export
    axis ``perm[a]``) and, per source axis, the export index nearest each source voxel's centre
    (a tie, an exact half to 1e-6 voxel, goes up; out-of-grid indices are left as they are).
    A ``ValueError`` when the grids' axes are not parallel (no store grid is so)."""
    m = np.linalg.inv(export.matrix) @ source.matrix  # source voxel index -> export voxel index
    lin = m[:3, :3]
    perm = tuple(int(b) for b in np.argmax(np.abs(lin), axis=0))
    off = np.abs(lin).copy()
    off[list(perm), [0, 1, 2]] = 0.0
    if sorted(perm) != [0, 1, 2] or off.max() > 1e-6 * np.abs(lin).max():
        raise ValueError(f"the export grid ({export.orientation}) is not parallel to the source grid "
                         f"({source.orientation})")
    index = []
    for a in range(3):
        b = perm[a]
        x = lin[b, a] * np.arange(source.shape[a], dtype=np.float64) + m[b, 3]
        index.append(np.floor(np.round(x, 6) + 0.5).astype(np.intp))
    return (perm[0], perm[1], perm[2]), index


def to_source(labels: NDArray[Any], export: Geometry, source: Geometry) -> NDArray[Any]:
    """``labels`` (an array on the ``export`` grid) on the ``source`` grid: each source voxel takes
    the export voxel nearest its centre in physical space, 0 outside the export grid; the values
    are copied, never blended."""
    if tuple(labels.shape) != export.shape:
        raise ValueError(f"labels of shape {tuple(labels.shape)} are not on the export grid {export.shape}")
    perm, index = source_indices(export, source)
    inside = [(i >= 0) & (i < export.shape[perm[a]]) for a, i in enumerate(index)]
    out = np.zeros(source.shape, dtype=labels.dtype)
    if all(x.any() for x in inside):
        along = np.transpose(labels, perm)  # axis a runs along source axis a
        out[np.ix_(*inside)] = along[np.ix_(*(i[ok] for i, ok in zip(index, inside, strict=True)))]
    return out


def coarser_axes(export: Geometry, source: Geometry) -> list[int]:
    """The source axes along which the export grid's spacing is coarser than the source's: there a
    label mapped back keeps the export's resolution (its boundary steps are the export's voxels)."""
    perm, _ = source_indices(export, source)
    return [a for a in range(3) if export.spacing[perm[a]] > source.spacing[a] * (1 + 1e-6)]
