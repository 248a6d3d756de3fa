"""Release step: the dataset YAMLs a release used that curator does not ship, in the release.

A source whose dataset YAML is not curator's built-in one — a file named by path in ``sources:``,
or one a ``registry:`` entry of pipeline.yaml adds or puts in place of a built-in dataset — made the
release with a spec no one else has: ``release.json``'s ``registry`` gives its checksum, not its
text. Its exact bytes go into ``<release>/registry/<dataset>.yaml``, listed in ``release.json``'s
``registry_files`` (``{dataset: {file, sha256, source_file, overrides_builtin}}``) and, like every
file of the release, in ``files`` and so in ``content_sha256``: whoever holds the release can put
the file in their own ``registry:`` and build it again.

A source with ``pseudonymous_ids`` is the exception: its YAML may name its files (an ``exclude``,
a fix's ``when``), which that option keeps out of the release, so its file is listed with its
checksum and ``copied: false`` (hand it over as the source's files are).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curator.errors import ReleaseError
from curator.io.fsutil import atomic_write_bytes, sha256_json

if TYPE_CHECKING:  # pragma: no cover
    from curator.release.build import ReleaseBuilder

log = logging.getLogger("curator")
FOLDER = "registry"


def is_builtin(path: str) -> bool:
    """Whether a spec's file (``DatasetSpec.path``) is one of curator's built-in dataset YAMLs."""
    from curator.registry import builtin_dir

    return bool(path) and Path(path).resolve().parent == builtin_dir().resolve()


def release_step(b: ReleaseBuilder) -> None:
    from curator.registry import load_dataset_file

    out: dict[str, dict[str, Any]] = {}
    for name, src in sorted(b.ctx.sources.items()):
        spec = src.spec
        if is_builtin(spec.path) or spec.name in out:
            continue
        path = Path(spec.path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ReleaseError("release_error", f"the dataset YAML of source {name} cannot be read to put it "
                               f"into the release: {e.strerror or e}", path=str(path),
                               remedy="restore the file (its spec made the workspace's tables), then run the "
                               "release again") from e
        entry: dict[str, Any] = {"sha256": hashlib.sha256(data).hexdigest(), "source_file": path.name,
                                 "overrides_builtin": _builtin_named(spec.name)}
        if src.pseudonymous_ids:
            entry.update(file=None, copied=False)
            log.warning("release: the dataset YAML of %s (pseudonymous_ids) is not copied into the release (it may "
                        "name the source's files); release.json lists its checksum", name)
        else:
            rel = f"{FOLDER}/{spec.name}.yaml"
            dst = b.staging / rel
            atomic_write_bytes(dst, data)
            copy = load_dataset_file(dst, shown=rel)
            if sha256_json(copy.to_dict()) != sha256_json(spec.to_dict()):
                raise ReleaseError("release_error", f"the dataset YAML of source {name} changed while the release "
                                   "was built", path=str(path), remedy="run the pipeline again (`curator run`)")
            entry.update(file=rel, copied=True)
        out[spec.name] = entry
    if out:
        b.extra["registry_files"] = out


def _builtin_named(name: str) -> bool:
    """Whether curator ships a dataset of this name (the file used replaced it)."""
    from curator.registry import builtin_dir

    return any(p.stem.lower() == name.lower() for p in builtin_dir().glob("*.y*ml"))
