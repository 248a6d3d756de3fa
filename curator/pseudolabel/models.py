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
``curator/pseudolabel/models/``. This module is the declaration — the spec, its fingerprint and
cache key, ensemble files; :mod:`curator.pseudolabel.loading` builds the networks.

>>> spec = ModelSpec.from_dict({"name": "m", "factory": "curator.pseudolabel.nets:TinyUNet",
...                             "kwargs": {"out_channels": 3}, "terms": ["liver", "spleen"]})
>>> spec.kind, spec.terms
('module', ('liver', 'spleen'))
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from curator.config import Config
from curator.errors import ConfigError
from curator.io.fsutil import sha256_file, sha256_json
from curator.pseudolabel.reader import ZSCORE_MODES
from curator.yamlio import load_yaml

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
