"""Raw label files → label planes with compact codes and their term ids.

A plane is ``(array, {code: [term ids]}, {code: raw value or structure key})``. Label maps
keep one plane whose raw values are renumbered 1..n (so most fit one byte); per-structure
masks are packed greedily into as few planes as possible, a structure going to a new
plane only when it overlaps one already placed.

>>> import numpy as np
>>> a = np.zeros((4, 4, 2), np.uint16); a[0, 0, 0] = 420; a[1, 1, 1] = 205; a[2, 2, 0] = 7
>>> planes, unknown = label_map_plane(a, {"205": ["myocardium"], "420": ["left_atrium"]})
>>> planes[0][1], planes[0][2], planes[0][0].dtype, unknown
({1: ['myocardium'], 2: ['left_atrium']}, {1: '205', 2: '420'}, dtype('uint8'), [7])
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import fastremap
import numpy as np
from numpy.typing import NDArray

from curator.store import label_dtype

Plane = tuple[NDArray[Any], dict[int, list[str]], dict[int, str]]


def label_map_plane(a: NDArray[Any], terms: dict[str, list[str]]) -> tuple[list[Plane], list[int]]:
    """One plane from a label map; returns it (or nothing when empty) and the unmapped raw values."""
    present = [int(v) for v in fastremap.unique(a) if v != 0]
    mapped = [v for v in present if str(v) in terms]
    unknown = [v for v in present if str(v) not in terms]
    table = {v: 0 for v in present}
    table[0] = 0
    for code, v in enumerate(mapped, start=1):
        table[v] = code
    if not mapped:
        return [], unknown
    dtype = label_dtype(len(mapped))
    if all(table[v] == v for v in present) and a.dtype == dtype:  # codes already 1..n: no remap
        out = a
    else:
        out = fastremap.remap(a, table, preserve_missing_labels=False).astype(dtype, copy=False)
    values = {code: list(terms[str(v)]) for code, v in enumerate(mapped, start=1)}
    raw = {code: str(v) for code, v in enumerate(mapped, start=1)}
    return [(out, values, raw)], unknown


def structure_planes(masks: Iterable[tuple[str, NDArray[Any]]], terms: dict[str, list[str]]) -> list[Plane]:
    """Pack binary structure masks (``(key, mask)``, read one at a time) into planes."""
    planes: list[Plane] = []
    for key, m in masks:
        sel = m != 0
        if not sel.any():
            continue
        for arr, values, raw in planes:
            if len(values) < 255 and not arr[sel].any():
                break
        else:
            arr = np.zeros(m.shape, dtype=np.uint8)
            values, raw = {}, {}
            planes.append((arr, values, raw))
        code = len(values) + 1
        arr[sel] = code
        values[code] = list(terms.get(key, []))
        raw[code] = key
    return planes
