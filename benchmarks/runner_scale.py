"""Runner at scale: many tiny cases through every stage, to see what grows worse than linearly.

``generate`` writes an MSD-style task (``dataset.json``, ``imagesTr``/``labelsTr``) of N
synthetic phantoms of 24-32 voxels a side (curator's own phantoms, so qc has organs to judge)
and a pipeline.yaml (the demo's settings, pseudolabel off). ``run`` then times, each in its
own process (so peak RSS is that command's): every stage one by one, a second ``curator run``
with nothing changed, ``curator status``, ``curator release``, and optionally a run killed
with SIGKILL halfway through preprocess, then resumed (seconds until it makes progress again,
cases it redid).

    python benchmarks/runner_scale.py --cases 1000 --out /tmp/scale_runs/n1000 --workers 2

Numbers are per case; compare the lines of several N (the JSON written beside the workspace).
Every line prints the machine's load average: other processes slow timings down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

STAGES = ["ingest", "dedup", "harmonize", "preprocess", "qc"]
TIME_RE = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def generate(root: Path, n: int, seed: int = 11) -> Path:
    """``root/Task09_Spleen`` with ``n`` training cases; returns pipeline.yaml's path."""
    from curator.testing.layouts import write_msd_task
    from curator.testing.phantoms import Subject, grid, remap, render

    task = root / "raw" / "Task09_Spleen"
    train = []
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = tuple(int(v) for v in rng.integers(24, 33, size=3))
        g = grid(shape, (12.0, 12.0, 14.0), "LPS", center=(0.0, -10.0, 20.0))
        img, lab = render(Subject.random(seed * 100_000 + i, tumor=False, cyst=False), g, "CT", seed=i)
        train.append((f"spleen_{i}", np.rint(img).astype(np.int16), remap(lab, {"spleen": 1}), g))
    write_msd_task(task, "Spleen", train, [], {"0": "background", "1": "spleen"}, {"0": "CT"})
    cfg = {"workspace": "workspace", "sources": [{"dataset": "MSD_Spleen", "root": str(task)}],
           "registry": [],
           "stages": {"ingest": {"on_bad_case": "warn"}, "preprocess": {"target_spacing_mm": [12.0, 12.0, 14.0]},
                      "qc": {"min_cohort": 5}, "pseudolabel": {"enabled": False}},
           "executor": {"kind": "local", "workers": 1, "progress": False},
           "release": {"root": "releases", "collection": "scale", "version": "0.1.0"}}
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _cmd(args: list[str]) -> list[str]:
    return ["/usr/bin/time", "-v", "nice", "-n", "5", sys.executable, "-m", "curator", *args]


def timed(args: list[str], cwd: Path) -> dict[str, float]:
    """Run ``curator <args>``; wall seconds and peak RSS (MiB) of the command."""
    t0 = time.perf_counter()
    p = subprocess.run(_cmd(args), check=False, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 1):  # 1: problems were found (the broken-input rows), not a crash
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(f"curator {' '.join(args)} exited {p.returncode}")
    m = TIME_RE.search(p.stderr)
    return {"seconds": round(wall, 3), "rss_mb": round(int(m.group(1)) / 1024, 1) if m else -1.0,
            "load": round(os.getloadavg()[0], 2)}


def _done(ws: Path, stage: str) -> int:
    d = ws / "stages" / stage / "cases"
    return sum(1 for _ in d.rglob("*.json")) if d.is_dir() else 0


def killed_resume(pipeline: Path, n: int, workers: int) -> dict[str, float]:
    """Kill ``curator preprocess`` (SIGKILL) once half of its cases are cached, then resume it:
    seconds until the resumed run writes its first new case result, and cases it redid."""
    ws = pipeline.parent / "workspace"
    for d in (ws / "stages" / "preprocess", ws / "stores"):
        subprocess.run(["rm", "-rf", str(d)], check=True)
    args = ["preprocess", "run", str(pipeline), "-w", str(workers), "--no-progress"]
    p = subprocess.Popen(["nice", "-n", "5", sys.executable, "-m", "curator", *args], cwd=pipeline.parent,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while _done(ws, "preprocess") < n // 2 and p.poll() is None:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    before = _done(ws, "preprocess")
    mtimes = {f: f.stat().st_mtime_ns for f in (ws / "stages" / "preprocess" / "cases").rglob("*.json")}
    t0 = time.perf_counter()
    q = subprocess.Popen(["nice", "-n", "5", sys.executable, "-m", "curator", *args], cwd=pipeline.parent,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    while q.poll() is None:
        if first is None and _done(ws, "preprocess") > before:
            first = time.perf_counter() - t0
        time.sleep(0.02)
    total = time.perf_counter() - t0
    redone = sum(1 for f, m in mtimes.items() if f.stat().st_mtime_ns != m)
    return {"killed_at": before, "first_progress_s": round(first or total, 3), "seconds": round(total, 3),
            "redone": redone, "load": round(os.getloadavg()[0], 2)}


def run(pipeline: Path, n: int, workers: int, kill: bool) -> dict[str, object]:
    cwd = pipeline.parent
    out: dict[str, object] = {"cases": n, "workers": workers, "machine": platform.machine(),
                              "python": platform.python_version(), "cpus": os.cpu_count()}
    for stage in STAGES:
        out[stage] = timed([stage, "run", str(pipeline), "-w", str(workers), "--no-progress"], cwd)
        print(stage, out[stage], flush=True)
    for name, args in (("rerun", ["run", str(pipeline), "-w", str(workers), "--no-release", "--no-progress"]),
                       ("status", ["status", str(pipeline)]), ("release", ["release", str(pipeline)])):
        out[name] = timed(args, cwd)
        print(name, out[name], flush=True)
    if kill:
        out["kill_resume"] = killed_resume(pipeline, n, workers)
        print("kill_resume", out["kill_resume"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--kill", action="store_true", help="also kill preprocess halfway and resume it")
    ap.add_argument("--generate-only", action="store_true")
    a = ap.parse_args()
    pipeline = a.out / "pipeline.yaml"
    if not pipeline.exists():
        t0 = time.perf_counter()
        generate(a.out, a.cases)
        print(f"generated {a.cases} cases in {time.perf_counter() - t0:.1f} s", flush=True)
    if a.generate_only:
        return
    res = run(pipeline, a.cases, a.workers, a.kill)
    (a.out / f"result_w{a.workers}.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
