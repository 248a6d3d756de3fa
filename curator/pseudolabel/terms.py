"""Term names → term ids, and which terms a dataset already covers (one place to change).

The taxonomy (``curator.taxonomy``) resolves names, synonyms and abbreviations to stable
ids; until it is installed, a name's snake-case slug stands in (``"left kidney"`` →
``left_kidney``; ``"kidney_left"`` stays). Parents (part-of) from the taxonomy make a term
covered when its whole is annotated (KiTS annotates ``kidney``, so ``kidney_left`` is not
pseudo-labelled there).

>>> slug("Kidney Tumor")
'kidney_tumor'
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


@functools.lru_cache(maxsize=1)
def _taxonomy() -> Any:
    try:
        from curator.taxonomy import load_taxonomy  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return load_taxonomy()
    except Exception:  # noqa: BLE001 - a broken taxonomy falls back to slugs; `curator labels check` reports it
        return None


def term_id(name: str) -> str:
    """The taxonomy id of ``name`` (slug fallback when unresolved or no taxonomy)."""
    tax = _taxonomy()
    if tax is not None:
        try:
            t = tax.resolve(name)
        except Exception:  # noqa: BLE001 - unresolved names keep their slug
            t = None
        if t is not None and getattr(t, "id", None):
            return str(t.id)
    return slug(name)


def term_name(tid: str) -> str:
    """Preferred name of a term id (the id with spaces when there is no taxonomy)."""
    tax = _taxonomy()
    if tax is not None:
        try:
            t = tax.resolve(tid)
            if t is not None and getattr(t, "name", None):
                return str(t.name)
        except Exception:  # noqa: BLE001
            pass
    return tid.replace("_", " ")


def ancestors(tid: str) -> set[str]:
    """Every part-of / is-a ancestor id of a term known to the taxonomy (empty without one)."""
    tax = _taxonomy()
    if tax is None:
        return set()
    out: set[str] = set()
    todo = [tid]
    while todo:
        cur = todo.pop()
        try:
            t = tax.resolve(cur)
        except Exception:  # noqa: BLE001
            t = None
        for p in (getattr(t, "parents", None) or ()) if t is not None else ():
            pid = str(getattr(p, "id", p))
            if pid not in out:
                out.add(pid)
                todo.append(pid)
    return out


def uncovered(candidates: Iterable[str], annotated: Iterable[str]) -> list[str]:
    """The candidate term ids neither annotated nor part of an annotated term, in order."""
    ann = set(annotated)
    return [t for t in candidates if t not in ann and not (ancestors(t) & ann)]
