"""Lineage: semantic version order, parent resolution, taxonomy and model checksums in release.json."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from curator.config import PipelineConfig
from curator.errors import ReleaseError
from curator.pipeline import run_pipeline
from curator.release.lineage import existing_versions, record_model, version_key

Build = Callable[..., Path]


def test_version_order() -> None:
    vs = ["0.10.0", "0.2.0", "1.0.0", "1.0.0-rc.2", "1.0.0-rc.10", "0.2.1", "1.0.0-alpha"]
    assert sorted(vs, key=version_key) == ["0.2.0", "0.2.1", "0.10.0", "1.0.0-alpha", "1.0.0-rc.2",
                                           "1.0.0-rc.10", "1.0.0"]
    with pytest.raises(ReleaseError):
        version_key("v1")


def test_parent_is_the_newest_older_version_or_the_configured_one(demo: Path, release_with: Build) -> None:
    coll = demo / "releases" / "demo"
    r3 = release_with(demo, "0.3.0")
    assert json.loads((r3 / "release.json").read_text())["parent_version"] == "0.1.0"
    r2 = release_with(demo, "0.2.0")  # built after 0.3.0 but older: its parent is still 0.1.0
    assert json.loads((r2 / "release.json").read_text())["parent_version"] == "0.1.0"
    r4 = release_with(demo, "0.4.0", parent="0.2.0")
    info = json.loads((r4 / "release.json").read_text())
    assert info["parent_version"] == "0.2.0"
    assert info["parent_release_json_sha256"] == hashlib.sha256((r2 / "release.json").read_bytes()).hexdigest()
    assert existing_versions(coll) == ["0.1.0", "0.2.0", "0.3.0", "0.4.0"]
    with pytest.raises(ReleaseError, match="does not exist"):
        release_with(demo, "0.5.0", parent="0.0.9")
    with pytest.raises(ReleaseError, match="not older"):
        release_with(demo, "0.5.0", parent="0.5.0")
    assert not (coll / "0.5.0").exists()


def test_a_parent_rewritten_after_its_child_was_built_is_caught(demo: Path, release_with: Build) -> None:
    """A tester rewrote a table of 0.1.0 and its checksum in 0.1.0's release.json: both releases
    verified OK and `diff 0.2.0` reported QC changes that never happened. The child's record of
    its parent's release.json now fails the child's verify and warns in diff and lineage."""
    from typer.testing import CliRunner

    from curator.cli import app
    from curator.release.integrity import verify_release

    child = release_with(demo, "0.2.0")
    parent = demo / "releases" / "demo" / "0.1.0"
    good = verify_release(child)
    assert good.ok and "matches the checksum recorded here" in good.parent and verify_release(parent).parent == ""
    info = json.loads((parent / "release.json").read_text())
    info["description"] = "rewritten"  # any rewrite of the parent's manifest (it re-lists what it rewrote)
    (parent / "release.json").write_text(json.dumps(info))
    rep = verify_release(child)
    assert not rep.ok and rep.parent_changed and "parent 0.1.0's release.json changed" in rep.parent
    assert rep.to_dict()["parent_changed"] is True
    runner = CliRunner()
    r = runner.invoke(app, ["verify", str(child)])
    assert r.exit_code == 1 and "CHANGED" in r.output and "changed since this release was built" in " ".join(
        r.output.split()), r.output
    for args in (["diff", str(child)], ["diff", str(parent), str(child)], ["lineage", str(child)]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0 and "warning" in r.output and "changed since this release was built" in " ".join(
            r.output.split()), (args, r.output)
    shutil.rmtree(parent)  # a parent that is not beside its child is not checked
    gone = verify_release(child)
    assert gone.ok and "not beside this release" in gone.parent


def test_taxonomy_checksum_is_recorded_when_present(demo: Path, release_with: Build, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from curator.resources import resource_dir

    r1 = release_with(demo, "0.2.0")
    assert json.loads((r1 / "release.json").read_text())["taxonomy"] is None or \
        (resource_dir("label_system") / "taxonomy.yaml").is_file()
    ls = tmp_path / "label_system"
    shutil.copytree(resource_dir("label_system"), ls)
    text = (ls / "taxonomy.yaml").read_text()
    assert re.search(r"^version: '[0-9.]+'", text, flags=re.MULTILINE)
    (ls / "taxonomy.yaml").write_text(re.sub(r"^version: '[0-9.]+'", "version: '2.1'", text, count=1, flags=re.MULTILINE))
    monkeypatch.setenv("CURATOR_LABEL_SYSTEM_DIR", str(ls))
    with pytest.raises(ReleaseError, match="harmonize ran with another version of the taxonomy file"):
        release_with(demo, "0.3.0")  # the labels were made with the other taxonomy
    run_pipeline(PipelineConfig.load(demo / "pipeline.yaml"), release=False)
    info = json.loads((release_with(demo, "0.3.0") / "release.json").read_text())
    assert info["taxonomy"]["version"] == "2.1"
    assert info["taxonomy"]["sha256"] == hashlib.sha256((ls / "taxonomy.yaml").read_bytes()).hexdigest()


def test_models_recorded_by_a_release_step(demo: Path, release_with: Build, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights v1")
    from curator.release import build

    def step(builder: build.ReleaseBuilder) -> None:
        record_model(builder, "pseudo-abdomen", weights, framework="torch")

    from tests.release import helpers

    monkeypatch.setattr(helpers, "record_model_step", step, raising=False)
    rel = release_with(demo, "0.2.0", ("tests.release.helpers:record_model_step",))
    models = json.loads((rel / "release.json").read_text())["models"]
    assert models.pop("pseudo-abdomen") == {"file": "model.pt", "bytes": 10, "framework": "torch",
                                            "sha256": hashlib.sha256(b"weights v1").hexdigest()}
    assert sorted(models) == ["demo_mixer", "demo_resnet", "demo_unet"]  # the demo's pseudo labels' ensemble
    assert "pseudo-abdomen" in (rel / "DATASET_CARD.md").read_text()


def test_release_json_has_no_machine_paths(demo: Path) -> None:
    text = (demo / "releases" / "demo" / "0.1.0" / "release.json").read_text()
    assert str(demo.parent) not in text and "/tmp" not in text
