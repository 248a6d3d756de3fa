"""Release tables at any size: lazily loaded workspace tables and a streaming table writer.

:class:`TableSet` is what ``builder.tables`` is: a mapping name -> ``pa.Table`` whose
workspace tables are read only when a release step asks for one. A table no step touched
is copied into the release file-for-file, so a 20-million-row ``labels`` table never has to
fit in memory; steps that only aggregate use :meth:`TableSet.scan` (a Polars LazyFrame,
streamed from the file) or :meth:`TableSet.read` (some columns).

:class:`TableWriter` writes one declared table batch by batch into row groups (bounded
memory) with the same Parquet options and row groups as :func:`curator.workspace.write_parquet`
(the bytes do not depend on how the rows were batched); stages with huge outputs and the scale
benchmark use it.

A release's tables carry each column's description (``SCHEMA.md``'s text, from the manifest
schema) in their Arrow field metadata under ``description`` (:func:`described`), for a reader
without curator (pyarrow ``schema.field(name).metadata``); types and the schema's metadata stay
as they were. The workspace's tables are written with them already (the manifest schemas carry
them), so :func:`copy_table` copies such a file as it is; a file written before (or under other
descriptions) is rewritten row group by row group (bounded memory; the same bytes as
:func:`write_release_table` of the whole table).

>>> # with TableWriter("labels", ws.table_path("labels")) as w:
>>> #     for chunk in chunks: w.write(chunk)      # dict of columns or pa.Table, in sort order
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curator.errors import ConfigError
from curator.io.fsutil import atomic_path
from curator.schema import table_schema, with_descriptions
from curator.workspace import PARQUET_OPTIONS, PARQUET_ROW_GROUP, write_parquet

ROW_GROUP = PARQUET_ROW_GROUP


class TableSet(MutableMapping[str, pa.Table]):
    """Tables of a release being built (see the module docstring)."""

    def __init__(self, files: dict[str, Path] | None = None, tables: dict[str, pa.Table] | None = None) -> None:
        self._files = dict(files or {})
        self._tables = dict(tables or {})
        self._loaded: dict[str, pa.Table] = {}  # read from _files and not replaced since

    def __getitem__(self, name: str) -> pa.Table:
        if name not in self._tables and name in self._files:
            self._tables[name] = self._loaded[name] = pq.read_table(self._files[name])
        return self._tables[name]

    def __setitem__(self, name: str, table: pa.Table) -> None:
        self._tables[name] = table
        self._loaded.pop(name, None)

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        for d in (self._files, self._tables, self._loaded):
            d.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._files or name in self._tables

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._files) | set(self._tables)))

    def __len__(self) -> int:
        return len(set(self._files) | set(self._tables))

    def file(self, name: str) -> Path | None:
        """The workspace file holding ``name`` when the table is still exactly that file."""
        if name in self._files and (name not in self._tables or self._tables[name] is self._loaded.get(name)):
            return self._files[name]
        return None

    def read(self, name: str, columns: list[str]) -> pa.Table:
        """Some columns of a table (from the file when it was not loaded)."""
        f = self.file(name)
        if f is not None and name not in self._tables:
            return pq.read_table(f, columns=columns)
        return self[name].select(columns)

    def scan(self, name: str) -> pl.LazyFrame:
        """A lazy Polars frame of a table (streamed from its file when it is still that file, even
        if a step loaded it; an in-memory table through :func:`polars_safe`)."""
        f = self.file(name)
        if f is not None:
            return pl.scan_parquet(f, glob=False)  # a path may hold [ ] * ?: never a pattern
        return pl.DataFrame(polars_safe(self[name])).lazy()

    def num_rows(self, name: str) -> int:
        f = self.file(name)
        if f is not None and name not in self._tables:
            return int(pq.ParquetFile(f).metadata.num_rows)
        return int(self[name].num_rows)

    def columns(self, name: str) -> list[str]:
        f = self.file(name)
        if f is not None and name not in self._tables:
            return list(pq.read_schema(f).names)
        return list(self[name].schema.names)


def _has_fixed_size_list(t: pa.DataType) -> bool:
    if pa.types.is_fixed_size_list(t):
        return True
    if pa.types.is_struct(t):
        return any(_has_fixed_size_list(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_fixed_size_list(t.value_type)
    return False


def polars_safe(table: pa.Table) -> pa.Table:
    """``table`` with every sliced chunk of a column holding a fixed-size list copied unsliced.

    Polars (2.1) refuses a sliced ``fixed_size_list`` chunk with nulls ("validity mask length
    must be equal to the number of values divided by size"), and pyarrow hands such chunks back
    for any Parquet row group above 131,072 rows — chunks of 131,072 rows over the row group's
    child values — (``labels``' ``extent_mm`` and ``centroid_mm`` with null measurements) and for
    ``Table.slice``. Only those chunks are copied; the other columns are shared.
    """
    for i, field in enumerate(table.schema):
        col = table.column(i)
        if _has_fixed_size_list(field.type) and any(_sliced(c) for c in col.chunks):
            chunks = [pa.concat_arrays([c]) if _sliced(c) else c for c in col.chunks]
            table = table.set_column(i, field, pa.chunked_array(chunks, type=field.type))
    return table


def _sliced(chunk: pa.Array) -> bool:
    """A chunk that is a slice of a longer array (an offset, or more child values than its rows
    hold); a nested fixed-size list is copied whatever it is (no table declares one)."""
    if pa.types.is_fixed_size_list(chunk.type):
        return bool(chunk.offset) or len(chunk.values) != len(chunk) * chunk.type.list_size
    return True


class TableWriter:
    """Write a declared table in row groups, one batch at a time, atomically.

    Each batch is conformed to the manifest schema (column order, missing nullable columns
    as nulls, types cast); non-nullable nulls and batches out of the table's first sort key
    order are refused, so the file equals what ``to_arrow`` + ``write_parquet`` would give.
    """

    def __init__(self, name: str, path: str | Path, row_group_size: int = ROW_GROUP) -> None:
        self.name, self.path, self.row_group_size = name, Path(path), row_group_size
        self.ts = table_schema(name)
        self.rows = 0
        self._last: Any = None
        self._ctx: Any = None
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0

    def __enter__(self) -> Self:
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._writer = pq.ParquetWriter(tmp, self.ts.schema, **PARQUET_OPTIONS)
        return self

    def conform(self, batch: pa.Table | dict[str, Any]) -> pa.Table:
        t = batch if isinstance(batch, pa.Table) else pa.table(batch)
        extra = set(t.column_names) - set(self.ts.schema.names)
        if extra:
            raise ConfigError("config_error", f"table {self.name}: columns {sorted(extra)} are not in "
                              f"manifests/tables/{self.name}.yaml")
        cols = []
        for f in self.ts.schema:
            if f.name in t.column_names:
                col = t.column(f.name).cast(f.type)
            elif f.nullable:
                col = pa.nulls(t.num_rows, f.type)
            else:
                raise ConfigError("config_error", f"table {self.name}: column {f.name} must not be null")
            if not f.nullable and col.null_count:
                raise ConfigError("config_error", f"table {self.name}: column {f.name} must not be null")
            cols.append(col)
        return pa.Table.from_arrays(cols, schema=self.ts.schema)

    def _check_order(self, t: pa.Table) -> None:
        key = t.column(self.ts.sort[0])
        if t.num_rows == 0:
            return
        first = key[0].as_py()
        if t.num_rows > 1 and not pc.all(pc.less_equal(key.slice(0, t.num_rows - 1), key.slice(1))).as_py():
            raise ConfigError("config_error", f"table {self.name}: a batch is not sorted by {self.ts.sort[0]}")
        if self._last is not None and first is not None and first < self._last:
            raise ConfigError("config_error", f"table {self.name}: batches must arrive in {self.ts.sort[0]} order "
                              f"({first!r} after {self._last!r})")
        self._last = key[t.num_rows - 1].as_py()

    def write(self, batch: pa.Table | dict[str, Any]) -> None:
        if self._writer is None:
            raise RuntimeError("TableWriter.write outside its `with` block")
        t = self.conform(batch)
        self._check_order(t)
        self._buffer.append(t)
        self._buffered += t.num_rows
        self.rows += t.num_rows
        if self._buffered >= self.row_group_size:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        """Write full row groups (and the rest when ``final``): the file does not depend on batch sizes."""
        if self._writer is None:
            raise RuntimeError("TableWriter flushed outside its `with` block")
        t = pa.concat_tables(self._buffer) if self._buffer else self.ts.schema.empty_table()
        n = t.num_rows if final else t.num_rows - t.num_rows % self.row_group_size
        if n:
            self._writer.write_table(t.slice(0, n), row_group_size=self.row_group_size)
        self._buffer = [t.slice(n)] if n < t.num_rows else []
        self._buffered = t.num_rows - n

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self._writer is not None:
            if et is None:
                self._flush(final=True)
            self._writer.close()
        self._ctx.__exit__(et, ev, tb)


def described(schema: pa.Schema, name: str) -> pa.Schema:
    """``schema`` of table ``name`` with each column's manifest description in its field
    metadata (key ``description``; a column without one is left as it is); the types and the
    schema's own metadata are unchanged."""
    return with_descriptions(schema, table_schema(name).descriptions)


def write_release_table(table: pa.Table, name: str, dest: Path) -> None:
    """Write a release's table ``name`` with its column descriptions (:func:`described`)."""
    write_parquet(table.cast(described(table.schema, name)), dest)


def copy_table(src: Path, dest: Path, name: str) -> None:
    """Copy a workspace table file into a release as ``name`` with its column descriptions,
    one row group at a time (memory: one row group; a file already described is copied as is)."""
    pf = pq.ParquetFile(src)
    schema = described(pf.schema_arrow, name)
    if schema.equals(pf.schema_arrow, check_metadata=True):
        shutil.copyfile(src, dest)
        return
    with pq.ParquetWriter(dest, schema, **PARQUET_OPTIONS) as w:
        for i in range(pf.num_row_groups):
            w.write_table(pf.read_row_group(i).cast(schema), row_group_size=ROW_GROUP)
