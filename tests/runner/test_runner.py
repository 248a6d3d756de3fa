"""Runner contract: caching, on_bad_case, bugs vs bad input, crashed workers, both executors."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from curator.config import ExecutorConfig, PipelineConfig
from curator.errors import StageError
from curator.runner.context import Context
from curator.runner.dask_executor import DaskExecutor
from curator.runner.executors import InlineExecutor, LocalExecutor
from curator.runner.run import run_stage
from curator.testing.stages import ProbeConfig, ProbeStage


def _ctx(tmp: Path, **probe: Any) -> Context:
    cfg = PipelineConfig.from_dict({"workspace": str(tmp / "ws"), "stages": {"probe": probe},
                                    "executor": {"progress": False}})
    ctx = Context(cfg)
    ctx.workspace.init()
    return ctx


def _problems(ctx: Context) -> list[dict[str, Any]]:
    return ctx.workspace.read_table("problems__probe").to_pylist()  # type: ignore[union-attr]


def test_rerun_skips_finished_cases_and_config_change_reruns(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, n_cases=5)
    r1 = run_stage(ctx, ProbeStage, InlineExecutor())
    assert (r1.ran, r1.cached) == (5, 0)
    r2 = run_stage(ctx, ProbeStage, InlineExecutor())
    assert (r2.ran, r2.cached) == (0, 5)
    ctx2 = _ctx(tmp_path, n_cases=5, salt="inputs changed")
    r3 = run_stage(ctx2, ProbeStage, InlineExecutor())
    assert (r3.ran, r3.cached) == (5, 0)


def test_a_run_says_why_a_stage_runs_its_cases_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """After an upgrade or a settings change `curator run` redid a whole stage with only
    '(0 cached, 5 run)' to show; `curator status` alone said why."""
    caplog.set_level(logging.INFO, logger="curator")
    run_stage(_ctx(tmp_path, n_cases=5), ProbeStage, InlineExecutor())
    run_stage(_ctx(tmp_path, n_cases=5), ProbeStage, InlineExecutor())
    assert "to run:" not in caplog.text  # the first run, and a run with nothing to redo, say nothing
    run_stage(_ctx(tmp_path, n_cases=5, salt="inputs changed"), ProbeStage, InlineExecutor())
    (line,) = [r.getMessage() for r in caplog.records if "to run:" in r.getMessage()]
    assert line.startswith("probe: 5 case(s) to run: probe ran with other settings (salt"), line
    caplog.clear()  # a finalize-only setting changed and one case's result is gone: it runs, for no such reason
    ctx = _ctx(tmp_path, n_cases=5, salt="inputs changed", label="other")
    ctx.workspace.case_result_path("probe", "c000").unlink()
    assert run_stage(ctx, ProbeStage, InlineExecutor()).ran == 1 and "to run:" not in caplog.text


def test_a_finalize_only_setting_reruns_finalize_not_the_cases(tmp_path: Path) -> None:
    """Changing a setting only finalize reads (a cohort threshold, a keep policy) re-judges the
    cached per-case results; per-case work never sees it, so the cache cannot go stale."""
    r1 = run_stage(_ctx(tmp_path, n_cases=3, label="first"), ProbeStage, InlineExecutor())
    ctx = _ctx(tmp_path, n_cases=3, label="second")
    r2 = run_stage(ctx, ProbeStage, InlineExecutor())
    assert (r1.ran, r2.ran, r2.cached) == (3, 0, 3)
    final = ctx.workspace.read_table("probe_final")
    assert final is not None and set(final.column("label").to_pylist()) == {"second"}
    cached = ctx.workspace.read_case_result("probe", "c000")
    assert cached is not None and cached["rows"]["probe"][0]["label"] == ""  # the default, not "first"
    assert ProbeConfig(label="x").config_hash() != ProbeConfig(label="y").config_hash()  # still recorded


def test_bad_case_becomes_problem_and_run_continues(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, n_cases=4, behaviour={"c001": "bad", "c002": "bug"})
    rep = run_stage(ctx, ProbeStage, InlineExecutor())
    assert rep.failed == 2 and rep.ran == 4
    probs = {p["case_id"]: p for p in _problems(ctx)}
    assert probs["c001"]["kind"] == "corrupt_file" and "What to do" in probs["c001"]["message"]
    assert probs["c002"]["kind"] == "internal_error" and "ZeroDivisionError" in probs["c002"]["message"]
    # bad input is cached (same answer next time); a bug is retried
    rep2 = run_stage(ctx, ProbeStage, InlineExecutor())
    assert rep2.ran == 1 and rep2.cached == 3


def test_a_failure_recorded_by_other_code_is_tried_again(tmp_path: Path) -> None:
    """A bad input's failure is cached, but only for the code and libraries that failed on it (the
    run's environment id, ``computed_with``): a 4-D MetaImage called corrupt, or a DICOM series
    refused for a copied slice, kept failing after the upgrade that reads them until its files
    changed (fixer io); a new pydicom or SimpleITK may read a file too (review 30). Cases that
    succeeded stay cached."""
    import json

    ctx = _ctx(tmp_path, n_cases=3, behaviour={"c001": "bad"})
    assert run_stage(ctx, ProbeStage, InlineExecutor()).failed == 1
    path = ctx.workspace.case_result_path("probe", "c001")
    recorded = json.loads(path.read_text())
    assert recorded["failed"] and recorded["computed_with"]
    assert run_stage(ctx, ProbeStage, InlineExecutor()).ran == 0  # the same code and libraries: cached
    path.write_text(json.dumps({**recorded, "computed_with": "0123abcd0123abcd"}))  # under an older environment
    rep = run_stage(ctx, ProbeStage, InlineExecutor())
    assert (rep.ran, rep.cached, rep.failed) == (1, 2, 1)
    path.write_text(json.dumps({k: v for k, v in recorded.items() if k != "computed_with"}))  # before ids
    assert run_stage(ctx, ProbeStage, InlineExecutor()).ran == 1
    ok = ctx.workspace.case_result_path("probe", "c000")  # a success under another environment stays cached
    ctx.workspace.write_case_result("probe", "c000", {**json.loads(ok.read_text()), "computed_with": "0123abcd0123abcd"})
    assert run_stage(ctx, ProbeStage, InlineExecutor()).ran == 0


def test_a_package_missing_from_a_workers_environment_is_named_not_called_a_bug(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, n_cases=2, behaviour={"c001": "missing_module"})
    rep = run_stage(ctx, ProbeStage, InlineExecutor())
    assert rep.failed == 1
    (row,) = _problems(ctx)
    assert "no module 'curator_no_such_package'" in row["message"] and "bug" not in row["message"]
    assert "worker's environment" in row["message"]
    assert run_stage(ctx, ProbeStage, InlineExecutor()).ran == 1  # not cached: retried once installed


def test_on_bad_case_error_stops_with_the_case_named(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, n_cases=4, behaviour={"c001": "bad"}, on_bad_case="error")
    with pytest.raises(StageError) as e:
        run_stage(ctx, ProbeStage, InlineExecutor())
    assert "c001" in str(e.value) and "planted bad input" in str(e.value)
    assert _problems(ctx)[0]["case_id"] == "c001"


def test_on_bad_case_error_stops_on_a_bad_case_cached_by_an_earlier_run(tmp_path: Path) -> None:
    """warn first (the bad case is cached as failed), then error: the strict run must still stop."""
    rep = run_stage(_ctx(tmp_path, n_cases=4, behaviour={"c001": "bad"}), ProbeStage, InlineExecutor())
    assert rep.failed == 1
    ctx = _ctx(tmp_path, n_cases=4, behaviour={"c001": "bad"}, on_bad_case="error")
    with pytest.raises(StageError) as e:
        run_stage(ctx, ProbeStage, InlineExecutor())
    assert "c001" in str(e.value) and "planted bad input" in str(e.value)


def test_on_bad_case_error_says_what_to_do_once(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, n_cases=2, behaviour={"c001": "warn_then_bad"}, on_bad_case="error")
    with pytest.raises(StageError) as e:
        run_stage(ctx, ProbeStage, InlineExecutor())
    msg = str(e.value)
    assert msg.count("What to do:") == 1, msg
    assert "planted bad input" in msg and "planted warning" not in msg  # the error, not the warning before it
    assert "download the file again" in msg and "on_bad_case: warn" in msg  # the case's remedy, then the policy's


def test_warnings_collected_before_a_case_fails_are_kept(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, n_cases=2, behaviour={"c001": "warn_then_bad"})
    rep = run_stage(ctx, ProbeStage, LocalExecutor(1))
    assert rep.failed == 1
    rows = [(p["case_id"], p["kind"], p["severity"]) for p in _problems(ctx)]
    assert sorted(rows) == [("c001", "corrupt_file", "error"), ("c001", "label_reoriented", "info")]
    cached = ctx.workspace.read_case_result("probe", "c001")
    assert cached is not None and len(cached["problems"]) == 2  # and a cached re-run keeps them too


@pytest.mark.parametrize("policy", ["warn", "skip"])
def test_warn_and_skip_record_problems(tmp_path: Path, policy: str, caplog: pytest.LogCaptureFixture) -> None:
    ctx = _ctx(tmp_path, n_cases=3, behaviour={"c000": "bad"}, on_bad_case=policy)
    with caplog.at_level("WARNING", logger="curator"):
        run_stage(ctx, ProbeStage, InlineExecutor())
    assert len(_problems(ctx)) == 1
    assert ("planted bad input" in caplog.text) is (policy == "warn")


def test_process_pool_names_the_case_that_kills_its_worker(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, n_cases=5, behaviour={"c003": "crash"})
    rep = run_stage(ctx, ProbeStage, LocalExecutor(2))
    assert rep.ran == 5 and rep.failed == 1
    (p,) = _problems(ctx)
    assert p["case_id"] == "c003" and p["kind"] == "worker_crashed"


def test_a_stage_whose_worker_dies_on_every_case_stops_the_run(tmp_path: Path) -> None:
    """An undersized Dask worker was OOM-killed on all 37 cases: each a worker_crashed row, then qc
    and a release without pseudo labels, exit 0. Every case crashing stops the stage, names the
    workers, caches nothing (the next run retries), and one crash among good cases does not."""
    ctx = _ctx(tmp_path, n_cases=3, behaviour={f"c00{i}": "crash" for i in range(3)})
    with pytest.raises(StageError) as e:
        run_stage(ctx, ProbeStage, LocalExecutor(2))
    assert "died on every case it ran (3 of 3)" in e.value.detail and "lower --workers" in (e.value.remedy or "")
    assert [p["kind"] for p in _problems(ctx)] == ["worker_crashed"] * 3
    assert not ctx.workspace.has_table("probe") and ctx.workspace.read_case_result("probe", "c000") is None
    few = _ctx(tmp_path / "few", n_cases=2, behaviour={"c000": "crash", "c001": "crash"})
    assert run_stage(few, ProbeStage, LocalExecutor(2)).failed == 2  # two crashes may be two bad files
    # cases that crash their worker are not cached: a resumed run plans only them again — the
    # cached cases show the workers can run the stage, so it goes on
    some = _ctx(tmp_path / "some", n_cases=5, behaviour={f"c00{i}": "crash" for i in range(3)})
    for _ in range(2):
        assert run_stage(some, ProbeStage, LocalExecutor(2)).failed == 3


def test_local_pool_and_dask_give_the_same_results(tmp_path: Path) -> None:
    ctx_a = _ctx(tmp_path / "a", n_cases=6, behaviour={"c002": "bad"})
    ctx_b = _ctx(tmp_path / "b", n_cases=6, behaviour={"c002": "bad"})
    run_stage(ctx_a, ProbeStage, LocalExecutor(2))
    dask = DaskExecutor(2, None)
    try:
        # the local cluster's HTTP server on a free loopback port: not *:8787, for anyone on a
        # shared server to watch and concurrent runs to compete for; and distributed's INFO lines off
        assert dask.cluster is not None and "127.0.0.1:8787" not in dask.cluster.dashboard_link
        assert dask.cluster.dashboard_link.startswith("http://127.0.0.1:")
        assert not logging.getLogger("distributed").isEnabledFor(logging.INFO)
        assert logging.getLogger("distributed").isEnabledFor(logging.WARNING)  # a worker restarted for memory
        run_stage(ctx_b, ProbeStage, dask)
    finally:
        dask.close()
    assert _problems(ctx_a) == _problems(ctx_b)
    for cid in [f"c{i:03d}" for i in range(6)]:
        a = ctx_a.workspace.read_case_result("probe", cid)
        b = ctx_b.workspace.read_case_result("probe", cid)
        assert a is not None and b is not None
        assert a["key"] == b["key"] and a["failed"] == b["failed"]


def test_executor_config_is_strict() -> None:
    with pytest.raises(Exception) as e:
        ExecutorConfig.from_dict({"kind": "slurm"})
    assert "one of" in str(e.value)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status  # a zombie has already died


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_killed_run_leaves_no_pool_worker_behind(tmp_path: Path) -> None:
    """SIGKILL the run: its pool workers die too, instead of writing on beside the resumed run."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        from curator.runner.executors import LocalExecutor
        if __name__ == "__main__":
            pool = LocalExecutor(1)._pool(1)
            print(pool.submit(os.getpid).result(), flush=True)
            pool.submit(time.sleep, 120)
            time.sleep(120)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(proc.stdout.readline())  # type: ignore[union-attr]
        time.sleep(0.5)  # the worker is now inside its 120 s task
        assert _alive(worker)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 10
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(worker), "the pool worker outlived the killed run"


def test_a_source_file_rewritten_with_its_old_mtime_is_hashed_again(tmp_path: Path) -> None:
    """The checksum cache keyed on size and mtime kept the old checksum of a file rewritten with
    the same size and its mtime put back (rsync -t, touch -r): its case was never re-ingested."""
    import os

    from curator.workspace import ChecksumCache, Workspace

    ws = Workspace(tmp_path / "ws").init()
    src = tmp_path / "raw"
    src.mkdir()
    f = src / "a.nii.gz"
    f.write_bytes(b"A" * 100)
    before = ChecksumCache(ws, "S")
    first = before.file(src, "a.nii.gz")
    before.save()
    st = f.stat()
    f.write_bytes(b"B" * 100)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_mtime_ns == st.st_mtime_ns and f.stat().st_size == st.st_size
    again = ChecksumCache(ws, "S")
    second = again.file(src, "a.nii.gz")
    assert second != first
    again.save()
    assert ChecksumCache(ws, "S").file(src, "a.nii.gz") == second


def test_an_emptied_or_lost_pseudonym_key_is_refused(tmp_path: Path) -> None:
    """An emptied key file gave HMAC(b"", ...) pseudonyms anyone can recompute; a deleted one was
    replaced by a new key without a word, changing every patient_id and study_key."""
    import pyarrow as pa

    from curator.errors import WorkspaceError
    from curator.workspace import Workspace

    ws = Workspace(tmp_path / "ws").init()
    assert len(ws.key) == 32 and ws.pseudonym("KiTS23", "case_00001").startswith("p_")
    keyfile = ws.root / "secret" / "pseudonym.key"
    for content in ("", "00" * 8, "not hex"):
        keyfile.write_text(content + "\n")
        with pytest.raises(WorkspaceError) as e:
            ws.pseudonym("KiTS23", "case_00001")
        assert e.value.kind == "key_invalid" and "backup" in str(e.value)
    keyfile.unlink()
    Workspace(ws.root).init()  # nothing made with the old key yet: a new one is fine
    old = keyfile.read_text()
    ws.write_table("cases", pa.table({"case_id": ["c"]}))
    keyfile.unlink()
    with pytest.raises(WorkspaceError) as e:
        Workspace(ws.root).init()
    assert e.value.kind == "key_missing" and "patient_id" in str(e.value) and not keyfile.exists()
    keyfile.write_text(old)  # restored from a backup
    assert Workspace(ws.root).init().key.hex() == old.strip()

