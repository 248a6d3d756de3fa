"""DICOM SEG labels: decoded with highdicom, placed on their image's grid (curator.io.dicom_seg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from curator.errors import GeometryError, InputError, LabelError
from curator.io.formats import read_volume
from curator.io.volume import Geometry
from curator.store import CaseStore
from curator.testing.layouts import write_dicom_seg, write_dicom_series
from curator.testing.native import image_array
from curator.testing.pipelines import make_pipeline, run, table

# an oblique-free grid whose axes are not RAS (the series is written along LPS rows and columns)
G = Geometry.from_lps((10, 9, 6), (1.5, 1.5, 3.0), (-20.0, 15.0, 40.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def _label() -> np.ndarray:
    lab = np.zeros(G.shape, np.uint8)
    lab[2:6, 3:7, 1:3] = 1
    lab[5:9, 1:4, 3:5] = 2  # slices 0 and 5 hold no segment: the SEG leaves their frames out
    return lab


def _study(root: Path, case: str = "p1", names: tuple[str, str] = ("Liver", "Spleen"),
           ) -> tuple[list[Path], np.ndarray, Path]:
    lab = _label()
    files = write_dicom_series(root / case / "ct", image_array(3, G.shape).astype(float), G)
    seg = write_dicom_seg(root / case / "seg.dcm", files, lab, {1: names[0], 2: names[1]})
    return files, lab, seg


def test_real_dcmqi_seg_lands_on_its_ct_as_the_nrrd_it_was_made_from(real_data: Path) -> None:
    ct = read_volume(real_data / "dcmqi" / "ct-3slice")
    seg = read_volume(real_data / "dcmqi" / "liver.dcm", role="label", grid=ct.geometry)
    nrrd = read_volume(real_data / "dcmqi" / "liver_seg.nrrd", role="label").on_grid(ct.geometry)
    assert seg.geometry == ct.geometry and seg.meta["segments"] == {1: "Liver"}
    assert np.array_equal(seg.array.astype(bool), nrrd.array.astype(bool)) and int(seg.array.sum()) == 107098


def test_segments_are_values_and_omitted_frames_are_background(tmp_path: Path) -> None:
    files, lab, seg = _study(tmp_path)
    import pydicom

    assert int(pydicom.dcmread(seg).NumberOfFrames) == 4  # 2 slices per segment; the empty slices left out
    ct = read_volume(tmp_path / "p1" / "ct")
    got = read_volume(seg, role="label", grid=ct.geometry)
    assert got.geometry == ct.geometry and np.array_equal(got.array, lab)
    assert got.meta["segments"] == {1: "Liver", 2: "Spleen"}
    own = read_volume(seg, role="label")  # without the image: the slices its frames span
    assert sorted(own.geometry.shape) == sorted((10, 9, 4)) and int((own.array == 2).sum()) == int((lab == 2).sum())
    # a study exported into one folder: the SEG beside the slices is passed over when the scan is read
    import shutil

    shutil.copy(seg, tmp_path / "p1" / "ct" / "zz_seg.dcm")
    again = read_volume(tmp_path / "p1" / "ct")
    assert again.geometry == ct.geometry and np.array_equal(again.array, ct.array)
    # the same SEG written with every frame, or as a LABELMAP SEG (one frame per slice), reads the same
    full = write_dicom_seg(tmp_path / "full.dcm", files, lab, {1: "Liver", 2: "Spleen"}, omit_empty=False)
    assert np.array_equal(read_volume(full, role="label", grid=ct.geometry).array, lab)
    lm = write_dicom_seg(tmp_path / "labelmap.dcm", files, lab, {1: "Liver", 2: "Spleen"}, labelmap=True)
    got_lm = read_volume(lm, role="label", grid=ct.geometry)
    assert got_lm.meta["segmentation_type"] == "LABELMAP" and np.array_equal(got_lm.array, lab)


def test_a_fractional_seg_is_in_a_segment_above_one_half(tmp_path: Path) -> None:
    files, lab, _ = _study(tmp_path)
    prob = {1: (lab == 1) * 0.8 + (lab == 2) * 0.3, 2: (lab == 2) * 0.6}  # spleen voxels: 0.3 liver, 0.6 spleen
    seg = write_dicom_seg(tmp_path / "frac.dcm", files, lab, {1: "Liver", 2: "Spleen"}, masks=prob, fractional=True)
    got = read_volume(seg, role="label", grid=read_volume(tmp_path / "p1" / "ct").geometry)
    assert got.meta["segmentation_type"] == "FRACTIONAL" and np.array_equal(got.array, lab)
    both = {1: (lab > 0) * 0.9, 2: (lab == 2) * 0.9}
    seg = write_dicom_seg(tmp_path / "frac2.dcm", files, lab, {1: "Liver", 2: "Spleen"}, masks=both, fractional=True)
    with pytest.raises(LabelError, match="overlap"):
        read_volume(seg, role="label", grid=read_volume(tmp_path / "p1" / "ct").geometry)


def test_what_cannot_be_one_label_map_on_this_grid_is_refused(tmp_path: Path) -> None:
    files, lab, seg = _study(tmp_path)
    m1 = lab == 1
    tumour = np.zeros_like(m1)
    tumour[3:5, 4:6, 1:2] = True  # inside the liver: overlapping segments
    both = write_dicom_seg(tmp_path / "overlap.dcm", files, lab, {1: "Liver", 2: "Tumour"},
                           masks={1: m1, 2: tumour})
    ct = read_volume(tmp_path / "p1" / "ct")
    with pytest.raises(LabelError, match="overlap.*1 .Liver.*2 .Tumour") as e:
        read_volume(both, role="label", grid=ct.geometry)
    assert e.value.kind == "dicom_seg_overlap"
    with pytest.raises(InputError) as e2:  # a SEG where the image should be
        read_volume(seg)
    assert e2.value.kind == "dicom_seg_as_image"
    shifted = Geometry.from_lps(G.shape, (1.5, 1.5, 3.0), (-20.75, 15.0, 40.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(GeometryError, match="not on the image's grid"):  # half a voxel off: another series
        read_volume(seg, role="label", grid=shifted)
    short = Geometry.from_lps((10, 9, 3), (1.5, 1.5, 3.0), (-20.0, 15.0, 40.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    with pytest.raises(GeometryError, match="reach outside the image"):
        read_volume(seg, role="label", grid=short)


def test_a_dataset_of_ct_series_with_seg_labels_runs_through_the_pipeline(tmp_path: Path) -> None:
    root = tmp_path / "download"
    labels = {case: _study(root, case)[1] for case in ("p1", "p2")}
    _study(root, "p3", names=("Spleen", "Liver"))  # another tool's numbering: the YAML's is wrong for it
    spec = {"name": "SegStudy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
            "citation": "@misc{x, title={x}}", "layout": [{"image": "{case}/ct/", "label": "{case}/seg.dcm"}],
            "labels": {"values": {1: "liver", 2: "spleen"}}}
    yml = tmp_path / "SegStudy.yaml"
    yml.write_text(yaml.safe_dump(spec))
    pipe = make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(root)}],
                         stages={"preprocess": {"target_spacing_mm": [1.5, 1.5, 3.0]}, "dedup": {"enabled": False}})
    run(pipe, stages=["ingest", "harmonize", "preprocess"])
    problems = [p for p in table(pipe, "problems__ingest").to_pylist()  # (the phantom holds no air)
                if p["severity"] != "info" and p["kind"] != "ct_intensity_offset"]
    assert not problems, problems
    raw = {(r["case_id"], r["raw_value"]): r["voxels"] for r in table(pipe, "raw_labels").to_pylist()}
    for case, lab in labels.items():
        assert raw[(f"SegStudy__{case}", 1)] == int((lab == 1).sum())
        assert raw[(f"SegStudy__{case}", 2)] == int((lab == 2).sum())
    said = [(p["case_id"], p["kind"]) for p in table(pipe, "problems__harmonize").to_pylist()]
    assert said == [("SegStudy__p3", "dicom_seg_labels_disagree")] * 2  # each segment named elsewhere
    ws = tmp_path / "workspace" / "stores"
    store = CaseStore(ws / "SegStudy__p1.zarr")
    assert store.mask("liver").sum() == (labels["p1"] == 1).sum()  # same spacing: every voxel kept
    assert store.mask("spleen").sum() == (labels["p1"] == 2).sum()


def _seg_study_yaml(tmp_path: Path) -> Path:
    spec = {"name": "SegStudy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
            "citation_key": "x", "citation": "@misc{x, title={x}}",
            "layout": [{"image": "{case}/ct/", "label": "{case}/seg.dcm"}], "labels": {"values": {1: "liver", 2: "spleen"}}}
    yml = tmp_path / "SegStudy.yaml"
    yml.write_text(yaml.safe_dump(spec))
    return yml


def test_sources_check_shows_what_each_seg_calls_its_values(tmp_path: Path) -> None:
    from curator.ingest.check import check_source

    root = tmp_path / "download"
    for case in ("p1", "p2"):
        _study(root, case)
    _study(root, "p3", names=("Spleen", "Liver"))
    yml = _seg_study_yaml(tmp_path)
    r = check_source(str(yml), root, sample=None)
    named = {v["value"]: v["named_in_files"] for v in r.values}
    assert named == {1: {"Liver": 2, "Spleen": 1}, 2: {"Spleen": 2, "Liver": 1}}
    said = [(p["case_id"], p["kind"]) for p in r.warnings if p["kind"].startswith("dicom")]
    assert said == [("SegStudy__p3", "dicom_seg_labels_disagree")] * 2


def test_sources_check_counts_the_names_of_read_cases_in_files(tmp_path: Path) -> None:
    """'Liver (3)' read like segment number 3, and counted the SEG of a case whose CT failed while
    'in sampled labels' said 2 of 2: now 'Liver (in 2 files)', of the cases whose label was read."""
    from typer.testing import CliRunner

    from curator.cli import app
    from curator.ingest.check import check_source

    root = tmp_path / "download"
    for case in ("p1", "p2", "p3"):
        files, _, _ = _study(root, case)
    files[1].write_bytes(files[1].read_bytes()[:300])  # p3's CT cannot be read: the case fails
    yml = _seg_study_yaml(tmp_path)
    r = check_source(str(yml), root, sample=None)
    assert [s["ok"] for s in r.sampled] == [True, True, False]
    rows = {v["value"]: (v["cases"], v["of"], v["named_in_files"]) for v in r.values}
    assert rows == {1: (2, 2, {"Liver": 2}), 2: (2, 2, {"Spleen": 2})}
    res = CliRunner().invoke(app, ["sources", "check", str(yml), str(root)], env={"COLUMNS": "200"})
    assert "Liver (in 2 files)" in res.stdout and "Liver (2)" not in res.stdout, res.stdout


def test_cases_with_dicom_labels_are_read_anew_after_the_upgrade(tmp_path: Path) -> None:
    """Ingest results cached before SEG labels were placed on the image's grid (a SEG read as a
    stack of frames) must not be reused; cases whose labels are NIfTI keep their cache keys."""
    from curator.config import PipelineConfig
    from curator.ingest.stage import IngestConfig, IngestStage
    from curator.runner.context import Context

    root = tmp_path / "download"
    _study(root, "p1")
    _study(root, "p2")
    (root / "p2" / "seg.dcm").rename(root / "p2" / "seg.nii.gz")  # (a name only: plan reads no label file)
    spec = {"name": "SegStudy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
            "citation": "@misc{x, title={x}}", "layout": [{"image": "{case}/ct/", "label": "{case}/seg.{ext}"}],
            "patterns": {"ext": "dcm|nii.gz"}, "labels": {"values": {1: "liver", 2: "spleen"}}}
    yml = tmp_path / "SegStudy.yaml"
    yml.write_text(yaml.safe_dump(spec))
    cfg = PipelineConfig.from_dict({"workspace": str(tmp_path / "ws"),
                                    "sources": [{"dataset": str(yml), "root": str(root)}]})
    ctx = Context(cfg)
    ctx.workspace.init()
    tasks = IngestStage(ctx, ctx.stage_config(IngestConfig, "ingest")).plan()
    got = {t.payload["labels"][0][1]: t.payload.get("dicom_labels") for t in tasks}
    assert got == {"p1/seg.dcm": 2, "p2/seg.nii.gz": None}
