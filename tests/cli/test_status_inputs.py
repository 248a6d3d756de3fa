"""`curator status` names the input files edited since ingest ran, beside a changed dataset YAML."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from curator.cli import app
from curator.testing.layouts import save_nifti
from curator.testing.native import label_array, write_tree
from curator.testing.phantoms import grid
from curator.testing.pipelines import make_pipeline, run

SPEC = {"name": "Toy", "version": "1", "modality": "CT", "region": "abdomen", "licence": "CC-BY-4.0",
        "citation": "@misc{toy, title={toy}}", "layout": [{"image": "img/{case}.nii.gz", "label": "lab/{case}.nii.gz"}],
        "labels": {"values": {1: "liver", 2: "spleen"}}}


def _ingest_reasons(pipe: Path) -> list[str]:
    res = CliRunner().invoke(app, ["status", str(pipe), "-f", "json"])
    assert res.exit_code == 0, res.output
    return next(s["reasons"] for s in json.loads(res.stdout)["stages"] if s["stage"] == "ingest")


def _project(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    write_tree(root, [("img/a.nii.gz", "image", ()), ("lab/a.nii.gz", "label", (1,)),
                      ("img/b.nii.gz", "image", ()), ("lab/b.nii.gz", "label", (1,))])
    (tmp_path / "Toy.yaml").write_text(yaml.safe_dump(SPEC))
    pipe = make_pipeline(tmp_path, [{"dataset": str(tmp_path / "Toy.yaml"), "root": str(root)}])
    run(pipe, stages=["ingest"])
    return pipe


def test_status_names_edited_label_files_beside_a_changed_dataset_yaml(tmp_path: Path) -> None:
    """Status said only "Toy's dataset YAML changed": a label file re-written after ingest was not
    named, so the user could not tell what the next run would read again."""
    pipe = _project(tmp_path)
    assert _ingest_reasons(pipe) == []
    save_nifti(tmp_path / "raw/lab/b.nii.gz", label_array((2,), (8, 8, 4)), grid((8, 8, 4), (2.0, 2.0, 3.0), "LPS"))
    (tmp_path / "Toy.yaml").write_text(yaml.safe_dump({**SPEC, "labels": {"values": {1: "liver", 2: "kidney"}}}))
    want = ["ingest ran with other sources (Toy's dataset YAML changed)",
            "input files edited since ingest ran: Toy:lab/b.nii.gz"]
    assert _ingest_reasons(pipe) == want
    assert _ingest_reasons(pipe) == want  # asking again does not make the edit forgotten
    # without a YAML change: the case, and its file by path
    (tmp_path / "Toy.yaml").write_text(yaml.safe_dump(SPEC))
    assert _ingest_reasons(pipe) == ["the source files of 1 case(s) changed since ingest ran (e.g. Toy__b)",
                                     "input files edited since ingest ran: Toy:lab/b.nii.gz"]
    run(pipe, stages=["ingest"])
    assert _ingest_reasons(pipe) == []
    os.utime(tmp_path / "raw/lab/a.nii.gz")  # touched, its content kept: nothing out of date, nothing named
    assert _ingest_reasons(pipe) == []


def test_a_copied_project_names_no_file_as_edited(tmp_path: Path) -> None:
    """Files copied with new times and inodes but the same content are no edit: only the one file
    edited in the copy is named."""
    pipe = _project(tmp_path / "a")
    moved = tmp_path / "b"
    shutil.copytree(tmp_path / "a", moved, symlinks=True)  # copy2: contents and mtimes
    for p in (moved / "raw").rglob("*.nii.gz"):  # a later mtime than the run's, as a copy by another tool gives
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**12))
    cfg = yaml.safe_load((moved / pipe.name).read_text())
    cfg["sources"][0].update(root=str(moved / "raw"), dataset=str(moved / "Toy.yaml"))
    (moved / pipe.name).write_text(yaml.safe_dump(cfg))
    (moved / "Toy.yaml").write_text(yaml.safe_dump({**SPEC, "version": "2"}))
    save_nifti(moved / "raw/lab/a.nii.gz", label_array((2,), (8, 8, 4)), grid((8, 8, 4), (2.0, 2.0, 3.0), "LPS"))
    reasons = _ingest_reasons(moved / pipe.name)
    assert [r for r in reasons if "edited" in r] == ["input files edited since ingest ran: Toy:lab/a.nii.gz"], reasons
