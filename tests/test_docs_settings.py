"""Every setting pipeline.yaml (or a model entry of an ensemble) takes, and every command-line
option, is named in README.md or docs/*.md: nine keys (`stages.ingest.max_voxels`, pseudolabel's
thresholds, `executor.progress`, `sources[].name`, ...) and a dozen options (`run --no-release`,
`report --max-gallery`, `eval --min-ml`, ...) were in the code or `--help` with no word of them in
any document."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from curator.config import Config, PipelineConfig
from curator.pseudolabel.models import ModelSpec
from curator.release.splits import SplitConfig
from curator.runner.stage import load_stage_class
from curator.stages import RELEASE_SECTIONS, STAGES

ROOT = Path(__file__).resolve().parents[1]


def _docs() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def named(key: str, text: str) -> bool:
    """Whether ``key`` is named as a setting: in code quotes (`key`, `key: 1`, `{key: 1}`,
    `stages.qc.key`), or as a key of a YAML example (`  key: 1`, `{a: 1, key: 2}`). A word of
    the prose (`the threshold`) does not count."""
    k = re.escape(key)
    return any(re.search(p, text, re.MULTILINE) for p in (
        rf"`[^`\n]*(?<![\w-]){k}(?![\w-])[^`\n]*`",  # inside an inline code span
        rf"^[ \t-]*{k}:(\s|$)",  # a YAML block's key
        rf"[{{,]\s*{k}:\s"))  # a flow mapping's key


def _nested(cls: type[Config]) -> list[type[Config]]:
    """The configs a config's fields hold (``executor: ExecutorConfig``, ``sources: tuple[SourceConfig, ...]``)."""
    out: list[type[Config]] = []
    for tp in typing.get_type_hints(cls).values():
        for t in (tp, *typing.get_args(tp)):
            if isinstance(t, type) and issubclass(t, Config) and t not in out:
                out.append(t)
    return out


def settings() -> list[tuple[str, str]]:
    """``(config class, setting)`` of every config pipeline.yaml reaches: the top level and what
    it holds, each stage's settings (and the configs they hold: a model entry, `etta:`), and the
    `stages:` sections of release steps."""
    assert RELEASE_SECTIONS == ("splits",), "a new release section: add its config class below"
    todo: list[type[Config]] = [PipelineConfig, SplitConfig, ModelSpec,
                                *(load_stage_class(ref).config_class for ref in STAGES.values())]
    seen: list[type[Config]] = []
    while todo:
        cls = todo.pop(0)
        if cls not in seen:
            seen.append(cls)
            todo += _nested(cls)
    return [(c.__name__, f.name) for c in seen for f in dataclasses.fields(c) if f.init]


def test_every_setting_is_named_in_the_docs() -> None:
    text = _docs()
    keys = settings()
    assert len(keys) > 100 and ("IngestConfig", "max_voxels") in keys and ("EttaConfig", "lr") in keys
    missing = [f"{cls}.{key}" for cls, key in keys if not named(key, text)]
    assert not missing, f"settings no document names (say them where their stage's settings are): {missing}"


@pytest.mark.parametrize(("text", "key", "found"), [
    ("stages.ingest takes `max_voxels` (default 2e9)", "max_voxels", True),
    ("`stages.ingest.max_voxels`", "max_voxels", True),
    ("ingest: {on_bad_case: warn, max_voxels: 10}", "max_voxels", True),
    ("  max_voxels: 10   # a comment", "max_voxels", True),
    ("the most voxels a file may have (max_voxels)", "max_voxels", False),  # prose, not a setting's name
    ("`max_voxels_total`", "max_voxels", False),
    ("`threshold`", "inconsistency_threshold", False),
])
def test_a_setting_counts_as_named_only_in_code_quotes_or_yaml(text: str, key: str, found: bool) -> None:
    assert named(key, text) is found


def test_a_new_setting_no_document_names_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check would catch a field added to a stage's config without a word in the docs."""
    ingest = load_stage_class(STAGES["ingest"]).config_class
    grown = dataclasses.make_dataclass("IngestConfig", [("min_slice_gap_mm_undocumented", float, 0.0)],
                                       bases=(ingest,), frozen=True)
    monkeypatch.setattr(load_stage_class(STAGES["ingest"]), "config_class", grown)
    keys = settings()
    assert ("IngestConfig", "min_slice_gap_mm_undocumented") in keys
    with pytest.raises(AssertionError, match="min_slice_gap_mm_undocumented"):
        test_every_setting_is_named_in_the_docs()


def options() -> list[tuple[str, list[str]]]:
    """``(command, its option's long names)`` of every visible option of every command (typer
    vendors its own click: commands and options are told apart by what they have)."""
    import typer

    from curator.cli import app

    out: list[tuple[str, list[str]]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        if hasattr(cmd, "commands"):  # a group
            for name, sub in cmd.commands.items():
                if not sub.hidden:
                    walk(sub, [*path, name])
            return
        for p in cmd.params:
            names = [o for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
            if p.param_type_name == "option" and not p.hidden and names and "--help" not in names:
                out.append((" ".join(["curator", *path]), names))

    walk(typer.main.get_command(app), [])
    return out


def test_every_command_line_option_is_named_in_the_docs() -> None:
    """`run --no-release`, `report --max-gallery`, `eval --min-ml`, `labels tree --depth`, ...
    were in `--help` only."""
    text = _docs()
    found = options()
    assert len(found) > 50 and ("curator report", ["--max-gallery"]) in found
    missing = [f"{cmd} {'/'.join(names)}" for cmd, names in found
               if not any(re.search(rf"{re.escape(o)}(?![\w-])", text) for o in names)]
    assert not missing, f"options no document names (say them where their command is): {missing}"


def test_every_registry_option_says_it_takes_folders_too() -> None:
    """`sources list` and `sources show` said --registry takes "extra dataset YAML files", while
    they read folders as `sources check` and `labels check` do."""
    import typer

    from curator.cli import app

    said: dict[str, str] = {}

    def walk(cmd: Any, path: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])
        for p in getattr(cmd, "params", []) if not hasattr(cmd, "commands") else []:
            if "--registry" in p.opts and path != ["card"]:  # card: --registry alone is the built-in card
                said[" ".join(path)] = p.help
    walk(typer.main.get_command(app), [])
    assert {"sources list", "sources show", "sources check", "labels check"} <= set(said)
    assert set(said.values()) == {"extra dataset YAML files or folders"}, said
