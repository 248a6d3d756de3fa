"""Settings of the pseudolabel stage (``stages.pseudolabel`` in pipeline.yaml).

>>> cfg = PseudolabelConfig.from_dict({"ensemble": "demo", "overlap": 0.25})
>>> [s.name for s in cfg.specs()]
['demo_unet', 'demo_resnet', 'demo_mixer']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from curator.config import StageConfig, finalize_only, nohash
from curator.errors import ConfigError, CuratorError
from curator.pseudolabel.core import AttentionParams
from curator.pseudolabel.etta import EttaConfig
from curator.pseudolabel.models import MODELS_DIR, ModelSpec, absolute, load_ensemble_file


@dataclass(frozen=True)
class PseudolabelConfig(StageConfig):
    ensemble: str | None = None  # a bundled ensemble ("demo") or a path to an ensemble YAML file
    models: tuple[ModelSpec, ...] = ()  # members given inline (added to the ensemble's)
    terms: tuple[str, ...] = ()  # only these term ids (empty: every term the models predict)
    patch: tuple[int, ...] | None = None  # the first model's axes; default: the models' patch
    overlap: float = 0.5
    amp: bool = True  # float16 autocast on CUDA
    blend: Literal["float32", "float16"] = "float32"  # dtype of the blending buffers (float16: half the memory)
    threshold: float = 0.5
    inconsistency_threshold: float = 0.1
    uncertainty_threshold: float = 0.05
    clean_iterations: int = 2
    resample_tolerance: float = 0.1  # relative spacing difference that triggers resampling
    review_fraction: float = finalize_only(0.05)  # top share of cases flagged for review (ranked in finalize)
    etta: EttaConfig = field(default_factory=EttaConfig)
    batch_size: int = nohash(4)
    device: str = nohash("auto")  # auto | cpu | cuda | cuda:N
    prefetch: Literal["auto", "on", "off"] = nohash("auto")  # auto: on with CUDA
    # torch threads per worker on the CPU. 0 (default): this machine's cores ÷ executor.workers, so
    # the cores are used whatever the worker count; a fixed number gives the same bytes whatever
    # the worker count or executor (torch's CPU convolutions round differently with the thread
    # count: attention values in the 7th digit)
    threads: int = nohash(0)

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < 1:
            raise ConfigError("config_error", f"stages.pseudolabel.overlap = {self.overlap}; use 0 <= overlap < 1")
        if not 0 < self.review_fraction <= 1:
            raise ConfigError("config_error", "stages.pseudolabel.review_fraction must be in (0, 1]")
        for name in ("threshold", "inconsistency_threshold", "uncertainty_threshold"):
            value = getattr(self, name)
            if not 0 < value < 1:  # a probability cut; -1 labelled every voxel of the volume
                raise ConfigError("config_error", f"stages.pseudolabel.{name} = {value}; use a value strictly "
                                  "between 0 and 1", remedy=f"the default is {type(self).__dataclass_fields__[name].default}")
        if self.threads < 0:
            raise ConfigError("config_error", f"stages.pseudolabel.threads = {self.threads}; use 0 (cores ÷ "
                              "executor.workers, the default) or a fixed count (the same bytes whatever the "
                              "worker count)")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):  # `gpu`, `cuda0`: every case failed
            raise ConfigError("config_error", f"stages.pseudolabel.device = {self.device!r}; use auto, cpu, cuda "
                              "or cuda:N", remedy="auto takes the GPU when the worker sees one, else the CPU")
        if self.clean_iterations < 0:
            raise ConfigError("config_error", f"stages.pseudolabel.clean_iterations = {self.clean_iterations}; "
                              "use 0 or more")

    def specs(self, folder: Path | None = None) -> tuple[ModelSpec, ...]:
        """The ensemble's members, then the inline ones. A relative ``ensemble`` path and inline
        models' relative ``path``/``weights`` are relative to ``folder`` (the one holding
        pipeline.yaml: ``PipelineConfig.folder``; default: the working directory); an ensemble
        file's own members are relative to that file."""
        return tuple(s for s, _ in self.sourced_specs(folder))

    def sourced_specs(self, folder: Path | None = None) -> list[tuple[ModelSpec, str]]:
        """:meth:`specs`, each with where it is given and what its relative paths are relative to
        (for error messages)."""
        base = folder or Path.cwd()
        ensemble = self.ensemble
        if ensemble and Path(ensemble).suffix:  # a file, not a bundled name
            ensemble = str(base / Path(ensemble).expanduser())
        members = load_ensemble_file(ensemble) if ensemble else ()
        where = ""
        if ensemble:
            file = Path(ensemble) if Path(ensemble).suffix else MODELS_DIR / f"{ensemble}.yaml"
            where = f"ensemble file {file} (relative paths there are relative to {file.parent})"
        inline = f"stages.pseudolabel.models in pipeline.yaml (relative paths there are relative to {base})"
        return [(m, where) for m in members] + [(replace(absolute(m, base), source=inline), inline)
                                                for m in self.models]

    def params(self) -> AttentionParams:
        return AttentionParams(self.threshold, self.inconsistency_threshold, self.uncertainty_threshold,
                               self.clean_iterations)

    def resolved_device(self) -> str:
        """The device this worker runs the models on. A GPU the worker cannot see is a
        ``gpu_unavailable`` error of the case, not cached: the same run on a GPU worker retries it
        (a ``config_error`` was kept as the case's result, and ``device`` is no part of its key)."""
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise CuratorError("gpu_unavailable", f"stages.pseudolabel.device = {self.device} but this worker "
                                   "sees no CUDA device", remedy="use device: auto (falls back to the CPU) or run "
                                   "on a GPU worker")
            index, count = torch.device(self.device).index, torch.cuda.device_count()
            if index is not None and index >= count:  # CUDA's `invalid device ordinal` on every case
                raise CuratorError("gpu_unavailable", f"stages.pseudolabel.device = {self.device} but this worker "
                                   f"sees {count} CUDA device(s) (cuda:0 to cuda:{count - 1})",
                                   remedy="with one Dask worker per GPU (CUDA_VISIBLE_DEVICES=k) each worker's GPU "
                                   "is cuda:0: use device: cuda (or auto)")
        return self.device

    def use_prefetch(self, device: str) -> bool:
        return self.prefetch == "on" or (self.prefetch == "auto" and device.startswith("cuda"))


def _grid_key(spec: ModelSpec, values: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    """``values`` (a spacing or a patch in the model's axes) comparable across members: along the
    body axes (R-L, A-P, S-I) when the model declares an orientation; the same on every axis
    needs none; else in the stored axes (which only members without an orientation share)."""
    if values is None:
        return None
    vals = tuple(float(v) for v in values)
    if len(set(vals)) == 1:
        return ("isotropic", vals)
    ras = spec.physical(vals)
    return ("stored axes", vals) if ras is None else ("RAS", ras)


def _describe(spec: ModelSpec, values: tuple[Any, ...] | None, unit: str) -> str:
    if values is None:
        return f"{spec.name}: any"
    ras = spec.physical(values)
    where = (f" in {spec.orientation} axes = R-L {ras[0]}, A-P {ras[1]}, S-I {ras[2]}" if ras is not None
             else " in the stored axes (no orientation)")
    return f"{spec.name}: {list(values)} {unit}{where}"


def check_ensemble(specs: tuple[ModelSpec, ...], patch: tuple[int, ...] | None) -> tuple[int, ...]:
    """The ensemble's common patch (the first model's axes); members must share one physical grid
    (spacing along the body axes, whatever each model's axis order) and patch. Each normalises its
    input its own way (``intensity``: the reader makes each member's input, ``SlabReader.for_intensity``)."""
    if not specs:
        raise ConfigError("config_error", "stages.pseudolabel has no models",
                          remedy="set `ensemble:` (e.g. demo) or list `models:`")
    if len({_grid_key(s, s.spacing_mm) for s in specs}) > 1:
        raise ConfigError("config_error", "the ensemble's models are trained on different grids: "
                          + "; ".join(_describe(s, s.spacing_mm, "mm") for s in specs),
                          remedy="ensemble members must share one grid (spacing_mm is in each model's "
                          "`orientation` axes: equal spacings along the same body axes are one grid)")
    if not patch:
        if len({_grid_key(s, s.patch) for s in specs}) > 1:
            raise ConfigError("config_error", "the ensemble's models use different patches: "
                              + "; ".join(_describe(s, s.patch, "voxels") for s in specs),
                              remedy="set stages.pseudolabel.patch to one patch size for all models "
                              "(in the first model's axes)")
        patch = tuple(specs[0].patch)
    divisor = max(s.divisor for s in specs)
    if len(patch) != 3 or any(int(p) < 1 or int(p) % divisor for p in patch):
        raise ConfigError("config_error", f"the ensemble's patch {list(patch)} is not three multiples of "
                          f"{divisor} (the models' `divisor`)", remedy="give a patch whose sides the networks "
                          "can halve as often as they downsample, e.g. the one they were trained with")
    return tuple(int(p) for p in patch)
