"""A `registry:` entry of pipeline.yaml that gives no dataset (missing, unreadable, invalid) is
said the same way in every run — as a `registry:` entry, not a source — and names no folder of
the machine: its problem row is published in the release."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from curator.errors import ConfigError
from curator.release.query import Release
from curator.testing.pipelines import make_pipeline, run, table

OFF = {s: {"enabled": False} for s in ("dedup", "harmonize", "preprocess", "pseudolabel", "qc")}


def _kits(tmp: Path) -> dict[str, Any]:
    from curator.testing.layouts import write_kits_case
    from curator.testing.phantoms import Subject, grid, render

    g = grid((40, 36, 20), (6.0, 6.0, 8.0), "LPS")
    img, lab = render(Subject.random(3), g, "CT", seed=3)
    write_kits_case(tmp / "kits", "case_00000", np.rint(img).astype(np.int16), (lab > 0).astype(np.uint8), g)
    return {"dataset": "KiTS23", "root": str(tmp / "kits")}


def _published(rel: Release) -> str:
    """Every string of every table of the release, and its JSON, Markdown and HTML files."""
    out = []
    for name in rel.table_names():
        cols = rel.sql(f"select * from {name} limit 0").columns
        out += [json.dumps(dict(zip(cols, row, strict=True)), default=str)
                for row in rel.sql(f"select * from {name}").fetchall()]
    out += [p.read_text(errors="replace") for p in rel.path.rglob("*") if p.suffix in (".json", ".md", ".html")]
    return "\n".join(out)


def test_a_missing_registry_entry_publishes_no_machine_path(tmp_path: Path) -> None:
    """`registry: [./home_jane_doe_site/extra_datasets/]`, a folder that is not there, put
    'cannot read /home/.../home_jane_doe_site/extra_datasets' into the release's problems table and
    report.html (release.json names the entry by its name only), and said 'this source was
    skipped' of an entry that is no source."""
    proj = tmp_path / "proj"
    pipe = make_pipeline(proj, [_kits(tmp_path)], stages=OFF,
                         registry=[proj / "home_jane_doe_site" / "extra_datasets"])
    rel = Release(run(pipe, release=True).release)  # type: ignore[arg-type]
    rows = [r for r in table(pipe, "problems__ingest").to_pylist() if r["path"] == "extra_datasets"]
    assert len(rows) == 1 and rows[0]["severity"] == "error", rows
    msg = rows[0]["message"]
    assert "extra_datasets [file] cannot be read: No such file or directory" in msg, msg
    assert "in `registry:` of pipeline.yaml" in msg and "correct its path in `registry:`" in msg, msg
    assert "source was skipped" not in msg and "fix the dataset YAML" not in msg, msg
    assert str(tmp_path) not in msg and "home_jane_doe_site" not in msg, msg
    published = _published(rel)
    assert "cannot be read" in published  # the row is published ...
    assert str(tmp_path) not in published and "home_jane_doe_site" not in published  # ... naming no folder


def test_a_missing_dataset_yaml_of_a_source_publishes_no_machine_path(tmp_path: Path) -> None:
    """A source's dataset YAML that is not there: 'dataset file /home/.../mine.yaml does not exist',
    published under allow_missing_sources."""
    proj = tmp_path / "proj"
    pipe = make_pipeline(proj, [_kits(tmp_path), {"dataset": str(proj / "site_jane" / "mine.yaml"),
                                                  "root": str(tmp_path / "kits")}], stages=OFF)
    cfg = yaml.safe_load(pipe.read_text())
    cfg["release"]["allow_missing_sources"] = True
    pipe.write_text(yaml.safe_dump(cfg))
    rel = Release(run(pipe, release=True).release)  # type: ignore[arg-type]
    (msg,) = [r[0] for r in rel.sql("select message from problems where path = 'mine.yaml'").fetchall()]
    assert msg.startswith("dataset file mine.yaml does not exist") and "this source was skipped" in msg, msg
    published = _published(rel)
    assert str(tmp_path) not in published and "site_jane" not in published


def test_status_names_a_broken_registry_entry_as_one_not_as_a_source(tmp_path: Path) -> None:
    """`curator status` said 'source skipped extra_datasets' of a `registry:` entry."""
    from typer.testing import CliRunner

    from curator.cli import app

    pipe = make_pipeline(tmp_path, [_kits(tmp_path)], stages=OFF, registry=[tmp_path / "extra_datasets"])
    run(pipe, stages=["ingest"])
    res = CliRunner().invoke(app, ["status", str(pipe)], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "source skipped" not in res.output and "registry error extra_datasets:" in res.output, res.output
    res = CliRunner().invoke(app, ["status", str(pipe), "--format", "json"])
    said = json.loads(res.output)
    assert said["sources_skipped"] == [] and [p["file"] for p in said["registry_problems"]] == ["extra_datasets"]


@pytest.mark.parametrize("named", [True, False])
def test_a_broken_registry_entry_is_said_whatever_the_sources_name(tmp_path: Path, named: bool,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The registry was read only when a source named a built-in dataset: with every source a
    dataset YAML path, `curator run` said nothing of a missing `registry:` entry (no log line, no
    problem row) while `curator status` reported it."""
    from curator.registry import builtin_dir

    src = _kits(tmp_path)
    if not named:  # the same dataset, by the path of its YAML
        mine = {**yaml.safe_load(next(builtin_dir().glob("KiTS23.y*ml")).read_text()), "name": "MyKidneys"}
        (tmp_path / "mine.yaml").write_text(yaml.safe_dump(mine))
        src = {**src, "dataset": str(tmp_path / "mine.yaml")}
    pipe = make_pipeline(tmp_path, [src], stages=OFF, registry=[tmp_path / "extra_datasets"])
    with caplog.at_level(logging.ERROR, logger="curator"):
        (report,) = run(pipe, stages=["ingest"]).reports
    assert report.errors == 1
    assert [r.getMessage() for r in caplog.records if "extra_datasets [file] cannot be read" in r.getMessage()]
    rows = table(pipe, "problems__ingest").to_pylist()
    assert [(r["path"], r["severity"]) for r in rows if r["kind"] == "invalid_dataset_spec"] == \
        [("extra_datasets", "error")], rows


def test_a_dataset_no_registry_file_defines_names_the_entry_that_could_not_be_read(tmp_path: Path) -> None:
    """A source naming a dataset of a `registry:` folder that is not there was told only that no
    dataset has that name: the folder that may define it is named too."""
    pipe = make_pipeline(tmp_path, [{"dataset": "MyLiverCT", "root": str(tmp_path)}], stages=OFF,
                         registry=[tmp_path / "extra_datasets"])
    with pytest.raises(ConfigError) as e:
        run(pipe, stages=["ingest"])
    assert "no dataset named 'MyLiverCT'" in str(e.value) and "may define it: extra_datasets" in str(e.value)
