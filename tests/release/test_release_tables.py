"""Lazily loaded release tables and the streaming table writer."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator.errors import ConfigError
from curator.release.tables import TableSet, TableWriter
from curator.schema import to_arrow
from curator.workspace import write_parquet


def _rows(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"case_id": f"c{i:05d}", "label_key": "", "raw_value": v, "voxels": 10 * v, "volume_ml": 0.5 * v}
            for i in range(start, start + n) for v in (1, 2)]


def test_streamed_table_equals_the_in_memory_one(tmp_path: Path) -> None:
    rows = _rows(1000)
    write_parquet(to_arrow("raw_labels", rows), tmp_path / "mem.parquet")
    for size, groups in ((None, 1), (300, 7)):
        dest = tmp_path / f"stream-{size}.parquet"
        with TableWriter("raw_labels", dest, **({"row_group_size": size} if size else {})) as w:
            for k in range(0, len(rows), 700):
                chunk = rows[k:k + 700]
                w.write({c: [r[c] for r in chunk] for c in ("case_id", "raw_value", "voxels", "volume_ml",
                                                            "label_key")})
        assert w.rows == len(rows)
        assert pq.read_table(dest).equals(pq.read_table(tmp_path / "mem.parquet"))
        assert pq.ParquetFile(dest).metadata.num_row_groups == groups
        assert pq.read_schema(dest).metadata[b"curator.table"] == b"raw_labels"
    assert (tmp_path / "stream-None.parquet").read_bytes() == (tmp_path / "mem.parquet").read_bytes()


def _batch(ids: list[str | None]) -> dict[str, list[object]]:
    n = len(ids)
    return {"case_id": list(ids), "label_key": [""] * n, "raw_value": [1] * n, "voxels": [1] * n,
            "volume_ml": [0.5] * n}


def test_writer_refuses_bad_batches_and_leaves_no_file(tmp_path: Path) -> None:
    dest = tmp_path / "t.parquet"
    with pytest.raises(ConfigError, match="case_id must not be null"), TableWriter("raw_labels", dest) as w:
        w.write(_batch(["a"]))
        w.write(_batch([None]))
    with pytest.raises(ConfigError, match="label_key must not be null"), TableWriter("raw_labels", dest) as w:
        w.write({"case_id": ["a"], "raw_value": [1], "voxels": [1], "volume_ml": [0.5]})
    with pytest.raises(ConfigError, match="order"), TableWriter("raw_labels", dest) as w:
        w.write(_batch(["b", "c"]))
        w.write(_batch(["a"]))
    with pytest.raises(ConfigError, match="not sorted"), TableWriter("raw_labels", dest) as w:
        w.write(_batch(["b", "a"]))
    with pytest.raises(ConfigError, match="not in"), TableWriter("raw_labels", dest) as w:
        w.write({**_batch(["a"]), "colour": ["red"]})
    assert not list(tmp_path.iterdir())  # no file, no temporary left behind
    with TableWriter("raw_labels", dest) as w:
        w.write(_batch(["a", "b"]))
        w.write(_batch(["b", "c"]))
    assert pq.read_table(dest).column("case_id").to_pylist() == ["a", "b", "b", "c"]


def test_tableset_loads_on_use_and_tracks_replacement(tmp_path: Path) -> None:
    write_parquet(to_arrow("raw_labels", _rows(10)), tmp_path / "raw_labels.parquet")
    ts = TableSet({"raw_labels": tmp_path / "raw_labels.parquet"}, {"extra": pa.table({"x": [1]})})
    assert list(ts) == ["extra", "raw_labels"] and "raw_labels" in ts and len(ts) == 2
    assert ts.file("raw_labels") == tmp_path / "raw_labels.parquet"
    assert ts.num_rows("raw_labels") == 20 and ts.read("raw_labels", ["case_id"]).num_columns == 1
    assert ts.scan("raw_labels").collect().height == 20
    t = ts["raw_labels"]  # loaded, unchanged: still copied from its file
    assert ts.file("raw_labels") is not None
    ts["raw_labels"] = t.slice(0, 5)  # replaced: written from memory
    assert ts.file("raw_labels") is None and ts.num_rows("raw_labels") == 5
    del ts["extra"]
    assert list(ts) == ["raw_labels"]
    with pytest.raises(KeyError):
        ts["missing"]
