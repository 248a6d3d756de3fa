"""Lineage of a release: its parent version, the registry, taxonomy and models it was built with,
and the checksums of its inputs (all recorded in ``release.json``).

The parent is ``release.parent`` from pipeline.yaml, or else the newest existing version of
the collection that is older than the one being built. Splits are inherited from it, and
``curator diff`` compares against it by default.

>>> version_key("1.2.0") < version_key("1.10.0") and version_key("1.0.0-rc1") < version_key("1.0.0")
True
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import yaml

from curator.config import SEMVER
from curator.errors import ConfigError, ReleaseError
from curator.io.fsutil import sha256_file, sha256_json

if TYPE_CHECKING:  # pragma: no cover
    from curator.release.build import ReleaseBuilder
    from curator.runner.context import Context



def version_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, Any], ...]]:
    """Sort key of a semantic version (a pre-release sorts before its release)."""
    m = SEMVER.match(version)
    if not m:
        raise ReleaseError("release_error", f"{version!r} is not a semantic version",
                           remedy="use MAJOR.MINOR.PATCH, e.g. 0.2.0")
    pre = m.group(4)
    parts = tuple((0, int(x)) if x.isdigit() else (1, x) for x in pre.split(".")) if pre else ()
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if pre else 1, parts


def existing_versions(collection_dir: Path) -> list[str]:
    """Versions with a release.json under ``collection_dir``, oldest first."""
    if not collection_dir.is_dir():
        return []
    found = [d.name for d in collection_dir.iterdir()
             if d.is_dir() and SEMVER.match(d.name) and (d / "release.json").is_file()]
    return sorted(found, key=version_key)


def resolve_parent(ctx: Context) -> Path | None:
    """The parent release folder (see the module docstring), or None for a first release."""
    rc = ctx.config.release
    coll = Path(rc.root) / rc.collection
    current = version_key(rc.version)
    if rc.parent:
        parent = coll / rc.parent
        if version_key(rc.parent) >= current:
            raise ReleaseError("release_error", f"the parent version {rc.parent} is not older than {rc.version}",
                               remedy="a release's parent must be an older version; bump `release.version`")
        if not (parent / "release.json").is_file():
            raise ReleaseError("release_error", f"the parent release {rc.collection} {rc.parent} does not exist",
                               path=str(parent), remedy=f"fix `release.parent` in {ctx.config.file_name}, or remove it "
                               "to use the newest existing version")
        return parent
    older = [v for v in existing_versions(coll) if version_key(v) < current]
    return coll / older[-1] if older else None


def published_config(ctx: Context) -> dict[str, Any]:
    """The pipeline config as published in release.json: what made the release, not where or how
    it ran — no machine paths (files → their names; source roots left out), no ``executor`` (workers, a
    Dask address, progress bars), no stage setting that does not change results (``nohash``:
    a batch size, a device)."""
    pipeline = ctx.config.to_dict()
    pipeline.pop("workspace", None)
    pipeline.pop("executor", None)
    for s in pipeline.get("sources", []):
        s.pop("root", None)  # a local folder's name (a site's, a person's): not what made the release
        if s["dataset"].endswith((".yaml", ".yml")):
            s["dataset"] = Path(s["dataset"]).name
    pipeline["registry"] = [Path(r).name for r in pipeline.get("registry", [])]
    release = pipeline.get("release", {})
    release.pop("root", None)
    for key in ("url", "creators"):  # publication metadata: in the hash only when given
        if not release.get(key):
            release.pop(key, None)
    stages = pipeline.get("stages") or {}
    pipeline["stages"] = {name: published_settings(name, settings) for name, settings in stages.items()}
    return pipeline


def published_settings(stage: str, settings: Any) -> Any:
    """A stage's settings as release.json publishes them: no ``nohash`` setting (a device, a batch
    size), machine paths by file name."""
    if isinstance(settings, dict):
        settings = {k: v for k, v in settings.items() if k not in _unhashed(stage)}
    return _names_only(settings)


def _unhashed(stage: str) -> list[str]:
    """Settings of ``stage`` declared ``nohash`` (they do not change its results)."""
    import dataclasses

    from curator.stages import available

    ref = available().get(stage)
    if ref is None:
        return []
    from curator.runner.stage import load_stage_class

    return [f.name for f in dataclasses.fields(load_stage_class(ref).config_class) if f.metadata.get("hash") is False
            and f.name not in ("enabled", "on_bad_case")]


def _names_only(value: Any) -> Any:
    """``value`` with every absolute (or home-relative) path replaced by its file name."""
    if isinstance(value, dict):
        return {k: _names_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_names_only(v) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", value)):
        return Path(value).name
    return value


def config_hash(ctx: Context) -> str:
    """16 hex digits over :func:`published_config` (the same wherever the pipeline runs)."""
    return published_config_hash(published_config(ctx))


def published_config_hash(published: Any) -> str:
    """``release.json``'s ``pipeline_config_hash`` of its ``pipeline_config`` (``published``): 16
    hex digits of its canonical JSON's SHA-256 — ``curator verify`` recomputes it."""
    return sha256_json(published)[:16]


def taxonomy_info(path: str | Path | None = None, _within: tuple[Path, ...] = ()) -> dict[str, Any] | None:
    """Checksum (and version, when declared) of the taxonomy file (default: the bundled
    ``label_system/taxonomy.yaml``), with the same for the file it ``extends``; None when absent."""
    from curator.resources import resource_dir

    name = "label_system/taxonomy.yaml" if path is None else Path(path).name
    try:
        path = resource_dir("label_system") / "taxonomy.yaml" if path is None else Path(path)
    except ConfigError:
        return None
    if not path.is_file():
        return None
    info: dict[str, Any] = {"file": name, "sha256": sha256_file(path)}
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        doc = None
    if isinstance(doc, dict) and doc.get("version") is not None:
        info["version"] = str(doc["version"])
    if isinstance(doc, dict) and isinstance(doc.get("extends"), str) and doc["extends"].strip():
        from curator.taxonomy.load import BUILTIN, base_path

        within = (*_within, path.resolve())
        base = base_path(doc["extends"], path)
        if base.resolve() not in within:
            info["extends"] = taxonomy_info(None if doc["extends"] == BUILTIN else base, within)
    return info


def effective_version(info: Mapping[str, Any] | None) -> str:
    """The version of the taxonomy a :func:`taxonomy_info` record describes, as
    :func:`~curator.taxonomy.load_taxonomy` gives it: an extension's appended to its base's.

    >>> effective_version({"version": "lab-2", "extends": {"version": "1.3"}})
    '1.3+lab-2'
    >>> effective_version({"extends": {"version": "1.3"}}), effective_version(None)
    ('1.3+local', '')
    """
    if not info:
        return ""
    own = str(info.get("version") or "")
    base = info.get("extends")
    return f"{effective_version(base)}+{own or 'local'}" if isinstance(base, Mapping) else own


def sha256_sorted(values: pl.Series, chunk: int = 100_000) -> str:
    """``sha256_json(sorted(values))`` for checksum strings (no quotes or escapes inside),
    computed in chunks: neither the JSON text nor a Python list of all values is built."""
    h = hashlib.sha256(b"[")
    vals = values.sort()
    for start in range(0, len(vals), chunk):
        part = '","'.join(vals.slice(start, chunk).to_list())
        h.update(((',"' if start else '"') + part + '"').encode())
    h.update(b"]")
    return h.hexdigest()


def checksum_values(cases: pa.Table, by_dataset: bool = False) -> pl.DataFrame:
    """The non-empty image and label checksums of ``cases`` (column ``value``, plus ``dataset``)."""
    df = pl.DataFrame(cases.select(["dataset", "image_sha256", "label_sha256"]) if by_dataset
                      else cases.select(["image_sha256", "label_sha256"]))
    index = ["dataset"] if by_dataset else []
    return df.unpivot(index=index, on=["image_sha256", "label_sha256"]).filter(
        pl.col("value").is_not_null() & (pl.col("value") != ""))


def input_checksums(cases: pa.Table) -> dict[str, dict[str, Any]]:
    """Per dataset: one SHA-256 over the sorted image and label checksums, and their number."""
    out = {}
    for (ds,), grp in checksum_values(cases, by_dataset=True).group_by(["dataset"]):
        out[str(ds)] = {"sha256": sha256_sorted(grp["value"]), "n_files": grp.height}
    return dict(sorted(out.items()))


def record_model(builder: ReleaseBuilder, name: str, path: str | Path, **info: Any) -> dict[str, Any]:
    """Record a model file a stage used (checksum + file name + any JSON-able facts) in release.json.

    For release steps of stages that ship models (e.g. pseudolabel)::

        record_model(builder, "pseudolabel-abdomen", weights_path, framework="torch", epochs=50)
    """
    p = Path(path)
    if not p.is_file():
        raise ReleaseError("release_error", f"model file for {name!r} not found", path=str(p),
                           remedy="record the weights file the stage actually used")
    entry = {"file": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size, **info}
    builder.extra.setdefault("models", {})[name] = entry
    return entry


def lineage(builder: ReleaseBuilder) -> dict[str, Any]:
    """The lineage keys of release.json (models come from ``builder.extra['models']``)."""
    from curator.harmonize.stage import taxonomy_path
    from curator.release.integrity import published_content

    parent = builder.parent
    out: dict[str, Any] = {
        "parent_version": parent.name if parent else None,
        "parent_release_json_sha256": sha256_file(parent / "release.json") if parent else None,
        # the parent's data identity: a parent rebuilt with the same content (another release.json) still matches
        "parent_content_sha256": published_content(parent)[0] if parent else None,
        "taxonomy": taxonomy_info(taxonomy_path(builder.ctx)),
        "inputs": input_checksums(builder.tables.read("cases", ["dataset", "image_sha256", "label_sha256"])),
        "models": dict(sorted(builder.extra.get("models", {}).items())),
        # which secret key made patient_id and study_key (a rebuild with another key gives others)
        "pseudonym_key_fingerprint": builder.ctx.workspace.key_fingerprint(),
    }
    return out
