"""Release step of dedup: what of the ``hashes`` table a release can carry.

The verification thumbnails stay in the workspace (``stages/dedup/thumbs``): a release keeps
every hash and ``thumbnail_sha256``, and sets the workspace-relative ``thumbnail`` path to null.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def release_step(builder: Any) -> None:
    if "hashes" not in builder.tables:
        return
    t = builder.tables["hashes"]
    i = t.schema.get_field_index("thumbnail")
    if i >= 0:
        builder.tables["hashes"] = t.set_column(i, t.schema.field(i).with_nullable(True),
                                                pa.nulls(len(t), pa.string()))
