"""The taxonomy's records: :class:`Term` and the frozen :class:`Taxonomy` (look-up, hierarchy,
derived terms, prompts).

A term's mask is its own annotation when a dataset labels it. A term a dataset does not label
is *derived* when one of its ``partitions`` (sets of ``part_of`` children that together make
up the whole term) is annotated — or itself derivable — for that dataset; its mask is then the
union of every labelled structure that is ``part_of`` it (so a lesion painted over its organ,
a transitional L6 or the sacrum under "vertebrae" are included).

>>> from curator.taxonomy import load_taxonomy
>>> tax = load_taxonomy()
>>> tax.resolve("rt kidney").id
'kidney_right'
>>> sorted(tax.derived({"kidney_left", "kidney_right"}))
['kidney']
>>> tax.prompt("kidney_left", "CT")
'(ct) left kidney'
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from curator.taxonomy.normalize import bag_key, exact_key

RELATIONS = ("part_of", "is_a")
LATERALITIES = ("left", "right")
_PROMPT_MODALITY = {"CT": "ct", "MR": "mri", "MRI": "mri", "PET": "pet"}


@dataclass(frozen=True, eq=False)
class Term:
    """One anatomical structure or lesion. ``laterality`` is the patient's side (None: unpaired
    or both sides); ``part_of``/``is_a`` are parent term ids; ``partitions`` list the sets of
    parts that exactly make up this term. ``may_include`` are terms that are not part of this
    one but may lie inside a dataset's label of it when the dataset does not label them apart
    (a whole-organ kidney label holds its masses: :meth:`Taxonomy.may_hold`). ``defined_in`` is
    the name of the taxonomy file that defines the term, ``named_in`` those of the files that
    added synonyms to it (``synonyms:`` of a file that extends another)."""

    id: str
    name: str
    category: str
    region: str
    synonyms: tuple[str, ...] = ()
    abbreviations: tuple[str, ...] = ()
    laterality: str | None = None
    part_of: tuple[str, ...] = ()
    is_a: tuple[str, ...] = ()
    partitions: tuple[tuple[str, ...], ...] = ()
    may_include: tuple[str, ...] = ()
    codes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    note: str = ""
    defined_in: str = ""
    named_in: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Term) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def parents(self) -> tuple[str, ...]:
        return self.part_of + tuple(p for p in self.is_a if p not in self.part_of)

    def names(self) -> tuple[str, ...]:
        """Every name the term is known by (preferred first)."""
        return (self.name, *self.synonyms, *self.abbreviations)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "name": self.name, "category": self.category, "region": self.region,
                             "laterality": self.laterality}
        for k in ("synonyms", "abbreviations", "part_of", "is_a", "may_include"):
            if getattr(self, k):
                d[k] = list(getattr(self, k))
        if self.partitions:
            d["partitions"] = [list(p) for p in self.partitions]
        if self.codes:
            d["codes"] = dict(self.codes)
        if self.note:
            d["note"] = self.note
        return d


def _index(terms: Mapping[str, Term], *keys: Any) -> dict[str, frozenset[str]]:
    idx: dict[str, set[str]] = {}
    for t in terms.values():
        for n in (*t.names(), t.id):
            for key in keys:
                idx.setdefault(key(n), set()).add(t.id)
    return {k: frozenset(v) for k, v in idx.items() if k}


def _flat_key(name: str) -> str:
    return exact_key(name, camel=False)


@dataclass(frozen=True, eq=False)
class Taxonomy:
    """All terms, immutable. Build with :func:`curator.taxonomy.load_taxonomy`."""

    terms: Mapping[str, Term]
    version: str = ""
    regions: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    path: str = ""
    _exact: Mapping[str, frozenset[str]] = field(init=False, repr=False)
    _bag: Mapping[str, frozenset[str]] = field(init=False, repr=False)
    _children: Mapping[str, Mapping[str, tuple[str, ...]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", MappingProxyType(dict(self.terms)))
        object.__setattr__(self, "_exact", MappingProxyType(_index(self.terms, exact_key, _flat_key)))
        object.__setattr__(self, "_bag", MappingProxyType(_index(self.terms, bag_key)))
        kids: dict[str, dict[str, list[str]]] = {r: {} for r in RELATIONS}
        for t in self.terms.values():
            for rel in RELATIONS:
                for p in getattr(t, rel):
                    kids[rel].setdefault(p, []).append(t.id)
        object.__setattr__(self, "_children", MappingProxyType(
            {r: MappingProxyType({k: tuple(sorted(v)) for k, v in d.items()}) for r, d in kids.items()}))

    # -- look-up ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.terms)

    def __iter__(self) -> Iterator[Term]:
        return iter(self.terms.values())

    def __contains__(self, term_id: object) -> bool:
        return term_id in self.terms

    def get(self, term_id: str) -> Term | None:
        return self.terms.get(term_id)

    def term(self, term_id: str) -> Term:
        """The term with this id; ``KeyError`` (naming close ids) when there is none."""
        try:
            return self.terms[term_id]
        except KeyError:
            close = difflib.get_close_matches(term_id, list(self.terms), n=3)
            raise KeyError(f"no term with id {term_id!r}" + (f"; did you mean {', '.join(close)}?" if close else "")) from None

    def resolve(self, name: str) -> Term | None:
        """The term a free-text name means, or ``None`` (unknown or ambiguous).

        Tries, in order: the id itself; the exact key (case, punctuation, SAT's ``(ct)``
        prefix, "rt"/"lt"); the bag key (word order, plurals); the bag key reading single
        ``l``/``r`` letters as sides.
        """
        if not isinstance(name, str) or not name.strip():
            return None
        if name in self.terms:
            return self.terms[name]
        for hits in (self._exact.get(exact_key(name)), self._bag.get(bag_key(name)),
                     self._bag.get(bag_key(name, expand_sides=True))):
            if hits and len(hits) == 1:
                return self.terms[next(iter(hits))]
            if hits:
                return None  # ambiguous: refuse rather than guess
        return None

    def suggest(self, name: str, n: int = 3) -> list[Term]:
        """Close matches for an unresolved name (for error messages)."""
        keys = difflib.get_close_matches(exact_key(name), list(self._exact), n=n * 2, cutoff=0.6)
        out: list[Term] = []
        for k in keys:
            for tid in sorted(self._exact[k]):
                if self.terms[tid] not in out:
                    out.append(self.terms[tid])
        return out[:n]

    def close_ids(self, name: str, n: int = 3) -> list[str]:
        """Term ids to suggest for a name that is no term id: the term it resolves to, else close
        names' terms and close ids (for error messages)."""
        found = self.resolve(name)
        if found is not None:
            return [found.id]
        return list(dict.fromkeys([t.id for t in self.suggest(name, n)]
                                  + difflib.get_close_matches(name, list(self.terms), n=n)))

    def ambiguous_names(self) -> dict[str, list[str]]:
        """Exact keys claimed by more than one term (a taxonomy error)."""
        return {k: sorted(v) for k, v in self._exact.items() if len(v) > 1}

    # -- hierarchy ----------------------------------------------------------------------------
    def parents(self, term_id: str, relation: str | None = None) -> tuple[str, ...]:
        t = self.term(term_id)
        return t.parents if relation is None else tuple(getattr(t, relation))

    def children(self, term_id: str, relation: str = "part_of") -> tuple[str, ...]:
        return self._children[relation].get(term_id, ())

    def ancestors(self, term_id: str, relation: str | None = "part_of") -> list[str]:
        """Every term above ``term_id`` along ``relation`` (``None``: both), nearest first."""
        out: list[str] = []
        todo = list(self.parents(term_id, relation))
        while todo:
            p = todo.pop(0)
            if p in out or p not in self.terms:
                continue
            out.append(p)
            todo.extend(self.parents(p, relation))
        return out

    def descendants(self, term_id: str, relation: str = "part_of") -> list[str]:
        """Every term below ``term_id`` along ``relation``, nearest first."""
        out: list[str] = []
        todo = list(self.children(term_id, relation))
        while todo:
            c = todo.pop(0)
            if c in out:
                continue
            out.append(c)
            todo.extend(self.children(c, relation))
        return out

    def may_hold(self, term_id: str) -> frozenset[str]:
        """The terms a dataset's label of ``term_id`` may hold where the dataset does not label
        them apart: the ``may_include`` of ``term_id`` and of the terms it is part of, with their
        parts — a whole-organ left kidney label may hold a kidney tumour (``kidney`` may include
        ``kidney_mass``), although the taxonomy's kidney is the parenchyma beside its masses.

        >>> from curator.taxonomy import load_taxonomy
        >>> sorted(load_taxonomy().may_hold("kidney_left"))
        ['kidney_cyst', 'kidney_cyst_left', 'kidney_cyst_right', 'kidney_mass', 'kidney_tumor']
        """
        if term_id not in self.terms:
            return frozenset()
        out: set[str] = set()
        for t in (term_id, *self.ancestors(term_id, "part_of")):
            for m in self.terms[t].may_include:
                out |= {m, *self.descendants(m)}
        return frozenset(out)

    # -- derived terms ------------------------------------------------------------------------
    def derived(self, annotated: Iterable[str], mapped: Iterable[str] = ()) -> dict[str, tuple[str, ...]]:
        """Terms derivable from ``annotated`` ones: ``{derived id: base term ids of its union}``.

        ``annotated`` are the terms a dataset labels completely; ``mapped`` may add terms that
        only sometimes appear (they join unions, they never complete a partition).

        The union holds every labelled term below the derived one, by the taxonomy's anatomy:
        SegRap's ``temporal lobe`` includes the hippocampus it labels apart, although its own
        left and right temporal lobe labels do not (a direct label keeps the dataset's
        definition). A derived term the dataset also labels directly (an optional code, never
        complete on its own) joins its own union, so a case gets one row for it.
        """
        ann = {a for a in annotated if a in self.terms}
        base = ann | {m for m in mapped if m in self.terms}
        memo: dict[str, bool] = {}

        def derivable(tid: str, stack: frozenset[str]) -> bool:
            if tid in ann:
                return True
            if tid in memo:
                return memo[tid]
            if tid in stack:
                return False
            ok = any(all(derivable(m, stack | {tid}) for m in part) for part in self.terms[tid].partitions)
            memo[tid] = ok
            return ok

        candidates = sorted({a for b in ann for a in self.ancestors(b, "part_of")} - ann)
        out: dict[str, tuple[str, ...]] = {}
        for tid in candidates:
            if derivable(tid, frozenset()):
                out[tid] = tuple(sorted(b for b in base if b == tid or tid in self.ancestors(b, "part_of")))
        return out

    # -- prompts ------------------------------------------------------------------------------
    def prompt(self, term: str | Term, modality: str) -> str:
        """Text prompt of a term in a modality, SAT style: ``"(ct) left kidney"``."""
        t = term if isinstance(term, Term) else (self.get(term) or self.resolve(term))
        if t is None:
            raise KeyError(f"no term named {term!r}")
        mod = _PROMPT_MODALITY.get(modality.upper(), modality.lower())
        return f"({mod}) {t.name}"
