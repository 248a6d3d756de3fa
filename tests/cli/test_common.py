"""CLI plumbing without a demo: Ctrl-C, executor settings, report formats."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from curator.cli.common import handle_errors
from curator.config import ExecutorConfig, PipelineConfig
from curator.errors import ConfigError


def test_ctrl_c_says_how_to_resume(capsys: pytest.CaptureFixture[str]) -> None:
    @handle_errors
    def work() -> None:
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as e:
        work()
    assert e.value.exit_code == 130
    assert "run the same command again to resume" in capsys.readouterr().err


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
