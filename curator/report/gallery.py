"""Gallery of flagged labels: three orthogonal slices through the label, image in grey, mask in red
(without an image: the case's other labels in grey).

Slices are laid out in patient orientation whatever the store's axis order: axial with
anterior up and the patient's right on the viewer's left (radiological), coronal and
sagittal with superior up. Each view goes through the label's fullest slice along its axis.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.report.plots import _plt, png

log = logging.getLogger("curator")
# per view: the world axis (0 = R, 1 = A, 2 = S) normal to the slice, then the world axes shown as
# rows (+1: increasing upwards) and columns (+1: increasing to the right, -1: to the left)
VIEWS = {"axial": (2, (1, 1), (0, -1)), "coronal": (1, (2, 1), (0, -1)), "sagittal": (0, (2, 1), (1, -1))}


def _axis_for(direction: NDArray[np.float64], world: int) -> tuple[int, float]:
    """The array axis closest to a world axis, and the sign of its direction along it."""
    a = int(np.argmax(np.abs(direction[world, :])))
    return a, float(np.sign(direction[world, a]) or 1.0)


def oriented_slice(vol: NDArray[Any], direction: NDArray[np.float64], index: NDArray[np.float64],
                   view: str) -> NDArray[Any]:
    """A 2-D slice of ``vol`` through ``index`` for ``view``, in reading orientation."""
    normal, (rw, rs), (cw, cs) = VIEWS[view]
    na, _ = _axis_for(direction, normal)
    ra, rsign = _axis_for(direction, rw)
    ca, csign = _axis_for(direction, cw)
    if len({na, ra, ca}) < 3:  # a strongly oblique grid: fall back to the array's own axes
        na, ra, ca, rsign, csign, rs, cs = 2, 0, 1, 1.0, 1.0, 1, 1
    pos = int(np.clip(round(float(index[na])), 0, vol.shape[na] - 1))
    sl = np.take(vol, pos, axis=na)
    rows_first = ra < ca  # axes left after taking na keep their order
    img = sl if rows_first else sl.T
    if rsign * rs > 0:
        img = img[::-1, :]  # world axis increasing upwards
    if csign * cs < 0:
        img = img[:, ::-1]  # world axis increasing in the requested direction
    return np.asarray(img)


def fullest_slices(mask: NDArray[Any]) -> NDArray[np.float64]:
    """Per array axis, the index of the slice holding the most label voxels: each view goes
    through the label, even one in several pieces (a bilateral tumour's centroid lies between
    them, and a slice through it shows nothing).

    >>> m = np.zeros((5, 4, 3), bool); m[0, 1, :] = m[4, 1, :] = True; m[4, 2, 2] = True
    >>> fullest_slices(m).tolist()
    [4.0, 1.0, 2.0]
    """
    return np.array([np.argmax(mask.sum(axis=tuple(j for j in range(mask.ndim) if j != a)))
                     for a in range(mask.ndim)], dtype=np.float64)


def context_mask(store: Any, layer: str) -> NDArray[np.bool_]:
    """Every labelled voxel of the case (the label's layer and the original one): drawn in grey
    behind a label-only case's label, so a tumour is seen in (or out of) its kidney."""
    out = np.zeros(store.geometry.shape, dtype=bool)
    for name, _ in [*store.plane_values(layer), *(store.plane_values() if layer != "original" else [])]:
        out |= store.read(name) != 0
    return out


def label_figure(store_path: Path, term: str, layer: str, title: str, tax: Any = None) -> str | None:
    """Three orthogonal slices of one label, each through its fullest slice along that view's axis;
    None when the store cannot be read. Without an image the case's other labels are the grey
    background. A derived term of pseudo or revised labels, which no layer holds itself, is drawn
    as the union of its parts (in ``tax``, the release's taxonomy; default: the bundled one)."""
    from curator.pseudolabel.derived import assembled_parts_mask
    from curator.store import CaseStore

    try:
        store = CaseStore(store_path)
        g = store.geometry
        if layer in store.layers() and term in store.terms(layer) or layer == "original":
            mask = store.mask(term, layer)
        else:
            if tax is None:
                from curator.taxonomy import load_taxonomy

                tax = load_taxonomy()
            mask = assembled_parts_mask(store, term, tax)
        image = (np.asarray(store.image[...], dtype=np.float32) if store.has_image()
                 else context_mask(store, layer) & ~mask)
    except Exception as e:  # noqa: BLE001 - a missing picture must not stop the report
        log.warning("report: cannot read %s for the gallery (%s)", store_path, e)
        return None
    idx = fullest_slices(mask)
    sp = np.asarray(g.spacing)
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.7))
    for ax, view in zip(axes, VIEWS, strict=True):
        m = oriented_slice(mask, g.direction, idx, view).astype(float)
        _, (rw, _), (cw, _) = VIEWS[view]
        ra, _ = _axis_for(g.direction, rw)
        ca, _ = _axis_for(g.direction, cw)
        aspect = sp[ra] / sp[ca] if len({ra, ca}) == 2 else 1.0
        im = oriented_slice(image, g.direction, idx, view).astype(np.float32)
        if image.dtype == bool:  # label-only: the other labels in grey on black
            lo, hi = 0.0, 2.2
        else:
            lo, hi = np.percentile(im, [1, 99]) if im.size else (0, 1)
        ax.imshow(im, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect=aspect, interpolation="nearest")
        ax.imshow(np.ma.masked_where(m == 0, m), cmap="autumn", alpha=0.9 if image.dtype == bool else 0.55,
                  aspect=aspect, interpolation="nearest")
        ax.set_title(view, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    return png(fig)
