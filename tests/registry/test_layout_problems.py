"""Discovery never drops a matching file silently: files that give the same case are
``duplicate_case`` problems, a broken ``dataset.json`` entry is a problem, not a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from curator.registry.layout import discover
from curator.registry.spec import parse_spec
from curator.testing.layouts import write_rtstruct
from curator.testing.native import write_tree


def spec(**kw: Any) -> Any:
    d = {"name": "Toy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
         "citation": "@misc{toy, title={toy}}", "labels": {"values": {1: "liver"}}, **kw}
    s, issues = parse_spec(d, "Toy.yaml")
    assert issues == []
    return s


def test_every_unused_match_of_a_case_is_a_duplicate_case_naming_both_files(tmp_path: Path) -> None:
    files = ["centreA/p01.nii.gz", "centreB/p01.nii.gz",  # the same case name at two sites
             "centreA/p02.nii.gz", "centreC/sub/p02.nii.gz",  # ... at two depths
             "centreA/p 03.nii.gz", "centreA/p-03.nii.gz",  # two names one character apart
             "centreA/Müller.nii.gz", "centreA/Mäller.nii.gz", "centreA/患者1.nii.gz", "centreA/症例1.nii.gz"]
    write_tree(tmp_path, [(f, "image", ()) for f in files])
    cases, problems = discover(spec(layout=[{"image": "**/{case}.nii.gz"}], labels={"encoding": "none"}), tmp_path)
    ids = {c.image: c.case_id for c in cases}
    assert len(ids) == len(set(ids.values())) == 8  # a sanitised name carries a hash of itself
    assert ids["centreA/p-03.nii.gz"] == "Toy__p-03" and ids["centreA/p 03.nii.gz"].startswith("Toy__p-03-")
    assert ids["centreA/Müller.nii.gz"].startswith("Toy__Muller-") and ids["centreA/p01.nii.gz"] == "Toy__p01"
    dup = {Path(e.path).relative_to(tmp_path).as_posix(): e for e in problems if e.kind == "duplicate_case"}
    assert sorted(dup) == ["centreB/p01.nii.gz", "centreC/sub/p02.nii.gz"]
    assert len(problems) == 2
    for dropped, kept in (("centreB/p01.nii.gz", "centreA/p01.nii.gz"), ("centreC/sub/p02.nii.gz", "centreA/p02.nii.gz")):
        assert dropped in dup[dropped].detail and kept in dup[dropped].detail
        assert "{centre}" in (dup[dropped].remedy or "")  # what to do: let the folder be part of the case
    # with a placeholder for the site, every file is its own case
    cases, problems = discover(spec(layout=[{"image": "{centre}/**/{case}.nii.gz"}], labels={"encoding": "none"}),
                               tmp_path)
    assert len(cases) == 10 and problems == []


def test_a_second_label_file_of_a_case_is_a_duplicate_not_a_second_label(tmp_path: Path) -> None:
    write_tree(tmp_path, [("a/img/p01.nii.gz", "image", ()), ("a/seg/p01.nii.gz", "label", (1,)),
                          ("b/seg/p01.nii.gz", "label", (1,)),
                          ("x/seg/p09.nii.gz", "label", (1,)), ("y/z/seg/p09.nii.gz", "label", (1,))])
    cases, problems = discover(spec(layout=[{"image": "**/img/{case}.nii.gz", "label": "**/seg/{case}.nii.gz"}]),
                               tmp_path)
    assert [(c.case_id, c.labels) for c in cases] == [("Toy__p01", [("", "a/seg/p01.nii.gz")]),
                                                      ("Toy__p09", [("", "x/seg/p09.nii.gz")])]
    assert sorted((e.kind, Path(e.path).relative_to(tmp_path).as_posix()) for e in problems) == [
        ("duplicate_case", "b/seg/p01.nii.gz"), ("duplicate_case", "y/z/seg/p09.nii.gz")]


def test_folders_inside_the_kept_series_folder_are_not_duplicates(tmp_path: Path) -> None:
    write_tree(tmp_path, [("P1/s/x.dcm", "text", "x"), ("P1/s/t/y.dcm", "text", "y"), ("Q/P1/s/z.dcm", "text", "z")])
    cases, problems = discover(spec(layout=[{"image": "**/{case}/s/", "format": "dicom"}], patterns={"case": "P1"},
                                    labels={"encoding": "none"}), tmp_path)
    assert [c.image for c in cases] == ["P1/s"]
    assert [Path(e.path).relative_to(tmp_path).as_posix() for e in problems] == ["Q/P1/s"]


def test_an_index_entry_without_an_image_is_a_problem_and_the_rest_is_read(tmp_path: Path) -> None:
    write_tree(tmp_path, [("imagesTr/t_001.nii.gz", "image", ()), ("labelsTr/t_001.nii.gz", "label", (1,)),
                          ("imagesTs/t_009.nii.gz", "image", ())])
    training = [{"image": "./imagesTr/t_001.nii.gz", "label": "./labelsTr/t_001.nii.gz"},
                {"label": "./labelsTr/t_001.nii.gz"}, {"image": 7}]
    (tmp_path / "dataset.json").write_text(json.dumps({"training": training, "test": ["./imagesTs/t_009.nii.gz", {}]}))
    cases, problems = discover(spec(layout=[{"index": "dataset.json"}]), tmp_path)
    assert [(c.case_id, c.split) for c in cases] == [("Toy__t_001", "train"), ("Toy__t_009", "test")]
    assert [(e.kind, Path(e.path).name) for e in problems] == [("index_entry_invalid", "dataset.json")] * 3
    assert [e.detail.split(" (")[0] for e in problems] == ["entry 1 of 'training'", "entry 2 of 'training'",
                                                           "entry 1 of 'test'"]
    assert "training[1]" in (problems[0].remedy or "")


def test_case_ids_start_with_the_source_name(tmp_path: Path) -> None:
    write_tree(tmp_path, [("img/a.nii.gz", "image", ()), ("lab/a.nii.gz", "label", (1,)), ("lab/b.nii.gz", "label", (1,))])
    s = spec(layout=[{"image": "img/{case}.nii.gz", "label": "lab/{case}.nii.gz"}])
    assert [c.case_id for c in discover(s, tmp_path)[0]] == ["Toy__a", "Toy__b"]
    assert [c.case_id for c in discover(s, tmp_path, name="Toy_v2")[0]] == ["Toy_v2__a", "Toy_v2__b"]
    write_tree(tmp_path, [("dataset.json", "text", json.dumps({"training": [{"image": "img/a.nii.gz"}]}))])
    assert [c.case_id for c in discover(spec(layout=[{"index": "dataset.json"}]), tmp_path, name="v2")[0]] == ["v2__a"]


def test_a_linked_case_folder_inside_the_root_is_walked_and_links_back_do_not_loop(tmp_path: Path) -> None:
    """`linked_case -> store/batch1/abc` vanished without a word (links were listed, not walked);
    links pointing back up the tree, directly or through another link, must not loop."""
    import os

    write_tree(tmp_path, [("store/batch1/abc/image.nii.gz", "image", ()), ("real/image.nii.gz", "image", ())])
    os.symlink(tmp_path / "store" / "batch1" / "abc", tmp_path / "linked_case")
    os.symlink(tmp_path, tmp_path / "real" / "up")  # to the root
    os.symlink(tmp_path / "real", tmp_path / "store" / "back")  # real/up -> root -> store/back -> real ...
    cases, problems = discover(spec(layout=[{"image": "{case}/image.nii.gz"}], labels={"encoding": "none"}), tmp_path)
    assert sorted(c.case_id for c in cases) == ["Toy__linked_case", "Toy__real"] and problems == []


def test_a_link_out_of_the_root_is_refused_with_the_way_to_read_it(tmp_path: Path) -> None:
    """A case folder (or file) linked from outside the root is refused on purpose; the advice was only
    'copy the file into the source folder'. It now offers pointing `root:` at where the links lead,
    and a root that is itself such a link is read."""
    import os

    elsewhere, root = tmp_path / "elsewhere", tmp_path / "root"
    write_tree(elsewhere, [("abc/image.nii.gz", "image", ())])
    root.mkdir()
    os.symlink(elsewhere / "abc", root / "abc")  # a linked case folder
    layout = spec(layout=[{"image": "{case}/image.nii.gz"}], labels={"encoding": "none"})
    cases, problems = discover(layout, root)
    assert cases == [] and [e.kind for e in problems] == ["path_escape"]
    assert "point the source's `root:` in pipeline.yaml at the folder the link leads to" in (problems[0].remedy or "")
    os.symlink(elsewhere, tmp_path / "root_link")  # the advice taken: the root is a link to that folder
    cases, problems = discover(layout, tmp_path / "root_link")
    assert [c.case_id for c in cases] == ["Toy__abc"] and problems == []


def test_an_image_that_is_a_broken_link_stays_the_case_s_image(tmp_path: Path) -> None:
    """A looping or dangling image link was left out of the tree: its case passed for a label-only
    one, and the link's problem named no case. The link is the case's image now (reading it fails
    the case); a broken link no pattern takes is still a problem of the source."""
    import os

    write_tree(tmp_path, [(f"{c}/{f}", kind, ()) for c in ("a", "b", "c")
                          for f, kind in (("ct.nii.gz", "image"), ("seg.nii.gz", "label"))])
    for c in ("a", "b"):
        (tmp_path / c / "ct.nii.gz").unlink()
    os.symlink("ct.nii.gz", tmp_path / "a" / "ct.nii.gz")  # loops
    os.symlink(tmp_path / "nowhere.nii.gz", tmp_path / "b" / "ct.nii.gz")  # dangles
    os.symlink("gone.txt", tmp_path / "c" / "notes.txt")  # no pattern takes it
    cases, problems = discover(spec(layout=[{"image": "{case}/ct.nii.gz", "label": "{case}/seg.nii.gz"}]), tmp_path)
    assert [(c.case_id, c.image) for c in cases] == [("Toy__a", "a/ct.nii.gz"), ("Toy__b", "b/ct.nii.gz"),
                                                     ("Toy__c", "c/ct.nii.gz")]
    assert [(e.kind, Path(e.path or "").name) for e in problems] == [("file_not_found", "notes.txt")]


def test_a_label_pattern_that_cannot_tell_the_images_apart_gives_no_label(tmp_path: Path) -> None:
    """With no placeholder in common, every image took the one label file: pat2 carried pat1's
    liver. One image and one label file is fine (a sample folder)."""
    write_tree(tmp_path, [("pat1/ct.nii.gz", "image", ()), ("pat2/ct.nii.gz", "image", ()), ("seg.nii.gz", "label", (1,))])
    cases, problems = discover(spec(layout=[{"image": "{case}/ct.nii.gz", "label": "seg.nii.gz"}]), tmp_path)
    assert [c.case_id for c in cases] == ["Toy__pat1", "Toy__pat2"] and all(not c.labels for c in cases)
    assert [p.kind for p in problems] == ["label_ambiguous"] and "2 images" in problems[0].detail
    (tmp_path / "pat2/ct.nii.gz").unlink()
    cases, problems = discover(spec(layout=[{"image": "{case}/ct.nii.gz", "label": "seg.nii.gz"}]), tmp_path)
    assert [(c.case_id, c.labels) for c in cases] == [("Toy__pat1", [("", "seg.nii.gz")])] and problems == []


def _rel(root: Path, problems: list[Any], kind: str) -> list[str]:
    return sorted(Path(e.path).relative_to(root).as_posix() for e in problems if e.kind == kind)


def test_declared_sequences_keep_the_label_file_and_other_files_out_of_the_images(tmp_path: Path) -> None:
    # the README's BraTS layout: {sequence} would match the label file itself as sequence "seg"
    write_tree(tmp_path, [(f"{c}/{c}_{s}.nii.gz", "image", ()) for c in ("m1", "m2") for s in ("t1", "t2")]
               + [(f"{c}/{c}_seg.nii.gz", "label", (1,)) for c in ("m1", "m2")]
               + [("m1/m1_flair.nii.gz", "image", ())])
    layout = [{"image": "{case}/{case}_{sequence}.nii.gz", "label": "{case}/{case}_seg.nii.gz"}]
    cases, problems = discover(spec(layout=layout, modality="MR", sequences={"t1": "MR", "t2": "MR"}), tmp_path)
    assert [(c.case_id, c.image, c.labels) for c in cases] == [
        (f"Toy__{c}__{s}", f"{c}/{c}_{s}.nii.gz", [("", f"{c}/{c}_seg.nii.gz")]) for c in ("m1", "m2") for s in ("t1", "t2")]
    # the undeclared sequence is said (the label file is not: the label pattern claims it)
    assert _rel(tmp_path, problems, "sequence_undeclared") == ["m1/m1_flair.nii.gz"] and len(problems) == 1
    assert "flair" in problems[0].detail
    # without `sequences:` every value is a sequence, but a case's label file is still never an image
    cases, problems = discover(spec(layout=layout, modality="MR"), tmp_path)
    assert sorted({c.sequence for c in cases}) == ["flair", "t1", "t2"]
    assert all(c.image and not c.image.endswith("_seg.nii.gz") for c in cases)
    assert _rel(tmp_path, problems, "image_is_label") == ["m1/m1_seg.nii.gz", "m2/m2_seg.nii.gz"]


def test_two_entries_sharing_a_label_folder_give_each_case_its_image_and_label(tmp_path: Path) -> None:
    write_tree(tmp_path, [("c1/dicom/1.dcm", "text", "x"), ("c2/ct.nii.gz", "image", ()),
                          ("labels/c1.nii.gz", "label", (1,)), ("labels/c2.nii.gz", "label", (1,)),
                          ("labels/c3.nii.gz", "label", (1,))])
    layout = [{"image": "{case}/dicom/", "label": "labels/{case}.nii.gz"},
              {"image": "{case}/ct.nii.gz", "label": "labels/{case}.nii.gz"}]
    cases, problems = discover(spec(layout=layout), tmp_path)
    assert [(c.case_id, c.image, c.labels) for c in cases] == [
        ("Toy__c1", "c1/dicom", [("", "labels/c1.nii.gz")]), ("Toy__c2", "c2/ct.nii.gz", [("", "labels/c2.nii.gz")]),
        ("Toy__c3", None, [("", "labels/c3.nii.gz")])]  # a label no entry has an image for stays label-only
    assert problems == []


def test_a_structure_set_folder_beside_the_ct_series_is_not_taken_for_the_image(tmp_path: Path) -> None:
    # NSCLC-Radiomics: LUNG1-NNN/<study>/<series>/ holds the CT series and an RTSTRUCT (or SEG)
    # series folder; the RTSTRUCT folder here sorts first, so name order alone would take it
    # and the case would fail with dicom_no_pixel_data (before: a duplicate_case error per patient)
    study = "NSCLC-Radiomics/LUNG1-001/09-18-2008-StudyID-69331"
    write_rtstruct(tmp_path / study / "0.000000-AA-12345")
    write_tree(tmp_path, [(f"{study}/0.000000-NA-82046/", "image", ())])
    s = spec(layout=[{"image": "NSCLC-Radiomics/{case}/*/*/"}], labels={"encoding": "none"})
    cases, problems = discover(s, tmp_path)
    assert [(c.case_id, c.image) for c in cases] == [("Toy__LUNG1-001", f"{study}/0.000000-NA-82046")]
    assert [(e.kind, Path(e.path).name) for e in problems] == [("series_not_image", "0.000000-AA-12345")]
    assert "RTSTRUCT" in problems[0].detail and "What to do: nothing to do" in str(problems[0])


def test_a_patterns_regex_rejecting_every_file_is_said_to_be_the_cause(tmp_path: Path) -> None:
    """`patterns: {case: case_\\d{3}}` for files named brain1, brain2 was "no file under the root
    matches the layout": the glob matched them, and the user re-checked it in vain."""
    write_tree(tmp_path, [(f"data/{c}_{r}.nii.gz", r, ()) for c in ("brain1", "brain2") for r in ("image", "label")])
    layout = [{"image": "data/{case}_image.nii.gz", "label": "data/{case}_label.nii.gz"}]
    cases, problems = discover(spec(layout=layout, patterns={"case": r"case_\d{3}"}), tmp_path)
    assert cases == [] and [e.kind for e in problems] == ["layout_no_match"]
    said = problems[0].detail
    assert "the image pattern 'data/{case}_image.nii.gz' (layout[0]) matches 2 file(s), but the `patterns:` regex " \
           "for {case}, `case_\\d{3}`, rejects their {case} (e.g. 'brain1' of data/brain1_image.nii.gz)" in said, said
    assert "under `patterns:`" in (problems[0].remedy or "")
    # a glob that matches nothing is still told to check the patterns, not the regex
    _, problems = discover(spec(layout=[{"image": "imgs/{case}.nii.gz"}], patterns={"case": r"case_\d{3}"}), tmp_path)
    assert [e.kind for e in problems] == ["layout_no_match"] and "regex" not in problems[0].detail


def test_an_image_two_layout_entries_take_is_said_naming_the_file_and_both_cases(tmp_path: Path) -> None:
    """A second, looser entry (`data/{case}.nii.gz`, for a file named without `_image`) also matched
    `brain1_image.nii.gz`: two cases of one scan, which only label_missing / image_is_label hinted at."""
    write_tree(tmp_path, [("data/brain1_image.nii.gz", "image", ()), ("data/brain1_label.nii.gz", "label", (1,)),
                          ("data/prostate.nii.gz", "image", ()), ("data/prostate-label.nii.gz", "label", (1,))])
    layout = [{"image": "data/{case}_image.nii.gz", "label": "data/{case}_label.nii.gz"},
              {"image": "data/{case}.nii.gz", "label": "data/{case}-label.nii.gz"}]
    cases, problems = discover(spec(layout=layout), tmp_path)
    assert {c.case_id for c in cases} == {"Toy__brain1", "Toy__brain1_image", "Toy__prostate"}
    twice = [e for e in problems if e.kind == "image_in_two_cases"]
    assert len(twice) == 1 and Path(twice[0].path) == tmp_path / "data/brain1_image.nii.gz"
    assert "Toy__brain1 (layout[0], with a label)" in twice[0].detail  # numbered as layout_no_match's
    assert "Toy__brain1_image (layout[1], without a label)" in twice[0].detail
    # one entry giving a file several cases (the channels of a 4-D file) is the layout's intent
    cases, problems = discover(spec(layout=[{"image": "data/{case}.nii.gz", "channels": {0: "t1", 1: "t2"}}],
                                    labels={"encoding": "none"}), tmp_path)
    assert len(cases) == 8 and not [e for e in problems if e.kind == "image_in_two_cases"]


@pytest.mark.parametrize("other", ["ignore", "problem"])
def test_a_declared_structure_stem_no_case_has_is_said_with_the_close_file_stem(tmp_path: Path, other: str) -> None:
    """`kidney_lft:` for kidney_left.nii.gz: with `other_structures: ignore` the left kidney was left out of
    every case, and no problem said so at labels check, sources check or run."""
    files = [(f"s{i:04d}/{f}", kind, v) for i in (1, 2) for f, kind, v in
             (("ct.nii.gz", "image", ()), ("segmentations/liver.nii.gz", "label", (1,)),
              ("segmentations/kidney_left.nii.gz", "label", (1,)), ("segmentations/spleen.nii.gz", "label", (1,)))]
    write_tree(tmp_path, files)
    layout = [{"image": "{case}/ct.nii.gz", "label": "{case}/segmentations/{structure}.nii.gz"}]
    labels = {"encoding": "per_structure", "other_structures": other,
              "structures": {"liver": "liver", "kidney_lft": "left kidney", "pancreas": "pancreas"}}
    cases, problems = discover(spec(layout=layout, labels=labels), tmp_path)
    assert len(cases) == 2
    absent = {e.detail.split("'")[1]: e for e in problems if e.kind == "declared_label_absent"}
    assert sorted(absent) == ["kidney_lft", "pancreas"]
    assert "none of the 2 case(s)" in absent["kidney_lft"].detail and "'kidney_left'" in absent["kidney_lft"].detail
    assert "rename the key 'kidney_lft' to 'kidney_left'" in (absent["kidney_lft"].remedy or "")
    assert "the files hold" not in absent["pancreas"].detail  # nothing close: no guess
    # spelt right, nothing is said
    labels["structures"] = {"liver": "liver", "kidney_left": "left kidney"}
    _, problems = discover(spec(layout=layout, labels=labels), tmp_path)
    assert not [e for e in problems if e.kind == "declared_label_absent"]


def _men(root: Path) -> None:
    """BraTS-MEN-Train with BraTS-MEN-Train-Fix, which holds a corrected copy of one of its cases."""
    files = []
    for folder, cases in (("BraTS-MEN-Train", ("BraTS-MEN-00004-000", "BraTS-MEN-00008-000")),
                          ("BraTS-MEN-Train-Fix", ("BraTS-MEN-00004-000",))):
        for c in cases:
            files += [(f"{folder}/{c}/{c}-{s}.nii.gz", "image", ()) for s in ("t1n", "t2f")]
            files.append((f"{folder}/{c}/{c}-seg.nii.gz", "label", (1,)))
    write_tree(root, files)


_MEN = {"modality": "MR", "sequences": {"t1n": "MR", "t2f": "MR"}}


@pytest.mark.parametrize("fix_first", [True, False])
def test_an_overrides_entry_replaces_the_same_cases_of_another_entry(tmp_path: Path, fix_first: bool) -> None:
    """BraTS-MEN-Train-Fix replaces some BraTS-MEN-Train cases: one `**/` entry kept the uncorrected
    original, and two entries gave duplicate_case errors whichever came first."""
    _men(tmp_path)
    train = {"image": "BraTS-MEN-Train/{case}/{case}-{sequence}.nii.gz", "label": "BraTS-MEN-Train/{case}/{case}-seg.nii.gz"}
    fix = {"image": "BraTS-MEN-Train-Fix/{case}/{case}-{sequence}.nii.gz",
           "label": "BraTS-MEN-Train-Fix/{case}/{case}-seg.nii.gz", "overrides": True}
    cases, problems = discover(spec(layout=[fix, train] if fix_first else [train, fix], **_MEN), tmp_path)
    assert {c.case_id: (c.image, c.labels[0][1]) for c in cases} == {
        f"Toy__{c}__{s}": (f"{f}/{c}/{c}-{s}.nii.gz", f"{f}/{c}/{c}-seg.nii.gz")
        for c, f in (("BraTS-MEN-00004-000", "BraTS-MEN-Train-Fix"), ("BraTS-MEN-00008-000", "BraTS-MEN-Train"))
        for s in ("t1n", "t2f")}
    assert _rel(tmp_path, problems, "case_overridden") == [
        f"BraTS-MEN-Train/BraTS-MEN-00004-000/BraTS-MEN-00004-000-{x}.nii.gz" for x in ("seg", "t1n", "t2f")]
    assert len(problems) == 3  # no duplicate_case
    said = next(e for e in problems if e.path.endswith("-t1n.nii.gz"))
    assert said.detail == (
        "case Toy__BraTS-MEN-00004-000__t1n: BraTS-MEN-Train-Fix/BraTS-MEN-00004-000/BraTS-MEN-00004-000-t1n.nii.gz "
        f"(layout[{0 if fix_first else 1}], `overrides: true`) replaces this file of layout[{1 if fix_first else 0}], "
        "which is not ingested")
    # without `overrides`, the same layout gives duplicate_case errors, whose remedy names it
    del fix["overrides"]
    _, problems = discover(spec(layout=[fix, train], **_MEN), tmp_path)
    assert {e.kind for e in problems} == {"duplicate_case"}
    _, problems = discover(spec(layout=[{"image": "**/{case}/{case}-{sequence}.nii.gz",
                                         "label": "**/{case}/{case}-seg.nii.gz"}], **_MEN), tmp_path)
    assert problems and all(e.kind == "duplicate_case" and "overrides: true" in (e.remedy or "") for e in problems)


def test_overrides_is_a_layout_key_true_or_false_and_absent_from_the_spec_when_unset() -> None:
    s, issues = parse_spec({"name": "Toy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
                            "citation": "@misc{toy, title={toy}}", "labels": {"values": {1: "liver"}},
                            "layout": [{"image": "{case}.nii.gz", "overrides": "yes"}]}, "Toy.yaml")
    assert s is None and [(i.loc, i.kind) for i in issues] == [("Toy.yaml:layout[0].overrides", "type")]
    assert "true or false" in issues[0].message
    # a spec without it keeps the dict (and so the digest of stage freshness) it had
    assert "overrides" not in spec(layout=[{"image": "{case}.nii.gz"}]).to_dict()["layout"][0]
    assert spec(layout=[{"image": "{case}.nii.gz", "overrides": True}]).to_dict()["layout"][0]["overrides"] is True


def test_exclude_takes_a_path_from_the_root_and_says_one_that_matches_nothing(tmp_path: Path) -> None:
    """`exclude: [BraTS-MEN-Train/BraTS-MEN-00004-000]` matched file names only, so it was silently
    ignored."""
    _men(tmp_path)
    layout = [{"image": "**/{case}/{case}-{sequence}.nii.gz", "label": "**/{case}/{case}-seg.nii.gz"}]
    cases, problems = discover(spec(layout=layout, exclude=["BraTS-MEN-Train/BraTS-MEN-00004-000"], **_MEN), tmp_path)
    assert problems == []
    assert {c.image.split("/")[0] for c in cases if "00004" in c.case_id} == {"BraTS-MEN-Train-Fix"} and len(cases) == 4
    # a glob in a path, a trailing '/', a file
    for ex in (["BraTS-MEN-Train/*-00004-000/"], ["BraTS-MEN-Train/BraTS-MEN-00004-000/*"]):
        cases, problems = discover(spec(layout=layout, exclude=ex, **_MEN), tmp_path)
        assert problems == [] and len(cases) == 4, ex
    # a path written from the folder above the root leaves nothing out: said, not silent
    cases, problems = discover(spec(layout=layout, exclude=["men/BraTS-MEN-Train/BraTS-MEN-00004-000"], **_MEN),
                               tmp_path)
    said = [e for e in problems if e.kind == "exclude_no_match"]
    assert len(said) == 1 and "'men/BraTS-MEN-Train/BraTS-MEN-00004-000' matches no file or folder" in said[0].detail
    assert "from the source root" in (said[0].remedy or "")
    # a path out of the root is refused
    for bad in ("/data/BraTS-MEN-Train", "../BraTS-MEN-Train/x"):
        s, issues = parse_spec({"name": "Toy", "version": "1", "modality": "MR", "region": "brain",
                                "licence": "CC-BY-4.0", "citation": "@misc{toy, title={toy}}",
                                "labels": {"values": {1: "liver"}}, "layout": layout, "exclude": [bad]}, "Toy.yaml")
        assert s is None and [(i.loc, i.kind) for i in issues] == [("Toy.yaml:exclude", "path_escape")], bad


def test_image_is_label_says_how_to_narrow_the_placeholder_that_took_the_label(tmp_path: Path) -> None:
    """PROMISE12's `{case}.mhd` over `Case00_segmentation.mhd`: the remedy spoke of sequences,
    which it has none of."""
    write_tree(tmp_path, [(f"Part1/Case0{i}{x}.mhd", r, ()) for i in (0, 1)
                          for x, r in (("", "image"), ("_segmentation", "label"))])
    s = spec(layout=[{"image": "Part*/{case}.mhd", "label": "Part*/{case}_segmentation.mhd"}])
    cases, problems = discover(s, tmp_path)
    assert [c.case_id for c in cases] == ["Toy__Case00", "Toy__Case01"]
    assert _rel(tmp_path, problems, "image_is_label") == ["Part1/Case00_segmentation.mhd", "Part1/Case01_segmentation.mhd"]
    remedy = problems[0].remedy or ""
    assert "its {case} took 'Case00_segmentation' from this file" in remedy
    assert "`patterns: {case: 'Case\\d{2}'}` (from 'Case00')" in remedy and "sequence" not in remedy
    # with the regex, nothing to say
    assert discover(spec(layout=s.to_dict()["layout"], patterns={"case": r"Case\d{2}"}), tmp_path)[1] == []
    # a {sequence} that took the label's word is told to declare the sequences
    write_tree(tmp_path / "b", [(f"m1/m1_{q}.nii.gz", "image", ()) for q in ("t1", "t2")] + [("m1/m1_seg.nii.gz", "label", (1,))])
    _, problems = discover(spec(layout=[{"image": "{case}/{case}_{sequence}.nii.gz", "label": "{case}/{case}_seg.nii.gz"}],
                                modality="MR"), tmp_path / "b")
    assert [e.kind for e in problems] == ["image_is_label"]
    assert "its {sequence} took 'seg' from this file; declare the sequences" in (problems[0].remedy or "")
