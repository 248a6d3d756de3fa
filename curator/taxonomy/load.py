"""Reading ``label_system/taxonomy.yaml`` into a frozen :class:`~curator.taxonomy.model.Taxonomy`.

The file format is documented in docs/taxonomy.md. :func:`parse_taxonomy` returns the
taxonomy together with *every* problem it found (as :class:`~curator.registry.spec.Issue`
records); :func:`load_taxonomy` is the cached, strict entry point the rest of curator uses.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from curator.errors import RegistryError
from curator.registry.spec import Issue, yaml_load
from curator.resources import resource_dir
from curator.taxonomy.model import LATERALITIES, Taxonomy, Term

TERM_KEYS = {"id", "name", "synonyms", "abbreviations", "category", "region", "laterality", "part_of", "is_a",
             "partitions", "may_include", "codes", "note"}
CODE_SYSTEMS = ("fma", "snomed", "umls", "radlex")
TOP_KEYS = {"version", "description", "regions", "categories", "terms", "extends", "synonyms"}
BUILTIN = "curator"  # `extends: curator` names the bundled taxonomy
_ID = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")


def default_path() -> Path:
    return resource_dir("label_system") / "taxonomy.yaml"


def base_path(extends: str, path: str | Path) -> Path:
    """The file ``extends:`` names: the bundled taxonomy for ``curator``, else a path relative to
    the extending file's folder."""
    return default_path() if extends == BUILTIN else Path(path).parent / extends


def taxonomy_files(path: str | Path | None = None) -> list[Path]:
    """The taxonomy file (default: the bundled one) followed by every file it extends, in order:
    the files whose content decides the taxonomy (a stage's settings digest covers them all)."""
    chain: list[Path] = []
    p = Path(path) if path else default_path()
    while p.resolve() not in [c.resolve() for c in chain]:
        chain.append(p)
        if p.resolve() == default_path().resolve():  # the bundled taxonomy extends nothing: not parsed
            break
        try:
            st = p.stat()
        except OSError:
            break
        ext = _extends(str(p.resolve()), st.st_mtime_ns, st.st_size)
        if ext is None:
            break
        p = base_path(ext, p)
    return chain


@functools.lru_cache(maxsize=64)
def _extends(path: str, mtime_ns: int, size: int) -> str | None:
    """The ``extends:`` of the taxonomy file at ``path`` (None: none, or unreadable), parsed once per
    version of the file (its modification time and size): the chain is asked for on every
    ``load_taxonomy`` and settings digest, and a full taxonomy takes a quarter second to parse."""
    try:
        d = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    ext = d.get("extends") if isinstance(d, dict) else None
    return ext if isinstance(ext, str) and ext.strip() else None


def _strings(v: Any) -> tuple[str, ...] | None:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(x, (str, int)) for x in v):
        return tuple(str(x) for x in v)
    return None


def parse_taxonomy(d: Any, path: str = "taxonomy.yaml", base: Taxonomy | None = None) -> tuple[Taxonomy | None, list[Issue]]:
    """Parse the taxonomy mapping; returns the taxonomy (None when unusable) and every issue.

    With ``base`` (the taxonomy an ``extends:`` file names) the mapping adds to it: its ``terms``
    are new terms (a new term's ``partitions`` may group existing terms, which become ``part_of``
    it), its ``synonyms`` (term id -> names) add names to existing terms, its regions and
    categories join the base's, and its version is appended to the base's (``1.3+lab-2``)."""
    where = Path(path).name
    origin = BUILTIN if Path(path).resolve() == default_path().resolve() else where  # a term's defined_in
    issues: list[Issue] = []

    def bad(loc: str, kind: str, msg: str) -> None:
        issues.append(Issue(f"{where}:{loc}", kind, msg))

    if not isinstance(d, dict):
        return None, [Issue(where, "type", "the taxonomy must be a mapping with a `terms:` list")]
    for k in sorted(set(d) - TOP_KEYS, key=str):
        close = difflib.get_close_matches(str(k), sorted(TOP_KEYS), n=1)
        bad(str(k), "unknown_key", f"unknown top-level key {k!r}" + (f": did you mean {close[0]!r}?" if close else "")
            + f" (known: {', '.join(sorted(TOP_KEYS))})")
    if not isinstance(d.get("terms", [] if base else None), list):
        return None, [*issues, Issue(where, "type", "the taxonomy must be a mapping with a `terms:` list (a file "
                                     "adding to curator's says `extends: curator`)")]
    regions = _strings(d.get("regions")) or ()
    categories = _strings(d.get("categories")) or ()
    terms: dict[str, Term] = {}
    if base is not None:
        regions = base.regions + tuple(r for r in regions if r not in base.regions)
        categories = base.categories + tuple(c for c in categories if c not in base.categories)
        terms = dict(base.terms)
    for i, t in enumerate(d.get("terms", [])):
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
        if base is not None and tid in base.terms:
            bad(loc, "duplicate", f"{tid!r} is already a term of the taxonomy this file extends: a new term "
                "needs a new id; give more names for this one under `synonyms:` (" + tid + ": [name, ...])")
            continue
        if tid in terms:
            bad(loc, "duplicate", f"term id {tid!r} is defined twice")
            continue
        fields: dict[str, tuple[str, ...]] = {}
        for k in ("synonyms", "abbreviations", "part_of", "is_a", "may_include"):
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
            may_include=fields["may_include"],
            codes=MappingProxyType({str(k): str(v) for k, v in codes.items()}), note=str(t.get("note", "") or ""),
            defined_in=origin)
    if base is not None:
        _group_base_terms(terms, base)
    _add_synonyms(d.get("synonyms"), terms, base is not None, bad, origin)
    version = str(d.get("version", "") or "")
    if base is not None:
        version = f"{base.version}+{version or 'local'}"
    tax = Taxonomy(terms=terms, version=version, regions=regions, categories=categories, path=str(path))
    from curator.taxonomy.check import check_hierarchy

    issues += check_hierarchy(tax, where)
    return tax, issues


def _group_base_terms(terms: dict[str, Term], base: Taxonomy) -> None:
    """A new term of an extending file whose ``partitions`` name terms of the base (a lab's
    grouping of existing structures): those terms become ``part_of`` it, in place — the extension
    cannot edit their ``part_of``, and the partition says it once. Members the file defines itself
    must list the term in their own ``part_of``, as in any taxonomy file."""
    for t in [t for tid, t in terms.items() if tid not in base.terms]:
        for m in dict.fromkeys(m for part in t.partitions for m in part):
            if m in base.terms and t.id not in terms[m].part_of:
                terms[m] = replace(terms[m], part_of=terms[m].part_of + (t.id,))


def _add_synonyms(given: Any, terms: dict[str, Term], extends: bool, bad: Any, where: str) -> None:
    """Add an extending file's (named ``where``) ``synonyms:`` (term id -> names) to ``terms`` in place."""
    if given is None:
        return
    if not extends:
        bad("synonyms", "value", "`synonyms:` adds names to the terms of the taxonomy a file extends: "
            "give `extends:`, or list the names under the term itself")
        return
    if not isinstance(given, dict):
        bad("synonyms", "type", "`synonyms:` maps a term id to a list of names")
        return
    for tid, names in given.items():
        v = _strings(names)
        if str(tid) not in terms:
            close = difflib.get_close_matches(str(tid), list(terms), n=3)
            bad(f"synonyms.{tid}", "unknown_term", f"{tid!r} is not a term id"
                + (f" (close: {', '.join(close)})" if close else "") + "; `curator labels resolve NAME` finds ids")
        elif v is None:
            bad(f"synonyms.{tid}", "type", "give a list of names")
        else:
            t = terms[str(tid)]
            terms[t.id] = replace(t, synonyms=t.synonyms + tuple(n for n in v if n not in t.names()),
                                  named_in=t.named_in + (where,) * (where not in t.named_in))


def read_taxonomy(path: str | Path | None = None, _within: tuple[Path, ...] = ()) -> tuple[Taxonomy | None, list[Issue]]:
    """Parse a taxonomy file (default: the bundled one) without raising on problems; a file with
    ``extends:`` is read over the taxonomy it names (see :func:`parse_taxonomy`)."""
    p = Path(path) if path else default_path()
    try:
        d = yaml_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, [Issue(p.name, "missing", f"taxonomy file {p} does not exist")]
    except yaml.YAMLError as e:
        return None, [Issue(p.name, "yaml", f"not valid YAML: {e}")]
    if not isinstance(d, dict) or d.get("extends") is None:
        return parse_taxonomy(d, str(p))
    ext, where = d["extends"], f"{p.name}:extends"
    if not isinstance(ext, str) or not ext.strip():
        return None, [Issue(where, "type", f"`extends` names the taxonomy this file adds to: {BUILTIN!r} (the "
                            "bundled one) or a path relative to this file")]
    bp = base_path(ext, p)
    if bp.resolve() in (*_within, p.resolve()):
        return None, [Issue(where, "cycle", f"{ext!r} leads back to {p.name}: taxonomy files cannot extend "
                            "each other in a loop")]
    base, issues = read_taxonomy(bp, (*_within, p.resolve()))
    if base is None or any(i.kind != "ambiguous_bag" for i in issues):
        return None, [Issue(where, "extends", f"the taxonomy it extends ({ext!r}, {bp}) has problems: "
                            "fix them first")] + issues
    return parse_taxonomy(d, str(p), base=base)


def _stamp(path: str) -> tuple[tuple[str, int, int], ...]:
    """Each file of the taxonomy's chain with its modification time and size: an edited file is
    read again (a notebook or service running one pipeline after another), not served from the
    cache while its new checksum is recorded."""
    out = []
    for f in taxonomy_files(path):
        try:
            st = f.stat()
        except OSError:
            out.append((str(f), -1, -1))
        else:
            out.append((str(f), st.st_mtime_ns, st.st_size))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def _load(path: str, stamp: tuple[tuple[str, int, int], ...] = ()) -> Taxonomy:
    tax, issues = read_taxonomy(path)
    errors = [i for i in issues if i.kind != "ambiguous_bag"]
    if tax is None or errors:
        listing = "; ".join(f"{i.loc} [{i.kind}] {i.message}" for i in errors[:10])
        own = Path(path).resolve() != default_path().resolve()
        raise RegistryError("registry_error", f"{len(errors)} problem(s) in the taxonomy: {listing}", path=path,
                            remedy=f"run `curator labels check{' --taxonomy ' + path if own else ''}` for the full "
                            f"list and fix {Path(path).name}")
    return tax


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """The taxonomy (bundled by default), parsed once per process and immutable.

    >>> load_taxonomy().resolve("IVC").name
    'inferior vena cava'
    """
    if not path:  # the bundled file, part of the installation
        return _load(str(default_path()))
    p = str(Path(path).resolve())
    return _load(p, _stamp(p))
