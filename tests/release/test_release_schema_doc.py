"""A release says what its columns mean: ``SCHEMA.md`` and DuckDB column comments."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pyarrow.parquet as pq

from curator.config import PipelineConfig
from curator.release.integrity import verify_release
from curator.release.query import Release
from curator.release.schema_doc import STORES_HEADING, STORES_SECTION, schema_markdown
from curator.runner.context import Context
from curator.schema import load_schemas
from curator.testing.releases import reseal


def _sections(text: str) -> dict[str, list[str]]:
    """Table name → the column names its section of SCHEMA.md lists."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"## (\w+) \(table version \d+\)$", line)
        if head:
            current = out.setdefault(head.group(1), [])
        elif current is not None and line.startswith("| ") and not line.startswith("| column |"):
            current.append(line.split("|")[1].strip())
    return out


def test_schema_md_lists_every_table_and_column_the_release_holds(demo_base: Path) -> None:
    rel = demo_base / "releases" / "demo" / "0.1.0"
    text = (rel / "SCHEMA.md").read_text(encoding="utf-8")
    sections = _sections(text)
    files = sorted(p.stem for p in rel.glob("*.parquet"))
    assert sorted(sections) == files
    for name in files:
        assert sections[name] == pq.read_schema(rel / f"{name}.parquet").names, name
    # a description with a pipe or a line break stays in its cell; the file is checksummed like the card
    assert "volume_ml" in sections["labels"]
    info = json.loads((rel / "release.json").read_text())
    assert "SCHEMA.md" in info["files"]
    assert verify_release(rel).ok


def test_query_views_carry_the_column_descriptions_of_their_table_version(demo: Path) -> None:
    rel_path = demo / "releases" / "demo" / "0.1.0"
    descriptions = load_schemas()["labels"].descriptions
    got = dict(Release(rel_path).sql("select column_name, comment from duckdb_columns() "
                                     "where table_name = 'labels'").fetchall())
    assert got["volume_ml"] == descriptions["volume_ml"] and got["term"] == descriptions["term"]
    views = dict(Release(rel_path).sql("select view_name, comment from duckdb_views() where not internal").fetchall())
    assert views["labels"] and set(views) == {p.stem for p in rel_path.glob("*.parquet")}
    # a table of another version: its columns may mean other things, so no description is claimed
    info = json.loads((rel_path / "release.json").read_text())
    info["table_versions"]["labels"] += 1
    (rel_path / "release.json").write_text(json.dumps(info))
    reseal(rel_path)
    rows = Release(rel_path).sql("select table_name, comment from duckdb_columns() "
                                 "where table_name in ('labels', 'cases')").fetchall()
    assert all(c is None for t, c in rows if t == "labels")
    assert any(c is not None for t, c in rows if t == "cases")


def test_every_column_of_every_table_says_what_it_means() -> None:
    """README says SCHEMA.md gives every column's meaning, yet 53 columns had none (case_id and
    dataset in eight tables, preprocessed's intensity statistics, qc's bounds, terms' codes)."""
    schemas = load_schemas()
    assert {"cases", "labels", "qc", "preprocessed", "terms", "store_terms"} <= set(schemas)
    missing = [f"{name}.{f.name}" for name, ts in sorted(schemas.items()) for f in ts.schema
               if not (ts.descriptions.get(f.name) or "").strip()]
    assert not missing, f"columns without a description in manifests/tables/*.yaml: {missing}"
    rows = [line for line in schema_markdown(list(schemas), "0.0.0").splitlines()
            if line.startswith("| ") and not line.startswith("| column |")]
    assert len(rows) == sum(len(ts.schema) for ts in schemas.values())
    assert not [r for r in rows if r.rstrip().endswith("|  |")], "an empty description cell in SCHEMA.md"


def _digest_per_schema(path: Path, description: str) -> str:
    """A file's SHA-256 hex, or a folder's checksum the way ``cases.image_sha256``'s description says."""
    if not path.is_dir():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    assert "key=lambda p: p.parts" in description and "raw 32-byte" in description
    rel_paths = [p.relative_to(path) for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    h = hashlib.sha256()
    for p in sorted(rel_paths, key=lambda p: p.parts):
        h.update(p.as_posix().encode())
        h.update(hashlib.sha256((path / p).read_bytes()).digest())
    return h.hexdigest()


def test_input_checksums_are_recomputed_from_the_raw_files_as_schema_md_says(demo_base: Path) -> None:
    """``cases.label_sha256`` is not a file's sha256sum, nor is a DICOM series' image_sha256:
    SCHEMA.md's descriptions must give a recipe hashlib alone follows (the label one as code)."""
    rel = demo_base / "releases" / "demo" / "0.1.0"
    desc = load_schemas()["cases"].descriptions
    m = re.search(r"`(hashlib\.sha256\(.+?\)\.hexdigest\(\))`", desc["label_sha256"])
    assert m, "label_sha256's description gives the Python expression"
    ctx = Context(PipelineConfig.load(demo_base / "pipeline.yaml"))
    roots = {name: s.root for name, s in ctx.sources.items()}
    cases = pq.read_table(rel / "cases.parquet").to_pylist()
    folders = 0
    for c in cases:
        root = roots[c["source"]]

        def digest(p: str, root: Path = root) -> str:
            return _digest_per_schema(root / p, desc["image_sha256"])

        if c["image_path"]:
            folders += (root / c["image_path"]).is_dir()
            assert digest(c["image_path"]) == c["image_sha256"], c["case_id"]
        if c["label_sha256"]:
            env = {"hashlib": hashlib, "digest": digest, "label_keys": c["label_keys"], "label_paths": c["label_paths"]}
            assert eval(m.group(1), env) == c["label_sha256"], c["case_id"]  # the description's own code
    assert folders >= 3  # the demo's DICOM series
    # release.json's inputs: the SHA-256 of the JSON list of the sorted checksums, as the description says
    info = json.loads((rel / "release.json").read_text())
    assert "JSON list" in desc["image_sha256"] and "`inputs`" in desc["label_sha256"]
    for ds, entry in info["inputs"].items():
        vals = sorted(v for c in cases if c["dataset"] == ds for v in (c["image_sha256"], c["label_sha256"]) if v)
        assert entry == {"sha256": hashlib.sha256(json.dumps(vals, separators=(",", ":")).encode()).hexdigest(),
                         "n_files": len(vals)}


def test_schema_md_says_how_to_read_the_stores_without_curator_and_it_holds(demo_base: Path) -> None:
    """Every array, attribute and recipe SCHEMA.md's store section names is checked on the demo
    release's stores with zarr, numpy and hashlib alone, so the text cannot drift from the stores."""
    import numpy as np
    import zarr

    rel = demo_base / "releases" / "demo" / "0.1.0"
    assert STORES_SECTION in (rel / "SCHEMA.md").read_text(encoding="utf-8")
    card = (rel / "DATASET_CARD.md").read_text(encoding="utf-8")
    assert "`cd stores && sha256sum -c SHA256SUMS`" in card and STORES_HEADING in card
    prep = {r["case_id"]: r for r in pq.read_table(rel / "preprocessed.parquet").to_pylist()}
    voxels = {(r["case_id"], r["term_id"], r["layer"]): r["voxels"]
              for r in pq.read_table(rel / "store_terms.parquet").to_pylist()}
    named_layers = set(re.findall(r"`(original|revised|pseudo)`", STORES_SECTION))
    assert named_layers == {"original", "revised", "pseudo"}
    keys = set(re.findall(r"attrs\.curator\.(\w+)(?:\.(\w+))?", STORES_SECTION))
    assert {k for k, _ in keys} >= {"affine", "normalisation", "label_raw_values", "shape", "geometry_guessed"}
    mask_code = re.search(r"`(np\.logical_or\.reduce\(.+?\))`", STORES_SECTION)
    assert mask_code
    multi = single = masks = 0
    for cid, row in prep.items():
        store = rel / row["store"]
        g = zarr.open_group(str(store), mode="r")
        cur = g.attrs["curator"]
        for key, sub in keys:
            if key == "geometry_guessed":  # written only for a guessed geometry, which the demo has not
                assert key not in cur and "ome" in g.attrs
                continue
            assert key in cur, (cid, key)
            assert not sub or sub in cur[key], (cid, key, sub)
        assert set(cur["normalisation"]) >= {"kind", "clip", "mean", "std", "scale"}
        image, body = g["image"], g["body"]
        assert image.metadata.dimension_names == body.metadata.dimension_names == ("i", "j", "k")
        assert str(image.dtype) in ("int16", "uint16", "float16") and str(body.dtype) == "uint8"
        assert "curator_written_shards" in image.attrs
        # physical value = stored value × normalisation.scale: the body's minimum is preprocessed's
        inside = np.asarray(image[...])[np.asarray(body[...]) == 1].astype(np.float64) * cur["normalisation"]["scale"]
        assert inside.min() == row["intensity_min"]
        # geometry: 16 numbers row by row; OME's scale and translation are its diagonal and last column
        a = np.asarray(cur["affine"]).reshape(4, 4)
        assert list(cur["affine"]) == list(row["affine"])
        ms = g.attrs["ome"]["multiscales"][0]["datasets"][0]
        assert ms["path"] == "image"
        assert ms["coordinateTransformations"][0]["scale"] == list(np.diag(a)[:3])
        assert ms["coordinateTransformations"][1]["translation"] == list(a[:3, 3])
        listed = g["labels"].attrs["ome"]["labels"]
        for layer, lg in g["labels"].groups():
            assert layer in named_layers
            planes = [p for _, p in sorted(lg.arrays())]
            assert [n for n, _ in sorted(lg.arrays())] == [str(i) for i in range(len(planes))]
            if len(planes) > 1:  # overlapping structures: no OME label image
                multi += 1
                assert layer not in listed and "ome" not in lg.attrs
            else:
                single += 1
                assert layer in listed and lg.attrs["ome"]["image-label"]["properties"]
            if layer == "original":
                raw = cur["label_raw_values"]
                assert len(raw) == len(planes)
                for p, m in zip(planes, raw, strict=True):
                    assert all(isinstance(v, str) for v in m.values()) and set(m) <= set(p.attrs["values"])
            for term in sorted({t for p in planes for ts in p.attrs["values"].values() for t in ts}):
                n = int(np.sum(eval(mask_code.group(1), {"np": np, "planes": planes, "term": term})))  # the doc's code
                assert n == voxels.get((cid, term, layer), 0), (cid, term, layer)  # store_terms: terms with voxels
                masks += 1
    assert multi and single and masks > 50
    # integrity as the section says: sha256sum -c, release.json's files, a store's hash from its lines
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], check=False, cwd=rel / "stores").returncode == 0
    info = json.loads((rel / "release.json").read_text())
    assert {"SCHEMA.md", "DATASET_CARD.md", "stores/SHA256SUMS"} <= set(info["files"])
    assert any(f.startswith("locations/") for f in info["files"]) and "release.json" not in info["files"]
    for f, digest in info["files"].items():
        assert hashlib.sha256((rel / f).read_bytes()).hexdigest() == digest, f
    lines = (rel / "stores" / "SHA256SUMS").read_text(encoding="utf-8").splitlines(keepends=True)
    for cid, meta in info["stores"].items():
        own = "".join(x.replace(f"  {cid}.zarr/", "  ", 1) for x in lines if f"  {cid}.zarr/" in x)
        assert hashlib.sha256(own.encode()).hexdigest() == meta["sha256"] == prep[cid]["store_sha256"]


def test_label_intensities_say_they_are_the_store_grids_and_volume_the_sources() -> None:
    """A physicist reads labels.mean_intensity as the label's HU: the description says it is measured
    on the resampled store (interpolated image), unlike volume_ml in the same row."""
    labels, qc = load_schemas()["labels"].descriptions, load_schemas()["qc"].descriptions
    for d in (labels["mean_intensity"], labels["sd_intensity"], qc["mean_intensity"], qc["sd_intensity"]):
        assert "store grid" in d, d
    assert "image_interpolation" in labels["mean_intensity"] and "source" in labels["mean_intensity"]


def test_attention_overlap_says_what_the_code_measures() -> None:
    """attention.overlap was "where this term's pseudo label overlaps another term's" — pseudo labels
    are one plane and never overlap, and an aorta with an empty pseudo label had 11.9 ml of it. It is
    where some model gives the term > threshold and some model another term (core.py)."""
    import numpy as np

    from curator.pseudolabel.core import AttentionParams, attention_reference, ensemble_stats

    said = load_schemas()["attention"].descriptions["overlap"]
    assert "pseudo label overlaps" not in said
    assert "some ensemble model gives this term" in said and "some model gives another term" in said
    assert "pseudo label is empty" in said and "model grid" in said
    # as said: one of three models gives the aorta 0.6 where another gives the liver 0.6
    shape = (6, 6, 6)
    aorta = [np.zeros(shape, np.float32) for _ in range(3)]
    liver = [np.zeros(shape, np.float32) for _ in range(3)]
    aorta[0][2:4, 2:4, 2:4] = 0.6
    liver[1][2:4, 2:4, 2:4] = 0.6
    codes, _, summary = attention_reference({"aorta": ensemble_stats(aorta), "liver": ensemble_stats(liver)},
                                            ["aorta"], AttentionParams())
    assert not (codes == 1).any() and summary["aorta"].overlap == 8.0  # an empty pseudo aorta, 8 voxels of overlap
