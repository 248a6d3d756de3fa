"""A NIfTI label map whose header scales its integer codes by whole numbers (an image's header
copied onto the label: dcm2niix's CT ``scl_inter`` −1024, or ``scl_slope`` 2) is read as its stored
codes, and says so; its scaled values only when the dataset declares them rather than the codes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from curator.io.formats import read_volume
from curator.io.nifti import label_header_scaling, label_scaling_problem


def _label(path: Path, slope: float, inter: float, dtype: type = np.int16, codes: tuple[int, ...] = (1, 2, 4),
           ) -> np.ndarray:
    a = np.zeros((6, 5, 4), dtype)
    for i, c in enumerate(codes):
        a[i + 1] = c
    img = nib.Nifti1Image(a, np.diag([1.5, 1.5, 3.0, 1.0]), dtype=dtype)
    img.header.set_slope_inter(slope, inter)
    nib.save(img, str(path))
    return a


@pytest.mark.parametrize(("name", "slope", "inter", "dtype"), [("inter.nii.gz", 1, -1024, np.int16),
                                                                ("slope.nii", 2, 0, np.uint8)])
def test_a_label_is_read_as_its_stored_codes(tmp_path: Path, name: str, slope: int, inter: int, dtype: type) -> None:
    stored = _label(tmp_path / name, slope, inter, dtype)
    vol = read_volume(tmp_path / name, role="label")
    assert np.array_equal(vol.array, stored)  # the codes 0, 1, 2, 4: not -1024.. nor 0, 2, 4, 8
    said = vol.meta["label_scaling"]
    assert said == {"slope": slope, "inter": inter, "stored": [0, 1, 2, 4],
                    "scaled": [v * slope + inter for v in (0, 1, 2, 4)], "applied": False}
    err = label_scaling_problem(said, name)
    assert err.kind == "label_scaling_ignored" and err.path == name
    assert f"scl_slope {slope}, scl_inter {inter}" in err.detail and "[0, 1, 2, 4]" in err.detail
    assert str([v * slope + inter for v in (0, 1, 2, 4)]) in err.detail
    assert label_header_scaling(tmp_path / name) == (slope, inter)
    # an image keeps its scaling (HU)
    assert np.array_equal(read_volume(tmp_path / name).array, stored.astype(np.int32) * slope + inter)


def test_declared_scaled_values_are_read_scaled(tmp_path: Path) -> None:
    """A dataset YAML written from the scaled values (as a user following the old advice wrote it)
    keeps them: the scaled reading leaves fewer declared values undeclared; a tie goes to the codes."""
    stored = _label(tmp_path / "l.nii.gz", 1, -1024)
    vol = read_volume(tmp_path / "l.nii.gz", role="label", declared={0, -1024, -1023, -1022, -1020})
    assert np.array_equal(vol.array, stored.astype(np.int32) - 1024)
    assert vol.meta["label_scaling"]["applied"] is True
    assert label_scaling_problem(vol.meta["label_scaling"], "l").kind == "label_scaling_applied"
    both = read_volume(tmp_path / "l.nii.gz", role="label", declared={0, 1, 2, 4, -1024, -1023, -1022, -1020})
    assert np.array_equal(both.array, stored) and both.meta["label_scaling"]["applied"] is False
    codes = read_volume(tmp_path / "l.nii.gz", role="label", declared={0, 1, 2, 4})
    assert np.array_equal(codes.array, stored)


def test_a_fractional_scaling_is_applied_as_before(tmp_path: Path) -> None:
    """A writer's float factors (nibabel fitting float codes into int16) are the label's values:
    stored 2048.. with slope 0.5, intercept -1024 are the codes 0, 1, 2, 4."""
    a = np.zeros((6, 5, 4), np.int16)
    a[1], a[2], a[3] = 1, 2, 4
    img = nib.Nifti1Image(a * 2 + 2048, np.eye(4), dtype=np.int16)
    img.header.set_slope_inter(0.5, -1024)
    nib.save(img, str(tmp_path / "f.nii.gz"))
    vol = read_volume(tmp_path / "f.nii.gz", role="label")
    assert np.array_equal(vol.array, a) and "label_scaling" not in vol.meta
    assert label_header_scaling(tmp_path / "f.nii.gz") is None


def test_an_unscaled_label_says_nothing(tmp_path: Path) -> None:
    _label(tmp_path / "u.nii.gz", 1, 0)
    assert "label_scaling" not in read_volume(tmp_path / "u.nii.gz", role="label").meta
    assert label_header_scaling(tmp_path / "u.nii.gz") is None


def test_a_nifti2_label_s_scaling_is_found_for_its_cache_key(tmp_path: Path) -> None:
    """The reader reads a NIfTI-2 label as its stored codes too, but the header check that keys the
    cache read NIfTI-1 only: a NIfTI-2 label's cached ingest result was never redone (review 30)."""
    a = np.zeros((6, 5, 4), np.int16)
    a[1], a[2] = 1, 2
    img = nib.Nifti2Image(a, np.diag([1.5, 1.5, 3.0, 1.0]), dtype=np.int16)
    img.header.set_slope_inter(1, -1024)
    for name in ("two.nii", "two.nii.gz"):
        nib.save(img, str(tmp_path / name))
        assert np.array_equal(read_volume(tmp_path / name, role="label").array, a)
        assert label_header_scaling(tmp_path / name) == (1, -1024)
