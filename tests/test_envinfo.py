"""Which code made a release: the git revision beside the package version."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from curator.envinfo import code_revision, environment, revision_of

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()


@needs_git
def test_revision_names_the_commit_and_tracked_edits(tmp_path: Path) -> None:
    assert revision_of(tmp_path) is None  # not a checkout: an installed wheel
    _git(tmp_path, "init", "-q")
    assert revision_of(tmp_path) is None  # a checkout with no commit yet
    (tmp_path / "curator").mkdir()
    (tmp_path / "curator" / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "one")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert revision_of(tmp_path) == head
    (tmp_path / "curator" / "new.py").write_text("")  # untracked: not the code that was committed, not run either
    assert revision_of(tmp_path) == head
    (tmp_path / "curator" / "a.py").write_text("x = 2\n")
    assert (revision_of(tmp_path) or "").startswith(head + "+dirty.")


@needs_git
def test_two_sets_of_edits_at_one_commit_are_two_revisions(tmp_path: Path) -> None:
    """Any edit said `<commit>+dirty`: a Dask worker running other uncommitted edits of the same
    commit passed for this curator. A dirty revision now names its edits by a hash."""
    clones = []
    for name in ("a", "b"):
        root = tmp_path / name
        (root / "curator").mkdir(parents=True)
        (root / "curator" / "a.py").write_text("x = 1\n")
        (root / "curator" / "b.py").write_text("y = 1\n")
        _git(root, "init", "-q")
        _git(root, "add", "-A")
        _git(root, "-c", "user.name=t", "-c", "user.email=t@e", "-c", "commit.gpgsign=false", "commit", "-q",
             "-m", "one")
        clones.append(root)
    a, b = clones
    (a / "curator" / "a.py").write_text("x = 2\n")
    (b / "curator" / "a.py").write_text("x = 3\n")
    edits = {root: (revision_of(root) or "").partition("+")[2] for root in clones}
    assert edits[a].startswith("dirty.") and edits[b].startswith("dirty.") and edits[a] != edits[b]
    (b / "curator" / "a.py").write_text("x = 2\n")  # the same edit in another checkout: the same hash
    assert (revision_of(b) or "").partition("+")[2] == edits[a]
    (b / "curator" / "b.py").unlink()  # one more edit: a deleted file
    assert (revision_of(b) or "").partition("+")[2] not in (edits[a], "")


def test_env_reports_the_revision() -> None:
    assert environment()["curator_revision"] == (code_revision() or "not a git checkout")

