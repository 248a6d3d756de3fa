"""Planted-error evaluation of SOLF and the IQR baseline on real label maps.

Real label maps: the 40 KiTS23 expert segmentations (kidney, tumour, cyst) and the
TotalSegmentator predictions in ../shared/data/real. For every (case, term) label the
script plants each realistic error in turn — part of the organ erased, a spurious distant
blob, a massive dilation, the label swapped with its neighbour's, the field of view cut
through it, the organ fragmented — and judges the corrupted label *inside its cohort of
clean labels* (one corrupted label per trial: errors rarer than ε/2 per tail, the regime
percentile bounds are made for). It prints, per method and error type, the recall of the
flags, their precision against the clean labels flagged in the same trials, and the flag
rate of clean labels (all-clean cohorts and the clean members of every trial).

TotalSegmentator ships one CT prediction here; its cohort is 40 smooth random
deformations of that real map (scale ±12 %, rotation ±8°, elastic ±4 mm) — realistic
shapes, synthetic variety — and is reported separately from KiTS23.

    python benchmarks/solf_eval.py                      # everything, ~10 min on 2 cores
    python benchmarks/solf_eval.py --kits-cases 10 --no-totalseg --min-cohort 5   # quick look
    python benchmarks/solf_eval.py --write /tmp/qc_tables.md   # tables to copy into benchmarks/results/qc.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curator.io.formats import read_volume
from curator.io.volume import Geometry
from curator.qc.cohort import judge
from curator.qc.config import QCConfig
from curator.qc.features import MeasureOptions, field_of_view, measure_mask
from curator.testing import labelmaps as lm

REAL = Path(os.environ.get("CURATOR_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))
ERRORS = ("erased", "blob", "dilation", "swap", "fragmented", "truncated")
KITS_TERMS = {1: "kidney", 2: "kidney_tumor", 3: "kidney_cyst"}
KITS_SWAP = {"kidney": ("kidney_tumor",), "kidney_tumor": ("kidney",), "kidney_cyst": ("kidney_tumor",)}
# KiTS23's kidney label is the parenchyma of both kidneys without the masses; the organ (KiTS's own
# "kidney and masses" region, the union of labels 1-3) split at the scan's sagittal midline gives the
# per-side organ labels most datasets publish — the setting SOLF was designed for
ORGAN_SWAP = {"kidney_left": ("kidney_tumor",), "kidney_right": ("kidney_tumor",),
              "kidney_tumor": ("kidney_left", "kidney_right"), "kidney_cyst": ("kidney_tumor",)}


def methods(min_cohort: int) -> dict[str, QCConfig]:
    base = QCConfig(min_cohort=min_cohort)
    return {
        "SOLF faces ε=2": base,
        "SOLF mesh ε=2": base.replace(sphericity="mesh"),
        "SOLF + detached, 2 of 4, ε=2": base.replace(features=("volume", "sphericity", "eccentricity", "detached")),
        "IQR volume (k=1.5)": base.replace(method="iqr"),
        "IQR any of 3 (k=1.5)": base.replace(method="iqr", iqr_features=("volume", "sphericity", "eccentricity")),
    }


# -- measuring ------------------------------------------------------------------------------------
def _row(case_id: str, term: str, mask: np.ndarray, crop: tuple[slice, ...], g: Geometry,
         fov: np.ndarray, opts: MeasureOptions) -> dict[str, Any] | None:
    objs = ndimage.find_objects(mask.view(np.uint8))
    if not objs or objs[0] is None:
        return None
    tight = objs[0]
    box = tuple(slice(c.start + t.start, c.start + t.stop) for c, t in zip(crop, tight, strict=True))
    f = measure_mask(term, mask[tight], box, g, fov=fov, options=opts)
    r = f.to_row()
    r.update(case_id=case_id, term_id=term, origin="original", modality="CT", volume_basis="absolute",
             norm_volume=None)
    return r


def _slice_axis(g: Geometry) -> int:
    return int(np.argmax(np.abs(g.direction[2, :])))


def label_variants(case_id: str, lab: np.ndarray, g: Geometry, names: dict[int, str], rng: np.random.Generator,
                   opts: MeasureOptions, pad_mm: float = 90.0) -> dict[tuple[str, str | None], dict[str, Any]]:
    """Clean and corrupted feature rows of every term: {(term, error or None): row}."""
    sp = g.spacing
    fov = field_of_view(g)
    objs = ndimage.find_objects(lab, max_label=max(names))
    out: dict[tuple[str, str | None], dict[str, Any]] = {}
    ax = _slice_axis(g)
    for code, term in sorted(names.items()):
        if code - 1 >= len(objs) or objs[code - 1] is None:
            continue
        b = objs[code - 1]

        def padded(mm: float, b: tuple[slice, ...] = b) -> tuple[slice, ...]:
            pad = [int(np.ceil(mm / x)) for x in sp]
            return tuple(slice(max(0, s.start - p), min(n, s.stop + p)) for s, p, n in zip(b, pad, lab.shape, strict=True))

        crop = padded(12.0)  # room for a 10 mm dilation
        mask = lab[crop] == code
        clean = _row(case_id, term, mask, crop, g, fov, opts)
        if clean is None:
            continue
        out[(term, None)] = clean
        variants = {
            "erased": lambda m: lm.erase_part(m, rng, (0.4, 0.7)),
            "dilation": lambda m: lm.dilate(m, sp, float(rng.uniform(5.0, 10.0))),
            "fragmented": lambda m: lm.fragment(m, rng, sp, cuts=4, gap_mm=4.0),
        }
        for err, fn in variants.items():
            r = _row(case_id, term, fn(mask), crop, g, fov, opts)
            if r is not None:
                out[(term, err)] = r
        big = padded(pad_mm)  # room for a distant blob
        r = _row(case_id, term, lm.add_blob(lab[big] == code, rng, sp, (0.1, 0.3), 50.0), big, g, fov, opts)
        if r is not None:
            out[(term, "blob")] = r
        # field of view ends inside the organ: cut 20-50 % of its extent along the slice axis
        _, cut_box = lm.cut_field_of_view(lab[crop], mask, rng, (0.2, 0.5), axis=ax)
        cut_mask = np.zeros_like(mask)
        cut_mask[cut_box] = mask[cut_box]
        new_fov = fov.copy()
        s = cut_box[ax]
        if s.start:
            new_fov[ax, 0] = crop[ax].start + s.start - 0.5
        if s.stop is not None and s.stop < mask.shape[ax]:
            new_fov[ax, 1] = crop[ax].start + s.stop - 0.5
        r = _row(case_id, term, cut_mask, crop, g, new_fov, opts)
        if r is not None:
            out[(term, "truncated")] = r
    return out


def split_kidneys(lab: np.ndarray, g: Geometry) -> np.ndarray:
    """KiTS23 label map with the kidney (1) split at the scan's sagittal midline: voxels on the
    patient's right (RAS x above the centre of the field of view) get code 4."""
    m = g.matrix
    centre_x = float(m[0, :3] @ ((np.asarray(lab.shape) - 1) / 2) + m[0, 3])
    x = (m[0, 3] - centre_x
         + np.arange(lab.shape[0])[:, None, None] * m[0, 0]
         + np.arange(lab.shape[1])[None, :, None] * m[0, 1]
         + np.arange(lab.shape[2])[None, None, :] * m[0, 2])
    out = lab.copy()
    out[(lab == 1) & (x > 0)] = 4
    return out


def swap_labels(rows: dict[tuple[str, str | None], dict[str, Any]],
                partners: dict[str, tuple[str, ...]] | None = None) -> None:
    """The "swapped with a neighbour" error: term t's label is its neighbour's mask (the nearest
    complete label by centroid, among ``partners[t]`` when given)."""
    clean = {t: r for (t, e), r in rows.items() if e is None and not r["truncated"]}
    for t, r in clean.items():
        cands = [u for u in (partners or {}).get(t, tuple(clean)) if u != t and u in clean]
        if cands:
            near = min(cands, key=lambda u: float(np.linalg.norm(np.subtract(r["centroid_mm"],
                                                                             clean[u]["centroid_mm"]))))
            rows[(t, "swap")] = dict(clean[near], term_id=t)


# -- TotalSegmentator cohort --------------------------------------------------------------------
def deform(lab: np.ndarray, g: Geometry, rng: np.random.Generator) -> np.ndarray:
    """A smooth random deformation of a label map (nearest neighbour), in physical units."""
    sp = np.asarray(g.spacing)
    shape = np.asarray(lab.shape)
    c = (shape - 1) / 2
    ang = np.deg2rad(rng.uniform(-8, 8, 3))
    rx, ry, rz = (np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]) for a in ang)
    rot = rx @ np.roll(np.roll(ry, 1, 0), 1, 1) @ np.roll(np.roll(rz, 2, 0), 2, 1)
    scale = rng.uniform(0.88, 1.12, 3)
    m = np.diag(1 / sp) @ rot @ np.diag(1 / scale) @ np.diag(sp)
    grid = np.indices(lab.shape, dtype=np.float32).reshape(3, -1) - c[:, None]
    src = (m @ grid) + c[:, None]
    sigma_vox = 20.0 / sp
    for a in range(3):
        field = ndimage.gaussian_filter(rng.normal(size=lab.shape).astype(np.float32), sigma_vox)
        field *= (4.0 / sp[a]) / max(float(np.abs(field).max()), 1e-6)
        src[a] += field.ravel()
    return ndimage.map_coordinates(lab, src, order=0, mode="constant").reshape(lab.shape).astype(lab.dtype)


def totalseg_variants(path: Path, classes: dict[int, str], n: int, rng: np.random.Generator,
                      opts: MeasureOptions) -> dict[str, dict[tuple[str, str | None], dict[str, Any]]]:
    v = read_volume(path, role="label")
    base = v.array.astype(np.uint8)
    present = {int(c): classes[int(c)] for c in np.unique(base) if c and int(c) in classes}
    cases: dict[str, dict[tuple[str, str | None], dict[str, Any]]] = {}
    for i in range(n):
        lab = base if i == 0 else deform(base, v.geometry, rng)
        cid = f"ts_{i:02d}"
        cases[cid] = label_variants(cid, lab, v.geometry, present, rng, opts, pad_mm=60.0)
    return cases


# -- trials and metrics ------------------------------------------------------------------------
def evaluate(cases: dict[str, dict[tuple[str, str | None], dict[str, Any]]], cfg: QCConfig) -> dict[str, Any]:
    """Judge every all-clean cohort, then one trial per corrupted label (its case's clean label
    replaced). Only terms whose clean cohort is judged (>= min_cohort complete labels) count."""
    clean: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rows in cases.values():
        for (term, err), r in rows.items():
            if err is None:
                clean[term].append(r)
    base = [r for rows in clean.values() for r in judge(rows, cfg)]
    judged_clean = [r for r in base if r["decision"] in ("include", "exclude")]
    judged_terms = {r["term_id"] for r in judged_clean}
    stats: dict[str, Any] = {"clean_cohort": (sum(r["flagged"] for r in judged_clean), len(judged_clean))}
    # per (term, error): trials, flagged, clean members flagged, clean members, judged truncated
    per: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for cid, rows in cases.items():
        for (term, err), bad in rows.items():
            if err is None or term not in judged_terms or rows[(term, None)]["truncated"]:
                continue
            cohort = [r for r in clean[term] if r["case_id"] != cid] + [bad]
            res = {r["case_id"]: r for r in judge(cohort, cfg)}
            me = res[cid]
            others = [r for k, r in res.items() if k != cid and r["decision"] in ("include", "exclude")]
            p = per[(term, err)]
            p[0] += 1
            p[1] += int(me["flagged"])
            p[2] += sum(r["flagged"] for r in others)
            p[3] += len(others)
            p[4] += int(me["decision"] == "truncated")
    stats["per"] = dict(per)
    stats["per_error"] = {e: [sum(v[i] for (_, e2), v in per.items() if e2 == e) for i in range(5)] for e in ERRORS}
    return stats


def _prf(tp: int, fp: int, n: int) -> tuple[float, float, float]:
    rec = tp / n if n else 0.0
    prec = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return prec, rec, f1


def report(title: str, results: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"### {title}", "",
             "| method | " + " | ".join(f"{e} P / R" for e in ERRORS[:5]) + " | F1 (5 types) | truncated → `truncated` "
             "| clean flag rate (clean cohorts) | clean flag rate (trials) |",
             "|---|" + "---|" * 9]
    for name, st in results.items():
        per = st["per_error"]
        cells = []
        tp_all = fp_all = n_all = 0
        for e in ERRORS[:5]:
            n, tp, fp, _, _ = per[e]
            prec, rec, _ = _prf(tp, fp, n)
            cells.append(f"{prec:.2f} / {rec:.2f}")
            tp_all, fp_all, n_all = tp_all + tp, fp_all + fp, n_all + n
        _, _, f1 = _prf(tp_all, fp_all, n_all)
        tr = per["truncated"]
        cf, cn = st["clean_cohort"]
        fp_t = sum(per[e][2] for e in ERRORS[:5])
        cm_t = sum(per[e][3] for e in ERRORS[:5])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {f1:.3f} | {tr[4]}/{tr[0]} | "
                     f"{cf}/{cn} = {cf / max(cn, 1):.1%} | {fp_t / max(cm_t, 1):.1%} |")
    first = next(iter(results.values()))
    n_trials = {e: first["per_error"][e][0] for e in ERRORS}
    lost = {e: first["per_error"][e][4] for e in ERRORS[:5]}
    lines += ["", "Trials per error type: " + ", ".join(f"{e} {n}" for e, n in n_trials.items())
              + ". P = flagged corrupted / all flagged in those trials; R = flagged corrupted / trials. "
              "Corrupted labels that reached the field-of-view edge (so `truncated`, not judged, counted as "
              "missed): " + ", ".join(f"{e} {n}" for e, n in lost.items()) + ".", ""]
    terms = sorted({t for t, _ in first["per"]})
    lines += [f"Recall per term ({next(iter(results))}; trials in brackets):", "",
              "| term | " + " | ".join(ERRORS[:5]) + " | truncated → `truncated` |", "|---|" + "---|" * 6]
    for t in terms:
        cells = []
        for e in ERRORS:
            n, tp, _, _, tr = first["per"].get((t, e), [0, 0, 0, 0, 0])
            cells.append(f"{(tr if e == 'truncated' else tp) / max(n, 1):.2f} ({n})")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines + [""]


def epsilon_sweep(cases: dict[str, Any], min_cohort: int) -> list[str]:
    lines = ["| ε | erased R | blob R | dilation R | swap R | fragmented R | F1 (5 types) | clean flag rate |",
             "|---|---|---|---|---|---|---|---|"]
    for eps in (0.5, 1.0, 2.0, 3.0, 4.0, 5.0):
        st = evaluate(cases, QCConfig(epsilon=eps, min_cohort=min_cohort))
        per = st["per_error"]
        recs = [per[e][1] / max(per[e][0], 1) for e in ERRORS[:5]]
        tp = sum(per[e][1] for e in ERRORS[:5])
        fp = sum(per[e][2] for e in ERRORS[:5])
        n = sum(per[e][0] for e in ERRORS[:5])
        cf, cn = st["clean_cohort"]
        lines.append(f"| {eps:g} | " + " | ".join(f"{r:.2f}" for r in recs) + f" | {_prf(tp, fp, n)[2]:.3f} | "
                     f"{cf / max(cn, 1):.1%} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=Path, default=REAL)
    ap.add_argument("--kits-cases", type=int, default=40)
    ap.add_argument("--totalseg", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--ts-cohort", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-cohort", type=int, default=QCConfig().min_cohort)
    ap.add_argument("--write", type=Path, help="also write the markdown results here")
    ap.add_argument("--cache", type=Path, help="keep the measured feature rows here (JSON) and reuse them")
    args = ap.parse_args()
    opts = MeasureOptions(mesh=True)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    cached = _load(args.cache)
    kits: dict[str, Any] = cached.get("kits", {})
    split: dict[str, Any] = cached.get("kits_organs", {})
    files = sorted((args.real / "kits23" / "dataset").glob("case_*/segmentation.nii.gz"))[: args.kits_cases]
    if not files:  # else every table would be of 0 cases, all zeros
        raise SystemExit(f"no KiTS23 segmentations under {args.real / 'kits23' / 'dataset'}: point --real or "
                         "$CURATOR_REAL_DATA at the real sample data (shared/data/real)")
    if len(files) < args.min_cohort:  # no cohort is judged: every table would be zeros
        raise SystemExit(f"{len(files)} KiTS23 case(s) is fewer than --min-cohort {args.min_cohort}: no cohort would be "
                         "judged and every table would read 0; pass a smaller --min-cohort (e.g. 5) or more cases")
    for f in files:
        cid = f.parent.name
        if cid in kits and cid in split:
            continue
        v = read_volume(f, role="label")
        kits[cid] = label_variants(cid, v.array, v.geometry, KITS_TERMS, rng, opts)
        organ = (v.array > 0).astype(np.uint8)
        split[cid] = label_variants(cid, split_kidneys(organ, v.geometry), v.geometry,
                                    {1: "kidney_left", 4: "kidney_right"}, rng, opts)
        print(f"  {cid} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        cached.update(kits=kits, kits_organs=split)
        _save(args.cache, cached)
    published = {f.parent.name: dict(kits[f.parent.name]) for f in files}
    organs = {cid: {k: r for k, r in rows.items() if k[0] != "kidney"} | split[cid] for cid, rows in published.items()}
    for rows in published.values():
        swap_labels(rows, KITS_SWAP)
    for rows in organs.values():
        swap_labels(rows, ORGAN_SWAP)
    lines = ["# QC: SOLF vs IQR on planted errors", "",
             (f"`python benchmarks/solf_eval.py{' --write ' + str(args.write) if args.write else ''}` "
              f"(seed {args.seed}); numpy {np.__version__}, Python {platform.python_version()}, "
              f"{platform.machine()}."), ""]
    lines += report(f"KiTS23 as published (one label for both kidneys), {len(published)} cases",
                    {name: evaluate(published, cfg) for name, cfg in methods(args.min_cohort).items()})
    lines += report(f"KiTS23, {len(organs)} real expert segmentations: kidney organ (kidney + masses) per side, "
                    "tumour, cyst",
                    {name: evaluate(organs, cfg) for name, cfg in methods(args.min_cohort).items()})
    lines += ["#### ε sweep (SOLF, faces), KiTS23 as published", ""]
    lines += epsilon_sweep(published, args.min_cohort) + [""]
    if args.totalseg:
        classes = _ts_classes(args.real / "totalsegmentator" / "class_map.json")
        ts = cached.get("ts") or totalseg_variants(args.real / "totalsegmentator" / "example_seg.nii.gz", classes,
                                                   args.ts_cohort, rng, opts)
        cached["ts"] = ts
        _save(args.cache, cached)
        for rows in ts.values():
            swap_labels(rows)
        lines += report(f"TotalSegmentator: 1 real 117-class CT prediction × {args.ts_cohort} smooth deformations",
                        {name: evaluate(ts, cfg) for name, cfg in methods(args.min_cohort).items()})
    lines.append(f"Run time {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")


def _load(path: Path | None) -> dict[str, Any]:
    import json

    if path is None or not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {k: {cid: {(t, e or None): r for t, e, r in rows} for cid, rows in v.items()} for k, v in raw.items()}


def _save(path: Path | None, data: dict[str, Any]) -> None:
    import json

    if path is None:
        return
    raw = {k: {cid: [[t, e, r] for (t, e), r in rows.items()] for cid, rows in v.items()} for k, v in data.items()}
    path.write_text(json.dumps(raw))


def _ts_classes(path: Path) -> dict[int, str]:
    import json

    d = json.loads(path.read_text())
    return {int(k): v for k, v in d["total"].items()}


if __name__ == "__main__":
    main()
