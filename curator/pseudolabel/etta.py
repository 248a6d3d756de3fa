"""ETTA (UKBOB §3.3): per-volume entropy minimisation on normalisation-layer affine parameters.

Before a volume is inferred, a few gradient steps lower the mean voxel entropy of the
model's output on patches of *that* volume, updating only the affine weight and bias of
its normalisation layers (BatchNorm, InstanceNorm, GroupNorm, LayerNorm; running
statistics stay frozen: the model stays in eval mode). Afterwards every parameter and
buffer is restored, so the next volume starts from the trained model.

>>> import torch
>>> from curator.pseudolabel.nets import TinyUNet
>>> [n for n, _ in norm_parameters(TinyUNet(out_channels=2))][:2]
['stem.1.weight', 'stem.1.bias']
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from curator.config import Config
from curator.errors import ConfigError

log = logging.getLogger("curator")
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
NORM_NAMES = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d",
              "GroupNorm", "LayerNorm"}


@dataclass(frozen=True)
class EttaConfig(Config):
    """ETTA settings (off by default)."""

    enabled: bool = False
    steps: int = 3
    lr: float = 1e-3
    patches: int = 2  # patches of the volume per step
    seed: int = 0

    def __post_init__(self) -> None:
        # checked at load, whether enabled or not: lr -1 and patches 0 failed every case as an
        # internal_error, and steps 0 adapted nothing while the attention rows said etta = true
        where = "stages.pseudolabel.etta"
        if self.steps < 1:
            raise ConfigError("config_error", f"{where}.steps = {self.steps}; use 1 or more gradient steps",
                              remedy="to run without adaptation, set `enabled: false` (the default) instead")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise ConfigError("config_error", f"{where}.lr = {self.lr}; use a learning rate in (0, 1]",
                              remedy=f"the default is {type(self).__dataclass_fields__['lr'].default}")
        if self.patches < 1:
            raise ConfigError("config_error", f"{where}.patches = {self.patches}; use 1 or more patches per step",
                              remedy=f"the default is {type(self).__dataclass_fields__['patches'].default}")


def _is_norm(m: nn.Module) -> bool:
    if isinstance(m, NORM_TYPES):
        return True
    return getattr(m, "original_name", None) in NORM_NAMES  # TorchScript modules


def norm_parameters(net: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(qualified name, parameter) of every normalisation layer's affine weight and bias."""
    out = []
    for mname, m in net.named_modules():
        if _is_norm(m):
            for pname, p in m.named_parameters(recurse=False):
                if pname in ("weight", "bias") and p is not None:
                    out.append((f"{mname}.{pname}" if mname else pname, p))
    return out


def mean_entropy(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Mean voxel entropy of a softmax (over channels) or of independent sigmoids."""
    if activation == "softmax":
        logp = logits.log_softmax(1)
        return -(logp.exp() * logp).sum(1).mean()
    p = logits.sigmoid()
    return (torch.special.entr(p) + torch.special.entr(1 - p)).sum(1).mean()


@contextlib.contextmanager
def adapted(net: nn.Module, forward: Any, patches: torch.Tensor, activation: str,
            cfg: EttaConfig) -> Iterator[dict[str, Any]]:
    """Adapt ``net`` to ``patches`` inside the block; restore it exactly on exit.

    ``forward(x)`` returns logits (it may permute axes for the model). Yields a report:
    ``{"entropy_before", "entropy_after", "changed": [names of parameters that moved]}``.
    """
    saved = {k: v.detach().clone() for k, v in net.state_dict(keep_vars=False).items()}
    params = norm_parameters(net)
    report: dict[str, Any] = {"changed": [], "entropy_before": None, "entropy_after": None}
    try:
        if params and cfg.steps > 0:
            for _, p in params:
                p.requires_grad_(True)
            opt = torch.optim.Adam([p for _, p in params], lr=cfg.lr)
            with torch.enable_grad():
                for step in range(cfg.steps):
                    loss = mean_entropy(forward(patches), activation)
                    if step == 0:
                        report["entropy_before"] = float(loss.detach())
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            for _, p in params:
                p.requires_grad_(False)
            with torch.no_grad():
                report["entropy_after"] = float(mean_entropy(forward(patches), activation))
            now = net.state_dict()
            report["changed"] = sorted(k for k, v in now.items() if not torch.equal(v, saved[k]))
            log.debug("ETTA: entropy %.4f -> %.4f", report["entropy_before"], report["entropy_after"])
        yield report
    finally:
        for _, p in params:
            p.requires_grad_(False)
        net.load_state_dict(saved, strict=True)
