"""File-system helpers: atomic writes and checksums (paths confined to a source root:
:mod:`curator.io.confined`).

Everything curator writes goes to a temporary name in the destination folder and is
then renamed into place, so no reader ever sees a half-written file or store.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from curator.errors import ConfigError, ReadError, WorkspaceError

CHUNK = 1 << 20
log = logging.getLogger("curator")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
    except PermissionError as e:
        raise ReadError("permission_denied", "cannot read the file", path=str(path),
                        remedy="make it readable by the user running curator") from e
    except FileNotFoundError as e:
        raise ReadError("file_not_found", "the file does not exist", path=str(path),
                        remedy="check the source root and that the download is complete") from e
    return h.hexdigest()


def sha256_files(paths: list[Path], root: Path) -> str:
    """One checksum for a set of files (e.g. a DICOM series): names relative to ``root`` + contents."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(root)).encode())
        h.update(bytes.fromhex(sha256_file(p)))
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Checksum of a JSON-able object in canonical form (sorted keys, no spaces)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


_OLD = ".tmp-old-"  # a replaced folder's previous copy: restored if the run dies before the new one is in


def _tmp_name(dest: Path, kind: str = ".tmp-") -> Path:
    return dest.with_name(f".{dest.name}{kind}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def replace_dir(tmp: Path, dest: Path) -> None:
    """Put the finished folder ``tmp`` in place of the folder ``dest`` (two renames; a run killed
    between them leaves ``dest``'s old copy, which :func:`remove_stale_temporaries` puts back)."""
    if not dest.exists():
        os.replace(tmp, dest)
        return
    old = _tmp_name(dest, _OLD)
    os.replace(dest, old)
    os.replace(tmp, dest)
    _cleanup(old)


def _raise_disk(e: OSError, dest: Path) -> None:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        raise WorkspaceError("disk_full", f"no space left while writing {dest.name}",
                             path=str(dest), remedy="free disk space, then run the same command again "
                             "(finished work is kept)") from e
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # another owner, a read-only mount, chattr +i
        raise WorkspaceError("folder_unwritable", f"cannot write into {dest.parent.name}/: "
                             f"{e.strerror or e}", path=str(dest),
                             remedy=f"make {dest.parent} writable for the user running curator (check its owner, "
                             "a read-only mount or an immutable flag: `ls -ld`, `lsattr -d`), then run the same "
                             "command again (finished work is kept)") from e


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` when the block succeeds.

    Works for files and directories (a directory destination must not exist yet, or is
    replaced whole). On any error the temporary is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _raise_disk(e, dest)
        raise
    tmp = _tmp_name(dest)
    try:
        yield tmp
        _fsync_path(tmp)
        if tmp.is_dir():
            replace_dir(tmp, dest)
        else:
            os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as e:
        _discard(tmp)
        _raise_disk(e, dest)
        raise
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: Path) -> None:
    """Remove a failed write's temporary. An error doing so (the folder that refused the write
    refuses the removal too) never hides the write's own error; a leftover is cleared by
    :func:`remove_stale_temporaries` on the next run."""
    with contextlib.suppress(OSError):
        _cleanup(tmp)


def _cleanup(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _fsync_path(p: Path) -> None:
    if p.is_file():
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_output_file(path: str | os.PathLike[str], example: str = "") -> Path:
    """``path`` as a file to write, or a ``ConfigError`` saying what to give instead: when it is
    a folder (``example`` names a file to suggest in it), sits under a file, or lies where
    nothing can be created (no permission, a read-only or virtual file system). Creates nothing."""
    dest = Path(path)
    if dest.is_dir():
        raise ConfigError("config_error", "this is a folder, but a file is to be written here", path=str(dest),
                          remedy="give a file path" + (f", e.g. {dest / example}" if example else ""))
    _check_creatable(dest.parent, dest)
    return dest


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a folder to write into (it need not exist yet), or a ``ConfigError`` saying
    what to give instead: when it is a file, sits under a file, or lies where nothing can be
    created. Creates nothing."""
    dest = Path(path)
    if dest.exists() and not dest.is_dir():
        raise ConfigError("config_error", "this is a file, but a folder is to be written here", path=str(dest),
                          remedy="give a folder (a new one is created)")
    _check_creatable(dest, dest)
    return dest


def creatable_problem(folder: Path) -> tuple[Path, str | None] | None:
    """Why ``folder`` (created when missing) cannot be written, or None when it can:
    ``(nearest existing path, None)`` when that path is a file, ``(it, reason)`` when nothing can
    be created in it — tried with a file created and removed: permission checks alone miss
    read-only and virtual file systems, and a root user passes them all."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return probe, None
    try:
        fd, name = tempfile.mkstemp(prefix=".curator-probe-", dir=probe)
    except OSError as e:
        return probe, str(e.strerror or e)
    os.close(fd)
    os.unlink(name)
    return None


def _check_creatable(folder: Path, dest: Path) -> None:
    """Refuse ``dest`` when ``folder`` (which holds it) cannot be written (:func:`creatable_problem`)."""
    problem = creatable_problem(folder)
    if problem is None:
        return
    probe, reason = problem
    if reason is None:
        raise ConfigError("config_error", f"{probe} is a file, not a folder, so nothing can be created under it",
                          path=str(dest), remedy="give a path under a folder")
    raise ConfigError("config_error", f"nothing can be created in {probe} ({reason})", path=str(dest),
                      remedy="give a place you can write (check its permissions, and that its file "
                             "system is not read-only)")


def staging_path(dest: Path) -> Path:
    """``.<name>.tmp-<host>-<pid>`` beside ``dest``: where a run builds a folder before renaming
    it to ``dest`` (:func:`remove_dead_staging` clears the one a killed run left)."""
    return dest.with_name(f".{dest.name}.tmp-{socket.gethostname()}-{os.getpid()}")


def remove_dead_staging(folder: Path) -> list[Path]:
    """Remove the staging folders (:func:`staging_path`) in ``folder`` that runs on this host left
    when they were killed; a run still going (its pid alive) or on another host keeps its own."""
    removed = []
    host = socket.gethostname()
    for d in folder.glob(".*.tmp-*"):
        owner, _, pid = d.name.rpartition(".tmp-")[2].rpartition("-")
        if owner != host or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
        log.info("removed the staging folder of a killed run: %s", d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def check_free(folder: Path, names: Iterable[str]) -> None:
    """Refuse to write the entries ``names`` into ``folder`` when it holds any of them already."""
    clash = [n for n in names if (folder / n).exists() or (folder / n).is_symlink()]
    if clash:
        raise ConfigError("config_error", f"the folder already holds {', '.join(clash)}", path=str(folder),
                          remedy="choose a new folder, or remove them")


@contextlib.contextmanager
def staged_dir(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder (named by :func:`staging_path`) whose content lands at
    ``dest`` only when the block succeeds. A new ``dest`` is staged beside it and renamed into
    place; an existing folder ``dest`` (a mount point, perhaps) is staged inside it, on its file
    system, and the entries are moved in — folders first, then files, so an index
    (``datalist.json``) comes after what it lists; an entry ``dest`` holds already is refused.
    On any error the staging folder and the folders made to hold it are removed: nothing is
    left behind."""
    dest = Path(os.path.abspath(dest))  # "." and "x/.." name no folder to stage beside
    inside = dest.is_dir()
    home = dest if inside else dest.parent
    made = [p for p in (home, *home.parents) if not p.exists()]
    home.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(home)
    tmp = home / staging_path(dest).name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if inside:
            entries = sorted(tmp.iterdir(), key=lambda p: (not p.is_dir(), p.name))
            check_free(dest, [p.name for p in entries])
            for p in entries:
                os.replace(p, dest / p.name)
            tmp.rmdir()
        else:
            os.rename(tmp, dest)
        _fsync_dir(home)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in made:  # deepest first; a folder something else wrote into meanwhile stays
            with contextlib.suppress(OSError):
                p.rmdir()
        if isinstance(e, OSError):
            _raise_disk(e, dest)
        raise


def atomic_remove(path: str | os.PathLike[str]) -> bool:
    """Remove a file or folder tree by renaming it away first (readers never see half of it; a
    run killed mid-way leaves a temporary that :func:`remove_stale_temporaries` clears);
    whether there was one."""
    path = Path(path)
    if not path.exists():
        return False
    gone = _tmp_name(path)
    os.replace(path, gone)
    _cleanup(gone)
    return True


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike[str], obj: Any, indent: int | None = 1) -> None:
    atomic_write_text(dest, json.dumps(obj, indent=indent, sort_keys=True, default=_json_default) + "\n")


def remove_stale_temporaries(folder: Path) -> int:
    """Delete leftovers of killed writers (``.name.tmp-*``) under ``folder``; returns how many.
    A folder's previous copy (``.name.tmp-old-*``) whose replacement never arrived is put back."""
    n = 0
    if not folder.exists():
        return 0
    for p in sorted(folder.rglob(".*.tmp-*")):
        if not p.exists() and not p.is_symlink():
            continue  # inside a leftover removed earlier in this loop
        if _OLD in p.name:
            home = p.with_name(p.name[1:p.name.index(_OLD)])
            if not home.exists():
                os.replace(p, home)
                n += 1
                continue
        _cleanup(p)
        n += 1
    return n
