"""``check_output_file`` / ``check_output_dir``: an output path that cannot be used is a clear
``ConfigError`` (exit 2, saying what to give), found before any work — not an internal error
from deep inside a write."""

from __future__ import annotations

from pathlib import Path

import pytest

from curator.errors import ConfigError
from curator.io.fsutil import check_output_dir, check_output_file


def test_usable_paths_pass_and_nothing_is_created(tmp_path: Path) -> None:
    (tmp_path / "old.html").write_text("x")
    assert check_output_file(tmp_path / "old.html") == tmp_path / "old.html"  # replaced when written
    assert check_output_file(tmp_path / "new" / "deeper" / "r.html") == tmp_path / "new" / "deeper" / "r.html"
    assert check_output_dir(tmp_path) == tmp_path
    assert check_output_dir(tmp_path / "new" / "folder") == tmp_path / "new" / "folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.html"]  # the probe file is gone too


def test_a_folder_where_a_file_goes_and_a_file_where_a_folder_goes(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text("x")
    with pytest.raises(ConfigError, match="this is a folder, but a file is to be written here. What to do: "
                       "give a file path, e.g. .*report.html") as e:
        check_output_file(tmp_path, "report.html")
    assert e.value.path == str(tmp_path)
    with pytest.raises(ConfigError, match="this is a file, but a folder is to be written here"):
        check_output_dir(tmp_path / "f.yaml")
    for check in (check_output_file, check_output_dir):
        with pytest.raises(ConfigError, match="f.yaml is a file, not a folder, so nothing can be created under it"):
            check(tmp_path / "f.yaml" / "sub" / "x")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_place_nothing_can_be_created_in() -> None:
    """/proc takes no new files — even for root, whom permission checks would let through."""
    for check in (check_output_file, check_output_dir):
        with pytest.raises(ConfigError, match=r"nothing can be created in /proc .*What to do: give a place you can "
                           "write"):
            check("/proc/nope/x.html")


def test_staged_dir_lands_whole_or_not_at_all(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from curator.io.fsutil import staged_dir

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is free now: a run with it was killed
    dead = tmp_path / f".x.tmp-{socket.gethostname()}-{child.pid}"
    (dead / "images").mkdir(parents=True)
    with pytest.raises(RuntimeError), staged_dir(tmp_path / "a" / "b" / "x") as s:
        (s / "f").write_text("x")
        raise RuntimeError("stopped")
    assert not (tmp_path / "a").exists()  # nor the folders made to hold it
    with staged_dir(tmp_path / "x") as s:
        (s / "f").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # the killed run's staging is gone
    with staged_dir(tmp_path / "x") as s:  # an existing folder: staged inside it, entries moved in
        assert s.parent == tmp_path / "x"
        (s / "g").write_text("2")
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["f", "g"]
    with pytest.raises(ConfigError, match="the folder already holds g"), staged_dir(tmp_path / "x") as s:
        (s / "g").write_text("3")
    assert (tmp_path / "x" / "g").read_text() == "2" and sorted(p.name for p in (tmp_path / "x").iterdir()) == ["f", "g"]


def test_a_failed_cleanup_never_hides_why_the_write_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder that turned read-only refuses the temporary and then its removal: the removal's
    OSError replaced the write's folder_unwritable (and the CLI called it a bug in curator)."""
    import errno

    from curator.errors import WorkspaceError
    from curator.io.fsutil import atomic_path

    real = Path.unlink

    def unlink(self: Path, *a: object, **kw: object) -> None:
        if ".tmp-" in self.name:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real(self, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(WorkspaceError) as e, atomic_path(tmp_path / "a.csv") as tmp:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp))
    assert e.value.kind == "folder_unwritable" and "Read-only file system" in str(e.value)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_query_out_into_a_place_nothing_can_be_created_in_is_refused_first(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from curator.cli import app
    from curator.testing.stores import phantom_workspace

    ws = phantom_workspace(tmp_path / "ws", n_cases=1).root
    r = CliRunner().invoke(app, ["query", str(ws), "select case_id from cases", "-o", "/proc/nope/a.csv"])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "nothing can be created in /proc" in text and "give a place you can write" in text, text
