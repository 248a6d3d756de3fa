"""Label files that hold several named structures: DICOM SEG (segments) and RTSTRUCT (ROIs).

With ``labels.encoding: per_structure`` and a label pattern without ``{structure}`` (the
structures are inside the file, not one file each), layout discovery asks :func:`structures_in`
for the names the file holds — a SEG's segment labels, an RTSTRUCT's ROI names — and each becomes
one structure of the case, mapped by ``labels.structures`` like a TotalSegmentator mask file;
:func:`read_structure` reads one of them as a 0/1 mask on the image's grid. Structures may overlap
(a tumour inside its organ), as per-structure masks may.

A file is parsed once for all its structures (the last two files are kept per process: a SEG of
the 104 TotalSegmentator classes is read once, not 104 times).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pydicom

from curator.errors import InputError
from curator.io.dicom_seg import (
    dicom_header,
    is_seg,
    open_seg,
    read_seg,
    referenced_series,
    segments_of,
)
from curator.io.rtstruct import is_rtstruct, read_roi, roi_names
from curator.io.volume import Geometry, Volume


def _keys(numbered: dict[int, str]) -> dict[str, int]:
    """Structure key -> number: the name, or ``name (number)`` for a name given twice."""
    seen: dict[str, int] = {}
    for n, name in sorted(numbered.items()):
        key = name.strip() or str(n)
        seen[key if key not in seen else f"{key} ({n})"] = n
    return seen


def structures_in(path: Path) -> dict[str, int] | None:
    """``{structure key: number}`` of a DICOM SEG or RTSTRUCT file, or None for any other file."""
    try:
        st = path.stat()
    except OSError:
        return None
    found = _structures(str(path), (st.st_size, st.st_mtime_ns)) if path.is_file() else None
    return None if found is None else dict(found)  # the cached one stays as parsed


@functools.lru_cache(maxsize=64)
def _structures(path: str, stamp: tuple[int, int]) -> dict[str, int] | None:
    """:func:`structures_in`, parsed once per file version (a SEG's header with the per-frame
    groups of thousands of frames takes a while; every structure of the case asks for it)."""
    ds = dicom_header(Path(path))
    if ds is None:
        return None
    if is_seg(ds):
        return _keys(segments_of(ds))
    if is_rtstruct(ds):
        return _keys(roi_names(ds))
    return None


@functools.lru_cache(maxsize=2)
def _open(path: str, stamp: tuple[int, int]) -> Any:
    """The parsed SEG (highdicom) or RTSTRUCT (pydicom) at ``path``; ``stamp`` (size, mtime) keys
    the cache so a changed file is read again."""
    ds = dicom_header(Path(path))
    if ds is not None and is_seg(ds):
        return open_seg(Path(path))
    try:
        return pydicom.dcmread(path)
    except Exception as e:  # pydicom fails on a damaged file in many ways
        raise InputError("corrupt_file", f"the RTSTRUCT cannot be decoded ({type(e).__name__}: {str(e)[:160]})",
                         path=path, remedy="download it again") from e


def read_structure(path: Path, key: str, grid: Geometry | None, max_voxels: int) -> Volume:
    """Structure ``key`` of the SEG or RTSTRUCT at ``path`` as a 0/1 mask, on ``grid`` when given;
    a file holding one structure gives it whatever ``key`` is (one file per structure, the key
    being the file's name)."""
    where = str(path)
    names = structures_in(path) or {}
    if key not in names and len(names) == 1:  # one mask file per structure ({structure} in the pattern)
        key = next(iter(names))
    if key not in names:
        held = ", ".join(sorted(names)[:20]) or "none"
        raise InputError("structure_missing", f"the file holds no structure {key!r} (it holds: {held})",
                         path=where, remedy="run `curator sources check` to see the structures the files hold")
    st = path.stat()
    obj = _open(str(path), (st.st_size, st.st_mtime_ns))
    number = names[key]
    if is_rtstruct(obj):  # (highdicom's Segmentation is a pydicom Dataset too)
        vol = read_roi(obj, number, grid, where)
        vol.meta["references"] = referenced_series(obj)
        return vol
    return read_seg(path, grid, max_voxels, segment=number, seg=obj)
