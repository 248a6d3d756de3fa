"""``croissant.json``: the release described in MLCommons Croissant 1.1 (JSON-LD).

Croissant is the metadata format dataset hubs and ML venues read (Hugging Face, Kaggle,
OpenML; the NeurIPS Datasets & Benchmarks track asks for it): with it a release can be
loaded record by record by tools that know nothing of curator (``mlcroissant``,
TFDS, PyTorch loaders built on it) and is described where it is published. The file holds

* ``distribution``: every Parquet table as a ``cr:FileObject`` with its SHA-256, the dataset
  card, citations and schema documents, and the Zarr stores and patch locations as
  ``cr:FileSet`` (paths relative to the release folder, so the folder can move or be uploaded
  as it is);
* ``recordSet``: one record set per table, one field per column with the column's description
  from ``manifests/tables/`` and its type (lists as arrays with their shape);
* ``isBasedOn``: the source datasets with their versions, licences, homepages and citations,
  ``license`` the licences of all of them, ``citeAs`` every BibTeX entry (``CITATIONS.bib``);
* a few Responsible-AI (``rai:``) statements that curator knows to be true of every release
  (how patient ids are pseudonymised, which label origins the release holds).

It is written after the tables (it names their checksums) and listed with them in
``release.json``. Its one date (``datePublished``) is the day of release.json's ``created``.
The structure is checked against ``mlcroissant`` in the tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from curator.release.card_check import section_text, split_front_matter
from curator.schema import table_schema

if TYPE_CHECKING:  # pragma: no cover
    from curator.release.build import ReleaseBuilder

CONFORMS_TO = "http://mlcommons.org/croissant/1.1"
# the standard @context of Croissant 1.1 (as mlcroissant writes it) and the RAI vocabulary
CONTEXT: dict[str, Any] = {
    "@language": "en", "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"}, "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/", "examples": {"@id": "cr:examples", "@type": "@json"},
    "equivalentProperty": "cr:equivalentProperty", "extract": "cr:extract", "field": "cr:field",
    "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject", "fileSet": "cr:fileSet",
    "format": "cr:format", "includes": "cr:includes", "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5",
    "parentField": "cr:parentField", "path": "cr:path", "recordSet": "cr:recordSet",
    "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated", "replace": "cr:replace",
    "samplingRate": "cr:samplingRate", "sc": "https://schema.org/", "separator": "cr:separator",
    "source": "cr:source", "subField": "cr:subField", "transform": "cr:transform",
}
# documents of the release besides the tables: (file, encoding format, what it is)
DOCUMENTS = (
    ("DATASET_CARD.md", "text/markdown", ("The dataset card: sources, licences, composition, exclusions, splits, "
     "known issues, lineage.")),
    ("CITATIONS.bib", "application/x-bibtex", "Every BibTeX entry the release's sources ask to be cited, once."),
    ("SCHEMA.md", "text/markdown", "Every table's columns: type, whether null occurs, meaning."),
    ("report.html", "text/html", "Visual quality-control report (self-contained, opens offline)."),
)
# folders of per-case files: (id, glob, format given by its specification, what they are)
FILE_SETS = (
    ("stores", "stores/*.zarr/**", "https://zarr-specs.readthedocs.io/en/latest/v3/core/index.html",
     ("Per-case Zarr v3 stores (image channels and label maps on the release's grid); the `preprocessed` "
     "and `store_terms` tables say what each holds; stores/SHA256SUMS has their content hashes.")),
    ("locations", "locations/*.npz", "https://numpy.org/doc/stable/reference/generated/numpy.savez.html",
     "Per-case foreground voxel samples the PyTorch patch loader draws patches around."),
)
_INTS = {pa.int8(): "cr:Int8", pa.int16(): "cr:Int16", pa.int32(): "cr:Int32", pa.int64(): "cr:Int64",
         pa.uint8(): "cr:UInt8", pa.uint16(): "cr:UInt16", pa.uint32(): "cr:UInt32", pa.uint64(): "cr:UInt64"}
_SPDX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")


def data_type(t: pa.DataType) -> tuple[str, str | None]:
    """A Parquet column's Croissant ``dataType`` and, for a list, its ``arrayShape``
    (``"3"`` fixed size, ``"-1"`` variable, ``"-1,-1"`` a list of lists).

    >>> data_type(pa.list_(pa.float64(), 3)), data_type(pa.list_(pa.list_(pa.string())))
    (('cr:Float64', '3'), ('sc:Text', '-1,-1'))
    """
    dims: list[str] = []
    while pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t):
        dims.append(str(t.list_size) if pa.types.is_fixed_size_list(t) else "-1")
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        name = "sc:Text"
    elif pa.types.is_boolean(t):
        name = "sc:Boolean"
    elif t in _INTS:
        name = _INTS[t]
    elif pa.types.is_floating(t):
        name = {16: "cr:Float16", 32: "cr:Float32"}.get(t.bit_width, "cr:Float64")
    elif pa.types.is_date(t):
        name = "sc:Date"
    elif pa.types.is_timestamp(t):
        name = "sc:DateTime"
    else:  # a new column type in manifests/tables/ needs its Croissant type chosen here
        raise ValueError(f"no Croissant data type for the Parquet type {t}")
    return name, ",".join(dims) or None


def record_set(name: str, path: Path) -> dict[str, Any]:
    """The record set of one released table: a field per column of its Parquet file."""
    ts = table_schema(name)
    fields = []
    for col in pq.read_schema(path):
        kind, shape = data_type(col.type)
        f: dict[str, Any] = {"@type": "cr:Field", "@id": f"{name}/{col.name}", "name": col.name,
                             "description": ts.descriptions.get(col.name) or col.name, "dataType": kind,
                             "source": {"fileObject": {"@id": path.name}, "extract": {"column": col.name}}}
        if shape:
            f |= {"isArray": True, "arrayShape": shape}
        fields.append(f)
    return {"@type": "cr:RecordSet", "@id": name, "name": name,
            "description": ts.description or f"the {name} table", "field": fields}


def licence_ref(licence: str, url: str | None) -> str:
    """What ``license`` holds for one source: the SPDX page of a plain SPDX-like id, else the
    licence's own page (``licence_url``), else its declared text (``unknown (challenge
    registration)``)."""
    text = licence.strip()
    if _SPDX_ID.fullmatch(text) and text.lower() not in {"unknown", "licence", "none", "custom"}:
        return f"https://spdx.org/licenses/{text}.html"
    return url or text


def _source(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"@type": "sc:Dataset", "name": row["source"], "alternateName": row["dataset"],
                           "version": row.get("dataset_version"), "description": row.get("title"),
                           "license": licence_ref(row["licence"], row.get("licence_url")),
                           "url": row.get("homepage"), "citeAs": row.get("citation") or None}
    return {k: v for k, v in out.items() if v not in (None, "")}


def _summary(staging: Path) -> tuple[str, dict[str, Any]]:
    """The card's summary as plain text and its front matter (empty without a card)."""
    card = staging / "DATASET_CARD.md"
    if not card.is_file():
        return "", {}
    front, body, _ = split_front_matter(card.read_text(encoding="utf-8"))
    text = section_text(body, "Summary").strip()
    return re.sub(r"\*\*|`", "", text), front or {}


def _rai(b: ReleaseBuilder) -> dict[str, str]:
    origins: list[str] = []
    if "labels" in b.tables:
        origins = sorted({o for o in b.tables.read("labels", ["origin"]).column("origin").to_pylist() if o})
    said = {"original": "`original`: the source dataset's own annotation",
            "pseudo": "`pseudo`: a model ensemble's prediction for a structure the dataset did not annotate "
                      "(not an annotation; the `attention` table ranks likely errors)",
            "revised": "`revised`: a pseudo label a reviewer corrected, or accepted as correct"}
    out = {
        "rai:dataCollection": (
            "Assembled by curator from public medical segmentation datasets (listed under isBasedOn), "
            "read in their published layouts; cases reused across datasets are grouped in the `duplicates` "
            "table and count as one patient in the splits."),
        "rai:personalSensitiveInformation": (
            "Patient ids are keyed pseudonyms (HMAC; the key stays with the publisher's workspace). DICOM "
            "headers are dropped at ingest except technical fields (manufacturer, scanner model, field "
            "strength). Per-case metadata (sex, age, BMI, ...) comes only from the fields a source's own "
            "metadata file publishes and its dataset YAML names; fields whose names identify a person or date "
            "an encounter are never copied. Images are published as their source datasets published them: "
            "curator does not deface."),
    }
    if origins:
        out["rai:dataAnnotationProtocol"] = (
            "Every label row says where it comes from (`labels.origin`): "
            + "; ".join(said.get(o, f"`{o}`") for o in origins)
            + ". Labels are mapped to one text taxonomy (`terms`); quality control decisions are in "
            "`labels.qc_decision`.")
    return out


def croissant(b: ReleaseBuilder) -> dict[str, Any]:
    """The Croissant document of the release being built (its tables already written)."""
    rc = b.ctx.config.release
    staging = b.staging
    summary, front = _summary(staging)
    tables = sorted(n for n in b.tables if (staging / f"{n}.parquet").is_file())
    distribution: list[dict[str, Any]] = [
        {"@type": "cr:FileObject", "@id": f"{n}.parquet", "name": f"{n}.parquet",
         "description": table_schema(n).description or f"the {n} table", "contentUrl": f"{n}.parquet",
         "encodingFormat": "application/x-parquet", "sha256": b.digest(f"{n}.parquet")}
        for n in tables]
    distribution += [{"@type": "cr:FileObject", "@id": f, "name": f, "description": what, "contentUrl": f,
                      "encodingFormat": fmt, "sha256": b.digest(f)}
                     for f, fmt, what in DOCUMENTS if (staging / f).is_file()]
    distribution += [{"@type": "cr:FileSet", "@id": i, "name": i, "description": what, "includes": glob,
                      "encodingFormat": fmt}
                     for i, glob, fmt, what in FILE_SETS if any(staging.glob(glob.split("/")[0] + "/*"))]
    sources = b.tables["sources"].to_pylist() if "sources" in b.tables else []
    licences = sorted({licence_ref(s["licence"], s.get("licence_url")) for s in sources})
    bib = staging / "CITATIONS.bib"
    keywords = ["medical imaging", "3D segmentation", *front.get("modalities", []), *front.get("regions", [])]
    doc: dict[str, Any] = {
        "@context": CONTEXT, "@type": "sc:Dataset", "conformsTo": CONFORMS_TO,
        "name": rc.collection, "version": rc.version, "datePublished": b.created[:10],
        "description": summary or f"Release {rc.version} of the {rc.collection} collection, built by curator.",
        "license": licences[0] if len(licences) == 1 else licences,
        "url": rc.url,
        "creator": [{"@type": "sc:Person", "name": n} for n in rc.creators],
        "keywords": keywords,
        "citeAs": bib.read_text(encoding="utf-8") if bib.is_file() else None,
        "isBasedOn": [_source(s) for s in sources],
        "distribution": distribution,
        "recordSet": [record_set(n, staging / f"{n}.parquet") for n in tables],
        **_rai(b),
    }
    return {k: v for k, v in doc.items() if v not in (None, [], "")}


def release_step(b: ReleaseBuilder) -> None:
    """Write ``croissant.json`` (a final step: after the tables are written)."""
    (b.staging / "croissant.json").write_text(json.dumps(croissant(b), indent=1, ensure_ascii=False) + "\n",
                                              encoding="utf-8")
