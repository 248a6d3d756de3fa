"""`curator verify` checks a release's splits against what release.json records of them: its
splits.config (seed, fractions, ...) against pipeline_config, its counts against splits.parquet,
and splits.parquet against the splits that config gives the release's own cases. A hand-edited
splits.config.seed passed verify (release.json lists the checksums, so none covers it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from curator.release.integrity import content_sha256, verify_release
from curator.testing.releases import reseal


def _release(demo: Path) -> Path:
    (release,) = (demo / "releases" / "demo").iterdir()
    return release


def _info(release: Path) -> dict[str, Any]:
    return json.loads((release / "release.json").read_text())


def _write(release: Path, info: dict[str, Any]) -> None:
    (release / "release.json").write_text(json.dumps(info, indent=1))


def test_an_intact_demo_release_has_consistent_splits(demo: Path) -> None:
    rep = verify_release(_release(demo))
    assert rep.ok and rep.splits_issues == [], rep.to_dict()


def test_verify_fails_a_release_json_whose_split_seed_was_edited(demo: Path) -> None:
    release = _release(demo)
    info = _info(release)
    assert info["splits"]["config"]["seed"] == 0
    info["splits"]["config"]["seed"] = 7
    _write(release, info)
    rep = verify_release(release)
    assert not rep.ok
    assert rep.manifest_issues == [] and rep.modified == []  # nothing else tells
    said, again = rep.splits_issues
    assert said == ("splits.config.seed is 7 in release.json, but its pipeline_config gives stages.splits.seed 0 "
                    "(the default): release.json's splits record (or splits.parquet) was edited since the release "
                    "was built")
    # the seed-7 assignment of the demo's cases moves some of them
    table = pl.read_parquet(release / "splits.parquet")
    assert again.startswith("splits: ") and f"of {table.height} case(s) have another split in splits.parquet than " \
        "the splits step gives them under release.json's splits.config (seed 7," in again
    res = CliRunner().invoke(_app(), ["verify", str(release)], env={"COLUMNS": "400"})
    assert res.exit_code == 1 and "splits disagree with the settings release.json records for them (2)" in res.output


@pytest.mark.parametrize("edit", ["config", "pipeline"])
def test_the_recorded_config_is_checked_against_the_splits_table_too(demo: Path, edit: str) -> None:
    """The seed edited in splits.config, or there and in pipeline_config with its hash (the
    checksummed card still gives the old hash: a manifest issue), disagrees with the table."""
    release = _release(demo)
    info = _info(release)
    info["splits"]["config"]["seed"] = 7
    if edit == "pipeline":
        from curator.release.lineage import published_config_hash

        info["pipeline_config"]["stages"]["splits"] = {"seed": 7}
        info["pipeline_config_hash"] = published_config_hash(info["pipeline_config"])
    _write(release, info)
    issues = verify_release(release).splits_issues
    assert any("have another split in splits.parquet" in i and "(seed 7," in i for i in issues), issues
    assert (edit == "config") == any(i.startswith("splits.config.seed is 7") for i in issues)


def test_verify_fails_a_splits_table_rewritten_with_its_checksums(demo: Path) -> None:
    """A case moved to another split in splits.parquet, its checksum, content digest and counts
    recorded again: only the splits the config gives tell."""
    release = _release(demo)
    table = pl.read_parquet(release / "splits.parquet")
    moved = table.filter(pl.col("split") == "train")["case_id"][0]
    table.with_columns(split=pl.when(pl.col("case_id") == moved).then(pl.lit("test"))
                       .otherwise(pl.col("split"))).write_parquet(release / "splits.parquet")
    reseal(release)
    info = _info(release)
    info["content_sha256"] = content_sha256(info["files"])
    info["splits"]["train"] -= 1
    info["splits"]["test"] += 1
    _write(release, info)
    rep = verify_release(release)
    assert rep.modified == [] and rep.manifest_issues == []
    (said,) = rep.splits_issues
    assert f"1 of {table.height} case(s) have another split" in said and f"{moved}: test in splits.parquet, train " \
        "assigned" in said


def test_verify_fails_split_counts_the_table_does_not_hold(demo: Path) -> None:
    release = _release(demo)
    info = _info(release)
    info["splits"]["train"] += 1
    _write(release, info)
    (said,) = verify_release(release).splits_issues
    assert said.startswith(f"splits: release.json says {info['splits']['train']} case(s) in train, splits.parquet "
                           f"holds {info['splits']['train'] - 1}")


def _app() -> Any:
    from curator.cli import app

    return app
