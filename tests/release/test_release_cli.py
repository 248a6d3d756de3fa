"""``curator verify``, ``curator diff``, ``curator lineage``, ``curator cite`` through the command line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from curator.cli import app

Build = Callable[..., Path]
runner = CliRunner()


def test_verify_exit_codes_and_json(demo: Path) -> None:
    rel = demo / "releases" / "demo" / "0.1.0"
    ok = runner.invoke(app, ["verify", str(rel)])
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output
    (rel / "problems.parquet").write_bytes((rel / "problems.parquet").read_bytes() + b"\0")
    bad = runner.invoke(app, ["verify", str(rel), "--format", "json"])
    assert bad.exit_code == 1
    rep = json.loads(bad.stdout)
    assert rep["ok"] is False and rep["modified"] == ["problems.parquet"]
    missing = runner.invoke(app, ["verify", str(demo)])
    assert missing.exit_code == 2 and "release.json" in missing.output


def test_diff_against_parent_and_lineage(demo: Path, release_with: Build) -> None:
    rel = release_with(demo, "0.2.0")
    out = runner.invoke(app, ["diff", str(rel), "--format", "json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    assert d["a"] == "demo 0.1.0" and d["b"] == "demo 0.2.0"
    assert all(not t["added"] and not t["removed"] and not t["changed"] for t in d["tables"].values())
    text = runner.invoke(app, ["diff", str(demo / "releases" / "demo" / "0.1.0"), str(rel)])
    assert text.exit_code == 0 and "no differences in the tables" in text.output
    first = runner.invoke(app, ["diff", str(demo / "releases" / "demo" / "0.1.0")])
    assert first.exit_code == 2 and "no parent version" in first.output
    lin = runner.invoke(app, ["lineage", str(demo / "releases" / "demo"), "--format", "json"])
    rows = json.loads(lin.stdout)
    assert [r["version"] for r in rows] == ["0.2.0", "0.1.0"]
    info = json.loads((rel / "release.json").read_text())  # which curator made each: its commit and schema
    code = info["code_revision"] or "unrecorded"  # the commit, shortened, with a dirty checkout's +dirty.<hash>
    assert rows[0]["schema"] == info["schema_version"] and rows[0]["code"] == code[:12] + code[40:]
    assert rows[0]["models"].startswith(f"{len(info['models'])} (")  # a count alone hid changed fingerprints


def test_diff_warns_when_b_is_older_than_a(demo: Path, release_with: Build) -> None:
    """`curator diff 0.3.0 0.1.0` printed "demo 0.3.0 → demo 0.1.0" with no word that the changes
    then read backwards; it is still allowed (what did an upgrade undo?), with a warning on stderr."""
    old, new = demo / "releases" / "demo" / "0.1.0", release_with(demo, "0.3.0")
    back = runner.invoke(app, ["diff", str(new), str(old)])
    assert back.exit_code == 0, back.output
    warning = " ".join(back.stderr.split())
    assert "warning demo 0.1.0 is older than demo 0.3.0" in warning and "demo 0.3.0 → demo 0.1.0" in back.stdout
    as_json = runner.invoke(app, ["diff", str(new), str(old), "--format", "json"])
    assert as_json.exit_code == 0 and "is older than" in as_json.stderr and json.loads(as_json.stdout)["b"] == "demo 0.1.0"
    forward = runner.invoke(app, ["diff", str(old), str(new)])
    assert forward.exit_code == 0 and "older" not in forward.stderr, forward.stderr


def test_cite_prints_or_writes_the_citations_and_licences_of_a_cohort(demo: Path, tmp_path: Path) -> None:
    from curator.release.card_check import bibtex_keys

    rel = demo / "releases" / "demo" / "0.1.0"
    printed = runner.invoke(app, ["cite", str(rel), "--where", "c.dataset = 'KiTS23' and s.split = 'train'"])
    assert printed.exit_code == 0, printed.output
    assert bibtex_keys(printed.stdout) == ["heller2023kits21"] and "MSD" not in printed.stdout
    assert "of 1 dataset(s): KiTS23" in " ".join(printed.stderr.split())
    wrote = runner.invoke(app, ["cite", str(demo / "releases" / "demo"), "-o", str(tmp_path / "cohort")])
    assert wrote.exit_code == 0, wrote.output
    assert (tmp_path / "cohort" / "CITATIONS.bib").read_text() == (rel / "CITATIONS.bib").read_text()
    assert "Incompatible share-alike" in (tmp_path / "cohort" / "LICENCES.md").read_text()
    inside = runner.invoke(app, ["cite", str(rel), "-o", str(rel / "cite")])
    assert inside.exit_code == 2 and "releases are immutable" in inside.output and not (rel / "cite").exists()
