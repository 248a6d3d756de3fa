"""A case that disappears from its source between two runs is named in the run log (only the
case count moved before)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from curator.testing.pipelines import make_pipeline, run, write_kits_cases


def test_ingest_names_the_cases_no_longer_found_since_the_last_run(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    raw = write_kits_cases(tmp_path / "raw", 3)
    pipe = make_pipeline(tmp_path, [{"dataset": "KiTS23", "root": str(raw)}], key=bytes(range(32)))
    with caplog.at_level(logging.INFO):
        run(pipe, stages=["ingest"])
    assert "no longer found" not in caplog.text
    caplog.clear()
    shutil.rmtree(raw / "dataset" / "case_00001")
    with caplog.at_level(logging.INFO):
        run(pipe, stages=["ingest"])
    said = [r for r in caplog.records if "no longer found" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert said[0].getMessage() == ("ingest: 1 case(s) of KiTS23 no longer found since the last run (their files deleted or moved, or their ids "
                                    "changed by an edit of the dataset YAML): KiTS23__case_00001")
