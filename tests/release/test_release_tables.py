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


def _big_labels(path: Path, n: int = 131_072 + 100) -> None:
    """A ``labels`` table just over pyarrow's 131,072-row read batch in one row group, ``extent_mm``
    null on most rows (QC off) — read back, its fixed-size-list chunks are slices."""
    extent = pa.FixedSizeListArray.from_arrays(pa.array([float(i % 7) for i in range(3 * n)]), 3,
                                               mask=pa.array([i % 1000 != 0 for i in range(n)]))
    with TableWriter("labels", path, row_group_size=n) as w:
        w.write(pa.table({"case_id": [f"c{i:06d}" for i in range(n)], "dataset": ["d"] * n,
                          "term_id": ["liver"] * n, "term": ["liver"] * n, "origin": ["original"] * n,
                          "layer": ["original"] * n, "annotated": [True] * n, "present": [True] * n,
                          "derived": [False] * n, "voxels": [1] * n, "volume_ml": [0.5] * n, "extent_mm": extent}))


def test_scan_and_report_of_a_loaded_table_over_131072_rows(tmp_path: Path) -> None:
    """Finding 2 of tester 38: a release with more than 131,072 label rows failed in the card's
    TableSet.scan (polars: "validity mask length must be equal to the number of values divided by
    size") once a step had loaded ``labels``; the report step's conversion failed alike."""
    import polars as pl

    from curator.report.data import ReportData

    _big_labels(tmp_path / "labels.parquet")
    want = pl.read_parquet(tmp_path / "labels.parquet")
    ts = TableSet({"labels": tmp_path / "labels.parquet"})
    loaded = ts["labels"]  # as a release step that reads it (qc, report) leaves it
    assert loaded.column("extent_mm").num_chunks > 1
    assert ts.scan("labels").collect().equals(want)
    ts["labels"] = loaded.append_column("extra", pa.nulls(loaded.num_rows)).drop_columns(["extra"])  # in memory only
    assert ts.file("labels") is None
    assert ts.scan("labels").collect().equals(want)
    assert ts.scan("labels").collect()["extent_mm"].drop_nulls().len() == 132
    assert ReportData.from_arrow({"labels": loaded}).get("labels").equals(want)


def test_release_steps_with_nothing_to_do_leave_labels_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 3 of tester 38: the pseudolabel step turned the whole labels table into Python rows on
    every release (about 1.2 KB a row), and the qc step loaded it without a qc table. With no pseudo
    or revised rows and no qc table neither reads it: it is copied file-for-file."""
    from types import SimpleNamespace

    from curator.pseudolabel.release import release_step as assemble
    from curator.qc.release import release_step as qc_step

    write_parquet(to_arrow("labels", [{"case_id": "c", "dataset": "d", "term_id": "liver", "term": "liver",
                                       "origin": "original", "layer": "original", "annotated": True,
                                       "present": True, "derived": False, "voxels": 1, "volume_ml": 0.5}]),
                  tmp_path / "labels.parquet")
    ts = TableSet({"labels": tmp_path / "labels.parquet"})
    getitem = TableSet.__getitem__

    def no_labels(self: TableSet, name: str) -> pa.Table:
        assert name != "labels", "labels loaded"
        return getitem(self, name)

    monkeypatch.setattr(TableSet, "__getitem__", no_labels)
    ws = SimpleNamespace(read_table=lambda name: None)
    builder = SimpleNamespace(tables=ts, extra={}, ctx=SimpleNamespace(workspace=ws, stage_enabled=lambda s: True))
    assemble(builder)
    qc_step(builder)
    assert ts.file("labels") == tmp_path / "labels.parquet" and builder.extra == {}
