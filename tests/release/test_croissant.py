"""croissant.json: the release in MLCommons Croissant 1.1, read back by mlcroissant."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curator.release.croissant import data_type, licence_ref
from curator.schema import load_schemas


@pytest.fixture(scope="module")
def demo_release(demo_base: Path) -> Path:
    return demo_base / "releases" / "demo" / "0.1.0"


def _plain(v: object) -> object:
    """A value as mlcroissant yields it (bytes for text, numpy scalars, lists) in Python terms."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    return v.item() if hasattr(v, "item") else v


# mlcroissant's own use of rdflib and pandas warns of their future versions
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_mlcroissant_validates_the_demo_release_and_reads_every_table_back(
        demo_release: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Every record set loads through mlcroissant (a tool that knows nothing of curator) with the
    rows and values of its Parquet file, and validation leaves no error or warning."""
    import mlcroissant as mlc  # a test dependency (pyproject [test])

    with caplog.at_level(logging.WARNING):
        ds = mlc.Dataset(jsonld=str(demo_release / "croissant.json"))
    assert not [r.getMessage() for r in caplog.records if "Found the following" in r.getMessage()]
    tables = sorted(p.stem for p in demo_release.glob("*.parquet"))
    assert sorted(rs.name for rs in ds.metadata.record_sets) == tables
    for name in tables:
        want = pq.read_table(demo_release / f"{name}.parquet").to_pylist()
        got = [{k.split("/", 1)[1]: _plain(v) for k, v in r.items()} for r in ds.records(record_set=name)]
        assert len(got) == len(want), name
        for g, w in zip(got, want, strict=True):
            for col, value in w.items():
                if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
                    assert g[col] == pytest.approx(value, nan_ok=True), (name, col)
                elif value is not None:
                    assert g[col] == value, (name, col)


def test_croissant_describes_what_release_json_checksums(demo_release: Path) -> None:
    doc = json.loads((demo_release / "croissant.json").read_text())
    info = json.loads((demo_release / "release.json").read_text())
    assert "croissant.json" in info["files"]  # verify covers it
    objects = {d["contentUrl"]: d for d in doc["distribution"] if d["@type"] == "cr:FileObject"}
    assert {p.name for p in demo_release.glob("*.parquet")} <= set(objects)
    for url, d in objects.items():
        assert d["sha256"] == info["files"][url], url
    assert {d["@id"] for d in doc["distribution"] if d["@type"] == "cr:FileSet"} == {"stores", "locations"}
    assert doc["version"] == "0.1.0" and doc["datePublished"] == info["created"][:10]
    # the sources with their licences and citations; no machine path anywhere
    assert sorted(s["name"] for s in doc["isBasedOn"]) == sorted(info["registry"])
    assert set(doc["license"]) == {"https://spdx.org/licenses/CC-BY-4.0.html",
                                   "https://spdx.org/licenses/CC-BY-NC-SA-4.0.html",
                                   "https://spdx.org/licenses/CC-BY-SA-4.0.html"}
    assert doc["citeAs"] == (demo_release / "CITATIONS.bib").read_text()
    text = json.dumps(doc)
    assert str(demo_release.parent.parent.parent) not in text and "/tmp" not in text
    # a column's description is the schema's
    cases = next(rs for rs in doc["recordSet"] if rs["@id"] == "cases")
    case_id = next(f for f in cases["field"] if f["name"] == "case_id")
    assert case_id["description"] == load_schemas()["cases"].descriptions["case_id"]
    assert "original" in doc["rai:dataAnnotationProtocol"] and "pseudo" in doc["rai:dataAnnotationProtocol"]


def test_every_declared_column_type_has_a_croissant_type() -> None:
    """A new type in manifests/tables/ must be given its Croissant type (a release would fail)."""
    for ts in load_schemas().values():
        for f in ts.schema:
            kind, shape = data_type(f.type)
            assert kind.startswith(("sc:", "cr:"))
            assert (shape is not None) == (pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type))
    assert data_type(pa.list_(pa.int64(), 3)) == ("cr:Int64", "3")
    assert data_type(pa.list_(pa.list_(pa.string()))) == ("sc:Text", "-1,-1")
    assert data_type(pa.float32()) == ("cr:Float32", None)
    with pytest.raises(ValueError, match="binary"):
        data_type(pa.binary())


def test_licence_refs() -> None:
    assert licence_ref("CC-BY-NC-SA-4.0", None) == "https://spdx.org/licenses/CC-BY-NC-SA-4.0.html"
    assert licence_ref("unknown (challenge registration)", "https://x.org/terms") == "https://x.org/terms"
    assert licence_ref("unknown (challenge registration)", None) == "unknown (challenge registration)"
    assert licence_ref("unknown", None) == "unknown"


def test_url_and_creators_from_pipeline_yaml(demo: Path, release_with: Callable[..., Path]) -> None:
    """Publication metadata comes from `release:`; left out, the published config (and its hash)
    is what it was before the keys existed."""
    from curator.config import PipelineConfig
    from curator.release.lineage import published_config
    from curator.runner.context import Context

    plain = published_config(Context(PipelineConfig.load(demo / "pipeline.yaml")))
    assert not {"url", "creators"} & set(plain["release"])
    rel = release_with(demo, "0.2.0", url="https://example.org/demo", creators=["Jane Doe", "John Roe"])
    doc = json.loads((rel / "croissant.json").read_text())
    assert doc["url"] == "https://example.org/demo"
    assert [c["name"] for c in doc["creator"]] == ["Jane Doe", "John Roe"]
    assert json.loads((rel / "release.json").read_text())["pipeline_config"]["release"]["creators"] == \
        ["Jane Doe", "John Roe"]
