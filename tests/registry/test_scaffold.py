"""`curator sources init`: a draft dataset YAML guessed from a download's files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from curator.registry.layout import discover
from curator.registry.scaffold import TODO, is_label, scaffold, to_yaml
from curator.registry.spec import parse_spec
from curator.testing.native import write_tree

FILLED = {"version": "1", "region": "abdomen", "licence": "CC-BY-4.0", "citation": "@misc{x, title={x}}",
          "homepage": "https://example.org"}


def filled(spec: dict) -> dict:  # type: ignore[type-arg]
    """The draft with its TODO fields given, as a person would."""
    return {k: FILLED.get(k, v) if v == TODO else v for k, v in spec.items()}


def test_label_words() -> None:
    assert is_label("labelsTr/a.nii.gz") and is_label("case_1/segmentation.nii.gz") and is_label("x/GT.nii.gz")
    assert is_label("s1/segmentations/liver.nii.gz") and is_label("Masks/Case_00001.nii.gz")
    assert not is_label("imagesTr/a.nii.gz") and not is_label("case_00001/imaging.nii.gz")
    assert not is_label("segrap_0001/image.nii.gz")


def test_an_msd_task_is_guessed_with_its_index_names(tmp_path: Path) -> None:
    root = tmp_path / "Task09_Spleen"
    files = [(f"imagesTr/spleen_{i}.nii.gz", "image", ()) for i in (2, 3, 10)]
    files += [(f"labelsTr/spleen_{i}.nii.gz", "label", (1,)) for i in (2, 3, 10)]
    files += [(f"imagesTs/spleen_{i}.nii.gz", "image", ()) for i in (1, 4)]
    write_tree(root, files)
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "spleen"}}))
    draft = scaffold(root, "MySpleen")
    assert draft.spec["layout"] == [  # {case} is the dataset's own id, spleen_10: the labels hold it too
        {"image": "imagesTr/{case}.nii.gz", "label": "labelsTr/{case}.nii.gz", "split": "train"},
        {"image": "imagesTs/{case}.nii.gz", "split": "test"}]
    assert draft.spec["labels"] == {"encoding": "label_map", "values": {1: "spleen"}}
    assert draft.spec["modality"] == "CT" and draft.unclaimed_labels == []
    spec, issues = parse_spec(filled(draft.spec), "MySpleen.yaml")
    assert spec is not None and not issues, issues
    cases, problems = discover(spec, root)
    assert not problems and len(cases) == 5
    assert sorted(c.case_id for c in cases if c.labels) == ["MySpleen__spleen_10", "MySpleen__spleen_2",
                                                             "MySpleen__spleen_3"]


def test_multi_sequence_case_folders(tmp_path: Path) -> None:
    """BraTS: a folder per case, a file per sequence, one seg; a stray sequence joins the list."""
    root = tmp_path / "brats"
    files = []
    for c in ("BraTS-GLI-00000-000", "BraTS-GLI-00002-000", "BraTS-GLI-00002-001"):
        files += [(f"{c}/{c}-{s}.nii.gz", "image", ()) for s in ("t1n", "t1c", "t2w", "t2f")]
        files.append((f"{c}/{c}-seg.nii.gz", "label", (1, 2, 3)))
    files.append(("BraTS-GLI-00000-000/BraTS-GLI-00000-000-flair.nii.gz", "image", ()))
    write_tree(root, files)
    draft = scaffold(root, "Gli")
    assert draft.spec["layout"] == [{"image": "{case}/{case}-{sequence}.nii.gz",
                                     "label": "{case}/{case}-seg.nii.gz"}]
    assert draft.spec["modality"] == "MR"
    assert draft.spec["sequences"] == {s: "MR" for s in ("flair", "t1c", "t1n", "t2f", "t2w")}
    assert sorted(draft.spec["labels"]["values"]) == [1, 2, 3]
    assert set(draft.spec["labels"]["values"].values()) == {TODO}  # no file says what 1, 2, 3 are
    spec, issues = parse_spec(filled(draft.spec), "Gli.yaml")
    assert spec is not None and not issues, issues
    cases, _ = discover(spec, root)
    assert len(cases) == 13 and {c.fields["case"] for c in cases} == {"BraTS-GLI-00000-000", "BraTS-GLI-00002-000",
                                                                      "BraTS-GLI-00002-001"}


def test_per_structure_masks_resolve_to_terms(tmp_path: Path) -> None:
    root = tmp_path / "ts"
    stems = ["liver", "kidney_left", "vertebrae_L1", "mystery_blob"]
    files = [(f"s{i:04d}/ct.nii.gz", "image", ()) for i in (1, 7)]
    files += [(f"s{i:04d}/segmentations/{s}.nii.gz", "label", (1,)) for i in (1, 7) for s in stems]
    write_tree(root, files)
    draft = scaffold(root, "TS")
    assert draft.spec["layout"] == [{"image": "{case}/ct.nii.gz", "label": "{case}/segmentations/{structure}.nii.gz"}]
    assert draft.spec["labels"] == {"encoding": "per_structure", "structures": {
        "kidney_left": "left kidney", "liver": "liver", "mystery_blob": TODO, "vertebrae_L1": "L1 vertebra"}}


def test_todo_fields_are_refused_until_filled(tmp_path: Path) -> None:
    """The draft is a start: labels check refuses its TODO licence, citation and label names."""
    from curator.registry.check import check_label_system

    root = tmp_path / "kits"
    write_tree(root, [(f"dataset/case_0000{i}/imaging.nii.gz", "image", ()) for i in range(2)]
               + [(f"dataset/case_0000{i}/segmentation.nii.gz", "label", (1, 2)) for i in range(2)])
    text = to_yaml(scaffold(root, "K"), root)
    assert text.startswith("# Draft written by `curator sources init`")
    (tmp_path / "K.yaml").write_text(text)
    problems = check_label_system(extra=(tmp_path / "K.yaml",))
    mine = {(p.kind, p.where) for p in problems if not p.builtin and p.severity == "error"}
    assert ("term_unknown", "K.yaml:labels.values.1") in mine and ("term_unknown", "K.yaml:labels.values.2") in mine, mine
    assert any(w.endswith(":licence") for _, w in mine), mine


def test_cli_writes_the_draft_and_never_over_a_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curator.cli import app

    root = tmp_path / "dl"
    write_tree(root, [("img/img0001.nii.gz", "image", ()), ("label/label0001.nii.gz", "label", (1,))])
    out = tmp_path / "draft.yaml"
    res = CliRunner().invoke(app, ["sources", "init", str(root), "--name", "Btcv", "-o", str(out)])
    assert res.exit_code == 0, res.output
    d = yaml.safe_load(out.read_text())
    assert d["name"] == "Btcv" and d["layout"] == [{"image": "img/img{case}.nii.gz",
                                                    "label": "label/label{case}.nii.gz"}]
    assert "1 layout entry, 1 case(s)" in " ".join(res.stderr.split())
    again = CliRunner().invoke(app, ["sources", "init", str(root), "-o", str(out)])
    assert again.exit_code != 0 and "exists" in again.output
    bad = CliRunner().invoke(app, ["sources", "init", str(root), "--modality", "XR"])
    assert bad.exit_code == 2
    assert CliRunner().invoke(app, ["sources", "init", str(root), "--name", "../x"]).exit_code == 2
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(app, ["sources", "init", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "no image file" in " ".join(empty.output.split())


@pytest.mark.parametrize("name", ["MSD_Spleen", "KiTS23", "BraTS2023_GLI", "Hecktor2022", "TotalSegmentator_v2", "CMRxMotion",
                                  "AbdomenCT1K", "FLARE22", "SegTHOR"])
def test_registry_layouts_it_guesses_exactly(name: str, tmp_path: Path) -> None:
    """On these native downloads the draft finds the built-in YAML's (image, labels) pairs
    (benchmarks/scaffold_eval.py runs all 72)."""
    from benchmarks.scaffold_eval import evaluate

    r = evaluate(name, tmp_path)
    assert r["exact"], r


def _layout(root: Path, files: list[tuple[str, str, tuple[int, ...]]], name: str = "D") -> list[dict]:  # type: ignore[type-arg]
    write_tree(root, files)
    return scaffold(root, name).spec["layout"]  # type: ignore[no-any-return]


def test_test_images_numbered_from_1_again_get_no_train_label(tmp_path: Path) -> None:
    """KiPA22, nnU-Net imagesTs: a test folder numbering its cases from 1 again was paired with
    the train labels of the same numbers (other patients' masks)."""
    layout = _layout(tmp_path / "kipa", [(f"train/image/{i}.nii.gz", "image", ()) for i in (1, 2, 3)]
                     + [(f"train/label/{i}.nii.gz", "label", (1,)) for i in (1, 2, 3)]
                     + [(f"test/image/{i}.nii.gz", "image", ()) for i in (1, 2)])
    assert layout == [{"image": "test/image/{case}.nii.gz", "split": "test"},
                      {"image": "train/image/{case}.nii.gz", "label": "train/label/{case}.nii.gz", "split": "train"}]
    layout = _layout(tmp_path / "xmoda", [(f"source_training/x_{i}_ceT1.nii.gz", "image", ()) for i in (1, 2, 3)]
                     + [(f"source_training/x_{i}_Label.nii.gz", "label", (1,)) for i in (1, 2, 3)]
                     + [(f"target_training/x_{i}_hrT2.nii.gz", "image", ()) for i in (1, 2, 3)])
    assert [e.get("label") for e in layout] == ["source_training/{case}_Label.nii.gz", None]


def test_centre_prefixes_are_part_of_the_case_not_sequences(tmp_path: Path) -> None:
    """HECKTOR: CHUM-001, CHUP-001, MDA-001 are three patients; the draft took the centres as
    sequences and gave every image MDA's label."""
    files = [(f"imagesTr/{c}-00{i}__PT.nii.gz", "image", ()) for c in ("CHUM", "CHUP", "MDA") for i in (1, 2)]
    files += [(f"labelsTr/{c}-00{i}.nii.gz", "label", (1,)) for c in ("CHUM", "CHUP", "MDA") for i in (1, 2)]
    draft_root = tmp_path / "hecktor"
    assert _layout(draft_root, files) == [{"image": "imagesTr/{case}__PT.nii.gz", "label": "labelsTr/{case}.nii.gz",
                                           "split": "train"}]
    assert scaffold(draft_root, "H").spec["modality"] == "PET"


def test_kits23_takes_its_label_map_not_the_annotators_instances(tmp_path: Path) -> None:
    files = [(f"dataset/case_0000{i}/imaging.nii.gz", "image", ()) for i in range(3)]
    files += [(f"dataset/case_0000{i}/segmentation.nii.gz", "label", (1, 2)) for i in range(3)]
    files += [(f"dataset/case_0000{i}/instances/kidney_instance-1_annotation-{a}.nii.gz", "label", (1,))
              for i in range(3) for a in (1, 2, 3)]
    write_tree(tmp_path / "k", files)
    draft = scaffold(tmp_path / "k", "K")
    assert draft.spec["layout"] == [{"image": "dataset/{case}/imaging.nii.gz",
                                     "label": "dataset/{case}/segmentation.nii.gz"}]
    assert draft.spec["labels"]["encoding"] == "label_map"


def test_modalities_from_names_and_the_index(tmp_path: Path) -> None:
    root = tmp_path / "nn"
    write_tree(root, [(f"imagesTr/liv_00{i}_000{c}.nii.gz", "image", ()) for i in (1, 2) for c in (0, 1)]
               + [(f"labelsTr/liv_00{i}.nii.gz", "label", (1,)) for i in (1, 2)])
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "PET"}, "labels": {}}))
    draft = scaffold(root, "N")
    assert draft.spec["modality"] == "CT" and draft.spec["sequences"] == {"0000": "CT", "0001": "PET"}
    assert scaffold(_tree(tmp_path / "b", [f"s{i}/s{i}-{q}.nii.gz" for i in (1, 2) for q in ("t1n", "t2f")]),
                    "B").spec["modality"] == "MR"
    mm = scaffold(_tree(tmp_path / "mm", [f"{m}_train/{m}_train_100{i}_image.nii.gz" for m in ("ct", "mr")
                                          for i in (1, 2)]), "M").spec
    assert mm["modality"] == "CT" and [e.get("modality") for e in mm["layout"]] == [None, "MR"]


def _tree(root: Path, images: list[str]) -> Path:
    write_tree(root, [(p, "image", ()) for p in images])
    return root


def test_bids_sequences_in_one_folder_and_gd_labels(tmp_path: Path) -> None:
    files = [(f"sub-0{i}/anat/sub-0{i}_{q}.nii.gz", "image", ()) for i in (1, 2, 3) for q in ("T1w", "FLAIR")]
    files += [(f"sub-0{i}/anat/sub-0{i}_dseg.nii.gz", "label", (1,)) for i in (1, 2, 3)]
    assert _layout(tmp_path / "bids", files) == [{"image": "{case}/anat/{case}_{sequence}.nii.gz",
                                                  "label": "{case}/anat/{case}_dseg.nii.gz"}]
    assert is_label("train25_myops_gd/myops_training_101_gd.nii.gz")  # MyoPS' ground truth
    assert not is_label("UPENN-GBM-00001/UPENN-GBM-00001_T1_gd.nii.gz")  # a post-contrast image


def test_a_case_number_inside_a_dotted_uid_is_not_the_case(tmp_path: Path) -> None:
    from curator.registry.scaffold_pairing import _replace_case

    assert _replace_case("R1/1.2.840.1/x seg.nii.gz", {"case": "1"}) == "R{case}/1.2.840.1/x seg.nii.gz"


def test_a_name_cannot_end_a_comment_line_of_the_draft(tmp_path: Path) -> None:
    root = tmp_path / "dl"
    write_tree(root, [("a\nlicence: MIT/img_001.nii.gz", "image", ()), ("a\nlicence: MIT/img_002.nii.gz", "image", ())])
    text = to_yaml(scaffold(root, "X"), root)
    assert yaml.safe_load(text)["licence"] == TODO


def test_a_label_per_phase_makes_the_phase_part_of_the_case_not_a_shared_sequence(tmp_path: Path) -> None:
    """M&Ms-2: 001_SA_{CINE,ED,ES} with 001_SA_ED_gt and 001_SA_ES_gt was drafted as sequences
    sharing the ED label (the ES frame got the ED mask, and sources check said ok)."""
    root = tmp_path / "mnm2"
    files = [(f"{c}/{c}_SA_{q}.nii.gz", "image", ()) for c in ("001", "002", "003") for q in ("CINE", "ED", "ES")]
    files += [(f"{c}/{c}_SA_{q}_gt.nii.gz", "label", (1, 2, 3)) for c in ("001", "002", "003") for q in ("ED", "ES")]
    write_tree(root, files)
    draft = scaffold(root, "M")
    assert draft.spec["layout"] == [{"image": "{case}/{case}_SA_{phase}.nii.gz",
                                     "label": "{case}/{case}_SA_{phase}_gt.nii.gz"}]
    assert draft.spec["patterns"] == {"phase": "ED|ES"} and "sequences" not in draft.spec
    assert draft.unclaimed_labels == []
    assert "{phase} takes ED, ES only (patterns:): a label file names each of them, none names CINE" in draft.notes
    assert draft.spec["modality"] == "MR"  # SA, CINE: short-axis cine MR
    spec, issues = parse_spec(filled(draft.spec), "M.yaml")
    assert spec is not None and not issues, issues
    cases, _ = discover(spec, root)
    got = {c.image: [p for _, p in c.labels] for c in cases}
    assert got == {f"{c}/{c}_SA_{q}.nii.gz": [f"{c}/{c}_SA_{q}_gt.nii.gz"] for c in ("001", "002", "003")
                   for q in ("ED", "ES")}


def _acdc_files(info: bool = False) -> list[tuple[str, str, Any]]:
    """Three ACDC patient folders: the 4-D cine, an ED and an ES frame with labels (and Info.cfg)."""
    from curator.testing.cine import info_cfg

    files: list[tuple[str, str, Any]] = []
    for p, frames in (("001", ("01", "12")), ("002", ("01", "14")), ("003", ("01", "10"))):
        files += [(f"training/patient{p}/patient{p}_4d.nii.gz", "image", ())]
        files += [(f"training/patient{p}/patient{p}_frame{f}.nii.gz", "image", ()) for f in frames]
        files += [(f"training/patient{p}/patient{p}_frame{f}_gt.nii.gz", "label", (1, 2, 3)) for f in frames]
        files += [(f"training/patient{p}/Info.cfg", "text", info_cfg(1, int(frames[1])))] if info else []
    return files


def test_a_frames_label_goes_to_the_frame_not_the_4d_cine(tmp_path: Path) -> None:
    """ACDC: patient001_frame01_gt went to patient001_4d (the 4-D cine paired with one frame's
    mask) and the 3-D frame files got no label."""
    root = tmp_path / "acdc"
    layout = _layout(root, _acdc_files())
    assert {"image": "training/{case}/{case}_4d.nii.gz", "split": "train"} in layout
    (frames,) = [e for e in layout if "frame" in e["image"]]
    assert frames["label"] == frames["image"].replace(".nii.gz", "_gt.nii.gz"), frames


def test_label_files_it_cannot_read_are_said_with_why(tmp_path: Path) -> None:
    """M&Ms' 4-D _sa_gt files failed to read and the draft said `values: {1: TODO}` without a word."""
    import nibabel as nib
    import numpy as np

    root = tmp_path / "mnm"
    for c in ("A0S9V9", "A1D0Q7"):
        (root / c).mkdir(parents=True)
        for name, dt in ((f"{c}_sa.nii.gz", np.int16), (f"{c}_sa_gt.nii.gz", np.uint8)):
            nib.save(nib.Nifti1Image(np.ones((6, 5, 4, 3), dt), np.eye(4)), root / c / name)
    draft = scaffold(root, "MnM")
    assert draft.spec["labels"]["values"] == {1: TODO}
    (said,) = [n for n in draft.notes if "could not be read" in n]
    assert said.startswith("2 label file(s) could not be read (not_3d 2), e.g. A0S9V9/A0S9V9_sa_gt.nii.gz: "), said
    assert "no label value is known" in said and "(6, 5, 4, 3)" in said
    assert said in to_yaml(draft, root)


def test_modality_ct_is_said_to_be_a_guess_when_no_name_says_it(tmp_path: Path) -> None:
    draft = scaffold(_tree(tmp_path / "x", [f"imgs/case_{i}.nii.gz" for i in (1, 2)]), "X")
    assert draft.spec["modality"] == "CT" and any(n.startswith("modality CT is a guess") for n in draft.notes)
    draft = scaffold(_tree(tmp_path / "y", [f"ct/case_{i}.nii.gz" for i in (1, 2)]), "Y")
    assert draft.spec["modality"] == "CT" and not any("modality" in n for n in draft.notes)


def test_acdc_info_cfg_beside_the_frames_drafts_phase(tmp_path: Path) -> None:
    """ACDC's Info.cfg says which frame is ED and which ES: the draft reads it as `phase:` with the
    placeholder holding the frame number, so cases.phase is filled and QC judges the phases apart."""
    root = tmp_path / "acdc"
    write_tree(root, _acdc_files(info=True))
    draft = scaffold(root, "ACDC")
    (frames,) = [e for e in draft.spec["layout"] if "frame" in e["image"]]
    frame = frames["image"].rsplit("_frame{", 1)[1].split("}")[0]
    assert draft.spec["phase"] == {"file": "Info.cfg", "frame": frame}
    assert any(n.startswith("phase: Info.cfg beside the images") for n in draft.notes)
    spec, issues = parse_spec(filled(draft.spec), "ACDC.yaml")
    assert spec is not None and not issues, issues
    from curator.ingest.phase import case_phases

    cases, _ = discover(spec, root)
    got = {c.image.rsplit("/", 1)[1]: phase for c in cases if c.labels
           for phase, _ in [case_phases(spec.phase, root, [c])[c.case_id]]}
    assert got == {"patient001_frame01.nii.gz": "ED", "patient001_frame12.nii.gz": "ES",
                   "patient002_frame01.nii.gz": "ED", "patient002_frame14.nii.gz": "ES",
                   "patient003_frame01.nii.gz": "ED", "patient003_frame10.nii.gz": "ES"}
    # a folder without such a file drafts no phase
    for p in ("001", "002", "003"):
        (root / f"training/patient{p}/Info.cfg").write_text("Group: DCM\n")
    assert "phase" not in scaffold(root, "ACDC").spec


def _promise12(root: Path) -> None:
    """PROMISE12's MetaImage download: each case's image and its segmentation in one folder."""
    files = []
    for part, cases in ((1, ("00", "01")), (2, ("02",)), (3, ("03", "04"))):
        for c in cases:
            files += [(f"TrainingData_Part{part}/Case{c}.mhd", "image", ()),
                      (f"TrainingData_Part{part}/Case{c}_segmentation.mhd", "label", (1,))]
    write_tree(root, files)


def test_promise12_ids_are_its_own_and_the_image_pattern_leaves_the_segmentations_out(tmp_path: Path) -> None:
    """PROMISE12: `TrainingData_Part{part}/Case{case}.mhd` matched `Case00_segmentation.mhd` too
    (image_is_label warnings failing --strict) and made ids like `1__00` instead of `Case00`."""
    root = tmp_path / "promise12"
    _promise12(root)
    draft = scaffold(root, "P12")
    assert draft.spec["layout"] == [{"image": "TrainingData_Part*/{case}.mhd",
                                     "label": "TrainingData_Part*/{case}_segmentation.mhd", "split": "train"}]
    assert draft.spec["patterns"] == {"case": r"Case\d{2}"}
    assert any(n.startswith("patterns: {case: 'Case\\d{2}'} keeps the image patterns off 5 other file(s)")
               for n in draft.notes), draft.notes
    spec, issues = parse_spec(filled(draft.spec), "P12.yaml")
    assert spec is not None and not issues, issues
    cases, problems = discover(spec, root)
    assert problems == []
    assert [(c.case_id, c.labels) for c in cases] == [
        (f"P12__Case{c}", [("", f"TrainingData_Part{p}/Case{c}_segmentation.mhd")])
        for p, c in ((1, "00"), (1, "01"), (2, "02"), (3, "03"), (3, "04"))]


def _hanseg(root: Path, organs: tuple[str, ...] = ("Brainstem", "Parotid_L", "Parotid_R", "Glnd_Submand_L")) -> None:
    """HaN-Seg's NRRD download: a CT, an MR T1 and one .seg.nrrd per organ named with the case."""
    files = []
    for c in ("case_01", "case_02", "case_03"):
        files += [(f"set_1/{c}/{c}_IMG_CT.nrrd", "image", ()), (f"set_1/{c}/{c}_IMG_MR_T1.nrrd", "image", ())]
        files += [(f"set_1/{c}/{c}_OAR_{o}.seg.nrrd", "label", (1,)) for o in organs]
    write_tree(root, files)


def test_hanseg_masks_named_with_the_case_are_structures_and_the_mr_is_a_sequence_of_its_own(tmp_path: Path) -> None:
    """HaN-Seg: one `case_01_OAR_Brainstem.seg.nrrd` was taken for the label map (the other masks
    left unclaimed), and the MR T1 was drafted as a second entry of the same case ids, without
    `modality: MR` — duplicate_case errors in the draft's own check."""
    root = tmp_path / "hanseg"
    _hanseg(root)
    draft = scaffold(root, "HN")
    assert draft.spec["layout"] == [
        {"image": "set_1/{case}/{case}_IMG_CT.nrrd", "label": "set_1/{case}/{case}_OAR_{structure}.seg.nrrd"},
        {"image": "set_1/{case}/{case}_IMG_MR_T1.nrrd", "sequence": "MR_T1", "modality": "MR"}]
    assert draft.spec["modality"] == "CT" and draft.unclaimed_labels == []
    assert draft.spec["labels"]["encoding"] == "per_structure"
    assert sorted(draft.spec["labels"]["structures"]) == ["Brainstem", "Glnd_Submand_L", "Parotid_L", "Parotid_R"]
    assert draft.spec["labels"]["structures"]["Brainstem"] == "brainstem"
    assert draft.entries[0].labelled == 3
    assert any(n.startswith("layout[1] (set_1/{case}/{case}_IMG_MR_T1.nrrd) holds 3 of the cases of layout[0] again")
               and "`sequence: MR_T1`" in n and "`modality: MR`" in n for n in draft.notes), draft.notes
    d = filled(draft.spec)
    d["labels"] = {**d["labels"], "structures": {k: "brainstem" if v == TODO else v
                                                 for k, v in d["labels"]["structures"].items()}}
    spec, issues = parse_spec(d, "HN.yaml")
    assert spec is not None and not issues, issues
    cases, problems = discover(spec, root)
    assert problems == []
    got = {c.case_id: (c.modality, len(c.labels)) for c in cases}
    assert got == {**{f"HN__case_0{i}": ("CT", 4) for i in (1, 2, 3)},
                   **{f"HN__case_0{i}__MR_T1": ("MR", 0) for i in (1, 2, 3)}}
    # names that differ only in a number are frames, not structures (ACDC's _frame01_gt, _frame12_gt)
    from curator.registry.scaffold_pairing import _structure_sets

    assert _structure_sets([f"p/{{case}}_frame{f}_gt.nii.gz" for f in ("01", "12", "14")]) == []


def _brats(root: Path, cases: tuple[str, ...], fix: tuple[str, ...] = (), train: str = "BraTS-MEN-Train") -> None:
    files = []
    for folder, names in ((train, cases), ("BraTS-MEN-Train-Fix", fix)):
        at = f"{folder}/" if folder else ""
        for c in names:
            files += [(f"{at}{c}/{c}-{s}.nii.gz", "image", ()) for s in ("t1n", "t1c", "t2w", "t2f")]
            files.append((f"{at}{c}/{c}-seg.nii.gz", "label", (1, 2, 3)))
    write_tree(root, files)


def test_a_fix_folder_of_corrected_cases_is_drafted_as_an_override(tmp_path: Path) -> None:
    """BraTS-MEN-Train-Fix holds corrected copies of some BraTS-MEN-Train cases: the draft gave
    it another case shape (`00004-000` beside `00004`), so both copies became cases."""
    root = tmp_path / "men"
    _brats(root, ("BraTS-MEN-00004-000", "BraTS-MEN-00008-000"), fix=("BraTS-MEN-00004-000",))
    draft = scaffold(root, "MEN")
    assert draft.spec["layout"] == [
        {"image": "BraTS-MEN-Train-Fix/{case}/{case}-{sequence}.nii.gz",
         "label": "BraTS-MEN-Train-Fix/{case}/{case}-seg.nii.gz", "split": "train", "overrides": True},
        {"image": "BraTS-MEN-Train/{case}/{case}-{sequence}.nii.gz",
         "label": "BraTS-MEN-Train/{case}/{case}-seg.nii.gz", "split": "train"}]
    assert any(n.startswith("layout[0] (BraTS-MEN-Train-Fix/) holds 1 of the cases of layout[1] again: drafted "
                            "`overrides: true`") for n in draft.notes), draft.notes
    spec, issues = parse_spec(filled(draft.spec), "MEN.yaml")
    assert spec is not None and not issues, issues
    cases, problems = discover(spec, root)
    assert {c.case_id: c.image.split("/")[0] for c in cases} == {
        **{f"MEN__BraTS-MEN-00004-000__{s}": "BraTS-MEN-Train-Fix" for s in ("t1n", "t1c", "t2w", "t2f")},
        **{f"MEN__BraTS-MEN-00008-000__{s}": "BraTS-MEN-Train" for s in ("t1n", "t1c", "t2w", "t2f")}}
    assert {c.labels[0][1].split("/")[0] for c in cases if "00004" in c.case_id} == {"BraTS-MEN-Train-Fix"}
    assert {e.kind for e in problems} == {"case_overridden"} and len(problems) == 5  # 4 images and the seg


def test_timepoints_of_one_subject_draft_a_patient_id_and_every_draft_writes_one(tmp_path: Path) -> None:
    """BraTS-MEN-00008-000 and -001 are two timepoints of subject 00008: the draft wrote no
    patient_id, so they became two patients, and a split could put them on both sides."""
    root = tmp_path / "btp"
    _brats(root, ("BraTS-MEN-00004-000", "BraTS-MEN-00008-000", "BraTS-MEN-00008-001"), train="")
    draft = scaffold(root, "BTP")  # the case folders at the root
    assert draft.spec["patterns"] == {"case": r"(?P<subject>BraTS-MEN-\d{5})-(?P<timepoint>\d{3})"}
    assert draft.spec["patient_id"] == "{subject}"
    text = to_yaml(draft, root)
    assert "\n# check: the case ids share a subject and differ in a trailing number (BraTS-MEN-00008-000, " \
           "BraTS-MEN-00008-001)" in text.replace("\n# ", " ").replace(" check:", "\n# check:")
    assert text.split("\npatient_id:")[0].rsplit("\n", 1)[-1].startswith("#")  # the comment is right above it
    spec, issues = parse_spec(filled(yaml.safe_load(text)), "BTP.yaml")
    assert spec is not None and not issues, issues
    cases, problems = discover(spec, root)
    assert problems == [] and len(cases) == 12
    assert {c.source_case: c.patient_raw for c in cases} == {
        "BraTS-MEN-00004-000": "BraTS-MEN-00004", "BraTS-MEN-00008-000": "BraTS-MEN-00008",
        "BraTS-MEN-00008-001": "BraTS-MEN-00008"}
    # one timepoint each: no subject to tell, and the draft still writes patient_id, with what to check
    root = tmp_path / "one"
    _brats(root, ("BraTS-MEN-00004-000", "BraTS-MEN-00008-000"), train="")
    draft = scaffold(root, "One")
    assert draft.spec["patient_id"] == "{case}" and "patterns" not in draft.spec
    text = to_yaml(draft, root)
    assert "\n# check: one patient per case id." in text and "\npatient_id: '{case}'" in text
