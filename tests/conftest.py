"""Shared fixtures: real sample data (skips cleanly when absent), temporary workspaces."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def _find_real() -> Path:
    """$CURATOR_REAL_DATA, else the nearest ``shared/data/real`` beside an ancestor (../shared)."""
    if os.environ.get("CURATOR_REAL_DATA"):
        return Path(os.environ["CURATOR_REAL_DATA"])
    here = Path(__file__).resolve()
    for parent in here.parents[1:]:
        cand = parent / "shared" / "data" / "real"
        if cand.is_dir():
            return cand
    return here.parents[2] / "shared" / "data" / "real"


REAL = _find_real()

# Rich fixes a console's width at its creation from $COLUMNS: a shell that exports it, or
# pytest-xdist's workers (COLUMNS=80), would wrap the CLI's output at that width for the whole
# session — long temporary paths then break across lines where tests look for them. Without it
# the width is read per call, so each test's CliRunner(env={"COLUMNS": ...}) takes effect.
os.environ.pop("COLUMNS", None)


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's output 250 columns wide, read per call: a message holding a long temporary path
    (pytest-xdist adds a folder to each) is not wrapped inside the words a test looks for. A test
    may set its own width (CliRunner(env={"COLUMNS": ...}))."""
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real`` (or $CURATOR_REAL_DATA); the test is skipped when it is absent."""
    if not REAL.is_dir():
        pytest.skip(f"real sample data not found at {REAL}")
    return REAL


@pytest.fixture
def real_copy(real_data: Path, tmp_path: Path):
    """Copy a sub-folder of the real data into tmp (the originals are read-only)."""

    def _copy(rel: str) -> Path:
        src = real_data / rel
        dst = tmp_path / "real" / rel
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        for p in [dst, *dst.rglob("*")] if dst.is_dir() else [dst]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        return dst

    return _copy


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Curator's user cache (checked release files) in a temporary folder, not ~/.cache."""
    os.environ["CURATOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("curator-cache"))


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's: no error where it is not loaded
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's addopts): one worker per core, at most 4 — each builds its own
    session fixtures (demo releases, ≈ 2 GB at peak); ``-n 0`` runs in this process alone."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
