"""The NIfTI files curator writes (exports, review folders, demo downloads): streamed to disk,
the same bytes every time, and placed where ITK-based tools place them."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from curator.io.nifti import nifti_bytes, read_nifti, write_nifti
from curator.io.volume import Geometry, Volume


def _volume() -> Volume:
    affine = np.array([[-0.8, 0, 0, 120.0], [0, -0.7, 0, 95.5], [0, 0, 2.5, -310.0], [0, 0, 0, 1]])
    a = np.random.default_rng(0).normal(0, 300, (256, 240, 120)).astype(np.int16)  # 14.7 MB
    return Volume(a, Geometry.from_affine(a.shape, affine))


def test_written_nifti_is_streamed_deterministic_and_read_alike(tmp_path: Path) -> None:
    vol = _volume()
    tracemalloc.start()
    try:
        write_nifti(tmp_path / "a.nii.gz", vol)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # nothing the size of the volume is held besides the volume: the bytes go to disk as gzip makes them
    assert peak < vol.array.nbytes / 8, (peak, vol.array.nbytes)
    write_nifti(tmp_path / "other" / "b.nii.gz", vol)
    a, b = (tmp_path / "a.nii.gz").read_bytes(), (tmp_path / "other" / "b.nii.gz").read_bytes()
    assert a == b == nifti_bytes(vol)  # no file name, no time in the gzip header
    assert a[:2] == b"\x1f\x8b" and a[3] & 0x08 == 0 and a[4:8] == b"\0\0\0\0"
    back = read_nifti(tmp_path / "a.nii.gz", role="image", channel=None, max_voxels=10**8)
    assert np.array_equal(back.array, vol.array) and np.allclose(back.geometry.matrix, vol.geometry.matrix)
    img = sitk.ReadImage(str(tmp_path / "a.nii.gz"))  # ITK reads the qform: the same grid (LPS)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ vol.geometry.matrix
    assert np.allclose(img.GetOrigin(), lps[:3, 3]) and np.allclose(img.GetSpacing(), (0.8, 0.7, 2.5))
    assert np.allclose(np.reshape(img.GetDirection(), (3, 3)), lps[:3, :3] / np.array([0.8, 0.7, 2.5]))
    write_nifti(tmp_path / "c.nii", vol)
    assert (tmp_path / "c.nii").read_bytes() == nifti_bytes(vol, compress=False)
