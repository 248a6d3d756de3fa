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
    assert revision_of(tmp_path) == head + "+dirty"


def test_env_reports_the_revision() -> None:
    assert environment()["curator_revision"] == (code_revision() or "not a git checkout")

