"""A `fixes:` entry re-runs only the cases it applies to (before or after the edit); a fix of the
whole dataset still re-runs every case of it, and the workspace is current after the run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from curator.config import PipelineConfig
from curator.pipeline import run_pipeline
from curator.runner.context import Context
from curator.runner.freshness import stale_reasons
from tests.preprocess.conftest import KITS_YAML, Tiny, off

FIXES = "fixes: {intensity_offset: {value: -1024}}"
STAGES = ["ingest", "harmonize", "preprocess"]


def _project(tiny: Tiny, tmp_path: Path) -> Path:
    """A copy of the tiny workspace whose TinyKits source reads a dataset YAML of its own
    (``kits.yaml``, edited by the test) and whose harmonize stage is enabled."""
    root = tmp_path / "root"
    shutil.copytree(tiny.root / "ws", root / "ws")
    (root / "kits.yaml").write_text(KITS_YAML)
    cfg = yaml.safe_load((tiny.root / "pipeline.yaml").read_text())
    kits = str(root / "kits.yaml")
    cfg["registry"] = [kits if p.endswith("/kits.yaml") else p for p in cfg["registry"]]
    for s in cfg["sources"]:
        if s["dataset"].endswith("/kits.yaml"):
            s["dataset"] = kits
    cfg["stages"] = {"preprocess": cfg["stages"]["preprocess"], **off("dedup", "pseudolabel", "qc")}
    (root / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _run(root: Path, fixes: str) -> tuple[dict[str, int], dict[str, str]]:
    """Run ingest, harmonize and preprocess with TinyKits' ``fixes:`` line set to ``fixes``: the
    cases each stage ran, and each case's store checksum. The workspace is current after it."""
    assert FIXES in KITS_YAML
    (root / "kits.yaml").write_text(KITS_YAML.replace(FIXES, fixes))
    config = PipelineConfig.load(root / "pipeline.yaml")
    res = run_pipeline(config, stages=STAGES, release=False)
    assert stale_reasons(Context(config)) == []  # `curator status`: every stage current
    rows = pq.read_table(root / "ws" / "tables" / "preprocessed.parquet").to_pylist()
    return {r.stage: r.ran for r in res.reports}, {r["case_id"]: r["store_sha256"] for r in rows}


def test_a_fix_of_one_case_reruns_that_case_only(tiny: Tiny, tmp_path: Path) -> None:
    root = _project(tiny, tmp_path)
    _, base = _run(root, FIXES)  # harmonize's first run here
    one = "{value: -1024}, image_flip: {axes: [0], when: '^dataset/case_00001/imaging\\.nii\\.gz$'}"
    ran, stores = _run(root, FIXES.replace("{value: -1024}", one))
    # was every TinyKits case in each stage (the whole `fixes:` mapping keyed every case)
    assert ran == {"ingest": 1, "harmonize": 0, "preprocess": 1}  # an image fix: harmonize reads labels only
    assert {c for c in base if stores[c] != base[c]} == {"TinyKits__case_00001"}
    ran, stores = _run(root, FIXES)  # the fix taken back: the case it applied to runs again
    assert ran == {"ingest": 1, "harmonize": 0, "preprocess": 1} and stores == base
    label = "{value: -1024}, label_flip: {axes: [0], when: 'case_00002/segmentation'}"
    ran, stores = _run(root, FIXES.replace("{value: -1024}", label))
    assert ran == {"ingest": 1, "harmonize": 1, "preprocess": 1}
    assert {c for c in base if stores[c] != base[c]} == {"TinyKits__case_00002"}
    # a fix without `when` applies to every case of the dataset: each runs again (not TinyTotalSeg's)
    ran, stores = _run(root, FIXES.replace("-1024", "-1000"))
    assert ran == {"ingest": 3, "harmonize": 1, "preprocess": 3}  # harmonize: case_00002's label_flip is gone
    assert {c for c in base if stores[c] != base[c]} == {f"TinyKits__case_{i:05d}" for i in range(3)}
