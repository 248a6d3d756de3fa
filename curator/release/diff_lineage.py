"""The lineage part of ``curator diff``: which records of how a release was made differ, each
named down to its entry with its value in both releases.

Every key of release.json is lineage except the release's identity and dates and what it holds
(``OUTCOME_KEYS``: its files, stores and counts, compared as tables, files and stores), so a
record a newer curator adds is compared without a word here. A key one release does not record
(a release before it, an installed wheel without a git commit, a release without pseudo labels)
is no change. A setting given in one pipeline.yaml only is said with the value the other release
used, ``(default)``, or ``unset`` when that release did not record one.

>>> changed_entries("inference", [{"device": "cpu", "threads": 1}], [{"device": "cpu", "threads": 2}])
['inference threads: 1 → 2']
>>> pair("x" * 70 + "1", "x" * 70 + "2")
('…xxxxxxxxxxxxxxxxxxxx1', '…xxxxxxxxxxxxxxxxxxxx2')
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

_ABSENT: Any = object()
# release.json keys that say which release it is, when it was made and what it holds (compared as
# the tables, files and stores), not how it was made; ``splits`` is a summary (its settings are the
# ``splits`` stage's, compared with the stages'); ``pipeline_config`` and ``stages`` have their own
# comparison below
OUTCOME_KEYS = frozenset({"collection", "version", "created", "parent_version", "parent_release_json_sha256",
                          "parent_content_sha256",
                          "files", "stores", "counts", "pipeline_config_hash", "input_checksums_sha256",
                          "n_input_files", "review", "splits", "pipeline_config", "stages", "content_sha256"})
# summaries of what a release step did whose named parts are its settings (the rest are counts)
SETTING_PARTS = {"qc": ("method", "training_filter"), "label_assembly": ("priority",)}
# a stage's record: when and which run made it, and a digest of its config (compared setting by setting)
STAGE_RUN_KEYS = frozenset({"finished", "run_id", "config_hash", "config"})
# pipeline.yaml's release block: the version and parent always differ; root is a machine's folder
RELEASE_RUN_KEYS = ("version", "parent", "root")
WIDTH = 60  # a value longer than this is shown around its first difference
Default = Callable[[int, str], Any]  # (side 0 | 1, lineage key) -> the value that side used, or _ABSENT


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def _short(v: Any) -> str:
    text = _text(v)
    return text[:12] + "…" if isinstance(v, str) and len(v) == 64 else text


def pair(a: Any, b: Any) -> tuple[str, str]:
    """Two different lineage values as short tokens that still differ: a hash to 12 characters,
    a value up to ``WIDTH`` characters as it is, a longer one (compact JSON) shown around its
    first difference (never two cut texts that read the same)."""
    sa, sb = _short(a), _short(b)
    if sa != sb and len(sa) <= WIDTH and len(sb) <= WIDTH:
        return sa, sb
    ta, tb = _text(a), _text(b)
    i = next((n for n, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y), min(len(ta), len(tb)))
    start = max(0, i - 20)

    def cut(t: str) -> str:
        end = start + WIDTH - 3
        return ("…" if start else "") + t[start:end] + ("…" if end < len(t) else "")

    return cut(ta), cut(tb)


def one(v: Any) -> str:
    """A value the other release does not have, as a short token."""
    text = _short(v)
    return text if len(text) <= WIDTH else text[:WIDTH - 3] + "…"


def _said(default: Any) -> str:
    """A setting one release does not give: the value it used (its default), else ``unset``."""
    return "unset" if default is _ABSENT else f"{one(default)} (default)"


def _by_name(items: Any) -> dict[str, dict[str, Any]] | None:
    """A list of entries that each name a source (pipeline.yaml's ``sources``: a ``name``, else
    its ``dataset``) keyed by that name; None for any other list (or when a name repeats)."""
    if not (isinstance(items, list) and all(isinstance(e, dict) and (e.get("name") or e.get("dataset"))
                                            for e in items)):
        return None
    out = {str(e.get("name") or e["dataset"]): e for e in items}
    return out if len(out) == len(items) else None


def _changed_items(key: str, a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[str]:
    """The sources added, removed and changed (each changed field named), as lines."""
    out = []
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            out.append(f"{key} {name}: {'added' if name not in a else 'removed'}")
            continue
        ea, eb = a[name], b[name]
        out += [_line(f"{key} {name} {f}", ea.get(f), eb.get(f))
                for f in sorted(set(ea) | set(eb)) if ea.get(f, _ABSENT) != eb.get(f, _ABSENT)]
    return out or [f"{key}: the same entries in another order"]


def _line(key: str, a: Any, b: Any, default: Default | None = None) -> str:
    if a is _ABSENT or b is _ABSENT:
        used = default(0 if a is _ABSENT else 1, key) if default else _ABSENT
        return f"{key}: {_said(used)} → {one(b)}" if a is _ABSENT else f"{key}: {one(a)} → {_said(used)}"
    sa, sb = pair(a, b)
    return f"{key}: {sa} → {sb}"


def changed_entries(key: str, a: Any, b: Any, depth: int = 0, default: Default | None = None) -> list[str]:
    """The entries of lineage ``key`` that differ, as lines ``key entry: A → B`` (nested dicts
    followed four levels, so a stage setting is named: ``pipeline_config stages qc epsilon``; a
    list of sources as the sources added, removed and changed, by name; lists of records of the
    same length record by record, ``inference threads: 1 → 2``). A setting (under
    ``pipeline_config``, or a stage's ``config``) one side does not give is said with the value
    ``default`` says that side used, else ``unset``; another entry one side lacks as ``added`` or
    ``removed``."""
    ka, kb = _by_name(a), _by_name(b)
    if ka is not None and kb is not None and (ka or kb):
        return _changed_items(key, ka, kb)
    if key.startswith("registry ") and isinstance(a, dict) and isinstance(b, dict) and "spec_sha256" in a:
        sa, sb = a.get("spec_sha256"), b.get("spec_sha256")
        if sa != sb and sb is not None:  # what a digest alone does not say: the dataset YAML was edited
            va, vb = a.get("version"), b.get("version")
            said = f"version {_short(va)} in both" if va == vb else "version {} → {}".format(*pair(va, vb))
            return [f"{key}: its dataset YAML changed ({said}; spec_sha256 {_short(sa)} → {_short(sb)})"]
    setting = key.startswith("pipeline_config") or " config " in f" {key} "
    if isinstance(a, dict) and isinstance(b, dict) and depth < 4:
        out = []
        for k in sorted(set(a) | set(b), key=str):
            va, vb = a.get(k, _ABSENT), b.get(k, _ABSENT)
            if va == vb:
                continue
            if va is not _ABSENT and vb is not _ABSENT:
                out += changed_entries(f"{key} {k}", va, vb, depth + 1, default)
            elif setting and isinstance(va if vb is _ABSENT else vb, dict) and (va or vb):
                # a stage's settings given in one pipeline.yaml only: each setting, with the other's value
                out += changed_entries(f"{key} {k}", {} if va is _ABSENT else va, {} if vb is _ABSENT else vb,
                                       depth + 1, default)
            elif setting or not isinstance(va if vb is _ABSENT else vb, dict):
                out.append(_line(f"{key} {k}", va, vb, default))
            else:
                out.append(f"{key} {k}: {'added' if va is _ABSENT else 'removed'}")
        return out
    if (isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and depth < 4
            and all(isinstance(x, dict) for x in a + b)):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                out += changed_entries(key if len(a) == 1 else f"{key} {i}", x, y, depth + 1, default)
        return out
    return [_line(key, a, b, default)]


def taxonomy_version(info: Any) -> Any:
    """release.json's taxonomy record with ``version`` as the taxonomy gives it (an extension's
    appended to its base's); another value as it is."""
    from curator.release.lineage import effective_version

    return {**info, "version": effective_version(info)} if isinstance(info, dict) and info.get("extends") else info


def settings(info: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline config without what always differs (the ``release`` block's version and
    parent), nor the top-level ``seed`` that curators before 2026-12-08 published, which set
    nothing (the splits' seed is ``stages.splits.seed``)."""
    cfg = dict(info.get("pipeline_config") or {})
    release = cfg.pop("release", None)
    if isinstance(release, dict):
        release = {k: v for k, v in release.items() if k not in RELEASE_RUN_KEYS}
        if release:  # its collection, publication metadata (url, creators), allow_missing_sources
            cfg["release"] = release
    cfg.pop("seed", None)
    return cfg


def comparable_sources(ca: dict[str, Any], cb: dict[str, Any]) -> None:
    """Put both configs' ``sources`` entries in one form (in place): an entry without
    ``pseudonymous_ids`` was recorded before the option existed (so it was off), and a key only one
    release records (``root``, which older curators published) is compared in neither."""
    lists: list[list[dict[str, Any]]] = []
    for c in (ca, cb):
        x = c.get("sources")
        if not (isinstance(x, list) and all(isinstance(e, dict) for e in x)):
            return
        lists.append(x)
    entries = [[{"pseudonymous_ids": False, **e} for e in x] for x in lists]
    keys = [{k for e in x for k in e} for x in entries]
    both = keys[0] & keys[1] if entries[0] and entries[1] else keys[0] | keys[1]
    for c, x in zip((ca, cb), entries, strict=True):
        c["sources"] = [{k: v for k, v in e.items() if k in both} for e in x]


def stage_records(info: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """release.json's ``stages``, with the ``splits`` release step's settings as a stage's."""
    out = {k: v for k, v in (info.get("stages") or {}).items() if isinstance(v, dict)}
    split_cfg = (info.get("splits") or {}).get("config") if isinstance(info.get("splits"), dict) else None
    if "splits" not in out and isinstance(split_cfg, dict):
        out["splits"] = {"config": split_cfg}
    return out


def settings_used(info: Mapping[str, Any]) -> dict[str, Any]:
    """Per stage, the settings the release ran it with (pipeline.yaml's and the defaults)."""
    return {n: r["config"] for n, r in stage_records(info).items() if isinstance(r.get("config"), dict)}


def top_level(ia: Mapping[str, Any], ib: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every lineage key of release.json (all but ``OUTCOME_KEYS``) both releases record and that differs."""
    out: dict[str, tuple[Any, Any]] = {}
    for k in sorted(set(ia) | set(ib)):
        va, vb = ia.get(k), ib.get(k)
        if k in OUTCOME_KEYS or va is None or vb is None:  # not lineage; or not recorded by one
            continue
        if k in SETTING_PARTS and isinstance(va, dict) and isinstance(vb, dict):
            va, vb = ({p: v[p] for p in SETTING_PARTS[k] if p in v} for v in (va, vb))
        if k == "taxonomy":  # a lab's extension: its version as the taxonomy says it (1.3+lab-1, not lab-1)
            va, vb = (taxonomy_version(v) for v in (va, vb))
        if va != vb:
            out[k] = (va, vb)
    return out


def stage_lineage(ia: Mapping[str, Any], ib: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Lineage entries of the stages both releases ran: every entry of a stage's record both
    record (its version — a curator that changed the stage's results bumps it —, the digest of the
    files its settings name, ...) but when and which run made it, and the settings that differ
    although neither pipeline.yaml gave them (a default changed, a setting added)."""
    from curator.release.lineage import published_settings

    out: dict[str, tuple[Any, Any]] = {}
    sta, stb = stage_records(ia), stage_records(ib)
    given = [((i.get("pipeline_config") or {}).get("stages") or {}) for i in (ia, ib)]
    for name in sorted(set(sta) & set(stb)):
        ra, rb = sta[name], stb[name]
        for k in sorted(set(ra) | set(rb)):
            va, vb = ra.get(k), rb.get(k)
            if k in STAGE_RUN_KEYS or va is None or vb is None:
                continue
            if k == "stage_version":
                va, vb = str(va), str(vb)
            if va != vb:
                out[f"stages {name} {k}"] = (va, vb)
        cfa, cfb = (published_settings(name, r.get("config")) for r in (ra, rb))
        if not (isinstance(cfa, dict) and isinstance(cfb, dict) and cfa and cfb):
            continue
        told = {k for g in given if isinstance(g.get(name), dict) for k in g[name]}
        keys = sorted(k for k in set(cfa) | set(cfb)
                      if k not in told and cfa.get(k, _ABSENT) != cfb.get(k, _ABSENT))
        if keys:
            out[f"stages {name} config"] = ({k: cfa[k] for k in keys if k in cfa},
                                            {k: cfb[k] for k in keys if k in cfb})
    return out


def default_of(used: tuple[Mapping[str, Any], Mapping[str, Any]]) -> Default:
    """What a setting one pipeline.yaml does not give was in that release: ``pipeline_config
    stages STAGE SETTING …`` looked up in the settings the release recorded for the stage."""
    def default(side: int, key: str) -> Any:
        parts = key.split(" ")
        if parts[:2] != ["pipeline_config", "stages"] or len(parts) < 4:
            return _ABSENT
        v: Any = used[side].get(parts[2], _ABSENT)
        for p in parts[3:]:
            v = v.get(p, _ABSENT) if isinstance(v, dict) else _ABSENT
        return v

    return default
