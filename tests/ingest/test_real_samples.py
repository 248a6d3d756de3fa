"""Ingest on real public samples in their native layouts (skips without ../shared/data/real)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import yaml

from curator.testing.pipelines import make_pipeline, run, table

pytestmark = pytest.mark.real


def _spec(name: str, layout: list[dict[str, Any]], labels: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"name": name, "version": "1", "modality": kw.pop("modality", "CT"), "region": "abdomen",
            "licence": "Apache-2.0", "citation": "@misc{x, title={x}}", "layout": layout, "labels": labels, **kw}


def _write(tmp: Path, spec: dict[str, Any]) -> Path:
    p = tmp / f"{spec['name']}.yaml"
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return p


@pytest.fixture(scope="module")
def kits(tmp_path_factory: pytest.TempPathFactory, real_data: Path) -> Path:
    tmp = tmp_path_factory.mktemp("kits")
    pipe = make_pipeline(tmp, [{"dataset": "KiTS23", "root": str(real_data / "kits23")}], workers=2)
    run(pipe, stages=["ingest"])
    return pipe


def test_kits23_native_layout_ingests_40_label_only_cases(kits: Path, real_data: Path) -> None:
    cases = table(kits, "cases").to_pylist()
    folders = sorted(p.name for p in (real_data / "kits23" / "dataset").iterdir() if p.is_dir())
    assert len(folders) == 40
    assert sorted(c["source_case"] for c in cases) == folders
    assert all(c["label_only"] and not c["has_image"] and c["label_status"] == "ok" for c in cases)
    problems = table(kits, "problems__ingest").to_pylist()
    assert {p["kind"] for p in problems} == {"image_missing"}
    assert all(p["severity"] == "info" for p in problems)


def test_kits23_raw_label_counts_equal_a_direct_count(kits: Path, real_data: Path) -> None:
    raw = table(kits, "raw_labels").to_pylist()
    for case in ("case_00008", "case_00070"):
        a = np.asarray(nib.load(str(real_data / "kits23/dataset" / case / "segmentation.nii.gz")).dataobj)
        values, counts = np.unique(a, return_counts=True)
        want = {int(v): int(c) for v, c in zip(values, counts, strict=True) if v}
        got = {r["raw_value"]: r["voxels"] for r in raw if r["case_id"] == f"KiTS23__{case}"}
        assert got == want


def test_kits23_metadata_becomes_columns(kits: Path, real_data: Path) -> None:
    meta = {m["case_id"]: m for m in json.loads((real_data / "kits23/dataset/kits23.json").read_text())}
    for c in table(kits, "cases").to_pylist():
        m = meta[c["source_case"]]
        assert c["sex"] == {"male": "M", "female": "F"}[m["gender"]]
        assert c["age_years"] == pytest.approx(float(m["age_at_nephrectomy"]))
        assert c["bmi"] == pytest.approx(float(m["bmi"]))
        assert json.loads(c["metadata_json"])["vital_status"] == m["vital_status"]


def test_totalsegmentator_examples_ct_mr_and_dicom(tmp_path: Path, real_copy) -> None:  # type: ignore[no-untyped-def]
    root = real_copy("totalsegmentator")
    cmap = json.loads((root / "class_map.json").read_text())
    ct = _spec("TS_example_ct", [{"image": "example_{case}_sm.nii.gz", "label": "example_seg.nii.gz"},
                                 {"image": "example_{case}_{kind}/", "label": "example_seg_{kind}.nii.gz",
                                  "format": "dicom"}],
               {"encoding": "label_map", "values": {int(k): v.replace("_", " ") for k, v in cmap["total"].items()}},
               patterns={"case": "ct", "kind": "dicom"})
    mr = _spec("TS_example_mr", [{"image": "example_{case}_sm.nii.gz", "label": "example_seg_mr.nii.gz"}],
               {"encoding": "label_map", "values": {int(k): v.replace("_", " ") for k, v in cmap["total_mr"].items()}},
               patterns={"case": "mr"}, modality="MR")
    pipe = make_pipeline(tmp_path, [{"dataset": str(_write(tmp_path, ct)), "root": str(root)},
                                    {"dataset": str(_write(tmp_path, mr)), "root": str(root)}])
    run(pipe, stages=["ingest"])
    cases = {c["case_id"]: c for c in table(pipe, "cases").to_pylist()}
    assert set(cases) == {"TS_example_ct__ct", "TS_example_ct__ct__dicom", "TS_example_mr__mr"}
    dcm = cases["TS_example_ct__ct__dicom"]
    assert dcm["format"] == "dicom" and dcm["shape"] == [512, 512, 20] and dcm["manufacturer"] == "SIEMENS"
    assert dcm["label_status"] == "ok"  # dcm2niix's LAS label of the LPS series: same voxels, re-indexed
    assert cases["TS_example_mr__mr"]["modality"] == "MR"
    kinds = {p["kind"] for p in table(pipe, "problems__ingest").to_pylist()}
    assert kinds <= {"label_reoriented"}
    raw = table(pipe, "raw_labels").to_pylist()
    seg = np.asarray(nib.load(str(root / "example_seg.nii.gz")).dataobj)
    assert sum(r["voxels"] for r in raw if r["case_id"] == "TS_example_ct__ct") == int(np.count_nonzero(seg))


def test_pyradiomics_nrrd_pairs_and_dcmqi_dicom_series(tmp_path: Path, real_copy) -> None:  # type: ignore[no-untyped-def]
    pr = real_copy("pyradiomics")
    dq = real_copy("dcmqi")
    pyr = _spec("Pyradiomics", [{"image": "{case}_image.nrrd", "label": "{case}_label.nrrd"},
                                {"image": "{case}.nrrd", "label": "{case}-label.nrrd"}],
                {"encoding": "label_map", "values": {1: "tumor", 7: "a", 8: "b", 9: "c"}}, modality="MR",
                patterns={"case": "[a-z]+[0-9]|prostate_phantom_subvolume"})
    dcmqi = _spec("Dcmqi", [{"image": "{case}/", "label": "{structure}_seg.nrrd", "format": "dicom"}],
                  {"encoding": "per_structure", "structures": {"liver": "liver", "spine": "spine", "heart": "heart"}},
                  patterns={"case": "ct-3slice", "structure": "liver|spine|heart"})
    pipe = make_pipeline(tmp_path, [{"dataset": str(_write(tmp_path, pyr)), "root": str(pr)},
                                    {"dataset": str(_write(tmp_path, dcmqi)), "root": str(dq)}])
    run(pipe, stages=["ingest"])
    cases = {c["case_id"]: c for c in table(pipe, "cases").to_pylist()}
    assert {"Pyradiomics__brain1", "Pyradiomics__brain2", "Pyradiomics__breast1",
            "Pyradiomics__prostate_phantom_subvolume", "Dcmqi__ct-3slice"} == set(cases)
    assert all(c["label_status"] == "ok" for c in cases.values())
    d = cases["Dcmqi__ct-3slice"]
    assert d["label_keys"] == ["heart", "liver", "spine"] and d["format"] == "dicom"
    raw = {(r["label_key"], r["raw_value"]): r["voxels"] for r in table(pipe, "raw_labels").to_pylist()
           if r["case_id"] == "Dcmqi__ct-3slice"}
    assert raw == {("liver", 1): 107098, ("spine", 1): 12439, ("heart", 1): 41449}


def test_every_edge_file_is_a_problem_row_with_a_kind(tmp_path: Path, real_copy) -> None:  # type: ignore[no-untyped-def]
    root = real_copy("edge")
    spec = _spec("Edge", [{"image": "{case}"}], {"encoding": "none"}, patterns={"case": "[^/]+"})
    pipe = make_pipeline(tmp_path, [{"dataset": str(_write(tmp_path, spec)), "root": str(root)}])
    run(pipe, stages=["ingest"])
    assert table(pipe, "cases").num_rows == 0
    problems = table(pipe, "problems__ingest").to_pylist()
    files = sorted(p.name for p in root.iterdir())
    assert len(files) == 5
    by_file = {p["path"].split(":", 1)[1]: p for p in problems}
    assert sorted(by_file) == files
    expected = {"example4d.nii.gz": "not_3d", "functional.nii": "not_3d",
                "resampled_anat_moved.nii": "non_finite_values", "decimal_rescale.dcm": "dicom_no_pixel_data",
                "philips_mprage.dcm.gz": "unknown_format"}
    for f, kind in expected.items():
        row = by_file[f]
        assert row["kind"] == kind and row["severity"] == "error"
        assert "What to do:" in row["message"]


def test_an_enhanced_mr_without_geometry_is_ingested_with_a_warning(tmp_path: Path, real_copy) -> None:  # type: ignore[no-untyped-def]
    """pydicom's emri_small: 10 frames, no pixel spacing, orientation or position anywhere. The
    case is kept (its pixels are real) but a problems row says its millimetres are a guess."""
    root = real_copy("pydicom")
    spec = _spec("Emri", [{"image": "{case}.dcm"}], {"encoding": "none"}, modality="MR",
                 patterns={"case": "emri_small"})
    pipe = make_pipeline(tmp_path, [{"dataset": str(_write(tmp_path, spec)), "root": str(root)}])
    run(pipe, stages=["ingest"])
    assert [c["shape"] for c in table(pipe, "cases").to_pylist()] == [[64, 64, 10]]
    (p,) = table(pipe, "problems__ingest").to_pylist()
    assert p["kind"] == "dicom_geometry_missing" and p["severity"] == "warning"
    assert "PixelSpacing" in p["message"] and "What to do:" in p["message"]


def test_a_store_of_a_dicom_without_geometry_has_no_ome_position_and_the_warning_names_the_header_spacing(
        tmp_path: Path, real_copy) -> None:  # type: ignore[no-untyped-def]
    """emri_small's position is the reader's guess (1 mm voxels, identity orientation), yet its store
    carried OME-Zarr world coordinates that OME tools present as patient millimetres; and the
    header's SpacingBetweenSlices (1.2 mm) went unmentioned. The store now says its geometry was
    guessed and has no `ome`; the warning names the header's spacing."""
    root = real_copy("pydicom")
    spec = _spec("Emri", [{"image": "{case}.dcm"}], {"encoding": "none"}, modality="MR",
                 patterns={"case": "emri_small"})
    pipe = make_pipeline(tmp_path, [{"dataset": str(_write(tmp_path, spec)), "root": str(root)}])
    run(pipe, stages=["ingest", "preprocess"])
    (p,) = table(pipe, "problems__ingest").to_pylist()
    assert "the header does state SpacingBetweenSlices 1.2 mm, which the reader did not use (it read 1 mm" \
        in p["message"], p["message"]
    (row,) = table(pipe, "preprocessed").to_pylist()
    meta = json.loads((tmp_path / "workspace" / row["store"] / "zarr.json").read_text())["attributes"]
    assert "ome" not in meta and "ImagePositionPatient" in meta["curator"]["geometry_guessed"]
