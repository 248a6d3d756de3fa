"""A release is refused when the workspace's tables are not what pipeline.yaml would produce
now: a stage never run, run under other settings, sources or code, or older than a stage
before it. Cached re-runs make it current again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from curator.cli import app
from curator.config import PipelineConfig
from curator.dedup.stage import DedupConfig
from curator.errors import ReleaseError
from curator.pipeline import run_pipeline
from curator.qc.stage import QCStage
from curator.release.build import build_release
from curator.runner.context import Context
from tests.release.helpers import set_version


def _edit(pipeline: Path, version: str, **stages: dict[str, object]) -> PipelineConfig:
    cfg = yaml.safe_load(pipeline.read_text())
    for name, settings in stages.items():
        cfg["stages"].setdefault(name, {}).update(settings)
    pipeline.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return set_version(pipeline, version)


def _relative_paths(demo: Path, base: Path) -> None:
    """Make every path in the demo copy's pipeline.yaml (sources, registry: under ``base``, the
    folder it was copied from) relative to its folder."""
    text = (demo / "pipeline.yaml").read_text().replace(f"{base}/", "")
    assert str(base) not in text and str(demo) not in text and "raw/" in text
    (demo / "pipeline.yaml").write_text(text)


def _refused(cfg: PipelineConfig) -> str:
    with pytest.raises(ReleaseError) as e:
        build_release(Context(cfg))
    assert e.value.kind == "release_stale"
    assert not (Path(cfg.release.root) / cfg.release.collection / cfg.release.version).exists()
    return e.value.detail


def test_changed_settings_are_refused_until_the_stage_runs_again(demo: Path) -> None:
    pipeline = demo / "pipeline.yaml"
    cfg = _edit(pipeline, "0.2.0", qc={"min_cohort": 6})
    detail = _refused(cfg)
    assert detail.endswith("qc ran with other settings (min_cohort: 5 → 6)")
    result = run_pipeline(cfg)  # every stage, cached where nothing changed
    assert result.release is not None and result.release.name == "0.2.0"
    assert [r.ran for r in result.reports if r.stage != "qc"] == [0, 0, 0, 0, 0]
    info = json.loads((result.release / "release.json").read_text())
    assert info["stages"]["qc"]["config"]["min_cohort"] == info["pipeline_config"]["stages"]["qc"]["min_cohort"] == 6


def test_a_stage_run_again_alone_makes_the_later_ones_out_of_date(demo: Path) -> None:
    cfg = set_version(demo / "pipeline.yaml", "0.2.0")
    build_release(Context(cfg))  # current: no refusal
    cfg = set_version(demo / "pipeline.yaml", "0.3.0")
    run_pipeline(cfg, stages=["harmonize"], release=False)
    detail = _refused(cfg)
    assert "harmonize ran again after preprocess" in detail and "harmonize ran again after qc" in detail
    assert "dedup" not in detail  # dedup comes before harmonize
    run_pipeline(cfg, stages=["preprocess", "pseudolabel", "qc"], release=False)
    assert build_release(Context(cfg)).name == "0.3.0"


def test_a_subset_run_that_would_release_stale_tables_is_refused_before_any_work(demo: Path) -> None:
    cfg = set_version(demo / "pipeline.yaml", "0.2.0")
    record = demo / "workspace" / "stages" / "harmonize" / "stage.json"
    before = record.read_bytes()
    with pytest.raises(ReleaseError) as e:
        run_pipeline(cfg, stages=["harmonize"])
    assert e.value.kind == "release_stale" and "preprocess would be older than harmonize" in e.value.detail
    assert record.read_bytes() == before  # harmonize did not run
    # disabling the later stages makes that subset a complete pipeline
    cfg = _edit(demo / "pipeline.yaml", "0.2.0", preprocess={"enabled": False}, pseudolabel={"enabled": False},
                qc={"enabled": False})
    rel = run_pipeline(cfg, stages=["harmonize"]).release
    assert rel is not None and not (rel / "qc.parquet").exists()


def test_a_stage_that_never_ran_other_sources_and_other_code_are_refused(
        demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = demo / "pipeline.yaml"
    cfg = set_version(pipeline, "0.2.0")
    qc_record = demo / "workspace" / "stages" / "qc" / "stage.json"
    saved = qc_record.read_bytes()
    qc_record.unlink()  # its case results are there: as after an interrupted run
    kept = len(list((qc_record.parent / "cases").glob("*/*.json")))
    assert kept and _refused(cfg).endswith(f"qc has not finished a run: {kept} case(s) of an interrupted or stopped "
                                           "run are kept, and the next run resumes from them")
    qc_record.write_bytes(saved)

    monkeypatch.setattr(QCStage, "version", QCStage.version + "-next")
    assert "qc ran with stage version" in _refused(cfg)
    monkeypatch.undo()

    raw = yaml.safe_load(pipeline.read_text())
    raw["sources"] = raw["sources"][:-1]  # a source taken out of pipeline.yaml
    pipeline.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert "ingest ran with other sources" in _refused(PipelineConfig.load(pipeline))


def test_other_sources_are_named(demo: Path) -> None:
    """The sources added and removed and the dataset YAMLs edited are named ("ran with other
    sources" alone did not say which of them); a record without per-source facts (an older
    curator's) still gives the general sentence."""
    pipeline = demo / "pipeline.yaml"
    raw = yaml.safe_load(pipeline.read_text())
    raw["sources"].pop()  # DemoPancreasDICOM
    raw["sources"].append({**raw["sources"][0], "name": "Spleen2"})
    spec = Path(raw["sources"][2]["dataset"])  # DemoTotalSeg's, edited in a copy
    assert spec.name == "DemoTotalSeg.yaml"
    (demo / spec.name).write_text(spec.read_text().replace('version: "1.0"', 'version: "1.1"'))
    raw["sources"][2]["dataset"] = str(demo / spec.name)
    pipeline.write_text(yaml.safe_dump(raw, sort_keys=False))
    detail = _refused(set_version(pipeline, "0.2.0"))
    assert ("ingest ran with other sources (added Spleen2; removed DemoPancreasDICOM; DemoTotalSeg's dataset "
            "YAML changed)") in detail, detail
    root = raw["sources"][0]["root"]
    raw["sources"][0]["root"] = str(demo / "elsewhere")
    pipeline.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert f"MSD_Spleen's root changed (now {demo}/elsewhere)" in _refused(set_version(pipeline, "0.2.0"))

    record = demo / "workspace" / "stages" / "ingest" / "stage.json"
    assert str(root) not in record.read_text()  # kept as a digest: a folder may be named after a person
    rec = json.loads(record.read_text())
    del rec["sources"]
    record.write_text(json.dumps(rec))
    assert ("ingest ran with other sources (pipeline.yaml's `sources:` or their dataset specs changed since)"
            in _refused(set_version(pipeline, "0.2.0")))


def test_cli_release_names_the_stale_stage_and_what_to_do(demo: Path) -> None:
    _edit(demo / "pipeline.yaml", "0.2.0", dedup={"global_radius": 3})
    res = CliRunner().invoke(app, ["release", str(demo / "pipeline.yaml")])
    assert res.exit_code != 0
    text = " ".join(res.output.split())
    assert "release_stale" in text and "dedup ran with other settings (global_radius:" in text
    named = text.split("`curator run ", 1)[1].split("`", 1)[0]  # the file given (a long path may be folded)
    assert named.replace(" ", "") == str(demo / "pipeline.yaml")


def test_the_remedies_name_the_pipeline_file_the_user_gave(demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`curator release p_typo.yaml` said to run `curator run pipeline.yaml`, a file the user
    may not have (or one with other settings); `curator status` named the real one."""
    monkeypatch.chdir(demo)
    (demo / "pipeline.yaml").rename(demo / "p3.yaml")
    _edit(demo / "p3.yaml", "0.2.0", qc={"min_cohort": 6})
    runner = CliRunner()
    res = runner.invoke(app, ["release", "p3.yaml"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "release_stale" in text, text
    assert "out of date with p3.yaml" in text and "`curator run p3.yaml`" in text and "pipeline.yaml" not in text
    status = " ".join(runner.invoke(app, ["status", "p3.yaml"]).output.split())
    assert "`curator run p3.yaml`" in status and "pipeline.yaml" not in status


@pytest.mark.parametrize(("typo", "meant"), [("harmonise", "harmonize"), ("qcc", "qc")])
def test_a_misspelt_stage_section_is_refused_by_status_and_release_as_by_run(demo: Path, typo: str,
                                                                             meant: str) -> None:
    """`harmonise:` under `stages:` was refused by `curator run` but shown as ready by `curator
    status` and published in release.json by `curator release`; `qcc:` made status blame qc's
    settings. Every command that reads the file now refuses it with the same message."""
    cfg = yaml.safe_load((demo / "pipeline.yaml").read_text())
    cfg["release"]["version"] = "0.2.0"
    cfg["stages"][typo] = cfg["stages"].pop(meant, {})
    typo_file = demo / "p_typo.yaml"
    typo_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
    runner = CliRunner()
    for args in (["status", str(typo_file)], ["status", "--check", str(typo_file)], ["release", str(typo_file)],
                 ["run", str(typo_file), "--no-progress"]):
        res = runner.invoke(app, args)
        text = " ".join(res.output.split())
        assert res.exit_code == 2, (args, res.output)
        assert f"stages: names no stage: '{typo}' (did you mean '{meant}'?)" in text, (args, text)
    assert not (demo / "releases" / "demo" / "0.2.0").exists()


def test_a_moved_project_run_from_elsewhere_reads_its_own_files_and_recomputes_nothing(
        demo: Path, demo_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths in pipeline.yaml — sources, registry, and stage settings naming files (a
    model ensemble, a taxonomy, QC overrides) — are relative to pipeline.yaml's folder, not to
    where the run starts; moving the whole project re-runs no case (model files are keyed by
    content, not location)."""
    import shutil

    from curator.pseudolabel.models import MODELS_DIR
    from curator.taxonomy import default_path

    shutil.copytree(MODELS_DIR, demo / "mymodels")
    (demo / "tax").mkdir()
    shutil.copy(default_path(), demo / "tax" / "taxonomy.yaml")
    (demo / "qc_overrides.yaml").write_text("- {case_id: nobody, term: liver}\n")
    _relative_paths(demo, demo_base)
    _edit(demo / "pipeline.yaml", "0.2.0", pseudolabel={"ensemble": "mymodels/demo.yaml"},
          harmonize={"taxonomy": "tax/taxonomy.yaml"}, qc={"overrides": "qc_overrides.yaml"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    first = run_pipeline(PipelineConfig.load(demo / "pipeline.yaml"))
    assert first.release is not None
    rows = pq.read_table(first.release / "problems.parquet").to_pylist()
    assert [r["kind"] for r in rows if r["case_id"] == "nobody"] == ["override_unmatched"]  # overrides read
    info = json.loads((first.release / "release.json").read_text())
    assert info["taxonomy"]["file"] == "taxonomy.yaml"

    moved = tmp_path / "moved"
    shutil.move(str(demo), moved)
    set_version(moved / "pipeline.yaml", "0.3.0")
    again = run_pipeline(PipelineConfig.load(moved / "pipeline.yaml"))
    assert again.release == moved / "releases" / "demo" / "0.3.0"
    assert {r.stage: r.ran for r in again.reports} == dict.fromkeys(
        ("ingest", "dedup", "harmonize", "preprocess", "pseudolabel", "qc"), 0)

    # the files those settings name are part of what a stage ran with
    cfg = set_version(moved / "pipeline.yaml", "0.4.0")
    with open(moved / "tax" / "taxonomy.yaml", "a") as f:
        f.write("# edited\n")
    assert _refused(cfg).endswith("harmonize ran with another version of the taxonomy file")
    (moved / "tax" / "taxonomy.yaml").write_bytes(default_path().read_bytes())
    (moved / "qc_overrides.yaml").unlink()
    assert _refused(cfg).endswith("qc's settings name the overrides file, which is missing")
    (moved / "qc_overrides.yaml").write_text("- {case_id: somebody, term: liver}\n")
    assert _refused(cfg).endswith("qc ran with another version of the overrides file")
    run_pipeline(cfg, stages=["qc"], release=False)
    rel = build_release(Context(cfg))
    rows = pq.read_table(rel / "problems.parquet").to_pylist()
    assert [r["case_id"] for r in rows if r["kind"] == "override_unmatched"] == ["somebody"]


def test_status_shows_each_stage_and_whether_the_release_would_be_written(demo: Path) -> None:
    pipeline = str(demo / "pipeline.yaml")
    runner = CliRunner()
    res = runner.invoke(app, ["status", pipeline, "--check"])
    assert res.exit_code == 1, res.output  # demo 0.1.0 exists
    assert "exists" in res.output
    set_version(demo / "pipeline.yaml", "0.2.0")
    res = runner.invoke(app, ["status", pipeline, "--check"])
    assert res.exit_code == 0, res.output
    assert "ready" in res.output and res.output.count("current") == 6
    _edit(demo / "pipeline.yaml", "0.2.0", qc={"min_cohort": 6}, dedup={"enabled": False})
    res = runner.invoke(app, ["status", pipeline, "--check", "--format", "json"])
    assert res.exit_code == 1
    doc = json.loads(res.output)
    states = {s["stage"]: s for s in doc["stages"]}
    assert [n for n, s in states.items() if s["current"] is False] == ["qc"]
    assert states["dedup"]["current"] is None and not states["dedup"]["enabled"]  # disabled: not released
    assert states["qc"]["reasons"] == [  # its cohorts left out the copies dedup dropped
        "qc ran with other settings (min_cohort: 5 → 6)",
        "qc ran while dedup was enabled (its tables hold dedup's results, which the release now leaves out)"]
    assert states["qc"]["last_run"]["planned"] > 0 and doc["release"]["would_write"] is False
    _edit(demo / "pipeline.yaml", "0.2.0", qc={"min_cohort": 5}, dedup={"enabled": True},
          pseudolabel={"review_fraction": 0.1})
    doc = json.loads(runner.invoke(app, ["status", pipeline, "--format", "json"]).output)
    states = {s["stage"]: s for s in doc["stages"]}
    assert [n for n, s in states.items() if s["current"] is False] == ["pseudolabel"]
    assert states["qc"]["after_out_of_date"] == "pseudolabel" and states["dedup"]["after_out_of_date"] is None
    text = " ".join(runner.invoke(app, ["status", pipeline], env={"COLUMNS": "300"}).output.split())
    assert "current, but after pseudolabel, which is not" in text


def test_release_json_records_each_stage_run_without_machine_paths(demo: Path, tmp_path: Path) -> None:
    overrides = tmp_path / "private" / "qc_overrides.yaml"
    overrides.parent.mkdir()
    overrides.write_text("- {case_id: nobody, term: liver}\n")
    cfg = _edit(demo / "pipeline.yaml", "0.2.0", qc={"overrides": str(overrides)})
    rel = run_pipeline(cfg).release
    assert rel is not None
    text = (rel / "release.json").read_text()
    assert str(tmp_path) not in text and str(demo) not in text
    info = json.loads(text)
    qc = info["stages"]["qc"]
    assert qc["config"]["overrides"] == "qc_overrides.yaml" and qc["config"]["min_cohort"] == 5
    record = json.loads((demo / "workspace" / "stages" / "qc" / "stage.json").read_text())
    assert qc["run_id"] == record["run_id"] and qc["config_hash"] == record["config_hash"]


def test_a_review_import_after_qc_puts_qc_out_of_date_until_it_judges_the_revised_labels(
        demo: Path, tmp_path: Path) -> None:
    import nibabel as nib

    from curator.pseudolabel.review import export_review
    from curator.pseudolabel.review_import import import_review

    cfg = set_version(demo / "pipeline.yaml", "0.2.0")
    ctx = Context(cfg)
    ws = ctx.workspace
    att = ws.read_table("attention")
    assert att is not None
    out = tmp_path / "review"
    cid = export_review(ws.root, att.to_pylist(), out, top=1, images=False).cases[0]
    pseudo = nib.load(out / cid / "pseudo.nii.gz")
    data = pseudo.get_fdata().astype("uint8")
    first = data[data > 0].min()
    at = np.argwhere(data == first)
    data[tuple(at[: len(at) // 2].T)] = 0  # the reviewer trims one term; the others stay pseudo labels
    nib.save(nib.Nifti1Image(data, pseudo.affine), out / cid / "revised.nii.gz")
    assert import_review(ws, out)[0] == [cid]
    detail = _refused(cfg)
    assert detail.split(": ", 1)[1] == "qc ran before a change to the revised labels (`curator review import`)"
    run_pipeline(cfg, stages=["qc"], release=False)
    judged = pq.read_table(ws.table_path("qc")).to_pylist()
    assert any(r["case_id"] == cid and r["origin"] == "revised" for r in judged)
    assert build_release(Context(cfg)).name == "0.2.0"


def test_disabling_a_stage_puts_the_stages_computed_from_it_out_of_date_when_they_depend_on_it(
        demo: Path) -> None:
    pipeline = demo / "pipeline.yaml"
    # qc judged the pseudo labels: without pseudolabel, the release leaves them out
    cfg = _edit(pipeline, "0.2.0", pseudolabel={"enabled": False})
    assert _refused(cfg).split(": ", 1)[1] == ("qc ran while pseudolabel was enabled (its tables hold pseudolabel's results, "
                             "which the release now leaves out)")
    run_pipeline(cfg, stages=["qc"], release=False)
    rel = build_release(Context(cfg))
    assert {r["origin"] for r in pq.read_table(rel / "qc.parquet").to_pylist()} == {"original"}
    cfg = _edit(pipeline, "0.3.0", pseudolabel={"enabled": True})  # and back: qc has not judged them
    assert _refused(cfg).split(": ", 1)[1] == "qc ran while pseudolabel was disabled"

    # a disabled stage whose own results are out of date: what was computed from them is too
    cfg = _edit(pipeline, "0.3.0", pseudolabel={"enabled": True}, preprocess={"enabled": False})
    run_pipeline(cfg, stages=["pseudolabel", "qc"], release=False)
    build_release(Context(cfg))  # preprocess disabled but current: nothing to refuse
    cfg = _edit(pipeline, "0.4.0", preprocess={"crop_margin_mm": 7.0})
    detail = _refused(cfg)
    assert ("pseudolabel was computed from preprocess's results, which are out of date (preprocess is "
            "disabled: preprocess ran with other settings (crop_margin_mm:") in detail
    assert "qc was computed from preprocess's results" in detail


def test_a_moved_project_with_sources_inside_it_is_released_without_running_again(
        demo: Path, demo_base: Path, tmp_path: Path) -> None:
    import shutil

    _relative_paths(demo, demo_base)
    run_pipeline(set_version(demo / "pipeline.yaml", "0.2.0"), release=False)  # records written here
    moved = tmp_path / "moved"
    shutil.move(str(demo), moved)
    assert build_release(Context(set_version(moved / "pipeline.yaml", "0.3.0"))).name == "0.3.0"


def test_status_names_an_unreadable_model_file_and_a_running_pipeline(demo: Path) -> None:
    import shutil

    from curator.pseudolabel.models import MODELS_DIR

    shutil.copytree(MODELS_DIR, demo / "mymodels")
    cfg = _edit(demo / "pipeline.yaml", "0.2.0", pseudolabel={"ensemble": "mymodels/demo.yaml"})
    run_pipeline(cfg, release=False)
    (demo / "mymodels" / "demo_unet.pt").unlink()
    pipeline = str(demo / "pipeline.yaml")
    res = CliRunner().invoke(app, ["status", pipeline, "--check", "--format", "json"])
    assert res.exit_code == 1, res.output
    doc = json.loads(res.output)
    reasons = {s["stage"]: s["reasons"] for s in doc["stages"]}
    assert reasons["pseudolabel"] == [(
        f"pseudolabel's settings name a file that cannot be read (model 'demo_unet': file "
        f"{demo / 'mymodels' / 'demo_unet.pt'} does not exist. What to do: fix the model's path/weights in "
        "stages.pseudolabel)")]
    assert doc["in_use_by"] is None
    with Context(cfg).workspace.locked("run"):
        res = CliRunner().invoke(app, ["status", pipeline])
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "the workspace is in use by curator run (pid" in text


def test_settings_an_upgrade_changed_are_said_as_this_curators_not_the_users(demo: Path) -> None:
    """A workspace made by an older curator whose dedup had no `global_neighbours` and another
    `keep` default: status said 'dedup ran with other settings (global_neighbours: null → 8, keep:
    … → …)', as if pipeline.yaml had been edited. Now each is said as what it is; a setting
    pipeline.yaml gives still reads as before."""
    record = demo / "workspace" / "stages" / "dedup" / "stage.json"
    rec = json.loads(record.read_text())
    keep = rec["config"]["keep"]
    rec["config"].pop("global_neighbours")
    rec["config"]["keep"] = [k for k in keep if k != "fov"]
    rec["config"]["global_radius"] = 3
    rec["config_hash"] = "0" * 16  # what the older code hashed
    record.write_text(json.dumps(rec))
    cfg = _edit(demo / "pipeline.yaml", "0.2.0", dedup={"global_radius": 4})  # given, as the default
    assert ("dedup ran with other settings (global_neighbours: 8 (a setting this curator added), global_radius: "
            f"3 → 4, keep: {json.dumps(rec['config']['keep'])} → {json.dumps(keep)} (this curator's default))"
            ) in _refused(cfg)


def test_a_setting_removed_from_pipeline_yaml_is_said_as_the_users_not_this_curators(demo: Path) -> None:
    """dedup run with `keep:` and `prefer_datasets:` set, which the user then deletes from
    pipeline.yaml (the same curator): status said '(this curator's default)' of both, as if an
    upgrade had changed the defaults. The run's record says which settings pipeline.yaml gave."""
    pipeline = demo / "pipeline.yaml"
    original = pipeline.read_text()
    cfg = _edit(pipeline, "0.2.0", dedup={"keep": ["datasets", "terms", "version"], "prefer_datasets": ["KiTS23"]})
    run_pipeline(cfg, stages=["dedup"], release=False)
    pipeline.write_text(original)  # the two lines deleted
    default = json.dumps(list(DedupConfig().keep))
    assert (f'dedup ran with other settings (keep: ["datasets", "terms", "version"] → {default} (not in '
            'pipeline.yaml: the default), prefer_datasets: ["KiTS23"] → [] (not in pipeline.yaml: the default));'
            ) in _refused(set_version(pipeline, "0.2.0"))


def test_a_changed_setting_an_older_record_cannot_place_is_said_in_words_true_of_both(demo: Path) -> None:
    """A record of a curator that did not keep which settings pipeline.yaml gave: a setting at
    another value than this curator's default, which pipeline.yaml does not give, may have been
    removed by the user or had its default changed; the status says what is true either way."""
    record = demo / "workspace" / "stages" / "dedup" / "stage.json"
    rec = json.loads(record.read_text())
    keep = rec["config"]["keep"]
    rec["config"]["keep"] = ["case_id"]
    rec["config_hash"] = "0" * 16
    del rec["config_given"]
    record.write_text(json.dumps(rec))
    assert _refused(set_version(demo / "pipeline.yaml", "0.2.0")).endswith(
        f'dedup ran with other settings (keep: ["case_id"] → {json.dumps(keep)} (not in pipeline.yaml: this '
        "curator's default))")
