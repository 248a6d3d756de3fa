"""Review previews: a slice of a case at the term's most attention — the image, the label a
release uses (green) and the attention (red outline) — as PNG for the worklist.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from curator.io.fsutil import atomic_path
from curator.pseudolabel.release import assembled_mask
from curator.store import CaseStore

log = logging.getLogger("curator")
CT_WINDOW = (-160.0, 240.0)


def _window(img: NDArray[Any], modality: str) -> NDArray[np.uint8]:
    lo, hi = CT_WINDOW if modality.upper() == "CT" else tuple(np.percentile(img, [1, 99]))
    x = np.clip((img.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)
    return (x * 255).astype(np.uint8)


def preview(image: NDArray[Any], label: NDArray[np.bool_], attention: NDArray[np.bool_], modality: str,
            scale: int = 3, direction: NDArray[np.float64] | None = None) -> Image.Image:
    """RGB slice of the store's third axis: grey image, green label, red attention — its
    outline, so the label inside it stays visible (a filled red hid it: the attention of a doubtful
    label covers it). With the store's ``direction`` cosines it is laid out
    as the report's gallery lays out axial slices — anterior up, the patient's right on the
    viewer's left (radiological); without them, rows are the second array axis flipped up."""
    from scipy.ndimage import binary_erosion

    grey = _window(image, modality)
    rgb = np.stack([grey] * 3, axis=-1).astype(np.float32)
    rgb[label] = 0.55 * rgb[label] + 0.45 * np.array([40, 220, 60])
    edge = attention & ~binary_erosion(attention, border_value=0)
    rgb[edge] = np.array([255, 30, 30])
    if direction is not None and int(np.argmax(np.abs(direction[2, :]))) == 2:  # the third axis is axial
        # imported here: the report package loads DuckDB and Polars, which a preprocess worker never needs
        from curator.report.gallery import oriented_slice

        rgb = np.stack([oriented_slice(rgb[:, :, c, None], direction, np.zeros(3), "axial") for c in range(3)],
                       axis=-1)
    else:
        rgb = np.flipud(np.transpose(rgb, (1, 0, 2)))
    img = Image.fromarray(np.ascontiguousarray(rgb.clip(0, 255).astype(np.uint8)), "RGB")
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def save_png(img: Image.Image, dest: Path) -> None:
    with atomic_path(dest) as tmp:
        img.save(tmp, format="PNG", optimize=False)


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
        att = amap.mask(r["term_id"], z)
        if tuple(att.shape) != tuple(store.geometry.shape[:2]) or z >= store.geometry.shape[2]:
            log.warning("review: no preview of %s %s: its attention map is not on the store's grid (the "
                        "store was rebuilt after pseudolabel ran; run pseudolabel again)", cid, r["term_id"])
            continue
        label = assembled_mask(store, r["term_id"], (slice(None), slice(None), slice(z, z + 1)))[0]
        img = preview(np.asarray(store.image[:, :, z]), label[:, :, 0], att, modality,
                      direction=store.geometry.direction)
        name = f"preview_{r['term_id']}.png"
        save_png(img, folder / name)
        files.append(name)
    return files
