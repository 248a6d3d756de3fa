"""Readers fuzzed with mutated real-format bytes: only curator's own errors may escape."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curator.errors import CuratorError
from curator.io import read_volume
from curator.io.nifti import nifti_bytes
from curator.io.volume import Volume
from curator.testing.layouts import write_dicom_series
from curator.testing.phantoms import grid


def _seeds(tmp: Path) -> dict[str, bytes]:
    g = grid((10, 9, 6), (1.5, 1.5, 3.0), "LPS")
    a = (np.arange(np.prod(g.shape)) % 97).astype(np.int16).reshape(g.shape)
    raw = nifti_bytes(Volume(a, g), compress=False)
    (tmp / "s.nii").write_bytes(raw)
    img = sitk.ReadImage(str(tmp / "s.nii"))
    for ext in (".nrrd", ".mha"):
        sitk.WriteImage(img, str(tmp / f"s{ext}"), useCompression=False)
    (dcm,) = write_dicom_series(tmp / "dcm", a[:, :, :1], grid((10, 9, 1), (1.5, 1.5, 3.0), "LPS"))
    return {".nii": raw, ".nii.gz": gzip.compress(raw, mtime=0), ".nrrd": (tmp / "s.nrrd").read_bytes(),
            ".mha": (tmp / "s.mha").read_bytes(), ".dcm": dcm.read_bytes()}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return _seeds(tmp_path_factory.mktemp("seeds"))


mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), min_size=1, max_size=8)),
    st.tuples(st.just("header"), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=12)),
)


def _mutate(data: bytes, m: tuple) -> bytes:  # type: ignore[type-arg]
    b = bytearray(data)
    if m[0] == "truncate":
        return bytes(b[: int(len(b) * m[1])])
    if m[0] == "flip":
        for pos, val in m[1]:
            b[min(len(b) - 1, int(pos * len(b)))] = val
        return bytes(b)
    for pos, val in m[1]:
        if pos < len(b):
            b[pos] = val
    return bytes(b)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".nrrd", ".mha", ".dcm"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=mutation, role=st.sampled_from(["image", "label"]))
def test_mutated_files_raise_only_curator_errors(tmp_path: Path, seeds: dict[str, bytes], ext: str,
                                                 m: tuple, role: str) -> None:  # type: ignore[type-arg]
    p = tmp_path / f"fuzz{ext}"
    p.write_bytes(_mutate(seeds[ext], m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # third-party parsers warn on garbage; errors are what count
        try:
            vol = read_volume(p, role=role, max_voxels=5_000_000)  # type: ignore[arg-type]
        except CuratorError as e:
            assert e.kind and str(e)
            return
    assert vol.array.ndim == 3
    vol.geometry.validate()
