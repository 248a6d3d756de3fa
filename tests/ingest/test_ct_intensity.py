"""CT intensity plausibility: a scan stored with an offset (air far above -1000 HU) or as an
8-bit export is a warning row that says how to declare the fix; real scans and the demo's
other cases are not flagged; a declared ``intensity_offset`` fix is applied before the check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from curator.ingest.core import ct_intensity_issue
from curator.testing.layouts import save_nifti
from curator.testing.phantoms import grid
from curator.testing.pipelines import make_pipeline, run, table

G = grid((16, 16, 8), (2.0, 2.0, 3.0), "LPS")


def ct(air: float, soft: float = 40.0, bone: float = 700.0) -> np.ndarray:
    """Air around a soft-tissue body with a bone, in the image's own units."""
    a = np.full(G.shape, air, np.float64)
    a[3:13, 3:13, :] = soft + np.random.default_rng(0).normal(0, 15, (10, 10, 8))
    a[7:9, 7:9, :] = bone
    return np.rint(a).astype(np.int16)


def _noise(sd: float) -> np.ndarray:
    return np.rint(np.random.default_rng(1).normal(0, sd, G.shape)).astype(np.int16)


def _yaml(tmp: Path, name: str, modality: str = "CT", **kw: Any) -> str:
    d = {"name": name, "version": "1", "modality": modality, "region": "abdomen", "licence": "CC-BY-4.0",
         "citation": "@misc{x, title={x}}", "layout": [{"image": "{case}.nii.gz"}], "labels": {"encoding": "none"},
         **kw}
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return str(tmp / f"{name}.yaml")


def test_the_rule_on_summary_numbers() -> None:
    assert ct_intensity_issue(24.0, 24.0, 1717.0) == ("ct_intensity_offset", 1024.0)
    assert ct_intensity_issue(0.0, 0.0, 3000.0) == ("ct_intensity_offset", 1000.0)
    assert ct_intensity_issue(-200.0, -250.0, 900.0) == ("ct_intensity_offset", 800.0)  # not near a common one
    assert ct_intensity_issue(3.0, 0.0, 255.0) == ("ct_intensity_8bit", 0.0)
    for low, lo, hi in ((-1000.0, -1024.0, 1500.0), (-3024.0, -3024.0, 1381.0), (-861.0, -896.0, 1167.0)):
        assert ct_intensity_issue(low, lo, hi) is None


def test_offset_and_8bit_ct_are_warnings_and_a_declared_fix_is_applied_first(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for case, arr in {"plain": ct(-1000), "padded": ct(-1024), "offset": ct(24, 1064, 1724),
                      "eightbit": np.clip(ct(0, 120, 255), 0, 255).astype(np.uint8),
                      "noair": ct(-100) + _noise(20),  # cropped inside the body: fat, no air
                      "windowed": np.clip(ct(-1000) + _noise(60), -160, 240).astype(np.int16)}.items():
        save_nifti(raw / "a" / f"{case}.nii.gz", arr, G)
    save_nifti(raw / "b" / "fixed.nii.gz", ct(24, 1064, 1724), G)  # declared below: -1024
    save_nifti(raw / "b" / "stillout.nii.gz", ct(24, 1064, 1724), G)  # the fix's `when` does not match it
    save_nifti(raw / "c" / "mr.nii.gz", ct(24, 1064, 1724), G)  # MR: no Hounsfield scale to check
    fixes = {"intensity_offset": {"value": -1024, "when": "^fixed", "reason": "stored with +1024"}}
    pipe = make_pipeline(tmp_path, [{"dataset": _yaml(tmp_path, "A"), "root": str(raw / "a")},
                                    {"dataset": _yaml(tmp_path, "B", fixes=fixes), "root": str(raw / "b")},
                                    {"dataset": _yaml(tmp_path, "C", modality="MR"), "root": str(raw / "c")}])
    run(pipe, stages=["ingest"])
    cases = {c["case_id"] for c in table(pipe, "cases").to_pylist()}
    assert cases == {"A__plain", "A__padded", "A__offset", "A__eightbit", "A__noair", "A__windowed", "B__fixed",
                     "B__stillout", "C__mr"}
    rows = {p["case_id"]: p for p in table(pipe, "problems__ingest").to_pylist()}
    assert {c: (p["kind"], p["severity"]) for c, p in rows.items()} == {
        "A__offset": ("ct_intensity_offset", "warning"), "B__stillout": ("ct_intensity_offset", "warning"),
        "A__eightbit": ("ct_intensity_8bit", "warning"), "A__noair": ("ct_intensity_offset", "warning"),
        "A__windowed": ("ct_intensity_clipped", "warning")}  # no offset advice: a fix would corrupt it
    assert "-160..240" in rows["A__windowed"]["message"] and "intensity_offset" not in rows["A__windowed"]["message"]
    msg = rows["A__offset"]["message"]
    assert rows["A__offset"]["path"] == "A:offset.nii.gz" and "+1024" in msg
    assert "fixes: {intensity_offset: {value: -1024, when: '^offset\\.nii\\.gz$'" in msg and "docs/registry.md" in msg
    assert "8-bit" in rows["A__eightbit"]["message"]
    assert "no air" not in msg and "(not a usual offset: if the scan is cropped so tightly that it holds no air" \
        in rows["A__noair"]["message"]


def test_a_fix_that_corrects_only_part_of_the_offset_asks_for_the_whole(tmp_path: Path) -> None:
    save_nifti(tmp_path / "raw" / "x.nii.gz", ct(24, 1064, 1724), G)
    fixes = {"intensity_offset": {"value": -24}}
    pipe = make_pipeline(tmp_path, [{"dataset": _yaml(tmp_path, "P", fixes=fixes), "root": str(tmp_path / "raw")}])
    run(pipe, stages=["ingest"])
    (row,) = table(pipe, "problems__ingest").to_pylist()
    assert row["kind"] == "ct_intensity_offset" and "intensity_offset of -24" in row["message"]
    assert "value: -1024" in row["message"]  # the value to declare in total


def test_demo_flags_only_its_offset_kits_copy(tmp_path: Path) -> None:
    from curator.demo import write_demo_pipeline
    from curator.demo.data import build_demo_data

    data = build_demo_data(tmp_path / "raw")
    pipe = write_demo_pipeline(tmp_path, data)
    run(pipe, stages=["ingest"])
    flagged = [(p["case_id"], p["kind"]) for p in table(pipe, "problems__ingest").to_pylist()
               if p["kind"].startswith("ct_intensity") or p["kind"] == "mr_looks_like_ct"]
    assert flagged == [("KiTS23__case_00005", "ct_intensity_offset")]  # its MR and PET cases are not CTs
    assert "KiTS23__case_00005" in {c["case_id"] for c in table(pipe, "cases").to_pylist()}  # kept


@pytest.mark.real
def test_real_ct_samples_are_not_flagged_and_an_offset_copy_is(tmp_path: Path, real_copy) -> None:  # type: ignore[no-untyped-def]
    import nibabel as nib

    layout = [{"image": "{case}.nii.gz"}, {"image": "{case}/", "format": "dicom"}]  # (CT_small.dcm: one 2-D slice)
    names = {"case": "example_ct_sm|example_ct_offset|example_ct_dicom|ct-3slice|CT5N"}
    sources = [{"dataset": _yaml(tmp_path, f"Real_{rel}", layout=layout, patterns=names), "root": str(real_copy(rel))}
               for rel in ("totalsegmentator", "dcmqi", "pydicom")]
    ts = Path(sources[0]["root"])
    img = nib.load(str(ts / "example_ct_sm.nii.gz"))
    shifted = (np.asarray(img.dataobj).astype(np.int32) + 1024).astype(np.int16)  # stored without the intercept
    nib.save(nib.Nifti1Image(shifted, img.affine), str(ts / "example_ct_offset.nii.gz"))
    pipe = make_pipeline(tmp_path, sources)
    run(pipe, stages=["ingest"])
    cases = table(pipe, "cases").to_pylist()
    assert len(cases) == 5 and all(c["modality"] == "CT" for c in cases)
    flagged = [(p["case_id"], p["kind"]) for p in table(pipe, "problems__ingest").to_pylist()
               if p["kind"].startswith("ct_")]
    assert flagged == [("Real_totalsegmentator__example_ct_offset", "ct_intensity_offset")]
    (msg,) = [p["message"] for p in table(pipe, "problems__ingest").to_pylist() if p["kind"].startswith("ct_")]
    assert "value: -1024," in msg and "+1000 and +1024 differ by only 24 HU" in msg, msg


@pytest.mark.real
@pytest.mark.parametrize("rel", ["totalsegmentator/example_ct_sm.nii.gz", "totalsegmentator/example_ct_dicom"])
def test_a_real_ct_stored_plus_1024_is_told_1024_and_one_stored_plus_1000_1000(real_data: Path, rel: str) -> None:
    """A real CT's 0.5th percentile is its −1024 HU floor, not air (−1000): stored +1024 as uint16
    (DICOM's intercept dropped) its low end is 0..1, which the rule snapped to +1000 — a fix of
    −1000 then left every voxel 24 HU high. The air peak tells the two apart."""
    from curator.ingest.core import air_peak, low_end
    from curator.io.formats import read_volume

    hu = np.asarray(read_volume(real_data / rel, role="image").array).astype(np.int32)
    assert float(np.percentile(hu, 0.5)) <= -1020  # the floor, not air
    for stored, want in (((hu + 1024).clip(0).astype(np.uint16), 1024.0), ((hu + 1000).astype(np.int16), 1000.0),
                         ((hu + 1000).clip(0).astype(np.uint16), 1000.0)):
        low = low_end(stored)
        issue = ct_intensity_issue(low, float(stored.min()), float(stored.max()), air_peak(stored, low))
        assert issue == ("ct_intensity_offset", want), (stored.dtype, low, issue)


def test_a_ct_declared_mr_or_pet_is_a_warning_an_mr_is_not(tmp_path: Path) -> None:
    """`modality: MR` over CTs (air at -1000 HU) went unnoticed while CT over MR data was caught
    (tester 43 #6): preprocess z-scored the CTs. An MR's intensities — from 0, or z-scored around
    0 — and a CT stored +1024 (which no intensity tells from an MR) are not flagged."""
    raw = tmp_path / "raw"
    for case, arr in {"ct": ct(-1000), "padded": ct(-1024), "offset": ct(24, 1064, 1724),
                      "mr": np.abs(ct(0, 300, 900)), "zscored": _noise(1)}.items():
        save_nifti(raw / "m" / f"{case}.nii.gz", arr, G)
    save_nifti(raw / "p" / "pet.nii.gz", ct(-1000), G)
    pipe = make_pipeline(tmp_path, [{"dataset": _yaml(tmp_path, "M", modality="MR"), "root": str(raw / "m")},
                                    {"dataset": _yaml(tmp_path, "P", modality="PET"), "root": str(raw / "p")}])
    run(pipe, stages=["ingest"])
    assert len(table(pipe, "cases")) == 6  # kept: a warning
    rows = {p["case_id"]: p for p in table(pipe, "problems__ingest").to_pylist()}
    assert {c: (p["kind"], p["severity"]) for c, p in rows.items()} == {
        "M__ct": ("mr_looks_like_ct", "warning"), "M__padded": ("mr_looks_like_ct", "warning"),
        "P__pet": ("mr_looks_like_ct", "warning")}
    msg = rows["M__ct"]["message"]
    assert rows["M__ct"]["path"] == "M:ct.nii.gz" and "declared MR" in msg and "-1100..-900" in msg
    assert "set `modality: CT` in the dataset YAML" in msg and "as a PET" in rows["P__pet"]["message"]


@pytest.mark.real
def test_real_mr_samples_are_not_taken_for_ct_and_a_real_ct_declared_mr_is(tmp_path: Path, real_copy) -> None:  # type: ignore[no-untyped-def]
    sources = [{"dataset": _yaml(tmp_path, f"MR_{i}", modality="MR", layout=[{"image": pattern}]),
                "root": str(real_copy(rel))} for i, (rel, pattern) in enumerate((
                    ("pyradiomics", "{case}_image.nrrd"), ("monai", "{case}.nii"),
                    ("totalsegmentator", "example_{case}_sm.nii.gz")))]  # the last: example_mr_sm and example_ct_sm
    pipe = make_pipeline(tmp_path, sources)
    run(pipe, stages=["ingest"])
    cases = {c["case_id"] for c in table(pipe, "cases").to_pylist()}
    assert {"MR_0__brain1", "MR_0__breast1", "MR_1__anatomical", "MR_2__mr", "MR_2__ct"} <= cases
    flagged = [(p["case_id"], p["kind"]) for p in table(pipe, "problems__ingest").to_pylist()
               if p["kind"] == "mr_looks_like_ct"]
    assert flagged == [("MR_2__ct", "mr_looks_like_ct")]
