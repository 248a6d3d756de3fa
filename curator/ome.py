"""OME-NGFF 0.5 (OME-Zarr) metadata in case stores, so OME-Zarr tools (napari-ome-zarr,
neuroglancer, ome-zarr-py, ...) see the voxels' size and position in millimetres.

Attribute ``ome`` beside ``curator`` (which stays as it was: curator reads only that)::

    <case>.zarr/          "ome": {"version": "0.5", "multiscales": [{"name": <case_id>,
                                   "axes": i, j, k (type space, unit millimeter),
                                   "datasets": [{"path": "image", "coordinateTransformations":
                                                 [scale = voxel spacing, translation = RAS mm of voxel (0, 0, 0)]}]}]}
      labels/             "ome": {"version": "0.5", "labels": [<layers of one plane>]}
        <layer>/          "ome": {"version": "0.5", "image-label": {properties: code -> terms},
                                  "multiscales": [the same, dataset "0"]}

World coordinates are patient RAS millimetres (those of ``attrs.curator.affine``): a voxel
``(i, j, k)`` lies at ``scale · (i, j, k) + translation``, which is the affine exactly when
the grid's axes run along R, A and S. The axes are named ``i``, ``j``, ``k`` because OME-NGFF 0.5
requires an array's Zarr ``dimension_names`` to equal the axes' names, and curator's arrays have
carried those names since the first sharded store (renaming them would rewrite every array's
metadata, and change the names zarr-python, tensorstore and xarray users index by).

Nothing is written (and an ``ome`` found is removed) where it would not be exact:

* a grid whose axes do not run along +R, +A, +S — residual obliquity kept in the direction
  cosines (``docs/preprocess.md``) moving some voxel more than :data:`TOL_MM`, or an
  ``orientation`` other than RAS: OME-NGFF 0.5 has scale and translation only, no rotation
  or flip, and a misleading position is worse than none;
* a store whose geometry the reader guessed (``attrs.curator.geometry_guessed``: a DICOM without
  pixel spacing, orientation or position, read as 1 mm voxels at an identity orientation): the
  same reasoning, a position known to be invented is worse than none;
* a store without an image (a label-only case): an OME image needs its image array;
* a label layer of more than one plane (overlapping structures): an OME label image is one
  array (per resolution level), and curator keeps the planes as sibling arrays of the layer's
  group, which its reader, loader and exports rely on — the layer is left out of the ``labels``
  list rather than shown with part of its structures.

:func:`write_ome` brings a store's metadata to that state and is idempotent. It never rewrites a
file in place: a changed ``zarr.json`` is written beside it and renamed over it, because a
workspace store's files are hard-linked into releases. ``CaseStore.create`` and
``CaseStore.write_layer`` call it, and the release step calls it on each store's release copy,
so releases of workspaces whose stores predate it carry the metadata without preprocessing again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from curator.io.fsutil import atomic_path

__all__ = ["AXES", "OME_VERSION", "TOL_MM", "image_transforms", "write_ome"]

OME_VERSION = "0.5"
AXES = ("i", "j", "k")  # the arrays' dimension_names (curator.store._array)
TOL_MM = 1e-3  # what curator calls the same position elsewhere (Geometry.mismatch)


def image_transforms(shape: Any, affine: Any) -> list[dict[str, Any]] | None:
    """``[scale, translation]`` (OME-NGFF coordinate transformations) placing every voxel of the
    grid where ``affine`` (16 numbers, voxel → RAS mm) does, within :data:`TOL_MM`; None when
    no scale and translation can (an oblique or flipped grid).

    >>> image_transforms((10, 10, 4), [0.8, 0, 0, -100.0, 0, 0.8, 0, 20.5, 0, 0, 3.0, 7.0, 0, 0, 0, 1])
    [{'type': 'scale', 'scale': [0.8, 0.8, 3.0]}, {'type': 'translation', 'translation': [-100.0, 20.5, 7.0]}]
    >>> image_transforms((10, 10, 4), [-0.8, 0, 0, 0, 0, -0.8, 0, 0, 0, 0, 3.0, 0, 0, 0, 0, 1]) is None  # LPS
    True
    """
    try:
        a = np.asarray(affine, dtype=np.float64).reshape(4, 4)
        far = np.asarray(shape, dtype=np.float64).reshape(3) - 1
    except (TypeError, ValueError):
        return None
    if not np.all(np.isfinite(a)) or np.any(far < 0):
        return None
    scale = np.diag(a)[:3]
    if np.any(scale <= 0):  # a flipped axis: OME-NGFF has no negative scale tools agree on
        return None
    # the map is linear, so the voxel farthest from where scale + translation put it is a corner
    rest = a[:3, :3] - np.diag(scale)
    corners = np.array([[far[0] * x, far[1] * y, far[2] * z] for x in (0, 1) for y in (0, 1) for z in (0, 1)])
    if float(np.max(np.linalg.norm(corners @ rest.T, axis=1))) > TOL_MM:
        return None
    return [{"type": "scale", "scale": [float(s) for s in scale]},
            {"type": "translation", "translation": [float(t) for t in a[:3, 3]]}]


def _multiscale(path: str, transforms: list[dict[str, Any]], name: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"axes": [{"name": n, "type": "space", "unit": "millimeter"} for n in AXES],
                           "datasets": [{"path": path, "coordinateTransformations": transforms}]}
    if name:
        out["name"] = name
    return out


def _meta(node: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((node / "zarr.json").read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _is_array(meta: dict[str, Any] | None, shape: Any) -> bool:
    """An array OME-NGFF 0.5 can name: on the store's grid, with the axes as its dimension names."""
    return (meta is not None and meta.get("node_type") == "array" and list(meta.get("shape") or []) == list(shape)
            and tuple(meta.get("dimension_names") or ()) == AXES)


def _set(node: Path, meta: dict[str, Any], want: dict[str, Any] | None) -> bool:
    """Put ``want`` as the node's ``ome`` attribute (None: none); whether its zarr.json changed."""
    attrs = meta.get("attributes")
    attrs = dict(attrs) if isinstance(attrs, dict) else {}
    if attrs.get("ome") == want:
        return False
    if want is None:
        attrs.pop("ome", None)
    else:
        attrs["ome"] = want
    meta = {**meta, "attributes": attrs}  # key order kept: the bytes are zarr-python's for these attributes
    with atomic_path(node / "zarr.json") as tmp:  # a new file: the old one may be hard-linked into a release
        tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return True


def _planes(layer: Path) -> list[str]:
    return sorted(p.name for p in layer.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (_meta(p) or {}).get("node_type") == "array")


def write_ome(path: str | os.PathLike[str], guessed: bool = False) -> list[str]:
    """Write the OME-NGFF metadata of the store at ``path`` (module docstring) where it differs
    from what is there; the nodes whose ``zarr.json`` changed (``""`` for the root). ``guessed``:
    the store's geometry is the reader's guess though the store does not say so (written before
    ``geometry_guessed`` was kept): no world coordinates, as for a store that says so."""
    from curator.store import LAYERS

    root = Path(path)
    meta = _meta(root)
    if meta is None:
        return []
    cur = (meta.get("attributes") or {}).get("curator")
    cur = cur if isinstance(cur, dict) else {}
    shape = cur.get("shape")
    tf = image_transforms(shape, cur.get("affine"))
    if tf is not None and (guessed or cur.get("geometry_guessed") or not _is_array(_meta(root / "image"), shape)):
        tf = None
    name = cur.get("case_id") if isinstance(cur.get("case_id"), str) else None
    changed = []
    want: dict[str, Any] | None = None if tf is None else {
        "version": OME_VERSION, "multiscales": [_multiscale("image", tf, name)]}
    if _set(root, meta, want):
        changed.append("")
    labels = root / "labels"
    lmeta = _meta(labels)
    if lmeta is None or lmeta.get("node_type") != "group":
        return changed
    shown = []
    groups = [p.name for p in labels.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for layer in sorted(groups, key=lambda n: (LAYERS.index(n) if n in LAYERS else len(LAYERS), n)):
        gmeta = _meta(labels / layer)
        if gmeta is None or gmeta.get("node_type") != "group":
            continue
        want = None
        planes = _planes(labels / layer)
        pmeta = _meta(labels / layer / planes[0]) if len(planes) == 1 else None
        if tf is not None and pmeta is not None and _is_array(pmeta, shape):
            values = (pmeta.get("attributes") or {}).get("values") or {}
            props = [{"label-value": int(code), "terms": list(terms)}
                     for code, terms in sorted(values.items(), key=lambda kv: int(kv[0])) if int(code) != 0]
            want = {"version": OME_VERSION, "image-label": {"source": {"image": "../../"}, "properties": props},
                    "multiscales": [_multiscale(planes[0], tf, layer)]}
            shown.append(layer)
        if _set(labels / layer, gmeta, want):
            changed.append(f"labels/{layer}")
    if _set(labels, lmeta, None if tf is None else {"version": OME_VERSION, "labels": shown}):
        changed.append("labels")
    return changed
