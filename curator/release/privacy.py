"""Release step: sources with ``pseudonymous_ids`` publish no name from their files.

A private export often names files and folders after patients (``DOE_JANE_MRN123456/``). Such
a source (``sources: [{dataset: ..., root: ..., pseudonymous_ids: true}]``) gets keyed case ids
at ingest (``<source>__c_<20 hex>``, HMAC with the workspace key: stable while the key is); the
workspace keeps the names, so a local user can still find a case's files. In the release this
step replaces, for the cases of those sources, ``cases.source_case`` by the case id's pseudonym,
a ``sequence`` the dataset YAML does not name (matched by ``{sequence}`` in a file or folder
name) by a keyed pseudonym (``q_<20 hex>``), in ``cases`` and in ``splits.stratum`` alike,
leaves out ``image_path`` and ``label_paths``, and reduces their ``problems`` rows (a case that
failed, with no ``cases`` row, included) to the problem kind's description (the details name
files) with the path ``<source>:<case_id>``. A structure (a per-structure mask's file stem, an
RTSTRUCT ROI or a DICOM SEG segment name: free text that can hold a name, date or record number)
the dataset YAML does not declare is keyed too (``u_<20 hex>``) in ``cases.label_keys``,
``cases.label_dropped`` and ``raw_labels.label_key``; the preprocess stage writes the same key into
the store's ``label_raw_values`` (the stores are hard links of the workspace's, not rewritten here).

For every source, a ``problems`` row's message and path name no folder of the machine (a
missing `registry:` entry's message once held its absolute path; messages name files by their
name or their path under a source root, and this is the backstop): a source's root becomes
``<source>:``, the workspace, the release root and the folder of pipeline.yaml ``<workspace>``,
``<release root>`` and ``<pipeline folder>``, the home folder ``~``.

For a pseudonymous source, ``cases.image_sha256`` and ``label_sha256`` are checksums of the files
as received — a DICOM file's header names the patient — so whoever holds the export could look a
case up by them: they are keyed too (``k_<20 hex>``: equal files of one source still give equal values). The
workspace keeps the checksums, which caching and dedup use; ``voxel_sha256`` (of the pixels,
which the release publishes anyway) is kept.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.problem_kinds import PROBLEM_KINDS, remedy_for
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


def _key_strata(b: ReleaseBuilder, renamed: dict[tuple[str, str], str], source_of: dict[str, str]) -> None:
    """``splits.stratum`` joins the ``stratify`` columns' values as the splits step read them,
    before this step: a sequence keyed in ``cases`` is keyed there too (the unit's stratum is its
    first case's, so the row's own source is tried first, then any private source's)."""
    if not renamed or "splits" not in b.tables:
        return
    from curator.release.splits import SplitConfig

    stratify = SplitConfig.from_dict(b.ctx.config.stage("splits"), where="stages.splits").stratify
    if "sequence" not in stratify:
        return
    at = stratify.index("sequence")
    anywhere = {raw: q for (_, raw), q in sorted(renamed.items(), reverse=True)}
    rows: list[dict[str, Any]] = b.tables["splits"].to_pylist()
    for row in rows:
        parts = (row["stratum"] or "").split("|")
        if len(parts) != len(stratify):
            continue
        raw = parts[at]
        q = renamed.get((source_of.get(row["case_id"], ""), raw)) or anywhere.get(raw)
        if q is not None:
            parts[at] = q
            row["stratum"] = "|".join(parts)
    b.tables["splits"] = to_arrow("splits", rows)


SHARED_PARENTS = frozenset({"/", "/home", "/Users", "/tmp", "/mnt", "/media", "/srv", "/opt", "/var", "/usr",
                            "/private", "/Volumes"})
"""Folders that hold other people's folders: never replaced as a whole (a home of ``/root`` or a
source root ``/data`` is, as any deeper folder)."""


def machine_folders(b: ReleaseBuilder) -> list[tuple[str, str]]:
    """``(absolute folder, what a release says instead)`` for the folders of this machine a problem
    message may name, the longest first (a source root inside the pipeline folder is the source's)."""
    cfg = b.ctx.config
    named: list[tuple[Path, str]] = [(src.root, f"{name}:") for name, src in sorted(b.ctx.sources.items())]
    named += [(b.ctx.workspace.root, "<workspace>"), (cfg.release.root, "<release root>")]
    named += [(cfg.folder, "<pipeline folder>")] if cfg.folder is not None else []
    try:
        named.append((Path.home(), "~"))
    except (RuntimeError, KeyError):  # no home folder known (a service account without $HOME)
        pass
    out: dict[str, str] = {}
    for folder, said in named:
        for p in (folder, folder.resolve()):
            if p.is_absolute() and str(p) not in SHARED_PARENTS:  # "/" or "/home" would cut every path
                out.setdefault(str(p), said)
    return sorted(out.items(), key=lambda kv: -len(kv[0]))


def scrub_machine_paths(text: str, folders: list[tuple[str, str]]) -> str:
    """``text`` with each of ``folders`` (and a path under it) named as the release names it:
    ``/data/kits/case_1/x.nii.gz`` -> ``KiTS23:case_1/x.nii.gz``, ``/home/jane/p/work`` -> ``<workspace>``.

    >>> scrub_machine_paths("cannot read /srv/p/extra: gone; /srv/px stays", [("/srv/p", "<pipeline folder>")])
    'cannot read <pipeline folder>/extra: gone; /srv/px stays'
    >>> scrub_machine_paths("x /data/kits/case_1/a.nii.gz.", [("/data/kits", "KiTS23:")])
    'x KiTS23:case_1/a.nii.gz.'
    """
    # what may follow a whole folder's name (/srv/p is not /srv/px): a path separator, a space, a
    # quote, a bracket, a comma, a colon, a sentence's full stop, the end
    end = r"""(?=[/\s'"),:;\]]|\.(?:\s|$)|$)"""
    for folder, said in folders:
        # a source's files are named <source>:<path under its root>; other folders keep the slash
        pattern = re.escape(folder) + (f"(?:/|{end})" if said.endswith(":") else end)
        text = re.sub(pattern, said.replace("\\", r"\\"), text)
    return text


def _scrub_problems(b: ReleaseBuilder) -> None:
    if "problems" not in b.tables:
        return
    folders = machine_folders(b)
    rows: list[dict[str, Any]] = b.tables["problems"].to_pylist()
    changed = False
    for row in rows:
        for col in ("message", "path"):
            if row.get(col):
                new = scrub_machine_paths(row[col], folders)
                changed |= new != row[col]
                row[col] = new
    if changed:
        b.tables["problems"] = to_arrow("problems", rows)


def release_step(b: ReleaseBuilder) -> None:
    _pseudonymize(b)
    _scrub_problems(b)


def _pseudonymize(b: ReleaseBuilder) -> None:
    private = {name for name, s in b.ctx.sources.items() if s.pseudonymous_ids}
    if not private or "cases" not in b.tables:
        return
    cases = b.tables["cases"].to_pylist()
    source_of: dict[str, str] = {}
    datasets = {b.ctx.sources[n].spec.name for n in private}
    named = {n: _declared_sequences(b.ctx.sources[n].spec) for n in private}
    renamed: dict[tuple[str, str], str] = {}  # (source, sequence as read) -> its pseudonym
    for row in cases:
        if row["source"] in private:
            source_of[row["case_id"]] = row["source"]
            row.update(source_case=row["case_id"].split("__", 1)[-1], image_path=None, label_paths=None)
            for col in ("image_sha256", "label_sha256"):  # of the files as received: headers name the patient
                if row.get(col):
                    row[col] = b.ctx.workspace.pseudonym(row["source"], "sha256", row[col], prefix="k")
            for col in ("label_keys", "label_dropped"):
                if row.get(col):
                    names = b.ctx.sources[row["source"]].structure_names(b.ctx.workspace, row[col])
                    row[col] = [names.get(k, k) for k in row[col]]
            seq = row.get("sequence")
            if seq and seq not in named[row["source"]]:  # taken from a file or folder name: keyed as well
                row["sequence"] = renamed[row["source"], seq] = b.ctx.workspace.pseudonym(row["source"], seq,
                                                                                           prefix="q")
    b.tables["cases"] = to_arrow("cases", cases)
    _key_strata(b, renamed, source_of)
    if "raw_labels" in b.tables:
        raw: list[dict[str, Any]] = b.tables["raw_labels"].to_pylist()
        for row in raw:
            src = source_of.get(row["case_id"])
            if src is not None and row["label_key"]:
                row["label_key"] = b.ctx.sources[src].structure_names(b.ctx.workspace, [row["label_key"]]).get(
                    row["label_key"], row["label_key"])
        b.tables["raw_labels"] = to_arrow("raw_labels", raw)
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
