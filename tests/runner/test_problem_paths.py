"""A problem row names the file at fault — the label, when it is the label — even where an image
and its label share one file name (MSD, nnU-Net: ``imagesTr/x.nii.gz`` and ``labelsTr/x.nii.gz``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from curator.errors import ReadError, StageError
from curator.runner.stage import problem_row
from curator.testing.native import write_tree
from curator.testing.pipelines import make_pipeline, run, table


def test_a_row_about_the_image_names_the_label_that_shares_its_file_name() -> None:
    err = ReadError("file_not_found", "the file does not exist", path="/data/Task09/labelsTr/spleen_2.nii.gz")
    row = problem_row("preprocess", err, dataset="MSD", case_id="MSD__spleen_2", path="MSD:imagesTr/spleen_2.nii.gz")
    assert row["message"].startswith("labelsTr/spleen_2.nii.gz: the file does not exist"), row["message"]
    same = ReadError("truncated_file", "the data ends early", path="/data/Task09/imagesTr/spleen_2.nii.gz")
    row = problem_row("preprocess", same, dataset="MSD", case_id="MSD__spleen_2", path="MSD:imagesTr/spleen_2.nii.gz")
    assert row["message"].startswith("the data ends early"), row["message"]


def test_a_dataset_wide_row_does_not_repeat_its_path_in_the_message() -> None:
    """qc's sides_swapped row (path ``<dataset>:``) read "TSLabelMapSwap:: 2 of the 2 ..." (its
    path taken for another file than the row's own and put before the message)."""
    err = StageError("sides_swapped", "2 of the 2 left/right labels lie on the other side", path="TS:",
                     remedy="swap them")
    row = problem_row("qc", err, dataset="TS", case_id=None, path="TS:", severity="warning")
    assert row["message"] == "2 of the 2 left/right labels lie on the other side. What to do: swap them"


def _msd(tmp_path: Path, **stages: object) -> tuple[Path, Path]:
    """An MSD-style source of two cases (imagesTr/t_00k.nii.gz beside labelsTr/t_00k.nii.gz)."""
    root = tmp_path / "raw"
    write_tree(root, [(f"{d}Tr/t_{k}.nii.gz", kind, () if kind == "image" else (1,))
                      for k in ("001", "002") for d, kind in (("images", "image"), ("labels", "label"))])
    spec = {"name": "Toy", "version": "1", "modality": "MR", "region": "abdomen", "licence": "CC-BY-4.0",
            "citation": "@misc{toy, title={toy}}", "labels": {"values": {1: "liver"}},
            "layout": [{"image": "imagesTr/{case}.nii.gz", "label": "labelsTr/{case}.nii.gz"}]}
    (tmp_path / "Toy.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return make_pipeline(tmp_path, [{"dataset": str(tmp_path / "Toy.yaml"), "root": str(root)}], stages=stages), root


def test_a_label_gone_before_preprocess_is_the_row_of_the_label(tmp_path: Path) -> None:
    pipe, root = _msd(tmp_path)
    run(pipe, stages=["ingest"])
    (root / "labelsTr/t_002.nii.gz").unlink()  # a share re-syncing between two stages
    run(pipe, stages=["preprocess"])
    (row,) = [r for r in table(pipe, "problems__preprocess").to_pylist() if r["case_id"] == "Toy__t_002"]
    assert (row["kind"], row["path"]) == ("file_not_found", "Toy:labelsTr/t_002.nii.gz"), row


def test_on_bad_case_error_names_the_file_it_stopped_at(tmp_path: Path) -> None:
    """"stage ingest stopped at case Toy__t_002: the data ends early" did not say which of the
    case's two files named t_002.nii.gz it meant."""
    pipe, root = _msd(tmp_path, ingest={"on_bad_case": "error"})
    image = root / "imagesTr/t_002.nii.gz"
    image.write_bytes(image.read_bytes()[:400])
    with pytest.raises(StageError) as e:
        run(pipe, stages=["ingest"])
    assert f"stopped at case Toy__t_002, file {image}: " in str(e.value), str(e.value)


def test_the_stop_names_no_file_for_a_pseudonymous_case_whose_row_holds_only_its_id(tmp_path: Path) -> None:
    """A pseudonymous source's task path is ``<source>:<case id>``: the stop message named
    ``<root>/<case id>``, a file that does not exist."""
    from types import SimpleNamespace

    from curator.runner.run import _file_of

    ctx = SimpleNamespace(sources={"priv": SimpleNamespace(root=tmp_path / "export")})
    cid = "priv__c_0123456789abcdef0123"
    assert _file_of(ctx, {"path": f"priv:{cid}", "case_id": cid}) is None  # type: ignore[arg-type]
    assert _file_of(ctx, {"path": "priv:a/img.nii.gz", "case_id": cid}) == str(tmp_path / "export" / "a/img.nii.gz")  # type: ignore[arg-type]
