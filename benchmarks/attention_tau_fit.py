"""How soft are trained networks' boundaries? The transition width ``tau`` the attention harness uses.

    python benchmarks/attention_tau_fit.py

For each demo network (:mod:`curator.pseudolabel.train_demo`, trained with cross-entropy +
Dice like nnU-Net and MONAI models) on its six held-out phantoms, fits the logit of the
predicted probability against the signed distance to the true surface (voxels, surface
half-way between voxels) over the voxels within 2.5 voxels of the surface:
``logit ≈ d / tau``. ``benchmarks/attention_eval.py`` draws each member's ``tau`` from the
range these fits span.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_eval import signed_distance

from curator.pseudolabel import train_demo as td
from curator.pseudolabel.nets import ARCHITECTURES


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.strip().splitlines()[0]).parse_args(argv)  # no options: --help
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    for i in range(32):  # the training draws, so the held-out phantoms are train_demo's
        td.phantom(10_000 + i, rng)
    held = [td.phantom(90_000 + i, rng) for i in range(6)]
    out = {}
    for name, (arch, _) in td.PLAN.items():
        net = ARCHITECTURES[arch](out_channels=len(td.TERMS) + 1)
        net.load_state_dict(torch.load(td.MODELS_DIR / f"{name}.pt", weights_only=True))
        net.eval()
        ds, ls = [], []
        for img, cls in held:
            p = td._probs(net, img)
            for k in range(1, len(td.TERMS) + 1):
                m = cls == k
                if m.sum() < 50:
                    continue
                d = signed_distance(m)
                sel = np.abs(d) <= 2.5
                q = np.clip(p[k][sel], 1e-4, 1 - 1e-4)
                ds.append(d[sel])
                ls.append(np.log(q / (1 - q)))
        d, lg = np.concatenate(ds), np.concatenate(ls)
        shells = {str(s): round(float(np.median(lg[np.isclose(d, s)])), 2) for s in (-2.5, -1.5, -0.5, 0.5, 1.5, 2.5)}
        out[name] = {"tau_voxels": round(float(1 / np.polyfit(d, lg, 1)[0]), 3), "median_logit_by_distance": shells}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
