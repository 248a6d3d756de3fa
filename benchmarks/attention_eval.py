"""Attention-map error detection on simulated ensembles built from real label maps.

    python benchmarks/attention_eval.py [--kits-cases 20] [--tau 0.3 0.45] [--conf 1 4] [--structures paper]

For every real label map (../shared/data/real: the two TotalSegmentator example
segmentations, KiTS23 segmentations with the kidney label split into left and right by
position), three ensemble members ("architectures") predict every structure (by default
AbdomenAtlas-8K's target organs, which its Table 1 evaluates: spleen, kidneys, gallbladder,
liver, stomach, pancreas, aorta, IVC). Member ``m``
outputs ``sigmoid((d + b + n) / tau_m)``: ``d`` the signed distance to the true surface
(voxels, surface half-way between voxels), ``b`` a per-(member, structure) boundary bias
~ N(0, 0.35) voxels, ``n`` smooth noise (σ 2 voxels, sd 0.3 voxels) and ``tau_m`` the
member's own transition width, uniform in ``--tau`` (0.3–0.45 voxels, the range that
``benchmarks/attention_tau_fit.py`` measures on the three demo networks: a 10–90 %
transition over 1.3–2 voxels).

In each trial one error of a realistic kind (AbdomenAtlas-8K Fig. 5) is planted:

* ``missed_cavity``  — an interior ball (6–12 mm) of an organ is left out (false negative);
* ``missed_part``    — the far 12–22 % of an organ along its long axis is left out (an
                       enlarged part, e.g. a pancreas tail swollen by a tumour);
* ``leakage``        — an organ's label spills 4–10 mm into its neighbour (false positive);
* ``wrong_side``     — a paired organ's label is given to the contralateral organ.

The same site is simulated with 1, 2 and 3 of the members making the mistake. A wrong
member's logit in the region is ``∓a`` plus smooth noise (sd 0.5), ``a`` uniform in
``--conf`` (1–4: probabilities 0.02–0.27 for a miss, 0.73–0.98 for a false label), so
confident errors happen too. With one wrong member the ensemble mean is still right: any
attention there is a false alarm. With three, only uncertainty and overlap can reveal the
error. Each map is also simulated clean (no planted error) to count false alarms.

The attention map is computed exactly as the pseudolabel stage does
(:func:`curator.pseudolabel.core.attention_reference`, AbdomenAtlas-8K's published
thresholds 0.1 / 0.05, erosion then dilation ×2) and scored with
:func:`curator.pseudolabel.evaluate.detection_case`: an error region is a connected
component of pseudo label XOR truth (one-voxel jitter removed, >= 0.5 ml); it is detected
when attention touches it; an attention region is a true alarm when it touches an error.

Reported per error kind: sensitivity and precision when 2 of 3 members err (the paper's
premise: architectures disagree on errors), when all 3 err, the false alarms when 1 errs,
and the mixture when each member errs independently with probability ``q`` (weights
``P(k wrong | k >= 1)``, k = 1..3; errors shared by all members get likelier as q grows).
Targets (AbdomenAtlas-8K Table 1, volume level): sensitivity >= 0.93, precision >= 0.81.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curator.pseudolabel.core import AttentionParams, attention_reference, ensemble_stats
from curator.pseudolabel.evaluate import Detection, detection_case

REAL = Path(os.environ.get("CURATOR_REAL_DATA", "/work/shared/data/real"))
KINDS = ("missed_cavity", "missed_part", "leakage", "wrong_side")
RULES = ("every_region", "regions_ge_0.5ml")  # which attention regions count as alarms
# AbdomenAtlas-8K's target organs (its Table 1 evaluates attention on these); ``--structures all``
# adds the thin ones TotalSegmentator also labels and the KiTS tumour.
PAPER = ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas", "aorta",
         "inferior_vena_cava"]
EXTRA = ["duodenum", "adrenal_gland_right", "adrenal_gland_left", "esophagus", "kidney_tumor"]


def load_maps(kits_cases: int, keep: list[str]) -> list[tuple[str, dict[str, np.ndarray], tuple[float, ...]]]:
    """(name, {structure: mask}, spacing) for every usable real label map."""
    out = []
    cmap = json.loads((REAL / "totalsegmentator" / "class_map.json").read_text())["total"]
    for f in ("example_seg.nii.gz", "example_seg_dicom.nii.gz"):
        img = nib.as_closest_canonical(nib.load(REAL / "totalsegmentator" / f))
        lab = np.asarray(img.dataobj).astype(np.int32)
        sp = tuple(float(x) for x in img.header.get_zooms()[:3])
        if f == "example_seg_dicom.nii.gz":  # 0.98 mm in-plane: halve for speed
            lab, sp = lab[::2, ::2], (sp[0] * 2, sp[1] * 2, sp[2])
        masks = {n: lab == int(k) for k, n in cmap.items() if n in keep and (lab == int(k)).sum() > 50}
        out.append((f"totalseg/{f}", masks, sp))
    for case in sorted((REAL / "kits23" / "dataset").iterdir())[:kits_cases]:
        img = nib.as_closest_canonical(nib.load(case / "segmentation.nii.gz"))
        lab = np.asarray(img.dataobj).astype(np.int16)
        zooms = [float(x) for x in img.header.get_zooms()[:3]]
        step = [max(1, round(1.6 / z)) for z in zooms]  # ~1.6 mm for speed
        lab = lab[:: step[0], :: step[1], :: step[2]]
        sp = tuple(z * s for z, s in zip(zooms, step, strict=True))
        # sides from the components of kidney + masses. The organ includes its masses, as
        # AbdomenAtlas-8K's organ labels do (Fig. 5b: a tumour-enlarged pancreas tail is pancreas);
        # with the tumour as its own structure (--structures all) the kidney keeps KiTS's hole
        kidney = lab > 0
        carve = "kidney_tumor" in keep
        cc, n = ndimage.label(kidney)
        sizes = ndimage.sum(kidney, cc, range(1, n + 1))
        masks: dict[str, np.ndarray] = {"kidney_left": np.zeros_like(kidney), "kidney_right": np.zeros_like(kidney)}
        mid = lab.shape[0] / 2
        for i in np.argsort(sizes)[::-1][:4]:
            comp = cc == i + 1
            if sizes[i] < 200:
                continue
            side = "kidney_right" if np.argwhere(comp)[:, 0].mean() > mid else "kidney_left"  # RAS: +x = right
            masks[side] |= comp & (lab != 2) if carve else comp
        masks = {k: v for k, v in masks.items() if v.sum() > 200}
        if carve and (lab == 2).sum() > 200:
            masks["kidney_tumor"] = lab == 2
        out.append((f"kits23/{case.name}", masks, sp))
    return out


def crop_to_labels(masks: dict[str, np.ndarray], margin: int = 10) -> dict[str, np.ndarray]:
    """Every mask cut to the union's bounding box + ``margin`` voxels (the rest is background)."""
    union = np.any(list(masks.values()), axis=0)
    box = ndimage.find_objects(union.astype(np.uint8))[0]
    sl = tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(box, union.shape, strict=True))
    return {k: np.ascontiguousarray(v[sl]) for k, v in masks.items()}


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance (voxels) to the surface half-way between voxels: +0.5 on the first voxel
    inside, -0.5 on the first outside."""
    return (np.where(mask, ndimage.distance_transform_edt(mask), -ndimage.distance_transform_edt(~mask))
            - np.where(mask, 0.5, -0.5)).astype(np.float32)


def smooth_noise(shape: tuple[int, ...], sd: float, rng: np.random.Generator, sigma: float = 2.0) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), sigma)
    return n * (sd / max(float(n.std()), 1e-6))


def member(sdf: np.ndarray, tau: float, rng: np.random.Generator) -> np.ndarray:
    """One member's probability of one structure (see the module docstring)."""
    z = (sdf + float(rng.normal(0, 0.35)) + smooth_noise(sdf.shape, 0.3, rng)) / tau
    return (1 / (1 + np.exp(-np.clip(z, -30, 30)))).astype(np.float32)


def plant(kind: str, masks: dict[str, np.ndarray], spacing: tuple[float, ...], rng: np.random.Generator
          ) -> tuple[str, np.ndarray, bool] | None:
    """(structure, region, is_false_positive) of one planted error, or None if impossible here."""
    names = sorted(masks, key=lambda n: -int(masks[n].sum()))
    if kind == "missed_cavity":
        for n in names:
            d = ndimage.distance_transform_edt(masks[n], sampling=spacing)
            r = float(rng.uniform(6, 12))
            if d.max() > r + 3:
                c = np.argwhere(d >= r + 2)
                c = c[rng.integers(len(c))]
                idx = np.indices(d.shape).astype(np.float32)
                dist = np.sqrt(sum(((idx[a] - c[a]) * spacing[a]) ** 2 for a in range(3)))
                return n, (dist <= r) & masks[n], False
    if kind == "missed_part":
        for n in names:
            pts = np.argwhere(masks[n]) * np.asarray(spacing)
            if len(pts) < 500:
                continue
            centred = pts - pts.mean(0)
            axis = np.linalg.svd(centred[:: max(1, len(pts) // 5000)], full_matrices=False)[2][0]
            proj = centred @ axis
            cut = np.quantile(proj, float(rng.uniform(0.78, 0.88)))
            region = np.zeros_like(masks[n])
            sel = np.argwhere(masks[n])[proj > cut]
            region[tuple(sel.T)] = True
            return n, region, False
    if kind == "leakage":
        pairs = []
        for a in names:
            grown = ndimage.binary_dilation(masks[a], iterations=2)
            pairs += [(a, b) for b in names if b != a and (grown & masks[b]).sum() > 30]
        if pairs:
            a, b = pairs[rng.integers(len(pairs))]
            depth = float(rng.uniform(4, 10))
            d = ndimage.distance_transform_edt(~masks[a], sampling=spacing)
            region = masks[b] & (d <= depth)
            if region.sum() > 30:
                return a, region, True
    if kind == "wrong_side":
        for n in names:
            other = n.replace("left", "right") if "left" in n else n.replace("right", "left")
            if other != n and other in masks and masks[other].sum() > 200:
                return n, masks[other].copy(), True
    return None


def simulate(sdfs: dict[str, np.ndarray], planted: tuple[str, np.ndarray, bool] | None, n_wrong: int,
             tau: tuple[float, float], conf: tuple[float, float], rng: np.random.Generator
             ) -> dict[str, list[np.ndarray]]:
    """Three members' probabilities per structure; ``n_wrong`` of them make the planted error."""
    taus = rng.uniform(*tau, 3)
    members = {n: [member(s, float(taus[m]), rng) for m in range(3)] for n, s in sdfs.items()}
    if planted and n_wrong:
        n, region, fp = planted
        blend = ndimage.gaussian_filter(region.astype(np.float32), 0.7)
        for m in sorted(rng.choice(3, n_wrong, replace=False).tolist()):
            logit = float(rng.uniform(*conf)) + smooth_noise(region.shape, 0.5, rng)
            p_err = 1 / (1 + np.exp(-logit if fp else logit))
            members[n][m] = (members[n][m] * (1 - blend) + p_err * blend).astype(np.float32)
    return members


def score(masks: dict[str, np.ndarray], members: dict[str, list[np.ndarray]], sp: tuple[float, ...],
          planted: tuple[str, np.ndarray, bool] | None) -> tuple[Detection, Detection, tuple[int, int]]:
    """Case-level detection counts (every attention region an alarm; only regions >= 0.5 ml, the
    floor error regions have), and (planted error regions, of them detected)."""
    stats = {n: ensemble_stats(v) for n, v in members.items()}
    _, att, _ = attention_reference(stats, list(stats), AttentionParams(), float(np.prod(sp)) / 1000)
    names = list(masks)
    pairs = [(stats[n].mean > 0.5, masks[n]) for n in names]
    det, labels = detection_case(pairs, [att[n] for n in names], sp)
    floor, _ = detection_case(pairs, [att[n] for n in names], sp, min_alarm_ml=0.5)
    if planted is None:
        return det, floor, (0, 0)
    union = np.any([att[n] for n in names], axis=0)
    errs = labels[names.index(planted[0])]
    ids = set(np.unique(errs[planted[1]]).tolist()) - {0}
    return det, floor, (len(ids), len(ids & set(np.unique(errs[union]).tolist())))


def mixture(counts: dict[int, Detection], q: float) -> dict[str, float | None]:
    """Sensitivity and precision when each member errs independently with probability ``q``."""
    w = {k: math.comb(3, k) * q ** k * (1 - q) ** (3 - k) for k in (1, 2, 3)}
    err = sum(w[k] * counts[k].errors for k in w)
    det = sum(w[k] * counts[k].detected for k in w)
    al = sum(w[k] * counts[k].alarms for k in w)
    tr = sum(w[k] * counts[k].true_alarms for k in w)
    return {"sensitivity": round(det / err, 4) if err else None, "precision": round(tr / al, 4) if al else None}


def case_level(acc: list[int], d: Detection) -> None:
    """acc = [true positives, false positives, misses] of whole trials (regions >= 0.5 ml)."""
    acc[0] += d.true_alarms > 0
    acc[1] += d.alarms > 0 and d.true_alarms == 0
    acc[2] += d.errors > 0 and d.detected == 0


def case_metrics(acc: list[int]) -> dict[str, float | None]:
    tp, fp, fn = acc
    return {"sensitivity": _r(tp / (tp + fn)) if tp + fn else None,
            "precision": _r(tp / (tp + fp)) if tp + fp else None, "tp": tp, "fp": fp, "fn": fn}


def case_mixture(accs: dict[int, list[int]], q: float) -> dict[str, float | None]:
    w = {k: math.comb(3, k) * q ** k * (1 - q) ** (3 - k) for k in (1, 2, 3)}
    tp, fp, fn = (sum(w[k] * accs[k][i] for k in w) for i in range(3))
    return {"sensitivity": _r(tp / (tp + fn)) if tp + fn else None,
            "precision": _r(tp / (tp + fp)) if tp + fp else None}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kits-cases", type=int, default=20)
    ap.add_argument("--tau", type=float, nargs=2, default=[0.3, 0.45],
                    help="members' transition widths (voxels; benchmarks/attention_tau_fit.py)")
    ap.add_argument("--conf", type=float, nargs=2, default=[1.0, 4.0], help="wrong members' |logit| range")
    ap.add_argument("--q", type=float, nargs="+", default=[0.5, 0.7, 0.9], help="member error probabilities")
    ap.add_argument("--structures", choices=["paper", "all"], default="paper",
                    help="the paper's 8 target organs, or also thin structures and the kidney tumour")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not REAL.is_dir():
        print(f"real data not found at {REAL}")
        return 1
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    maps = load_maps(args.kits_cases, PAPER if args.structures == "paper" else PAPER + EXTRA)
    counts = {(r, k, n): Detection() for r in RULES for k in KINDS for n in (1, 2, 3)}
    planted_hits = {(k, n): [0, 0] for k in KINDS for n in (1, 2, 3)}
    # case level (the other reading of "volume level"): per trial, any attention touching an
    # error = true positive, attention but none on an error = false positive, errors none found = miss
    cases = {(k, n): [0, 0, 0] for k in (*KINDS, "clean") for n in (0, 1, 2, 3)}
    clean = {r: Detection() for r in RULES}
    sites = dict.fromkeys(KINDS, 0)
    for _name, full, sp in maps:
        masks = crop_to_labels(full)
        sdfs = {n: signed_distance(m) for n, m in masks.items()}
        dets = score(masks, simulate(sdfs, None, 0, args.tau, args.conf, rng), sp, None)[:2]
        for r, d in zip(RULES, dets, strict=True):
            clean[r].add(d)
        case_level(cases["clean", 0], dets[1])
        for kind in KINDS:
            planted = plant(kind, masks, sp, rng)
            if planted is None:
                continue
            sites[kind] += 1
            for n_wrong in (1, 2, 3):
                *dets, (regions, hit) = score(masks, simulate(sdfs, planted, n_wrong, args.tau, args.conf, rng), sp,
                                              planted)
                for r, d in zip(RULES, dets, strict=True):
                    counts[r, kind, n_wrong].add(d)
                case_level(cases[kind, n_wrong], dets[1])
                planted_hits[kind, n_wrong][0] += regions
                planted_hits[kind, n_wrong][1] += hit
    per_rule: dict[str, dict[str, object]] = {}
    for r in RULES:
        per_kind: dict[str, object] = {}
        for k in KINDS:
            row: dict[str, object] = {"sites": sites[k]}
            for n, label in ((2, "majority_2of3"), (3, "consensus_3of3"), (1, "minority_1of3")):
                d = counts[r, k, n]
                row[label] = {"sensitivity": _r(d.sensitivity), "precision": _r(d.precision), "errors": d.errors,
                              "detected": d.detected, "alarms": d.alarms, "true_alarms": d.true_alarms,
                              "planted_regions": planted_hits[k, n][0], "planted_detected": planted_hits[k, n][1]}
            row["independent"] = {f"q={q}": mixture({n: counts[r, k, n] for n in (1, 2, 3)}, q) for q in args.q}
            per_kind[k] = row
        per_rule[r] = {"per_kind": per_kind, "clean": {"alarms": clean[r].alarms, "errors": clean[r].errors}}
    case_rows: dict[str, object] = {}
    for k in KINDS:
        row = {label: case_metrics(cases[k, n]) for n, label in ((2, "majority_2of3"), (3, "consensus_3of3"),
                                                                 (1, "minority_1of3"))}
        row["independent"] = {f"q={q}": case_mixture({n: cases[k, n] for n in (1, 2, 3)}, q) for q in args.q}
        case_rows[k] = row
    case_rows["clean_trials_with_alarms"] = {"trials": len(maps), "with_alarm": cases["clean", 0][1]}
    per_rule["case_level"] = case_rows
    result = {"maps": len(maps), "kits_cases": args.kits_cases, "structures": args.structures,
              "tau_voxels": args.tau, "conf_logit": args.conf,
              "seed": args.seed, "seconds": round(time.perf_counter() - t0, 1), **per_rule}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
