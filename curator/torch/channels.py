"""A study's sequences as the input channels of one ``PatchDataset`` item.

Curator ingests each sequence of a multi-sequence study (BraTS t1n/t1c/t2w/t2f) as its own case;
the sequences of one study share a ``study_key``. :func:`studies` groups the selected cases into
studies holding one case of each requested sequence; the first sequence's case is the reference
(its grid, labels and sampling), the others are read at the same physical position through the
stores' affines: each store was cropped to its own body, so a channel's grid is the reference
grid shifted by a whole number of voxels (:func:`curator.release.studies.voxel_shift`). A study whose grids are not
(another spacing or direction, or an offset of a fraction of a voxel: stores of scans with other
extents, HECKTOR's CT and PET) is left out rather than resampled, its reason saying which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from curator.release.studies import check_channels, grid_difference, group_studies, voxel_shift

GRIDS_APART = "shifted by whole voxels"  # in the reason of a study whose grids do not line up


def studies(cases: Sequence[dict[str, Any]], channels: Sequence[str],
            dropped: Sequence[dict[str, Any]] = ()) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The reference cases (``channels[0]``) of the studies holding one selected case of each
    channel, each with ``channels``: the other channels' cases and their ``shift``; and the studies
    left out with the reason. Studies are grouped as the multi-channel exports group them
    (:func:`curator.release.studies.group_studies`: same studies, names and reasons); ``cases``
    carry ``sequence``, ``study_key`` and ``affine``; ``dropped`` the selected cases left out as
    duplicates (``sequence``, ``study_key``, ``used``: the member used instead), named in the reason
    of a study lacking their sequence. An unknown or repeated channel is refused."""
    picked = [_Case(c["case_id"], c["sequence"], c["study_key"]) for c in cases]
    check_channels(channels, picked)
    skipped: dict[str, str] = {}
    gone = [(_Case(c["case_id"], c["sequence"], c["study_key"]), str(c["used"])) for c in dropped]
    grouped = group_studies(picked, channels, skipped, gone)
    by_id = {c["case_id"]: c for c in cases}
    out = []
    for name, members in grouped:
        ref, *others = (by_id[c.case_id] for c in members)
        shifts = [voxel_shift(ref["affine"], c["affine"]) for c in others]
        off = [(s, c) for s, c, shift in zip(channels[1:], others, shifts, strict=True) if shift is None]
        if off:
            skipped[name] = ("; ".join(f"the grid of its {s} case is not its {channels[0]} case's {GRIDS_APART}: "
                                       f"{grid_difference(ref['affine'], c['affine'])}" for s, c in off)
                             + "; the loader does not resample (the nnU-Net and MONAI exports with --channels "
                             "resample such a channel linearly onto the first one's grid: train from an export, "
                             "or load the sequences one by one)")
            continue
        out.append({**ref, "channels": [{**c, "shift": t} for c, t in zip(others, shifts, strict=True)]})
    return out, skipped


@dataclass(frozen=True)
class _Case:
    case_id: str
    sequence: str | None
    study_key: str | None
