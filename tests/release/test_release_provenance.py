"""What a release says about how it was made (tester 30): the library versions (F3), and the code
that computed each stage's cases and tables, not only the code that assembled the release (F1)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from curator.envinfo import code_revision, versions
from curator.testing.pipelines import make_pipeline, run, write_kits_cases

KEY_A = bytes(range(32))
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
