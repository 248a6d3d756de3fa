"""Opening a release for queries: DuckDB (read-only, no external access) and Polars.

DuckDB reads the release's own Parquet files with its native reader (fast, prunes row groups
by their statistics) and nothing else: ``enable_external_access`` is off with the table
files as the only ``allowed_paths``, the configuration is locked, extensions never load, and
:meth:`Release.sql` runs only one statement DuckDB parses as a ``SELECT`` (:func:`check_read_only`),
so a query can neither read other files nor write into the release.

>>> # rel = Release("releases/demo/0.1.0")
>>> # rel.sql("select dataset, count(*) from cases group by 1").fetchall()
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import numpy as np
import polars as pl

from curator.errors import ReleaseError
from curator.release.query_errors import (
    MISSING_TABLE,
    duckdb_message,
    query_error,
    query_remedy,
    schema_hint,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from curator.release.citations import Citations
    from curator.store import CaseStore
    from curator.taxonomy.model import Taxonomy

log = logging.getLogger("curator")
_T = TypeVar("_T")


def resolve_release(path: str | Path) -> Path:
    """A release folder, or a collection folder (its newest version)."""
    p = Path(path)
    if (p / "release.json").is_file():
        return p
    versions = release_versions(p)
    if versions:
        return versions[-1]
    if not p.exists():  # a mistyped version or collection: say which ones there are
        near = release_versions(p.parent)
        remedy = (f"versions of the collection {p.parent}: {', '.join(v.name for v in near)} (or pass "
                  f"{p.parent} for the newest)" if near else _collections_hint(p.parent))
        raise ReleaseError("release_error", "no such release folder", path=str(p), remedy=remedy)
    staging = sorted(d.name for d in p.glob(".*.tmp-*") if d.is_dir()) if p.is_dir() else []
    if staging:  # a collection folder whose first build was killed (or is still writing)
        raise ReleaseError("release_error", "no version of this collection is built yet: it holds only the staging "
                           f"folder of a build that did not finish ({', '.join(staging)}; a build still running, or "
                           "killed — the next `curator release` removes a killed build's)", path=str(p),
                           remedy="wait for the build, or build the release (`curator run pipeline.yaml`, or "
                           "`curator release pipeline.yaml` when the stages are done), then pass this folder again")
    raise ReleaseError("release_error", "not a release folder (no release.json)", path=str(p),
                       remedy=_collections_hint(p) if p.is_dir() else _PASS_RELEASE)


_PASS_RELEASE = "pass <release root>/<collection>/<version> (or the collection folder, for its newest version)"


def release_versions(folder: Path) -> list[Path]:
    """The release folders directly inside ``folder`` (a collection folder), oldest first by their
    semantic version (a pre-release before its release; names that are no version first)."""
    from curator.config import SEMVER
    from curator.release.lineage import version_key

    try:
        found = [d for d in folder.iterdir() if d.is_dir() and (d / "release.json").is_file()]
    except OSError:  # no such folder, not a folder, not readable
        return []
    return sorted(found, key=lambda d: (1, version_key(d.name), d.name) if SEMVER.match(d.name) else (0, (), d.name))


def _collections_hint(folder: Path) -> str:
    """The remedy for a folder that holds no release: the collections inside it (a release root)."""
    try:
        names = sorted(d.name for d in folder.iterdir() if d.is_dir() and release_versions(d))
    except OSError:
        names = []
    return (f"{folder} is a release root; its collections: {', '.join(names)} — pass {folder / names[0]} "
            f"(its newest version) or one of its versions" if names else _PASS_RELEASE)


def release_around(path: str | Path, release: str | Path | None = None) -> Path | None:
    """The release folder that ``path`` is or lies inside (symbolic links followed), or None:
    ``release`` itself, or a folder whose ``release.json`` is a curator release's (it names
    the collection, the version and the files' checksums)."""
    p = Path(path).resolve()
    own = Path(release).resolve() if release is not None else None
    for folder in (p, *p.parents):
        if folder == own or _is_release(folder):
            return folder
    return None


def _is_release(folder: Path) -> bool:
    try:
        info = json.loads((folder / "release.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(info, dict) and {"collection", "version", "files"} <= info.keys()


def check_outside_releases(dest: str | Path, what: str, release: str | Path | None = None) -> None:
    """Refuse to write ``what`` at ``dest`` when that is, or lies inside, ``release`` or any other
    release folder: releases are immutable (``curator verify`` checks every file they hold)."""
    found = release_around(dest, release)
    if found is not None:
        raise ReleaseError("release_error", f"releases are immutable; {what} would be written inside one "
                           f"({found})", path=str(dest), remedy="pass --out somewhere outside the release folder")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


_EXPLAIN = re.compile(r"^\s*explain\s+(?:analyze\s+)?", re.IGNORECASE)
_PIVOT = re.compile(r"\bpivot(?:_wider)?\s+(?P<table>[\w.\"]+)\s+on\s+(?P<column>[\w.\"]+)|\bpivot\b", re.IGNORECASE)


def _pivot_remedy(query: str) -> str:
    """How to write a PIVOT without an IN list so that it is one SELECT: name its values."""
    m = _PIVOT.search(query)
    if m is None or not m.group("column"):
        return ("give the PIVOT an explicit IN list of the values to spread into columns, e.g. "
                "`pivot labels on origin in ('original', 'pseudo', 'revised') using count(*) group by term_id`")
    column, table = m.group("column"), m.group("table")
    return (f"give the PIVOT an explicit IN list of the values of {column}, e.g. `pivot {table} on {column} in "
            f"('a', 'b') using ...` (`select distinct {column} from {table} order by 1` lists them)")


def _statements(query: str) -> list[duckdb.Statement]:
    """The query's statements; a syntax error is the query's fault (a ``query_error``), not a bug."""
    try:
        return duckdb.extract_statements(query)
    except duckdb.Error as e:
        raise ReleaseError("query_error", duckdb_message(e),
                           remedy="fix the SQL (DuckDB syntax: text in single quotes, e.g. dataset = 'KiTS23'; "
                                  "a name with spaces in double quotes)") from e


def check_read_only(query: str, what: str = "a release") -> None:
    """Refuse anything but one read-only statement — what DuckDB parses as a SELECT: also FROM-first,
    WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE, PIVOT with an IN list, and EXPLAIN of one. COPY, ATTACH,
    SET, CREATE, PRAGMA, CALL, ... are refused, and so are SQL that does not parse, an empty query,
    several statements (DuckDB would run them all and return the last one's rows only) and a PIVOT
    without an IN list, which DuckDB runs as several statements whose kinds cannot be checked.

    >>> try:
    ...     check_read_only("pivot labels on origin using count(*) group by term_id")
    ... except ReleaseError as e:
    ...     print(e.remedy)
    give the PIVOT an explicit IN list of the values of origin, e.g. `pivot labels on origin in ('a', 'b')
    using ...` (`select distinct origin from labels order by 1` lists them)
    """
    statements = _statements(query)
    for st in statements:
        kind = st.type
        if kind == duckdb.StatementType.EXPLAIN:
            inner = _statements(_EXPLAIN.sub("", st.query, count=1))
            kind = inner[0].type if len(inner) == 1 else duckdb.StatementType.INVALID
        if kind == duckdb.StatementType.MULTI and _PIVOT.search(st.query):
            raise ReleaseError("query_error", f"a PIVOT without an IN list does not run on {what}: DuckDB runs it "
                               "as several statements (the first collects the ON column's values into a new "
                               "type), which cannot be checked to only read", remedy=_pivot_remedy(st.query))
        if kind != duckdb.StatementType.SELECT:
            raise ReleaseError("query_error", f"only a SELECT (also written FROM-first, WITH, VALUES, DESCRIBE, "
                               f"SHOW, SUMMARIZE, or EXPLAIN of one) runs on {what}, not {st.type.name}",
                               remedy="nothing is written into a release or read beside it: query with SELECT and "
                                      "save the result with `curator query ... -o out.parquet` (or .csv)")
    if not statements:
        raise ReleaseError("query_error", "the query holds no SQL statement (it is empty or only comments)",
                           remedy='give one SELECT, e.g. "select count(*) from cases"')
    if len(statements) > 1:
        raise ReleaseError("query_error", f"the query holds {len(statements)} statements; one runs at a time "
                           "(only the last one's rows would come back)",
                           remedy="run each SELECT on its own, or combine them into one (UNION ALL, a join, "
                                  "a WITH clause)")


def locked_connection(files: Iterable[Path]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that may read ``files`` and nothing else (no extensions loaded or
    installed, external access off, configuration locked): the connection every query of a
    release's or a workspace's tables runs on."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"SET allowed_paths = [{', '.join(_literal(str(f)) for f in files)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


class Release:
    def __init__(self, path: str | Path) -> None:
        self.path = resolve_release(path)
        # tables whose Parquet file DuckDB could not open (damaged: cut short, overwritten), with
        # DuckDB's reason; :meth:`connect` leaves them out so the other tables stay queryable
        self.unreadable: dict[str, str] = {}
        self._intact_stores: set[str] = set()  # checked by open_store (not again: a loader reopens them)

    @functools.cached_property
    def info(self) -> dict[str, Any]:
        from curator.release.integrity import read_release_json

        return read_release_json(self.path)

    def table_names(self) -> list[str]:
        return sorted(p.stem for p in self.path.glob("*.parquet"))

    @functools.cached_property
    def taxonomy(self) -> Taxonomy:
        """The taxonomy the release was harmonised with (its ``terms`` table), so a custom
        taxonomy's terms, parts and names reach the loader and the exports; the bundled one for
        releases made before the table existed."""
        from curator.taxonomy import load_taxonomy
        from curator.taxonomy.release import taxonomy_from_rows

        if "terms" not in self.table_names():
            return load_taxonomy()
        from curator.release.lineage import effective_version

        recorded = self.info.get("taxonomy")
        return taxonomy_from_rows(self.table("terms").to_dicts(), path=str(self.path / "terms.parquet"),
                                  version=effective_version(recorded if isinstance(recorded, dict) else None))

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with every table as a view over its Parquet file; file-system access
        is limited to those files and the configuration is locked. (Use :meth:`sql` for untrusted
        query text: it also refuses statements other than SELECT.) A table whose file cannot be
        opened gets no view: it is logged as a warning and listed in :attr:`unreadable`."""
        changed = self._changed(self.table_names())
        files = {name: (self.path / f"{name}.parquet").resolve() for name in self.table_names() if name not in changed}
        for name, why in changed.items():  # DuckDB would read a page damaged mid-file as other values, silently
            self.unreadable[name] = why
            log.warning("%s: table %r cannot be read (%s); the other tables can be queried (run `curator verify %s` "
                        "to see every file that changed)", self.path / f"{name}.parquet", name, why, self.path)
        con = locked_connection(files.values())
        for name, f in files.items():
            try:
                con.execute(f"CREATE VIEW {_ident(name)} AS SELECT * FROM read_parquet({_literal(str(f))})")
            except duckdb.Error as e:  # one damaged file must not take every other table down with it
                self.unreadable[name] = str(e).splitlines()[0]
                log.warning("%s: table %r cannot be read; the other tables can be queried (run `curator verify "
                            "%s` to see which files changed)", self.path / f"{name}.parquet", name, self.path)
        comments = self._comments([n for n in files if n not in self.unreadable])
        if comments:
            try:
                con.execute(";\n".join(comments))
            except duckdb.Error as e:  # a column the file lacks: the descriptions are a help, never a failure
                log.debug("%s: column comments left out (%s)", self.path, e)
        return con

    def _comments(self, names: list[str]) -> list[str]:
        """``COMMENT ON`` statements giving each view and column its manifest description
        (``SCHEMA.md``), for the tables whose version (release.json ``table_versions``) is the
        one this curator describes: another version's columns may mean other things."""
        from curator.schema import load_schemas

        schemas, versions = load_schemas(), self.info.get("table_versions") or {}
        out = []
        for name in names:
            ts = schemas.get(name)
            if ts is None or versions.get(name) != ts.version:
                continue
            if ts.description.strip():
                out.append(f"COMMENT ON VIEW {_ident(name)} IS {_literal(' '.join(ts.description.split()))}")
            out += [f"COMMENT ON COLUMN {_ident(name)}.{_ident(col)} IS {_literal(text)}"
                    for col, text in ts.descriptions.items() if text]
        return out

    @functools.cached_property
    def _con(self) -> duckdb.DuckDBPyConnection:
        return self.connect()

    def sql(self, query: str) -> duckdb.DuckDBPyRelation:
        """Run one read-only query (a SELECT, :func:`check_read_only`); every table of the release is a view.
        DuckDB's errors (syntax, unknown column, denied file access) come back as
        :class:`~curator.errors.ReleaseError` of kind ``query_error``; a query on a table whose file
        is damaged (see :meth:`connect`) as one of kind ``release_corrupt`` naming the file."""
        check_read_only(query)
        try:
            return self._con.sql(query)
        except duckdb.Error as e:  # the user's SQL (or a --where clause): say so, not "a bug in curator"
            missing = MISSING_TABLE.search(str(e)) if isinstance(e, duckdb.CatalogException) else None
            damaged = {n.casefold(): n for n in self.unreadable}
            if missing and missing.group(1).casefold() in damaged:  # the table has no view: its file is damaged
                name = damaged[missing.group(1).casefold()]
                raise self._unreadable(name, self.unreadable[name]) from e
            err = query_error(e, self.path, self.table_names())
            hint = schema_hint(err.detail, self.info, self._columns()) if isinstance(
                e, duckdb.BinderException | duckdb.CatalogException) else None
            if hint:  # an older release: the column or table came later, no misspelling or quoting to fix
                err = ReleaseError("query_error", f"{err.detail}; {hint}", path=str(self.path),
                                   remedy=query_remedy("", self.table_names()))
            raise err from e

    def _columns(self) -> dict[str, set[str]]:
        """Each readable table's columns (from its Parquet schema)."""
        out = {}
        for name in self.table_names():
            try:
                out[name] = set(self.schema(name).names)
            except ReleaseError:
                continue
        return out

    def citations(self, where: str = "true", case_ids: Iterable[str] | None = None) -> Citations:
        """What to cite and which licences bind for the cases ``where`` selects (SQL over ``cases c``
        and ``splits s``) and, with ``case_ids`` (e.g. a ``PatchDataset``'s ``cases``), those among
        them: ``.bib`` (``CITATIONS.bib``), ``.licences_md`` (``LICENCES.md``), ``.licences.summary()``,
        ``.write(folder)`` — as the exports write them (:func:`curator.release.citations.cite`)."""
        from curator.release.citations import cite

        return cite(self, where, case_ids)

    def table(self, name: str) -> pl.DataFrame:
        return self._read(name, lambda p: pl.read_parquet(p, glob=False))  # a path may hold [ ] * ?: never a pattern

    def schema(self, name: str) -> pa.Schema:
        """A table's Arrow schema (column names and types, from its Parquet footer alone)."""
        import pyarrow.parquet as pq

        return self._read(name, pq.read_schema)

    def _changed(self, names: list[str]) -> dict[str, str]:
        """Tables among ``names`` whose file no longer has the checksum release.json records
        (:func:`~curator.release.integrity.changed_files`), with why."""
        from curator.release.integrity import changed_files

        bad = changed_files(self.path, [f"{n}.parquet" for n in names], self._recorded_files())
        return {rel.removesuffix(".parquet"): why for rel, why in bad.items()}

    def open_store(self, case_id: str) -> CaseStore:
        """The store of ``case_id``, checked first against the content hash ``release.json``
        records for it (once per release object — a loader closing and reopening stores pays
        nothing more — and a cache remembers it for later processes while none of its files
        changed): a chunk damaged on disk would otherwise decode into other voxels without
        a word, and a label layer gone would read as "no such label". A ``release_corrupt``
        error names the case and the store when it differs."""
        from curator.registry.layout import is_case_id
        from curator.release.integrity import STORES_DIR, changed_store
        from curator.store import CaseStore

        if not is_case_id(case_id):  # a release's tables name its stores: never a path out of stores/
            raise self.corrupt(f"{str(case_id)[:200]!r} is not a case id (letters, digits, '.', '_' and '-', "
                               "one file name)", self.path / STORES_DIR)
        store = self.path / STORES_DIR / f"{case_id}.zarr"
        why = None if case_id in self._intact_stores else changed_store(self.path, case_id, self.info.get("stores"))
        if why is not None:
            raise self.corrupt(f"the store of case {case_id}: {why}", store, case_id)
        self._intact_stores.add(case_id)
        return CaseStore(store)

    def load_npz(self, rel: str, case_id: str | None = None, keys: Collection[str] | None = None) -> dict[str, Any]:
        """The arrays of the ``.npz`` file ``rel`` (relative to the release; e.g. a case's
        ``locations/<case>.npz``), checked against its ``release.json`` checksum first; with
        ``keys``, only those of them it holds (the others are not decompressed)."""
        from curator.release.integrity import changed_files

        recorded = self._recorded_files()
        p = self.path / rel
        why: str | None
        if rel not in recorded:
            why = "is not listed in release.json" if p.is_file() else "is missing"
        else:
            why = changed_files(self.path, [rel], recorded).get(rel)
        if why is None:
            try:
                with np.load(p, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files if keys is None or k in keys}
            except (OSError, ValueError) as e:
                why = f"cannot be read ({e})"
        raise self.corrupt(f"{rel} {why}" + (f" (case {case_id})" if case_id else ""), p, case_id)

    def _read(self, name: str, read: Callable[[Path], _T]) -> _T:
        p = self.path / f"{name}.parquet"
        if not p.exists():
            raise ReleaseError("release_error", f"the release has no table {name!r}", path=str(self.path),
                               remedy=f"tables: {self.table_names()}")
        why = self._changed([name]).get(name)
        if why is not None:
            raise self._unreadable(name, why)
        try:
            return read(p)
        except (pl.exceptions.PolarsError, OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise self._unreadable(name, str(e).splitlines()[0]) from e

    def _recorded_files(self) -> dict[str, str]:
        """``release.json["files"]``: path relative to the release -> SHA-256."""
        recorded = self.info.get("files")
        return recorded if isinstance(recorded, dict) else {}

    def _unreadable(self, name: str, reason: str) -> ReleaseError:
        """The error for a table whose file is damaged (it names the file; verify says what changed)."""
        return self.corrupt(f"table {name!r} cannot be read ({reason})", self.path / f"{name}.parquet")

    def corrupt(self, detail: str, path: Path, case_id: str | None = None) -> ReleaseError:
        """A ``release_corrupt`` error about ``path`` of this release (a table, a store, a
        location file whose bytes no longer match ``release.json``)."""
        return ReleaseError("release_corrupt", detail, path=str(path), case_id=case_id,
                            remedy=f"run `curator verify {self.path}` to see which files changed, then restore "
                                   "them from an intact copy of the release, or build it again: delete the folder "
                                   f"{self.path} and run `curator release` with its pipeline.yaml (from an unchanged "
                                   "workspace the rebuild holds the same content: the same content_sha256)")

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without its DuckDB connection and rebuilt taxonomy (a DataLoader worker
        started by spawn opens its own on first use)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_con", "taxonomy")}

    def __repr__(self) -> str:
        return f"Release({self.info.get('collection')} {self.info.get('version')} at {self.path})"
