"""Leakage-proof, stable train/val/test splits (the ``splits`` table of every release).

Rules, in order:

1. **Units** (:mod:`curator.release.units`): a patient's cases, a study's sequences and a
   duplicate group's members — closed transitively — always share one split.
2. **Official test sets stay test**: a unit holding a case whose dataset publishes it as
   test (``cases.official_split == 'test'``) is test (``official_test: true``).
3. **Existing cases never move**: a unit holding cases of the parent release takes their
   split (``reason = inherited``). New cases that join an existing unit (a new timepoint,
   a newly found duplicate) therefore land where the unit already is (``reason = joined``:
   new in this release, with the split of its unit's released cases). This is how a unit
   that *grows by merging* keeps its split: the split belongs to the cases already
   released, not to a key that the merge could change.
4. **New units** are split per stratum (``stratify``: dataset and modality of the unit's
   first case): in the order of a keyed hash (BLAKE2b keyed with ``seed``) of the unit key
   (its smallest case id), each goes to the split furthest below its target fraction,
   counting the stratum's units already placed. So every stratum — even one of five
   patients — gets its share, the result is deterministic, and adding units changes
   nothing already assigned. Official-test units are outside the quota.
5. **Conflicts**: when a merge joins cases that the parent put in different splits (or a
   previously released non-test case joins an official test unit), ``on_conflict: fail``
   (default) keeps every case where it was and lets the leakage check fail the release;
   ``on_conflict: move`` moves the unit to its most restrictive split
   (test > val > train) and marks the moved cases ``reason = moved``.
6. **Leakage check**: after assignment, every patient, study and duplicate group is
   checked again on the final table; any that spans two splits fails the release
   (:class:`ReleaseError` ``split_leakage``).

Settings (``stages.splits`` in pipeline.yaml)::

    stages:
      splits: {fractions: {train: 0.8, val: 0.1, test: 0.1}, seed: 0, on_conflict: fail}
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl
import pyarrow as pa

from curator.config import Config
from curator.errors import ConfigError, ReleaseError
from curator.release.build import ReleaseBuilder
from curator.release.units import describe_leaks, find_leaks, link_table, unit_labels
from curator.schema import table_schema

log = logging.getLogger("curator")
SPLITS = ("train", "val", "test")
RESTRICTIVE = {"test": 2, "val": 1, "train": 0}


@dataclass(frozen=True)
class SplitConfig(Config):
    """How a release is split (``stages.splits`` in pipeline.yaml)."""

    enabled: bool = True
    fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    stratify: tuple[str, ...] = ("dataset", "modality")
    official_test: bool = True
    seed: int = 0
    on_conflict: Literal["fail", "move"] = "fail"

    def __post_init__(self) -> None:
        bad = sorted(set(self.fractions) - set(SPLITS))
        if bad:
            raise ConfigError("config_error", f"stages.splits.fractions: unknown split(s) {bad}; use {list(SPLITS)}")
        vals = list(self.fractions.values())
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0 for v in vals) \
                or abs(sum(vals) - 1.0) > 1e-6 or self.fractions.get("train", 0) <= 0:
            raise ConfigError("config_error", f"stages.splits.fractions = {self.fractions}: fractions must be "
                              "non-negative numbers summing to 1, with train > 0")
        allowed = {"dataset", "modality", "region", "sequence"}
        if not set(self.stratify) <= allowed:
            raise ConfigError("config_error", f"stages.splits.stratify: {list(self.stratify)}; "
                              f"choose among {sorted(allowed)}")


def _hash_key(seed: int) -> bytes:
    return f"curator-splits:{seed}".encode()


def unit_hash(unit_key: str, seed: int) -> str:
    """Keyed hash (BLAKE2b keyed with the seed) of a unit key; the order in which new units are placed."""
    return hashlib.blake2b(unit_key.encode(), key=_hash_key(seed), digest_size=16).hexdigest()


def group_key(unit_key: str) -> str:
    """The ``group_key`` of a unit: ``u_`` + 16 hex digits of a hash of its smallest case id."""
    return "u_" + hashlib.blake2b(unit_key.encode(), digest_size=8).hexdigest()


def _place_new(units: pl.DataFrame, cfg: SplitConfig) -> pl.DataFrame:
    """Largest-deficit placement of new units, stratum by stratum, in keyed-hash order: (unit, placed)."""
    order = [s for s in SPLITS if cfg.fractions.get(s, 0) > 0]
    frac = [cfg.fractions[s] for s in order]
    out_units: list[int] = []
    out_split: list[str] = []
    for (_stratum,), grp in units.group_by(["stratum"], maintain_order=True):
        placed = grp.filter(pl.col("target").is_not_null() & ~pl.col("forced"))["target"]
        counts = [int((placed == s).sum()) for s in order]
        total = sum(counts)
        for unit in grp.filter(pl.col("target").is_null()).sort("hash")["unit"].to_list():
            total += 1
            best, best_d = 0, frac[0] * total - counts[0]
            for i in range(1, len(order)):  # ties go to the earlier split (train, val, test)
                d = frac[i] * total - counts[i]
                if d > best_d:
                    best, best_d = i, d
            counts[best] += 1
            out_units.append(unit)
            out_split.append(order[best])
    return pl.DataFrame({"unit": out_units, "placed": out_split}, schema={"unit": pl.Int64, "placed": pl.String})


def _restrictive(prev: pl.Expr) -> pl.Expr:
    """The most restrictive split in a list of splits (test > val > train); null for an empty list."""
    out = pl.lit(None, dtype=pl.String)
    for s in ("train", "val", "test"):
        out = pl.when(prev.list.contains(s)).then(pl.lit(s)).otherwise(out)
    return out


def assign_splits(cases: pl.DataFrame, duplicates: pl.DataFrame | None, previous: pl.DataFrame | None,
                  cfg: SplitConfig, strata: pl.DataFrame | None = None) -> pl.DataFrame:
    """Rows of the ``splits`` table (before the leakage check).

    ``cases`` needs case_id, dataset, modality, patient_id, study_key, official_split and the
    ``stratify`` columns; ``previous`` is the parent release's (case_id, split) or None.
    ``strata`` (case_id, stratum), when given, are the cases' strata instead of the ``stratify``
    columns' values: a release's own ``splits.stratum`` (a sequence keyed as the privacy step
    keys it), when ``curator verify`` assigns the release's cases again.
    """
    cases = cases.sort("case_id")
    units = unit_labels(cases["case_id"], link_table(cases, duplicates))
    prev = previous.select("case_id", pl.col("split").alias("previous_split")) if previous is not None else \
        pl.DataFrame(schema={"case_id": pl.String, "previous_split": pl.String})
    df = cases.with_columns(units).join(prev, on="case_id", how="left", maintain_order="left")
    df = df.with_columns(stratum=pl.concat_str([pl.col(c).fill_null("") for c in cfg.stratify], separator="|")) \
        if strata is None else df.join(strata.select("case_id", "stratum"), on="case_id", how="left",
                                       maintain_order="left")
    per_unit = (df.group_by("unit", maintain_order=True).agg(  # rows in case_id order: first() = smallest
        unit_key=pl.col("case_id").first(), stratum=pl.col("stratum").first(), size=pl.len(),
        forced=(pl.col("official_split") == "test").any() & pl.lit(cfg.official_test),
        prev=pl.col("previous_split").drop_nulls().unique().sort()))
    keys = [k.encode() for k in per_unit["unit_key"].to_list()]
    hk, b2 = _hash_key(cfg.seed), hashlib.blake2b
    n_prev = pl.col("prev").list.len()
    per_unit = per_unit.with_columns(
        target=pl.when(pl.col("forced")).then(pl.lit("test")).otherwise(_restrictive(pl.col("prev"))),
        inherited=n_prev > 0,
        hash=pl.Series([b2(k, key=hk, digest_size=16).hexdigest() for k in keys], dtype=pl.String),
        group_key=pl.Series(["u_" + b2(k, digest_size=8).hexdigest() for k in keys], dtype=pl.String),
    ).with_columns(conflict=(n_prev > 1) | ((n_prev == 1) & (pl.col("prev").list.first() != pl.col("target"))))
    per_unit = (per_unit.join(_place_new(per_unit, cfg), on="unit", how="left")
                .with_columns(target=pl.coalesce("target", "placed")))
    df = df.join(per_unit.select("unit", "target", "conflict", "inherited", "forced", "group_key", "size"),
                 on="unit", maintain_order="left")
    keep_prev = pl.col("conflict") & pl.col("previous_split").is_not_null() & pl.lit(cfg.on_conflict == "fail")
    moved = pl.col("previous_split").is_not_null() & (pl.col("previous_split") != pl.col("target"))
    return df.select(
        "case_id", "dataset", "modality",
        split=pl.when(keep_prev).then(pl.col("previous_split")).otherwise(pl.col("target")),
        group_key="group_key", group_size=pl.col("size").cast(pl.Int32), stratum="stratum",
        reason=pl.when(keep_prev).then(pl.lit("conflict"))
        .when(moved).then(pl.lit("moved"))
        .when(pl.col("forced")).then(pl.lit("official_test"))
        .when(pl.col("inherited") & pl.col("previous_split").is_not_null()).then(pl.lit("inherited"))
        .when(pl.col("inherited")).then(pl.lit("joined"))  # new, in a unit with released cases
        .otherwise(pl.lit("assigned")),
        previous_split="previous_split")


def check_leakage(splits: pl.DataFrame, cases: pl.DataFrame, duplicates: pl.DataFrame | None,
                  parent: str | None = None) -> None:
    """Raise ``split_leakage`` when any patient, study or duplicate group spans two splits, naming
    each leaking unit's cases on either side (with their split in the ``parent`` release) and the
    links that join them (:func:`curator.release.units.describe_leaks`)."""
    missing = cases.join(splits, on="case_id", how="anti")
    if missing.height or splits["case_id"].is_duplicated().any():
        raise ReleaseError("split_leakage", f"{missing.height} case(s) have no split or some have several",
                           remedy="this is a bug in the split step; report it")
    links = link_table(cases, duplicates)
    leaks = find_leaks(splits, links)
    if leaks.height:
        keys = ", ".join(f"{r['kind']} {r['key']} ({'/'.join(r['splits'])})" for r in leaks.head(5).iter_rows(named=True))
        raise ReleaseError(
            "split_leakage", f"{leaks.height} patient/study/duplicate group(s) span two splits ({keys}"
            f"{' ...' if leaks.height > 5 else ''}): {describe_leaks(leaks, splits, links, parent)}",
            remedy="cases released earlier in different splits are now linked (a new duplicate or patient "
                   "link); set `stages.splits.on_conflict: move` to move each such unit to its most "
                   "restrictive split (test > val > train), or fix the link if it is wrong: a "
                   "wrong duplicate link with a reviewed `different: [A, B]` row in the file "
                   "`stages.dedup.overrides` names (docs/dedup.md, 'Reviewed overrides'), a wrong patient "
                   "link in the dataset YAML's `patient_id` template")


def _to_arrow(df: pl.DataFrame) -> pa.Table:
    schema = table_schema("splits").schema
    return df.sort("case_id").to_arrow().select(schema.names).cast(schema)


def release_step(builder: ReleaseBuilder) -> None:
    """Add the ``splits`` table; fail the release on leakage."""
    cfg = SplitConfig.from_dict(builder.ctx.config.stage("splits"), where="stages.splits")
    if not cfg.enabled:
        log.info("splits: disabled in pipeline.yaml")
        return
    cols = ["case_id", "dataset", "modality", "patient_id", "study_key", "official_split", *cfg.stratify]
    cases = pl.DataFrame(builder.tables.read("cases", list(dict.fromkeys(cols))))
    dups = pl.DataFrame(builder.tables.read("duplicates", ["group_id", "case_id"])) \
        if "duplicates" in builder.tables else None
    previous = None
    if builder.parent is not None and (builder.parent / "splits.parquet").is_file():
        from curator.release.query import Release

        # through Release: a parent whose splits file changed since it was released is refused by name
        previous = Release(builder.parent).table("splits").select("case_id", "split")
    splits = assign_splits(cases, dups, previous, cfg)
    check_leakage(splits, cases, dups, builder.parent.name if builder.parent is not None else None)
    builder.tables["splits"] = _to_arrow(splits)
    summary: dict[str, Any] = {s: int((splits["split"] == s).sum()) for s in SPLITS}
    summary["reasons"] = dict(sorted(splits.group_by("reason").len().iter_rows()))
    summary["config"] = cfg.to_dict()
    builder.extra["splits"] = summary
