"""``curator dedup report``: one PNG per duplicate group, members side by side at matching slices.

For each group the kept member and every dropped member are read from their sources,
reoriented to RAS, and cut through the same anatomy: the point shown is the centre of the
region every member covers (else the centre of the smallest member), carried into every member
with the alignment offsets stored in ``duplicates.offset_mm`` (so stale origins and crops line up). Each member gets an axial and
a coronal view at its own voxel size (mm aspect), the patient's right on the viewer's left
(radiological, as the QC report's gallery and the review previews; each panel marks R and L),
with its case id, dataset, shape, spacing and the row's reason. ``index.html`` lists every
group with its figure.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.dedup.canonical import ras_view
from curator.errors import ConfigError, CuratorError
from curator.io.confined import resolve_inside
from curator.io.formats import read_volume
from curator.io.fsutil import atomic_path, atomic_write_text, check_output_dir
from curator.io.volume import Geometry
from curator.registry.fixes import non_finite_fill

log = logging.getLogger("curator")


@dataclass
class Shown:
    case_id: str
    dataset: str
    kept: bool
    reason: str
    array: NDArray[Any] | None
    geometry: Geometry | None
    offset: NDArray[np.float64]  # p_kept = p_member + offset
    error: str | None = None


def _centre(g: Geometry) -> NDArray[np.float64]:
    return np.asarray(g.voxel_to_world((np.asarray(g.shape, dtype=np.float64) - 1) / 2)[0], dtype=np.float64)


def _extent(g: Geometry, offset: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The world box (low, high corners, mm) of a member's voxel centres in the kept member's frame."""
    corners = np.array([[i, j, k] for i in (0, g.shape[0] - 1) for j in (0, g.shape[1] - 1)
                        for k in (0, g.shape[2] - 1)], dtype=np.float64)
    world = np.asarray(g.voxel_to_world(corners), dtype=np.float64) + offset
    return world.min(axis=0), world.max(axis=0)


def shown_point(members: list[Shown]) -> NDArray[np.float64]:
    """The point every member is cut through, in the kept member's frame: the centre of the
    region all readable members cover when there is one, so a z-cropped copy and a copy cropped
    elsewhere both show the same anatomy (the smallest member's centre left one of them at its
    nearest slices, 6 mm and visibly elsewhere, while two slices were common to all: tester 28 #7);
    else the centre of the smallest member."""
    readable = [(m.geometry, m.offset) for m in members if m.geometry is not None]
    if not readable:
        return np.zeros(3)
    boxes = [_extent(g, off) for g, off in readable]
    lo = np.max([b[0] for b in boxes], axis=0)
    hi = np.min([b[1] for b in boxes], axis=0)
    if np.all(lo <= hi):
        return np.asarray((lo + hi) / 2, dtype=np.float64)
    g_small, off_small = min(readable, key=lambda x: x[0].n_voxels)
    return _centre(g_small) + off_small


def _slices(array: NDArray[Any], geometry: Geometry, offset: NDArray[np.float64], p_kept: NDArray[np.float64]
            ) -> tuple[NDArray[Any], NDArray[Any], tuple[float, ...], float]:
    """Axial and coronal slices of a member's RAS view through the kept-frame point ``p_kept``,
    and how far (mm) that point lies outside the member's field of view (0 inside: a partial
    copy that does not reach it shows its nearest slices instead)."""
    view, g = ras_view(array, geometry)
    want = np.rint(g.world_to_voxel(p_kept - offset)[0]).astype(int)
    ijk = np.clip(want, 0, np.asarray(view.shape) - 1)
    outside = float(np.linalg.norm((want - ijk) * np.asarray(g.spacing)))
    return (np.asarray(view[:, :, ijk[2]], dtype=np.float32), np.asarray(view[:, ijk[1], :], dtype=np.float32),
            g.spacing, outside)


def reading(sl: NDArray[Any]) -> NDArray[Any]:
    """A RAS view's axial (x, y) or coronal (x, z) slice as shown: rows from the top (anterior or
    superior up), columns from the left with the patient's right on the viewer's left
    (radiological, as the QC report's gallery and the review previews)."""
    return np.asarray(sl.T[::-1, ::-1])


PILE = 0.005  # a share of the voxels at the image's maximum that only a clip (saturation) gives


def window(array: NDArray[Any]) -> tuple[float, float]:
    """Grey levels of a member: 1st-99th percentile of the body (above Otsu's threshold, so a CT's
    air does not take half the range and flatten soft tissue to one grey), of every voxel when
    nothing stands out.

    Otsu's threshold is taken without a pile of voxels at the maximum (0.5 % or more of them:
    a copy clipped to a window, or saturated): the 7 % of a brain MR clipped to [0, 800] that sat
    at 800 pulled it from 236 to 473, above most of the brain, and the copy showed black beside
    its original (tester 28 #6). The pile stays in the percentiles (it is the copy's white)."""
    from skimage.filters import threshold_otsu

    flat = np.asarray(array, dtype=np.float32).ravel()
    sample = flat[:: max(1, flat.size // 200_000)]
    if np.ptp(sample) == 0:
        body = sample
    else:
        below = sample[sample < sample.max()]
        piled = 1 - below.size / sample.size >= PILE and below.size > 100 and np.ptp(below) > 0
        body = sample[sample > threshold_otsu(below if piled else sample)]
    lo, hi = np.percentile(body if body.size > 100 else sample, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def figure(group_id: str, members: list[Shown], path: Path) -> None:
    """Write the group's PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p_kept = shown_point(members)
    fig, axes = plt.subplots(2, len(members), figsize=(3.4 * len(members), 7.0), squeeze=False)
    for col, m in enumerate(members):
        title = f"{'KEPT' if m.kept else 'dropped'}: {m.case_id}\n{m.dataset}"
        if m.array is None or m.geometry is None:
            for r in range(2):
                axes[r, col].axis("off")
            axes[0, col].set_title(title, fontsize=8)
            axes[0, col].text(0.5, 0.5, f"could not read:\n{m.error}", ha="center", va="center", fontsize=7, wrap=True)
            continue
        ax_sl, cor_sl, sp, outside = _slices(m.array, m.geometry, m.offset, p_kept)
        if outside > 0:  # say it, or a partial copy at another level reads as another scan
            title += f"\n(does not reach the shown point: nearest slices, {outside:.0f} mm off)"
        lo, hi = window(m.array)
        for r, (sl, (sx, sy)) in enumerate(((ax_sl, (sp[0], sp[1])), (cor_sl, (sp[0], sp[2])))):
            a = axes[r, col]
            a.imshow(reading(sl), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest",
                     extent=(0, sl.shape[0] * sx, 0, sl.shape[1] * sy))
            for x, side in ((0.02, "R"), (0.98, "L")):
                a.text(x, 0.5, side, transform=a.transAxes, color="yellow", fontsize=8, fontweight="bold",
                       ha="left" if side == "R" else "right", va="center")
            a.set_xticks([])
            a.set_yticks([])
        axes[0, col].set_title(title, fontsize=8, color="darkgreen" if m.kept else "darkred")
        g = m.geometry
        axes[1, col].set_xlabel(f"{g.shape} @ {tuple(round(x, 2) for x in g.spacing)} mm {g.orientation}",
                                fontsize=7)
    axes[0, 0].set_ylabel("axial (anterior up)", fontsize=8)
    axes[1, 0].set_ylabel("coronal (superior up)", fontsize=8)
    fig.suptitle(group_id, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def check_groups(groups: list[str], known: set[str]) -> None:
    """Refuse group ids that are not in ``known`` (close matches first, then the ids there are)."""
    import difflib

    for g in groups:
        if g in known:
            continue
        close = difflib.get_close_matches(g, sorted(known), n=3, cutoff=0.5)
        ids = sorted(known)
        listed = ", ".join(ids[:20]) + (f", … ({len(ids)} in all)" if len(ids) > 20 else "")
        raise ConfigError("config_error", f"--group {g!r}: no duplicate group has this id",
                          remedy=(f"did you mean {', '.join(close)}? " if close else "")
                          + (f"the groups are {listed}" if ids else "the duplicates table holds no group")
                          + " (the group_id column of the duplicates table)")


def build_report(duplicates: list[dict[str, Any]], cases: dict[str, dict[str, Any]], sources: dict[str, Path],
                 out: Path, groups: list[str] | None = None,
                 fixes: dict[str, dict[str, Any]] | None = None) -> list[Path]:
    """One PNG per group under ``out`` plus ``index.html``; returns the PNG paths. A group id
    in ``groups`` that the duplicates table does not hold is a ``ConfigError`` naming those it does.
    ``fixes``: each source's dataset fixes (a declared ``non_finite`` lets its images be read)."""
    if groups is not None:
        check_groups(groups, {r["group_id"] for r in duplicates})
    check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    by_group: dict[str, list[dict[str, Any]]] = {}
    for r in duplicates:
        if groups is None or r["group_id"] in groups:
            by_group.setdefault(r["group_id"], []).append(r)
    written: list[Path] = []
    sections = []
    for gid, rows in sorted(by_group.items()):
        rows = sorted(rows, key=lambda r: (not r["kept"], r["case_id"]))
        shown = []
        for r in rows:
            c = cases[r["case_id"]]
            off = np.asarray(r.get("offset_mm") or (0.0, 0.0, 0.0), dtype=np.float64)
            try:
                root = sources[c["source"]]
                vol = read_volume(resolve_inside(root, root / c["image_path"]), role="image",
                                  channel=c.get("image_channel"),
                                  non_finite=non_finite_fill((fixes or {}).get(c["source"]) or {}, c["image_path"]))
                shown.append(Shown(r["case_id"], r["dataset"], r["kept"], r["reason"], vol.array, vol.geometry, off))
            except (CuratorError, KeyError) as e:
                shown.append(Shown(r["case_id"], r["dataset"], r["kept"], r["reason"], None, None, off, str(e)))
        png = out / f"{gid}.png"
        figure(gid, shown, png)
        written.append(png)
        items = "".join(f"<li><b>{html.escape(r['case_id'])}</b> ({'kept' if r['kept'] else 'dropped'}): "
                        f"{html.escape(r['reason'])}</li>" for r in rows)
        sections.append(f"<section><h2>{html.escape(gid)}</h2><img src='{html.escape(png.name)}' "
                        f"alt='{html.escape(gid)}'><ul>{items}</ul></section>")
        log.info("dedup report: %s (%d members)", png, len(rows))
    atomic_write_text(out / "index.html", "<!doctype html><meta charset='utf-8'><title>curator duplicates</title>"
                      "<h1>Duplicate groups</h1><p>Members side by side at matching slices: confirm each group by "
                      f"eye.</p>{''.join(sections) or '<p>No duplicate groups.</p>'}")
    atomic_write_text(out / "groups.json", json.dumps(sorted(by_group), indent=1))
    return written
