"""The workspace: where a pipeline keeps per-case results, tables and stores between stages.

Layout::

    <workspace>/
      workspace.json         created, format version (no secrets)
      secret/pseudonym.key   key of the keyed hash behind patient ids (mode 0600)
      .lock                  held by the running pipeline (a second run is refused)
      stages/<stage>/cases/<xx>/<case_id>.json   per-case results (atomic)
      tables/<table>.parquet consolidated tables (atomic)
      stores/<case_id>.zarr  per-case Zarr stores (preprocess)
      environments/<id>.json the code and library versions a stage run computed with (runner.provenance)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any, cast

import pyarrow as pa
import pyarrow.parquet as pq

from curator.errors import CuratorError as CuratorErrorBase
from curator.errors import WorkspaceError
from curator.io.fsutil import (
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    canonical_json,
    remove_stale_temporaries,
    sha256_json,
)
from curator.problem_kinds import remedy_for

FORMAT_VERSION = 1
MIN_KEY_BYTES = 16  # new keys have 32
KEY_FINGERPRINT_LABEL = b"curator pseudonym key fingerprint"
log = logging.getLogger("curator")


class Workspace:
    """A folder holding one pipeline's intermediate state."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._lock_file: IO[str] | None = None

    # -- layout ---------------------------------------------------------------------------
    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def stores_dir(self) -> Path:
        return self.root / "stores"

    def stage_dir(self, stage: str) -> Path:
        return self.root / "stages" / stage

    def case_result_path(self, stage: str, case_id: str) -> Path:
        shard = hashlib.sha1(case_id.encode()).hexdigest()[:2]
        return self.stage_dir(stage) / "cases" / shard / f"{case_id}.json"

    def table_path(self, name: str) -> Path:
        return self.tables_dir / f"{name}.parquet"

    # -- lifecycle ------------------------------------------------------------------------
    def init(self, key: bytes | None = None) -> Workspace:
        """Create the folder, its metadata and pseudonym key (idempotent)."""
        try:
            return self._init(key)
        except OSError as e:  # read-only mount, a file in the way, no permission: not a bug
            raise WorkspaceError("workspace_error", f"cannot write the workspace: {e.strerror or e}",
                                 path=str(e.filename or self.root),
                                 remedy="set `workspace:` in pipeline.yaml to a folder you can write") from e

    def _init(self, key: bytes | None) -> Workspace:
        self.root.mkdir(parents=True, exist_ok=True)
        meta = self.root / "workspace.json"
        if not meta.exists():
            atomic_write_json(meta, {"format_version": FORMAT_VERSION,
                                     "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
        keyfile = self.root / "secret" / "pseudonym.key"
        if not keyfile.exists() and key is None and self.table_path("cases").exists():
            # a new key would give every patient_id and study_key new values, without a word
            raise WorkspaceError("key_missing", "the workspace's pseudonym key is gone, but its tables were made "
                                 "with one: a new key would change every patient_id and study_key",
                                 path=str(keyfile), remedy=remedy_for("key_missing"))
        if not keyfile.exists():
            keyfile.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(keyfile.parent, 0o700)
            atomic_write_text(keyfile, (key or secrets.token_bytes(32)).hex() + "\n")
            os.chmod(keyfile, 0o600)
        return self

    @property
    def key(self) -> bytes:
        keyfile = self.root / "secret" / "pseudonym.key"
        try:
            key = bytes.fromhex(keyfile.read_text().strip())
        except FileNotFoundError as e:
            raise WorkspaceError("workspace_error", "the workspace has no pseudonym key", path=str(keyfile),
                                 remedy="run `curator run` (it creates the key) or restore the key file") from e
        except (ValueError, UnicodeDecodeError) as e:
            raise WorkspaceError("key_invalid", "the pseudonym key file does not hold a hex key", path=str(keyfile),
                                 remedy=remedy_for("key_invalid")) from e
        if len(key) < MIN_KEY_BYTES:  # an emptied file gave HMAC(b"", ...): pseudonyms anyone can recompute
            raise WorkspaceError("key_invalid", f"the pseudonym key is {len(key)} bytes long (at least "
                                 f"{MIN_KEY_BYTES} are needed to keep patient ids pseudonymous)", path=str(keyfile),
                                 remedy=remedy_for("key_invalid"))
        return key

    def key_fingerprint(self) -> str:
        """16 hex digits telling this workspace's pseudonym key from another (``release.json``'s
        ``pseudonym_key_fingerprint``): the HMAC-SHA-512 of a fixed label under the key, where
        pseudonyms are HMAC-SHA-256 of ids — another function of the key, so it neither gives the
        key away nor helps recompute or guess a pseudonym.

        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     Workspace(folder).init(key=bytes(32)).key_fingerprint()
        '65bd203330d26a5f'
        """
        return hmac.new(self.key, KEY_FINGERPRINT_LABEL, hashlib.sha512).hexdigest()[:16]

    def pseudonym(self, *parts: str, prefix: str = "p") -> str:
        """Keyed, stable pseudonym of ``parts`` (e.g. dataset + patient id)."""
        msg = "\x1f".join(parts).encode()
        return f"{prefix}_{hmac.new(self.key, msg, hashlib.sha256).hexdigest()[:20]}"

    @contextlib.contextmanager
    def locked(self, command: str = "run") -> Iterator[Workspace]:
        """Hold the workspace lock; a second holder is refused with a clear message.

        Two locks are held: ``.lock`` (its text names the holder: command, pid, start time) and
        the workspace folder itself (:func:`_lock_folder`). A ``.lock`` deleted while a run holds
        it — it stays in every workspace, so clearing a "stale lock" by hand is plausible — no
        longer lets a second run in: that run creates and locks a new ``.lock``, but the folder's
        lock is still held (the two runs then damaged each other's stores)."""
        self.init()
        path = self.root / ".lock"
        try:
            f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block's duration
        except OSError as e:
            raise WorkspaceError("workspace_error", f"cannot write the workspace's lock: {e.strerror or e}",
                                 path=str(path), remedy="set `workspace:` in pipeline.yaml to a folder you can "
                                 "write") from e
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise _in_use(self.root, holder) from e
        try:
            folder = _lock_folder_waiting(self.root)
        except BlockingIOError as e:  # its holder's .lock was deleted: the file locked above is a new one
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()
            raise _in_use(self.root, _folder_holder(self.root)) from e
        f.seek(0)
        f.truncate()
        f.write(f"curator {command} (pid {os.getpid()}, since "
                f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')})\n")
        f.flush()
        self._lock_file = f
        try:
            remove_stale_temporaries(self.root / "stages")
            remove_stale_temporaries(self.tables_dir)
            remove_stale_temporaries(self.stores_dir)
            yield self
        finally:
            with contextlib.suppress(OSError):
                f.seek(0)
                f.truncate()
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()
            if folder is not None:
                os.close(folder)  # releases the folder's lock
            self._lock_file = None

    def lock_holder(self) -> str | None:
        """Who holds the workspace lock now (``"curator run (pid 12, since …)"``), or None —
        without taking it, for commands that only read (``curator status``)."""
        try:
            f = open(self.root / ".lock", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError:
            f = None
        if f is not None:
            with f:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return f.read().strip() or "another process"
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        try:
            folder = _lock_folder(self.root, fcntl.LOCK_SH)
        except BlockingIOError:
            return _folder_holder(self.root)
        if folder is not None:
            os.close(folder)
        return None

    # -- tables ---------------------------------------------------------------------------
    def write_table(self, name: str, table: pa.Table) -> Path:
        dest = self.table_path(name)
        with atomic_path(dest) as tmp:
            write_parquet(table, tmp)
        return dest

    def write_tables(self, tables: Mapping[str, pa.Table]) -> None:
        """Write a stage's tables together: every file is written first, then all are renamed into
        place, so a run killed while writing leaves the old set, not a mix of old and new tables
        (but for the microseconds between the renames)."""
        with contextlib.ExitStack() as stack:
            for name, table in tables.items():
                write_parquet(table, stack.enter_context(atomic_path(self.table_path(name))))

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table | None:
        """The table (None when it was never written), or only those of ``columns`` it has; a
        file that is not a readable Parquet table (truncated, overwritten) is a ``table_damaged``
        error naming it, not a crash."""
        p = self.table_path(name)
        if not p.exists():
            return None
        try:
            if columns is not None:
                have = set(pq.read_schema(p).names)
                columns = [c for c in columns if c in have]
            return pq.read_table(p, columns=columns)
        except (pa.ArrowException, OSError) as e:
            raise table_damaged(name, p, e) from e

    def damaged_table(self, name: str) -> str | None:
        """Why the table's file cannot be read (its Parquet footer), or None (intact or absent)."""
        p = self.table_path(name)
        if not p.exists():
            return None
        try:
            pq.read_metadata(p)
        except (pa.ArrowException, OSError) as e:
            return f"{type(e).__name__}: {e}"
        return None

    def has_table(self, name: str) -> bool:
        return self.table_path(name).exists()

    def touch_case_result(self, stage: str, case_id: str) -> None:
        """Mark a cached result as used by this run (its mtime: what ``curator gc`` keeps a run's
        cases by before the run writes its tables); a read-only workspace is left as it is."""
        with contextlib.suppress(OSError):
            os.utime(self.case_result_path(stage, case_id))

    def write_case_result(self, stage: str, case_id: str, result: dict[str, Any]) -> None:
        """Cache a case's result (atomically) with the SHA-256 of its content (``sha256``), which
        :meth:`read_case_result` checks."""
        # hashed as it will be read back (JSON turns numbers' keys into text, which sorts otherwise)
        body = json.loads(canonical_json({k: v for k, v in result.items() if k != "sha256"}))
        atomic_write_json(self.case_result_path(stage, case_id), {**body, "sha256": sha256_json(body)}, indent=None)

    def read_case_result(self, stage: str, case_id: str, *, rerun: bool = False) -> dict[str, Any] | None:
        """A case's cached result, or None: none yet, or a file that holds no result (truncated,
        valid JSON of another shape, content that does not match its checksum), which is said in a
        note naming the file when ``rerun`` (the runner's read: the case is run again) — other
        readers (freshness checks, a later stage reading an upstream result) log it at debug level
        only, as they run nothing (``[]`` crashed the stage as "a bug in curator", naming no file; a
        volume edited in a cached result was published). A result written before results carried a
        checksum is taken as it is."""
        p = self.case_result_path(stage, case_id)
        why: str | None
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
            why = f"cannot be read ({type(e).__name__}: {e})"
        else:
            why = result_issue(d)
            if why is None and "sha256" in d and d["sha256"] != sha256_json({k: v for k, v in d.items() if k != "sha256"}):
                why = "does not match its checksum (edited, or damaged on disk)"
            if why is None:
                return cast(dict[str, Any], d)
        if rerun:
            log.warning("%s: the cached %s result of %s %s; the case is run again", p, stage, case_id, why)
        else:
            log.debug("%s: the cached %s result of %s %s; read as no result", p, stage, case_id, why)
        return None


def result_issue(d: Any) -> str | None:
    """Why ``d`` (a parsed per-case result file) is not a result the runner can use, or None.

    >>> result_issue([])
    'holds a JSON list, not a result object'
    >>> result_issue({"key": "ab"})
    'lacks its case_id'
    >>> result_issue({"case_id": "c", "key": "ab", "rows": {"t": [{"x": 1}]}, "problems": []}) is None
    True
    """
    if not isinstance(d, dict):
        return f"holds a JSON {type(d).__name__.replace('dict', 'object')}, not a result object"
    for name in ("case_id", "key"):
        if not isinstance(d.get(name), str):
            return f"lacks its {name}"
    rows, problems = d.get("rows", {}), d.get("problems", [])
    if not (isinstance(rows, dict) and all(isinstance(v, list) and all(isinstance(r, dict) for r in v)
                                           for v in rows.values())):
        return "holds rows that are not tables of rows"
    if not (isinstance(problems, list) and all(isinstance(r, dict) and isinstance(r.get("kind"), str)
                                               and isinstance(r.get("severity"), str) for r in problems)):
        return "holds problems that are not a list of rows"
    if not isinstance(d.get("failed", False), bool):
        return "holds a `failed` that is not true or false"
    return None


def _in_use(root: Path, holder: str) -> WorkspaceError:
    return WorkspaceError("workspace_locked", f"the workspace is in use by {holder}", path=str(root),
                          remedy="wait for that run to finish, or use another workspace; the lock is released "
                          "automatically when the process ends (never delete .lock: it does not free the workspace)")


def _lock_folder(root: Path, how: int) -> int | None:
    """The workspace folder, opened and ``flock``-ed (``how``: ``LOCK_EX`` or ``LOCK_SH``; never
    waiting: ``BlockingIOError`` when another process holds it) — the open descriptor, which
    holds the lock until closed; None where the file system cannot lock a folder (NFS emulates
    ``flock`` with byte-range locks, which a folder opened for reading cannot take), and then
    ``.lock`` alone locks the workspace."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    except OSError:  # EBADF, ENOLCK, EOPNOTSUPP: no folder locks here
        os.close(fd)
        return None
    return fd


FOLDER_LOCK_WAIT = 1.0
"""Seconds :meth:`Workspace.locked` waits for the folder's lock once it holds ``.lock``: a
reader (:meth:`Workspace.lock_holder`, i.e. ``curator status`` or ``gc``) holds a shared lock on
the folder for microseconds, and a run starting then was refused as if its ``.lock`` had been
deleted, naming the reader's pid (review s31 #5)."""


def _lock_folder_waiting(root: Path) -> int | None:
    """:func:`_lock_folder` exclusively, retried for up to :data:`FOLDER_LOCK_WAIT` seconds
    (``BlockingIOError`` when still held then: a run whose ``.lock`` was deleted holds it)."""
    deadline = time.monotonic() + FOLDER_LOCK_WAIT
    while True:
        try:
            return _lock_folder(root, fcntl.LOCK_EX)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _folder_holder(root: Path) -> str:
    """Who holds the workspace folder's lock although ``.lock`` names nobody (its holder's
    ``.lock`` was deleted): the process ``/proc/locks`` names (Linux), else a description."""
    pid = None
    with contextlib.suppress(OSError, ValueError):
        st = os.stat(root)
        want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == want:
                pid = int(parts[4])
                break
    return (f"another curator process (pid {pid}" if pid else "another curator process (") + \
        "; its .lock file was deleted while it ran)"


def table_damaged(name: str, path: Path, e: BaseException) -> WorkspaceError:
    return WorkspaceError("table_damaged", f"the workspace table {name} cannot be read ({type(e).__name__}: {e})",
                          path=str(path), remedy=remedy_for("table_damaged"))


def files_below(root: Path, rel: str) -> list[str]:
    """``rel`` (relative to ``root``), or, when it is a folder (a DICOM series; not a link to one),
    every file below it, relative to ``root``: folder by folder, names sorted (the order
    :meth:`ChecksumCache.paths` hashes them in)."""
    p = root / rel
    if not p.is_dir() or p.is_symlink():
        return [rel]
    out = []
    for dirpath, dirnames, files in os.walk(p, followlinks=False):
        dirnames.sort()
        out += [os.path.relpath(os.path.join(dirpath, f), root) for f in sorted(files)]
    return out


class ChecksumCache:
    """Content checksums of source files, re-computed when a file's size, mtime, ctime or inode
    changes (the ctime and inode catch a file rewritten with its old mtime put back, e.g. by
    ``rsync -t`` or ``touch -r``, and a file replaced by another).

    Stage keys use content checksums (a touched but unchanged file does not re-run its case);
    the cache keeps planning from re-reading every byte of a large download on every run.
    """

    def __init__(self, ws: Workspace, source: str) -> None:
        self.path = ws.root / "checksums" / f"{source}.json"
        try:
            self.entries: dict[str, list[Any]] = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            self.entries = {}
        self.dirty = False

    def file(self, root: Path, rel: str) -> str:
        from curator.io.confined import regular_inside
        from curator.io.fsutil import sha256_file

        p = root / rel
        try:
            st = p.stat()
        except OSError:
            return f"missing:{rel}"
        if not stat.S_ISREG(st.st_mode):  # FIFOs block on open; devices never end
            return f"special:{rel}:{st.st_mode}"
        if p.is_symlink():
            try:
                regular_inside(root, p)
            except CuratorErrorBase:  # a link out of the root is never read, not even to hash it
                return f"refused:{rel}:{os.readlink(p)}"
        seen = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        hit = self.entries.get(rel)
        # entries of an older curator had 3 fields; a 6th is a NIfTI's header scaling (label_scaling),
        # a 7th whether the header declares a 4-D file (label_4d)
        if hit and len(hit) in (5, 6, 7) and hit[:4] == seen:
            return str(hit[4])
        try:
            digest = sha256_file(p)
        except CuratorErrorBase:
            return f"unreadable:{rel}:{st.st_size}:{st.st_mtime_ns}"
        self.entries[rel] = [*seen, digest]
        self.dirty = True
        return digest

    def paths(self, root: Path, rels: list[str]) -> str:
        """One checksum over files and folders (a folder = every file below it, :func:`files_below`)."""
        h = hashlib.sha256()
        for rel in sorted(rels):
            for sub in files_below(root, rel):
                h.update(f"{sub}|{self.file(root, sub)}\n".encode())
        return h.hexdigest()

    def label_scaling(self, root: Path, rel: str) -> list[int] | None:
        """The whole-number ``[scl_slope, scl_inter]`` a NIfTI file's header scales its integer
        voxels by, or ``None`` (:func:`curator.io.nifti.label_header_scaling`): a label map so
        scaled is read as its stored codes, and cases holding one are keyed by it. Its header is
        read once per version of the file (after :meth:`file` checked the entry is current)."""
        hit = self.entries.get(rel)
        if not hit or len(hit) < 5:
            return None
        if len(hit) == 5:
            from curator.io.nifti import label_header_scaling

            found = label_header_scaling(root / rel)
            hit.append(list(found) if found is not None else None)
            self.dirty = True
        return list(hit[5]) if hit[5] is not None else None

    def label_4d(self, root: Path, rel: str) -> bool:
        """Whether a label file's header declares a 4-D file (:func:`curator.io.formats.header_past_3d`):
        beside a channel's image it is read by frame, so cases holding one are keyed by it. Its header
        is read once per version of the file (after :meth:`file` checked the entry is current)."""
        hit = self.entries.get(rel)
        if not hit or len(hit) < 5:
            return False
        if len(hit) == 5:
            self.label_scaling(root, rel)  # the 6th field first
        if len(hit) == 6:
            from curator.io.formats import header_past_3d

            hit.append(header_past_3d(root / rel))
            self.dirty = True
        return bool(hit[6])

    def known_scaling(self, rel: str) -> list[int] | None:
        """What :meth:`label_scaling` found for ``rel`` when ingest last planned, without reading
        the file (``None`` when it did not look)."""
        hit = self.entries.get(rel)
        return list(hit[5]) if hit and len(hit) >= 6 and hit[5] is not None else None

    def save(self) -> None:
        if self.dirty:
            atomic_write_json(self.path, self.entries, indent=None)
            self.dirty = False


# Parquet writer options of every table curator writes (with row groups of PARQUET_ROW_GROUP rows)
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 3, "write_statistics": True,
                                   "use_dictionary": True, "store_schema": True}
PARQUET_ROW_GROUP = 256_000


def write_parquet(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Deterministic Parquet: fixed writer options, zstd, statistics on, no timestamps."""
    pq.write_table(table, path, row_group_size=PARQUET_ROW_GROUP, **PARQUET_OPTIONS)
