"""Exports on the store grid and the way back to the source scan's grid (tester 40's finding 3):
curator_export.json / datalist.json record each case's source grid, and `curator export map-back`
puts labels on the export's grid back onto it — exactly, where the export grid is finer than the
source's along every axis (sources in LPS, RAS, IPL and oblique, anisotropic spacings, resampled
at non-integer ratios)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from curator.errors import ConfigError, CuratorError
from curator.export import export_monai, export_nnunet
from curator.export.map_back import map_back
from curator.export.source_grid import coarser_axes, to_source
from curator.io.volume import Geometry
from curator.preprocess.resample import reorient, target_grid
from curator.preprocess.terms import term_id
from curator.store import CaseStore
from curator.testing.phantoms import grid
from tests.preprocess.conftest import ORIENTED_SPACING as SPACING
from tests.preprocess.conftest import ORIENTED_TARGET as TARGET
from tests.preprocess.conftest import Oriented, _ingest_and_preprocess, oblique

TERMS = [term_id("kidney"), term_id("kidney tumor"), term_id("kidney cyst")]  # raw values 1, 2, 3 in KITS_YAML


def _source_label(o: Oriented, case_id: str) -> nib.Nifti1Image:
    return nib.load(o.root / "kits" / "dataset" / case_id.split("__")[1] / "segmentation.nii.gz")


def test_the_export_records_each_case_source_grid(oriented: Oriented, tmp_path: Path) -> None:
    rep = export_nnunet(oriented.release, tmp_path / "raw", dataset_id=510, name="Grid", terms=TERMS)
    assert sorted(rep.cases) == sorted(oriented.sources)
    info = json.loads((rep.folder / "curator_export.json").read_text())
    assert info["grid"].startswith("preprocessed") and "map-back" in info["grid"]
    assert sorted(info["grids"]) == sorted(oriented.sources)
    for name, rec in info["grids"].items():
        g, _ = oriented.sources[name]
        store = CaseStore(oriented.release / "stores" / f"{name}.zarr")
        attrs = store.attrs
        assert rec["case_id"] == name and rec["source"] == rec["dataset"] == "TinyKits"
        case = name.split("__")[1]
        assert rec["image_path"] == f"dataset/{case}/imaging.nii.gz"
        assert rec["label_paths"] == [f"dataset/{case}/segmentation.nii.gz"]
        # the source grid: the file's, as curator read it (and as preprocess recorded it)
        assert rec["source_shape"] == list(g.shape) and np.allclose(rec["source_affine"], g.affine, atol=1e-4)
        assert np.allclose(rec["source_affine"], attrs["source_affine"]) and rec["source_orientation"] == g.orientation
        # the export grid: the written image's, and where it sits in the resampled grid
        img = nib.load(rep.folder / "imagesTr" / f"{name}_0000.nii.gz")
        assert list(img.shape) == rec["export_shape"] and np.allclose(img.affine, np.reshape(rec["export_affine"], (4, 4)),
                                                                      atol=1e-4)
        assert rec["crop_start"] == attrs["crop_start"] and rec["resampled_shape"] == attrs["resampled_shape"]
        assert rec["export_spacing_mm"] == pytest.approx(TARGET) and rec["export_orientation"] == "RAS"
    mon = export_monai(oriented.release, tmp_path / "monai", terms=TERMS)
    data = json.loads((mon.folder / "datalist.json").read_text())
    assert data["grids"] == info["grids"] and data["grid"] == info["grid"]


def test_exported_labels_mapped_back_are_the_source_labels(oriented: Oriented, tmp_path: Path) -> None:
    """Every source grid here is coarser than the export's, so nothing is lost either way: the
    exported reference mapped back is the dataset's label file, voxel for voxel, on its grid."""
    rep = export_nnunet(oriented.release, tmp_path / "raw", dataset_id=511, name="Back", terms=TERMS)
    back = map_back(rep.folder, rep.folder / "labelsTr", tmp_path / "back")
    assert sorted(back.mapped) == sorted(oriented.sources) and not back.without_prediction and not back.coarser
    index = json.loads((tmp_path / "back" / "map_back.json").read_text())
    for name in oriented.sources:
        src, got = _source_label(oriented, name), nib.load(tmp_path / "back" / f"{name}.nii.gz")
        assert got.shape == src.shape and np.allclose(got.affine, src.affine, atol=1e-4), name
        assert np.array_equal(np.asarray(got.dataobj), np.asarray(src.dataobj)), name
        assert index["cases"][name]["label_paths"] == [f"dataset/{name.split('__')[1]}/segmentation.nii.gz"]
    exported = nib.load(rep.folder / "labelsTr" / "TinyKits__case_00003.nii.gz")  # the oblique one: not a copy
    assert exported.shape != _source_label(oriented, "TinyKits__case_00003").shape
    # the MONAI export's labels, named as SaveImaged names predictions (<name>/<name>_seg.nii.gz)
    mon = export_monai(oriented.release, tmp_path / "monai", terms=TERMS)
    preds = tmp_path / "monai_preds"
    for f in (mon.folder / "labels").glob("*.nii.gz"):
        name = f.name.removesuffix(".nii.gz")
        (preds / name).mkdir(parents=True)
        shutil.copy(f, preds / name / f"{name}_seg.nii.gz")
    map_back(mon.folder, preds, tmp_path / "monai_back", suffix="_seg")
    for name in oriented.sources:
        got = nib.load(tmp_path / "monai_back" / f"{name}.nii.gz")
        assert np.array_equal(np.asarray(got.dataobj), np.asarray(_source_label(oriented, name).dataobj)), name


def _nearest_brute(labels: np.ndarray, export: Geometry, source: Geometry) -> np.ndarray:
    """Each source voxel's centre in export voxel coordinates, rounded (ties up), its value there."""
    idx = np.indices(source.shape).reshape(3, -1).astype(np.float64)
    world = source.matrix[:3, :3] @ idx + source.matrix[:3, 3:4]
    inv = np.linalg.inv(export.matrix)
    at = np.floor(np.round(inv[:3, :3] @ world + inv[:3, 3:4], 6) + 0.5).astype(int)
    ok = np.all((at >= 0) & (at < np.asarray(export.shape)[:, None]), axis=0)
    out = np.zeros(idx.shape[1], labels.dtype)
    out[ok] = labels[at[0, ok], at[1, ok], at[2, ok]]
    return out.reshape(source.shape)


@pytest.mark.parametrize("orientation,target,rotate", [("LPS", (2.0, 3.0, 3.5), None), ("IPL", (1.0, 9.0, 2.5), None),
                                                       ("PIR", (7.0, 2.0, 11.0), (4.0, 0.0, -9.0)),
                                                       ("RAS", (5.0, 7.0, 8.0), None)])
def test_to_source_takes_the_nearest_export_voxel_in_physical_space(orientation: str, target: tuple[float, ...],
                                                                    rotate: tuple[float, float, float] | None) -> None:
    """The separable map against the voxel-by-voxel one, on export grids made as preprocess makes
    them (reoriented, resampled up or down, cropped), with an export label map of random codes."""
    rng = np.random.default_rng(7)
    src = grid((30, 22, 14), SPACING, orientation, center=(4.0, -3.0, 9.0))
    src = oblique(src, rotate) if rotate else src
    _, ras = reorient(np.zeros(src.shape), src, "RAS")
    resampled, _ = target_grid(ras, target)
    start = np.array([2, 1, 1])
    m = resampled.matrix.copy()
    m[:3, 3] = resampled.voxel_to_world(start)[0]
    export = Geometry.from_affine(tuple(int(n) for n in np.asarray(resampled.shape) - start - 1), m)
    labels = rng.integers(0, 5, export.shape).astype(np.uint8)
    got = to_source(labels, export, src)
    assert got.shape == src.shape and np.array_equal(got, _nearest_brute(labels, export, src))
    assert (got == 0).any() and len(np.unique(got)) == 5  # some voxels outside the crop, every code inside


def test_to_source_refuses_grids_that_are_not_parallel() -> None:
    src = grid((10, 10, 10), (2.0, 2.0, 2.0), "RAS")
    with pytest.raises(ValueError, match="not parallel"):
        to_source(np.zeros((10, 10, 10), np.uint8), oblique(src, (0.0, 0.0, 30.0)), src)


def test_coarser_axes_name_the_source_axes_resampled_down() -> None:
    src = grid((20, 20, 10), (0.8, 0.8, 6.5), "LPS")  # a brain MR's 0.78 mm in-plane, 6.5 mm slices
    _, ras = reorient(np.zeros(src.shape), src, "RAS")
    up, _ = target_grid(ras, (0.5, 0.5, 3.0))
    down, _ = target_grid(ras, (1.0, 1.0, 3.0))
    assert coarser_axes(up, src) == [] and coarser_axes(down, src) == [0, 1]
    ipl = grid((10, 20, 20), (6.5, 0.8, 0.8), "IPL")
    _, ras = reorient(np.zeros(ipl.shape), ipl, "RAS")
    down, _ = target_grid(ras, (1.0, 1.0, 3.0))
    assert coarser_axes(down, ipl) == [1, 2]  # the source's own axes, not the export's


@pytest.fixture(scope="module")
def exported(oriented: Oriented, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nn")
    return export_nnunet(oriented.release, out, dataset_id=512, name="Bad", terms=TERMS,
                         where="case_id <> 'TinyKits__case_00002'").folder


def _preds(exported: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "preds"
    shutil.copytree(exported / "labelsTr", folder)
    return folder


def _fails(exported: Path, preds: Path, tmp_path: Path, *, suffix: str = "") -> CuratorError:
    with pytest.raises(CuratorError) as e:
        map_back(exported, preds, tmp_path / "out", suffix=suffix)
    assert not (tmp_path / "out").exists()  # staged: nothing is left behind
    return e.value


def _rewrite(path: Path, array: np.ndarray | None = None, shift_mm: float = 0.0) -> None:
    img = nib.load(path)
    a = np.asarray(img.dataobj) if array is None else array
    aff = img.affine.copy()
    aff[:3, 3] += shift_mm
    nib.save(nib.Nifti1Image(a, aff), path)


def test_a_prediction_for_no_exported_case_is_named(exported: Path, tmp_path: Path) -> None:
    preds = _preds(exported, tmp_path)
    shutil.copy(preds / "TinyKits__case_00000.nii.gz", preds / "somebody_else.nii.gz")
    e = _fails(exported, preds, tmp_path)
    assert e.path and e.path.endswith("somebody_else.nii.gz") and "names no case of the export" in e.detail
    (preds / "somebody_else.nii.gz").unlink()
    shutil.copy(preds / "TinyKits__case_00000.nii.gz", preds / "TinyKits__case_00002.nii.gz")  # not exported
    e = _fails(exported, preds, tmp_path)
    assert e.path.endswith("TinyKits__case_00002.nii.gz") and "not a case of" not in e.detail  # type: ignore[union-attr]
    assert "TinyKits__case_00002" in e.detail and "names no case" in e.detail
    (preds / "TinyKits__case_00002.nii.gz").unlink()
    (preds / "TinyKits__case_00000.nii.gz").rename(preds / "TinyKits__case_00000_seg.nii.gz")
    e = _fails(exported, preds, tmp_path)
    assert "pass --suffix '_seg'" in e.detail, e.detail
    (preds / "sub").mkdir()
    shutil.copy(preds / "TinyKits__case_00001.nii.gz", preds / "sub" / "TinyKits__case_00001.nii.gz")
    (preds / "TinyKits__case_00000_seg.nii.gz").unlink()
    e = _fails(exported, preds, tmp_path)
    assert "two predictions for case TinyKits__case_00001" in e.detail, e.detail


def test_a_prediction_off_its_export_grid_is_refused(exported: Path, tmp_path: Path) -> None:
    preds = _preds(exported, tmp_path)
    f = preds / "TinyKits__case_00001.nii.gz"
    img = nib.load(f)
    a, aff = np.asarray(img.dataobj), img.affine
    _rewrite(f, a[:-1])  # one row short
    e = _fails(exported, preds, tmp_path)
    assert e.path == str(f) and "not on its export grid" in e.detail and "shape" in e.detail, e.detail
    _rewrite(f, a, shift_mm=1.5)  # the right shape, 1.5 mm off
    e = _fails(exported, preds, tmp_path)
    assert e.path == str(f) and "not on its export grid" in e.detail and "predict on the exported image" in (e.remedy or "")
    # the same voxels with the first axis reversed (an LAS copy): the same grid, mapped back alike
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, a.shape[0] - 1
    nib.save(nib.Nifti1Image(a[::-1].copy(), aff @ flip), f)
    map_back(exported, preds, tmp_path / "flipped")
    map_back(exported, exported / "labelsTr", tmp_path / "plain")
    for name in ("TinyKits__case_00000", "TinyKits__case_00001"):
        assert np.array_equal(np.asarray(nib.load(tmp_path / "flipped" / f"{name}.nii.gz").dataobj),
                              np.asarray(nib.load(tmp_path / "plain" / f"{name}.nii.gz").dataobj)), name


def test_a_prediction_with_values_the_export_does_not_declare_is_refused(exported: Path, tmp_path: Path) -> None:
    preds = _preds(exported, tmp_path)
    f = preds / "TinyKits__case_00000.nii.gz"
    a = np.asarray(nib.load(f).dataobj).copy()
    a[0, 0, 0] = 9
    _rewrite(f, a)
    e = _fails(exported, preds, tmp_path)
    assert e.path == str(f) and "values [9]" in e.detail and "[0, 1, 2, 3]" in e.detail, e.detail
    _rewrite(f, a.astype(np.float32) * np.float32(0.37))  # probabilities, not a label map
    e = _fails(exported, preds, tmp_path)
    assert e.path == str(f) and "TinyKits__case_00000" in e.detail, e.detail


def test_folders_that_are_not_what_map_back_needs_are_named(exported: Path, tmp_path: Path) -> None:
    preds = _preds(exported, tmp_path)
    e = _fails(exported.parent, preds, tmp_path)  # nnUNet_raw, not the dataset folder
    assert "no curator export here" in e.detail and exported.name in (e.remedy or ""), e
    old = tmp_path / "old"
    shutil.copytree(exported, old)
    info = json.loads((old / "curator_export.json").read_text())
    del info["grids"]
    (old / "curator_export.json").write_text(json.dumps(info))
    e = _fails(old, preds, tmp_path)
    assert "records no source grids" in e.detail and "export the release again" in (e.remedy or "")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "plans.json").write_text("{}")  # what nnUNetv2_predict writes beside the predictions
    e = _fails(exported, empty, tmp_path)
    assert "no prediction file here" in e.detail
    e = _fails(exported, tmp_path / "nowhere", tmp_path)
    assert "does not exist" in e.detail
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "map_back.json").write_text("{}")
    with pytest.raises(ConfigError, match="already holds"):
        map_back(exported, preds, tmp_path / "taken")


def test_the_command_maps_back_and_names_a_bad_file(exported: Path, tmp_path: Path) -> None:
    from curator.cli import app

    preds = _preds(exported, tmp_path)
    (preds / "plans.json").write_text("{}")
    res = CliRunner().invoke(app, ["export", "map-back", str(exported), str(preds), "--out", str(tmp_path / "b")],
                             env={"COLUMNS": "300", "NO_COLOR": "1"})
    said = " ".join(res.output.split())
    assert res.exit_code == 0, said
    assert "mapped 3 predictions onto their source grids" in said and "1 files that are no NIfTI" in said, said
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(
        [*(f.name for f in (exported / "labelsTr").iterdir()), "map_back.json"])
    shutil.copy(preds / "TinyKits__case_00000.nii.gz", preds / "stray.nii.gz")
    res = CliRunner().invoke(app, ["export", "map-back", str(exported), str(preds), "--out", str(tmp_path / "c")],
                             env={"COLUMNS": "300", "NO_COLOR": "1"})
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and "stray.nii.gz" in said and "internal error" not in said, said


@pytest.mark.real
@pytest.mark.parametrize("spacing,exact", [((0.5, 0.5, 2.0), True), ((1.0, 1.0, 3.0), False)])
def test_real_scans_map_back_onto_their_own_grid(real_data: Path, tmp_path: Path, spacing: tuple[float, ...],
                                                 exact: bool) -> None:
    """pyradiomics' brain MRs (NRRD, LPS-like with a flipped row axis, 0.78 x 0.78 x 6.5 mm) and
    MONAI's LAS anatomical scan (NIfTI, 2 mm): mapped back, an exported label is on the source
    label file's grid (shape, spacing, origin, direction as SimpleITK reads them); exactly the
    source label at a finer target spacing, and at 1 x 1 x 3 mm — coarser in-plane than the
    brains, and across the 2 mm scan's slices — only nearly, with those axes named as coarser;
    exported with --grid source, the reference is the label file at any target spacing."""
    import SimpleITK as sitk

    root = tmp_path / "src"
    for case in ("brain1", "brain2"):
        (root / "brain" / case).mkdir(parents=True)
        shutil.copy(real_data / "pyradiomics" / f"{case}_image.nrrd", root / "brain" / case / "image.nrrd")
        shutil.copy(real_data / "pyradiomics" / f"{case}_label.nrrd", root / "brain" / case / "label.nrrd")
    (root / "anat" / "anat1").mkdir(parents=True)
    shutil.copy(real_data / "monai" / "anatomical.nii", root / "anat" / "anat1" / "image.nii")
    shutil.copy(real_data / "monai" / "anatomical_label.nii.gz", root / "anat" / "anat1" / "label.nii.gz")
    yaml = """name: {name}
version: "1"
modality: MR
region: head
licence: BSD-3-Clause
citation: "@misc{{x}}"
layout:
  - image: "{{case}}/image.{ext}"
    label: "{{case}}/label.{lext}"
labels: {{encoding: label_map, values: {{1: brain tumor}}}}
"""
    release = _ingest_and_preprocess(root, {"brain": yaml.format(name="RealBrain", ext="nrrd", lext="nrrd"),
                                            "anat": yaml.format(name="RealAnat", ext="nii", lext="nii.gz")},
                                     "real", {"target_spacing_mm": list(spacing)})
    rep = export_nnunet(release, tmp_path / "raw", dataset_id=520, name="Brain", terms=["brain_tumor"],
                        where="true")
    back = map_back(rep.folder, rep.folder / "labelsTr", tmp_path / "back")
    assert sorted(back.mapped) == ["RealAnat__anat1", "RealBrain__brain1", "RealBrain__brain2"]
    for name, label in (("RealBrain__brain1", root / "brain/brain1/label.nrrd"),
                        ("RealBrain__brain2", root / "brain/brain2/label.nrrd"),
                        ("RealAnat__anat1", root / "anat/anat1/label.nii.gz")):
        src, got = sitk.ReadImage(str(label)), sitk.ReadImage(str(tmp_path / "back" / f"{name}.nii.gz"))
        assert src.GetSize() == got.GetSize(), name
        assert np.allclose(src.GetSpacing(), got.GetSpacing(), atol=1e-5), name
        assert np.allclose(src.GetOrigin(), got.GetOrigin(), atol=1e-3), name
        assert np.allclose(src.GetDirection(), got.GetDirection(), atol=1e-6), name
        a, b = sitk.GetArrayFromImage(src) == 1, sitk.GetArrayFromImage(got) == 1
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        if exact:
            assert np.array_equal(a, b), (name, dice)
            assert name not in back.coarser
        elif name == "RealAnat__anat1":
            assert back.coarser[name] == [2]  # its 2 mm slices resampled to 3 mm
        else:
            assert 0.95 < dice < 1.0, (name, dice)  # brain1: 0.975, as the tester measured
            assert back.coarser[name] == [0, 1]
    # on the source grid the reference is the label file itself, whatever the target spacing
    src = export_nnunet(release, tmp_path / "src", dataset_id=521, name="BrainSrc", terms=["brain_tumor"],
                        grid="source", pipeline=root / "pipeline.yaml", layers=("original",))
    for name, label in (("RealBrain__brain1", root / "brain/brain1/label.nrrd"),
                        ("RealBrain__brain2", root / "brain/brain2/label.nrrd"),
                        ("RealAnat__anat1", root / "anat/anat1/label.nii.gz")):
        want, got = sitk.ReadImage(str(label)), sitk.ReadImage(str(src.folder / "labelsTr" / f"{name}.nii.gz"))
        assert np.allclose(want.GetOrigin(), got.GetOrigin(), atol=1e-3) and want.GetSize() == got.GetSize(), name
        assert np.allclose(want.GetDirection(), got.GetDirection(), atol=1e-6), name
        assert np.array_equal(sitk.GetArrayFromImage(want) == 1, sitk.GetArrayFromImage(got) == 1), name
