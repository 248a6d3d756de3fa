"""`curator query` on a workspace whose table file is damaged: named, with what writes it again."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator.errors import CuratorError
from curator.release.workspace_query import WorkspaceTables


def _workspace(root: Path) -> Path:
    (root / "tables").mkdir(parents=True)
    (root / "workspace.json").write_text("{}")
    for name in ("cases", "labels", "raw_labels", "problems__ingest", "problems__qc"):
        pq.write_table(pa.table({"case_id": ["A__1", "A__2"], "kind": ["x", "y"]}), root / "tables" / f"{name}.parquet")
    return root


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def test_a_damaged_table_is_named_with_the_stage_that_writes_it(tmp_path: Path) -> None:
    """Tester 36 #6: 'Catalog Error: Table with name labels does not exist! Did you mean
    "raw_labels"?', then a remedy listing `labels` among the tables."""
    ws = _workspace(tmp_path / "ws")
    _truncate(ws / "tables" / "labels.parquet")
    tables = WorkspaceTables(ws)
    with pytest.raises(CuratorError) as e:
        tables.sql("select count(*) from labels").fetchall()
    said = str(e.value)
    assert e.value.kind == "table_damaged" and str(ws / "tables" / "labels.parquet") in said
    assert "harmonize stage writes it again" in said and "does not exist" not in said
    assert tables.sql("select count(*) from raw_labels").fetchall() == [(2,)]  # the others stay queryable
    with pytest.raises(CuratorError) as e:  # a table that is not there at all stays a query error
        tables.sql("select * from nothing_here").fetchall()
    assert e.value.kind == "query_error"


def test_a_damaged_stage_problems_file_is_named_in_the_problems_view(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws")
    _truncate(ws / "tables" / "problems__qc.parquet")
    with pytest.raises(CuratorError) as e:
        WorkspaceTables(ws).sql("select kind from problems").fetchall()
    said = str(e.value)
    assert e.value.kind == "table_damaged" and "problems__qc.parquet" in said and "problems__ingest" not in said
    assert "the qc stage writes it again" in said
