"""``DATASET_CARD.md``: the card generated into every release (YAML front matter + Markdown).

It lists every source with its licence and citation, what the release holds (cases per
dataset / modality / region, labels per term, per-case metadata coverage), what dedup and
QC excluded, the splits, the known issues (the problems table and the datasets' notes),
the licence constraints of the combination and the lineage. Tables a release does not
have (no ``labels`` before harmonize, no ``duplicates`` before dedup) are reported as
"not run", never guessed. The card holds no wall-clock time, so identical inputs give an
identical card. Its structure is checked by :mod:`curator.release.card_check`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import polars as pl
import yaml

from curator.errors import ReleaseError
from curator.release.build import ReleaseBuilder
from curator.release.card_check import bibtex_keys, check_card, md_fence, md_text
from curator.release.changes import card_section
from curator.release.licences import Combined, combine, parse_licence
from curator.release.lineage import config_hash

log = logging.getLogger("curator")
METADATA_COLUMNS = ("sex", "age_years", "bmi", "manufacturer", "scanner_model", "field_strength_t")


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table; each cell is plain text (:func:`md_text`)."""
    def cell(v: Any) -> str:
        return "" if v is None else md_text(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _frame(builder: ReleaseBuilder, name: str) -> pl.LazyFrame | None:
    """A table as a lazy frame (streamed from its file: a huge labels table is never loaded)."""
    return builder.tables.scan(name) if name in builder.tables else None


def _counts(df: pl.LazyFrame, by: list[str], name: str = "n") -> list[list[Any]]:
    return [list(r) for r in df.group_by(by).agg(pl.len().alias(name)).sort(by).collect(engine="streaming")
            .iter_rows()]


def card_sources(builder: ReleaseBuilder, cases: pl.LazyFrame) -> list[dict[str, Any]]:
    """The sources the release holds cases of. A source of pipeline.yaml that gave none (left out
    under ``allow_missing_sources``) is not one: its licence binds nothing in the release, so it
    is named under Known issues (:func:`_left_out`), not among the sources and licences. The
    ``sources`` table holds the same sources (:mod:`curator.release.sources`). ``cases`` counts the
    source's own cases (``cases.source``): one dataset ingested under two aliases is two sources."""
    per = dict(cases.group_by("source").len().collect().iter_rows())
    out = []
    for name, src in sorted(builder.ctx.sources.items()):
        s = src.spec
        if not per.get(name):
            continue
        out.append({"name": name, "dataset": s.name, "version": s.version, "title": s.title or None,
                    "licence": s.licence,
                    "licence_url": s.extra.get("licence_url") or None,
                    "licence_notes": s.extra.get("licence_notes") or None,
                    "licence_terms": s.extra.get("licence_terms") or None,
                    "citation_key": cited_key(s.citation_key, s.citation, s.name), "citation": s.citation.strip(),
                    "homepage": s.homepage or None, "modality": s.modality, "region": s.region,
                    "cases": int(per[name])})
    return out


def cited_key(declared: str | None, citation: str, name: str) -> str:
    """The key the card cites for a source: its ``citation_key`` when its BibTeX entries carry it,
    else the keys of those entries (a YAML without a key, or with one its entry does not carry —
    `curator labels check` reports that), else the key or the source's name (no BibTeX)."""
    keys = bibtex_keys(citation)
    given = [k.strip() for k in (declared or "").split(",") if k.strip()]
    if given and (not keys or all(k in keys for k in given)):
        return ",".join(given)
    return ",".join(keys) if keys else (declared or name)


def _front(builder: ReleaseBuilder, cases: pl.LazyFrame, sources: list[dict[str, Any]],
           lic: Combined) -> dict[str, Any]:
    from curator import __version__
    from curator.schema import schema_version

    rc = builder.ctx.config.release
    splits = builder.extra.get("splits", {})
    gone = _dropped_ids(builder)  # a dropped copy's patient id is the kept member's person again
    stats = cases.select(n=pl.len(), patients=pl.col("patient_id").filter(~pl.col("case_id").is_in(gone)).n_unique(),
                         datasets=pl.col("dataset").unique().sort().implode(),
                         modalities=pl.col("modality").unique().sort().implode(),
                         regions=pl.col("region").drop_nulls().unique().sort().implode()).collect().row(0, named=True)
    return {
        "collection": rc.collection, "version": rc.version,
        "parent_version": builder.parent.name if builder.parent else None,
        "schema_version": schema_version(), "code_version": __version__,
        "pipeline_config_hash": config_hash(builder.ctx),
        "n_cases": stats["n"], "n_patients": stats["patients"], "n_dropped_duplicates": len(gone),
        "n_label_rows": builder.tables.num_rows("labels") if "labels" in builder.tables else None,
        "datasets": list(stats["datasets"]), "modalities": list(stats["modalities"]),
        "regions": [r for r in stats["regions"] if r],
        "licences": sorted({s["licence"] for s in sources}),
        "licence_summary": lic.summary(),
        "splits": {k: splits[k] for k in ("train", "val", "test") if k in splits},
        "sources": [{k: v for k, v in s.items() if v is not None} for s in sources],
    }


def _dropped_ids(builder: ReleaseBuilder) -> list[str]:
    """Members of duplicate groups the keep policy dropped."""
    if "duplicates" not in builder.tables:
        return []
    t = builder.tables["duplicates"]
    return sorted(c for c, k in zip(t.column("case_id").to_pylist(), t.column("kept").to_pylist(), strict=True)
                  if not k)


def _summary(builder: ReleaseBuilder, front: dict[str, Any]) -> str:
    rc = builder.ctx.config.release
    parent = f", built on {front['parent_version']}" if front["parent_version"] else ""
    return (f"Release **{rc.version}** of the **{rc.collection}** collection{parent}: "
            f"{front['n_cases']} cases of {front['n_patients']} patients (distinct patient ids of the cases "
            f"not dropped as duplicates) from {len(front['datasets'])} "
            f"dataset(s) ({', '.join(front['modalities'])})"
            + (f"; {front['n_dropped_duplicates']} of the cases are copies of another case's scan (dropped "
               "from the training view, see `duplicates`)" if front.get("n_dropped_duplicates") else "")
            + ". Query it with "
            "`curator query <release> \"select ...\"` (every table is a view); check it with "
            "`curator verify <release>`.\n" + _without_curator(builder))


def _without_curator(builder: ReleaseBuilder) -> str:
    """The summary's line for a reader without curator: plain checksums, and SCHEMA.md's store section."""
    from curator.release.schema_doc import SCHEMA_FILE, STORES_HEADING

    if not (builder.staging / "stores").is_dir():
        return (f"\nWithout curator: `release.json`'s `files` gives every file's SHA-256 (`sha256sum FILE`), "
                f"and {SCHEMA_FILE} says what each column means.\n")
    return (f"\nWithout curator: `cd stores && sha256sum -c SHA256SUMS` checks the Zarr stores and "
            f"`release.json`'s `files` every other file (`sha256sum FILE`); {SCHEMA_FILE}'s section "
            f"\"{STORES_HEADING}\" says how a store is laid out (arrays, label layers and codes, geometry, "
            "OME-Zarr metadata).\n")


def licence_combination(sources: list[dict[str, Any]], whole: str = "this release") -> Combined:
    """What the licences of ``sources`` (:func:`card_sources` entries, or the card's front-matter
    ``sources``) allow together: the card's Licence constraints; an export of some of the
    release's cases states them for its own sources (``whole``: "this export")."""
    return combine({s["name"]: parse_licence(s["licence"]).with_declared(s.get("licence_terms")) for s in sources},
                   {s["name"]: s.get("licence_notes") or "" for s in sources}, whole=whole)


def _citation_groups(sources: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    """(key, citation, names of the sources citing it): each distinct citation once, in source
    order (the ten MSD tasks share one paper)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for s in sources:
        groups.setdefault((s["citation_key"], s["citation"].strip()), []).append(s["name"])
    return [(key, text, names) for (key, text), names in groups.items()]


def citations_bib(sources: list[dict[str, Any]]) -> str:
    """``CITATIONS.bib``: every BibTeX entry the sources cite, once per key, each headed by the
    sources citing it — one ``\\bibliography`` cites the whole release. A citation that is not
    BibTeX is kept as a comment; a second, different entry under a key already given is kept as
    a comment too (BibTeX refuses duplicate keys), with a note to reconcile the two."""
    entries: dict[str, tuple[str, list[str]]] = {}
    out: list[str] = []
    for _key, text, names in _citation_groups(sources):
        chunks = [c.strip() for c in re.split(r"(?m)^(?=\s*@)", text) if c.strip()]
        if not bibtex_keys(text):
            out.append(f"% {', '.join(names)} (not BibTeX):\n% " + text.replace("\n", "\n% "))
            continue
        for chunk in chunks:
            keys = bibtex_keys(chunk)
            if not keys:
                continue
            seen = entries.get(keys[0])
            if seen is None:
                entries[keys[0]] = (chunk, list(names))
            elif seen[0] != chunk:
                out.append(f"% {', '.join(names)}: another entry under the key {keys[0]} (the one above is "
                           f"{', '.join(seen[1])}'s); reconcile the datasets' YAML citations:\n% "
                           + chunk.replace("\n", "\n% "))
            else:
                seen[1].extend(n for n in names if n not in seen[1])
    bib = [f"% {', '.join(names)}\n{chunk}" for chunk, names in entries.values()]
    return "\n\n".join(bib + out) + "\n"


def _sources_md(sources: list[dict[str, Any]]) -> str:
    rows = [[s["name"], s["dataset"], s["version"], s["licence"], s["cases"], s["citation_key"],
             s.get("homepage") or ""] for s in sources]
    text = md_table(["source", "dataset", "version", "licence", "cases", "citation", "homepage"], rows)
    text += "\n### Citations\n\nEvery BibTeX entry below is also in `CITATIONS.bib`, once per key.\n\n"
    for key, citation, names in _citation_groups(sources):
        text += f"**{md_text(key)}** ({md_text(', '.join(names))}):\n\n{md_fence(citation, 'bibtex')}\n"
    return text


def _composition_md(cases: pl.LazyFrame, labels: pl.LazyFrame | None) -> str:
    text = "### Cases per dataset and modality\n\n"
    text += md_table(["dataset", "modality", "cases"], _counts(cases, ["dataset", "modality"]))
    text += "\n### Cases per region\n\n" + md_table(["region", "cases"], _counts(cases, ["region"]))
    # a labels row is unique per (case, term, origin), so counting rows counts cases (and streams)
    per_term = None if labels is None else (
        labels.group_by("term_id", "term", "origin")
        .agg(annotated=pl.len(), present=pl.col("present").sum())
        .sort("term_id", "origin").collect(engine="streaming"))
    if per_term is not None and per_term.height:
        text += ("\n### Labels per term\n\nOne row per term and origin: `original` is the source dataset's own "
                 "annotation, `pseudo` a model's prediction (not an annotation), `revised` a pseudo label a "
                 "reviewer corrected or accepted as correct. *Cases labelled* counts the cases with such a label, *cases with voxels* "
                 "those where it is not empty.\n\n")
        text += md_table(["term_id", "term", "origin", "cases labelled", "cases with voxels"],
                         [list(r) for r in per_term.iter_rows()])
    else:
        text += "\n### Labels per term\n\nNo harmonized labels in this release (the harmonize stage did not run); "
        text += "raw label values are in the `raw_labels` table.\n"
    names = [c for c in (*METADATA_COLUMNS, "metadata_json") if c in cases.collect_schema().names()]
    filled = cases.select(pl.len().alias("__n"), *[pl.col(c).is_not_null().sum() for c in names]).collect().row(
        0, named=True)
    text += "\n### Per-case metadata\n\nCases with each metadata column filled (out of "
    text += f"{filled['__n']}):\n\n" + md_table(["column", "cases"], [[c, filled[c]] for c in names])
    return text


def _dedup_md(lazy: pl.LazyFrame | None) -> str:
    if lazy is None:
        return "The dedup stage did not run: duplicates were not searched for.\n"
    dups = lazy.select("group_id", "case_id", "dataset", "kept").collect()
    if not dups.height:
        return "No duplicates found.\n"
    dropped = dups.filter(~pl.col("kept"))
    cross = dups.group_by("group_id").agg(pl.col("dataset").n_unique().alias("n")).filter(pl.col("n") > 1)
    text = (f"{dups['group_id'].n_unique()} duplicate group(s) with {dups.height} members; "
            f"{dropped.height} member(s) excluded (kept in `cases`, listed in `duplicates` with the reason); "
            f"{cross.height} group(s) span several datasets. Every group is one split unit.\n\n")
    return text + md_table(["dataset", "members excluded"], _counts(dropped.lazy(), ["dataset"]))


def _qc_md(labels: pl.LazyFrame | None) -> str:
    rows = [] if labels is None or "qc_decision" not in labels.collect_schema().names() else \
        _counts(labels.filter(pl.col("qc_decision").is_not_null()), ["qc_decision"])
    if not rows:
        return "The qc stage did not run: no label was checked or excluded.\n"
    # labels qc measured no mask for (no qc row: an annotated-absent term has no voxels): a row of
    # their own, so the table sums to the labels table's rows (the front matter's n_label_rows)
    unjudged = labels.filter(pl.col("qc_decision").is_null()).select(  # type: ignore[union-attr]
        empty=(~pl.col("present").fill_null(False)).sum(), other=pl.col("present").fill_null(False).sum()
    ).collect().row(0, named=True)
    rows += [[what, n] for what, n in (("not judged (no voxels)", unjudged["empty"]),
                                       ("not judged (no qc measurement)", unjudged["other"])) if n]
    text = md_table(["decision", "labels"], rows)
    excl = labels.filter(pl.col("qc_decision") == "exclude")  # type: ignore[union-attr]
    if any(r[0] == "exclude" for r in rows):
        text += "\nExcluded labels per term:\n\n" + md_table(["term_id", "labels excluded"],
                                                            _counts(excl, ["term_id"]))
    return text


def _splits_md(splits: pl.LazyFrame | None, info: dict[str, Any]) -> str:
    if splits is None:
        return "No splits in this release (disabled in pipeline.yaml).\n"
    fr = info.get("config", {}).get("fractions", {})
    text = ("Patient-level: a patient's cases, a study's sequences and a duplicate group's members are one unit "
            "and share a split; official test sets stay test; cases of the parent release keep their split; "
            f"new units are balanced per stratum (target fractions {fr}). Checked for leakage when built.\n\n")
    wide = (splits.group_by("stratum", "split").len().collect().pivot(on="split", index="stratum", values="len")
            .fill_null(0).sort("stratum"))
    cols = [c for c in ("train", "val", "test") if c in wide.columns]
    text += md_table(["stratum", *cols], [list(r) for r in wide.select("stratum", *cols).iter_rows()])
    text += "\n" + md_table(["reason", "cases"], _counts(splits, ["reason"]))
    return text


def _issues_md(problems: pl.LazyFrame | None, sources: list[dict[str, Any]], builder: ReleaseBuilder) -> str:
    rows = _counts(problems, ["stage", "severity", "kind"]) if problems is not None else []
    if rows:
        text = ("Problems found while building (one row per file or case in the `problems` table; "
                "`severity = error`: the stage could not use what the row names — a case (dropped from that "
                "stage) or, in a row without a case, a file or source, e.g. a missing split file or a broken "
                "dataset YAML):\n\n")
        text += md_table(["stage", "severity", "kind", "count"], rows)
    else:
        text = "No problems were recorded.\n"
    gone = _left_out(builder, sources)
    if gone:
        text += (f"\nSources of pipeline.yaml that gave no case and are left out (`allow_missing_sources`): "
                 f"{md_text(', '.join(gone))}. Their licences and citations are not part of this release.\n")
    notes = [(s["name"], n) for s in sources for n in builder.ctx.sources[s["name"]].spec.notes]
    if notes:
        text += "\nNotes from the dataset registry:\n\n" + "".join(f"- {md_text(n)}: {md_text(t)}\n" for n, t in notes)
    return text


def _left_out(builder: ReleaseBuilder, sources: list[dict[str, Any]]) -> list[str]:
    """Sources of pipeline.yaml with no case in the release."""
    return sorted(set(builder.ctx.sources) - {s["name"] for s in sources})


def _lineage_md(builder: ReleaseBuilder, sources: list[dict[str, Any]]) -> str:
    from curator.harmonize.stage import taxonomy_path
    from curator.release.lineage import effective_version, taxonomy_info

    tax = taxonomy_info(taxonomy_path(builder.ctx))  # the one harmonize used, as release.json records
    models = builder.extra.get("models", {})
    rows = [["parent version", builder.parent.name if builder.parent else "none (first release)"],
            ["pipeline config hash", config_hash(builder.ctx)],
            ["taxonomy", _taxonomy_cell(tax, effective_version(tax)) if tax else "none"],
            ["models", ", ".join(f"{k} (sha256 {(v.get('sha256') or v.get('fingerprint', ''))[:16]})" for k, v in sorted(models.items())) or "none"]]
    rows += [[f"registry: {s['name']}", f"{s['dataset']} {s['version']}"] for s in sources]
    return md_table(["what", "value"], rows) + "\nFull checksums and settings are in `release.json`.\n"


def _taxonomy_cell(tax: dict[str, Any], version: str) -> str:
    """``1.3 sha256 …`` for the bundled taxonomy; ``1.3+lab-2 (lab.yaml sha256 …, extending
    label_system/taxonomy.yaml sha256 …)`` for a taxonomy of one's own."""
    if tax.get("file") == "label_system/taxonomy.yaml":
        return f"{version} sha256 {tax['sha256'][:16]}"
    chain: list[str] = []
    base: Any = tax
    while isinstance(base, dict):
        chain.append(f"{base.get('file')} sha256 {str(base.get('sha256', ''))[:16]}")
        base = base.get("extends")
    return f"{version} ({chain[0]}" + "".join(f", extending {c}" for c in chain[1:]) + ")"


def render_card(builder: ReleaseBuilder, sources: list[dict[str, Any]] | None = None) -> str:
    """The card's text for the release being built (``sources``: :func:`card_sources`, if already made)."""
    cases = builder.tables.scan("cases")
    labels, dups = _frame(builder, "labels"), _frame(builder, "duplicates")
    sources = card_sources(builder, cases) if sources is None else sources
    lic = licence_combination(sources)
    front = _front(builder, cases, sources, lic)
    rc = builder.ctx.config.release
    parts = [
        "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=100) + "---\n",
        f"# {rc.collection} {rc.version}\n",
        "## Summary\n\n" + _summary(builder, front),
        *([f"## Changes since {md_text(builder.parent.name)}\n\n" + card_section(builder.changes, builder.parent.name)]
          if builder.changes is not None and builder.parent is not None else []),
        "## Sources\n\n" + _sources_md(sources),
        "## Composition\n\n" + _composition_md(cases, labels),
        "## Deduplication\n\n" + _dedup_md(dups),
        "## Quality control\n\n" + _qc_md(labels),
        "## Splits\n\n" + _splits_md(_frame(builder, "splits"), builder.extra.get("splits", {})),
        "## Known issues\n\n" + _issues_md(_frame(builder, "problems"), sources, builder),
        "## Licence constraints\n\n" + "".join(f"- {md_text(line)}\n" for line in lic.constraints),
        "## Lineage\n\n" + _lineage_md(builder, sources),
    ]
    return "\n".join(parts)


def release_step(builder: ReleaseBuilder) -> None:
    """Write ``DATASET_CARD.md`` into the release and check its structure."""
    cases = builder.tables.scan("cases")
    sources = card_sources(builder, cases)
    text = render_card(builder, sources)
    datasets = cases.select(pl.col("dataset").unique()).collect()["dataset"]
    per_source = dict(cases.group_by("source").len().collect().iter_rows())
    issues = check_card(text, set(datasets.to_list()), builder.tables.num_rows("cases"), per_source)
    if issues:
        # text from dataset YAMLs is plain text on the card (md_text): it cannot add or move a section
        raise ReleaseError("card_invalid", "the generated dataset card is malformed: " + "; ".join(issues),
                           remedy="this is a bug in curator's card template; report it")
    (builder.staging / "DATASET_CARD.md").write_text(text, encoding="utf-8")
    (builder.staging / "CITATIONS.bib").write_text(citations_bib(sources), encoding="utf-8")
    log.info("dataset card written (%d sources)", len(builder.ctx.sources))
