"""Release step: ``SCHEMA.md`` — what every table and column of the release means.

The column descriptions live in the manifest schemas (``manifests/tables/*.yaml``) of the
curator that built the release; a researcher holding only the release folder would otherwise
see names and types (DuckDB's ``describe``) but not units, conventions or what a null means.
``SCHEMA.md`` lists, for each table the release holds, its version, description and columns
(type, whether null occurs, description). :meth:`curator.release.query.Release.connect`
attaches the same descriptions to the DuckDB views as comments (``duckdb_columns()``).
A release with case stores also gets :data:`STORES_SECTION`: how the Zarr stores are laid out
and checked, for a reader without curator (the facts of :mod:`curator.store`,
:mod:`curator.ome`, the preprocess stage and :mod:`curator.release.integrity`; a test checks
each array and attribute it names against a built release).

>>> text = schema_markdown(["sources"], "1.8.0")
>>> "## sources (table version 1)" in text and "| commercial_use | string | no |" in text
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curator.schema import table_schema

if TYPE_CHECKING:
    from curator.release.build import ReleaseBuilder

SCHEMA_FILE = "SCHEMA.md"
STORES_HEADING = "Reading the stores without curator"
STORES_SECTION = f"""## {STORES_HEADING}

Each case's image and labels are one Zarr v3 store, `stores/<case_id>.zarr` (the `preprocessed`
table's `store`), which zarr-python 3 and tensorstore read: `zarr.open_group("stores/<case_id>.zarr",
mode="r")`. Every array is 3-D, indexed `(i, j, k)` (its `dimension_names`), sharded, each chunk
Blosc-compressed and followed by its CRC32C. A shard holding only zeros is not written and reads
as 0; each array's attribute `curator_written_shards` lists the shard files that were written,
so a listed one that is missing means a damaged copy.

**Arrays**

* `image`: the scan on the store's grid in physical units (HU for CT), as `int16` (`uint16` for
  an integer image beyond int16) or `float16`; no `image` in a label-only case. Physical value =
  stored value × `attrs.curator.normalisation.scale` (the root group's attribute `curator`;
  `preprocessed.norm_scale`): 1, except for a `float16` image whose values needed scaling by a
  power of two. A dataset's intensity offset fix (`attrs.curator.intensity_offset`) is already
  applied. curator's loader feeds a network `(clip(value × scale, clip[0], clip[1]) − mean) / std`,
  with `clip`, `mean` and `std` from `attrs.curator.normalisation` (`kind`: `ct` for CT's fixed
  clip, `fixed` for PET's fixed clip `pet_clip`, `percentile` for a clip from the image's own percentiles).
* `body`: the body mask (`uint8`, 1 inside) on the same grid; none without an image.
* `labels/<layer>/<plane>`: integer label planes (`uint8` whenever the codes fit), named `0`,
  `1`, .... A layer has several planes only where its structures overlap (per-structure masks
  such as TotalSegmentator's: a structure goes to a new plane where it overlaps one placed before).

**Layers**: `original` is the dataset's own annotation, mapped to the release's terms;
`revised` holds labels a person reviewed and corrected (`curator review import`); `pseudo`
holds model predictions (the pseudolabel stage). A term's label comes from the first layer
that holds it, in the order original, revised, pseudo. The `labels` table names that layer
(`origin`, `layer`) and QC's verdict: with `qc_decision = 'exclude'` curator's loader treats the
term as not annotated in that layer and reads the next layer that holds it. A term found in no
plane's `values` of a layer is not annotated there (which is not the same as absent).

**Codes and terms**

* Each plane's attribute `values` maps a code (a string) to a list of term ids, e.g.
  `{{"2": ["kidney_left", "kidney"]}}`; code 0 is background. A code can stand for several terms
  (a structure and the terms it is part of). A term's mask is the union, over every plane of
  the layer, of the voxels whose code maps to it:
  `np.logical_or.reduce([np.isin(plane[...], [int(c) for c, t in plane.attrs["values"].items() if term in t]) for plane in planes])`.
  `terms.parquet` gives each term id's name, synonyms and hierarchy.
* `attrs.curator.label_raw_values` is a list with one mapping per plane of the `original`
  layer: code → what the dataset's files held, as strings: the raw value of a label map
  (`{{"1": "1", "2": "2"}}`) or the structure name of per-structure masks (`{{"1": "aorta"}}`).

**Geometry**: `attrs.curator.affine` holds 16 numbers, a 4×4 matrix row by row, which maps a voxel
index to patient RAS millimetres (x towards the patient's right, y anterior, z superior):
`[x, y, z, 1] = A · [i, j, k, 1]`, with voxel centres at whole indices (negate x and y for
DICOM's LPS). `preprocessed.affine` holds the same matrix. `attrs.curator.shape` is the grid's
shape, `attrs.curator.source_affine` and `source_shape` the image's grid as it was read, and
`crop_start` where this grid starts in the resampled one.

**OME-Zarr**: attribute `ome` (OME-NGFF 0.5) makes a store an OME-Zarr image for napari,
ome-zarr-py and other OME-Zarr tools: the root's `multiscales` (dataset `image`, `scale` = the
voxel spacing, `translation` = the affine's last column) and, in `labels/`, the list `labels` of
the layers shown as OME label images (`image-label.properties`: `label-value` → `terms`). It is
written only where it is exact:

* A layer of several planes is not in the `labels` list (which is `[]` when no layer has a single
  plane): an OME label image is a single array, and showing plane 0 alone would hide the
  structures of the others. OME-Zarr tools show no labels for such a layer; read its planes as
  above.
* A store whose grid is oblique or flipped (`attrs.curator.affine`'s 3×3 part is not diagonal
  with positive spacings: preprocessing keeps an oblique scan's obliquity), a store whose
  geometry the reader guessed (`attrs.curator.geometry_guessed` says what the header lacked)
  and a label-only store have no `ome` at all. Read their arrays with Zarr and place them with
  `attrs.curator.affine`.

**Integrity**

* `cd stores && sha256sum -c SHA256SUMS` checks every file of every store.
* `release.json`'s `files` gives the SHA-256 of every other file (the tables, this file, the
  card, `stores/SHA256SUMS` itself, `locations/*.npz`); compare it with `sha256sum FILE`.
  `release.json` itself is not listed.
* A store's content hash (`release.json` `stores[case_id].sha256`, and `preprocessed.store_sha256`
  since table version 2) is the SHA-256 of the store's own lines of `SHA256SUMS` with the
  `<case_id>.zarr/` prefix taken off, in the order they appear there.
"""


def _cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped, no raw HTML."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def schema_markdown(tables: list[str], schema_version: str, stores: bool = False) -> str:
    """The ``SCHEMA.md`` text for ``tables`` (each must have a manifest schema); ``stores``: the
    release holds case stores, which :data:`STORES_SECTION` describes."""
    out = [f"# Tables and columns (manifest schema {schema_version})", "",
           ("Every table is a Parquet file of this folder (`<table>.parquet`); query them with "
           "`curator query . \"select ...\"` or any Parquet reader. Types are Arrow types; *null* says "
           "whether a value may be missing. The same descriptions are the column comments of "
           "`curator query` (`select column_name, comment from duckdb_columns() where table_name = "
           "'cases'`). In this file a table cell writes `|` as `\\|` (Markdown's escape): code copied from "
           "the raw text, not the rendered page, needs it undone."), ""]
    for name in sorted(tables):
        ts = table_schema(name)
        out += [f"## {name} (table version {ts.version})", ""]
        if ts.description.strip():
            out += [_cell(ts.description), ""]
        out += ["| column | type | null | description |", "|---|---|---|---|"]
        for f in ts.schema:
            out.append(f"| {f.name} | {_cell(str(f.type))} | {'yes' if f.nullable else 'no'} | "
                       f"{_cell(ts.descriptions.get(f.name, ''))} |")
        out.append("")
    if stores:
        out.append(STORES_SECTION)
    return "\n".join(out)


def release_step(b: ReleaseBuilder) -> None:
    from curator.schema import schema_version

    stores = (b.staging / "stores").is_dir()  # the preprocess release step has staged them
    (b.staging / SCHEMA_FILE).write_text(schema_markdown(list(b.tables), schema_version(), stores), encoding="utf-8")
