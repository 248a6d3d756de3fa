"""What a rebuild and an audit of a release rely on: release.json counts only the release's own
cases, records its parent's content, ships the dataset YAMLs curator does not, and a version
is rebuilt only with the content it was published with."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from curator.errors import ReleaseError
from curator.registry import builtin_dir, load_dataset_file
from curator.release.integrity import content_sha256, verify_release
from curator.testing.releases import reseal

Build = Callable[..., Path]


def _info(rel: Path) -> dict:
    return json.loads((rel / "release.json").read_text())


def test_inference_counts_only_the_stores_the_release_holds(demo: Path, release_with: Build) -> None:
    """release.json's inference counted every store of the workspace with a pseudo layer — those of
    cases gone from their source (or failed since) too, which the release does not hold."""
    stores = demo / "workspace" / "stores"
    labelled = next(s for s in sorted(stores.glob("*.zarr")) if (s / "labels" / "pseudo").is_dir())
    shutil.copytree(labelled, stores / "Gone__x.zarr")  # a case removed from its source keeps its store
    rel = release_with(demo, "0.2.0")
    released = sum(1 for s in (rel / "stores").glob("*.zarr") if (s / "labels" / "pseudo").is_dir())
    assert released >= 1 and not (rel / "stores" / "Gone__x.zarr").exists()
    assert sum(e["cases"] for e in _info(rel)["inference"]) == released


def test_release_records_its_parents_content_and_verify_checks_it(demo: Path, release_with: Build) -> None:
    v1 = demo / "releases" / "demo" / "0.1.0"
    v2 = release_with(demo, "0.2.0")
    info = _info(v2)
    assert info["parent_content_sha256"] == _info(v1)["content_sha256"]
    rep = verify_release(v2)
    assert rep.ok and "matches" in rep.parent, rep.to_dict()
    # the parent built again from the same workspace: another release.json, the same content
    shutil.rmtree(v1)
    release_with(demo, "0.1.0")
    assert hashlib.sha256((v1 / "release.json").read_bytes()).hexdigest() != info["parent_release_json_sha256"]
    rep = verify_release(v2)
    assert not rep.ok and rep.parent_changed and "its content is the one recorded here" in rep.parent
    # the parent's data rewritten with its checksums (its own verify sees nothing wrong): the child says so
    cases = pq.read_table(v1 / "cases.parquet")
    pq.write_table(cases.slice(1), v1 / "cases.parquet")
    reseal(v1)
    rep = verify_release(v2)
    assert not rep.ok and rep.parent_changed and "content changed" in rep.parent
    assert info["parent_content_sha256"][:12] in rep.parent


def test_rebuilding_a_version_keeps_the_same_content_and_refuses_other_content(demo: Path,
                                                                               release_with: Build) -> None:
    v1 = demo / "releases" / "demo" / "0.1.0"

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(v1)): p.read_bytes() for p in sorted(v1.rglob("*")) if p.is_file()}

    before = files()
    old = _info(v1)["content_sha256"]
    assert release_with(demo, "0.1.0") == v1  # the same content: the published folder is kept as it is
    assert files() == before
    # other content (the card and croissant.json name the creators): refused, both digests named
    with pytest.raises(ReleaseError) as e:
        release_with(demo, "0.1.0", creators=["Jane Doe"])
    assert e.value.kind == "release_exists" and f"content_sha256 {old} (published)" in e.value.detail
    assert "DATASET_CARD.md" in e.value.detail
    assert e.value.remedy and "release.version" in e.value.remedy and "--overwrite" in e.value.remedy
    assert files() == before
    assert not [p for p in v1.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    # --overwrite replaces it knowingly
    from curator.config import PipelineConfig
    from curator.release.build import build_release
    from curator.runner.context import Context

    build_release(Context(PipelineConfig.load(demo / "pipeline.yaml")), overwrite=True)
    new = _info(v1)
    assert new["content_sha256"] != old and verify_release(v1).ok
    assert not [p for p in v1.parent.iterdir() if p.name.startswith(".")]


def test_dataset_yamls_curator_does_not_ship_travel_with_the_release(demo_base: Path, demo: Path,
                                                                     release_with: Build) -> None:
    rel = demo_base / "releases" / "demo" / "0.1.0"
    info = _info(rel)
    shipped = info["registry_files"]
    assert sorted(shipped) == ["DemoPancreasDICOM", "DemoTotalSeg"]  # KiTS23, MSD_Spleen: built in
    for name, entry in shipped.items():
        data = (demo_base / "raw" / f"{name}.yaml").read_bytes()
        assert (rel / entry["file"]).read_bytes() == data and entry["copied"] and not entry["overrides_builtin"]
        assert entry["sha256"] == info["files"][entry["file"]] == hashlib.sha256(data).hexdigest()
        # the copy gives the spec the release was built with
        spec = load_dataset_file(rel / entry["file"])
        from curator.io.fsutil import sha256_json

        assert sha256_json(spec.to_dict()) == info["registry"][name]["spec_sha256"]
    assert info["content_sha256"] == content_sha256(info["files"])  # so the YAMLs are part of the content
    assert verify_release(rel).ok
    # a `registry:` file in place of a built-in dataset is shipped too, marked so
    extra = demo / "mine"
    extra.mkdir()
    shutil.copy(builtin_dir() / "KiTS23.yaml", extra / "KiTS23.yaml")
    cfg = yaml.safe_load((demo / "pipeline.yaml").read_text())
    cfg["registry"] = [*cfg.get("registry", []), str(extra)]
    (demo / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    v2 = release_with(demo, "0.2.0")
    kits = _info(v2)["registry_files"]["KiTS23"]
    assert kits["overrides_builtin"] and (v2 / kits["file"]).read_bytes() == (extra / "KiTS23.yaml").read_bytes()
    # an edited copy in the release is caught like any other file
    with open(v2 / kits["file"], "a") as f:
        f.write("# edited\n")
    assert verify_release(v2).modified == ["registry/KiTS23.yaml"]
