"""DICOM series: errors name the series folder and a slice's rank, never a file name; sheared,
mixed-spacing, single-slice and unlistable series are refused with their own kind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest

from curator.errors import CuratorError
from curator.io import read_volume
from curator.testing.layouts import write_dicom_series, write_enhanced_dicom
from curator.testing.phantoms import grid

# a Siemens syngo export names each slice after the patient, the study and its date
PHI_NAME = "QXPLANT_MARGARETHE.CT.QXSTUDYDESC.3.{k}.2017.03.29.10.11.12.{k}.IMA"


def _series(folder: Path, n: int = 8, phi_names: bool = True) -> list[Path]:
    g = grid((12, 10, n), (1.2, 1.2, 2.5), "LPS")
    img = np.random.default_rng(3).integers(-200, 300, g.shape).astype(np.float64)
    files = write_dicom_series(folder, img, g)
    if not phi_names:
        return files
    out = []
    for k, f in enumerate(files, start=1):
        out.append(f.rename(f.parent / PHI_NAME.format(k=k)))
    return out


def _edit(f: Path, **values: object) -> None:
    ds = pydicom.dcmread(f)
    for key, v in values.items():
        setattr(ds, key, v)
    ds.save_as(f)


def _error(path: Path) -> CuratorError:
    with pytest.raises(CuratorError) as e:
        read_volume(path)
    return e.value


def _assert_neutral(err: CuratorError, folder: Path) -> None:
    assert err.path == str(folder)
    for leak in ("QXPLANT", "MARGARETHE", "2017.03.29", ".IMA", "IM000"):
        assert leak not in str(err), str(err)


def test_an_undecodable_slice_is_named_by_rank_with_its_cause(tmp_path: Path) -> None:
    files = _series(tmp_path / "s")
    by_position = sorted(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    b = by_position[4].read_bytes()
    by_position[4].write_bytes(b[:len(b) - 100])  # pixel data cut short
    err = _error(tmp_path / "s")
    assert err.kind == "corrupt_file"
    _assert_neutral(err, tmp_path / "s")
    assert "slice 5 of 8 (sorted by position)" in err.detail
    assert "itkGDCMImageIO" not in err.detail and "SimpleITK-build" not in err.detail
    assert "bytes" in err.detail  # the cause: the pixel data is shorter than its header says


def test_an_unreadable_slice_names_the_folder_not_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _series(tmp_path / "s")
    real = pydicom.dcmread

    def dcmread(p, *a, **kw):  # type: ignore[no-untyped-def]
        if Path(p) == files[2]:  # chmod 000 does not stop root: refuse the read as the OS would
            raise PermissionError(13, "Permission denied", str(p))
        return real(p, *a, **kw)

    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    err = _error(tmp_path / "s")
    assert err.kind == "permission_denied"
    _assert_neutral(err, tmp_path / "s")
    assert "file 3 of 8" in err.detail


def test_a_slice_without_position_names_its_rank(tmp_path: Path) -> None:
    files = _series(tmp_path / "s")
    ds = pydicom.dcmread(files[3])
    del ds.ImagePositionPatient
    ds.save_as(files[3])
    err = _error(tmp_path / "s")
    assert err.kind == "dicom_inconsistent" and "ImagePositionPatient" in err.detail
    _assert_neutral(err, tmp_path / "s")


def test_a_single_slice_series_is_not_a_volume(tmp_path: Path) -> None:
    """A folder holding one single-frame slice (e.g. an incomplete download) is not read as a
    volume with an invented 1 mm slice thickness."""
    files = _series(tmp_path / "s")
    for f in files[1:]:
        f.unlink()
    err = _error(tmp_path / "s")
    assert err.kind == "not_3d"
    _assert_neutral(err, tmp_path / "s")


def _shift_positions(files: list[Path], shift) -> None:  # type: ignore[no-untyped-def]
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        p = [float(x) for x in ds.ImagePositionPatient]
        _edit(f, ImagePositionPatient=[f"{v:.4f}" for v in shift(k, p)])


def test_a_tilted_gantry_series_is_refused(tmp_path: Path) -> None:
    """Positions that also move within the slice plane (gantry tilt) cannot be a voxel grid:
    dropping the shear would misplace every slice. Rounding jitter is no tilt."""
    _shift_positions(_series(tmp_path / "jitter", phi_names=False),
                     lambda k, p: [p[0] + 0.004 * (k % 2), p[1], p[2]])  # far below a pixel
    assert read_volume(tmp_path / "jitter").shape == (12, 10, 8)
    _shift_positions(_series(tmp_path / "s", phi_names=False),
                     lambda k, p: [p[0], p[1] + 0.4 * p[2] / 2.5, p[2]])  # 0.4 mm per 2.5 mm slice: 9.1°
    err = _error(tmp_path / "s")
    assert err.kind == "dicom_gantry_tilt"
    assert "dcm2niix" in (err.remedy or "")
    assert "9.1°" in err.detail


def test_a_slice_with_another_pixel_spacing_is_refused(tmp_path: Path) -> None:
    files = _series(tmp_path / "s")
    ds = pydicom.dcmread(files[5])
    ds.PixelSpacing = ["0.9", "0.9"]
    ds.save_as(files[5])
    err = _error(tmp_path / "s")
    assert err.kind == "dicom_inconsistent"
    assert "pixel spacing (0.9 × 0.9 mm where the others have 1.2 × 1.2 mm)" in err.detail
    _assert_neutral(err, tmp_path / "s")


def test_an_unlistable_series_folder_is_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "s"
    _series(folder)
    real = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        if Path(path) == folder:  # chmod 000 on the folder; root would still list it
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    err = _error(folder)
    assert err.kind == "permission_denied"
    assert err.path == str(folder) and "listed" in err.detail


def test_a_slice_with_its_own_rescale_slope_keeps_its_fractional_values(tmp_path: Path) -> None:
    """One slice rescaled by 0.5: its values are read as floats, not truncated to the first slice's
    integer type (0.5 lost on odd stored values)."""
    files = _series(tmp_path / "s", phi_names=False)
    ds = pydicom.dcmread(files[4])
    stored = ds.pixel_array.astype(np.float64)
    _edit(files[4], RescaleSlope=0.5)
    vol = read_volume(tmp_path / "s")
    expect = stored * 0.5 + float(ds.RescaleIntercept)
    got = [vol.array[:, :, k] for k in range(vol.shape[2])]
    best = min(float(np.max(np.abs(g.astype(np.float64) - e))) for g in got for e in (expect, expect.T)
               if g.shape == e.shape)
    assert vol.array.dtype == np.float32 and best == 0.0


def test_a_series_without_pixel_spacing_says_its_geometry_is_a_guess(tmp_path: Path) -> None:
    """ITK reads a slice without PixelSpacing as 1 mm: the reader must say so, not pass it on."""
    files = _series(tmp_path / "s", phi_names=False)
    assert "geometry_missing" not in read_volume(tmp_path / "s").meta
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.PixelSpacing
        ds.save_as(f)
    vol = read_volume(tmp_path / "s")
    assert vol.meta["geometry_missing"] == "PixelSpacing"


@pytest.mark.real
def test_real_enhanced_mr_without_geometry_is_flagged_and_a_real_series_is_not(real_data: Path) -> None:
    emri = read_volume(real_data / "pydicom/emri_small.dcm")  # an Enhanced MR object with no plane macros
    assert emri.meta["geometry_missing"] == "PixelSpacing, ImageOrientationPatient, ImagePositionPatient"
    assert emri.meta["header_slice_spacing"] == ("SpacingBetweenSlices", 1.2)  # for the warning to name
    for rel in ("pydicom/CT5N", "totalsegmentator/example_ct_dicom"):
        assert "geometry_missing" not in read_volume(real_data / rel).meta, rel


def test_a_missing_slice_in_a_short_series_is_named_as_missing(tmp_path: Path) -> None:
    """Gaps of 2.5 and 5 mm: the median of so few gaps fits no whole ratio, and the series was
    called unevenly spaced instead of one slice short."""
    files = _series(tmp_path / "s", n=4, phi_names=False)
    files[2].unlink()
    err = _error(tmp_path / "s")
    assert err.kind == "dicom_missing_slice" and "1 slice(s) missing" in str(err)


def _by_position(files: list[Path]) -> list[Path]:
    return sorted(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))


def test_unreadable_files_at_the_ends_of_a_series_are_named_not_dropped_silently(tmp_path: Path) -> None:
    """An empty file and a non-DICOM file where the first and last slices were: pydicom refuses
    both as not DICOM, and the series came out two slices short without a word."""
    files = _series(tmp_path / "s")
    ends = _by_position(files)
    names = sorted(f.name for f in files)
    ends[0].write_text("garbage not dicom")
    ends[-1].write_bytes(b"")
    vol = read_volume(tmp_path / "s")
    assert vol.shape[2] == 6
    kind, text, n = vol.meta["unread_files"]
    first, last = names.index(ends[0].name) + 1, names.index(ends[-1].name) + 1
    assert (kind, n) == ("corrupt_file", 2)
    assert f"file {first} of 8 (sorted by file name) is not DICOM" in text
    assert f"file {last} of 8 (sorted by file name) is empty (0 bytes)" in text
    assert "QXPLANT" not in text and ".IMA" not in text


def test_files_a_dicom_folder_holds_on_purpose_are_not_warned_of(tmp_path: Path) -> None:
    _series(tmp_path / "s", phi_names=False)
    for name in ("DICOMDIR", "README", "notes.txt", "preview.jpg", "index.xml"):
        (tmp_path / "s" / name).write_text("not a slice")
    assert "unread_files" not in read_volume(tmp_path / "s").meta


@pytest.mark.real
def test_real_series_folders_hold_no_unread_files(real_data: Path) -> None:
    for rel in ("pydicom/CT5N", "totalsegmentator/example_ct_dicom", "dcmqi/ct-3slice"):
        assert "unread_files" not in read_volume(real_data / rel).meta, rel


@pytest.mark.parametrize(("content", "kind", "why"), [(b"", "empty_file", "is empty (0 bytes)"),
                                                       (b"\x07" * 5000, "corrupt_file", "is not DICOM")])
def test_an_unreadable_file_in_a_gap_of_the_series_is_the_missing_slice(
        tmp_path: Path, content: bytes, kind: str, why: str) -> None:
    files = _series(tmp_path / "s")
    middle = _by_position(files)[3]
    rank = sorted(f.name for f in files).index(middle.name) + 1
    middle.write_bytes(content)
    err = _error(tmp_path / "s")
    assert err.kind == kind
    _assert_neutral(err, tmp_path / "s")
    assert f"file {rank} of 8 (sorted by file name) {why}" in err.detail and "1 slice(s) missing" in err.detail


# An enhanced (multi-frame) object places each frame by its own PlanePositionSequence; GDCM
# stacks the frames in file order and falls back to 1 mm voxels when they are not evenly spaced.
def _enhanced(path: Path, frame_order: list[int] | None = None) -> tuple[np.ndarray, object]:
    g = grid((12, 10, 9), (0.8, 0.7, 2.0), "LPS")
    img = np.random.default_rng(5).integers(-200, 300, g.shape).astype(np.float64)
    write_enhanced_dicom(path, img, g, frame_order=frame_order)
    return img, g


@pytest.mark.parametrize("order", [None, [8, 7, 6, 5, 4, 3, 2, 1, 0], [0, 2, 1, 3, 5, 4, 6, 8, 7]],
                         ids=["in_order", "reversed", "shuffled"])
def test_enhanced_frames_are_placed_by_their_positions(tmp_path: Path, order: list[int] | None) -> None:
    img, g = _enhanced(tmp_path / "ct.dcm", order)
    v = read_volume(tmp_path / "ct.dcm").on_grid(g)
    np.testing.assert_allclose(v.geometry.matrix, g.matrix, atol=1e-4)
    np.testing.assert_array_equal(v.array, img)


@pytest.mark.parametrize(("order", "kind"), [
    ([0, 1, 2, 3, 5, 6, 7, 8], "dicom_missing_slice"),
    ([0, 1, 2, 3, 3, 4, 5, 6], "dicom_inconsistent"),  # two frames at one position (e.g. two echoes)
], ids=["missing_frame", "repeated_position"])
def test_enhanced_frames_with_a_gap_or_a_repeat_are_refused(tmp_path: Path, order: list[int], kind: str) -> None:
    _enhanced(tmp_path / "ct.dcm", order)
    err = _error(tmp_path / "ct.dcm")
    assert err.kind == kind
    assert "frame" in str(err)


def test_a_study_in_one_folder_reads_its_scan_past_the_localizer_and_screenshot(tmp_path: Path) -> None:
    """A study exported into one folder (PACS exports, flat downloads): the scan's slices beside a
    2-slice localizer and a dose report's screen capture, each its own series, was refused as
    dicom_multiple_series; the scan is read, the others passed over."""
    g = grid((8, 8, 6), (2.0, 2.0, 3.0), "LPS")
    ramp = np.arange(64, dtype=float).reshape(8, 8, 1)
    scan = np.repeat(ramp, 6, axis=2) + np.arange(6) * 10
    write_dicom_series(tmp_path / "study", scan, g)
    write_dicom_series(tmp_path / "scout", np.repeat(ramp, 2, axis=2), grid((8, 8, 2), (2.0, 2.0, 3.0), "LPS"),
                       phi={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    write_dicom_series(tmp_path / "dose", ramp, grid((8, 8, 1), (2.0, 2.0, 3.0), "LPS"),
                       phi={"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"})
    for k, f in enumerate(sorted((tmp_path / "scout").iterdir()) + sorted((tmp_path / "dose").iterdir())):
        f.rename(tmp_path / "study" / f"ZZ{k}.dcm")
    vol = read_volume(tmp_path / "study", role="image", max_voxels=10**6)
    assert vol.array.shape == (8, 8, 6) and np.allclose(vol.array, scan)
    (tmp_path / "only").mkdir()  # a folder of nothing but a localizer is still read (not a silent nothing)
    write_dicom_series(tmp_path / "only", np.repeat(ramp, 2, axis=2), grid((8, 8, 2), (2.0, 2.0, 3.0), "LPS"),
                       phi={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    assert read_volume(tmp_path / "only", role="image", max_voxels=10**6).array.shape == (8, 8, 2)


def test_an_exact_copy_of_a_slice_is_left_out_and_said(tmp_path: Path) -> None:
    """A repeated download's 'IM0005 (1).dcm' (the same bytes) refused the whole series with 'two
    slices share one position', naming none: the copy is left out, said by its rank."""
    files = _series(tmp_path / "s")
    clean = read_volume(tmp_path / "s")
    # named as a browser names a second download: it sorts before the original (' ' < '.')
    (tmp_path / "s" / f"{files[4].stem} (1){files[4].suffix}").write_bytes(files[4].read_bytes())
    vol = read_volume(tmp_path / "s")
    assert np.array_equal(vol.array, clean.array) and vol.geometry.shape == clean.geometry.shape
    (said,) = vol.meta["duplicate_files"]
    assert said.startswith("file 5 of 9") and "a copy of file 6" in said  # the copy left out, not the original
    assert said.startswith("file ") and "of 9 (sorted by file name), a copy of file " in said and " mm" in said
    for leak in ("QXPLANT", "MARGARETHE", "2017.03.29", ".IMA"):
        assert leak not in said


def test_two_different_slices_at_one_position_are_named(tmp_path: Path) -> None:
    files = _series(tmp_path / "s")
    copy = tmp_path / "s" / "extra.dcm"
    copy.write_bytes(files[4].read_bytes())
    _edit(copy, SOPInstanceUID="1.2.3.4.5", InstanceNumber=99)  # another acquisition's slice at that place
    err = _error(tmp_path / "s")
    assert err.kind == "dicom_inconsistent"
    assert "1 pair(s) of slices share one position: slice " in str(err) and " of 9 (sorted by position) and " in str(err)
    assert "mm along the normal" in str(err)
    _assert_neutral(err, tmp_path / "s")
