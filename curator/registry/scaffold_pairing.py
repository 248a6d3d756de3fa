"""Label files paired with image patterns for :mod:`curator.registry.scaffold`: a label belongs
to the image whose case text its path holds (:func:`pair`); several label files per case that
differ in their last words are ``{structure}``; a sequence word the labels repeat is part of the
case (``{phase}``); a folder placeholder the case alone tells apart is ``*``.

>>> _replace_case("labelsTr/la_003.nii.gz", {"case": "003"})
'labelsTr/la_{case}.nii.gz'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from curator.registry.scaffold_files import LABEL_WORDS, _ext, _is_num, _split, _tokens, _words
from curator.registry.scaffold_patterns import Group, _case_key, _id_like


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


def _case_number(vals: dict[str, str]) -> str | None:
    """The number a label file of the case holds too, to look labels up by: the case's longest
    (the last among equals), not a prefix's ``22`` in ``FLARE22_Tr_0001``."""
    nums = [t for t in _tokens(vals.get("case", "")) if _is_num(t)]
    return max(reversed(nums), key=len) if nums else None


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
