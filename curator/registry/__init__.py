"""The dataset registry: built-in dataset YAMLs under ``label_system/datasets`` plus user files."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from curator.errors import RegistryError
from curator.registry.spec import (
    DatasetSpec,
    Issue,
    LabelSpec,
    LayoutEntry,
    load_dataset_file,
    parse_spec,
    read_dataset_yaml,
)
from curator.resources import resource_dir

__all__ = ["NOTE_KINDS", "DatasetSpec", "Issue", "LabelSpec", "LayoutEntry", "Registry", "load_dataset_file",
           "load_registry", "taxonomy_file_note", "validate_files", "with_extra", "yaml_files"]

# with_extra's notes said on purpose (a fixed copy of a built-in): severity info in `labels check`
# (never fails --strict) and INFO in the run log; its other notes (taxonomy_file) are warnings
NOTE_KINDS = frozenset({"overrides_builtin"})


@dataclass(frozen=True)
class Registry:
    datasets: dict[str, DatasetSpec]

    def get(self, name: str) -> DatasetSpec:
        if name in self.datasets:
            return self.datasets[name]
        lower = {k.lower(): k for k in self.datasets}
        if name.lower() in lower:
            return self.datasets[lower[name.lower()]]
        close = difflib.get_close_matches(name, list(self.datasets), n=3)
        raise RegistryError("registry_error", f"no dataset named {name!r} in the registry",
                            remedy=(f"did you mean {', '.join(close)}? " if close else "") +
                            "list them with `curator sources list`, or give the path of a dataset YAML")

    def names(self) -> list[str]:
        return sorted(self.datasets, key=str.lower)


def yaml_files(p: Path) -> list[Path]:
    return sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml")) if p.is_dir() else [p]


def builtin_dir() -> Path:
    return resource_dir("label_system") / "datasets"


def taxonomy_file_note(d: object, f: Path) -> Issue | None:
    """A ``taxonomy_file`` note when ``d`` (a registry file's YAML) is a taxonomy file rather than a
    dataset YAML: it has a taxonomy's ``terms:`` or ``extends:`` and none of a dataset's ``name``,
    ``layout`` or ``labels`` (a lab keeping its taxonomy extension beside its dataset files)."""
    if not isinstance(d, dict) or not {"terms", "extends"} & set(d) or {"name", "layout", "labels"} & set(d):
        return None
    return Issue(f.name, "taxonomy_file", "a taxonomy file (top-level " + ", ".join(
        f"`{k}:`" for k in ("extends", "terms", "synonyms") if k in d) + "), not a dataset YAML: not read as "
        "a dataset. A taxonomy is given as `stages.harmonize.taxonomy:` in pipeline.yaml (`--taxonomy` for "
        "`curator labels check` and `curator sources check`; docs/taxonomy.md, 'A taxonomy of your own'); "
        "keep it out of `registry:` folders to silence this")


def validate_files(paths: list[Path], notes: list[Issue] | None = None) -> tuple[dict[str, DatasetSpec], list[Issue]]:
    """Parse every file; return the valid specs and every issue (duplicates included). A taxonomy
    file among them is skipped, with a ``taxonomy_file`` note appended to ``notes``."""
    specs: dict[str, DatasetSpec] = {}
    issues: list[Issue] = []
    twice: dict[str, list[str]] = {}  # a dataset name -> the files defining it, when more than one
    for f in paths:
        try:
            d, lines = read_dataset_yaml(f.read_text(encoding="utf-8"), f.name)
        except yaml.YAMLError as e:
            issues.append(Issue(f.name, "yaml", str(e)))
            continue
        except OSError as e:  # a `registry:` entry that is missing, a folder, unreadable
            # by its name (the loc), not its path: a run's problem row is published in the release
            issues.append(Issue(f.name, "file", f"cannot be read: {e.strerror or e}"))
            continue
        note = taxonomy_file_note(d, f)
        if note is not None:
            (notes if notes is not None else issues).append(note)
            continue
        spec, errs = parse_spec(d, str(f), lines)
        name = d.get("name") if isinstance(d, dict) and isinstance(d.get("name"), str) else None
        issues += [replace(i, dataset=name) for i in errs]
        if spec is None:
            continue
        if spec.name in specs or spec.name in twice:
            # which file is meant cannot be known: neither is used (a source naming it is refused)
            first = specs.pop(spec.name, None)
            twice.setdefault(spec.name, [Path(first.path).name] if first else []).append(f.name)
            issues.append(Issue(f.name, "duplicate", f"dataset {spec.name!r} is defined in "
                                f"{' and '.join(twice[spec.name])}: neither is used", dataset=spec.name))
            continue
        specs[spec.name] = spec
    return specs, issues


def with_extra(extra: tuple[Path, ...] | list[Path] = ()
               ) -> tuple[dict[str, DatasetSpec], list[Issue], list[Issue], list[Issue]]:
    """Built-in specs, then the ``extra`` files' over them: ``(specs, built-in issues, extra
    files' issues, notes)``. Notes are no errors: a file naming a built-in dataset replaces it (a
    fixed copy of a built-in YAML, as a run with it in ``registry:`` uses it), one
    ``overrides_builtin`` note each (info, :data:`NOTE_KINDS`); a taxonomy file among the extra
    files is skipped, one ``taxonomy_file`` note each (a warning)."""
    specs, issues = validate_files(yaml_files(builtin_dir()))
    files = [f for p in extra for f in yaml_files(Path(p))]
    notes: list[Issue] = []
    mine, more = validate_files(files, notes)
    notes += [Issue(Path(s.path).name, "overrides_builtin", f"replaces the built-in dataset {n!r} "
                    f"({Path(specs[n].path).name})") for n, s in mine.items() if n in specs]
    return {**specs, **mine}, issues, more, notes


def load_registry(extra: tuple[Path, ...] | list[Path] = (), strict: bool = True) -> Registry:
    specs, builtin_issues, extra_issues, _ = with_extra(extra)
    issues = builtin_issues + extra_issues
    if issues and strict:
        listing = "; ".join(f"{i.loc} [{i.kind}] {i.message}" for i in issues[:20])
        raise RegistryError("registry_error", f"{len(issues)} problem(s) in the registry: {listing}",
                            remedy="run `curator labels check` for the full list and fix the YAML files")
    return Registry(specs)
