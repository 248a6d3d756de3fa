"""``curator sources check``: a dataset YAML tried on a download without a workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curator.cli import app
from curator.ingest.check import check_source
from curator.testing.native import write_tree

runner = CliRunner()

YAML = """name: MyLiverCT
version: "1.0"
title: My liver MR
modality: MR
region: abdomen
licence: CC-BY-4.0
citation_key: mine2026
citation: "@misc{mine2026, title={mine}, year={2026}}"
layout:
  - image: "imagesTr/{case}_0000.nii.gz"
    label: "labelsTr/{case}.nii.gz"
    split: train
MORE
labels:
  values: {1: liver, 2: LABELS}
"""


def _download(root: Path, n: int = 4) -> None:
    files = []
    for i in range(n):
        files += [(f"imagesTr/liver_{i:03d}_0000.nii.gz", "image", ()),
                  (f"labelsTr/liver_{i:03d}.nii.gz", "label", (1, 3) if i == 1 else (1,))]
    files += [("imagesTs/liver_100_0000.nii.gz", "image", ()), ("imagesTs/liver_101_0000.nii.gz", "image", ()),
              ("extra/series1/", "image", ()), ("README.md", "text", "read me"), ("clinical.csv", "text", "a,b")]
    write_tree(root, files)
    for f in (root / "extra" / "series1").glob("*.dcm"):  # DICOM files as scanners name them: no suffix
        f.rename(f.with_suffix(""))


def _yaml(tmp_path: Path, text: str = YAML) -> Path:
    p = tmp_path / "MyLiverCT.yaml"
    p.write_text(text.replace("2: LABELS", "2: liver tumour").replace("MORE\n", ""))
    return p


def _listing(root: Path) -> list[tuple[str, float]]:
    return sorted((str(p), p.stat().st_mtime) for p in root.rglob("*"))


def test_check_finds_cases_missed_files_and_undeclared_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "download"
    _download(root)
    yaml = _yaml(tmp_path)
    before = _listing(tmp_path)
    monkeypatch.chdir(tmp_path)
    r = check_source(str(yaml), root, sample=None)
    assert r.cases == 4 and r.splits == {"train": 4} and r.without_label == 0
    # the test images and a DICOM series no pattern covers are named, by folder
    missed = {(u["folder"], u["suffix"]): u["files"] for u in r.unmatched}
    assert missed == {("imagesTs/", ".nii.gz"): 2, ("extra/series1/", "(dicom)"): 4}
    assert r.other_files == {".md": 1, ".csv": 1}
    assert len(r.sampled) == 4 and all(s["ok"] for s in r.sampled)
    values = {v["value"]: v for v in r.values}
    assert values[1]["terms"] == ["liver"] and (values[1]["cases"], values[1]["of"]) == (4, 4)
    assert values[2]["terms"] == ["liver_tumor"] and values[2]["cases"] == 0  # declared, in no file
    assert values[3]["declared"] is False and values[3]["examples"] == ["MyLiverCT__liver_001"]
    # the declared 2 held by no label read is said, with the undeclared 3 they hold
    assert [p["kind"] for p in r.warnings] == ["label_values_undeclared", "declared_label_absent"] and not r.errors
    absent = r.warnings[1]["message"]
    assert "value 2 for 'liver tumour'" in absent and "none of the 4 label(s) read holds it" in absent
    assert "undeclared values instead (value 3 is in 1 of 4 labels)" in absent and "--all" not in absent
    # a minority's value is no sign of a wrong code: the term stays annotated, a warning (line 14 declares 2)
    assert r.warnings[1]["path"] == "MyLiverCT.yaml:labels.values.2" and "(line 14)" in absent
    # nothing written beside the data, the YAML or the working directory
    assert _listing(tmp_path) == before


def test_sample_reads_each_kind_of_case_first(tmp_path: Path) -> None:
    root = tmp_path / "download"
    _download(root, n=6)
    text = YAML.replace("MORE", '  - image: "imagesTs/{case}_0000.nii.gz"\n    split: test')
    r = check_source(str(_yaml(tmp_path, text)), root, sample=2)
    assert r.cases == 8 and r.splits == {"train": 6, "test": 2} and r.without_label == 2
    assert [(s["official_split"], s["label_status"]) for s in r.sampled] == [("train", "ok"), ("test", "missing")]
    assert not any(u["folder"] == "imagesTs/" for u in r.unmatched)  # now matched
    r = check_source(str(_yaml(tmp_path, text)), root, sample=5)
    assert len(r.sampled) == 5 and len({s["case_id"] for s in r.sampled}) == 5


def test_unknown_term_and_broken_case_fail_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "download"
    _download(root)
    yaml = _yaml(tmp_path)
    yaml.write_text(yaml.read_text().replace("liver tumour", "livr tumour"))
    (root / "imagesTr" / "liver_002_0000.nii.gz").write_bytes(b"not a nifti")
    res = runner.invoke(app, ["sources", "check", str(yaml), str(root), "--all", "--format", "json"])
    assert res.exit_code == 1, res.output
    got = json.loads(res.stdout)
    assert got["ok"] is False
    errors = {(p["kind"], p["path"]) for p in got["problems"] if p["severity"] == "error"}
    assert ("term_unknown", "MyLiverCT.yaml:labels.values.2") in errors
    assert any(path and path.endswith("liver_002_0000.nii.gz") for _, path in errors)
    message = next(p["message"] for p in got["problems"] if p["kind"] == "term_unknown")
    assert "liver tumor" in message and "under `ignore`" in message  # the close term; a value may be ignored


def test_cli_exit_codes_and_table(tmp_path: Path) -> None:
    root = tmp_path / "download"
    _download(root)
    yaml = _yaml(tmp_path)
    res = runner.invoke(app, ["sources", "check", str(yaml), str(root)], env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output  # a warning (undeclared value 3) does not fail it
    assert "imagesTs/" in res.stdout and "label_values_undeclared" in res.stdout and "4 of 4 case(s) read" in res.stdout
    res = runner.invoke(app, ["sources", "check", str(yaml), str(root), "--strict"])
    assert res.exit_code == 1
    # an image pattern matching nothing: ingest would take every label for a label-only case
    text = yaml.read_text()
    yaml.write_text(text.replace("imagesTr/{case}_0000", "images/{case}_0000"))
    res = runner.invoke(app, ["sources", "check", str(yaml), str(root), "--format", "json", "--strict"])
    assert res.exit_code == 1
    got = json.loads(res.stdout)
    assert got["label_only"] == 4 and "image_pattern_no_match" in {p["kind"] for p in got["problems"]}
    # no pattern matching anything: no case, a layout problem, exit 1
    yaml.write_text(text.replace("imagesTr/{case}_0000", "images/{case}_0000").replace("labelsTr/", "labels/"))
    res = runner.invoke(app, ["sources", "check", str(yaml), str(root), "--format", "json"])
    assert res.exit_code == 1
    got = json.loads(res.stdout)
    assert got["cases"] == 0 and {p["kind"] for p in got["problems"]} == {"layout_no_match"}
    # an invalid YAML: the command's error, exit 2
    yaml.write_text("name: MyLiverCT\nlayout: 3\n")
    res = runner.invoke(app, ["sources", "check", str(yaml), str(root)])
    assert res.exit_code == 2 and "not a valid dataset YAML" in res.output
    res = runner.invoke(app, ["sources", "check", "NoSuchDataset", str(root)])
    assert res.exit_code == 2


def test_real_kits23_sample(real_data: Path) -> None:
    r = check_source("KiTS23", real_data / "kits23", sample=3)
    assert r.cases >= 3 and len(r.sampled) == 3 and not r.errors, r.problems
    assert not r.unmatched
    # the sample holds KiTS23's segmentations without their imaging (fetched by a script): said, not failed
    assert r.label_only == r.cases and "image_pattern_no_match" in {p["kind"] for p in r.warnings}
    seen = {v["value"] for v in r.values if v["cases"]}
    assert 1 in seen and seen <= {1, 2, 3}


def test_unused_files_group_across_case_folders_and_ignored_structures_apart(tmp_path: Path) -> None:
    from curator.testing.registry_fixtures import FIXTURES

    fx = FIXTURES["TotalSegmentator_Organs"]
    root = tmp_path / "download"
    write_tree(root, [(f.path, f.kind, f.values) for f in fx.files]
               + [(f"s000{i}/extras/t1.nii.gz", "image", ()) for i in range(3)])
    r = check_source("TotalSegmentator_Organs", root, sample=1)
    # one row for the same file in every case folder, not one per folder
    assert [(u["folder"], u["folders"], u["files"]) for u in r.unmatched] == [("s#/extras/", 3, 3)]
    # the masks of other subsets, which the YAML ignores on purpose, are counted apart
    ignored = sum(1 for f in fx.files if not f.expected and "/segmentations/" in f.path)
    assert ignored and r.other_files == {"(ignored structures)": ignored}


def test_a_pipeline_yaml_checks_each_of_its_sources(tmp_path: Path) -> None:
    import yaml

    good, bad = tmp_path / "good", tmp_path / "bad"
    _download(good)
    _download(bad)
    (bad / "imagesTr" / "liver_001_0000.nii.gz").write_bytes(b"broken")
    dataset = _yaml(tmp_path)
    pipe = tmp_path / "pipeline.yaml"
    pipe.write_text(yaml.safe_dump({"workspace": "ws", "registry": [str(dataset)], "sources": [
        {"dataset": "MyLiverCT", "root": str(good)}, {"dataset": "MyLiverCT", "root": str(bad), "name": "Again"}]}))
    res = runner.invoke(app, ["sources", "check", str(pipe), "--all", "--format", "json"])
    assert res.exit_code == 1, res.output
    got = json.loads(res.stdout)
    assert [(r["cases"], r["ok"]) for r in got] == [(4, True), (4, False)]
    two = runner.invoke(app, ["sources", "check", str(pipe), "--all", "--format", "json", "--workers", "2"])
    assert two.exit_code == 1
    strip = [{k: v for k, v in r.items() if k != "sampled"} for r in json.loads(two.stdout)]  # (times differ)
    assert strip == [{k: v for k, v in r.items() if k != "sampled"} for r in got]
    assert [[s["case_id"] for s in r["sampled"]] for r in json.loads(two.stdout)] == \
        [[s["case_id"] for s in r["sampled"]] for r in got]
    assert not (tmp_path / "ws").exists()  # nothing written, not even the pipeline's workspace
    res = runner.invoke(app, ["sources", "check", str(pipe), "--all"], env={"COLUMNS": "160"})
    assert res.exit_code == 1 and "1 of 2 source(s) passed; failed: Again" in res.output
    res = runner.invoke(app, ["sources", "check", str(dataset)])  # a dataset YAML needs its ROOT
    assert res.exit_code == 2 and "give the dataset's download as ROOT" in res.output
    (tmp_path / "broken.yaml").write_text("sources: [1\n")
    res = runner.invoke(app, ["sources", "check", str(tmp_path / "broken.yaml")],  # not an internal error
                        env={"COLUMNS": "400"})
    assert res.exit_code == 2 and "cannot be read as YAML" in res.output


def test_a_pipeline_yaml_is_checked_with_its_stage_settings(tmp_path: Path) -> None:
    """`sources check pipeline.yaml` ran ingest with the default settings: labels 0.05 mm off
    their image were rejected though the pipeline's geometry_tolerance_mm: 0.1 lets ingest accept
    them, and images over its max_voxels were fine though ingest fails each as too_large (tester 33 #1)."""
    import yaml as pyyaml

    from curator.testing.native import GEOMETRY, SHAPE, write_file
    from curator.testing.phantoms import grid

    root = tmp_path / "download"
    _download(root, n=2)
    write_tree(root, [("imagesTs/liver_100_0000.nii.gz", "image", ())])  # (no case reads it: said, not read)
    off = grid(SHAPE, (2.0, 2.0, 3.0), "LPS", center=(0.05, 0.0, 0.0))  # GEOMETRY's grid, moved 0.05 mm
    assert off != GEOMETRY
    for i in range(2):
        write_file(root, f"labelsTr/liver_{i:03d}.nii.gz", "label", (1,), g=off)
    spec = _yaml(tmp_path)
    pipe = tmp_path / "pipeline.yaml"
    cfg = {"workspace": "ws", "sources": [{"dataset": "MyLiverCT.yaml", "root": "download"}]}

    def check(*args: str, stages: dict[str, object] | None = None) -> dict[str, object]:
        pipe.write_text(pyyaml.safe_dump({**cfg, "stages": stages or {}}))
        res = runner.invoke(app, ["sources", "check", *args, "--all", "--format", "json"])
        got = json.loads(res.stdout)
        return got[0] if isinstance(got, list) else got

    def kinds(r: dict[str, object]) -> set[str]:
        return {p["kind"] for p in r["problems"]}  # type: ignore[attr-defined, index]

    default = check(str(pipe))  # the default 0.01 mm: the labels are off their images
    assert "geometry_mismatch" in kinds(default)
    loose = check(str(pipe), stages={"ingest": {"geometry_tolerance_mm": 0.1}})
    assert "geometry_mismatch" not in kinds(loose), loose["problems"]
    assert [s["label_status"] for s in loose["sampled"]] == ["ok", "ok"] and loose["ok"]  # type: ignore[attr-defined, index]
    small = check(str(pipe), stages={"ingest": {"geometry_tolerance_mm": 0.1, "max_voxels": 100}})
    assert kinds(small) == {"too_large"} and not small["ok"]  # 8×8×4 = 256 voxels each: ingest fails them
    assert default["settings_from"] == str(pipe) and default["settings"] == {}  # which settings it ran under
    assert loose["settings"] == {"ingest.geometry_tolerance_mm": 0.1}
    bare = check(str(spec), str(root))  # a dataset YAML and its root: the defaults, and it says so
    assert bare["settings_from"] == "defaults" and "geometry_mismatch" in kinds(bare)
    res = runner.invoke(app, ["sources", "check", str(spec), str(root)], env={"COLUMNS": "300"})
    assert "settings: the defaults" in res.output
    pipe.write_text(pyyaml.safe_dump({**cfg, "stages": {"ingest": {"geometry_tolerance_mm": 0.1}}}))
    res = runner.invoke(app, ["sources", "check", str(pipe)], env={"COLUMNS": "300"})
    assert f"settings of {pipe} (ingest.geometry_tolerance_mm: 0.1)" in res.output, res.output
    # a setting the run refuses is refused here too, naming the file
    pipe.write_text(pyyaml.safe_dump({**cfg, "stages": {"ingest": {"max_voxels": 0}}}))
    res = runner.invoke(app, ["sources", "check", str(pipe)], env={"COLUMNS": "300"})
    assert res.exit_code != 0 and "max_voxels" in res.output
    assert not (tmp_path / "ws").exists()


PER_STRUCTURE = """name: MyOrgans
version: "1.0"
modality: MR
region: abdomen
licence: CC-BY-4.0
citation: "@misc{organs, title={organs}, year={2026}}"
layout:
  - image: "{case}/ct.nii.gz"
    label: "{case}/segmentations/{structure}.nii.gz"
labels:
  encoding: per_structure
  structures: {liver: liver, spleen: spleen, stomach: stomach}
"""


def _organs(tmp_path: Path, extra: tuple[str, ...] = ()) -> tuple[Path, Path]:
    root = tmp_path / "download"
    files = []
    for case in ("s0001", "s0002"):
        files += [(f"{case}/ct.nii.gz", "image", ())]
        files += [(f"{case}/segmentations/{s}.nii.gz", "label", (1,)) for s in ("liver", "spleen", "stomach", *extra)]
    write_tree(root, files)
    yaml = tmp_path / "MyOrgans.yaml"
    yaml.write_text(PER_STRUCTURE)
    return yaml, root


def test_a_case_shows_each_problem_kind_once_with_its_count(tmp_path: Path) -> None:
    """A TotalSegmentator case's problems cell repeated `label_reoriented,` 117 times."""
    yaml, root = _organs(tmp_path)
    for s in ("liver", "spleen"):
        (root / "s0002" / "segmentations" / f"{s}.nii.gz").write_bytes(b"not a nifti")
    r = check_source(str(yaml), root, sample=None)
    assert [s["problems"] for s in r.sampled] == [{}, {"corrupt_file": 2}]
    res = runner.invoke(app, ["sources", "check", str(yaml), str(root)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "corrupt_file (2 times)" in res.stdout and "corrupt_file, corrupt_file" not in res.stdout


def test_an_undeclared_structure_file_is_a_warning(tmp_path: Path) -> None:
    """spleen_accessory.nii.gz among the masks showed only as `NO:` in the values table and the
    summary said 0 warnings, while an undeclared label-map value is label_values_undeclared."""
    yaml, root = _organs(tmp_path)
    assert not check_source(str(yaml), root, sample=None).warnings
    yaml, root = _organs(tmp_path / "extra", extra=("spleen_accessory", "gallbladder"))
    r = check_source(str(yaml), root, sample=None)
    said = [(p["case_id"], p["kind"], p["path"]) for p in r.warnings]
    assert said == [(f"MyOrgans__{c}", "label_unmapped", f"MyOrgans:{c}/segmentations/gallbladder.nii.gz")
                    for c in ("s0001", "s0002")]
    assert "2 structure file(s) the dataset YAML does not declare: gallbladder (a term: gallbladder), " \
           "spleen_accessory" in r.warnings[0]["message"]
    res = runner.invoke(app, ["sources", "check", str(yaml), str(root), "--strict"], env={"COLUMNS": "200"})
    assert res.exit_code == 1 and "0 error(s), 2 warning(s)" in res.output, res.output
    # the yes/no `declared` column says no; the cases holding it and the term its name is go elsewhere
    # (it printed "NO: MyOrgans__s0001, MyOrgans__s0002 (a term: gallbladder)")
    (row,) = [[c.strip() for c in line.split("│")[1:-1]] for line in res.stdout.splitlines()
              if line.startswith("│ gallbladder ")]
    assert row == ["gallbladder", "- (its name is the term gallbladder)", "NO", "2 of 2: MyOrgans__s0001, MyOrgans__s0002"]


def test_a_structure_mapped_to_no_known_term_is_not_told_to_go_under_ignore(tmp_path: Path) -> None:
    """`term_unknown` told a per-structure dataset to "list the value under `ignore`", which takes
    raw values only: a structure file is left out with `other_structures: ignore`."""
    yaml, root = _organs(tmp_path)
    yaml.write_text(PER_STRUCTURE.replace("stomach: stomach", "stomach: stomak"))
    (said,) = [p["message"] for p in check_source(str(yaml), root, sample=None).errors if p["kind"] == "term_unknown"]
    assert "`other_structures: ignore`" in said and "under `ignore`" not in said, said


def test_the_split_column_of_the_metadata_file_is_not_called_unpublished(tmp_path: Path) -> None:
    """TotalSegmentator's meta.csv gives each case's split, read by `official_split`; ingest said
    `split` was one of the metadata file's fields "not published", though it is
    cases.official_split. Fields no key reads are still said."""
    yaml, root = _organs(tmp_path)
    (root / "meta.csv").write_text("image_id,age,split,institute\ns0001,61,train,A\ns0002,70,test,B\n")
    yaml.write_text(PER_STRUCTURE + "metadata: {file: meta.csv, key: image_id, columns: {age: age_years}}\n"
                    "official_split: {summary: meta.csv, file: meta.csv, key: image_id, column: split}\n")
    r = check_source(str(yaml), root, sample=None)
    assert r.splits == {"train": 1, "test": 1}
    (said,) = [p["message"] for p in r.problems if p["kind"] == "metadata_fields_dropped"]
    assert "1 field(s) of the metadata file are not published: institute" in said, said


def test_undeclared_values_say_how_many_were_left_out_and_sort_as_numbers(tmp_path: Path) -> None:
    """'values [6, 10, …] are not declared' listed 12 of ~227 values without saying so, and the
    values table sorted them as text (10, 100, 101, …, 11)."""
    root = tmp_path / "download"
    write_tree(root, [("imagesTr/liver_000_0000.nii.gz", "image", ()),
                      ("labelsTr/liver_000.nii.gz", "label", tuple(range(1, 21)))])
    r = check_source(str(_yaml(tmp_path)), root, sample=None)
    (said,) = [p["message"] for p in r.warnings if p["kind"] == "label_values_undeclared"]
    assert "values [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14] and 6 more are not declared" in said, said
    assert [v["value"] for v in r.values if not v["declared"]] == list(range(3, 21))


def test_names_resolve_through_the_pipelines_taxonomy(tmp_path: Path) -> None:
    """`sources check pipeline.yaml` checked names against the bundled taxonomy: a lab's own term
    (stages.harmonize.taxonomy) was term_unknown there and fine in `curator run`."""
    import yaml as pyyaml

    root = tmp_path / "download"
    _download(root)
    spec = _yaml(tmp_path)
    spec.write_text(spec.read_text().replace("2: liver tumour", "2: ccRCC-like lesion"))
    (tmp_path / "lab.yaml").write_text("extends: curator\nterms:\n- {id: lab_lesion, name: lab lesion, synonyms: "
                                       "[ccRCC-like lesion], category: lesion, region: abdomen, part_of: [liver]}\n")
    pipe = tmp_path / "pipeline.yaml"
    cfg = {"workspace": "ws", "sources": [{"dataset": str(spec), "root": str(root)}]}
    pipe.write_text(pyyaml.safe_dump(cfg))

    def unknown(*args: str) -> list[str]:
        got = json.loads(runner.invoke(app, ["sources", "check", *args, "--format", "json"]).stdout)
        got = got[0] if isinstance(got, list) else got
        return [p["message"] for p in got["problems"] if p["kind"] == "term_unknown"]

    assert unknown(str(pipe))  # the bundled taxonomy knows no such lesion
    assert unknown(str(spec), str(root), "--taxonomy", str(tmp_path / "lab.yaml")) == []
    pipe.write_text(pyyaml.safe_dump({**cfg, "stages": {"harmonize": {"taxonomy": "lab.yaml"}}}))
    assert unknown(str(pipe)) == []


@pytest.mark.parametrize("folder", ["09-11-2001-CT ABD-12345", "20010911_ct", "DOE^JANE", "MRN123456"])
def test_folder_names_that_look_identifying_are_pointed_out_unless_the_source_keys_them(tmp_path: Path,
                                                                                      folder: str) -> None:
    """A source with public ids publishes its paths as they are; a hospital export's TCIA-style
    folder ('09-11-2001-DOE JANE-CT ABD') put a date of service and a name into cases.image_path
    with no word before the run. `sources check` says so for a dataset YAML of one's own; with
    pseudonymous_ids (paths never published) and for ordinary names it says nothing."""
    root = tmp_path / "download"
    write_tree(root, [(f"{folder}/imagesTr/liver_000_0000.nii.gz", "image", ()),
                      (f"{folder}/labelsTr/liver_000.nii.gz", "label", (1,)),
                      ("plain/imagesTr/liver_001_0000.nii.gz", "image", ()),
                      ("plain/labelsTr/liver_001.nii.gz", "label", (1,))])
    yaml = _yaml(tmp_path, YAML.replace('image: "imagesTr', 'image: "*/imagesTr').replace('label: "labelsTr',
                                                                                          'label: "*/labelsTr'))

    def hinted(**kw: bool) -> list[dict]:
        return [p for p in check_source(str(yaml), root, **kw).problems if p["kind"] == "paths_may_identify"]

    (hint,) = hinted()
    assert folder in hint["message"] and "pseudonymous_ids: true" in hint["message"]
    assert hint["message"].startswith("1 file or folder name(s)")  # the image's and label's folder, once
    assert hinted(pseudonymous_ids=True) == []
    (root / folder).rename(root / "other")
    assert hinted() == []


def test_a_link_out_of_the_root_is_counted_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Broken, looping and escaping file links stay in the layout's tree (a case whose image is one
    fails on it), and the unused-file count sniffed an extension-less one: a file outside the
    source root was opened."""
    from curator.io import formats
    from curator.testing.registry_fixtures import FIXTURES

    fx = FIXTURES["TotalSegmentator_Organs"]
    root = tmp_path / "download"
    write_tree(root, [(f.path, f.kind, f.values) for f in fx.files])
    outside = tmp_path / "outside" / "secret"
    outside.parent.mkdir()
    outside.write_bytes(b"\0" * 128 + b"DICM")
    (root / "extra").mkdir()
    (root / "extra" / "IM0001").symlink_to(outside)
    opened: list[str] = []
    real = formats.sniff
    monkeypatch.setattr(formats, "sniff", lambda p, *a, **k: opened.append(str(p)) or real(p, *a, **k))
    r = check_source("TotalSegmentator_Organs", root, sample=1)
    assert not any("IM0001" in p for p in opened), opened
    assert r.other_files.get("(broken links)") == 1


def test_files_a_related_dataset_reads_are_said_to_be_its_own(tmp_path: Path) -> None:
    """AMOS22's one download holds CT (amos_0001-0500) and MR cases: `sources check AMOS22_CT`
    listed the MR files as "volume files no case reads", which reads as files the YAML missed.
    Those AMOS22_MRI's layout matches (the YAMLs' `overlaps:`) are grouped apart and named so; a
    file no related dataset reads is still listed as missed."""
    root = tmp_path / "amos22"
    write_tree(root, [("imagesTr/amos_0001.nii.gz", "image", ()), ("labelsTr/amos_0001.nii.gz", "label", (1,)),
                      ("imagesTr/amos_0540.nii.gz", "image", ()), ("labelsTr/amos_0540.nii.gz", "label", (1,)),
                      ("imagesTs/amos_0002.nii.gz", "image", ())])
    r = check_source("AMOS22_CT", root, sample=1)
    assert r.cases == 1
    rows = [(u["folder"], u["files"], u["read_by"]) for u in r.unmatched]
    assert rows == [("imagesTs/", 1, None), ("imagesTr/", 1, "AMOS22_MRI (same_download)"),
                    ("labelsTr/", 1, "AMOS22_MRI (same_download)")]
    res = runner.invoke(app, ["sources", "check", "AMOS22_CT", str(root)], env={"COLUMNS": "300"})
    missed, theirs = res.stdout.split("volume files no case reads")[1].split("which a related dataset's layout matches")
    assert "imagesTs/amos_0002.nii.gz" in missed and "amos_0540" not in missed
    assert "AMOS22_MRI (same_download)" in theirs and "labelsTr/amos_0540.nii.gz" in theirs


def test_a_structure_file_mapped_to_the_other_side_is_a_warning(tmp_path: Path) -> None:
    """`kidney_left: right kidney` was warned by `labels check` and harmonize, but not by
    `sources check`, the command the docs send a new dataset's author to."""
    yaml, root = _organs(tmp_path, extra=("kidney_left", "kidney_right"))
    yaml.write_text(PER_STRUCTURE.replace("stomach: stomach}", "stomach: stomach, kidney_left: right kidney, "
                                          "kidney_right: left kidney}"))
    said = [(p["path"], p["kind"]) for p in check_source(str(yaml), root, sample=None).warnings]
    assert ("MyOrgans.yaml:labels.structures.kidney_left", "structure_name_disagrees") in said
    assert ("MyOrgans.yaml:labels.structures.kidney_right", "structure_name_disagrees") in said


def _kidney_maps(tmp_path: Path, values: str) -> tuple[Path, Path]:
    """Two cases of an LPS grid: value 2 on the patient's right (low array x), 3 on the left."""
    import numpy as np

    from curator.testing.layouts import save_nifti
    from curator.testing.phantoms import grid

    g = grid((20, 8, 6), (2.0, 2.0, 3.0), "LPS")
    root = tmp_path / "download"
    for i in range(2):
        lab = np.zeros(g.shape, np.uint8)
        lab[2:6, 2:6, 1:5], lab[14:18, 2:6, 1:5] = 2, 3
        img = np.random.default_rng(i).normal(40, 20, g.shape).astype(np.int16)
        img[:, :, 0] = -1000  # air: Hounsfield units
        save_nifti(root / "imagesTr" / f"k_{i}_0000.nii.gz", img, g)
        save_nifti(root / "labelsTr" / f"k_{i}.nii.gz", lab, g)
    yaml = tmp_path / "MyLiverCT.yaml"
    yaml.write_text(YAML.replace("MORE\n", "").replace("{1: liver, 2: LABELS}", values).replace("modality: MR",
                                                                                                 "modality: CT"))
    return yaml, root


def test_a_label_map_naming_its_sides_as_seen_on_screen_is_a_warning(tmp_path: Path) -> None:
    """`2: left kidney, 3: right kidney` for a map whose 2 is the patient's right kidney passed
    `sources check` with 0 warnings; only qc, after the whole pipeline, said sides_swapped."""
    yaml, root = _kidney_maps(tmp_path, "{2: left kidney, 3: right kidney}")
    (said,) = [p for p in check_source(str(yaml), root, sample=None).warnings if p["kind"] == "sides_swapped"]
    assert said["path"] == "MyLiverCT.yaml:labels.values"
    assert said["message"].startswith("4 of the 4 left/right labels of MyLiverCT whose side was checked (2 case(s)) "
                                      "lie on the patient's other side (left kidney 2 of 2, right kidney 2 of 2); qc would exclude them"), said["message"]
    # a pipeline whose qc checks no side (side_margin_mm: null, or qc off) is not told qc would exclude them
    from curator.config import PipelineConfig

    for qc in ({"side_margin_mm": None}, {"enabled": False}):
        pipe = tmp_path / "pipeline.yaml"
        pipe.write_text(json.dumps({"workspace": "ws", "sources": [{"dataset": str(yaml), "root": str(root)}],
                                    "stages": {"qc": qc}}))
        res = runner.invoke(app, ["sources", "check", str(pipe), "--all", "--format", "json"])
        assert not [p for p in json.loads(res.stdout)[0]["problems"] if p["kind"] == "sides_swapped"], qc
        r = check_source(str(yaml), root, sample=None, pipeline=PipelineConfig.load(pipe))
        assert not [p for p in r.warnings if p["kind"] == "sides_swapped"], qc
        assert r.settings == ({"qc.side_margin_mm": None} if "side_margin_mm" in qc else {"qc.enabled": False})
    yaml, root = _kidney_maps(tmp_path / "right", "{2: right kidney, 3: left kidney}")
    assert not check_source(str(yaml), root, sample=None).warnings


def test_files_a_patterns_regex_turns_away_are_said_so(tmp_path: Path) -> None:
    """Files the glob matched but a `patterns:` regex rejected showed only among the files no
    pattern matched, which sent the user to the glob."""
    root = tmp_path / "download"
    _download(root)
    yaml = _yaml(tmp_path, YAML.replace("MORE\n", 'patterns: {case: "liver_00[0-2]"}\n'))
    said, label = [p for p in check_source(str(yaml), root).problems if p["kind"] == "pattern_rejects"]
    assert said["severity"] == "info" and said["path"] == "layout[0]"
    assert label["message"].startswith("the label pattern 'labelsTr/{case}.nii.gz' (layout[0]) matches 1 file(s)")
    assert said["message"].startswith("the image pattern 'imagesTr/{case}_0000.nii.gz' (layout[0]) matches 1 "
                                      "file(s), but the `patterns:` regex for {case}, `liver_00[0-2]`, rejects their "
                                      "{case} (e.g. 'liver_003' of imagesTr/liver_003_0000.nii.gz)"), said["message"]
    assert not [p for p in check_source(str(_yaml(tmp_path)), root).problems if p["kind"] == "pattern_rejects"]


def test_a_label_pattern_tied_to_no_image_is_not_also_said_to_match_nothing(tmp_path: Path) -> None:
    """A `{cas}` typo in the label pattern was label_ambiguous (right) and label_pattern_no_match:
    "no file matches the label pattern(s)", though the files match it."""
    root = tmp_path / "download"
    _download(root)
    yaml = _yaml(tmp_path, YAML.replace('label: "labelsTr/{case}.nii.gz"', 'label: "labelsTr/{cas}.nii.gz"'))
    kinds = {p["kind"] for p in check_source(str(yaml), root).problems}
    assert "label_ambiguous" in kinds and "label_pattern_no_match" not in kinds, kinds


def test_an_image_two_layout_entries_take_is_a_warning_of_the_check(tmp_path: Path) -> None:
    root = tmp_path / "download"
    write_tree(root, [("data/brain1_image.nii.gz", "image", ()), ("data/brain1_label.nii.gz", "label", (1,)),
                      ("data/prostate.nii.gz", "image", ()), ("data/prostate-label.nii.gz", "label", (1,))])
    yaml = tmp_path / "Two.yaml"
    yaml.write_text(YAML.replace("MyLiverCT", "Two").replace("MORE\n", "").replace(", 2: LABELS", "").replace(
        '  - image: "imagesTr/{case}_0000.nii.gz"\n    label: "labelsTr/{case}.nii.gz"\n    split: train\n',
        '  - {image: "data/{case}_image.nii.gz", label: "data/{case}_label.nii.gz"}\n'
        '  - {image: "data/{case}.nii.gz", label: "data/{case}-label.nii.gz"}\n'))
    r = check_source(str(yaml), root, sample=None)
    twice = [p for p in r.warnings if p["kind"] == "image_in_two_cases"]
    assert len(twice) == 1 and twice[0]["path"].endswith("data/brain1_image.nii.gz")
    assert "Two__brain1 (layout[0]" in twice[0]["message"] and "Two__brain1_image (layout[1]" in twice[0]["message"]


def test_a_misspelt_structure_stem_is_a_warning_of_the_check(tmp_path: Path) -> None:
    root = tmp_path / "download"
    write_tree(root, [(f"s{i:04d}/{f}", kind, v) for i in (1, 2, 3) for f, kind, v in
                      (("ct.nii.gz", "image", ()), ("segmentations/liver.nii.gz", "label", (1,)),
                       ("segmentations/kidney_left.nii.gz", "label", (1,)))])
    yaml = tmp_path / "TS.yaml"
    yaml.write_text(YAML.replace("MyLiverCT", "TS").replace("MORE\n", "").replace(
        '  - image: "imagesTr/{case}_0000.nii.gz"\n    label: "labelsTr/{case}.nii.gz"\n    split: train\n',
        '  - {image: "{case}/ct.nii.gz", label: "{case}/segmentations/{structure}.nii.gz"}\n').replace(
        "  values: {1: liver, 2: LABELS}\n", "  encoding: per_structure\n  other_structures: ignore\n"
        "  structures: {liver: liver, kidney_lft: left kidney}\n"))
    r = check_source(str(yaml), root, sample=1)
    (row,) = [p for p in r.warnings if p["kind"] == "declared_label_absent"]
    assert "'kidney_lft'" in row["message"] and "none of the 3 case(s)" in row["message"]
    assert "'kidney_left'" in row["message"]
    # the file and line of the key, not `TS:.` (tester 43 #9)
    line = next(i for i, text in enumerate(yaml.read_text().splitlines(), 1) if "kidney_lft:" in text)
    assert row["path"] == "TS.yaml:labels.structures.kidney_lft" and f"(line {line})" in row["message"]


def test_a_declared_value_no_sampled_label_holds_while_most_hold_another_is_an_error_of_the_check(
        tmp_path: Path) -> None:
    """`2: liver` over files coding the liver 1: exit 0 with only a `0 of 3` cell in the values table
    (then a warning, and "(1 in 2 of them)" read as one label of two); the release published the
    liver annotated and absent in every case (tester 43 #5). An error naming the file and line."""
    root = tmp_path / "download"
    _download(root, 3)
    yaml = tmp_path / "MyLiverCT.yaml"
    yaml.write_text(YAML.replace("MORE\n", "").replace("{1: liver, 2: LABELS}", "{2: liver}"))
    r = check_source(str(yaml), root, sample=2)
    (row,) = [p for p in r.errors if p["kind"] == "declared_label_absent"]
    assert row["path"] == "MyLiverCT.yaml:labels.values.2" and row["case_id"] is None
    assert "value 2 for 'liver', but none of the 2 label(s) of the sample holds it" in row["message"]
    assert "undeclared values instead (value 1 is in 2 of 2 labels)" in row["message"]
    assert "harmonize leaves 'liver' out of every case of the dataset (not annotated)" in row["message"]
    assert "(line 14)" in row["message"] and "`--all` reads every case" in row["message"]
    assert "if the files code 'liver' as 1, write that value in labels.values instead of 2" in row["message"]


def test_a_value_few_labels_hold_is_not_offered_as_an_absent_values_code(tmp_path: Path) -> None:
    """A padding -1 in 1 of 6 files was offered as the pancreas' code ("if the files code
    'pancreas' as -1, write that value ..."): only a value most labels hold is (tester 31 #5)."""
    root = tmp_path / "download"
    _download(root)  # value 3 in 1 of the 4 labels, no label holds 2
    r = check_source(str(_yaml(tmp_path)), root, sample=None)
    (row,) = [p for p in r.warnings if p["kind"] == "declared_label_absent"]
    assert "value 2 for 'liver tumour', but none of the 4 label(s) read holds it" in row["message"]
    assert "undeclared values instead (value 3 is in 1 of 4 labels)" in row["message"]  # still said
    assert "write that value" not in row["message"], row["message"]
    assert "check the value against the dataset's documentation" in row["message"]


def _hearts(tmp_path: Path, values: str, real: Path | None = None) -> tuple[Path, Path]:
    """Two short-axis cases coded as M&Ms codes them (1 left ventricle, 2 myocardium, 3 right
    ventricle): the right ventricle 38 mm to the patient's right of the left one and 14 mm
    anterior, placed in world (RAS) mm on the image's grid — a real MR's (``real``) or a
    phantom's (LPS, 3 mm)."""
    import numpy as np

    from curator.io.formats import read_volume
    from curator.testing.layouts import save_nifti
    from curator.testing.phantoms import grid

    if real is not None:
        vol = read_volume(real, role="image")
        g, img = vol.geometry, np.asarray(vol.array)
    else:
        g = grid((40, 36, 20), (3.0, 3.0, 3.0), "LPS")
        img = np.random.default_rng(0).normal(300, 40, g.shape).astype(np.int16)
    a = np.asarray(g.affine).reshape(4, 4)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in g.shape], indexing="ij"), -1)
    xyz = ijk @ a[:3, :3].T + a[:3, 3]
    lv = xyz.reshape(-1, 3).mean(0) + np.array([-20.0, 0.0, 0.0])  # RAS: the patient's left is -x
    root = tmp_path / "download"
    for i in range(2):
        shift = np.array([0.0, 3.0 * i, 0.0])
        d_lv = (((xyz - lv - shift) / [18.0, 18.0, 22.0]) ** 2).sum(-1)
        d_ep = (((xyz - lv - shift) / [25.0, 25.0, 28.0]) ** 2).sum(-1)
        d_rv = (((xyz - lv - shift - [38.0, 14.0, 0.0]) / [12.0, 20.0, 22.0]) ** 2).sum(-1)
        lab = np.zeros(g.shape, np.uint8)
        lab[(d_rv <= 1) & (d_ep > 1)], lab[d_ep <= 1], lab[d_lv <= 1] = 3, 2, 1
        save_nifti(root / f"{i:03d}" / f"{i:03d}_SA_ED.nii.gz", img, g)
        save_nifti(root / f"{i:03d}" / f"{i:03d}_SA_ED_gt.nii.gz", lab, g)
    yaml = tmp_path / "MyHearts.yaml"
    yaml.write_text(YAML.replace("MyLiverCT", "MyHearts").replace("MORE\n", "").replace("region: abdomen", "region: thorax")
                    .replace('"imagesTr/{case}_0000.nii.gz"', '"{case}/{case}_SA_ED.nii.gz"')
                    .replace('"labelsTr/{case}.nii.gz"', '"{case}/{case}_SA_ED_gt.nii.gz"')
                    .replace("{1: liver, 2: LABELS}", values))
    return yaml, root


@pytest.mark.parametrize("real", [False, True], ids=["phantom", "real_mr"])
def test_left_and_right_ventricles_swapped_in_the_yaml_are_a_warning(tmp_path: Path, real: bool,
                                                                    request: pytest.FixtureRequest) -> None:
    """ACDC codes 1 as the right ventricle, M&Ms as the left: ACDC's YAML copied for M&Ms swapped
    them with 0 warnings, the taxonomy giving the chambers no laterality. They are no mirror pair
    about the midline, but the left ventricle lies to the patient's left of the right one."""
    image = request.getfixturevalue("real_data") / "totalsegmentator" / "example_mr_sm.nii.gz" if real else None
    yaml, root = _hearts(tmp_path, "{1: right ventricle, 2: myocardium, 3: left ventricle}", image)
    (said,) = [p for p in check_source(str(yaml), root, sample=None).warnings if p["kind"] == "sides_swapped"]
    assert said["path"] == "MyHearts.yaml:labels.values"
    assert said["message"].startswith("4 of the 4 left/right labels of MyHearts whose side was checked (2 case(s)) lie "
                                      "on the patient's other side (left ventricle 2 of 2, right ventricle 2 of 2)"), \
        said["message"]
    assert "ACDC codes 1 right ventricle" in said["message"]
    yaml, root = _hearts(tmp_path / "right", "{1: left ventricle, 2: myocardium, 3: right ventricle}", image)
    assert not check_source(str(yaml), root, sample=None).warnings


BRATS = """name: BTP
version: "1"
modality: MR
region: brain
licence: CC-BY-4.0
citation: "@misc{btp, title={btp}}"
sequences: {t1n: MR}
layout:
  - image: "{case}/{case}-{sequence}.nii.gz"
    label: "{case}/{case}-seg.nii.gz"
MORE
labels:
  values: {1: brain tumor}
"""


def _btp(root: Path, cases: tuple[str, ...]) -> None:
    write_tree(root, [(f"{c}/{c}-{r}.nii.gz", kind, v) for c in cases
                      for r, kind, v in (("t1n", "image", ()), ("seg", "label", (1,)))])


def test_case_ids_of_one_subject_at_several_timepoints_warn_while_patient_id_is_the_case(tmp_path: Path) -> None:
    """Two timepoints of BraTS subject 00008 were two patients, and sources check said nothing."""
    root = tmp_path / "btp"
    _btp(root, ("BraTS-MEN-00004-000", "BraTS-MEN-00008-000", "BraTS-MEN-00008-001"))
    (tmp_path / "BTP.yaml").write_text(BRATS.replace("MORE\n", ""))
    said = [p for p in check_source(str(tmp_path / "BTP.yaml"), root, sample=1).warnings
            if p["kind"] == "patient_id_timepoints"]
    assert len(said) == 1 and said[0]["path"] == "BTP.yaml:patient_id"
    msg = said[0]["message"]
    assert msg.startswith("1 of the 2 subject(s) the case ids name have several of them (BraTS-MEN-00008-000, "
                          "BraTS-MEN-00008-001), but patient_id is '{case}'"), msg
    assert "`patterns: {case: '(?P<subject>BraTS-MEN-\\d{5})-(?P<timepoint>\\d{3})'}` and `patient_id: '{subject}'`" in msg
    # as the message says: then nothing to warn of, and the timepoints are one patient
    (tmp_path / "BTP.yaml").write_text(BRATS.replace(
        "MORE", "patterns: {case: '(?P<subject>BraTS-MEN-\\d{5})-(?P<timepoint>\\d{3})'}\npatient_id: '{subject}'"))
    r = check_source(str(tmp_path / "BTP.yaml"), root, sample=1)
    assert r.cases == 3 and not [p for p in r.problems if p["kind"] == "patient_id_timepoints"]
    # a centre and a number (HECKTOR's CHUM-001): each id is a patient, nothing to say
    _btp(tmp_path / "hecktor", ("CHUM-001", "CHUM-002", "MDA-001"))
    (tmp_path / "BTP.yaml").write_text(BRATS.replace("MORE\n", ""))
    r = check_source(str(tmp_path / "BTP.yaml"), tmp_path / "hecktor", sample=1)
    assert r.cases == 3 and not [p for p in r.problems if p["kind"] == "patient_id_timepoints"]
