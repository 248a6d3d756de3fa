"""Manifest schemas: declared as YAML under ``manifests/tables/``, loaded as Arrow schemas.

Each table file names its columns with types, nullability and a description, the
columns that order its rows (``sort``) and a table version. ``manifests/SCHEMA_VERSION``
is the version of the whole set, ``manifests/CHANGELOG.md`` says what changed.

Rows become Arrow tables only through :func:`to_arrow`, which rejects unknown columns,
fills nullable missing ones and sorts rows by the table's key, so the same rows always
give the same Parquet bytes.

Each column's description is also its Arrow field's metadata (key ``description``,
:func:`with_descriptions`), so every table file says what its columns mean to a reader
without curator (pyarrow's ``schema.field(name).metadata``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from curator.errors import ConfigError
from curator.resources import resource_dir

_SCALARS: dict[str, pa.DataType] = {
    "string": pa.string(), "bool": pa.bool_(),
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "float32": pa.float32(), "float64": pa.float64(), "binary": pa.binary(),
    "date": pa.date32(), "timestamp": pa.timestamp("us", tz="UTC"),
}


def parse_type(text: str) -> pa.DataType:
    """``'list<float64>'``, ``'list<float64>[3]'`` (fixed size), ``'struct<a:int64,b:string>'``, scalars."""
    t = text.strip()
    if t in _SCALARS:
        return _SCALARS[t]
    m = re.fullmatch(r"list<(.+)>\[(\d+)\]", t)
    if m:
        return pa.list_(parse_type(m.group(1)), int(m.group(2)))
    m = re.fullmatch(r"list<(.+)>", t)
    if m:
        return pa.list_(parse_type(m.group(1)))
    m = re.fullmatch(r"struct<(.+)>", t)
    if m:
        parts = _split_top(m.group(1))
        return pa.struct([pa.field(p.split(":", 1)[0].strip(), parse_type(p.split(":", 1)[1])) for p in parts])
    raise ConfigError("config_error", f"unknown column type {text!r} in a manifest schema")


def _split_top(s: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in s:
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


@dataclass(frozen=True)
class TableSchema:
    name: str
    version: int
    description: str
    schema: pa.Schema
    sort: tuple[str, ...]
    descriptions: dict[str, str]


DESCRIPTION_KEY = b"description"


def with_descriptions(schema: pa.Schema, descriptions: dict[str, str]) -> pa.Schema:
    """``schema`` with each column's text of ``descriptions`` in its field metadata (key
    ``description``; a column without one is left as it is); types and the schema's own
    metadata are unchanged."""
    fields = [f.with_metadata({**(f.metadata or {}), DESCRIPTION_KEY: descriptions[f.name].encode()})
              if descriptions.get(f.name) else f for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


def manifests_dir() -> Path:
    return resource_dir("manifests")


@functools.cache
def load_schemas() -> dict[str, TableSchema]:
    out: dict[str, TableSchema] = {}
    for f in sorted((manifests_dir() / "tables").glob("*.yaml")):
        d = yaml.safe_load(f.read_text(encoding="utf-8"))
        cols = d["columns"]
        for c in cols:  # an unquoted comma in a flow mapping cut a description and made keys of the rest
            extra = sorted(set(c) - {"name", "type", "nullable", "description"})
            if extra:
                raise ConfigError("config_error", f"{f.name}: column {c.get('name')!r} has unknown keys {extra} "
                                  "(quote a description that holds a comma)")
        fields_ = [pa.field(c["name"], parse_type(c["type"]), nullable=bool(c.get("nullable", True)))
                   for c in cols]
        name = d["table"]
        descriptions = {c["name"]: c.get("description", "") for c in cols}
        schema = pa.schema(fields_, metadata={"curator.table": name, "curator.table_version": str(d.get("version", 1)),
                                              "curator.schema_version": schema_version()})
        out[name] = TableSchema(
            name=name, version=int(d.get("version", 1)), description=d.get("description", ""),
            schema=with_descriptions(schema, descriptions), sort=tuple(d.get("sort", [cols[0]["name"]])),
            descriptions=descriptions,
        )
    return out


@functools.cache
def schema_version() -> str:
    return (manifests_dir() / "SCHEMA_VERSION").read_text(encoding="utf-8").strip()


def table_schema(name: str) -> TableSchema:
    schemas = load_schemas()
    if name not in schemas:
        raise ConfigError("config_error", f"no manifest schema for table {name!r}; "
                          f"add manifests/tables/{name}.yaml (known: {sorted(schemas)})")
    return schemas[name]


def to_arrow(name: str, rows: list[dict[str, Any]]) -> pa.Table:
    """Rows → Arrow table of the declared schema, sorted by the table's ``sort`` columns."""
    ts = table_schema(name)
    names = ts.schema.names
    allowed = set(names)
    for r in rows:
        extra = set(r) - allowed
        if extra:
            raise ConfigError("config_error", f"table {name}: columns {sorted(extra)} are not in "
                              f"manifests/tables/{name}.yaml")
    rows = sorted(rows, key=lambda r: tuple(_sort_key(r.get(c)) for c in ts.sort))
    cols = {n: [r.get(n) for r in rows] for n in names}
    for f in ts.schema:
        if not f.nullable and any(v is None for v in cols[f.name]):
            raise ConfigError("config_error", f"table {name}: column {f.name} must not be null")
    return pa.Table.from_pydict(cols, schema=ts.schema)


def _sort_key(v: Any) -> tuple[int, Any]:
    if v is None:
        return (0, "")
    if isinstance(v, (list, tuple)):
        return (1, tuple(_sort_key(x) for x in v))
    return (1, v)


def empty(name: str) -> pa.Table:
    return table_schema(name).schema.empty_table()
