"""The MR/PET body threshold's rule is in MR/PET cases' cache keys only: changing it redoes
those cases and keeps every CT store (a stage version bump would have redone every case)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from curator.config import PipelineConfig
from curator.pipeline import run_pipeline
from curator.preprocess.body import BODY_RULES
from tests.preprocess.conftest import MultiSeq, Tiny


def _rerun(src: Path, tmp_path: Path, preprocess: dict[str, Any] | None = None,
           edits: dict[str, str] | None = None) -> int:
    """Copy the fixture's project and run preprocess again: how many cases it redid
    (``preprocess``: settings changed; ``edits``: text replaced in its dataset YAMLs, which then
    the copy's pipeline.yaml names)."""
    root = tmp_path / "p"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("releases"))
    pipe = root / "pipeline.yaml"
    cfg = yaml.safe_load(pipe.read_text())
    cfg["stages"]["preprocess"].update(preprocess or {})
    if edits:
        cfg["registry"] = [str(root / Path(f).name) for f in cfg["registry"]]
        cfg["sources"] = [{**s, "dataset": str(root / Path(s["dataset"]).name)} for s in cfg["sources"]]
        for f in cfg["registry"]:
            text = Path(f).read_text()
            for a, b in edits.items():
                assert a in text
                text = text.replace(a, b)
            Path(f).write_text(text)
    pipe.write_text(yaml.safe_dump(cfg))
    res = run_pipeline(PipelineConfig.load(pipe), stages=["ingest", "preprocess"], release=False)
    return next(r.ran for r in res.reports if r.stage == "preprocess")


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_only_mr_and_pet_cases_key_on_the_body_rule(modality: str, tiny: Tiny, multiseq: MultiSeq,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = multiseq.root if modality == "MR" else tiny.root
    assert _rerun(src, tmp_path / "same") == 0  # nothing changed: nothing redone
    monkeypatch.setitem(BODY_RULES, "MR", "another rule")
    monkeypatch.setitem(BODY_RULES, "PET", "another rule")
    ran = _rerun(src, tmp_path / "changed")
    assert ran == (len(multiseq.images) if modality == "MR" else 0)


def test_a_pet_window_redoes_only_pet_cases(tiny: Tiny, multiseq: MultiSeq, tmp_path: Path) -> None:
    """stages.preprocess.pet_clip is in PET cases' keys only (payload pet_window), not in the
    per-case config every case's key holds: setting it left CT and MR stores (and their
    pseudo labels) to be made again though only PET normalisation changes."""
    assert _rerun(tiny.root, tmp_path / "ct", {"pet_clip": [0, 20]}) == 0
    assert _rerun(multiseq.root, tmp_path / "mr", {"pet_clip": [0, 20]}) == 0
    # the same study sequences, the t1c ones read as PET: the first run makes every store again
    root = tmp_path / "pet" / "p"
    assert _rerun(multiseq.root, root.parent, {}, {"sequences: {t1c: MR": "sequences: {t1c: PET"}) > 0
    run = run_pipeline(PipelineConfig.load(root / "pipeline.yaml"), stages=["ingest", "preprocess"], release=False)
    assert next(r.ran for r in run.reports if r.stage == "preprocess") == 0
    pet = [c for c in multiseq.images if c.endswith("__t1c")]
    assert _rerun(root, tmp_path / "pet_clip", {"pet_clip": [0, 20]}) == len(pet) == 3
    from curator.store import CaseStore

    stores = tmp_path / "pet_clip" / "p" / "ws" / "stores"
    kinds = {c: CaseStore(stores / f"{c}.zarr").attrs["normalisation"]["kind"] for c in multiseq.images}
    assert kinds == {c: "fixed" if c in pet else "percentile" for c in multiseq.images}  # PET got its window
