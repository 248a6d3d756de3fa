"""The preprocess stage on a tiny collection: stores, table, fixes, planes, caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from curator.config import PipelineConfig
from curator.pipeline import run_pipeline
from curator.preprocess.terms import term_id
from curator.store import CaseStore
from curator.testing.phantoms import STRUCTURES
from tests.preprocess.conftest import KITS_YAML, SPACING, Tiny, off
from tests.preprocess.fidelity import fidelity


def test_every_case_has_a_store_and_a_row(tiny: Tiny) -> None:
    rows = pq.read_table(tiny.workspace / "tables" / "preprocessed.parquet").to_pylist()
    assert sorted(r["case_id"] for r in rows) == sorted(tiny.phantoms)
    for r in rows:
        s = CaseStore(tiny.workspace / r["store"])
        assert s.geometry.orientation == "RAS" and np.allclose(s.geometry.spacing, SPACING)
        assert r["body_voxels"] == int(s.body().sum()) > 0
        assert abs(r["body_volume_ml"] - r["body_voxels"] * np.prod(SPACING) / 1000) < 1e-6
        assert r["image_dtype"] == "int16" and s.read("image").dtype == np.int16
        assert r["norm_kind"] == "ct" and (r["norm_clip_low"], r["norm_clip_high"]) == (-500.0, 1000.0)


def test_intensity_offset_fix_gives_hounsfield_units(tiny: Tiny) -> None:
    rows = {r["case_id"]: r for r in pq.read_table(tiny.workspace / "tables" / "preprocessed.parquet").to_pylist()}
    for cid, r in rows.items():
        # stored +1024 for TinyKits; the fix brings soft tissue back to ~35-220 HU
        assert -150 < r["intensity_p50"] < 250, (cid, r["intensity_p50"])


def test_overlapping_structures_go_to_separate_planes(tiny: Tiny) -> None:
    s = CaseStore(tiny.workspace / "stores" / "TinyTotalSeg__s0000.zarr")
    assert len(s.plane_values()) == 2
    g, lab = tiny.phantoms["TinyTotalSeg__s0000"]
    kid = s.mask(term_id("kidney"))
    assert np.array_equal(kid, s.mask(term_id("left kidney")) | s.mask(term_id("right kidney")))
    rows = fidelity((np.isin(lab, [STRUCTURES["liver"][0]])).astype(np.uint8), g,  # type: ignore[arg-type]
                    s.mask(term_id("liver")).astype(np.uint8), s.geometry)
    assert rows[0]["shift_vox"] < 0.5


def test_kits_codes_and_geometry(tiny: Tiny) -> None:
    s = CaseStore(tiny.workspace / "stores" / "TinyKits__case_00001.zarr")
    # raw terms plus the derived terms whose union contains them (from the hierarchy)
    assert set(s.terms()) == {term_id("kidney"), term_id("kidney tumor"), term_id("kidney cyst"),
                              "kidney_mass", "kidney_and_mass"}
    assert np.array_equal(s.mask("kidney_and_mass"),
                          s.mask(term_id("kidney")) | s.mask("kidney_mass"))
    g, lab = tiny.phantoms["TinyKits__case_00001"]
    src = np.isin(lab, [STRUCTURES[k][0] for k in ("kidney_left", "kidney_right")]).astype(np.uint8)
    assert fidelity(src, g, s.mask(term_id("kidney")).astype(np.uint8), s.geometry)[0]["shift_vox"] < 0.5  # type: ignore[arg-type]


def test_second_run_is_cached_and_identical(tiny: Tiny) -> None:
    before = (tiny.workspace / "tables" / "preprocessed.parquet").read_bytes()
    res = run_pipeline(PipelineConfig.load(tiny.root / "pipeline.yaml"), stages=["ingest", "preprocess"],
                       release=False)
    rep = next(r for r in res.reports if r.stage == "preprocess")
    assert rep.cached == rep.planned == 5 and rep.ran == 0
    assert (tiny.workspace / "tables" / "preprocessed.parquet").read_bytes() == before


def test_a_case_missing_a_structure_file_gets_no_derived_term_from_it(tiny: Tiny, tmp_path) -> None:
    """Per-structure data: a case without its right-kidney file has not annotated that kidney, so
    its store must not call the left kidney alone "kidney" (harmonize gives it no kidney row)."""
    import shutil

    import yaml

    src = tmp_path / "ts"
    for sid in ("s0000", "s0001"):
        shutil.copytree(tiny.root / "ts" / sid, src / sid)
        (src / sid / "segmentations" / "kidneys.nii.gz").unlink()
    (src / "s0001" / "segmentations" / "kidney_right.nii.gz").unlink()
    yml = tmp_path / "ts.yaml"
    yml.write_text((tiny.root / "ts.yaml").read_text().replace(",\n               kidneys: kidney}", "}"))
    cfg = {"workspace": "ws", "registry": [str(yml)], "sources": [{"dataset": str(yml), "root": str(src)}],
           "stages": {"preprocess": {"target_spacing_mm": list(SPACING)}, **off("dedup", "pseudolabel", "qc")},
           "executor": {"kind": "local", "workers": 1, "progress": False},
           "release": {"root": "releases", "collection": "t", "version": "0.1.0"}}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    run_pipeline(PipelineConfig.load(tmp_path / "pipeline.yaml"), stages=["ingest", "harmonize", "preprocess"])
    whole = CaseStore(tmp_path / "ws" / "stores" / "TinyTotalSeg__s0000.zarr")
    half = CaseStore(tmp_path / "ws" / "stores" / "TinyTotalSeg__s0001.zarr")
    assert "kidney" in whole.terms("original")
    assert np.array_equal(whole.mask("kidney"), whole.mask("kidney_left") | whole.mask("kidney_right"))
    assert "kidney_left" in half.terms("original") and "kidney" not in half.terms("original")
    labels = pq.read_table(tmp_path / "ws" / "tables" / "labels.parquet").to_pylist()
    assert {r["term_id"] for r in labels if r["case_id"] == "TinyTotalSeg__s0001"} == {"liver", "spleen",
                                                                                        "kidney_left"}


def _copy_workspace(tiny: Tiny, tmp_path: Path) -> Path:
    """A copy of the tiny workspace with its pipeline.yaml set to release 0.2.0."""
    import shutil

    import yaml

    root = tmp_path / "root"
    shutil.copytree(tiny.root / "ws", root / "ws")
    cfg = yaml.safe_load((tiny.root / "pipeline.yaml").read_text())
    cfg["release"]["version"] = "0.2.0"
    (root / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    return root


def test_a_deleted_store_is_rebuilt_and_never_released_as_a_row_without_its_store(tiny: Tiny, tmp_path) -> None:
    import shutil


    root = _copy_workspace(tiny, tmp_path)
    config = PipelineConfig.load(root / "pipeline.yaml")
    cid = "TinyKits__case_00001"
    store = root / "ws" / "stores" / f"{cid}.zarr"
    before = CaseStore(store).read("image")
    shutil.rmtree(store)
    res = run_pipeline(config, stages=["ingest", "preprocess"], release=False)
    rep = next(r for r in res.reports if r.stage == "preprocess")
    assert (rep.ran, rep.cached) == (1, 4)  # the cached result alone no longer vouches for the store
    assert np.array_equal(CaseStore(store).read("image"), before)
    # gone again, and released without re-running preprocess: refused (it was left out with a
    # warning: the case lost its store and labels)
    shutil.rmtree(store)
    from curator.errors import ReleaseError
    from curator.release.build import build_release
    from curator.runner.context import Context

    with pytest.raises(ReleaseError) as e:
        build_release(Context(config))
    assert e.value.kind == "store_missing" and cid in str(e.value) and "curator run" in str(e.value)
    assert not (root / "releases" / "t" / "0.2.0").exists()


def test_stores_name_terms_by_the_taxonomy_harmonize_uses(tiny: Tiny, tmp_path) -> None:
    """A taxonomy of one's own (stages.harmonize.taxonomy) that extends a base file with a term
    the bundled one lacks: the labels table and the store's planes both know it (the store used
    the bundled one and left the code out); a change to the base file makes harmonize stale."""
    import yaml

    from curator.runner.context import Context
    from curator.runner.freshness import stale_reasons
    from curator.taxonomy import default_path, load_taxonomy

    base = tmp_path / "base.yaml"
    base.write_text(default_path().read_text())
    tax = tmp_path / "taxonomy.yaml"
    tax.write_text(yaml.safe_dump({"extends": "base.yaml", "version": "toy-1", "terms": [
        {"id": "toy_mass", "name": "toy lesion", "category": "lesion", "region": "abdomen"}]}))
    yml = tmp_path / "kits.yaml"
    yml.write_text((tiny.root / "kits.yaml").read_text().replace("3: kidney cyst", "3: toy lesion"))
    cfg = {"workspace": "ws", "registry": [str(yml)], "sources": [{"dataset": str(yml), "root": str(tiny.root / "kits")}],
           "stages": {"preprocess": {"target_spacing_mm": list(SPACING)}, "harmonize": {"taxonomy": str(tax)},
                      **off("dedup", "pseudolabel", "qc")},
           "executor": {"kind": "local", "workers": 1, "progress": False},
           "release": {"root": "releases", "collection": "t", "version": "0.1.0"}}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    run_pipeline(PipelineConfig.load(tmp_path / "pipeline.yaml"), stages=["ingest", "harmonize", "preprocess"])
    labels = pq.read_table(tmp_path / "ws" / "tables" / "labels.parquet").to_pylist()
    with_mass = {r["case_id"] for r in labels if r["term_id"] == "toy_mass" and r["present"]}
    assert with_mass
    for cid in with_mass:
        store = CaseStore(tmp_path / "ws" / "stores" / f"{cid}.zarr")
        assert "toy_mass" in store.terms("original") and store.mask("toy_mass").any()
    # the release carries the taxonomy to the loader: the custom term's name in its prompts
    from curator.release.query import Release
    from curator.torch import PatchDataset

    rel = Release(tmp_path / "releases" / "t" / "0.1.0")
    assert rel.taxonomy.term("toy_mass").name == "toy lesion"
    # the release names the taxonomy it was built with, not the bundled one: version and both files
    version = f"{load_taxonomy(base).version}+toy-1"
    assert rel.taxonomy.version == version == load_taxonomy(tax).version
    (row,) = [line for line in (rel.path / "DATASET_CARD.md").read_text().splitlines() if line.startswith("| taxonomy")]
    assert f"{version} (taxonomy.yaml sha256 " in row and ", extending base.yaml sha256 " in row, row
    ds = PatchDataset(rel, terms=["toy_mass", "kidney"], patch_size=(16, 16, 8), where=f"case_id = '{min(with_mass)}'")
    item = ds[0]
    assert item["prompts"] == ["(ct) toy lesion", "(ct) kidney"] and bool(item["present"][0])
    ctx = Context(PipelineConfig.load(tmp_path / "pipeline.yaml"))
    assert not [r for r in stale_reasons(ctx) if r.startswith("harmonize")]
    base.write_text(base.read_text() + "- {id: toy_other, name: toy other, category: lesion, region: abdomen}\n")
    assert [r for r in stale_reasons(ctx) if r.startswith("harmonize")] == [
        "harmonize ran with another version of the taxonomy file"]


def test_a_label_resampling_erases_is_a_warning_and_unknown_to_the_loader(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A 1 mm tumour on one slice, stored at 1 × 1 × 3 mm: the store does not list it, a problem
    row says so and what to do, and the patch loader reads it as not annotated (never as
    "annotated, no tumour"); a value declared under `labels.ignore` raises no warning."""
    from curator.io.volume import Geometry
    from curator.release.query import Release
    from curator.testing.layouts import write_kits_case
    from curator.torch import PatchDataset

    g = Geometry.from_affine((40, 40, 30), np.diag([-1.0, -1.0, 1.0, 1.0]))
    img = np.full(g.shape, -1000 + 1024, np.int16)
    img[5:35, 5:35, :] = 40 + 1024
    seg = np.zeros(g.shape, np.uint8)
    seg[8:20, 8:20, 5:25] = 1
    seg[12:16, 12:16, 12] = 2  # 4 × 4 × 1 voxels between the 3 mm output slices
    seg[25:30, 25:30, 5:25] = 3
    seg[30:33, 8:11, 5:8] = 255  # declared as ignored
    write_kits_case(tmp_path / "src", "case_00000", img, seg, g)
    yml = tmp_path / "k.yaml"
    yml.write_text(KITS_YAML + "  ignore: [255]\n")
    cfg = {"workspace": "ws", "registry": [str(yml)], "sources": [{"dataset": str(yml), "root": str(tmp_path / "src")}],
           "stages": {"preprocess": {"target_spacing_mm": [1, 1, 3]}, **off("dedup", "pseudolabel", "qc")},
           "executor": {"kind": "local", "workers": 1, "progress": False},
           "release": {"root": "releases", "collection": "t", "version": "0.1.0"}}
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(cfg))
    result = run_pipeline(PipelineConfig.load(tmp_path / "pipeline.yaml"), stages=["ingest", "harmonize", "preprocess"])
    store = CaseStore(tmp_path / "ws" / "stores" / "TinyKits__case_00000.zarr")
    assert "kidney_tumor" not in store.terms() and {"kidney", "kidney_cyst"} <= set(store.terms())
    assert sorted(store.attrs["label_raw_values"][0].values()) == ["1", "3"]
    rel = Release(result.release)
    probs = rel.sql("select kind, message from problems where stage = 'preprocess'").fetchall()
    assert [p[0] for p in probs] == ["label_lost_in_resampling"], probs  # and nothing about value 255
    assert "kidney_tumor" in probs[0][1] and "target_spacing_mm" in probs[0][1]
    with pytest.warns(UserWarning, match="no case of the release holds 'kidney_tumor'"):
        ds = PatchDataset(result.release, terms=["kidney", "kidney_tumor"], patch_size=(16, 16, 8), split=None,
                          samples_per_epoch=1)
    item = ds[0]
    assert item["present"].tolist() == [True, False]  # unknown, masked out of the loss — not a true negative



def test_a_preprocess_worker_loads_neither_torch_nor_the_query_engines(tmp_path) -> None:
    """A fresh worker's first case paid 1.6 s importing torch (and DuckDB, Polars) through the
    review module's imports; the preprocess stage needs none of them."""
    import subprocess
    import sys

    code = ("import sys\nfrom pathlib import Path\nfrom curator.preprocess.stage import _carry_revised, _keep_revised\n"
            f"_keep_revised(Path({str(tmp_path / 'no.zarr')!r}), None)\n"
            f"_carry_revised(Path({str(tmp_path / 'no.zarr')!r}), None)\n"
            "print(sorted(m for m in ('torch', 'duckdb', 'polars') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_a_damaged_store_is_rebuilt_and_a_release_refuses_it(tiny: Tiny, tmp_path) -> None:
    """A store with a shard deleted passed as cached (only zarr.json was looked at), and the release
    published it: zeros where the shard was, and `curator verify` said OK."""


    from curator.errors import ReleaseError
    from curator.release.build import build_release
    from curator.runner.context import Context

    root = _copy_workspace(tiny, tmp_path)
    config = PipelineConfig.load(root / "pipeline.yaml")
    cid = "TinyKits__case_00001"
    store = root / "ws" / "stores" / f"{cid}.zarr"
    before = CaseStore(store).read("image")
    shard = next(p for p in sorted((store / "image" / "c").rglob("*")) if p.is_file())
    shard.unlink()
    with pytest.raises(ReleaseError) as e:
        build_release(Context(config))
    assert e.value.kind == "store_damaged" and cid in str(e.value) and "image: shard" in str(e.value)
    assert not (root / "releases" / "t" / "0.2.0").exists()
    res = run_pipeline(config, stages=["ingest", "preprocess"], release=False)
    rep = next(r for r in res.reports if r.stage == "preprocess")
    assert (rep.ran, rep.cached) == (1, 4)
    assert np.array_equal(CaseStore(store).read("image"), before)
    build_release(Context(config))



def test_a_chunk_damaged_before_the_release_is_refused_by_it_and_named_by_verify(tiny: Tiny, tmp_path,
                                                                                  monkeypatch) -> None:
    """One bit flipped inside an image chunk behind an intact shard index: the release did not read
    the image and the index's CRC32C agreed, so it published the store (a voxel changed), and
    `curator verify` said OK. Chunks carry a CRC32C now: the release refuses the store, naming the
    chunk, and verify names it in a release written without the check."""
    from curator.errors import ReleaseError
    from curator.preprocess import release as pre_release
    from curator.release.build import build_release
    from curator.release.integrity import verify_release
    from curator.runner.context import Context
    from tests.store.test_store import _flip_in_first_chunk

    root = _copy_workspace(tiny, tmp_path)
    config = PipelineConfig.load(root / "pipeline.yaml")
    cid = "TinyKits__case_00001"
    _flip_in_first_chunk(root / "ws" / "stores" / f"{cid}.zarr" / "image")
    with pytest.raises(ReleaseError) as e:
        build_release(Context(config))
    assert e.value.kind == "store_damaged" and cid in str(e.value)
    assert "image: shard 0/0/0's chunk 0/0/0 fails its CRC32C checksum" in str(e.value)
    real = pre_release.store_damage
    monkeypatch.setattr(pre_release, "store_damage", lambda *a, **k: real(*a))  # the older release step
    rep = verify_release(build_release(Context(config)))
    assert not rep.ok and not rep.modified and not rep.stores_modified
    assert rep.stores_damaged == [f"{cid}: image: shard 0/0/0's chunk 0/0/0 fails its CRC32C checksum"]

def test_verify_names_a_store_damaged_before_its_release(tiny: Tiny, tmp_path, monkeypatch) -> None:
    """A release written by a curator that did not check its stores hashed the damaged store as it
    was, so every checksum agrees: verify now also checks each store's shards."""


    from curator.preprocess import release as pre_release
    from curator.release.build import build_release
    from curator.release.integrity import verify_release
    from curator.runner.context import Context

    root = _copy_workspace(tiny, tmp_path)
    store = root / "ws" / "stores" / "TinyKits__case_00001.zarr"
    next(p for p in sorted((store / "image" / "c").rglob("*")) if p.is_file()).unlink()
    monkeypatch.setattr(pre_release, "store_damage", lambda *a, **k: [])  # the older release step
    rel = build_release(Context(PipelineConfig.load(root / "pipeline.yaml")))
    rep = verify_release(rel)
    assert not rep.ok and not rep.modified and not rep.stores_modified
    assert [s.split(":")[0] for s in rep.stores_damaged] == ["TinyKits__case_00001"]
