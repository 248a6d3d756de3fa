"""``curator labels check``: the whole label system validated at once, every problem as data.

Checks: the taxonomy (keys, references, cycles, laterality, partitions, ambiguous names); every
dataset file (schema, fixes, regexes); every raw value / structure file of every dataset maps
to a term; ``annotates`` is covered by the map; region, licence and citation are present and
well-formed (SPDX id or ``LicenseRef-`` with notes; BibTeX with a key).

>>> problems = check_label_system()
>>> [p for p in problems if p.severity == "error"]
[]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from curator.registry import NOTE_KINDS
from curator.registry.spec import REQUIRED, DatasetSpec
from curator.release.card_check import bibtex_keys

# SPDX ids the registry uses or is likely to; anything else must be LicenseRef-<id> with notes
SPDX_IDS = {"CC0-1.0", "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC-BY-NC-3.0", "CC-BY-NC-4.0",
            "CC-BY-NC-SA-3.0", "CC-BY-NC-SA-4.0", "CC-BY-ND-4.0", "CC-BY-NC-ND-3.0", "CC-BY-NC-ND-4.0", "ODbL-1.0",
            "PDDL-1.0", "MIT", "Apache-2.0", "BSD-3-Clause", "GPL-3.0-only", "GPL-3.0-or-later"}
_LICENSE_REF = re.compile(r"^LicenseRef-[A-Za-z0-9.\-]+$")
_BIBTEX = re.compile(r"^\s*@\w+\s*\{\s*[^,\s]+\s*,", re.MULTILINE)
WARNING_KINDS = {"ambiguous_bag", "overlap_unknown"}


@dataclass(frozen=True)
class Problem:
    where: str
    kind: str
    message: str
    severity: str = "error"
    builtin: bool = False  # about a dataset file curator ships (not one given with --registry)

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "kind": self.kind, "severity": self.severity, "message": self.message,
                "builtin": self.builtin}


def _share_alike_checks(spec: DatasetSpec, where: str) -> list[Problem]:
    """``licence_terms.share_alike`` names a licence that imposes share-alike, and share-alike
    declared over a licence id that does not impose it names one (the card needs it to tell which
    share-alike sources can be shared as one adapted work)."""
    from curator.release.licences import parse_licence, share_alike_family

    declared = spec.extra.get("licence_terms") or {}
    if not isinstance(declared, dict):
        return []
    sa = declared.get("share_alike")
    at = f"{where}:licence_terms"
    if sa is not None:
        if share_alike_family(str(sa)) == "unknown":
            return [Problem(at, "licence", f"share_alike {sa!r} is not a share-alike licence (e.g. CC-BY-SA-4.0)")]
        if declared.get("derivatives", "share-alike") != "share-alike":
            return [Problem(at, "licence", f"share_alike is set but derivatives is {declared['derivatives']!r}")]
    elif declared.get("derivatives") == "share-alike" and not parse_licence(spec.licence).share_alike:
        return [Problem(at, "licence", f"derivatives are share-alike but {spec.licence!r} does not impose it: "
                        "name the licence that does in `share_alike` (e.g. CC-BY-SA-4.0)", "warning")]
    return []


def _licence_term_checks(spec: DatasetSpec, where: str) -> list[Problem]:
    """``licence_terms`` that grant what the licence id forbids (``CC-BY-NC-ND-4.0`` with
    ``commercial_use: yes``): an error, as one of the two is wrong and a release card would have
    said the dataset allows it (a release reads the id's term); and a warning when the terms give
    no ``confidence`` (docs/registry.md: every dataset curator ships records it)."""
    from curator.release.licences import forbidden_by_id, parse_licence, term_value

    declared = spec.extra.get("licence_terms")
    if not isinstance(declared, dict):
        return []
    implied = parse_licence(spec.licence)
    out = []
    for key in ("commercial_use", "derivatives"):
        value = term_value(key, declared.get(key))
        why = forbidden_by_id(implied, key, value) if value else None
        if why:
            out.append(Problem(f"{where}:licence_terms.{key}", "licence", f"{key}: {value} contradicts the licence: "
                               f"{why}; correct whichever of `licence` and `licence_terms` is wrong (a release "
                               "reads the licence's term until then)"))
    if "confidence" not in declared:
        out.append(Problem(f"{where}:licence_terms", "licence_confidence", "licence_terms gives no `confidence`: say "
                           "how sure the reading is (high: the licence text itself; medium; low: secondary sources), "
                           "as the card tells readers to check low-confidence terms (docs/registry.md, "
                           "'licence_terms')", "warning"))
    return out


# keys the draft of `curator sources init` fills with TODO that no other check reads: "TODO" is
# refused in every text key (region, licence, citation and citation_key are refused by their own checks)
_TODO = "TODO"


def _todo_checks(spec: DatasetSpec, where: str) -> list[Problem]:
    """An error per key still holding the draft's placeholder ``TODO`` (``version: TODO``): it
    would be published as the dataset's version, homepage or title."""
    found: list[str] = []

    def walk(loc: str, v: Any) -> None:
        if isinstance(v, str) and v.strip() == _TODO:
            found.append(loc)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(f"{loc}.{k}", x)
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(f"{loc}[{i}]", x)

    for key in ("version", "title", "homepage", "patient_id"):
        walk(key, getattr(spec, key))
    for key, value in spec.extra.items():
        walk(key, value)
    for i, note in enumerate(spec.notes):
        walk(f"notes[{i}]", note)
    for i, ov in enumerate(spec.overlaps):
        walk(f"overlaps[{i}]", ov)
    return [Problem(f"{where}:{loc}", "todo", f"{loc} is still the draft's placeholder TODO: fill it in"
                    + ("" if loc in REQUIRED else " (or remove the key: it is optional)")) for loc in found]


def _dataset_checks(spec: DatasetSpec, regions: tuple[str, ...], known: set[str]) -> list[Problem]:
    where = spec.file_name
    out: list[Problem] = []
    if regions:
        for r in (x.strip() for x in spec.region.split(",")):
            if r not in regions:
                out.append(Problem(f"{where}:region", "value", f"region {r!r} is not one of {list(regions)}"))
    lic = spec.licence.strip()
    if lic not in SPDX_IDS and not _LICENSE_REF.match(lic):
        out.append(Problem(f"{where}:licence", "licence", f"{lic!r} is neither a known SPDX id nor LicenseRef-<id>"))
    if lic.startswith("LicenseRef-") and not spec.extra.get("licence_notes"):
        out.append(Problem(f"{where}:licence_notes", "licence", "a LicenseRef licence needs `licence_notes` with the evidence"))
    out += _share_alike_checks(spec, where) + _licence_term_checks(spec, where) + _todo_checks(spec, where)
    if not _BIBTEX.search(spec.citation):
        out.append(Problem(f"{where}:citation", "citation", "the citation is not a BibTeX entry (@type{key, ...})"))
    if not spec.citation_key:
        out.append(Problem(f"{where}:citation_key", "citation", "`citation_key` is missing"))
    else:  # the card cites citation_key and prints the BibTeX under it: they must be the same keys
        keys = bibtex_keys(spec.citation)
        for key in (k.strip() for k in spec.citation_key.split(",")):
            if key not in keys:
                out.append(Problem(f"{where}:citation_key", "citation", f"citation_key {key!r} is not the key of a "
                                   f"BibTeX entry in `citation` (its keys: {', '.join(keys) or 'none'}); "
                                   "several entries: list their keys, comma-separated"))
    for ov in spec.overlaps:
        other = ov.get("dataset") if isinstance(ov, dict) else None
        if not other:
            out.append(Problem(f"{where}:overlaps", "type", "each overlap needs `dataset` (and `relation`, `note`)"))
        elif other not in known:
            out.append(Problem(f"{where}:overlaps", "overlap_unknown", f"{other!r} is not a registry dataset: "
                               "check the name (`curator sources list`); a relation to a dataset outside the "
                               "registry is said in `notes:`", "warning"))
    return out


# regions whose structures a scan of the other commonly holds (an abdominal CT's aorta and
# oesophagus, a head-and-neck scan's brainstem, a pelvic scan's sacrum): a name resolving to a
# term of any other region is more likely a word read in the wrong organ system
NEAR_REGIONS = {"brain": {"head and neck"}, "head and neck": {"brain", "thorax", "spine"},
                "thorax": {"head and neck", "abdomen", "spine", "upper limb"},
                "abdomen": {"thorax", "pelvis", "spine", "lower limb"}, "pelvis": {"abdomen", "spine", "lower limb"},
                "spine": {"head and neck", "thorax", "abdomen", "pelvis"}, "lower limb": {"pelvis", "abdomen"},
                "upper limb": {"thorax"}}


def _region_checks(spec: DatasetSpec, tax: Any) -> list[Problem]:
    """A warning for each label name that resolves to a term of a region far from the dataset's
    (a brain MR's `Ventricle_L` read as the heart's left ventricle, a cardiac dataset's
    `ventricles` as the brain's): the mapping is then almost surely a wrong reading of the word."""
    regions = {r.strip() for r in spec.region.split(",")}
    if not regions or "whole body" in regions or not regions <= set(tax.regions):  # a misspelt region: its error
        return []
    where = spec.file_name
    far: dict[tuple[str, str], list[int | str]] = {}  # (part, name) -> its keys: a band's 16 values are one
    named: list[tuple[str, int | str, tuple[str, ...]]] = [("values", k, ts) for k, ts in spec.labels.values.items()]
    named += [("structures", k, ts) for k, ts in spec.labels.structures.items()]
    for part, key, names in named:
        for name in names:
            t = tax.resolve(name)
            if t is None or t.region == "whole body" or t.region in regions or \
                    any(t.region in NEAR_REGIONS.get(r, set()) for r in regions):
                continue
            far.setdefault((part, name), []).append(key)
    out: list[Problem] = []
    for (part, name), keys in far.items():
        t = tax.resolve(name)
        held = (f" (raw values {', '.join(map(str, keys[:4]))}" + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
                + ")") if len(keys) > 1 else ""
        out.append(Problem(f"{where}:labels.{part}.{keys[0]}", "region_far",
                           f"{name!r}{held} resolves to {t.name!r} ({t.id}, region {t.region}), far from the "
                           f"dataset's region {spec.region!r}: check that the name means that structure "
                           "(`curator labels resolve` lists the terms; give the specific name)", "warning"))
    return out


def check_label_system(extra: tuple[Path, ...] | list[Path] = (), taxonomy: str | Path | None = None) -> list[Problem]:
    """Every problem of the taxonomy and the dataset registry (built-in + ``extra`` files)."""
    from curator.harmonize.mapping import build_mapping, structure_names_disagree
    from curator.registry import builtin_dir, with_extra
    from curator.taxonomy.load import read_taxonomy

    problems: list[Problem] = []
    tax, tissues = read_taxonomy(taxonomy)
    problems += [Problem(i.loc, i.kind, i.message, "warning" if i.kind in WARNING_KINDS else "error") for i in tissues]
    if tax is not None and any(i.kind not in WARNING_KINDS for i in tissues):
        # a broken taxonomy (a misspelt `extends:` reads as a one-term taxonomy): every dataset's
        # names would be "unknown" against it — hundreds of errors hiding the one that matters
        problems.append(Problem(Path(tax.path).name, "datasets_not_checked", "the datasets' label names were not "
                                "checked against this taxonomy: fix its errors above first", "warning"))
        tax = None
    specs, builtin_issues, extra_issues, notes = with_extra(extra)
    problems += [Problem(i.loc, i.kind, i.message, builtin=True) for i in builtin_issues]
    problems += [Problem(i.loc, i.kind, i.message) for i in extra_issues]
    problems += [Problem(i.loc, i.kind, i.message, "info" if i.kind in NOTE_KINDS else "warning") for i in notes]
    shipped = builtin_dir().resolve()
    for spec in specs.values():
        found = _dataset_checks(spec, tax.regions if tax else (), set(specs))
        found += _region_checks(spec, tax) if tax is not None else []
        found = [replace(p, message=p.message + spec.line_note(p.where)) for p in found]  # (line N)
        if tax is not None:
            _, missues = build_mapping(spec, tax)
            found += [Problem(i.loc, i.kind, i.message) for i in missues]
            found += [Problem(i.loc, i.kind, i.message, "warning") for i in structure_names_disagree(spec, tax)]
        if spec.path and Path(spec.path).resolve().parent == shipped:
            found = [replace(p, builtin=True) for p in found]
        problems += found
    return problems
