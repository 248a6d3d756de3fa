"""The parts of ``curator diff`` a reader of a release's terms asks first: which sources' licence,
licence terms, citation or version changed (``sources``), and whether the newer release is derived
from the older at all (``lineage_note``).

A source is compared on its row of the ``sources`` table (its key ``source``): the licence and
what it allows come first, as a change there decides whether a user may still use the data.

>>> a = [{"source": "TS", "licence": "CC-BY-4.0", "commercial_use": "yes", "citation": "@a{x,}"}]
>>> b = [{"source": "TS", "licence": "CC-BY-NC-4.0", "commercial_use": "no", "citation": "@a{x,}"}]
>>> source_lines(source_changes(a, b))
['TS: licence CC-BY-4.0 → CC-BY-NC-4.0; commercial_use yes → no']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from curator.release.diff_lineage import one, pair

# the ``sources`` columns compared, the licence and its terms first (what a user may still do)
LICENCE_FIELDS = ("licence", "commercial_use", "derivatives", "redistribution", "share_alike",
                  "attribution_required", "licence_url", "terms_from")
SOURCE_FIELDS = (*LICENCE_FIELDS, "dataset_version", "citation_key", "citation", "dataset")


def source_changes(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sources added, removed or whose licence, licence terms, citation or version changed,
    from the rows of two ``sources`` tables: ``{source, change: added | removed | changed,
    licence_changed, fields: {field: [A, B]}}`` (an added or removed source's ``fields`` hold its
    licence and terms on its side), those whose licence or terms changed first."""
    ra, rb = ({str(r["source"]): r for r in rows} for rows in (a, b))
    out = []
    for name in sorted(set(ra) | set(rb)):
        if name not in ra or name not in rb:
            row, side = (rb[name], "added") if name not in ra else (ra[name], "removed")
            fields = {f: row.get(f) for f in LICENCE_FIELDS[:4] if row.get(f) is not None}
            out.append({"source": name, "change": side, "licence_changed": False, "fields": fields})
            continue
        fields = {f: [ra[name].get(f), rb[name].get(f)] for f in SOURCE_FIELDS
                  if f in ra[name] and f in rb[name] and ra[name].get(f) != rb[name].get(f)}
        if fields:
            out.append({"source": name, "change": "changed", "fields": fields,
                        "licence_changed": any(f in fields for f in LICENCE_FIELDS)})
    return sorted(out, key=lambda c: (not c["licence_changed"], c["change"] != "changed", c["source"]))


def source_lines(changes: list[dict[str, Any]]) -> list[str]:
    """:func:`source_changes` as ``curator diff`` and the dataset card list them, one a source:
    ``TS: licence CC-BY-4.0 → CC-BY-NC-4.0; commercial_use yes → no``, ``PANC: added (CC-BY-4.0)``."""
    out = []
    for c in changes:
        if c["change"] != "changed":
            said = ", ".join(f"{one(v)}" if f == "licence" else f"{f} {one(v)}" for f, v in c["fields"].items())
            out.append(f"{c['source']}: {c['change']}" + (f" ({said})" if said else ""))
            continue
        parts = []
        for f, (va, vb) in c["fields"].items():
            sa, sb = pair(va, vb)
            parts.append(f"{f} {sa} → {sb}")
        out.append(f"{c['source']}: " + "; ".join(parts))
    return out


def lineage_note(older: Mapping[str, Any], newer: Mapping[str, Any]) -> str | None:
    """What the newer release (release.json ``newer``) says of its relation to the older: None when
    the older is its parent (or the same version, built again), else a sentence — built without a parent, or on another version — so
    a diff does not read as what changed from one to the other."""
    oc, ov = older.get("collection"), older.get("version")
    nc, nv, parent = newer.get("collection"), newer.get("version"), newer.get("parent_version")
    if (nc, nv) == (oc, ov):  # a version built again (a reproduction check), not a child of it
        return None
    if not parent:
        return (f"{nc} {nv} was built without a parent release: it is not derived from {oc} {ov} (no lineage "
                "between them; its splits did not inherit theirs), so the changes below compare two independent "
                "releases")
    if nc != oc or parent != ov:
        return (f"{nc} {nv} was built on {nc} {parent}, not on {oc} {ov}: the changes below compare two releases "
                "of which neither is the other's parent")
    return None
