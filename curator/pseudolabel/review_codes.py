"""One label code per term across a review export, its colour tables, and the dataset's own label.

A store's pseudo layer numbers its terms by the order it met them, so the same term had another
code in another case: a reviewer's ITK-SNAP label descriptions loaded for one case named the
wrong structures in the next. :func:`export_codes` gives each term list (a code's terms) one
code for the whole export folder — the codes an earlier export into the folder gave are kept, a
new term list gets the next free code — and :func:`write_colour_tables` writes them as ITK-SNAP
and 3D Slicer tables, at the export's root (every term) and in each case folder (the case's).

>>> export_codes_for({("liver",): 7}, [("spleen",), ("liver",), ("aorta",)])
{('liver',): 7, ('aorta',): 8, ('spleen',): 9}
>>> recoded(np.array([0, 1, 2], np.uint8), {1: ["spleen"], 2: ["liver"]}, {("liver",): 7, ("spleen",): 9}).tolist()
[0, 9, 7]
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.io.fsutil import atomic_path
from curator.pseudolabel.terms import term_name
from curator.store import CaseStore

CODES = "codes.json"
ORIGINAL = "original.nii.gz"
TermList = tuple[str, ...]

# distinct colours for label codes 1, 2, ... (cycled); 0 is background
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40))


def read_codes(path: Path) -> dict[TermList, int]:
    """``{term list: code}`` of a ``codes.json`` (``{"1": ["liver"], ...}``); empty when the file
    is missing or is not such a mapping (an export written before the export's codes were one)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {tuple(str(t) for t in ts): int(c) for c, ts in raw.items()
                if isinstance(ts, list) and int(c) > 0} if isinstance(raw, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}


def export_codes_for(known: Mapping[TermList, int], lists: Iterable[TermList]) -> dict[TermList, int]:
    """``known`` codes, plus the next free code for each term list of ``lists`` it lacks (in
    sorted order, so the same cases give the same codes)."""
    out = dict(known)
    nxt = max(out.values(), default=0) + 1
    for ts in sorted(set(lists) - set(out)):
        out[ts] = nxt
        nxt += 1
    return out


def case_term_lists(store: CaseStore, layers: Iterable[str] = ("pseudo", "original")) -> set[TermList]:
    """The term lists of the codes of a store's ``layers`` (metadata only: no voxel is read)."""
    return {tuple(ts) for layer in layers for _, vals in store.plane_values(layer) for ts in vals.values()}


def export_codes(stores: Iterable[CaseStore], known: Mapping[TermList, int] | None = None) -> dict[TermList, int]:
    """The codes of an export of ``stores``: the ``known`` ones (``codes.json`` of an earlier export
    into the folder) kept, then one for each other term list of their pseudo layers, then of their
    original layers (the codes a reviewer paints with come first)."""
    stores = list(stores)
    pseudo = set().union(*(case_term_lists(s, ("pseudo",)) for s in stores))
    original = set().union(*(case_term_lists(s, ("original",)) for s in stores))
    return export_codes_for(export_codes_for(known or {}, pseudo), original - pseudo)


def recoded(plane: NDArray[Any], values: Mapping[int, list[str]], codes: Mapping[TermList, int]) -> NDArray[Any]:
    """``plane`` (a store's codes ``values``) in the export's ``codes``: uint8, or uint16 above 255."""
    top = max(codes.values(), default=0)
    lut = np.zeros(max([*values, 0]) + 1, np.uint8 if top < 256 else np.uint16)
    for c, ts in values.items():
        lut[int(c)] = codes[tuple(ts)]
    arr = np.asarray(plane)
    return lut[np.clip(arr, 0, len(lut) - 1)] if arr.size else arr.astype(lut.dtype)


def codes_json(codes: Mapping[TermList, int]) -> dict[str, list[str]]:
    """``{"code": [terms]}`` by code, as codes.json holds them."""
    return {str(c): list(ts) for ts, c in sorted(codes.items(), key=lambda kv: kv[1])}


def write_codes(folder: Path, codes: Mapping[str, list[str]]) -> None:
    """``codes.json`` and the colour tables of ``codes`` (``{"code": [terms]}``) into ``folder``."""
    with atomic_path(folder / CODES) as tmp:
        tmp.write_text(json.dumps(dict(codes), indent=1) + "\n")
    write_colour_tables(codes, folder)


def write_colour_tables(codes: Mapping[str, list[str]], folder: Path) -> None:
    """``labels_itksnap.txt`` (ITK-SNAP label description file) and ``labels_slicer.txt`` (3D
    Slicer colour table) naming each code of ``codes`` by its term(s); a code's colour depends on
    the code only, so it is the same in every case of an export."""
    rows = [(int(c), " + ".join(term_name(t) for t in ts), PALETTE[(int(c) - 1) % len(PALETTE)])
            for c, ts in sorted(codes.items(), key=lambda kv: int(kv[0]))]
    snap = ["################################################", "# ITK-SnAP Label Description File",
            "# Columns = IDX -R- -G- -B- -A-- VIS MSH -LABEL-",
            '    0     0    0    0        0  0  0    "Clear Label"']
    snap += [f'{c:5d} {r:5d} {g:4d} {b:4d}        1  1  1    "{name.replace(chr(34), chr(39))}"'
             for c, name, (r, g, b) in rows]
    slicer = ["# Color table file written by curator review export", f"# {len(rows) + 1} values",
              "0 background 0 0 0 0"]
    slicer += [f"{c} {name.replace(' ', '_')} {r} {g} {b} 255" for c, name, (r, g, b) in rows]
    for name, lines in (("labels_itksnap.txt", snap), ("labels_slicer.txt", slicer)):
        with atomic_path(folder / name) as tmp:
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def original_plane(store: CaseStore, codes: Mapping[TermList, int]) -> NDArray[Any] | None:
    """The dataset's own (harmonized) label of the case in the export's ``codes``, or None when the
    store has no original layer (the dataset shipped no label for the case). Planes of overlapping
    terms are painted in order: where two claim a voxel, the later plane's term shows."""
    planes = list(store.planes("original"))
    if not planes:
        return None
    top = max(codes.values(), default=0)
    out = np.zeros(store.geometry.shape, np.uint8 if top < 256 else np.uint16)
    for arr, vals in planes:
        a = np.asarray(arr[...])
        for c, ts in vals.items():
            out[a == c] = codes[tuple(ts)]
    return out


def make_read_only(path: Path) -> None:
    """Clear the write bits of ``path`` (a reference file the reviewer is not to edit); a file
    system that refuses is no error."""
    try:
        os.chmod(path, stat.S_IMODE(path.stat().st_mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    except OSError:
        pass
