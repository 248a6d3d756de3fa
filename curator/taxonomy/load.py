"""Reading ``label_system/taxonomy.yaml`` into a frozen :class:`~curator.taxonomy.model.Taxonomy`.

The file format is documented in docs/taxonomy.md. :func:`parse_taxonomy` returns the
taxonomy together with *every* problem it found (as :class:`~curator.registry.spec.Issue`
records); :func:`load_taxonomy` is the cached, strict entry point the rest of curator uses.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from curator.errors import RegistryError
from curator.registry.spec import Issue, yaml_load
from curator.resources import resource_dir
from curator.taxonomy.model import LATERALITIES, Taxonomy, Term

TERM_KEYS = {"id", "name", "synonyms", "abbreviations", "category", "region", "laterality", "part_of", "is_a",
             "partitions", "codes", "note"}
CODE_SYSTEMS = ("fma", "snomed", "umls", "radlex")
_ID = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


def default_path() -> Path:
    return resource_dir("label_system") / "taxonomy.yaml"


def _strings(v: Any) -> tuple[str, ...] | None:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(x, (str, int)) for x in v):
        return tuple(str(x) for x in v)
    return None


def parse_taxonomy(d: Any, path: str = "taxonomy.yaml") -> tuple[Taxonomy | None, list[Issue]]:
    """Parse the taxonomy mapping; returns the taxonomy (None when unusable) and every issue."""
    where = Path(path).name
    issues: list[Issue] = []

    def bad(loc: str, kind: str, msg: str) -> None:
        issues.append(Issue(f"{where}:{loc}", kind, msg))

    if not isinstance(d, dict) or not isinstance(d.get("terms"), list):
        return None, [Issue(where, "type", "the taxonomy must be a mapping with a `terms:` list")]
    regions = _strings(d.get("regions")) or ()
    categories = _strings(d.get("categories")) or ()
    terms: dict[str, Term] = {}
    for i, t in enumerate(d["terms"]):
        loc = f"terms[{i}]"
        if not isinstance(t, dict):
            bad(loc, "type", "a term must be a mapping")
            continue
        tid = str(t.get("id", ""))
        loc = f"{loc}({tid})" if tid else loc
        for k in sorted(set(t) - TERM_KEYS):
            bad(loc, "unknown_key", f"unknown key {k!r} (known: {sorted(TERM_KEYS)})")
        if not _ID.match(tid):
            bad(loc, "value", "`id` must be a snake-case slug (a-z, 0-9, single underscores)")
            continue
        if tid in terms:
            bad(loc, "duplicate", f"term id {tid!r} is defined twice")
            continue
        fields: dict[str, tuple[str, ...]] = {}
        for k in ("synonyms", "abbreviations", "part_of", "is_a"):
            v = _strings(t.get(k))
            if v is None:
                bad(f"{loc}.{k}", "type", f"`{k}` must be a list of strings")
                v = ()
            fields[k] = v
        parts = t.get("partitions") or []
        if not isinstance(parts, list) or not all(isinstance(p, list) and p for p in parts):
            bad(f"{loc}.partitions", "type", "`partitions` must be a list of non-empty lists of term ids")
            parts = []
        codes = t.get("codes") or {}
        if not isinstance(codes, dict) or set(codes) - set(CODE_SYSTEMS):
            bad(f"{loc}.codes", "value", f"`codes` maps a code system ({CODE_SYSTEMS}) to a code")
            codes = {}
        for k in ("name", "category", "region"):
            if not t.get(k):
                bad(loc, "missing", f"required key {k!r} is missing")
        if regions and t.get("region") and t["region"] not in regions:
            bad(f"{loc}.region", "value", f"region {t['region']!r} is not one of {list(regions)}")
        if categories and t.get("category") and t["category"] not in categories:
            bad(f"{loc}.category", "value", f"category {t['category']!r} is not one of {list(categories)}")
        lat = t.get("laterality")
        if lat not in (None, *LATERALITIES):
            bad(f"{loc}.laterality", "value", f"laterality must be one of {LATERALITIES} or absent")
            lat = None
        terms[tid] = Term(
            id=tid, name=str(t.get("name", tid)), category=str(t.get("category", "")), region=str(t.get("region", "")),
            synonyms=fields["synonyms"], abbreviations=fields["abbreviations"], laterality=lat,
            part_of=fields["part_of"], is_a=fields["is_a"], partitions=tuple(tuple(str(x) for x in p) for p in parts),
            codes=MappingProxyType({str(k): str(v) for k, v in codes.items()}), note=str(t.get("note", "") or ""))
    tax = Taxonomy(terms=terms, version=str(d.get("version", "")), regions=regions, categories=categories,
                   path=str(path))
    from curator.taxonomy.check import check_hierarchy

    issues += check_hierarchy(tax, where)
    return tax, issues


def read_taxonomy(path: str | Path | None = None) -> tuple[Taxonomy | None, list[Issue]]:
    """Parse a taxonomy file (default: the bundled one) without raising on problems."""
    p = Path(path) if path else default_path()
    try:
        d = yaml_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, [Issue(p.name, "missing", f"taxonomy file {p} does not exist")]
    except yaml.YAMLError as e:
        return None, [Issue(p.name, "yaml", f"not valid YAML: {e}")]
    return parse_taxonomy(d, str(p))


@functools.lru_cache(maxsize=4)
def _load(path: str) -> Taxonomy:
    tax, issues = read_taxonomy(path)
    errors = [i for i in issues if i.kind != "ambiguous_bag"]
    if tax is None or errors:
        listing = "; ".join(f"{i.loc} [{i.kind}] {i.message}" for i in errors[:10])
        raise RegistryError("registry_error", f"{len(errors)} problem(s) in the taxonomy: {listing}", path=path,
                            remedy="run `curator labels check` for the full list and fix taxonomy.yaml")
    return tax


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """The taxonomy (bundled by default), parsed once per process and immutable.

    >>> load_taxonomy().resolve("IVC").name
    'inferior vena cava'
    """
    return _load(str(Path(path).resolve() if path else default_path()))
