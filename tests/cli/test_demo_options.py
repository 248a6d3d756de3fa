"""`curator demo` (and `curator run`) check --executor and --workers before anything is written,
naming the option; a configuration error during the demo leaves its --out folder empty for the retry."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from curator.cli import app
from curator.errors import ConfigError


@pytest.mark.parametrize(("args", "option"), [(["--executor", "nosuch"], "'--executor'"),
                                              (["--workers", "0"], "'--workers'")])
def test_a_bad_demo_option_is_refused_naming_it_before_anything_is_written(tmp_path: Path, args: list[str],
                                                                           option: str) -> None:
    """`curator demo --executor nosuch --out X` wrote 4.7 MB of demo data into X, then said
    'pipeline.yaml: executor.kind = ... (line 28)' of a file the user never wrote; the retry
    with the same --out was refused as 'not empty'."""
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", *args, "--out", str(out), "--no-progress"], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and option in res.output and "line" not in res.output, res.output
    assert not out.exists()
    res = CliRunner().invoke(app, ["run", str(tmp_path / "pipeline.yaml"), *args], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and option in res.output, res.output  # not "ExecutorConfig.kind = ..."


@pytest.mark.parametrize(("options", "said"), [({"executor": "nosuch"}, "--executor nosuch: give one of local, dask"),
                                               ({"workers": 0}, "--workers 0: give 1 or more worker processes")])
def test_run_demo_checks_its_options_first(tmp_path: Path, options: dict[str, object], said: str) -> None:
    from curator.demo import run_demo

    with pytest.raises(ConfigError, match=said):
        run_demo(tmp_path / "demo", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "demo").exists()


def test_a_config_error_during_the_demo_empties_its_folder_for_the_retry(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The data written before the error blocked `curator demo --out` with the same folder."""
    import curator.demo
    from curator.demo import run_demo

    def refuse(*_: object, **__: object) -> None:
        raise ConfigError("config_error", "stages.x: a setting this curator refuses")

    monkeypatch.setattr(curator.demo, "run_pipeline", refuse)
    out = tmp_path / "demo"
    for _ in range(2):  # the second run is not refused as "not empty"
        with pytest.raises(ConfigError, match="a setting this curator refuses"):
            run_demo(out, workers=1, progress=False)
        assert out.is_dir() and not list(out.iterdir())
