"""Registry format extensions: value bands, declared fixes, structure filtering, split files and
``{split}`` placeholders, fixed-sequence entries, slice folders and MAT masks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curator.errors import GeometryError
from curator.io.formats import read_volume
from curator.io.volume import Volume
from curator.registry.fixes import apply_array_fixes, apply_label_fixes, validate_fixes
from curator.registry.layout import discover
from curator.registry.spec import parse_spec
from curator.testing.native import GEOMETRY, label_array, save_mat, save_slices, write_tree


def spec(**kw: Any) -> tuple[Any, list[Any]]:
    d = {"name": "Toy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
         "citation": "@misc{toy, title={toy}}", "layout": [{"image": "img/{case}.nii.gz", "label": "lab/{case}.nii.gz"}],
         "labels": {"values": {1: "liver"}}, **kw}
    return parse_spec(d, "Toy.yaml")


def test_value_bands_expand_and_are_checked() -> None:
    s, issues = spec(labels={"values": {"55-57": "liver", 3: "spleen"}, "ignore": ["250-251"]})
    assert issues == [] and s.labels.values == {55: ("liver",), 56: ("liver",), 57: ("liver",), 3: ("spleen",)}
    assert s.labels.ignore == (250, 251) and {0, 3, 55, 250} <= s.labels.declared_values()
    _, issues = spec(labels={"values": {"70-55": "liver", "5": "liver", 5: "spleen", "x": "lung"}})
    assert sorted(i.kind for i in issues) == ["duplicate", "value", "value"]


def test_a_band_wider_than_a_label_maps_codes_and_an_empty_term_list_are_refused() -> None:
    """A band to 2**32 ("any non-zero") expanded to one entry per value and took the machine's
    memory; `4: []` passed the check and its voxels were dropped as unmapped at harmonize."""
    _, issues = spec(labels={"values": {1: "spleen", "300000-500000": "liver"}})
    assert [i.kind for i in issues] == ["value"] and "65,536" in issues[0].message
    _, issues = spec(labels={"values": {1: "liver", 4: []}})
    assert [(i.loc, i.kind) for i in issues] == [("Toy.yaml:labels.values.4", "value")]
    assert "no term" in issues[0].message and "under `ignore`" in issues[0].message
    _, issues = spec(labels={"encoding": "per_structure", "structures": {"liver": [], "spleen": "spleen"}},
                     layout=[{"image": "img/{case}.nii.gz", "label": "lab/{case}/{structure}.nii.gz"}])
    assert [i.loc for i in issues] == ["Toy.yaml:labels.structures.liver"]
    # `ignore` takes raw values only: a structure file is left out with `other_structures: ignore`
    assert "other_structures: ignore" in issues[0].message and "under `ignore`" not in issues[0].message


def test_a_key_given_twice_in_a_dataset_file_is_an_error_not_the_last_one(tmp_path: Path) -> None:
    """YAML kept the last of two equal keys: `{2: left kidney, 2: spleen}` (a typo for 4: spleen)
    mapped every left-kidney voxel to spleen, and `curator labels check` said 0 errors."""
    from curator.errors import RegistryError
    from curator.registry.spec import load_dataset_file

    f = tmp_path / "Toy.yaml"
    f.write_text("name: Toy\nversion: '1'\nmodality: CT\nregion: abdomen\nlicence: CC-BY-4.0\n"
                 "citation: '@misc{toy, title={toy}}'\nlayout:\n  - {image: 'img/{case}.nii.gz', label: "
                 "'lab/{case}.nii.gz'}\nlabels:\n  values: {1: liver, 2: left kidney, 3: right kidney, 2: spleen}\n")
    with pytest.raises(RegistryError) as e:
        load_dataset_file(f)
    assert "found key 2 a second time" in str(e.value)


def test_a_pattern_for_a_placeholder_no_layout_has_is_refused() -> None:
    """`patterns: {cse: ...}` was ignored: {case} stayed unconstrained and ingest took every file
    (6 cases where 3 were meant), with `curator labels check` reporting nothing."""
    _, issues = spec(patterns={"cse": r"s\d{4}"})
    assert [(i.loc, i.kind) for i in issues] == [("Toy.yaml:patterns.cse", "unknown_key")]
    assert "did you mean 'case'?" in issues[0].message
    s, issues = spec(patterns={"case": r"s\d{4}"})
    assert issues == [] and s.patterns == {"case": r"s\d{4}"}


def test_contradictory_specs_are_refused_before_they_lose_labels() -> None:
    """Each passed `curator labels check` and then ran: a typo'd {cas} gave every image the first
    label file; per_structure without {structure} dropped every label; a patient_id naming a field
    nothing gives made one patient per case; an ignored value that is also mapped, and structures
    under a label_map, were silently one reading of two."""
    _, issues = spec(layout=[{"image": "{cas}/series/", "label": "{case}/seg.nrrd"}])
    assert [(i.loc, i.kind) for i in issues] == [("Toy.yaml:layout[0].image", "missing")]
    assert "did you mean {case} for {cas}?" in issues[0].message
    _, issues = spec(labels={"encoding": "per_structure", "structures": {"liver": "liver"}})
    assert [(i.loc, i.kind) for i in issues] == [("Toy.yaml:layout[0].label", "missing")]
    _, issues = spec(patient_id="{subject}")
    assert [(i.loc, i.kind) for i in issues] == [("Toy.yaml:patient_id", "value")]
    s, issues = spec(patient_id="P{subject}", patterns={"case": r"s(?P<subject>\d{3})_\d"})
    assert issues == [] and s.patient_id == "P{subject}"  # a named group of `patterns` gives the field
    _, issues = spec(labels={"values": {1: "liver", 2: "spleen"}, "ignore": [2]})
    assert [(i.loc, i.kind) for i in issues] == [("Toy.yaml:labels.ignore", "value")]
    _, issues = spec(labels={"values": {1: "liver"}, "structures": {"liver": "liver"}})
    assert [(i.loc, i.kind) for i in issues] == [("Toy.yaml:labels.structures", "value")]


def test_per_structure_settings_under_another_encoding_are_refused() -> None:
    """`other_structures: ignore` under a label_map passed `sources check` and `run` and did nothing
    (harmonize then warned of every unmapped value): a setting of per_structure only, said so."""
    _, issues = spec(labels={"values": {1: "liver"}, "other_structures": "ignore"})
    assert [(i.loc, i.kind) for i in issues] == [("Toy.yaml:labels.other_structures", "value")]
    assert "is for `encoding: per_structure`, not label_map" in issues[0].message
    assert "`ignore: [...]`" in issues[0].message
    _, issues = spec(labels={"values": {1: "liver"}, "any_nonzero": True})
    assert [(i.loc, i.kind) for i in issues] == [("Toy.yaml:labels.any_nonzero", "value")]
    _, issues = spec(labels={"encoding": "none", "other_structures": "ignore"}, layout=[{"image": "img/{case}.nii.gz"}])
    assert [(i.loc, i.kind) for i in issues] == [("Toy.yaml:labels.other_structures", "value")]
    # the defaults set nothing (a spec's to_dict writes them for every encoding, and reads back)
    s, issues = spec(labels={"values": {1: "liver"}, "other_structures": "problem", "any_nonzero": False})
    assert issues == [] and spec(labels=s.to_dict()["labels"])[1] == []
    _, issues = spec(labels={"encoding": "per_structure", "structures": {"liver": "liver"}, "other_structures": "ignore",
                             "any_nonzero": True}, layout=[{"image": "img/{case}.nii.gz", "label": "lab/{case}/{structure}.nii.gz"}])
    assert issues == []


def test_fixes_are_validated() -> None:
    assert validate_fixes({"label_flip": {"axes": [0, 2], "reason": "r"}}) == []
    bad = validate_fixes({"label_spin": {}, "label_rot90": {"k": 1, "axes": [0]}, "intensity_offset": {"value": "x"},
                          "label_flip": {"axes": [3], "when": "("}, "label_geometry": {"from": "label"}})
    kinds = sorted(k for _, k, _ in bad)
    assert kinds == ["regex", "type", "unknown_key", "value", "value", "value"]
    _, issues = spec(fixes={"label_flip": {}})
    assert [i.kind for i in issues] == ["missing"]
    # documented but never applied: a dataset declaring it would have been read unfixed, silently
    assert [(loc, k) for loc, k, _ in validate_fixes({"image_geometry": {"from": "label"}})] == [
        ("fixes.image_geometry", "unknown_key")]


def test_array_fixes_flip_rotate_and_offset_without_wrapping() -> None:
    a = np.arange(8, dtype=np.uint16).reshape(2, 2, 2)
    assert np.array_equal(apply_array_fixes(a, {"label_flip": {"axes": [2]}}, "label", "x"), a[:, :, ::-1])
    rot = apply_array_fixes(a, {"label_rot90": {"k": -1, "axes": [0, 1]}}, "label", "x")
    assert np.array_equal(rot, np.rot90(a, -1, (0, 1)))
    off = apply_array_fixes(a, {"intensity_offset": {"value": -1000, "when": "^KiTS/"}}, "image", "KiTS/K1.nrrd")
    assert off.min() == -1000 and off.dtype == np.int32
    same = apply_array_fixes(a, {"intensity_offset": {"value": -1000, "when": "^KiTS/"}}, "image", "Dongyang/D1.nrrd")
    assert same is a  # `when` does not match: untouched


def test_label_geometry_from_image() -> None:
    from curator.io.volume import Geometry

    lab = Volume(label_array((1,)), Geometry.from_affine(GEOMETRY.shape, np.eye(4)))
    fixed = apply_label_fixes(lab, {"label_geometry": {"from": "image"}}, "x.mat", GEOMETRY)
    assert fixed.geometry == GEOMETRY and np.array_equal(fixed.array, lab.array)
    other = Geometry.from_affine((8, 8, 5), np.eye(4))
    with pytest.raises(GeometryError):
        apply_label_fixes(lab, {"label_geometry": {"from": "image"}}, "x.mat", other)


def test_other_structures_ignore_restricts_the_structure_placeholder(tmp_path: Path) -> None:
    files = [("s1/ct.nii.gz", "image", ()), ("s1/seg/liver.nii.gz", "label", (1,)), ("s1/seg/face.nii.gz", "label", (1,))]
    write_tree(tmp_path, files)
    lay = [{"image": "{case}/ct.nii.gz", "label": "{case}/seg/{structure}.nii.gz"}]
    for other, keys in (("ignore", ["liver"]), ("problem", ["face", "liver"])):
        s, issues = spec(layout=lay, labels={"encoding": "per_structure", "structures": {"liver": "liver"},
                                             "other_structures": other})
        cases, probs = discover(s, tmp_path)
        assert issues == [] and probs == [] and [k for k, _ in cases[0].labels] == keys


def test_split_placeholder_split_file_and_fixed_sequences(tmp_path: Path) -> None:
    write_tree(tmp_path, [("dataset-01training/a/ct.nii.gz", "image", ()), ("dataset-03test/b/ct.nii.gz", "image", ()),
                          ("P1/data.nii.gz", "image", ()), ("P2/data.nii.gz", "image", ()),
                          ("splits.json", "text", json.dumps({"training": ["P1"], "testing": ["P2"]})),
                          ("m/c1/in/x.nii.gz", "image", ()), ("m/c1/out/x.nii.gz", "image", ())])
    s, _ = spec(layout=[{"image": "dataset-0{n}{split}/{case}/ct.nii.gz"}], patterns={"n": r"\d", "split": "training|test"})
    assert {c.source_case: c.split for c in discover(s, tmp_path)[0]} == {"a": "train", "b": "test"}
    s, _ = spec(layout=[{"image": "{case}/data.nii.gz"}], patterns={"case": r"P\d"},
                official_split={"summary": "file", "file": "splits.json"})
    assert {c.source_case: c.split for c in discover(s, tmp_path)[0]} == {"P1": "train", "P2": "test"}
    s, _ = spec(layout=[{"image": "m/{case}/in/x.nii.gz", "sequence": "in"}, {"image": "m/{case}/out/x.nii.gz", "sequence": "out"}],
                sequences={"in": "MR", "out": "MR"})
    cases, probs = discover(s, tmp_path)
    assert probs == [] and [(c.case_id, c.sequence, c.modality) for c in cases] == [("Toy__c1__in", "in", "MR"),
                                                                                   ("Toy__c1__out", "out", "MR")]


def test_slice_folders_and_mat_masks_read_as_volumes(tmp_path: Path) -> None:
    lab = label_array((63, 126, 252), shape=(8, 6, 12))  # 12 slices: "10" sorts before "2" as text
    save_slices(tmp_path / "Ground", lab, stem="liver_GT")
    for k in range(lab.shape[2]):  # natural order: liver_GT_2 before liver_GT_10
        (tmp_path / "Ground" / f"liver_GT_{k:03d}.png").rename(tmp_path / "Ground" / f"liver_GT_{k}.png")
    vol = read_volume(tmp_path / "Ground", role="label")
    assert np.array_equal(vol.array, lab) and vol.meta["no_geometry"]
    save_mat(tmp_path / "PAT001.mat", lab.astype(np.uint8))
    vol = read_volume(tmp_path / "PAT001.mat", role="label")
    assert np.array_equal(vol.array, lab) and vol.meta["variable"] == "Mask"


@pytest.mark.parametrize("head_first", [True, False])
def test_png_slices_follow_the_dicom_files_they_annotate(tmp_path: Path, head_first: bool) -> None:
    """CHAOS: slice image i annotates the series' i-th DICOM file by name. When the file names
    run head to feet, the series (stacked by position, feet first) and the PNG stack (by name)
    are reversed against each other: ``slices: image_file_names`` puts each slice image on the
    slice of its own file, whichever way the names run. Preprocess reads labels the same way."""
    from curator.io.volume import Geometry
    from curator.preprocess.stage import _label
    from curator.testing.layouts import write_dicom_series

    n = 7
    img = np.zeros((10, 8, n), np.float32)
    for k in range(n):
        img[:, :, k] = 100.0 * k  # file k (IM000{k+1}.dcm) holds 100·k ...
    z = -4.0 if head_first else 4.0  # file 1 the most superior slice (head first), or the most inferior
    g = Geometry.from_affine(img.shape, np.array([[-1.5, 0, 0, 0], [0, -1.5, 0, 0], [0, 0, z, 50.0], [0, 0, 0, 1]]))
    write_dicom_series(tmp_path / "DICOM_anon", img, g)
    lab = np.zeros(img.shape, np.uint8)
    for k in range(n):
        lab[:, :, k] = 10 + k  # ... and slice image k annotates it with 10 + k
    save_slices(tmp_path / "Ground", lab, stem="liver_GT")
    image = read_volume(tmp_path / "DICOM_anon", role="image")
    expect = (np.rint(image.array / 100.0) + 10).astype(np.uint8)  # each slice labelled with its own file's number
    fixes = {"label_geometry": {"from": "image", "slices": "image_file_names"}}
    got = apply_label_fixes(read_volume(tmp_path / "Ground", role="label"), fixes, "Ground", image.geometry,
                            tmp_path / "DICOM_anon")
    assert np.array_equal(got.array, expect)
    p = {"fixes": fixes, "image_path": "DICOM_anon"}
    assert np.array_equal(_label(tmp_path / "Ground", "Ground", p, image.geometry, tmp_path).array, expect)
    plain = apply_label_fixes(read_volume(tmp_path / "Ground", role="label"), {"label_geometry": {"from": "image"}},
                              "Ground", image.geometry, tmp_path / "DICOM_anon")
    assert np.array_equal(plain.array, expect) == (not head_first)  # name order alone is right only feet first
    assert validate_fixes({"label_geometry": {"from": "image", "slices": "by_name"}})[0][0] == "fixes.label_geometry.slices"
    short = tmp_path / "Short"
    save_slices(short, lab[:, :, :-1], stem="liver_GT")
    with pytest.raises(GeometryError, match="6 slice images, the image series 7 files"):
        apply_label_fixes(read_volume(short, role="label"), fixes, "Short", image.geometry, tmp_path / "DICOM_anon")


def test_the_citation_key_must_be_the_bibtex_entrys_key() -> None:
    """The card cites citation_key above the BibTeX it prints: KiTS23's card cited "KiTS23" over
    an entry keyed heller2023kits21."""
    from curator.registry.check import _dataset_checks

    def problems(**kw: Any) -> list[str]:
        s, issues = spec(**kw)
        assert not issues
        return [p.message for p in _dataset_checks(s, (), set()) if p.kind == "citation"]

    assert problems(citation_key="toy") == []
    assert "citation_key 'Toy2024' is not the key of a BibTeX entry" in problems(citation_key="Toy2024")[0]
    two = "@misc{toy, title={toy}}\n@article{more, title={more}}"
    assert problems(citation=two, citation_key="toy,more") == []
    assert len(problems(citation=two, citation_key="toy,other")) == 1


def test_a_share_alike_licence_is_named_and_is_share_alike() -> None:
    """licence_terms.share_alike names the licence that imposes share-alike (the card tells which
    share-alike sources make one adapted work from it)."""
    from curator.registry.check import _dataset_checks

    def problems(**terms: Any) -> list[tuple[str, str]]:
        s, issues = spec(licence="MIT", licence_terms=terms)
        assert not issues
        return [(p.severity, p.message) for p in _dataset_checks(s, (), set()) if p.kind == "licence"]

    assert problems(derivatives="share-alike", share_alike="CC-BY-SA-4.0") == []
    assert problems(share_alike="CC-BY-SA-4.0") == []
    assert problems(derivatives="yes") == []
    [(sev, msg)] = problems(derivatives="share-alike")
    assert sev == "warning" and "share_alike" in msg
    [(sev, msg)] = problems(derivatives="share-alike", share_alike="CC-BY-4.0")
    assert sev == "error" and "not a share-alike licence" in msg
    [(sev, msg)] = problems(derivatives="no", share_alike="CC-BY-SA-4.0")
    assert sev == "error" and "derivatives" in msg


def _paths(d: Any, path: tuple[Any, ...] = ()) -> Any:
    items = d.items() if isinstance(d, dict) else enumerate(d[:1]) if isinstance(d, list) else ()
    for k, v in items:
        yield (*path, k)
        yield from _paths(v, (*path, k))


@pytest.mark.parametrize("name", ["KiTS23", "MSD_Prostate", "BrainPTM", "DAP_Atlas"])
def test_a_value_of_the_wrong_type_is_an_issue_not_a_crash(name: str) -> None:
    """Every key of a built-in dataset file, set in turn to a value of another type (`layout: 3`,
    `patterns: [..]`, `labels.values: 3`, `channels: 3`), gives issues naming it, never a TypeError."""
    import copy

    from curator.registry import builtin_dir
    from curator.registry.spec import yaml_load

    d0 = yaml_load((builtin_dir() / f"{name}.yaml").read_text())
    for path in _paths(d0):
        for wrong in (3, "x", [1, 2], {"a": 1}):
            d = copy.deepcopy(d0)
            node = d
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = wrong
            parse_spec(d, f"{name}.yaml")  # raises on a crash


def test_wrong_types_are_named() -> None:
    s, issues = spec(layout=3)
    assert s is None and [(i.loc, i.kind) for i in issues] == [("Toy.yaml:layout", "type")]
    s, issues = spec(patterns=["case"], official_split="tests.json")
    assert {(i.loc, i.kind) for i in issues} == {("Toy.yaml:patterns", "type"), ("Toy.yaml:official_split", "type")}
    s, issues = spec(layout=[{"image": "img/{case}.nii.gz", "channels": 3}])
    assert ("Toy.yaml:layout[0].channels", "type") in {(i.loc, i.kind) for i in issues}
    s, issues = spec(labels={"values": [1, 2]})
    assert ("Toy.yaml:labels.values", "type") in {(i.loc, i.kind) for i in issues}
    # a single string or value where a list is expected is a list of one
    s, issues = spec(notes="scans 12 and 14 are flipped", exclude="*.tmp", labels={"values": {1: "liver"}, "ignore": 255})
    assert s is not None and not issues
    assert s.notes == ("scans 12 and 14 are flipped",) and s.exclude == ("*.tmp",) and s.labels.ignore == (255,)
