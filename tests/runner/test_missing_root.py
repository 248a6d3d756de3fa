"""A source root that is not there is one problem."""

from __future__ import annotations

from pathlib import Path

from curator.testing.pipelines import make_pipeline, run, table


def test_a_missing_root_of_an_index_layout_is_one_problem(tmp_path: Path) -> None:
    """MSD_Spleen at a root that is not there gave two errors for one cause: 'the source root is
    not a folder' and 'the layout's index file is missing' (the summary counted both)."""
    pipe = make_pipeline(tmp_path, [{"dataset": "MSD_Spleen", "root": str(tmp_path / "Task09_Spleen")}])
    (report,) = run(pipe, stages=["ingest"]).reports
    rows = [(r["path"], r["message"].split(". What to do")[0]) for r in table(pipe, "problems__ingest").to_pylist()]
    assert rows == [("MSD_Spleen:.", "the source root is not a folder")], rows
    assert report.errors == 1
