"""Per-case Zarr v3 stores: the contract between preprocess, pseudolabel, qc, release and the loader.

One store per case at ``<workspace>/stores/<case_id>.zarr`` (copied into releases)::

    <case_id>.zarr/            group; attrs["curator"] = geometry + provenance (below)
      image                    3-D array (absent for label-only cases)
      body                     uint8 body mask on the image grid (absent without an image)
      labels/<layer>/<plane>   integer label planes; layer in original | revised | pseudo;
                               plane "0", "1", ... (several only when structures overlap)

Groups also carry OME-NGFF 0.5 metadata (``attrs["ome"]``: the root as an OME-Zarr image, each
label layer of one plane as an OME label image; :mod:`curator.ome`, which says when none is
written) so OME-Zarr tools place the voxels in millimetres; curator itself reads only
``attrs["curator"]``.

``attrs["curator"]`` holds ``affine`` (16 numbers, voxel → RAS mm), ``shape``,
``case_id``, ``modality``, ``source_affine``/``source_shape`` (grid before preprocessing),
``crop_start`` (index of this grid's first voxel in the resampled grid) and
``normalisation`` (how to turn stored image values into network input).
Each label plane's attrs hold ``values``: ``{"<code>": ["<term id>", ...]}``; code 0 is
background. A term's mask is the union of every code that maps to it in every plane, so
codes may map to several terms and overlapping structures live in separate planes.

Layout (chosen with ``benchmarks/patch_read.py``, see ``docs/preprocess.md``): every array
is sharded — one shard file holds up to :data:`SHARD_SHAPE` voxels as independently
compressed inner chunks of :data:`INNER_CHUNKS` (Blosc; see :func:`codec_for`), each followed
by its CRC32C (zarr's ``crc32c`` codec: the reader refuses a damaged chunk, which Blosc would
mostly decode into other voxels without a word; stores written before 2026-12-06 have none and
read as before). Plain
zarr-python and tensorstore read the stores; :class:`ShardReader` reads boxes faster by
decoding only the inner chunks a box touches straight from the shard files.

Writes are atomic: a store is built under a temporary name and renamed into place; a
layer is written to a temporary folder inside the store and renamed into place; a changed
``zarr.json`` (the OME metadata's labels list) is written beside the old one and renamed over it.
No file of a store is ever rewritten in place: they are hard-linked into releases.

>>> import numpy as np, tempfile
>>> from curator.io.volume import Geometry
>>> g = Geometry.from_affine((40, 30, 20), np.diag([1.0, 1.0, 3.0, 1.0]))
>>> lab = np.zeros(g.shape, np.uint8); lab[5:9, 5:9, 5:9] = 1
>>> s = CaseStore.create(tempfile.mkdtemp() + "/c.zarr", geometry=g, attrs={"case_id": "c"},
...                      image=np.ones(g.shape, np.int16), labels=[(lab, {1: ["liver"]})])
>>> int(s.mask("liver").sum()), s.read("image", (slice(0, 2), slice(0, 2), slice(0, 2))).shape
(64, (2, 2, 2))
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.codecs import BloscCodec, Crc32cCodec

from curator.errors import WorkspaceError
from curator.io.fsutil import atomic_path, atomic_remove
from curator.io.volume import Geometry
from curator.ome import write_ome
from curator.problem_kinds import remedy_for
from curator.store_reader import (
    Box,
    ShardReader,
    box_shape,
    full_box,
    root_attrs_issue,
    write_sharded,
)

LAYERS = ("original", "revised", "pseudo")
INNER_CHUNKS = (64, 64, 64)
SHARD_SHAPE = (256, 256, 256)
DEFAULT_CHUNKS = INNER_CHUNKS  # kept for callers of the first contract

__all__ = ["INNER_CHUNKS", "LAYERS", "SHARD_SHAPE", "CaseStore", "codec_for", "label_dtype", "root_attrs_issue",
           "store_sha256"]


def codec_for(dtype: np.dtype[Any]) -> BloscCodec:
    """Blosc LZ4 (decodes ~3x faster than zstd: benchmarks/patch_read.py); byte shuffle for
    images, bit shuffle for one-byte masks and label planes."""
    if np.dtype(dtype).itemsize == 1:
        return BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")
    return BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")


def label_dtype(max_code: int) -> np.dtype[Any]:
    """The smallest unsigned dtype holding codes up to ``max_code`` (1 byte whenever they fit)."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_code <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise WorkspaceError("store_error", f"label code {max_code} does not fit 32 bits")


def _layout(shape: tuple[int, ...], chunks: tuple[int, ...] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    inner = tuple(max(1, min(c, s)) for c, s in zip(chunks or INNER_CHUNKS, shape, strict=True))
    # a shard is a whole number of inner chunks, at most SHARD_SHAPE (rounded to chunks)
    shard = tuple(i * max(1, min(-(-s // i), sh // i)) for i, s, sh in zip(inner, shape, SHARD_SHAPE, strict=True))
    return inner, shard


def _array(group: zarr.Group, name: str, data: NDArray[Any], chunks: tuple[int, ...] | None = None) -> None:
    inner, shard = _layout(tuple(data.shape), chunks)
    group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=inner, shards=shard,
                             compressors=(codec_for(data.dtype), Crc32cCodec()), fill_value=0,
                             dimension_names=("i", "j", "k"))
    write_sharded(Path(str(group.store.root)) / group.path / name, data)  # type: ignore[attr-defined]


class CaseStore:
    """Read access (and layer writes) for one case store."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not (self.path / "zarr.json").exists():
            raise WorkspaceError("store_missing", "no Zarr store here", path=str(self.path),
                                 remedy="in a workspace, run the preprocess stage first; in a release, the store "
                                 "was removed: `curator verify RELEASE` lists what is missing")
        # metadata is read from the zarr.json files themselves: zarr-python's group API costs a few
        # ms per store opened (its async machinery), which a loader drawing from thousands of
        # stores paid on nearly every patch; the zarr group is opened only when asked for
        self._root = self._node_meta("")
        self._group: zarr.Group | None = None
        self._readers: dict[str, ShardReader] = {}
        self._plane_values: dict[str, list[tuple[str, dict[int, list[str]]]]] = {}  # layer -> planes (metadata)
        self._layers: list[str] | None = None

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
            write_ome(tmp)
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
        with atomic_path(final) as tmp:
            g = zarr.open_group(str(tmp), mode="w")
            g.attrs["curator"] = dict(attrs or {})
            _write_planes(g, planes, chunks)
            if not final.exists() and not (self.path / "labels" / "zarr.json").exists():
                zarr.open_group(str(self.path), mode="r+").require_group("labels")
        write_ome(self.path)
        self._reopen()

    def remove_layer(self, layer: str) -> bool:
        """Remove a ``revised`` or ``pseudo`` layer (renamed away first, so readers never see
        half of it); whether there was one. ``original`` can never be removed."""
        if layer not in LAYERS or layer == "original":
            raise WorkspaceError("store_error", f"only the revised and pseudo layers can be removed, not {layer!r}")
        if not atomic_remove(self.path / "labels" / layer):
            return False
        write_ome(self.path)
        self._reopen()
        return True

    def _reopen(self) -> None:
        self._root, self._group = self._node_meta(""), None
        for r in self._readers.values():  # unmap the replaced files now, not when pushed out
            r.close()
        self._readers.clear()
        self._plane_values.clear()
        self._layers = None

    # -- reading --------------------------------------------------------------------------
    @property
    def group(self) -> zarr.Group:
        """The store as a zarr-python group (opened on first use)."""
        if self._group is None:
            self._group = zarr.open_group(str(self.path), mode="r")
        return self._group

    def _node_meta(self, name: str) -> dict[str, Any] | None:
        """The parsed ``zarr.json`` of node ``name`` (``""``: the store's root), None where there is none."""
        try:
            meta = json.loads((self.path / name / "zarr.json").read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not isinstance(meta, dict):
            raise WorkspaceError("store_error", "a zarr.json holds no Zarr metadata object",
                                 path=str(self.path / name / "zarr.json"), remedy="rebuild the store (curator run)")
        return meta

    def _has(self, name: str, node_type: str = "array") -> bool:
        meta = self._node_meta(name)
        return meta is not None and meta.get("node_type") == node_type

    @property
    def attrs(self) -> dict[str, Any]:
        """The store's ``attrs["curator"]`` (geometry and provenance); a ``store_damaged`` error
        naming the store when its root ``zarr.json`` lacks them (:func:`root_attrs_issue`)."""
        issue = root_attrs_issue(self._root)
        if issue is not None:
            raise WorkspaceError("store_damaged", f"the store's root zarr.json {issue}", path=str(self.path),
                                 remedy=remedy_for("store_damaged"))
        return dict(cast(dict[str, Any], cast(dict[str, Any], self._root)["attributes"]["curator"]))

    def layer_attrs(self, layer: str) -> dict[str, Any] | None:
        """The ``curator`` attrs a label layer was written with (None when there is no such layer)."""
        meta = self._node_meta(f"labels/{layer}")
        return None if meta is None else dict((meta.get("attributes") or {}).get("curator") or {})

    @property
    def geometry(self) -> Geometry:
        a = self.attrs
        return Geometry.from_affine(tuple(a["shape"]), a["affine"])

    def has_image(self) -> bool:
        return self._has("image")

    @property
    def image(self) -> zarr.Array[Any]:
        return self.group["image"]  # type: ignore[return-value]

    def reader(self, name: str) -> ShardReader:
        """The fast box reader of array ``name`` (``image``, ``body``, ``labels/<layer>/<plane>``)."""
        r = self._readers.get(name)
        if r is None:
            if not (self.path / name / "zarr.json").exists():
                raise WorkspaceError("store_error", f"the store has no array {name!r}", path=str(self.path),
                                     remedy="check the layer/plane name (CaseStore.layers(), planes())")
            r = self._readers[name] = ShardReader(self.path / name)
        return r

    def read(self, name: str, box: Box | None = None) -> NDArray[Any]:
        """Voxels of array ``name`` inside ``box`` (slices with steps of 1; clipped boxes allowed)."""
        return self.reader(name).read(box)

    def physical_image(self, box: Box | None = None) -> NDArray[Any]:
        """The image in physical units (HU for CT): stored values times the normalisation's
        ``scale``; float32 when a scale or float16 storage applies, else the stored dtype."""
        img = self.read("image", box)
        scale = float((self.attrs.get("normalisation") or {}).get("scale", 1.0))
        if img.dtype == np.float16 or scale != 1.0:
            return img.astype(np.float32) * np.float32(scale)
        return img

    def outside_value(self, modality: str) -> float:
        """What a voxel outside the store is taken to hold, in physical units, as the loader pads
        a patch and a multi-channel export a channel: air (−1000 HU) for CT; for MR and PET the
        background, 0 (the lower bound of the store's intensity window if that is negative) — its
        normalised value is the window's lower bound, what the loader's normalised patches pad with.
        (The lower bound itself, the darkest 0.5 % of the body, made a bright frame in MR exports,
        counted by nnU-Net's nonzero mask.)"""
        if modality.upper() == "CT":
            return -1000.0
        clip = (self.attrs.get("normalisation") or {}).get("clip")
        return min(0.0, float(clip[0])) if clip else 0.0

    def body(self) -> NDArray[np.bool_] | None:
        return self.read("body").astype(bool) if self._has("body") else None

    def layers(self) -> list[str]:
        if self._layers is None:  # metadata reads: cached like the planes' values
            self._layers = ([name for name in LAYERS if self._has(f"labels/{name}", "group")]
                            if self._has("labels", "group") else [])
        return list(self._layers)

    def plane_values(self, layer: str = "original") -> list[tuple[str, dict[int, list[str]]]]:
        """``[(array name, {code: [term ids]}), ...]`` for every plane of ``layer`` (read once per
        store object: a loader asks for it on every item)."""
        if layer in self._plane_values:
            return self._plane_values[layer]
        if layer not in LAYERS:  # a typo must not read as "no such label here" (all-False masks)
            raise WorkspaceError("store_error", f"no label layer {layer!r}: the layers are {', '.join(LAYERS)}",
                                 path=str(self.path), remedy="use one of the layer names (CaseStore.layers() "
                                 "lists the ones this store holds)")
        if layer not in self.layers():
            return []
        folder = self.path / "labels" / layer
        out = []
        for name in sorted(p.name for p in folder.iterdir() if p.is_dir()):
            meta = self._node_meta(f"labels/{layer}/{name}")
            if meta is None or meta.get("node_type") != "array":
                continue
            values = {int(k): list(v) for k, v in dict((meta.get("attributes") or {}).get("values", {})).items()}
            out.append((f"labels/{layer}/{name}", values))
        self._plane_values[layer] = out
        return out

    def planes(self, layer: str = "original") -> Iterator[tuple[zarr.Array[Any], dict[int, list[str]]]]:
        for name, values in self.plane_values(layer):
            yield self.group[name], values  # type: ignore[misc]

    def terms(self, layer: str = "original") -> list[str]:
        out: list[str] = []
        for _, values in self.plane_values(layer):
            for ts in values.values():
                out += [t for t in ts if t not in out]
        return out

    def mask(self, term: str, layer: str = "original", box: Box | None = None) -> NDArray[np.bool_]:
        """Boolean mask of ``term`` (union over codes and planes), optionally inside ``box``."""
        return cast(NDArray[np.bool_], self.masks([term], layer, box)[0])

    def masks(self, terms: list[str] | tuple[str, ...], layer: str = "original",
              box: Box | None = None) -> NDArray[np.bool_]:
        """``(len(terms), *box)`` masks; every plane is read once, whatever the number of terms."""
        full = full_box(box, self.geometry.shape)
        out = np.zeros((len(terms), *box_shape(full)), dtype=bool)
        for name, values in self.plane_values(layer):
            wanted = [[c for c, ts in values.items() if t in ts] for t in terms]
            if not any(wanted):
                continue
            data = self.read(name, full)
            for i, codes in enumerate(wanted):
                if len(codes) == 1:  # the usual case: one comparison, no table lookup
                    np.logical_or(out[i], data == codes[0], out=out[i])
                elif codes:
                    size = 1 << (8 * data.dtype.itemsize) if data.dtype.itemsize <= 2 else max(values) + 1
                    lut = np.zeros(size, dtype=bool)
                    lut[codes] = True
                    out[i] |= lut[data]
        return out

    def term_layers(self, terms: Sequence[str], layers: Sequence[str],
                    exclude: Collection[tuple[str, str]] = ()) -> dict[str, str]:
        """For each of ``terms`` that some layer holds, the first of ``layers`` that holds it
        (skipping the (term, layer) pairs in ``exclude``, e.g. labels QC excluded)."""
        have = self.layers()
        out: dict[str, str] = {}
        for layer in layers:
            if layer in have:
                for t in self.terms(layer):
                    if t in terms and (t, layer) not in exclude:
                        out.setdefault(t, layer)
        return out

    def masks_from(self, chosen: Mapping[str, str], terms: Sequence[str], box: Box | None = None
                   ) -> NDArray[np.bool_]:
        """``(len(terms), *box)`` masks, term ``t`` read from layer ``chosen[t]`` (all False where
        ``chosen`` has none) — e.g. ``chosen = term_layers(terms, layers)``: an annotated term from
        ``original``, a reviewed one from ``revised``, whatever other terms other layers hold."""
        used = {chosen[t] for t in terms if t in chosen}
        if len(used) == 1 and all(t in chosen for t in terms):  # one layer holds them all: no copy
            return self.masks(list(terms), used.pop(), box)
        out = np.zeros((len(terms), *box_shape(full_box(box, self.geometry.shape))), dtype=bool)
        for layer in sorted(used):
            idx = [i for i, t in enumerate(terms) if chosen.get(t) == layer]
            out[idx] = self.masks([terms[i] for i in idx], layer, box)
        return out

    def info(self) -> str:
        return json.dumps(self.attrs, indent=1)


def _term_codes(planes: Sequence[tuple[Any, Mapping[int, Sequence[str]]]]) -> dict[str, list[tuple[int, list[int]]]]:
    out: dict[str, list[tuple[int, list[int]]]] = {}
    for p, (_, values) in enumerate(planes):
        for code, terms in sorted(values.items()):
            if int(code) == 0:
                continue
            for t in terms:
                entry = out.setdefault(t, [])
                if entry and entry[-1][0] == p:
                    entry[-1][1].append(int(code))
                else:
                    entry.append((p, [int(code)]))
    return out


def term_masks(planes: Sequence[tuple[NDArray[Any], Mapping[int, Sequence[str]]]]
               ) -> Iterator[tuple[str, tuple[slice, ...], NDArray[np.bool_]]]:
    """``(term, box, mask)`` for every term of the label ``planes`` (arrays in memory, each with its
    ``{code: [term ids]}``) that has a voxel: the term's mask — the union of every code and plane
    mapping to it — inside its bounding box. Each plane is scanned once
    (``scipy.ndimage.find_objects`` gives every code's box); then one term's box at a time, so
    memory is the planes plus one term's box, whatever the number of terms."""
    from scipy import ndimage

    objects = []
    for arr, values in planes:
        a = np.asarray(arr)
        a = a.view(np.uint8) if a.dtype == bool else a
        top = max((int(c) for c in values), default=0)
        objects.append(ndimage.find_objects(a, max_label=top) if top > 0 else [])
    for term, parts in _term_codes(planes).items():
        boxes = [objects[p][c - 1] for p, codes in parts for c in codes
                 if c - 1 < len(objects[p]) and objects[p][c - 1] is not None]
        if not boxes:
            continue
        box = tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))
        mask = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
        for p, codes in parts:
            crop = np.asarray(planes[p][0])[box]
            mask |= (crop == codes[0]) if len(codes) == 1 else np.isin(crop, codes)
        yield term, box, mask


def _write_planes(group: zarr.Group, planes: list[tuple[NDArray[Any], dict[int, list[str]]]],
                  chunks: tuple[int, ...] | None) -> None:
    for i, (data, values) in enumerate(planes):
        top = max(values, default=0)
        if data.dtype.kind not in "ui" or np.dtype(data.dtype).itemsize > label_dtype(top).itemsize:
            data = data.astype(label_dtype(top))
        _array(group, str(i), data, chunks)
        group[str(i)].attrs["values"] = {str(k): list(v) for k, v in sorted(values.items())}


def store_sha256(path: str | os.PathLike[str]) -> str:
    """Content hash of a store (the one ``release.json`` records and ``curator verify`` checks):
    SHA-256 over the sorted ``sha256sum``-style lines of every file of the store."""
    from curator.release.integrity import store_hash

    return store_hash(Path(path))
