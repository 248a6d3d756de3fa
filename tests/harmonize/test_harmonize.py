"""Harmonize: label maps to terms, derived terms, unmapped values, absent vs not annotated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curator.config import PipelineConfig
from curator.harmonize.core import case_rows, term_plans
from curator.harmonize.mapping import build_mapping, raw_value_terms
from curator.pipeline import run_pipeline
from curator.registry import load_registry
from curator.registry.spec import parse_spec
from curator.taxonomy import load_taxonomy
from curator.testing.native import write_tree
from curator.workspace import Workspace

TAX = load_taxonomy()


def spec_of(**kw: Any) -> Any:
    d = {"name": "Toy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
         "citation": "@misc{toy, title={toy}}", "layout": [{"image": "img/{case}.nii.gz", "label": "lab/{case}.nii.gz"}],
         **kw}
    spec, issues = parse_spec(d, "Toy.yaml")
    assert spec is not None, issues
    return spec


def test_raw_value_terms_lists_base_and_derived_terms() -> None:
    kits = raw_value_terms(load_registry().get("KiTS23"), TAX)
    assert kits == {1: ["kidney", "kidney_and_mass"], 2: ["kidney_tumor", "kidney_and_mass", "kidney_mass"],
                    3: ["kidney_cyst", "kidney_and_mass", "kidney_mass"]}
    segrap = raw_value_terms(load_registry().get("SegRap2023_Task1"), TAX, include_derived=False)
    assert segrap[6] == ["temporal_lobe_left", "hippocampus_left", "brain"]  # an explicit overlap class
    ts = raw_value_terms(load_registry().get("TotalSegmentator_Vertebrae"), TAX)
    assert set(ts["sacrum"]) == {"sacrum", "vertebrae"}
    assert set(ts["vertebrae_L6" if "vertebrae_L6" in ts else "vertebrae_L5"]) >= {"vertebra_l5", "lumbar_vertebrae", "vertebrae"}


def test_unknown_term_names_are_issues_not_crashes() -> None:
    m, issues = build_mapping(spec_of(labels={"values": {1: "liver", 2: "kidney of the moon"}}), TAX)
    assert dict(m.values) == {1: ("liver",)}
    assert [i.kind for i in issues] == ["term_unknown"]


def test_label_map_rows_unmapped_ignored_and_optional_values() -> None:
    spec = spec_of(labels={"values": {1: "left kidney", 2: "right kidney", 9: "sacrum"}, "ignore": [255]},
                   annotates=["left kidney", "right kidney"])
    m, _ = build_mapping(spec, TAX)
    plans = term_plans(m, TAX)
    rows, unmapped = case_rows(plans, {("", 1): 5, ("", 7): 3, ("", 255): 4}, known_values=m.values, known_keys=[],
                               ignore=m.ignore, encoding="label_map", voxel_ml=0.5)
    by = {r["term_id"]: r for r in rows}
    assert unmapped == [("", 7, 3)]  # never silently dropped; 255 is declared `ignore`
    assert by["kidney_left"]["present"] and by["kidney_left"]["volume_ml"] == 2.5
    assert not by["kidney_right"]["present"] and by["kidney_right"]["annotated"]  # annotated but absent
    assert by["kidney"]["derived"] and by["kidney"]["voxels"] == 5 and by["kidney"]["raw_values"] == [1, 2]
    assert "sacrum" not in by  # mapped but not annotated, and absent: no row
    rows2, _ = case_rows(plans, {("", 9): 2}, known_values=m.values, known_keys=[], ignore=m.ignore,
                         encoding="label_map", voxel_ml=1.0)
    sac = next(r for r in rows2 if r["term_id"] == "sacrum")
    assert sac["present"] and not sac["annotated"]


def test_a_derived_term_also_labelled_directly_gets_one_row() -> None:
    # 1 = left kidney, 2 = right kidney (annotated); 3 = "kidney" where the side was not told (optional)
    spec = spec_of(labels={"values": {1: "left kidney", 2: "right kidney", 3: "kidney"}},
                   annotates=["left kidney", "right kidney"])
    m, _ = build_mapping(spec, TAX)
    plans = term_plans(m, TAX)
    rows, _ = case_rows(plans, {("", 1): 4, ("", 2): 6, ("", 3): 5}, known_values=m.values, known_keys=[],
                        ignore=m.ignore, encoding="label_map", voxel_ml=1.0)
    kidney = [r for r in rows if r["term_id"] == "kidney"]
    assert len(kidney) == 1, kidney
    assert kidney[0]["voxels"] == 15 and kidney[0]["raw_values"] == [1, 2, 3] and kidney[0]["derived"]


def test_per_structure_missing_file_means_not_annotated() -> None:
    spec = spec_of(layout=[{"image": "{case}/ct.nii.gz", "label": "{case}/seg/{structure}.nii.gz"}],
                   labels={"encoding": "per_structure", "structures": {"kl": "left kidney", "kr": "right kidney",
                                                                        "liv": "liver"}})
    m, _ = build_mapping(spec, TAX)
    both = term_plans(m, TAX, ["kl", "kr"])  # liv.nii.gz does not exist in this case
    calls: list[list[str]] = []

    def union(keys: list[str]) -> int:
        calls.append(keys)
        return 7

    rows, unmapped = case_rows(both, {("kl", 1): 4, ("kr", 1): 5, ("extra", 1): 1}, known_values=[],
                               known_keys=m.structures, ignore=[], encoding="per_structure", voxel_ml=1.0, union=union)
    by = {r["term_id"]: r for r in rows}
    assert "liver" not in by  # no file: not annotated (SAT-DS would have written an empty channel)
    assert by["kidney"]["voxels"] == 7 and calls == [["kl", "kr"]]  # overlapping files: counted by re-reading
    assert by["kidney"]["label_keys"] == ["kl", "kr"]
    assert unmapped == [("extra", 1, 1)]
    left_only = term_plans(m, TAX, ["kl", "liv"])
    rows, _ = case_rows(left_only, {("kl", 1): 4}, known_values=[], known_keys=m.structures, ignore=[],
                        encoding="per_structure", voxel_ml=1.0)
    by = {r["term_id"]: r for r in rows}
    assert "kidney" not in by and "kidney_right" not in by  # half a partition: nothing derived
    assert by["liver"]["present"] is False  # the file exists but is empty: annotated, absent


def toy_yaml(tmp: Path, layout: str, labels: str) -> Path:
    """A one-off dataset YAML (name Toy) with the given layout entry and labels block."""
    yml = tmp / "Toy.yaml"
    yml.write_text(f"""name: Toy
version: "1"
modality: CT
region: abdomen
licence: CC-BY-4.0
citation: "@misc{{toy, title={{toy}}}}"
layout:
  - {layout}
labels:
{labels}
""")
    return yml


def _run(tmp: Path, files: list[tuple[str, str, Any]], dataset: str, registry: list[str] = ()) -> Workspace:
    write_tree(tmp / "raw", files)
    cfg = PipelineConfig.from_dict({"workspace": str(tmp / "ws"), "registry": list(registry),
                                    "sources": [{"dataset": dataset, "root": str(tmp / "raw")}],
                                    "executor": {"kind": "local", "workers": 1, "progress": False}})
    run_pipeline(cfg, stages=["ingest", "harmonize"], release=False)
    return Workspace(tmp / "ws")


def test_stage_reports_unmapped_values_and_keeps_the_case(tmp_path: Path) -> None:
    yml = toy_yaml(tmp_path, '{image: "img/{case}.nii.gz", label: "lab/{case}.nii.gz"}', "  values: {1: liver}")
    ws = _run(tmp_path, [("img/a.nii.gz", "image", ()), ("lab/a.nii.gz", "label", (1, 7))], "Toy", [str(yml)])
    probs = ws.read_table("problems__harmonize").to_pylist()
    assert [(p["kind"], p["severity"], p["path"]) for p in probs] == [("label_unmapped", "warning", "Toy:lab/a.nii.gz")]
    assert "raw value 7" in probs[0]["message"] and "What to do" in probs[0]["message"]
    assert "`labels.ignore`" in probs[0]["message"] and "other_structures" not in probs[0]["message"]
    labels = ws.read_table("labels").to_pylist()
    assert [(r["term_id"], r["present"], r["modality"]) for r in labels] == [("liver", True, "CT")]


def test_an_undeclared_structure_file_is_advised_the_per_structure_remedy(tmp_path: Path) -> None:
    """harmonize told an undeclared structure file to "list it under `ignore`", which takes raw
    values only (`labels check` refuses a file stem there): a per-structure dataset is told
    `labels.other_structures: ignore`, as ingest and `sources check` say."""
    yml = toy_yaml(tmp_path, '{image: "{case}/ct.nii.gz", label: "{case}/seg/{structure}.nii.gz"}',
                   "  encoding: per_structure\n  structures: {kl: left kidney}")
    ws = _run(tmp_path, [("a/ct.nii.gz", "image", ()), ("a/seg/kl.nii.gz", "label", (1,)),
                         ("a/seg/vessels.nii.gz", "label", (1,))], "Toy", [str(yml)])
    (row,) = ws.read_table("problems__harmonize").to_pylist()
    assert row["kind"] == "label_unmapped" and "structure file 'vessels'" in row["message"]
    assert "`labels.other_structures: ignore`" in row["message"] and "`labels.ignore`" not in row["message"]


def test_a_value_mapped_to_no_known_term_is_said_as_such(tmp_path: Path) -> None:
    """A value mapped to a name no term resolves was said as "maps to no term of the dataset YAML
    ... map it in labels.values" — though it is mapped: the row now names the mapping and says
    how to fix the name (term_unknown says it once for the dataset)."""
    yml = toy_yaml(tmp_path, '{image: "img/{case}.nii.gz", label: "lab/{case}.nii.gz"}',
                   "  values: {1: liver, 2: glorp tumour}")
    ws = _run(tmp_path, [("img/a.nii.gz", "image", ()), ("lab/a.nii.gz", "label", (1, 2, 7))], "Toy", [str(yml)])
    probs = {p["kind"] + (f":{p['message'][:11]}" if p["case_id"] else ""): p
             for p in ws.read_table("problems__harmonize").to_pylist()}
    assert sorted(probs) == ["label_unmapped:raw value 2", "label_unmapped:raw value 7", "term_unknown"]
    named = probs["label_unmapped:raw value 2"]["message"]
    assert "mapped to 'glorp tumour', which no taxonomy term resolves" in named and "stages.harmonize.taxonomy" in named
    assert "maps to no term of the dataset YAML" in probs["label_unmapped:raw value 7"]["message"]


def test_stage_output_is_deterministic(tmp_path: Path) -> None:
    files = [("dataset/case_00000/imaging.nii.gz", "image", ()), ("dataset/case_00000/segmentation.nii.gz", "label", (1, 2)),
             ("dataset/case_00001/imaging.nii.gz", "image", ()), ("dataset/case_00001/segmentation.nii.gz", "label", (3,))]
    a = _run(tmp_path / "a", files, "KiTS23").read_table("labels")
    b = _run(tmp_path / "b", files, "KiTS23").read_table("labels")
    assert a.equals(b) and a.num_rows == 10
    rows = {(r["case_id"], r["term_id"]): r for r in a.to_pylist()}
    assert not rows[("KiTS23__case_00001", "kidney")]["present"]  # annotated, absent
    assert rows[("KiTS23__case_00001", "kidney_and_mass")]["present"]


@pytest.mark.real
def test_real_kits23_counts_equal_direct_counts(real_copy: Any, tmp_path: Path) -> None:
    import nibabel as nib

    cases = ["case_00087", "case_00121", "case_00153"]  # 00087 has no cyst
    for c in cases:
        real_copy(f"kits23/dataset/{c}")
    root = tmp_path / "real" / "kits23"
    cfg = PipelineConfig.from_dict({"workspace": str(tmp_path / "ws"), "sources": [{"dataset": "KiTS23", "root": str(root)}],
                                    "executor": {"kind": "local", "workers": 1, "progress": False}})
    run_pipeline(cfg, stages=["ingest", "harmonize"], release=False)
    labels = {(r["case_id"], r["term_id"]): r for r in Workspace(tmp_path / "ws").read_table("labels").to_pylist()}
    for c in cases:
        seg = np.asarray(nib.load(root / "dataset" / c / "segmentation.nii.gz").dataobj)
        expect = {"kidney": seg == 1, "kidney_tumor": seg == 2, "kidney_cyst": seg == 3,
                  "kidney_mass": (seg == 2) | (seg == 3), "kidney_and_mass": seg > 0}
        got = {t: labels[(f"KiTS23__{c}", t)] for t in expect}
        assert {t: r["voxels"] for t, r in got.items()} == {t: int(m.sum()) for t, m in expect.items()}
        assert {t: r["present"] for t, r in got.items()} == {t: bool(m.any()) for t, m in expect.items()}
        assert got["kidney_and_mass"]["derived"] and not got["kidney"]["derived"]
        assert {t for (cid, t) in labels if cid == f"KiTS23__{c}"} == set(expect)


@pytest.mark.parametrize("overlap", [0, 6])
def test_structure_unions_sum_without_overlap_and_reread_with_it(tmp_path: Path, overlap: int) -> None:
    from curator.testing.layouts import save_nifti
    from curator.testing.native import GEOMETRY, image_array

    yml = toy_yaml(tmp_path, '{image: "{case}/ct.nii.gz", label: "{case}/seg/{structure}.nii.gz"}',
                   "  encoding: per_structure\n  structures: {kl: left kidney, kr: right kidney}")
    raw = tmp_path / "raw" / "s1"
    left, right = (np.zeros(GEOMETRY.shape, np.uint8) for _ in range(2))
    left.reshape(-1)[:40] = 1
    right.reshape(-1)[40 - overlap:70] = 1
    save_nifti(raw / "ct.nii.gz", image_array(0), GEOMETRY)
    save_nifti(raw / "seg" / "kl.nii.gz", left, GEOMETRY)
    save_nifti(raw / "seg" / "kr.nii.gz", right, GEOMETRY)
    cfg = PipelineConfig.from_dict({"workspace": str(tmp_path / "ws"), "registry": [str(yml)],
                                    "sources": [{"dataset": "Toy", "root": str(tmp_path / "raw")}],
                                    "executor": {"kind": "local", "workers": 1, "progress": False}})
    run_pipeline(cfg, stages=["ingest", "harmonize"], release=False)
    ws = Workspace(tmp_path / "ws")
    assert ws.read_table("cases").column("label_overlap_voxels").to_pylist() == [overlap]
    by = {r["term_id"]: r["voxels"] for r in ws.read_table("labels").to_pylist()}
    assert by == {"kidney_left": 40, "kidney_right": 30 + overlap, "kidney": 70}


def test_a_union_reindexes_each_structure_file_onto_the_case_grid(tmp_path: Path) -> None:
    """Two structure files cover the same 8 voxels, one stored with its x axis reversed (ingest
    accepts it as label_reoriented): their union is 8 voxels, not 16."""
    import nibabel as nib

    from curator.harmonize.stage import union_voxels

    a = np.zeros((10, 4, 4), np.uint8)
    a[0:2, 0:2, 0:2] = 1
    nib.save(nib.Nifti1Image(a, np.eye(4)), tmp_path / "one.nii.gz")
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[0, 3] = 9.0  # voxel i of the stored array is voxel 9 - i of the first
    nib.save(nib.Nifti1Image(a[::-1].copy(), flipped), tmp_path / "two.nii.gz")
    assert union_voxels(tmp_path, ["one.nii.gz", "two.nii.gz"], {}) == 8
    grid = [[10, 4, 4], np.eye(4).ravel().tolist()]  # the image's grid
    assert union_voxels(tmp_path, ["two.nii.gz", "one.nii.gz"], {}, grid) == 8


def test_a_taxonomy_change_reruns_the_cases_whose_mapping_it_changes(tmp_path: Path) -> None:
    """docs/taxonomy.md said harmonize "re-runs when either file changes"; its cases are keyed on
    each dataset's resolved mapping and the taxonomy's version: a synonym no dataset uses leaves
    every case cached, a new version re-runs all of them."""
    from curator.runner.context import Context
    from curator.runner.freshness import stale_reasons

    yml = toy_yaml(tmp_path, '{image: "img/{case}.nii.gz", label: "lab/{case}.nii.gz"}', "  values: {1: leber}")
    lab = tmp_path / "lab.yaml"
    lab.write_text("extends: curator\nversion: lab-1\nsynonyms: {liver: [leber]}\n")
    write_tree(tmp_path / "raw", [("img/a.nii.gz", "image", ()), ("lab/a.nii.gz", "label", (1,)),
                                  ("img/b.nii.gz", "image", ()), ("lab/b.nii.gz", "label", (1,))])
    cfg = PipelineConfig.from_dict({"workspace": str(tmp_path / "ws"), "registry": [str(yml)],
                                    "sources": [{"dataset": "Toy", "root": str(tmp_path / "raw")}],
                                    "stages": {"harmonize": {"taxonomy": str(lab)}},
                                    "executor": {"kind": "local", "workers": 1, "progress": False}})

    def harmonize() -> tuple[int, int]:
        (rep,) = run_pipeline(cfg, stages=["harmonize"], release=False).reports
        return rep.cached, rep.ran

    def stale() -> list[str]:
        return [r for r in stale_reasons(Context(cfg)) if "taxonomy" in r]

    run_pipeline(cfg, stages=["ingest", "harmonize"], release=False)
    lab.write_text("extends: curator\nversion: lab-1\nsynonyms: {liver: [leber], spleen: [milz]}\n")
    assert stale() == ["harmonize ran with another version of the taxonomy file"]  # status says so
    assert harmonize() == (2, 0)  # the file changed, no case's mapping did
    assert stale() == []  # and the tables are current for the changed file
    lab.write_text("extends: curator\nversion: lab-2\nsynonyms: {liver: [leber], spleen: [milz]}\n")
    assert harmonize() == (0, 2)


def test_a_declared_code_no_label_holds_while_most_hold_another_is_an_error_and_not_annotated(tmp_path: Path) -> None:
    """`2: left kidney` over files coding it 1: the release said "annotated, 0 voxels" for every
    case, with exit 0 (tester 43 #5) — false negatives a model learns from. The term (and the kidney
    derived from it) gets no rows — not annotated — and an error row names the YAML's file, key and
    line; the dataset's other terms, and another dataset of the run, keep theirs. Fixed, it is annotated."""
    yml = toy_yaml(tmp_path, '{image: "img/{case}.nii.gz", label: "lab/{case}.nii.gz"}',
                   "  values: {2: left kidney, 3: right kidney, 5: spleen, 6: pancreas}")
    good = tmp_path / "Good.yaml"
    good.write_text(yml.read_text().replace("name: Toy", "name: Good").replace("{2: left kidney", "{1: left kidney"))
    files = [("img/a.nii.gz", "image", ()), ("lab/a.nii.gz", "label", (1, 3, 5)),
             ("img/b.nii.gz", "image", ()), ("lab/b.nii.gz", "label", (1, 3))]
    write_tree(tmp_path / "raw", files)
    cfg = PipelineConfig.from_dict({"workspace": str(tmp_path / "ws"), "registry": [str(yml), str(good)],
                                    "sources": [{"dataset": "Toy", "root": str(tmp_path / "raw")},
                                                {"dataset": "Good", "root": str(tmp_path / "raw")}],
                                    "executor": {"kind": "local", "workers": 1, "progress": False}})
    run_pipeline(cfg, stages=["ingest", "harmonize"], release=False)
    ws = Workspace(tmp_path / "ws")
    probs = [p for p in ws.read_table("problems__harmonize").to_pylist() if p["kind"] == "declared_label_absent"]
    # the left kidney's 2 and the pancreas' 6 (also held by no label, beside the 1 every label holds)
    assert sorted((p["severity"], p["dataset"], p["case_id"], p["path"]) for p in probs) == [
        ("error", "Toy", None, "Toy.yaml:labels.values.2"), ("error", "Toy", None, "Toy.yaml:labels.values.6")]
    kidney = next(p["message"] for p in probs if "'left kidney'" in p["message"])
    assert "value 2 for 'left kidney'" in kidney and "none of the 2 label(s) of the dataset" in kidney
    assert "undeclared values instead (value 1 is in 2 of 2 labels)" in kidney and "(line 10)" in kidney
    assert "harmonize leaves 'left kidney' out of every case" in kidney and "write that value in labels.values" in kidney

    def terms(source: str) -> dict[str, set[tuple[str, bool, bool]]]:
        out: dict[str, set[tuple[str, bool, bool]]] = {}
        for r in ws.read_table("labels").to_pylist():
            if r["case_id"].startswith(f"{source}__"):
                out.setdefault(r["term_id"], set()).add((r["case_id"].split("__")[1], r["annotated"], r["present"]))
        return out

    toy = terms("Toy")
    assert "kidney_left" not in toy and "kidney" not in toy and "pancreas" not in toy  # no row: not annotated
    assert toy["kidney_right"] == {("a", True, True), ("b", True, True)}
    assert toy["spleen"] == {("a", True, True), ("b", True, False)}  # annotated, absent where no voxel: as declared
    mine = terms("Good")  # the run went on for the other dataset: its left kidney and kidney are annotated
    assert mine["kidney_left"] == mine["kidney"] == {("a", True, True), ("b", True, True)}
    yml.write_text(yml.read_text().replace("{2: left kidney", "{1: left kidney"))  # fixed: annotated again
    run_pipeline(cfg, stages=["ingest", "harmonize"], release=False)
    assert terms("Toy")["kidney_left"] == {("a", True, True), ("b", True, True)}
    # every value the labels hold is declared now: the pancreas' 6 is a class the download lacks, said by nothing
    assert not [p for p in ws.read_table("problems__harmonize").to_pylist() if p["kind"] == "declared_label_absent"]


def test_a_declared_value_no_label_holds_beside_a_few_undeclared_ones_is_a_warning(tmp_path: Path) -> None:
    """A value one label of three holds (a padding 7) is no sign of a wrong code: the term keeps
    its rows as the YAML declares it (annotated, absent), and a warning says the YAML and the files
    disagree."""
    yml = toy_yaml(tmp_path, '{image: "img/{case}.nii.gz", label: "lab/{case}.nii.gz"}',
                   "  values: {1: liver, 2: spleen}")
    ws = _run(tmp_path, [("img/a.nii.gz", "image", ()), ("lab/a.nii.gz", "label", (1,)),
                         ("img/b.nii.gz", "image", ()), ("lab/b.nii.gz", "label", (1, 7)),
                         ("img/c.nii.gz", "image", ()), ("lab/c.nii.gz", "label", (1,))], "Toy", [str(yml)])
    (row,) = [p for p in ws.read_table("problems__harmonize").to_pylist() if p["kind"] == "declared_label_absent"]
    assert (row["severity"], row["path"]) == ("warning", "Toy.yaml:labels.values.2")
    assert "undeclared values instead (value 7 is in 1 of 3 labels)" in row["message"]
    assert "'spleen' counts as annotated and absent in every case" in row["message"]
    spleen = {(r["case_id"], r["annotated"], r["present"]) for r in ws.read_table("labels").to_pylist()
              if r["term_id"] == "spleen"}
    assert spleen == {("Toy__a", True, False), ("Toy__b", True, False), ("Toy__c", True, False)}


def test_a_declared_value_no_label_holds_without_undeclared_ones_says_nothing(tmp_path: Path) -> None:
    """A class the download lacks (a tumour code no case of a subset holds), the rest as declared."""
    yml = toy_yaml(tmp_path, '{image: "img/{case}.nii.gz", label: "lab/{case}.nii.gz"}',
                   "  values: {1: liver, 2: liver tumour}")
    ws = _run(tmp_path, [("img/a.nii.gz", "image", ()), ("lab/a.nii.gz", "label", (1,))], "Toy", [str(yml)])
    assert ws.read_table("problems__harmonize") is None or not ws.read_table("problems__harmonize").to_pylist()
