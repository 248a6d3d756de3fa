"""The benchmark scripts still run on the current code, at their smallest sizes (BENCHMARKS.md
names their commands; the measurements themselves are not repeated here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_release_scale_generates_and_builds(tmp_path: Path) -> None:
    from benchmarks import release_scale

    gen = release_scale.generate(tmp_path, 20_000, 1, 0)
    assert gen["cases"] == 20_000 and gen["duplicate_rows"] > 0
    built = release_scale.build(tmp_path)
    assert sum(built["splits"].values()) == 20_000
    assert json.loads((tmp_path / "releases" / "scale" / "1.0.0" / "release.json").read_text())["counts"]


def test_release_scale_refuses_too_few_cases() -> None:
    import numpy as np

    from benchmarks import release_scale

    with pytest.raises(SystemExit, match="too few"):
        release_scale._plan(8_000, 1, np.random.default_rng(0))
