"""An export worker process is one of several: check_memory allows it 1/(4 × workers)."""

from __future__ import annotations

import contextvars
from pathlib import Path

from curator.export import common
from curator.io.formats import WORKERS


def test_an_export_worker_takes_its_share_of_the_memory(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(common, "Release", lambda path: None)
    monkeypatch.setattr("signal.signal", lambda *a: None)
    shared = common._Shared(tmp_path, ["liver"], False, (), None, 3)
    ctx = contextvars.copy_context()
    ctx.run(common._start_worker, shared)
    assert ctx[WORKERS] == 3
    common._WORKER.clear()
