"""A label map whose NIfTI header carries a CT's scaling (``scl_inter`` −1024) through ingest
and preprocess: its organs keep their codes (they were read −1024.. and went out 'annotated,
absent'), a row names the file and both value sets, and the cases holding such a label are the
only ones a workspace cached before the change reads again (their keys carry the scaling)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from curator.config import PipelineConfig
from curator.pipeline import run_pipeline
from curator.store import CaseStore
from curator.workspace import ChecksumCache, Workspace
from tests.preprocess.conftest import Tiny

CASE = "TinyKits__case_00001"


def _run(root: Path) -> dict[str, int]:
    res = run_pipeline(PipelineConfig.load(root / "pipeline.yaml"), stages=["ingest", "preprocess"], release=False)
    return {r.stage: r.ran for r in res.reports}


def _copy(tiny: Tiny, root: Path) -> Path:
    """The tiny project copied to ``root``, its pipeline reading the copy's sources; the label
    file of :data:`CASE`."""
    shutil.copytree(tiny.root, root, ignore=shutil.ignore_patterns("releases"))
    pipe = root / "pipeline.yaml"
    cfg = yaml.safe_load(pipe.read_text())  # the copy's own sources and dataset YAMLs
    cfg["registry"] = [str(root / Path(f).name) for f in cfg["registry"]]
    cfg["sources"] = [{**s, "dataset": str(root / Path(s["dataset"]).name), "root": str(root / Path(s["root"]).name)}
                      for s in cfg["sources"]]
    pipe.write_text(yaml.safe_dump(cfg))
    return root / "kits" / "dataset" / "case_00001" / "segmentation.nii.gz"


def test_a_ct_header_on_a_label_keeps_its_codes(tiny: Tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "p"
    seg = _copy(tiny, root)
    seg = root / "kits" / "dataset" / "case_00001" / "segmentation.nii.gz"
    old = nib.load(str(seg))
    codes = np.asarray(old.dataobj).astype(np.int16)
    img = nib.Nifti1Image(codes, old.affine, dtype=np.int16)
    img.header.set_slope_inter(1.0, -1024.0)  # a CT's header copied onto its label
    nib.save(img, str(seg))
    # as a curator before the change planned: no key names the scaling (its checksum entries had 5 fields)
    with monkeypatch.context() as m:
        m.setattr(ChecksumCache, "label_scaling", lambda self, root, rel: None)
        _run(root)
    assert _run(root) == {"ingest": 1, "preprocess": 1}  # that case alone is read again
    assert _run(root) == {"ingest": 0, "preprocess": 0}
    ws = Workspace(root / "ws")
    row = next(r for r in ws.read_table("cases").to_pylist() if r["case_id"] == CASE)
    assert row["label_status"] == "ok" and row["label_values"] == sorted(int(v) for v in np.unique(codes) if v)
    rows = [p for p in ws.read_table("problems__ingest").to_pylist() if p["kind"] == "label_scaling_ignored"]
    assert [(p["case_id"], p["path"], p["severity"]) for p in rows] == [
        (CASE, "TinyKits:dataset/case_00001/segmentation.nii.gz", "warning")]
    assert "scl_slope 1, scl_inter -1024" in rows[0]["message"] and "-1024" in rows[0]["message"]
    assert not [p for p in ws.read_table("problems__ingest").to_pylist()
                if p["case_id"] == CASE and p["kind"] == "label_values_undeclared"]
    # the store holds the same organs as the workspace built from the unscaled file
    mine, before = CaseStore(root / "ws" / "stores" / f"{CASE}.zarr"), CaseStore(tiny.workspace / "stores" / f"{CASE}.zarr")
    assert mine.terms() == before.terms() and mine.terms()
    assert np.array_equal(mine.masks(before.terms()), before.masks(before.terms()))


def test_preprocess_rows_about_a_label_name_the_label(tiny: Tiny, tmp_path: Path) -> None:
    """A preprocess row about the label file (its values that map to no term) names that file in
    its path column, not the case's image (a script listing the files to re-export listed images)."""
    root = tmp_path / "p"
    seg = _copy(tiny, root)
    old = nib.load(str(seg))
    codes = np.asarray(old.dataobj).copy()
    codes[0, 0, 0] = 7  # a value the YAML does not declare
    nib.save(nib.Nifti1Image(codes, old.affine, dtype=np.uint8), str(seg))
    _run(root)
    rows = [p for p in Workspace(root / "ws").read_table("problems__preprocess").to_pylist()
            if p["kind"] == "label_values_undeclared"]
    assert [(p["case_id"], p["path"]) for p in rows] == [(CASE, "TinyKits:dataset/case_00001/segmentation.nii.gz")]
    assert rows[0]["message"].startswith("raw values [7]")  # no file-name prefix: the path names it
