"""Release step: sources with ``pseudonymous_ids`` publish no name from their files.

A private export often names files and folders after patients (``DOE_JANE_MRN123456/``). Such
a source (``sources: [{dataset: ..., root: ..., pseudonymous_ids: true}]``) gets keyed case ids
at ingest (``<source>__c_<20 hex>``, HMAC with the workspace key: stable while the key is); the
workspace keeps the names, so a local user can still find a case's files. In the release this
step replaces, for the cases of those sources, ``cases.source_case`` by the case id's pseudonym,
a ``sequence`` the dataset YAML does not name (matched by ``{sequence}`` in a file or folder
name) by a keyed pseudonym (``q_<20 hex>``),
leaves out ``image_path`` and ``label_paths``, and reduces their ``problems`` rows (a case that
failed, with no ``cases`` row, included) to the problem kind's description (the details name
files) with the path ``<source>:<case_id>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from curator.errors import PROBLEM_KINDS, remedy_for
from curator.registry.layout import make_case_id
from curator.schema import to_arrow

if TYPE_CHECKING:  # pragma: no cover
    from curator.release.build import ReleaseBuilder


def _declared_sequences(spec: Any) -> set[str]:
    """The sequence names the dataset YAML itself gives (``sequences:``, an entry's ``sequence``
    or ``channels``): the only ones a pseudonymous source publishes as they are."""
    names = set(spec.sequences)
    for e in spec.layout:
        names |= set(e.channels.values()) | ({e.sequence} if e.sequence else set())
    return names


def release_step(b: ReleaseBuilder) -> None:
    private = {name for name, s in b.ctx.sources.items() if s.pseudonymous_ids}
    if not private or "cases" not in b.tables:
        return
    cases = b.tables["cases"].to_pylist()
    source_of: dict[str, str] = {}
    datasets = {b.ctx.sources[n].spec.name for n in private}
    named = {n: _declared_sequences(b.ctx.sources[n].spec) for n in private}
    for row in cases:
        if row["source"] in private:
            source_of[row["case_id"]] = row["source"]
            row.update(source_case=row["case_id"].split("__", 1)[-1], image_path=None, label_paths=None)
            seq = row.get("sequence")
            if seq and seq not in named[row["source"]]:  # taken from a file or folder name: keyed as well
                row["sequence"] = b.ctx.workspace.pseudonym(row["source"], seq, prefix="q")
    b.tables["cases"] = to_arrow("cases", cases)
    if "problems" not in b.tables:
        return
    # a case that failed has no `cases` row, only problems: its id still begins `<source>__`
    prefixes = {make_case_id(n, []): n for n in private}
    rows: list[dict[str, Any]] = b.tables["problems"].to_pylist()
    for row in rows:
        cid = row["case_id"] or ""
        source = source_of.get(cid) or next((n for p, n in prefixes.items() if cid.startswith(p)), None)
        if source is None and not (row["case_id"] is None and row["dataset"] in datasets):
            continue
        kind = PROBLEM_KINDS.get(row["kind"])
        what = kind.meaning if kind is not None else row["kind"].replace("_", " ")
        row["message"] = f"{what} (details in the workspace). What to do: {remedy_for(row['kind'])}"
        row["path"] = f"{source}:{row['case_id']}" if source else f"{row['dataset']}:"
    b.tables["problems"] = to_arrow("problems", rows)
