"""The header check that keys ingest's channel cases holding a 4-D label (``label_frames``):
it reads each format's header as the reader reads the file, trailing axes of length 1 left out."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from curator.io.formats import header_past_3d


@pytest.mark.parametrize("shape, past", [((4, 5, 6), False), ((4, 5, 6, 1), False), ((4, 5, 6, 3), True),
                                         ((4, 5, 6, 1, 2), True)])
def test_nifti(tmp_path: Path, shape: tuple[int, ...], past: bool) -> None:
    for name in ("l.nii.gz", "l.nii"):
        nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4)), tmp_path / name)
        assert header_past_3d(tmp_path / name) is past
    assert header_past_3d((tmp_path / "l.nii").rename(tmp_path / "l")) is past  # no extension: told by its bytes


@pytest.mark.parametrize("name", ["l.mha", "l.nrrd"])
def test_itk(tmp_path: Path, name: str) -> None:
    four = sitk.JoinSeries([sitk.Image([4, 5, 6], sitk.sitkUInt8)] * 2)
    sitk.WriteImage(four, str(tmp_path / name))
    assert header_past_3d(tmp_path / name)
    sitk.WriteImage(sitk.Image([4, 5, 6], sitk.sitkUInt8), str(tmp_path / name))
    assert not header_past_3d(tmp_path / name)


def test_unreadable_or_other(tmp_path: Path) -> None:
    (tmp_path / "bad.mha").write_text("NDims = 73\nDimSize = 1 2 3\nElementDataFile = LOCAL\n")
    (tmp_path / "cut.nii.gz").write_bytes(b"\x1f\x8b")
    np.save(tmp_path / "a.npy", np.zeros((2, 3, 4, 5)))  # read whole, 4-D refused as before
    assert not any(header_past_3d(tmp_path / n) for n in ("bad.mha", "cut.nii.gz", "a.npy", "missing.nii"))
