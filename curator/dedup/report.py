"""``curator dedup report``: one PNG per duplicate group, members side by side at matching slices.

For each group the kept member and every dropped member are read from their sources,
reoriented to RAS, and cut through the same anatomy: the point shown is the centre of the
region every member covers (else the centre of the smallest member), carried into every member
with the alignment offsets stored in ``duplicates.offset_mm`` (so stale origins and crops line up). Each member gets an axial and
a coronal view at its own voxel size (mm aspect), the patient's right on the viewer's left
(radiological, as the QC report's gallery and the review previews; each panel marks R and L),
with its case id, dataset, shape, spacing and the row's reason. ``index.html`` lists every
group with its figure, then what the reviewed overrides did (the ``dedup_overrides`` table):
each pair the hashes matched that a ``different`` row kept apart, with both scans side by side
(:func:`overrides_html`), and every override row's effect.
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
    label: str | None = None  # the title's first word instead of KEPT / dropped (a pair kept apart)


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
        title = f"{m.label or ('KEPT' if m.kept else 'dropped')}: {m.case_id}\n{m.dataset}"
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
        axes[0, col].set_title(title, fontsize=8, color="black" if m.label else "darkgreen" if m.kept else "darkred")
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


def _shown(row: dict[str, Any], cases: dict[str, dict[str, Any]], sources: dict[str, Path],
           fixes: dict[str, dict[str, Any]] | None, label: str | None = None) -> Shown:
    """A member read from its source (``row``: its case id, dataset, kept, reason, offset_mm), or
    its error."""
    c = cases[row["case_id"]]
    off = np.asarray(row.get("offset_mm") or (0.0, 0.0, 0.0), dtype=np.float64)
    try:
        root = sources[c["source"]]
        vol = read_volume(resolve_inside(root, root / c["image_path"]), role="image", channel=c.get("image_channel"),
                          non_finite=non_finite_fill((fixes or {}).get(c["source"]) or {}, c["image_path"]))
        return Shown(row["case_id"], row["dataset"], row["kept"], row["reason"], vol.array, vol.geometry, off,
                     label=label)
    except (CuratorError, KeyError) as e:
        return Shown(row["case_id"], row["dataset"], row["kept"], row["reason"], None, None, off, str(e), label)


OVERRIDE_COLUMNS = (("row", "row"), ("action", "action"), ("case_id", "case"), ("other_case_id", "other case"),
                    ("effect", "effect"), ("distance", "distance"), ("score", "score"), ("detail", "texture"),
                    ("reason", "reason"), ("reviewer", "reviewer"), ("date", "date"), ("note", "what it did"))


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return html.escape(f"{v:.3f}" if isinstance(v, float) else str(v))


def overrides_html(rows: list[dict[str, Any]] | None, figures: dict[int, str]) -> str:
    """The index's section on the reviewed overrides (``dedup_overrides`` rows; ``None``: the
    workspace has no such table): the pairs split by a ``different`` row (with their figures,
    ``figures``: row → PNG name), then every row with its effect."""
    out = "<h1 id='overrides'>Decided by a person (stages.dedup.overrides)</h1>"
    if rows is None:
        return out + ("<p>The workspace has no dedup_overrides table (dedup ran before curator recorded the "
                      "overrides): run <code>curator dedup</code> again to record them.</p>")
    if not rows:
        return out + "<p>No reviewed overrides.</p>"
    split = [r for r in rows if r["effect"] == "split"]
    out += ("<h2 id='split'>Pairs split by an override</h2><p>Scans the hashes and verification alone made one "
            "group, kept apart by a person's <code>different</code> row: confirm by eye.</p>")
    if not split:
        out += "<p>None: no different row kept apart scans that would otherwise be one group.</p>"
    for r in split:
        pic = (f"<img src='{html.escape(figures[r['row']])}' alt='row {r['row']}'>" if r["row"] in figures else "")
        out += (f"<section><h3>{_cell(r['case_id'])} / {_cell(r['other_case_id'])} (row {r['row']})</h3>{pic}"
                f"<p>distance {_cell(r['distance'])} (rank correlation {_cell(r['score'])}, texture "
                f"{_cell(r['detail'])}); hash tiers: {_cell(', '.join(r['tiers'] or []) or 'none')}; reason: "
                f"{_cell(r['reason'])}" + (f" ({_cell(r['reviewer'])})" if r.get("reviewer") else "")
                + f"</p><p>{_cell(r['note'])}</p></section>")
    head = "".join(f"<th>{t}</th>" for _, t in OVERRIDE_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(k))}</td>" for k, _ in OVERRIDE_COLUMNS) + "</tr>"
                   for r in sorted(rows, key=lambda r: r["row"]))
    return out + f"<h2>Every override row</h2><table><tr>{head}</tr>{body}</table>"


def _split_figures(rows: list[dict[str, Any]], cases: dict[str, dict[str, Any]], sources: dict[str, Path],
                   out: Path, fixes: dict[str, dict[str, Any]] | None) -> dict[int, str]:
    """One PNG per pair split by a ``different`` row: both scans through the same anatomy (the
    pair's offset carries the point), titled "kept apart"."""
    made = {}
    for r in rows:
        if r["effect"] != "split" or r["case_id"] not in cases or r["other_case_id"] not in cases:
            continue
        pair = [_shown({"case_id": c, "dataset": cases[c].get("dataset"), "kept": i == 0, "reason": r["note"],
                        "offset_mm": r.get("offset_mm") if i else None}, cases, sources, fixes, "kept apart")
                for i, c in enumerate((r["case_id"], r["other_case_id"]))]
        png = out / f"override-row-{r['row']}.png"
        figure(f"split by override row {r['row']}: {r['reason']}", pair, png)
        made[r["row"]] = png.name
    return made


def build_report(duplicates: list[dict[str, Any]], cases: dict[str, dict[str, Any]], sources: dict[str, Path],
                 out: Path, groups: list[str] | None = None,
                 fixes: dict[str, dict[str, Any]] | None = None,
                 overrides: list[dict[str, Any]] | None = None) -> list[Path]:
    """One PNG per group under ``out`` plus ``index.html``; returns the PNG paths. A group id
    in ``groups`` that the duplicates table does not hold is a ``ConfigError`` naming those it does.
    ``fixes``: each source's dataset fixes (a declared ``non_finite`` lets its images be read).
    ``overrides``: the ``dedup_overrides`` rows (``None``: the workspace has none), listed after the
    groups — with ``groups``, only rows about a case of those groups — and a PNG per pair split by one."""
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
        shown = [_shown(r, cases, sources, fixes) for r in rows]
        png = out / f"{gid}.png"
        figure(gid, shown, png)
        written.append(png)
        items = "".join(f"<li><b>{html.escape(r['case_id'])}</b> ({'kept' if r['kept'] else 'dropped'}): "
                        f"{html.escape(r['reason'])}</li>" for r in rows)
        sections.append(f"<section><h2>{html.escape(gid)}</h2><img src='{html.escape(png.name)}' "
                        f"alt='{html.escape(gid)}'><ul>{items}</ul></section>")
        log.info("dedup report: %s (%d members)", png, len(rows))
    if overrides is not None and groups is not None:
        overrides = [r for r in overrides if r.get("group_id") in groups or r.get("other_group_id") in groups]
    figures = _split_figures(overrides or [], cases, sources, out, fixes)
    written += [out / f for _, f in sorted(figures.items())]
    atomic_write_text(out / "index.html", "<!doctype html><meta charset='utf-8'><title>curator duplicates</title>"
                      "<h1>Duplicate groups</h1><p>Members side by side at matching slices: confirm each group by "
                      f"eye.</p>{''.join(sections) or '<p>No duplicate groups.</p>'}"
                      + overrides_html(overrides, figures))
    atomic_write_text(out / "groups.json", json.dumps(sorted(by_group), indent=1))
    return written
