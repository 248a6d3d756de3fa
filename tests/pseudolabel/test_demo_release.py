"""A demo-like pipeline (ingest → harmonize → preprocess → pseudolabel → release): the release
carries the review worklist with previews, and its stores' original label layers are the
bytes the workspace stores held before the pseudolabel stage ran."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml

from curator.demo.data import build_demo_data
from curator.testing.pipelines import make_pipeline, run


def layer_digests(stores: Path, layer: str) -> dict[str, str]:
    """sha256 over the file names and bytes of one label layer, per store."""
    out = {}
    for store in sorted(stores.glob("*.zarr")):
        h = hashlib.sha256()
        files = sorted(p for p in (store / "labels" / layer).rglob("*") if p.is_file())
        for p in files:
            h.update(p.relative_to(store).as_posix().encode())
            h.update(p.read_bytes())
        out[store.name] = h.hexdigest() if files else ""
    return out


@pytest.fixture(scope="module")
def demo_release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("pl_demo")
    data = build_demo_data(tmp / "raw")
    # the partly labelled datasets: spleen only, kidneys only
    sources = [s for s in data.sources if s["dataset"] in ("MSD_Spleen", "KiTS23")]
    stages = {"ingest": {"on_bad_case": "warn"}, "preprocess": {"target_spacing_mm": [2.0, 2.0, 4.0]},
              "pseudolabel": {"ensemble": "demo", "overlap": 0.25, "review_fraction": 0.2, "threads": 1},
              "dedup": {"enabled": False}, "qc": {"enabled": False}}
    pipeline = make_pipeline(tmp, sources, stages=stages, workers=2)
    run(pipeline, stages=["ingest", "harmonize", "preprocess"])
    stores = tmp / "workspace" / "stores"
    before = layer_digests(stores, "original")
    assert sum(bool(v) for v in before.values()) >= 8, "the labelled cases have an original layer"
    release = run(pipeline, stages=["pseudolabel"], release=True).release
    assert release is not None
    return release, stores, before


def test_release_has_review_worklist_with_previews(demo_release: tuple[Path, Path, dict[str, str]]) -> None:
    release, _, _ = demo_release
    att = pq.read_table(release / "attention.parquet").to_pylist()
    flagged = sorted({(r["review_rank"], r["case_id"]) for r in att if r["review"]})
    assert flagged, "the stage flags the top cases for review"
    with open(release / "review" / "worklist.csv", newline="") as f:
        work = list(csv.DictReader(f))
    assert [(int(w["review_rank"]), w["case_id"]) for w in work] == flagged
    meta = json.loads((release / "release.json").read_text())
    assert "review/worklist.csv" in meta["files"]
    for w in work:
        previews = w["previews"].split(";")
        assert previews and previews[0]
        for rel in previews:
            png = release / "review" / rel
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"review/{rel}" in meta["files"], "previews are checksummed in release.json"
        assert not list((release / "review" / w["case_id"]).glob("*.nii.gz")), "no editable files in a release"
    assert meta["review"]["cases"] == len(work)


def test_released_original_layers_are_the_bytes_before_pseudolabel(
        demo_release: tuple[Path, Path, dict[str, str]]) -> None:
    release, stores, before = demo_release
    released = layer_digests(release / "stores", "original")
    assert released == before, "an original label layer in the release differs from the pre-pseudolabel store"
    assert layer_digests(stores, "original") == before, "the workspace's original layers changed"
    pseudo = layer_digests(release / "stores", "pseudo")
    assert any(pseudo.values()), "the released stores carry the pseudo layers"
    labels = pq.read_table(release / "labels.parquet").to_pylist()
    origins = {(r["case_id"], r["term_id"]): r["origin"] for r in labels}
    assert "pseudo" in origins.values() and "original" in origins.values()
    spleen = [o for (c, t), o in origins.items() if c.startswith("MSD_Spleen") and t == "spleen"]
    assert spleen and set(spleen) == {"original"}, "an annotated term is never taken from the pseudo layer"


def test_release_records_the_models_behind_its_pseudo_labels(demo_release: tuple[Path, Path, dict[str, str]]) -> None:
    """release.json names every ensemble member with its weights' checksum (so the card,
    `curator lineage` and `curator diff` see a retrained model)."""
    from curator.pseudolabel.config import PseudolabelConfig

    release, _, _ = demo_release
    models = json.loads((release / "release.json").read_text())["models"]
    specs = PseudolabelConfig.from_dict({"ensemble": "demo"}).specs()
    assert sorted(models) == sorted(s.name for s in specs)
    for s in specs:
        (weights,) = s.files()
        assert models[s.name]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        assert models[s.name]["terms"] == list(s.terms) and models[s.name]["fingerprint"] == s.fingerprint()


def test_one_worker_gives_the_same_release_bytes_as_two(demo_release: tuple[Path, Path, dict[str, str]],
                                                         tmp_path: Path) -> None:
    """Torch's CPU convolutions round differently with the thread count; with the threads fixed
    (``threads: 1``, not the default cores ÷ workers), 1 and 2 workers give the same bytes."""
    release, stores, _ = demo_release
    tmp = stores.parent.parent
    shutil.copytree(tmp / "workspace", tmp_path / "workspace")
    shutil.rmtree(tmp_path / "workspace" / "stages" / "pseudolabel")  # every case runs again, in one worker
    meta = json.loads((release / "release.json").read_text())
    cfg = yaml.safe_load((tmp / "pipeline.yaml").read_text())
    pipeline = make_pipeline(tmp_path, cfg["sources"], stages=cfg["stages"], workers=1)
    again = run(pipeline, stages=["pseudolabel"], release=True).release
    assert again is not None
    for name in ("attention.parquet", "labels.parquet"):
        assert (again / name).read_bytes() == (release / name).read_bytes(), name
    again_meta = json.loads((again / "release.json").read_text())
    assert again_meta["stores"] == meta["stores"]
    n = sum(1 for s in stores.glob("*.zarr") if (s / "labels" / "pseudo").is_dir())
    assert meta["inference"] == again_meta["inference"] == [
        {"cases": n, "device": "cpu", "threads": 1, "version": torch.__version__,
         "cpu_capability": torch.backends.cpu.get_cpu_capability()}]
