"""Release folder, release.json and the read-only query connection."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator.io.fsutil import sha256_file
from curator.release.query import Release, resolve_release
from curator.schema import load_schemas
from curator.testing.layouts import save_nifti
from curator.testing.phantoms import Subject, grid, remap, render
from curator.testing.pipelines import make_pipeline, run


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("rel")
    raw = tmp / "raw"
    for i in range(3):
        g = grid((16, 14, 8), (20.0, 20.0, 30.0), "LPS")
        img, lab = render(Subject.random(i), g)
        save_nifti(raw / "dataset" / f"case_{i:05d}" / "imaging.nii.gz", img.astype("int16"), g)
        save_nifti(raw / "dataset" / f"case_{i:05d}" / "segmentation.nii.gz",
                   remap(lab, {"kidney_left": 1, "kidney_right": 1, "kidney_tumor": 2}), g)
    pipe = make_pipeline(tmp, [{"dataset": "KiTS23", "root": str(raw)}], collection="rel")
    res = run(pipe, release=True)
    assert res.release is not None
    return res.release


def test_release_json_lists_every_file_with_its_checksum(release: Path) -> None:
    info = json.loads((release / "release.json").read_text())
    assert info["collection"] == "rel" and info["version"] == "0.1.0"
    files = {p.name for p in release.glob("*.parquet")}
    assert set(info["files"]) >= files
    for name, digest in info["files"].items():
        assert sha256_file(release / name) == digest
    assert info["counts"]["cases"] == 3
    # manifests/CHANGELOG.md: the schema's version and each table's, as their Parquet files say
    for p in release.glob("*.parquet"):
        meta = pq.read_schema(p).metadata
        assert info["table_versions"][p.stem] == int(meta[b"curator.table_version"])
        assert info["schema_version"] == meta[b"curator.schema_version"].decode()
    assert len(info["pipeline_config_hash"]) == 16
    assert "/" not in json.dumps(info["pipeline_config"]["sources"])  # no machine paths published


def test_every_table_has_its_declared_schema(release: Path) -> None:
    rel = Release(release)
    schemas = load_schemas()
    for name in rel.table_names():
        got = rel.table(name).to_arrow().schema
        assert got.names == schemas[name].schema.names, name


def test_query_connection_is_read_only_and_sandboxed(release: Path, tmp_path: Path) -> None:
    rel = Release(release)
    ((n,),) = rel.sql("select count(*) from cases").fetchall()
    assert n == 3
    con = rel.connect()
    for sql in (f"copy cases to '{tmp_path}/x.csv'", "select * from read_csv('/etc/passwd')",
                f"attach '{tmp_path}/db.duckdb'", "set enable_external_access = true"):
        with pytest.raises(duckdb.Error):
            con.sql(sql)
    assert not list(tmp_path.iterdir())


def test_collection_folder_resolves_to_newest_version(release: Path) -> None:
    assert resolve_release(release.parent) == release
    polars_cases = Release(release.parent).table("cases")
    assert polars_cases.height == 3


def test_a_killed_builds_staging_folder_is_removed_by_the_next(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    from curator.release.build import remove_dead_staging

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is now free: a build with it was killed
    host = socket.gethostname()
    dead = tmp_path / f".0.1.0.tmp-{host}-{child.pid}"
    running = tmp_path / f".0.1.1.tmp-{host}-{os.getpid()}"
    elsewhere = tmp_path / f".0.1.2.tmp-not-{host}-{child.pid}"
    for d in (dead, running, elsewhere):
        (d / "stores").mkdir(parents=True)
    assert remove_dead_staging(tmp_path) == [dead]
    assert not dead.exists() and running.exists() and elsewhere.exists()


def test_the_published_config_says_what_made_the_release_not_where_it_ran(tmp_path: Path) -> None:
    """Executor settings (a Dask address, progress bars), result-neutral stage settings (a device,
    a batch size) and machine paths in stage settings stay out of release.json and its hash: one
    workspace released twice with another executor is the same release."""
    from curator.config import PipelineConfig
    from curator.release.lineage import config_hash, published_config
    from curator.runner.context import Context

    def ctx(**extra: object) -> Context:
        return Context(PipelineConfig.from_dict({
            "workspace": str(tmp_path / "ws"), "release": {"root": str(tmp_path / "rel"), "collection": "c"},
            "stages": {"qc": {"overrides": "/home/alice/secret/qc_overrides.yaml", "epsilon": 3.0},
                       "pseudolabel": {"device": "cuda:1", "batch_size": 16, "overlap": 0.25}},
            **extra}))

    a, b = ctx(), ctx(executor={"kind": "dask", "address": "tcp://10.0.0.5:8786", "progress": True})
    pub = published_config(b)
    text = json.dumps(pub)
    assert "executor" not in pub and "10.0.0.5" not in text and "/home/alice" not in text
    assert pub["stages"]["qc"] == {"overrides": "qc_overrides.yaml", "epsilon": 3.0}
    assert pub["stages"]["pseudolabel"] == {"overlap": 0.25}
    assert config_hash(a) == config_hash(b)


def test_a_column_description_cut_by_an_unquoted_comma_is_refused(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`{name: shape, description: array shape (i, j, k)}` parsed as 'array shape (i' plus keys
    `j` and `k)`: 13 columns published cut descriptions. Every shipped description is whole."""
    import shutil

    from curator import schema
    from curator.errors import ConfigError

    for s in schema.load_schemas().values():
        assert all(d.count("(") == d.count(")") for d in s.descriptions.values()), s.name
    (tmp_path / "tables").mkdir()
    shutil.copy(schema.manifests_dir() / "SCHEMA_VERSION", tmp_path / "SCHEMA_VERSION")
    (tmp_path / "tables" / "t.yaml").write_text("table: t\ncolumns:\n"
                                                "  - {name: shape, type: int64, description: shape (i, j, k)}\n")
    monkeypatch.setattr(schema, "manifests_dir", lambda: tmp_path)
    schema.load_schemas.cache_clear()
    try:
        with pytest.raises(ConfigError, match="unknown keys"):
            schema.load_schemas()
    finally:
        schema.load_schemas.cache_clear()


def test_released_preprocessed_store_sha256_is_the_hash_of_the_store_as_released(demo_base: Path) -> None:
    """A store that got a pseudo layer (and OME-NGFF metadata) after preprocess hashed it: the
    release's table holds the released store's hash, recomputed here from stores/SHA256SUMS alone."""
    rel = demo_base / "releases" / "demo" / "0.1.0"
    info = json.loads((rel / "release.json").read_text())
    sums = (rel / "stores" / "SHA256SUMS").read_text(encoding="utf-8").splitlines(keepends=True)
    rows = pq.read_table(rel / "preprocessed.parquet", columns=["case_id", "store", "store_sha256"]).to_pylist()
    ws = {r["case_id"]: r["store_sha256"] for r in pq.read_table(
        demo_base / "workspace" / "tables" / "preprocessed.parquet", columns=["case_id", "store_sha256"]).to_pylist()}
    pseudo = 0
    for r in rows:
        prefix = f"{r['case_id']}.zarr/"
        own = sorted((line.split("  ", 1)[1].removeprefix(prefix), line.split("  ", 1)[0])
                     for line in sums if line.split("  ", 1)[1].startswith(prefix))
        recomputed = hashlib.sha256("".join(f"{h}  {path}" for path, h in own).encode()).hexdigest()
        assert r["store_sha256"] == recomputed == info["stores"][r["case_id"]]["sha256"], r["case_id"]
        if (rel / r["store"] / "labels" / "pseudo").is_dir():
            pseudo += 1
            assert ws[r["case_id"]] != recomputed  # the workspace keeps the hash preprocess took
    assert pseudo >= 5
    assert pq.read_schema(rel / "preprocessed.parquet").metadata[b"curator.table_version"] == b"2"


def test_release_tables_carry_their_column_descriptions_in_the_parquet_field_metadata(
        release: Path, tmp_path: Path) -> None:
    """A reader without curator finds SCHEMA.md's text with each column (pyarrow field metadata),
    whether the release copied a workspace table or wrote one a step changed; the types and the
    schema metadata are the declared ones, and both ways give the same bytes."""
    schemas = load_schemas()
    for name, cols in {"cases": ("label_sha256", "spacing_mm"), "labels": ("volume_ml", "term"),
                       "problems": ("kind",), "splits": ("split",)}.items():
        got = pq.read_schema(release / f"{name}.parquet")
        for col in cols:
            assert got.field(col).metadata[b"description"].decode() == schemas[name].descriptions[col], (name, col)
        assert got.equals(schemas[name].schema) and got.metadata == schemas[name].schema.metadata
    from curator.release.tables import copy_table, write_release_table
    from curator.workspace import write_parquet

    # a workspace file written before the descriptions (or under other ones) is rewritten with them
    table = pq.read_table(release.parents[2] / "workspace" / "tables" / "labels.parquet")
    bare = pa.schema([f.remove_metadata() for f in table.schema], metadata=table.schema.metadata)
    write_parquet(table.cast(bare), tmp_path / "old.parquet")
    copy_table(tmp_path / "old.parquet", tmp_path / "copied.parquet", "labels")
    write_release_table(table, "labels", tmp_path / "written.parquet")
    assert (tmp_path / "copied.parquet").read_bytes() == (tmp_path / "written.parquet").read_bytes()
    copied = pq.read_table(tmp_path / "copied.parquet")
    assert copied.equals(table) and copied.schema.equals(table.schema, check_metadata=True)
    assert b"description" in copied.schema.field("volume_ml").metadata


def test_a_rejected_label_is_said_missing_from_the_original_layer_not_from_a_store_with_a_pseudo_one(
        demo_base: Path) -> None:
    """preprocess's warning is copied into the release, where the store has a pseudo layer by
    then: "the store has no label layer" read as false there."""
    rel = demo_base / "releases" / "demo" / "0.1.0"
    rows = [r for r in pq.read_table(rel / "problems.parquet").to_pylist()
            if r["stage"] == "preprocess" and r["kind"] == "label_rejected"]
    assert rows
    for r in rows:
        assert (rel / "stores" / f"{r['case_id']}.zarr" / "labels" / "pseudo").is_dir()
        assert "no `original` label layer" in r["message"], r["message"]
