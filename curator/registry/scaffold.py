"""``curator sources init ROOT``: a draft dataset YAML guessed from a download's files.

Writing a dataset YAML starts with its ``layout:`` — which files are images, which are labels,
and what part of each path is the case. This module guesses that from the volume files under a
root, the way a person reads a listing:

* a file is a **label** when a folder or name word says so (``labelsTr``, ``seg``, ``masks``,
  ``GT``, ``Ground``, ``_msk`` ...); every other volume file (and every folder of DICOM files) is an image;
* images whose paths differ only in numbers and name words (``imagesTr/amos_0001.nii.gz``,
  ``BraTS-GLI-00000-000/BraTS-GLI-00000-000-t1n.nii.gz``) are one pattern; the run of changing
  tokens that tells the files apart is ``{case}``, a changing word with a few values each case has
  several of (``t1n``/``t1c``/``t2w``/``t2f``, ``CT``/``PT``, nnU-Net's ``_0000``/``_0001``) is
  ``{sequence}``, other changing numbers are placeholders named after the word before them;
* a label belongs to the image whose case text its path holds (``img0001`` / ``label0001``), and
  a folder of several such label files per case is ``{structure}`` (TotalSegmentator's masks).

The draft also lists the label values a few files hold (or, per structure, the term each file
name resolves to), the index file's names when an MSD/nnU-Net ``dataset.json`` is there, and
``TODO`` for what no file says (licence, citation, version, a value's meaning), which
``curator labels check`` then refuses until filled in. It is a start, checked with
``curator sources check``, not a finished YAML: ``benchmarks/scaffold_eval.py`` counts how many
of the registry's 72 native layouts it guesses exactly.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.errors import CuratorError

LABEL_WORDS = frozenset({
    "label", "labels", "labelstr", "labelsts", "labelsva", "labelsval", "lb", "lbl", "seg", "segs",
    "segmentation", "segmentations", "mask", "masks", "msk", "gt", "groundtruth", "ground", "truth",
    "annotation", "annotations", "dseg", "roi", "structures", "contours"})
_TOKENS = re.compile(r"[A-Za-z]+|\d+|[^A-Za-z\d]+")
_VOLUME = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_DICOM = (".dcm", ".dicom", ".ima")
_SPLITS = {"train": ("train", "training", "imagestr", "labelstr"), "val": ("val", "valid", "validation",
           "imagesva", "imagesval", "labelsva", "labelsval"), "test": ("test", "testing", "imagests", "labelsts")}
_SEQ_MODALITY = {"ct": "CT", "pt": "PET", "pet": "PET", "suv": "PET"}
TODO = "TODO"


def _tokens(path: str) -> list[str]:
    return _TOKENS.findall(path)


def _words(path: str) -> set[str]:
    return {re.sub(r"\d+$", "", w.lower()) for w in re.split(r"[^A-Za-z0-9]+", path) if w}


def is_label(path: str) -> bool:
    """A folder or name word of ``path`` says label (``labelsTr/x.nii.gz``, ``x_seg.nii.gz``)."""
    return bool(_words(path.removesuffix("/")) & LABEL_WORDS)


def volumes(root: Path, files: list[str]) -> list[str]:
    """The volume files under ``root`` (relative paths), and each folder of DICOM files as one
    path ending with ``/`` (a folder's first suffix-less file is checked for a DICOM header)."""
    from curator.io.confined import regular_inside
    from curator.io.formats import sniff

    out, dicom_dirs, unknown = [], set(), {}
    for f in files:
        low = f.lower()
        folder = f.rsplit("/", 1)[0] + "/" if "/" in f else ""
        if low.endswith(_VOLUME):
            out.append(f)
        elif low.endswith(_DICOM):
            dicom_dirs.add(folder)
        elif "." not in f.rsplit("/", 1)[-1] and folder not in unknown:
            unknown[folder] = f
    for folder, f in unknown.items():
        if folder in dicom_dirs or not folder:
            continue
        try:
            if sniff(regular_inside(root, root / f)) == "dicom":
                dicom_dirs.add(folder)
        except CuratorError:
            continue
    return sorted(out + [d for d in dicom_dirs if d])


@dataclass
class Group:
    """Paths with one token skeleton: the same separators, numbers where numbers are."""

    paths: list[str]
    template: str = ""
    values: list[dict[str, str]] = field(default_factory=list)  # per path: placeholder -> its text
    sequences: list[str] = field(default_factory=list)


def _skeleton(path: str) -> tuple[Any, ...]:
    """Separators and folder words exact; a file name's words and every number free."""
    toks = _tokens(path)
    last = len(path) - len(path.rsplit("/", 1)[-1])
    out, pos = [], 0
    for t in toks:
        if t.isdigit():
            out.append("#")
        elif t.isalpha():
            out.append("a" if pos >= last else t)
        else:
            out.append(t)
        pos += len(t)
    return tuple(out)


def group_images(paths: list[str]) -> list[Group]:
    """Images with one skeleton as one pattern each (:func:`_template`); a pattern that is a
    sequence pattern with one more sequence word (BraTS' ``-flair`` beside ``-t1n``) joins it."""
    by: dict[tuple[Any, ...], list[str]] = {}
    for p in paths:
        by.setdefault(_skeleton(p), []).append(p)
    groups = [_template(Group(ps)) for ps in by.values()]
    for g in [g for g in groups if g.sequences]:
        head, tail = g.template.split("{sequence}", 1)
        for other in [o for o in groups if o is not g and not o.sequences]:
            t = other.template
            word = t[len(head):len(t) - len(tail)] if t.startswith(head) and t.endswith(tail) else ""
            if word.isalnum():
                g.paths += other.paths
                g.values += [{**v, "sequence": word} for v in other.values]
                g.sequences = sorted({*g.sequences, word})
                groups.remove(other)
    return groups


def _template(g: Group) -> Group:
    """``g``'s pattern: its changing words as placeholders (module docstring)."""
    rows = [_tokens(p) for p in g.paths]
    n = len(rows[0])
    varies = [len({r[i] for r in rows}) > 1 for i in range(n)]
    words: list[tuple[int, int]] = []  # alphanumeric runs of tokens [lo, hi)
    i = 0
    while i < n:
        if rows[0][i].isalnum():
            j = i
            while j < n and rows[0][j].isalnum():
                j += 1
            words.append((i, j))
            i = j
        else:
            i += 1
    moving = [w for w in words if any(varies[w[0]:w[1]])]
    seq = _sequence_word(moving, rows)
    spans: list[tuple[int, int]] = []  # token ranges of the other placeholders
    for lo, hi in (w for w in moving if w != seq):
        first = next(k for k in range(lo, hi) if varies[k])
        last = max(k for k in range(lo, hi) if varies[k]) + 1
        gap = "".join(rows[0][spans[-1][1]:first]) if spans else "/"
        if spans and first == lo and varies[spans[-1][1] - 1] and spans[-1][1] == _word_end(words, spans[-1][1]) \
                and "/" not in gap and not any(c.isalnum() for c in gap):
            spans[-1] = (spans[-1][0], last)  # BraTS' 00000-000, HECKTOR's CHUM-001: one case id
        else:
            spans.append((first, last))
    if not spans:  # one file, or the case's files differ only in sequence: pick the id-like number
        spans = _pick_case(rows[0], seq)
    texts = [["".join(r[a:b]) for a, b in spans] for r in rows]
    sig: dict[tuple[str, ...], int] = {}
    sigs = [sig.setdefault(tuple(t[k] for t in texts), len(sig)) for k in range(len(spans))]
    names: dict[int, str] = {}
    if sigs:
        names[max(set(sigs), key=lambda s: (len({t[sigs.index(s)] for t in texts}), -sigs.index(s)))] = "case"
    for k, s in enumerate(sigs):
        if s not in names:
            before = next((rows[0][j].lower() for j in range(spans[k][0] - 1, -1, -1) if rows[0][j].isalpha()), "")
            names[s] = before if before.isidentifier() and before not in (*names.values(), "sequence") \
                else f"part{len(names)}"
    cuts = sorted([(a, b, names[s]) for (a, b), s in zip(spans, sigs, strict=True)]
                  + ([(seq[0], seq[1], "sequence")] if seq else []))
    out, pos = [], 0
    for a, b, name in cuts:
        out.append("".join(rows[0][pos:a]) + "{" + name + "}")
        pos = b
    out.append("".join(rows[0][pos:]))
    g.template = "".join(out)
    g.values = [{name: "".join(r[a:b]) for a, b, name in cuts} for r in rows]
    g.sequences = sorted({v["sequence"] for v in g.values if "sequence" in v})
    return g


def _pick_case(toks: list[str], seq: tuple[int, int] | None) -> list[tuple[int, int]]:
    """Token ranges of the case id in one path: a number it repeats (``patient001/patient001_4d``)
    before one in the file name before one in a folder (``s0002/ct.nii.gz``), the last first; not
    nnU-Net's channel suffix ``_0000`` nor the sequence."""
    name_at = max((k for k, t in enumerate(toks) if "/" in t), default=-1)
    cand = [k for k, t in enumerate(toks) if t.isdigit() and not (seq and seq[0] <= k < seq[1])]
    channel = [k for k in cand if re.fullmatch(r"000\d", toks[k]) and toks[k - 1] == "_" and k + 1 < len(toks)
               and toks[k + 1] == "." and any(name_at < j < k for j in cand)]
    weighted = [k for k in cand if re.fullmatch(r"[a-z]{0,2}T", toks[k - 1])]  # T1, ceT1, hrT2: a weighting
    cand = [k for k in cand if k not in channel and k not in weighted] or [k for k in cand if k not in channel]
    if not cand:
        return [(k, k + 1) for k in range(name_at + 1, len(toks)) if toks[k].isalnum()][:1]
    best = max(cand, key=lambda k: (sum(toks[j] == toks[k] for j in cand) > 1, k > name_at, k))
    lo = hi = best  # with the numbers joined to it by '-' or '.': BraTS' 00001-000, a DICOM UID
    while lo >= 2 and toks[lo - 1] in ("-", ".") and lo - 2 in cand:
        lo -= 2
    while hi + 2 < len(toks) and toks[hi + 1] in ("-", ".") and hi + 2 in cand:
        hi += 2
    width = hi - lo + 1
    return [(k, k + width) for k in cand if toks[k:k + width] == toks[lo:hi + 1]]


def _word_end(words: list[tuple[int, int]], k: int) -> int:
    return next((hi for lo, hi in words if lo < k <= hi), k)


def _sequence_word(moving: list[tuple[int, int]], rows: list[list[str]]) -> tuple[int, int] | None:
    """The changing word that names a sequence: a few values (at most 8), each case having
    several of them (``t1n``/``t1c``/``t2w``/``t2f``; ``CT``/``PT``; ``0000``/``0001``)."""
    for w in reversed(moving):  # the last such word: a sequence suffix, not a site prefix
        vals = {"".join(r[w[0]:w[1]]) for r in rows}
        others = Counter(tuple("".join(r[a:b]) for a, b in moving if (a, b) != w) for r in rows)
        wordy = len({re.sub(r"\d+", "", v) for v in vals}) == len(vals) or all(re.fullmatch(r"000\d", v) for v in vals)
        if 2 <= len(vals) <= 8 and wordy and min(others.values()) >= 2:
            return w
    return None


def _replace_case(label: str, values: dict[str, str]) -> str | None:
    """``label`` with each of an image's placeholder texts (not its sequence) written as its
    placeholder, or None when one is not in it as a whole token run."""
    out = label
    for name, text in sorted(values.items(), key=lambda kv: -len(kv[1])):
        if name == "sequence":
            continue
        pat = re.compile(("(?<!\\d)" if text[0].isdigit() else "(?<![A-Za-z])") + re.escape(text)
                         + ("(?!\\d)" if text[-1].isdigit() else "(?![A-Za-z])"))
        out, n = pat.subn("{" + name + "}", out)
        if not n:
            return None
    return out


@dataclass
class Entry:
    image: str
    label: str | None
    cases: int
    labelled: int
    structures: list[str] = field(default_factory=list)
    sequences: list[str] = field(default_factory=list)
    split: str | None = None
    label_files: list[str] = field(default_factory=list)


def pair(images: list[Group], labels: list[str]) -> tuple[list[Entry], list[str]]:
    """Each image pattern with the label pattern most of its cases have; the label files no
    image claims."""
    claimed: set[str] = set()
    entries = []
    for g in sorted(images, key=lambda g: g.template):
        found: dict[str, list[str]] = {}
        for vals in g.values:
            for lab in labels:
                t = _replace_case(lab, vals)
                if t is not None and t != lab:
                    found.setdefault(t, []).append(lab)
        structures: list[str] = []
        label = None
        cases = len({tuple(sorted((k, v) for k, v in vals.items() if k != "sequence")) for vals in g.values})
        labelled = 0
        if found:
            folders: dict[str, list[str]] = {}
            for t in found:
                folders.setdefault(t.rsplit("/", 1)[0] if "/" in t else "", []).append(t)
            best_folder, ts = max(folders.items(), key=lambda kv: (len(kv[1]), sum(len(found[t]) for t in kv[1])))
            if len(ts) >= 3 and all("{" not in t.rsplit("/", 1)[-1] for t in ts):  # one mask per structure
                ext = _ext(ts[0])
                label = (best_folder + "/" if best_folder else "") + "{structure}" + ext
                structures = sorted({t.rsplit("/", 1)[-1][:-len(ext)] for t in ts if t.endswith(ext)})
                files = [f for t in ts for f in found[t]]
                labelled = cases
            else:
                label = max(found, key=lambda t: (len(set(found[t])), len(_words(t) & _words(g.template)), -len(t)))
                files = found[label]
                labelled = len(set(files))
            claimed.update(files)
        else:
            files = []
        entries.append(Entry(g.template, label, cases, min(labelled, cases), structures, g.sequences,
                             _split(g.template), sorted(set(files))))
    return entries, [lab for lab in labels if lab not in claimed]


def _ext(path: str) -> str:
    low = path.lower()
    return next((path[-len(e):] for e in (".seg.nrrd", *_VOLUME) if low.endswith(e)), "/" if path.endswith("/") else "")


def _split(template: str) -> str | None:
    parts = {p.lower() for p in template.split("/")[:-1]}
    return next((s for s, names in _SPLITS.items() if parts & set(names)), None)


def label_values(root: Path, files: list[str], n: int = 3) -> dict[int, int]:
    """Voxels per raw value over the first ``n`` readable label files (DICOM folders skipped)."""
    import numpy as np

    from curator.io.confined import regular_inside
    from curator.io.formats import read_volume

    counts: Counter[int] = Counter()
    read = 0
    for f in files:
        if read >= n or f.endswith("/"):
            continue
        try:
            vol = read_volume(regular_inside(root, root / f), role="label")
        except CuratorError:
            continue
        vals, cnt = np.unique(vol.array, return_counts=True)
        counts.update({int(v): int(c) for v, c in zip(vals, cnt, strict=True)})
        read += 1
    return dict(sorted(counts.items()))


def index_names(root: Path) -> dict[int, str]:
    """Raw value -> name from an MSD/nnU-Net ``dataset.json`` at the root (empty without one)."""
    p = root / "dataset.json"
    try:
        d = json.loads(p.read_text(encoding="utf-8")) if p.is_file() and p.stat().st_size < 1 << 20 else {}
    except (OSError, ValueError):
        return {}
    labels = d.get("labels") if isinstance(d, dict) else None
    if not isinstance(labels, dict):
        return {}
    out: dict[int, str] = {}
    for k, v in labels.items():  # MSD {"1": "spleen"}, nnU-Net v2 {"spleen": 1}
        if str(k).isdigit() and isinstance(v, str):
            out[int(k)] = v
        elif isinstance(v, int) and not isinstance(v, bool):
            out[v] = str(k)
    return out


def guess_modality(paths: list[str]) -> str:
    words: set[str] = set().union(*(_words(p) for p in paths)) if paths else set()
    if words & {"pet", "suv", "pt"} and not words & {"ct"}:
        return "PET"
    if words & {"mr", "mri", "t", "flair", "adc", "dwi", "bold", "dixon", "spir", "hrt"}:
        return "MR"
    return "CT"


@dataclass
class Draft:
    """The draft YAML as a mapping, and what was guessed (for the command's summary)."""

    spec: dict[str, Any]
    entries: list[Entry]
    unclaimed_labels: list[str]
    notes: list[str]


def scaffold(root: Path, name: str, modality: str | None = None) -> Draft:
    """A draft dataset mapping for the download under ``root``."""
    from curator.registry.layout import scan
    from curator.taxonomy import load_taxonomy

    tree = scan(root, (".*", "._*"))
    vols = volumes(root, tree.files)
    labels = [v for v in vols if is_label(v)]
    images = [v for v in vols if not is_label(v)]
    entries, unclaimed = pair(group_images(images), labels) if images else ([], labels)
    modality = modality or guess_modality(images)
    tax = load_taxonomy()
    notes: list[str] = []
    layout: list[dict[str, Any]] = []
    for e in entries:
        entry: dict[str, Any] = {"image": e.image}
        if e.label:
            entry["label"] = e.label
        if e.split:
            entry["split"] = e.split
        layout.append(entry)
    structures = sorted({s for e in entries for s in e.structures})
    labels_block: dict[str, Any]
    if structures:
        resolved = {s: _term(tax, s) for s in structures}
        labels_block = {"encoding": "per_structure", "structures": resolved}
    elif any(e.label for e in entries):
        names = index_names(root)
        counts = label_values(root, [f for e in entries for f in e.label_files])
        values = {v: _term(tax, names[v]) if v in names else TODO for v in counts if v != 0}
        labels_block = {"encoding": "label_map", "values": values or {1: TODO}}
        if counts:
            notes.append("label values found (voxels in up to 3 files): "
                         + ", ".join(f"{v}: {c:,}" for v, c in counts.items()))
    else:
        labels_block = {"encoding": "none"}
    sequences = sorted({s for e in entries for s in e.sequences})
    spec: dict[str, Any] = {"name": name, "version": TODO, "modality": modality}
    if sequences:
        spec["sequences"] = {s: _SEQ_MODALITY.get(s.lower(), modality) for s in sequences}
    spec |= {"region": TODO, "licence": TODO, "citation": TODO, "homepage": TODO, "layout": layout,
             "labels": labels_block}
    if unclaimed:
        notes.append(f"{len(unclaimed)} label file(s) no image pattern claims, e.g. {unclaimed[0]}")
    return Draft(spec, entries, unclaimed, notes)


def _term(tax: Any, raw: str) -> str:
    """The taxonomy term a structure file name or index name resolves to, or TODO."""
    for cand in (raw, raw.replace("_", " "), raw.replace("-", " ")):
        t = tax.resolve(cand)
        if t is not None:
            return str(t.name)
    return TODO


def to_yaml(d: Draft, root: Path) -> str:
    """The draft as YAML text, headed by what was guessed and what to do next."""
    import yaml

    head = [f"# Draft written by `curator sources init` from the files under {root.name}/.",
            "# Guessed, not known: check every line, and fill in each TODO (labels check refuses them).",
            "# Then: curator labels check --registry THIS.yaml; curator sources check THIS.yaml ROOT"]
    for e in d.entries:
        what = f"{len(e.structures)} structure files" if e.structures else "a label" if e.label else "no label"
        head.append(f"#   {e.image}: {e.cases} case(s), {e.labelled} with {what}"
                    + (f", sequences {', '.join(e.sequences)}" if e.sequences else ""))
    head += [f"# {n}" for n in d.notes]
    return "\n".join(head) + "\n" + yaml.safe_dump(d.spec, sort_keys=False, allow_unicode=True, width=110)
