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

The pieces: :mod:`~curator.registry.scaffold_files` (tokens, label words, volume files),
:mod:`~curator.registry.scaffold_patterns` (image patterns), :mod:`~curator.registry.scaffold_pairing`
(labels to images, structures), :mod:`~curator.registry.scaffold_values` (label values, index
file, modality), :mod:`~curator.registry.scaffold_patients` (patient id, case regex); this module
puts them together (:func:`scaffold`) and writes the YAML (:func:`to_yaml`).
"""

from __future__ import annotations

import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.errors import CuratorError
from curator.registry.scaffold_files import LABEL_WORDS, _words, is_label, volumes
from curator.registry.scaffold_pairing import Entry, pair
from curator.registry.scaffold_patients import (
    _PATIENT_NOTE,
    _case_ids,
    _fits,
    _narrowed,
    _patient,
    same_subject,
    subject_regex,
    timepoint_subjects,
)
from curator.registry.scaffold_patterns import Group, group_images
from curator.registry.scaffold_values import (
    TODO,
    _term,
    _unread_note,
    guess_modality,
    index_channels,
    index_names,
    label_values,
    sequence_modality,
)

__all__ = ["LABEL_WORDS", "TODO", "Draft", "Entry", "Group", "group_images", "guess_modality", "index_channels",
           "index_names", "is_label", "label_values", "pair", "same_subject", "scaffold", "sequence_modality",
           "subject_regex", "timepoint_subjects", "to_yaml", "volumes"]


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
