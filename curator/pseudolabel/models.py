"""Segmentation models behind one interface: per-term probabilities for a batch of patches.

Four adapters, chosen by ``kind`` in a :class:`ModelSpec`:

* ``torchscript`` — ``torch.jit.load(path)``; a ``curator.json`` extra file inside the
  archive may carry the spec fields (terms, activation, patch, spacing, ...);
* ``module`` — ``factory: "package.module:callable"`` + ``kwargs`` builds an ``nn.Module``;
  ``weights`` is a ``state_dict`` loaded with ``torch.load(..., weights_only=True)``;
* ``monai_bundle`` — a MONAI bundle folder: ``configs/inference.(json|yaml)`` gives
  ``network_def`` and, read as data (:func:`curator.pseudolabel.bundle.read_spec`), the
  orientation, spacing, intensity and patch of its preprocessing and inferer; ``models/model.pt``
  the weights (required), ``configs/metadata.json`` the channels and modality (needs ``monai``;
  an error says so when it is missing);
* ``nnunet`` — an nnU-Net v2 result folder (plans.json, dataset.json, fold_N/checkpoint_final.pth):
  the network, terms, patch, spacing and intensity come from it (:mod:`curator.pseudolabel.nnunet`;
  needs ``dynamic_network_architectures``); ``orientation`` is required.

Ensembles are lists of specs; a bundled ensemble (``ensemble: demo``) is a YAML file in
``curator/pseudolabel/models/``. Loaded ensembles are cached per process (keyed by the
weights' checksums and the device), so a GPU worker loads them once, not once per case.

>>> spec = ModelSpec.from_dict({"name": "m", "factory": "curator.pseudolabel.nets:TinyUNet",
...                             "kwargs": {"out_channels": 3}, "terms": ["liver", "spleen"]})
>>> m = load_model(spec, "cpu")
>>> import torch
>>> m.predict(torch.zeros(1, 1, 16, 16, 16)).shape
torch.Size([1, 2, 16, 16, 16])
"""

from __future__ import annotations

import functools
import importlib
import itertools
import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from curator.config import Config
from curator.errors import ConfigError
from curator.io.fsutil import sha256_file, sha256_json
from curator.pseudolabel.reader import ZSCORE_MODES
from curator.yamlio import load_yaml

log = logging.getLogger("curator")
MODELS_DIR = Path(__file__).resolve().parent / "models"
INTENSITY_KEYS = frozenset({"clip", "mean", "std", "zscore"})  # a spec's `intensity` (reader.network_input)
ENSEMBLE_KEYS = frozenset({"name", "models"})  # top-level keys of an ensemble YAML file
# ModelSpec fields added after a fingerprint's form was fixed (name -> default): left out of the
# fingerprint while at their default, so a curator that adds a setting does not re-run every cached
# pseudo label of a declaration it does not change ("another version of the model files" with the
# same weights). A new field goes here with its default as to_dict gives it (a list for a tuple);
# test_models pins the fingerprint and the cases' cache key.
ADDED_LATER: dict[str, Any] = {}


@dataclass(frozen=True)
class ModelSpec(Config):
    """One ensemble member. Paths are absolute or relative to the file that lists the model."""

    name: str
    kind: Literal["torchscript", "module", "monai_bundle", "nnunet"] = "module"
    path: str | None = None  # torchscript file, bundle folder or nnU-Net result folder
    factory: str | None = None  # "package.module:callable" (module)
    kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None  # state_dict file (module)
    terms: tuple[str, ...] = ()  # output channels -> term ids (softmax: channel 0 is background)
    activation: Literal["softmax", "sigmoid"] = "softmax"
    patch: tuple[int, ...] = (96, 96, 96)  # in the model's axes
    spacing_mm: tuple[float, ...] | None = None  # grid the model was trained on (None: any)
    orientation: str | None = None  # axis codes the model expects, e.g. "RAS" (None: as stored)
    modalities: tuple[str, ...] = ()  # empty: any
    intensity: dict[str, Any] = field(default_factory=dict)  # {clip, mean, std} on physical values, or {zscore}
    divisor: int = 8  # patch sides must be multiples of this
    mirror_axes: tuple[int, ...] = ()  # test-time mirroring (nnU-Net's): model axes also predicted flipped
    # nnunet: fold_<fold>/checkpoint_final.pth (None: fold_0, else fold_all); a list: their logits averaged
    fold: int | str | tuple[int | str, ...] | None = None
    configuration: str | None = None  # nnunet: a configuration of plans.json (None: from the folder name)
    # the settings the entry gives (None: every one): a TorchScript archive's curator.json fills
    # only the others; not a setting itself (from_dict sets it, to_dict leaves it out)
    given: frozenset[str] | None = field(default=None, compare=False, repr=False)
    # where the entry is written (an ensemble file, pipeline.yaml), for error messages; not a setting either
    source: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, *, where: str | None = None) -> ModelSpec:
        inner = sorted(k for k in ("given", "source") if isinstance(d, dict) and k in d)
        if inner:
            raise ConfigError("config_error", f"{where or cls.__name__}: unknown setting(s) {inner}; valid settings "
                              f"are {sorted(k for k in cls.__dataclass_fields__ if k not in ('given', 'source'))}")
        spec = super().from_dict(d, where=where)
        return replace(spec, given=frozenset(d or {}))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("given", None)
        out.pop("source", None)
        return out

    def __post_init__(self) -> None:
        """Checked when the spec is read, before any case runs (a bad value failed every case
        with an internal KeyError, ZeroDivisionError or IndexError)."""
        where = f"model {self.name!r}"
        if self.kind == "nnunet" and not (self.path and self.orientation):
            from curator.pseudolabel.nnunet import ORIENTATION_HELP

            missing = "path" if not self.path else "orientation"
            raise ConfigError("config_error", f"{where}: a model of kind nnunet needs `{missing}`",
                              remedy="point `path` at the nnU-Net result folder (Trainer__Plans__configuration)"
                              if missing == "path" else ORIENTATION_HELP)
        if isinstance(self.fold, tuple) and (not self.fold or len(set(self.fold)) != len(self.fold)):
            raise ConfigError("config_error", f"{where}: fold {list(self.fold)} is not a list of distinct folds",
                              remedy="give one fold (0, 1, ... or all) or a list of distinct ones, whose logits "
                              "are averaged (nnU-Net's five-fold ensemble: [0, 1, 2, 3, 4])")
        o = self.orientation
        if o is not None and (not isinstance(o, str) or len(o) != 3
                              or sorted("RLAPSI".find(c) // 2 for c in o.upper()) != [0, 1, 2]):  # -1: unknown
            raise ConfigError("config_error", f"{where}: orientation {o!r} is not three axis codes",
                              remedy="give one letter of each pair R/L, A/P and S/I, in the model's axis "
                              "order (e.g. RAS, LPS, SRA), or leave `orientation` out (the stored axes)")
        if self.spacing_mm is not None and (len(self.spacing_mm) != 3 or not all(
                _number(v) and v > 0 for v in self.spacing_mm)):
            raise ConfigError("config_error", f"{where}: spacing_mm {list(self.spacing_mm)} is not three "
                              "positive numbers", remedy="give the spacing (mm) of the grid the model was "
                              "trained on along its three axes (its `orientation` order), or leave it out")
        if not (len(set(self.mirror_axes)) == len(self.mirror_axes) and all(
                isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 2 for a in self.mirror_axes)):
            raise ConfigError("config_error", f"{where}: mirror_axes {list(self.mirror_axes)} are not distinct "
                              "axes 0, 1, 2", remedy="list the model's axes (its `patch` order) to also predict "
                              "mirrored, e.g. [0, 1, 2] as nnU-Net's default; leave it out for one pass")
        if len(self.patch) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                           for v in self.patch):
            raise ConfigError("config_error", f"{where}: patch {list(self.patch)} is not three positive "
                              "integers", remedy="give the model's input size in voxels along its three axes")

        unknown = sorted(str(k) for k in self.intensity if k not in INTENSITY_KEYS)
        if unknown:  # e.g. MONAI's ScaleIntensityRange a_min/a_max/b_min/b_max: raw HU reached the network
            raise ConfigError("config_error", f"{where}: unknown intensity key(s) {unknown}; known keys are "
                              f"{sorted(INTENSITY_KEYS)}", remedy="write the normalisation as `intensity: {clip: "
                              "[lo, hi], mean: m, std: s}` on physical values (network input = (clip(x) - m) / s; "
                              "MONAI's a_min/a_max/b_min/b_max: clip [a_min, a_max], mean = a_min - b_min * "
                              "(a_max - a_min) / (b_max - b_min), std = (a_max - a_min) / (b_max - b_min))")
        zscore = self.intensity.get("zscore")
        if zscore is not None and (zscore not in ZSCORE_MODES or len(self.intensity) > 1):
            raise ConfigError("config_error", f"{where}: intensity {self.intensity!r} is not a per-image z-score",
                              remedy="give `intensity: {zscore: image}` (each image's mean and std over the box "
                              "of its nonzero voxels, nnU-Net's ZScoreNormalization) or `{zscore: nonzero}` (over "
                              "its nonzero region only, 0 outside: use_mask_for_norm), without clip, mean or std")
        clip = self.intensity.get("clip")
        if clip is not None and not (isinstance(clip, (list, tuple)) and len(clip) == 2
                                     and all(_number(v) for v in clip) and clip[0] < clip[1]):
            raise ConfigError("config_error", f"{where}: intensity clip {clip!r} is not [low, high]",
                              remedy="give two numbers, the lower first")
        for key in ("mean", "std"):
            if key in self.intensity and not _number(self.intensity[key]):
                raise ConfigError("config_error", f"{where}: intensity {key} {self.intensity[key]!r} is not a number")
        if "std" in self.intensity and self.intensity["std"] <= 0:
            raise ConfigError("config_error", f"{where}: intensity std {self.intensity['std']} is not positive",
                              remedy="network input = (clip(x) - mean) / std: give the std the model was trained with")

    def physical(self, values: Sequence[Any]) -> tuple[Any, ...] | None:
        """``values`` given in this model's axes (``spacing_mm``, ``patch``) in R-L, A-P, S-I order
        (None without an ``orientation``: the model takes the stored axes, which vary per case)."""
        if not self.orientation:
            return None
        out: list[Any] = [None, None, None]
        for a, code in enumerate(self.orientation.upper()):
            out["RLAPSI".index(code) // 2] = values[a]
        return tuple(out)

    def runs_on(self, modality: str | None) -> bool:
        """Whether this member labels a case of ``modality`` (no ``modalities``: every case)."""
        return not self.modalities or str(modality or "").upper() in {m.upper() for m in self.modalities}

    def files(self) -> list[Path]:
        out = [Path(p) for p in (self.path, self.weights) if p]
        if self.kind == "monai_bundle" and self.path:
            out = sorted(p for p in Path(self.path).rglob("*") if p.is_file())
        if self.kind == "nnunet" and self.path:
            from curator.pseudolabel import nnunet

            out = list(nnunet.files(self).values())
        return out

    def fingerprint(self) -> str:
        """Checksums of the model's files + its spec without their locations: changing the
        weights re-runs the cases; moving or renaming the files (a project folder moved, curator
        installed elsewhere) does not."""
        if self.kind == "monai_bundle" and self.path:
            files = {p.relative_to(self.path).as_posix(): p for p in self.files()}
        elif self.kind == "nnunet" and self.path and Path(self.path).is_dir():
            from curator.pseudolabel import nnunet

            files = nnunet.files(self)
        else:
            files = {role: Path(p) for role, p in (("path", self.path), ("weights", self.weights)) if p}
        sums = {}
        for key, p in files.items():
            if not p.exists():
                raise ConfigError("config_error", f"model {self.name!r}: file {p} does not exist",
                                  remedy="fix the model's path/weights in stages.pseudolabel")
            sums[key] = model_file_sum(p)
        return sha256_json({"spec": keyed_spec(self.to_dict()), "files": sums})[:16]


def model_file_sum(path: Path) -> str:
    """SHA-256 of a model file, read once a process while the file stays as it was (its size, times
    and inode): a run fingerprints the ensemble for its settings digest, its plan and the record
    naming each model, and an nnU-Net checkpoint is hundreds of MB."""
    st = path.stat()
    return _file_sum(str(path.resolve()), (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))


@functools.lru_cache(maxsize=256)
def _file_sum(path: str, stamp: tuple[int, ...]) -> str:
    return sha256_file(path)


def keyed_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A model's declaration (:meth:`ModelSpec.to_dict`) as a fingerprint and a case's cache key
    take it: without its files' locations, and without a field added later (:data:`ADDED_LATER`)
    while at its default."""
    return {k: v for k, v in spec.items() if k not in ("path", "weights")
            and not (k in ADDED_LATER and v == ADDED_LATER[k])}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def ensemble_fingerprint(specs: tuple[ModelSpec, ...], fingerprints: Sequence[str] | None = None) -> str:
    """16 hex digits over every member's :meth:`ModelSpec.fingerprint` (files by content; pass
    ``fingerprints`` when they are at hand: they read every weights file)."""
    return sha256_json(list(fingerprints) if fingerprints is not None else [s.fingerprint() for s in specs])[:16]


def absolute(spec: ModelSpec, base: Path) -> ModelSpec:
    """``spec`` with its relative ``path`` and ``weights`` made absolute against ``base``."""
    def fix(p: str | None) -> str | None:
        if not p:
            return p
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    return replace(spec, path=fix(spec.path), weights=fix(spec.weights))


def load_ensemble_file(name_or_path: str) -> tuple[ModelSpec, ...]:
    """Specs of a bundled ensemble (``demo``) or of an ensemble YAML file (``models: [...]``)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = MODELS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        bundled = sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))
        raise ConfigError("config_error", f"no model ensemble {name_or_path!r}",
                          remedy=f"use a bundled ensemble ({bundled}) or a path to an ensemble YAML file")
    doc = load_yaml(path.read_text())
    known = sorted(ENSEMBLE_KEYS)
    if not isinstance(doc, dict):
        got = "is empty" if doc is None else f"is a YAML {type(doc).__name__}, not a mapping"
        raise ConfigError("config_error", f"ensemble file {path} {got}",
                          remedy=f"an ensemble file needs a `models:` mapping key holding the list of model "
                          f"specs (known top-level keys: {known})")
    unknown = sorted(str(k) for k in doc if k not in ENSEMBLE_KEYS)
    if unknown:
        raise ConfigError("config_error", f"ensemble file {path}: unknown top-level key(s) {unknown}; "
                          f"known keys are {known}", remedy="list the ensemble's members under `models:`")
    members = doc.get("models")
    if not isinstance(members, list) or not members:
        got = "has no `models:`" if "models" not in doc else f"has `models: {members!r}`, not a non-empty list"
        raise ConfigError("config_error", f"ensemble file {path} {got}; known top-level keys are {known}",
                          remedy="list the ensemble's members under `models:` (one mapping per model); to run "
                          "without pseudo labels set `enabled: false` on stages.pseudolabel")
    try:
        specs = [ModelSpec.from_dict(m, where=f"{path.name}: models") for m in members]
    except ConfigError as e:  # a member's own check names the model: say which file holds it
        if e.path is not None:
            raise
        raise ConfigError(e.kind, e.detail, path=str(path), remedy=e.remedy) from e
    return tuple(replace(absolute(s, path.parent), source=f"ensemble file {path}") for s in specs)


@dataclass
class LoadedModel:
    """A ready model: ``predict`` maps (B, 1, *patch) inputs to (B, len(terms), *patch) probabilities."""

    spec: ModelSpec
    net: nn.Module
    device: torch.device

    @property
    def terms(self) -> tuple[str, ...]:
        return self.spec.terms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's logits for ``x``, one pass (no mirroring)."""
        out = self.net(x)
        if isinstance(out, (list, tuple)):  # deep supervision: the first output is full resolution
            out = out[0]
        return out.float()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward`, averaged with the flipped-back logits of ``x`` flipped along every
        non-empty combination of ``mirror_axes`` (nnU-Net's ``_internal_maybe_mirror_and_predict``)."""
        out = self.forward(x)
        axes = [2 + a for a in self.spec.mirror_axes]
        flips = [c for n in range(1, len(axes) + 1) for c in itertools.combinations(axes, n)]
        for dims in flips:
            out += torch.flip(self.forward(torch.flip(x, dims)), dims)
        return out / (len(flips) + 1) if flips else out

    @property
    def channels(self) -> int:
        """Output channels the spec implies: one per term (+ background for softmax)."""
        return len(self.terms) + (self.spec.activation == "softmax")

    @property
    def blends_logits(self) -> bool:
        """Whether sliding windows blend this model's logits, the activation applied to the blend
        (nnU-Net's way: its members give nnUNetPredictor's probabilities), not its probabilities."""
        return self.spec.kind == "nnunet"

    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, channels, ...) logits → (B, len(terms), ...) probabilities."""
        if self.spec.activation == "softmax":
            return logits.softmax(1)[:, 1:]
        return logits.sigmoid()

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """What sliding windows blend: :meth:`checked_logits` or :meth:`predict` (:attr:`blends_logits`)."""
        return self.checked_logits(x) if self.blends_logits else self.predict(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.checked_logits(x))

    def checked_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits(x)
        if logits.ndim != 5 or logits.shape[1] != self.channels:
            raise ConfigError("config_error", f"model {self.spec.name!r} gives {tuple(logits.shape)} outputs for "
                              f"a {tuple(x.shape)} batch, but its {len(self.terms)} terms {list(self.terms)} with "
                              f"{self.spec.activation} need {self.channels} channels",
                              remedy="list one term per output channel (softmax: channel 0 is the background), "
                              "or fix `activation`")
        return logits


def _import(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ConfigError("config_error", f"factory {ref!r} must look like 'package.module:callable'")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ConfigError("config_error", f"cannot import model factory {ref!r}: {e}",
                          remedy="install the package that defines the network, or fix `factory`") from e
    return obj


def _state_dict(path: str, where: str | None = None) -> dict[str, Any]:
    """A weights file's state_dict on the CPU, where the network it goes into is built (``load_model``
    moves the network to its device once; loaded onto the GPU, every weight went there, back into
    the CPU-built network and there again; onto ``meta``, it could not be copied at all)."""
    import pickle

    who = f"{where}: " if where else ""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # a pickled object, not tensors: refused by weights_only
        raise ConfigError("config_error", f"{who}cannot load weights {path}: it holds objects other than "
                          f"tensors ({str(e).splitlines()[0][:120]})", path=path,
                          remedy="weights must be a plain state_dict (torch.save(model.state_dict()))") from e
    except Exception as e:  # torch raises OSError, RuntimeError, EOFError for a broken file
        raise ConfigError("config_error", f"{who}cannot read weights {path}: the file is damaged or truncated "
                          f"(not a complete torch.save file; {_first_line(e)[:160]})", path=path,
                          remedy="copy or download the weights file again (compare its size or checksum "
                          "with the original)") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    elif isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    if not isinstance(sd, dict):
        raise ConfigError("config_error", f"{who}weights {path} hold a {type(sd).__name__}, not a state_dict",
                          path=path, remedy="weights must be a plain state_dict (torch.save(model.state_dict()))")
    return sd


def _load_weights(net: nn.Module, path: str, where: str, built: str) -> None:
    """``path``'s state_dict into ``net``; weights of another network (other layers or sizes) are one
    ``config_error`` that summarises the differences (torch lists each: dozens of lines)."""
    sd = _state_dict(path, where)
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own]
    sizes = [f"{k}: file {list(getattr(sd[k], 'shape', []))}, network {list(own[k].shape)}" for k in own
             if k in sd and tuple(getattr(sd[k], "shape", ())) != tuple(own[k].shape)]
    if missing or extra or sizes:
        parts = [f"{len(v)} {what} (e.g. {v[0]})" for v, what in ((sizes, "size mismatch(es)"),
                 (missing, "layer(s) missing from the file"), (extra, "layer(s) the network lacks")) if v]
        raise ConfigError("config_error", f"{where}: weights {path} do not fit {built}: {'; '.join(parts)}",
                          path=path, remedy="the weights were saved from another network or configuration: "
                          "give the factory/kwargs (or network_def) they were trained with, or the weights of "
                          "this network")
    try:
        net.load_state_dict(sd, strict=True)
    except Exception as e:  # e.g. a value that is not a tensor
        raise ConfigError("config_error", f"{where}: cannot load weights {path} into {built}: {_first_line(e)}",
                          path=path, remedy="weights must be a plain state_dict of this network "
                          "(torch.save(model.state_dict()))") from e


def _torchscript(spec: ModelSpec, device: torch.device) -> tuple[nn.Module, ModelSpec]:
    extra = {"curator.json": ""}
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated (torch 2.13) but many models ship as it
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(spec.path), map_location=device, _extra_files=extra)
    except Exception as e:  # torch raises OSError or RuntimeError for a broken archive
        raise ConfigError("config_error", f"model {spec.name!r}: cannot read TorchScript archive {spec.path}: "
                          f"{_first_line(e).split('. ')[0][:200]}", path=str(spec.path),
                          remedy="the file is damaged, truncated or not TorchScript: copy it again, or save the "
                          "model with torch.jit.save(torch.jit.script(net), path) (a state_dict goes into a "
                          "`kind: module` entry's `weights`)") from e
    if extra["curator.json"]:
        meta = json.loads(extra["curator.json"])
        entry = spec.to_dict()
        given = {k: v for k, v in entry.items() if spec.given is None or k in spec.given}  # explicit keys win
        merged = {**{k: v for k, v in meta.items() if k in entry}, **given}
        spec = replace(ModelSpec.from_dict(merged, where=f"model {spec.name}"), given=None)
    return net, spec


def _module(spec: ModelSpec) -> nn.Module:
    if not spec.factory:
        raise ConfigError("config_error", f"model {spec.name!r} of kind 'module' needs `factory`")
    factory = _import(spec.factory)
    if not (isinstance(factory, type) and issubclass(factory, nn.Module)):
        # an ensemble file may come from elsewhere: `subprocess:run` with its kwargs would run a command
        raise ConfigError("config_error", f"model {spec.name!r}: factory {spec.factory!r} is not a network class "
                          f"(a subclass of torch.nn.Module): it is a {type(factory).__name__}",
                          remedy="name the network's class, e.g. monai.networks.nets:UNet; a function that builds "
                                 "one goes into a class of your own package (an ensemble file names no other code)")
    built = f"factory {spec.factory} with kwargs {dict(spec.kwargs)}"
    try:
        net: nn.Module = factory(**spec.kwargs)
    except Exception as e:  # a kwargs typo (TypeError) or a value the class refuses
        import inspect

        try:
            params = [p for p in inspect.signature(factory).parameters if p not in ("self", "args", "kwargs")]
        except (TypeError, ValueError):
            params = []
        raise ConfigError("config_error", f"model {spec.name!r}: cannot build {built}: {_first_line(e)}",
                          remedy="fix the entry's `kwargs`" + (f" ({spec.factory} takes {params})" if params else "")
                          ) from e
    if spec.weights:
        _load_weights(net, spec.weights, f"model {spec.name!r}", built)
    return net


def _monai_bundle(spec: ModelSpec) -> tuple[nn.Module, ModelSpec]:
    try:
        from monai.bundle.config_parser import ConfigParser
    except ImportError as e:
        raise ConfigError("config_error", f"model {spec.name!r} is a MONAI bundle but monai is not installed",
                          remedy="pip install monai") from e
    root = Path(str(spec.path))
    configs = [p for ext in ("json", "yaml") for p in [root / "configs" / f"inference.{ext}"] if p.exists()]
    if not configs:
        raise ConfigError("config_error", f"{root} has no configs/inference.json or .yaml",
                          remedy="point `path` at the bundle's root folder")
    where = f"model {spec.name!r} (MONAI bundle {root})"
    parser = ConfigParser()
    parser.read_config([str(c) for c in configs])
    meta_file = root / "configs" / "metadata.json"
    if meta_file.exists():
        parser.read_meta(str(meta_file))
    parser["bundle_root"] = str(root)
    from curator.pseudolabel.bundle import NEEDED, check_network_def, read_spec

    check_network_def(parser, root)
    weights = root / "models" / "model.pt"
    if not weights.is_file():  # the network would run with its random initial weights
        there = sorted(p.name for p in (root / "models").glob("*")) if (root / "models").is_dir() else []
        ts = [n for n in there if n.endswith(".ts")]
        raise ConfigError("config_error", f"{where} has no models/model.pt (the weights)"
                          + (f"; models/ holds {there}" if there else ""), path=str(root),
                          remedy=(f"curator reads a bundle's weights from models/model.pt, a state_dict; "
                                  f"{ts[0]} is TorchScript: declare it as `kind: torchscript, path: "
                                  f"{root / 'models' / ts[0]}` with the spec settings (terms, patch, spacing_mm, "
                                  "orientation, intensity)") if ts else
                          "put the network's state_dict there (torch.save(net.state_dict(), 'models/model.pt')) "
                          "or point `path` at the bundle's root folder")
    try:
        net: nn.Module = parser.get_parsed_content("network_def")
    except Exception as e:  # MONAI wraps the class's own error (a bad argument)
        raise ConfigError("config_error", f"{where}: cannot build network_def: {_first_line(e)}",
                          path=str(configs[0]), remedy="fix the bundle's network_def (its class's arguments)") from e
    _load_weights(net, str(weights), where, f"network_def {parser.get('network_def#_target_')!r}")
    if not spec.terms:
        from curator.pseudolabel.terms import term_id

        chans = parser.get("_meta_#network_data_format#outputs#pred#channel_def", {}) or {}
        names = [str(chans[k]) for k in sorted(chans, key=int) if int(k) > 0]
        spec = replace(spec, terms=tuple(term_id(n) for n in names))
    filled, unreadable, ignored = read_spec(parser)
    given = {k: v for k, v in spec.to_dict().items() if spec.given is None or k in spec.given}
    missing = [k for k in NEEDED if k not in given and k not in filled]
    if missing:
        k = missing[0]
        raise ConfigError("config_error", f"{where}: its configs do not say the model's `{k}` ({unreadable[k]}) "
                          "and the entry does not give it", path=str(configs[0]), remedy=BUNDLE_HELP[k])
    if ignored and not set(NEEDED) <= set(given):
        log.warning("%s: curator does not apply the bundle's %s (it reads Orientation, Spacing, "
                    "ScaleIntensityRange and NormalizeIntensity from its preprocessing)", where, sorted(set(ignored)))
    merged = {**spec.to_dict(), **filled, **given}
    return net, replace(ModelSpec.from_dict(merged, where=where), given=None)


BUNDLE_HELP = {
    "intensity": "give the entry `intensity:` as the network's input normalisation on physical values, e.g. "
                 "`{clip: [a_min, a_max], mean: m, std: s}` for MONAI's ScaleIntensityRanged (std = (a_max - "
                 "a_min) / (b_max - b_min), mean = a_min - b_min * std), `{zscore: image}` for NormalizeIntensityd, "
                 "`{mean: 0, std: 1}` for raw values",
    "spacing_mm": "give the entry `spacing_mm:` as the spacing (mm) the model was trained on, in its "
                  "`orientation` axes (MONAI's Spacingd pixdim), or `spacing_mm: null` to run on the stored grid",
    "orientation": "give the entry `orientation:` as the axis codes the model expects (MONAI's Orientationd "
                   "axcodes, e.g. RAS), or `orientation: null` to run in the stored axes",
}


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]


def load_model(spec: ModelSpec, device: str | torch.device) -> LoadedModel:
    dev = torch.device(device)
    if spec.kind == "torchscript":
        net, spec = _torchscript(spec, dev)
    elif spec.kind == "monai_bundle":
        net, spec = _monai_bundle(spec)
    elif spec.kind == "nnunet":
        from curator.pseudolabel import nnunet

        spec = nnunet.fill_spec(spec)
        net = nnunet.network(spec)
    else:
        net = _module(spec)
    if not spec.terms:
        raise ConfigError("config_error", f"model {spec.name!r} declares no output terms",
                          remedy="list `terms:` (one term id per output channel, background excluded)")
    net = net.to(dev).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return LoadedModel(spec, net, dev)


@functools.lru_cache(maxsize=2)
def _cached(key: str, device: str) -> tuple[LoadedModel, ...]:
    doc = json.loads(key)
    specs = [replace(ModelSpec.from_dict(d), given=None if g is None else frozenset(g))
             for d, g in zip(doc["specs"], doc["given"], strict=True)]
    out = []
    for spec, source in zip(specs, doc["sources"], strict=True):
        try:
            out.append(load_model(spec, device))
        except ConfigError as e:  # say where the entry is written (the message names the model)
            if not source or source in e.detail:
                raise
            raise ConfigError(e.kind, f"{e.detail} (the entry is in {source})", path=e.path, remedy=e.remedy) from e
    return tuple(out)


def load_ensemble(specs: tuple[ModelSpec, ...], device: str, fingerprints: Sequence[str] | None = None
                  ) -> tuple[LoadedModel, ...]:
    """Load (once per process, device and set of weight checksums) every member of an ensemble;
    ``fingerprints``: the members' :meth:`ModelSpec.fingerprint`, when the caller has them (the
    stage's plan takes them once a run, so no case reads the weights files to check them)."""
    if not specs:
        raise ConfigError("config_error", "the pseudolabel stage has no models",
                          remedy="set stages.pseudolabel.ensemble (e.g. demo) or stages.pseudolabel.models")
    files = list(fingerprints) if fingerprints is not None else [s.fingerprint() for s in specs]
    key = json.dumps({"specs": [s.to_dict() for s in specs], "files": files,
                      "given": [None if s.given is None else sorted(s.given) for s in specs],
                      "sources": [s.source for s in specs]}, sort_keys=True)
    return _cached(key, device)
