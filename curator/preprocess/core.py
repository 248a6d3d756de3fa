"""One case, arrays in → preprocessed arrays + geometry + statistics out (no file I/O).

>>> import numpy as np
>>> from curator.testing.phantoms import Subject, grid, render, remap
>>> g = grid((40, 32, 12), (6.0, 6.0, 9.0), "LPS")
>>> img, lab = render(Subject.random(1), g, "CT", seed=1)
>>> planes = [(remap(lab, {"liver": 1}), {1: ["liver"]}, {1: "1"})]
>>> out = preprocess_arrays(img.astype(np.int16), g, planes, "CT", PreprocessConfig())
>>> out.geometry.orientation, out.geometry.spacing, out.image.dtype, out.body_voxels > 0
('RAS', (1.0, 1.0, 3.0), dtype('int16'), True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import fastremap
import numpy as np
from numpy.typing import NDArray

from curator.errors import InputError
from curator.io.volume import Geometry
from curator.preprocess.body import bbox, body_mask, body_threshold, crop_box, union_box
from curator.preprocess.config import PreprocessConfig
from curator.preprocess.intensity import (
    INTEGER_RANGE,
    far_outliers,
    normalisation,
    stats,
    storage_dtype,
    whole_numbers,
    window_issue,
)
from curator.preprocess.labels import Plane
from curator.preprocess.resample import reorient, resample_image, resample_labels, target_grid


@dataclass
class Prepared:
    """A preprocessed case, ready for :meth:`curator.store.CaseStore.create`."""

    geometry: Geometry
    image: NDArray[Any] | None
    body: NDArray[np.bool_] | None
    planes: list[Plane]
    attrs: dict[str, Any] = field(default_factory=dict)
    body_voxels: int | None = None
    intensity: dict[str, float] | None = None
    foreground: dict[str, float] | None = None
    resampled_shape: tuple[int, ...] = ()
    crop_start: tuple[int, ...] = (0, 0, 0)
    lost: list[tuple[str, list[str]]] = field(default_factory=list)  # (raw value/key, terms) resampling erased
    clipped: tuple[int, float, float] | None = None  # (voxels, low, high): far outliers set to the range's edge
    body_threshold: float | None = None  # the body mask's threshold, physical units (HU for CT)
    saturated: int = 0  # voxels cubic interpolation overshot beyond an integer store's range (clipped to it)
    flat_window: InputError | None = None  # the intensity window leaves no contrast inside the body


def target_spacing(geometry: Geometry, config: PreprocessConfig, median: tuple[float, ...] | None = None
                   ) -> tuple[float, ...]:
    """The spacing this case is resampled to (``median``: the dataset's, after reorientation)."""
    if config.spacing == "isotropic":
        return (config.isotropic_mm,) * 3
    if config.spacing == "median" and median is not None:
        return tuple(median)
    return tuple(config.target_spacing_mm)


def reoriented_spacing(geometry: Geometry, codes: str) -> tuple[float, float, float]:
    """Spacing along the axes of ``geometry`` once reoriented to ``codes`` (no data touched)."""
    _, g = reorient(np.empty((1, 1, 1)), Geometry.from_affine((1, 1, 1), geometry.matrix), codes)
    return g.spacing


def preprocess_arrays(image: NDArray[Any] | None, geometry: Geometry, planes: list[Plane], modality: str,
                      config: PreprocessConfig, *, spacing: tuple[float, ...] | None = None,
                      intensity_offset: float = 0.0) -> Prepared:
    """Reorient, resample, body-mask, crop and measure one case (``image`` may be ``None``)."""
    spacing = spacing or target_spacing(geometry, config)
    src_geom = geometry
    view, geometry = reorient(image if image is not None else np.broadcast_to(np.uint8(0), geometry.shape),
                              geometry, config.orientation)
    out_geom, ratios = target_grid(geometry, spacing)
    img = None
    clipped = None
    overshoot: list[int] = []  # voxels a cubic resampling overshot beyond the integer dtype (clipped)
    if image is not None:
        edges = far_outliers(view)
        if edges is not None:  # a fill value far outside the image's range would take all the precision
            n_out = int(np.count_nonzero((view < edges[0]) | (view > edges[1])))
            view = np.clip(view, edges[0], edges[1]).astype(view.dtype, copy=False)
            clipped = (n_out, edges[0] + intensity_offset, edges[1] + intensity_offset)
        lo, hi = float(view.min()) + intensity_offset, float(view.max()) + intensity_offset
        whole_offset = intensity_offset == float(int(intensity_offset))
        # a float image of whole numbers (a float32 CT in HU) is stored as an integer one: float16
        # rounded its HU above 2048 (3071 -> 3072), the step 4 HU above 4096
        whole = (whole_offset and view.dtype.kind == "f" and INTEGER_RANGE[0] <= lo and hi <= INTEGER_RANGE[1]
                 and whole_numbers(view))
        dtype, scale = storage_dtype(view.dtype if whole_offset else np.dtype(np.float32), lo, hi, whole=whole)
        src = view if (scale == 1.0 and intensity_offset == 0.0) else _Shifted(view, intensity_offset, scale)
        img = resample_image(src, ratios, out_geom.shape, config.image_interpolation, dtype,  # type: ignore[arg-type]
                             clipped=overshoot)
        del view, src
    else:
        scale = 1.0
    out_planes: list[Plane] = []
    lost: list[tuple[str, list[str]]] = []
    for arr, values, raw in planes:
        pv, _ = reorient(arr, src_geom, config.orientation)
        res = resample_labels(pv, ratios, out_geom.shape, config.label_interpolation)
        kept = {int(c) for c in fastremap.unique(res)} if res is not pv else set(values)
        gone = sorted(c for c in values if c not in kept)
        if gone:  # a structure thinner than the new grid: its code must not claim a label the store lacks
            lost += [(str(raw.get(c, c)), list(values[c])) for c in gone]
            values = {c: t for c, t in values.items() if c in kept}
            raw = {c: r for c, r in raw.items() if c in kept}
        if values:
            out_planes.append((res, values, raw))
    label_box = None
    for arr, _, _ in out_planes:
        label_box = union_box(label_box, bbox(arr))
    # the image is in stored units (physical ÷ scale): so is the CT threshold
    thr = body_threshold(img, modality, config.body_threshold_hu / scale) if img is not None else None
    body = body_mask(img, modality, threshold=thr) if img is not None else None
    box = tuple(slice(0, n) for n in out_geom.shape)
    margin = tuple(int(np.ceil(config.crop_margin_mm / s)) for s in out_geom.spacing)
    if img is not None and config.crop == "body" and body is not None and body.any():
        box = crop_box(body, margin, label_box)
    elif img is not None and config.crop == "nonzero":
        box = crop_box(img != 0, margin, label_box)
    start = tuple(s.start for s in box)
    shifted = out_geom.matrix.copy()
    shifted[:3, 3] = out_geom.voxel_to_world(np.asarray(start))[0]
    final = Geometry.from_affine(tuple(s.stop - s.start for s in box), shifted)
    prep = Prepared(final, None, None, [], resampled_shape=out_geom.shape, crop_start=start, lost=lost,
                    clipped=clipped, body_threshold=thr * scale if thr is not None else None,
                    saturated=sum(overshoot))
    # crops are copied in the arrays' own memory order (Fortran for nibabel reads): the store
    # writer copies 64³ blocks in either order, so no full-volume transpose is ever made
    prep.planes = [(a[box].copy(order="K"), v, r) for a, v, r in out_planes]
    del out_planes
    if img is not None and body is not None:
        prep.image = img[box].copy(order="K")
        prep.body = body[box].copy(order="K")
        del img, body
        _measure(prep, prep.image, prep.body, scale)
    prep.attrs = {
        "modality": modality, "source_affine": list(src_geom.affine), "source_shape": list(src_geom.shape),
        "source_orientation": src_geom.orientation, "orientation": config.orientation.upper(),
        "target_spacing": [float(x) for x in spacing], "resampled_shape": list(out_geom.shape),
        "crop_start": list(start), "crop": config.crop if image is not None else "none",
        "image_interpolation": config.image_interpolation, "label_interpolation": config.label_interpolation,
        "intensity_offset": intensity_offset,
    }
    if prep.image is not None:
        prep.attrs["normalisation"] = normalisation(prep.image, modality, config.ct_clip, config.mr_percentiles, scale,
                                                    pet_percentiles=config.pet_percentiles, pet_clip=config.pet_clip)
        prep.flat_window = window_issue(prep.image, prep.body, prep.attrs["normalisation"], modality)
    return prep


def _measure(prep: Prepared, image: NDArray[Any], body: NDArray[np.bool_], scale: float) -> None:
    prep.body_voxels = int(np.count_nonzero(body))
    prep.intensity = stats(image[body] if prep.body_voxels else image, scale)
    fg: NDArray[np.bool_] | None = None
    for arr, _, _ in prep.planes:
        fg = arr != 0 if fg is None else (fg | (arr != 0))
    if fg is not None and fg.any():
        prep.foreground = stats(image[fg], scale)


class _Shifted:
    """A lazy ``(view + offset) / scale`` that resampling reads slab by slab (no full copy)."""

    def __init__(self, a: NDArray[Any], offset: float, scale: float) -> None:
        self.a, self.offset, self.scale = a, offset, scale
        self.shape, self.dtype = a.shape, np.dtype(np.float32)

    def __getitem__(self, key: Any) -> NDArray[np.float32]:
        # a copy, always: for a float32 image ``asarray`` is a view, and the in-place shift below
        # then wrote into the caller's image — twice into the planes that consecutive slabs share
        x = np.array(self.a[key], dtype=np.float32)
        if self.offset:
            x += np.float32(self.offset)
        if self.scale != 1.0:
            x /= np.float32(self.scale)
        return x

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray[Any]:
        return self[...]
