"""A term made of several structure files: its parts (all required) or alternatives (any one).

TotalSegmentator v2 paints S1 back into ``sacrum`` (sacrum.nii.gz ∪ vertebrae_S1.nii.gz): a case
without vertebrae_S1 was released with an annotated ``sacrum`` lacking S1's voxels. LNDb's
per-reader nodule masks are alternatives: a subset of readers annotates the nodules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from curator.harmonize.core import case_rows, missing_parts, term_plans
from curator.harmonize.mapping import build_mapping
from curator.harmonize.stage import incomplete_term_rows
from curator.preprocess.terms import structure_terms
from curator.registry import load_registry
from curator.registry.spec import parse_spec
from curator.taxonomy import load_taxonomy
from curator.testing.native import write_tree
from curator.testing.pipelines import make_pipeline, run, table

TAX = load_taxonomy()
LAYOUT = [{"image": "{case}/ct.nii.gz", "label": "{case}/seg/{structure}.nii.gz"}]
# kr and kr_hilum are parts of the right kidney; kidney is derived from left and right
PARTS = {"kl": "left kidney", "kr": "right kidney", "kr_hilum": "right kidney", "liv": "liver"}


def spec_of(structures: dict[str, Any], **labels: Any) -> Any:
    d = {"name": "Toy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
         "citation": "@misc{toy, title={toy}}", "layout": LAYOUT,
         "labels": {"encoding": "per_structure", "structures": structures, **labels}}
    spec, issues = parse_spec(d, "Toy.yaml")
    assert spec is not None and not issues, issues
    return spec


def rows_of(spec: Any, keys: list[str]) -> dict[str, dict[str, Any]]:
    m, issues = build_mapping(spec, TAX)
    assert not issues, issues
    counts = {(k, 1): 5 for k in keys}
    rows, _ = case_rows(term_plans(m, TAX, keys), counts, known_values=[], known_keys=m.structures, ignore=[],
                        encoding="per_structure", voxel_ml=1.0, union=lambda ks: 5 * len(ks))
    return {r["term_id"]: r for r in rows}


def test_a_term_of_several_files_needs_all_of_them() -> None:
    spec = spec_of(PARTS)
    whole = rows_of(spec, ["kl", "kr", "kr_hilum", "liv"])
    assert whole["kidney_right"]["label_keys"] == ["kr", "kr_hilum"] and whole["kidney_right"]["voxels"] == 10
    assert whole["kidney"]["annotated"] and whole["kidney"]["label_keys"] == ["kl", "kr", "kr_hilum"]
    part = rows_of(spec, ["kl", "kr", "liv"])  # kr_hilum missing (or dropped: ingest leaves it out of label_keys)
    assert "kidney_right" not in part  # not a right kidney without its hilum, annotated
    assert "kidney" not in part  # and no derived term holds the incomplete one
    assert set(part) == {"kidney_left", "liver"}
    assert missing_parts(build_mapping(spec, TAX)[0], ["kl", "kr", "liv"]) == {"kidney_right": ["kr_hilum"]}


def test_alternative_files_annotate_the_term_one_is_enough() -> None:
    readers = {"rad1": "lung nodule", "rad2": "lung nodule", "rad3": "lung nodule"}
    spec = spec_of(readers, annotated_by_any_file=["lung nodule"])
    one = rows_of(spec, ["rad2"])
    assert one["lung_nodule"]["annotated"] and one["lung_nodule"]["label_keys"] == ["rad2"]
    two = rows_of(spec, ["rad1", "rad3"])
    assert two["lung_nodule"]["label_keys"] == ["rad1", "rad3"] and two["lung_nodule"]["voxels"] == 10
    assert "lung_nodule" not in rows_of(spec_of(readers), ["rad2"])  # without the setting: parts


def test_lndb_readers_are_alternatives_and_totalsegmentator_parts() -> None:
    reg = load_registry()
    lndb, _ = build_mapping(reg.get("LNDb"), TAX)
    assert missing_parts(lndb, ["rad1"]) == {}
    ts, _ = build_mapping(reg.get("TotalSegmentator_v2"), TAX)
    assert missing_parts(ts, ["sacrum", "heart"]) == {"sacrum": ["vertebrae_S1"], "heart": ["atrial_appendage_left"]}


def test_the_info_row_names_the_files_missing_and_dropped() -> None:
    m, _ = build_mapping(spec_of(PARTS), TAX)
    case = {"dataset": "Toy", "case_id": "Toy__a", "label_dropped": ["kr_hilum"]}
    (row,) = incomplete_term_rows(m, ("kl", "kr", "liv"), case)
    assert (row["kind"], row["severity"], row["case_id"]) == ("term_incomplete", "info", "Toy__a")
    assert "ingest dropped kr_hilum" in row["message"] and "not annotated in this case" in row["message"]
    (row,) = incomplete_term_rows(m, ("kl", "kr", "liv"), {**case, "label_dropped": []})
    assert "the case has no kr_hilum file" in row["message"]
    assert incomplete_term_rows(m, ("kl", "liv"), case) == []  # no file of it at all: the ordinary missing file


def test_a_store_plane_does_not_name_an_incomplete_term() -> None:
    """Preprocess names a plane's terms as harmonize does, so the loader (store_terms) does not
    train on a right kidney without its hilum either."""
    spec = spec_of(PARTS)
    part = structure_terms(spec, ["kl", "kr", "liv"], TAX)
    assert part["kr"] == [] and part["kl"] == ["kidney_left"]
    whole = structure_terms(spec, ["kl", "kr", "kr_hilum", "liv"], TAX)
    assert whole["kr"] == ["kidney_right", "kidney"]


@pytest.mark.parametrize("labels, kind", [
    ({"annotated_by_any_file": ["no such organ"]}, "term_unknown"),
    ({"annotated_by_any_file": ["liver"]}, "annotates_unmapped"),  # one file: the setting would do nothing
])
def test_a_wrong_any_file_term_is_an_issue(labels: dict[str, Any], kind: str) -> None:
    _, issues = build_mapping(spec_of(PARTS, **labels), TAX)
    assert [(i.loc, i.kind) for i in issues] == [("Toy.yaml:labels.annotated_by_any_file", kind)], issues


def test_any_file_is_refused_under_a_label_map() -> None:
    d = {"name": "Toy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
         "citation": "@misc{toy, title={toy}}", "layout": [{"image": "i/{case}.nii.gz", "label": "l/{case}.nii.gz"}],
         "labels": {"values": {1: "liver"}, "annotated_by_any_file": ["liver"]}}
    _, issues = parse_spec(d, "Toy.yaml")
    assert [(i.loc, i.kind) for i in issues] == [("Toy.yaml:labels.annotated_by_any_file", "value")]


def test_ingest_and_harmonize_leave_an_incomplete_term_unannotated(tmp_path: Path) -> None:
    """a: every file; b: kr_hilum cut short (ingest drops it); c: no kr_hilum file."""
    import yaml

    raw = tmp_path / "raw"
    files = [(f"{c}/ct.nii.gz", "image", ()) for c in "abc"]
    files += [(f"{c}/seg/{s}.nii.gz", "label", (1,)) for c in "abc" for s in PARTS if not (c == "c" and s == "kr_hilum")]
    write_tree(raw, files)
    whole = (raw / "b/seg/kr_hilum.nii.gz").read_bytes()
    (raw / "b/seg/kr_hilum.nii.gz").write_bytes(whole[:len(whole) // 2])
    yml = tmp_path / "Toy.yaml"
    yml.write_text(yaml.safe_dump({"name": "Toy", "version": "1", "modality": "CT", "region": "abdomen",
                                   "licence": "CC-BY-4.0", "citation": "@misc{toy, title={toy}}", "layout": LAYOUT,
                                   "labels": {"encoding": "per_structure", "structures": PARTS}}))
    pipe = make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(raw)}])
    run(pipe, stages=["ingest", "harmonize"])
    cases = {c["case_id"]: c for c in table(pipe, "cases").to_pylist()}
    assert cases["Toy__b"]["label_dropped"] == ["kr_hilum"]
    terms: dict[str, set[str]] = {}
    for r in table(pipe, "labels").to_pylist():
        terms.setdefault(r["case_id"], set()).add(r["term_id"])
    assert terms["Toy__a"] == {"kidney_left", "kidney_right", "kidney", "liver"}
    assert terms["Toy__b"] == terms["Toy__c"] == {"kidney_left", "liver"}
    said = {(p["case_id"], p["severity"]) for p in table(pipe, "problems__harmonize").to_pylist()
            if p["kind"] == "term_incomplete"}
    assert said == {("Toy__b", "info"), ("Toy__c", "info")}


def test_harmonize_says_an_any_file_term_one_file_maps_to_is_unmapped(tmp_path: Path) -> None:
    """Not term_unknown (liver is a term) with the remedy for a misspelt name: its own kind and remedy."""
    import yaml

    raw = tmp_path / "raw"
    write_tree(raw, [("a/ct.nii.gz", "image", ())] + [(f"a/seg/{s}.nii.gz", "label", (1,)) for s in PARTS])
    yml = tmp_path / "Toy.yaml"
    yml.write_text(yaml.safe_dump({"name": "Toy", "version": "1", "modality": "CT", "region": "abdomen",
                                   "licence": "CC-BY-4.0", "citation": "@misc{toy, title={toy}}", "layout": LAYOUT,
                                   "labels": {"encoding": "per_structure", "structures": PARTS,
                                              "annotated_by_any_file": ["liver"]}}))
    pipe = make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(raw)}])
    run(pipe, stages=["ingest", "harmonize"])
    rows = [p for p in table(pipe, "problems__harmonize").to_pylist() if p["case_id"] is None]
    assert [(p["kind"], p["severity"]) for p in rows] == [("annotates_unmapped", "error")], rows
    assert "only 'liv' maps to it" in rows[0]["message"]
    assert "What to do: map a raw value or structure file to the term" in rows[0]["message"]


def test_a_4d_structure_mask_beside_a_4d_image_is_read_by_frame(tmp_path: Path) -> None:
    """M&Ms-style per-structure masks, each a 4-D file of as many frames as the 4-D image: ingest
    and preprocess read each channel's case its frame; harmonize's union of a term's files (kr and
    kr_hilum overlap, so it is counted on the files, not summed) read them whole and failed as
    not_3d. Each frame's union is that frame's."""
    import nibabel as nib
    import numpy as np

    from curator.testing.phantoms import grid
    from curator.testing.pipelines import write_dataset_yaml

    frames = 2
    g = grid((12, 10, 8), (1.5, 1.5, 3.0), "RAS")
    raw = tmp_path / "raw" / "a"
    (raw / "seg").mkdir(parents=True)
    img = np.random.default_rng(0).normal(100, 10, (*g.shape, frames)).astype(np.float32)
    nib.save(nib.Nifti1Image(img, g.matrix), raw / "ct.nii.gz")
    masks = {s: np.zeros((*g.shape, frames), np.uint8) for s in PARTS}
    for t in range(frames):
        masks["kl"][1:3, 1:3, 1:3, t] = 1
        masks["liv"][8:11, 6:9, 4:7, t] = 1
        masks["kr"][3:6, 3:6, 2:4 + t, t] = 1  # the right kidney grows a slice per frame
        masks["kr_hilum"][5:7, 5:7, 2:4, t] = 1  # overlapping kr in 2 voxels
    for s, m in masks.items():
        nib.save(nib.Nifti1Image(m, g.matrix), raw / "seg" / f"{s}.nii.gz")
    yml = write_dataset_yaml(tmp_path, [{**LAYOUT[0], "channels": {t: f"t{t}" for t in range(frames)}}],
                             {"encoding": "per_structure", "structures": PARTS}, modality="MR",
                             sequences={f"t{t}": "MR" for t in range(frames)})
    pipe = make_pipeline(tmp_path, [{"dataset": str(yml), "root": str(tmp_path / "raw")}])
    run(pipe, stages=["ingest", "harmonize"])
    cases = {c["case_id"]: c for c in table(pipe, "cases").to_pylist()}
    assert {c: (r["label_status"], r["label_overlap_voxels"]) for c, r in cases.items()} == {
        "Toy__a__t0": ("ok", 2), "Toy__a__t1": ("ok", 2)}
    problems = [(p["case_id"], p["kind"]) for p in table(pipe, "problems__harmonize").to_pylist()
                if p["severity"] != "info"]
    assert problems == []
    right = {r["case_id"]: r["voxels"] for r in table(pipe, "labels").to_pylist() if r["term_id"] == "kidney_right"}
    want = {f"Toy__a__t{t}": int(np.count_nonzero(masks["kr"][..., t] | masks["kr_hilum"][..., t]))
            for t in range(frames)}
    assert right == want and want["Toy__a__t0"] != want["Toy__a__t1"]
