"""Cached per-case results that are not what the runner wrote: the case is run again, with a
note naming the file — never a crash called a bug in curator."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from curator.config import PipelineConfig
from curator.runner.context import Context
from curator.runner.executors import InlineExecutor
from curator.runner.run import run_stage
from curator.testing.stages import ProbeStage


def _ctx(tmp: Path) -> Context:
    ctx = Context(PipelineConfig.from_dict({"workspace": str(tmp / "ws"), "stages": {"probe": {"n_cases": 3}},
                                            "executor": {"progress": False}}))
    ctx.workspace.init()
    return ctx


def _shapes(key: str) -> list[Any]:
    return [[], {"key": key}, "text", {"case_id": "c001", "key": key, "rows": [], "problems": []},
            {"case_id": "c001", "key": key, "rows": {}, "problems": [{"message": "no kind, no severity"}]},
            {"case_id": "c001", "key": key, "rows": {"probe": ["not a row"]}, "problems": []}]


@pytest.mark.parametrize("which", range(6))
def test_a_cached_result_of_another_shape_is_run_again_naming_the_file(tmp_path: Path, which: int,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Tester 36 #5: `[]` and `{"key": ...}` crashed the stage (AttributeError, KeyError: 'case_id'
    at runner/stage.py) as "a bug in curator", naming no file; a truncated file was redone."""
    ctx = _ctx(tmp_path)
    assert run_stage(ctx, ProbeStage, InlineExecutor()).ran == 3
    path = ctx.workspace.case_result_path("probe", "c001")
    key = json.loads(path.read_text())["key"]
    path.write_text(json.dumps(_shapes(key)[which]))
    caplog.set_level(logging.WARNING, logger="curator")
    rep = run_stage(ctx, ProbeStage, InlineExecutor())
    assert (rep.ran, rep.cached, rep.failed) == (1, 2, 0)
    assert any(str(path) in r.getMessage() and "run again" in r.getMessage() for r in caplog.records), caplog.text
    assert json.loads(path.read_text())["case_id"] == "c001"  # written anew


def test_a_truncated_cached_result_is_run_again_naming_the_file(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    ctx = _ctx(tmp_path)
    run_stage(ctx, ProbeStage, InlineExecutor())
    path = ctx.workspace.case_result_path("probe", "c002")
    path.write_bytes(path.read_bytes()[:20])
    caplog.set_level(logging.WARNING, logger="curator")
    assert run_stage(ctx, ProbeStage, InlineExecutor()).ran == 1
    assert any(str(path) in r.getMessage() for r in caplog.records), caplog.text


def test_a_cached_result_edited_on_disk_is_run_again_not_published(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Tester 36 #3: a volume_ml edited in a cached harmonize result (260.2 -> 999, a plausible bit
    flip) was published, and verify said OK. Results carry a checksum of their content."""
    ctx = _ctx(tmp_path)
    run_stage(ctx, ProbeStage, InlineExecutor())
    path = ctx.workspace.case_result_path("probe", "c000")
    res = json.loads(path.read_text())
    assert res["sha256"] and res["rows"]["probe"]
    row = res["rows"]["probe"][0]
    field = next(k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    path.write_text(json.dumps({**res, "rows": {"probe": [{**row, field: row[field] + 1}]}}))
    caplog.set_level(logging.WARNING, logger="curator")
    assert run_stage(ctx, ProbeStage, InlineExecutor()).ran == 1
    assert any(str(path) in r.getMessage() and "checksum" in r.getMessage() for r in caplog.records), caplog.text
    assert json.loads(path.read_text())["rows"]["probe"][0] == row  # computed again: the row as it was
    legacy = {k: v for k, v in res.items() if k != "sha256"}  # written before results carried a checksum
    path.write_text(json.dumps(legacy))
    assert run_stage(ctx, ProbeStage, InlineExecutor()).ran == 0


def test_only_the_runners_read_says_the_case_is_run_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Review s31 #8: the freshness check and pseudolabel (reading preprocess's result) also
    warned "the case is run again" — twice per run for each damaged file, and wrongly for a
    stage that runs nothing."""
    from curator.runner.freshness import _changed_inputs

    ctx = _ctx(tmp_path)
    run_stage(ctx, ProbeStage, InlineExecutor())
    path = ctx.workspace.case_result_path("probe", "c001")
    path.write_bytes(path.read_bytes()[:20])
    caplog.set_level(logging.DEBUG, logger="curator")
    config = ctx.stage_config(ProbeStage.config_class, "probe")
    assert "c001" in " ".join(_changed_inputs(ctx, "probe", ProbeStage, config))  # the freshness check read it
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and str(path) in r.getMessage()], caplog.text
    assert any(str(path) in r.getMessage() for r in caplog.records)  # said at debug level
    caplog.clear()
    assert run_stage(ctx, ProbeStage, InlineExecutor()).ran == 1
    said = [r for r in caplog.records if r.levelno >= logging.WARNING and str(path) in r.getMessage()]
    assert len(said) == 1 and "run again" in said[0].getMessage(), caplog.text
