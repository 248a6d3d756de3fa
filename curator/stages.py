"""The pipeline's stages, in order. A stage that is not installed yet is simply absent.

Each entry is ``name -> "module:Class"``; classes are imported when used, so ``curator``
starts fast and a broken optional stage cannot break ingest.
"""

from __future__ import annotations

import importlib.util

from curator.runner.stage import Stage, load_stage_class

STAGES: dict[str, str] = {
    "ingest": "curator.ingest.stage:IngestStage",
    "dedup": "curator.dedup.stage:DedupStage",
    "harmonize": "curator.harmonize.stage:HarmonizeStage",
    "preprocess": "curator.preprocess.stage:PreprocessStage",
    "pseudolabel": "curator.pseudolabel.stage:PseudolabelStage",
    "qc": "curator.qc.stage:QCStage",
}


def available() -> dict[str, str]:
    """Stages whose module exists in this installation."""
    out = {}
    for name, ref in STAGES.items():
        module = ref.split(":", 1)[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # its subpackage does not exist yet
            found = False
        if found:
            out[name] = ref
    return out


def stage_class(name: str) -> type[Stage]:
    from curator.errors import ConfigError

    refs = available()
    if name not in refs:
        raise ConfigError("config_error", f"no stage named {name!r}; available: {list(refs)}")
    return load_stage_class(refs[name])
