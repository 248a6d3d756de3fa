"""What a release says about how it was made (tester 30): the library versions (F3), the code that
computed each stage's cases and tables, not only the code that assembled the release (F1), which
pseudonym key made its ids (F2), a pipeline_config that agrees with its hash (F4), and a content
digest two builds of the same inputs share (F5)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from curator.envinfo import code_revision, versions
from curator.release.diff import diff_releases
from curator.release.integrity import content_sha256, verify_release
from curator.testing.pipelines import make_pipeline, run, write_kits_cases

KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))
Build = Callable[..., Path]


def _build(folder: Path, key: bytes = KEY_A, voxel: bool = False) -> Path:
    """A small KiTS23 pipeline run in ``folder`` with its release; ``voxel``: one image voxel of
    one case is 1 HU brighter."""
    raw = write_kits_cases(folder / "raw", 2)
    if voxel:
        f = raw / "dataset" / "case_00000" / "imaging.nii.gz"
        img = nib.load(f)
        data = np.asarray(img.dataobj).copy()
        data[8, 7, 4] += 1
        nib.save(nib.Nifti1Image(data, img.affine, img.header), f)
    pipe = make_pipeline(folder, [{"dataset": "KiTS23", "root": str(raw)}], key=key)
    release = run(pipe, release=True).release
    assert release is not None
    return release


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """Releases built once per module, by name (each in a folder of its own)."""
    made: dict[str, Path] = {}

    def _get(name: str, **kw: object) -> Path:
        if name not in made:
            made[name] = _build(tmp_path_factory.mktemp(name), **kw)  # type: ignore[arg-type]
        return made[name]

    return _get


def _info(release: Path) -> dict:
    return json.loads((release / "release.json").read_text())


def _copy(release: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(release, tmp_path / "copy", copy_function=shutil.copy2))


def test_release_json_records_the_library_versions_curator_env_prints(build: Build) -> None:
    """F3: numpy, scipy, SimpleITK, nibabel, pydicom, zarr, pyarrow and python were recorded
    nowhere in release.json (only torch, for pseudo labels)."""
    info = _info(build("a"))
    env = info["environment"]
    assert env == versions()
    for lib in ("python", "numpy", "scipy", "SimpleITK", "nibabel", "pydicom", "zarr", "pyarrow"):
        assert env[lib] and env[lib] != "not installed", lib
    for name, stage in info["stages"].items():  # each stage's run, by an id of `environments`
        assert info["environments"][stage["run_environment"]]["versions"] == versions(), name


def test_each_stage_says_which_code_computed_its_cases_not_the_code_that_released_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """F1: stores computed by uncommitted edits, then released after the edits were reverted, were
    credited to the clean commit (release.json code_revision is the code building the release).
    Each stage now records the code of its run and of each of its cases' runs; a case from the
    cache keeps the revision that computed it."""
    import curator.envinfo

    raw = write_kits_cases(tmp_path / "raw", 2)
    pipe = make_pipeline(tmp_path, [{"dataset": "KiTS23", "root": str(raw)}], key=KEY_A)
    edited, clean = "0" * 40 + "+dirty.abcdef123456", "1" * 40
    monkeypatch.setattr(curator.envinfo, "code_revision", lambda: edited)
    run(pipe)
    monkeypatch.setattr(curator.envinfo, "code_revision", lambda: clean)
    release = run(pipe, release=True).release  # every case from the cache: only the tables are made again
    assert release is not None
    info = _info(release)
    assert info["code_revision"] == code_revision()  # what assembled the release
    envs = info["environments"]
    for name in ("ingest", "harmonize", "preprocess", "qc"):
        stage = info["stages"][name]
        (computed, n), = stage["case_environments"].items()
        assert n == 2 and envs[computed]["code_revision"] == edited and envs[computed]["dirty"] is True, name
        ran = envs[stage["run_environment"]]
        assert ran["code_revision"] == clean and ran["dirty"] is False, name


def test_release_json_names_the_pseudonym_key_and_diff_tells_another_key(build: Build) -> None:
    """F2: a fresh workspace (another secret key) gave other patient_id and study_key values, and
    neither release.json nor curator diff said why."""
    a, same, other = build("a"), build("b"), build("key_b", key=KEY_B)
    fa, fb, fo = (_info(r)["pseudonym_key_fingerprint"] for r in (a, same, other))
    assert fa == fb != fo and len(fa) == 16
    for key in (KEY_A, KEY_B):  # not the key, nor a plain hash of it
        import hashlib

        assert fa not in (key.hex(), hashlib.sha256(key).hexdigest()[:16]) and fo not in key.hex()
    assert diff_releases(a, other).lineage["pseudonym_key_fingerprint"] == (fa, fo)
    assert "pseudonym_key_fingerprint" not in diff_releases(a, same).lineage


def test_two_builds_share_the_content_digest_and_one_voxel_changes_it(build: Build) -> None:
    """F5: release.json holds build times and run ids and croissant.json the build's date, so no
    rebuild reproduced the SHA-256 verify printed; content_sha256 is the data's identity."""
    a, b, changed = build("a"), build("b"), build("voxel", voxel=True)
    ia, ib, ic = (_info(r) for r in (a, b, changed))
    assert ia["created"] != ib["created"] or ia["stages"]["ingest"]["run_id"] != ib["stages"]["ingest"]["run_id"]
    assert ia["content_sha256"] == ib["content_sha256"] == content_sha256(ia["files"])
    assert ic["content_sha256"] != ia["content_sha256"]
    assert verify_release(a).content_sha256 == ia["content_sha256"]
    # the build's date does not count: croissant.json of another day leaves it
    assert content_sha256({**ia["files"], "croissant.json": "0" * 64}) == ia["content_sha256"]


def test_verify_fails_a_release_json_whose_content_digest_was_edited(build: Build, tmp_path: Path) -> None:
    rel = _copy(build("a"), tmp_path)
    info = _info(rel)
    (rel / "release.json").write_text(json.dumps({**info, "content_sha256": "f" * 64}))
    rep = verify_release(rel)
    said = (f"content_sha256 is {'f' * 64}, but the checksums release.json's files lists give "
            f"{info['content_sha256']}: release.json was edited since the release was built")
    assert not rep.ok and rep.manifest_issues == [said]


def test_verify_fails_an_edited_pipeline_config_naming_both_hashes(build: Build, tmp_path: Path) -> None:
    """F4: pipeline_config edited in release.json (target_spacing_mm) passed verify although its own
    pipeline_config_hash and the checksummed card still gave the old hash."""
    from curator.io.fsutil import sha256_json

    rel = _copy(build("a"), tmp_path)
    assert verify_release(rel).ok
    info = _info(rel)
    cfg = json.loads(json.dumps(info["pipeline_config"]))
    cfg["stages"].setdefault("preprocess", {})["target_spacing_mm"] = [1, 1, 1]
    old, new = info["pipeline_config_hash"], sha256_json(cfg)[:16]
    (rel / "release.json").write_text(json.dumps({**info, "pipeline_config": cfg}))
    rep = verify_release(rel)
    assert not rep.ok and len(rep.manifest_issues) == 1
    assert old in rep.manifest_issues[0] and new in rep.manifest_issues[0]
    # the hash edited too: the card, which a checksum covers, still gives the old one
    (rel / "release.json").write_text(json.dumps({**info, "pipeline_config": cfg, "pipeline_config_hash": new}))
    rep = verify_release(rel)
    assert not rep.ok and len(rep.manifest_issues) == 1
    assert "DATASET_CARD.md" in rep.manifest_issues[0] and old in rep.manifest_issues[0] and new in rep.manifest_issues[0]


def test_verify_command_prints_the_content_digest_and_lists_what_release_json_contradicts(
        build: Build, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curator.cli import app

    rel = _copy(build("a"), tmp_path)
    info = _info(rel)
    res = CliRunner().invoke(app, ["verify", str(rel)], env={"COLUMNS": "400"})
    assert res.exit_code == 0 and f"content sha256 {info['content_sha256']}" in res.output, res.output
    (rel / "release.json").write_text(json.dumps({**info, "pipeline_config_hash": "0" * 16}))
    res = CliRunner().invoke(app, ["verify", str(rel)], env={"COLUMNS": "400"})
    assert res.exit_code == 1 and "release.json disagrees with itself or the card (2)" in res.output, res.output
    assert f"pipeline_config_hash is {'0' * 16}, but pipeline_config hashes to {info['pipeline_config_hash']}" \
        in res.output
