"""``curator diff A B``: what changed between two releases.

Every table present in both is compared row by row on its key (the ``sort`` columns of its
manifest schema): rows added, removed and changed (with the names of the changed columns).
On top of that the diff names the changes people ask about: cases added or removed, labels
newly excluded (or re-included) by QC, labels whose origin changed (a reviewed pseudo-label is
one change of (case, term) from ``pseudo`` to ``revised``, with its volume before and after,
not a label removed and another added), cases whose store content changed (release.json's
store hashes; each said by what differs: voxels, terms, grid, attributes or encoding), cases newly marked duplicate, cases whose split changed, schema changes (tables
and columns added, removed or retyped), the files added, removed or changed (release.json's
``files`` checksums: the card, croissant.json, the report, location files), and lineage changes
(every record of release.json but the release's identity, dates and content — registry,
taxonomy, models, inputs, pipeline config, each stage's record and the settings its code's
defaults changed, the torch version, device and thread count behind the pseudo labels:
``inference`` — each named down to the entry that changed, with both values:
:mod:`curator.release.diff_lineage`). A row whose only change is in a column saying where it
comes from (``terms.defined_in``) is counted apart, not as changed. ``content_differs`` says
whether the releases hold other tables, files or stores (``curator diff --exit-code``), as
``content_sha256`` counts them: a croissant.json changed alone (its publication date) is listed,
not counted.

Two releases may have been made by different curators: a stage version bumped between them
explains rows that changed under the same pipeline.yaml (``stages pseudolabel stage_version:
2 → 3``), and so does a default that changed or a setting that was added (``stages dedup config
global_neighbours: unset → 8``, named only for settings neither pipeline.yaml gave). What an older
curator recorded in another form is compared as the same thing: its ``sources`` entries kept
each source's folder (``root``, which release.json no longer publishes) and had no
``pseudonymous_ids`` (no source had them), so neither is a change; its top-level ``seed``,
which set nothing, is not compared.

>>> # d = diff_releases("releases/demo/0.1.0", "releases/demo/0.2.0"); d.tables["cases"].added
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from curator.release import diff_lineage, diff_sources
from curator.release.diff_lineage import taxonomy_version as _taxonomy_version  # noqa: F401 - its older home
from curator.release.diff_rows import (  # noqa: F401 - TableDiff, diff_table, EXAMPLES: their older home
    EXAMPLES,
    PROVENANCE_COLUMNS,
    RELATIVE_COLUMNS,
    WORDING_COLUMNS,
    TableDiff,
    _keys_for,
    _ranked,
    _rows,
    diff_table,
)
from curator.release.query import Release
from curator.release.store_diff import store_kind


@dataclass
class ReleaseDiff:
    a: str
    b: str
    tables: dict[str, TableDiff] = field(default_factory=dict)
    tables_added: list[str] = field(default_factory=list)
    tables_removed: list[str] = field(default_factory=list)
    schema: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # table -> added/removed/retyped
    qc_newly_excluded: list[tuple[Any, ...]] = field(default_factory=list)  # (case_id, term_id, origin)
    qc_newly_included: list[tuple[Any, ...]] = field(default_factory=list)
    # why, per label of those two lists: B's qc_reason; an override's is its own part (the person's
    # action, reviewer, date and reason), without what the filter said
    qc_reasons: dict[tuple[Any, ...], str | None] = field(default_factory=dict)
    newly_duplicate: list[str] = field(default_factory=list)
    no_longer_duplicate: list[str] = field(default_factory=list)
    # duplicate groups whose id changed because members joined or left while the kept case stayed:
    # (kept case, group id A, group id B, members joined, members left)
    groups_regrouped: list[tuple[str, str, str, list[str], list[str]]] = field(default_factory=list)
    split_changes: list[tuple[str, str, str]] = field(default_factory=list)  # (case_id, split A, split B)
    # (case_id, term_id, origins A, origins B, voxels A, voxels B, volume_ml A, volume_ml B): origins
    # joined by '+'; voxels on the grid each label was measured on (an original label's source grid,
    # the store grid of pseudo and revised), so compare the volumes across origins
    origin_changes: list[tuple[str, str, str, str, int | None, int | None, float | None, float | None]] = field(
        default_factory=list)
    stores_changed: list[str] = field(default_factory=list)  # cases in both whose voxels, terms or grid differ
    # cases in both whose stores differ only in their OME-Zarr attributes (the same voxels, grid and terms)
    stores_ome_changed: list[str] = field(default_factory=list)
    # cases in both whose stores differ in other attributes or in encoding only (the same voxels, grid, terms)
    stores_metadata_changed: list[str] = field(default_factory=list)
    # case -> kind (curator.release.store_diff.KINDS) -> store node -> what differs, for every store above
    store_changes: dict[str, dict[str, dict[str, list[str]]]] = field(default_factory=dict)
    # problem rows of B not in A, and of A not in B, errors first: {severity, kind, stage, dataset,
    # case_id, path, message} (the ``problems`` table's added/removed keys, with what they say)
    problems_added: list[dict[str, Any]] = field(default_factory=list)
    problems_removed: list[dict[str, Any]] = field(default_factory=list)
    lineage: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    # per release, the settings each stage ran with: what a setting one pipeline.yaml left out was
    settings_used: tuple[dict[str, Any], dict[str, Any]] = field(default_factory=lambda: ({}, {}))
    # files of release.json's ``files`` (every file but release.json and the stores) by checksum
    files_added: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    stores_added: list[str] = field(default_factory=list)  # release.json's ``stores``, by case
    stores_removed: list[str] = field(default_factory=list)
    backwards: bool = False  # B is an older version of A's collection: every change reads reversed
    # the sources whose licence, licence terms, citation or version changed, added or removed
    # (curator.release.diff_sources.source_changes), licence changes first
    sources: list[dict[str, Any]] = field(default_factory=list)
    # a sentence when the newer release is not derived from the older (built without a parent, or on
    # another version): the diff then compares two independent releases
    lineage_note: str | None = None

    @property
    def lineage_changes(self) -> list[str]:
        """One line per changed lineage entry: ``models: ensemble_a sha256 1f2e… → 9a8b…``, a setting
        one pipeline.yaml does not give with the value that release used (``pipeline_config stages
        splits seed: 0 (default) → 7``)."""
        default = diff_lineage.default_of(self.settings_used)
        return [line for k, (va, vb) in sorted(self.lineage.items())
                for line in diff_lineage.changed_entries(k, va, vb, default=default)]

    @property
    def other_files_changed(self) -> list[str]:
        """``files_changed`` but the tables whose rows or schema are said to differ (a table listed
        here holds the same rows in other bytes: another row order, compression or Parquet metadata)."""
        said = {f"{n}.parquet" for n, t in self.tables.items() if not t.empty} | {f"{n}.parquet" for n in self.schema}
        return [f for f in self.files_changed if f not in said]

    @property
    def content_differs(self) -> bool:
        """Whether the releases differ in what they hold (a table, a file, a store), whatever their
        lineage says: ``curator diff --exit-code`` exits 1 then."""
        from curator.release.integrity import (
            CONTENT_EXCLUDED,  # croissant.json (its date), as content_sha256 does
        )

        return not self.empty or bool(self.files_added or self.files_removed or self.stores_added
                                      or self.stores_removed
                                      or [f for f in self.files_changed if f not in CONTENT_EXCLUDED])

    @staticmethod
    def problem_lines(rows: list[dict[str, Any]], width: int = 140) -> list[str]:
        """Problem rows as ``curator diff`` lists them: ``error term_unknown Mine (dataset) — message``."""
        out = []
        for r in rows:
            where = r.get("case_id") or f"{r.get('dataset') or '-'} (dataset)"
            msg = str(r.get("message") or "").split(". What to do:")[0]
            out.append(f"{r.get('severity')} {r.get('kind')} {where} — "
                       + (msg if len(msg) <= width else msg[:width - 1] + "…"))
        return out

    def qc_lines(self, labels: list[tuple[Any, ...]]) -> list[str]:
        """``labels`` (of ``qc_newly_excluded`` or ``qc_newly_included``) as ``curator diff`` lists them:
        ``case term origin — why`` (``override include (RAD1, 2024-06-01): normal pancreas``)."""
        out = []
        for k in labels:
            why = self.qc_reasons.get(k)
            out.append(" ".join(map(str, k)) + (f" — {why}" if why else ""))
        return out

    @property
    def cases_added(self) -> list[str]:
        return [k[0] for k in self.tables["cases"].added] if "cases" in self.tables else []

    @property
    def cases_removed(self) -> list[str]:
        return [k[0] for k in self.tables["cases"].removed] if "cases" in self.tables else []

    @property
    def summary(self) -> dict[str, Any]:
        """The counts a reader asks first (the dataset card's "Changes since" section, changes.json's
        ``summary``): cases and labels added, removed and changed (labels whose QC reason only was
        reworded apart), labels newly excluded and re-included by QC, and the sources changed."""
        def counts(name: str) -> dict[str, int] | None:
            t = self.tables.get(name)
            if t is None:
                return None
            return {"added": len(t.added), "removed": len(t.removed), "changed": len(t.changed),
                    "wording_only": len(t.wording_only)}

        return {"cases": counts("cases"), "labels": counts("labels"),
                "qc_newly_excluded": len(self.qc_newly_excluded), "qc_newly_included": len(self.qc_newly_included),
                "sources": diff_sources.source_lines(self.sources)}

    @property
    def empty(self) -> bool:
        return (all(t.empty for t in self.tables.values()) and not self.tables_added and not self.tables_removed
                and not self.schema and not (self.stores_changed or self.stores_ome_changed
                                                 or self.stores_metadata_changed or self.store_changes))

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "lineage_note": self.lineage_note, "sources": self.sources,
                "tables": {n: t.to_dict() for n, t in sorted(self.tables.items())},
                "tables_added": self.tables_added, "tables_removed": self.tables_removed, "schema": self.schema,
                "qc_newly_excluded": [list(x) for x in self.qc_newly_excluded],
                "qc_newly_included": [list(x) for x in self.qc_newly_included],
                "qc_reasons": [[*k, why] for k, why in self.qc_reasons.items()],
                "newly_duplicate": self.newly_duplicate, "no_longer_duplicate": self.no_longer_duplicate,
                "groups_regrouped": [{"kept_case_id": k, "group_id_a": ga, "group_id_b": gb, "joined": j, "left": lf}
                                     for k, ga, gb, j, lf in self.groups_regrouped],
                "split_changes": [list(x) for x in self.split_changes],
                "problems_added": self.problems_added, "problems_removed": self.problems_removed,
                "origin_changes": [list(x) for x in self.origin_changes], "stores_changed": self.stores_changed,
                "stores_ome_changed": self.stores_ome_changed, "stores_metadata_changed": self.stores_metadata_changed,
                "store_changes": {c: {"kind": store_kind(ch), **ch} for c, ch in sorted(self.store_changes.items())},
                "files_added": self.files_added, "files_removed": self.files_removed,
                "files_changed": self.files_changed, "stores_added": self.stores_added,
                "stores_removed": self.stores_removed, "content_differs": self.content_differs,
                "lineage": {k: {"a": v[0], "b": v[1]} for k, v in sorted(self.lineage.items())},
                "lineage_changes": self.lineage_changes, "summary": self.summary}


def _store_file_sums(release: Path) -> dict[str, dict[str, str]]:
    """case id -> {file inside its store: sha256} from ``stores/SHA256SUMS`` ({} when unreadable)."""
    from curator.release.integrity import STORES_DIR, SUMS_NAME, case_id_of_store, parse_sums

    out: dict[str, dict[str, str]] = {}
    try:
        text = (release / STORES_DIR / SUMS_NAME).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return out
    for rel, digest in parse_sums(text).items():
        store, _, inside = rel.partition("/")
        if digest and inside:
            out.setdefault(case_id_of_store(store), {})[inside] = digest
    return out


def _stores(d: ReleaseDiff, a: Path, b: Path, changed: list[str]) -> None:
    """Classify the stores whose hash differs by what differs (curator.release.store_diff): their
    voxels, terms or grid (``stores_changed``), OME-Zarr attributes alone (``stores_ome_changed``),
    other attributes or encoding (``stores_metadata_changed``)."""
    from curator.release.integrity import STORES_DIR
    from curator.release.store_diff import ome_only, store_changes

    files_a, files_b = (_store_file_sums(r) if changed else {} for r in (a, b))
    for c in changed:
        sa, sb = (r / STORES_DIR / f"{c}.zarr" for r in (a, b))
        both = sa.is_dir() and sb.is_dir()
        ch = store_changes(sa, sb, files_a.get(c), files_b.get(c)) if both else {}
        if not ch:  # no store to read, or only bytes that parse the same
            ch = {"encoding": {"": ["file bytes"]}} if both else {"voxels": {"": ["not in the release"]}}
        d.store_changes[c] = ch
        kind = store_kind(ch)
        (d.stores_changed if kind in ("voxels", "terms", "grid") else d.stores_ome_changed if ome_only(ch)
         else d.stores_metadata_changed).append(c)



_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
PROBLEM_FIELDS = ("severity", "kind", "stage", "dataset", "case_id", "path", "message")


def _problem_rows(df: pl.DataFrame, keys: list[str], wanted: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The rows of ``df`` (a ranked ``problems`` table) whose key is in ``wanted``, errors first."""
    if not wanted:
        return []
    want = set(wanted)
    cols = [c for c in PROBLEM_FIELDS if c in df.columns]
    rows = [{c: r[c] for c in cols} for r in df.iter_rows(named=True) if tuple(r[k] for k in keys) in want]
    return sorted(rows, key=lambda r: (_SEVERITY_ORDER.get(str(r.get("severity")), 3), str(r.get("kind")),
                                       str(r.get("dataset")), str(r.get("case_id"))))


def _schema_changes(sa: pa.Schema, sb: pa.Schema) -> dict[str, list[Any]]:
    ta = {f.name: str(f.type) for f in sa}
    tb = {f.name: str(f.type) for f in sb}
    out: dict[str, list[Any]] = {
        "added": [c for c in tb if c not in ta], "removed": [c for c in ta if c not in tb],
        "retyped": [[c, ta[c], tb[c]] for c in ta if c in tb and ta[c] != tb[c]]}
    return {k: v for k, v in out.items() if v}


def _qc(d: ReleaseDiff, a: pl.DataFrame, b: pl.DataFrame) -> None:
    if "qc_decision" not in a.columns or "qc_decision" not in b.columns:
        return
    keys = ["case_id", "term_id", "origin"]
    j = a.select(*keys, qa="qc_decision").join(b.select(*keys, qb="qc_decision"), on=keys, how="right")
    excl = pl.col("qb") == "exclude"
    d.qc_newly_excluded = _rows(j.filter(excl & pl.col("qa").ne_missing(pl.lit("exclude"))).select(keys).sort(keys))
    d.qc_newly_included = _rows(j.filter((pl.col("qa") == "exclude") & ~excl.fill_null(False))
                                .select(keys).sort(keys))
    listed = {*d.qc_newly_excluded, *d.qc_newly_included}
    if listed and "qc_reason" in b.columns:
        for *k, why in _rows(b.select(*keys, "qc_reason")):
            if tuple(k) in listed:
                d.qc_reasons[tuple(k)] = _said(why)


def _said(reason: str | None) -> str | None:
    """A label's ``qc_reason`` as the diff lists it: an override's own part (``override exclude
    (RAD1, 2024-06-01): leaks``, not what the filter said before it), else the whole reason."""
    if reason and reason.startswith("override "):
        return reason.split("; filter said: ", 1)[0]
    return reason


ORIGIN_ORDER = ("revised", "original", "pseudo")  # the label a loader takes first, for the voxel count


def _origins(df: pl.DataFrame) -> pl.DataFrame:
    """Per (case, term): its origins ('+'-joined, in ORIGIN_ORDER) and the voxels and volume of the
    first (volume_ml null in a release without the column)."""
    rank = pl.col("origin").replace_strict({o: i for i, o in enumerate(ORIGIN_ORDER)}, default=len(ORIGIN_ORDER),
                                           return_dtype=pl.Int8)
    ml = pl.col("volume_ml") if "volume_ml" in df.columns else pl.lit(None, dtype=pl.Float64).alias("volume_ml")
    return (df.select("case_id", "term_id", "origin", "voxels", ml).with_columns(rank=rank).sort("rank", "origin")
            .group_by("case_id", "term_id", maintain_order=True)
            .agg(origins=pl.col("origin").str.join("+"), voxels=pl.col("voxels").first(),
                 volume_ml=pl.col("volume_ml").first()))


def _origin_changes(d: ReleaseDiff, a: pl.DataFrame, b: pl.DataFrame) -> None:
    if not {"origin", "voxels"} <= set(a.columns) & set(b.columns):
        return
    keys = ["case_id", "term_id"]
    j = _origins(a).join(_origins(b), on=keys, how="full", coalesce=True, suffix="_b")
    j = j.filter(pl.col("origins").ne_missing(pl.col("origins_b")) & pl.col("origins").is_not_null()
                 & pl.col("origins_b").is_not_null())  # a term new or gone altogether is a label added/removed
    d.origin_changes = [tuple(r) for r in j.select(*keys, "origins", "origins_b", "voxels", "voxels_b",
                                                   "volume_ml", "volume_ml_b").sort(keys).iter_rows()]


def _dups(d: ReleaseDiff, a: pl.DataFrame | None, b: pl.DataFrame | None) -> None:
    def dropped(df: pl.DataFrame | None) -> set[str]:
        return set(df.filter(~pl.col("kept"))["case_id"].to_list()) if df is not None else set()

    da, db = dropped(a), dropped(b)
    d.newly_duplicate, d.no_longer_duplicate = sorted(db - da), sorted(da - db)
    d.groups_regrouped = _regrouped(a, b)


def _regrouped(a: pl.DataFrame | None, b: pl.DataFrame | None) -> list[tuple[str, str, str, list[str], list[str]]]:
    """Groups whose kept case is the same in A and B but whose id is not: the id is derived from
    the members, so a copy joining (a dataset added) or leaving renames the group. Said with the
    members that joined and left, so the new id reads as the old group, not as a new one."""
    if a is None or b is None:
        return []

    def groups(df: pl.DataFrame) -> dict[str, tuple[str, set[str]]]:  # kept case -> (group id, members)
        out: dict[str, tuple[str, set[str]]] = {}
        for gid, case, kept in df.select("group_id", "case_id", "kept_case_id").iter_rows():
            out.setdefault(kept, (gid, set()))[1].add(case)
        return out

    ga, gb = groups(a), groups(b)
    return [(k, ga[k][0], gb[k][0], sorted(gb[k][1] - ga[k][1]), sorted(ga[k][1] - gb[k][1]))
            for k in sorted(set(ga) & set(gb)) if ga[k][0] != gb[k][0]]


def diff_frames(d: ReleaseDiff, frames: dict[str, tuple[pl.DataFrame, pl.DataFrame]]) -> None:
    """Compare the tables both releases hold (name -> (A's rows, B's rows)) into ``d``: each table's
    rows, the problems added and removed, the sources' changes, QC's and the labels' origins. The
    release step that writes ``changes.json`` and the card's "Changes since" section calls it on the
    tables being released."""
    for name, (fa, fb) in sorted(frames.items()):
        ka, kb, keys = _ranked(fa, fb, _keys_for(name, fa.columns, fb.columns))
        d.tables[name] = diff_table(ka, kb, keys, RELATIVE_COLUMNS.get(name), PROVENANCE_COLUMNS.get(name),
                                    WORDING_COLUMNS.get(name))
        if name == "problems":
            d.problems_added = _problem_rows(kb, keys, d.tables[name].added)
            d.problems_removed = _problem_rows(ka, keys, d.tables[name].removed)
    if "sources" in frames:
        d.sources = diff_sources.source_changes(*(f.to_dicts() for f in frames["sources"]))
    if "labels" in frames:
        _qc(d, *frames["labels"])
        _origin_changes(d, *frames["labels"])


def _older(b: dict[str, Any], a: dict[str, Any]) -> bool:
    """Whether release.json ``b`` is an older version of ``a``'s collection."""
    from curator.config import SEMVER
    from curator.release.lineage import version_key

    va, vb = a.get("version"), b.get("version")
    return (a.get("collection") == b.get("collection") and isinstance(va, str) and isinstance(vb, str)
            and bool(SEMVER.match(va) and SEMVER.match(vb)) and version_key(vb) < version_key(va))


def diff_releases(a: str | Path, b: str | Path) -> ReleaseDiff:
    """Compare two releases (folders or collection folders)."""
    ra, rb = Release(a), Release(b)
    d = ReleaseDiff(f"{ra.info.get('collection')} {ra.info.get('version')}",
                    f"{rb.info.get('collection')} {rb.info.get('version')}", backwards=_older(rb.info, ra.info))
    na, nb = set(ra.table_names()), set(rb.table_names())
    d.tables_added, d.tables_removed = sorted(nb - na), sorted(na - nb)
    frames: dict[str, tuple[pl.DataFrame, pl.DataFrame]] = {}
    for name in sorted(na & nb):
        sch = _schema_changes(ra.schema(name), rb.schema(name))  # a damaged file: a release_corrupt error naming it
        if sch:
            d.schema[name] = sch
        frames[name] = (ra.table(name), rb.table(name))
    diff_frames(d, frames)
    sa_, sb_ = ra.info.get("stores") or {}, rb.info.get("stores") or {}
    changed = sorted(c for c in set(sa_) & set(sb_) if (sa_[c] or {}).get("sha256") != (sb_[c] or {}).get("sha256"))
    _stores(d, ra.path, rb.path, changed)
    _dups(d, *(r.table("duplicates") if "duplicates" in n else None for r, n in ((ra, na), (rb, nb))))
    if "splits" in frames:
        sa, sb = frames["splits"]
        j = sa.select("case_id", a="split").join(sb.select("case_id", b="split"), on="case_id")
        d.split_changes = [tuple(r) for r in j.filter(pl.col("a") != pl.col("b")).sort("case_id").iter_rows()]
    d.stores_added, d.stores_removed = sorted(set(sb_) - set(sa_)), sorted(set(sa_) - set(sb_))
    fa_, fb_ = ((r.info.get("files") or {}) for r in (ra, rb))
    d.files_added, d.files_removed = sorted(set(fb_) - set(fa_)), sorted(set(fa_) - set(fb_))
    d.files_changed = sorted(f for f in set(fa_) & set(fb_) if fa_[f] != fb_[f])
    d.lineage = {**diff_lineage.top_level(ra.info, rb.info), **diff_lineage.stage_lineage(ra.info, rb.info)}
    ca, cb = (diff_lineage.settings(r.info) for r in (ra, rb))
    diff_lineage.comparable_sources(ca, cb)
    if ca != cb:
        d.lineage["pipeline_config"] = (ca, cb)
    d.settings_used = (diff_lineage.settings_used(ra.info), diff_lineage.settings_used(rb.info))
    d.lineage_note = diff_sources.lineage_note(*((rb.info, ra.info) if d.backwards else (ra.info, rb.info)))
    return d
