"""Building a case's slab reader, and reading the next case while the current one is inferred.

On a GPU the first slab of the next case (the next entry of the stage's planned order,
``stages/pseudolabel/queue.json``) is read and normalised in a background thread while the
current case runs. The prefetched reader is only a head start: a worker that is handed a
different case next simply reads it itself (with several Dask GPU workers the planned
"next" case may go to another worker; the cost is one wasted slab read).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from curator.errors import InputError
from curator.pseudolabel.models import ModelSpec
from curator.pseudolabel.reader import SlabReader, check_normalisation
from curator.pseudolabel.window import axis_map
from curator.store import CaseStore

log = logging.getLogger("curator")
Prepared = tuple[SlabReader, str, tuple[int, int, int]]
_POOL: list[ThreadPoolExecutor] = []  # one lazily created thread per worker process
_PENDING: dict[str, tuple[Future[Prepared], str]] = {}  # path -> (reader, the store's stamp then)
_LOCK = threading.Lock()  # a Dask worker may run several cases in threads: they share _PENDING and _POOL


def _stamp(path: str | Path) -> str:
    """Where and when the store's metadata was written, and what it says: a store rebuilt since
    (preprocess renames a new one into place) has another stamp, so a reader prefetched from the
    old one is not used."""
    try:
        meta = Path(path) / "zarr.json"
        st = meta.stat()
        return f"{st.st_ino}:{st.st_mtime_ns}:{hashlib.sha1(meta.read_bytes()).hexdigest()}"
    except OSError:
        return ""


def make_reader(store: CaseStore, specs: tuple[ModelSpec, ...], patch: tuple[int, ...], cfg: Any) -> Prepared:
    """The reader (model grid, model input), the stored orientation and the patch in stored axes."""
    g = store.geometry
    lead = specs[0]
    perm, _ = axis_map(g.orientation, lead.orientation)
    dst: list[float] | None = None
    patch_s = [0, 0, 0]
    for a in range(3):
        patch_s[perm[a]] = int(patch[a])
    if lead.spacing_mm:
        dst = [0.0, 0.0, 0.0]
        for a in range(3):
            dst[perm[a]] = float(lead.spacing_mm[a])
    norm = dict(store.attrs.get("normalisation") or {})
    check_normalisation(norm)
    bare = [s.name for s in specs if not s.intensity]
    if not norm and bare:
        raise InputError("normalisation_missing", "the store does not say how to normalise its image and "
                         f"model(s) {bare} declare no `intensity`", path=str(store.path),
                         remedy="re-run preprocess, or add `intensity: {clip, mean, std}` to the model specs")
    reader = SlabReader(store.reader("image"), norm, dict(lead.intensity), g.spacing, tuple(dst) if dst else None,
                        cfg.resample_tolerance, per_member=True)
    return reader, g.orientation, (patch_s[0], patch_s[1], patch_s[2])


def _prepare(path: str, specs: tuple[ModelSpec, ...], patch: tuple[int, ...], cfg: Any) -> Prepared:
    reader, orientation, patch_s = make_reader(CaseStore(path), specs, patch, cfg)
    reader.warm(0, patch_s[2])
    return reader, orientation, patch_s


def take(path: str | Path) -> Prepared | None:
    """The prefetched reader of ``path`` if one is ready or running and the store has not been
    rebuilt since it was scheduled (else None)."""
    with _LOCK:
        pending = _PENDING.pop(str(path), None)
    if pending is None:
        return None
    fut, stamp = pending
    if stamp != _stamp(path) or not stamp:
        fut.cancel()
        return None
    try:
        return fut.result()
    except Exception:  # noqa: BLE001 - the normal path reads the case again and reports its problem
        return None


def schedule_next(ws: Path, case_id: str, specs: tuple[ModelSpec, ...], patch: tuple[int, ...],
                  cfg: Any) -> str | None:
    """Start reading the case planned after ``case_id``; returns its store path (None at the end)."""
    try:
        queue = json.loads((ws / "stages" / "pseudolabel" / "queue.json").read_text())
    except (OSError, ValueError):
        return None
    ids = [c for c, _ in queue]
    if case_id not in ids or ids.index(case_id) + 1 >= len(ids):
        return None
    nxt = queue[ids.index(case_id) + 1][1]
    with _LOCK:  # another thread's case may be scheduling or taking at the same time
        for stale in [k for k in _PENDING if k != nxt]:
            _PENDING.pop(stale)[0].cancel()
        if nxt not in _PENDING:
            if not _POOL:
                _POOL.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="curator-prefetch"))
            _PENDING[nxt] = (_POOL[0].submit(_prepare, nxt, specs, patch, cfg), _stamp(nxt))
            log.debug("prefetching %s", nxt)
    return str(nxt)
