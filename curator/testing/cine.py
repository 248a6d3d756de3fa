"""A tiny ACDC-like cine MR download: ``training/patientNNN/`` with an end-diastole and an
end-systole frame (``patientNNN_frameFF.nii.gz`` + ``_gt``) and the ``Info.cfg`` saying which is
which (with the group, height and weight lines ACDC's files carry).

The left ventricle (raw value 3) of an ES frame holds about half the voxels of its ED frame's,
as in a beating heart, so a cohort mixing the phases is bimodal.

>>> import tempfile, pathlib
>>> root = write_acdc_tree(pathlib.Path(tempfile.mkdtemp()), 2)
>>> sorted(p.name for p in (root / "training" / "patient002").iterdir())
['Info.cfg', 'patient002_frame01.nii.gz', 'patient002_frame01_gt.nii.gz', 'patient002_frame12.nii.gz', 'patient002_frame12_gt.nii.gz']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from curator.testing.layouts import save_nifti
from curator.testing.phantoms import grid

SHAPE = (32, 32, 8)
SPACING = (1.5, 1.5, 5.0)
ED_RADIUS_MM = 13.0  # the ES ventricle's radius is ED_RADIUS_MM * ES_SCALE: about half its volume
ES_SCALE = 0.72


def cine_frame(radius_mm: float, seed: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """An MR frame (a bright body disc, a blood pool) and its label map: 3 the left ventricle's
    blood pool (a cylinder of ``radius_mm`` along k), 2 a myocardium ring around it, 1 a right
    ventricle beside it."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(SHAPE[0]), np.arange(SHAPE[1]), indexing="ij")
    x, y = (i - 16) * SPACING[0], (j - 16) * SPACING[1]
    r = np.hypot(x, y)
    lab2d = np.zeros(SHAPE[:2], np.uint8)
    lab2d[np.hypot(x - 15, y) <= 6] = 1
    lab2d[(r > radius_mm) & (r <= radius_mm + 3)] = 2
    lab2d[r <= radius_mm] = 3
    lab = np.repeat(lab2d[:, :, None], SHAPE[2], axis=2)
    lab[:, :, 0] = lab[:, :, -1] = 0  # the heart does not run through the whole stack
    img = np.where(r <= 23, 300, 10).astype(np.float64)[:, :, None] + rng.normal(0, 5, SHAPE)
    img[lab == 3] += 200
    return img.astype(np.int16), lab


def info_cfg(ed: int, es: int, n_frames: int = 30) -> str:
    """ACDC's Info.cfg for a patient (the group, height and weight are made up)."""
    return f"ED: {ed}\nES: {es}\nGroup: DCM\nHeight: 184.0\nNbFrame: {n_frames}\nWeight: 95.0\n"


def write_acdc_tree(root: Path, patients: int, seed: int = 0) -> Path:
    """``root/training/patientNNN/`` for NNN = 001 .. ``patients``: ED frame 01, ES frame 10 + (NNN mod 5),
    labels, Info.cfg. Radii vary a little per patient. Returns ``root``."""
    g = grid(SHAPE, SPACING, "RAS")
    rng = np.random.default_rng(seed)
    for n in range(1, patients + 1):
        folder = root / "training" / f"patient{n:03d}"
        es = 10 + n % 5
        wobble = float(rng.normal(1.0, 0.04))
        for frame, radius in ((1, ED_RADIUS_MM * wobble), (es, ED_RADIUS_MM * ES_SCALE * wobble)):
            img, lab = cine_frame(radius, seed=seed * 1000 + n * 100 + frame)
            save_nifti(folder / f"patient{n:03d}_frame{frame:02d}.nii.gz", img, g)
            save_nifti(folder / f"patient{n:03d}_frame{frame:02d}_gt.nii.gz", lab, g)
        (folder / "Info.cfg").write_text(info_cfg(1, es))
    return root
