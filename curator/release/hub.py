"""A release as a Hugging Face dataset repository: ``curator export huggingface``.

The Hub reads a dataset repository's ``README.md``: YAML front matter (licence, task, tags,
size, and ``configs`` — which files make which table) over a Markdown card. Without
``configs`` its viewer and ``datasets.load_dataset`` would try to read every Parquet file of
the release as one table and fail on their different columns. The export writes the release's
files (copied, or hard-linked with ``link=True``) and a ``README.md`` whose front matter maps
each table to a config of that name (one split, ``table``: a manifest is not a training split —
the release's splits are the ``splits`` table) and whose body is the dataset card's own body.

``curator verify`` accepts the exported folder: every file is the release's, and a
``README.md`` whose body is ``DATASET_CARD.md``'s (:func:`readme_matches_card`) is the Hub card
of that release. Licences the Hub does not know by id (a challenge's terms, ``unknown``) make
the licence ``other``, pointing at the card, whose Licence constraints section states them.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from curator.errors import ReleaseError
from curator.io.fsutil import check_free, check_output_dir, staged_dir
from curator.release.card_check import split_front_matter

README = "README.md"
CARD = "DATASET_CARD.md"
SPLIT = "table"
# the Hub's licence ids of the licences public datasets carry (https://huggingface.co/docs/hub/repositories-licenses)
HUB_LICENCES = {
    "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0",
    "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0",
    "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "mit", "apache-2.0", "gpl-3.0", "odbl", "pddl",
    "odc-by", "bsd-3-clause",
}


def hub_licence(licence: str) -> str:
    """The Hub's id for a declared licence, or ``other``.

    >>> hub_licence("CC-BY-NC-SA-4.0"), hub_licence("unknown (challenge registration)")
    ('cc-by-nc-sa-4.0', 'other')
    """
    lid = licence.strip().lower()
    return lid if lid in HUB_LICENCES else "other"


def size_category(n: int) -> str:
    """The Hub's size category for ``n`` cases.

    >>> size_category(22), size_category(1200), size_category(250_000)
    ('n<1K', '1K<n<10K', '100K<n<1M')
    """
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def hub_front(release: Path) -> dict[str, Any]:
    """The README's front matter for the release in ``release``."""
    card = release / CARD
    if not card.is_file():
        raise ReleaseError("release_error", f"the release has no {CARD} to make the Hub's card from",
                           path=str(release), remedy="release with the card step (the default)")
    front, _, issues = split_front_matter(card.read_text(encoding="utf-8"))
    if front is None:
        raise ReleaseError("release_corrupt", f"{CARD} cannot be read: {'; '.join(issues)}", path=str(card),
                           remedy="run `curator verify` on the release; restore it from its published copy")
    licences = sorted({hub_licence(s.get("licence", "")) for s in front.get("sources", [])} or {"other"})
    tables = sorted(p.stem for p in release.glob("*.parquet"))
    out: dict[str, Any] = {
        "pretty_name": f"{front.get('collection')} {front.get('version')}",
        "license": licences[0] if len(licences) == 1 else licences,
    }
    if "other" in licences:  # the Hub asks for a name and a link when a licence is not one of its ids
        out |= {"license_name": "per-source-licences", "license_link": CARD}
    out |= {
        "task_categories": ["image-segmentation"],
        "tags": ["medical", "3d", "segmentation", *[str(m).lower() for m in front.get("modalities", [])],
                 *[str(r).lower() for r in front.get("regions", [])], "curator", "croissant"],
        "size_categories": [size_category(int(front.get("n_cases") or 0))],
        "configs": [{"config_name": t, "data_files": [{"split": SPLIT, "path": f"{t}.parquet"}],
                     **({"default": True} if t == "cases" else {})} for t in tables],
    }
    return out


def hub_readme(release: Path) -> str:
    """``README.md`` for the Hub: :func:`hub_front` over the dataset card's body."""
    _, body, _ = split_front_matter((release / CARD).read_text(encoding="utf-8"))
    front = yaml.safe_dump(hub_front(release), sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{front}---\n{body}"


def readme_matches_card(release: Path) -> bool:
    """Whether ``README.md`` in ``release`` is the Hub card of that release: front matter that is
    a mapping with a config per table, and the body of ``DATASET_CARD.md`` (whatever front matter
    a later curator writes, or a person adds before uploading — the body is what readers read)."""
    readme, card = release / README, release / CARD
    if not (readme.is_file() and card.is_file()):
        return False
    front, body, issues = split_front_matter(readme.read_text(encoding="utf-8"))
    if front is None or issues:
        return False
    configs = {c.get("config_name") for c in front.get("configs") or [] if isinstance(c, dict)}
    return configs >= {p.stem for p in release.glob("*.parquet")} and \
        body == split_front_matter(card.read_text(encoding="utf-8"))[1]


@dataclass
class HubExport:
    folder: Path
    files: int = 0
    bytes: int = 0
    linked: int = 0
    tables: dict[str, int] = field(default_factory=dict)  # config -> rows


def _copy(src: Path, dst: Path, link: bool, report: HubExport) -> None:
    if link:
        try:
            os.link(src, dst)
            report.linked += 1
            return
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
    shutil.copy2(src, dst)


def export_huggingface(release: str | Path, out: str | Path, *, link: bool = False) -> HubExport:
    """Write the release into ``out`` as a Hub dataset repository (the release's files and
    ``README.md``), ready for ``hf upload <org>/<name> <out> . --repo-type dataset``. ``link``: hard-link the files instead of
    copying them (the same file system; an edit in ``out`` would then change the release)."""
    from curator.release.query import Release, check_outside_releases

    rel = Release(release)
    folder = Path(out)
    check_outside_releases(folder, "the export", rel.path)
    check_output_dir(folder)
    names = sorted(p.name for p in rel.path.iterdir())
    check_free(folder, [*names, README])
    if README in names:
        raise ReleaseError("release_error", f"the release already holds a {README}", path=str(rel.path / README),
                           remedy="export from the release curator wrote, not from an exported folder")
    readme = hub_readme(rel.path)
    report = HubExport(folder)
    with staged_dir(folder) as staging:
        for src in sorted(rel.path.rglob("*")):
            dst = staging / src.relative_to(rel.path)
            if src.is_symlink():
                raise ReleaseError("release_error", "a release holds plain files and folders; this is a link",
                                   path=str(src), remedy="run `curator verify` on the release")
            if src.is_dir():
                dst.mkdir()
                continue
            _copy(src, dst, link, report)
            report.files += 1
            report.bytes += src.stat().st_size
        (staging / README).write_text(readme, encoding="utf-8")
    report.tables = {p.stem: pq.ParquetFile(p).metadata.num_rows for p in sorted(rel.path.glob("*.parquet"))}
    return report
