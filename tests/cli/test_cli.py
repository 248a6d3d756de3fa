"""The CLI: thin, clear errors (no tracebacks), formats, demo end to end."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def curator(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "curator", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "d"
    res = curator("demo", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "Example query" in res.stdout and "release" in res.stdout
    # 4 broken inputs: 3 drop their case, the 4th (a label on another grid) only its label
    assert "3 cases dropped, 1 label dropped (case kept: KiTS23__case_00006)" in " ".join(res.stdout.split())
    return out / "releases" / "demo" / "0.1.0"


def test_two_demo_builds_give_the_same_downloads_and_patient_ids(demo: Path, tmp_path: Path) -> None:
    """The demo's DICOM series took random UIDs and its workspace a random pseudonym key, so two
    demo releases differed in every patient_id and study_key and in the DICOM cases' checksums."""
    import hashlib

    from curator.demo.data import build_demo_data

    def digests(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    raw = demo.parents[2] / "raw"
    build_demo_data(tmp_path / "raw")
    again = digests(tmp_path / "raw")
    assert any(k.endswith(".dcm") for k in again)
    assert again == digests(raw)
    from curator.demo import DEMO_KEY

    key = (demo.parents[2] / "workspace" / "secret" / "pseudonym.key").read_text().strip()
    assert key == DEMO_KEY.hex()


def test_demo_query_prints_case_counts_per_dataset(demo: Path) -> None:
    res = curator("query", str(demo), "select dataset, count(*) as n from cases group by 1 order by 1",
                  "--format", "csv")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    counts = {r["dataset"]: int(r["n"]) for r in rows}
    assert set(counts) == {"MSD_Spleen", "KiTS23", "DemoTotalSeg", "DemoPancreasDICOM"}
    assert all(n >= 3 for n in counts.values())


def test_query_takes_the_workspace_folder_before_any_release(demo: Path) -> None:
    ws = demo.parents[2] / "workspace"
    sql = "select kind from problems where severity = 'error' order by 1"
    got = curator("query", str(ws), sql, "-f", "json")
    assert got.returncode == 0, got.stderr
    assert "workspace tables" in got.stderr
    released = curator("query", str(demo), sql, "-f", "json")
    assert json.loads(got.stdout) == json.loads(released.stdout)  # every stage's problems, as the release has them
    res = curator("query", str(ws), "select count(*) as n from raw_labels r join cases c using (case_id)", "-f", "json")
    assert res.returncode == 0 and json.loads(res.stdout)[0]["n"] > 0
    bad = curator("query", str(ws), "copy cases to '/tmp/x.csv'")
    assert bad.returncode == 2 and "query_error" in bad.stderr


def test_query_json_and_table_formats(demo: Path) -> None:
    res = curator("query", str(demo), "select kind from problems where severity = 'error' order by 1", "-f", "json")
    kinds = [r["kind"] for r in json.loads(res.stdout)]
    assert {"truncated_file", "not_3d", "dicom_missing_slice"} <= set(kinds)
    res = curator("query", str(demo), "select count(*) as n from cases")
    assert res.returncode == 0 and "n" in res.stdout


def _strict_json(text: str) -> object:
    """Parse as JSON proper: Python's json reads NaN/Infinity, jq and JavaScript do not."""
    def refuse(name: str) -> object:
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_query_json_is_valid_json_with_nan_and_infinity(demo: Path) -> None:
    """NaN and ±infinity were printed bare (NaN, Infinity): not JSON. They are null, also inside
    lists and structs; finite floats keep every digit."""
    sql = ("select 'nan'::double f, 'inf'::double g, '-inf'::double h, [1.25, 'nan'::double] l, "
           "{'x': 'inf'::double, 'y': 0.1::double} s, 1/3 ok")
    res = curator("query", str(demo), sql, "-f", "json")
    assert res.returncode == 0, res.stderr
    [row] = _strict_json(res.stdout)  # type: ignore[misc]
    assert row == {"f": None, "g": None, "h": None, "l": [1.25, None], "s": {"x": None, "y": 0.1}, "ok": 1 / 3}
    csv_res = curator("query", str(demo), "select 'nan'::double f", "-f", "csv")  # csv is unchanged
    assert csv_res.returncode == 0 and csv_res.stdout.splitlines() == ["f", "nan"]


def test_query_csv_writes_booleans_and_nested_values_as_other_tools_read_them(demo: Path, tmp_path: Path) -> None:
    """--format csv wrote Python's True and {'x': nan}: a CSV reader got the text 'True' and a
    struct no parser takes. Booleans are true/false, lists and structs JSON; numbers keep every digit."""
    import csv as csvmod

    import duckdb

    sql = "select true b, false c, [1.25, 'nan'::double] l, {'x': 'a', 'y': 0.1::double} s, 1/3 ok, null n"
    res = curator("query", str(demo), sql, "-f", "csv")
    assert res.returncode == 0, res.stderr
    [row] = list(csvmod.DictReader(res.stdout.splitlines()))
    assert row == {"b": "true", "c": "false", "l": "[1.25, null]", "s": '{"x": "a", "y": 0.1}',
                   "ok": repr(1 / 3), "n": ""}
    assert json.loads(row["l"]) == [1.25, None] and json.loads(row["s"]) == {"x": "a", "y": 0.1}
    (tmp_path / "out.csv").write_text(res.stdout)
    back = duckdb.sql(f"select b, c from read_csv('{tmp_path / 'out.csv'}')")
    assert back.types == ["BOOLEAN", "BOOLEAN"] and back.fetchall() == [(True, False)]


def test_query_out_writes_every_row_to_parquet_or_csv(demo: Path, tmp_path: Path) -> None:
    import duckdb
    import pyarrow.parquet as pq

    sql = "select case_id, term_id, volume_ml, true as b, [1, 2] as l from labels order by all"
    res = curator("query", str(demo), sql, "--out", str(tmp_path / "labels.parquet"))
    assert res.returncode == 0, res.stderr
    table = pq.read_table(tmp_path / "labels.parquet")
    [(want,)] = duckdb.sql(f"select count(*) from read_parquet('{demo}/labels.parquet')").fetchall()
    assert table.num_rows == want > 0 and f"wrote {want:,} row(s)" in res.stderr and res.stdout == ""
    res = curator("query", str(demo), sql, "-o", str(tmp_path / "labels.csv"))
    assert res.returncode == 0, res.stderr
    printed = curator("query", str(demo), sql, "-f", "csv").stdout  # the same text as --format csv
    assert (tmp_path / "labels.csv").read_text() == printed and printed.count("\n") == want + 1
    # a failing query leaves no file; a file inside the release or of another kind is refused
    bad = curator("query", str(demo), "select cast(case_id as integer) from cases", "-o", str(tmp_path / "x.parquet"))
    assert bad.returncode == 2 and not (tmp_path / "x.parquet").exists() and not list(tmp_path.glob(".x.parquet*"))
    inside = curator("query", str(demo), "select 1", "-o", str(demo / "mine.parquet"))
    assert inside.returncode == 2 and "immutable" in inside.stderr and not (demo / "mine.parquet").exists()
    assert curator("query", str(demo), "select 1", "-o", str(tmp_path / "x.txt")).returncode == 2


def test_query_table_rounds_floats_and_expands_wide_rows(demo: Path) -> None:
    sql = "select case_id, volume_ml, centroid_mm from labels where present and volume_ml is not null limit 1"
    exact = json.loads(curator("query", str(demo), sql, "-f", "json").stdout)[0]
    res = curator("query", str(demo), sql)
    assert res.returncode == 0, res.stderr
    c = exact["centroid_mm"][0]
    assert len(repr(c)) > 10, c  # a centroid in mm has more digits than anyone reads
    assert f"[{c:.6g}," in res.stdout and repr(c) not in res.stdout
    # 47 columns do not fit 200 characters: one block per row, a line per column, every value readable
    wide = curator("query", str(demo), "select * from cases order by case_id limit 2")
    first = json.loads(curator("query", str(demo), "select * from cases order by case_id limit 2", "-f",
                               "json").stdout)
    lines = wide.stdout.splitlines()
    assert wide.returncode == 0 and len(first[0]) * 10 > 200
    for row in first:
        hit = [ln for ln in lines if f" {row['case_id']} " in ln]
        assert len(hit) == 1 and hit[0].split("│")[1].strip() == "case_id"
    assert sum(1 for ln in lines if ln.split("│")[1:2] and ln.split("│")[1].strip() == "modality") == 2


def test_bad_sql_and_missing_release_are_clear_errors(demo: Path, tmp_path: Path) -> None:
    res = curator("query", str(demo), "select * from nope")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "tables:" in res.stderr
    res = curator("query", str(demo), "selec * from cases")  # a syntax error is the query's, not a bug
    assert res.returncode == 2 and "syntax error" in res.stderr and "internal error" not in res.stderr
    res = curator("query", str(demo), "select 1 as a; select 2 as b")  # not the last result alone, silently
    assert res.returncode == 2 and "2 statements" in res.stderr and not res.stdout
    res = curator("query", str(demo), "")  # not exit 0 with no output
    assert res.returncode == 2 and "no SQL statement" in res.stderr
    res = curator("query", str(tmp_path), "select 1")
    assert res.returncode == 2 and "release.json" in res.stderr and "Traceback" not in res.stderr


def test_negative_limits_are_refused(demo: Path) -> None:
    """--limit -1 printed '(showing -1 of 22 rows …)' and dropped the last row (verify and diff: their
    last item, then '... and N+1 more'); 0 still prints the header alone."""
    for args in (("query", str(demo), "select case_id from cases"), ("verify", str(demo)),
                 ("diff", str(demo), str(demo))):
        res = curator(*args, "--limit", "-1")
        assert res.returncode == 2 and "Invalid value for '--limit'" in res.stderr and not res.stdout, res.stderr
    res = curator("query", str(demo), "select case_id from cases", "--limit", "0")
    assert res.returncode == 0 and "(showing 0 of" in res.stderr and "case_id" in res.stdout
    for option in ("--max-gallery", "--max-terms"):  # the report's counts too
        res = curator("report", str(demo), "-o", str(demo.parent / "r.html"), option, "-1")
        assert res.returncode == 2 and f"Invalid value for '{option}'" in res.stderr, res.stderr


def test_sources_list_json_and_show() -> None:
    res = curator("sources", "list", "--format", "json")
    data = json.loads(res.stdout)
    names = {d["name"] for d in data}
    assert {"KiTS23", "MSD_Spleen"} <= names
    for d in data:
        assert d["licence"] and d["citation"] and d["modality"] and d["region"] and d["layout"]
    res = curator("sources", "show", "kits23")
    assert json.loads(res.stdout)["name"] == "KiTS23"
    res = curator("sources", "show", "KiTS2")
    assert res.returncode == 2 and "did you mean" in res.stderr
    from curator.registry import builtin_dir

    res = curator("sources", "show", str(builtin_dir() / "MSD_Spleen.yaml"))  # the path its error suggests
    assert res.returncode == 0 and json.loads(res.stdout)["name"] == "MSD_Spleen", res.stderr


def test_stage_command_and_env(demo: Path) -> None:
    pipe = demo.parents[2] / "pipeline.yaml"
    res = curator("ingest", str(pipe), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "cached" in res.stderr
    res = curator("env")
    assert "duckdb" in res.stdout and "zarr" in res.stdout


def test_invalid_pipeline_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "pipeline.yaml"
    p.write_text("workspace: w\nsourcez: []\n")
    res = curator("run", str(p))
    assert res.returncode == 2 and "sourcez" in res.stderr and "Traceback" not in res.stderr


def test_demo_out_a_file_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "f.yaml"
    f.write_text("x")
    for out, says in ((f, "this is a file, but a folder is to be written here"), (f / "d", "is a file, not a folder")):
        res = curator("demo", "--out", str(out), "--no-progress")
        assert res.returncode == 2 and says in " ".join(res.stderr.split()), res.stderr


def test_every_json_output_goes_through_print_json(capsys: pytest.CaptureFixture[str]) -> None:
    """verify, diff, status, sources and labels check printed json.dumps of their own (NaN bare, a
    date or path a crash); every --format json now prints through print_json, which is strict."""
    from datetime import date

    from curator.cli import common

    common.print_json({"a": float("nan"), "b": [float("inf"), 1.5], "when": date(2026, 1, 2), "p": Path("x")})
    assert _strict_json(capsys.readouterr().out) == {"a": None, "b": [None, 1.5], "when": "2026-01-02", "p": "x"}
    cli = Path(common.__file__).parent
    own = [f.name for f in sorted(cli.glob("*.py")) if f.name != "common.py" and "json.dumps(" in f.read_text()
           .replace('json.dumps(c)}" for t, c in sorted(d.schema.items())', "")]
    assert own == []


def test_the_pipeline_files_progress_setting_holds_unless_the_command_line_says_otherwise(demo: Path,
                                                                                           tmp_path: Path) -> None:
    """`executor.progress: false` in pipeline.yaml was overridden by --progress's default (on)."""
    import yaml

    from curator.cli.stages import load_config

    doc = yaml.safe_load((demo.parents[2] / "pipeline.yaml").read_text())
    for value in (False, True):
        doc.setdefault("executor", {})["progress"] = value
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc))
        assert load_config(tmp_path / "p.yaml").executor.progress is value
        assert load_config(tmp_path / "p.yaml", progress=not value).executor.progress is (not value)


def test_help_paragraphs_are_reflowed_to_the_terminal() -> None:
    """rich keeps the line breaks of a help's later paragraphs: a docstring wrapped in the source
    printed ragged (a line of one word) at the terminal's width."""
    import click
    import typer.main

    from curator.cli import app

    def helps(c: click.Command, path: str = "curator") -> list[tuple[str, str]]:
        subs = getattr(c, "commands", None) or {}
        return [(path, c.help or "")] + [h for n, s in subs.items() for h in helps(s, f"{path} {n}")]

    found = helps(typer.main.get_command(app))
    assert len(found) > 30
    ragged = [p for p, h in found for para in h.split("\n\n") if "\n" in para and "\n " not in para
              and not para.startswith("\b")]
    assert ragged == []


def test_a_stage_runs_help_says_what_it_needs() -> None:
    """`curator ingest run --help` said "earlier stages' tables must exist": ingest, the first
    stage, has none; it reads the sources. The later stages keep the warning."""
    import typer.main

    from curator.cli import app
    from curator.stages import STAGES

    root = typer.main.get_command(app)
    helps = {name: " ".join((root.commands[name].commands["run"].help or "").split()) for name in STAGES}  # type: ignore[attr-defined]
    first, *later = STAGES
    assert "earlier stages" not in helps[first] and "reads the sources" in helps[first], helps[first]
    assert all("tables it reads from earlier stages must exist" in helps[n] for n in later), helps


def test_release_accepts_no_progress_as_every_other_command(tmp_path: Path) -> None:
    """A script passing --no-progress to every command broke on `curator release` (no such option)."""
    from typer.testing import CliRunner

    from curator.cli import app
    from curator.testing.pipelines import make_pipeline

    pipe = make_pipeline(tmp_path, [], key=bytes(range(32)))
    res = CliRunner().invoke(app, ["release", str(pipe), "--no-progress"])
    assert "No such option" not in res.output and "no cases table" in res.output, res.output  # it went on
