"""What differs between two versions of one case's store, by kind.

``curator diff`` finds the changed stores by their content hash (release.json's ``stores``), and a
hash differs for reasons that change no voxel: a curator that writes more metadata (OME-Zarr
attributes, a pseudo layer's model fingerprints or ``torch`` block) or encodes the same arrays
otherwise (a CRC32C checksum codec added: every chunk file's bytes differ). :func:`store_changes`
says which, node by node (``""`` is the store's root group, else a path such as ``labels/pseudo/0``):

* ``voxels``: an array added or removed, or its shape, data type or values changed;
* ``terms``: what a label plane's values stand for (its ``values`` attribute, a layer's ``curator``
  ``terms``);
* ``grid``: the store's ``curator`` ``affine`` or ``shape``;
* ``attributes``: any other attribute, by its top-level key (and a ``curator`` attribute's keys:
  ``curator.torch``);
* ``encoding``: how an array is stored (its codecs, chunking, the shard files written), or chunk
  bytes that differ although the values do not.

Metadata comes from the ``zarr.json`` files. Values are read only for the arrays whose chunk files
differ (per ``stores/SHA256SUMS``) or whose encoding does, one shard at a time (memory stays at two
shards), smallest array first, and no further than the first difference: a store known to have
changed voxels is not read on.

>>> change = {"voxels": {}, "attributes": {"labels/pseudo": ["curator.torch", "ome"], "": ["ome"]}}
>>> store_kind(change), summary(change)
('attributes', 'attributes ome (/, labels/pseudo); curator.torch (labels/pseudo)')
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("voxels", "terms", "grid", "attributes", "encoding")  # most significant first
GRID_KEYS = ("affine", "shape")  # of a node's ``curator`` attributes
_ARRAY_DATA = ("shape", "data_type")
_NOT_ENCODING = {*_ARRAY_DATA, "attributes", "zarr_format", "node_type"}
_WRITTEN_SHARDS = "curator_written_shards"

Change = dict[str, dict[str, list[str]]]  # kind -> node -> what differs


def store_kind(change: Change) -> str | None:
    """The most significant kind of change (None: nothing found)."""
    return next((k for k in KINDS if change.get(k)), None)


def ome_only(change: Change) -> bool:
    """Whether the change is OME-Zarr attributes alone (a store written before curator wrote them)."""
    attrs = change.get("attributes") or {}
    return (store_kind(change) == "attributes" and not change.get("encoding")
            and all(k == "ome" for keys in attrs.values() for k in keys))


def summary(change: Change) -> str:
    """One line, what differs before where (``/`` is the root group, more than 3 nodes counted):
    ``attributes curator.models, curator.torch (labels/pseudo); ome (4 nodes); encoding codecs
    bytes, blosc → bytes, blosc, crc32c (labels/pseudo/0)``."""
    parts = []
    for kind in KINDS:
        where: dict[str, list[str]] = {}  # what differs -> the nodes it differs in
        for node, items in sorted((change.get(kind) or {}).items()):
            for item in items:
                where.setdefault(item, []).append(node or "/")
        groups: dict[tuple[str, ...], list[str]] = {}  # nodes -> what differs in all of them
        for item, nodes in where.items():
            groups.setdefault(tuple(nodes), []).append(item)
        if groups:
            parts.append(f"{kind} " + "; ".join(
                f"{', '.join(items)} ({', '.join(nodes) if len(nodes) <= 3 else f'{len(nodes)} nodes'})"
                for nodes, items in groups.items()))
    return "; ".join(parts)


def _nodes(store: Path) -> dict[str, dict[str, Any]]:
    """Node path -> its parsed zarr.json (unreadable ones left out)."""
    out = {}
    for meta in sorted(store.rglob("zarr.json")):
        try:
            d = json.loads(meta.read_bytes())
        except (OSError, ValueError):
            continue
        if isinstance(d, dict):
            rel = meta.parent.relative_to(store).as_posix()
            out["" if rel == "." else rel] = d
    return out


def _chain(meta: dict[str, Any]) -> str:
    """An array's codecs as names, a shard's inner codecs in brackets: ``sharding_indexed(bytes, blosc)``."""
    names = []
    for c in meta.get("codecs") or []:
        if not isinstance(c, dict):
            continue
        inner = (c.get("configuration") or {}).get("codecs") if c.get("name") == "sharding_indexed" else None
        names.append(f"{c.get('name')}({_chain({'codecs': inner})})" if isinstance(inner, list) else str(c.get("name")))
    return ", ".join(names)


def _chunking(meta: dict[str, Any]) -> str:
    shapes = [((meta.get("chunk_grid") or {}).get("configuration") or {}).get("chunk_shape")]
    shapes += [(c.get("configuration") or {}).get("chunk_shape") for c in meta.get("codecs") or []
               if isinstance(c, dict) and c.get("name") == "sharding_indexed"]
    return "/".join("x".join(map(str, s)) for s in shapes if isinstance(s, list))


def _encoding(ma: dict[str, Any], mb: dict[str, Any]) -> list[str]:
    out = []
    keys = sorted(k for k in set(ma) | set(mb) if k not in _NOT_ENCODING and ma.get(k) != mb.get(k))
    if "codecs" in keys:
        ca, cb = _chain(ma), _chain(mb)
        shard = "sharding_indexed("
        if ca.startswith(shard) and cb.startswith(shard) and ca.endswith(")") and cb.endswith(")"):
            ca, cb = ca[len(shard):-1], cb[len(shard):-1]  # both sharded: what differs is inside
        out.append(f"codecs {ca} → {cb}" if ca != cb else "codec settings")
        if _chunking(ma) != _chunking(mb):
            out.append(f"chunks {_chunking(ma)} → {_chunking(mb)}")
    if "chunk_grid" in keys and "chunks" not in " ".join(out):
        out.append(f"chunks {_chunking(ma)} → {_chunking(mb)}")
    return out + [k for k in keys if k not in ("codecs", "chunk_grid")]


def _attributes(node: str, aa: dict[str, Any], ab: dict[str, Any], change: Change) -> None:
    for key in sorted(set(aa) | set(ab)):
        va, vb = aa.get(key), ab.get(key)
        if va == vb:
            continue
        if key == "curator" and isinstance(va, dict) and isinstance(vb, dict):
            for sub in sorted(set(va) | set(vb)):
                if va.get(sub) != vb.get(sub):
                    kind = "grid" if sub in GRID_KEYS else "terms" if sub == "terms" else "attributes"
                    change[kind].setdefault(node, []).append(f"curator.{sub}" if kind == "attributes" else sub)
        else:
            kind = "terms" if key == "values" else "encoding" if key == _WRITTEN_SHARDS else "attributes"
            change[kind].setdefault(node, []).append(key)


def _first_difference(a: Path, b: Path) -> bool:
    """Whether two arrays of one shape and data type hold other values, read one shard at a time."""
    import zarr

    xa, xb = zarr.open_array(str(a), mode="r"), zarr.open_array(str(b), mode="r")
    step = xa.shards or xa.chunks
    nan = np.dtype(xa.dtype).kind in "fc"
    for start in itertools.product(*(range(0, n, s) for n, s in zip(xa.shape, step, strict=True))):
        box = tuple(slice(i, i + s) for i, s in zip(start, step, strict=True))
        if not np.array_equal(xa[box], xb[box], equal_nan=nan):
            return True
    return False


def _nbytes(meta: dict[str, Any]) -> int:
    try:
        return int(np.prod(meta.get("shape") or [0])) * np.dtype(str(meta.get("data_type"))).itemsize
    except TypeError:
        return 0


def store_changes(a: Path, b: Path, sums_a: dict[str, str] | None = None,
                  sums_b: dict[str, str] | None = None) -> Change:
    """What differs between stores ``a`` and ``b`` (folders), by kind (see the module); ``sums_*``
    map each file inside the store to its sha256 (SHA256SUMS), to leave unread the arrays whose
    files are the same."""
    change: Change = {k: {} for k in KINDS}
    na, nb = _nodes(a), _nodes(b)
    for node in sorted(set(na) ^ set(nb)):
        meta = na.get(node) or nb[node]
        kind = "voxels" if meta.get("node_type") == "array" else "attributes"
        change[kind].setdefault(node, []).append("added" if node in nb else "removed")
    to_read = []
    for node in sorted(set(na) & set(nb)):
        ma, mb = na[node], nb[node]
        aa, ab = ma.get("attributes") or {}, mb.get("attributes") or {}
        if isinstance(aa, dict) and isinstance(ab, dict):
            _attributes(node, aa, ab, change)
        if ma.get("node_type") != "array" or mb.get("node_type") != "array":
            continue
        data = [f"{k} {_short(ma.get(k))} → {_short(mb.get(k))}" for k in _ARRAY_DATA if ma.get(k) != mb.get(k)]
        if data:
            change["voxels"].setdefault(node, []).extend(data)
            continue
        enc = _encoding(ma, mb)
        if enc:
            change["encoding"].setdefault(node, []).extend(enc)
        prefix = f"{node}/" if node else ""
        files_differ = sums_a is None or sums_b is None or any(
            sums_a.get(f) != sums_b.get(f) for f in set(sums_a) | set(sums_b)
            if f.startswith(prefix) and f != f"{prefix}zarr.json")
        if enc or files_differ:
            to_read.append(node)
    for node in sorted(to_read, key=lambda n: (_nbytes(na[n]), n)):
        if change["voxels"]:
            break  # a store whose voxels changed is not read on
        try:
            differ = _first_difference(a / node, b / node)
        except Exception as e:  # noqa: BLE001 - an unreadable array is said, not raised
            change["voxels"].setdefault(node, []).append(f"unreadable ({type(e).__name__})")
            continue
        if differ:
            change["voxels"].setdefault(node, []).append("values")
        elif not change["encoding"].get(node):
            change["encoding"].setdefault(node, []).append("chunk bytes (the same values)")
    return {k: v for k, v in change.items() if v}


def _short(v: Any) -> str:
    return json.dumps(v) if isinstance(v, list) else str(v)
