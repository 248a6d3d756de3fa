"""Format round trips: write a scan as NIfTI, NRRD or a DICOM series and read it back.

What copies between datasets go through (e.g. a TCIA DICOM series re-released as NIfTI).
The header written is geometry-correct; readers are curator's own (:func:`read_volume`).

>>> import tempfile, numpy as np
>>> from curator.testing.phantoms import grid
>>> g = grid((8, 6, 4), (2.0, 2.0, 3.0), "LPS")
>>> a = np.arange(192, dtype=np.int16).reshape(8, 6, 4)
>>> with tempfile.TemporaryDirectory() as d:
...     g2, a2 = roundtrip(g, a, "nrrd", Path(d))
>>> bool(np.array_equal(a2, a)) and g2.mismatch(g) is None
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from curator.io.formats import read_volume
from curator.io.volume import LPS_TO_RAS, Geometry
from curator.testing.layouts import save_nifti, write_dicom_series

Format = Literal["nifti", "nrrd", "dicom"]


def write_nrrd(path: Path, a: NDArray[Any], g: Geometry) -> None:
    """NRRD via SimpleITK with an LPS header equivalent to ``g``."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(a.T))
    lps = LPS_TO_RAS @ g.matrix
    sp = np.asarray(g.spacing)
    img.SetSpacing(tuple(float(s) for s in sp))
    img.SetOrigin(tuple(float(x) for x in lps[:3, 3]))
    img.SetDirection(tuple(float(x) for x in (lps[:3, :3] / sp).ravel()))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)


def roundtrip(g: Geometry, a: NDArray[Any], fmt: Format, folder: Path, modality: str = "CT",
              name: str = "scan") -> tuple[Geometry, NDArray[Any]]:
    """Write ``(g, a)`` in ``fmt`` under ``folder`` and read it back."""
    if fmt == "nifti":
        path = folder / f"{name}.nii.gz"
        save_nifti(path, a, g)
    elif fmt == "nrrd":
        path = folder / f"{name}.nrrd"
        write_nrrd(path, a, g)
    else:
        path = folder / name
        write_dicom_series(path, np.asarray(a, dtype=np.float64), g, modality=modality)
    vol = read_volume(path, role="image")
    return vol.geometry, vol.array
