"""What a file of a download is, for :mod:`curator.registry.scaffold`: its tokens (letters,
numbers, separators), whether a word says it is a label, which files are volumes (and which
folders DICOM series), the extension a pattern keeps and the split a folder names.

>>> is_label("labelsTr/la_003.nii.gz"), is_label("imagesTr/la_003.nii.gz")
(True, False)
>>> _tokens("BraTS-GLI-00000-000/x_0011f3deaf.nii.gz")[:5], _split("imagesTr/{case}.nii.gz")
(['BraTS', '-', 'GLI', '-', '00000'], 'train')
"""

from __future__ import annotations

import re
from pathlib import Path

from curator.errors import CuratorError

LABEL_WORDS = frozenset({
    "label", "labels", "labelstr", "labelsts", "labelsva", "labelsval", "lb", "lbl", "seg", "segs",
    "segmentation", "segmentations", "mask", "masks", "msk", "gt", "groundtruth", "ground", "truth",
    "annotation", "annotations", "dseg", "roi", "structures", "contours", "gd"})
_TOKENS = re.compile(r"[A-Za-z]+|\d+|[^A-Za-z\d]+")
_VOLUME = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_DICOM = (".dcm", ".dicom", ".ima")


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
