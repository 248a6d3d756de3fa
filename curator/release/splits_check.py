"""``curator verify``'s check of a release's splits against the settings ``release.json`` records.

``release.json``'s ``splits`` (its ``config``: seed, fractions, stratify, ...; and the number of
cases per split and reason) is covered by no checksum: release.json lists the checksums. So a
hand-edited ``splits.config.seed`` passed verify, and a splits table rewritten with its checksum
and counts passed too. :func:`splits_issues` says where:

* ``splits.config`` differs from the ``stages.splits`` settings of ``pipeline_config`` (whose
  hash verify recomputes, and which the checksummed dataset card gives);
* the per-split and per-reason counts differ from ``splits.parquet``'s rows;
* ``splits.parquet`` differs from the splits :func:`curator.release.splits.assign_splits`
  gives under ``splits.config`` for the release's own cases (``cases.parquet``), duplicate
  groups (``duplicates.parquet``), parent splits (``splits.previous_split``) and strata
  (``splits.stratum``: a sequence keyed for privacy is keyed there as in ``cases``).

The last check is made only for a splits table of the version this curator writes (another
version's rules may assign otherwise: ``reason`` changed meaning in v2) and when those tables
are intact (verify names a changed or missing one already).

>>> splits_issues(Path("."), {})
[]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from curator.errors import ConfigError

EDITED = "release.json's splits record (or splits.parquet) was edited since the release was built"
COMPARED = ("split", "reason", "group_key", "group_size", "previous_split")  # what the split step decides
CASE_COLUMNS = ("case_id", "dataset", "modality", "patient_id", "study_key", "official_split")
SHOWN = 5  # cases named per difference


def splits_issues(release: Path, info: dict[str, Any], damaged: frozenset[str] = frozenset()) -> list[str]:
    """Where the release's splits disagree with the settings release.json records for them (see
    the module docstring); ``damaged``: the release's files verify found changed or missing."""
    record = info.get("splits")
    if record is None:
        return []
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict):
        return [f"splits: release.json's splits record holds no config (found {json.dumps(record)[:200]}): {EDITED}"]
    from curator.release.splits import SplitConfig

    try:
        cfg = SplitConfig.from_dict(config, where="release.json splits.config")
    except ConfigError as e:
        return [f"splits: {e.detail}: {EDITED}"]
    out = _against_pipeline_config(config, info.get("pipeline_config"))
    if "splits.parquet" in damaged:
        return out
    try:
        table = pl.read_parquet(release / "splits.parquet")
    except (OSError, pl.exceptions.PolarsError):  # missing or unreadable: verify names it already
        return out
    out += _counts(record, table)
    versions = info.get("table_versions")
    if not {"cases.parquet", "duplicates.parquet"} & damaged and isinstance(versions, dict) \
            and versions.get("splits") == _splits_version():
        out += _assigned_again(release, table, cfg)
    return out


def _splits_version() -> int:
    from curator.schema import table_schema

    return table_schema("splits").version


def _against_pipeline_config(config: dict[str, Any], pipeline: Any) -> list[str]:
    """``splits.config``'s settings that ``pipeline_config``'s ``stages.splits`` (its defaults
    for a setting it leaves out) does not give."""
    from curator.release.splits import SplitConfig

    stages = pipeline.get("stages") if isinstance(pipeline, dict) else None
    if not isinstance(stages, dict):
        return []
    given = stages.get("splits") or {}
    try:
        want = json.loads(json.dumps(SplitConfig.from_dict(given, where="pipeline_config stages.splits").to_dict()))
    except (ConfigError, TypeError):  # an edited pipeline_config: its hash check names it
        return []
    out = []
    for key in sorted(set(want) | set(config)):
        if config.get(key) != want.get(key):
            default = " (the default)" if isinstance(given, dict) and key not in given else ""
            out.append(f"splits.config.{key} is {json.dumps(config.get(key))} in release.json, but its "
                       f"pipeline_config gives stages.splits.{key} {json.dumps(want.get(key))}{default}: {EDITED}")
    return out


def _counts(record: dict[str, Any], table: pl.DataFrame) -> list[str]:
    """Per-split and per-reason counts of the record that ``splits.parquet`` does not hold."""
    out = []
    if "split" in table.columns:
        for split in ("train", "val", "test"):
            held = int((table["split"] == split).sum())
            if split in record and record[split] != held:
                out.append(f"splits: release.json says {record[split]} case(s) in {split}, splits.parquet holds "
                           f"{held}: {EDITED}")
    reasons = record.get("reasons")
    if "reason" in table.columns and isinstance(reasons, dict):
        held_reasons = {str(k): int(v) for k, v in table.group_by("reason").len().iter_rows()}
        if reasons != held_reasons:
            out.append(f"splits: release.json's splits.reasons is {json.dumps(reasons, sort_keys=True)}, "
                       f"splits.parquet holds {json.dumps(held_reasons, sort_keys=True)}: {EDITED}")
    return out


def _assigned_again(release: Path, table: pl.DataFrame, cfg: Any) -> list[str]:
    """Where ``splits.parquet`` differs from the splits its settings give the release's cases."""
    from curator.release.splits import assign_splits

    try:
        cases = pl.read_parquet(release / "cases.parquet", columns=list(CASE_COLUMNS))
        dups = pl.read_parquet(release / "duplicates.parquet", columns=["group_id", "case_id"]) \
            if (release / "duplicates.parquet").is_file() else None
    except (OSError, pl.exceptions.PolarsError):  # a release of older columns, or a damaged table
        return []
    if not set(COMPARED) | {"case_id", "stratum"} <= set(table.columns):
        return []
    missing = cases.join(table, on="case_id", how="anti")["case_id"].to_list()
    extra = table.join(cases, on="case_id", how="anti")["case_id"].to_list()
    if missing or extra or table["case_id"].is_duplicated().any():
        said = (f"splits: splits.parquet does not hold one row per case of cases.parquet ({len(missing)} case(s) "
                f"without a row{_named(missing)}, {len(extra)} row(s) of no case{_named(extra)}): {EDITED}")
        return [said]
    previous = table.select("case_id", split="previous_split").drop_nulls()
    again = assign_splits(cases, dups, previous if previous.height else None, cfg,
                          strata=table.select("case_id", "stratum"))
    both = table.select("case_id", *COMPARED).join(again.select("case_id", *COMPARED), on="case_id",
                                                   suffix="_again").sort("case_id")
    out = []
    for col in COMPARED:
        differ = both.filter(pl.col(col).ne_missing(pl.col(f"{col}_again")))
        if differ.height:
            shown = "; ".join(f"{r['case_id']}: {r[col]} in splits.parquet, {r[f'{col}_again']} assigned"
                              for r in differ.head(SHOWN).iter_rows(named=True))
            more = f"; ... and {differ.height - SHOWN} more" if differ.height > SHOWN else ""
            out.append(f"splits: {differ.height} of {both.height} case(s) have another {col} in splits.parquet than "
                       f"the splits step gives them under release.json's splits.config (seed {cfg.seed}, fractions "
                       f"{json.dumps(cfg.fractions, sort_keys=True)}, stratify {list(cfg.stratify)}, official_test "
                       f"{json.dumps(cfg.official_test)}, on_conflict {cfg.on_conflict}) from the release's cases, "
                       f"duplicates and parent splits ({shown}{more}): {EDITED}")
    return out


def _named(ids: list[str]) -> str:
    return f": {', '.join(ids[:SHOWN])}{' ...' if len(ids) > SHOWN else ''}" if ids else ""
