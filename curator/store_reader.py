"""Fast box reads from sharded Zarr v3 arrays, straight from the shard files.

zarr-python pays a fixed cost per inner chunk (async pipeline, codec objects), which
dominates random patch reads. :class:`ShardReader` reads the same bytes itself: it
memory-maps each shard file, reads its chunk index (the Zarr v3
``sharding_indexed`` layout: ``(offset, nbytes)`` pairs at the end of the file) and
Blosc-decodes only the inner chunks a box touches into the output array. Chunks written with a
CRC32C (inner codecs ``bytes, blosc, crc32c``: curator's stores since 2026-12-06) are checked
against it before they are decoded — Blosc decodes most damaged bytes into other voxels without
a word — and a mismatch is ``store_damaged``; chunks without one (``bytes, blosc``: older stores)
read as before. Arrays in any other layout are read through zarr-python, so every valid store
stays readable.

Each mapped shard holds a file descriptor. A process keeps at most :func:`open_shard_limit`
of them, shared by all its readers (the least recently used is closed first): a loader
holding 64 stores of ~12 shards each held ~770, and a training worker ran out of
descriptors (``Too many open files``) under the usual soft limit of 1024.

>>> import numpy as np, tempfile, zarr
>>> p = tempfile.mkdtemp() + "/a"
>>> a = zarr.create_array(p, shape=(50, 40, 30), chunks=(16, 16, 16), shards=(32, 32, 32), dtype="int16")
>>> a[...] = np.arange(50 * 40 * 30, dtype="int16").reshape(50, 40, 30)
>>> r = ShardReader(p)
>>> bool((r.read((slice(10, 45), slice(3, 40), slice(0, 7))) == a[10:45, 3:40, 0:7]).all())
True
"""

from __future__ import annotations

import collections
import itertools
import json
import mmap
import os
import resource
import threading
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import zarr
from numcodecs import blosc
from numpy.typing import NDArray

from curator.errors import WorkspaceError
from curator.problem_kinds import remedy_for

Box = tuple[slice, ...]
WRITTEN_SHARDS = "curator_written_shards"  # array attribute: the keys ("i/j/k") of the shard files written
_MISSING = np.uint64(2**64 - 1)
_NONE = 2**64 - 1  # the same "no chunk" marker as a Python int
MAX_OPEN_SHARDS = 1024  # mapped shard files a process keeps at most, whatever its descriptor limit
_Shard = tuple[Any, list[tuple[int, int]] | None]  # (bytes of the shard file, its chunk index)


def open_shard_limit() -> int:
    """How many shard files a process keeps mapped (one file descriptor each): a quarter of its
    soft ``RLIMIT_NOFILE`` (``ulimit -n``), between 8 and :data:`MAX_OPEN_SHARDS` — the rest is
    left to everything else (logs, a DataLoader's pipes and shared-memory tensors)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return MAX_OPEN_SHARDS if soft == resource.RLIM_INFINITY else max(8, min(MAX_OPEN_SHARDS, soft // 4))


class _OpenShards:
    """The shard files a process has mapped, least recently used first, at most
    :func:`open_shard_limit`; a shard pushed out is unmapped (its descriptor closed) once no
    read still uses it. Forked children start empty (never share another process's maps)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._maps: collections.OrderedDict[tuple[int, tuple[int, ...]], _Shard] = collections.OrderedDict()
        self._pid = os.getpid()

    def get(self, key: tuple[int, tuple[int, ...]]) -> _Shard | None:
        with self._lock:
            if self._pid != os.getpid():
                self._maps, self._pid = collections.OrderedDict(), os.getpid()
            got = self._maps.get(key)
            if got is not None:
                self._maps.move_to_end(key)
            return got

    def put(self, key: tuple[int, tuple[int, ...]], shard: _Shard) -> None:
        with self._lock:
            self._maps[key] = shard
            limit = open_shard_limit()
            while len(self._maps) > limit:
                self._maps.popitem(last=False)

    def drop(self, reader: int) -> None:
        with self._lock:
            for key in [k for k in self._maps if k[0] == reader]:
                del self._maps[key]

    def __len__(self) -> int:
        return len(self._maps)


OPEN_SHARDS = _OpenShards()
_READER_IDS = itertools.count()


def full_box(box: Box | None, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``box`` with ``None`` ends filled in and clipped to ``shape`` (steps must be 1)."""
    if box is None:
        return tuple(slice(0, n) for n in shape)
    out = []
    for s, n in zip(box, shape, strict=True):
        start, stop, step = s.indices(n)
        if step != 1:
            raise ValueError("box slices must have step 1")
        out.append(slice(start, max(start, stop)))
    return tuple(out)


def box_shape(box: Box) -> tuple[int, ...]:
    return tuple(int(s.stop - s.start) for s in box)


class ShardReader:
    """Reads boxes of one sharded array (see module docstring); safe to use after ``fork``.
    Its mapped shards live in the process-wide :data:`OPEN_SHARDS` (bounded)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        meta = json.loads((self.path / "zarr.json").read_text(encoding="utf-8"))
        self.shape = tuple(int(x) for x in meta["shape"])
        self.dtype = np.dtype(meta["data_type"])
        self.fill = meta.get("fill_value", 0) or 0
        self._zarr: Any = None
        self._id = next(_READER_IDS)  # its shards' key in OPEN_SHARDS
        self._absent: set[tuple[int, ...]] = set()  # shards never written (all fill): no file to map
        # the shard files the writer wrote (curator stores since 2026-12-04); an absent one of
        # these is damage, not an all-fill shard. None: unknown (another writer, an older store)
        written = (meta.get("attributes") or {}).get(WRITTEN_SHARDS)
        self.written = None if written is None else {tuple(int(x) for x in k.split("/")) for k in written}
        layout = _parse_layout(meta) if len(self.shape) == 3 else None
        if layout is None:
            self._zarr = zarr.open_array(str(self.path), mode="r")
            return
        self.shard, self.inner, self.sep, self.crc = layout
        self.per_shard = tuple(s // i for s, i in zip(self.shard, self.inner, strict=True))
        self.dtype = self.dtype.newbyteorder("<")

    def __getitem__(self, box: Box) -> NDArray[Any]:
        """``reader[:, :, a:b]``: :meth:`read` for code written against array slicing."""
        return self.read(box)

    def read(self, box: Box | None = None) -> NDArray[Any]:
        box = full_box(box, self.shape)
        if self._zarr is not None:
            return np.asarray(self._zarr[box])
        out = np.empty(box_shape(box), dtype=self.dtype.newbyteorder("="))
        if out.size == 0:
            return out
        per_axis = []
        for s, c, p in zip(box, self.inner, self.per_shard, strict=True):
            spans = []
            for ci in range(s.start // c, (s.stop - 1) // c + 1):
                lo, hi = max(s.start, ci * c), min(s.stop, ci * c + c)
                spans.append((ci // p, ci % p, slice(lo - ci * c, hi - ci * c), slice(lo - s.start, hi - s.start)))
            per_axis.append(spans)
        buf = np.empty(self.inner, dtype=self.dtype)
        raw = buf.reshape(-1).view(np.uint8)
        p1, p2, crc = self.per_shard[1], self.per_shard[2], self.crc
        shards: dict[tuple[int, ...], _Shard] = {}  # this read's shards: held until it ends, even if pushed out
        # the hot loop: one index lookup (a Python list), one CRC32C and one Blosc decode per inner chunk
        for (ka, la, si, di), (kb, lb, sj, dj), (kc, lc, sk, dk) in itertools.product(*per_axis):
            got = shards.get((ka, kb, kc)) or shards.setdefault((ka, kb, kc), self._shard((ka, kb, kc)))
            off, n = got[1][(la * p1 + lb) * p2 + lc] if got[1] is not None else (_NONE, 0)
            if off == _NONE:
                out[di, dj, dk] = self.fill
                continue
            chunk = got[0][off:off + n]
            if crc:
                if not _crc_ok(chunk):
                    raise self._damaged((ka, kb, kc), f"its chunk {la}/{lb}/{lc} fails its CRC32C checksum")
                chunk = chunk[:-4]
            try:
                blosc.decompress(chunk, raw)
            except (RuntimeError, ValueError) as e:
                raise self._damaged((ka, kb, kc), "a chunk of it cannot be decoded") from e
            out[di, dj, dk] = buf[si, sj, sk]
        return out

    def _shard(self, key: tuple[int, ...]) -> _Shard:
        """``(bytes of the shard file, its index as a flat list of (offset, nbytes))``."""
        if key in self._absent:
            return None, None
        got = OPEN_SHARDS.get((self._id, key))
        if got is not None:
            return got
        path = self._shard_path(key)
        try:
            with open(path, "rb") as f:
                mm: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:  # an all-empty shard is never written
            if self.written is not None and key in self.written:
                raise self._damaged(key, "it was written but is missing") from None
            self._absent.add(key)
            return None, None
        except ValueError as e:  # mmap of an empty file
            raise self._damaged(key, "it is empty") from e
        n = int(np.prod(self.per_shard))
        if len(mm) < 16 * n + 4:
            raise self._damaged(key, "it is shorter than its chunk index")
        index = np.frombuffer(mm[len(mm) - 16 * n - 4:len(mm) - 4], dtype="<u8").reshape(n, 2)
        pairs = [(int(o), int(k)) for o, k in index.tolist()]
        if any(o != _NONE and o + k > len(mm) - 16 * n - 4 for o, k in pairs):
            raise self._damaged(key, "its chunk index points past the end of the file (truncated?)")
        got = (np.frombuffer(mm, dtype=np.uint8), pairs)
        OPEN_SHARDS.put((self._id, key), got)
        return got

    def _shard_path(self, key: tuple[int, ...]) -> Path:
        keys = self.sep.join(str(k) for k in key)
        return self.path / "c" / keys if self.sep == "/" else self.path / ("c" + self.sep + keys)

    def damage(self, index: bool = True, chunks: bool = False) -> str | None:
        """Why the array's shard files are damaged, or None: every shard the writer listed
        (``WRITTEN_SHARDS``) is there and, with ``index``, its chunk index is intact (CRC32C, every
        chunk inside the file). Reads each shard's index only, never voxels; without ``index``,
        one ``stat`` per shard. With ``chunks`` (and ``index``), every chunk's bytes are checked
        against their CRC32C too (the whole file read, nothing decoded; arrays written without
        chunk checksums are judged by their index only). Arrays of another layout or writer are
        not judged."""
        if self._zarr is not None or self.written is None:
            return None
        n = int(np.prod(self.per_shard))
        for key in sorted(self.written):
            name = "/".join(map(str, key))
            try:
                size = self._shard_path(key).stat().st_size
            except FileNotFoundError:
                return f"shard {name} was written but is missing"
            if size < 16 * n + 4:
                return f"shard {name} is shorter than its chunk index (truncated)"
            if not index:
                continue
            whole = chunks and self.crc  # every chunk's bytes are checked too: the file is read once, whole
            with open(self._shard_path(key), "rb") as f:
                f.seek(0 if whole else size - 16 * n - 4)
                data = f.read()
            tail = data[size - 16 * n - 4:] if whole else data
            if google_crc32c.value(tail[:-4]) != int.from_bytes(tail[-4:], "little"):
                return f"shard {name}'s chunk index fails its checksum (truncated or overwritten)"
            pairs = np.frombuffer(tail[:-4], dtype="<u8").reshape(n, 2)
            used = pairs[pairs[:, 0] != _MISSING]
            if len(used) and int((used[:, 0] + used[:, 1]).max()) > size - 16 * n - 4:
                return f"shard {name}'s chunk index points past the end of the file (truncated?)"
            if whole:
                bad = self._bad_chunk(np.frombuffer(data, dtype=np.uint8), pairs)
                if bad is not None:
                    return f"shard {name}'s chunk {bad} fails its CRC32C checksum"
        return None

    def _bad_chunk(self, data: NDArray[np.uint8], pairs: NDArray[Any]) -> str | None:
        """The first chunk (``"i/j/k"`` inside the shard's bytes ``data``) whose bytes fail their
        CRC32C, or None."""
        for i, (off, n) in enumerate(pairs.tolist()):
            if off != _NONE and not _crc_ok(data[off:off + n]):
                return "/".join(map(str, np.unravel_index(i, self.per_shard)))
        return None

    def _damaged(self, key: tuple[int, ...], why: str) -> WorkspaceError:
        parts = self.path.parts
        top = max((i for i, x in enumerate(parts) if x.endswith(".zarr")), default=len(parts) - 2)
        name = "/".join(parts[top + 1:]) or self.path.name  # "labels/original/0", not "0"
        return WorkspaceError("store_damaged", f"shard {'/'.join(map(str, key))} of the array {name}: {why}; the store "
                              "is damaged (reading it would give wrong voxels)", path=str(self.path),
                              remedy=remedy_for("store_damaged"))

    def close(self) -> None:
        OPEN_SHARDS.drop(self._id)


def _crc_ok(chunk: NDArray[np.uint8]) -> bool:
    """Whether a chunk's bytes end in the CRC32C (4 bytes, little-endian) of the rest (zarr's crc32c codec)."""
    return len(chunk) >= 4 and google_crc32c.value(chunk[:-4]) == int.from_bytes(chunk[-4:].tobytes(), "little")


def root_attrs_issue(meta: Any) -> str | None:
    """What a store's parsed root ``zarr.json`` (``meta``) lacks of what curator reads — a group
    whose ``attributes.curator`` holds the grid (``shape``: 3 sizes, ``affine``: 16 numbers) — or
    None. A root rewritten without its attributes (a run interrupted by another, a hand edit)
    otherwise read as a store until something asked for its geometry (``KeyError: 'curator'``).

    >>> root_attrs_issue({"node_type": "group", "attributes": {}})
    'holds no curator attributes (the geometry of the case)'
    >>> root_attrs_issue({"node_type": "group", "attributes": {"curator": {"shape": [2, 2, 2],
    ...                   "affine": [1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]}}}) is None
    True
    """
    if not isinstance(meta, dict):
        return "is missing" if meta is None else "holds no Zarr metadata object"
    if meta.get("node_type") != "group":
        return "is not a Zarr group's"
    attrs = (meta.get("attributes") or {}).get("curator") if isinstance(meta.get("attributes"), dict) else None
    if not isinstance(attrs, dict):
        return "holds no curator attributes (the geometry of the case)"
    shape, affine = attrs.get("shape"), attrs.get("affine")
    if not (isinstance(shape, list) and len(shape) == 3 and isinstance(affine, list) and len(affine) == 16):
        return "holds no valid grid (curator attributes shape and affine)"
    return None


def store_damage(store: str | os.PathLike[str], parts: tuple[str, ...] = (), index: bool = True,
                 chunks: bool = False) -> list[str]:
    """What is damaged in a case store (empty: nothing found): one line per array, e.g.
    ``"image: shard 0/0/0 was written but is missing"`` — see :meth:`ShardReader.damage`.
    ``parts`` limits the check to arrays under those paths (``("image", "labels/original")``).
    ``chunks`` checks every chunk's CRC32C too (reads every byte of the store; see
    :meth:`ShardReader.damage`). A store without its ``zarr.json``, or whose ``zarr.json`` lacks
    the curator attributes (:func:`root_attrs_issue`), is one line too."""
    root = Path(store)
    if not (root / "zarr.json").is_file():
        return ["zarr.json: the store's metadata is missing"]
    try:
        issue = root_attrs_issue(json.loads((root / "zarr.json").read_bytes()))
    except (OSError, ValueError) as e:
        issue = f"cannot be read ({type(e).__name__}: {e})"
    out = [f"zarr.json: the store's root metadata {issue}"] if issue else []
    for meta in sorted(root.rglob("zarr.json")):
        rel = meta.parent.relative_to(root).as_posix()
        if rel == "." or (parts and not any(rel == p or rel.startswith(p + "/") for p in parts)):
            continue
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("node_type") != "array":
                continue
            why = ShardReader(meta.parent).damage(index, chunks)
        except (OSError, ValueError, KeyError) as e:
            why = f"its metadata cannot be read ({type(e).__name__}: {e})"
        if why:
            out.append(f"{rel}: {why}")
    return out


def _parse_layout(meta: dict[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...], str, bool] | None:
    """``(shard shape, inner chunk shape, key separator, chunks carry a CRC32C)`` when the array
    uses a layout this reader decodes (sharding_indexed → bytes + blosc, optionally + crc32c; index
    at the end with crc32c)."""
    codecs = meta.get("codecs") or []
    if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
        return None
    cfg = codecs[0]["configuration"]
    inner_codecs = [c["name"] for c in cfg.get("codecs", [])]
    index_codecs = [c["name"] for c in cfg.get("index_codecs", [])]
    if inner_codecs not in (["bytes", "blosc"], ["bytes", "blosc", "crc32c"]) or index_codecs != ["bytes", "crc32c"]:
        return None
    if cfg.get("index_location", "end") != "end":
        return None
    for c in cfg.get("codecs", []) + cfg.get("index_codecs", []):
        if c["name"] == "bytes" and (c.get("configuration") or {}).get("endian", "little") != "little":
            return None
    grid = meta["chunk_grid"]
    enc = meta.get("chunk_key_encoding", {"name": "default"})
    if grid.get("name") != "regular" or enc.get("name") != "default":
        return None
    sep = (enc.get("configuration") or {}).get("separator", "/")
    shard = tuple(int(x) for x in grid["configuration"]["chunk_shape"])
    inner = tuple(int(x) for x in cfg["chunk_shape"])
    return shard, inner, sep, inner_codecs[-1] == "crc32c"


def write_sharded(path: str | os.PathLike[str], data: NDArray[Any]) -> None:
    """Write ``data`` into the (already created, empty) sharded array at ``path``.

    Produces exactly the Zarr v3 ``sharding_indexed`` layout zarr-python writes (inner
    chunks padded with the fill value, Blosc per the array's metadata, then each chunk's CRC32C
    when the metadata asks for one, all-fill chunks left out, index + CRC32C at the end) without zarr-python's per-chunk overhead, which dominates
    writes with small inner chunks, and lists the shard files written in the array's
    attributes (``WRITTEN_SHARDS``): a reader then tells a deleted shard from an all-fill one.
    Arrays in another layout are written through zarr-python.
    """
    root = Path(path)
    meta = json.loads((root / "zarr.json").read_text(encoding="utf-8"))
    layout = _parse_layout(meta)
    if layout is None:
        zarr.open_array(str(root), mode="r+")[...] = data
        return
    shard, inner, sep, crc = layout
    cfg = meta["codecs"][0]["configuration"]["codecs"][1]["configuration"]
    shuffle = {"noshuffle": blosc.NOSHUFFLE, "shuffle": blosc.SHUFFLE, "bitshuffle": blosc.BITSHUFFLE}[cfg["shuffle"]]
    fill = meta.get("fill_value", 0) or 0
    arr = np.asarray(data, dtype=np.dtype(meta["data_type"]).newbyteorder("<"))  # any order: blocks are copied
    per = tuple(s // i for s, i in zip(shard, inner, strict=True))
    nshards = tuple(-(-n // s) for n, s in zip(arr.shape, shard, strict=True))
    buf = np.empty(inner, dtype=arr.dtype)
    written: list[str] = []
    for key in itertools.product(*(range(n) for n in nshards)):
        index = np.full((*per, 2), _MISSING, dtype="<u8")
        parts: list[bytes] = []
        offset = 0
        for local in itertools.product(*(range(p) for p in per)):
            lo = [(k * p + c) * i for k, p, c, i in zip(key, per, local, inner, strict=True)]
            sl = tuple(slice(a, min(a + i, n)) for a, i, n in zip(lo, inner, arr.shape, strict=True))
            if any(s.start >= s.stop for s in sl):
                continue
            block = arr[sl]
            if block.shape != inner:
                buf[...] = fill
                buf[tuple(slice(0, b) for b in block.shape)] = block
                block = buf
            if not np.any(block != fill):
                continue
            enc = blosc.compress(np.ascontiguousarray(block), cfg["cname"].encode(), int(cfg["clevel"]), shuffle,
                                 int(cfg.get("blocksize", 0)), arr.itemsize)
            if crc:
                enc += google_crc32c.value(enc).to_bytes(4, "little")
            index[local] = (offset, len(enc))
            parts.append(enc)
            offset += len(enc)
        if not parts:
            continue
        written.append("/".join(map(str, key)))
        idx = index.tobytes()
        crc = np.uint32(google_crc32c.value(idx)).astype("<u4").tobytes()
        name = root / "c" / "/".join(str(k) for k in key) if sep == "/" else root / ("c" + sep + sep.join(map(str, key)))
        name.parent.mkdir(parents=True, exist_ok=True)
        with open(name, "wb") as f:
            f.write(b"".join(parts) + idx + crc)
    meta.setdefault("attributes", {})[WRITTEN_SHARDS] = written  # lets a reader tell damage from all-fill
    (root / "zarr.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
