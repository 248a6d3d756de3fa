"""A source root that is not there is one problem, said whatever on_bad_case."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from curator.testing.pipelines import make_pipeline, run, table


def test_a_missing_root_of_an_index_layout_is_one_problem(tmp_path: Path) -> None:
    """MSD_Spleen at a root that is not there gave two errors for one cause: 'the source root is
    not a folder' and 'the layout's index file is missing' (the summary counted both)."""
    pipe = make_pipeline(tmp_path, [{"dataset": "MSD_Spleen", "root": str(tmp_path / "Task09_Spleen")}])
    (report,) = run(pipe, stages=["ingest"]).reports
    rows = [(r["path"], r["message"].split(". What to do")[0]) for r in table(pipe, "problems__ingest").to_pylist()]
    assert rows == [("MSD_Spleen:.", "the source root is not a folder")], rows
    assert report.errors == 1


@pytest.mark.parametrize("policy", ["warn", "skip"])
def test_a_missing_root_is_logged_whatever_on_bad_case(tmp_path: Path, policy: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Under `on_bad_case: skip` the summary counted '1 errors' and nothing said which: a root
    that is not there is no bad case to skip quietly."""
    pipe = make_pipeline(tmp_path, [{"dataset": "KiTS23", "root": str(tmp_path / "unmounted")}],
                         stages={"ingest": {"on_bad_case": policy}})
    with caplog.at_level(logging.WARNING, logger="curator"):
        (report,) = run(pipe, stages=["ingest"]).reports
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert report.errors == 1 and any("the source root is not a folder" in m for m in said), said
