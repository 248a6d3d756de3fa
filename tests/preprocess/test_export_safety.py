"""Exports refuse what would break something else, and leave nothing behind when they fail:
no file written into a release (immutable), no request nnU-Net would refuse."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from curator.errors import ConfigError, ReleaseError
from curator.export import export_monai, export_nnunet
from curator.release.integrity import verify_release
from tests.preprocess.conftest import Tiny


@pytest.fixture
def rel(tiny: Tiny, tmp_path: Path) -> Path:
    """A copy of the tiny release (a failed refusal would change the shared one)."""
    copy = tmp_path / "releases" / "tiny" / "0.1.0"
    shutil.copytree(tiny.release, copy)
    return copy


def test_exports_refuse_to_write_inside_a_release(rel: Path, tmp_path: Path) -> None:
    other = rel.parent / "0.2.0"  # another release of the collection is immutable too
    shutil.copytree(rel, other)
    for out in (rel / "monai", rel, rel / "stores" / "x", other / "monai"):
        with pytest.raises(ReleaseError, match="releases are immutable; the export would be written inside one"):
            export_monai(rel, out, terms=["liver"])
        with pytest.raises(ReleaseError, match="releases are immutable"):
            export_nnunet(rel, out, dataset_id=5, name="A", terms=["liver"])
    from curator.cli import app

    for kind in ("monai", "nnunet"):
        res = CliRunner().invoke(app, ["export", kind, str(rel), "--terms", "liver", "--out", str(rel / kind)])
        assert res.exit_code == 2 and "immutable" in res.output, res.output
    assert verify_release(rel).ok and verify_release(other).ok
    # next to the releases (in the collection folder, outside every version) is fine
    assert export_monai(rel, rel.parent / "monai", terms=["liver"]).cases


def test_a_term_given_twice_is_refused(tiny: Tiny, tmp_path: Path) -> None:
    """--terms liver,liver made dataset.json labels {background: 0, liver: 2}: label 1 empty, a gap
    nnU-Net v2 refuses (and a MONAI datalist with two 'liver' labels)."""
    with pytest.raises(ReleaseError, match="'liver' requested more than once"):
        export_nnunet(tiny.release, tmp_path / "raw", dataset_id=5, name="A", terms=["liver", "liver"])
    with pytest.raises(ReleaseError, match="'liver' requested more than once. What to do: give each term id once"):
        export_monai(tiny.release, tmp_path / "monai", terms=["liver", "spleen", "liver"])
    assert not list(tmp_path.iterdir())


def test_an_out_that_is_a_file_is_a_clear_error(tiny: Tiny, tmp_path: Path) -> None:
    """--out pipeline.yaml (or a path under it) failed with NotADirectoryError, an internal error."""
    from curator.cli import app

    f = tmp_path / "pipeline.yaml"
    f.write_text("x")
    for out, says in ((f, "this is a file, but a folder is to be written here"),
                      (f / "sub", "pipeline.yaml is a file, not a folder")):
        with pytest.raises(ConfigError, match=says):
            export_monai(tiny.release, out, terms=["liver"])
        with pytest.raises(ConfigError, match=says):
            export_nnunet(tiny.release, out, dataset_id=5, name="A", terms=["liver"])
        for kind in ("monai", "nnunet"):
            res = CliRunner().invoke(app, ["export", kind, str(tiny.release), "--terms", "liver", "--out", str(out)])
            assert res.exit_code == 2 and says in " ".join(res.output.split()), res.output
    assert sorted(tmp_path.iterdir()) == [f]


@pytest.fixture
def split_rel(rel: Path) -> Path:
    """The tiny release copy with TotalSegmentator s0001 in the test split, the rest in train."""
    import pyarrow.parquet as pq

    from curator.schema import to_arrow
    from curator.testing.releases import reseal

    splits = pq.read_table(rel / "splits.parquet").to_pylist()
    for r in splits:
        r["split"] = "test" if r["case_id"] == "TinyTotalSeg__s0001" else "train"
    pq.write_table(to_arrow("splits", splits), rel / "splits.parquet")
    reseal(rel)
    return rel


def test_a_failed_nnunet_export_leaves_nothing_behind(split_rel: Path, tmp_path: Path) -> None:
    """The test case was written to imagesTs before "no training case holds every term"; the
    partial Dataset folder stayed and a rerun said the id was taken."""
    out = tmp_path / "out" / "nnUNet_raw"
    with pytest.raises(ReleaseError, match="no selected training case holds 'liver'"):  # the KiTS case has none
        export_nnunet(split_rel, out, dataset_id=5, name="A", terms=["liver"],
                      where="case_id in ('TinyTotalSeg__s0001', 'TinyKits__case_00000')")
    assert not (tmp_path / "out").exists()  # nor the folders made for it
    with pytest.raises(ReleaseError, match="no training case: every case it selects is in the release's test split"):
        export_nnunet(split_rel, out, dataset_id=5, name="A", terms=["liver"], where="case_id = 'TinyTotalSeg__s0001'")
    assert not (tmp_path / "out").exists()
    done = export_nnunet(split_rel, out, dataset_id=5, name="A", terms=["liver"])  # the id is free
    assert sorted(p.name for p in out.iterdir()) == ["Dataset005_A"] == [done.folder.name]
    assert (done.folder / "imagesTs" / "TinyTotalSeg__s0001_0000.nii.gz").is_file()
    assert (done.folder / "dataset.json").is_file()


@pytest.mark.parametrize("kind", ["nnunet", "monai"])
def test_an_export_stopped_mid_way_leaves_nothing_behind(rel: Path, tmp_path: Path, kind: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from curator.export import common

    write_case = common.write_case
    calls = []

    def stop_at_the_second(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return write_case(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(common, "write_case", stop_at_the_second)  # what both exports' write_cases calls
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("the user's")
    with pytest.raises(KeyboardInterrupt):
        if kind == "nnunet":
            export_nnunet(rel, out, dataset_id=5, name="A", terms=["kidney"])
        else:
            export_monai(rel, out, terms=["kidney"])
    assert len(calls) == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_monai_exports_into_an_existing_folder_once(rel: Path, tmp_path: Path) -> None:
    out = tmp_path / "monai"
    out.mkdir()
    (out / "keep.txt").write_text("the user's")
    rep = export_monai(rel, out, terms=["liver"])
    assert sorted(p.name for p in out.iterdir()) == ["CITATIONS.bib", "LICENCES.md", "datalist.json", "images",
                                                     "keep.txt", "labels"]
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{c}.nii.gz" for c in sorted(rep.cases)]
    with pytest.raises(ConfigError, match="the folder already holds images, labels, datalist.json"):
        export_monai(rel, out, terms=["liver"])


def test_the_monai_note_on_a_missing_test_list_says_why(split_rel: Path, tmp_path: Path) -> None:
    """Tester 21's F7: "no exported case is in the release's 'test' split" right after the note
    that the release's one test case was left out (its dataset annotates none of the terms)."""
    rep = export_monai(split_rel, tmp_path / "m", terms=["kidney_tumor"])
    assert "TinyTotalSeg__s0001" in rep.skipped and rep.cases, (rep.skipped, rep.cases)
    (note,) = [n for n in rep.notes if n.startswith("the datalist has no 'test' list")]
    assert "the 1 case(s) of the release's 'test' split the selection holds were not exported (`skipped` says " \
           "why)" in note, note
    rep = export_monai(split_rel, tmp_path / "k", terms=["kidney_tumor"], where="dataset = 'TinyKits'")
    (note,) = [n for n in rep.notes if n.startswith("the datalist has no 'test' list")]
    assert "the selection holds none of the 1 case(s) of the release's 'test' split" in note, note
