"""The dedup stage on a small synthetic pipeline: tables, keep policy, caching, report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from curator.config import PipelineConfig
from curator.dedup.stage import DedupConfig
from curator.errors import ConfigError
from curator.pipeline import run_pipeline
from curator.testing import perturb as P
from curator.testing.layouts import save_nifti, write_totalseg_case
from curator.testing.phantoms import Subject, grid, render, structure_masks

STRUCTURES = ["spleen", "kidney_right", "kidney_left", "liver", "pancreas", "aorta"]


def _yaml(name: str, version: str) -> str:
    labels = "\n".join(f"    {s}: {s.replace('_', ' ')}" for s in STRUCTURES)
    return (f"name: {name}\nversion: \"{version}\"\ntitle: test\nmodality: CT\nregion: abdomen\nlicence: CC-BY-4.0\n"
            f"citation_key: t\ncitation: \"@misc{{t, title={{t}}}}\"\nlayout:\n"
            f"  - image: \"{{case}}/ct.nii.gz\"\n    label: \"{{case}}/segmentations/{{structure}}.nii.gz\"\n"
            f"patterns:\n  case: \"s\\\\d{{4}}\"\nlabels:\n  encoding: per_structure\n  structures:\n{labels}\n")


def _case(root: Path, sid: str, seed: int, geometry=None, transform=None, structures=STRUCTURES) -> None:
    g = geometry or grid((56, 44, 26), (6.0, 6.0, 8.0), "LPS", center=(0.0, -10.0, 20.0))
    img, _ = render(Subject.random(seed, tumor=False, cyst=False), g, "CT", seed=seed)
    masks = structure_masks(Subject.random(seed, tumor=False, cyst=False), g)
    img = np.rint(img).astype(np.int16)
    if transform is not None:
        g2, img = transform(g, img)
        masks = {k: transform(g, m.astype(np.uint8))[1] for k, m in masks.items()}
        g = g2
    write_totalseg_case(root, sid, img, {s: masks[s] for s in structures}, g)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dedup_stage")
    a, b = tmp / "raw" / "A", tmp / "raw" / "B"
    _case(a, "s0000", 31)
    _case(a, "s0001", 32)
    # B's s0000 is A's s0000, cropped in z, offset by +1024 and flipped (correct header); only 2 structures
    _case(b, "s0000", 31, transform=lambda g, x: P.flip_axis(*P.keep_fraction(g, x, 2, 0.6, 0.3), 0),
          structures=["liver", "spleen"])
    _case(b, "s0001", 33)
    g = grid((56, 44, 26), (6.0, 6.0, 8.0), "LPS")
    save_nifti(b / "s0002" / "segmentations" / "liver.nii.gz", np.ones((56, 44, 26), np.uint8), g, np.uint8)
    (tmp / "A.yaml").write_text(_yaml("DupA", "1.0"))
    (tmp / "B.yaml").write_text(_yaml("DupB", "2.0"))
    cfg = {"workspace": str(tmp / "ws"), "registry": [str(tmp / "A.yaml"), str(tmp / "B.yaml")],
           "sources": [{"dataset": str(tmp / "A.yaml"), "root": str(a)},
                       {"dataset": str(tmp / "B.yaml"), "root": str(b)}],
           "stages": {"ingest": {"on_bad_case": "warn"}, "dedup": {"keep": ["terms", "version"]}},
           "executor": {"kind": "local", "workers": 1, "progress": False},
           "release": {"root": str(tmp / "releases"), "collection": "t", "version": "0.1.0"}}
    (tmp / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    run_pipeline(PipelineConfig.load(tmp / "pipeline.yaml"), stages=["ingest", "dedup"], release=False)
    return tmp


def _table(run: Path, name: str) -> list[dict]:
    return pq.read_table(run / "ws" / "tables" / f"{name}.parquet").to_pylist()


def test_hashes_cover_every_scan_but_not_label_only_cases(run: Path) -> None:
    rows = _table(run, "hashes")
    assert [r["case_id"] for r in rows] == ["DupA__s0000", "DupA__s0001", "DupB__s0000", "DupB__s0001"]
    for r in rows:
        assert len(r["slab_hashes"]) == len(r["slab_z_mm"]) > 5
        assert r["phash"] is not None and not r["thumbnail"].startswith("/")
        assert (run / "ws" / r["thumbnail"]).is_file()


def test_the_planted_copy_is_one_group_with_the_richer_member_kept(run: Path) -> None:
    rows = _table(run, "duplicates")
    assert sorted(r["case_id"] for r in rows) == ["DupA__s0000", "DupB__s0000"]
    kept = {r["case_id"]: r for r in rows}
    assert kept["DupA__s0000"]["kept"] and not kept["DupB__s0000"]["kept"]
    assert {r["group_id"] for r in rows} == {rows[0]["group_id"]}
    drop = kept["DupB__s0000"]
    assert drop["kept_case_id"] == "DupA__s0000" and drop["group_size"] == 2
    assert "more annotated structures (6 vs 2)" in drop["reason"]
    assert drop["score"] > 0.9 and drop["detail"] > 0.8 and drop["coverage"] > 0.9
    assert set(drop["tiers"]) & {"global", "slab"}


def test_a_rerun_is_cached_and_writes_identical_tables(run: Path) -> None:
    before = {n: (run / "ws" / "tables" / f"{n}.parquet").read_bytes() for n in ("hashes", "duplicates")}
    result = run_pipeline(PipelineConfig.load(run / "pipeline.yaml"), stages=["dedup"], release=False)
    rep = result.reports[0]
    assert rep.cached == rep.planned == 4 and rep.ran == 0
    for n, data in before.items():
        assert (run / "ws" / "tables" / f"{n}.parquet").read_bytes() == data


def test_a_lost_thumbnail_is_rebuilt_and_its_group_kept(run: Path, tmp_path: Path) -> None:
    """A deleted verification thumbnail made its cached case match exact copies only, and its
    group vanished with a warning; the case is now hashed again."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(run / "ws", ws)
    cfg = yaml.safe_load((run / "pipeline.yaml").read_text())
    cfg["workspace"] = str(ws)
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    lost = next((ws / "stages" / "dedup" / "thumbs").rglob("DupB__s0000.*.npz"))
    lost.unlink()
    rep = run_pipeline(PipelineConfig.load(tmp_path / "pipeline.yaml"), stages=["dedup"], release=False).reports[0]
    assert (rep.ran, rep.cached) == (1, 3) and lost.exists()
    assert (ws / "tables" / "duplicates.parquet").read_bytes() == (run / "ws" / "tables" / "duplicates.parquet").read_bytes()
    assert not pq.read_table(ws / "tables" / "problems__dedup.parquet").to_pylist()


def test_a_new_keep_policy_regroups_the_cached_hashes_without_rehashing(run: Path, tmp_path: Path) -> None:
    """The keep policy (and search/verification settings) run in finalize: changing them must
    not re-read and re-hash every scan, and must still change the outcome."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(run / "ws", ws)
    cfg = yaml.safe_load((run / "pipeline.yaml").read_text())
    cfg["workspace"] = str(ws)
    cfg["stages"]["dedup"] = {"keep": ["version", "terms"]}  # the newer dataset version (B 2.0) first
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    rep = run_pipeline(PipelineConfig.load(tmp_path / "pipeline.yaml"), stages=["dedup"], release=False).reports[0]
    assert (rep.ran, rep.cached) == (0, 4)
    kept = {r["case_id"]: r["kept"] for r in pq.read_table(ws / "tables" / "duplicates.parquet").to_pylist()}
    assert kept == {"DupA__s0000": False, "DupB__s0000": True}
    cfg["stages"]["dedup"] = {"keep": ["version", "terms"], "slab_step_mm": 4.0}  # a hashing setting: re-hash
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    rep = run_pipeline(PipelineConfig.load(tmp_path / "pipeline.yaml"), stages=["dedup"], release=False).reports[0]
    assert (rep.ran, rep.cached) == (4, 0)


def _copy_run(run: Path, tmp_path: Path, dedup: dict) -> Path:
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(run / "ws", ws)
    cfg = yaml.safe_load((run / "pipeline.yaml").read_text())
    cfg["workspace"] = str(ws)
    cfg["stages"]["dedup"] = dedup
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "pipeline.yaml"


def test_verification_is_reused_between_runs_and_decided_afresh(run: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run compared every candidate pair again (≈ 0.08 s a pair: 5 of the demo's 5.5 s,
    hours for a large collection after a keep-policy change). Comparisons are now kept by the
    two thumbnails' digests; the thresholds still decide afresh on the cached numbers."""
    from curator.dedup import detect

    calls: list[tuple[str, ...]] = []
    real = detect.compare
    monkeypatch.setattr(detect, "compare", lambda a, b, r=0.1: calls.append(("x",)) or real(a, b, r))
    pipeline = _copy_run(run, tmp_path, {"keep": ["version", "terms"]})
    ws = tmp_path / "ws"
    run_pipeline(PipelineConfig.load(pipeline), stages=["dedup"], release=False)
    assert calls == []  # the fixture's run compared them all
    kept = {r["case_id"]: r["kept"] for r in pq.read_table(ws / "tables" / "duplicates.parquet").to_pylist()}
    assert kept == {"DupA__s0000": False, "DupB__s0000": True}
    # a stricter threshold judges the cached comparison: the pair (detail 0.8-0.99) is refused
    pipeline = _copy_run(run, tmp_path / "strict", {"keep": ["terms", "version"], "min_detail": 1.0})
    run_pipeline(PipelineConfig.load(pipeline), stages=["dedup"], release=False)
    assert calls == []
    assert not pq.read_table(tmp_path / "strict" / "ws" / "tables" / "duplicates.parquet").to_pylist()
    # a damaged cache is compared afresh and decides exactly as the cached one did
    cache = ws / "stages" / "dedup" / "matches.json"
    assert cache.is_file()
    cache.write_text("{not json")
    pipeline = _copy_run(run, tmp_path / "again", {"keep": ["terms", "version"]})
    (tmp_path / "again" / "ws" / "stages" / "dedup" / "matches.json").write_text("{not json")
    run_pipeline(PipelineConfig.load(pipeline), stages=["dedup"], release=False)
    assert calls
    again = tmp_path / "again" / "ws" / "tables" / "duplicates.parquet"
    assert again.read_bytes() == (run / "ws" / "tables" / "duplicates.parquet").read_bytes()


def test_a_cached_comparison_is_the_comparison_exactly(tmp_path: Path) -> None:
    """JSON floats round-trip: a cached Match equals the computed one, field for field; another
    overlap ratio (or other comparison code) does not reuse it."""
    from curator.dedup.detect import MatchCache
    from curator.dedup.features import HashSettings, scan_features

    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    img, _ = render(Subject.random(5, tumor=False, cyst=False), g, "CT", seed=5)
    a = scan_features(np.rint(img).astype(np.int16), g, HashSettings()).thumbnail
    g2, cropped = P.keep_fraction(g, np.rint(img).astype(np.int16), 2, 0.7, 0.2)
    b = scan_features(cropped, g2, HashSettings()).thumbnail
    first = MatchCache(tmp_path / "m.json", 0.1)
    m = first.compare("da", a, "db", b, 0.1)
    first.save()
    again = MatchCache(tmp_path / "m.json", 0.1)
    assert again.compare("da", a, "db", b, 0.1) == m and (again.hits, again.misses) == (1, 0)
    again.compare("db", b, "da", a, 0.1)  # the other way round is another comparison (b onto a)
    assert (again.hits, again.misses) == (1, 1)
    other = MatchCache(tmp_path / "m.json", 0.2)
    other.compare("da", a, "db", b, 0.2)
    assert (other.hits, other.misses) == (0, 1)
    again.save()  # keeps what this run used: both orientations
    assert len(MatchCache(tmp_path / "m.json", 0.1).entries) == 2
    # tester 28: a fresh workspace said "6 from earlier runs" of byte copies' pairs, whose identical
    # thumbnails give one pair of digests: compared once in this run, reused, not from an earlier run
    fresh = MatchCache(tmp_path / "fresh.json", 0.1)
    fresh.compare("da", a, "db", b, 0.1)
    fresh.compare("da", a, "db", b, 0.1)
    assert (fresh.misses, fresh.hits, fresh.reused) == (1, 0, 1)
    assert fresh.said() == "1 compared, 1 reused: copies with identical thumbnails, compared once in this run"


def test_a_prefer_datasets_name_no_case_has_is_a_warning(run: Path, tmp_path: Path) -> None:
    """`prefer_datasets: [DupZ]` ranked nothing without a word."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(run / "ws", ws)
    cfg = yaml.safe_load((run / "pipeline.yaml").read_text())
    cfg["workspace"] = str(ws)
    cfg["stages"]["dedup"] = {"keep": ["datasets", "terms"], "prefer_datasets": ["DupZ", "DupB"]}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    rep = run_pipeline(PipelineConfig.load(tmp_path / "pipeline.yaml"), stages=["dedup"], release=False).reports[0]
    assert rep.warnings >= 1
    rows = [r for r in pq.read_table(ws / "tables" / "problems__dedup.parquet").to_pylist() if r["case_id"] is None]
    assert [(r["kind"], r["severity"]) for r in rows] == [("config_error", "warning")]
    assert "['DupZ']" in rows[0]["message"] and "DupA" in rows[0]["message"]


def test_report_writes_one_figure_per_group(run: Path, tmp_path: Path) -> None:
    from curator.cli import app

    res = CliRunner().invoke(app, ["dedup", "report", str(run / "pipeline.yaml"), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    pngs = sorted((tmp_path / "rep").glob("dup-*.png"))
    assert len(pngs) == 1 and pngs[0].read_bytes()[:4] == b"\x89PNG"
    assert "DupB__s0000" in (tmp_path / "rep" / "index.html").read_text()


def test_report_of_an_unknown_group_is_an_error_naming_the_groups(run: Path, tmp_path: Path) -> None:
    from curator.cli import app

    gid = pq.read_table(run / "ws" / "tables" / "duplicates.parquet").column("group_id")[0].as_py()
    res = CliRunner().invoke(app, ["dedup", "report", str(run / "pipeline.yaml"), "--group", "dup-nope",
                                   "--out", str(tmp_path / "rep")])
    said = " ".join(res.output.split())  # rich wraps at the terminal width
    assert res.exit_code == 2, res.output
    assert "'dup-nope': no duplicate group" in said and gid in said, res.output
    assert not (tmp_path / "rep").exists()
    res = CliRunner().invoke(app, ["dedup", "report", str(run / "pipeline.yaml"), "--group", gid[:-1],
                                   "--out", str(tmp_path / "rep")])
    assert res.exit_code == 2 and f"did you mean {gid}?" in " ".join(res.output.split()), res.output


def test_report_out_under_a_file_is_an_error(run: Path, tmp_path: Path) -> None:
    from curator.cli import app

    (tmp_path / "f").write_text("x")
    for out, says in ((tmp_path / "f", "this is a file, but a folder"), (tmp_path / "f" / "rep", "is a file, not a folder")):
        res = CliRunner().invoke(app, ["dedup", "report", str(run / "pipeline.yaml"), "--out", str(out)])
        assert res.exit_code == 2 and says in " ".join(res.output.split()), res.output


def test_config_is_strict() -> None:
    with pytest.raises(ConfigError, match="unknown criteria"):
        DedupConfig.from_dict({"keep": ["size"]})
    with pytest.raises(ConfigError, match="unknown setting"):
        DedupConfig.from_dict({"radius": 3})
    assert DedupConfig.from_dict({"keep": ["version", "terms"]}).keep == ("version", "terms")
    assert DedupConfig.from_dict({"max_warp": 1.5}).verify.max_warp == 1.5
    for bad, said in (({"slab_step_mm": 0}, "slab_step_mm"), ({"grid_voxels": 0}, "grid_voxels"),
                      ({"min_score": 5}, "min_score"), ({"min_slab_votes": 0}, "min_slab_votes"),
                      ({"max_warp": -1}, "max_warp"),
                      ({"prefer_datasets": ["KiTS23"]}, "keep does not list 'datasets'"),
                      ({"keep": ["datasets"]}, "prefer_datasets is empty")):
        with pytest.raises(ConfigError, match=said):
            DedupConfig.from_dict(bad)


def test_versions_decide_only_where_they_compare() -> None:
    from curator.dedup.group import Member, pick_kept, why_kept

    def m(cid: str, ds: str, v: str) -> Member:
        return Member(cid, ds, v, 1, 100, 0)

    kits19, kits23 = m("b19", "KiTS19", "2019"), m("a23", "KiTS23", "2023")
    assert pick_kept([kits19, kits23], ("version",)) is kits23  # two years: newer wins
    spleen, ts = m("a", "MSD_Spleen", "2018"), m("b", "TotalSegmentator_v2", "2.0.1")
    assert pick_kept([spleen, ts], ("version",)) is spleen  # unrelated schemes: a tie, case id decides
    assert "first case id" in why_kept(spleen, ts, ("version",))
    old, new = m("z", "AMOS", "1.0"), m("y", "AMOS", "1.1")
    assert pick_kept([old, new], ("version",)) is new  # one dataset at two versions


def test_sequences_of_one_study_are_never_compared(tmp_path: Path) -> None:
    """T1 and T1gd of one study share a study_key: one split unit, not duplicates to drop."""
    from curator.dedup.stage import DedupStage
    from curator.runner.context import Context
    from curator.schema import to_arrow
    from curator.testing.stores import _case_row
    from curator.workspace import Workspace

    ws = Workspace(tmp_path / "ws").init()
    rows = [dict(_case_row(f"Brats__{s}", "Brats", True), study_key=k)
            for s, k in (("p1_t1", "s_1"), ("p1_t1gd", "s_1"), ("p2_t1", "s_2"))]
    ws.write_table("cases", to_arrow("cases", rows))
    cfg = PipelineConfig.from_dict({"workspace": str(ws.root), "executor": {"progress": False}})
    stage = DedupStage(Context(cfg, ws), DedupConfig())
    assert stage._same_study("Brats__p1_t1", "Brats__p1_t1gd")
    assert not stage._same_study("Brats__p1_t1", "Brats__p2_t1")


def test_one_dataset_under_two_aliases_is_grouped_as_a_copy(tmp_path: Path) -> None:
    """Two versions of one dataset (one spec, two `name:` aliases) hold the same scan: one patient,
    but two studies, so the copies are compared and grouped rather than skipped as sequences."""
    for version in ("v1", "v2"):
        _case(tmp_path / version, "s0000", 31)
    _case(tmp_path / "v2", "s0001", 33)
    (tmp_path / "A.yaml").write_text(_yaml("DupA", "1.0"))
    cfg = {"workspace": str(tmp_path / "ws"),
           "sources": [{"dataset": str(tmp_path / "A.yaml"), "root": str(tmp_path / v), "name": v}
                       for v in ("v1", "v2")],
           "executor": {"kind": "local", "workers": 1, "progress": False},
           "release": {"root": str(tmp_path / "releases"), "collection": "t", "version": "0.1.0"}}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    run_pipeline(PipelineConfig.load(tmp_path / "pipeline.yaml"), stages=["ingest", "dedup"], release=False)
    cases = {r["case_id"]: r for r in pq.read_table(tmp_path / "ws" / "tables" / "cases.parquet").to_pylist()}
    assert cases["v1__s0000"]["patient_id"] == cases["v2__s0000"]["patient_id"]
    assert cases["v1__s0000"]["study_key"] != cases["v2__s0000"]["study_key"]
    rows = pq.read_table(tmp_path / "ws" / "tables" / "duplicates.parquet").to_pylist()
    assert sorted(r["case_id"] for r in rows) == ["v1__s0000", "v2__s0000"]


def test_the_terms_criterion_counts_distinct_annotated_terms() -> None:
    """Ignored codes, codes mapping to one term and derived terms do not make a copy 'richer'."""
    from curator.dedup.stage import annotated_codes
    from curator.registry.spec import parse_spec
    from curator.taxonomy import load_taxonomy

    d = {"name": "Toy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
         "citation": "@misc{toy, title={toy}}", "layout": [{"image": "i/{case}.nii.gz", "label": "l/{case}.nii.gz"}],
         "labels": {"values": {1: "left kidney", 2: "right kidney", 3: "left kidney", 255: "spleen"},
                    "ignore": [255]}}
    spec, issues = parse_spec(d, "Toy.yaml")
    assert spec is not None, issues
    codes = annotated_codes(spec, load_taxonomy())
    assert codes == {"1": ["kidney_left"], "2": ["kidney_right"], "3": ["kidney_left"]}
    assert len({t for ids in codes.values() for t in ids}) == 2  # not 4 raw values, not + derived kidney


def test_a_member_that_does_not_reach_the_shown_point_says_how_far_off_it_is() -> None:
    """A bottom-half copy showed slices of another level with no word, read as another scan."""
    from curator.dedup.report import _slices
    from curator.io.volume import Geometry

    g = Geometry.from_affine((10, 10, 10), np.eye(4))
    arr = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    inside = _slices(arr, g, np.zeros(3), np.array([4.0, 4.0, 4.0]))
    above = _slices(arr, g, np.zeros(3), np.array([4.0, 4.0, 15.0]))
    assert inside[3] == 0.0 and above[3] == pytest.approx(6.0)  # z 15 -> the last slice, 9: 6 mm off
    assert np.array_equal(above[0], arr[:, :, 9])


def test_the_keep_policy_counts_terms_through_the_pipelines_taxonomy(run: Path, tmp_path: Path) -> None:
    """Dedup counted a case's annotated structures with the bundled taxonomy: a dataset naming
    them with a lab's own synonyms (stages.harmonize.taxonomy) counted none, and its richer copy
    was dropped "by case id"."""
    import shutil

    from curator.runner.context import Context
    from curator.runner.freshness import stale_reasons

    lab = tmp_path / "lab"
    shutil.copytree(run, lab)
    names = {s: f"lab {s.replace('_', ' ')} x" for s in STRUCTURES}
    text = (lab / "A.yaml").read_text()
    for s, n in names.items():
        text = text.replace(f"    {s}: {s.replace('_', ' ')}\n", f"    {s}: {n}\n")
    (lab / "A.yaml").write_text(text)
    (lab / "lab.yaml").write_text("extends: curator\nsynonyms:\n" + "".join(f"  {s}: [{n}]\n" for s, n in names.items()))
    cfg = yaml.safe_load((lab / "pipeline.yaml").read_text().replace(str(run), str(lab)))
    cfg["stages"]["harmonize"] = {"taxonomy": "lab.yaml"}
    (lab / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    run_pipeline(PipelineConfig.load(lab / "pipeline.yaml"), stages=["ingest", "dedup"], release=False)
    kept = {r["case_id"]: r for r in _table(lab, "duplicates")}
    assert kept["DupA__s0000"]["kept"] and "more annotated structures (6 vs 2)" in kept["DupB__s0000"]["reason"]
    # the taxonomy decides the count: a change to it puts dedup's grouping out of date
    (lab / "lab.yaml").write_text((lab / "lab.yaml").read_text().replace("synonyms:\n", "version: '2'\nsynonyms:\n"))
    reasons = stale_reasons(Context(PipelineConfig.load(lab / "pipeline.yaml")))
    assert any(r.startswith("dedup ran with another version of the taxonomy file") for r in reasons), reasons
    # a record from before dedup named the taxonomy (settings_files null) is not out of date for it:
    # upgrading must not refuse every workspace's release
    import json

    record = lab / "ws" / "stages" / "dedup" / "stage.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "settings_files": None}))
    reasons = stale_reasons(Context(PipelineConfig.load(lab / "pipeline.yaml")))
    assert not [r for r in reasons if r.startswith("dedup")], reasons


def test_the_dedup_figure_is_radiological_like_every_other_picture() -> None:
    """The dedup report drew RAS slices with the patient's right on the viewer's right, so a scan
    looked mirrored beside the QC gallery and the review previews (a radiologist read it as situs
    inversus); its grey levels spanned air to bone and flattened soft tissue to one grey."""
    from curator.dedup.report import _slices, reading, window
    from curator.io.volume import Geometry

    g = Geometry.from_affine((20, 16, 12), np.diag([2.0, 2.0, 3.0, 1.0]))  # RAS: x grows to the patient's right
    arr = np.full((20, 16, 12), -1000.0, dtype=np.float32)
    arr[2:18, 2:14, :] = 40.0  # body
    arr[14:17, 10:13, :] = 300.0  # a bright organ on the patient's right, anterior
    axial, coronal, _, _ = _slices(arr, g, np.zeros(3), np.array([19.0, 22.0, 15.0]))
    shown = reading(axial)
    rows, cols = np.nonzero(shown == 300.0)
    assert cols.max() < shown.shape[1] / 2 and rows.max() < shown.shape[0] / 2  # viewer's left, top
    rows, cols = np.nonzero(reading(coronal) == 300.0)
    assert cols.max() < coronal.shape[0] / 2
    lo, hi = window(arr)
    assert lo >= 40.0 - 1e-3 and hi <= 300.0  # the body's range, not air's


def _header_only(change):
    """A copy with the same voxel array under a rewritten header (``change`` edits the 4×4 affine)."""
    from curator.io.volume import Geometry

    def transform(g, x):
        m = g.matrix.copy()
        change(m)
        return Geometry.from_affine(g.shape, m), x
    return transform


def _negate_slices(m: np.ndarray) -> None:
    m[:3, 2] = -m[:3, 2]


def _swap_columns(m: np.ndarray) -> None:
    m[:3, [0, 1]] = m[:3, [1, 0]]


def test_identical_voxels_under_a_rewritten_header_are_one_group(tmp_path: Path) -> None:
    """Copies whose voxel arrays are byte-identical but whose header direction was rewritten (the
    slice direction negated, x and y swapped) were never grouped: the exact hash follows the
    header, and a train/test leak passed the release. They are now one group (tier ``voxels``)
    whose reason and evidence show both headers. Nearly blank volumes of one shape (air with one
    small block) are not one scan by their bytes."""
    a, b = tmp_path / "A", tmp_path / "B"
    _case(a, "s0000", 31)
    _case(a, "s0001", 32)
    _case(b, "s0000", 31, transform=_header_only(_negate_slices))
    _case(b, "s0001", 32, transform=_header_only(_swap_columns))
    g = grid((56, 44, 26), (6.0, 6.0, 8.0), "LPS")
    blank = np.full((56, 44, 26), -1000, np.int16)
    blank[20:30, 20:30, 10:15] = 40  # 0.8 % of the voxels: the 1st and 99th percentiles are air
    mask = (blank == 40).astype(np.uint8)
    for root, transform in ((a, None), (b, _header_only(_swap_columns))):
        gg, img = transform(g, blank) if transform else (g, blank)
        write_totalseg_case(root, "s0002", img, {s: mask for s in STRUCTURES}, gg)
    (tmp_path / "A.yaml").write_text(_yaml("DupA", "1.0"))
    (tmp_path / "B.yaml").write_text(_yaml("DupB", "2.0"))
    cfg = {"workspace": str(tmp_path / "ws"),
           "sources": [{"dataset": str(tmp_path / "A.yaml"), "root": str(a)},
                       {"dataset": str(tmp_path / "B.yaml"), "root": str(b)}],
           "stages": {"ingest": {"on_bad_case": "warn"}},
           "executor": {"kind": "local", "workers": 1, "progress": False},
           "release": {"root": str(tmp_path / "releases"), "collection": "t", "version": "0.1.0"}}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    run_pipeline(PipelineConfig.load(tmp_path / "pipeline.yaml"), stages=["ingest", "dedup"], release=False)
    cases = {r["case_id"]: r for r in _table(tmp_path, "cases")}
    for s in ("s0000", "s0001", "s0002"):  # the premise: one array, two headers
        assert cases[f"DupA__{s}"]["voxel_sha256"] == cases[f"DupB__{s}"]["voxel_sha256"]
        assert cases[f"DupA__{s}"]["orientation"] != cases[f"DupB__{s}"]["orientation"]
    rows = {r["case_id"]: r for r in _table(tmp_path, "duplicates")}
    assert sorted(rows) == ["DupA__s0000", "DupA__s0001", "DupB__s0000", "DupB__s0001"]  # not the blank s0002s
    for s in ("s0000", "s0001"):
        kept, dropped = rows[f"DupB__{s}"], rows[f"DupA__{s}"]  # the keep policy as for any copy: newer version
        assert kept["kept"] and not dropped["kept"] and dropped["group_id"] == kept["group_id"]
        assert "voxels" in dropped["tiers"] and "newer dataset version" in dropped["reason"]
        assert f"DupA__{s}: identical voxel array, different header geometry" in kept["reason"]
        assert "identical voxel array, different header geometry" in dropped["reason"]
        a_or, b_or = cases[f"DupA__{s}"]["orientation"], cases[f"DupB__{s}"]["orientation"]
        assert f"orientation {b_or} (kept) vs {a_or}" in dropped["reason"]
        import json

        headers = json.loads(dropped["evidence"])["header_geometry"]
        assert (headers["kept"]["orientation"], headers["this"]["orientation"]) == (b_or, a_or)
