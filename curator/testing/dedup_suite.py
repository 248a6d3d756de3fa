"""The duplicate-detection perturbation suite: what public datasets do to each other's scans.

:func:`perturbations` turns one scan into named, geometry-correct copies covering every
robustness target of the dedup issue (resampling 0.5–5 mm, dtype, offsets and clipping
windows, noise, in-plane crop to the body, z-crop down to 25%, flips and permutations with
correct headers, stale or wrong origins, NIfTI/NRRD/DICOM conversion) plus combinations
seen in the wild. :func:`distinct_scans` gives what must *not* be paired: different
synthetic patients of one protocol, a second sequence of one patient, a scan's label map.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.dedup.canonical import body_threshold
from curator.io.volume import Geometry
from curator.testing import perturb as P
from curator.testing.convert import roundtrip
from curator.testing.phantoms import Subject, grid, render

Scan = tuple[Geometry, NDArray[Any]]
MAX_RESAMPLED_VOXELS = 40e6  # beyond this, 0.5 mm resampling keeps the native slice spacing
# a T2-like contrast for the phantom label codes of phantoms.STRUCTURES (fluid bright, bone dark)
T2_VALUES = {0: 5.0, 1: 300.0, 2: 700.0, 3: 650.0, 4: 650.0, 5: 500.0, 6: 100.0, 7: 60.0, 8: 900.0, 9: 1200.0}

# perturbation name -> robustness target it covers (the item 2)
TARGETS = {
    "resample": "resampling 0.5-5 mm", "dtype": "dtype change", "offset": "constant offset",
    "clip": "clipping window", "noise": "noise", "crop": "in-plane crop to the body",
    "zcrop": "z-crop (down to 25%)", "flip": "axis flip (correct header)", "permute": "axis permutation (correct header)",
    "origin": "wrong or stale origin", "to": "format conversion", "combo": "combinations",
}


def perturbations(g: Geometry, a: NDArray[Any], modality: str, tmp: Path) -> dict[str, Callable[[], Scan]]:
    """Named copies of ``(g, a)`` (lazy: call a value to build it). ``tmp`` receives converted files."""
    lo, hi = (float(x) for x in np.percentile(a, [1, 99]))
    p10, p90 = (float(x) for x in np.percentile(a, [10, 90]))
    thr = body_threshold(a)
    ct = modality == "CT"
    off = 1024.0 if ct else 0.1 * (hi - lo)
    out: dict[str, Callable[[], Scan]] = {}
    for s in (0.5, 1.0, 2.0, 3.0, 5.0):
        sp = (s, s, s)
        if np.prod(np.asarray(g.spacing) * np.asarray(a.shape) / s) > MAX_RESAMPLED_VOXELS:
            sp = (s, s, max(s, g.spacing[2]))
        out[f"resample_{s:g}mm"] = functools.partial(P.resample, g, a, sp)
    out["resample_aniso_0.7x5mm"] = lambda: P.resample(g, a, (0.7, 0.7, 5.0))
    out["dtype_float32"] = lambda: P.as_dtype(g, a, np.float32)
    out["dtype_int32"] = lambda: P.as_dtype(g, a, np.int32)
    out["offset"] = lambda: P.offset(g, a, off)
    out["clip_wide"] = lambda: P.clip(g, a, -1000, 1000) if ct else P.clip(g, a, lo, hi)
    out["clip_narrow"] = lambda: P.clip(g, a, -160, 240) if ct else P.clip(g, a, p10, p90)
    out["noise"] = lambda: P.add_noise(g, a, 0.03 * (hi - lo), seed=1)
    out["crop_body"] = lambda: P.crop_to_body(g, a, thr)
    out["zcrop_50"] = lambda: P.keep_fraction(g, a, 2, 0.5, 0.2)
    out["zcrop_25_mid"] = lambda: P.keep_fraction(g, a, 2, 0.25, 0.5)
    out["zcrop_25_end"] = lambda: P.keep_fraction(g, a, 2, 0.25, 1.0)
    for ax in range(3):
        out[f"flip_{ax}"] = functools.partial(P.flip_axis, g, a, ax)
    out["permute_102"] = lambda: P.permute(g, a, (1, 0, 2))
    out["permute_201"] = lambda: P.permute(g, a, (2, 0, 1))
    out["origin_stale"] = lambda: P.stale_origin(g, a, P.body_box(a, thr))
    out["origin_wrong"] = lambda: P.shift_origin(g, a, (37.0, -120.0, 250.0))
    out["to_nifti"] = lambda: roundtrip(g, a, "nifti", tmp, modality)
    out["to_nrrd"] = lambda: roundtrip(g, a, "nrrd", tmp, modality)
    out["to_dicom"] = lambda: roundtrip(g, a, "dicom", tmp / "dicom", modality)
    out["combo_crop_offset"] = lambda: P.offset(*P.crop_to_body(g, a, thr), off)
    out["combo_resample4_flip"] = lambda: P.flip_axis(*P.resample(g, a, (g.spacing[0], 4.0, 4.0)), 2)
    out["combo_dicom_flip"] = lambda: roundtrip(*P.flip_axis(*P.flip_axis(g, a, 0), 1), "dicom",
                                                tmp / "dicom_flip", modality)
    out["combo_zcrop25_resample_clip"] = lambda: P.clip(*P.resample(*P.keep_fraction(g, a, 2, 0.25), (2.0, 2.0, 3.0)),
                                                        lo, hi)
    out["combo_zcrop50_noise_stale"] = lambda: P.add_noise(*P.stale_origin(
        g, a, (slice(None), slice(None), slice(a.shape[2] // 4, a.shape[2] // 4 + max(1, a.shape[2] // 2)))),
        0.03 * (hi - lo), seed=2)
    return out


def target_of(name: str) -> str:
    return TARGETS[name.split("_", 1)[0]]


def phantom_patients(n: int, modality: str = "CT", seed0: int = 100,
                     shape: tuple[int, int, int] = (90, 70, 40),
                     spacing: tuple[float, float, float] = (4.0, 4.0, 6.0), orientation: str = "LPS",
                     lesions: bool = True) -> dict[str, tuple[Scan, NDArray[Any]]]:
    """``n`` different synthetic patients scanned with one protocol: {name: ((geometry, image), labels)}."""
    g = grid(shape, spacing, orientation, center=(0.0, -10.0, 20.0))
    out = {}
    for i in range(n):
        subject = Subject.random(seed0 + i) if lesions else Subject.random(seed0 + i, tumor=False, cyst=False)
        img, lab = render(subject, g, modality, seed=seed0 + i)
        arr = np.rint(img).astype(np.int16) if modality == "CT" else img
        out[f"phantom_{modality.lower()}_{seed0 + i}"] = ((g, arr), lab)
    return out


def t2_of_phantom(img: NDArray[Any], labels: NDArray[Any], seed: int = 9) -> NDArray[Any]:
    """A T2-like second sequence of a phantom MR (same patient, other contrast, new noise)."""
    return P.second_sequence(img, seed=seed, labels=labels, values=T2_VALUES)
