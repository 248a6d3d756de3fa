"""Release step: ``SCHEMA.md`` — what every table and column of the release means.

The column descriptions live in the manifest schemas (``manifests/tables/*.yaml``) of the
curator that built the release; a researcher holding only the release folder would otherwise
see names and types (DuckDB's ``describe``) but not units, conventions or what a null means.
``SCHEMA.md`` lists, for each table the release holds, its version, description and columns
(type, whether null occurs, description). :meth:`curator.release.query.Release.connect`
attaches the same descriptions to the DuckDB views as comments (``duckdb_columns()``).

>>> text = schema_markdown(["sources"], "1.8.0")
>>> "## sources (table version 1)" in text and "| commercial_use | string | no |" in text
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curator.schema import table_schema

if TYPE_CHECKING:
    from curator.release.build import ReleaseBuilder

SCHEMA_FILE = "SCHEMA.md"


def _cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped, no raw HTML."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def schema_markdown(tables: list[str], schema_version: str) -> str:
    """The ``SCHEMA.md`` text for ``tables`` (each must have a manifest schema)."""
    out = [f"# Tables and columns (manifest schema {schema_version})", "",
           ("Every table is a Parquet file of this folder (`<table>.parquet`); query them with "
           "`curator query . \"select ...\"` or any Parquet reader. Types are Arrow types; *null* says "
           "whether a value may be missing. The same descriptions are the column comments of "
           "`curator query` (`select column_name, comment from duckdb_columns() where table_name = "
           "'cases'`)."), ""]
    for name in sorted(tables):
        ts = table_schema(name)
        out += [f"## {name} (table version {ts.version})", ""]
        if ts.description.strip():
            out += [_cell(ts.description), ""]
        out += ["| column | type | null | description |", "|---|---|---|---|"]
        for f in ts.schema:
            out.append(f"| {f.name} | {_cell(str(f.type))} | {'yes' if f.nullable else 'no'} | "
                       f"{_cell(ts.descriptions.get(f.name, ''))} |")
        out.append("")
    return "\n".join(out)


def release_step(b: ReleaseBuilder) -> None:
    from curator.schema import schema_version

    (b.staging / SCHEMA_FILE).write_text(schema_markdown(list(b.tables), schema_version()), encoding="utf-8")
