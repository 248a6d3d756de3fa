"""The generic layout engine: a dataset's ``layout`` patterns → the cases under a source root.

Pattern syntax (relative to the source root, ``/`` separated):

* ``{name}`` — a placeholder matching one path-segment part (``[^/]+?``, or the regex given
  in the dataset's ``patterns:``; named groups in that regex become fields too). A
  placeholder used twice must match the same text both times.
* ``*`` — any characters within one segment; ``**/`` — any number of folders.
* a trailing ``/`` on ``image`` — the match is a folder (a DICOM series, read recursively).

Special placeholders: ``{case}`` (required: the dataset's case id), ``{sequence}`` (one case
per sequence; a label pattern without it is shared by the sequences; with ``sequences:``
declared and no ``patterns: {sequence: ...}`` it matches only the declared names), ``{structure}`` (label
pattern only: one mask file per structure). Every other placeholder is part of the case
identity (e.g. ``{site}``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from curator.errors import CuratorError, InputError
from curator.io.confined import regular_inside, resolve_inside
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


class SpecKeyError(InputError):
    """A discovery problem about a key of the dataset YAML rather than a file under the root (a
    label pattern that matches no file, a declared structure no case has): its path is
    ``<file>.yaml:<key>`` (``HaNSegC.yaml:labels.structures.Glnd_Submand_l``), which a problems row
    shows as it is, and its message ends with the key's line, as ``labels check`` names them."""


def spec_key_error(spec: DatasetSpec, kind: str, loc: str, message: str, remedy: str) -> SpecKeyError:
    """A :class:`SpecKeyError` about key ``loc`` (``layout[0].label``) of ``spec``'s file."""
    return SpecKeyError(kind, message + spec.line_note(loc), path=f"{spec.file_name}:{loc}", remedy=remedy)


@dataclass
class Tree:
    """Everything under a source root: relative file and folder paths, plus link problems."""

    files: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    problems: list[InputError] = field(default_factory=list)
    # file links that loop, dangle or lead out of the root, by relative path: listed in ``files``
    # (a pattern matches them, so a case whose image is one fails on it instead of passing for a
    # label-only case), never read; :func:`discover` reports those no case takes
    broken: dict[str, InputError] = field(default_factory=dict)
    # the root is not a folder (an unmounted share): that one problem, not one per file the layout needs
    root_missing: bool = False
    # the ``exclude`` globs holding a ``/`` (paths from the root) and whether each left out a file or folder
    excluded_paths: dict[str, bool] = field(default_factory=dict)


def scan(root: Path, exclude: tuple[str, ...] = ()) -> Tree:
    """Walk ``root``, following links that stay inside it (a linked case folder is walked like a
    real one; a link to a folder above it is not followed: no loops); broken, looping or
    escaping links are problems (file links: :attr:`Tree.broken`). ``exclude`` globs without a
    ``/`` leave out each file or folder whose name they match; those with one, each whose path
    from the root they match (``BraTS-MEN-Train/BraTS-MEN-00004-000``, a trailing ``/`` ignored)."""
    names = tuple(g for g in exclude if "/" not in g.rstrip("/"))
    paths = {g: g.rstrip("/") for g in exclude if "/" in g.rstrip("/")}
    tree = Tree(excluded_paths=dict.fromkeys(paths, False))

    def left_out(rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        if any(fnmatch.fnmatch(name, g) for g in names):
            return True
        hit = [g for g, pat in paths.items() if fnmatch.fnmatch(rel, pat)]
        tree.excluded_paths.update(dict.fromkeys(hit, True))
        return bool(hit)
    if not root.is_dir():
        tree.problems.append(InputError("file_not_found", "the source root is not a folder", path=str(root),
                                        remedy="set the source's `root:` in pipeline.yaml to the download"))
        tree.root_missing = True
        return tree
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        keep_dirs = []
        for d in sorted(dirnames):
            if left_out(rel_dir + d):
                continue
            p = Path(dirpath) / d
            tree.dirs.append(rel_dir + d)
            if p.is_symlink():
                try:
                    resolve_inside(root, p)
                except InputError as e:
                    tree.problems.append(e)
                    tree.dirs.pop()
                    continue
                if os.path.realpath(p) in _walk_chain(root, dirpath):
                    continue  # a link back to a folder on its own path: listed, not walked (it would loop)
            keep_dirs.append(d)
        dirnames[:] = keep_dirs
        for f in sorted(filenames):
            if left_out(rel_dir + f):
                continue
            p = Path(dirpath) / f
            if p.is_symlink():
                try:
                    resolve_inside(root, p)
                except InputError as e:
                    tree.broken[rel_dir + f] = e
            tree.files.append(rel_dir + f)
    return tree


def _walk_chain(root: Path, dirpath: str) -> set[str]:
    """The real paths of every folder from ``root`` down to ``dirpath`` along the walk."""
    out = {os.path.realpath(root)}
    cur = str(root)
    for part in Path(os.path.relpath(dirpath, root)).parts:
        if part != ".":
            cur = os.path.join(cur, part)
            out.add(os.path.realpath(cur))
    return out


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
    channels: int | None = None  # channels the layout declares for the file (when ``channel`` picks one)
    label_expected: str | None = None  # the entry's label pattern, when it found no label for this image

    @property
    def label_only(self) -> bool:
        return self.image is None


def _id_part(text: str) -> str:
    """A case-id part: the name itself when it is safe (letters, digits, ``._-``); otherwise
    unsafe characters become ``-``, non-ASCII letters are transliterated (``Müller`` →
    ``Muller``) and a short hash of the original is added, so names that differ only in what
    was replaced (``Müller``/``Mäller``, ``患者1``/``症例1``, ``p 03``/``p-03``) stay two cases."""
    safe = _SAFE_ID.sub("-", text).strip("-")
    if safe == text and safe:
        return safe
    ascii_ = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    tag = hashlib.sha1(text.encode("utf-8")).hexdigest()[:6]
    base = _SAFE_ID.sub("-", ascii_).strip("-")
    return f"{base}-{tag}" if base else tag


# a case id names files — stores/<id>.zarr, a result's temporary .<id>.json.tmp-<pid>-<n>, an export's
# <id>_0000.nii.gz — so it stays well under the 255 bytes a file name may have
MAX_CASE_ID = 150
_CASE_ID = re.compile(r"[A-Za-z0-9._-]+")


def make_case_id(dataset: str, parts: list[str]) -> str:
    head, body = f"{_SAFE_ID.sub('-', dataset)}__", "__".join(_id_part(p) for p in parts)
    if len(head) + len(body) > MAX_CASE_ID:  # a file named past the limit failed every write of its case
        body = f"{body[:MAX_CASE_ID - len(head) - 13]}-{hashlib.sha1(body.encode()).hexdigest()[:12]}"
    return head + body


def is_case_id(text: object) -> bool:
    """Whether ``text`` can be a case id (:func:`make_case_id`'s characters, one file name, not
    ``.``/``..``): a case id read from a release or a review folder becomes part of file paths."""
    return (isinstance(text, str) and len(text) <= MAX_CASE_ID and _CASE_ID.fullmatch(text) is not None
            and text.strip(".") != "")


def patient_of(spec: DatasetSpec, fields: dict[str, str]) -> str:
    try:
        return spec.patient_id.format(**fields)
    except (KeyError, IndexError):
        return fields.get("case", "")


def discover(spec: DatasetSpec, root: Path, tree: Tree | None = None,
             name: str | None = None) -> tuple[list[CaseFiles], list[InputError]]:
    """Apply every layout entry of ``spec`` to the files under ``root``.

    ``name`` is the source's name in the pipeline (its ``name:`` alias, else the dataset's
    name): case ids start with it, so one dataset ingested twice under two aliases gives
    distinct cases. Every matching file that does not become (part of) a case is a problem.
    """
    tree = tree or scan(root, spec.exclude)
    name = name or spec.name
    problems = list(tree.problems)
    if tree.root_missing:  # its index or split file is not a second problem of the same cause
        return [], problems
    claimed = _label_claimed(spec, tree)
    every: list[CaseFiles] = []
    for i, entry in enumerate(spec.layout):
        try:
            if entry.index:
                from curator.registry.index import index_cases

                every += index_cases(spec, name, i, entry, root, problems)
            else:
                every += _entry_cases(spec, name, i, entry, tree, root, problems, claimed)
        except InputError as e:
            problems.append(e)
    problems += [InputError("exclude_no_match", f"the exclude path {g!r} matches no file or folder under the root, so "
                            "it leaves nothing out", path=str(root),
                            remedy="write the path from the source root (`BraTS-MEN-Train/BraTS-MEN-00004-000`, not "
                            "from the folder above it), as the files are named; `*` matches within a path too")
                 for g, hit in tree.excluded_paths.items() if not hit]
    cases: dict[str, CaseFiles] = {}
    for c in _overridden(spec, _settle_labels(spec, every, root, problems), root, problems):
        if c.case_id in cases:
            prev = cases[c.case_id]
            problems.append(_duplicate(root, c.image or c.labels[0][1], prev.image or prev.labels[0][1],
                                       c.case_id))
            continue
        cases[c.case_id] = c
    problems += _images_of_two_entries(root, list(cases.values()))
    if spec.labels.encoding == "per_structure":
        inside = _structures_inside(spec, root, cases, problems)
        problems += _structures_never_found(spec, tree, cases, inside)
    if spec.official_split.get("file"):
        from curator.registry.splits import apply_split_file

        try:
            apply_split_file(spec, root, list(cases.values()))
        except InputError as e:
            problems.append(e)
    taken = {f for c in cases.values() for f in (c.image, *(rel for _, rel in c.labels)) if f}
    within = tuple(sorted(f.rstrip("/") + "/" for f in taken))  # a series or slice folder's files: its case reads them
    named = {str(Path(str(f))) for f in (spec.metadata.get("file"), spec.official_split.get("file"),
                                         *(e.index for e in spec.layout if e.index)) if f}
    problems += [err for rel, err in tree.broken.items()  # a taken one is its case's error, a named one its reader's
                 if rel not in taken and not rel.startswith(within) and rel not in named]
    if not cases and not problems:
        rejected = pattern_rejections(spec, tree)
        rejected = [r for r in rejected if r.role == "image"] or rejected  # its labels' said by the images'
        if rejected:  # the glob matched: it is the `patterns:` regex that turned every file away
            problems.append(InputError("layout_no_match", f"no file under the root matches the layout of {spec.name}: "
                                       + "; ".join(r.said() for r in rejected), path=str(root),
                                       remedy=PATTERN_REJECTS_REMEDY))
        else:
            problems.append(InputError("layout_no_match", f"no file under the root matches the layout of {spec.name}",
                                       path=str(root), remedy="check the source root and the dataset's layout patterns"))
    return sorted(cases.values(), key=lambda c: c.case_id), problems


def _overridden(spec: DatasetSpec, found: list[CaseFiles], root: Path, problems: list[InputError]) -> list[CaseFiles]:
    """``found`` less the cases of entries without ``overrides`` whose case id an ``overrides``
    entry gives too (BraTS-MEN-Train-Fix's corrected cases over BraTS-MEN-Train's): each file of
    theirs no case kept reads is an info ``case_overridden`` row naming the file read instead."""
    by_id: dict[str, CaseFiles] = {}
    for c in found:
        if spec.layout[c.entry].overrides:
            by_id.setdefault(c.case_id, c)
    if not by_id:
        return found
    kept = [c for c in found if c.case_id not in by_id or spec.layout[c.entry].overrides]
    read = {f for c in kept for f in (c.image, *(p for _, p in c.labels)) if f}
    said: set[str] = set()
    for c in found:
        new = by_id.get(c.case_id)
        if new is None or spec.layout[c.entry].overrides:
            continue
        for f, instead in ((c.image, new.image), *((p, _same_structure(new, k)) for k, p in c.labels)):
            if f and f not in read and f not in said:
                said.add(f)
                problems.append(InputError(
                    "case_overridden", f"case {c.case_id}: {instead} (layout[{new.entry}], `overrides: true`) "
                    f"replaces this file of layout[{c.entry}], which is not ingested" if instead else
                    f"case {c.case_id} is read from layout[{new.entry}] (`overrides: true`), which has no such file; "
                    f"this file of layout[{c.entry}] is not ingested",
                    path=str(root / f), remedy=f"nothing to do: the dataset YAML says layout[{new.entry}]'s files "
                    "replace those of the same case"))
    return kept


def _same_structure(c: CaseFiles, key: str) -> str | None:
    """The label file of case ``c`` of structure ``key`` (``''``: its label map), if it has one."""
    return next((p for k, p in c.labels if k == key), None)


PATTERN_REJECTS_REMEDY = ("correct the placeholder's regular expression under `patterns:` (it must match the whole "
                          "value the placeholder takes), or remove it to take every value")


@dataclass(frozen=True)
class Rejected:
    """Files a layout pattern matches but a ``patterns:`` regex of one of its placeholders
    rejects (:func:`pattern_rejections`): ``files`` with the value each gave the placeholder."""

    entry: int
    role: str  # "image" or "label"
    pattern: str
    placeholder: str
    regex: str
    files: tuple[tuple[str, str], ...]  # (file, its value of the placeholder)

    def said(self, files: int | None = None) -> str:
        f, v = self.files[0]
        n = len(self.files) if files is None else files
        return (f"the {self.role} pattern {self.pattern!r} (layout[{self.entry}]) matches {n} file(s), but the "
                f"`patterns:` regex for {{{self.placeholder}}}, `{self.regex}`, rejects their {{{self.placeholder}}} "
                f"(e.g. {v!r} of {f})")


def pattern_rejections(spec: DatasetSpec, tree: Tree) -> list[Rejected]:
    """Per layout pattern and placeholder: the files the pattern would match without the
    ``patterns:`` regexes, that a regex of its rejects — a regex written for other names
    (``case: case_\\d{3}`` for ``brain1``) turns files away as silently as a wrong folder."""
    out: list[Rejected] = []
    for i, entry in enumerate(spec.layout):
        for role, pattern, custom in (("image", entry.image, image_patterns(spec)),
                                      ("label", entry.label, label_patterns(spec))):
            names = [n for n in re.findall(r"\{(\w+)\}", pattern or "") if n in spec.patterns]
            if entry.index or not pattern or not names:
                continue
            strict = compile_pattern(pattern.rstrip("/"), custom)
            loose = compile_pattern(pattern.rstrip("/"), {k: v for k, v in custom.items() if k not in spec.patterns})
            by: dict[str, list[tuple[str, str]]] = {}
            for f in (tree.dirs if pattern.endswith("/") else tree.files):
                m = loose.fullmatch(f)
                if m is None or strict.fullmatch(f):
                    continue
                g = m.groupdict()
                name = next((n for n in names if not re.fullmatch(spec.patterns[n], g.get(n) or "")), names[0])
                by.setdefault(name, []).append((f, g.get(name) or ""))
            out += [Rejected(i, role, pattern, n, spec.patterns[n], tuple(fs)) for n, fs in by.items()]
    return out


def _structures_never_found(spec: DatasetSpec, tree: Tree, cases: dict[str, CaseFiles],
                            inside: set[str]) -> list[InputError]:
    """A ``declared_label_absent`` warning per structure ``labels.structures`` declares that no
    case of the dataset has a file of (nor a SEG/RTSTRUCT segment): almost always a misspelt file
    stem (``kidney_lft`` for ``kidney_left.nii.gz``), which ``other_structures: ignore`` otherwise
    turns into a structure silently missing from every case. A close file stem is suggested.
    Said only when some case has a structure file (else ``label_no_match`` says more)."""
    import difflib

    have = {k for c in cases.values() for k, _ in c.labels if k}
    labelled = sum(any(k for k, _ in c.labels) for c in cases.values())
    if not have:
        return []
    missing = [k for k in spec.labels.structures if k not in have]
    if not missing:
        return []
    stems = set(have) | inside  # the files' own stems, declared or not (a typo's file is one of them)
    for entry in spec.layout:
        if entry.label and not entry.index and "{structure}" in entry.label:
            rx = compile_pattern(entry.label.rstrip("/"), dict(spec.patterns))
            stems.update(m.group("structure") for f in (tree.dirs if entry.label_is_dir else tree.files)
                         if (m := rx.fullmatch(f)))
    out: list[InputError] = []
    candidates = sorted(stems - set(spec.labels.structures))
    for k in missing:
        close = difflib.get_close_matches(k, candidates, n=3, cutoff=0.75)
        names = ", ".join(map(repr, spec.labels.structures[k]))
        out.append(spec_key_error(
            spec, "declared_label_absent", f"labels.structures.{k}", f"labels.structures declares {k!r} ({names}), "
            f"but none of the {labelled} case(s) with structure files has one named {k!r}"
            + (f"; the files hold {', '.join(map(repr, close))}" if close else "")
            + f": {k} is not annotated in any case",
            remedy=(f"rename the key {k!r} to {close[0]!r} in labels.structures" if close else
                    "check the key against the structure files' names (without their suffix)")
            + "; if the dataset has no such file, remove the key from labels.structures"))
    return out


def _structures_inside(spec: DatasetSpec, root: Path, cases: dict[str, CaseFiles],
                       problems: list[InputError]) -> set[str]:
    """Per-structure labels matched without ``{structure}`` (key ``''``) are files holding their
    structures — a DICOM SEG's segments, an RTSTRUCT's ROIs: each named structure becomes one
    label of the case (the structures the YAML does not map too, unless ``other_structures:
    ignore``). Any other file there is a problem, and a label-only case left with no label goes.
    Returns every structure name the files hold (those left out too)."""
    from curator.io.structures import structures_in

    declared = spec.labels.structures
    keep_all = spec.labels.other_structures != "ignore"
    seen: set[str] = set()
    for cid, c in list(cases.items()):
        if all(key for key, _ in c.labels):
            continue
        labels: list[tuple[str, str]] = []
        for key, rel in c.labels:
            if key:  # a mask file of its own ({structure} in the pattern)
                labels.append((key, rel))
                continue
            try:
                regular_inside(root, root / rel)
            except CuratorError:  # a link out of the root, a FIFO ...: never opened; its case's reading fails on it
                labels.append((key, rel))
                continue
            names = structures_in(root / rel)
            if names is None:
                problems.append(InputError(
                    "structures_not_in_file", "a per-structure label pattern without {structure} matched a file "
                    "that holds no named structures (not a DICOM SEG or RTSTRUCT)", path=str(root / rel),
                    remedy="put {structure} in the label pattern (one mask file per structure), or point it at the "
                    "SEG or RTSTRUCT files"))
            else:
                seen.update(names)
                labels += [(name, rel) for name in names if keep_all or name in declared]
        if labels or c.image is not None:
            cases[cid] = replace(c, labels=labels)
        else:
            del cases[cid]
    return seen


def _images_of_two_entries(root: Path, cases: list[CaseFiles]) -> list[InputError]:
    """An ``image_in_two_cases`` warning per image file (or series folder) that two layout entries
    both took, each as a case of its own (``data/{case}_image.nrrd`` and a looser ``data/{case}.nrrd``
    give ``brain1`` and ``brain1_image``): the scan would be read, stored and counted twice. One
    entry giving a file several cases (a 4-D file's channels) is the layout's intent, not this."""
    by_image: dict[str, list[CaseFiles]] = {}
    for c in cases:
        if c.image is not None:
            by_image.setdefault(c.image, []).append(c)
    out = []
    for image, cs in sorted(by_image.items()):
        first: dict[int, CaseFiles] = {}
        for c in cs:
            first.setdefault(c.entry, c)
        if len(first) < 2:
            continue
        said = ", ".join(f"{c.case_id} (layout[{c.entry}]"
                         + (", with a label)" if c.labels else ", without a label)") for c in first.values())
        out.append(InputError(
            "image_in_two_cases", f"{image} is the image of {len(first)} cases from different layout entries: "
            f"{said}; each is ingested as a separate scan", path=str(root / image),
            remedy="narrow the image patterns so that one entry takes the file (e.g. `patterns: {case: ...}`, "
            "or a more specific suffix), or add it to `exclude:` if neither should"))
    return out


def _label_claimed(spec: DatasetSpec, tree: Tree) -> set[str]:
    """Every file (or folder) some layout entry's label pattern matches."""
    out: set[str] = set()
    lab_custom = label_patterns(spec)
    for entry in spec.layout:
        if entry.index or not entry.label:
            continue
        rx = compile_pattern(entry.label.rstrip("/"), lab_custom)
        out.update(f for f in (tree.dirs if entry.label_is_dir else tree.files) if rx.fullmatch(f))
    return out


def _settle_labels(spec: DatasetSpec, found: list[CaseFiles], root: Path,
                   problems: list[InputError]) -> list[CaseFiles]:
    """The cases of every layout entry, less three kinds that another case already accounts for:

    * a label-only case whose label files are all labels of image cases (one entry found the label
      without its image — two entries sharing a label folder — and another entry found both);
    * an image case whose image file is a label of an image case (a loose image pattern also
      matched the label file): a file is never both a label and an image;
    * a label-only case that an earlier entry already gave (the same id and label files).
    """
    labels_of_images = {p: c for c in found if c.image for _, p in c.labels}
    out: list[CaseFiles] = []
    label_only: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for c in found:
        if c.image is None:
            if c.labels and all(p in labels_of_images for _, p in c.labels):
                continue
            if (c.case_id, tuple(c.labels)) in label_only:
                continue
            label_only.add((c.case_id, tuple(c.labels)))
        if c.image is not None and not c.image_is_dir and c.image in labels_of_images:
            owner = labels_of_images[c.image]
            problems.append(InputError(
                "image_is_label", f"{c.image} matches an image pattern but is the label of case "
                f"{owner.case_id}; it was not ingested as an image (case {c.case_id})",
                path=str(root / c.image), remedy=_narrow_remedy(spec, c, owner)))
            continue
        out.append(c)
    return out


def _narrow_remedy(spec: DatasetSpec, c: CaseFiles, owner: CaseFiles) -> str:
    """How to keep an image pattern off a label file: by the placeholder that took the label's
    extra words (``{case}`` took ``Case00_segmentation``: a regex the real cases' ids fit, from
    the id of the case whose label it is; ``{sequence}`` took ``seg``: declare the sequences)."""
    said = "narrow the image pattern so it does not match label files"
    if "sequence" in c.fields and c.fields["sequence"] != owner.fields.get("sequence") \
            and "sequence" not in spec.patterns and not spec.sequences:
        return (f"{said}: its {{sequence}} took {c.fields['sequence']!r} from this file; declare the sequences "
                "(`sequences: {t1: MR, t2: MR}`) or give `patterns: {sequence: ...}`")
    for name, text in c.fields.items():
        theirs = owner.fields.get(name)
        if name in ("sequence", "structure") or theirs is None or theirs == text:
            continue
        rx = shape_regex([theirs])
        if rx and name not in spec.patterns:
            return (f"{said}: its {{{name}}} took {text!r} from this file; give {{{name}}} a regular expression the "
                    f"cases' own values fit and this one does not, e.g. `patterns: {{{name}: '{rx}'}}` (from "
                    f"{theirs!r})")
        return (f"{said}: its {{{name}}} took {text!r} from this file; narrow the regular expression for "
                f"{{{name}}} under `patterns:` so this value does not fit")
    return f"{said} (e.g. a more specific suffix, or `patterns: {{case: ...}}`)"


# a hexadecimal id (autoPET's 0011f3deaf) is one token; then words, numbers and each other character
_SHAPE_TOKEN = re.compile(r"(?<![A-Za-z0-9])(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}(?![A-Za-z0-9])"
                          r"|[A-Za-z]+|\d+|[^A-Za-z\d]")


def shape_regex(values: list[str], max_shapes: int = 4) -> str | None:
    r"""A regular expression that ``values`` fit by their shape: words they share as they are,
    other words as ``[A-Za-z]+``, numbers as ``\d{n}`` (``\d+`` when their lengths differ),
    hexadecimal ids as ``[0-9a-f]+``; values of several shapes as alternatives (None past
    ``max_shapes``).

    >>> shape_regex(["Case00", "Case13"]), shape_regex(["BraTS-MEN-00004-000", "BraTS-MEN-00008-001"])
    ('Case\\d{2}', 'BraTS-MEN-\\d{5}-\\d{3}')
    >>> shape_regex(["spleen_2", "spleen_10"]), shape_regex(["CHUM-001", "MDA-002"])
    ('spleen_\\d+', '[A-Za-z]+-\\d{3}')
    """
    shapes: dict[tuple[str, ...], list[list[str]]] = {}
    for v in values:
        toks = _SHAPE_TOKEN.findall(v)
        key = tuple("\0h" if len(t) >= 8 and not t.isalpha() and not t.isdigit() and t.isalnum()
                    else "\0#" if t.isdigit() else "\0a" if t.isalpha() else t for t in toks)
        shapes.setdefault(key, []).append(toks)
    if not shapes or len(shapes) > max_shapes:
        return None
    alts = []
    for key, rows in shapes.items():
        parts = []
        for i, k in enumerate(key):
            col = {r[i] for r in rows}
            if k == "\0#":
                widths = {len(t) for t in col}
                width = widths.pop() if len(widths) == 1 else 0
                parts.append("\\d" if width == 1 else f"\\d{{{width}}}" if width else "\\d+")
            elif k == "\0h":
                parts.append("[0-9a-f]+")
            elif k == "\0a":
                parts.append(col.pop() if len(col) == 1 else "[A-Za-z]+")
            else:
                parts.append(k if k in "-_ " else re.escape(k))
        alts.append("".join(parts))
    return "|".join(sorted(alts))


_SAME_ID = "make the layout pattern specific enough to give each file its own case"
_SAME_NAME = ("add a placeholder for the folder that tells the files apart (e.g. `{centre}/{case}.nii.gz` "
              "instead of `**/{case}.nii.gz`), so the case identity includes it; or, when one folder holds "
              "corrected copies of the other's cases (BraTS-MEN-Train-Fix beside BraTS-MEN-Train), give each folder "
              "a layout entry of its own and mark the corrected one `overrides: true`")


def _duplicate(root: Path, dropped: str, kept: str, case_id: str, remedy: str = _SAME_ID) -> InputError:
    """The ``duplicate_case`` problem of a matching file that was not ingested because ``kept`` gave its case."""
    return InputError("duplicate_case", f"{dropped} and {kept} both map to case {case_id}; only {kept} "
                      "was ingested", path=str(root / dropped), remedy=remedy)


def label_patterns(spec: DatasetSpec) -> dict[str, str]:
    """Placeholder regexes for label patterns: with ``other_structures: ignore`` the
    ``{structure}`` placeholder only matches the declared structure files."""
    custom = dict(spec.patterns)
    lab = spec.labels
    if (lab.encoding == "per_structure" and lab.other_structures == "ignore" and lab.structures
            and "structure" not in custom):
        custom["structure"] = "|".join(re.escape(k) for k in sorted(lab.structures, key=lambda k: (-len(k), k)))
    return custom


def _first_of_each(matches: list[tuple[str, dict[str, str]]], is_dir: bool,
                   ) -> tuple[tuple[str, dict[str, str]], list[str]]:
    """The match a case uses (the shallowest; the first in path order among equals) and the
    matches left unused. Folders nested in the kept folder are part of it (read recursively)."""
    ordered = sorted(matches, key=lambda m: m[0].count("/"))  # stable: path order among equals
    kept = ordered[0]
    dropped = [f for f, _ in ordered[1:] if not (is_dir and f.startswith(kept[0] + "/"))]
    return kept, dropped


def _image_series_first(root: Path, ms: list[tuple[str, dict[str, str]]],
                        problems: list[InputError]) -> list[tuple[str, dict[str, str]]]:
    """Several folders matched for one case (``<study>/*/`` over a TCIA study): the folders whose
    DICOM series is not the scan — a non-image object (RTSTRUCT, SEG ...), a localizer (scout) or
    a secondary capture — are left out, each an info ``series_not_image`` problem, unless no
    folder holds anything else."""
    from curator.io.dicom_files import series_not_volume

    why = {f: series_not_volume(root / f) for f, _ in ms}
    images = [m for m in ms if why[m[0]] is None]
    if not images:
        return ms
    kept = _first_of_each(images, True)[0][0]
    problems.extend(InputError(
        "series_not_image", f"{f} holds {why[f]}, not the scan; the case's image is {kept}",
        path=str(root / f), remedy="nothing to do (it is not ingested); narrow the image pattern to silence this")
        for f, _ in ms if why[f] is not None)
    return images


def _unused(root: Path, dropped: list[str], kept: str, case_id: str) -> list[InputError]:
    """``duplicate_case`` problems of the files a layout matched for a case but did not use."""
    return [_duplicate(root, f, kept, case_id, _SAME_NAME if os.path.dirname(f) != os.path.dirname(kept)
                       else _SAME_ID) for f in dropped]


def image_patterns(spec: DatasetSpec) -> dict[str, str]:
    """Placeholder regexes for image patterns: with ``sequences:`` declared (and no regex of its
    own in ``patterns:``) the ``{sequence}`` placeholder only matches the declared names."""
    custom = dict(spec.patterns)
    if spec.sequences and "sequence" not in custom:
        custom["sequence"] = "|".join(re.escape(k) for k in sorted(spec.sequences, key=lambda k: (-len(k), k)))
    return custom


def _entry_cases(spec: DatasetSpec, name: str, idx: int, entry: LayoutEntry, tree: Tree, root: Path,
                 problems: list[InputError], claimed: set[str] | frozenset[str] = frozenset()) -> list[CaseFiles]:
    img_custom = image_patterns(spec)
    img_rx = compile_pattern(entry.image.rstrip("/"), img_custom) if entry.image else None
    lab_rx = compile_pattern(entry.label.rstrip("/"), label_patterns(spec)) if entry.label else None
    img_names = [p for p in entry.placeholders() if entry.image and "{" + p + "}" in entry.image]
    identity = [p for p in img_names if p != "structure"] or ["case"]
    lab_names = [m for m in re.findall(r"\{(\w+)\}", entry.label or "")]
    shared = [p for p in identity if p in lab_names]  # placeholders tying a label to images

    # label files per shared key, one per structure key ('' for a label map)
    found: dict[tuple[str, ...], dict[str, list[tuple[str, dict[str, str]]]]] = {}
    if lab_rx:
        for f in (tree.dirs if entry.label_is_dir else tree.files):  # a trailing '/': a folder of slices
            m = lab_rx.fullmatch(f)
            if m:
                g = m.groupdict()
                found.setdefault(tuple(g.get(p, "") for p in shared), {}).setdefault(
                    g.get("structure", ""), []).append((f, g))
    labels_by_key: dict[tuple[str, ...], list[tuple[str, str, dict[str, str]]]] = {}
    unused_labels: dict[tuple[str, ...], list[tuple[list[str], str]]] = {}
    for lkey, per_structure in found.items():
        for structure, ms in per_structure.items():
            (f, g), dropped = _first_of_each(ms, entry.label_is_dir)
            labels_by_key.setdefault(lkey, []).append((structure, f, g))
            if dropped:
                unused_labels.setdefault(lkey, []).append((dropped, f))

    def report_labels(lkey: tuple[str, ...], case_id: str) -> None:
        for dropped, kept in unused_labels.pop(lkey, []):
            problems.extend(_unused(root, dropped, kept, case_id))

    out: list[CaseFiles] = []
    used: set[tuple[str, ...]] = set()
    if img_rx:
        candidates = tree.dirs if entry.image_is_dir else tree.files
        # with `sequences:` declared, the files the pattern would match with another sequence name
        image = entry.image or ""
        loose_rx = (compile_pattern(image.rstrip("/"), spec.patterns)
                    if "{sequence}" in image and "sequence" not in spec.patterns and spec.sequences else None)
        matches: dict[tuple[str, ...], list[tuple[str, dict[str, str]]]] = {}
        for f in candidates:
            m = img_rx.fullmatch(f)
            if not m and loose_rx and f not in claimed and (lm := loose_rx.fullmatch(f)):
                problems.append(InputError(
                    "sequence_undeclared", f"{f} matches the image pattern {entry.image!r} with sequence "
                    f"{lm.group('sequence')!r}, which `sequences:` does not declare ({', '.join(spec.sequences)}); "
                    "it was not ingested", path=str(root / f),
                    remedy="add the sequence to `sequences:` if the file is an image, or to `exclude:` if not"))
            if m:
                g = m.groupdict()
                matches.setdefault(tuple(g.get(p, "") for p in identity), []).append((f, g))
        if lab_rx and not shared and labels_by_key and len(matches) > 1:  # no placeholder ties labels to images
            problems.append(InputError(
                "label_ambiguous", f"the label pattern {entry.label!r} shares no placeholder with the image pattern "
                f"{entry.image!r}, so nothing tells which of the {len(matches)} images a label belongs to; none of "
                "them was given a label", path=str(root),
                remedy="put the placeholder naming each image's case (e.g. {case}) in the label pattern too"))
            labels_by_key, unused_labels, lab_rx = {}, {}, None
        for key, ms in sorted(matches.items()):
            if entry.image_is_dir and len(ms) > 1:
                ms = _image_series_first(root, ms, problems)
            (f, g), dropped = _first_of_each(ms, entry.image_is_dir)
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
                    case_id=make_case_id(name, parts), source_case=g.get("case", parts[0]), fields=fields,
                    entry=idx, image=f, image_is_dir=entry.image_is_dir, channel=ch, sequence=seq,
                    labels=labs, split=_split(entry, g), modality=spec.modality_for(entry, seq),
                    patient_raw=patient_of(spec, fields), format=entry.format,
                    channels=len(entry.channels) if ch is not None else None))
            problems.extend(_unused(root, dropped, f, out[-1].case_id))
            if labs:
                report_labels(lkey, out[-1].case_id)
    if lab_rx and img_rx:
        _unlabelled(spec, entry, idx, out, any_label=bool(labels_by_key), problems=problems)
    if lab_rx:
        for lkey, items in sorted(labels_by_key.items()):
            if lkey in used or not items:
                continue
            g = items[0][2]
            if img_rx and not all(p in g for p in ("case",)):
                continue
            parts = [g.get(p, "") for p in identity if p in g] or [g.get("case", "")]
            out.append(CaseFiles(
                case_id=make_case_id(name, parts), source_case=g.get("case", parts[0]), fields=dict(g),
                entry=idx, image=None, image_is_dir=False, channel=None, sequence=None,
                labels=sorted((s, p) for s, p, _ in items), split=_split(entry, g),
                modality=spec.modality_for(entry, None), patient_raw=patient_of(spec, dict(g)), format=None))
            report_labels(lkey, out[-1].case_id)
    return out


def _unlabelled(spec: DatasetSpec, entry: LayoutEntry, idx: int, cases: list[CaseFiles], any_label: bool,
                problems: list[InputError]) -> None:
    """Images of an entry with a ``label:`` pattern that found no label. When the pattern matched
    no file at all it is one problem for the entry (a wrong pattern, or the labels not unpacked);
    otherwise each such case carries the pattern, and ingest says per case that its label is missing."""
    bare = [c for c in cases if not c.labels]
    if not bare:
        return
    if not any_label:
        problems.append(spec_key_error(
            spec, "label_no_match", f"layout[{idx}].label", f"the label pattern {entry.label!r} of layout[{idx}] "
            f"matches no file under the source root, so its {len({c.image for c in bare})} image(s) were ingested "
            "without labels",
            remedy="check the pattern against the folder's files (its folder names and suffixes), and that the "
            "labels were downloaded and unpacked under the source root; if the dataset has no labels, remove `label:`"))
        return
    for c in bare:
        c.label_expected = entry.label


def _split(entry: LayoutEntry, fields: dict[str, str]) -> str | None:
    """The entry's ``split``, else the value of a ``{split}`` placeholder (training -> train, ...)."""
    if entry.split or "split" not in fields:
        return entry.split
    from curator.registry.splits import SPLIT_NAMES

    return SPLIT_NAMES.get(fields["split"].lower())


def case_summary(c: CaseFiles) -> dict[str, Any]:
    return {"case_id": c.case_id, "image": c.image, "labels": c.labels, "sequence": c.sequence}
