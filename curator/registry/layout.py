"""The generic layout engine: a dataset's ``layout`` patterns → the cases under a source root.

Pattern syntax (relative to the source root, ``/`` separated):

* ``{name}`` — a placeholder matching one path-segment part (``[^/]+?``, or the regex given
  in the dataset's ``patterns:``; named groups in that regex become fields too). A
  placeholder used twice must match the same text both times.
* ``*`` — any characters within one segment; ``**/`` — any number of folders.
* a trailing ``/`` on ``image`` — the match is a folder (a DICOM series, read recursively).

Special placeholders: ``{case}`` (required: the dataset's case id), ``{sequence}`` (one case
per sequence; a label pattern without it is shared by the sequences), ``{structure}`` (label
pattern only: one mask file per structure). Every other placeholder is part of the case
identity (e.g. ``{site}``).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.errors import InputError
from curator.io.fsutil import resolve_inside
from curator.registry.spec import DatasetSpec, LayoutEntry

_TOKEN = re.compile(r"\{(\w+)\}|\*\*/|\*\*|\*|\?")
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def compile_pattern(pattern: str, custom: dict[str, str]) -> re.Pattern[str]:
    out, pos, seen = [], 0, set()
    for m in _TOKEN.finditer(pattern):
        out.append(re.escape(pattern[pos:m.start()]))
        tok = m.group(0)
        if m.group(1):
            name = m.group(1)
            if name in seen:
                out.append(f"(?P={name})")
            else:
                seen.add(name)
                out.append(f"(?P<{name}>{custom.get(name, '[^/]+?')})")
        elif tok == "**/":
            out.append("(?:[^/]+/)*")
        elif tok == "**":
            out.append(".*")
        elif tok == "*":
            out.append("[^/]*")
        else:
            out.append("[^/]")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    return re.compile("".join(out))


@dataclass
class Tree:
    """Everything under a source root: relative file and folder paths, plus link problems."""

    files: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    problems: list[InputError] = field(default_factory=list)


def scan(root: Path, exclude: tuple[str, ...] = ()) -> Tree:
    """Walk ``root`` without following links out of it; broken, looping or escaping links are problems."""
    tree = Tree()
    if not root.is_dir():
        tree.problems.append(InputError("file_not_found", "the source root is not a folder", path=str(root),
                                        remedy="set the source's `root:` in pipeline.yaml to the download"))
        return tree
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        keep_dirs = []
        for d in sorted(dirnames):
            if any(fnmatch.fnmatch(d, g) for g in exclude):
                continue
            p = Path(dirpath) / d
            if p.is_symlink():
                try:
                    resolve_inside(root, p)
                except InputError as e:
                    tree.problems.append(e)
                    continue
                tree.dirs.append(rel_dir + d)
                continue  # linked folders are listed, not walked (no loops)
            keep_dirs.append(d)
            tree.dirs.append(rel_dir + d)
        dirnames[:] = keep_dirs
        for f in sorted(filenames):
            if any(fnmatch.fnmatch(f, g) for g in exclude):
                continue
            p = Path(dirpath) / f
            if p.is_symlink():
                try:
                    resolve_inside(root, p)
                except InputError as e:
                    tree.problems.append(e)
                    continue
            tree.files.append(rel_dir + f)
    return tree


@dataclass
class CaseFiles:
    """One case found by the layout engine (paths relative to the source root)."""

    case_id: str
    source_case: str
    fields: dict[str, str]
    entry: int
    image: str | None
    image_is_dir: bool
    channel: int | None
    sequence: str | None
    labels: list[tuple[str, str]]  # (structure key or '', relative path)
    split: str | None
    modality: str
    patient_raw: str
    format: str | None

    @property
    def label_only(self) -> bool:
        return self.image is None


def make_case_id(dataset: str, parts: list[str]) -> str:
    body = "__".join(_SAFE_ID.sub("-", p).strip("-") or "x" for p in parts)
    return f"{_SAFE_ID.sub('-', dataset)}__{body}"


def _patient(spec: DatasetSpec, fields: dict[str, str]) -> str:
    try:
        return spec.patient_id.format(**fields)
    except (KeyError, IndexError):
        return fields.get("case", "")


def discover(spec: DatasetSpec, root: Path, tree: Tree | None = None) -> tuple[list[CaseFiles], list[InputError]]:
    """Apply every layout entry of ``spec`` to the files under ``root``."""
    tree = tree or scan(root, spec.exclude)
    problems = list(tree.problems)
    cases: dict[str, CaseFiles] = {}
    for i, entry in enumerate(spec.layout):
        try:
            found = _index_cases(spec, i, entry, root) if entry.index else _entry_cases(spec, i, entry, tree)
        except InputError as e:
            problems.append(e)
            continue
        for c in found:
            if c.case_id in cases:
                prev = cases[c.case_id]
                problems.append(InputError(
                    "duplicate_case", f"{c.image or c.labels[0][1]} and {prev.image or prev.labels[0][1]} "
                    f"both map to case {c.case_id}", path=str(root / (c.image or c.labels[0][1])),
                    remedy="make the layout pattern specific enough to give each file its own case"))
                continue
            cases[c.case_id] = c
    if spec.official_split.get("file"):
        from curator.registry.splits import apply_split_file

        try:
            apply_split_file(spec, root, list(cases.values()))
        except InputError as e:
            problems.append(e)
    if not cases and not problems:
        problems.append(InputError("layout_no_match", f"no file under the root matches the layout of {spec.name}",
                                   path=str(root), remedy="check the source root and the dataset's layout patterns"))
    return sorted(cases.values(), key=lambda c: c.case_id), problems


def _index_cases(spec: DatasetSpec, idx: int, entry: LayoutEntry, root: Path) -> list[CaseFiles]:
    """Cases listed by an MSD-style ``dataset.json`` (``training`` pairs, ``test`` images).

    A 4-D task (``modality`` with several channels) gives one case per channel.
    """
    import json

    from curator.io.fsutil import confine

    path = confine(root, entry.index or "dataset.json")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputError("file_not_found", "the layout's index file is missing", path=str(path),
                         remedy="check the source root: it should be the folder holding dataset.json") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError("corrupt_file", f"the index file is not valid JSON ({e})", path=str(path),
                         remedy="download the dataset again") from e
    channels = entry.channels or {int(k): str(v) for k, v in (d.get("modality") or {}).items()}
    if len(channels) <= 1:
        channels = {}
    items: list[tuple[str, str | None, str]] = []
    for t in d.get("training") or []:
        items.append((t["image"], t.get("label"), "train"))
    for t in d.get("test") or []:
        items.append((t if isinstance(t, str) else t["image"], None, "test"))
    out = []
    for image, label, split in items:
        img = image.removeprefix("./")
        lab = label.removeprefix("./") if label else None
        case = Path(img).name.removesuffix(".gz").removesuffix(".nii")
        for ch, seq in (sorted(channels.items()) if channels else [(None, entry.sequence)]):
            parts = [case] + ([str(seq)] if ch is not None else [])
            fields = {"case": case, **({"sequence": str(seq)} if seq else {})}
            out.append(CaseFiles(
                case_id=make_case_id(spec.name, parts), source_case=case, fields=fields, entry=idx, image=img,
                image_is_dir=False, channel=ch, sequence=seq, labels=[("", lab)] if lab else [],
                split=entry.split or split, modality=spec.modality_for(entry, seq),
                patient_raw=_patient(spec, fields), format=entry.format))
    return out


def label_patterns(spec: DatasetSpec) -> dict[str, str]:
    """Placeholder regexes for label patterns: with ``other_structures: ignore`` the
    ``{structure}`` placeholder only matches the declared structure files."""
    custom = dict(spec.patterns)
    lab = spec.labels
    if (lab.encoding == "per_structure" and lab.other_structures == "ignore" and lab.structures
            and "structure" not in custom):
        custom["structure"] = "|".join(re.escape(k) for k in sorted(lab.structures, key=lambda k: (-len(k), k)))
    return custom


def _entry_cases(spec: DatasetSpec, idx: int, entry: LayoutEntry, tree: Tree) -> list[CaseFiles]:
    img_rx = compile_pattern(entry.image.rstrip("/"), spec.patterns) if entry.image else None
    lab_rx = compile_pattern(entry.label.rstrip("/"), label_patterns(spec)) if entry.label else None
    img_names = [p for p in entry.placeholders() if entry.image and "{" + p + "}" in entry.image]
    identity = [p for p in img_names if p != "structure"] or ["case"]
    lab_names = [m for m in re.findall(r"\{(\w+)\}", entry.label or "")]
    shared = [p for p in identity if p in lab_names]  # placeholders tying a label to images

    labels_by_key: dict[tuple[str, ...], list[tuple[str, str, dict[str, str]]]] = {}
    if lab_rx:
        for f in (tree.dirs if entry.label_is_dir else tree.files):  # a trailing '/': a folder of slices
            m = lab_rx.fullmatch(f)
            if m:
                g = m.groupdict()
                labels_by_key.setdefault(tuple(g.get(p, "") for p in shared), []).append(
                    (g.get("structure", ""), f, g))

    out: list[CaseFiles] = []
    used: set[tuple[str, ...]] = set()
    if img_rx:
        candidates = tree.dirs if entry.image_is_dir else tree.files
        matches: dict[tuple[str, ...], tuple[str, dict[str, str]]] = {}
        for f in candidates:
            m = img_rx.fullmatch(f)
            if not m:
                continue
            g = m.groupdict()
            key = tuple(g.get(p, "") for p in identity)
            if key not in matches or f.count("/") < matches[key][0].count("/"):
                matches[key] = (f, g)  # folders: keep the shallowest match
        for key, (f, g) in sorted(matches.items()):
            lkey = tuple(g.get(p, "") for p in shared)
            labs = sorted((s, p) for s, p, _ in labels_by_key.get(lkey, [])) if lab_rx else []
            if labs:
                used.add(lkey)
            seqs: list[tuple[int | None, str | None]] = (
                sorted(entry.channels.items()) if entry.channels else [(None, g.get("sequence") or entry.sequence)])
            for ch, seq in seqs:
                fields = dict(g)
                parts = [g.get(p, "") for p in identity]
                if ch is not None or (seq and "sequence" not in identity):
                    parts.append(str(seq))  # one case per channel / per fixed-sequence entry
                    fields["sequence"] = str(seq)
                out.append(CaseFiles(
                    case_id=make_case_id(spec.name, parts), source_case=g.get("case", parts[0]), fields=fields,
                    entry=idx, image=f, image_is_dir=entry.image_is_dir, channel=ch, sequence=seq,
                    labels=labs, split=_split(entry, g), modality=spec.modality_for(entry, seq),
                    patient_raw=_patient(spec, fields), format=entry.format))
    if lab_rx:
        for lkey, items in sorted(labels_by_key.items()):
            if lkey in used or not items:
                continue
            g = items[0][2]
            if img_rx and not all(p in g for p in ("case",)):
                continue
            parts = [g.get(p, "") for p in identity if p in g] or [g.get("case", "")]
            out.append(CaseFiles(
                case_id=make_case_id(spec.name, parts), source_case=g.get("case", parts[0]), fields=dict(g),
                entry=idx, image=None, image_is_dir=False, channel=None, sequence=None,
                labels=sorted((s, p) for s, p, _ in items), split=_split(entry, g),
                modality=spec.modality_for(entry, None), patient_raw=_patient(spec, dict(g)), format=None))
    return out


def _split(entry: LayoutEntry, fields: dict[str, str]) -> str | None:
    """The entry's ``split``, else the value of a ``{split}`` placeholder (training -> train, ...)."""
    if entry.split or "split" not in fields:
        return entry.split
    from curator.registry.splits import SPLIT_NAMES

    return SPLIT_NAMES.get(fields["split"].lower())


def case_summary(c: CaseFiles) -> dict[str, Any]:
    return {"case_id": c.case_id, "image": c.image, "labels": c.labels, "sequence": c.sequence}
