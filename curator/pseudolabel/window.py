"""Streaming sliding-window inference of an ensemble with Gaussian blending.

Windows are visited row by row along the last axis. Each model blends its window outputs
(weighted by a Gaussian importance map, as nnU-Net and MONAI do) into a buffer only one
patch deep (an nnU-Net member blends its logits with nnU-Net's own Gaussian and takes
the activation of the blend, as nnUNetPredictor does); once a row of windows is done, the rows no later window can reach are final
and are handed out. Peak memory is therefore ``models × terms × X × Y × patch_z`` blend
values plus the current batch, whatever the depth of the volume. The blend buffers are
float32, or float16 on request (``blend="float16"``: half the memory; they then hold the
running weighted mean, each update computed in float32 and rounded once, so probabilities
move by ~1e-3). The next slab of input is read
and normalised in a background thread while the current row is inferred, and on a GPU
the forward passes run under autocast (float16; a batch whose outputs are not finite there, an
activation past float16's 65504, runs again in float32).

>>> import numpy as np, torch
>>> from curator.pseudolabel.reader import SlabReader
>>> from curator.pseudolabel.models import ModelSpec
>>> from curator.pseudolabel.loading import load_model
>>> spec = ModelSpec.from_dict({"name": "m", "factory": "curator.pseudolabel.nets:TinyUNet",
...     "kwargs": {"out_channels": 2}, "terms": ["liver"], "patch": [16, 16, 16]})
>>> reader = SlabReader(np.zeros((20, 18, 40), np.float32), {}, {})
>>> rows = [z1 - z0 for z0, z1, _ in sliding_window(reader, [load_model(spec, "cpu")], (16, 16, 16))]
>>> sum(rows)
40
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from curator.pseudolabel.loading import LoadedModel
from curator.pseudolabel.reader import SlabReader

log = logging.getLogger("curator")
_BLEND = {"float32": torch.float32, "float16": torch.float16}
# autocast per device type with `amp` (CUDA only: on the CPU the models run in float32, as the
# stage's results on a CPU are defined; tests add {"cpu": torch.bfloat16} to run this path on a CPU)
AMP_DTYPE: dict[str, torch.dtype] = {"cuda": torch.float16}
_OVERFLOWED: set[str] = set()  # models whose outputs overflowed under autocast (warned once per process)
_AXIS = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}


def starts(n: int, p: int, overlap: float) -> list[int]:
    """Window start positions covering [0, n) with windows of ``p`` (MONAI's dense grid)."""
    if n <= p:
        return [0]
    step = max(1, int(p * (1 - overlap)))
    out = list(range(0, n - p + 1, step))
    if out[-1] != n - p:
        out.append(n - p)
    return out


def gaussian_map(patch: Sequence[int], sigma_scale: float = 0.125) -> NDArray[np.float32]:
    """Separable Gaussian importance map (max 1, no zeros), as nnU-Net/MONAI blending uses."""
    g = np.ones((1, 1, 1), dtype=np.float64)
    for ax, p in enumerate(patch):
        x = np.arange(p) - (p - 1) / 2
        v = np.exp(-0.5 * (x / max(sigma_scale * p, 1e-6)) ** 2)
        shape = [1, 1, 1]
        shape[ax] = p
        g = g * v.reshape(shape)
    g = g / g.max()
    g = np.maximum(g, g[g > 0].min())
    return g.astype(np.float32)


def nnunet_gaussian(patch: Sequence[int], sigma_scale: float = 0.125) -> NDArray[np.float32]:
    """nnU-Net's importance map (``compute_gaussian``): scipy's Gaussian filter (truncated at 4 sigma)
    of a point at ``p // 2``, max 1, zeros raised to the smallest value. Not :func:`gaussian_map`'s
    centre ``(p - 1) / 2``: on even patches the two weigh overlapping windows differently."""
    g = np.ones((1, 1, 1), dtype=np.float64)
    for ax, p in enumerate(patch):
        sigma = sigma_scale * p
        x = np.arange(p) - p // 2
        v = np.where(np.abs(x) <= int(4.0 * sigma + 0.5), np.exp(-0.5 * (x / max(sigma, 1e-6)) ** 2), 0.0)
        shape = [1, 1, 1]
        shape[ax] = p
        g = g * v.reshape(shape)
    g = g / g.max()
    g = np.where(g > 0, g, g[g > 0].min())
    return g.astype(np.float32)


def axis_map(stored: str | None, expected: str | None) -> tuple[tuple[int, int, int], tuple[int, ...]]:
    """Permutation (model axis → stored axis) and the model axes to flip, from axis codes."""
    if not stored or not expected:
        return (0, 1, 2), ()
    perm, flips = [], []
    for a, code in enumerate(expected.upper()):
        s = next(i for i, c in enumerate(stored.upper()) if _AXIS[c] == _AXIS[code])
        perm.append(s)
        if stored.upper()[s] != code:
            flips.append(a)
    return (perm[0], perm[1], perm[2]), tuple(flips)


def _weights(key: tuple[Any, ...], patch: tuple[int, int, int], sigma_scale: float) -> NDArray[np.float32]:
    """A window's blending weights in the stored axes: :func:`gaussian_map`, or for ``("nnunet",
    (perm, flips))`` :func:`nnunet_gaussian` built in the model's axes and mapped back as its outputs are."""
    if key[0] != "nnunet":
        return gaussian_map(patch, sigma_scale)
    perm, flips = key[1]
    g = nnunet_gaussian([patch[perm[a]] for a in range(3)], sigma_scale)
    if flips:
        g = np.flip(g, axis=flips)
    return np.ascontiguousarray(g.transpose([perm.index(i) for i in range(3)]))


def _run(model: LoadedModel, x: torch.Tensor, orient: tuple[tuple[int, int, int], tuple[int, ...]],
         amp: bool) -> torch.Tensor:
    perm, flips = orient
    y = x.permute(0, 1, 2 + perm[0], 2 + perm[1], 2 + perm[2])
    if flips:
        y = y.flip([2 + a for a in flips])
    dtype = AMP_DTYPE.get(x.device.type) if amp else None
    ctx = torch.autocast(x.device.type, dtype=dtype) if dtype is not None else nullcontext()
    with ctx:
        out = model.outputs(y)
    if dtype is not None and not bool(torch.isfinite(out).all()):
        # float16 overflow (an activation past 65504 in a network trained in float32): inf logits,
        # NaN after softmax, spread by the blend; this batch again in float32
        if model.spec.name not in _OVERFLOWED:
            _OVERFLOWED.add(model.spec.name)
            log.warning("model %s: non-finite outputs under %s autocast; such batches run again in float32 "
                        "(amp: false runs every batch so)", model.spec.name, str(dtype).removeprefix("torch."))
        out = model.outputs(y)
    if flips:
        out = out.flip([2 + a for a in flips])
    inv = [perm.index(i) for i in range(3)]
    return out.permute(0, 1, 2 + inv[0], 2 + inv[1], 2 + inv[2]).float()


def sliding_window(reader: SlabReader, models: Sequence[LoadedModel], patch: Sequence[int], *,
                   overlap: float = 0.5, batch: int = 4, amp: bool = True, sigma_scale: float = 0.125,
                   orientation: str | None = None, blend: str = "float32") -> Iterator[tuple[int, int, list[NDArray[np.floating]]]]:
    """Yield ``(z0, z1, [probs of model m: (terms_m, X, Y, z1 - z0)])`` for consecutive final rows
    (in the ``blend`` dtype).

    On CPU the arrays are views of the blending buffers: use them before asking for the next
    rows (copy what must outlive the step).

    ``patch`` is in stored axes; ``orientation`` is the stored axis code, each model's
    ``spec.orientation`` the one it expects (patches are permuted/flipped for it). A volume
    smaller than the patch is padded up to it (edge values), as nnU-Net and MONAI do: the
    models always see the input size they were trained on (a shrunken patch can be too small
    for a network's downsampling).
    """
    device = models[0].device
    X, Y, Z = reader.shape
    px, py, pz = (int(p) for p in patch)
    PX, PY = max(X, px), max(Y, py)
    xs, ys, zs = starts(X, px, overlap), starts(Y, py, overlap), starts(Z, pz, overlap)
    orients = [axis_map(orientation, m.spec.orientation) for m in models]
    if blend not in _BLEND:
        raise ValueError(f"blend = {blend!r}; use one of {sorted(_BLEND)}")
    # per model its terms' probabilities, or its logits (every channel) when it blends them (nnU-Net)
    acc = [torch.zeros((m.channels if m.blends_logits else len(m.terms), PX, PY, pz), dtype=_BLEND[blend],
                       device=device) for m in models]
    # the windows' weights: one Gaussian for the members, nnU-Net's own (in its model's axes) for nnU-Net's
    keys = [("nnunet", o) if m.blends_logits else ("curator",) for m, o in zip(models, orients, strict=True)]
    gauss = {k: torch.from_numpy(_weights(k, (px, py, pz), sigma_scale)).to(device) for k in keys}
    # float32 buffers hold weighted sums (divided once the rows are final); float16 ones hold
    # the weighted mean so far, which stays in [0, 1]: a weighted sum would underflow, since
    # the Gaussian's corners (~1e-11) are below float16's smallest number
    running_mean = blend != "float32"
    wsum = {k: torch.zeros((PX, PY, pz), dtype=torch.float32, device=device) for k in gauss}
    windows = [(x, y) for x in xs for y in ys]
    # each member's input as it normalises it: one reader per distinct normalisation (by value)
    member_readers = [reader.for_intensity(m.spec.intensity) for m in models]
    readers = list({id(r): r for r in member_readers}.values())
    which = [next(i for i, r in enumerate(readers) if r is mr) for mr in member_readers]

    def read(z0: int) -> list[NDArray[np.float32]]:
        return [r.slab(z0, z0 + pz) for r in readers]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="curator-slab") as pool:
        nxt: Future[list[NDArray[np.float32]]] = pool.submit(read, zs[0])
        for k, z in enumerate(zs):
            slabs = nxt.result()
            if k + 1 < len(zs):
                nxt = pool.submit(read, zs[k + 1])
            srcs = [torch.from_numpy(np.ascontiguousarray(
                np.pad(slab, [(0, PX - X), (0, PY - Y), (0, 0)], mode="edge") if (PX, PY) != (X, Y) else slab
            )).to(device) for slab in slabs]
            with torch.inference_mode():
                for b0 in range(0, len(windows), batch):
                    win = windows[b0:b0 + batch]
                    xbs = [torch.stack([src[x:x + px, y:y + py] for x, y in win])[:, None] for src in srcs]
                    ratios: dict[tuple[Any, ...], list[torch.Tensor]] = {key: [] for key in gauss}
                    if running_mean:  # each window's share of the weight so far (windows may overlap)
                        for key, g in gauss.items():
                            for x, y in win:
                                w = wsum[key][x:x + px, y:y + py]
                                ratios[key].append(g / (w + g))
                                w += g
                    for m, model in enumerate(models):
                        out = _run(model, xbs[which[m]], orients[m], amp)
                        g = gauss[keys[m]]
                        for i, (x, y) in enumerate(win):
                            a = acc[m][:, x:x + px, y:y + py]
                            if running_mean:
                                a += (out[i] - a) * ratios[keys[m]][i]
                            else:
                                a += out[i] * g
                    if not running_mean:
                        for key, g in gauss.items():
                            for x, y in win:
                                wsum[key][x:x + px, y:y + py] += g
            z_next = zs[k + 1] if k + 1 < len(zs) else min(Z, z + pz)
            n = z_next - z
            if not running_mean:
                for a, key in zip(acc, keys, strict=True):  # in place: these rows are final and dropped by the shift below
                    a[:, :X, :Y, :n] /= wsum[key][:X, :Y, :n]
            # on CPU, views of the buffers (no copy): valid until the generator resumes
            yield z, z_next, [(m.activate(a[None, :, :X, :Y, :n].float())[0].to(a.dtype) if m.blends_logits
                               else a[:, :X, :Y, :n]).cpu().numpy() for a, m in zip(acc, models, strict=True)]
            for buf in [*acc, *wsum.values()]:
                buf[..., : pz - n] = buf[..., n:].clone()
                buf[..., pz - n:] = 0
