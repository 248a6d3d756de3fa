"""Release integrity: checksums of files and Zarr stores, and ``verify``.

A release records three things about its bytes:

* ``release.json["files"]``: SHA-256 of every file outside the stores (tables, card, ...);
* ``release.json["stores"]``: per case store, a content hash (:func:`store_hash`), its
  number of files and bytes;
* ``stores/SHA256SUMS``: one line per file inside every store, in ``sha256sum`` format
  (``cd stores && sha256sum -c SHA256SUMS`` works without curator). The file itself is
  covered by ``release.json["files"]``, so :func:`verify_release` can say exactly which
  file inside which store changed.

A store's content hash is the SHA-256 of its own ``SHA256SUMS`` lines (relative paths
inside the store, sorted), so it does not depend on where the store lives or on file
times, and two stores with the same arrays and attributes hash the same.

>>> # store_hash(Path("release/stores/KiTS23__case_00000.zarr"))  -> 'ab12...'
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curator.errors import ReleaseError
from curator.io.fsutil import sha256_file
from curator.release.verify_cache import already_checked, key_of, remember, stat_key
from curator.store_reader import store_damage

STORES_DIR = "stores"
SUMS_NAME = "SHA256SUMS"
# Files a release may hold that are not covered by release.json["files"] (the manifest itself).
UNLISTED = {"release.json"}
# Files of release.json["files"] that content_sha256 leaves out: they carry the day of the build
# (croissant.json's datePublished), or are derived from the content and the parent release with the
# code and environment of the build (changes.json: the diff since the parent, its lineage part).
# release.json, with its build time and stage run ids, is not listed.
CONTENT_EXCLUDED = ("croissant.json", "changes.json")


def _store_files(path: Path) -> list[tuple[str, Path]]:
    if path.is_symlink():  # a link to / would have every file of the machine hashed
        raise ReleaseError("release_error", "the store is a symbolic link", path=str(path),
                           remedy="stores must be folders of plain files; copy the store itself")
    if not path.is_dir():
        raise ReleaseError("store_missing", "the Zarr store is not a folder", path=str(path),
                           remedy="copy the store again from the workspace")
    out = []
    for p in path.rglob("*"):
        if p.is_symlink():
            raise ReleaseError("release_error", "a store holds a symbolic link", path=str(p),
                               remedy="stores must hold plain files; copy the target instead")
        if p.is_file():
            out.append((p.relative_to(path).as_posix(), p))
    return sorted(out)


def store_file_hashes(path: str | Path) -> dict[str, str]:
    """Relative path (posix, sorted) -> SHA-256 of every file of a Zarr store."""
    return {rel: sha256_file(p) for rel, p in _store_files(Path(path))}


def _sum_lines(hashes: dict[str, str], prefix: str = "") -> list[str]:
    return [f"{h}  {prefix}{rel}\n" for rel, h in sorted(hashes.items())]


def hash_of_file_hashes(hashes: dict[str, str]) -> str:
    """Content hash of a store from its per-file hashes (see the module docstring)."""
    return hashlib.sha256("".join(_sum_lines(hashes)).encode()).hexdigest()


def store_hash(path: str | Path) -> str:
    """Content hash of a Zarr store: every file, in sorted relative-path order.

    Release steps that copy stores may call it and put the result into
    ``builder.extra["stores"][case_id]["sha256"]``; the release builder computes it for
    every store under ``<release>/stores/`` anyway, so nothing is left unchecked.
    """
    return hash_of_file_hashes(store_file_hashes(path))


def content_sha256(files: dict[str, str]) -> str:
    """``release.json``'s ``content_sha256``: the release's data as one digest — the SHA-256 of
    ``sha256sum`` lines of every file ``files`` (``release.json["files"]``) lists but those of
    :data:`CONTENT_EXCLUDED`, sorted by path. ``stores/SHA256SUMS`` is among them, so every
    store's every file counts. Two builds of the same inputs, settings and pseudonym key share it
    (their ``release.json`` never does: it holds build times and run ids); a changed voxel, row or
    card changes it.

    >>> content_sha256({"a.parquet": "0" * 64}) == content_sha256({"a.parquet": "0" * 64, "croissant.json": "1" * 64})
    True
    """
    return hash_of_file_hashes({k: v for k, v in files.items() if k not in CONTENT_EXCLUDED})


def case_id_of_store(rel: str) -> str:
    """``'KiTS23__case_00000.zarr'`` -> ``'KiTS23__case_00000'``."""
    return rel.removesuffix(".zarr")


def record_stores(release: Path) -> dict[str, dict[str, Any]]:
    """Hash every store under ``<release>/stores``, write ``stores/SHA256SUMS``, return the summary."""
    sdir = release / STORES_DIR
    if not sdir.is_dir():
        return {}
    summary: dict[str, dict[str, Any]] = {}
    lines: list[str] = []
    for store in sorted(p for p in sdir.iterdir() if p.is_dir() and p.name.endswith(".zarr")):
        files = _store_files(store)
        hashes = {rel: sha256_file(p) for rel, p in files}
        summary[case_id_of_store(store.name)] = {
            "sha256": hash_of_file_hashes(hashes), "n_files": len(hashes),
            "bytes": sum(p.stat().st_size for _, p in files)}
        lines += _sum_lines(hashes, prefix=f"{store.name}/")
    (sdir / SUMS_NAME).write_text("".join(lines), encoding="utf-8")
    return summary


def parse_sums(text: str) -> dict[str, str]:
    """``sha256sum`` lines -> {path: hash}."""
    out = {}
    for line in text.splitlines():
        if line.strip():
            h, _, rel = line.partition("  ")
            out[rel] = h
    return out


@dataclass
class VerifyReport:
    """What ``verify`` found; empty lists mean the release is intact."""

    release: str
    checked_files: int = 0
    checked_stores: int = 0
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    stores_modified: list[str] = field(default_factory=list)
    stores_damaged: list[str] = field(default_factory=list)  # "<case>: <array>: why" (a shard missing, truncated)
    # cases released without their store because preprocess failed on the workspace's store, not
    # the case's input (:func:`stores_lacking`): "<case> (store_missing)"
    stores_lacking: list[str] = field(default_factory=list)
    card_issues: list[str] = field(default_factory=list)
    counts_differ: list[str] = field(default_factory=list)  # "cases: release.json says 21, cases.parquet has 22 rows"
    # release.json disagreeing with itself or the card: an edited pipeline_config, a content_sha256
    # its file checksums do not give (:func:`manifest_issues`)
    manifest_issues: list[str] = field(default_factory=list)
    # the splits against release.json's splits record: its config against pipeline_config, its counts
    # against splits.parquet, splits.parquet against the splits its config gives (release.splits_check)
    splits_issues: list[str] = field(default_factory=list)
    release_json_sha256: str = ""
    content_sha256: str = ""  # as release.json records it (none before it did); checked in manifest_issues
    parent: str = ""  # the parent's release.json against the checksum recorded here (see parent_check)
    parent_changed: bool = False

    @property
    def ok(self) -> bool:
        return not (self.added or self.removed or self.modified or self.stores_modified or self.stores_damaged
                    or self.stores_lacking or self.card_issues or self.counts_differ or self.manifest_issues
                    or self.splits_issues or self.parent_changed)

    def to_dict(self) -> dict[str, Any]:
        return {"release": self.release, "ok": self.ok, "checked_files": self.checked_files,
                "checked_stores": self.checked_stores, "added": self.added, "removed": self.removed,
                "modified": self.modified, "stores_modified": self.stores_modified,
                "stores_damaged": self.stores_damaged, "stores_lacking": self.stores_lacking,
                "card_issues": self.card_issues, "counts_differ": self.counts_differ,
                "manifest_issues": self.manifest_issues, "splits_issues": self.splits_issues,
                "release_json_sha256": self.release_json_sha256, "content_sha256": self.content_sha256,
                "parent": self.parent,
                "parent_changed": self.parent_changed}


def _walk(release: Path) -> Iterable[str]:
    for p in release.rglob("*"):
        if p.is_file() or p.is_symlink():
            yield p.relative_to(release).as_posix()


def read_release_json(release: Path) -> dict[str, Any]:
    """``release.json`` of a release folder: a ``release_error`` when there is none, a
    ``release_corrupt`` one when it cannot be read or holds no JSON object."""
    try:
        info = json.loads((release / "release.json").read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ReleaseError("release_error", "not a release folder (no release.json)", path=str(release),
                           remedy="pass <release root>/<collection>/<version>") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReleaseError("release_corrupt", f"release.json cannot be read ({type(e).__name__}: {e})",
                           path=str(release), remedy="restore the release from its published copy (release.json "
                           "holds the checksums every other file is verified against)") from e
    if not isinstance(info, dict):
        raise ReleaseError("release_corrupt", "release.json does not hold a JSON object", path=str(release),
                           remedy="restore the release from its published copy")
    return info


def parent_check(release: Path, info: dict[str, Any]) -> tuple[str, bool]:
    """The release's parent (the version beside it that ``parent_version`` names) against the
    checksum of its ``release.json`` recorded when this release was built: ``(what was found,
    whether it changed)``. A parent rewritten since — its tables and the checksums listing them
    both — passes its own ``verify``; only its child's record can tell, and ``diff`` against it
    would report changes that never happened."""
    from curator.config import SEMVER

    version, recorded = info.get("parent_version"), info.get("parent_release_json_sha256")
    if not version:
        return "", False
    if not (isinstance(version, str) and SEMVER.match(version)):  # a version beside it, never a path
        return f"parent_version {version!r} is not a version: not checked", False
    parent = release.parent / version / "release.json"
    if not parent.is_file():
        return f"parent {version} is not beside this release: not checked", False
    now = sha256_file(parent)
    content, now_content = info.get("parent_content_sha256"), parent_content(parent.parent)
    if content and now_content != content:  # the data differs, whatever its release.json says
        return (f"parent {version}'s content changed since this release was built (content_sha256 recorded "
                f"{str(content)[:12]}…, now {str(now_content)[:12]}…): the parent was rewritten or replaced, so "
                "diffs against it are not what changed between the two releases; restore it from its published "
                "copy"), True
    if not recorded:
        return f"parent {version}: this release recorded no checksum of it", False
    if now != recorded and content:  # the same data under another manifest: its lineage records may mislead
        return (f"parent {version}'s release.json changed since this release was built (recorded "
                f"{str(recorded)[:12]}…, now {now[:12]}…) while its content is the one recorded here (content_sha256 "
                f"{str(content)[:12]}…): the parent was built again or its manifest edited, so diffs of its "
                "lineage against it may report changes that never happened; restore it from its published copy"), True
    if now != recorded:
        return (f"parent {version}'s release.json changed since this release was built (recorded "
                f"{str(recorded)[:12]}…, now {now[:12]}…): the parent was rewritten or replaced, so diffs against "
                "it are not what changed between the two releases; restore it from its published copy"), True
    return f"parent {version}'s release.json matches the checksum recorded here", False


def published_content(dest: Path) -> tuple[str | None, dict[str, str]]:
    """The ``content_sha256`` and ``files`` of the release already at ``dest`` (computed from its
    ``files`` when its release.json predates the record; None when it cannot be read)."""
    try:
        info = read_release_json(dest)
    except ReleaseError:
        return None, {}
    files = info.get("files")
    files = {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
    said = info.get("content_sha256")
    return (str(said) if said else content_sha256(files) if files else None), files


def parent_content(release: Path) -> str | None:
    """The content identity of ``release`` (a parent): :func:`content_sha256` of the ``files`` its
    release.json lists (what its own ``verify`` checks its files against), None when unreadable."""
    try:
        files = read_release_json(release).get("files")
    except ReleaseError:
        return None
    return content_sha256({str(k): str(v) for k, v in files.items()}) if isinstance(files, dict) else None


def verify_release(path: str | Path) -> VerifyReport:
    """Re-check every file checksum and every store's content hash against ``release.json``.

    Reports files added, removed or modified (paths relative to the release; files inside
    stores as ``stores/<case>.zarr/<file>``), the stores whose content hash differs, the stores
    whose shards are damaged although their hash agrees (a shard the writer listed is missing, its
    chunk index broken or a chunk failing its CRC32C: damage from before the release was written), the dataset card's
    structure issues, and where the splits disagree with release.json's record of them
    (:func:`curator.release.splits_check.splits_issues`).
    """
    from curator.registry.layout import is_case_id
    from curator.release.card_check import check_card_file
    from curator.release.hub import readme_matches_card
    from curator.release.splits_check import splits_issues

    release = Path(path)
    info = read_release_json(release)
    rep = VerifyReport(release=str(release), release_json_sha256=sha256_file(release / "release.json"),
                       content_sha256=str(info.get("content_sha256") or ""))
    files: dict[str, str] = info.get("files", {})
    stores: dict[str, dict[str, Any]] = info.get("stores", {})
    expected_store_files: dict[str, str] = {}
    sums = release / STORES_DIR / SUMS_NAME
    sums_ok = sums.is_file() and files.get(f"{STORES_DIR}/{SUMS_NAME}") == sha256_file(sums)
    if sums.is_file():
        expected_store_files = {f"{STORES_DIR}/{k}": v for k, v in parse_sums(sums.read_text()).items()}
    present = set(_walk(release)) - UNLISTED
    listed = set(files) | set(expected_store_files)
    rep.added = sorted(present - listed)
    if "README.md" in rep.added and readme_matches_card(release):  # `curator export huggingface`'s card
        rep.added.remove("README.md")
    rep.removed = sorted(listed - present)
    for rel in sorted(present & set(files)):
        rep.checked_files += 1
        try:
            same = (release / rel).is_file() and sha256_file(release / rel) == files[rel]
        except OSError:  # unreadable, or a link to nowhere
            same = False
        if not same:
            rep.modified.append(rel)
    for case_id, meta in sorted(stores.items()):
        rep.checked_stores += 1
        if not is_case_id(case_id):  # a crafted release.json: a key naming a path out of stores/ is not walked
            rep.stores_modified.append(str(case_id))
            continue
        store = release / STORES_DIR / f"{case_id}.zarr"
        linked = store.is_symlink()  # never walked: a link to / would have every file of the machine hashed
        try:
            hashes = store_file_hashes(store) if store.is_dir() and not linked else {}
        except (ReleaseError, OSError):  # a link or an unreadable file inside: changed, and named below
            hashes = {p.relative_to(store).as_posix(): "" for p in store.rglob("*") if p.is_symlink() or p.is_file()}
        if store.is_dir() and not linked:  # damage the checksums cannot see: a store damaged before it was released
            rep.stores_damaged += [f"{case_id}: {why}" for why in store_damage(store, chunks=True)]
        if hash_of_file_hashes(hashes) != meta.get("sha256"):
            rep.stores_modified.append(case_id)
            if sums_ok:  # the per-file list is trustworthy: name the files that changed
                prefix = f"{STORES_DIR}/{store.name}/"
                rep.modified += [prefix + r for r, h in hashes.items()
                                 if expected_store_files.get(prefix + r) not in (None, h)]
    rep.modified = sorted(set(rep.modified))
    rep.stores_lacking = stores_lacking(release)
    card = release / "DATASET_CARD.md"
    if card.is_file() or "DATASET_CARD.md" in files:
        rep.card_issues = check_card_file(card) if card.is_file() else ["DATASET_CARD.md is missing"]
    rep.counts_differ = _counts_differ(release, info.get("counts") or {})
    rep.manifest_issues = manifest_issues(info, card if card.is_file() else None)
    rep.splits_issues = splits_issues(release, info, frozenset(rep.modified + rep.removed))
    rep.parent, rep.parent_changed = parent_check(release, info)
    return rep


def stores_lacking(release: Path) -> list[str]:
    """Cases the release holds without their store because preprocess failed on the case's store
    in the workspace (:data:`~curator.runner.stage.STORE_FAULTS`), not on its input — from the
    release's ``problems`` table: ``["KiTS23__case_00006 (store_missing)"]``. The checksums agree
    with such a release (it was built that way); an earlier curator cached such a failure and
    published the release without the case's store and labels for training."""
    import pyarrow.parquet as pq

    from curator.runner.stage import STORE_FAULTS

    try:
        rows = pq.read_table(release / "problems.parquet", columns=["stage", "kind", "severity", "case_id"]).to_pylist()
    except (OSError, ValueError, KeyError):  # absent or unreadable: listed as removed or modified
        return []
    return sorted({f"{r['case_id']} ({r['kind']})" for r in rows
                   if r["stage"] == "preprocess" and r["severity"] == "error" and r["kind"] in STORE_FAULTS})


def manifest_issues(info: dict[str, Any], card: Path | None) -> list[str]:
    """Where ``release.json`` (``info``) disagrees with itself or with the dataset card (``card``,
    covered by a checksum): its ``pipeline_config_hash`` against the hash of its
    ``pipeline_config`` recomputed and against the card's front matter, and its
    ``content_sha256`` against the digest of its ``files`` checksums. An edit of these parts
    changes no checksum ``verify`` compares (release.json lists them); a release.json rewritten
    consistently is caught only by its own published SHA-256, or its ``content_sha256``."""
    from curator.release.card_check import split_front_matter
    from curator.release.lineage import published_config_hash

    out: list[str] = []
    stored = info.get("pipeline_config_hash")
    if "pipeline_config" in info and stored is not None:
        now = published_config_hash(info["pipeline_config"])
        if now != stored:
            out.append(f"pipeline_config_hash is {stored}, but pipeline_config hashes to {now}: release.json's "
                       "pipeline_config (or its hash) was edited since the release was built")
    if card is not None and stored is not None:
        try:
            meta, _, _ = split_front_matter(card.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):  # unreadable: listed as modified
            meta = None
        said = meta.get("pipeline_config_hash") if isinstance(meta, dict) else None
        if said is not None and str(said) != str(stored):
            out.append(f"release.json's pipeline_config_hash is {stored}, but DATASET_CARD.md (checksummed) gives "
                       f"{said}: release.json was edited since the release was built")
    content, files = info.get("content_sha256"), info.get("files")
    if content is not None and isinstance(files, dict):
        now = content_sha256(files)
        if now != content:
            out.append(f"content_sha256 is {content}, but the checksums release.json's files lists give {now}: "
                       "release.json was edited since the release was built")
    return out


def _counts_differ(release: Path, counts: dict[str, Any]) -> list[str]:
    """Row counts release.json states that its tables do not hold. The checksums cannot see an
    edited release.json (it lists them); its counts are the one part the tables check."""
    import pyarrow.parquet as pq

    out = []
    for name, n in sorted(counts.items()):
        table = release / f"{name}.parquet"
        try:
            rows: int | None = pq.ParquetFile(table).metadata.num_rows if table.is_file() else None
        except (OSError, ValueError):  # unreadable: already listed as modified
            continue
        if rows != n:
            out.append(f"{name}: release.json says {n} rows, " + (f"{table.name} has {rows}" if rows is not None
                                                                   else f"{table.name} is missing"))
    return out


def changed_files(release: Path, names: Iterable[str], recorded: dict[str, str]) -> dict[str, str]:
    """The files among ``names`` (paths relative to ``release``) whose bytes differ from their
    ``release.json`` checksum (``recorded``), with why — read before a table is queried, since
    a Parquet reader decodes a page damaged in the middle of a file into other values without a
    word. A file checked once (here, or in an earlier process: a small cache under
    ``$CURATOR_CACHE_DIR``, default ``~/.cache/curator``) is not hashed again while its size,
    modification and change times and inode stay the same. Files the release does not list are not
    judged by their bytes; one that is not a regular file (a FIFO, a device, a link to one or to
    nowhere) is named, listed or not: reading it would fail, or never end."""
    out: dict[str, str] = {}
    checked: dict[str, tuple[list[Any], str]] = {}
    for rel in names:
        want = recorded.get(rel)
        try:
            p = (release / rel).resolve()
            st = p.stat()
        except (OSError, RuntimeError) as e:  # RuntimeError: a link loop (Python < 3.13)
            out[rel] = f"cannot be read ({getattr(e, 'strerror', None) or e})"
            continue
        if not stat.S_ISREG(st.st_mode):
            out[rel] = "is not a regular file (a FIFO, a device or a folder: a release holds plain files)"
            continue
        if want is None:
            continue
        key: list[Any] = key_of(st)
        if already_checked(release, str(p), key, want):
            continue
        try:
            got = sha256_file(p)
        except (OSError, ReleaseError) as e:
            out[rel] = f"cannot be read ({e})"
            continue
        if got != want:
            out[rel] = "its bytes differ from the checksum in release.json"
            continue
        checked[str(p)] = (key, got)
    remember(release, checked)
    return out


def changed_store(release: Path, case_id: str, recorded: Any) -> str | None:
    """Why the store of ``case_id`` under ``<release>/stores`` differs from the content hash
    ``recorded`` (``release.json["stores"]``) holds for it (a file changed, added or removed: a chunk with a flipped
    bit decodes into other voxels without a word), or None when it is intact. Cached like
    :func:`changed_files`: a store is hashed again only when one of its files' size, time or
    inode changed, or a file came or went."""
    meta = recorded.get(case_id) if isinstance(recorded, dict) else None
    want = meta.get("sha256") if isinstance(meta, dict) else None
    if not isinstance(want, str):
        return "release.json records no checksum for it"
    linked = release / STORES_DIR / f"{case_id}.zarr"
    if linked.is_symlink() or (release / STORES_DIR).is_symlink():
        return "it is a symbolic link (a release's stores are folders of plain files)"
    store = linked.resolve()
    try:
        files = _store_files(store)
        digest = hashlib.sha256()
        for rel, p in files:
            digest.update(f"{rel}\0{stat_key(p)}\n".encode())
        key: list[Any] = [digest.hexdigest()]
    except (OSError, ReleaseError) as e:
        return f"cannot be read ({e.detail if isinstance(e, ReleaseError) else e.strerror or e})"
    if already_checked(release, str(store), key, want):
        return None
    try:
        got = hash_of_file_hashes({rel: sha256_file(p) for rel, p in files})
    except (OSError, ReleaseError) as e:
        return f"cannot be read ({e})"
    if got != want:
        return "its files differ from the checksum in release.json (a file changed, came or went)"
    remember(release, {str(store): (key, got)})
    return None
