"""``curator query`` on a workspace folder: the tables a workspace holds now, before any release,
as read-only DuckDB views (the same locked connection and error messages as a release's)."""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

import duckdb

from curator.errors import ReleaseError, WorkspaceError
from curator.release.query import _ident, _literal, check_read_only, locked_connection
from curator.release.query_errors import query_error
from curator.workspace import Workspace

log = logging.getLogger("curator")


def is_workspace(path: str | Path) -> bool:
    """Whether ``path`` is a curator workspace folder (``workspace.json`` and ``tables/``)."""
    p = Path(path)
    return (p / "workspace.json").is_file() and (p / "tables").is_dir()


class WorkspaceTables:
    """The tables a workspace holds now — what the next release would be built from — as
    read-only DuckDB views, like :class:`Release`'s: one per ``tables/<name>.parquet``, and the
    stages' problem tables (``problems__<stage>.parquet``) as one ``problems`` view. For looking
    before a release (a new dataset's ``raw_labels`` and ``problems`` after ``curator ingest``);
    nothing here is checked against a manifest, and a run writing meanwhile may replace a file.

    >>> import tempfile, polars as pl
    >>> ws = Path(tempfile.mkdtemp()); (ws / "tables").mkdir(); _ = (ws / "workspace.json").write_text("{}")
    >>> pl.DataFrame({"kind": ["truncated_file"]}).write_parquet(ws / "tables" / "problems__ingest.parquet")
    >>> pl.DataFrame({"kind": ["not_3d"], "x": [1]}).write_parquet(ws / "tables" / "problems__dedup.parquet")
    >>> sorted(WorkspaceTables(ws).sql("select kind from problems").fetchall())
    [('not_3d',), ('truncated_file',)]
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not is_workspace(self.path):
            raise ReleaseError("release_error", "not a workspace folder (no workspace.json and tables/)",
                               path=str(self.path), remedy="pass the folder `workspace:` in pipeline.yaml names")
        groups: dict[str, list[Path]] = {}
        for f in sorted(Workspace(self.path).tables_dir.glob("*.parquet")):
            groups.setdefault(f.stem.split("__", 1)[0], []).append(f.resolve())
        self.files = groups
        self.damaged: dict[str, str] = {}  # table -> why its view could not be made (a file damaged)

    def table_names(self) -> list[str]:
        return sorted(self.files)

    @functools.cached_property
    def _con(self) -> duckdb.DuckDBPyConnection:
        con = locked_connection(f for fs in self.files.values() for f in fs)
        for name, fs in self.files.items():
            listed = ", ".join(_literal(str(f)) for f in fs)
            try:
                con.execute(f"CREATE VIEW {_ident(name)} AS SELECT * FROM read_parquet([{listed}], union_by_name = true)")
            except duckdb.Error as e:  # a table being rewritten or damaged: the others stay queryable
                self.damaged[name] = str(e).splitlines()[0]
                log.warning("%s: table %r cannot be read (%s)", self.path / "tables", name, self.damaged[name])
        return con

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """One read-only query (as :meth:`Release.sql`); a query of a table whose file is damaged
        is a ``table_damaged`` error naming the file and the stage that writes it again (DuckDB
        said the table "does not exist", then the remedy listed it among the tables)."""
        check_read_only(query, "the workspace")
        try:
            return self._con.sql(query)
        except duckdb.Error as e:
            for name in sorted(self.damaged):
                if re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", query, re.IGNORECASE):
                    raise self._damaged_error(name) from e
            raise query_error(e, self.path, self.table_names()) from e

    def _damaged_error(self, name: str) -> WorkspaceError:
        """The ``table_damaged`` error of table ``name``: its damaged file(s), and what writes them."""
        bad = [f for f in self.files[name] if _unreadable(f)] or self.files[name]
        writers = sorted({_writer(f.stem) for f in bad})
        files = "its file is" if len(bad) == 1 else f"its files {', '.join(f.name for f in bad)} are"
        return WorkspaceError("table_damaged", f"the workspace table {name} cannot be read: {files} damaged "
                              "(truncated or overwritten)", path=str(bad[0]),
                              remedy=f"{' and '.join(writers)} writes it again: run `curator run pipeline.yaml` "
                              "(cached cases are not redone); the workspace's other tables stay queryable")


def _unreadable(path: Path) -> bool:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except (pa.ArrowException, OSError):
        return True
    return False


def _writer(table: str) -> str:
    """What writes the workspace table file ``table`` (``labels``, ``problems__qc``): its stage,
    or the command for ``_labels_revised``."""
    from curator.runner.stage import load_stage_class
    from curator.stages import available

    if table.startswith("problems__"):
        return f"the {table.split('__', 1)[1]} stage"
    if table == "_labels_revised":
        return "`curator review import`"
    for name, ref in available().items():
        try:
            if table in load_stage_class(ref).tables:
                return f"the {name} stage"
        except ImportError:  # a stage whose extra is not installed
            continue
    return "the stage that wrote it"
