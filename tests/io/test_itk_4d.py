"""A 4-D MetaImage/NRRD of 1- or 2-byte values (an int16 cine, a uint8 label) is a 4-D file, not a
damaged download: refused as ``not_3d`` as a 4-D NIfTI is, read frame by frame when channels are
declared; a 4-D file cut short is still ``header_size_mismatch``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from curator.errors import CuratorError
from curator.io.formats import read_volume

FRAMES = 5


def _write(path: Path, dtype: type) -> np.ndarray:
    a = np.random.default_rng(0).integers(0, 100, (FRAMES, 8, 30, 32)).astype(dtype)  # t, z, y, x
    img = sitk.GetImageFromArray(a, isVector=False)
    img.SetSpacing((1.5, 1.5, 10.0, 30.0))
    sitk.WriteImage(img, str(path), False)  # uncompressed: the size check applies
    return a


@pytest.mark.parametrize(("name", "dtype", "role"), [("cine.mha", np.int16, "image"), ("cine.nrrd", np.int16, "image"),
                                                     ("lab.mha", np.uint8, "label")])
def test_a_4d_file_is_not_3d_not_a_bad_download(tmp_path: Path, name: str, dtype: type, role: str) -> None:
    a = _write(tmp_path / name, dtype)
    with pytest.raises(CuratorError) as e:
        read_volume(tmp_path / name, role=role)  # type: ignore[arg-type]
    assert e.value.kind == "not_3d" and "(32, 30, 8, 5)" in str(e.value)
    vol = read_volume(tmp_path / name, role=role, channel=2, channels=FRAMES)  # type: ignore[arg-type]
    assert np.array_equal(np.asarray(vol.array), a[2].transpose(2, 1, 0))


def test_a_4d_file_cut_short_is_still_a_size_mismatch(tmp_path: Path) -> None:
    p = tmp_path / "cine.mha"
    _write(p, np.int16)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 2 * 8 * 30 * 32 * 2])  # two frames short
    with pytest.raises(CuratorError) as e:
        read_volume(p)
    assert e.value.kind == "header_size_mismatch"
