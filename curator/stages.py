"""The pipeline's stages, in order. A stage that is not installed yet is simply absent.

Each entry is ``name -> "module:Class"``; classes are imported when used, so ``curator``
starts fast and a broken optional stage cannot break ingest.
"""

from __future__ import annotations

import difflib
import importlib.util
from collections.abc import Iterable
from typing import TYPE_CHECKING

from curator.runner.stage import Stage, load_stage_class

if TYPE_CHECKING:
    from curator.runner.context import Context

STAGES: dict[str, str] = {
    "ingest": "curator.ingest.stage:IngestStage",
    "dedup": "curator.dedup.stage:DedupStage",
    "harmonize": "curator.harmonize.stage:HarmonizeStage",
    "preprocess": "curator.preprocess.stage:PreprocessStage",
    "pseudolabel": "curator.pseudolabel.stage:PseudolabelStage",
    "qc": "curator.qc.stage:QCStage",
}

RELEASE_SECTIONS = ("splits",)  # `stages:` sections that configure release steps, not stages


def refuse_unknown(where: str, names: Iterable[str], valid: Iterable[str]) -> None:
    """A ``ConfigError`` naming each of ``names`` (``--stages``, the keys of ``stages:``) not in
    ``valid``, with the closest stage or section name, so ``harmonise:`` is not silently ignored."""
    from curator.errors import ConfigError

    valid = list(valid)
    bad = [n for n in names if n not in valid]
    if not bad:
        return
    known = [*STAGES, *RELEASE_SECTIONS]
    hints = {n: difflib.get_close_matches(str(n), known, n=1) for n in bad}
    also = f"; `stages:` may also hold {', '.join(RELEASE_SECTIONS)}" if where == "stages:" else ""
    raise ConfigError("config_error", f"{where} names no stage: " + ", ".join(
        f"{n!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for n, h in hints.items()),
        remedy=f"the stages are {', '.join(available())}{also}")


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


def configured(ctx: Context, names: Iterable[str] | None = None) -> list[tuple[str, type[Stage], bool]]:
    """``(name, class, enabled)`` of the installed stages (``names``: only those), in order —
    each stage's settings are parsed, so a mistake in them is a ``ConfigError`` here."""
    chosen = None if names is None else set(names)
    out = []
    for name, ref in available().items():
        if chosen is not None and name not in chosen:
            continue
        cls = load_stage_class(ref)
        out.append((name, cls, ctx.stage_config(cls.config_class, name).enabled))
    return out


def stage_class(name: str) -> type[Stage]:
    from curator.errors import ConfigError

    refs = available()
    if name not in refs:
        raise ConfigError("config_error", f"no stage named {name!r}; available: {list(refs)}")
    return load_stage_class(refs[name])
