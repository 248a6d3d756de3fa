"""Attention-map error detection on simulated ensembles built from real label maps.

    python benchmarks/attention_eval.py [--kits-cases 20] [--tau 0.35] [--agree 0.0]

For every real label map (../shared/data/real: TotalSegmentator example segmentations,
KiTS23 segmentations with the kidney label split into left and right by position), three
ensemble members predict every structure: a soft version of the true mask (sigmoid of the
signed distance, transition width ``tau`` voxels, a per-member boundary shift and smooth
noise). In one planted region per case, two of the three members make a realistic error
(AbdomenAtlas-8K Fig. 5) with moderate confidence while the third stays right:

* ``missed_cavity``  — an interior ball of an organ is left out (false negative);
* ``missed_part``    — the far end of an organ along its long axis is left out (enlarged
                       part, e.g. a pancreas tail swollen by a tumour);
* ``leakage``        — an organ's label spills 4–10 mm into its neighbour (false positive);
* ``wrong_side``     — a paired organ's label is given to the contralateral organ.

``--agree`` is the share of planted errors where all three members agree on the error
(consensus errors cannot show up as disagreement; only overlap may reveal them). A
quarter of the cases are kept clean to count false alarms. The attention map is computed
exactly as the pseudolabel stage does (:func:`curator.pseudolabel.core.attention_reference`)
and scored with :func:`curator.pseudolabel.evaluate.detection`: an error region is a
connected component of pseudo label XOR truth (one-voxel jitter removed, >= 0.5 ml); it is
detected when attention touches it; an attention region is a true alarm when it touches an
error. Targets (AbdomenAtlas-8K, volume level): sensitivity >= 0.93, precision >= 0.81.
"""

from __future__ import annotations

import argparse
import os
import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curator.pseudolabel.core import AttentionParams, attention_reference, ensemble_stats  # noqa: E402
from curator.pseudolabel.evaluate import Detection, detection_case  # noqa: E402

REAL = Path(os.environ.get("CURATOR_REAL_DATA", "/work/shared/data/real"))
KINDS = ("missed_cavity", "missed_part", "leakage", "wrong_side")
TS_KEEP = ["spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas", "aorta",
           "inferior_vena_cava", "duodenum", "adrenal_gland_right", "adrenal_gland_left", "esophagus"]


def load_maps(kits_cases: int) -> list[tuple[str, dict[str, np.ndarray], tuple[float, ...]]]:
    """(name, {structure: mask}, spacing) for every usable real label map."""
    out = []
    cmap = json.loads((REAL / "totalsegmentator" / "class_map.json").read_text())["total"]
    for f in ("example_seg.nii.gz", "example_seg_dicom.nii.gz"):
        img = nib.as_closest_canonical(nib.load(REAL / "totalsegmentator" / f))
        lab = np.asarray(img.dataobj).astype(np.int32)
        sp = tuple(float(x) for x in img.header.get_zooms()[:3])
        if f == "example_seg_dicom.nii.gz":  # 0.98 mm in-plane: halve for speed
            lab, sp = lab[::2, ::2], (sp[0] * 2, sp[1] * 2, sp[2])
        masks = {n: lab == int(k) for k, n in cmap.items() if n in TS_KEEP and (lab == int(k)).sum() > 50}
        out.append((f"totalseg/{f}", masks, sp))
    for case in sorted((REAL / "kits23" / "dataset").iterdir())[:kits_cases]:
        img = nib.as_closest_canonical(nib.load(case / "segmentation.nii.gz"))
        lab = np.asarray(img.dataobj).astype(np.int16)
        zooms = [float(x) for x in img.header.get_zooms()[:3]]
        step = [max(1, int(round(1.6 / z))) for z in zooms]  # ~1.6 mm for speed
        lab = lab[:: step[0], :: step[1], :: step[2]]
        sp = tuple(z * s for z, s in zip(zooms, step, strict=True))
        kidney = lab > 0  # sides from the components of kidney + masses; the masks keep the tumour apart
        cc, n = ndimage.label(kidney)
        sizes = ndimage.sum(kidney, cc, range(1, n + 1))
        masks: dict[str, np.ndarray] = {"kidney_left": np.zeros_like(kidney), "kidney_right": np.zeros_like(kidney)}
        mid = lab.shape[0] / 2
        for i in np.argsort(sizes)[::-1][:4]:
            comp = cc == i + 1
            if sizes[i] < 200:
                continue
            side = "kidney_right" if np.argwhere(comp)[:, 0].mean() > mid else "kidney_left"  # RAS: +x = right
            masks[side] |= comp & (lab != 2)
        masks = {k: v for k, v in masks.items() if v.sum() > 200}
        if (lab == 2).sum() > 200:
            masks["kidney_tumor"] = lab == 2
        out.append((f"kits23/{case.name}", masks, sp))
    return out


def soft(mask: np.ndarray, spacing: tuple[float, ...], tau: float, shift: float, rng: np.random.Generator
         ) -> np.ndarray:
    """Sigmoid of the signed distance (voxels), boundary shifted by ``shift`` voxels, plus smooth noise."""
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    pad = 6
    sl = tuple(slice(max(0, s.start - pad), min(n, s.stop + pad)) for s, n in zip(box, mask.shape, strict=True))
    sub = mask[sl]
    sdf = ndimage.distance_transform_edt(sub) - ndimage.distance_transform_edt(~sub)
    noise = ndimage.gaussian_filter(rng.normal(0, 1, sub.shape), 2.0)
    noise *= 0.6 / max(noise.std(), 1e-6)
    out = np.zeros(mask.shape, np.float32)
    out[sl] = 1 / (1 + np.exp(-(sdf + shift + noise * 0.5) / tau))
    return out


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


def simulate(masks: dict[str, np.ndarray], spacing: tuple[float, ...], kind: str | None, tau: float, agree: bool,
             rng: np.random.Generator) -> tuple[dict[str, list[np.ndarray]], tuple[str, np.ndarray] | None]:
    members = {n: [soft(m, spacing, tau, float(rng.normal(0, 0.35)), rng) for _ in range(3)] for n, m in masks.items()}
    planted = plant(kind, masks, spacing, rng) if kind else None
    if planted:
        n, region, fp = planted
        blend = ndimage.gaussian_filter(region.astype(np.float32), 0.7)
        wrong = [0, 1, 2] if agree else sorted(rng.choice(3, 2, replace=False).tolist())
        for i in wrong:
            p = float(rng.uniform(0.78, 0.95)) if fp else float(rng.uniform(0.05, 0.22))
            members[n][i] = (members[n][i] * (1 - blend) + p * blend).astype(np.float32)
        return members, (n, region)
    return members, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kits-cases", type=int, default=20)
    ap.add_argument("--tau", type=float, default=0.35, help="boundary transition width (voxels)")
    ap.add_argument("--agree", type=float, default=0.0, help="share of errors all three members make")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not REAL.is_dir():
        print(f"real data not found at {REAL}")
        return 1
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    maps = load_maps(args.kits_cases)
    per_kind = {k: Detection() for k in (*KINDS, "clean")}
    kind_errors = {k: [0, 0] for k in KINDS}  # planted errors found as error regions: [regions, detected]
    params = AttentionParams()
    trials = 0
    for rep, kind in enumerate((*KINDS, None)):
        for name, masks, sp in maps:
            members, planted = simulate(masks, sp, kind, args.tau, bool(rng.random() < args.agree), rng)
            if kind and planted is None:
                continue
            trials += 1
            stats = {n: ensemble_stats(v) for n, v in members.items()}
            _, att, _ = attention_reference(stats, list(stats), params, float(np.prod(sp)) / 1000)
            names = list(masks)
            det, labels = detection_case([(stats[n].mean > 0.5, masks[n]) for n in names], [att[n] for n in names], sp)
            if planted:
                union = np.any([att[n] for n in names], axis=0)
                errs = labels[names.index(planted[0])]
                ids = set(np.unique(errs[planted[1]]).tolist()) - {0}
                kind_errors[kind][0] += len(ids)  # type: ignore[index]
                kind_errors[kind][1] += len(ids & set(np.unique(errs[union]).tolist()))  # type: ignore[index]
            per_kind[kind or "clean"].add(det)
    total = Detection()
    for d in per_kind.values():
        total.add(d)
    result = {"maps": len(maps), "trials": trials, "tau_voxels": args.tau, "agree": args.agree,
              "seconds": round(time.perf_counter() - t0, 1),
              "sensitivity": total.sensitivity, "precision": total.precision,
              "errors": total.errors, "detected": total.detected, "alarms": total.alarms,
              "true_alarms": total.true_alarms,
              "per_kind": {k: {"planted_regions": v[0], "planted_detected": v[1],
                               "planted_sensitivity": (v[1] / v[0]) if v[0] else None,
                               "sensitivity": per_kind[k].sensitivity, "precision": per_kind[k].precision,
                               "errors": per_kind[k].errors, "alarms": per_kind[k].alarms}
                           for k, v in kind_errors.items()},
              "clean": {"alarms": per_kind["clean"].alarms, "errors": per_kind["clean"].errors,
                        "true_alarms": per_kind["clean"].true_alarms}}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
