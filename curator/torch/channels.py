"""A study's sequences as the input channels of one ``PatchDataset`` item.

Curator ingests each sequence of a multi-sequence study (BraTS t1n/t1c/t2w/t2f) as its own case;
the sequences of one study share a ``study_key``. :func:`studies` groups the selected cases into
studies holding one case of each requested sequence; the first sequence's case is the reference
(its grid, labels and sampling), the others are read at the same physical position through the
stores' affines: each store was cropped to its own body, so a channel's grid is the reference
grid shifted by a whole number of voxels (:func:`voxel_shift`). A study whose grids are not
(another spacing or direction) is left out rather than resampled.

>>> ref = [1.0, 0, 0, -10.0, 0, 2.0, 0, 0, 0, 0, 3.0, 0, 0, 0, 0, 1]
>>> other = [1.0, 0, 0, -7.0, 0, 2.0, 0, 4.0, 0, 0, 3.0, 0, 0, 0, 0, 1]
>>> voxel_shift(ref, other)  # reference voxel i is the other store's voxel i + shift
(-3, -2, 0)
>>> voxel_shift(ref, [2.0, 0, 0, 0, 0, 2.0, 0, 0, 0, 0, 3.0, 0, 0, 0, 0, 1]) is None
True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curator.export.channels import check_channels, group_studies
from curator.export.common import ExportCase, ExportReport


def voxel_shift(ref: Sequence[float], other: Sequence[float], tol: float = 1e-3) -> tuple[int, int, int] | None:
    """The whole-voxel offset from grid ``ref`` to grid ``other`` (voxel -> mm affines, 16 numbers
    row-major): reference voxel ``i`` lies where ``other``'s voxel ``i + shift`` does. None when the
    spacing or direction differ or the offset is not a whole number of voxels (within ``tol``)."""
    m = np.linalg.inv(np.asarray(other, dtype=np.float64).reshape(4, 4)) @ np.asarray(ref, dtype=np.float64).reshape(4, 4)
    t = np.rint(m[:3, 3])
    if not (np.allclose(m[:3, :3], np.eye(3), atol=tol * 0.1) and np.allclose(m[:3, 3], t, atol=tol)):
        return None
    return (int(t[0]), int(t[1]), int(t[2]))


def studies(cases: Sequence[dict[str, Any]], channels: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The reference cases (``channels[0]``) of the studies holding one selected case of each
    channel, each with ``channels``: the other channels' cases and their ``shift``; and the studies
    left out with the reason. Studies are grouped as the multi-channel exports group them
    (:func:`curator.export.channels.group_studies`: same studies, names and reasons); ``cases``
    carry ``sequence``, ``study_key`` and ``affine``. An unknown or repeated channel is refused."""
    picked = [ExportCase(c["case_id"], c["dataset"], c["modality"], Path(c["store"]), [], None, c["sequence"],
                         c["study_key"]) for c in cases]
    check_channels(channels, picked)
    report = ExportReport(Path())
    grouped = group_studies(picked, channels, report)
    by_id = {c["case_id"]: c for c in cases}
    out = []
    for study in grouped:
        ref, *others = (by_id[c.case_id] for c in study.cases)
        shifts = [voxel_shift(ref["affine"], c["affine"]) for c in others]
        off = [s for s, shift in zip(channels[1:], shifts, strict=True) if shift is None]
        if off:
            report.skipped[study.name] = (f"the grid of its {', '.join(off)} case is not its {channels[0]} case's "
                                          "shifted by whole voxels (another spacing or direction); not resampled")
            continue
        out.append({**ref, "channels": [{**c, "shift": t} for c, t in zip(others, shifts, strict=True)]})
    return out, report.skipped
