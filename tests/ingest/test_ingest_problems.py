"""Ingest keeps what it can and names the real cause: label defects reject the label, not
the image; a label-only case reports why its label failed; aliases give their own case ids."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from curator.testing.layouts import save_nifti
from curator.testing.native import label_array, write_tree
from curator.testing.phantoms import grid
from curator.testing.pipelines import make_pipeline, run, table, write_dataset_yaml


def _spec(tmp: Path, layout: list[dict[str, Any]], labels: dict[str, Any], name: str = "Toy", **kw: Any) -> Path:
    return write_dataset_yaml(tmp, layout, labels, name, **{"modality": "MR", **kw})


def _ingest(tmp: Path, sources: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]],
                                                                list[dict[str, Any]]]:
    pipe = make_pipeline(tmp, sources)
    run(pipe, stages=["ingest"])
    cases = {c["case_id"]: c for c in table(pipe, "cases").to_pylist()}
    return cases, table(pipe, "raw_labels").to_pylist(), table(pipe, "problems__ingest").to_pylist()


def test_a_missing_label_file_keeps_the_image_and_names_the_label(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    write_tree(root, [("imagesTr/t_001.nii.gz", "image", ()), ("labelsTr/t_001.nii.gz", "label", (1,)),
                      ("imagesTr/t_002.nii.gz", "image", ())])  # its label, listed below, was never downloaded
    training = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ("t_001", "t_002")]
    (root / "dataset.json").write_text(json.dumps({"training": training}))
    yml = _spec(tmp_path, [{"index": "dataset.json"}], {"values": {1: "liver"}})
    cases, raw, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    assert sorted(cases) == ["Toy__t_001", "Toy__t_002"]
    kept = cases["Toy__t_002"]
    assert kept["label_status"] == "rejected" and kept["has_image"] and len(kept["image_sha256"]) == 64
    assert not [r for r in raw if r["case_id"] == "Toy__t_002"]
    (row,) = problems
    assert (row["case_id"], row["kind"], row["severity"], row["path"]) == (
        "Toy__t_002", "file_not_found", "warning", "Toy:labelsTr/t_002.nii.gz")


def test_a_label_only_case_with_a_corrupt_label_reports_the_corruption(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    write_tree(root, [("img/a.nii.gz", "image", ()), ("lab/a.nii.gz", "label", (1,)), ("lab/b.nii.gz", "label", (1,))])
    whole = (root / "lab/b.nii.gz").read_bytes()
    (root / "lab/b.nii.gz").write_bytes(whole[:len(whole) // 2])  # a label-only case whose only label is cut short
    yml = _spec(tmp_path, [{"image": "img/{case}.nii.gz", "label": "lab/{case}.nii.gz"}], {"values": {1: "liver"}})
    cases, _, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    assert sorted(cases) == ["Toy__a"]
    rows = sorted((p["kind"], p["severity"], p["path"]) for p in problems if p["case_id"] == "Toy__b")
    assert rows == [("corrupt_file", "error", "Toy:lab/b.nii.gz"),  # the cause, not "label_empty"
                    ("image_missing", "info", "Toy:lab/b.nii.gz")]  # the note collected before it is kept


_STRUCTURES = {"liver": "liver", "spleen": "spleen", "kidney_left": "left kidney", "kidney_right": "right kidney"}


def _break(path: Path, how: str) -> None:
    """Make one label file unusable the way a download or an export can."""
    if how == "truncated":
        whole = path.read_bytes()
        path.write_bytes(whole[:len(whole) // 2])
    elif how == "shape":
        save_nifti(path, label_array((1,), (8, 8, 3)), grid((8, 8, 3), (2.0, 2.0, 3.0), "LPS"))
    else:  # another place in the patient: 9 mm off
        save_nifti(path, label_array((1,)), grid((8, 8, 4), (2.0, 2.0, 3.0), "LPS", center=(9.0, 0.0, 0.0)))


_KIND = {"truncated": "corrupt_file", "shape": "shape_mismatch", "geometry": "geometry_mismatch"}


@pytest.mark.parametrize("how", sorted(_KIND))
def test_a_broken_structure_mask_drops_only_its_structure(tmp_path: Path, how: str) -> None:
    # TotalSegmentator-style: one mask per organ; s0002's liver mask is broken, every mask of s0003
    # is. A label map broken the same way (one file for every label) still rejects its case's label.
    ps, lm = tmp_path / "ps", tmp_path / "lm"
    files = [(f"{c}/ct.nii.gz", "image", ()) for c in ("s0001", "s0002", "s0003")]
    files += [(f"{c}/seg/{s}.nii.gz", "label", (1,)) for c in ("s0001", "s0002", "s0003") for s in _STRUCTURES]
    write_tree(ps, files)
    for rel in ["s0002/seg/liver.nii.gz", *(f"s0003/seg/{s}.nii.gz" for s in _STRUCTURES)]:
        _break(ps / rel, how)
    write_tree(lm, [(f"img/{c}.nii.gz", "image", ()) for c in ("a", "b")]
               + [(f"lab/{c}.nii.gz", "label", (1, 2)) for c in ("a", "b")])
    _break(lm / "lab/b.nii.gz", how)
    yml = _spec(tmp_path, [{"image": "{case}/ct.nii.gz", "label": "{case}/seg/{structure}.nii.gz"}],
                {"encoding": "per_structure", "structures": _STRUCTURES})
    yml_lm = _spec(tmp_path, [{"image": "img/{case}.nii.gz", "label": "lab/{case}.nii.gz"}],
                   {"values": {1: "liver", 2: "spleen"}}, name="Map")
    pipe = make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(ps)}, {"dataset": str(yml_lm), "root": str(lm)}])
    run(pipe, stages=["ingest", "harmonize"])
    cases = {c["case_id"]: c for c in table(pipe, "cases").to_pylist()}
    raw = table(pipe, "raw_labels").to_pylist()
    problems = [p for p in table(pipe, "problems__ingest").to_pylist() if p["severity"] != "info"]
    kept = cases["Toy__s0002"]
    assert kept["label_status"] == "ok" and kept["label_dropped"] == ["liver"]
    assert kept["label_keys"] == ["kidney_left", "kidney_right", "spleen"]  # what harmonize and preprocess read
    assert kept["label_paths"] == [f"s0002/seg/{s}.nii.gz" for s in ("kidney_left", "kidney_right", "spleen")]
    assert sorted(r["label_key"] for r in raw if r["case_id"] == "Toy__s0002") == [
        "kidney_left", "kidney_right", "spleen"]
    assert cases["Toy__s0001"]["label_dropped"] == [] and len(cases["Toy__s0001"]["label_keys"]) == 4
    (row,) = [p for p in problems if p["case_id"] == "Toy__s0002"]
    assert (row["case_id"], row["kind"], row["severity"], row["path"]) == (
        "Toy__s0002", _KIND[how], "warning", "Toy:s0002/seg/liver.nii.gz")
    assert "structure 'liver' was dropped" in row["message"] and "not annotated" in row["message"]
    # the dropped structure is unknown in the case, not annotated and absent; the others are annotated
    labels = {(r["case_id"], r["term_id"]): r for r in table(pipe, "labels").to_pylist()}
    assert ("Toy__s0002", "liver") not in labels and labels[("Toy__s0001", "liver")]["annotated"]
    assert all(labels[("Toy__s0002", t)]["annotated"] and labels[("Toy__s0002", t)]["present"]
               for t in ("spleen", "kidney_left", "kidney_right", "kidney"))
    # nothing usable is left of s0003's label, nor of a broken label map: the label is rejected as before
    gone = cases["Toy__s0003"]
    assert gone["label_status"] == "rejected" and gone["label_values"] == [] and gone["label_dropped"] == []
    assert not [r for r in raw if r["case_id"] == "Toy__s0003"] and not [k for k in labels if k[0] == "Toy__s0003"]
    assert sorted(p["path"] for p in problems if p["case_id"] == "Toy__s0003") == [
        f"Toy:s0003/seg/{s}.nii.gz" for s in sorted(_STRUCTURES)]
    bad = cases["Map__b"]
    assert bad["label_status"] == "rejected" and bad["label_values"] == [] and bad["label_dropped"] == []
    assert not [r for r in raw if r["case_id"] == "Map__b"] and not [k for k in labels if k[0] == "Map__b"]
    assert [(p["kind"], p["path"]) for p in problems if p["dataset"] == "Map"] == [(_KIND[how], "Map:lab/b.nii.gz")]


def test_one_dataset_under_two_aliases_gives_two_sets_of_cases(tmp_path: Path) -> None:
    files = [("img/a.nii.gz", "image", ()), ("lab/a.nii.gz", "label", (1,))]
    write_tree(tmp_path / "v1", files)
    write_tree(tmp_path / "v2", files)
    yml = _spec(tmp_path, [{"image": "img/{case}.nii.gz", "label": "lab/{case}.nii.gz"}], {"values": {1: "liver"}})
    cases, raw, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(tmp_path / "v1"), "name": "v1"},
                                              {"dataset": str(yml), "root": str(tmp_path / "v2"), "name": "v2"}])
    assert {c: (r["source"], r["dataset"]) for c, r in cases.items()} == {"v1__a": ("v1", "Toy"), "v2__a": ("v2", "Toy")}
    assert sorted(r["case_id"] for r in raw) == ["v1__a", "v2__a"]
    assert cases["v1__a"]["patient_id"] == cases["v2__a"]["patient_id"]  # the same patient in both versions
    assert problems == []



def test_an_image_whose_label_pattern_finds_nothing_is_a_label_missing_warning(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    write_tree(root, [("img/a.nii.gz", "image", ()), ("lab/a.nii.gz", "label", (1,)), ("img/b.nii.gz", "image", ()),
                      ("lab/B.nii.gz", "label", (1,))])  # b's label saved under another name
    yml = _spec(tmp_path, [{"image": "img/{case}.nii.gz", "label": "lab/{case}.nii.gz"}], {"values": {1: "liver"}})
    cases, _, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    assert cases["Toy__b"]["label_status"] == "missing" and cases["Toy__a"]["label_status"] == "ok"
    (row,) = [p for p in problems if p["kind"] != "image_missing"]  # lab/B.nii.gz: a label-only case B
    assert (row["case_id"], row["kind"], row["severity"], row["path"]) == (
        "Toy__b", "label_missing", "warning", "Toy:img/b.nii.gz")
    assert "'lab/{case}.nii.gz'" in row["message"]


def test_a_label_pattern_that_matches_no_file_is_one_error_for_the_source(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    write_tree(root, [("img/a.nii.gz", "image", ()), ("img/b.nii.gz", "image", ()),
                      ("labels/a.nii.gz", "label", (1,)), ("labels/b.nii.gz", "label", (1,))])
    yml = _spec(tmp_path, [{"image": "img/{case}.nii.gz", "label": "lab/{case}.nii.gz"}], {"values": {1: "liver"}})
    cases, raw, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    assert {c["label_status"] for c in cases.values()} == {"missing"} and raw == []
    (row,) = problems  # not one more per image
    assert (row["case_id"], row["kind"], row["severity"]) == (None, "label_no_match", "error")
    assert "matches no file" in row["message"] and "2 image(s)" in row["message"]
    assert "of layout[0] matches" in row["message"]  # numbered as layout_no_match and the validator do
    # named by the YAML's file, key and line, not `Toy:.` (the source root: tester 43 #9)
    assert row["path"] == "Toy.yaml:layout[0].label" and "(line 9)" in row["message"]
    assert yml.read_text().splitlines()[8].strip() == "label: lab/{case}.nii.gz"


def test_a_file_with_more_channels_than_the_index_declares_is_refused(tmp_path: Path) -> None:
    """An MSD task declaring {0: T2, 1: ADC} whose file holds three channels: which channel is
    which is unknown, so the case is refused (not silently cut to two sequences)."""
    import nibabel as nib
    import numpy as np

    root = tmp_path / "raw"
    g = grid((12, 10, 8), (1.5, 1.5, 3.0), "RAS")
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    for case, n in (("pr_001", 2), ("pr_002", 3)):
        four_d = rng.normal(100, 10, (*g.shape, n)).astype(np.float32)
        nib.save(nib.Nifti1Image(four_d, g.matrix), root / "imagesTr" / f"{case}.nii.gz")
        save_nifti(root / "labelsTr" / f"{case}.nii.gz", label_array((1,), g.shape), g, np.uint8)
    training = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ("pr_001", "pr_002")]
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "T2", "1": "ADC"}, "training": training}))
    yml = _spec(tmp_path, [{"index": "dataset.json"}], {"values": {1: "prostate"}})
    cases, _, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    assert sorted(cases) == ["Toy__pr_001__ADC", "Toy__pr_001__T2"]
    rows = {(p["case_id"], p["kind"]) for p in problems if p["severity"] == "error"}
    assert rows == {("Toy__pr_002__T2", "not_3d"), ("Toy__pr_002__ADC", "not_3d")}
    assert all("3" in p["message"] for p in problems if p["case_id"].startswith("Toy__pr_002"))


def test_the_stage_summary_counts_problems_not_tied_to_a_case(tmp_path: Path) -> None:
    """Two files for one case: the unused one is a duplicate_case row of the plan, and the stage's
    summary line counts it (it used to say '0 warnings' over a problems table with rows) — as an
    error, its severity, apart from the warnings."""
    root = tmp_path / "raw"
    write_tree(root, [("a/p01.nii.gz", "image", ()), ("b/p01.nii.gz", "image", ())])
    yml = _spec(tmp_path, [{"image": "**/{case}.nii.gz"}], {"values": {1: "liver"}})
    pipe = make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    (report,) = run(pipe, stages=["ingest"]).reports
    problems = table(pipe, "problems__ingest").to_pylist()
    assert [p["kind"] for p in problems] == ["duplicate_case"]
    assert report.errors == len(problems) == 1 and report.warnings == 0 and "1 errors" in report.line()


def test_a_nifti_whose_qform_and_sform_disagree_is_a_warning(tmp_path: Path) -> None:
    """nibabel (and curator) read the sform, ITK-based tools the qform unless the sform code is 1:
    when qform and sform disagree the case is kept on the sform and the disagreement is named,
    with what SimpleITK does at that code (agreeing headers say nothing)."""
    import nibabel as nib
    import numpy as np
    import SimpleITK as sitk

    root = tmp_path / "raw"
    (root / "img").mkdir(parents=True)
    (root / "lab").mkdir()
    aff = np.diag([1.5, 1.5, 3.0, 1.0])
    for case, shift, code in (("a", 0.0, 1), ("b", 5.0, 1), ("c", 5.0, 2)):
        img = nib.Nifti1Image(np.arange(12 * 10 * 6, dtype=np.int16).reshape(12, 10, 6), aff)
        q = aff.copy()
        q[0, 3] += shift
        img.set_sform(aff, code=code)
        img.set_qform(q, code=1)
        nib.save(img, str(root / "img" / f"{case}.nii.gz"))
        lab = np.zeros((12, 10, 6), np.uint8)
        lab[3:6, 3:6, 2:4] = 1
        nib.save(nib.Nifti1Image(lab, aff), str(root / "lab" / f"{case}.nii.gz"))
    yml = _spec(tmp_path, [{"image": "img/{case}.nii.gz", "label": "lab/{case}.nii.gz"}], {"values": {1: "liver"}})
    cases, _, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    assert sorted(cases) == ["Toy__a", "Toy__b", "Toy__c"]
    rows = sorted((p["case_id"], p["severity"]) for p in problems if p["kind"] == "nifti_qform_sform")
    assert rows == [("Toy__b", "warning"), ("Toy__c", "warning")]
    msg = {p["case_id"]: p["message"] for p in problems if p["kind"] == "nifti_qform_sform"}
    assert "5 mm apart" in msg["Toy__b"] and cases["Toy__b"]["origin_mm"][0] == aff[0, 3]
    # what the message says SimpleITK does is what it does: the sform at code 1, the qform at code 2
    itk_x = {c: -sitk.ReadImage(str(root / "img" / f"{c}.nii.gz")).GetOrigin()[0] for c in "bc"}  # LPS -> RAS
    assert itk_x == {"b": aff[0, 3], "c": aff[0, 3] + 5.0}
    assert "so do ITK-based tools" in msg["Toy__b"] and "use the qform at sform code 2" in msg["Toy__c"]


def test_a_nifti_without_sform_or_qform_is_warned_of(tmp_path: Path) -> None:
    """A header with sform_code and qform_code 0 places nothing in the patient: nibabel falls back
    to LAS, ITK to LPS, the NIfTI standard to RAS, so the patient's left/right were a silent guess.
    Images and a label-only case's label are warned of; a header with either code is not."""
    import nibabel as nib
    import numpy as np

    root = tmp_path / "raw"
    (root / "img").mkdir(parents=True)
    (root / "lab").mkdir()
    lab = np.zeros((12, 10, 6), np.uint8)
    lab[3:6, 3:6, 2:4] = 1
    for case, code in (("a", 0), ("b", 1)):
        img = nib.Nifti1Image(np.arange(12 * 10 * 6, dtype=np.int16).reshape(12, 10, 6), None)
        img.header.set_zooms((1.5, 1.5, 3.0))
        img.set_sform(None, code=0)
        img.set_qform(None, code=code)
        nib.save(img, str(root / "img" / f"{case}.nii.gz"))
        seg = nib.Nifti1Image(lab, img.affine)
        seg.set_sform(None, code=0)
        seg.set_qform(img.affine if code else None, code=code)
        nib.save(seg, str(root / "lab" / f"{case}.nii.gz"))
    nib.save(seg, str(root / "lab" / "c.nii.gz"))  # label-only, with a qform: fine
    bare = nib.Nifti1Image(lab, None)
    bare.set_sform(None, code=0)
    bare.set_qform(None, code=0)
    nib.save(bare, str(root / "lab" / "d.nii.gz"))  # label-only, no orientation
    yml = _spec(tmp_path, [{"image": "img/{case}.nii.gz", "label": "lab/{case}.nii.gz"},
                           {"label": "lab/{case}.nii.gz"}], {"values": {1: "liver"}})
    cases, _, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    assert sorted(cases) == ["Toy__a", "Toy__b", "Toy__c", "Toy__d"]
    rows = sorted((p["case_id"], p["severity"]) for p in problems if p["kind"] == "nifti_orientation_missing")
    assert rows == [("Toy__a", "warning"), ("Toy__d", "warning")]


def test_a_nrrd_or_metaimage_without_a_patient_orientation_is_warned_of(tmp_path: Path) -> None:
    """A NRRD with `spacings` only (no `space`, no `space directions`), one whose space names no
    patient axes (`space dimension`, `scanner-xyz`) and a MetaImage without a TransformMatrix were
    placed in LPS at origin 0 without a word, where a NIfTI in that state is warned of. Files that
    state their orientation (SimpleITK's own NRRD and MHA) are not."""
    import numpy as np
    import SimpleITK as sitk

    root = tmp_path / "raw"
    root.mkdir()
    a = np.arange(12 * 10 * 6, dtype=np.int16).reshape(12, 10, 6)
    raw = a.tobytes(order="F")  # NRRD and MetaImage data: the first axis fastest
    head = "NRRD0004\ntype: short\ndimension: 3\nsizes: 12 10 6\nendian: little\nencoding: raw\n"
    headers = {
        "spacings": "spacings: 1.5 1.5 3\n",
        "dimension": "space dimension: 3\nspace directions: (1.5,0,0) (0,1.5,0) (0,0,3)\n",
        "scanner": "space: scanner-xyz\nspace directions: (1.5,0,0) (0,1.5,0) (0,0,3)\n",
        "lps": "space: left-posterior-superior\nspace directions: (1.5,0,0) (0,1.5,0) (0,0,3)\n"
               "space origin: (0,0,0)\n",
    }
    for case, fields in headers.items():
        (root / f"{case}.nrrd").write_bytes((head + fields + "\n").encode() + raw)
    (root / "bare.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 12 10 6\nElementSpacing = 1.5 1.5 3\n"
                                   "ElementType = MET_SHORT\nElementByteOrderMSB = False\nElementDataFile = bare.raw\n")
    (root / "bare.raw").write_bytes(raw)
    img = sitk.GetImageFromArray(a.T.copy())
    img.SetSpacing((1.5, 1.5, 3.0))
    for name in ("sitk_nrrd.nrrd", "sitk_mha.mha"):
        sitk.WriteImage(img, str(root / name))
    yml = _spec(tmp_path, [{"image": "{case}.nrrd"}, {"image": "{case}.mha"}, {"image": "{case}.mhd"}],
                {"values": {1: "liver"}})
    cases, _, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    assert sorted(cases) == ["Toy__bare", "Toy__dimension", "Toy__lps", "Toy__scanner", "Toy__sitk_mha",
                             "Toy__sitk_nrrd", "Toy__spacings"]
    rows = {p["case_id"]: p for p in problems if p["kind"] == "orientation_missing"}
    assert sorted(rows) == ["Toy__bare", "Toy__dimension", "Toy__scanner", "Toy__spacings"]
    assert {p["severity"] for p in rows.values()} == {"warning"}
    assert "no `space:` field" in rows["Toy__spacings"]["message"] and "LPS" in rows["Toy__spacings"]["message"]
    assert "scanner-xyz" in rows["Toy__scanner"]["message"]
    assert "TransformMatrix" in rows["Toy__bare"]["message"]


def test_the_overlap_of_a_mask_stored_in_other_axis_order_is_counted(tmp_path: Path) -> None:
    """A structure mask with its first axis reversed (header to match: same voxel centres) was
    counted in its file's order: 64 overlapping voxels read as 0, and harmonize then took a
    union of the masks as the sum of their sizes."""
    import numpy as np

    from curator.testing import perturb as P

    g = grid((8, 8, 4), (2.0, 2.0, 3.0), "RAS")
    root = tmp_path / "raw"
    liver, spleen = np.zeros(g.shape, np.uint8), np.zeros(g.shape, np.uint8)
    liver[0:4] = 1
    spleen[2:7] = 1  # shares 2 × 8 × 4 = 64 voxels with the liver (96 in the flipped file's order)
    save_nifti(root / "s0001" / "ct.nii.gz", np.arange(np.prod(g.shape), dtype=np.int16).reshape(g.shape), g, np.int16)
    save_nifti(root / "s0001" / "seg" / "liver.nii.gz", liver, g, np.uint8)
    gf, flipped = P.flip_axis(g, spleen, 0)
    save_nifti(root / "s0001" / "seg" / "spleen.nii.gz", flipped, gf, np.uint8)
    yml = _spec(tmp_path, [{"image": "{case}/ct.nii.gz", "label": "{case}/seg/{structure}.nii.gz"}],
                {"encoding": "per_structure", "structures": {"liver": "liver", "spleen": "spleen"}})
    cases, _, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    assert [p["kind"] for p in problems] == ["label_reoriented"]
    assert cases["Toy__s0001"]["label_overlap_voxels"] == 64


def test_masks_stored_in_another_axis_order_are_one_row_per_case(tmp_path: Path) -> None:
    """A TotalSegmentator case whose 117 masks are stored LAS beside an LPS CT gave 117 info rows
    label_reoriented (118 in a release's problems); now one per case, naming how many and one."""
    import numpy as np

    from curator.testing import perturb as P

    g = grid((8, 8, 4), (2.0, 2.0, 3.0), "RAS")
    root = tmp_path / "raw"
    names = ["aorta", "liver", "spleen", "stomach"]
    for case in ("s0001", "s0002"):
        save_nifti(root / case / "ct.nii.gz", np.arange(np.prod(g.shape), dtype=np.int16).reshape(g.shape), g,
                   np.int16)
        for i, name in enumerate(names):
            mask = np.zeros(g.shape, np.uint8)
            mask[i] = 1
            if case == "s0001" and name == "aorta":  # one mask of s0001 on the image's own axes
                save_nifti(root / case / "seg" / f"{name}.nii.gz", mask, g, np.uint8)
            else:
                gf, flipped = P.flip_axis(g, mask, 0)
                save_nifti(root / case / "seg" / f"{name}.nii.gz", flipped, gf, np.uint8)
    yml = _spec(tmp_path, [{"image": "{case}/ct.nii.gz", "label": "{case}/seg/{structure}.nii.gz"}],
                {"encoding": "per_structure", "structures": {n: n for n in names}})
    cases, _, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    assert sorted(cases) == ["Toy__s0001", "Toy__s0002"]
    rows = sorted((p["case_id"], p["kind"], p["severity"]) for p in problems)
    assert rows == [("Toy__s0001", "label_reoriented", "info"), ("Toy__s0002", "label_reoriented", "info")]
    said = {p["case_id"]: p for p in problems}
    assert "3 of the case's 4 structure files (e.g. liver.nii.gz)" in said["Toy__s0001"]["message"]
    assert said["Toy__s0001"]["path"] == "Toy:s0001/seg/liver.nii.gz"
    assert "4 of the case's 4 structure files (e.g. aorta.nii.gz)" in said["Toy__s0002"]["message"]
    assert "where the image's are RAS" in said["Toy__s0002"]["message"]


def test_a_rejected_label_is_said_with_its_case_and_left_alone_by_qc(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """harmonize's label_rejected line named only the dataset ('Toy [label_rejected] ...'), and
    qc measured the store anyway and added 'no label voxels in the store'."""
    root = tmp_path / "raw"
    write_tree(root, [("img/a.nii.gz", "image", ()), ("lab/a.nii.gz", "label", (1,))])
    save_nifti(root / "lab/a.nii.gz", label_array((1,), (8, 8, 3)), grid((8, 8, 3), (2.0, 2.0, 3.0), "LPS"))
    yml = _spec(tmp_path, [{"image": "img/{case}.nii.gz", "label": "lab/{case}.nii.gz"}], {"values": {1: "liver"}})
    pipe = make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    with caplog.at_level(logging.INFO, logger="curator"):
        run(pipe, stages=["ingest", "harmonize", "preprocess", "qc"])
    said = [r.getMessage() for r in caplog.records if "[label_rejected]" in r.getMessage()]
    assert said and all(m.startswith("Toy__a [label_rejected]") for m in said), said
    assert [(p["case_id"], p["kind"]) for p in table(pipe, "problems__ingest").to_pylist()] == [
        ("Toy__a", "shape_mismatch")]
    assert table(pipe, "problems__qc").num_rows == 0


@pytest.mark.parametrize("block", [{"0": "background", "1": "PZ", "2": "TZ"},  # MSD
                                   {"background": 0, "PZ": 1, "TZ": 2}])  # nnU-Net v2
def test_a_yaml_that_swaps_what_the_index_names_is_said(tmp_path: Path, block: dict[str, Any]) -> None:
    """MSD_Prostate's YAML had SAT-DS's swapped zones while its dataset.json said 1 = PZ, 2 = TZ:
    every label went to the other zone, and nothing compared the two."""
    root = tmp_path / "raw"
    write_tree(root, [("imagesTr/p_001.nii.gz", "image", ()), ("labelsTr/p_001.nii.gz", "label", (1, 2))])
    training = [{"image": "./imagesTr/p_001.nii.gz", "label": "./labelsTr/p_001.nii.gz"}]
    (root / "dataset.json").write_text(json.dumps({"labels": block, "training": training}))
    swapped = {1: "transition zone of prostate", 2: "peripheral zone of prostate"}
    _, _, problems = _ingest(tmp_path / "a", [{"dataset": str(_spec(tmp_path, [{"index": "dataset.json"}],
                                                                    {"values": swapped})), "root": str(root)}])
    said = sorted((p["kind"], p["severity"], p["message"].split(";")[0]) for p in problems)
    pz = "dataset.json names value 1 'PZ' (peripheral zone of prostate), which the dataset YAML maps to value 2"
    tz = "dataset.json names value 2 'TZ' (transition zone of prostate), which the dataset YAML maps to value 1"
    assert said == [("index_labels_disagree", "warning", pz), ("index_labels_disagree", "warning", tz)]
    right = {1: "peripheral zone of prostate", 2: "transition zone of prostate"}
    _, _, problems = _ingest(tmp_path / "b", [{"dataset": str(_spec(tmp_path, [{"index": "dataset.json"}],
                                                                    {"values": right}, name="Toy2")), "root": str(root)}])
    assert problems == []


def test_a_segmentation_saved_cropped_to_its_extent_is_said_to_be_a_crop(tmp_path: Path) -> None:
    # HaN-Seg ships one .seg.nrrd per organ; 3D Slicer saves a segmentation cropped to its
    # segments' extent by default: before, "label shape (3, 2, 2) differs from image shape" and
    # "resample it onto the image grid", though the crop lies exactly on the image's voxels
    import numpy as np

    from curator.io.volume import Geometry
    from curator.testing.native import GEOMETRY, save_itk

    root = tmp_path / "raw"
    write_tree(root, [("set_1/case_01/case_01_IMG_CT.nrrd", "image", ()),
                      ("set_1/case_01/case_01_OAR_Brainstem.seg.nrrd", "label", (1,))])
    m = GEOMETRY.matrix.copy()
    m[:3, 3] = GEOMETRY.voxel_to_world(np.array([2, 3, 1]))[0]
    save_itk(root / "set_1/case_01/case_01_OAR_Parotid_L.seg.nrrd", np.ones((3, 2, 2), np.uint8),
             Geometry.from_affine((3, 2, 2), m))
    yml = _spec(tmp_path, [{"image": "set_1/{case}/{case}_IMG_CT.nrrd",
                            "label": "set_1/{case}/{case}_OAR_{structure}.seg.nrrd"}],
                {"encoding": "per_structure", "structures": {"Brainstem": "brainstem", "Parotid_L": "left parotid gland"}})
    _, _, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    (p,) = [p for p in problems if p["severity"] != "info"]
    assert (p["kind"], p["path"]) == ("shape_mismatch", "Toy:set_1/case_01/case_01_OAR_Parotid_L.seg.nrrd")
    assert "is a crop of the image grid" in p["message"] and "starting at image voxel (2, 3, 1)" in p["message"]
    assert "Export to files with the image as reference volume" in p["message"]


def test_info_rows_are_not_counted_or_logged_as_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """NSCLC's masks are stored RPI beside an LPS CT: each is an info row label_reoriented ("accepted,
    nothing to do"), and a study's RTSTRUCT folder an info series_not_image; the summary line said
    '... 5 warnings' and the run log printed WARNING for them."""
    from curator.testing import perturb as P
    from curator.testing.layouts import write_rtstruct

    g = grid((8, 8, 4), (2.0, 2.0, 3.0), "LPS")
    root = tmp_path / "raw"
    write_tree(root, [("LUNG1-001/study/1.000000-NA-82046/", "image", ())], g=g)
    write_rtstruct(root / "LUNG1-001" / "study" / "0.000000-NA-12345")
    gf, flipped = P.flip_axis(g, label_array((1,), g.shape), 1)
    save_nifti(root / "LUNG1-001" / "cavity.nii.gz", flipped, gf)
    yml = _spec(tmp_path, [{"image": "{case}/study/*/", "label": "{case}/cavity.nii.gz"}], {"values": {1: "liver"}})
    pipe = make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    with caplog.at_level(logging.INFO):
        (report,) = run(pipe, stages=["ingest"]).reports
    assert sorted((p["kind"], p["severity"]) for p in table(pipe, "problems__ingest").to_pylist()) == [
        ("label_reoriented", "info"), ("series_not_image", "info")]
    assert report.warnings == 0 and "0 warnings" in report.line()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_localizer_or_screenshot_series_beside_the_scan_is_passed_over(tmp_path: Path) -> None:
    """A TCIA study downloaded whole: ``1.000000-SCOUT-…`` (a 2-slice localizer) sorts before
    ``2.000000-ABDOMEN-…``; the scout was taken for the case's image and the CT dropped as a
    duplicate_case (so the label's grid no longer matched). Localizers and secondary captures
    (a dose report's screenshot) are passed over like RTSTRUCT folders."""
    import numpy as np

    from curator.testing.layouts import write_dicom_series

    g = grid((8, 8, 6), (2.0, 2.0, 3.0), "LPS")
    root = tmp_path / "raw"
    study = root / "LUNG1-001" / "study"
    scout, dose = grid((8, 8, 2), (2.0, 2.0, 3.0), "LPS"), grid((8, 8, 1), (2.0, 2.0, 3.0), "LPS")
    ramp = np.arange(64, dtype=float).reshape(8, 8, 1)
    write_dicom_series(study / "1.000000-SCOUT-111", np.repeat(ramp, 2, axis=2), scout,
                       phi={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    write_dicom_series(study / "2.000000-ABDOMEN-222", np.repeat(ramp, 6, axis=2) + np.arange(6), g)
    write_dicom_series(study / "3.000000-DOSE-333", ramp, dose, phi={"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"})
    save_nifti(root / "LUNG1-001" / "cavity.nii.gz", label_array((1,), g.shape), g)
    yml = _spec(tmp_path, [{"image": "{case}/study/*/", "label": "{case}/cavity.nii.gz"}], {"values": {1: "liver"}})
    cases, raw, problems = _ingest(tmp_path / "ws", [{"dataset": str(yml), "root": str(root)}])
    assert sorted((p["kind"], p["severity"], p["path"].rsplit("/", 1)[-1]) for p in problems) == [
        ("series_not_image", "info", "1.000000-SCOUT-111"), ("series_not_image", "info", "3.000000-DOSE-333")]
    said = " ".join(p["message"] for p in problems)
    assert "a localizer (scout) CT series" in said and "a secondary capture" in said
    assert "the case's image is LUNG1-001/study/2.000000-ABDOMEN-222" in said
    (case,) = cases.values()
    assert case["label_status"] == "ok" and [r["raw_value"] for r in raw] == [1]

    # a study exported into one folder, its localizer's files first by name, beside a folder of
    # another series: the study folder is not a "localizer series" (its scan was passed over)
    flat = root / "LUNG1-001" / "study" / "0.000000-STUDY-000"
    for k, f in enumerate(sorted((study / "1.000000-SCOUT-111").iterdir())):
        flat.mkdir(exist_ok=True)
        f.rename(flat / f"A{k}.dcm")
    for k, f in enumerate(sorted((study / "2.000000-ABDOMEN-222").iterdir())):
        f.rename(flat / f"B{k}.dcm")
    (study / "1.000000-SCOUT-111").rmdir()
    (study / "2.000000-ABDOMEN-222").rmdir()
    cases, raw, problems = _ingest(tmp_path / "ws2", [{"dataset": str(yml), "root": str(root)}])
    assert [(p["kind"], p["path"].rsplit("/", 1)[-1]) for p in problems] == [("series_not_image", "3.000000-DOSE-333")]
    assert "the case's image is LUNG1-001/study/0.000000-STUDY-000" in problems[0]["message"]
    (case,) = cases.values()
    assert case["label_status"] == "ok" and [r["raw_value"] for r in raw] == [1]


def test_a_label_with_an_empty_header_is_told_which_fix_to_declare(tmp_path: Path) -> None:
    """A mask saved with an identity affine (the array on the image's grid, axes stored RPI beside
    an LPS image): the remedy said 'declare a geometry fix' without naming one; it names
    label_geometry (+ label_flip), and with those declared the mask lands where it belongs."""
    import nibabel as nib
    import numpy as np

    g = grid((8, 8, 4), (2.0, 2.0, 3.0), "LPS")
    root = tmp_path / "raw"
    write_tree(root, [("LUNG1-001/ct.nii.gz", "image", ())], g=g)
    mask = np.zeros(g.shape, np.uint8)
    mask[0:2, 1:3, 0] = 1
    (root / "masks").mkdir()
    nib.save(nib.Nifti1Image(mask[::-1, :, ::-1].copy(), np.eye(4)), root / "masks" / "LUNG1-001.nii.gz")
    layout = [{"image": "{case}/ct.nii.gz", "label": "masks/{case}.nii.gz"}]
    yml = _spec(tmp_path, layout, {"values": {1: "liver"}})
    _, _, problems = _ingest(tmp_path / "a", [{"dataset": str(yml), "root": str(root)}])
    assert [p["kind"] for p in problems] == ["geometry_mismatch"]
    assert "`fixes: {label_geometry: {from: image}}`" in problems[0]["message"] and "label_flip" in problems[0]["message"]
    yml = _spec(tmp_path, layout, {"values": {1: "liver"}},
                fixes={"label_flip": {"axes": [0, 2]}, "label_geometry": {"from": "image"}})
    _, raw, problems = _ingest(tmp_path / "b", [{"dataset": str(yml), "root": str(root)}])
    assert problems == [] and [(r["raw_value"], r["voxels"]) for r in raw] == [(1, 4)]


def test_a_problem_quoting_a_layout_pattern_quotes_all_of_it(tmp_path: Path) -> None:
    """ISLES 2022's BIDS layout with FLAIR left undeclared: the sequence_undeclared row said the
    file 'matches the image pattern 'rawdata/{case}'' — the row scrubber took the rest of the
    pattern, `/ses-0001/...` after a placeholder, for an absolute path and dropped it."""
    root = tmp_path / "raw"
    case = "sub-strokecase0001"
    write_tree(root, [(f"rawdata/{case}/ses-0001/{case}_ses-0001_{s}.nii.gz", "image", ()) for s in ("dwi", "flair")]
               + [(f"derivatives/{case}/ses-0001/{case}_ses-0001_msk.nii.gz", "label", (1,))])
    pattern = "rawdata/{case}/ses-0001/{case}_ses-0001_{sequence}.nii.gz"
    yml = _spec(tmp_path, [{"image": pattern, "label": "derivatives/{case}/ses-0001/{case}_ses-0001_msk.nii.gz"}],
                {"values": {1: "stroke"}}, sequences={"dwi": "MR"})
    _, _, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    (p,) = problems
    assert p["kind"] == "sequence_undeclared" and f"the image pattern '{pattern}' with sequence 'flair'" in p["message"]


def test_a_copy_of_the_image_given_as_its_label_is_refused(tmp_path: Path) -> None:
    """A tester put a copy of breast1_image.nrrd where breast1_label.nrrd belongs: 238 distinct
    values passed as a label map (only > 256 was suspicious), and intensities 7, 8, 9 became the
    prostate zones the YAML declares. A label holding the case's image voxel for voxel is refused."""
    import numpy as np

    from curator.testing.layouts import write_kits_case
    from curator.testing.phantoms import Subject, grid, render
    from curator.testing.pipelines import make_pipeline, run

    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    img, lab = render(Subject.random(3), g, "CT", seed=3)
    coarse = np.clip(np.rint(img / 20.0) + 50, 0, 200).astype(np.int16)  # fewer than 256 distinct values, >= 0
    assert 16 < len(np.unique(coarse)) < 256
    write_kits_case(tmp_path / "kits", "case_00000", coarse, coarse, g)
    write_kits_case(tmp_path / "kits", "case_00001", coarse, (lab > 0).astype(np.uint8), g)  # a true label
    pipe = make_pipeline(tmp_path, [{"dataset": "KiTS23", "root": str(tmp_path / "kits")}])
    run(pipe, stages=["ingest"])
    ws = tmp_path / "workspace" / "tables"
    import pyarrow.parquet as pq

    said = [(p["case_id"], p["kind"]) for p in pq.read_table(ws / "problems__ingest.parquet").to_pylist()
            if p["kind"] == "label_is_image"]
    assert said == [("KiTS23__case_00000", "label_is_image")]
    status = {c["case_id"]: c["label_status"] for c in pq.read_table(ws / "cases.parquet").to_pylist()}
    assert status == {"KiTS23__case_00000": "rejected", "KiTS23__case_00001": "ok"}


def test_an_empty_file_at_the_end_of_a_dicom_series_is_a_warning_of_the_case(tmp_path: Path) -> None:
    """The last slice's file zeroed: the series was read one slice short with no problem row."""
    import numpy as np
    import pydicom

    from curator.testing.layouts import write_dicom_series

    g = grid((8, 8, 6), (2.0, 2.0, 3.0), "LPS")
    root = tmp_path / "raw"
    files = write_dicom_series(root / "c1" / "ct", np.arange(384, dtype=float).reshape(8, 8, 6), g)
    last = max(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    last.write_bytes(b"")
    yml = _spec(tmp_path, [{"image": "{case}/ct/"}], {"encoding": "none"})
    cases, _, problems = _ingest(tmp_path / "ws", [{"dataset": str(yml), "root": str(root)}])
    assert cases["Toy__c1"]["shape"] == [8, 8, 5]
    (row,) = problems
    assert (row["case_id"], row["kind"], row["severity"], row["path"]) == ("Toy__c1", "empty_file", "warning", "Toy:c1/ct")
    assert "is empty (0 bytes); it was left out of the series, whose volume holds 5 slice(s): if it was a slice of " \
        "the scan" in row["message"], row["message"]


@pytest.mark.parametrize(("target", "kind"), [("ct.nii.gz", "symlink_loop"), ("/nonexistent/ct.nii.gz", "file_not_found")])
def test_a_case_whose_image_is_a_broken_link_fails_on_it_not_as_label_only(tmp_path: Path, target: str,
                                                                             kind: str) -> None:
    """It was released as a label-only case with status ok, the link's error row without a case_id."""
    import os

    root = tmp_path / "raw"
    write_tree(root, [(f"{c}/{f}", k, () if k == "image" else (1,)) for c in ("a", "b")
                      for f, k in (("ct.nii.gz", "image"), ("seg.nii.gz", "label"))])
    (root / "b" / "ct.nii.gz").unlink()
    os.symlink(target, root / "b" / "ct.nii.gz")
    yml = _spec(tmp_path, [{"image": "{case}/ct.nii.gz", "label": "{case}/seg.nii.gz"}], {"values": {1: "liver"}})
    cases, _, problems = _ingest(tmp_path / "ws", [{"dataset": str(yml), "root": str(root)}])
    assert sorted(cases) == ["Toy__a"]
    assert [(p["case_id"], p["kind"], p["severity"], p["path"]) for p in problems] == [
        ("Toy__b", kind, "error", "Toy:b/ct.nii.gz")]


def test_a_declared_structure_no_case_has_is_a_warning_of_the_run(tmp_path: Path) -> None:
    """A typo in a structure stem with `other_structures: ignore` dropped the structure from the
    whole dataset with an empty problems table."""
    root = tmp_path / "raw"
    write_tree(root, [(f"s{i:04d}/{f}", kind, v) for i in (1, 2) for f, kind, v in
                      (("ct.nii.gz", "image", ()), ("segmentations/liver.nii.gz", "label", (1,)),
                       ("segmentations/kidney_left.nii.gz", "label", (1,)))])
    yml = _spec(tmp_path, [{"image": "{case}/ct.nii.gz", "label": "{case}/segmentations/{structure}.nii.gz"}],
                {"encoding": "per_structure", "other_structures": "ignore",
                 "structures": {"liver": "liver", "kidney_lft": "left kidney"}})
    cases, _, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    assert len(cases) == 2
    (row,) = [p for p in problems if p["kind"] == "declared_label_absent"]
    assert row["severity"] == "warning" and row["case_id"] is None and row["dataset"] == "Toy"
    assert "'kidney_lft'" in row["message"] and "'kidney_left'" in row["message"]
    line = next(i for i, text in enumerate(yml.read_text().splitlines(), 1) if "kidney_lft:" in text)
    assert row["path"] == "Toy.yaml:labels.structures.kidney_lft" and f"(line {line})" in row["message"]


def test_a_copied_dicom_slice_is_an_info_row_not_a_refused_series(tmp_path: Path) -> None:
    import numpy as np

    from curator.testing.layouts import write_dicom_series

    root = tmp_path / "raw"
    g = grid((12, 10, 6), (1.2, 1.2, 2.5), "LPS")
    files = write_dicom_series(root / "p01" / "ct", np.random.default_rng(1).integers(-900, 300, g.shape), g)
    (files[2].parent / (files[2].stem + " (1)" + files[2].suffix)).write_bytes(files[2].read_bytes())
    yml = _spec(tmp_path, [{"image": "{case}/ct/"}], {"values": {1: "liver"}}, modality="CT")
    cases, _, problems = _ingest(tmp_path, [{"dataset": str(yml), "root": str(root)}])
    assert cases["Toy__p01"]["shape"] == [12, 10, 6]
    rows = [(p["case_id"], p["kind"], p["severity"], p["path"]) for p in problems if p["kind"].startswith("dicom")]
    assert rows == [("Toy__p01", "dicom_duplicate_slices", "info", "Toy:p01/ct")]
    assert "1 file(s) of the series are byte-for-byte copies" in problems[[p["kind"] for p in problems].index(
        "dicom_duplicate_slices")]["message"]
