"""The errors of a query of a release (or of a ``where`` over its cases) as curator tells them:
DuckDB's message with its hints, a remedy naming the tables there are, and, for a column or
table an older release lacks, the schema version that added it (``manifests/CHANGELOG.md``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb

from curator.errors import ReleaseError

MISSING_TABLE = re.compile(r"Table with name (.+) does not exist!")  # DuckDB's CatalogException
_HINT = re.compile(r"^(Candidate bindings:|Did you mean)")  # DuckDB's suggestions, on lines of their own
_MISSING_COLUMN = re.compile(r'Referenced column "(.+?)" not found|does not have a column named "(.+?)"')


def duckdb_message(e: BaseException) -> str:
    """DuckDB's error in one line: its first line plus the suggestions it gives on later lines
    (``Candidate bindings: "case_id", ...`` for an unknown column, ``Did you mean "labels"?`` for
    an unknown table or function) — the most useful part of the message for a misspelt name.
    The ``LINE 1: ...`` excerpt and its caret are left out (a wrapped terminal misplaces the caret)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    return " ".join([lines[0], *(line for line in lines[1:] if _HINT.match(line))])


def query_remedy(message: str, tables: list[str]) -> str:
    """What to do about DuckDB's error ``message`` on a release holding ``tables``.

    >>> query_remedy('Permission Error: Cannot access file "/etc/passwd" - file system operations are '
    ...              'disabled by configuration', ["cases"])[:56]
    'a query reads the tables of the release, not other files'
    """
    if "file system operations are disabled" in message:  # read_csv('...'), COPY, ATTACH: not the tables
        return (f"a query reads the tables of the release, not other files (file access is off, so a query "
                f"cannot read or write anything else): select from {', '.join(tables)}; to join a file of your "
                "own, read it with Polars and join it to `curator.open_release(release).table('cases')`")
    text = (f"tables: {', '.join(tables)} (`describe <table>` lists columns; qualify a column two tables "
            "share, e.g. c.modality)")
    if "Referenced column" in message:  # also what an unquoted text value gives: dataset = KiTS23
        text += "; if the name is a text value, put it in single quotes (dataset = 'KiTS23')"
    return text


def _changelog() -> list[tuple[str, str]]:
    """``manifests/CHANGELOG.md`` as (schema version, its text), oldest first ([] when unreadable)."""
    from curator.config import SEMVER
    from curator.release.lineage import version_key
    from curator.schema import manifests_dir

    try:
        text = (manifests_dir() / "CHANGELOG.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    sections = re.findall(r"^## (.+)\n((?:(?!^## ).*\n?)*)", text, re.MULTILINE)
    sections = [(head.strip(), body) for head, body in sections]
    return sorted(((v, b) for v, b in sections if SEMVER.match(v)), key=lambda x: version_key(x[0]))


def _added_in(release_schema: str, *names: str) -> str | None:
    """The first schema version after ``release_schema`` whose changelog entry names every one of
    ``names`` (in backquotes): when the newer column or table came."""
    from curator.config import SEMVER
    from curator.release.lineage import version_key

    newer = SEMVER.match(release_schema) is not None
    for version, text in _changelog():
        if (not newer or version_key(version) > version_key(release_schema)) and all(
                f"`{n}`" in text for n in names):
            return version
    return None


def schema_hint(message: str, info: dict[str, Any], columns: dict[str, set[str]]) -> str | None:
    """When DuckDB's ``message`` names a column or table this release lacks and the current
    manifests declare (the release was made with an older schema), say so: ``this release has
    schema 1.6.0; `qc.oversized` was added in schema 1.7.0 (manifests/CHANGELOG.md)``. ``columns``
    maps each table of the release to its columns."""
    from curator.schema import load_schemas, schema_version

    try:
        schemas = load_schemas()
        current = schema_version()
    except Exception:  # noqa: BLE001 - a hint, never a second error
        return None
    ours = info.get("schema_version")
    ours = ours if isinstance(ours, str) else "unrecorded"
    col = _MISSING_COLUMN.search(message)
    table = MISSING_TABLE.search(message)
    if col:
        name = (col.group(1) or col.group(2)).lower()  # DuckDB's names ignore case; the manifests' are lower
        what = [f"{t}.{name}" for t, have in sorted(columns.items())
                if t in schemas and name in schemas[t].schema.names and name not in have]
        added = [_added_in(ours, t.split(".")[0], name) for t in what]
    elif table and table.group(1).lower() in set(schemas) - set(columns):
        name = table.group(1).lower()
        what, added = [name], [_added_in(ours, name, "first version") or _added_in(ours, name)]
    else:
        return None
    if not what:
        return None
    said = [f"`{w}` was added in schema {a}" if a else f"`{w}` is in the current schema ({current})"
            for w, a in zip(what, added, strict=True)]
    return f"this release has schema {ours}; {'; '.join(said)} (manifests/CHANGELOG.md)"


def where_error(e: ReleaseError, where: str, name: str, splits: bool,
                tables: str = "preprocessed p, cases c") -> ReleaseError:
    """A selection's ``query_error`` (the loader's ``where``, the exports' ``--where``: ``name``)
    told as what it is: a condition over one row per case (of ``tables``, and ``splits s``), not a
    query of any table.

    >>> e = ReleaseError("query_error", 'Binder Error: Referenced column "datset" not found', remedy="tables: ...")
    >>> where_error(e, "datset = 'KiTS23'", "--where", True).remedy[:60]
    '--where is a SQL condition on one row per case, over preproc'
    """
    if e.kind != "query_error" or "file system operations are disabled" in e.detail:
        return e
    scope = tables + (" and splits s" if splits else "")
    syntax = "fix the SQL: " if (e.remedy or "").startswith("fix the SQL") else ""
    return ReleaseError("query_error", f"{name} {where!r}: {e.detail}", path=e.path, remedy=(
        f"{syntax}{name} is a SQL condition on one row per case, over {scope} (qualify a column two of them share: "
        "c.dataset; `curator query RELEASE \"describe cases\"` lists columns); other tables go in a subquery: "
        "case_id in (select case_id from labels where term_id = 'liver' and volume_ml > 2500); text values in "
        "single quotes (c.dataset = 'KiTS23')"))


def query_error(e: duckdb.Error, path: Path, tables: list[str]) -> ReleaseError:
    """A DuckDB error of the user's SQL (or a --where clause) as a ``query_error``, with DuckDB's
    hints and a remedy naming the tables there are — not "a bug in curator"."""
    message = duckdb_message(e)
    return ReleaseError("query_error", message, path=str(path), remedy=query_remedy(message, tables))
