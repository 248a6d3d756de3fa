"""CLI plumbing without a demo: Ctrl-C, executor settings, report formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from curator.cli.common import handle_errors
from curator.config import ExecutorConfig, PipelineConfig
from curator.errors import ConfigError


@pytest.mark.parametrize(("signal_name", "code", "said"), [("SIGINT", 130, "interrupted"),
                                                            ("SIGTERM", 143, "terminated (SIGTERM)")])
def test_ctrl_c_and_sigterm_say_how_to_resume(signal_name: str, code: int, said: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from curator.cli.common import Terminated

    @handle_errors
    def work() -> None:
        raise Terminated if signal_name == "SIGTERM" else KeyboardInterrupt

    with pytest.raises(typer.Exit) as e:
        work()
    assert e.value.exit_code == code
    err = " ".join(capsys.readouterr().err.split())  # the console wraps at its width
    assert said in err and "run the same command again to resume" in err


_SIGTERM_SELF = """
import os, signal, sys
from curator.cli.common import Terminated, stop_on_sigterm
stop_on_sigterm()
child = os.fork()
if child == 0:  # a forked process inherits the handler, and must still die of the signal
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(0)
_, status = os.waitpid(child, 0)
print("child", os.waitstatus_to_exitcode(status))
try:
    os.kill(os.getpid(), signal.SIGTERM)
except Terminated:
    print("terminated")
"""


def test_sigterm_stops_the_main_process_like_ctrl_c_and_kills_forked_children() -> None:
    import subprocess
    import sys
    from pathlib import Path

    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", _SIGTERM_SELF], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == [f"child {-15}", "terminated"], out.stdout


@pytest.mark.parametrize("workers", [0, -3])
def test_workers_must_be_positive(workers: int) -> None:
    with pytest.raises(ConfigError, match="workers"):
        ExecutorConfig(workers=workers)
    with pytest.raises(ConfigError, match="workers"):
        PipelineConfig.from_dict({"executor": {"workers": workers}})


def test_verify_and_diff_refuse_csv(tmp_path) -> None:
    from curator.cli import app

    runner = CliRunner()
    for args in (["verify", str(tmp_path), "-f", "csv"], ["diff", str(tmp_path), str(tmp_path), "-f", "csv"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "csv" in res.output


def test_version_flag_prints_the_package_version() -> None:
    from curator import __version__
    from curator.cli import app

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"curator {__version__}")


def test_every_out_option_has_its_short_form(tmp_path: Path) -> None:
    """`curator card` took --out but not -o, which query, report and review export take."""
    from typing import Any

    from curator.cli import app

    def commands(cmd: Any, path: str) -> list[tuple[str, Any]]:  # typer's own vendored click commands
        subs = getattr(cmd, "commands", {}).values()
        return [(path, cmd), *(c for sub in subs for c in commands(sub, f"{path} {sub.name}"))]

    found = {path: p.opts for path, cmd in commands(typer.main.get_command(app), "curator")
             for p in cmd.params if "--out" in p.opts}
    assert "curator card" in found and "curator export nnunet" in found and len(found) >= 8, found
    assert {path: opts for path, opts in found.items() if "-o" not in opts} == {}
    r = CliRunner().invoke(app, ["card", "--registry", "-o", str(tmp_path / "card.md")])
    assert r.exit_code == 0 and (tmp_path / "card.md").read_text().startswith("#"), r.output


def test_query_refuses_a_format_contradicting_the_out_file(tmp_path: Path) -> None:
    """`curator query ... -o cases.csv -f json` wrote CSV without a word."""
    from curator.cli import app
    from curator.testing.stores import phantom_workspace

    ws = phantom_workspace(tmp_path / "ws", n_cases=2).root
    runner = CliRunner()
    for out, fmt in (("cases.csv", "json"), ("cases.parquet", "csv"), ("cases.csv", "table")):
        r = runner.invoke(app, ["query", str(ws), "select case_id from cases", "-o", str(tmp_path / out), "-f", fmt])
        text = " ".join(r.output.split())
        assert r.exit_code == 2 and f"--format {fmt} contradicts --out {out}" in text, text
        assert not (tmp_path / out).exists()
    for out, fmt in (("cases.csv", ["-f", "csv"]), ("cases.CSV", ["--format", "csv"]), ("cases.parquet", [])):
        r = runner.invoke(app, ["query", str(ws), "select case_id from cases order by 1", "-o", str(tmp_path / out),
                                *fmt])
        assert r.exit_code == 0 and (tmp_path / out).stat().st_size > 0, r.output
    assert (tmp_path / "cases.csv").read_text().split() == ["case_id", "Phantom__c000", "Phantom__c001"]


def test_the_internal_error_hint_shows_the_command_with_debug_and_debug_works_after_the_command(
        capsys: pytest.CaptureFixture[str]) -> None:
    """"Re-run with --debug" after `curator pseudolabel pipeline.yaml`: `curator pseudolabel
    pipeline.yaml --debug` said "No such option: --debug" (it is a global option)."""
    from curator.cli.common import _ARGS, debug_first, remember_args
    from tests.cli.test_cli import curator

    assert debug_first(["pseudolabel", "p.yaml", "--debug"]) == ["--debug", "pseudolabel", "p.yaml"]
    assert debug_first(["--debug", "run", "p.yaml"]) == ["--debug", "run", "p.yaml"]
    assert debug_first(["query", "r", "--", "--debug"]) == ["query", "r", "--", "--debug"]

    @handle_errors
    def crash() -> None:
        raise RuntimeError("boom")

    saved = list(_ARGS)
    try:
        remember_args(["pseudolabel", "my pipeline.yaml"])
        with pytest.raises(typer.Exit) as e:
            crash()
    finally:
        _ARGS[:] = saved
    assert e.value.exit_code == 3
    said = " ".join(capsys.readouterr().err.split())
    assert "Re-run with --debug for the traceback (curator --debug pseudolabel 'my pipeline.yaml')" in said, said
    res = curator("env", "--debug")
    assert res.returncode == 0 and "No such option" not in res.stderr, res.stderr


def test_a_bad_option_value_raised_by_a_command_is_a_usage_error() -> None:
    """`sources check --sample 0` said "internal error BadParameter ... This is a bug in curator"
    (exit 3): typer's vendored click errors were not let through to click."""
    from tests.cli.test_cli import curator

    res = curator("sources", "check", "KiTS23", ".", "--sample", "0")
    assert res.returncode == 2, res.stderr
    said = " ".join(res.stderr.split())
    assert "give --sample 1 or more, or --all" in said and "internal error" not in said


@pytest.mark.parametrize("command", ["nnunet", "monai", "huggingface"])
def test_an_interrupted_export_says_nothing_was_written(command: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Tester 21's F3: Ctrl-C during an export said "finished cases are kept; run the same command
    again to resume" — an export is staged and moved in at the end, so it keeps nothing."""
    import curator.export
    import curator.release.hub
    from curator.cli import app
    from curator.cli.common import Terminated

    def stop(*args: object, **kwargs: object) -> None:
        raise Terminated

    for module, name in ((curator.export, "export_nnunet"), (curator.export, "export_monai"),
                         (curator.release.hub, "export_huggingface")):
        monkeypatch.setattr(module, name, stop)
    args = ["export", command, str(tmp_path), "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(app, [*args, "--terms", "liver"] if command != "huggingface" else args,
                             env={"COLUMNS": "300"})
    said = " ".join(res.output.split())
    assert res.exit_code == 143, said
    assert "terminated (SIGTERM): nothing was written" in said and "resume" not in said


@pytest.mark.parametrize("command", ["nnunet", "monai"])
def test_the_terms_help_says_containers_come_first(command: str) -> None:
    """Tester 21's F6: `--terms` said "label 1, 2, ... in order", but kidney_tumor,kidney_and_mass
    is written as 1 = kidney_and_mass, 2 = kidney_tumor (containers first)."""
    from curator.cli import app
    from curator.export.regions import painting_order
    from curator.taxonomy import load_taxonomy

    assert painting_order(load_taxonomy(), ["kidney_tumor", "kidney_and_mass"]) == ["kidney_and_mass", "kidney_tumor"]
    res = CliRunner().invoke(app, ["export", command, "--help"], env={"COLUMNS": "300", "NO_COLOR": "1"})
    said = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code == 0, said
    assert "a term containing another requested term comes before it" in said, said
