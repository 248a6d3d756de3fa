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


ROOT = Path(__file__).resolve().parents[1]


def test_assemble_reproduces_benchmarks_md(tmp_path: Path) -> None:
    """BENCHMARKS.md is what ``benchmarks/assemble.py`` makes of the results files."""
    from benchmarks import assemble

    assemble.main(["--out", str(tmp_path / "B.md")])
    assert (tmp_path / "B.md").read_text() == (ROOT / "BENCHMARKS.md").read_text(), \
        "run `python benchmarks/assemble.py` after editing benchmarks/results/"


def test_assemble_puts_every_results_file_at_one_level() -> None:
    """A results file starting at ``##`` (export, io, runner, scaffold) became ``###``, a subsection
    of the file before it (tester 38 #14); one starting at ``#`` is a section as before."""
    from benchmarks.assemble import demote

    assert demote("## Export\n\n### a\n```\n# not a heading\n```\n") == "## Export\n\n### a\n```\n# not a heading\n```\n"
    assert demote("# Release\n\n## Memory\n") == "## Release\n\n### Memory\n"


@pytest.mark.parametrize("script", ["assemble", "attention_tau_fit"])
def test_help_only_prints_usage(script: str, tmp_path: Path) -> None:
    """--help prints the usage and does nothing else (assemble.py used to rewrite BENCHMARKS.md,
    attention_tau_fit.py to run its whole fit)."""
    import subprocess
    import sys

    before = (ROOT / "BENCHMARKS.md").stat().st_mtime_ns
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--help"], capture_output=True,
                         text=True, timeout=120, check=False, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("usage:"), res.stdout[:300] + res.stderr[-1000:]
    assert (ROOT / "BENCHMARKS.md").stat().st_mtime_ns == before


def _options(script: str) -> set[str]:
    """The option strings of a benchmark script's argparse parser (read from its source, not run)."""
    import ast

    out = {"-h", "--help"}
    for node in ast.walk(ast.parse((ROOT / "benchmarks" / f"{script}.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            names = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")]
            out.update(names)
            if any(isinstance(k.value, ast.Attribute) and k.value.attr == "BooleanOptionalAction" for k in node.keywords):
                out.update("--no-" + n[2:] for n in names if n.startswith("--"))
    return out


def test_documented_commands_use_existing_options() -> None:
    """Every ``python benchmarks/X.py ...`` in the results files and the scripts' docstrings names a
    script that exists and only options it has."""
    import re

    texts = [*sorted((ROOT / "benchmarks" / "results").glob("*.md")), *sorted((ROOT / "benchmarks").glob("*.py"))]
    wrong = []
    for path in texts:
        for m in re.finditer(r"python benchmarks/(\w+)\.py([^\n`#]*)", path.read_text()):
            script, rest = m.groups()
            if not (ROOT / "benchmarks" / f"{script}.py").exists():
                wrong.append(f"{path.name}: no benchmarks/{script}.py")
                continue
            unknown = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest)) - _options(script)
            if unknown:
                wrong.append(f"{path.name}: {script}.py has no {sorted(unknown)}")
    assert not wrong, wrong


def test_solf_eval_refuses_a_missing_real_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a checkout that is not beside shared/, it printed tables of 0 cases (all zeros)."""
    import sys

    from benchmarks import solf_eval

    monkeypatch.setattr(sys, "argv", ["solf_eval.py", "--real", str(tmp_path), "--no-totalseg"])
    with pytest.raises(SystemExit, match="no KiTS23 segmentations"):
        solf_eval.main()


def test_chunk_crc_benchmark_reads_both_layouts(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from benchmarks import chunk_crc

    monkeypatch.setattr(sys, "argv", ["chunk_crc.py", "--shape", "96", "80", "40", "-n", "3", "--reps", "1"])
    chunk_crc.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| smooth", "| phantom"))]
    assert len(rows) == 6  # 2 images × 2 box sizes, then 2 whole-store rows
