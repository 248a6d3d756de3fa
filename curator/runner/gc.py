"""Workspace files no current case uses: what ``curator gc`` lists and, asked to, removes.

A case deleted from its source, or a source taken out of pipeline.yaml, leaves its store
(``stores/<case_id>.zarr``), its attention store (``stages/pseudolabel/attention/``), its dedup
thumbnail and its per-stage results (``stages/<stage>/cases/``) behind; an image changed in
place leaves its old thumbnail (the file name carries the thumbnail's digest). None of these is
read again unless the case comes back (then its cached results save a re-run).

A case is *current* when the workspace's tables name it (``cases``, or a ``problems__*`` table:
a case ingest refused is in no ``cases`` row but its failure is cached), when its ingest result
is at least as new as the ``cases`` table (a run that stopped before writing it: ingest touches a
cached result it uses, :meth:`Workspace.touch_case_result`), or when it
belongs to a source of pipeline.yaml that :func:`kept_sources` spares: one whose root is missing
or empty (an unmounted share, its mount point left behind: its cases come back with it) or of
which the ``cases`` table names no case (ingest found none). gc never collects a configured
source wholesale: taking the source out of pipeline.yaml does that.

Releases are never touched: their stores are hard links, so removing the workspace's link of a
file leaves the release's copy whole (and frees no space: :attr:`Leftover.shared` says so).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from curator.workspace import Workspace

KINDS = ("store", "attention", "thumbnail", "thumbnail_superseded", "stage_result", "interrupted_gc")


@dataclass(frozen=True)
class Leftover:
    """One workspace file or folder no current case uses."""

    path: Path  # absolute
    kind: str  # one of KINDS
    case_id: str
    size: int = 0  # bytes of its files (apparent size); 0 when not measured
    shared: int = 0  # of those, bytes of files another link (a release's store) still holds


def current_cases(ws: Workspace, kept_prefixes: Iterable[str] = ()) -> tuple[set[str], tuple[str, ...]]:
    """Case ids the workspace's tables name, plus those whose ingest result is at least as new as
    the ``cases`` table; and the case id prefixes (``<source>__``) that always count as current."""
    ids, since = _table_case_ids(ws)
    for p in _stage_results(ws, "ingest", follow=True):
        if p.stat().st_mtime >= since:  # same tick (2 s mtimes on SMB/FAT): keep, the safe side
            ids.add(p.name[:-len(".json")])
    return ids, tuple(kept_prefixes)


def _table_case_ids(ws: Workspace) -> tuple[set[str], float]:
    """Case ids ``cases`` and the ``problems__*`` tables name, and the ``cases`` table's mtime."""
    ids: set[str] = set()
    names = ["cases"] + sorted(p.stem for p in ws.tables_dir.glob("problems__*.parquet"))
    for name in names:
        t = ws.read_table(name, columns=["case_id"]) if ws.has_table(name) else None
        if t is not None:
            ids.update(c for c in t.column("case_id").to_pylist() if c)
    cases = ws.table_path("cases")
    return ids, cases.stat().st_mtime if cases.exists() else 0.0


def count_unused_stores(ws: Workspace, kept_prefixes: Iterable[str] = ()) -> int:
    """How many stores and attention stores :func:`find_leftovers` would list — what ``curator
    status`` shows, cheaply: the tables' case ids and two folders' listings (a ``stat`` of an
    unnamed store's ingest result); no stage result is walked or read."""
    if not ws.root.is_dir():
        return 0
    ids, since = _table_case_ids(ws)
    prefixes = tuple(kept_prefixes)
    n = 0
    for folder in (ws.stores_dir, ws.stage_dir("pseudolabel") / "attention"):
        for p in folder.iterdir() if _real_dir(folder) else ():  # gc never looks into a linked folder
            cid = p.name[:-len(".zarr")]
            if not p.name.endswith(".zarr") or p.name.startswith(".") or cid in ids or cid.startswith(prefixes):
                continue
            result = ws.case_result_path("ingest", cid)
            n += not (result.exists() and result.stat().st_mtime >= since)  # a run that stopped early: current
    return n


def kept_sources(ws: Workspace, roots: Mapping[str, str | Path]) -> dict[str, str]:
    """The sources of ``roots`` (name → root) whose every case counts as current, each with why:
    ``root_missing`` (not a folder), ``root_empty`` (an unmounted share leaves its mount point
    empty), ``root_unreadable``, or ``no_case`` (the ``cases`` table names no ``<source>__`` case:
    ingest found none, or has not run since the source was added). A source's files are collected
    case by case while it has cases; all at once only when it leaves pipeline.yaml."""
    t = ws.read_table("cases", columns=["case_id"]) if ws.has_table("cases") else None
    named = {c.split("__", 1)[0] for c in (t.column("case_id").to_pylist() if t is not None else []) if c}
    kept: dict[str, str] = {}
    for name, root in sorted(roots.items()):
        r = Path(root)
        try:
            why = ("root_missing" if not r.is_dir() else "root_empty" if not any(r.iterdir())
                   else "no_case" if name not in named else "")
        except OSError:  # a share gone stale
            why = "root_unreadable"
        if why:
            kept[name] = why
    return kept


def _real_dir(p: Path) -> bool:
    """A folder gc may look into: never a link (a shard linked elsewhere is not the workspace's)."""
    return p.is_dir() and not p.is_symlink()


def _stage_results(ws: Workspace, stage: str, *, follow: bool = False) -> Iterator[Path]:
    """A stage's per-case result files. ``follow``: through linked folders too — for the reads that
    show what is current (reading is harmless, and skipping them would make more look gone); never
    for the files gc would delete."""
    usable = Path.is_dir if follow else _real_dir
    root = ws.stage_dir(stage) / "cases"
    if usable(root) and usable(root.parent):
        for shard in sorted(root.iterdir()):
            if usable(shard):
                yield from sorted(p for p in shard.iterdir() if p.name.endswith(".json") and not p.name.startswith("."))


def _referenced_thumbnails(ws: Workspace, kept: Callable[[str], bool]) -> set[str]:
    """Thumbnails (workspace-relative) the hashes table or a kept case's dedup result names."""
    import json

    refs: set[str] = set()
    t = ws.read_table("hashes", columns=["thumbnail"]) if ws.has_table("hashes") else None
    if t is not None:
        refs.update(r for r in t.column("thumbnail").to_pylist() if r)
    for p in _stage_results(ws, "dedup", follow=True):
        if kept(p.name[:-len(".json")]):
            try:
                res = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            refs.update(r["thumbnail"] for r in (res.get("rows") or {}).get("hashes", []) if r.get("thumbnail"))
    return refs


def find_leftovers(ws: Workspace, kept_prefixes: Iterable[str] = (), measure: bool = True,
                   spared: Counter[str] | None = None) -> list[Leftover]:
    """Every workspace store, attention store, thumbnail and per-stage result no current case
    uses (see the module docstring), with sizes when ``measure``; nothing is changed. ``spared``
    counts, per kept prefix, the files no table names that the prefix kept."""
    if not ws.root.is_dir():
        return []
    current, prefixes = current_cases(ws, kept_prefixes)

    def kept_by(case_id: str) -> str | None:
        """The kept prefix of a case no table names (None: it is unused)."""
        return next((k for k in prefixes if case_id.startswith(k)), None)

    def unused(case_id: str) -> bool:
        return case_id not in current and kept_by(case_id) is None

    def gone(case_id: str) -> bool:  # unused, counting in ``spared`` the files a kept prefix keeps
        if case_id in current:
            return False
        kept = kept_by(case_id)
        if kept is not None and spared is not None:
            spared[kept] += 1
        return kept is None

    found: list[tuple[Path, str, str]] = []
    for folder, kind in ((ws.stores_dir, "store"), (ws.stage_dir("pseudolabel") / "attention", "attention")):
        if _real_dir(folder):
            for p in sorted(folder.iterdir()):
                if p.name.startswith(".") and ".tmp-gc-" in p.name:
                    found.append((p, "interrupted_gc", ""))
                elif p.name.endswith(".zarr") and not p.name.startswith(".") and gone(p.name[:-5]):
                    found.append((p, kind, p.name[:-5]))
    stages = ws.root / "stages"
    for stage in sorted(d.name for d in stages.iterdir() if _real_dir(d)) if _real_dir(stages) else []:
        for p in _stage_results(ws, stage):
            if gone(p.name[:-len(".json")]):
                found.append((p, "stage_result", p.name[:-len(".json")]))
    thumbs = ws.stage_dir("dedup") / "thumbs"
    if _real_dir(thumbs) and _real_dir(thumbs.parent):
        refs = _referenced_thumbnails(ws, lambda c: not unused(c))
        shards = [d for d in sorted(thumbs.iterdir()) if _real_dir(d)]
        for p in (f for d in shards for f in sorted(d.glob("*.npz"))):
            case_id = p.name.rsplit(".", 2)[0]
            if gone(case_id):
                found.append((p, "thumbnail", case_id))
            elif p.relative_to(ws.root).as_posix() not in refs:
                found.append((p, "thumbnail_superseded", case_id))
    return [Leftover(p, kind, cid, *(_size(p) if measure else (0, 0))) for p, kind, cid in found]


def _size(path: Path) -> tuple[int, int]:
    """(bytes, bytes of files with another hard link) of a file or a folder's files; 0 for a link
    (removing it frees nothing) and for a file gone meanwhile."""
    if path.is_symlink():
        return 0, 0
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    total = shared = 0
    for f in files:
        try:
            st = f.stat()
        except OSError:  # removed while measured
            continue
        total += st.st_size
        shared += st.st_size if st.st_nlink > 1 else 0
    return total, shared


def remove_leftovers(ws: Workspace, leftovers: Iterable[Leftover]) -> int:
    """Remove ``leftovers`` (call under the workspace lock); a folder is first renamed to a
    hidden name, so one half removed by a crash is no store (the next ``gc`` finishes it).
    Returns how many were removed."""
    n = 0
    for lo in leftovers:
        p = lo.path
        if not p.exists():
            continue
        if p.is_dir() and not p.is_symlink():
            doomed = p if lo.kind == "interrupted_gc" else p.with_name(f".{p.name}.tmp-gc-{os.getpid()}")
            if doomed != p:
                os.replace(p, doomed)
            shutil.rmtree(doomed)
        else:
            p.unlink()
        n += 1
    return n
