"""Review previews: two views of a case through a term's label, as PNG for the worklist.

Left, the axial slice of the term's most attention; right, a coronal slice through the label
there. Each shows the image (CT in the window the term needs: lung, bone or soft tissue; MR and
PET between the slice's 1st and 99th percentiles), the label a release uses (green fill), the
term's attention (red outline) and the neighbouring structures' labels (blue outlines). A header
names the case, the term, the slices and the window, and the PNG's text chunks say the same
(``case_id``, ``term_id``, ``axial_slice``, ``coronal_slice``, ``window``), for a script.

>>> term_window("lung_upper_lobe_left", "CT"), term_window("rib_left_3", "CT"), term_window("liver", "CT")
('lung', 'bone', 'soft tissue')
>>> term_window("lung", "MR")
'percentile'
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from curator.io.fsutil import atomic_path
from curator.pseudolabel.release import PRIORITY, assembled_mask, best_layer
from curator.store import CaseStore

log = logging.getLogger("curator")
# CT windows (HU): (lower, upper) = level ∓ width / 2
WINDOWS = {"soft tissue": (-160.0, 240.0), "lung": (-1350.0, 150.0), "bone": (-500.0, 1300.0)}
CT_WINDOW = WINDOWS["soft tissue"]
LUNG_TERMS = frozenset({"lung", "trachea", "bronchi", "airway"})
LABEL, ATTENTION, NEIGHBOURS = (40, 220, 60), (255, 30, 30), (60, 150, 255)
LINE, HEADER_LINES = 14, 3
HEADER_HEIGHT = LINE * HEADER_LINES + 6  # pixels above the views: the axial view starts at this row


def term_window(term: str, modality: str) -> str:
    """The window a term's preview is drawn in: for CT ``lung`` (the lungs, their parts and
    lesions, the airways), ``bone`` (a bone of the taxonomy, or part of one) or ``soft
    tissue``; ``percentile`` for other modalities."""
    if modality.upper() != "CT":
        return "percentile"
    from curator.taxonomy import load_taxonomy

    tax = load_taxonomy()
    t = tax.get(term)
    family = {term} | (set(tax.ancestors(term)) if t is not None else set())
    if family & LUNG_TERMS:
        return "lung"
    if "bone" in family or (t is not None and t.category == "bone"):
        return "bone"
    return "soft tissue"


def window_range(img: NDArray[Any], window: str) -> tuple[float, float]:
    """(lower, upper) of ``window`` (a CT window's HU, or the percentiles of ``img``)."""
    if window in WINDOWS:
        return WINDOWS[window]
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    return float(lo), float(hi)


def _grey(img: NDArray[Any], lo: float, hi: float) -> NDArray[np.uint8]:
    x = np.clip((img.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)
    return (x * 255).astype(np.uint8)


def _window(img: NDArray[Any], modality: str) -> NDArray[np.uint8]:
    return _grey(img, *window_range(img, "soft tissue" if modality.upper() == "CT" else "percentile"))


def _edge(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def _oriented(rgb: NDArray[Any], direction: NDArray[np.float64] | None, view: str) -> NDArray[Any]:
    """An RGB slice (``rgb[i, j, channel]``, the store's axes without the view's normal) laid out
    as the report's gallery lays out the view: axial anterior up, coronal superior up, the
    patient's right on the viewer's left; without usable ``direction`` cosines, rows are the
    slice's second axis flipped up."""
    from curator.report.gallery import VIEWS, _axis_for, oriented_slice

    if direction is not None:
        normal, (rw, _), (cw, _) = VIEWS[view]
        axes = [_axis_for(direction, w)[0] for w in (normal, rw, cw)]
        if len(set(axes)) == 3 and (view != "axial" or axes[0] == 2):
            # imported here: the report package loads DuckDB and Polars, which a worker never needs
            return np.stack([oriented_slice(np.expand_dims(rgb[:, :, c], axes[0]), direction, np.zeros(3), view)
                             for c in range(3)], axis=-1)
    return np.flipud(np.transpose(rgb, (1, 0, 2)))


def preview(image: NDArray[Any], label: NDArray[np.bool_], attention: NDArray[np.bool_], modality: str,
            scale: int = 3, direction: NDArray[np.float64] | None = None, *,
            others: NDArray[np.bool_] | None = None, window: tuple[float, float] | None = None,
            view: str = "axial", stretch: float = 1.0) -> Image.Image:
    """RGB view of one slice: grey image (in ``window``, HU; default the modality's), green label,
    blue outlines of the ``others`` (neighbouring structures), red attention — outlines, so the
    label inside stays visible (a filled red hid it: the attention of a doubtful label covers
    it). With the store's ``direction`` cosines it is laid out as the report's gallery lays out
    the ``view``; rows are ``stretch`` times taller (a coronal view of thick axial slices)."""
    grey = _window(image, modality) if window is None else _grey(image, *window)
    rgb = np.stack([grey] * 3, axis=-1).astype(np.float32)
    rgb[label] = 0.55 * rgb[label] + 0.45 * np.array(LABEL)
    if others is not None:
        rgb[_edge(others & ~label)] = np.array(NEIGHBOURS)
    rgb[_edge(attention)] = np.array(ATTENTION)
    rgb = _oriented(rgb, direction, view)
    img = Image.fromarray(np.ascontiguousarray(rgb.clip(0, 255).astype(np.uint8)), "RGB")
    return img.resize((img.width * scale, max(1, round(img.height * scale * stretch))), Image.Resampling.NEAREST)


def save_png(img: Image.Image, dest: Path, text: dict[str, str] | None = None) -> None:
    """``img`` as PNG at ``dest``, with ``text`` as its text chunks."""
    info = PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    with atomic_path(dest) as tmp:
        img.save(tmp, format="PNG", optimize=False, pnginfo=info)


def neighbours(store: CaseStore, term: str, box: tuple[slice, ...]) -> NDArray[np.bool_]:
    """Voxels of ``box`` any other structure's label covers, each read from the layer a release
    uses for it (original > revised > pseudo)."""
    layers = [layer for layer in PRIORITY if layer in store.layers()]
    best = {t: best_layer(store, t) for layer in layers for t in store.terms(layer)}
    out: NDArray[np.bool_] | None = None
    for layer in layers:
        for arr, vals in store.planes(layer):
            codes = [c for c, ts in vals.items() if term not in ts and any(best.get(t) == layer for t in ts)]
            if codes:
                m = np.isin(np.asarray(arr[box]), codes)
                out = m if out is None else out | m
    return out if out is not None else np.zeros(tuple(len(range(*s.indices(n))) for s, n in
                                                      zip(box, store.geometry.shape, strict=True)), bool)


def _coronal_axis(store: CaseStore) -> int:
    """The store axis closest to anterior–posterior (the second, when the grid is oblique)."""
    from curator.report.gallery import _axis_for

    d = store.geometry.direction
    ap = _axis_for(d, 1)[0]
    return ap if ap != 2 and int(np.argmax(np.abs(d[2, :]))) == 2 else 1


def _through(mask: NDArray[np.bool_], axis: int, fallback: NDArray[np.bool_]) -> int:
    """The index along ``axis`` (0 or 1 of a 2-D slice) holding most of ``mask`` (else of
    ``fallback``; else the middle)."""
    for m in (mask, fallback):
        counts = m.sum(axis=1 - axis)
        if counts.any():
            return int(np.argmax(counts))
    return mask.shape[axis] // 2


def _header(lines: list[str], width: int) -> Image.Image:
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    w = max([width, *(int(probe.textlength(t, font=font)) + 8 for t in lines)])
    head = Image.new("RGB", (w, HEADER_HEIGHT), (0, 0, 0))
    draw = ImageDraw.Draw(head)
    for i, t in enumerate(lines[:HEADER_LINES]):
        draw.text((4, 3 + LINE * i), t, fill=(255, 255, 255), font=font)
    return head


def case_preview(store: CaseStore, amap: Any, term: str, z: int, modality: str, scale: int = 3,
                 ) -> tuple[Image.Image, dict[str, str]]:
    """The preview of ``term`` at axial slice ``z`` (axial and coronal views under a header) and
    its PNG text chunks."""
    shape, cid = store.geometry.shape, store.path.stem
    spacing = np.asarray(store.geometry.spacing, dtype=np.float64)
    win = term_window(term, modality)
    axial = (slice(None), slice(None), slice(z, z + 1))
    image = store.physical_image(axial)[:, :, 0]
    lo, hi = window_range(image, win)
    label = assembled_mask(store, term, axial)[0][:, :, 0]
    att = amap.mask(term, z)
    left = preview(image, label, att, modality, scale, store.geometry.direction,
                   others=neighbours(store, term, axial)[:, :, 0], window=(lo, hi))
    ax = _coronal_axis(store)
    y = _through(label, ax, att)
    box = tuple(slice(y, y + 1) if a == ax else slice(None) for a in range(3))
    cor = [np.take(a, 0, axis=ax) for a in (store.physical_image(box), assembled_mask(store, term, box)[0],
                                             amap.mask(term, box=box), neighbours(store, term, box))]
    across = 1 - ax  # the in-plane axis the coronal view keeps beside the slices' axis
    right = preview(cor[0], cor[1], cor[2], modality, scale, store.geometry.direction, others=cor[3],
                    window=(lo, hi), view="coronal", stretch=float(spacing[2] / spacing[across]))
    if right.width != left.width:  # the same mm per pixel across; a coronal view of other width: scale it
        right = right.resize((left.width, max(1, round(right.height * left.width / right.width))),
                             Image.Resampling.NEAREST)
    window = f"{win} [{lo:.0f}, {hi:.0f}]"
    head = _header([f"{cid}  {term}", f"axial z={z}/{shape[2]}  coronal {'ijk'[ax]}={y}", f"window {window}"],
                   left.width + right.width + 4)
    canvas = Image.new("RGB", (head.width, head.height + max(left.height, right.height)), (0, 0, 0))
    canvas.paste(head, (0, 0))
    canvas.paste(left, (0, head.height))
    canvas.paste(right, (left.width + 4, head.height))
    text = {"case_id": cid, "term_id": term, "axial_slice": str(z), "coronal_slice": f"{'ijk'[ax]}={y}",
            "window": window, "software": "curator review export"}
    return canvas, text


def write_previews(store: CaseStore, amap: Any, rows: list[dict[str, Any]], folder: Path) -> list[str]:
    """``preview_<term>.png`` of each of a case's attention ``rows`` (at its ``peak_slice``; none
    without attention) into ``folder``: the label the release uses (original > revised > pseudo:
    a reviewed term shows its revision, not the pseudo label it replaced) under the term's
    attention of the ``amap`` (:func:`curator.pseudolabel.outputs.read_attention`); the file names."""
    modality = str(store.attrs.get("modality") or "CT")
    cid = store.path.stem
    files = []
    for r in rows:
        z = r["peak_slice"]
        if z is None:
            continue
        if tuple(amap.shape) != tuple(store.geometry.shape) or z >= store.geometry.shape[2]:
            log.warning("review: no preview of %s %s: its attention map is not on the store's grid (the "
                        "store was rebuilt after pseudolabel ran; run pseudolabel again)", cid, r["term_id"])
            continue
        img, text = case_preview(store, amap, r["term_id"], z, modality)
        name = f"preview_{r['term_id']}.png"
        save_png(img, folder / name, text)
        files.append(name)
    return files
