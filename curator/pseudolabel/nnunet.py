"""nnU-Net v2 result folders as ensemble members (``kind: nnunet``).

A result folder (``Dataset.../nnUNetTrainer__nnUNetPlans__3d_fullres/``) holds ``plans.json``,
``dataset.json`` and ``fold_N/checkpoint_final.pth`` (``fold`` picks one, or lists several whose
logits are averaged, as nnUNetPredictor's ``use_folds``). From them curator fills the member's spec
(a setting the entry gives wins):

* the network: ``configurations[cfg]["architecture"]`` of plans.json (older plans' U-Net keys
  converted as nnU-Net converts them), built with
  ``dynamic_network_architectures`` (``pip install --no-deps dynamic-network-architectures``: its
  U-Nets need torch and numpy only, while its declared dependencies pull timm and torchvision,
  which replace a CPU torch with the newest CUDA build), deep supervision off;
  its weights are the checkpoint's ``network_weights``, read with ``weights_only=True`` (the
  checkpoint's training log holds numpy scalars: only those are allowed besides tensors);
* ``terms`` from dataset.json ``labels`` (background and ``ignore`` left out), ``activation``
  sigmoid for region-based models (``regions_class_order``), else softmax;
* ``patch``, ``spacing_mm`` (the configuration's ``patch_size`` and ``spacing``), ``divisor``
  (the architecture's strides), ``intensity`` (CTNormalization: clip to the foreground's 0.5 and
  99.5 percentiles, then its mean and std; ZScoreNormalization: each image's own mean and std,
  of its nonzero region with ``use_mask_for_norm``), ``modalities`` (CT for a CT-normalised
  model, MR for a z-scored one whose channel is named MRI, T1, T2, FLAIR, ADC, DWI, ...).

nnU-Net does not reorient: its arrays are the training files' as SimpleITK reads them (index
axes reversed), permuted by the plans' ``transpose_forward``. The entry's ``orientation`` names
the axes of those arrays *before* that permutation (a NIfTI stored RAS, as TotalSegmentator feeds
nnU-Net, reads as S, A, R: ``orientation: SAR``); patch and spacing are given in these axes and
the member permutes its input as nnU-Net does.

Not supported (each a ``config_error``): normalisations but CT's, z-score and none, several
input channels, cascade configurations. Mirroring test-time augmentation runs when the entry gives
``mirror_axes`` (the checkpoint's ``inference_allowed_mirroring_axes``; nnUNetv2_predict mirrors by
default, TotalSegmentator does not). Overlapping windows blend the
member's logits weighted by nnU-Net's Gaussian, as nnUNetPredictor does
(:func:`curator.pseudolabel.window.nnunet_gaussian`).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from curator.errors import ConfigError

if TYPE_CHECKING:
    from curator.pseudolabel.models import ModelSpec

log = logging.getLogger("curator")
ORIENTATION_HELP = (
    "nnU-Net does not reorient: the model's axes are those of its training images as SimpleITK "
    "reads them (index axes reversed), so they depend on how the training files were stored; "
    "give `orientation:` as the axis codes of those arrays (NIfTI files stored RAS, as "
    "TotalSegmentator's: SAR; LPS-stored files: SPL)")
FILLED = ("terms", "activation", "patch", "spacing_mm", "intensity", "divisor", "modalities")


def _where(spec: ModelSpec) -> str:
    return f"model {spec.name!r} (nnU-Net folder {spec.path})"


def _json(path: Path, spec: ModelSpec) -> dict[str, Any]:
    inside = [] if path.exists() else result_folders(path.parent)
    if inside:
        raise ConfigError("config_error", f"{_where(spec)} is not an nnU-Net result folder: it holds "
                          f"{len(inside)} result folder(s) but no {path.name} of its own",
                          remedy="point `path` at the trained result folder (Trainer__Plans__configuration), "
                          "e.g. " + ", ".join(str(p) for p in inside[:4]))
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError("config_error", f"{_where(spec)}: cannot read {path.name}: {e}",
                          remedy="point `path` at an nnU-Net v2 result folder (it holds plans.json, "
                          "dataset.json and fold_N/checkpoint_final.pth)") from e
    if not isinstance(doc, dict):
        raise ConfigError("config_error", f"{_where(spec)}: {path.name} is not a JSON object")
    return doc


def configuration_name(spec: ModelSpec) -> str:
    """``configuration`` or the last part of the folder name (``Trainer__Plans__3d_fullres``)."""
    if spec.configuration:
        return spec.configuration
    parts = Path(str(spec.path)).name.split("__")
    if len(parts) != 3 or not parts[2]:
        raise ConfigError("config_error", f"{_where(spec)}: the folder name does not say its configuration",
                          remedy="give `configuration:` (e.g. 3d_fullres), or point `path` at the "
                          "Trainer__Plans__configuration folder")
    return parts[2]


def _configuration(plans: dict[str, Any], name: str, spec: ModelSpec) -> dict[str, Any]:
    """A configuration of plans.json with what it ``inherits_from`` filled in (as nnU-Net's PlansManager)."""
    configs = plans.get("configurations") or {}
    if name not in configs:
        raise ConfigError("config_error", f"{_where(spec)}: plans.json has no configuration {name!r}",
                          remedy=f"give `configuration:` as one of {sorted(configs)}")
    cfg = dict(configs[name])
    if "inherits_from" in cfg:
        parent = str(cfg.pop("inherits_from"))
        cfg = {**_configuration(plans, parent, spec), **cfg}
    return cfg


OLD_UNETS = {"PlainConvUNet": ("dynamic_network_architectures.architectures.unet.PlainConvUNet", "n_conv_per_stage"),
             "ResidualEncoderUNet": ("dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet",
                                     "n_blocks_per_stage")}


def architecture(cfg: dict[str, Any], spec: ModelSpec) -> dict[str, Any]:
    """The configuration's ``architecture``; plans written before nnU-Net 2.4 (TotalSegmentator's)
    describe the U-Net by other keys, converted as nnU-Net's ConfigurationManager converts them."""
    if "architecture" in cfg:
        return dict(cfg["architecture"])
    old = OLD_UNETS.get(str(cfg.get("UNet_class_name")))
    if old is None or len(cfg.get("patch_size") or ()) != 3:
        raise ConfigError("config_error", f"{_where(spec)}: plans.json's configuration has no `architecture` and "
                          f"no 3D {' or '.join(OLD_UNETS)} (UNet_class_name {cfg.get('UNet_class_name')!r})",
                          remedy="re-plan the dataset with a current nnU-Net, or use a 3D configuration")
    try:
        n = len(cfg["n_conv_per_stage_encoder"])
        kwargs = {"n_stages": n, "features_per_stage": [min(int(cfg["UNet_base_num_features"]) * 2 ** i,
                                                            int(cfg["unet_max_num_features"])) for i in range(n)],
                  "conv_op": "torch.nn.modules.conv.Conv3d", "kernel_sizes": cfg["conv_kernel_sizes"],
                  "strides": cfg["pool_op_kernel_sizes"], old[1]: cfg["n_conv_per_stage_encoder"],
                  "n_conv_per_stage_decoder": cfg["n_conv_per_stage_decoder"], "conv_bias": True,
                  "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                  "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                  "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError("config_error", f"{_where(spec)}: plans.json's old-format configuration lacks {e}") from e
    return {"network_class_name": old[0], "arch_kwargs": kwargs,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def checkpoints(spec: ModelSpec) -> list[Path]:
    """``fold_<fold>/checkpoint_final.pth`` of each fold ``fold`` lists (no ``fold``: fold_0, else
    fold_all)."""
    root = Path(str(spec.path))
    if isinstance(spec.fold, (list, tuple)):
        return [checkpoints(replace(spec, fold=f))[0] for f in spec.fold]
    folds = [spec.fold] if spec.fold is not None else [0, "all"]
    for f in folds:
        p = root / f"fold_{f}" / "checkpoint_final.pth"
        if p.is_file():
            return [p]
    have = sorted(p.parent.name for p in root.glob("fold_*/checkpoint_final.pth"))
    inside = result_folders(root) if not have else []
    if inside:  # `path` names the dataset folder (or nnUNet_results) that holds the result folder(s)
        raise ConfigError("config_error", f"{_where(spec)} is not an nnU-Net result folder: it holds "
                          f"{len(inside)} result folder(s) but no plans.json or fold_N/ of its own",
                          remedy="point `path` at the trained result folder (Trainer__Plans__configuration), "
                          "e.g. " + ", ".join(str(p) for p in inside[:4]))
    raise ConfigError("config_error", f"{_where(spec)}: no {' or '.join(f'fold_{f}' for f in folds)}/"
                      "checkpoint_final.pth", remedy=f"the folder has {have or 'no checkpoint'}: give `fold:` "
                      "(a number, all, or a list of folds to average) of them, or point `path` at the trained "
                      "result folder")


def result_folders(root: Path) -> list[Path]:
    """Result folders (a plans.json beside fold_N/) one or two levels below ``root``: what a
    ``path`` naming a dataset folder or nnUNet_results instead of the result folder holds."""
    found = {p.parent for depth in ("*/plans.json", "*/*/plans.json") for p in root.glob(depth)
             if any(p.parent.glob("fold_*"))}
    return sorted(found)


def files(spec: ModelSpec) -> dict[str, Path]:
    """The files a member reads, by role (their checksums make its fingerprint)."""
    root = Path(str(spec.path))
    found = checkpoints(spec)
    named = {"checkpoint": found[0]} if len(found) == 1 else {p.parent.name: p for p in found}
    return {"plans.json": root / "plans.json", "dataset.json": root / "dataset.json", **named}


def _from_model_axes(values: Any, transpose_forward: list[int]) -> tuple[Any, ...]:
    """Values along the network's axes → along the read arrays' axes (before ``transpose_forward``)."""
    out: list[Any] = [None] * 3
    for j, i in enumerate(transpose_forward):
        out[i] = values[j]
    return tuple(out)


def _terms(ds: dict[str, Any], spec: ModelSpec) -> tuple[tuple[str, ...], str]:
    from curator.pseudolabel.terms import term_id

    labels = {str(k): v for k, v in (ds.get("labels") or {}).items() if k != "ignore"}
    regions = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in labels.values())
    if regions:  # one sigmoid output per region, in dataset.json's order (nnU-Net's LabelManager)
        names = [k for k, v in labels.items() if set(v if isinstance(v, (list, tuple)) else [v]) != {0}]
        return tuple(term_id(n) for n in names), "sigmoid"
    by_value = {int(v[0] if isinstance(v, (list, tuple)) else v): k for k, v in labels.items()}
    if sorted(by_value) != list(range(len(by_value))) or 0 not in by_value:
        raise ConfigError("config_error", f"{_where(spec)}: dataset.json labels {sorted(by_value)} are not "
                          "0 (background), 1, 2, ...", remedy="nnU-Net requires consecutive label values")
    return tuple(term_id(by_value[v]) for v in range(1, len(by_value))), "softmax"


MR_CHANNEL = re.compile(r"^(mri?|t1|t2|flair|adc|dwi|pd|swi)", re.IGNORECASE)  # dataset.json channel names


def _intensity(plans: dict[str, Any], cfg: dict[str, Any], channel: str, spec: ModelSpec
               ) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The member's ``intensity`` and ``modalities`` from the configuration's normalisation scheme."""
    scheme = (cfg.get("normalization_schemes") or ["?"])[0]
    if scheme == "CTNormalization":
        props = (plans.get("foreground_intensity_properties_per_channel") or {}).get("0") or {}
        try:
            lo, hi, mean, std = (float(props[k]) for k in ("percentile_00_5", "percentile_99_5", "mean", "std"))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError("config_error", f"{_where(spec)}: plans.json lacks the foreground intensity "
                              f"properties CTNormalization needs ({e})") from e
        return {"clip": [lo, hi], "mean": mean, "std": max(std, 1e-8)}, ("CT",)
    if scheme == "ZScoreNormalization":
        masked = bool((cfg.get("use_mask_for_norm") or [False])[0])
        return {"zscore": "nonzero" if masked else "image"}, ("MR",) if MR_CHANNEL.match(channel.strip()) else ()
    if scheme == "NoNormalization":
        return {"mean": 0.0, "std": 1.0}, ()
    raise ConfigError("config_error", f"{_where(spec)}: normalization {scheme!r} is not one curator implements",
                      remedy="use an nnU-Net model trained with CTNormalization, ZScoreNormalization or "
                      "NoNormalization")


def fill_spec(spec: ModelSpec) -> ModelSpec:
    """``spec`` with the settings its entry leaves out taken from the result folder."""
    root = Path(str(spec.path))
    plans, ds = _json(root / "plans.json", spec), _json(root / "dataset.json", spec)
    name = configuration_name(spec)
    cfg = _configuration(plans, name, spec)
    if cfg.get("previous_stage"):
        raise ConfigError("config_error", f"{_where(spec)}: configuration {name!r} is a cascade stage (it takes "
                          f"{cfg['previous_stage']!r}'s segmentation as input): not supported",
                          remedy="use a single-stage configuration such as 3d_fullres")
    channels = ds.get("channel_names") or ds.get("modality") or {}
    if len(channels) != 1:
        raise ConfigError("config_error", f"{_where(spec)}: the model takes {len(channels)} input channels "
                          f"{dict(channels)}; curator runs single-channel models only")
    tf = [int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
    terms, activation = _terms(ds, spec)
    intensity, modalities = _intensity(plans, cfg, str(next(iter(channels.values()))), spec)
    strides = architecture(cfg, spec).get("arch_kwargs", {}).get("strides") or [[1, 1, 1]]
    per_axis = [math.prod(int(s[a]) if isinstance(s, (list, tuple)) else int(s) for s in strides) for a in range(3)]
    filled = {"terms": list(terms), "activation": activation,
              "patch": list(_from_model_axes([int(v) for v in cfg["patch_size"]], tf)),
              "spacing_mm": list(_from_model_axes([float(v) for v in cfg["spacing"]], tf)),
              "intensity": intensity, "divisor": math.gcd(*per_axis), "modalities": list(modalities)}
    entry = spec.to_dict()
    given = {k: v for k, v in entry.items() if spec.given is None or k in spec.given}
    folds: list[int | str] = [p.parent.name[5:] for p in checkpoints(spec)]
    folds = [f if f == "all" else int(f) for f in folds]
    merged = {**entry, **filled, **given, "configuration": name,
              "fold": folds if isinstance(spec.fold, (list, tuple)) else folds[0]}
    return replace(type(spec).from_dict(merged, where=f"model {spec.name}"), given=None)


def _network_class(ref: str, prefix: str, spec: ModelSpec) -> type[nn.Module]:
    """``ref`` (a dotted class name from plans.json) if it lies under ``prefix`` and is a network
    class: plans.json comes with downloaded weights and names what curator would construct. A
    dynamic_network_architectures class not at that path (classes move between versions: the
    ResidualEncoderUNet of plans before nnU-Net 2.4 is converted to ``architectures.residual_unet``,
    which 0.4 does not have) is looked up by name in its ``architectures`` modules, as nnU-Net does."""
    module, _, attr = ref.rpartition(".")
    obj: Any = None
    if ref.startswith(prefix) and module:
        try:
            obj = getattr(importlib.import_module(module), attr, None)
        except ImportError:
            obj = None
        if obj is None and prefix == "dynamic_network_architectures.":
            obj = _moved_class(attr)
            if obj is not None:
                log.info("%s: %s is %s.%s in the installed dynamic_network_architectures", _where(spec), ref,
                         obj.__module__, attr)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ConfigError("config_error", f"{_where(spec)}: plans.json names {ref!r}, not a network class "
                          f"under {prefix}", remedy="curator builds nnU-Net networks from "
                          "dynamic_network_architectures with torch.nn layers only")
    return obj


def _moved_class(name: str) -> Any:
    """The class ``name`` of the first ``dynamic_network_architectures.architectures`` module that
    has one (modules that cannot be imported, e.g. needing timm, are passed over)."""
    import pkgutil

    package = importlib.import_module("dynamic_network_architectures.architectures")
    for info in sorted(pkgutil.walk_packages(package.__path__, package.__name__ + "."), key=lambda m: m.name):
        try:
            found = getattr(importlib.import_module(info.name), name, None)
        except Exception as e:  # noqa: BLE001 - an optional architecture's missing dependency
            log.debug("passing over %s: %s", info.name, e)
            continue
        if isinstance(found, type) and issubclass(found, nn.Module):
            return found
    return None


class _FoldMean(nn.Module):
    """Several folds' networks as one: the mean of their logits, as nnUNetPredictor averages the
    folds' sliding-window logits (blending is linear, so per window is the same)."""

    def __init__(self, nets: list[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = _full_resolution(self.nets[0](x))
        for net in self.nets[1:]:
            total = total + _full_resolution(net(x))
        return total / len(self.nets)


def _full_resolution(out: Any) -> torch.Tensor:
    """A network's output, or its first (full-resolution) output under deep supervision."""
    return out[0] if isinstance(out, (list, tuple)) else out


class _Transposed(nn.Module):
    """The network on the read arrays' axes: input permuted by ``transpose_forward``, outputs back."""

    def __init__(self, net: nn.Module, transpose_forward: list[int]) -> None:
        super().__init__()
        self.net = net
        self.forward_axes = [2 + a for a in transpose_forward]
        self.backward_axes = [2 + transpose_forward.index(a) for a in range(3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _full_resolution(self.net(x.permute(0, 1, *self.forward_axes))).permute(0, 1, *self.backward_axes)


def _numpy_globals() -> list[Any]:
    """What nnU-Net's checkpoints hold besides tensors and builtins: numpy scalars in the training
    log (``_best_ema``, losses, Dice), i.e. numpy's scalar constructor and numeric dtypes (numpy 1
    pickles name the constructor numpy.core.multiarray.scalar)."""
    import numpy as np

    scalar = np._core.multiarray.scalar  # type: ignore[attr-defined]
    kinds = ("Bool", "Float16", "Float32", "Float64", "Int8", "Int16", "Int32", "Int64",
             "UInt8", "UInt16", "UInt32", "UInt64")
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype,
            *(getattr(np.dtypes, f"{k}DType") for k in kinds)]


def load_weights(path: Path, spec: ModelSpec) -> dict[str, torch.Tensor]:
    """The checkpoint's ``network_weights``, read with ``weights_only=True`` and numpy scalars allowed."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError("config_error", f"{_where(spec)}: cannot load {path} with weights_only=True: "
                          f"{type(e).__name__}: {str(e).splitlines()[0][:300]}",
                          remedy="curator reads nnU-Net checkpoints that hold tensors, builtins and numpy "
                          "scalars only (nnUNetTrainer.save_checkpoint's); re-save the checkpoint's "
                          "network_weights with torch.save") from e
    weights = ck.get("network_weights") if isinstance(ck, dict) else None
    if not isinstance(weights, dict):
        raise ConfigError("config_error", f"{_where(spec)}: {path} has no network_weights",
                          remedy="use the checkpoint_final.pth nnU-Net's training wrote")
    return {k.removeprefix("_orig_mod."): v for k, v in weights.items()}


def network(spec: ModelSpec) -> nn.Module:
    """The configuration's network with the checkpoint's weights, on the read arrays' axes."""
    try:
        importlib.import_module("dynamic_network_architectures")
    except ImportError as e:
        raise ConfigError("config_error", f"{_where(spec)} needs dynamic_network_architectures, which is not "
                          "installed", remedy="pip install --no-deps dynamic-network-architectures (its U-Nets need only "
                          "torch and numpy; without --no-deps pip also installs timm and torchvision, which "
                          "replace the installed torch with the newest CUDA build)") from e
    root = Path(str(spec.path))
    plans, ds = _json(root / "plans.json", spec), _json(root / "dataset.json", spec)
    arch = architecture(_configuration(plans, configuration_name(spec), spec), spec)
    cls = _network_class(str(arch["network_class_name"]), "dynamic_network_architectures.", spec)
    kwargs = dict(arch.get("arch_kwargs") or {})
    for key in arch.get("_kw_requires_import") or ():
        if kwargs.get(key) is not None:
            kwargs[key] = _network_class(str(kwargs[key]), "torch.nn.", spec)
    kwargs["deep_supervision"] = False
    channels = len(ds.get("channel_names") or ds.get("modality") or {})
    terms, activation = _terms(ds, spec)  # the folder's outputs, whatever terms the entry names
    outputs = len(terms) + (activation == "softmax")
    nets = []
    for path in checkpoints(spec):
        net = cls(input_channels=channels, num_classes=outputs, **kwargs)
        try:
            net.load_state_dict(load_weights(path, spec), strict=True)
        except RuntimeError as e:
            raise ConfigError("config_error", f"{_where(spec)}: {path.parent.name}'s checkpoint does not fit the "
                              f"planned network: {str(e)[:300]}", remedy="use the plans.json of the folder the "
                              "checkpoint was trained in, and its configuration") from e
        nets.append(net)
    net = nets[0] if len(nets) == 1 else _FoldMean(nets)
    tf = [int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
    return net if tf == [0, 1, 2] else _Transposed(net, tf)
