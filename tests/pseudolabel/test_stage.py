from __future__ import annotations

import os

import numpy as np

from curator.pseudolabel.outputs import attention_path, read_attention
from curator.pseudolabel.stage import PseudolabelStage, rank_cases
from curator.runner.run import run_stage
from curator.store import CaseStore
from curator.testing.segmodels import phantom_truth
from tests.pseudolabel.conftest import CASES


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def test_stage_labels_only_unannotated_terms(phantom_ws) -> None:
    ctx, _ = phantom_ws()
    report = run_stage(ctx, PseudolabelStage)
    assert report.planned == 4 and report.failed == 0
    ws = ctx.workspace
    att = ws.read_table("attention").to_pylist()
    labels = ws.read_table("_labels_pseudo").to_pylist()
    for i, (cid, _, ann) in enumerate(CASES):
        store = CaseStore(ws.stores_dir / f"{cid}.zarr")
        assert store.layers() == ["original", "pseudo"]
        pseudo_terms = set(store.terms("pseudo"))
        assert not pseudo_terms & set(ann), "an annotated term got a pseudo label"
        assert pseudo_terms == {"liver", "spleen", "pancreas", "aorta"} - set(ann)
        # the band models find the phantom's liver where it is
        assert _dice(store.mask("liver", "pseudo"), phantom_truth(100 + i, "liver")) > 0.8
        rows = [r for r in labels if r["case_id"] == cid]
        assert {r["term_id"] for r in rows} == pseudo_terms
        assert all(r["origin"] == "pseudo" and r["layer"] == "pseudo" and not r["annotated"] for r in rows)
        for r in rows:
            assert r["voxels"] == int(store.mask(r["term_id"], "pseudo").sum())
        amap = read_attention(attention_path(ws.root, cid))
        assert set(amap.names.values()) == pseudo_terms and amap.shape == store.geometry.shape
    assert {r["case_id"] for r in att} == {c for c, _, _ in CASES}
    ranks = sorted({(r["review_rank"], r["case_id"]) for r in att})
    assert [r for r, _ in ranks] == [1, 2, 3, 4]
    assert sum(r["review"] for r in att if r["review_rank"] == 1) >= 1  # 5% of 4 cases -> the top case


def test_attention_reflects_disagreement(phantom_ws) -> None:
    """Band jitter makes members disagree at band edges: attention > 0 where they disagree, and
    identical members give no inconsistency at all."""
    ctx, settings = phantom_ws()
    run_stage(ctx, PseudolabelStage)
    att = ctx.workspace.read_table("attention").to_pylist()
    assert any(r["inconsistency"] > 0 for r in att)
    same = [dict(settings["models"][0], name=f"same{i}") for i in range(3)]
    ctx2, _ = phantom_ws(models=same)
    run_stage(ctx2, PseudolabelStage)
    att2 = ctx2.workspace.read_table("attention").to_pylist()
    assert all(r["inconsistency"] == 0 for r in att2)


def test_rerun_is_cached_and_tables_identical(phantom_ws) -> None:
    ctx, _ = phantom_ws()
    run_stage(ctx, PseudolabelStage)
    first = ctx.workspace.table_path("attention").read_bytes()
    report = run_stage(ctx, PseudolabelStage)
    assert report.cached == 4 and report.ran == 0
    assert ctx.workspace.table_path("attention").read_bytes() == first
    # a store rebuilt by preprocess (same key upstream) has lost its pseudo layer: that case runs again
    import shutil

    cid = CASES[1][0]
    store = CaseStore(ctx.workspace.stores_dir / f"{cid}.zarr")
    shutil.rmtree(store.path / "labels" / "pseudo")
    report = run_stage(ctx, PseudolabelStage)
    assert (report.cached, report.ran) == (3, 1)
    assert "pseudo" in CaseStore(store.path).layers()
    assert ctx.workspace.table_path("attention").read_bytes() == first
    # a pseudo layer with a shard cut short passed as cached (the release then crashed on it)
    shard = next(p for p in sorted((store.path / "labels" / "pseudo").rglob("c/*/*/*")) if p.is_file())
    shard.write_bytes(shard.read_bytes()[:-5])
    report = run_stage(ctx, PseudolabelStage)
    assert (report.cached, report.ran) == (3, 1)
    assert ctx.workspace.table_path("attention").read_bytes() == first


def test_rank_cases_top_fraction() -> None:
    rows = [{"case_id": f"c{i}", "attention_size": float(i)} for i in range(40)]
    ranked = rank_cases(rows, 0.05)
    flagged = sorted(r["case_id"] for r in ranked if r["review"])
    assert flagged == ["c38", "c39"]
    assert min(ranked, key=lambda r: r["review_rank"])["case_id"] == "c39"


def test_dropped_duplicates_are_never_flagged_for_review() -> None:
    """c39 has the most attention but is a dropped copy: c38 and c37 are flagged, c39 ranks last."""
    rows = [{"case_id": f"c{i}", "attention_size": float(i)} for i in range(41)]
    ranked = rank_cases(rows, 0.05, dropped={"c40"})
    assert sorted(r["case_id"] for r in ranked if r["review"]) == ["c38", "c39"]
    assert max(ranked, key=lambda r: r["review_rank"])["case_id"] == "c40"


def test_a_case_left_with_nothing_to_label_loses_its_old_pseudo_labels(phantom_ws) -> None:
    """Restricting `terms` to what the MSD_Spleen cases annotate: their earlier pseudo liver,
    pancreas and aorta must go (the release tables would no longer list them, but loaders,
    exports and eval read the store's layer)."""
    ctx, _ = phantom_ws()
    run_stage(ctx, PseudolabelStage)
    cid = CASES[0][0]
    assert "pseudo" in CaseStore(ctx.workspace.stores_dir / f"{cid}.zarr").layers()
    ctx2, _ = phantom_ws(keep_stores=True, terms=["spleen"])  # what MSD_Spleen annotates itself
    report = run_stage(ctx2, PseudolabelStage)
    assert report.failed == 0
    assert "pseudo" not in CaseStore(ctx.workspace.stores_dir / f"{cid}.zarr").layers()
    assert not attention_path(ctx.workspace.root, cid).exists()
    other = CASES[2][0]  # a Pancreas case: re-labelled with this run's target only
    assert CaseStore(ctx.workspace.stores_dir / f"{other}.zarr").terms("pseudo") == ["spleen"]


def test_an_ensemble_that_runs_on_no_case_removes_the_earlier_pseudo_labels_and_says_so(phantom_ws) -> None:  # type: ignore[no-untyped-def]
    """An ensemble whose members declare `modalities: [MR]` on CT cases planned no case: the tables
    lost their pseudo rows but every store kept the earlier ensemble's pseudo layer (store_terms,
    the loader and exports read it), and the run said "0 cases, 0 warnings"."""
    from curator.testing.segmodels import band_specs

    ctx, _ = phantom_ws()
    run_stage(ctx, PseudolabelStage)
    ws = ctx.workspace
    assert all("pseudo" in CaseStore(ws.stores_dir / f"{c}.zarr").layers() for c, _, _ in CASES)
    mr = [dict(m, modalities=["MR"]) for m in band_specs(3)]
    ctx2, _ = phantom_ws(keep_stores=True, models=mr)
    report = run_stage(ctx2, PseudolabelStage)
    assert report.failed == 0 and report.warnings == 1
    for cid, _, _ in CASES:
        assert "pseudo" not in CaseStore(ws.stores_dir / f"{cid}.zarr").layers(), cid
        assert not attention_path(ws.root, cid).exists()
    assert ws.read_table("_labels_pseudo").num_rows == 0 and ws.read_table("attention").num_rows == 0
    (row,) = ws.read_table("problems__pseudolabel").to_pylist()
    assert row["kind"] == "ensemble_not_applicable" and row["severity"] == "warning"
    assert "band0: MR" in row["message"] and "4 CT" in row["message"]
    assert run_stage(ctx2, PseudolabelStage).cached == 4  # cleared once, not on every run


def test_model_outputs_are_named_through_the_taxonomy(phantom_ws) -> None:
    """"Liver" and "Pancreatic gland"-style names resolve to term ids; an unknown name, broken
    weights or a channel count that does not match are one ConfigError before any case runs."""
    import pytest

    from curator.errors import ConfigError
    from curator.testing.segmodels import band_specs

    named = [{**s, "terms": [t.upper() for t in s["terms"]]} for s in band_specs(3)]
    ctx, _ = phantom_ws(models=named)
    run_stage(ctx, PseudolabelStage)
    labels = {r["term_id"] for r in ctx.workspace.read_table("_labels_pseudo").to_pylist()}
    assert labels == {"liver", "spleen", "pancreas", "aorta"}
    unknown = [{**s, "terms": ["liver", "spleen", "pancreas", "blorb"]} for s in band_specs(3)]
    # each names the file the model's entry is in, as the loading errors do (here pipeline.yaml's models:)
    inline = r"\(the entry is in stages.pseudolabel.models in pipeline.yaml"
    with pytest.raises(ConfigError, match=f"'blorb' is no term.*{inline}"):
        run_stage(phantom_ws(models=unknown)[0], PseudolabelStage)
    wrong = [{**s, "terms": ["liver", "spleen"]} for s in band_specs(3)]  # the band models give 5 channels
    with pytest.raises(ConfigError, match=f"need 3 channels.*{inline}"):
        run_stage(phantom_ws(models=wrong)[0], PseudolabelStage)


def test_a_prefetched_reader_of_a_store_rebuilt_since_is_not_used(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A long-lived GPU worker's prefetched reader must not outlive a store preprocess rebuilt."""
    import json
    import shutil

    from curator.pseudolabel import prefetch
    from curator.pseudolabel.config import PseudolabelConfig
    from curator.pseudolabel.models import ModelSpec
    from curator.testing.segmodels import band_specs, write_phantom_store

    specs = tuple(ModelSpec.from_dict(d) for d in band_specs(1))
    cfg = PseudolabelConfig(models=specs)
    paths = [tmp_path / "stores" / f"c{i}.zarr" for i in range(2)]
    for i, p in enumerate(paths):
        write_phantom_store(p, 1 + i, {})
    (tmp_path / "stages" / "pseudolabel").mkdir(parents=True)
    (tmp_path / "stages" / "pseudolabel" / "queue.json").write_text(json.dumps([[p.stem, str(p)] for p in paths]))
    for rebuilt in (False, True):
        assert prefetch.schedule_next(tmp_path, "c0", specs, (32, 32, 16), cfg) == str(paths[1])
        if rebuilt:  # preprocess renames a new store into place: another shape, another stamp
            shutil.rmtree(paths[1])
            write_phantom_store(paths[1], 9, {}, shape=(30, 20, 10))
        got = prefetch.take(paths[1])
        assert (got is None) == rebuilt
        if got is not None:
            assert got[0].shape == (40, 32, 20)


def test_a_misspelt_term_or_an_impossible_threshold_is_refused(phantom_ws) -> None:  # type: ignore[no-untyped-def]
    """`terms: [livr]` labelled nothing and said nothing; `threshold: -1` labelled every voxel
    (pancreas 12,530 ml). Both are ConfigErrors before any case runs."""
    import pytest

    from curator.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'livr' \(did you mean 'liver'\?\)"):
        run_stage(phantom_ws(terms=["livr", "spleen"])[0], PseudolabelStage)
    for name, value in (("threshold", -1.0), ("threshold", 1.0), ("uncertainty_threshold", 0.0)):
        with pytest.raises(ConfigError, match=f"{name} = {value}"):
            run_stage(phantom_ws(**{name: value})[0], PseudolabelStage)
    assert not (phantom_ws()[0].workspace.stage_dir("pseudolabel") / "stage.json").exists()


def test_a_run_reads_each_model_file_once_whatever_the_number_of_cases(phantom_ws, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Weights files can be large: a run reads each one once, for what it records it ran with and
    to plan (it read them twice, and each case did again to check them, twice)."""
    from collections import Counter

    from curator.pseudolabel import models

    files = sorted(str(p) for p in models.MODELS_DIR.glob("demo_*.pt"))
    ctx, _ = phantom_ws(models=[], ensemble="demo")
    read: list[str] = []
    real = models.sha256_file

    def counting(path):  # type: ignore[no-untyped-def]
        read.append(str(path))
        return real(path)

    monkeypatch.setattr(models, "sha256_file", counting)
    models._file_sum.cache_clear()  # files another test fingerprinted in this process
    report = run_stage(ctx, PseudolabelStage)
    assert report.ran == len(CASES) > 1
    assert Counter(read) == dict.fromkeys(files, 1)
    import zarr

    layer = zarr.open_group(str(ctx.workspace.stores_dir / f"{CASES[0][0]}.zarr" / "labels" / "pseudo"), mode="r")
    monkeypatch.undo()
    assert [m["fingerprint"] for m in layer.attrs["curator"]["models"]] == [  # type: ignore[union-attr,index]
        s.fingerprint() for s in models.load_ensemble_file("demo")]


def test_workers_share_the_cores_instead_of_each_taking_all(phantom_ws) -> None:  # type: ignore[no-untyped-def]
    """A local pool's workers each ran torch on every core (2 workers, 4 threads on 2 cores:
    the demo's pseudolabel took 19.3 s, 6.9 s with one thread each), and Dask's workers on one
    thread gave attention values differing in the 6th digit. Each worker now gets cores ÷ workers."""
    import dataclasses

    import torch

    from curator.config import ExecutorConfig
    from curator.runner.executors import InlineExecutor

    ctx, _ = phantom_ws()
    cores = len(os.sched_getaffinity(0))
    for kind, workers, address, want in (("local", 2, None, max(1, cores // 2)), ("local", 1, None, cores),
                                         ("dask", 3, None, max(1, cores // 3)), ("dask", 2, "tcp://x:8786", 0)):
        ctx.config = dataclasses.replace(ctx.config, executor=ExecutorConfig(kind=kind, workers=workers,
                                                                            address=address, progress=False))
        assert ctx.case_env().threads == want, (kind, workers, address)
    before = torch.get_num_threads()
    try:
        ctx.config = dataclasses.replace(ctx.config, executor=ExecutorConfig(workers=max(2, cores), progress=False))
        torch.set_num_threads(max(2, cores))
        run_stage(ctx, PseudolabelStage, InlineExecutor())  # process() runs here, as in a worker
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_member_runs_only_on_the_modalities_it_declares(phantom_ws) -> None:  # type: ignore[no-untyped-def]
    """An MR-only member was run on CT cases (the stage filtered cases by the members' union of
    modalities, then ran every member on every case): its labels and n_models counted."""
    import zarr

    from curator.testing.segmodels import band_specs

    key = ("case_id", "term_id", "n_models", "pseudo_voxels", "inconsistency", "uncertainty", "overlap")

    def rows(c) -> list[tuple]:  # type: ignore[no-untyped-def,type-arg]
        return sorted(tuple(r[k] for k in key) for r in c.workspace.read_table("attention").to_pylist())

    b = band_specs(3)
    ctx2, _ = phantom_ws(models=[b[0], b[1]])  # the two members that apply to CT, alone
    run_stage(ctx2, PseudolabelStage)
    want = rows(ctx2)
    mr = dict(b[2], kwargs={**b[2]["kwargs"], "bands": [[lo + 40.0, hi + 40.0] for lo, hi in b[2]["kwargs"]["bands"]]},
              modalities=["MR"])
    ctx, _ = phantom_ws(models=[b[0], dict(b[1], modalities=["ct"]), mr])  # a fresh workspace; its cases are CT
    assert run_stage(ctx, PseudolabelStage).planned == 4
    got = rows(ctx)
    assert got and all(r[2] == 2 for r in got)
    assert got == want
    layer = zarr.open_group(str(ctx.workspace.stores_dir / f"{CASES[0][0]}.zarr" / "labels" / "pseudo"), mode="r")
    assert [m["name"] for m in dict(layer.attrs)["curator"]["models"]] == ["band0", "band1"]


def test_a_missing_model_file_is_reported_where_its_path_is_given(phantom_ws, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A missing weights file listed in an ensemble YAML was told to be fixed "in pipeline.yaml
    (relative paths are relative to the folder holding it)": it is relative to the ensemble file."""
    import json

    import pytest

    from curator.errors import ConfigError
    from curator.pipeline import check_plan
    from curator.testing.segmodels import band_specs

    ens = tmp_path / "models" / "ens.yaml"
    ens.parent.mkdir()
    ens.write_text(json.dumps({"models": [dict(band_specs(1)[0], name="listed", weights="gone/w.pt")]}))  # YAML
    inline = dict(band_specs(1)[0], name="inline", weights="nope/w.pt")
    ctx, _ = phantom_ws(ensemble=str(ens), models=[inline])
    with pytest.raises(ConfigError) as e:
        check_plan(ctx, ["pseudolabel"], release=False)
    msg = str(e.value)
    assert f"{ens.parent / 'gone' / 'w.pt'} (`weights` of model 'listed', given in ensemble file {ens}" in msg
    assert f"relative paths there are relative to {ens.parent})" in msg
    assert "`weights` of model 'inline', given in stages.pseudolabel.models in pipeline.yaml" in msg
    assert "an ensemble file's for the models it lists" in msg


def test_a_store_chunk_damaged_after_preprocess_is_store_damaged_naming_the_case(phantom_ws) -> None:  # type: ignore[no-untyped-def]
    """Chunk bytes overwritten behind an intact shard index: the case was an internal_error ('RuntimeError:
    error during blosc decompression … report this as a bug'); now it is store_damaged saying how to rebuild."""
    ctx, _ = phantom_ws()
    bad = CASES[1][0]
    shard = next(p for p in sorted((ctx.workspace.stores_dir / f"{bad}.zarr" / "image" / "c").rglob("*"))
                 if p.is_file())
    data = bytearray(shard.read_bytes())
    data[:16] = b"\xff" * 16  # the first chunk's Blosc header; the index at the end stays intact
    shard.write_bytes(bytes(data))
    report = run_stage(ctx, PseudolabelStage)
    assert report.failed == 1 and report.ran == len(CASES)  # the others went on
    rows = [r for r in ctx.workspace.read_table("problems__pseudolabel").to_pylist() if r["case_id"] == bad]
    assert [r["kind"] for r in rows] == ["store_damaged"], rows
    assert "image" in rows[0]["message"] and "delete the case's store" in rows[0]["message"]


def test_status_names_the_model_whose_files_changed(phantom_ws, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`curator status` after a weights file changed said "pseudolabel ran with another version
    of the model files" without naming the model (the release diff did)."""
    import torch

    from curator.runner.freshness import stage_states
    from curator.testing.segmodels import BandModel, band_specs

    specs = band_specs(2)
    for s in specs:
        s["weights"] = str(tmp_path / f"{s['name']}.pt")
        torch.save(BandModel(**s["kwargs"]).state_dict(), s["weights"])
    ctx, _ = phantom_ws(models=specs)
    run_stage(ctx, PseudolabelStage)
    assert not next(s for s in stage_states(ctx) if s.name == "pseudolabel").reasons
    retrained = BandModel(**specs[1]["kwargs"])
    with torch.no_grad():
        retrained.norm.weight.mul_(2.0)  # another training run of band1: new weights, same outputs
    torch.save(retrained.state_dict(), specs[1]["weights"])
    reasons = next(s for s in stage_states(ctx) if s.name == "pseudolabel").reasons
    assert "pseudolabel ran with another version of the model files (changed: band1)" in reasons, reasons


def test_a_dataset_that_annotates_a_term_gets_no_pseudo_label_of_it_without_a_labels_table(tmp_path) -> None:
    """Without harmonize's labels table, the terms a case's dataset annotates come from its dataset
    YAML: a spleen case whose spleen is absent (annotated, no voxels) is not given a pseudo spleen."""
    from curator.config import PipelineConfig
    from curator.runner.context import Context
    from curator.schema import to_arrow
    from curator.testing.segmodels import band_specs, write_phantom_store
    from curator.testing.stores import record_runs
    from curator.workspace import Workspace
    from tests.pseudolabel.conftest import case_row

    ws = Workspace(tmp_path / "ws").init()
    cases = [("MSD_Spleen__spleen_1", {"spleen": 1}), ("MSD_Spleen__spleen_2", {})]  # the second: no spleen
    for i, (cid, ann) in enumerate(cases):
        write_phantom_store(ws.stores_dir / f"{cid}.zarr", 100 + i, ann)
    ws.write_table("cases", to_arrow("cases", [case_row(cid, "MSD_Spleen") for cid, _ in cases]))
    off = {"enabled": False}
    cfg = PipelineConfig.from_dict({"workspace": str(ws.root),
                                    "sources": [{"dataset": "MSD_Spleen", "root": str(tmp_path / "raw")}],
                                    "stages": {"pseudolabel": {"models": band_specs(3), "overlap": 0.5},
                                               "dedup": off, "harmonize": off, "qc": off},
                                    "executor": {"workers": 1, "progress": False},
                                    "release": {"root": str(tmp_path / "releases"), "collection": "t"}})
    ctx = Context(cfg, ws)
    record_runs(ctx, "ingest", "preprocess")
    assert ws.read_table("labels") is None
    report = run_stage(ctx, PseudolabelStage)
    assert report.failed == 0 and report.planned == 2
    for cid, _ in cases:
        pseudo = set(CaseStore(ws.stores_dir / f"{cid}.zarr").terms("pseudo"))
        assert pseudo == {"liver", "pancreas", "aorta"}, cid  # never spleen: MSD_Spleen annotates it
