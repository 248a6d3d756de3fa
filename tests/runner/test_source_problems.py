"""Problems of a whole source (a missing root, a root that matches nothing, a broken dataset YAML)
and of pipeline.yaml itself are said, counted as errors, obey on_bad_case, and never publish an
empty release."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from curator.config import PipelineConfig
from curator.errors import ConfigError, CuratorError, ReleaseError, StageError
from curator.testing.pipelines import make_pipeline, run, table


def _sources(tmp: Path) -> list[dict[str, Any]]:
    (tmp / "empty").mkdir(parents=True, exist_ok=True)
    (tmp / "bad.yaml").write_text("name: Broken\nlayout: []\n")
    return [{"dataset": "KiTS23", "root": str(tmp / "no_such_folder")},
            {"dataset": "MSD_Spleen", "root": str(tmp / "empty")},
            {"dataset": str(tmp / "bad.yaml"), "root": str(tmp / "empty")}]


def test_source_errors_are_logged_and_counted_as_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """They were only rows of the problems table, counted as 'warnings', never printed."""
    pipe = make_pipeline(tmp_path, _sources(tmp_path))
    with caplog.at_level(logging.WARNING, logger="curator"):
        (report,) = run(pipe, stages=["ingest"]).reports
    assert report.errors == 3 and not report.clean and "3 errors" in report.line()
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    # named by its source (the pipeline.yaml entry), and, on the console only, by the folder its
    # root resolves to ("KiTS23:. [file_not_found] the source root is not a folder" left the user
    # guessing which path was looked at); the row, which is published, never holds the folder
    root = tmp_path / "no_such_folder"
    assert any(m.startswith(f"KiTS23:. (root: {root}) [file_not_found]") and "not a folder" in m
               for m in said), said
    rows = table(pipe, "problems__ingest").to_pylist()
    assert [r["path"] for r in rows if r["dataset"] == "KiTS23"] == ["KiTS23:."]
    assert not [r for r in rows if "no_such_folder" in str(r)], rows
    assert any("dataset.json" in m for m in said), said  # MSD's index file is not in the empty root
    assert any("bad.yaml" in m for m in said), said
    # the missing root is one problem: its metadata file is not a second one
    assert not [r for r in caplog.records if "kits23.json" in r.getMessage()]


def test_source_errors_stop_a_strict_run(tmp_path: Path) -> None:
    pipe = make_pipeline(tmp_path, _sources(tmp_path)[:1], stages={"ingest": {"on_bad_case": "error"}})
    with pytest.raises(StageError, match=r"stopped at KiTS23:\. \(root: .*no_such_folder\): the source root is "
                       "not a folder"):
        run(pipe, stages=["ingest"])
    tables = tmp_path / "workspace" / "tables"  # the problem is kept; the stopped stage's tables are not written
    assert (tables / "problems__ingest.parquet").exists() and not (tables / "cases.parquet").exists()


def test_a_run_that_found_no_case_writes_no_release(tmp_path: Path) -> None:
    """An empty release used to be written (exit 0), using up its immutable version number."""
    pipe = make_pipeline(tmp_path, _sources(tmp_path)[:2])
    with pytest.raises(ReleaseError) as e:
        run(pipe, release=True)
    assert "found no case" in str(e.value) and "root" in str(e.value)
    assert not (tmp_path / "releases" / "test" / "0.1.0").exists()


@pytest.mark.parametrize(("section", "value", "what"), [
    ("executor", "local", "executor must be a mapping"),
    ("release", "0.1.0", "release must be a mapping"),
    ("sources", ["KiTS23"], "sources[0] must be a mapping"),
    ("release", {"version": 1.0}, "release.version = '1.0' is not a semantic version"),
    ("release", {"version": "v2"}, "is not a semantic version"),
    ("release", {"version": "0.2.0", "parent": "latest"}, "release.parent = 'latest'"),
    ("release", {"collection": ""}, "cannot name a folder"),
    ("release", {"collection": "../up"}, "cannot name a folder"),
])
def test_malformed_sections_are_config_errors(tmp_path: Path, section: str, value: Any, what: str) -> None:
    """A scalar or list where a section's mapping belongs was an internal error ('This is a bug');
    a version that is not semantic was refused only after every stage had run."""
    p = tmp_path / "pipeline.yaml"
    p.write_text(yaml.safe_dump({"workspace": "ws", section: value}))
    with pytest.raises(ConfigError, match=re.escape(what)):
        PipelineConfig.load(p)


@pytest.mark.parametrize(("text", "said"), [
    ("workspace: ws\nsources:\n  - {dataset: MSD_Spleen}\n",  # was "SourceConfig.__init__() missing 1 required ..."
     "p.yaml: sources[0] (MSD_Spleen): `root:` is required (line 3)"),
    ("workspace: ws\nexecutor:\n  kind: local\n  workers: many\n",
     "p.yaml: executor.workers must be an integer, got 'many' (line 4)"),
    ("workspace: ws\nrelease:\n  collection: c\n  version: 1.0\n",
     "p.yaml: release.version = '1.0' is not a semantic version (line 4)"),
    ("workspace: ws\nstages:\n  preprocess: {target_spacing_mm: [2.0, 2.0, 4.0}\n",  # was in "<unicode string>"
     'in "p.yaml", line 3, column'),
])
def test_pipeline_yaml_mistakes_name_the_file_the_setting_and_its_line(tmp_path: Path, text: str, said: str) -> None:
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ConfigError) as e:
        PipelineConfig.load(tmp_path / "p.yaml")
    assert said in str(e.value) and "<unicode string>" not in str(e.value), str(e.value)


def test_a_top_level_seed_is_ignored_with_a_warning_naming_the_splits_seed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`seed:` at the top of pipeline.yaml was a valid setting that set nothing: recorded in
    release.json and shown by `curator diff` as a change, while the splits kept their own seed.
    It is no longer a setting; a file that still has it loads, with a warning saying where the
    splits' seed is, and the other settings' messages keep their lines."""
    p = tmp_path / "p.yaml"
    p.write_text("workspace: ws\nseed: 12345\nstages:\n  splits: {seed: 3}\n")
    with caplog.at_level(logging.WARNING, logger="curator"):
        cfg = PipelineConfig.load(p)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == [("p.yaml (line 2): the top-level `seed: 12345` is ignored: it never set anything (the splits' "
                    "seed is `stages.splits.seed`). What to do: delete it, or move it to "
                    "`stages: {splits: {seed: ...}}` if it was meant for the splits")], said
    assert "seed" not in cfg.to_dict() and cfg.stage("splits") == {"seed": 3}
    p.write_text("workspace: ws\nseed: 1\nsed: 1\n")  # no longer offered among the valid settings
    with pytest.raises(ConfigError) as e:
        PipelineConfig.load(p)
    assert "unknown setting(s) ['sed']" in str(e.value) and "'seed'" not in str(e.value)
    assert str(e.value).endswith("(line 3)"), str(e.value)


def test_a_yaml_boolean_where_a_word_belongs_says_to_quote_it(tmp_path: Path) -> None:
    """`on_bad_case: no` (YAML 1.1 reads it as false) was "stages.ingest.on_bad_case = False; expected one of ..."."""
    (tmp_path / "p.yaml").write_text(f"workspace: ws\nsources:\n  - {{dataset: KiTS23, root: {tmp_path}}}\n"
                                     "stages:\n  ingest:\n    on_bad_case: no\n")
    with pytest.raises(ConfigError) as e:
        run(tmp_path / "p.yaml", stages=["ingest"])
    text = str(e.value)
    assert text.startswith("p.yaml: stages.ingest.on_bad_case = False; expected one of"), text
    assert "YAML read an unquoted no, off or false as the boolean false: quote text" in text and "(line 6)" in text


@pytest.mark.parametrize(("setting", "value"), [("geometry_tolerance_mm", -1.0), ("max_voxels", 0)])
def test_impossible_ingest_settings_are_refused(tmp_path: Path, setting: str, value: Any) -> None:
    """geometry_tolerance_mm: -1 put a 'qform/sform up to 0 mm apart' warning on every case."""
    pipe = make_pipeline(tmp_path, _sources(tmp_path)[:1], stages={"ingest": {setting: value}})
    with pytest.raises(ConfigError, match=f"stages.ingest.{setting} = {value}"):
        run(pipe, stages=["ingest"])
    assert not (tmp_path / "workspace" / "stages" / "ingest" / "stage.json").exists()


def test_an_unreachable_dask_scheduler_is_a_config_error() -> None:
    from curator.runner.dask_executor import DaskExecutor

    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at 'no-port'"):
        DaskExecutor(1, "no-port")


def test_status_names_a_source_its_dataset_yaml_kept_out(tmp_path: Path) -> None:
    """A broken dataset YAML skipped its source, and `curator status` went on calling every
    stage current — current without that source."""
    import json

    from typer.testing import CliRunner

    from curator.cli import app

    pipe = make_pipeline(tmp_path, _sources(tmp_path)[2:])
    run(pipe, stages=["ingest"])
    res = CliRunner().invoke(app, ["status", str(pipe)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "source skipped bad.yaml" in res.output and "leaves it out" in res.output
    res = CliRunner().invoke(app, ["status", str(pipe), "--format", "json"])
    (skipped,) = json.loads(res.output)["sources_skipped"]
    assert skipped["file"] == "bad.yaml" and skipped["why"]


def test_status_names_a_source_whose_root_is_missing(tmp_path: Path) -> None:
    """After a run with an unmounted root, `curator status` called ingest current and listed no
    source as skipped: the missing root was said only by the release's refusal."""
    import json

    from typer.testing import CliRunner

    from curator.cli import app

    pipe = make_pipeline(tmp_path, _sources(tmp_path)[:2])
    run(pipe, stages=["ingest"])
    root = tmp_path / "no_such_folder"
    res = CliRunner().invoke(app, ["status", str(pipe)], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert f"source root missing KiTS23: {root} is not a folder" in text, text
    assert "MSD_Spleen:" not in text
    res = CliRunner().invoke(app, ["status", str(pipe), "--format", "json"])
    assert json.loads(res.output)["sources_root_missing"] == [{"source": "KiTS23", "root": str(root)}]


def test_a_source_file_changed_after_ingest_puts_it_out_of_date(tmp_path: Path) -> None:
    """`curator status` called every stage current, and `curator release` released the labels of
    a label file edited since: freshness looked at the sources' roots and specs, not their files."""
    from curator.runner.context import Context
    from curator.runner.freshness import stale_reasons
    from curator.testing.layouts import save_nifti
    from curator.testing.native import label_array, write_tree
    from curator.testing.phantoms import grid

    root = tmp_path / "raw"
    write_tree(root, [("img/a.nii.gz", "image", ()), ("lab/a.nii.gz", "label", (1,)),
                      ("img/b.nii.gz", "image", ()), ("lab/b.nii.gz", "label", (1,))])
    spec = {"name": "Toy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
            "citation": "@misc{toy, title={toy}}", "layout": [{"image": "img/{case}.nii.gz", "label": "lab/{case}.nii.gz"}],
            "labels": {"values": {1: "liver", 2: "spleen"}}}
    (tmp_path / "Toy.yaml").write_text(yaml.safe_dump(spec))
    pipe = make_pipeline(tmp_path, [{"dataset": str(tmp_path / "Toy.yaml"), "root": str(root)}])
    run(pipe, stages=["ingest"])
    ctx = lambda: Context(PipelineConfig.load(pipe))  # a fresh context per look
    assert not [r for r in stale_reasons(ctx()) if "since ingest ran" in r]
    save_nifti(root / "lab/b.nii.gz", label_array((2,), (8, 8, 4)), grid((8, 8, 4), (2.0, 2.0, 3.0), "LPS"))
    write_tree(root, [("img/c.nii.gz", "image", ())])
    (root / "img/a.nii.gz").unlink()
    (root / "lab/a.nii.gz").unlink()
    reasons = [r for r in stale_reasons(ctx()) if r.startswith("the source") or "case(s) of the sources" in r]
    assert reasons == ["the source files of 1 case(s) changed since ingest ran (e.g. Toy__b)",
                       "1 case(s) of the sources are new since ingest ran (e.g. Toy__c)",
                       "1 case(s) of the sources are gone since ingest ran (e.g. Toy__a)"]
    run(pipe, stages=["ingest"])
    assert not [r for r in stale_reasons(ctx()) if "since ingest ran" in r]


def test_a_release_does_not_leave_out_a_source_pipeline_yaml_lists(tmp_path: Path) -> None:
    """An unmounted root (or a broken dataset YAML) gave its source no case, and `curator run`
    published the other datasets with exit 0 — release.json listing the missing source too."""
    import numpy as np

    from curator.testing.layouts import write_kits_case
    from curator.testing.phantoms import Subject, grid, render

    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    img, lab = render(Subject.random(3), g, "CT", seed=3)
    write_kits_case(tmp_path / "kits", "case_00000", np.rint(img).astype(np.int16), (lab > 0).astype(np.uint8), g)
    good = {"dataset": "KiTS23", "root": str(tmp_path / "kits")}
    off = {s: {"enabled": False} for s in ("dedup", "pseudolabel", "qc")}
    cases = {"unmounted": ({"dataset": "MSD_Spleen", "root": str(tmp_path / "unmounted")}, "MSD_Spleen"),
             "broken_yaml": (_sources(tmp_path)[2], "bad.yaml")}
    for folder, (extra, named) in cases.items():
        pipe = make_pipeline(tmp_path / folder, [good, extra], stages=off)
        if folder == "broken_yaml":  # the message names the user's file, not "pipeline.yaml"
            pipe = pipe.rename(pipe.with_name("p3.yaml"))
        with pytest.raises(ReleaseError) as e:
            run(pipe, release=True)
        assert e.value.kind == "release_incomplete" and named in str(e.value) and "KiTS23" not in str(e.value)
        assert f"`curator status {pipe}`" in str(e.value) and f"source(s) of {pipe} gave no case" in str(e.value)
        assert not (tmp_path / folder / "releases" / "test" / "0.1.0").exists()
    # said on purpose: the release goes without them
    cfg = yaml.safe_load((tmp_path / "unmounted" / "pipeline.yaml").read_text())
    cfg["release"]["allow_missing_sources"] = True
    (tmp_path / "unmounted" / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    assert run(tmp_path / "unmounted" / "pipeline.yaml", release=True).release is not None
    # a broken file in `registry:` that no source uses leaves nothing out
    pipe = make_pipeline(tmp_path / "fixed", [good], stages=off, registry=[tmp_path / "bad.yaml"])
    assert run(pipe, release=True).release is not None


def test_the_card_of_a_release_without_a_missing_source_leaves_out_its_licence(tmp_path: Path) -> None:
    """A source left out under allow_missing_sources (no case in the release) still set the
    card's licences and licence summary: the MSD_Spleen share-alike bound a release without it."""
    import numpy as np

    from curator.release.card_check import split_front_matter
    from curator.testing.layouts import write_kits_case
    from curator.testing.phantoms import Subject, grid, render

    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    img, lab = render(Subject.random(3), g, "CT", seed=3)
    write_kits_case(tmp_path / "kits", "case_00000", np.rint(img).astype(np.int16), (lab > 0).astype(np.uint8), g)
    off = {s: {"enabled": False} for s in ("dedup", "pseudolabel", "qc")}
    pipe = make_pipeline(tmp_path, [{"dataset": "KiTS23", "root": str(tmp_path / "kits")},
                                    {"dataset": "MSD_Spleen", "root": str(tmp_path / "unmounted")}], stages=off)
    cfg = yaml.safe_load(pipe.read_text())
    cfg["release"]["allow_missing_sources"] = True
    pipe.write_text(yaml.safe_dump(cfg))
    release = run(pipe, release=True).release
    assert release is not None
    card = (release / "DATASET_CARD.md").read_text()
    front, body, _ = split_front_matter(card)
    assert front is not None and front["datasets"] == ["KiTS23"] and front["licences"] == ["CC-BY-NC-SA-4.0"]
    assert [s["name"] for s in front["sources"]] == ["KiTS23"]
    assert front["licence_summary"]["share_alike"] == ["KiTS23"]
    constraints = body.split("## Licence constraints")[1].split("## Lineage")[0]
    assert "MSD_Spleen" not in constraints and "MSD" not in (release / "CITATIONS.bib").read_text()
    assert "left out (`allow_missing_sources`): MSD_Spleen" in body


def test_no_problem_row_or_release_json_carries_a_local_folder_name(tmp_path: Path) -> None:
    """A source root named after a patient (a one-patient export) reached problems.message
    ('DOE_JANE_MRN123: the source root is not a folder') and release.json's sources; an
    absolute path in a dataset YAML was echoed whole."""
    import json

    from curator.errors import InputError
    from curator.io.confined import confine
    from curator.release.lineage import published_config
    from curator.runner.context import Context
    from curator.runner.stage import problem_row

    pipe = make_pipeline(tmp_path, [{"dataset": "KiTS23", "root": str(tmp_path / "DOE_JANE_MRN123")}])
    run(pipe, stages=["ingest"])
    rows = table(pipe, "problems__ingest").to_pylist()
    assert rows and not [r for r in rows if "DOE_JANE" in json.dumps(r)], rows
    assert "the source root is not a folder" in rows[0]["message"]
    assert "DOE_JANE" not in json.dumps(published_config(Context(PipelineConfig.load(pipe))))
    with pytest.raises(InputError) as e:
        confine(tmp_path, str(tmp_path / "ROOT_DR_HARRIS" / "clinical.csv"))
    row = problem_row("ingest", e.value, dataset="KiTS23", case_id=None, path="KiTS23:.")
    assert "DR_HARRIS" not in row["message"] and "leaves the source root" in row["message"]


@pytest.mark.parametrize(("stage", "setting"), [("qc", {"overrides": "nope.yaml"}),
                                                ("pseudolabel", {"ensemble": "ens/nope.yaml"}),
                                                ("pseudolabel", {"models": [{"name": "m", "kind": "torchscript",
                                                                             "path": "gone.pt"}]})])
def test_a_settings_file_that_is_not_there_is_refused_before_any_stage(tmp_path: Path, stage: str,
                                                                        setting: dict[str, Any]) -> None:
    """A missing QC overrides file or model file was found when its stage started, after ingest,
    dedup, harmonize and preprocess had run (hours, on real data)."""
    pipe = make_pipeline(tmp_path, [{"dataset": "KiTS23", "root": str(tmp_path)}], stages={stage: setting})
    with pytest.raises(CuratorError) as e:
        run(pipe)
    assert "nope.yaml" in str(e.value) or "gone.pt" in str(e.value)
    assert not (tmp_path / "workspace" / "tables" / "cases.parquet").exists()


def test_status_says_a_release_would_be_refused_when_ingest_found_nothing(tmp_path: Path) -> None:
    """Status said 'ready' and `--check` exited 0 after an ingest that found no case (or left a
    source out), and `curator release` then refused."""
    import json

    from typer.testing import CliRunner

    from curator.cli import app

    pipe = make_pipeline(tmp_path, _sources(tmp_path)[:2])
    run(pipe)  # every stage, no release
    res = CliRunner().invoke(app, ["status", str(pipe), "--check"], env={"COLUMNS": "200"})
    assert res.exit_code == 1 and "would be refused" in res.output and "found no case" in res.output
    res = CliRunner().invoke(app, ["status", str(pipe), "--format", "json"])
    rel = json.loads(res.output)["release"]
    assert rel["would_write"] is False and "found no case" in rel["refused_because"]
    assert rel["refused_reason"] == "no_cases"


def test_status_json_says_why_a_release_would_not_be_written(tmp_path: Path) -> None:
    """`status -f json` gave `would_write: false` with `refused_because: null` when the release
    existed or the tables were out of date, which the table output said (tester 33 #3): each
    refusal has its reason (a stable word) and its message."""
    import json

    import numpy as np
    from typer.testing import CliRunner

    from curator.cli import app
    from curator.testing.layouts import write_kits_case
    from curator.testing.phantoms import Subject, grid, render

    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    img, lab = render(Subject.random(3), g, "CT", seed=3)
    write_kits_case(tmp_path / "kits", "case_00000", np.rint(img).astype(np.int16), (lab > 0).astype(np.uint8), g)
    pipe = make_pipeline(tmp_path / "p", [{"dataset": "KiTS23", "root": str(tmp_path / "kits")},
                                          {"dataset": "MSD_Spleen", "root": str(tmp_path / "unmounted")}],
                         stages={s: {"enabled": False} for s in ("dedup", "pseudolabel", "qc")})

    def release() -> dict[str, Any]:
        res = CliRunner().invoke(app, ["status", str(pipe), "--format", "json"])
        got: dict[str, Any] = json.loads(res.stdout)["release"]
        assert got["would_write"] is (got["refused_because"] is None), got  # a refusal always says why
        assert got["would_write"] is (got["refused_reason"] is None), got
        return got

    rel = release()  # nothing ran yet
    assert rel["refused_reason"] == "stale" and "out of date" in rel["refused_because"]
    assert "ingest has not run" in rel["refused_because"] and f"curator run {pipe}" in rel["refused_because"]
    run(pipe)  # every stage, no release: the unmounted source gave no case
    rel = release()
    assert rel["refused_reason"] == "sources_missing" and "MSD_Spleen" in rel["refused_because"]
    cfg = yaml.safe_load(pipe.read_text())
    cfg["release"]["allow_missing_sources"] = True
    pipe.write_text(yaml.safe_dump(cfg))
    assert release()["would_write"] is True
    assert run(pipe, release=True).release is not None
    rel = release()
    assert rel["refused_reason"] == "exists" and rel["exists"] is True
    assert "already exists" in rel["refused_because"] and "release.version" in rel["refused_because"]


def test_the_lock_names_the_command_that_holds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While `curator preprocess` ran, a second command was told the workspace was 'in use by
    curator run'."""
    from curator.workspace import Workspace

    held: list[str] = []
    real = Workspace.locked
    monkeypatch.setattr(Workspace, "locked", lambda self, command="run": held.append(command) or real(self, command))
    pipe = make_pipeline(tmp_path, _sources(tmp_path)[2:])
    run(pipe, stages=["ingest"])
    run(pipe, stages=["ingest", "dedup"])
    assert held == ["ingest", "run"]


def test_a_section_given_twice_in_pipeline_yaml_is_refused(tmp_path: Path) -> None:
    """YAML kept the last of two equal keys: a second `stages:` block silently dropped the first."""
    p = tmp_path / "pipeline.yaml"
    p.write_text("workspace: work\nstages:\n  ingest: {on_bad_case: error}\nsources: []\n"
                 "stages:\n  qc: {enabled: false}\n")
    with pytest.raises(ConfigError) as e:
        PipelineConfig.load(p)
    assert "found key 'stages' a second time (first on line 2)" in str(e.value)


def test_registry_folder_files_a_source_uses_or_not(tmp_path: Path) -> None:
    """A tester's `registry:` folder held two files naming one dataset (the swapped-label copy
    and the good one) and files for other datasets, some broken: the run used the alphabetically
    first of the two (its liver published as spleen), every broken file's row said "this source was
    skipped" though no source named it, and a file with a wrong modality was used anyway."""
    import numpy as np

    from curator.testing.layouts import write_kits_case
    from curator.testing.phantoms import Subject, grid, render

    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    img, lab = render(Subject.random(3), g, "CT", seed=3)
    write_kits_case(tmp_path / "kits", "case_00000", np.rint(img).astype(np.int16), (lab > 0).astype(np.uint8), g)
    from curator.registry import builtin_dir

    kits = yaml.safe_load(next(builtin_dir().glob("KiTS23.y*ml")).read_text())
    reg = tmp_path / "reg"
    reg.mkdir()
    mine = {**kits, "name": "MyKidneys"}
    (reg / "a_mine.yaml").write_text(yaml.safe_dump(mine))
    (reg / "b_mine_copy.yaml").write_text(yaml.safe_dump({**mine, "labels": {**mine["labels"]}}))
    (reg / "c_other.yaml").write_text(yaml.safe_dump({**kits, "name": "Other", "modality": "MRI"}))
    off = {s: {"enabled": False} for s in ("dedup", "pseudolabel", "qc")}
    src = {"dataset": "MyKidneys", "root": str(tmp_path / "kits")}

    # a name two files define: which one is meant cannot be guessed, so the run is refused up front
    pipe = make_pipeline(tmp_path / "twice", [src], stages=off, registry=[reg])
    with pytest.raises(ConfigError, match=r"'MyKidneys' is defined in a_mine.yaml and b_mine_copy.yaml"):
        run(pipe, release=True)
    assert not (tmp_path / "twice" / "workspace" / "tables" / "cases.parquet").exists()

    # one file for it: the run goes on; the broken file no source uses is a warning that says so
    (reg / "b_mine_copy.yaml").unlink()
    pipe = make_pipeline(tmp_path / "once", [src], stages=off, registry=[reg])
    res = run(pipe, release=True)
    assert res.release is not None
    rows = [r for r in pq_rows(tmp_path / "once", "problems__ingest") if r["path"] == "c_other.yaml"]
    assert [(r["severity"], r["message"].endswith("no source of this pipeline uses it")) for r in rows] == \
        [("warning", True)]

    # a source naming the broken dataset is skipped (not run with the wrong modality): the release
    # is refused as incomplete, naming it
    pipe = make_pipeline(tmp_path / "used", [src, {"dataset": "Other", "root": str(tmp_path / "kits")}],
                         stages=off, registry=[reg])
    with pytest.raises(ReleaseError) as e:
        run(pipe, release=True)
    assert e.value.kind == "release_incomplete" and "Other (modality 'MRI'" in str(e.value)
    rows = [r for r in pq_rows(tmp_path / "used", "problems__ingest") if r["path"] == "c_other.yaml"]
    assert [(r["severity"], r["message"].endswith("the source naming dataset Other was skipped")) for r in rows] == \
        [("error", True)]
    cases = pq_rows(tmp_path / "used", "cases")
    assert {c["source"] for c in cases} == {"MyKidneys"}


def pq_rows(folder: Path, table: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(folder / "workspace" / "tables" / f"{table}.parquet").to_pylist()


def test_a_source_that_gave_no_case_stops_the_run_after_ingest(tmp_path: Path) -> None:
    """A misspelt root was said (release_incomplete) only after dedup, harmonize, preprocess,
    pseudolabel and qc had run — hours on real data — though ingest already knew."""
    import numpy as np

    from curator.testing.layouts import write_kits_case
    from curator.testing.phantoms import Subject, grid, render

    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    img, lab = render(Subject.random(3), g, "CT", seed=3)
    write_kits_case(tmp_path / "kits", "case_00000", np.rint(img).astype(np.int16), (lab > 0).astype(np.uint8), g)
    srcs = [{"dataset": "KiTS23", "root": str(tmp_path / "kits")},
            {"dataset": "MSD_Spleen", "root": str(tmp_path / "not_there")}]
    pipe = make_pipeline(tmp_path, srcs, stages={"pseudolabel": {"enabled": False}})
    with pytest.raises(ReleaseError) as e:
        run(pipe, release=True)
    assert e.value.kind == "release_incomplete" and "MSD_Spleen" in str(e.value)
    stages = tmp_path / "workspace" / "stages"
    assert (stages / "ingest" / "stage.json").exists() and not (stages / "dedup" / "stage.json").exists()
    # without a release, or with the source's absence allowed, the stages run on
    assert run(pipe, release=False).reports[-1].stage == "qc"


def test_a_missing_or_broken_taxonomy_is_refused_before_any_stage_runs(tmp_path: Path) -> None:
    """A misspelt or broken `stages.harmonize.taxonomy` was found when harmonize started, after
    ingest and dedup had run (hours of hashing on a real collection)."""
    (tmp_path / "empty").mkdir()
    sources = [{"dataset": "MSD_Spleen", "root": str(tmp_path / "empty")}]
    pipe = make_pipeline(tmp_path, sources, stages={"harmonize": {"taxonomy": "nope.yaml"}})
    with pytest.raises(ConfigError, match="stages.harmonize names file") as e:
        run(pipe)
    assert "nope.yaml" in e.value.detail and not (tmp_path / "workspace" / "tables").exists()
    (tmp_path / "lab.yaml").write_text("extends: base.yaml\n")
    pipe = make_pipeline(tmp_path, sources, stages={"harmonize": {"taxonomy": str(tmp_path / "lab.yaml")}})
    with pytest.raises(ConfigError, match="base.yaml"):  # the file it extends is missing
        run(pipe)
    (tmp_path / "base.yaml").write_text("extends: curator\nterms:\n- {id: liver, name: liver, category: organ, "
                                        "region: abdomen}\n")
    with pytest.raises(CuratorError, match="already a term of the taxonomy this file extends") as e:
        run(pipe)
    assert e.value.kind == "registry_error" and not (tmp_path / "workspace" / "tables").exists()
