"""The report tests' release: phantom stores (two broken livers, one label-only case), qc, a duplicates table."""

from __future__ import annotations

from pathlib import Path

import pytest

from curator.config import PipelineConfig
from curator.qc.stage import QCStage
from curator.release.build import build_release
from curator.runner.context import Context
from curator.runner.run import run_stage
from curator.schema import to_arrow
from curator.testing.stores import phantom_workspace, record_runs

STEPS = ["curator.qc.release:release_step", "curator.report.release:release_step"]


@pytest.fixture(scope="package")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    phantom_workspace(tmp / "ws", n_cases=16, broken=(2, 11), label_only=(4,))
    cfg = PipelineConfig.from_dict({
        "workspace": str(tmp / "ws"), "stages": {"qc": {"min_cohort": 10}, "pseudolabel": {"enabled": False}},
        "executor": {"kind": "local", "workers": 1, "progress": False},
        "release": {"root": str(tmp / "releases"), "collection": "phantoms", "version": "1.0.0"},
    })
    ctx = Context(cfg)
    ws = ctx.workspace
    ws.write_table("duplicates", to_arrow("duplicates", [
        {"group_id": "g1", "case_id": "Phantom__c000", "dataset": "Phantom", "kept": True,
         "kept_case_id": "Phantom__c000", "group_size": 2, "reason": "kept: first"},
        {"group_id": "g1", "case_id": "Phantom__c001", "dataset": "Phantom", "kept": False,
         "kept_case_id": "Phantom__c000", "group_size": 2, "reason": "same scan <re-cropped>"}]))
    record_runs(ctx, "ingest", "dedup", "harmonize", "preprocess")  # what was written above
    run_stage(ctx, QCStage)
    return build_release(ctx, steps=STEPS)
