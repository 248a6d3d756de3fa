"""Per-case Zarr v3 stores: the contract between preprocess, pseudolabel, qc, release and the loader.

One store per case at ``<workspace>/stores/<case_id>.zarr`` (copied into releases)::

    <case_id>.zarr/            group; attrs["curator"] = geometry + provenance (below)
      image                    3-D array (absent for label-only cases)
      body                     uint8 body mask on the image grid (absent without an image)
      labels/<layer>/<plane>   integer label planes; layer in original | revised | pseudo;
                               plane "0", "1", ... (several only when structures overlap)

``attrs["curator"]`` holds ``affine`` (16 numbers, voxel → RAS mm), ``shape``,
``case_id``, ``modality``, ``source_affine``/``source_shape`` (grid before preprocessing),
``crop_start`` (index of this grid's first voxel in the resampled grid) and
``normalisation`` (how to turn stored image values into network input).
Each label plane's attrs hold ``values``: ``{"<code>": ["<term id>", ...]}``; code 0 is
background. A term's mask is the union of every code that maps to it in every plane, so
codes may map to several terms and overlapping structures live in separate planes.

Writes are atomic: a store is built under a temporary name and renamed into place; a
layer is written to a temporary folder inside the store and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray

from curator.errors import WorkspaceError
from curator.io.fsutil import atomic_path
from curator.io.volume import Geometry

LAYERS = ("original", "revised", "pseudo")
DEFAULT_CHUNKS = (64, 64, 64)


def _array(group: zarr.Group, name: str, data: NDArray[Any], chunks: tuple[int, ...] | None = None) -> None:
    c = tuple(min(a, b) for a, b in zip(chunks or DEFAULT_CHUNKS, data.shape, strict=True))
    arr = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=c, fill_value=0)
    arr[...] = data


class CaseStore:
    """Read access (and layer writes) for one case store."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not (self.path / "zarr.json").exists():
            raise WorkspaceError("store_missing", "no Zarr store here", path=str(self.path),
                                 remedy="run the preprocess stage first")
        self.group = zarr.open_group(str(self.path), mode="r")

    # -- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], *, geometry: Geometry, attrs: dict[str, Any],
               image: NDArray[Any] | None = None, body: NDArray[Any] | None = None,
               labels: list[tuple[NDArray[Any], dict[int, list[str]]]] | None = None,
               chunks: tuple[int, ...] | None = None) -> CaseStore:
        """Write a whole store atomically (replacing an older one)."""
        dest = Path(path)
        with atomic_path(dest) as tmp:
            g = zarr.open_group(str(tmp), mode="w")
            meta = dict(attrs)
            meta.update({"affine": list(geometry.affine), "shape": list(geometry.shape)})
            g.attrs["curator"] = meta
            if image is not None:
                _array(g, "image", image, chunks)
            if body is not None:
                _array(g, "body", body.astype(np.uint8), chunks)
            if labels:
                _write_planes(g.require_group("labels").require_group("original"), labels, chunks)
        return cls(dest)

    def write_layer(self, layer: str, planes: list[tuple[NDArray[Any], dict[int, list[str]]]],
                    attrs: dict[str, Any] | None = None, chunks: tuple[int, ...] | None = None) -> None:
        """Add or replace one label layer atomically; ``original`` can never be replaced."""
        if layer not in LAYERS:
            raise WorkspaceError("store_error", f"unknown label layer {layer!r}; layers are {LAYERS}")
        final = self.path / "labels" / layer
        if layer == "original" and final.exists():
            raise WorkspaceError("store_error", "the original label layer is never overwritten",
                                 path=str(final), remedy="write revised or pseudo labels instead")
        tmp = self.path / "labels" / f".{layer}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            g = zarr.open_group(str(tmp), mode="w")
            g.attrs["curator"] = dict(attrs or {})
            _write_planes(g, planes, chunks)
            if final.exists():
                old = self.path / "labels" / f".{layer}.old-{uuid.uuid4().hex[:8]}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                (self.path / "labels").mkdir(exist_ok=True)
                if not (self.path / "labels" / "zarr.json").exists():
                    zarr.open_group(str(self.path), mode="r+").require_group("labels")
                os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.group = zarr.open_group(str(self.path), mode="r")

    # -- reading --------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs["curator"])

    @property
    def geometry(self) -> Geometry:
        a = self.attrs
        return Geometry.from_affine(tuple(a["shape"]), a["affine"])

    def has_image(self) -> bool:
        return "image" in self.group

    @property
    def image(self) -> zarr.Array:
        return self.group["image"]  # type: ignore[return-value]

    def body(self) -> NDArray[np.bool_] | None:
        return np.asarray(self.group["body"][...]).astype(bool) if "body" in self.group else None

    def layers(self) -> list[str]:
        if "labels" not in self.group:
            return []
        return [name for name in LAYERS if name in self.group["labels"]]  # type: ignore[operator]

    def planes(self, layer: str = "original") -> Iterator[tuple[zarr.Array, dict[int, list[str]]]]:
        grp = self.group["labels"][layer]  # type: ignore[index]
        for name in sorted(k for k in grp.array_keys()):  # type: ignore[union-attr]
            arr = grp[name]
            values = {int(k): list(v) for k, v in dict(arr.attrs.get("values", {})).items()}
            yield arr, values

    def terms(self, layer: str = "original") -> list[str]:
        out: list[str] = []
        for _, values in self.planes(layer):
            for ts in values.values():
                out += [t for t in ts if t not in out]
        return out

    def mask(self, term: str, layer: str = "original", box: tuple[slice, ...] | None = None) -> NDArray[np.bool_]:
        """Boolean mask of ``term`` (union over codes and planes), optionally inside ``box``."""
        box = box or tuple(slice(None) for _ in range(3))
        out: NDArray[np.bool_] | None = None
        for arr, values in self.planes(layer):
            codes = [c for c, ts in values.items() if term in ts]
            if not codes:
                continue
            data = np.asarray(arr[box])
            m = np.isin(data, codes)
            out = m if out is None else (out | m)
        if out is None:
            shape = tuple(len(range(*s.indices(n))) for s, n in zip(box, self.geometry.shape, strict=True))
            return np.zeros(shape, dtype=bool)
        return out

    def info(self) -> str:
        return json.dumps(self.attrs, indent=1)


def _write_planes(group: zarr.Group, planes: list[tuple[NDArray[Any], dict[int, list[str]]]],
                  chunks: tuple[int, ...] | None) -> None:
    for i, (data, values) in enumerate(planes):
        _array(group, str(i), data, chunks)
        group[str(i)].attrs["values"] = {str(k): list(v) for k, v in sorted(values.items())}
