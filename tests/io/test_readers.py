"""Readers: geometry round trips across formats, real samples, and clear errors."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from curator.errors import CuratorError, InputError
from curator.io import read_volume
from curator.io.nifti import write_nifti
from curator.io.volume import Geometry, Volume
from curator.testing.layouts import write_dicom_series
from curator.testing.phantoms import Subject, grid, render

ORIENTATIONS = ["RAS", "LPS", "IPL", "ASR", "LAI"]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_nifti_round_trip_keeps_geometry_and_values(tmp_path: Path, orientation: str) -> None:
    g = grid((20, 16, 8), (1.5, 2.0, 4.0), orientation, center=(10.0, -5.0, 30.0))
    img, _ = render(Subject.random(1), g, "CT")
    a = np.rint(img).astype(np.int16)
    write_nifti(tmp_path / "x.nii.gz", Volume(a, g))
    v = read_volume(tmp_path / "x.nii.gz")
    assert v.geometry.mismatch(g, tol_mm=1e-3) is None
    assert v.geometry.orientation == orientation
    np.testing.assert_array_equal(v.array, a)


@pytest.mark.parametrize("ext", [".nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("orientation", ["LPS", "RAS", "PIR"])
def test_itk_formats_agree_with_nifti_in_world_space(tmp_path: Path, ext: str, orientation: str) -> None:
    g = grid((12, 10, 6), (0.8, 0.9, 3.0), orientation, center=(1.0, 2.0, 3.0))
    a = np.arange(np.prod(g.shape), dtype=np.int16).reshape(g.shape)
    write_nifti(tmp_path / "ref.nii.gz", Volume(a, g))
    img = sitk.ReadImage(str(tmp_path / "ref.nii.gz"))
    sitk.WriteImage(img, str(tmp_path / f"x{ext}"))
    v = read_volume(tmp_path / f"x{ext}")
    assert v.geometry.mismatch(g, tol_mm=1e-3) is None, v.geometry.mismatch(g)
    np.testing.assert_array_equal(v.array, a)


@pytest.mark.parametrize("orientation", ["LPS", "RAS", "LAI", "RPI"])
def test_dicom_series_round_trip(tmp_path: Path, orientation: str) -> None:
    g = grid((24, 20, 7), (2.0, 2.5, 5.0), orientation, center=(0.0, 10.0, -40.0))
    img, _ = render(Subject.random(4), g, "CT")
    write_dicom_series(tmp_path / "series", img, g)
    v = read_volume(tmp_path / "series")
    assert v.geometry.mismatch(g, tol_mm=1e-3) is None
    assert v.array.dtype == np.int16
    expect = np.clip(np.rint(img), -1024, None)
    np.testing.assert_allclose(v.array, expect, atol=0.5)
    assert v.meta["modality"] == "CT" and "PatientName" not in v.meta


def test_label_role_returns_integers_and_rejects_fractions(tmp_path: Path) -> None:
    g = grid((6, 6, 3), (1.0, 1.0, 1.0))
    lab = np.zeros(g.shape, np.float32)
    lab[1:3, 1:3, 1] = 2.0
    write_nifti(tmp_path / "ok.nii.gz", Volume(lab, g))
    v = read_volume(tmp_path / "ok.nii.gz", role="label")
    assert v.array.dtype == np.uint8 and int(v.array.max()) == 2
    lab[0, 0, 0] = 0.5
    write_nifti(tmp_path / "bad.nii.gz", Volume(lab, g))
    with pytest.raises(InputError) as e:
        read_volume(tmp_path / "bad.nii.gz", role="label")
    assert e.value.kind == "label_not_integer"


def _nifti(path: Path, a: np.ndarray, affine: np.ndarray | None = None) -> Path:
    with warnings.catch_warnings():  # writing a deliberately broken header warns in nibabel
        warnings.simplefilter("ignore")
        nib.save(nib.Nifti1Image(a, np.eye(4) if affine is None else affine), str(path))
    return path


def _zero_spacing(path: Path) -> Path:
    img = nib.Nifti1Image(np.arange(64, dtype=np.int16).reshape(4, 4, 4), None)
    img.header["pixdim"][1:4] = [1.0, 0.0, 1.0]
    img.header["qform_code"] = 0
    img.header["sform_code"] = 0
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda p: p.write_bytes(b""), "empty_file"),
        (lambda p: p.write_bytes(gzip.compress(_nifti(p.with_name("t.nii"),
                                                      np.random.default_rng(0).integers(0, 999, (30, 30, 30)).astype(np.int16)).read_bytes())[:9000]),
         "truncated_file"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 400), "wrong_extension"),
        (lambda p: p.write_bytes(_nifti(p.with_name("t4.nii.gz"), np.ones((4, 4, 4, 3), np.int16)).read_bytes()),
         "not_3d"),
        (lambda p: p.write_bytes(_nifti(p.with_name("tn.nii.gz"),
                                        np.array(np.full((4, 4, 4), np.nan), np.float32)).read_bytes()),
         "non_finite_values"),
        (lambda p: p.write_bytes(_zero_spacing(p.with_name("tz.nii.gz")).read_bytes()), "invalid_spacing"),
        (lambda p: p.write_bytes(_nifti(p.with_name("ts.nii.gz"), np.full((4, 4, 4), 7, np.int16)).read_bytes()),
         "blank_image"),
    ],
    ids=["empty", "truncated", "png-as-nifti", "4d", "nan", "zero-spacing", "constant"],
)
def test_bad_nifti_inputs_raise_their_kind(tmp_path: Path, make, kind: str) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "x.nii.gz"
    make(p)
    with pytest.raises(CuratorError) as e:
        read_volume(p)
    assert e.value.kind == kind
    assert "What to do" in str(e.value)


def test_corrupt_gzip_body_is_a_read_error(tmp_path: Path) -> None:
    """A damaged deflate stream (CRC or inflate error, whichever gzip library reads it) is a
    ``truncated_file`` read error, never a crash."""
    src = _nifti(tmp_path / "t.nii", np.random.default_rng(1).integers(0, 999, (30, 30, 30)).astype(np.int16))
    data = bytearray(gzip.compress(src.read_bytes()))
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    (tmp_path / "x.nii.gz").write_bytes(bytes(data))
    with pytest.raises(CuratorError) as e:
        read_volume(tmp_path / "x.nii.gz")
    assert e.value.kind == "truncated_file"


@pytest.mark.parametrize("name", ["x.nii.gz", "x.nii"])
def test_nifti_arrays_match_nibabel_in_native_order(tmp_path: Path, name: str) -> None:
    """Values (scaled as nibabel scales them) equal nibabel's; the array stays Fortran-ordered
    (no C-order copy) and writable."""
    a = np.random.default_rng(2).integers(-1000, 1000, (17, 13, 9)).astype(np.int16)
    img = nib.Nifti1Image(a, np.diag([0.8, 0.8, 3.0, 1.0]))
    img.header.set_slope_inter(0.5, -3.0)
    nib.save(img, str(tmp_path / name))
    v = read_volume(tmp_path / name)
    ref = np.asanyarray(nib.load(str(tmp_path / name)).dataobj)
    assert v.array.dtype == ref.dtype and np.array_equal(v.array, ref)
    assert v.array.flags.f_contiguous and v.array.flags.writeable


def test_non_orthonormal_direction(tmp_path: Path) -> None:
    aff = np.array([[1.0, 0.3, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    g = Geometry.from_affine((4, 4, 4), aff)
    with pytest.raises(CuratorError) as e:
        g.validate("x")
    assert e.value.kind == "bad_direction"


def test_header_claiming_huge_array(tmp_path: Path) -> None:
    p = _nifti(tmp_path / "h.nii", np.ones((8, 8, 8), np.int16))
    raw = bytearray(p.read_bytes())
    with open(p, "rb") as fh:
        hdr = nib.Nifti1Header.from_fileobj(fh)
    hdr.set_data_shape((4000, 4000, 4000))
    raw[:348] = hdr.binaryblock
    p.write_bytes(bytes(raw))
    with pytest.raises(CuratorError) as e:
        read_volume(p)
    assert e.value.kind in ("header_size_mismatch", "too_large")


def _declare(raw: bytes, shape: tuple[int, ...]) -> bytes:
    """NIfTI bytes whose header declares ``shape``; the voxel data left as it was."""
    hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(raw[:348]))
    hdr.set_data_shape(shape)
    return hdr.binaryblock + raw[348:]


@pytest.mark.parametrize("how", ["nii", "nii.gz", "nii.gz in two gzip members"])
def test_a_header_declaring_fewer_voxels_than_the_file_holds_is_refused(tmp_path: Path, how: str) -> None:
    """dim[1] 12 edited to 10 with the data left alone: the voxels were wrapped onto the smaller
    grid (a sheared volume) and read as a good case. Several gzip members leave no trailer that
    gives the whole size: the read itself finds the data left over."""
    a = np.arange(12 * 10 * 6, dtype=np.int16).reshape(12, 10, 6)
    raw = _nifti(tmp_path / "ok.nii", a).read_bytes()
    assert read_volume(tmp_path / "ok.nii").shape == (12, 10, 6)
    lied = _declare(raw, (10, 10, 6))
    p = tmp_path / f"h.{how.split()[0]}"
    if how == "nii":
        p.write_bytes(lied)
    elif how == "nii.gz":
        p.write_bytes(gzip.compress(lied))
    else:  # the header, then the data (the last member's trailer gives the data's size only)
        p.write_bytes(gzip.compress(lied[:352]) + gzip.compress(lied[352:]))
    with pytest.raises(CuratorError) as e:
        read_volume(p)
    assert e.value.kind == "header_size_mismatch"
    assert "(10, 10, 6) int16" in e.value.detail and "wrong grid" in e.value.detail


def test_padding_after_the_voxels_is_not_a_short_header(tmp_path: Path) -> None:
    """Bytes fewer than the smallest plane cannot come from a dimension declared too small."""
    a = np.arange(12 * 10 * 6, dtype=np.int16).reshape(12, 10, 6)
    raw = _nifti(tmp_path / "ok.nii", a).read_bytes()
    (tmp_path / "pad.nii").write_bytes(raw + bytes(16))
    (tmp_path / "pad.nii.gz").write_bytes(gzip.compress(raw + bytes(16)))
    for name in ("pad.nii", "pad.nii.gz"):
        assert np.array_equal(read_volume(tmp_path / name).array, a), name


@pytest.mark.real
@pytest.mark.parametrize(
    ("rel", "role", "shape", "orientation"),
    [
        ("totalsegmentator/example_ct_sm.nii.gz", "image", (122, 101, 30), "RAS"),
        ("totalsegmentator/example_seg.nii.gz", "label", (122, 101, 30), "RAS"),
        ("totalsegmentator/example_mr_sm.nii.gz", "image", None, None),
        ("totalsegmentator/example_ct_dicom", "image", (512, 512, 20), "LPS"),
        ("pyradiomics/brain1_image.nrrd", "image", (256, 256, 25), None),
        ("pyradiomics/brain1_label.nrrd", "label", (256, 256, 25), None),
        ("dcmqi/ct-3slice", "image", (512, 512, 3), "LPS"),
        ("pydicom/CT5N", "image", (16, 16, 5), None),
        ("pydicom/emri_small.dcm", "image", (64, 64, 10), None),
        ("monai/anatomical.nii", "image", (33, 41, 25), None),
        ("kits23/dataset/case_00008/segmentation.nii.gz", "label", (227, 512, 512), "IPL"),
    ],
)
def test_real_samples_read(real_data: Path, rel: str, role: str, shape, orientation) -> None:  # type: ignore[no-untyped-def]
    v = read_volume(real_data / rel, role=role)  # type: ignore[arg-type]
    if shape:
        assert v.shape == shape
    if orientation:
        assert v.geometry.orientation == orientation
    v.geometry.validate()
    if role == "label":
        assert v.array.dtype.kind in "iu"


@pytest.mark.real
def test_real_dicom_and_nrrd_labels_share_a_grid(real_data: Path) -> None:
    ct = read_volume(real_data / "dcmqi/ct-3slice")
    liver = read_volume(real_data / "dcmqi/liver_seg.nrrd", role="label")
    assert ct.geometry.mismatch(liver.geometry, tol_mm=0.01) is None


@pytest.mark.real
def test_real_nrrds_state_their_patient_orientation(real_data: Path, tmp_path: Path) -> None:
    """Every real NRRD (Slicer/pyradiomics and dcmqi exports: `space: left-posterior-superior`) states
    its orientation: none is flagged as lacking one (ingest's orientation_missing warning); the
    same file with its `space` line renamed is."""
    files = sorted((real_data / "pyradiomics").glob("*.nrrd")) + sorted((real_data / "dcmqi").glob("*.nrrd"))
    assert len(files) >= 10
    for f in files:
        assert "world_space_missing" not in read_volume(f, role="label" if "label" in f.name or "seg" in f.name
                                                        else "image").meta, f.name
    data = (real_data / "dcmqi" / "liver_seg.nrrd").read_bytes()
    assert b"space: left-posterior-superior" in data
    (tmp_path / "x.nrrd").write_bytes(data.replace(b"space: left-posterior-superior", b"space: scanner-xyz", 1))
    assert "scanner-xyz" in read_volume(tmp_path / "x.nrrd", role="label").meta["world_space_missing"]


@pytest.mark.real
@pytest.mark.parametrize(
    ("rel", "kind"),
    [("edge/example4d.nii.gz", "not_3d"), ("edge/functional.nii", "not_3d"),
     ("edge/resampled_anat_moved.nii", "non_finite_values"), ("edge/decimal_rescale.dcm", "dicom_no_pixel_data"),
     ("edge/philips_mprage.dcm.gz", "unknown_format")],
)
def test_real_edge_files_are_rejected_with_kind(real_data: Path, rel: str, kind: str) -> None:
    with pytest.raises(CuratorError) as e:
        read_volume(real_data / rel)
    assert e.value.kind == kind
    assert rel.rsplit("/", 1)[-1] in str(e.value)


@pytest.mark.parametrize("name", ["big.mhd", "big.nrrd"])
def test_headers_longer_than_4_kb_are_read_whole(tmp_path: Path, name: str) -> None:
    """A MetaImage whose ElementDataFile line comes after 6 kB of tags, and a gzip NRRD whose
    encoding line does: the reader looked at the first 4 kB only and refused both as
    header_size_mismatch."""
    import gzip

    import SimpleITK as sitk

    a = np.zeros((8, 48, 64), dtype=np.int16)  # ITK order (z, y, x); compresses far below its raw size
    a[2:6, 10:30, 20:50] = np.arange(4 * 20 * 30, dtype=np.int16).reshape(4, 20, 30)
    tags = "".join(f"Vendor_Tag_{i:03d} = {'x' * 48}\n" for i in range(120))
    if name.endswith(".mhd"):
        img = sitk.GetImageFromArray(a)
        img.SetSpacing((0.7, 0.8, 2.5))
        for i in range(120):
            img.SetMetaData(f"Vendor_Tag_{i:03d}", "x" * 48)
        sitk.WriteImage(img, str(tmp_path / name), useCompression=False)  # data in big.raw
    else:  # written by hand: SimpleITK puts the encoding line first, other writers after their tags
        head = ("NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 64 48 8\n"
                "space directions: (0.7,0,0) (0,0.8,0) (0,0,2.5)\nkinds: domain domain domain\nendian: little\n"
                "space origin: (0,0,0)\n" + tags.replace(" = ", ":=") + "encoding: gzip\n\n")
        (tmp_path / name).write_bytes(head.encode() + gzip.compress(a.astype("<i2").tobytes()))
    text = (tmp_path / name).read_bytes()
    assert text.find(b"ElementDataFile" if name.endswith(".mhd") else b"encoding") > 4096  # as in the wild
    v = read_volume(tmp_path / name)
    assert v.shape == (64, 48, 8) and np.array_equal(np.asarray(v.array), a.transpose(2, 1, 0))


def _ct_block() -> np.ndarray:
    return (np.arange(12 * 10 * 6, dtype=np.int16).reshape(12, 10, 6) - 300)  # curator order (i, j, k)


_MHD_HEAD = ("ObjectType = Image\nNDims = 3\nDimSize = 12 10 6\nElementSpacing = 1 1 2\nOffset = 0 0 0\n"
             "TransformMatrix = 1 0 0 0 1 0 0 0 1\nElementType = MET_SHORT\nElementByteOrderMSB = False\n")
_NHDR_HEAD = ("NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 12 10 6\n"
              "space directions: (1,0,0) (0,1,0) (0,0,2)\nkinds: domain domain domain\nendian: little\n"
              "space origin: (0,0,0)\nencoding: raw\n")


def _slices(folder: Path, a: np.ndarray, name: str) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(a.shape[2]):
        np.ascontiguousarray(a[:, :, k].T).astype("<i2").tofile(folder / (name % k))
        names.append(f"{folder.name}/{name % k}")
    return names


def test_an_ascii_nrrd_is_read_not_refused_for_its_text_size(tmp_path: Path) -> None:
    """ASCII-encoded NRRD (`encoding: ascii|text|txt`) was refused as header_size_mismatch: its
    text was measured against the binary size of its voxels."""
    a = np.zeros((32, 32, 20), np.int32)
    a[2:6, 3:7, 1:4] = 1
    a[8:11, 1:3, 4:6] = 2
    text = " ".join(str(v) for v in a.ravel(order="F"))
    head = _NHDR_HEAD.replace("short", "int").replace("12 10 6", "32 32 20")
    for enc in ("ascii", "text", "txt"):
        f = tmp_path / f"lab_{enc}.nrrd"
        f.write_text(head.replace("encoding: raw", f"encoding: {enc}") + "\n" + text)
        assert len(text) < a.nbytes / 2  # one-digit numbers: half the bytes of the int32 voxels
        v = read_volume(f, role="label")
        assert v.shape == a.shape and np.array_equal(np.asarray(v.array), a)


def test_metaimage_and_nrrd_data_in_a_sub_folder_a_list_or_a_numbered_pattern_are_read(tmp_path: Path) -> None:
    """A header's data in a folder inside the header's folder was refused as path_escape, and
    `ElementDataFile = LIST` (one raw file per slice) as file_not_found for a file named LIST."""
    a = _ct_block()
    (tmp_path / "data").mkdir()
    np.ascontiguousarray(a.T).astype("<i2").tofile(tmp_path / "data/sub.raw")
    (tmp_path / "sub.mhd").write_text(_MHD_HEAD + "ElementDataFile = data/sub.raw\n")
    names = _slices(tmp_path / "slices", a, "s%02d.raw")
    (tmp_path / "list.mhd").write_text(_MHD_HEAD + "ElementDataFile = LIST 2D\n" + "\n".join(names) + "\n")
    (tmp_path / "list.nhdr").write_text(_NHDR_HEAD + "data file: LIST 2\n" + "\n".join(names) + "\n")
    (tmp_path / "numbered.nhdr").write_text(_NHDR_HEAD + "data file: slices/s%02d.raw 0 5 1 2\n")
    (tmp_path / "numbered.mhd").write_text(_MHD_HEAD + "ElementDataFile = slices/s%02d.raw 0 5 1\n")
    for name in ("sub.mhd", "list.mhd", "list.nhdr", "numbered.nhdr", "numbered.mhd"):
        v = read_volume(tmp_path / name)
        assert v.shape == a.shape and np.array_equal(np.asarray(v.array), a), name
        np.testing.assert_allclose(v.geometry.spacing, (1.0, 1.0, 2.0))


def test_listed_data_files_are_checked_to_exist_inside_the_headers_folder(tmp_path: Path) -> None:
    a = _ct_block()
    names = _slices(tmp_path / "hdr/slices", a, "s%02d.raw")
    (tmp_path / "hdr/gap.mhd").write_text(_MHD_HEAD + "ElementDataFile = LIST 2D\n" + "\n".join(names[:5])
                                          + "\nslices/s09.raw\n")
    np.ascontiguousarray(a.T).astype("<i2").tofile(tmp_path / "out.raw")
    (tmp_path / "hdr/up.mhd").write_text(_MHD_HEAD + "ElementDataFile = ../out.raw\n")
    (tmp_path / "hdr/up_list.mhd").write_text(_MHD_HEAD + "ElementDataFile = LIST 2D\n" + "\n".join(names[:5])
                                              + "\n../out.raw\n")
    (tmp_path / "hdr/gap.nhdr").write_text(_NHDR_HEAD + "data file: slices/s%02d.raw 0 6 1 2\n")
    for name, kind, said in (("gap.mhd", "file_not_found", "data file 6 of 6"), ("up.mhd", "path_escape", "outside"),
                             ("up_list.mhd", "path_escape", "outside"),
                             ("gap.nhdr", "file_not_found", "data file 7 of 7")):
        with pytest.raises(CuratorError) as e:
            read_volume(tmp_path / "hdr" / name)
        assert e.value.kind == kind and said in e.value.detail, name
        assert not any(f in str(e.value) for f in ("s09.raw", "s06.raw", "out.raw")), str(e.value)  # never named


def test_a_bad_numbered_data_file_pattern_is_not_quoted(tmp_path: Path) -> None:
    """The pattern names the data files, which are often named after the patient."""
    (tmp_path / "bad.mhd").write_text(_MHD_HEAD + "ElementDataFile = DOE_JANE_MRN12345_%03d.raw 5 1 1\n")
    with pytest.raises(CuratorError) as e:
        read_volume(tmp_path / "bad.mhd")
    assert e.value.kind == "corrupt_file" and "numbered data files" in e.value.detail
    assert "DOE" not in str(e.value) and "MRN12345" not in str(e.value), str(e.value)


@pytest.mark.parametrize("ndims", ["73", "-1", "999999", "0"])
def test_a_metaimage_header_with_impossible_ndims_is_refused_before_itk_reads_it(tmp_path: Path, ndims: str) -> None:
    """ITK's MetaIO writes past its arrays on such an NDims: 73 aborted the whole process
    ("corrupted size vs. prev_size", found by the reader fuzz test), -1 and 999999 segfaulted.
    Read in a child process, so that without the check this test fails instead of crashing."""
    import subprocess
    import sys

    a = np.zeros((10, 9, 6), np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(a), str(tmp_path / "s.mha"), useCompression=False)
    data = (tmp_path / "s.mha").read_bytes()
    assert b"NDims = 3" in data
    (tmp_path / "bad.mha").write_bytes(data.replace(b"NDims = 3", f"NDims = {ndims}".encode(), 1))
    code = ("import sys; from curator.errors import InputError; from curator.io import read_volume\n"
            "try:\n    read_volume(sys.argv[1], role='image')\n"
            "except InputError as e:\n    print(e.kind, e)\n")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "bad.mha")], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, f"the reader crashed (signal {-res.returncode}): {res.stderr[-500:]}"
    assert res.stdout.startswith("corrupt_file") and f"NDims = {ndims}" in res.stdout, res.stdout
