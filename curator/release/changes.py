"""What changed since the parent release, written into the release: ``changes.json`` and the
dataset card's "Changes since <parent>" section.

A release built on a parent carries ``curator diff PARENT RELEASE -f json`` as ``changes.json``
(listed in release.json's ``files``; the whole diff but ``changes.json`` itself, which the parent
may hold too), so a reader without curator, or with only the newer release at hand, sees what
changed. The card says it in short: cases and labels added, removed and changed, labels newly
excluded or re-included by QC, and every source whose licence, terms, citation or version changed.

The card is written before the tables (its checksum is in croissant.json), so its section is
computed by :func:`release_step` from the tables being released (``cases``, ``labels``,
``sources``); ``changes.json`` (:func:`write_changes`) compares the written release once it is
complete, with the same code (:func:`curator.release.diff.diff_frames`), so both give the same
counts (its ``summary``). ``changes.json`` is left out of ``content_sha256``, as croissant.json is:
it is derived from the content and the parent, and its lineage part names the code and
environment of the build.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from curator.release.card_check import md_text

if TYPE_CHECKING:
    from curator.release.build import ReleaseBuilder
    from curator.release.diff import ReleaseDiff

log = logging.getLogger("curator")
CHANGES_FILE = "changes.json"
CARD_TABLES = ("cases", "labels", "sources")  # what the card's section compares


def release_step(b: ReleaseBuilder) -> None:
    """The card's summary of the changes since the parent (``b.changes``), from the tables being
    released; nothing for a first release."""
    import polars as pl

    from curator.release.diff import ReleaseDiff, diff_frames
    from curator.release.query import Release

    if b.parent is None:
        return
    parent = Release(b.parent)
    rc = b.ctx.config.release
    d = ReleaseDiff(f"{parent.info.get('collection')} {parent.info.get('version')}", f"{rc.collection} {rc.version}")
    have = set(parent.table_names())
    frames: dict[str, tuple[pl.DataFrame, pl.DataFrame]] = {}
    for name in CARD_TABLES:
        if name in have and name in b.tables:
            frames[name] = (parent.table(name), b.tables.scan(name).collect())
    diff_frames(d, frames)
    b.changes = d


def write_changes(b: ReleaseBuilder, release_json: dict[str, Any]) -> None:
    """Write ``changes.json`` into the staged release: the diff of the parent and the staged
    release (``release_json``: its release.json so far, written for the comparison and replaced
    by the final one)."""
    from curator.io.fsutil import atomic_write_json
    from curator.release.diff import diff_releases

    if b.parent is None:
        return
    atomic_write_json(b.staging / "release.json", release_json, indent=1)
    d = diff_releases(b.parent, b.staging)
    d.files_added, d.files_removed, d.files_changed = (
        [f for f in fs if f != CHANGES_FILE] for fs in (d.files_added, d.files_removed, d.files_changed))
    if b.changes is not None and b.changes.summary != d.summary:  # the card would say otherwise
        log.warning("release: the card's changes since %s differ from changes.json's (%s, %s)", b.parent.name,
                    b.changes.summary, d.summary)
    atomic_write_json(b.staging / CHANGES_FILE, {"parent_version": b.parent.name, **d.to_dict()}, indent=1)


def card_section(d: ReleaseDiff, parent: str) -> str:
    """The card's "Changes since <parent>" section (Markdown) from :attr:`ReleaseDiff.summary`."""
    s = d.summary
    rows = []
    for name in ("cases", "labels"):
        c = s.get(name)
        if c is not None:
            rows.append([name, c["added"], c["removed"], c["changed"]]
                        + ([c["wording_only"]] if name == "labels" else [""]))
    text = (f"Compared with release {md_text(parent)}, its parent. Every change, row by row, is in "
            f"`{CHANGES_FILE}` (`curator diff` of the two releases).\n\n")
    if rows:
        from curator.release.card import md_table

        text += md_table(["rows", "added", "removed", "changed", "QC reason reworded only"], rows)
    text += (f"\nLabels newly excluded by QC: {s['qc_newly_excluded']}; no longer excluded: "
             f"{s['qc_newly_included']}.\n")
    if s["sources"]:
        text += ("\nSources whose licence, licence terms, citation or version changed, added or removed:\n\n"
                 + "".join(f"- {md_text(line)}\n" for line in s["sources"]))
    else:
        text += "\nNo source's licence, licence terms, citation or version changed; no source added or removed.\n"
    return text
