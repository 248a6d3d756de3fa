"""The cache of release files and stores found intact (``curator verify``, ``Release.open_store``,
table reads): a file or store checked once is not hashed again — in this process, or in a later
one through a small append-only file per release under ``$CURATOR_CACHE_DIR`` (default
``~/.cache/curator``) — while its size, modification and change times and inode stay the same."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.errors import WorkspaceError
from curator.io.fsutil import atomic_write_text


def cache_file(release: Path) -> Path:
    """The cache of files and stores found intact under ``release`` (one file per release, so a
    process reads the entries of the releases it reads, and one release's entries never push
    another's out)."""
    base = os.environ.get("CURATOR_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "curator")
    name = hashlib.sha256(str(release.resolve()).encode()).hexdigest()[:24]
    return Path(base) / "verified" / f"{name}.jsonl"


def stat_key(p: Path) -> list[int]:
    return key_of(p.stat())


def key_of(st: os.stat_result) -> list[int]:
    # the change time too: a file rewritten with its old size and modification time put back
    # (os.utime, rsync -t, touch -r) has a new ctime, which no user-level call can set back
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


_VERIFIED: dict[str, tuple[list[Any], str]] = {}  # resolved path -> (stat key, sha256) checked in this process


@dataclass
class _DiskCache:
    """A cache file as far as this process has read it. The file holds ``[path, stat key,
    sha256]`` lines and is only appended to (a path's last line counts), so noting a store costs
    one short write and a process parses only the lines added since it last looked — rewriting
    the whole cache as one JSON object for each store noted grew with every entry (10,000 stores
    noted one by one took 277 s, in each loader worker)."""
    key: tuple[int, int] | None = None  # the file's (inode, device) when read
    pos: int = 0  # bytes parsed
    lines: int = 0  # lines parsed (more than entries: paths noted again after a change)
    entries: dict[str, list[Any]] = field(default_factory=dict)


_DISK: dict[str, _DiskCache] = {}  # cache file -> what this process has read of it
COMPACT_LINES = 1000  # superseded lines beyond the entries after which a cache file is rewritten


def disk_cache(release: Path) -> _DiskCache:
    """The cache file of ``release``, read on from where this process stopped (from its start
    when the file was replaced by a compaction, or removed)."""
    path = cache_file(release)
    cache = _DISK.setdefault(str(path), _DiskCache())
    try:
        st = path.stat()
    except OSError:
        cache.key, cache.pos, cache.lines, cache.entries = None, 0, 0, {}
        return cache
    if cache.key != (st.st_ino, st.st_dev) or st.st_size < cache.pos:
        cache.key, cache.pos, cache.lines, cache.entries = (st.st_ino, st.st_dev), 0, 0, {}
    if st.st_size > cache.pos:
        try:
            with open(path, "rb") as f:
                f.seek(cache.pos)
                data = f.read()
        except OSError:
            return cache
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        for line in data[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, list) and len(row) == 3 and isinstance(row[0], str):
                cache.entries.pop(row[0], None)  # the newest last: a compaction keeps that order
                cache.entries[row[0]] = [row[1], row[2]]
                cache.lines += 1
        cache.pos += end
    return cache


def already_checked(release: Path, path: str, key: list[Any], want: str) -> bool:
    """Whether ``path`` was found to hash ``want`` while its stat ``key`` was what it is now."""
    seen: Any = _VERIFIED.get(path)
    if seen is None:
        seen = disk_cache(release).entries.get(path)
    if isinstance(seen, (list, tuple)) and len(seen) == 2 and list(seen[0]) == key and seen[1] == want:
        _VERIFIED[path] = (key, want)
        return True
    return False  # (a malformed cache entry is simply not a match)


def remember(release: Path, checked: dict[str, tuple[list[Any], str]]) -> None:
    """Note files (or stores) of ``release`` found intact, in this process and in the release's
    cache file for later ones (appended in one write: lines of processes noting at once do not mix)."""
    if not checked:
        return
    _VERIFIED.update(checked)
    data = "".join(json.dumps([k, list(v[0]), v[1]]) + "\n" for k, v in checked.items()).encode()
    # a read-only or full home (atomic writes say so as WorkspaceError): this process's memory still holds it
    with contextlib.suppress(OSError, ValueError, WorkspaceError):
        path = cache_file(release)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        cache = disk_cache(release)
        if cache.lines > len(cache.entries) + COMPACT_LINES:  # many superseded lines: keep each path's newest
            atomic_write_text(path, "".join(json.dumps([k, *v]) + "\n" for k, v in cache.entries.items()))
