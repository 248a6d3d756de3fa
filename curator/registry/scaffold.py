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
* ``{case}`` takes the constant words before it in its folder or file name when the label files
  hold them too, so the ids are the dataset's own (``Case00``, ``case_01``, ``BraTS-MEN-00004-000``);
* a label belongs to the image whose case text its path holds (``img0001`` / ``label0001``), and
  several such label files per case that differ in their last words are ``{structure}``: a folder
  of them (TotalSegmentator's masks) or names after the case's (HaN-Seg's ``{case}_OAR_{structure}``);
* image patterns giving the same case ids get told apart: another image of each case in its
  folder is a fixed ``sequence:`` of its own (HaN-Seg's MR T1), a folder of corrected copies
  ``overrides: true`` (BraTS-MEN-Train-Fix); a pattern that also matches label files gets
  ``patterns: {case: ...}`` of the ids' shape, and ids that read as subject and timepoint give
  ``patient_id: '{subject}'`` (every draft writes ``patient_id``, with what to check).

The draft also lists the label values a few files hold (or, per structure, the term each file
name resolves to), the index file's names when an MSD/nnU-Net ``dataset.json`` is there, and
``TODO`` for what no file says (licence, citation, version, a value's meaning), which
``curator labels check`` then refuses until filled in. It is a start, checked with
``curator sources check``, not a finished YAML: ``benchmarks/scaffold_eval.py`` counts how many
of the registry's 72 native layouts it guesses exactly.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.errors import CuratorError

LABEL_WORDS = frozenset({
    "label", "labels", "labelstr", "labelsts", "labelsva", "labelsval", "lb", "lbl", "seg", "segs",
    "segmentation", "segmentations", "mask", "masks", "msk", "gt", "groundtruth", "ground", "truth",
    "annotation", "annotations", "dseg", "roi", "structures", "contours", "gd"})
_TOKENS = re.compile(r"[A-Za-z]+|\d+|[^A-Za-z\d]+")
_VOLUME = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_DICOM = (".dcm", ".dicom", ".ima")
_MR_WORDS = frozenset({"mr", "mri", "flair", "adc", "dwi", "bold", "dixon", "spir", "brats", "brain", "ce", "hr",
                       # cardiac MR: cine, late gadolinium enhancement, short/long axis (M&Ms' _sa, M&Ms-2's SA_CINE)
                       "cine", "lge", "sa", "la", "sax", "lax"})
_SEQ_MODALITY = {"ct": "CT", "pt": "PET", "pet": "PET", "suv": "PET"}
TODO = "TODO"


_HEX = re.compile(r"(?<![A-Za-z0-9])(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}(?![A-Za-z0-9])")


def _tokens(path: str) -> list[str]:
    """Letters, numbers and separators; a hexadecimal id (autoPET's ``0011f3deaf``) is one number."""
    out: list[str] = []
    pos = 0
    for m in _HEX.finditer(path):
        out += _TOKENS.findall(path[pos:m.start()]) + [m.group(0)]
        pos = m.end()
    return out + _TOKENS.findall(path[pos:])


def _is_num(t: str) -> bool:
    return t.isdigit() or bool(_HEX.fullmatch(t))


def _words(path: str) -> set[str]:
    return {re.sub(r"\d+$", "", w.lower()) for w in re.split(r"[^A-Za-z0-9]+", path) if w}


def is_label(path: str) -> bool:
    """A folder or name word of ``path`` says label (``labelsTr/x.nii.gz``, ``x_seg.nii.gz``);
    ``gd`` (MyoPS' ground truth) only in a folder's name — a file's ``_T1_gd`` is a contrast phase."""
    path = path.removesuffix("/")
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    return bool(_words(path) & (LABEL_WORDS - {"gd"})) or "gd" in _words(folder)


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
    only: dict[str, list[str]] = field(default_factory=dict)  # placeholder -> the values its cases take
    left_out: list[str] = field(default_factory=list)  # that placeholder's values no label names


def _skeleton(path: str) -> tuple[Any, ...]:
    """Separators and folder words exact; a file name's words and every number free."""
    toks = _tokens(path)
    last = len(path) - len(path.rsplit("/", 1)[-1])
    out, pos = [], 0
    for t in toks:
        if _is_num(t):
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
    groups = _merge_word_variants([_template(Group(ps)) for ps in by.values()])
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


def _merge_word_variants(groups: list[Group]) -> list[Group]:
    """Patterns differing in one word of the file name, each holding most of the same cases, as
    one ``{sequence}`` pattern: BIDS' ``sub-{case}_T1w`` and ``sub-{case}_FLAIR`` in one folder."""
    by_key: dict[tuple[str, str], list[tuple[Group, str]]] = {}
    for g in groups:
        if g.sequences:
            continue
        at = g.template.rfind("/") + 1
        for m in re.finditer(r"[A-Za-z0-9]+", g.template[at:]):
            a, b = at + m.start(), at + m.end()
            if g.template[:a].count("{") == g.template[:a].count("}") and m.group(0).lower() not in ("nii", "gz"):
                by_key.setdefault((g.template[:a], g.template[b:]), []).append((g, m.group(0)))
    merged: set[int] = set()
    out = [g for g in groups]
    for (head, tail), items in by_key.items():
        items = [(g, w) for g, w in items if id(g) not in merged]
        if not 2 <= len(items) <= 8 or len({re.sub(r"\d+", "", w) for _, w in items}) < len(items):
            continue
        sets = [{_case_key(v) for v in g.values} for g, _ in items]
        if len(set.intersection(*sets)) * 2 < len(set.union(*sets)):
            continue  # other cases, not other sequences of the same ones
        joined = Group([p for g, _ in items for p in g.paths], head + "{sequence}" + tail,
                       [{**v, "sequence": w} for g, w in items for v in g.values], sorted(w for _, w in items))
        merged.update(id(g) for g, _ in items)
        out = [g for g in out if id(g) not in merged] + [joined]
    return out


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
    name_at = max((k for k, t in enumerate(rows[0]) if "/" in t), default=-1)
    in_name = {s for (a, _), s in zip(spans, sigs, strict=True) if a > name_at}
    if sigs:  # the most values; among equals one in the file name (Case00 in TrainingData_Part1/), then the first
        names[max(set(sigs), key=lambda s: (len({t[sigs.index(s)] for t in texts}), s in in_name,
                                            -sigs.index(s)))] = "case"
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
    cand = [k for k, t in enumerate(toks) if _is_num(t) and not (seq and seq[0] <= k < seq[1])]
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
    name_at = max((k for k, t in enumerate(rows[0]) if "/" in t), default=-1)
    last = [w for w in moving if w[0] > name_at][-1:] or moving[-1:]
    for w in last:  # the file name's last changing word: a sequence suffix, not a site prefix (CHUM-001)
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
    for name, text in sorted(values.items(), key=lambda kv: (kv[0] != "case", -len(kv[1]))):
        if name == "sequence" or (name != "case" and "{case}" not in out):
            continue
        # a whole number, not one of a dotted UID's (1.2.840...) nor part of a word
        pat = re.compile(("(?<!\\d)(?<!\\d\\.)" if text[0].isdigit() else "(?<![A-Za-z])") + re.escape(text)
                         + ("(?!\\d)(?!\\.\\d)" if text[-1].isdigit() else "(?![A-Za-z])"))
        out, n = pat.subn("{" + name + "}", out)
        if not n and name == "case":  # the case must be there; another placeholder (a date folder) need not
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
    only: dict[str, list[str]] = field(default_factory=dict)  # placeholder -> its values with a label
    left_out: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # the image files (folders) the pattern was drawn from
    values: list[dict[str, str]] = field(default_factory=list)  # per path: placeholder -> its text


def _id_like(g: Group) -> Group:
    """``g`` with ``{case}`` holding the dataset's own id: the constant words before it in its
    folder or file name (``Case{case}.mhd`` → ``{case}.mhd`` with ``Case00``; ``case_{case}/`` →
    ``case_01``) and a constant ``-NNN`` after it (BraTS' timepoint ``-000`` where every case has
    the same one); ``g`` itself when the occurrences of ``{case}`` differ in them."""
    t = g.template
    pres: set[str] = set()
    posts: set[str] = set()
    for m in re.finditer(r"\{case\}", t):
        pres.add(t[t.rfind("/", 0, m.start()) + 1:m.start()])
        after = re.match(r"(?:-\d+)+(?!\d)", t[m.end():])
        posts.add(after.group(0) if after else "")
    if len(pres) != 1 or len(posts) != 1:
        return g
    pre, post = pres.pop(), posts.pop()
    if any(c in pre for c in "{}*"):
        pre = ""
    if not pre and not post:
        return g
    return Group(g.paths, t.replace(pre + "{case}" + post, "{case}"),
                 [{**v, "case": pre + v["case"] + post} if "case" in v else v for v in g.values],
                 g.sequences, g.only, g.left_out)


def _case_number(vals: dict[str, str]) -> str | None:
    """The number a label file of the case holds too, to look labels up by: the case's longest
    (the last among equals), not a prefix's ``22`` in ``FLARE22_Tr_0001``."""
    nums = [t for t in _tokens(vals.get("case", "")) if _is_num(t)]
    return max(reversed(nums), key=len) if nums else None


def _case_key(vals: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in vals.items() if k != "sequence"))


def _folders(path: str) -> set[str]:
    return _words(path.rsplit("/", 1)[0]) if "/" in path else set()


def _candidates(images: list[Group], labels: list[str],
                named: set[tuple[tuple[str, str], ...]] | None = None) -> dict[str, list[tuple[int, str]]]:
    """Per label file, the (image group, label template) pairs whose case text its path holds
    (and the cases some label names, into ``named``). Labels are looked up by a number of the
    case (:func:`_case_number`: linear, not every label per image)."""
    by_number: dict[str, list[str]] = {}
    for lab in labels:
        for num in {t for t in _tokens(lab) if _is_num(t)}:
            by_number.setdefault(num, []).append(lab)
    out: dict[str, list[tuple[int, str]]] = {}
    for gi, g in enumerate(images):
        seen: set[tuple[tuple[str, str], ...]] = set()
        for vals in g.values:
            key = _case_key(vals)
            if key in seen:  # one case's sequences hold one case text
                continue
            seen.add(key)
            number = _case_number(vals)
            for lab in (by_number.get(number, []) if number else labels):
                template = _replace_case(lab, vals)
                if template is not None and template != lab:
                    out.setdefault(lab, []).append((gi, template))
                    if named is not None:
                        named.add(key)
    return out


def _best_group(images: list[Group], lab: str, cands: list[tuple[int, str]]) -> int | None:
    """The image group a label file belongs to: not one of another split (imagesTs beside
    labelsTr), then the one whose folders share most words with the label's (and have fewest
    others), then one whose file name is the label's without its label words."""
    split = _split(lab)
    ok = [gi for gi, _ in cands if split is None or _split(images[gi].template) in (None, split)]
    if not ok:
        return None
    # ACDC's patient001_frame01_gt is the frame's patient001_frame01 with _gt, not the 4-D cine's patient001_4d
    same = {gi for g2, t in cands if (gi := g2) in ok and _name_of(t) == _name_of(images[g2].template)}
    # among equals the one with fewer folder words of its own: BraTS-MEN-Train's seg is not BraTS-MEN-Train-Fix's
    return max(dict.fromkeys(ok), key=lambda gi: (len(_folders(lab) & _folders(images[gi].template)),
                                                  -len(_folders(images[gi].template) - _folders(lab)), gi in same, -gi))


def _name_of(template: str) -> str:
    """A pattern's file name without its label words (``{case}_SA_{phase}_gt.nii.gz`` → ``{case}_SA_{phase}.nii.gz``)."""
    return re.sub(r"[-_. ]?([A-Za-z]+)", lambda m: "" if m.group(1).lower() in LABEL_WORDS else m.group(0),
                  template.rsplit("/", 1)[-1])


_PHASE_WORDS = frozenset({"ed", "es", "dia", "sys", "diastole", "systole", "diastolic", "systolic"})


def _labelled_word(g: Group, labels: list[str]) -> Group:
    """``g`` with its sequence word as a placeholder of the case's identity when the label files
    repeat it, one label per value (M&Ms-2's ``001_SA_ED_gt`` beside ``001_SA_ES_gt``): ED and ES
    are two cases with a label each, ``{phase}`` in image and label as the built-in CMRxMotion
    YAML has it — as sequences the ES frame got the ED frame's label. ``g.only`` keeps the values
    a label names (not M&Ms-2's 4-D ``CINE``); ``g`` itself when no two values have labels of
    their own (a BraTS seg shared by its sequences)."""
    if not g.sequences:
        return g
    name = "variant"
    trial = Group(g.paths, g.template.replace("{sequence}", "{" + name + "}"),
                  [{(name if k == "sequence" else k): v for k, v in vals.items()} for vals in g.values])
    by_number: dict[str, list[str]] = {}
    for lab in labels:
        for num in {t for t in _tokens(lab) if _is_num(t)}:
            by_number.setdefault(num, []).append(lab)
    named: set[str] = set()
    for vals in trial.values:
        number = _case_number(vals)
        for lab in (by_number.get(number, []) if number else labels):
            t = _replace_case(lab, vals)
            if t is not None and "{" + name + "}" in t:
                named.add(vals[name])
    if len(named) < 2:
        return g
    if {v.lower() for v in named} <= _PHASE_WORDS:  # ED/ES: the cardiac phase
        trial.template = trial.template.replace("{variant}", "{phase}")
        trial.values = [{("phase" if k == name else k): v for k, v in vals.items()} for vals in trial.values]
        name = "phase"
    trial.only = {name: sorted(named)} if named != set(g.sequences) else {}
    trial.left_out = sorted(set(g.sequences) - named)
    keep = [i for i, v in enumerate(trial.values) if v[name] in named]
    trial.paths, trial.values = [trial.paths[i] for i in keep], [trial.values[i] for i in keep]
    return trial


def _with_id(g: Group, labels: list[str]) -> Group:
    """:func:`_id_like`'s ``g`` when its label files hold the longer id as well (``Case00`` in
    ``Case00_segmentation.mhd``; not BTCV's ``img0001`` beside ``label0001``)."""
    g2 = _id_like(g)
    if g2 is g or not labels or _with_label(g2, labels) >= _with_label(g, labels):
        return g2
    return g


def _with_label(g: Group, labels: list[str]) -> int:
    """How many of ``g``'s cases some label file names (:func:`_candidates`)."""
    named: set[tuple[tuple[str, str], ...]] = set()
    _candidates([g], labels, named)
    return len(named)


def pair(images: list[Group], labels: list[str]) -> tuple[list[Entry], list[str]]:
    """Each image pattern with the label pattern most of its cases have; the label files no
    image claims. A label file goes to one image pattern only (:func:`_best_group`)."""
    images = sorted((_labelled_word(_with_id(g, labels), labels) for g in images), key=lambda g: g.template)
    found: list[dict[str, list[str]]] = [{} for _ in images]
    for lab, cands in _candidates(images, labels).items():
        gi = _best_group(images, lab, cands)
        for g2, t in cands:
            if g2 == gi:
                found[gi].setdefault(t, []).append(lab)
    claimed: set[str] = set()
    entries = []
    for g, by_template in zip(images, found, strict=True):
        cases = len({_case_key(vals) for vals in g.values})
        label, structures, files = _label_of(by_template)
        claimed.update(files)
        image, label = _wildcards(g, label)
        entries.append(Entry(image, label, cases, min(_labelled(label, files), cases), structures, g.sequences,
                             _split(g.template), sorted(set(files)), g.only if label else {},
                             g.left_out if label else [], paths=g.paths, values=g.values))
    return entries, [lab for lab in labels if lab not in claimed]


def _labelled(label: str | None, files: list[str]) -> int:
    """How many cases the label files are of: each a case's own, or a case's structure files."""
    if not label:
        return 0
    if "{structure}" not in label:
        return len(set(files))
    from curator.registry.layout import compile_pattern

    rx = compile_pattern(label.rstrip("/"), {})
    return len({tuple(v for k, v in sorted(m.groupdict().items()) if k != "structure")
                for f in files if (m := rx.fullmatch(f.rstrip("/")))})


def _label_of(found: dict[str, list[str]]) -> tuple[str | None, list[str], list[str]]:
    """(label pattern, structure names, its files) from the label templates an image pattern's
    cases have: one mask per structure when a folder holds several per case and no single label
    file covers as many cases (KiTS23's segmentation.nii.gz over its instances/ files)."""
    if not found:
        return None, [], []
    def best(ts: list[str]) -> str:
        return max(ts, key=lambda t: (len(set(found[t])), -len(t)))

    sets = _structure_sets(list(found))
    if sets:
        pattern, ts, names = max(sets, key=lambda st: (len(st[1]), sum(len(found[t]) for t in st[1])))
        covered = {f for t in ts for f in found[t]}
        outside = [t for t in found if t not in ts]
        if not outside or len(set(found[best(outside)])) < _labelled(pattern, sorted(covered)):
            return pattern, names, sorted(covered)
        single = best(outside)
        return single, [], found[single]
    single = best(list(found))
    return single, [], found[single]


def _structure_sets(templates: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """``(pattern with {structure}, the label templates it stands for, their structure names)``
    for every three or more label templates of one case that differ only in their last words:
    the files of one folder (``{case}/segmentations/liver.nii.gz``), or the names after the same
    case words (HaN-Seg's ``{case}_OAR_Brainstem.seg.nrrd``: ``{case}_OAR_{structure}.seg.nrrd``)
    — there, names differing only in numbers are frames, not structures (ACDC's ``_frame01_gt``)."""
    by: dict[tuple[str, str, str], list[tuple[str, str]]] = {}  # (folder, name head, ext) -> (template, name)
    for t in templates:
        folder, name = (t.rsplit("/", 1) if "/" in t else ("", t))
        ext = _ext(name)
        if not ext or ext == "/":
            continue
        cut = name.rfind("}") + 1  # after the case's words in the name, if it holds them
        by.setdefault((folder, name[:cut], ext), []).append((t, name[cut:len(name) - len(ext)]))
    out = []
    for (folder, head, ext), items in by.items():
        if len(items) < 3:
            continue
        rest = [r for _, r in items]
        common = os.path.commonprefix(rest)
        keep = max(common.rfind(c) for c in "_-. ") + 1 if head else 0  # the words every name shares
        names = sorted({r[keep:] for r in rest})
        if "" in names or head and len({re.sub(r"\d+", "", n) for n in names}) < 2:
            continue
        out.append(((folder + "/" if folder else "") + head + rest[0][:keep] + "{structure}" + ext,
                    [t for t, _ in items], names))
    return out


def _wildcards(g: Group, label: str | None) -> tuple[str, str | None]:
    """``g``'s pattern and the label pattern with each folder placeholder other than {case} and
    {sequence} as ``*`` when the case alone tells the images apart (a study date or series
    number folder: Pancreas-CT, autoPET; PROMISE12's ``TrainingData_Part{part}``), so it is no
    part of the case id."""
    extra = [n for n in dict.fromkeys(re.findall(r"\{(\w+)\}", g.template.rsplit("/", 1)[0] if "/" in g.template
                                                else "")) if n not in ("case", "sequence")]
    ids = [(v.get("case"), v.get("sequence")) for v in g.values]
    if not extra or len(set(ids)) < len(ids):
        return g.template, label
    folder, name = g.template.rsplit("/", 1)
    for n in extra:
        folder = folder.replace("{" + n + "}", "*")
        label = label.replace("{" + n + "}", "*") if label else label
    return folder + "/" + name, label


def _ext(path: str) -> str:
    low = path.lower()
    return next((path[-len(e):] for e in (".seg.nrrd", *_VOLUME) if low.endswith(e)), "/" if path.endswith("/") else "")


def _split(template: str) -> str | None:
    """The split a folder names (``imagesTr``, ``validation``, ``...-ValidationData``), if one
    does: a name of :data:`~curator.registry.splits.SPLIT_NAMES`, after an ``images``/``labels``
    prefix (the short ``Tr``/``Va``/``Ts`` only after one) or before a ``data`` suffix."""
    from curator.registry.splits import SPLIT_NAMES

    parts = {p.lower() for p in template.split("/")[:-1]}
    found = set()
    for w in parts | _words("/".join(template.split("/")[:-1])):
        for pre, suf in (("", ""), ("images", ""), ("labels", ""), ("", "data")):
            core = w[len(pre):len(w) - len(suf)] if w.startswith(pre) and w.endswith(suf) else ""
            if core in SPLIT_NAMES and (pre or core not in ("tr", "va", "ts")):
                found.add(SPLIT_NAMES[core])
    return next((s for s in ("train", "val", "test") if s in found), None)


def label_values(root: Path, files: list[str], n: int = 3,
                 unread: list[tuple[str, CuratorError]] | None = None) -> dict[int, int]:
    """Voxels per raw value over the first ``n`` readable label files (DICOM folders skipped);
    the files that could not be read, with why, are added to ``unread``."""
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
        except CuratorError as e:  # a 4-D label map (M&Ms' _sa_gt): said in the draft, not silently skipped
            if unread is not None:
                unread.append((f, e))
            continue
        vals, cnt = np.unique(vol.array, return_counts=True)
        counts.update({int(v): int(c) for v, c in zip(vals, cnt, strict=True)})
        read += 1
    return dict(sorted(counts.items()))


def _unread_note(unread: list[tuple[str, CuratorError]], found: bool) -> str:
    """What the draft says of the label files it could not read: how many, the kinds, one example."""
    kinds = Counter(e.kind for _, e in unread)
    f, e = unread[0]
    what = "; ".join(f"{k} {n}" for k, n in kinds.most_common())
    return (f"{len(unread)} label file(s) could not be read ({what}), e.g. {f}: {e.detail}"
            + ("" if found else " — so no label value is known: `values: {1: TODO}` is a placeholder, and "
               "ingest will refuse these files the same way"))


def _index_json(root: Path) -> dict[str, Any]:
    """An MSD/nnU-Net ``dataset.json`` at the root (empty without one; a link out of the root,
    a file over 1 MiB or one that is no JSON object is not read)."""
    from curator.io.confined import read_text_inside

    try:
        _, text = read_text_inside(root, "dataset.json", "index file", "none: a draft without it", limit=1 << 20)
        d = json.loads(text)
    except (CuratorError, OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def index_names(root: Path) -> dict[int, str]:
    """Raw value -> name from an MSD/nnU-Net ``dataset.json`` at the root (empty without one)."""
    from curator.harmonize.mapping import label_block_names

    return label_block_names(_index_json(root).get("labels"))


def _mr_word(w: str) -> bool:
    return w in _MR_WORDS or bool(re.fullmatch(r"(ce|hr)?t[12][a-z]{0,3}", w))  # t1, t1n, t2w, ceT1, hrT2


def guess_modality(paths: list[str]) -> str:
    """CT, MR or PET from the words of the paths (``t1n``, ``FLAIR``, ``mr_train``; ``PET``, ``SUV``)."""
    words = {w.lower() for p in paths for w in re.split(r"[^A-Za-z0-9]+", p) if w}
    if words & {"pet", "suv", "pt"} and not words & {"ct"}:
        return "PET"
    if any(_mr_word(w) for w in words) and not words & {"ct"}:
        return "MR"
    return "CT"


def sequence_modality(name: str, channel_names: dict[str, str], default: str) -> str:
    """A sequence's modality: nnU-Net's ``channel_names`` for ``0000``-style sequences, else its name."""
    if re.fullmatch(r"\d{4}", name) and str(int(name)) in channel_names:
        name = channel_names[str(int(name))]
    low = name.lower()
    return _SEQ_MODALITY.get(low) or ("MR" if _mr_word(low) or low in ("t1", "t2") else default)


def index_channels(root: Path) -> dict[str, str]:
    """Channel index -> name from a ``dataset.json`` at the root (nnU-Net ``channel_names``, MSD ``modality``)."""
    d = _index_json(root)
    names = d.get("channel_names") or d.get("modality")
    return {str(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}


@dataclass
class Draft:
    """The draft YAML as a mapping, and what was guessed (for the command's summary)."""

    spec: dict[str, Any]
    entries: list[Entry]
    unclaimed_labels: list[str]
    notes: list[str]
    comments: dict[str, str] = field(default_factory=dict)  # top-level key -> a comment written above it


def scaffold(root: Path, name: str, modality: str | None = None) -> Draft:
    """A draft dataset mapping for the download under ``root``."""
    from curator.registry.layout import scan
    from curator.taxonomy import load_taxonomy

    tree = scan(root, (".*", "._*"))
    vols = volumes(root, tree.files)
    labels = [v for v in vols if is_label(v)]
    if vols and len(labels) == len(vols):  # a folder word over every file (CMRxMotion's segmentation/): the names tell
        labels = [v for v in vols if is_label(v.removesuffix("/").rsplit("/", 1)[-1])] or labels
    images = [v for v in vols if v not in set(labels)]
    entries, unclaimed = pair(group_images(images), labels) if images else ([], labels)
    notes: list[str] = []
    if modality is None:
        modality = guess_modality(images)
        if modality == "CT" and "ct" not in {w.lower() for p in images for w in re.split(r"[^A-Za-z0-9]+", p)}:
            notes.append("modality CT is a guess: no file or folder name says CT, MR or PET (give --modality)")
    tax = load_taxonomy()
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
        unread: list[tuple[str, CuratorError]] = []
        counts = label_values(root, [f for e in entries for f in e.label_files], unread=unread)
        values = {v: _term(tax, names[v]) if v in names else TODO for v in counts if v != 0}
        labels_block = {"encoding": "label_map", "values": values or {1: TODO}}
        if counts:
            notes.append("label values found (voxels in up to 3 files): "
                         + ", ".join(f"{v}: {c:,}" for v, c in counts.items()))
        if unread:
            notes.append(_unread_note(unread, bool(counts)))
    else:
        labels_block = {"encoding": "none"}
    sequences = sorted({s for e in entries for s in e.sequences})
    channels = index_channels(root)
    spec: dict[str, Any] = {"name": name, "version": TODO, "modality": modality}
    if sequences:
        spec["sequences"] = {s: sequence_modality(s, channels, modality) for s in sequences}
    for e, entry in zip(entries, layout, strict=True):  # ct_train/ beside mr_train/ (MM-WHS)
        folder = e.image.rsplit("/", 1)[0] if "/" in e.image else ""
        own = guess_modality([folder]) if folder else modality
        if not e.sequences and own != modality and (own != "CT" or "ct" in _words(folder)):
            entry["modality"] = own
    only: dict[str, list[str]] = {}
    for e in entries:
        for k, vs in e.only.items():
            only[k] = sorted({*only.get(k, []), *vs})
    for k, vs in only.items():
        skipped = sorted({v for e in entries if k in e.only for v in e.left_out})
        notes.append(f"{{{k}}} takes {', '.join(vs)} only (patterns:): a label file names each of them"
                     + (f", none names {', '.join(skipped)}" if skipped else ""))
    notes += _same_cases(entries, layout, modality)
    spec |= {"region": TODO, "licence": TODO, "citation": TODO, "homepage": TODO, "layout": layout}
    patterns = {k: "|".join(re.escape(v) for v in vs) for k, vs in only.items()}
    comments: dict[str, str] = {}
    patient, case_rx = _patient(entries)
    if case_rx and _fits(entries, vols, {**patterns, "case": case_rx}, spec.get("sequences") or {}) is not None:
        patterns["case"], said = case_rx, "subject"
    else:
        patient, said = "{case}", "case"
        narrow = _narrowed(entries, vols, patterns, spec.get("sequences") or {})
        if narrow:
            patterns["case"] = narrow[0]
            notes.append(f"patterns: {{case: '{narrow[0]}'}} keeps the image patterns off {narrow[1]} other file(s) "
                         f"they match, e.g. {narrow[2]}")
    if patterns:
        spec["patterns"] = patterns
    spec["patient_id"] = patient
    comments["patient_id"] = _PATIENT_NOTE[said].format(examples=", ".join(same_subject(_case_ids(entries))))
    spec["labels"] = labels_block
    phase = _phase(root, tree.files, images, entries, spec.get("patterns") or {})
    if phase:
        spec["phase"] = phase
        notes.append(f"phase: {phase['file']} beside the images names their ED and ES frames, and {{{phase['frame']}}} "
                     "is the frame number (cases.phase; QC judges the two phases apart)")
    if unclaimed:
        notes.append(f"{len(unclaimed)} label file(s) no image pattern claims, e.g. {unclaimed[0]}")
    return Draft(spec, entries, unclaimed, notes, comments)


_PATIENT_NOTE = {
    "case": "check: one patient per case id. When a patient has several (timepoints, visits, studies), give {{case}} "
            "named groups under patterns: and name the patient by them — case: '(?P<subject>...)-(?P<timepoint>...)' "
            "with patient_id: '{{subject}}' — or splits put one patient's cases on both sides",
    "subject": "check: the case ids share a subject and differ in a trailing number ({examples}): read as subject "
               "and timepoint, so one subject's cases are one patient (splits keep them together); if the leading "
               "part names no person (a site, a series), write patient_id: '{{case}}'",
}


_TIMEPOINT = re.compile(r"(?P<subject>.*(?:\d|(?<![A-Za-z0-9])[0-9a-f]{8,}))(?P<sep>[-_])(?P<timepoint>\d+)")


def timepoint_subjects(case_ids: list[str]) -> dict[str, list[str]] | None:
    """Subject -> its timepoints, when every case id is ``<subject><-|_><number>``, the subject
    ending in a number (``BraTS-MEN-00008-001``, CMRxMotion's ``P001-2``, autoPET's
    ``<hex>_<study>``), with one separator, two subjects or more and one of them with several
    numbers; else None (``CHUM-001`` names a centre, ``FLARE22_Tr_0001`` a series, ``LUNG1-001``
    one collection).

    >>> timepoint_subjects(["BraTS-MEN-00008-000", "BraTS-MEN-00008-001", "BraTS-MEN-00004-000"])
    {'BraTS-MEN-00004': ['000'], 'BraTS-MEN-00008': ['000', '001']}
    >>> timepoint_subjects(["CHUM-001", "CHUM-002", "MDA-001"]), timepoint_subjects(["LUNG1-001", "LUNG1-002"])
    (None, None)
    """
    by: dict[str, set[str]] = {}
    seps = set()
    for c in case_ids:
        m = _TIMEPOINT.fullmatch(c)
        if m is None:
            return None
        by.setdefault(m["subject"], set()).add(m["timepoint"])
        seps.add(m["sep"])
    if len(by) < 2 or len(seps) != 1 or all(len(t) < 2 for t in by.values()):
        return None
    return {k: sorted(v) for k, v in sorted(by.items())}


def subject_regex(case_ids: list[str]) -> str | None:
    r"""``(?P<subject>…)<sep>(?P<timepoint>…)`` for the case ids :func:`timepoint_subjects` reads
    so (each part's shape: :func:`~curator.registry.layout.shape_regex`), else None.

    >>> subject_regex(["BraTS-MEN-00008-000", "BraTS-MEN-00008-001", "BraTS-MEN-00004-000"])
    '(?P<subject>BraTS-MEN-\\d{5})-(?P<timepoint>\\d{3})'
    """
    from curator.registry.layout import shape_regex

    found = timepoint_subjects(case_ids)
    if found is None:
        return None
    m = _TIMEPOINT.fullmatch(case_ids[0])
    subj, tp = shape_regex(list(found)), shape_regex([t for ts in found.values() for t in ts])
    if m is None or subj is None or tp is None:
        return None
    return f"(?P<subject>{subj}){m['sep']}(?P<timepoint>{tp})"


def _case_ids(entries: list[Entry]) -> list[str]:
    return sorted({v["case"] for e in entries if "{case}" in e.image for v in e.values if "case" in v})


def _patient(entries: list[Entry]) -> tuple[str, str | None]:
    """The draft's ``patient_id`` and ``patterns: {case: ...}`` when the case ids read as subject
    and timepoint (:func:`timepoint_subjects`): ``{subject}``; else ``{case}``, None."""
    rx = subject_regex(_case_ids(entries))
    return ("{subject}", rx) if rx else ("{case}", None)


def same_subject(case_ids: list[str]) -> list[str]:
    """Two case ids of one subject (:func:`timepoint_subjects`), to show; ``[]`` when none are."""
    for subject, tps in (timepoint_subjects(case_ids) or {}).items():
        if len(tps) > 1:
            return [c for c in case_ids if (m := _TIMEPOINT.fullmatch(c)) and m["subject"] == subject][:2]
    return []


def _fits(entries: list[Entry], files: list[str], patterns: dict[str, str],
          sequences: dict[str, Any]) -> list[str] | None:
    """The files other than their own that the entries' image patterns match under ``patterns``
    (``sequences`` declared), or None when a pattern no longer matches one of its own files."""
    from curator.registry.layout import compile_pattern

    custom = dict(patterns)
    if sequences and "sequence" not in custom:
        custom["sequence"] = "|".join(re.escape(k) for k in sorted(sequences, key=lambda k: (-len(k), k)))
    other: list[str] = []
    for e in entries:
        try:
            rx = compile_pattern(e.image.rstrip("/"), custom)
        except re.error:
            return None
        own = {p.rstrip("/") for p in e.paths}
        if not all(rx.fullmatch(p) for p in own):
            return None
        other += [f for f in files if f.rstrip("/") not in own and rx.fullmatch(f.rstrip("/"))]
    return sorted(set(other))


def _narrowed(entries: list[Entry], files: list[str], patterns: dict[str, str],
              sequences: dict[str, Any]) -> tuple[str, int, str] | None:
    """``(regex for {case}, how many files it keeps out, one of them)`` when the image patterns
    match other files than their own (PROMISE12's ``{case}.mhd`` its ``Case00_segmentation.mhd``)
    and a regex of the case ids' shape keeps every one of them out."""
    from curator.registry.layout import shape_regex

    if "case" in patterns:
        return None
    loose = _fits(entries, files, patterns, sequences)
    rx = shape_regex(_case_ids(entries))
    if not loose or rx is None:
        return None
    tight = _fits(entries, files, {**patterns, "case": rx}, sequences)
    return (rx, len(loose), loose[0]) if tight == [] else None


_FIX_WORDS = frozenset({"fix", "fixed", "corrected", "correction", "corrections", "revised", "update", "updated"})


def _same_cases(entries: list[Entry], layout: list[dict[str, Any]], modality: str) -> list[str]:
    """Entries whose images are cases of the same ids (they would be ``duplicate_case`` errors):
    another file of the same cases in one folder (HaN-Seg's ``{case}_IMG_MR_T1.nrrd`` beside the
    labelled ``{case}_IMG_CT.nrrd``) becomes ``sequence:`` (the words its name differs in, part of
    the case id) with the modality they name; the same files in a folder named like the other's
    with more words (``BraTS-MEN-Train-Fix`` beside ``BraTS-MEN-Train``) or a word saying so
    (``corrected``) ``overrides: true``. Returns the notes saying what was drafted."""
    notes: list[str] = []
    ids = []
    for e in entries:
        names = [n for n in dict.fromkeys(re.findall(r"\{(\w+)\}", e.image)) if n != "structure"]
        ids.append((names, {tuple(v.get(n, "") for n in names) for v in e.values}))
    for j, b in enumerate(entries):
        for i, a in enumerate(entries[:j]):
            if ids[i][0] != ids[j][0] or "sequence" in layout[i] or "sequence" in layout[j]:
                continue
            both = ids[i][1] & ids[j][1]
            if not both:
                continue
            seq = ids[i][0].index("sequence") if "sequence" in ids[i][0] else None
            shared = {k[:seq] + k[seq + 1:] if seq is not None else k for k in both}  # cases, not their sequences
            sa, sb = a.image.split("/"), b.image.split("/")
            diff = [k for k in range(len(sa)) if len(sa) == len(sb) and sa[k] != sb[k]]
            if diff == [len(sa) - 1]:
                k, other = (i, j) if b.label and not a.label else (j, i)
                word = _differing_words(layout[other]["image"].rsplit("/", 1)[-1], layout[k]["image"].rsplit("/", 1)[-1])
                if not word:
                    continue
                layout[k]["sequence"] = word
                own = guess_modality([word])
                if own != modality and (own != "CT" or "ct" in _words(word)):
                    layout[k]["modality"] = own
                notes.append(f"layout[{k}] ({layout[k]['image']}) holds {len(shared)} of the cases of layout[{other}] "
                             f"again, another image of each: drafted as `sequence: {word}` (part of its case ids)"
                             + (f" with `modality: {layout[k]['modality']}`" if "modality" in layout[k] else "")
                             + ("; it has no label of its own: remove the entry if the labels are not for it"
                                if not entries[k].label else ""))
            elif len(diff) == 1:
                fa, fb = sa[diff[0]], sb[diff[0]]
                over = (j if fb.startswith(fa) or _words(fb) & _FIX_WORDS else
                        i if fa.startswith(fb) or _words(fa) & _FIX_WORDS else None)
                if over is None:
                    notes.append(f"layout[{i}] and layout[{j}] find {len(shared)} case(s) of the same ids in "
                                 f"{fa}/ and {fb}/: decide which is read (`overrides: true` on it) or exclude one")
                    continue
                other = i if over == j else j
                layout[over]["overrides"] = True
                notes.append(f"layout[{over}] ({(fb if over == j else fa)}/) holds {len(shared)} of the cases of "
                             f"layout[{other}] again: drafted `overrides: true`, so its files replace theirs (a folder "
                             "of corrected cases) — check the dataset's notes say so")
    return notes


def _differing_words(name: str, other: str) -> str:
    """The words of file name ``other`` that ``name`` does not have, between the words both
    start and end with (``{case}_IMG_CT.nrrd``, ``{case}_IMG_MR_T1.nrrd`` → ``MR_T1``); ``""``
    when that is no plain word."""
    head = os.path.commonprefix([name, other])
    head = head[:max(head.rfind(c) for c in "_-. }") + 1]
    tail = os.path.commonprefix([name[len(head):][::-1], other[len(head):][::-1]])[::-1]
    tail = tail[min((tail.find(c) for c in "_-." if c in tail), default=len(tail)):]
    word = other[len(head):len(other) - len(tail)].strip("_-. ")
    return word if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", word) else ""


def _phase(root: Path, files: list[str], images: list[str], entries: list[Entry],
           patterns: dict[str, str]) -> dict[str, str] | None:
    """The draft's ``phase:`` (:func:`curator.ingest.phase.guess_phase`) from the first labelled
    entry whose images sit beside a file naming their ED and ES frames (ACDC's Info.cfg)."""
    from curator.ingest.phase import guess_phase
    from curator.registry.layout import compile_pattern

    for e in entries:
        if e.label:
            found = guess_phase(root, files, images, compile_pattern(e.image.rstrip("/"), patterns))
            if found:
                return found
    return None


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
        what = (f"{e.labelled} with some of {len(e.structures)} structure files" if e.structures else
                f"{e.labelled} with a label" if e.label else "no label found")
        head.append(f"#   {e.image}: {e.cases} case(s), {what}"
                    + (f", sequences {', '.join(e.sequences)}" if e.sequences else ""))
    head += [f"# {n}" for n in d.notes]
    # a file or folder name is the user's, but it must not end a comment line and start YAML
    head = [re.sub(r"[\r\n\x00-\x1f\x7f\u2028\u2029\x85]", "?", h) for h in head]
    body = yaml.safe_dump(d.spec, sort_keys=False, allow_unicode=True, width=110)
    for key, said in d.comments.items():  # above the key's line (a top-level key starts a line)
        lines = textwrap.wrap(re.sub(r"[\r\n\x00-\x1f\x7f\u2028\u2029\x85]", "?", said), 108, break_on_hyphens=False)
        at = re.search(rf"^{re.escape(key)}:", body, flags=re.MULTILINE)
        if at:
            body = body[:at.start()] + "".join(f"# {t}\n" for t in lines) + body[at.start():]
    return "\n".join(head) + "\n" + body
