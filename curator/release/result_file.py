"""``curator query ... -o FILE``: a query's rows streamed into a Parquet or CSV file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from curator.errors import ReleaseError
from curator.release.query import check_outside_releases
from curator.release.query_errors import duckdb_message


def save_result(res: duckdb.DuckDBPyRelation, dest: str | Path, source: Path,
                csv_cell: Callable[[Any], Any] | None = None) -> int:
    """Stream a query's rows into ``dest`` (``.parquet``, or ``.csv`` with each value written as
    ``csv_cell`` makes it), replaced atomically; the number of rows. A destination inside a
    release is refused (releases are immutable)."""
    import csv

    import pyarrow.parquet as pq

    from curator.io.fsutil import atomic_path

    dest = Path(dest)
    suffix = dest.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ReleaseError("query_error", f"--out {dest.name}: give a .parquet or .csv file", path=str(dest))
    check_outside_releases(dest, "the query result")
    cell = csv_cell or (lambda v: v)
    n = 0
    try:
        reader = res.to_arrow_reader(100_000)
        with atomic_path(dest) as tmp:
            if suffix == ".parquet":
                with pq.ParquetWriter(tmp, reader.schema) as writer:
                    for batch in reader:
                        writer.write_batch(batch)
                        n += batch.num_rows
            else:  # as --format csv writes it (booleans, lists and structs), not pyarrow's CSV
                with open(tmp, "w", newline="", encoding="utf-8") as f:
                    w = csv.writer(f)
                    w.writerow(reader.schema.names)
                    for batch in reader:
                        cols = [c.to_pylist() for c in batch.columns]
                        w.writerows([cell(v) for v in row] for row in zip(*cols, strict=True))
                        n += batch.num_rows
    except duckdb.Error as e:  # raised while running (e.g. a failed cast), not while binding
        raise ReleaseError("query_error", duckdb_message(e), path=str(source)) from e
    return n
