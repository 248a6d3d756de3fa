"""What a read volume must be: 3-D with its declared channels, numeric voxels, millimetre
spacing; and messages without numpy reprs or the source root."""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from curator.errors import CuratorError
from curator.io import read_volume
from curator.io.volume import Geometry

SHAPE = (12, 10, 8)
AFF = np.diag([1.5, 1.5, 2.5, 1.0])


def _save(path: Path, a: np.ndarray, affine: np.ndarray = AFF, units: str | None = None) -> Path:
    img = nib.Nifti1Image(a, affine, dtype=a.dtype)
    if units:
        img.header.set_xyzt_units(units)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nib.save(img, str(path))
    return path


def _image(*extra: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 500, SHAPE + extra).astype(np.int16)


def _error(path: Path, **kw: object) -> CuratorError:
    with pytest.raises(CuratorError) as e:
        read_volume(path, **kw)  # type: ignore[arg-type]
    return e.value


def test_a_channel_of_a_3d_file_is_a_problem(tmp_path: Path) -> None:
    """An MSD task declaring T2 and ADC whose file is 3-D must not give two identical 'sequences'."""
    p = _save(tmp_path / "x.nii.gz", _image())
    for ch in (0, 1):
        err = _error(p, channel=ch)
        assert err.kind == "not_3d" and "one 3-D volume" in err.detail


def test_more_channels_than_declared_is_a_problem(tmp_path: Path) -> None:
    p = _save(tmp_path / "x.nii.gz", _image(3))
    err = _error(p, channel=0, channels=2)
    assert err.kind == "not_3d"
    assert "3 channels where the dataset declares 2" in err.detail and "[2]" in err.detail
    assert read_volume(p, channel=2, channels=3).shape == SHAPE


@pytest.mark.parametrize("fmt", ["nii.gz", "nrrd", "npy"])
def test_a_2d_image_is_not_a_volume(tmp_path: Path, fmt: str) -> None:
    """A 2-D file is not a 1-slice volume; a folder of PNG slices still reads as a stack."""
    from PIL import Image

    (tmp_path / "gt").mkdir()
    for k in range(3):
        Image.fromarray(np.full((6, 5), 40 * k, np.uint8)).save(tmp_path / "gt" / f"s_{k}.png")
    assert read_volume(tmp_path / "gt", role="label").shape == (5, 6, 3)
    a = _image()[:, :, 0]
    p = tmp_path / f"x.{fmt}"
    if fmt == "npy":
        np.save(p, a)
    elif fmt == "nrrd":
        sitk.WriteImage(sitk.GetImageFromArray(a), str(p))
    else:
        _save(p, a)
    err = _error(p)
    assert err.kind == "not_3d" and "2-D" in err.detail


def test_nifti_units_are_converted_to_millimetres(tmp_path: Path) -> None:
    """pixdim 0.0015 with xyzt_units = metre is 1.5 mm (microns likewise; unknown units are mm)."""
    for units, factor in (("meter", 1000.0), ("micron", 0.001), ("mm", 1.0), ("unknown", 1.0)):
        aff = np.diag([1.5, 1.5, 2.5, 1.0]) / factor
        aff[3, 3] = 1.0
        aff[:3, 3] = np.array([-10.0, 20.0, 5.0]) / factor
        v = read_volume(_save(tmp_path / f"{units}.nii.gz", _image(), aff, units))
        np.testing.assert_allclose(v.geometry.spacing, (1.5, 1.5, 2.5), rtol=1e-6, err_msg=units)
        np.testing.assert_allclose(v.geometry.origin, (-10.0, 20.0, 5.0), rtol=1e-6, err_msg=units)


@pytest.mark.parametrize("spacing", [0.0015, 80.0])
def test_implausible_spacing_is_a_problem(tmp_path: Path, spacing: float) -> None:
    err = _error(_save(tmp_path / "x.nii.gz", _image(), np.diag([1.5, spacing, 2.5, 1.0])))
    assert err.kind == "implausible_spacing"
    assert f"(1.5, {spacing:g}, 2.5) mm" in err.detail


@pytest.mark.parametrize("role", ["image", "label"])
def test_a_zero_length_dimension_is_an_empty_volume(tmp_path: Path, role: str) -> None:
    err = _error(_save(tmp_path / "x.nii.gz", np.zeros((12, 10, 0), np.int16)), role=role)
    assert err.kind == "empty_volume" and "(12, 10, 0)" in err.detail


@pytest.mark.parametrize("role", ["image", "label"])
def test_rgb_voxels_are_an_unsupported_dtype(tmp_path: Path, role: str) -> None:
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"][2:5, 2:5, 2:5] = 255
    err = _error(_save(tmp_path / "x.nii.gz", rgb), role=role)
    assert err.kind == "unsupported_dtype" and "RGB" in err.detail
    assert ("integer code" if role == "label" else "grey-level") in (err.remedy or "")


def test_complex_voxels_are_an_unsupported_dtype(tmp_path: Path) -> None:
    err = _error(_save(tmp_path / "x.nii.gz", _image().astype(np.complex64)))
    assert err.kind == "unsupported_dtype" and "complex" in err.detail


def test_geometry_mismatch_prints_plain_numbers() -> None:
    a = Geometry.from_affine(SHAPE, AFF)
    b = Geometry.from_affine(SHAPE, np.diag([1.0, 1.0, 1.0, 1.0]))
    assert a.mismatch(b) == "spacing (1.5, 1.5, 2.5) vs (1, 1, 1) mm"


def _rotated(deg: float) -> Geometry:
    t = np.deg2rad(deg)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return Geometry.from_affine(SHAPE, rot @ AFF)


def test_a_rotated_grid_says_by_how_many_degrees_unless_no_voxel_moves_beyond_the_tolerance() -> None:
    """A 0.5° rotation is neither 'RAS vs RAS' nor a re-indexing of the same voxels; a 0.01°
    one (two tools' rounding: no corner voxel moves 0.01 mm) is the same grid."""
    a = Geometry.from_affine(SHAPE, AFF)
    why = a.mismatch(_rotated(0.5), tol_mm=0.01)
    assert why is not None and why.startswith("direction cosines differ by 0.5° (both RAS; a corner voxel lies")
    assert a.axis_map(_rotated(0.5), tol_mm=0.01) is None
    tiny = _rotated(0.01)
    assert a.corner_shift(tiny) < 0.01 and np.max(np.abs(a.direction - tiny.direction)) > 1e-4  # > tol_dir
    assert a.mismatch(tiny, tol_mm=0.01) is None
    assert a.mismatch(tiny, tol_mm=0.001) is not None  # the same rotation, a stricter tolerance
    flipped = Geometry.from_affine(SHAPE, AFF @ np.diag([-1.0, 1.0, 1.0, 1.0]) @ _shift(SHAPE[0] - 1))
    assert a.axis_map(flipped) == ((0, 1, 2), (True, False, False))  # a true re-indexing still maps


def _shift(i: int) -> np.ndarray:
    m = np.eye(4)
    m[0, 3] = -i
    return m


def test_reader_messages_do_not_carry_the_source_root(tmp_path: Path) -> None:
    import gzip

    p = tmp_path / "x.nii.gz"
    p.write_bytes(gzip.compress(b"<html>404 Not Found</html>\n" * 40))
    err = _error(p)
    assert err.kind == "corrupt_file"
    assert str(tmp_path) not in err.detail


@pytest.mark.parametrize("fmt", ["nii.gz", "nrrd", "mha", "npy"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_single_slice_volume_is_not_a_volume(tmp_path: Path, fmt: str, axis: int) -> None:
    """A 32x32x1 NIfTI was accepted as a volume, while the same slice as a 2-D file or a
    one-slice DICOM series is refused: one slice along any axis is not_3d in every format."""
    a = np.take(_image(), [0], axis=axis)
    p = tmp_path / f"x.{fmt}"
    if fmt == "npy":
        np.save(p, a)
    elif fmt in ("nrrd", "mha"):
        sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(a.T)), str(p))
    else:
        _save(p, a)
    err = _error(p)
    assert err.kind == "not_3d" and "single-slice" in err.detail and f"axis {axis}" in err.detail
    assert read_volume(_save(tmp_path / "two.nii.gz", np.take(_image(), [0, 1], axis=axis))).shape[axis] == 2
