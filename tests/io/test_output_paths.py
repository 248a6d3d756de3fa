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
