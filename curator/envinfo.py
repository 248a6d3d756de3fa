"""Versions and machine facts (``curator env``), for bug reports, and what a stage run and a
release record of the code and libraries that computed them (:func:`computed_with`)."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from curator import __version__

PACKAGES = ("numpy", "scipy", "polars", "pyarrow", "duckdb", "zarr", "numcodecs", "nibabel", "SimpleITK",
            "pydicom", "highdicom", "imagehash", "torch", "dask", "distributed", "typer", "rich", "fastremap",
            "connected-components-3d", "scikit-image")
# The libraries whose version can change the values curator writes (the images read, resampled,
# labelled and measured; the stores and tables written): a Dask worker must run these versions,
# and Python's, to compute cases for `curator run` (:func:`result_versions`). The others of
# PACKAGES (polars, duckdb, imagehash, dask, distributed, typer, rich) are recorded but may differ;
# torch is compared by its public version (2.3.1+cu121 is 2.3.1+cpu), as a GPU worker and a CPU
# login node need different builds of one release.
RESULT_PACKAGES = ("numpy", "scipy", "SimpleITK", "nibabel", "pydicom", "highdicom", "zarr", "numcodecs",
                   "fastremap", "connected-components-3d", "scikit-image", "pyarrow", "torch")


@functools.cache
def code_revision() -> str | None:
    """The git commit of the curator code running, ``+dirty.<hash>`` when its tracked files were
    edited since (the hash of those edits), or None when curator does not run from a git checkout
    (an installed wheel). The package version alone (``code_version``) is the same for every
    commit between releases of curator, so a release could not say which code made it. Computed
    once per process."""
    return revision_of(Path(__file__).resolve().parent.parent)


def revision_of(root: Path) -> str | None:
    """:func:`code_revision` of the checkout at ``root`` (edits under ``curator/`` and
    ``manifests/`` make it dirty; untracked files do not). A dirty revision ends with a short hash
    of the edited files' paths and contents, so two different sets of edits at one commit (two
    checkouts, or one before and after an edit) do not pass for the same code."""
    if not (root / ".git").exists():
        return None
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never take the index lock of a checkout in use

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20,
                                  env=env, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "--verify", "HEAD")
    if not head:
        return None
    changed = git("diff", "HEAD", "--name-only", "-z", "--no-renames", "--", "curator", "manifests")
    if changed is None:  # git could not say: not known to be the commit's code
        return head + "+dirty"
    return head + (f"+dirty.{_edits_digest(root, changed.split(chr(0)))}" if changed else "")


def _edits_digest(root: Path, paths: list[str]) -> str:
    """A short hash of the edited tracked files ``paths`` as they are on disk (a deleted one as
    deleted): the same edits give the same hash in any checkout of the commit, whatever git's
    diff settings."""
    h = hashlib.sha256()
    for rel in sorted(p for p in paths if p):
        try:
            content = (root / rel).read_bytes()
        except FileNotFoundError:
            content = b"\0deleted"
        except OSError as e:  # unreadable: still not the commit's code
            content = f"\0unreadable: {e.strerror}".encode()
        h.update(rel.encode() + b"\0" + hashlib.sha256(content).digest())
    return h.hexdigest()[:12]


@functools.cache
def versions() -> dict[str, str]:
    """The Python version and each of :data:`PACKAGES`' (``"not installed"`` when absent): the
    libraries that read the images, resample them and write the stores and tables. ``curator env``
    prints them, a stage run records them (:func:`computed_with`) and a release states its own
    (``release.json`` ``environment``). Computed once per process."""
    info = {"python": sys.version.split()[0]}
    for p in PACKAGES:
        try:
            info[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            info[p] = "not installed"
    return info


def result_versions(found: dict[str, str]) -> dict[str, str]:
    """Of ``found`` (a :func:`versions` answer, perhaps another process's), Python's version and
    those of :data:`RESULT_PACKAGES` — the versions two processes must share to compute the same
    values — with torch's local build tag dropped (``+cu121``, ``+cpu``). A library ``found`` does
    not name is ``not reported``.

    >>> result_versions({"python": "3.12.3", "numpy": "2.2.1", "rich": "13.9.4", "torch": "2.3.1+cu121"})["torch"]
    '2.3.1'
    """
    got = {n: found.get(n, "not reported") for n in ("python", *RESULT_PACKAGES)}
    got["torch"] = got["torch"].split("+", 1)[0]
    return got


def computed_with() -> dict[str, Any]:
    """The code and libraries of this process, as a stage run records them: ``code_version``,
    ``code_revision`` (:func:`code_revision`), ``dirty`` (whether that code had uncommitted edits:
    the revision ends in ``+dirty``; None when it is unknown, outside a git checkout) and
    ``versions`` (:func:`versions`)."""
    rev = code_revision()
    return {"code_version": __version__, "code_revision": rev, "dirty": None if rev is None else "+dirty" in rev,
            "versions": versions()}


def environment() -> dict[str, str]:
    """What ``curator env`` prints: :func:`versions` with the machine's facts and the code revision."""
    found = versions()
    info = {"curator": __version__, "python": found["python"], "platform": platform.platform(),
            "cpus": str(os.cpu_count())}
    info["curator_revision"] = code_revision() or "not a git checkout"
    info.update((p, found[p]) for p in PACKAGES)
    try:
        import torch

        info["cuda"] = f"{torch.cuda.device_count()} device(s)" if torch.cuda.is_available() else "no"
    except ImportError:  # pragma: no cover
        info["cuda"] = "torch missing"
    return info
