"""Raw label codes → taxonomy term ids, in one place.

Uses the label taxonomy (``curator.taxonomy.load_taxonomy().resolve(name)``) when it is
installed; otherwise a term id is the snake-case slug of the dataset YAML's term name.
Switching to the harmonize stage's mapping only touches :func:`term_id`.

>>> slug("Left Kidney"), slug("kidney tumor")
('left_kidney', 'kidney_tumor')
>>> prompt("kidney_left", "CT", name="left kidney")
'(ct) left kidney'
"""

from __future__ import annotations

import functools
import re
from typing import Any

_NON_WORD = re.compile(r"[^0-9a-z]+")


def slug(name: str) -> str:
    return _NON_WORD.sub("_", name.strip().lower()).strip("_")


@functools.lru_cache(maxsize=1)
def _taxonomy() -> Any:
    try:
        from curator.taxonomy import load_taxonomy  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return load_taxonomy()


def _term_attr(term: Any, *names: str) -> str | None:
    if isinstance(term, str):
        return term
    for n in names:
        v = getattr(term, n, None)
        if isinstance(v, str):
            return v
    return None


@functools.lru_cache(maxsize=4096)
def term_id(name: str) -> str:
    """The term id a dataset's term name resolves to (taxonomy when installed, else its slug)."""
    tax = _taxonomy()
    if tax is not None:
        try:
            found = tax.resolve(name)
        except Exception:  # noqa: BLE001 - an unresolvable name falls back to its slug
            found = None
        got = _term_attr(found, "id", "term_id") if found is not None else None
        if got:
            return got
    return slug(name)


def term_ids(names: tuple[str, ...] | list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        t = term_id(n)
        if t not in out:
            out.append(t)
    return out


def value_terms(spec: Any) -> dict[str, list[str]]:
    """``{raw value: [term ids]}`` of a label-map dataset (ignored values left out)."""
    ignore = set(spec.labels.ignore)
    return {str(v): term_ids(list(names)) for v, names in sorted(spec.labels.values.items()) if v not in ignore}


def structure_terms(spec: Any) -> dict[str, list[str]]:
    """``{structure file key: [term ids]}`` of a per-structure dataset."""
    return {k: term_ids(list(names)) for k, names in sorted(spec.labels.structures.items())}


@functools.lru_cache(maxsize=4096)
def descendants(term: str) -> tuple[str, ...]:
    """Terms whose union makes ``term`` (parts / subtypes), from the taxonomy; () without one."""
    tax = _taxonomy()
    if tax is None:
        return ()
    for attr in ("descendants", "parts_of", "children"):
        fn = getattr(tax, attr, None)
        if callable(fn):
            try:
                got = fn(term)
            except Exception:  # noqa: BLE001 - unknown term: no derived parts
                return ()
            return tuple(t for t in (_term_attr(x, "id", "term_id") for x in got) if t)
    return ()


def preferred_name(term: str) -> str:
    tax = _taxonomy()
    if tax is not None:
        try:
            found = tax.resolve(term)
        except Exception:  # noqa: BLE001
            found = None
        got = _term_attr(found, "name", "preferred", "preferred_name") if found is not None else None
        if got and not isinstance(found, str):
            return got
    return term.replace("_", " ")


def prompt(term: str, modality: str, name: str | None = None) -> str:
    """SAT-style text prompt, e.g. ``(ct) left kidney``."""
    return f"({modality.lower()}) {name or preferred_name(term)}"
