"""What the licences of a release's sources allow, alone and combined.

Dataset YAMLs declare ``licence`` as an SPDX-like id (``CC-BY-NC-SA-4.0``), sometimes with
words around it (``unknown (challenge registration)``, ``conflicting: CC-BY-4.0 vs
CC-BY-NC-SA``). :func:`parse_licence` reads the terms that matter for a combined
collection; a conflicting declaration is read as its most restrictive variant.
:func:`combine` states the constraints of the combination in plain sentences.
This is guidance for the dataset card, not legal advice.

>>> t = parse_licence("CC-BY-NC-SA-4.0")
>>> (t.commercial, t.derivatives, t.attribution)
('no', 'share-alike', True)
>>> parse_licence("conflicting: CC-BY-4.0 (Zenodo) vs CC-BY-NC-SA (NeurIPS)").commercial
'no'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

YesNo = Literal["yes", "no", "unknown"]
_CC = re.compile(r"\bCC[ -]?(0|BY(?:[ -](?:NC|SA|ND))*)(?:[ -](\d\.\d))?", re.IGNORECASE)
_PERMISSIVE = re.compile(r"\b(APACHE|MIT|BSD|PDDL|ODC[ -]?BY|ISC)\b", re.IGNORECASE)
_ODBL = re.compile(r"\bODBL\b", re.IGNORECASE)

# the values each key of a dataset YAML's ``licence_terms`` takes (``share_alike`` names a licence id)
TERM_VALUES: dict[str, tuple[str, ...]] = {
    "commercial_use": ("yes", "no", "unknown"), "derivatives": ("yes", "share-alike", "no", "unknown"),
    "redistribution": ("yes", "no", "unknown"), "confidence": ("high", "medium", "low")}


def term_value(key: str, value: Any) -> str | None:
    """A ``licence_terms`` value as written, read: a YAML 1.1 boolean — what ``commercial_use: no``
    is without quotes — as ``yes``/``no`` (``confidence`` takes none); ``None`` for anything that is
    not one of the key's values (``maybe``, ``False`` as text), which no reader may take for a grant.

    >>> term_value("commercial_use", False), term_value("derivatives", "share-alike"), term_value("redistribution", "Y")
    ('no', 'share-alike', None)
    """
    if isinstance(value, bool):
        return None if key == "confidence" else "yes" if value else "no"
    return value if isinstance(value, str) and value in TERM_VALUES.get(key, ()) else None


def forbidden_by_id(implied: LicenceTerms, key: str, value: str) -> str | None:
    """What the licence id forbids that a declared ``licence_terms`` value grants, said (an NC id's
    commercial use, an ND id's derivatives, an SA id's derivatives without share-alike); None when
    the id leaves it open or allows it.

    >>> forbidden_by_id(parse_licence("CC-BY-NC-ND-4.0"), "commercial_use", "yes")
    'CC-BY-NC-ND-4.0 forbids commercial use (NC)'
    >>> forbidden_by_id(parse_licence("CC-BY-SA-4.0"), "derivatives", "share-alike") is None
    True
    """
    if key == "commercial_use" and implied.commercial == "no" and value == "yes":
        return f"{implied.declared} forbids commercial use (NC)"
    if key == "derivatives" and implied.derivatives == "no" and value in ("yes", "share-alike"):
        return f"{implied.declared} forbids derivatives (ND)"
    if key == "derivatives" and implied.derivatives == "share-alike" and value == "yes":
        return f"{implied.declared} allows derivatives only under the same licence (SA)"
    return None


@dataclass(frozen=True)
class LicenceTerms:
    """The terms of one declared licence that matter for combining datasets."""

    declared: str
    family: str  # e.g. CC-BY-NC-SA, CC0, permissive, ODbL, unknown
    commercial: YesNo
    derivatives: Literal["yes", "share-alike", "no", "unknown"]
    attribution: bool
    conflicting: bool = False
    redistribution: YesNo = "unknown"  # may the (original or adapted) data be passed on at all
    # the family of the licence whose share-alike binds adapted material: the id's own (CC-BY-SA),
    # or the one licence_terms.share_alike names (MIT labels drawn on CC-BY-SA images); "unknown"
    # when share-alike is declared but no licence named; "" when derivatives are not share-alike
    share_alike: str = ""

    @property
    def known(self) -> bool:
        return self.family != "unknown"

    def unknown_terms(self) -> list[str]:
        """The terms (commercial use, derivatives, redistribution) that are not established."""
        return [name for name, v in (("commercial use", self.commercial), ("derivatives", self.derivatives),
                                     ("redistribution", self.redistribution)) if v == "unknown"]

    def with_declared(self, declared: dict[str, Any] | None) -> LicenceTerms:
        """These terms with a dataset YAML's ``licence_terms`` (commercial_use, derivatives,
        redistribution, share_alike) put over what the licence id implies: the registry records
        terms of use the id alone does not say (a challenge's non-commercial terms behind a
        ``LicenseRef-``, the share-alike of images an MIT-labelled label set is drawn on —
        ``share_alike`` names the licence that imposes it, e.g. ``CC-BY-SA-4.0``). A declared value
        that is none of its key's (:func:`term_value`) reads as unknown, and one granting what the
        id forbids (:func:`forbidden_by_id`) as the id's term: ``labels check`` refuses both.

        >>> t = parse_licence("CC-BY-NC-ND-4.0").with_declared({"commercial_use": True, "derivatives": "yes"})
        >>> (t.commercial, t.derivatives)
        ('no', 'no')
        """
        if not declared:
            return self
        sa_id = declared.get("share_alike")

        def read(key: str, by_id: str, implied: str | None = None) -> str:
            # a value that is none of the key's (a typo, an old release's False) is unknown, never a
            # grant; a grant the licence id forbids (NC with commercial_use yes) keeps the id's term
            if key not in declared:
                return implied or by_id
            value = term_value(key, declared[key]) or "unknown"
            return by_id if forbidden_by_id(self, key, value) else value

        commercial = read("commercial_use", self.commercial)
        derivatives = read("derivatives", self.derivatives, "share-alike" if sa_id else None)
        redistribution = read("redistribution", self.redistribution)
        known = self.known or any(v != "unknown" for v in (commercial, derivatives, redistribution))
        return LicenceTerms(self.declared, self.family if self.known or not known else "declared terms",
                            commercial, derivatives, self.attribution, self.conflicting,  # type: ignore[arg-type]
                            redistribution,  # type: ignore[arg-type]
                            "" if derivatives != "share-alike" else
                            share_alike_family(str(sa_id)) if sa_id else self.share_alike or "unknown")


def share_alike_family(licence: str) -> str:
    """The family of a licence id that imposes share-alike (``CC-BY-SA-4.0`` -> ``CC-BY-SA``);
    "unknown" for one that does not (``MIT``, ``CC-BY-4.0``, ``unknown``)."""
    t = parse_licence(licence)
    return t.share_alike or "unknown"


def _cc_terms(token: str) -> tuple[str, YesNo, str]:
    parts = [p.upper() for p in re.split(r"[ -]", token) if p]
    if parts == ["0"]:
        return "CC0", "yes", "yes"
    fam = "CC-" + "-".join(parts)
    commercial: YesNo = "no" if "NC" in parts else "yes"
    deriv = "no" if "ND" in parts else ("share-alike" if "SA" in parts else "yes")
    return fam, commercial, deriv


def _restrictiveness(t: tuple[str, YesNo, str]) -> int:
    return (2 if t[1] == "no" else 0) + {"yes": 0, "share-alike": 1, "no": 3}[t[2]]


def parse_licence(text: str | None) -> LicenceTerms:
    """Read a declared licence string (see the module docstring)."""
    declared = (text or "").strip()
    low = declared.lower()
    conflicting = low.startswith("conflicting") or " vs " in low or (low.startswith("licenseref-")
                                                                      and "conflict" in low)
    if not declared or low.startswith("unknown"):
        return LicenceTerms(declared or "unknown", "unknown", "unknown", "unknown", True, conflicting)
    found = [_cc_terms(m.group(1)) for m in _CC.finditer(declared)]
    if found:
        fam, commercial, deriv = max(found, key=_restrictiveness)
        return LicenceTerms(declared, fam, commercial, deriv, fam != "CC0", conflicting, "yes",  # type: ignore[arg-type]
                            fam if deriv == "share-alike" else "")
    if _ODBL.search(declared):
        return LicenceTerms(declared, "ODbL", "yes", "share-alike", True, conflicting, "yes", "ODbL")
    if _PERMISSIVE.search(declared):
        return LicenceTerms(declared, "permissive", "yes", "yes", True, conflicting, "yes")
    return LicenceTerms(declared, "unknown", "unknown", "unknown", True, conflicting)


@dataclass
class Combined:
    """The constraints of a combination of sources."""

    commercial_use: YesNo
    redistribute_adapted: YesNo
    attribution_required: bool
    share_alike: list[str] = field(default_factory=list)
    no_derivatives: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # licence, or some of its terms, not established
    conflicting: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    redistribute: YesNo = "unknown"
    no_redistribution: list[str] = field(default_factory=list)
    # the constraints that keep these sources from being shared as one adapted work (two
    # share-alike licences, no derivatives, no redistribution): a subset of ``constraints``
    incompatible: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The front-matter form."""
        return {"commercial_use": self.commercial_use, "redistribute": self.redistribute,
                "redistribute_adapted": self.redistribute_adapted,
                "attribution_required": self.attribution_required, "share_alike": self.share_alike,
                "no_derivatives": self.no_derivatives, "no_redistribution": self.no_redistribution,
                "unknown": self.unknown, "conflicting": self.conflicting}


def _sa_name(family: str) -> str:
    return "share-alike licence not named" if family == "unknown" else family


def combine(sources: dict[str, LicenceTerms], notes: dict[str, str] | None = None, *,
            whole: str = "this release") -> Combined:
    """Constraints of using ``sources`` (name -> terms) together; ``notes``: per-source licence notes;
    ``whole``: what the sentences call the combination (an export of some of a release's cases)."""
    nc = sorted(n for n, t in sources.items() if t.commercial == "no")
    unk = sorted(n for n, t in sources.items() if not t.known)
    # a known licence id can still leave terms open: the registry's researched licence_terms say
    # "unknown" where the id's implied terms are not established (a secondary-source CC id, a
    # repository's code licence on data)
    open_terms = {n: t.unknown_terms() for n, t in sources.items() if t.known and t.unknown_terms()}
    conf = sorted(n for n, t in sources.items() if t.conflicting)
    sa = sorted(n for n, t in sources.items() if t.derivatives == "share-alike")
    nd = sorted(n for n, t in sources.items() if t.derivatives == "no")
    nr = sorted(n for n, t in sources.items() if t.redistribution == "no")
    commercial: YesNo = ("no" if nc else "unknown" if unk or any(t.commercial == "unknown" for t in sources.values())
                         else "yes")
    # share-alike binds adapted material to the licence that imposes it (Couinaud_Liver's MIT labels
    # are drawn on MSD's CC-BY-SA images): two such licences cannot both bind one adapted work
    sa_families = sorted({sources[n].share_alike for n in sa} - {"unknown"})
    sa_unnamed = [n for n in sa if sources[n].share_alike == "unknown"]
    adapted: YesNo = ("no" if nd or nr or len(sa_families) > 1 else
                      "unknown" if any("unknown" in (t.derivatives, t.redistribution) for t in sources.values())
                      or (sa_unnamed and len(sa) > 1) else "yes")
    redistribute: YesNo = "no" if nr else ("unknown" if any(t.redistribution == "unknown" for t in sources.values())
                                           else "yes")
    c = Combined(commercial, adapted, any(t.attribution for t in sources.values()), sa, nd,
                 sorted({*unk, *open_terms}), conf,
                 redistribute=redistribute, no_redistribution=nr)
    lines = c.constraints
    if nc:
        lines.append(f"Non-commercial use only: {', '.join(nc)} forbid(s) commercial use, and the "
                     "combination inherits the most restrictive term.")
    if sa:
        lines.append("Share-alike: material adapted from "
                     + ", ".join(f"{n} ({_sa_name(sources[n].share_alike)})" for n in sa)
                     + " (harmonized or revised labels, pseudo labels, preprocessed images) must be shared "
                     "under the same licence.")
    if len(sa_families) > 1:
        lines.append(f"Incompatible share-alike licences ({', '.join(sa_families)}): the adapted collection "
                     "cannot be redistributed as one work; distribute those datasets' parts separately.")
        c.incompatible.append(lines[-1])
    if sa_unnamed and len(sa) > 1:
        lines.append(f"Share-alike licence not named for {', '.join(sa_unnamed)}: whether material adapted "
                     "from it can be shared as one work with the other share-alike sources is unknown.")
    if nd:
        lines.append(f"No derivatives: {', '.join(nd)} forbid(s) sharing adapted material; ship only their "
                     "original files (or the recipe to rebuild them).")
        c.incompatible.append(lines[-1])
    if nr:
        lines.append(f"No redistribution: {', '.join(nr)} may not be passed on (e.g. registration or a data use "
                     f"agreement per user); share {whole} without their cases, or the recipe to rebuild "
                     "them from each user's own download.")
        c.incompatible.append(lines[-1])
    if unk:
        lines.append(f"Licence unknown for {', '.join(unk)}: check each dataset's terms before "
                     f"redistributing {whole} or using it commercially.")
    if open_terms:
        lines.append("Terms not established for " + ", ".join(f"{n} ({', '.join(v)})" for n, v in
                                                               sorted(open_terms.items()))
                     + f": check each dataset's own terms before redistributing {whole}, sharing "
                     "material adapted from it or using it commercially.")
    if conf:
        lines.append(f"Conflicting licence statements for {', '.join(conf)}: read as the most restrictive "
                     "variant until clarified with the dataset's maintainers.")
    if c.attribution_required:
        lines.append("Attribution: cite every source listed under Sources (all their BibTeX entries are in "
                     f"CITATIONS.bib) when you use or share {whole}.")
    if not (nc or sa or nd or nr or unk or open_terms or conf):
        lines.append("All sources allow commercial use and adaptation with attribution.")
    for name, note in sorted((notes or {}).items()):
        if note:
            lines.append(f"{name}: {note.strip()}")
    return c
