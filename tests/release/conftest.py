"""Fixtures for release tests: a demo workspace + release 0.1.0 built once per session."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from curator.config import PipelineConfig
from curator.demo import write_demo_pipeline
from curator.demo.data import build_demo_data
from curator.pipeline import run_pipeline
from curator.release.build import RELEASE_STEPS, build_release
from curator.runner.context import Context
from tests.release.helpers import set_version

SPLITS, CARD = "curator.release.splits:release_step", "curator.release.card:release_step"


@pytest.fixture(scope="session")
def demo_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo downloads + workspace + release demo 0.1.0 (never modified: tests copy it)."""
    folder = tmp_path_factory.mktemp("demo-base")
    data = build_demo_data(folder / "raw")
    pipeline = write_demo_pipeline(folder, data, workers=1, progress=False)
    run_pipeline(PipelineConfig.load(pipeline))
    return folder


@pytest.fixture
def demo(demo_base: Path, tmp_path: Path) -> Path:
    """A private copy of the demo folder (workspace, pipeline.yaml, releases)."""
    dst = tmp_path / "demo"
    shutil.copytree(demo_base, dst, symlinks=True)
    return dst


@pytest.fixture
def release_with() -> Callable[..., Path]:
    """Build a release of the demo in ``folder`` as ``version`` with every release step; extra
    (test) steps run just before the card."""

    def _build(folder: Path, version: str, extra_steps: tuple[str, ...] = (), **release: object) -> Path:
        cfg = set_version(folder / "pipeline.yaml", version, **release)
        steps = list(RELEASE_STEPS)
        at = steps.index(CARD)
        return build_release(Context(cfg), steps=[*steps[:at], *extra_steps, *steps[at:]])

    return _build
