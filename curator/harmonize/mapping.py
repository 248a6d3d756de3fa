"""A dataset's label map translated into taxonomy term ids.

:func:`build_mapping` resolves every term name of a dataset YAML once; :func:`raw_value_terms`
is the reusable view other stages need (e.g. preprocess tags each label plane's codes with
term ids)::

    >>> from curator.registry import load_registry
    >>> from curator.taxonomy import load_taxonomy
    >>> spec = load_registry().get("KiTS23")
    >>> raw_value_terms(spec, load_taxonomy())[2]
    ['kidney_tumor', 'kidney_and_mass', 'kidney_mass']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from curator.errors import CuratorError
from curator.registry.spec import DatasetSpec, Issue
from curator.taxonomy.model import Taxonomy


@dataclass(frozen=True)
class DatasetMapping:
    """Raw codes / structure files -> term ids, and the dataset's annotated and derived terms."""

    dataset: str
    encoding: str
    values: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    structures: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ignore: frozenset[int] = frozenset()
    annotated: tuple[str, ...] = ()  # base terms the dataset labels completely
    mapped: tuple[str, ...] = ()  # every base term some raw value / file maps to
    derived: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # derived term -> base members
    # per-structure terms whose several files are alternatives (one reader's mask each): one file
    # annotates the term; any other term made of several files needs them all (its parts)
    any_file: frozenset[str] = frozenset()

    def sources(self) -> Mapping[int, tuple[str, ...]] | Mapping[str, tuple[str, ...]]:
        return self.structures if self.encoding == "per_structure" else self.values

    def codes_of(self, term_ids: Iterable[str]) -> tuple[list[int], list[str]]:
        """Raw values and structure keys that carry any of ``term_ids``."""
        want = set(term_ids)
        vals = sorted(v for v, ts in self.values.items() if want & set(ts))
        keys = sorted(k for k, ts in self.structures.items() if want & set(ts))
        return vals, keys

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "encoding": self.encoding,
                "values": {str(k): list(v) for k, v in sorted(self.values.items())},
                "structures": {k: list(v) for k, v in sorted(self.structures.items())},
                "ignore": sorted(self.ignore), "annotated": list(self.annotated), "mapped": list(self.mapped),
                "derived": {k: list(v) for k, v in sorted(self.derived.items())},
                # only when set: a mapping without it keeps its digest (no case re-runs for nothing)
                **({"any_file": sorted(self.any_file)} if self.any_file else {})}


def _unsided_hint(name: str, tax: Taxonomy) -> str:
    """``"; 'spleen' has no left or right: drop the side word"`` when ``name`` is a side word on
    a structure the taxonomy does not side (the close matches then list other sided terms)."""
    from curator.taxonomy.normalize import words

    ws = words(name)
    rest = [w for w in ws if w not in ("left", "right", "l", "r")]
    if not rest or len(rest) == len(ws):
        return ""
    t = tax.resolve(" ".join(rest))
    if t is None or t.laterality is not None:
        return ""
    return f"; {t.name!r} has no left or right in the taxonomy: drop the side word"


def _resolve_all(names: Mapping[Any, tuple[str, ...]], tax: Taxonomy, where: str,
                 issues: list[Issue]) -> dict[Any, tuple[str, ...]]:
    out: dict[Any, tuple[str, ...]] = {}
    for key, terms in names.items():
        ids: list[str] = []
        for name in terms:
            t = tax.resolve(name)
            if t is None:
                close = [s.name for s in tax.suggest(name)]
                issues.append(Issue(f"{where}.{key}", "term_unknown", f"{name!r} is not a taxonomy term"
                                    + (f" (close: {close})" if close else "") + _unsided_hint(name, tax)))
            elif t.id not in ids:
                ids.append(t.id)
        if ids:
            out[key] = tuple(ids)
    return out


def build_mapping(spec: DatasetSpec, tax: Taxonomy) -> tuple[DatasetMapping, list[Issue]]:
    """Resolve a dataset's label names; unresolvable names are returned as issues (and unmapped)."""
    issues: list[Issue] = []
    where = f"{spec.file_name}:labels"
    values = _resolve_all(spec.labels.values, tax, f"{where}.values", issues)
    structures = _resolve_all(spec.labels.structures, tax, f"{where}.structures", issues)
    mapped: list[str] = []
    for ids in list(values.values()) + list(structures.values()):
        mapped += [i for i in ids if i not in mapped]
    if spec.annotates:
        annotated: list[str] = []
        for name in spec.annotates:
            t = tax.resolve(name)
            if t is None:
                close = [s.name for s in tax.suggest(name)]
                issues.append(Issue(f"{spec.file_name}:annotates", "term_unknown", f"{name!r} is not a taxonomy term"
                                    + (f" (close: {close})" if close else "")))
            elif t.id not in mapped:
                issues.append(Issue(f"{spec.file_name}:annotates", "annotates_unmapped", f"{name!r} is annotated but no raw value "
                                    "or structure file maps to it"))
            elif t.id not in annotated:
                annotated.append(t.id)
    else:
        annotated = list(mapped)
    derived = tax.derived(annotated, mapped)
    any_file = _any_file_terms(spec, tax, structures, issues)
    m = DatasetMapping(dataset=spec.name, encoding=spec.labels.encoding, values=MappingProxyType(values),
                       structures=MappingProxyType(structures), ignore=frozenset(spec.labels.ignore),
                       annotated=tuple(annotated), mapped=tuple(mapped), derived=MappingProxyType(derived),
                       any_file=frozenset(any_file))
    return m, [replace(i, message=i.message + spec.line_note(i.loc)) for i in issues]


def _any_file_terms(spec: DatasetSpec, tax: Taxonomy, structures: Mapping[str, tuple[str, ...]],
                    issues: list[Issue]) -> list[str]:
    """The term ids ``labels.annotated_by_any_file`` names; a name no term resolves, or a term not
    made of several structure files (where the setting would do nothing), is an issue."""
    out: list[str] = []
    where = f"{spec.file_name}:labels.annotated_by_any_file"
    for name in spec.labels.annotated_by_any_file:
        t = tax.resolve(name)
        if t is None:
            close = [s.name for s in tax.suggest(name)]
            issues.append(Issue(where, "term_unknown", f"{name!r} is not a taxonomy term"
                                + (f" (close: {close})" if close else "")))
            continue
        files = sorted(k for k, ids in structures.items() if t.id in ids)
        if len(files) < 2:
            issues.append(Issue(where, "annotates_unmapped", f"{name!r} is listed as annotated by any one of its structure files, "
                                f"but {'only ' + repr(files[0]) if files else 'no structure file'} maps to it: the "
                                "setting is for a term several files map to (one reader's mask each)"))
        elif t.id not in out:
            out.append(t.id)
    return out


def raw_value_terms(spec: DatasetSpec, tax: Taxonomy, include_derived: bool = True) -> dict[int | str, list[str]]:
    """``{raw value (label maps) or structure key (per-structure masks): [term ids]}``.

    With ``include_derived`` each code also lists the derived terms whose union contains it, so
    a store whose plane attrs use this map answers ``mask("kidney")`` for a left/right dataset.
    Unresolvable names are left out (``curator labels check`` reports them).
    """
    m, _ = build_mapping(spec, tax)
    out: dict[int | str, list[str]] = {}
    for code, ids in m.sources().items():
        terms = list(ids)
        if include_derived:
            terms += [d for d, members in m.derived.items() if set(ids) & set(members) and d not in terms]
        out[code] = terms
    return out


def index_label_names(spec: DatasetSpec, root: Path) -> tuple[Path, dict[int, str]] | None:
    """The ``labels`` block of the layout's ``dataset.json`` index (MSD ``{"1": "PZ"}`` or nnU-Net
    v2 ``{"PZ": 1}``) as value -> name, with the index's path; None without an index or block."""
    from curator.registry.index import load_index

    entry = next((e for e in spec.layout if e.index), None)
    if entry is None:
        return None
    try:
        path, d = load_index(root, entry)
    except (OSError, CuratorError):
        return None  # said by ingest's reading of the index
    return path, label_block_names(d.get("labels") if isinstance(d, dict) else None)


def label_block_names(block: Any) -> dict[int, str]:
    """A ``dataset.json`` ``labels`` block (MSD ``{"1": "PZ"}`` or nnU-Net v2 ``{"PZ": 1}``) as
    non-zero value -> name; empty when it is no mapping.

    >>> label_block_names({"0": "background", "1": "PZ"}), label_block_names({"background": 0, "TZ": 2})
    ({1: 'PZ'}, {2: 'TZ'})
    """
    names: dict[int, str] = {}
    for k, v in block.items() if isinstance(block, dict) else ():
        value, name = (k, v) if str(k).strip().isdigit() else (v, k)  # MSD: "1": "PZ"; nnU-Net v2: "PZ": 1
        if isinstance(value, (int, str)) and str(value).strip().isdigit() and int(value) and isinstance(name, str):
            names[int(value)] = name
    return names


def named_elsewhere(value_terms: Mapping[int, Iterable[str]], names: Mapping[int, str], tax: Taxonomy,
                    ) -> list[tuple[int, str, Any, list[int]]]:
    """``(value, name, term, values the YAML gives that term)`` for each value a file names with a
    term the dataset YAML maps to *other* values (a swapped pair), or — with no such values — with a
    term unrelated to every term the YAML maps the value to (a segment named "Liver" mapped to
    spleen; a name above or below a mapped term in the hierarchy, "Tumour" for liver_tumor, is
    related). Names the taxonomy cannot resolve (``Segment_1``), and values the YAML does not map,
    are not judged.

    >>> from curator.taxonomy import load_taxonomy
    >>> tax = load_taxonomy()
    >>> [(v, t.id, there) for v, _, t, there in named_elsewhere({1: ["spleen"], 2: ["liver"]},
    ...                                                          {1: "Liver", 2: "Spleen"}, tax)]
    [(1, 'liver', [2]), (2, 'spleen', [1])]
    >>> [(v, t.id, there) for v, _, t, there in named_elsewhere({1: ["spleen"]}, {1: "Liver"}, tax)]
    [(1, 'liver', [])]
    >>> named_elsewhere({2: ["liver_tumor"]}, {2: "Tumour"}, tax)
    []
    """
    where: dict[str, list[int]] = {}
    for v, terms in value_terms.items():
        for t in terms:
            where.setdefault(t, []).append(int(v))
    out = []
    for v, name in sorted(names.items()):
        term = tax.resolve(name)
        if term is None:
            continue
        if term.id in where:
            if v not in where[term.id]:
                out.append((v, name, term, where[term.id]))
            continue
        mapped = [t for t in value_terms.get(v, ()) if t in tax]
        if mapped and not any(_related(tax, term.id, t) for t in mapped):
            out.append((v, name, term, []))
    return out


TERM_UNKNOWN_REMEDY = ("fix the name in the dataset YAML (`curator labels resolve NAME` shows the terms close to it), "
                       "or add the term or name to a taxonomy of your own — a file with `extends: curator` and the "
                       "new `terms:` or `synonyms:`, given as `stages.harmonize.taxonomy` in pipeline.yaml "
                       "(docs/taxonomy.md)")


STRUCTURE_NAME_REMEDY = ("check `labels.structures` in the dataset YAML against the dataset's documentation (a left "
                         "and right swapped?); QC's side check flags a swapped side in the release too")


def unknown_names(spec: DatasetSpec, m: DatasetMapping) -> dict[str, list[str]]:
    """The raw values (as text) and structure keys the dataset YAML maps only to names no taxonomy
    term resolves (``term_unknown``): left out of the mapping ``m``, so a file's voxels there are
    unmapped for that reason, not for want of a mapping."""
    out = {str(v): list(names) for v, names in spec.labels.values.items() if v not in m.values}
    out |= {str(k): list(names) for k, names in spec.labels.structures.items() if k not in m.structures}
    return out


def structure_names_disagree(spec: DatasetSpec, tax: Taxonomy) -> list[Issue]:
    """Structure files (``labels.structures`` keys: file names) whose own name is a term unrelated
    to every term the YAML maps them to — a side swapped (``kidney_left: right kidney``), a copy-paste
    slip. Keys no term resolves (``seg_07``) are not judged; nor are names above or below a
    mapped term (``kidney: kidney_left``).

    >>> from curator.registry import load_registry
    >>> from curator.taxonomy import load_taxonomy
    >>> spec = load_registry().get("TotalSegmentator_v2")
    >>> structure_names_disagree(spec, load_taxonomy())
    []
    """
    out = []
    for key, names in sorted(spec.labels.structures.items()):
        named = tax.resolve(key)
        mapped = [t.id for t in map(tax.resolve, names) if t is not None]
        if named is not None and mapped and not any(_related(tax, named.id, m) for m in mapped):
            loc = f"{spec.file_name}:labels.structures.{key}"
            out.append(Issue(loc, "structure_name_disagrees", f"the structure file {key!r} is named as {named.name}, "
                             f"but the dataset YAML maps it to {', '.join(mapped)}{spec.line_note(loc)}",
                             dataset=spec.name))
    return out


def _related(tax: Taxonomy, a: str, b: str) -> bool:
    """One term is the other, or above it (part of, or a kind of)."""
    return a == b or a in tax.ancestors(b, None) or b in tax.ancestors(a, None)


def disagreement_text(what: str, noun: str, v: int, name: str, term: Any, there: list[int], mine: str) -> str:
    """What :func:`named_elsewhere` found, said (``what``: "the SEG names segment", "dataset.json
    names value"; ``noun``: what the numbers are, "segment number", "value")."""
    if there:
        return (f"{what} {v} {name!r} ({term.name}), which the dataset YAML maps to {noun} "
                f"{', '.join(map(str, there))}; the YAML maps {v} to {mine}")
    return f"{what} {v} {name!r} ({term.name}), but the dataset YAML maps {v} to {mine}, another structure"


def index_disagreements(spec: DatasetSpec, root: Path, tax: Taxonomy) -> list[CuratorError]:
    """Values the index's label names put elsewhere than the dataset YAML does: the index names
    value v with a term the YAML maps to another value (a swapped pair, like MSD Prostate's zones
    in SAT-DS). Names the taxonomy cannot resolve are not judged."""
    found = index_label_names(spec, root)
    if found is None or spec.labels.encoding != "label_map":
        return []
    path, names = found
    resolved = {v: [t.id for t in map(tax.resolve, terms) if t is not None] for v, terms in spec.labels.values.items()}
    out = []
    for v, name, t, there in named_elsewhere(resolved, names, tax):
        mine = ", ".join(spec.labels.values.get(v, ())) or "nothing"
        out.append(CuratorError("index_labels_disagree", disagreement_text(f"{path.name} names value", "value", v, name, t,
                                                                           there, mine), path=str(path),
                                remedy="check labels.values in the dataset YAML against the dataset's own "
                                "documentation, and fix whichever is wrong"))
    return out


def value_spans(values: Iterable[int]) -> str:
    """``"1, 3, 55-70"``: sorted values, runs of consecutive ones as a band.

    >>> value_spans([70, 1, 3, *range(55, 70)])
    '1, 3, 55-70'
    """
    out: list[str] = []
    run: list[int] = []
    for v in sorted(set(values)):
        if run and v != run[-1] + 1:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
            run = []
        run.append(v)
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(out)


@dataclass(frozen=True)
class AbsentCode:
    """A term (or terms) ``labels.values`` of a label map declares none of whose values any read
    label holds (:func:`declared_values_absent`)."""

    names: tuple[str, ...]  # the term names the YAML gives the values
    values: tuple[int, ...]
    loc: str  # the YAML key declaring them (``labels.values.2``)
    error: CuratorError
    # most of the labels hold a value the YAML does not declare: the declared code is almost surely
    # wrong (``2: prostate`` over files coding it 1), and "annotated, absent" in every case would be
    # false negatives — an error, and harmonize leaves the term out (not annotated)
    wrong_code: bool


def declared_values_absent(spec: DatasetSpec, held: Mapping[int, int], labels: int, *, whose: str,
                           fix_hint: str = "") -> list[AbsentCode]:
    """An :class:`AbsentCode` (a ``declared_label_absent`` error) per name (or names)
    ``labels.values`` of a label map declares none of whose values any of the ``labels`` read label
    files holds (``held``: raw value -> how many of them hold it). The values those labels hold that
    the YAML does not declare are named, and the one most of them hold (the most labels) is offered
    as the likely right code — not one a few hold (a padding value ``-1`` in 1 of 6 files). When
    such a value exists the code is ``wrong_code``: the message says harmonize leaves the term out
    (not annotated) rather than publish it annotated and absent in every case. ``whose`` says which
    labels were read (``"of the sample"``, ``"of the dataset"``). The message names the YAML's file
    and the key's line (``(line 14)``).

    >>> from curator.registry.spec import parse_spec
    >>> spec, _ = parse_spec({"name": "Toy", "version": "1", "modality": "MR", "region": "brain",
    ...                       "licence": "CC-BY-4.0", "citation": "@misc{t, title={t}}",
    ...                       "layout": [{"image": "{case}.nii.gz"}], "labels": {"values": {2: "brain tumor"}}}, "t")
    >>> (a,) = declared_values_absent(spec, {1: 3}, 3, whose="of the sample")
    >>> a.wrong_code, a.error.detail.split(":")[0]
    (True, "labels.values declares value 2 for 'brain tumor', but none of the 3 label(s) of the sample holds it, and they hold undeclared values instead (value 1 is in 3 of 3 labels)")
    """
    lab = spec.labels
    if lab.encoding != "label_map" or labels <= 0:
        return []
    groups: dict[tuple[str, ...], list[int]] = {}
    for v, names in lab.values.items():
        if v != 0 and v not in lab.ignore:
            groups.setdefault(tuple(names), []).append(v)
    declared = lab.declared_values()
    instead = {v: n for v, n in sorted(held.items()) if v not in declared and v != 0 and n}
    # offered as the right code only when most labels hold it: a padding -1 in 1 of 6 files is no pancreas
    common = [v for v, n in instead.items() if 2 * n > labels]
    likely = max(common, key=lambda v: (instead[v], -v)) if common else None
    shown = list(instead.items())[:5]
    held_text = ", ".join(f"value {v} is in {n} of {labels} labels" if i == 0 else f"value {v} in {n} of {labels}"
                          for i, (v, n) in enumerate(shown)) + (f" and {len(instead) - 5} more" if len(instead) > 5 else "")
    out = []
    for names, vals in groups.items():
        if any(held.get(v) for v in vals):
            continue
        what = " and ".join(map(repr, names))
        plural = len(vals) > 1
        loc = spec.value_loc(vals[0])
        said = (f"labels.values declares value{'s' if plural else ''} {value_spans(vals)} for {what}, but none of the "
                f"{labels} label(s) {whose} holds {'any of them' if plural else 'it'}")
        if instead:
            said += f", and they hold undeclared values instead ({held_text})"
        if likely is not None:
            said += (f": the code is almost surely wrong, so harmonize leaves {what} out of every case of the dataset "
                     "(not annotated) rather than publish it annotated and absent, and the voxels under "
                     f"{likely} are left out as unmapped")
        else:
            said += (f": {what} counts as annotated and absent in every case"
                     + (", its voxels (under another value) left out" if instead else ""))
        said += spec.line_note(loc)  # the row's path names the file and key: `Toy.yaml:labels.values.2`
        remedy = (f"if the files code {what} as {likely}, write that value in labels.values instead of "
                  f"{value_spans(vals)}; else " if likely is not None else "") + ("check the value against the "
                  "dataset's documentation, and remove it from labels.values if no file holds it" + fix_hint)
        out.append(AbsentCode(names, tuple(vals), loc, CuratorError("declared_label_absent", said, remedy=remedy),
                              likely is not None))
    return out
