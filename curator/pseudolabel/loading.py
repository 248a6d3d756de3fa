"""Networks from :class:`~curator.pseudolabel.models.ModelSpec` declarations: ``load_model`` builds
one (TorchScript, module + weights, MONAI bundle, nnU-Net result folder) and ``load_ensemble`` every
member of an ensemble, cached per process (keyed by the weights' checksums and the device), so a GPU
worker loads them once, not once per case. Weights of another network, a damaged file or a ``kwargs``
typo are one ``config_error`` naming the model.

>>> from curator.pseudolabel.models import ModelSpec
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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curator.errors import ConfigError
from curator.pseudolabel.models import ModelSpec

log = logging.getLogger("curator")


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
    if not Path(path).is_file():  # torch's FileNotFoundError would read as a damaged file below
        raise ConfigError("config_error", f"{who}weights file {path} does not exist", path=path,
                          remedy="check the weights file's path (and that the file was copied or downloaded)")
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


def _load_weights(net: nn.Module, path: str, where: str, built: str, sd: dict[str, Any] | None = None) -> None:
    """``path``'s state_dict (``sd``: already read) into ``net``; weights of another network (other
    layers or sizes) are one ``config_error`` that summarises the differences (torch lists each:
    dozens of lines)."""
    sd = _state_dict(path, where) if sd is None else sd
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
    """The network ``factory(**kwargs)`` with its ``weights``. Importing the factory's module runs
    that module's top-level code, so everything that can be checked without it is checked first:
    the entry's terms, and its weights file (read with ``weights_only``)."""
    if not spec.factory:
        raise ConfigError("config_error", f"model {spec.name!r} of kind 'module' needs `factory`")
    _need_terms(spec)
    sd = _state_dict(spec.weights, f"model {spec.name!r}") if spec.weights else None
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
        _load_weights(net, spec.weights, f"model {spec.name!r}", built, sd)
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


def _need_terms(spec: ModelSpec) -> None:
    if not spec.terms:
        raise ConfigError("config_error", f"model {spec.name!r} declares no output terms",
                          remedy="list `terms:` (one term id per output channel, background excluded)")


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
    _need_terms(spec)
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
            said = sourced(e, source)
            if said is e:
                raise
            raise said from e
    return tuple(out)


def sourced(e: ConfigError, source: str | None) -> ConfigError:
    """``e`` saying where the model entry it is about is written (``source``: an ensemble file,
    pipeline.yaml), unless it says so already."""
    if not source or source in e.detail:
        return e
    return ConfigError(e.kind, f"{e.detail} (the entry is in {source})", path=e.path, remedy=e.remedy)


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
