"""Train the demo ensemble on synthetic phantoms (``python -m curator.pseudolabel.train_demo``).

Three networks of different architectures (:mod:`curator.pseudolabel.nets`) learn the six
abdominal structures of :data:`curator.testing.phantoms.STRUCTURES` that the demo's
datasets only partly annotate (liver, spleen, both kidneys, pancreas, aorta) from phantoms
rendered on a 5 mm RAS grid, as the demo ensemble's ``demo.yaml`` declares. Each network
gets its own seed, data order and augmentation draw, so the ensemble disagrees where the
task is hard (boundaries, the pancreas), which is what the attention map needs.

Writes ``models/<name>.pt`` (a ``state_dict`` loaded with ``weights_only=True``) and
``models/demo_training.json`` (held-out Dice per model and term, and of the pseudo label
the stage makes: ensemble mean > 0.5). ``--only NAME`` retrains one model and loads the
others. The shipped weights: demo_resnet and demo_mixer 300 steps of 32³ patches (about
30 and 9 minutes on a shared 2-core machine), demo_unet 1500 steps of 40³ patches
(``--only demo_unet --steps 1500 --size 40``, about 6 minutes on one core).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional as F

from curator.pseudolabel.nets import ARCHITECTURES
from curator.testing.phantoms import STRUCTURES, Subject, grid, render

log = logging.getLogger("curator.train_demo")
MODELS_DIR = Path(__file__).resolve().parent / "models"
TERMS = ["liver", "spleen", "kidney_right", "kidney_left", "pancreas", "aorta"]
CLIP, MEAN, STD = (-200.0, 300.0), 50.0, 100.0
PLAN = {"demo_unet": ("tiny_unet", 11), "demo_resnet": ("dilated_resnet", 22), "demo_mixer": ("convmixer", 33)}


def normalise(hu: NDArray[Any]) -> NDArray[np.float32]:
    return ((np.clip(hu, *CLIP) - MEAN) / STD).astype(np.float32)


def phantom(seed: int, rng: np.random.Generator) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """One training volume on a jittered ~5 mm RAS grid: normalised image, class map 0..6."""
    s = Subject.random(seed, tumor=bool(rng.random() < 0.6), cyst=bool(rng.random() < 0.5))
    spacing = tuple(float(x) for x in rng.uniform(4.5, 5.5, 3))
    shape = tuple(round(e / sp) for e, sp in zip((360.0, 280.0, 300.0), spacing, strict=True))
    center = (float(rng.normal(0, 10)), float(-10 + rng.normal(0, 10)), float(20 + rng.normal(0, 25)))
    g = grid(shape, spacing, "RAS", center=center)  # type: ignore[arg-type]
    img, lab = render(s, g, "CT", seed=seed, noise=float(rng.uniform(8, 16)))
    img = img + float(rng.normal(0, 8))
    cls = np.zeros(lab.shape, dtype=np.int64)
    for i, t in enumerate(TERMS, start=1):
        cls[lab == STRUCTURES[t][0]] = i
    return normalise(img), cls


def crop(img: NDArray[np.float32], cls: NDArray[np.int64], size: int,
         rng: np.random.Generator) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    start = [int(rng.integers(0, max(1, n - size + 1))) for n in img.shape]
    box = tuple(slice(s, s + size) for s in start)
    a, b = img[box], cls[box]
    pad = [(0, size - n) for n in a.shape]
    return np.pad(a, pad, constant_values=float(a.min())), np.pad(b, pad)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = logits.softmax(1)
    onehot = F.one_hot(target, p.shape[1]).permute(0, 4, 1, 2, 3).float()
    inter = (p * onehot).sum((0, 2, 3, 4))
    denom = p.sum((0, 2, 3, 4)) + onehot.sum((0, 2, 3, 4))
    return 1 - ((2 * inter + 1) / (denom + 1))[1:].mean()


def train_one(arch: str, seed: int, data: list[tuple[NDArray[np.float32], NDArray[np.int64]]], steps: int,
              size: int, batch: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = ARCHITECTURES[arch](out_channels=len(TERMS) + 1)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    net.train()
    for step in range(steps):
        pairs = [crop(*data[int(rng.integers(len(data)))], size, rng) for _ in range(batch)]
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))
        logits = net(x)
        loss = F.cross_entropy(logits, y) + dice_loss(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            log.info("%s step %d loss %.3f", arch, step, loss.item())
    return net.eval()


@torch.no_grad()
def _probs(net: torch.nn.Module, img: NDArray[np.float32]) -> NDArray[np.float32]:
    pad = [(0, (-n) % 8) for n in img.shape]
    x = torch.from_numpy(np.pad(img, pad, mode="edge"))[None, None]
    return net(x).softmax(1)[0].numpy()[(slice(None), *(slice(0, n) for n in img.shape))]


def _dice(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def evaluate(net: torch.nn.Module, data: list[tuple[NDArray[np.float32], NDArray[np.int64]]]) -> dict[str, float]:
    """Held-out Dice per term of one network (argmax)."""
    scores: dict[str, list[float]] = {t: [] for t in TERMS}
    for img, cls in data:
        pred = _probs(net, img).argmax(0)
        for i, t in enumerate(TERMS, start=1):
            scores[t].append(_dice(pred == i, cls == i))
    return {t: round(float(np.mean(v)), 4) for t, v in scores.items()}


def evaluate_ensemble(nets: list[torch.nn.Module], data: list[tuple[NDArray[np.float32], NDArray[np.int64]]]
                      ) -> dict[str, float]:
    """Held-out Dice per term of the pseudo label the stage makes: ensemble mean > 0.5."""
    scores: dict[str, list[float]] = {t: [] for t in TERMS}
    for img, cls in data:
        mean = np.mean([_probs(n, img) for n in nets], axis=0)
        for i, t in enumerate(TERMS, start=1):
            scores[t].append(_dice(mean[i] > 0.5, cls == i))
    return {t: round(float(np.mean(v)), 4) for t, v in scores.items()}


def _previous_report(path: Path) -> dict[str, dict[str, Any]]:
    """Per-model training settings of the models an earlier run trained (kept for ``--only``)."""
    if not path.exists():
        return {}
    d = json.loads(path.read_text())
    return {n: {**{k: d[k] for k in ("steps", "patch", "batch") if k in d}, **m} for n, m in d["models"].items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--train-cases", type=int, default=32)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=MODELS_DIR)
    ap.add_argument("--only", default="", help="train only these models (comma-separated); others are loaded")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    train = [phantom(10_000 + i, rng) for i in range(args.train_cases)]
    held_out = [phantom(90_000 + i, rng) for i in range(6)]
    report: dict[str, Any] = {"terms": TERMS, "train_cases": args.train_cases, "models": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    previous = _previous_report(args.out / "demo_training.json")
    only = [n for n in args.only.split(",") if n]
    nets = []
    for name, (arch, seed) in PLAN.items():
        t0 = time.perf_counter()
        if only and name not in only:
            net = ARCHITECTURES[arch](out_channels=len(TERMS) + 1)
            net.load_state_dict(torch.load(args.out / f"{name}.pt", weights_only=True))
            net.eval()
            entry = {k: v for k, v in previous.get(name, {}).items() if k in ("steps", "patch", "batch",
                                                                                "train_seconds")}
        else:
            net = train_one(arch, seed, train, args.steps, args.size, args.batch)
            torch.save(net.state_dict(), args.out / f"{name}.pt")
            entry = {"steps": args.steps, "patch": args.size, "batch": args.batch,
                     "train_seconds": round(time.perf_counter() - t0, 1)}
        report["models"][name] = {"architecture": arch, "seed": seed, "held_out_dice": evaluate(net, held_out),
                                  "parameters": sum(p.numel() for p in net.parameters()), **entry}
        log.info("%s: %s", name, report["models"][name])
        nets.append(net)
    report["ensemble_held_out_dice"] = evaluate_ensemble(nets, held_out)
    log.info("ensemble (mean > 0.5): %s", report["ensemble_held_out_dice"])
    (args.out / "demo_training.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
