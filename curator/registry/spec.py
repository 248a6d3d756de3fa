"""Dataset specs: ``label_system/datasets/<name>.yaml`` parsed into frozen records.

The format is documented in README.md ("Adding a dataset"). Validation collects *every*
problem of a file (location, kind, message) instead of stopping at the first.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curator.config import FOLDER_NAME, FOLDER_NAME_RULE
from curator.errors import RegistryError
from curator.yamlio import key_lines, load_yaml, plain

MODALITIES = ("CT", "MR", "PET")
LABEL_ENCODINGS = ("label_map", "per_structure", "none")
OTHER_STRUCTURES = ("problem", "ignore")
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
MAX_BAND = 1 << 16
SPLITS = ("train", "val", "test")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Issue:
    """One validation problem: where, what kind, what is wrong."""

    loc: str
    kind: str
    message: str
    dataset: str | None = None  # the dataset the file names (when it can be read)


@dataclass(frozen=True)
class LayoutEntry:
    """One way a dataset's files are laid out (a dataset may have several, e.g. Tr and Ts)."""

    image: str | None
    label: str | None = None
    format: str | None = None  # force a reader: nifti | itk | dicom | npy
    split: str | None = None
    channels: dict[int, str] = field(default_factory=dict)  # 4-D image channel -> sequence name
    sequence: str | None = None  # fixed sequence name for this entry
    modality: str | None = None  # override of the dataset modality for this entry
    index: str | None = None  # a JSON index listing the pairs (MSD's dataset.json)
    # the entry's cases replace those of the same case id other entries find (a folder of corrected
    # cases: BraTS-MEN-Train-Fix over BraTS-MEN-Train), each replaced case an info `case_overridden` row
    overrides: bool = False

    @property
    def image_is_dir(self) -> bool:
        return bool(self.image and self.image.endswith("/"))

    @property
    def label_is_dir(self) -> bool:
        return bool(self.label and self.label.endswith("/"))

    def placeholders(self) -> list[str]:
        seen: list[str] = []
        for pat in (self.image, self.label):
            for m in _PLACEHOLDER.finditer(pat or ""):
                if m.group(1) not in seen:
                    seen.append(m.group(1))
        return seen


@dataclass(frozen=True)
class LabelSpec:
    encoding: str = "label_map"
    values: dict[int, tuple[str, ...]] = field(default_factory=dict)  # raw value -> term name(s)
    structures: dict[str, tuple[str, ...]] = field(default_factory=dict)  # file stem -> term name(s)
    ignore: tuple[int, ...] = ()
    any_nonzero: bool = False  # per_structure: masks may hold any non-zero code (e.g. instance ids)
    other_structures: str = "problem"  # per_structure: undeclared {structure} files -> problem | ignore
    # per_structure: terms several files map to as alternatives (one reader's mask each), so one
    # file annotates the term; every other term of several files needs them all (its parts)
    annotated_by_any_file: tuple[str, ...] = ()

    def declared_values(self) -> set[int]:
        return set(self.values) | set(self.ignore) | {0}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    version: str
    modality: str
    region: str
    licence: str
    citation: str
    layout: tuple[LayoutEntry, ...]
    labels: LabelSpec
    title: str = ""
    homepage: str = ""
    citation_key: str = ""
    sequences: dict[str, str] = field(default_factory=dict)  # name -> modality
    patterns: dict[str, str] = field(default_factory=dict)  # placeholder -> regex
    patient_id: str = "{case}"
    exclude: tuple[str, ...] = ("._*", ".*")
    annotates: tuple[str, ...] = ()
    fixes: dict[str, Any] = field(default_factory=dict)
    overlaps: tuple[dict[str, Any], ...] = ()
    official_split: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    phase: dict[str, Any] = field(default_factory=dict)  # where each case's cardiac phase is (curator.ingest.phase)
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # documented optional keys (licence_notes, codes, ...)
    path: str = ""  # file it came from
    # the line of each key in that file (``labels.values.1`` -> 14), for messages; not the spec's content
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def file_name(self) -> str:
        """What messages about the spec name it by: its file's name (the dataset's name when built in code)."""
        return Path(self.path).name or self.name

    def line_note(self, loc: str) -> str:
        """``" (line 14)"`` for a location in the spec's file (``labels.values.1``, with or without
        the ``<file>:`` prefix), or ``""`` when not known."""
        prefix = f"{self.file_name}:"
        return at_line(self.lines, loc.removeprefix(prefix))

    def value_loc(self, value: int) -> str:
        """The key of ``labels.values`` that declares raw value ``value`` as the file writes it
        (``labels.values.2``, or a band's ``labels.values.20-117``), for messages naming its line;
        ``labels.values`` when no key of the file does."""
        for loc in self.lines:
            key = loc.removeprefix("labels.values.")
            if key != loc and "." not in key:
                try:
                    if value in _codes(key):
                        return loc
                except (TypeError, ValueError):
                    continue
        return f"labels.values.{value}" if value in self.labels.values and not self.lines else "labels.values"

    def annotated_terms(self) -> tuple[str, ...]:
        """Terms the dataset annotates: ``annotates`` when given, else every mapped term."""
        if self.annotates:
            return self.annotates
        names: list[str] = []
        for terms in list(self.labels.values.values()) + list(self.labels.structures.values()):
            for t in terms:
                if t not in names:
                    names.append(t)
        return tuple(names)

    def modality_for(self, entry: LayoutEntry, sequence: str | None) -> str:
        if sequence and sequence in self.sequences:
            return self.sequences[sequence]
        return entry.modality or self.modality

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "title": self.title, "modality": self.modality,
            "region": self.region, "licence": self.licence, "citation_key": self.citation_key,
            "citation": self.citation, "homepage": self.homepage, **self.extra,
            # `overrides` only when set: the spec's digest (stage freshness) stays that of a file without it
            "layout": [{k: v for k, v in e.__dict__.items() if v not in (None, {}, ()) and v is not False}
                       for e in self.layout],
            "labels": {"encoding": self.labels.encoding,
                       "values": {str(k): list(v) for k, v in self.labels.values.items()},
                       "structures": {k: list(v) for k, v in self.labels.structures.items()},
                       "ignore": list(self.labels.ignore), "any_nonzero": self.labels.any_nonzero,
                       "other_structures": self.labels.other_structures,
                       # only when set: the spec's digest (stage freshness) stays that of a file without it
                       **({"annotated_by_any_file": list(self.labels.annotated_by_any_file)}
                          if self.labels.annotated_by_any_file else {})},
            "annotates": list(self.annotated_terms()), "patient_id": self.patient_id,
            "sequences": self.sequences, "fixes": self.fixes, "overlaps": list(self.overlaps),
            "official_split": self.official_split, "metadata": self.metadata, "patterns": self.patterns,
            "exclude": list(self.exclude), "notes": list(self.notes),
            # only when set: the spec's digest (stage freshness) stays that of a file without it
            **({"phase": self.phase} if self.phase else {}),
        }


KNOWN_KEYS = {
    "name", "version", "title", "modality", "region", "licence", "citation", "citation_key", "homepage",
    "layout", "labels", "sequences", "patterns", "patient_id", "exclude", "annotates", "fixes", "overlaps",
    "official_split", "metadata", "notes", "licence_notes", "licence_url", "codes", "scans", "aliases",
    "satds_name", "provenance", "description", "root_hint", "licence_terms", "phase",
}
EXTRA_KEYS = ("licence_notes", "licence_url", "licence_terms", "codes", "scans", "aliases", "satds_name",
              "provenance", "description", "root_hint")
REQUIRED = ("name", "version", "modality", "region", "licence", "citation", "layout", "labels")


yaml_load = load_yaml  # safe, libyaml when available; a key given twice is an error (curator.yamlio)


def read_dataset_yaml(text: str, name: str) -> tuple[Any, dict[str, int]]:
    """A dataset file's content (plain dicts and lists) and the line of each key in it
    (:func:`curator.yamlio.key_lines`). Raises ``yaml.YAMLError`` naming the file ``name``."""
    raw = load_yaml(text, name=name, lines=True)
    return plain(raw), key_lines(raw)


def at_line(lines: dict[str, int], loc: str) -> str:
    """``" (line N)"``: the line of ``loc`` (``layout[0].lable``) in ``lines``, else of the
    nearest key holding it (``labels.values`` for a missing value list: its ``labels:``).

    >>> at_line({"labels": 3, "labels.values.1.0": 5}, "labels.values.1.0"), at_line({"labels": 3}, "labels.values")
    (' (line 5)', ' (line 3)')
    """
    while loc:
        if loc in lines:
            return f" (line {lines[loc]})"
        cut = max(loc.rfind("."), loc.rfind("["))
        loc = loc[:cut] if cut > 0 else ""
    return ""


def unknown_key(key: Any, known: Any, where: str = "") -> str:
    """``"unknown key 'encodng' in labels (did you mean 'encoding'?)"``; without a close match,
    the valid keys.

    >>> unknown_key("lable", ["image", "label", "split"], "a layout entry")
    "unknown key 'lable' in a layout entry (did you mean 'label'?)"
    """
    close = difflib.get_close_matches(str(key), sorted(map(str, known)), n=1)
    return (f"unknown key {key!r}" + (f" in {where}" if where else "")
            + (f" (did you mean {close[0]!r}?)" if close else f" (known: {sorted(known)})"))


def _codes(k: Any) -> list[int]:
    """A raw value key: an integer or an inclusive band ``"55-70"`` (e.g. PNG grey-value ranges)."""
    if isinstance(k, bool):
        raise TypeError(f"{k!r} is not a raw value")
    if isinstance(k, int):
        return [k]
    m = _RANGE.match(str(k))
    if m:
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo > hi:
            raise ValueError(f"band {k!r} is empty (low end above high end)")
        if hi - lo + 1 > MAX_BAND:  # each value of a band is one entry: a band to 2**32 took the machine's memory
            raise ValueError(f"band {k!r} spans {hi - lo + 1:,} values, more than a label map's {MAX_BAND:,} "
                             "(16-bit) codes; list the values the files hold (for masks whose every non-zero "
                             "value is the structure, per_structure labels take `any_nonzero: true`)")
        return list(range(lo, hi + 1))
    try:
        return [int(str(k))]
    except ValueError:
        raise ValueError(f"{k!r} is neither an integer nor a band like '55-70'") from None


def _terms(v: Any, structure: bool = False) -> tuple[str, ...]:
    if isinstance(v, str):
        return (v,)
    if isinstance(v, (list, tuple)) and not v:
        raise TypeError(f"an empty list maps the {'file' if structure else 'value'} to no term: its voxels would be "
                        "dropped as unmapped; name its term(s), or " + (
                            "leave it out of `structures` and set `other_structures: ignore`" if structure else
                            "list the value under `ignore`") + " if it is not a label")
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise TypeError(f"expected a term name or a list of names, got {v!r}")


def holds_structures(pattern: str) -> bool:
    """Whether a label pattern (or a file's path) may name single DICOM files, which can hold their
    structures (SEG segments, RTSTRUCT ROIs): a ``.dcm`` file or a name without a suffix."""
    last = pattern.rstrip("/").rsplit("/", 1)[-1].lower()
    return not pattern.endswith("/") and (last.endswith(".dcm") or "." not in last.replace("{", "").replace("}", ""))


_LIST_KEYS = ("layout", "overlaps")
_NAME_LIST_KEYS = ("notes", "annotates", "exclude")  # a single string is a list of one
_MAP_KEYS = ("patterns", "official_split", "metadata", "fixes", "phase")


def _typed(d: dict[str, Any], bad: Any) -> dict[str, Any]:
    """``d`` with every top-level value of the wrong type reported (kind ``type``) and dropped, so
    that ``layout: 3`` or ``patterns: [..]`` is an issue naming the key, not a TypeError."""
    d = dict(d)
    for k in (*_LIST_KEYS, *_NAME_LIST_KEYS, *_MAP_KEYS):
        v = d.get(k)
        if v is None:
            continue
        if k in _NAME_LIST_KEYS and isinstance(v, str):
            d[k] = [v]
        elif k in _MAP_KEYS and not isinstance(v, dict):
            bad(k, "type", f"{k} must be a mapping, not {v!r}"[:200])
            d[k] = None
        elif k not in _MAP_KEYS and not isinstance(v, list):
            bad(k, "type", f"{k} must be a list, not {v!r}"[:200])
            d[k] = None
        elif k in _NAME_LIST_KEYS and not all(isinstance(x, str) for x in v):
            bad(k, "type", f"{k} must list strings")
            d[k] = None
    return d


LICENCE_TERM_KEYS = ("commercial_use", "derivatives", "redistribution", "share_alike", "confidence")


def _licence_terms(lt: Any, bad: Any) -> Any:
    """``licence_terms`` with its YAML 1.1 booleans read as the words written (``commercial_use: no``
    unquoted loads as False: ``no``; ``yes`` as True: ``yes``), every key or value that is no term
    reported (kind ``unknown_key``, ``value``) — never passed on to be read as a grant."""
    from curator.release.licences import TERM_VALUES, term_value

    if lt is None:
        return None
    if not isinstance(lt, dict):
        bad("licence_terms", "type", f"licence_terms must be a mapping ({{commercial_use: ..., derivatives: ...}}), "
            f"not {lt!r}"[:200])
        return None
    out: dict[str, Any] = {}
    for k, v in lt.items():
        if k not in LICENCE_TERM_KEYS:
            bad(f"licence_terms.{k}", "unknown_key", unknown_key(k, LICENCE_TERM_KEYS, "licence_terms"))
        elif k == "share_alike":
            if not isinstance(v, str) or not v.strip():
                bad(f"licence_terms.{k}", "value", f"share_alike names the licence id that imposes share-alike "
                    f"(e.g. CC-BY-SA-4.0), not {v!r}")
            out[k] = v
        elif term_value(k, v) is None:
            bad(f"licence_terms.{k}", "value", f"{k} must be one of {', '.join(TERM_VALUES[k])}, not {v!r}"
                + (" (YAML reads unquoted yes/no/on/off as true/false: write the word)" if isinstance(v, bool)
                   else ""))
            out[k] = v
        else:
            out[k] = term_value(k, v)
    return out


LAYOUT_KEYS = ("image", "label", "format", "split", "channels", "sequence", "modality", "index", "overrides")
LABEL_KEYS = ("encoding", "values", "structures", "ignore", "any_nonzero", "other_structures", "annotated_by_any_file")


def parse_spec(d: dict[str, Any], path: str = "", lines: dict[str, int] | None = None,
               ) -> tuple[DatasetSpec | None, list[Issue]]:
    """Parse one dataset mapping; returns the spec (None when unusable) and every issue found.
    ``lines``: the line of each key in the file (:func:`read_dataset_yaml`), said in the issues."""
    issues: list[Issue] = []
    where = Path(path).name or (d.get("name", "?") if isinstance(d, dict) else "?")
    lines = lines or {}

    def bad(loc: str, kind: str, msg: str) -> None:
        issues.append(Issue(f"{where}:{loc}", kind, msg + at_line(lines, loc)))

    if not isinstance(d, dict):
        return None, [Issue(where, "type", "a dataset file must hold a mapping")]
    d = _typed(d, bad)
    for k in REQUIRED:
        if d.get(k) in (None, "", [], {}) and not any(i.loc == f"{where}:{k}" for i in issues):
            bad(k, "missing", f"required key {k!r} is missing or empty")
    for k in sorted(set(d) - KNOWN_KEYS):
        bad(k, "unknown_key", unknown_key(k, KNOWN_KEYS))
    name = d.get("name")
    bad_name = name not in (None, "") and not (isinstance(name, str) and FOLDER_NAME.match(name) and "__" not in name)
    if bad_name:  # it names workspace files (checksums/<name>.json) and starts every case id: no '/', no '..',
        # no '__' (a case id is <source>__<case>: gc and status read the source back from it)
        bad("name", "value", f"name {name!r} cannot name a dataset: use {FOLDER_NAME_RULE}, without '__'")
    modality = str(d.get("modality", ""))
    if modality and modality not in MODALITIES:
        bad("modality", "value", f"modality {modality!r} must be one of {MODALITIES}")
    seqs = d.get("sequences") or {}
    sequences: dict[str, str] = {}
    if isinstance(seqs, dict):
        for s, v in seqs.items():
            m = v.get("modality", modality) if isinstance(v, dict) else (v or modality)
            if m not in MODALITIES:
                bad(f"sequences.{s}", "value", f"modality {m!r} must be one of {MODALITIES}")
            sequences[str(s)] = str(m)
    else:
        bad("sequences", "type", "sequences must map a sequence name to its modality")
    layout: list[LayoutEntry] = []
    for i, e in enumerate(d.get("layout") or []):
        if not isinstance(e, dict):
            bad(f"layout[{i}]", "type", "a layout entry must be a mapping")
            continue
        wrong = [k for k in ("image", "label", "format", "split", "sequence", "modality", "index")
                 if e.get(k) is not None and not isinstance(e[k], str)]
        if e.get("channels") is not None and not isinstance(e["channels"], dict):
            wrong.append("channels")
        if e.get("overrides") is not None and not isinstance(e["overrides"], bool):
            wrong.append("overrides")
        if wrong:
            for k in wrong:
                bad(f"layout[{i}].{k}", "type", "channels map an integer channel to a sequence name" if k == "channels"
                    else f"overrides is true or false, not {e[k]!r}" if k == "overrides"
                    else f"{k} must be a string (a pattern or a name), not {e[k]!r}")
            continue
        for k in sorted(set(e) - set(LAYOUT_KEYS), key=str):
            bad(f"layout[{i}].{k}", "unknown_key", unknown_key(k, LAYOUT_KEYS, "a layout entry"))
        for key in ("image", "label"):
            pat = e.get(key)
            if pat is not None and (str(pat).startswith("/") or ".." in str(pat).split("/")):
                bad(f"layout[{i}].{key}", "path_escape", f"pattern {pat!r} must stay inside the source root")
        if not e.get("image") and not e.get("label") and not e.get("index"):
            bad(f"layout[{i}]", "missing", "an entry needs an image pattern, a label pattern or an index")
        if e.get("index") is not None and (str(e["index"]).startswith("/") or ".." in str(e["index"]).split("/")):
            bad(f"layout[{i}].index", "path_escape", "the index file must stay inside the source root")
        if e.get("split") not in (None, *SPLITS):
            bad(f"layout[{i}].split", "value", f"split must be one of {SPLITS}")
        try:
            channels = {int(k): str(v) for k, v in (e.get("channels") or {}).items()}
        except (TypeError, ValueError):
            bad(f"layout[{i}].channels", "type", "channels map an integer channel to a sequence name")
            channels = {}
        entry = LayoutEntry(image=e.get("image"), label=e.get("label"), format=e.get("format"),
                            split=e.get("split"), channels=channels, sequence=e.get("sequence"),
                            modality=e.get("modality"), index=e.get("index"), overrides=bool(e.get("overrides")))
        ph = entry.placeholders()
        if "case" not in ph and not entry.index:
            bad(f"layout[{i}]", "missing", "patterns must contain the {case} placeholder")
        if entry.label and "structure" in _PLACEHOLDER.findall(entry.image or ""):
            bad(f"layout[{i}]", "value", "{structure} belongs in the label pattern only")
        if entry.image and entry.label and not entry.index:
            have = set(_PLACEHOLDER.findall(entry.image))
            if "case" not in have:  # ({cas}) nothing ties a label to its image: every image took one label
                hint = difflib.get_close_matches("case", sorted(have), n=1)
                bad(f"layout[{i}].image", "missing", f"the image pattern {entry.image!r} has no {{case}} placeholder, "
                    "so nothing ties each label to its image"
                    + (f" (did you mean {{case}} for {{{hint[0]}}}?)" if hint else ""))
        layout.append(entry)
    lab = d.get("labels") or {}
    labels = LabelSpec()
    if isinstance(lab, dict):
        enc = lab.get("encoding", "label_map")
        if enc not in LABEL_ENCODINGS:
            bad("labels.encoding", "value", f"encoding must be one of {LABEL_ENCODINGS}")
        for k, want in (("values", dict), ("structures", dict), ("ignore", list)):
            if lab.get(k) is not None and not isinstance(lab[k], want):
                if want is list and isinstance(lab[k], (int, str)) and not isinstance(lab[k], bool):
                    lab = {**lab, k: [lab[k]]}  # `ignore: 255`
                    continue
                bad(f"labels.{k}", "type", f"labels.{k} must be a {'mapping' if want is dict else 'list'}, "
                    f"not {lab[k]!r}")
                lab = {**lab, k: None}
        values: dict[int, tuple[str, ...]] = {}
        for k, v in (lab.get("values") or {}).items():
            try:
                for code in _codes(k):
                    if code in values:
                        bad(f"labels.values.{k}", "duplicate", f"raw value {code} is mapped twice")
                    values[code] = _terms(v)
            except (TypeError, ValueError) as ex:
                bad(f"labels.values.{k}", "value", str(ex))
        structures: dict[str, tuple[str, ...]] = {}
        for k, v in (lab.get("structures") or {}).items():
            try:
                structures[str(k)] = _terms(v, structure=True)
            except TypeError as ex:
                bad(f"labels.structures.{k}", "value", str(ex))
        if enc == "label_map" and not lab.get("values"):  # (values it could not read are said above)
            bad("labels.values", "missing", "a label_map needs `values` (raw value -> term)")
        if enc == "per_structure" and not structures:
            bad("labels.structures", "missing", "per_structure labels need `structures` (file stem -> term)")
        if 0 in values:
            bad("labels.values.0", "value", "0 is background and must not be mapped")
        if enc in ("label_map", "none") and lab.get("structures"):  # (under `none` too: it would do nothing)
            bad("labels.structures", "value", "structures (file stem -> term) are for `encoding: per_structure`; "
                + ("a label_map names its raw values under `values`" if enc == "label_map" else
                   f"`encoding: {enc}` reads no label"))
        for k, what, default in (("other_structures", "what to do with {structure} files `structures` does not map",
                                  "problem"), ("any_nonzero", "masks whose voxels hold other codes than 1", False)):
            # accepted, and it did nothing (its default, which to_dict writes for every encoding, is no setting)
            if lab.get(k, default) != default and enc != "per_structure":
                bad(f"labels.{k}", "value", f"{k} ({what}) is for `encoding: per_structure`, not {enc}"
                    + ("; a label_map leaves raw values out with `ignore: [...]` (bands such as \"20-117\" too), "
                       "so they are no label_unmapped problem" if enc == "label_map" else ""))
        if enc == "per_structure":
            for i, e in enumerate(layout):
                if e.label and "structure" not in _PLACEHOLDER.findall(e.label) and not holds_structures(e.label):
                    bad(f"layout[{i}].label", "missing", f"per_structure labels need a {{structure}} placeholder in "
                        f"the label pattern ({e.label!r}): the file stem names the structure (a DICOM SEG or "
                        "RTSTRUCT, whose structures are inside the file, is matched by a .dcm or suffix-less pattern)")
        other = str(lab.get("other_structures", "problem"))
        if other not in OTHER_STRUCTURES:
            bad("labels.other_structures", "value", f"other_structures must be one of {OTHER_STRUCTURES}")
        any_file = lab.get("annotated_by_any_file") or []
        if isinstance(any_file, str):
            any_file = [any_file]
        if not isinstance(any_file, list) or not all(isinstance(x, str) for x in any_file):
            bad("labels.annotated_by_any_file", "value", "annotated_by_any_file lists term names (a term several "
                f"structure files map to as alternatives), not {any_file!r}"[:200])
            any_file = []
        elif any_file and enc != "per_structure":
            bad("labels.annotated_by_any_file", "value", "annotated_by_any_file (terms one of several structure "
                f"files annotates) is for `encoding: per_structure`, not {enc}")
        for k in sorted(set(lab) - set(LABEL_KEYS), key=str):
            bad(f"labels.{k}", "unknown_key", unknown_key(k, LABEL_KEYS, "labels"))
        ignore: list[int] = []
        for x in lab.get("ignore") or ():
            try:
                ignore += _codes(x)
            except (TypeError, ValueError) as ex:
                bad("labels.ignore", "value", str(ex))
        both = sorted(set(ignore) & set(values))
        if both:
            bad("labels.ignore", "value", f"raw value(s) {both} are both mapped under `values` and ignored: "
                "keep one")
        labels = LabelSpec(encoding=enc, values=values, structures=structures, ignore=tuple(ignore),
                           any_nonzero=bool(lab.get("any_nonzero", False)), other_structures=other,
                           annotated_by_any_file=tuple(any_file))
    else:
        bad("labels", "type", "labels must be a mapping")
    patterns = {str(k): str(v) for k, v in (d.get("patterns") or {}).items()}
    used = {p for e in layout for p in e.placeholders()}
    for k, rx in patterns.items():
        try:
            re.compile(rx)
        except re.error as ex:
            bad(f"patterns.{k}", "regex", f"invalid regular expression: {ex}")
        if k not in used:  # a typo ({cse: ...}) left {case} unconstrained: every file matched
            hint = difflib.get_close_matches(k, sorted(used), n=1)
            bad(f"patterns.{k}", "unknown_key", f"no layout pattern has a {{{k}}} placeholder"
                + (f" (did you mean {hint[0]!r}?)" if hint else f"; the placeholders are {sorted(used)}"))
    fields = used | {"case"} | {g for rx in patterns.values() for g in re.findall(r"\(\?P<(\w+)>", rx)}
    unknown_ph = sorted(set(_PLACEHOLDER.findall(str(d.get("patient_id", "{case}")))) - fields)
    if unknown_ph and layout:  # it fell back to the case name: one patient per case, without a word
        bad("patient_id", "value", f"patient_id {d.get('patient_id')!r} names {unknown_ph}, which neither a layout "
            f"pattern nor a named group of `patterns` gives (they give {sorted(fields)})")
    for g in d.get("exclude") or ():
        if g.startswith("/") or ".." in g.split("/"):  # a path is relative to the source root: it never matched
            bad("exclude", "path_escape", f"exclude entry {g!r} must be a name glob (`case_19`) or a path relative to "
                "the source root (`BraTS-MEN-Train/BraTS-MEN-00004-000`), inside it")
    meta = d.get("metadata")
    if meta is not None:
        keep = meta.get("keep") if isinstance(meta, dict) else None
        if not isinstance(meta, dict) or not meta.get("file"):
            bad("metadata", "value", "metadata needs `file:` (the dataset's per-case metadata file)")
        elif keep is not None and not (isinstance(keep, list) and all(isinstance(k, str) for k in keep)):
            bad("metadata.keep", "type", "keep lists the metadata fields to publish by name")
        elif keep:
            from curator.ingest.metadata import identifying

            named = [k for k in keep if identifying(k)]
            if named:
                bad("metadata.keep", "value", f"{named} name a person or a date, which a release never publishes")
    if d.get("phase") is not None:
        from curator.ingest.phase import validate_phase

        for loc, kind, msg in validate_phase(d["phase"], fields):
            bad(loc, kind, msg)
    from curator.registry.fixes import validate_fixes

    for loc, kind, msg in validate_fixes(d.get("fixes") or {}):
        bad(loc, kind, msg)
    extra = {k: d[k] for k in EXTRA_KEYS if k in d}
    if "licence_terms" in extra:
        extra["licence_terms"] = _licence_terms(extra["licence_terms"], bad)
    if bad_name or issues and any(i.kind in ("missing", "type", "path_escape") for i in issues):
        return None, issues
    spec = DatasetSpec(
        name=str(d["name"]), version=str(d["version"]), modality=modality, region=str(d["region"]),
        licence=str(d["licence"]), citation=str(d["citation"]).strip(), layout=tuple(layout), labels=labels,
        title=str(d.get("title", "")), homepage=str(d.get("homepage", "")),
        citation_key=str(d.get("citation_key", "")), sequences=sequences, patterns=patterns,
        patient_id=str(d.get("patient_id", "{case}")),
        exclude=tuple(d.get("exclude") or ("._*", ".*")), annotates=tuple(d.get("annotates") or ()),
        fixes=dict(d.get("fixes") or {}), overlaps=tuple(d.get("overlaps") or ()),
        official_split=dict(d.get("official_split") or {}), metadata=dict(d.get("metadata") or {}),
        phase=dict(d.get("phase") or {}),
        notes=tuple(d.get("notes") or ()), extra=extra, path=path, lines=dict(lines),
    )
    return spec, issues


def load_dataset_file(path: Path, shown: str | None = None) -> DatasetSpec:
    """Load one dataset YAML; raise :class:`RegistryError` listing every problem. Messages name
    the file as ``shown`` (default: ``path`` as given; a run names it by its file name, as its
    problem rows are published in the release)."""
    shown = str(path) if shown is None else shown
    try:
        d, lines = read_dataset_yaml(Path(path).read_text(encoding="utf-8"), Path(path).name)
    except FileNotFoundError as e:
        raise RegistryError("registry_error", f"dataset file {shown} does not exist") from e
    except OSError as e:  # a folder named like a YAML file, no permission to read it
        raise RegistryError("registry_error", f"dataset file {shown} cannot be read: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise RegistryError("registry_error", f"{shown} is not valid YAML: {e}") from e
    spec, issues = parse_spec(d, str(path), lines)
    if spec is None or issues:
        listing = "; ".join(f"{i.loc} [{i.kind}] {i.message}" for i in issues)
        raise RegistryError("registry_error", f"{shown} is not a valid dataset file: {listing}",
                            remedy="fix the listed keys (format: README.md, 'Adding a dataset')")
    return spec
