"""The workspace lock between two processes: a deleted ``.lock`` does not let a second run in."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from curator import workspace
from curator.errors import WorkspaceError
from curator.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time; sys.path.insert(0, sys.argv[2])\n"
        "from curator.workspace import Workspace\n"
        "with Workspace(sys.argv[1]).locked('run'):\n"
        "    print('locked', flush=True); sys.stdin.readline()\n")


def _holder(ws: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(ws), str(ROOT)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "locked"
    return p


def test_a_deleted_lock_file_does_not_let_a_second_run_in(tmp_path: Path) -> None:
    """Tester 36 #4: `rm workspace/.lock` while a run held it let a second run in; the two runs
    then damaged a store (root attributes lost) and every later run crashed."""
    ws = Workspace(tmp_path / "ws")
    holder = _holder(ws.root)
    try:
        with pytest.raises(WorkspaceError) as e, ws.locked("run"):  # refused, naming the holder, as before
            pass
        assert e.value.kind == "workspace_locked" and f"pid {holder.pid}" in str(e.value)
        (ws.root / ".lock").unlink()  # an operator "clearing a stale lock"
        with pytest.raises(WorkspaceError) as e, ws.locked("run"):
            pass
        assert e.value.kind == "workspace_locked" and ".lock file was deleted" in str(e.value)
        if Path("/proc/locks").is_file():
            assert f"pid {holder.pid}" in str(e.value)
        assert "never delete .lock" in str(e.value)
        holder_said = ws.lock_holder()
        assert holder_said is not None and "deleted" in holder_said  # curator status: in use
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    assert ws.lock_holder() is None
    with ws.locked("run"):  # free again once its holder ended
        pass


def test_a_lock_left_by_a_dead_process_is_no_lock(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    holder = _holder(ws.root)
    holder.kill()
    holder.wait()
    assert "pid" in (ws.root / ".lock").read_text()  # its text stays; the lock died with it
    assert ws.lock_holder() is None
    with ws.locked("run"):
        pass


def test_a_run_starting_while_status_reads_the_lock_is_not_refused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Review s31 #5: `lock_holder` (curator status, gc) briefly takes a shared lock on the
    workspace folder; a run starting at that moment was refused as if its .lock had been deleted,
    naming the status command's pid. The reader's window is widened to 0.2 s here."""
    ws = Workspace(tmp_path / "ws").init()
    real = workspace._lock_folder
    probing = threading.Event()

    def slow_reader(root: Path, how: int) -> int | None:
        fd = real(root, how)
        if how == fcntl.LOCK_SH:  # lock_holder's probe (a run takes LOCK_EX)
            probing.set()
            time.sleep(0.2)
        return fd

    monkeypatch.setattr(workspace, "_lock_folder", slow_reader)
    said: list[str | None] = []
    reader = threading.Thread(target=lambda: said.append(ws.lock_holder()))
    reader.start()
    try:
        assert probing.wait(10)
        with ws.locked("run"):  # the folder is share-locked by the reader right now
            assert "curator run" in (ws.root / ".lock").read_text()
    finally:
        reader.join()
    assert said == [None]
