"""What a QC report is made of: a release's tables (any of them may be absent) and where its stores are.

>>> d = ReportData(tables={}, info={"collection": "demo", "version": "0.1.0"})
>>> d.has("qc"), d.title
(False, 'demo 0.1.0')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

log = logging.getLogger("curator")


@dataclass
class ReportData:
    tables: dict[str, pl.DataFrame]
    info: dict[str, Any] = field(default_factory=dict)
    store_roots: tuple[Path, ...] = ()  # folders holding <case_id>.zarr, searched in order
    path: Path = Path(".")  # the release folder (when read from one)
    release: Any = None  # the Release it was read from: its stores are checked before they are drawn
    damaged: dict[str, str] = field(default_factory=dict)  # case id -> why its release store was not drawn

    @classmethod
    def from_arrow(cls, tables: dict[str, pa.Table], info: dict[str, Any] | None = None,
                   store_roots: tuple[Path, ...] = ()) -> ReportData:
        from curator.release.tables import polars_safe

        return cls({k: pl.from_arrow(polars_safe(v)) for k, v in tables.items()},  # type: ignore[misc]
                   dict(info or {}), store_roots)

    @classmethod
    def from_release(cls, path: str | Path, store_roots: tuple[Path, ...] = ()) -> ReportData:
        from curator.release.query import Release

        rel = Release(path)
        tables = {name: rel.table(name) for name in rel.table_names()}
        roots = (rel.path / "stores", *store_roots)
        return cls(tables, dict(rel.info), roots, rel.path, rel)

    @property
    def title(self) -> str:
        return f"{self.info.get('collection', 'collection')} {self.info.get('version', '')}".strip()

    def has(self, name: str) -> bool:
        t = self.tables.get(name)
        return t is not None and t.height > 0

    def get(self, name: str) -> pl.DataFrame:
        return self.tables[name]

    def store_path(self, case_id: str) -> Path | None:
        """The store to draw ``case_id`` from; a release store whose content differs from what
        ``release.json`` records is not drawn (``damaged`` says why)."""
        from curator.errors import ReleaseError
        from curator.registry.layout import is_case_id

        if not is_case_id(case_id):  # a table's case id is never a path out of the store folders
            self.damaged[str(case_id)] = "not a case id (it would name a path outside the store folders)"
            return None
        for root in self.store_roots:
            p = root / f"{case_id}.zarr"
            if (p / "zarr.json").exists():
                if self.release is not None and root == self.path / "stores":
                    try:
                        self.release.open_store(case_id)
                    except ReleaseError as e:
                        self.damaged[case_id] = e.detail
                        log.warning("report: not drawing %s: %s", case_id, e.detail)
                        return None
                return p
        return None

    def term_counts(self) -> pl.DataFrame | None:
        """Labels per term (present labels of the ``labels`` table, else ``qc`` rows, else raw values)."""
        if self.has("labels"):
            df = self.get("labels")
            if "present" in df.columns:
                df = df.filter(pl.col("present"))
            return df.group_by("term_id").agg(pl.len().alias("labels"), pl.col("case_id").n_unique().alias("cases"))\
                .sort(["labels", "term_id"], descending=[True, False])
        if self.has("qc"):
            return self.get("qc").group_by("term_id").agg(pl.len().alias("labels"),
                                                          pl.col("case_id").n_unique().alias("cases"))\
                .sort(["labels", "term_id"], descending=[True, False])
        if self.has("raw_labels"):
            df = self.get("raw_labels").with_columns(
                (pl.col("label_key").fill_null("") + ":" + pl.col("raw_value").cast(pl.Utf8)).alias("term_id"))
            return df.group_by("term_id").agg(pl.len().alias("labels"), pl.col("case_id").n_unique().alias("cases"))\
                .sort(["labels", "term_id"], descending=[True, False])
        return None
