"""Benchmark (a): preprocessing time per case, peak memory and output size — curator vs nnU-Net v2.

Both tools preprocess the same NIfTI cases (``bench_cases.py``) to the same target spacing
(1 × 1 × 3 mm; nnU-Net's plan is edited to that spacing) on one pinned core (``taskset -c
0``), one fresh process per case, so its ``VmHWM`` is that case's peak memory. nnU-Net runs
``DefaultPreprocessor.run_case_save`` (its own read → crop → normalise → order-3 resample →
class locations → ``.b2nd``); curator runs ``PreprocessStage.process`` (read → reorient →
resample → body mask → crop → statistics → sharded Zarr store).

Run:  python benchmarks/preprocess.py --nnunet-python /work/venv-nnunet/bin/python [--repeat 3] [--big]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_cases import build, cases

NNUNET_CASE = r"""
import json, sys, time
def hwm():  # this process's peak RSS (VmHWM is per address space: not inherited across exec, unlike ru_maxrss)
    return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) / 1024
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
raw, plans_file, case, out = sys.argv[1:5]
pm = PlansManager(plans_file)
cm = pm.get_configuration("3d_fullres")
ds = load_json(raw + "/dataset.json")
base = hwm()
t = time.perf_counter()
DefaultPreprocessor(verbose=False).run_case_save(out + "/" + case, [raw + f"/imagesTr/{case}_0000.nii.gz"],
    raw + f"/labelsTr/{case}.nii.gz", pm, cm, ds)
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mb": hwm(),
                  "base_mb": base}))
"""

CURATOR_CASE = r"""
import json, sys, time
def hwm():  # this process's peak RSS (VmHWM is per address space: not inherited across exec, unlike ru_maxrss)
    return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) / 1024
from pathlib import Path
from curator.preprocess.stage import PreprocessStage
from curator.preprocess.config import PreprocessConfig
from curator.runner.stage import CaseEnv, Task
import curator.release.integrity  # store_sha256's lazy import: loaded before timing, as nnU-Net's imports are
raw, case, ws, interp = sys.argv[1:5]
cfg = PreprocessConfig(image_interpolation=interp)
env = CaseEnv(workspace=ws, sources={"bench": raw}, key_hex="00")
payload = {"source": "bench", "dataset": "CuratorBench", "modality": "CT", "image_path": f"imagesTr/{case}_0000.nii.gz",
           "image_channel": None, "label_paths": [f"labelsTr/{case}.nii.gz"], "label_keys": [""],
           "label_rejected": False, "encoding": "label_map",
           "terms": {str(v): [f"label_{v}"] for v in range(1, 118)}, "intensity_offset": 0.0, "spacing": None, "fixes": {}}
base = hwm()
t = time.perf_counter()
PreprocessStage.process(Task(case, payload, "x"), cfg, env)
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mb": hwm(),
                  "base_mb": base}))
"""


def _run(python: str, code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, float]:
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
             BLOSC_NTHREADS="1", **(env or {}))
    res = subprocess.run(["taskset", "-c", "0", python, "-c", code, *args], check=False, capture_output=True, text=True, env=e,
                         cwd=Path(__file__).resolve().parents[1])
    if res.returncode != 0:
        raise SystemExit(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """Median seconds over repeated runs; the highest peak memory and import baseline seen."""
    return {"seconds": statistics.median(r["seconds"] for r in runs), "peak_mb": max(r["peak_mb"] for r in runs),
            "base_mb": max(r["base_mb"] for r in runs)}


def _size(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())


def nnunet_plans(python: str, work: Path) -> Path:
    """nnU-Net's own fingerprint + plan, then the 3d_fullres spacing set to 3 × 1 × 1 (z, y, x)."""
    env = dict(os.environ, nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "nnunet_pre"),
               nnUNet_results=str(work / "nnunet_res"))
    bindir = Path(python).parent
    plans = work / "nnunet_pre" / "Dataset990_CuratorBench" / "nnUNetPlans.json"
    if not plans.exists():
        subprocess.run([bindir / "nnUNetv2_extract_fingerprint", "-d", "990", "-np", "1"], env=env, check=True,
                       capture_output=True)
        subprocess.run([bindir / "nnUNetv2_plan_experiment", "-d", "990"], env=env, check=True, capture_output=True)
    p = json.loads(plans.read_text())
    p["transpose_forward"], p["transpose_backward"] = [0, 1, 2], [0, 1, 2]
    p["configurations"]["3d_fullres"]["spacing"] = [3.0, 1.0, 1.0]
    plans.write_text(json.dumps(p, indent=1))
    return plans


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnunet-python", required=True)
    ap.add_argument("--work", default="/tmp/curator-bench")
    ap.add_argument("--big", action="store_true", help="add the 512 x 512 x 1000 CT")
    ap.add_argument("--cubic", action="store_true", help="also run curator with cubic image interpolation")
    ap.add_argument("--cases", nargs="*", help="only these cases (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool and case, interleaved; medians reported")
    a = ap.parse_args()
    work = Path(a.work)
    raw = build(work / "raw", big=a.big)
    plans = nnunet_plans(a.nnunet_python, work)
    out_nn = work / "nnunet_out"  # other cases' outputs are kept: patch_read.py and dataloader.py read them
    out_nn.mkdir(parents=True, exist_ok=True)
    rows = []
    for case in [c for c in cases(raw, a.big) if not a.cases or c in a.cases]:
        ws = work / f"ws_{case}"
        nns, cus = [], []
        for _ in range(a.repeat):  # interleaved, so both tools see the same machine load
            for f in (f"{case}.b2nd", f"{case}_seg.b2nd", f"{case}.pkl"):  # blosc2 refuses to overwrite
                (out_nn / f).unlink(missing_ok=True)
            nns.append(_run(a.nnunet_python, NNUNET_CASE, str(raw), str(plans), case, str(out_nn)))
            shutil.rmtree(ws, ignore_errors=True)
            cus.append(_run(sys.executable, CURATOR_CASE, str(raw), case, str(ws), "linear"))
        nn, cu = _median_run(nns), _median_run(cus)
        row = {"case": case, "nn_s": nn["seconds"], "nn_mb": nn["peak_mb"], "nn_base": nn["base_mb"],
               "cu_s": cu["seconds"], "cu_mb": cu["peak_mb"], "cu_base": cu["base_mb"],
               "ratios": [round(n["seconds"] / c["seconds"], 2) for n, c in zip(nns, cus, strict=True)],
               "nn_bytes": _size([out_nn / f"{case}.b2nd", out_nn / f"{case}_seg.b2nd"]),
               "cu_bytes": _size([ws / "stores" / f"{case}.zarr"])}
        if a.cubic and case != "big":
            shutil.rmtree(ws, ignore_errors=True)
            row["cu3_s"] = _run(sys.executable, CURATOR_CASE, str(raw), case, str(ws), "cubic")["seconds"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| case | nnU-Net s | curator s | speed-up | per-run speed-ups | nnU-Net peak MB | curator peak MB "
          "| nnU-Net MB on disk | curator MB on disk |" + (" curator cubic s |" if a.cubic else ""))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if a.cubic else ""))
    for r in rows:
        print(f"| {r['case']} | {r['nn_s']:.2f} | {r['cu_s']:.2f} | {r['nn_s'] / r['cu_s']:.1f}× "
              f"| {', '.join(f'{x:.1f}' for x in r['ratios'])} | {r['nn_mb']:.0f} "
              f"| {r['cu_mb']:.0f} | {r['nn_bytes'] / 1e6:.1f} | {r['cu_bytes'] / 1e6:.1f} |"
              + (f" {r.get('cu3_s', float('nan')):.2f} |" if a.cubic else ""))
    tn, tc = sum(r["nn_s"] for r in rows), sum(r["cu_s"] for r in rows)
    print(f"\ntotal time: nnU-Net {tn:.1f} s, curator {tc:.1f} s -> {tn / tc:.1f}x faster "
          f"(median per-case ratio {statistics.median(r['nn_s'] / r['cu_s'] for r in rows):.1f}x)")
    print(f"peak memory: max nnU-Net {max(r['nn_mb'] for r in rows):.0f} MB, max curator "
          f"{max(r['cu_mb'] for r in rows):.0f} MB; per case curator/nnU-Net "
          + ", ".join(f"{r['cu_mb'] / r['nn_mb']:.2f}" for r in rows))
    print(f"import baseline: nnU-Net {rows[0]['nn_base']:.0f} MB, curator {rows[0]['cu_base']:.0f} MB")
    nb, cb = sum(r["nn_bytes"] for r in rows), sum(r["cu_bytes"] for r in rows)
    print(f"total size: nnU-Net .b2nd {nb / 1e6:.1f} MB, curator stores {cb / 1e6:.1f} MB -> ratio {cb / nb:.2f}")


if __name__ == "__main__":
    main()
