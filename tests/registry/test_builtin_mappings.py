"""Raw label values of built-in datasets as the datasets' own metadata states them, where SAT-DS
(the reference most mappings were checked against) has them wrong: a swapped pair maps every
label to the wrong structure without an error anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from curator.registry import load_registry

# dataset -> {raw value: the dataset's own name for it, as our term}; the source of each is in
# the dataset YAML's notes
STATED = {
    # Task05_Prostate/dataset.json: "labels": {"0": "background", "1": "PZ", "2": "TZ"}
    "MSD_Prostate": {1: "peripheral zone of prostate", 2: "transition zone of prostate"},
    # VerSe README: 26 sacrum, 27 coccyx, 28 the additional T13 (SAT-DS reads 26 as T13)
    "VerSe": {26: "sacrum", 27: "coccyx", 28: "T13 vertebra"},
    # WMH challenge: 1 white matter hyperintensities, 2 other pathology
    "WMH_Segmentation_Challenge": {1: "white matter hyperintensities", 2: "other pathology"},
    # DAP Atlas, Data/label_name.csv: 1 'Left to annotate', 2 muscles, 11 rectum, 12 gallbladder, ...,
    # 144 left subclavian artery (SAT-DS numbers every class one lower and skips rectum)
    "DAP_Atlas": {2: "skeletal muscle", 11: "rectum", 12: "gallbladder", 144: "left subclavian artery"},
    # ACDC: 1 right ventricle cavity, 2 myocardium, 3 left ventricle cavity
    "ACDC": {1: "right ventricle", 2: "myocardium", 3: "left ventricle"},
}


@pytest.mark.parametrize("dataset", sorted(STATED))
def test_builtin_values_follow_the_datasets_own_metadata(dataset: str) -> None:
    values = load_registry().get(dataset).labels.values
    for raw, name in STATED[dataset].items():
        assert values[raw] == (name,), (dataset, raw, values[raw])


def test_brain_atlas_sides_follow_the_hammers_label_list() -> None:
    """The Hammers n30r95 label list gives every paired region an odd value on the right and an
    even one on the left (1 hippocampus R, 2 hippocampus L, ..., 20 insula posterior long gyrus L,
    21 R, 45 lateral ventricle excluding temporal horn R, 46 L, ..., 95 insula anterior long gyrus
    R). SAT-DS's processor.py names every pair the other way round (1 'left hippocampus'), and the
    registry had copied it: all 92 lateral regions of Brain_Atlas carried the other hemisphere's
    name."""
    from curator.taxonomy import load_taxonomy

    tax = load_taxonomy()
    values = load_registry().get("Brain_Atlas").labels.values
    sided = {}
    for raw, names in values.items():
        (name,) = names
        term = tax.resolve(name)
        assert term is not None, name
        if term.laterality is not None:
            sided[raw] = term.laterality
    assert len(sided) == 92 and set(values) - set(sided) == {19, 44, 49}  # brainstem, corpus callosum, 3rd ventricle
    assert {raw: side for raw, side in sided.items() if side != ("right" if raw % 2 else "left")} == {}
    assert values[1] == ("right hippocampus",) and values[20] == ("left insula posterior long gyrus",)


def test_dap_atlas_ignores_its_left_to_annotate_value() -> None:
    """DAP's value 1 ('Left to annotate') is what the pipeline did not label: not a structure."""
    labels = load_registry().get("DAP_Atlas").labels
    assert 1 in labels.ignore and 1 not in labels.values


def test_totalsegmentator_v2_paints_its_cut_out_parts_back_into_their_wholes() -> None:
    """v2's structure files come from one label map (class_map 25 sacrum, 26 vertebrae_S1), so its
    sacrum lacks S1 and its heart the left atrial appendage; in v1, VerSe and the taxonomy they
    are parts of them. A v2 'sacrum' missing S1 beside VerSe's whole one taught two meanings."""
    from curator.taxonomy import load_taxonomy

    tax = load_taxonomy()
    structures = load_registry().get("TotalSegmentator_v2").labels.structures
    for key, whole in (("vertebrae_S1", "sacrum"), ("atrial_appendage_left", "heart")):
        ids = [tax.resolve(n).id for n in structures[key]]  # type: ignore[union-attr]
        assert whole in ids and whole in tax.ancestors(ids[0], "part_of"), (key, ids)


def test_a_fixed_copy_of_a_builtin_yaml_replaces_it_with_a_note(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The docs tell a user to add `fixes:` to the dataset YAML; for a built-in that is a copy named
    like it. A run used the copy, but `curator labels check --registry copy.yaml` called it a
    duplicate error, so the check could never pass."""
    import yaml

    from curator.registry.check import check_label_system

    d = load_registry().get("KiTS23").to_dict()
    d["fixes"] = {"intensity_offset": {"value": -1000}}
    (tmp_path / "kits_fixed.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    problems = check_label_system([tmp_path / "kits_fixed.yaml"])
    assert not [p for p in problems if p.severity == "error"], problems
    (note,) = [p for p in problems if p.kind == "overrides_builtin"]
    assert note.severity == "info" and "KiTS23" in note.message
    assert load_registry([tmp_path / "kits_fixed.yaml"]).get("KiTS23").fixes == {"intensity_offset": {"value": -1000}}


def _toy_dataset(region: str, values: dict[int, str]) -> dict[str, object]:
    return {"name": "RegionToy", "version": "1", "title": "toy", "modality": "MR", "region": region,
            "licence": "CC-BY-4.0", "citation_key": "toy", "citation": "@misc{toy, title={toy}}",
            "layout": [{"image": "{case}/img.nii.gz", "label": "{case}/seg.nii.gz"}],
            "labels": {"values": values}}


def test_a_name_read_in_another_organ_system_is_warned_about(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A brain MR's `Ventricle_L` resolved to the heart's left ventricle, with 0 problems; a label
    name resolving to a term of a region far from the dataset's is now a `region_far` warning —
    and no built-in dataset gets one (an abdominal CT's aorta, a head-and-neck scan's brainstem,
    a pelvic scan's sacrum are near regions)."""
    import yaml

    from curator.registry.check import check_label_system

    brain = _toy_dataset("brain", {1: "Ventricle_L", 2: "left lateral ventricle", 3: "Hippocampus_L"})
    (tmp_path / "brain_toy.yaml").write_text(yaml.safe_dump(brain, sort_keys=False))
    problems = check_label_system([tmp_path / "brain_toy.yaml"])
    far = [p for p in problems if p.kind == "region_far"]
    assert [(p.where, p.severity) for p in far] == [("brain_toy.yaml:labels.values.1", "warning")], far
    assert "left ventricle" in far[0].message and "thorax" in far[0].message
    assert not [p for p in check_label_system() if p.kind == "region_far"]


@pytest.mark.parametrize("word", ["lesion", "masses", "edema", "infarct", "necrosis", "effusion", "cortex",
                                  "ventricles", "ventricle"])
def test_no_bare_generic_word_resolves_to_a_term(word: str) -> None:
    """docs/taxonomy.md: a generic word means different structures in different datasets (a
    cardiac dataset's ventricles are the heart's, a brain dataset's the brain's): it is refused
    with close terms, never resolved. `ventricles` resolved to the brain's ventricles."""
    from curator.taxonomy import load_taxonomy

    assert load_taxonomy().resolve(word) is None


def test_a_side_word_on_an_unsided_structure_says_so(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`left spleen` got "close: ['left lens', 'left scapula', 'left eyeball']" and no word that
    the spleen has no sides."""
    import yaml

    from curator.registry.check import check_label_system

    toy = _toy_dataset("abdomen", {1: "left spleen", 2: "liver"})
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(toy, sort_keys=False))
    (p,) = [p for p in check_label_system([tmp_path / "toy.yaml"]) if p.kind == "term_unknown"]
    assert "'spleen' has no left or right" in p.message and p.severity == "error"


def test_a_run_notes_that_a_copy_replaces_a_builtin(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    """A copy in `registry:` replacing a built-in is an info note (docs/registry.md; `labels check`
    says "1 note(s)", not a warning); the run logged it as a WARNING. It is logged at INFO, which
    the run log still shows by default (curator's loggers print INFO without --verbose): a release
    built from one's own copy of KiTS23 is not missed."""
    import logging
    import subprocess
    import sys

    import yaml

    from curator.config import PipelineConfig
    from curator.runner.context import Context
    from curator.testing.pipelines import make_pipeline

    d = load_registry().get("KiTS23").to_dict()
    (tmp_path / "kits_fixed.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    (tmp_path / "src").mkdir()
    pipe = make_pipeline(tmp_path, [{"dataset": "KiTS23", "root": str(tmp_path / "src")}],
                         registry=[tmp_path / "kits_fixed.yaml"])
    with caplog.at_level(logging.INFO, logger="curator"):
        assert Context(PipelineConfig.load(pipe)).registry.get("KiTS23").path.endswith("kits_fixed.yaml")
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "replaces the built-in" in r.getMessage()]
    assert [(level, "kits_fixed.yaml" in m and "'KiTS23'" in m) for level, m in said] == [(logging.INFO, True)], said
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin", "COLUMNS": "300"}
    out = subprocess.run([sys.executable, "-m", "curator", "status", str(pipe)], capture_output=True, text=True,
                         env=env, timeout=120, check=False)
    (line,) = [x for x in out.stderr.splitlines() if "replaces the built-in dataset 'KiTS23'" in x]
    assert line.split()[0] == "INFO", out.stderr


def test_a_taxonomy_file_in_a_registry_folder_is_skipped_with_one_note(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    """A lab kept its taxonomy extension beside its dataset YAML in the folder given as `registry:`:
    the taxonomy file was read as a dataset, 12 `invalid dataset` errors that never said it was a
    taxonomy file (and the release published them). It is now skipped with one warning saying what
    it is and where a taxonomy is given; the dataset beside it is read as before."""
    import logging

    import yaml

    from curator.config import PipelineConfig
    from curator.registry.check import check_label_system
    from curator.runner.context import Context

    lab = tmp_path / "mylab"
    lab.mkdir()
    (lab / "RegionToy.yaml").write_text(yaml.safe_dump(_toy_dataset("abdomen", {1: "liver"})))
    (lab / "lab_taxonomy.yaml").write_text(yaml.safe_dump({
        "extends": "curator", "version": "lab-1",
        "terms": [{"id": "hip_prosthesis_left", "name": "left hip prosthesis", "category": "bone",
                   "region": "pelvis", "laterality": "left"}],
        "synonyms": {"liver": ["leber"]}}))
    mine = [p for p in check_label_system([lab]) if not p.builtin]
    assert [(p.where, p.kind, p.severity) for p in mine] == [("lab_taxonomy.yaml", "taxonomy_file", "warning")]
    assert "stages.harmonize.taxonomy" in mine[0].message
    assert set(load_registry([lab]).datasets) - set(load_registry().datasets) == {"RegionToy"}

    # a run: no problem row (no `invalid_dataset_spec` error), one logged warning
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump({"workspace": "work", "sources": [], "registry": ["mylab/"]}))
    ctx = Context(PipelineConfig.load(tmp_path / "pipeline.yaml"))
    with caplog.at_level(logging.WARNING):
        assert "RegionToy" in ctx.registry.datasets
    assert ctx.source_problems == [] and ctx.unusable_datasets == {}
    assert [r.getMessage() for r in caplog.records if "taxonomy_file" in r.getMessage()]
