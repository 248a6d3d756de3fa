"""Duplicate detection on a perturbation suite built from real volumes, beside two baselines.

Builds a pool of scans: every source scan, its perturbed copies
(:mod:`curator.testing.dedup_suite`), and scans that must stay apart (other real scans,
label maps read as images, synthetic different patients of one protocol, second
sequences of one patient). Runs curator's dedup (hash tiers → verification → groups) and
two baselines (SHA-256 of the file; imagehash pHash of the central axial slice), and prints

* recall: share of (source, copy) pairs that end up in one group;
* false pairs: pairs of different scans grouped together (and their rate among all such pairs);
* a per-perturbation recall table, and which tier proposed each found copy;
* the verification margin: lowest score of a true pair vs highest of a false candidate.

Usage::

    python benchmarks/dedup_eval.py [--data ../shared/data/real] [--sources ct_sm,mr_sm] [--out results.json]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.dedup.detect import DetectSettings, detect
from curator.dedup.features import HashSettings, ScanFeatures, scan_features
from curator.dedup.group import components
from curator.io.formats import read_volume
from curator.testing import dedup_suite
from curator.testing.convert import write_nrrd
from curator.testing.layouts import save_nifti
from curator.testing.perturb import second_sequence

# name -> (path under the real-data folder, modality); the perturbation sources
SOURCES = {
    "ct_sm": ("totalsegmentator/example_ct_sm.nii.gz", "CT"),
    "ct_dicom": ("totalsegmentator/example_ct_dicom", "CT"),
    "mr_sm": ("totalsegmentator/example_mr_sm.nii.gz", "MR"),
    "brain1": ("pyradiomics/brain1_image.nrrd", "MR"),
    "brain2": ("pyradiomics/brain2_image.nrrd", "MR"),
    "breast1": ("pyradiomics/breast1_image.nrrd", "MR"),
    "anatomical": ("monai/anatomical.nii", "MR"),
    "prostate": ("pyradiomics/prostate_phantom_subvolume.nrrd", "MR"),
    "emri": ("pydicom/emri_small.dcm", "MR"),
}
# distinct scans that are never perturbed (small fragments and label maps read as images)
OTHERS = {
    "ct_3slice": "dcmqi/ct-3slice", "ct_5slice": "pydicom/CT5N",
    "seg_ct_sm": "totalsegmentator/example_seg.nii.gz", "seg_mr_sm": "totalsegmentator/example_seg_mr.nii.gz",
    "seg_ct_dicom": "totalsegmentator/example_seg_dicom.nii.gz", "lab_brain1": "pyradiomics/brain1_label.nrrd",
    "lab_brain2": "pyradiomics/brain2_label.nrrd", "lab_breast1": "pyradiomics/breast1_label.nrrd",
    "lab_prostate": "pyradiomics/prostate_phantom_subvolume-label.nrrd", "lab_anatomical": "monai/anatomical_label.nii.gz",
    "lab_ct_3slice": "dcmqi/liver_seg.nrrd",
}
PHASH_RADIUS = 8  # baseline: central-slice pHashes within this many bits are "duplicates"
# A source counts as a *scan* (vs a fragment) when its RAS view has >= 64 voxels and >= 100 mm
# along both in-plane axes and >= 16 slices; decided from the geometry before any hashing.
SCAN_MIN_VOXELS, SCAN_MIN_FOV_MM, SCAN_MIN_SLICES = 64, 100.0, 16


def is_scan(g: Any) -> bool:
    from curator.dedup.canonical import ras_view

    _, r = ras_view(np.zeros(g.shape, dtype=np.uint8), g)
    return (min(r.shape[:2]) >= SCAN_MIN_VOXELS and r.shape[2] >= SCAN_MIN_SLICES
            and min(n * s for n, s in zip(r.shape[:2], r.spacing[:2], strict=True)) >= SCAN_MIN_FOV_MM)


@dataclass
class Item:
    name: str
    identity: str  # items with one identity are copies of one scan
    perturbation: str | None
    features: ScanFeatures
    file_sha: str
    slice_hash: Any


def _file_sha(g: Any, a: np.ndarray, tmp: Path, name: str) -> str:
    """SHA-256 of the copy as a dataset would ship it (NIfTI; NRRD for NRRD round trips)."""
    path = tmp / f"{name}.nrrd" if name.endswith("to_nrrd") else tmp / f"{name}.nii.gz"
    (write_nrrd if path.suffix == ".nrrd" else save_nifti)(path, a, g)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _central_phash(a: np.ndarray) -> Any:
    import imagehash
    from PIL import Image

    sl = np.asarray(a[:, :, a.shape[2] // 2], dtype=np.float64)
    lo, hi = float(sl.min()), float(sl.max())
    u8 = np.zeros(sl.shape, np.uint8) if hi <= lo else np.rint((sl - lo) / (hi - lo) * 255).astype(np.uint8)
    return imagehash.phash(Image.fromarray(u8.T))


def build_pool(data: Path, sources: list[str], tmp: Path, settings: HashSettings, log: Any
               ) -> tuple[list[Item], float, set[str]]:
    items: list[Item] = []
    scans: set[str] = set()
    t_feat = 0.0

    def add(name: str, identity: str, pert: str | None, g: Any, a: np.ndarray, original: Path | None = None,
            modality: str | None = None) -> None:
        nonlocal t_feat
        t0 = time.perf_counter()
        f = scan_features(a, g, settings)
        t_feat += time.perf_counter() - t0
        sha = (hashlib.sha256(b"".join(p.read_bytes() for p in sorted(original.rglob("*")) if p.is_file())
                              if original.is_dir() else original.read_bytes()).hexdigest()
               if original is not None else _file_sha(g, a, tmp, name))
        items.append(Item(name, identity, pert, f, sha, _central_phash(a)))

    for src in sources:
        rel, modality = SOURCES[src]
        v = read_volume(data / rel, role="image")
        if is_scan(v.geometry):
            scans.add(src)
        add(src, src, None, v.geometry, v.array, data / rel, modality)
        for pname, make in dedup_suite.perturbations(v.geometry, v.array, modality, tmp / src).items():
            g2, a2 = make()
            add(f"{src}:{pname}", src, pname, g2, a2, None, modality)
        log(f"  {src}: {len(items)} items so far")
    for name, rel in OTHERS.items():
        role = "image" if not name.startswith(("seg_", "lab_")) else "label"
        v = read_volume(data / rel, role=role)
        add(name, name, None, v.geometry, v.array, data / rel, "CT" if name.startswith("ct_") else None)
    mr = read_volume(data / SOURCES["mr_sm"][0], role="image")
    add("mr_sm:second_sequence", "mr_sm_t2", None, mr.geometry, second_sequence(mr.array, seed=3), None, "MR")
    for modality in ("CT", "MR"):
        for name, ((g, a), lab) in dedup_suite.phantom_patients(6 if modality == "CT" else 3, modality).items():
            add(name, name, None, g, a, None, modality)
            if modality == "MR":
                add(f"{name}:t2", f"{name}_t2", None, g, dedup_suite.t2_of_phantom(a, lab), None, "MR")
    # five more MR patients on the demo's follow-up protocol (DemoLiverMR: 5×5×8 mm, no lesions), whose
    # hashes lie within a few bits of each other: verification alone keeps them apart
    demo_mr = dedup_suite.phantom_patients(5, "MR", seed0=760, shape=(64, 56, 32), spacing=(5.0, 5.0, 8.0),
                                           orientation="RAS", lesions=False)
    for name, ((g, a), _) in demo_mr.items():
        add(name, name, None, g, np.rint(a).astype(np.int16), None, "MR")
    return items, t_feat, scans


def _groups_from_pairs(names: list[str], pairs: list[tuple[str, str]]) -> dict[str, int]:
    gid = {n: i for i, n in enumerate(names)}
    for k, comp in enumerate(components(names, pairs)):
        for n in comp:
            gid[n] = len(names) + k
    return gid


def evaluate(items: list[Item], gid: dict[str, int], only: set[str] | None = None) -> dict[str, Any]:
    """Recall over the copies (of the sources in ``only``, default all); false pairs over all items."""
    by_name = {it.name: it for it in items}
    per: dict[str, list[bool]] = defaultdict(list)
    per_source: dict[str, list[bool]] = defaultdict(list)
    missed = []
    for it in items:
        if it.perturbation is not None and (only is None or it.identity in only):
            ok = gid[it.name] == gid[it.identity]
            per[it.perturbation].append(ok)
            per_source[it.identity].append(ok)
            if not ok:
                missed.append(it.name)
    false = [(a.name, b.name) for a, b in itertools.combinations(items, 2)
             if a.identity != b.identity and gid[a.name] == gid[b.name]]
    distinct_pairs = sum(1 for a, b in itertools.combinations(items, 2) if a.identity != b.identity)
    found = [x for v in per.values() for x in v]
    return {"recall": float(np.mean(found)), "found": int(np.sum(found)), "copies": len(found),
            "per_perturbation": {k: float(np.mean(v)) for k, v in per.items()},
            "per_source": {k: float(np.mean(v)) for k, v in per_source.items()}, "missed": missed,
            "false_pairs": len(false),
            "false_pair_rate": len(false) / max(distinct_pairs, 1), "false_examples": false[:10],
            "n_items": len(by_name)}


def isolated(items: list[Item], settings: DetectSettings, only: set[str] | None = None) -> dict[str, Any]:
    """Recall with each copy judged alone beside its original — as when another dataset holds one
    copy. In the pool a copy also counts as found when it reaches the original through other
    copies of it, which a real collection rarely holds."""
    orig = {it.identity: it for it in items if it.perturbation is None and it.name == it.identity}
    per: dict[str, list[bool]] = defaultdict(list)
    missed = []
    for it in items:
        if it.perturbation is None or it.identity not in orig or (only is not None and it.identity not in only):
            continue
        found = detect({"original": orig[it.identity].features, "copy": it.features}, settings)
        ok = any(p.accepted for p in found)
        per[it.perturbation].append(ok)
        if not ok:
            missed.append(f"{it.name} ({'rejected' if found else 'no candidate'})")
    hits = [x for v in per.values() for x in v]
    return {"recall": float(np.mean(hits)) if hits else float("nan"), "found": int(np.sum(hits)),
            "copies": len(hits), "per_perturbation": {k: float(np.mean(v)) for k, v in per.items()},
            "missed": missed}


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(args.data)
    sources = args.sources.split(",") if args.sources else list(SOURCES)
    settings = DetectSettings()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        items, t_feat, scans = build_pool(data, sources, Path(d), HashSettings(), lambda m: print(m, flush=True))
        t_pool = time.perf_counter() - t0
    feats = {it.name: it.features for it in items}
    t0 = time.perf_counter()
    pairs = detect(feats, settings)
    t_detect = time.perf_counter() - t0
    names = [it.name for it in items]
    ours = _groups_from_pairs(names, [(p.a, p.b) for p in pairs if p.accepted])
    by_sha: dict[str, list[str]] = defaultdict(list)
    for it in items:
        by_sha[it.file_sha].append(it.name)
    sha = _groups_from_pairs(names, [(g[0], n) for g in by_sha.values() for n in g[1:]])
    ph = _groups_from_pairs(names, [(a.name, b.name) for a, b in itertools.combinations(items, 2)
                                    if a.slice_hash - b.slice_hash <= PHASH_RADIUS])
    ident = {it.name: it.identity for it in items}
    tiers: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    true_m, false_m = [], []
    src = {it.name: it for it in items}
    for p in pairs:
        a, b = src[p.a], src[p.b]
        same = ident[p.a] == ident[p.b]
        if p.match is not None:
            (true_m if same else false_m).append({"a": p.a, "b": p.b, "tiers": sorted(p.candidate.tiers),
                                                  **p.match.to_dict(), "accepted": p.accepted})
        copy = a if a.perturbation else b
        if same and copy.perturbation and (a.perturbation is None or b.perturbation is None):
            for t in p.candidate.tiers:
                tiers[copy.perturbation][t] += 1
    return {"ours": evaluate(items, ours), "sha256": evaluate(items, sha), "phash": evaluate(items, ph),
            "scans": sorted(scans), "ours_scans": evaluate(items, ours, scans), "sha256_scans": evaluate(items, sha, scans),
            "phash_scans": evaluate(items, ph, scans),
            "isolated": isolated(items, settings), "isolated_scans": isolated(items, settings, scans),
            "tiers": {k: dict(v) for k, v in tiers.items()}, "true_candidates": true_m, "false_candidates": false_m,
            "seconds": {"pool": round(t_pool, 1), "features": round(t_feat, 1), "detect": round(t_detect, 1)},
            "candidates": len(pairs), "sources": sources, "settings": repr(settings)}


def report(r: dict[str, Any]) -> str:
    lines = [(f"pool: {r['ours']['n_items']} volumes; {r['ours']['copies']} perturbed copies of {len(r['sources'])} "
             f"sources, of which scans: {', '.join(r['scans'])} (the rest are fragments: < {SCAN_MIN_VOXELS} voxels "
             f"or < {SCAN_MIN_FOV_MM:g} mm in-plane, or < {SCAN_MIN_SLICES} slices); "
             f"{r['candidates']} candidate pairs"), "",
             "| method | recall, copies of scans | recall, all copies | false pairs | false-pair rate |",
             "|---|---|---|---|---|"]
    for k, label in (("ours", "curator dedup"), ("sha256", "SHA-256 of the file"),
                     ("phash", f"pHash of central axial slice (<= {PHASH_RADIUS} bits)")):
        e, es = r[k], r[f"{k}_scans"]
        lines.append(f"| {label} | {es['recall']:.3f} ({es['found']}/{es['copies']}) | {e['recall']:.3f} "
                     f"({e['found']}/{e['copies']}) | {e['false_pairs']} | {e['false_pair_rate']:.2e} |")
    iso, iso_s = r["isolated"], r["isolated_scans"]
    lines.append(f"| curator dedup, each copy alone with its original | {iso_s['recall']:.3f} "
                 f"({iso_s['found']}/{iso_s['copies']}) | {iso['recall']:.3f} ({iso['found']}/{iso['copies']}) | – | – |")
    lines += ["", ("| perturbation | target | dedup (scans) | dedup (all) | dedup alone (scans) | dedup alone (all) "
              "| SHA-256 (all) | pHash slice (all) | tiers that proposed the copy |"), "|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(r["ours"]["per_perturbation"]):
        t = ", ".join(f"{k} {v}" for k, v in sorted(r["tiers"].get(p, {}).items()))
        lines.append(f"| {p} | {dedup_suite.target_of(p)} | {r['ours_scans']['per_perturbation'].get(p, float('nan')):.2f} | "
                     f"{r['ours']['per_perturbation'][p]:.2f} | "
                     f"{iso_s['per_perturbation'].get(p, float('nan')):.2f} | {iso['per_perturbation'][p]:.2f} | "
                     f"{r['sha256']['per_perturbation'][p]:.2f} | "
                     f"{r['phash']['per_perturbation'][p]:.2f} | {t} |")
    lines.append("")
    lines.append("recall per source: " + ", ".join(f"{k} {v:.2f}" for k, v in r["ours"]["per_source"].items()))
    lines.append(f"missed copies: {r['ours']['missed']}")
    lines.append(f"missed copies, each alone with its original: {iso['missed']}")
    tm = [m for m in r["true_candidates"] if m["tiers"] != ["exact"] and m["accepted"]]
    rejected = [m for m in r["true_candidates"] if not m["accepted"]]
    fm = r["false_candidates"]
    if tm:
        lines.append("")
        lines.append(f"verification margin: accepted true pairs ({len(tm)}) score >= {min(m['score'] for m in tm):.3f}, "
                     f"detail >= {min(m['detail'] for m in tm):.3f}; false candidates ({len(fm)}) score <= "
                     f"{max((m['score'] for m in fm), default=0):.3f}, detail <= "
                     f"{max((m['detail'] for m in fm), default=0):.3f}; true candidates rejected: {len(rejected)} "
                     f"(most are then joined through other copies)")
        by_tier: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for m in r["true_candidates"] + fm:
            for t in m["tiers"]:
                by_tier[t][0 if m in r["true_candidates"] else 1] += 1
        lines.append("compared candidates by tier (true / false): "
                     + ", ".join(f"{t} {v[0]} / {v[1]}" for t, v in sorted(by_tier.items())))
    if r["ours"]["false_examples"]:
        lines.append(f"false pairs: {r['ours']['false_examples']}")
    lines.append(f"seconds: {r['seconds']}")
    return "\n".join(lines)


def default_data() -> Path:
    """$CURATOR_REAL_DATA, else the first ``shared/data/real`` above this file."""
    if os.environ.get("CURATOR_REAL_DATA"):
        return Path(os.environ["CURATOR_REAL_DATA"])
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data" / "real").is_dir():
            return parent / "shared" / "data" / "real"
    return Path("../shared/data/real")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(default_data()), help="real sample data ($CURATOR_REAL_DATA)")
    ap.add_argument("--sources", default="", help="comma-separated subset of " + ",".join(SOURCES))
    ap.add_argument("--out", default="", help="write the full results (incl. every candidate's scores) as JSON")
    args = ap.parse_args()
    r = run(args)
    print(report(r))
    if args.out:
        Path(args.out).write_text(json.dumps(r, indent=1, default=str))


if __name__ == "__main__":
    main()
