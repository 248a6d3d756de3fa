"""Scale benchmark: a synthetic release of 1,000,000 cases and 20,000,000 label rows.

Phases (each in its own process, so each peak memory is its own):

1. ``generate``: a workspace with the ``cases``, ``labels`` and ``duplicates`` tables of 72
   synthetic datasets, written chunk by chunk with ``TableWriter`` (streaming row groups);
2. ``build``: ``build_release`` as ``curator release`` runs it — splits (union-find over
   patients, studies and duplicate groups, leakage check) and the dataset card; untouched
   tables are copied, the card aggregates the labels table through lazy scans — except its
   freshness check (no stage ran on source files here: the tables are generated);
3. ``query``: typical queries through ``Release.sql`` (DuckDB, read-only), first run and best of 3;
4. ``verify``: ``verify_release`` re-hashes every file.

Anchors: queries against the 1 s target of issue 8; peak memory of each phase against the
in-memory (Arrow) size of the labels table — what a build that loads it would need at least.

    python benchmarks/release_scale.py --cases 1000000 --labels-per-case 20 --out /tmp/scale

Run it again with ``--labels-per-case 5`` to see that the build's peak memory does not grow
with the labels table. Every phase prints the machine's load average: other processes on the
machine slow the timings down, never the other way round.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa

N_DATASETS = 72
TERMS = ["liver", "spleen", "kidney_left", "kidney_right", "pancreas", "aorta", "stomach", "gallbladder",
         "esophagus", "duodenum", "colon", "small_bowel", "urinary_bladder", "prostate", "heart", "lung_left",
         "lung_right", "brain", "adrenal_gland_left", "adrenal_gland_right", "inferior_vena_cava",
         "portal_vein", "kidney_tumor", "liver_tumor", "pancreas_tumor", "lung_nodule", "trachea"]
TERMS += [f"structure_{i:03d}" for i in range(120 - len(TERMS))]
QUERIES = {
    "filter term+modality+qc (count)":
        "select count(*) from labels where term_id = 'liver' and modality = 'CT' and qc_decision = 'include'",
    "filter term+modality+qc (rows)":
        "select case_id, volume_ml from labels where term_id = 'kidney_left' and modality = 'MR' "
        "and qc_decision <> 'exclude'",
    "cases by dataset": "select dataset, count(*) as n from cases group by dataset order by dataset",
    "labels by dataset and term": "select dataset, term_id, count(*) from labels group by all",
    "train cases with an included liver (join splits)":
        "select count(distinct l.case_id) from labels l join splits s using (case_id) "
        "where s.split = 'train' and l.term_id = 'liver' and l.qc_decision = 'include'",
    "age by sex, KiTS-like dataset": "select sex, count(*), avg(age_years) from cases "
                                     "where dataset = 'DS06' and sex is not null group by sex",
}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _plan(n_cases: int, k: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    w = rng.pareto(1.2, N_DATASETS) + 0.05
    counts = np.maximum(100, np.floor(w / w.sum() * n_cases)).astype(int)
    counts[np.argmax(counts)] += n_cases - counts.sum()
    if counts.min() < 100:  # the largest dataset paid for the others' minimum of 100 cases
        raise SystemExit(f"--cases {n_cases} is too few for {N_DATASETS} datasets of at least 100 cases each "
                         "(20,000 is enough)")
    mods = ["CT"] * 50 + ["MR"] * 18 + ["PET"] * 4
    return [{"name": f"DS{d:02d}", "n": int(counts[d]), "modality": mods[d],
             "region": ["abdomen", "thorax", "head", "pelvis", "whole body"][d % 5],
             "terms": sorted(rng.choice(TERMS, size=k, replace=False).tolist()),
             "official_test": d % 9 == 0, "metadata": d % 3 == 0,
             "licence": ["CC-BY-4.0", "CC-BY-NC-SA-4.0", "CC-BY-SA-4.0", "unknown (registration)"][d % 4]}
            for d in range(N_DATASETS)]


def _chunk(ds: dict[str, Any], start: int, stop: int, rng: np.random.Generator) -> tuple[dict[str, Any], pa.Table]:
    idx = np.arange(start, stop)
    n = len(idx)
    case_ids = np.char.add(f"{ds['name']}__", np.char.zfill(idx.astype(str), 7)).astype(object)
    patient = np.char.add(f"{ds['name']}_p", (idx - (idx % 10 == 1)).astype(str)).astype(object)  # 10 %: 2 cases
    test = ds["official_test"] & (idx >= ds["n"] * 0.9)
    cases = {
        "case_id": case_ids, "dataset": [ds["name"]] * n, "source": [ds["name"]] * n,
        "source_case": idx.astype(str).astype(object), "patient_id": patient,
        "study_key": np.char.add("s_", case_ids.astype(str)).astype(object), "modality": [ds["modality"]] * n,
        "region": [ds["region"]] * n, "official_split": np.where(test, "test", "train").astype(object),
        "has_image": np.ones(n, bool), "has_label": np.ones(n, bool), "label_only": np.zeros(n, bool),
        "label_status": ["ok"] * n, "n_voxels": rng.integers(10_000_000, 80_000_000, n),
        "image_sha256": [f"{x:064x}" for x in rng.integers(0, 2**62, n)],
        "sex": np.where(rng.random(n) < 0.5, "F", "M").astype(object) if ds["metadata"] else None,
        "age_years": rng.normal(58, 12, n).round(0) if ds["metadata"] else None,
    }
    cases = {k: v for k, v in cases.items() if v is not None}
    k = len(ds["terms"])
    u = rng.random(n * k)
    labels = pa.table({
        "case_id": np.repeat(case_ids, k), "dataset": pa.array([ds["name"]] * (n * k)).dictionary_encode(),
        "term_id": np.tile(np.array(ds["terms"], dtype=object), n),
        "term": np.tile(np.char.replace(np.array(ds["terms"]), "_", " ").astype(object), n),
        "origin": pa.array(["original"] * (n * k)), "layer": pa.array(["original"] * (n * k)),
        "derived": np.zeros(n * k, bool), "annotated": np.ones(n * k, bool), "present": u < 0.95,
        "voxels": rng.integers(0, 2_000_000, n * k), "volume_ml": rng.gamma(2.0, 80.0, n * k),
        "modality": pa.array([ds["modality"]] * (n * k)),
        "qc_decision": np.where(u < 0.93, "include", np.where(u < 0.98, "exclude", "truncated")).astype(object),
    })
    return cases, labels


def generate(out: Path, n_cases: int, k: int, seed: int) -> dict[str, Any]:
    import yaml

    from curator.release.tables import TableWriter
    from curator.schema import to_arrow
    from curator.workspace import Workspace

    rng = np.random.default_rng(seed)
    plan = _plan(n_cases, k, rng)
    ws = Workspace(out / "workspace").init()
    reg = out / "registry"
    reg.mkdir(parents=True, exist_ok=True)
    arrow_bytes = 0
    t0 = time.perf_counter()
    with TableWriter("cases", ws.table_path("cases")) as wc, TableWriter("labels", ws.table_path("labels")) as wl:
        for ds in plan:
            for start in range(0, ds["n"], 50_000):
                cases, labels = _chunk(ds, start, min(ds["n"], start + 50_000), rng)
                wc.write(cases)
                arrow_bytes += wl.conform(labels).nbytes
                wl.write(labels)
            (reg / f"{ds['name']}.yaml").write_text(yaml.safe_dump({
                "name": ds["name"], "version": "1", "modality": ds["modality"], "region": ds["region"],
                "licence": ds["licence"], "citation_key": ds["name"],
                "citation": f"@misc{{{ds['name']}, title={{synthetic dataset {ds['name']}}}, year={{2026}}}}",
                "layout": [{"image": "{case}.nii.gz", "label": "{case}_seg.nii.gz"}],
                "labels": {"encoding": "label_map", "values": {i + 1: t for i, t in enumerate(ds["terms"])}}}))
    # cross-dataset duplicates: 1 % of cases paired with a case of the next dataset
    pairs = []
    for a, b in itertools.pairwise(plan):
        for i in range(0, min(a["n"], b["n"]), 100):
            g = f"g_{a['name']}_{i}"
            pairs += [{"group_id": g, "case_id": f"{a['name']}__{i + 5:07d}", "dataset": a["name"], "kept": True,
                       "kept_case_id": f"{a['name']}__{i + 5:07d}", "group_size": 2, "reason": "synthetic"},
                      {"group_id": g, "case_id": f"{b['name']}__{i + 7:07d}", "dataset": b["name"], "kept": False,
                       "kept_case_id": f"{a['name']}__{i + 5:07d}", "group_size": 2, "reason": "synthetic"}]
    pairs = [p for p in pairs if int(p["case_id"].split("__")[1]) < next(d["n"] for d in plan
                                                                         if d["name"] == p["dataset"])]
    ws.write_table("duplicates", to_arrow("duplicates", pairs))
    (out / "pipeline.yaml").write_text(yaml.safe_dump({
        "workspace": "workspace", "registry": ["registry"],
        "sources": [{"dataset": d["name"], "root": "raw"} for d in plan],
        "release": {"root": "releases", "collection": "scale", "version": "1.0.0"}}))
    (out / "raw").mkdir(exist_ok=True)
    return {"seconds": time.perf_counter() - t0, "cases": wc.rows, "labels": wl.rows,
            "duplicate_rows": len(pairs), "labels_arrow_mb": arrow_bytes / 2**20}


def build(out: Path) -> dict[str, Any]:
    from curator.config import PipelineConfig
    from curator.release.build import build_release
    from curator.runner.context import Context

    t0 = time.perf_counter()
    # The generated tables stand in for stages that never ran on source files (there are none), so
    # the release's freshness check (release_stale: "ingest has not run", ...) is left out.
    with mock.patch("curator.release.build.check_fresh"):
        rel = build_release(Context(PipelineConfig.load(out / "pipeline.yaml")))
    info = json.loads((rel / "release.json").read_text())
    return {"seconds": time.perf_counter() - t0, "counts": info["counts"], "splits": {
        k: info["splits"][k] for k in ("train", "val", "test")},
        "bytes": {p.name: p.stat().st_size for p in sorted(rel.glob("*.parquet"))}}


def query(out: Path) -> dict[str, Any]:
    from curator.release.query import Release

    rel = Release(out / "releases" / "scale" / "1.0.0")
    res: dict[str, Any] = {}
    for name, sql in QUERIES.items():
        times, cpu, rows = [], [], 0
        for _ in range(4):
            t0, c0 = time.perf_counter(), time.process_time()
            rows = len(rel.sql(sql).fetchall())
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)  # all DuckDB threads: load-independent work
        res[name] = {"first_s": times[0], "best_s": min(times[1:]), "cpu_s": min(cpu[1:]), "rows": rows}
    return res


def verify(out: Path) -> dict[str, Any]:
    from curator.release.integrity import verify_release

    t0 = time.perf_counter()
    rep = verify_release(out / "releases" / "scale" / "1.0.0")
    return {"seconds": time.perf_counter() - t0, "ok": rep.ok, "files": rep.checked_files}


def _phase(args: argparse.Namespace, phase: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--phase", phase, "--out", str(args.out), "--cases", str(args.cases),
           "--labels-per-case", str(args.labels_per_case), "--seed", str(args.seed)]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if res.returncode != 0:  # the phase's own traceback, not just its exit status
        raise SystemExit(f"phase {phase} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=1_000_000)
    ap.add_argument("--labels-per-case", type=int, default=20, help="terms annotated per case (<= 120)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/curator-release-scale"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phase", choices=["generate", "build", "query", "verify"])
    args = ap.parse_args()
    if args.phase:
        fn = {"generate": lambda: generate(args.out, args.cases, args.labels_per_case, args.seed), "build": lambda: build(args.out),
              "query": lambda: query(args.out), "verify": lambda: verify(args.out)}[args.phase]
        res = fn()
        res["peak_rss_mb"] = peak_mb()
        print(json.dumps(res))
        return
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    results: dict[str, Any] = {}
    for p in ("generate", "build", "query", "verify"):
        results[p] = _phase(args, p)
        results[p]["load_avg_1min"] = os.getloadavg()[0]
    anchor = results["generate"]["labels_arrow_mb"]
    print(json.dumps(results, indent=1))
    import duckdb
    import polars

    print(f"\npython {platform.python_version()}, duckdb {duckdb.__version__}, polars {polars.__version__}, "
          f"pyarrow {pa.__version__}, {os.cpu_count()} CPUs")
    print(f"{results['generate']['cases']} cases, {results['generate']['labels']} label rows; "
          f"labels table in memory (anchor): {anchor:.0f} MB")
    for p in ("generate", "build", "query", "verify"):
        r = results[p]
        print(f"{p:>9}: peak RSS {r['peak_rss_mb']:.0f} MB = {r['peak_rss_mb'] / anchor:.2f} x anchor"
              + (f", {r['seconds']:.1f} s" if "seconds" in r else "") + f" (load {r['load_avg_1min']:.1f})")
    for name, q in results["query"].items():
        if isinstance(q, dict) and "best_s" in q:
            print(f"  {name:<50} first {q['first_s']:.3f} s, best {q['best_s']:.3f} s "
                  f"= {q['best_s'] / 1.0:.2f} x the 1 s target; CPU {q['cpu_s']:.3f} s ({q['rows']} rows)")


if __name__ == "__main__":
    main()
