"""The MR/PET body threshold's rule is in MR/PET cases' cache keys only: changing it redoes
those cases and keeps every CT store (a stage version bump would have redone every case)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from curator.config import PipelineConfig
from curator.pipeline import run_pipeline
from tests.preprocess.conftest import MultiSeq, Tiny


def _rerun(src: Path, tmp_path: Path) -> int:
    """Copy the fixture's project and run preprocess again: how many cases it redid."""
    root = tmp_path / "p"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("releases"))
    res = run_pipeline(PipelineConfig.load(root / "pipeline.yaml"), stages=["ingest", "preprocess"], release=False)
    return next(r.ran for r in res.reports if r.stage == "preprocess")


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_only_mr_and_pet_cases_key_on_the_body_rule(modality: str, tiny: Tiny, multiseq: MultiSeq,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = multiseq.root if modality == "MR" else tiny.root
    assert _rerun(src, tmp_path / "same") == 0  # nothing changed: nothing redone
    monkeypatch.setattr("curator.preprocess.stage.BODY_RULE", "another rule")
    ran = _rerun(src, tmp_path / "changed")
    assert ran == (len(multiseq.images) if modality == "MR" else 0)
