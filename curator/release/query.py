"""Opening a release for queries: DuckDB (read-only, no external access) and Polars.

>>> # rel = Release("releases/demo/0.1.0")
>>> # rel.sql("select dataset, count(*) from cases group by 1").fetchall()
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.dataset as pads

from curator.errors import ReleaseError

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def resolve_release(path: str | Path) -> Path:
    """A release folder, or a collection folder (its newest version)."""
    p = Path(path)
    if (p / "release.json").is_file():
        return p
    if p.is_dir():
        versions = [d for d in p.iterdir() if d.is_dir() and (d / "release.json").is_file()]
        if versions:
            return max(versions, key=lambda d: tuple(int(x) for x in _VERSION.match(d.name).groups())  # type: ignore[union-attr]
                       if _VERSION.match(d.name) else (-1, -1, -1))
    raise ReleaseError("release_error", "not a release folder (no release.json)", path=str(p),
                       remedy="pass <release root>/<collection>/<version> (or the collection folder)")


class Release:
    def __init__(self, path: str | Path) -> None:
        self.path = resolve_release(path)

    @functools.cached_property
    def info(self) -> dict[str, Any]:
        return json.loads((self.path / "release.json").read_text(encoding="utf-8"))

    def table_names(self) -> list[str]:
        return sorted(p.stem for p in self.path.glob("*.parquet"))

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with every table as a view; file system access is off and locked."""
        con = duckdb.connect(config={"enable_external_access": False, "lock_configuration": True,
                                     "autoinstall_known_extensions": False,
                                     "autoload_known_extensions": False})
        for name in self.table_names():
            con.register(name, pads.dataset(str(self.path / f"{name}.parquet"), format="parquet"))
        return con

    @functools.cached_property
    def _con(self) -> duckdb.DuckDBPyConnection:
        return self.connect()

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        return self._con.sql(query)

    def table(self, name: str) -> pl.DataFrame:
        p = self.path / f"{name}.parquet"
        if not p.exists():
            raise ReleaseError("release_error", f"the release has no table {name!r}", path=str(self.path),
                               remedy=f"tables: {self.table_names()}")
        return pl.read_parquet(p)

    def __repr__(self) -> str:
        return f"Release({self.info.get('collection')} {self.info.get('version')} at {self.path})"
