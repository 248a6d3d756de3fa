"""A release whose cases are all label-only (KiTS23's segmentations downloaded without the
imaging): the loader and the exports say the selected cases have no image, not "widen the
where clause" when no where clause was given."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curator.cli import app
from curator.errors import ReleaseError
from curator.torch import PatchDataset


def test_the_fixture_release_is_label_only(label_only: Path) -> None:
    pre = pq.read_table(label_only / "preprocessed.parquet").to_pylist()
    assert len(pre) == 2 and not any(r["has_image"] for r in pre)


@pytest.mark.parametrize("kw", [{}, {"split": None}, {"where": "dataset = 'TinyKits'", "split": None}])
def test_patch_dataset_says_the_cases_have_no_image(label_only: Path, kw: dict[str, object]) -> None:
    with pytest.raises(ReleaseError) as e:
        PatchDataset(label_only, terms=["kidney"], **kw)  # type: ignore[arg-type]
    msg = str(e.value)
    assert "have no image: they are label-only" in msg and "download the images" in msg, msg
    assert "widen" not in msg


def test_a_where_clause_selecting_nothing_still_says_widen_it(label_only: Path) -> None:
    with pytest.raises(ReleaseError, match=r"no preprocessed case matches WHERE dataset = 'Nope'\. What to do: widen"):
        PatchDataset(label_only, terms=["kidney"], where="dataset = 'Nope'", split=None)


@pytest.mark.parametrize("export", [["nnunet", "--id", "7", "--name", "LabelOnly"], ["monai"]])
def test_exports_say_the_cases_have_no_image(label_only: Path, tmp_path: Path, export: list[str]) -> None:
    res = CliRunner().invoke(app, ["export", export[0], str(label_only), "--terms", "kidney", "--out",
                                   str(tmp_path / "out"), *export[1:]])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "the 2 case(s) selected have no image: they are label-only" in text, text
    assert "download the images" in text and "widen" not in text and "no case holds every term" not in text
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
