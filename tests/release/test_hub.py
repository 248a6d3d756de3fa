"""`curator export huggingface`: a release as a Hub dataset repository, read back by `datasets`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curator.cli import app
from curator.errors import ReleaseError
from curator.release.hub import export_huggingface, readme_matches_card
from curator.release.integrity import verify_release


@pytest.fixture(scope="module")
def demo_release(demo_base: Path) -> Path:
    return demo_base / "releases" / "demo" / "0.1.0"


@pytest.fixture(scope="module")
def exported(demo_release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "demo-hub"
    res = CliRunner().invoke(app, ["export", "huggingface", str(demo_release), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "README.md with" in res.output
    return out


# `datasets` uses multiprocess/dill and fsspec, which warn of their own future versions
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_datasets_loads_every_table_as_its_config(exported: Path, demo_release: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub's library reads the folder offline: each table is the config of its name with one
    split ("table", not "train": a manifest is not a training split) holding the Parquet file's rows."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    tables = sorted(p.stem for p in demo_release.glob("*.parquet"))
    assert datasets.get_dataset_config_names(str(exported)) == tables
    for name in ("cases", "labels", "terms"):
        d = datasets.load_dataset(str(exported), name, cache_dir=str(tmp_path / "cache"))
        want = pq.read_table(demo_release / f"{name}.parquet")
        assert list(d) == ["table"] and d["table"].num_rows == want.num_rows
        assert d["table"]["case_id" if name != "terms" else "term_id"] == \
            want.column("case_id" if name != "terms" else "term_id").to_pylist()


def test_the_export_is_the_release_plus_its_hub_card(exported: Path, demo_release: Path) -> None:
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(exported / "README.md")
    assert card.data.license == ["cc-by-4.0", "cc-by-nc-sa-4.0", "cc-by-sa-4.0"]
    assert card.data.task_categories == ["image-segmentation"] and card.data.size_categories == ["n<1K"]
    assert next(c for c in card.data.configs if c.get("default"))["config_name"] == "cases"
    assert card.text == (demo_release / "DATASET_CARD.md").read_text().split("\n---\n", 1)[1]
    # every file of the release, byte for byte: verify passes on the exported folder
    rep = verify_release(exported)
    assert rep.ok, rep.to_dict()
    info = json.loads((exported / "release.json").read_text())
    assert rep.checked_files == len(info["files"])


def test_verify_names_a_readme_that_is_not_the_card(exported: Path, tmp_path: Path) -> None:
    """README.md passes verify only as the Hub card of the release it sits in."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    text = (copy / "README.md").read_text()
    (copy / "README.md").write_text(text.replace("## Summary", "## Summary\n\nAll cases are commercial-use.", 1))
    assert not readme_matches_card(copy)
    rep = verify_release(copy)
    assert not rep.ok and rep.added == ["README.md"]
    (copy / "README.md").write_text("---\nlicense: mit\n---\n" + text.split("\n---\n", 1)[1])  # no configs
    assert verify_release(copy).added == ["README.md"]


def test_link_hard_links_and_refusals(demo_release: Path, exported: Path, tmp_path: Path) -> None:
    out = tmp_path / "linked"
    r = export_huggingface(demo_release, out, link=True)
    assert r.linked == r.files > 0
    assert os.stat(out / "cases.parquet").st_ino == os.stat(demo_release / "cases.parquet").st_ino
    assert verify_release(out).ok
    with pytest.raises(ReleaseError, match="immutable"):  # never into a release
        export_huggingface(demo_release, demo_release / "hub")
    with pytest.raises(ReleaseError, match="already holds a README.md"):  # an export is not exported again
        export_huggingface(exported, tmp_path / "again")
    assert not (tmp_path / "again").exists()
