"""Release step: measurements and QC decisions joined into the release's ``labels`` table.

After this step one query answers questions like "which cases have a liver over 2.5 l"::

    select case_id from labels where term = 'liver' and volume_ml > 2500

and the training view is ``labels`` without excluded rows (:data:`TRAINING_FILTER`):
flagged labels keep their row, mask and reason; only the loader skips them.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from curator.schema import to_arrow

log = logging.getLogger("curator")

# The labels a training loader uses: everything but excluded labels (truncated and unchecked
# labels are kept; overrides re-include). Recorded in release.json under qc.training_filter.
TRAINING_FILTER = "coalesce(qc_decision, 'include') <> 'exclude'"
MEASUREMENTS = ("mean_intensity", "sd_intensity", "extent_mm", "centroid_mm", "components")


def join_measurements(labels: pa.Table, qc: pa.Table) -> pa.Table:
    """``labels`` with its measurement and decision columns filled from ``qc`` rows of the same
    (case_id, term_id, origin); rows without a qc row keep nulls."""
    key_cols = ["case_id", "term_id", "origin"]
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in qc.select([*key_cols, *MEASUREMENTS, "decision", "reason"]).to_pylist():
        by_key[tuple(r[k] for k in key_cols)] = r
    rows = labels.to_pylist()
    for row in rows:
        q = by_key.get(tuple(row.get(k) for k in key_cols))
        if q is None:
            continue
        for c in MEASUREMENTS:
            row[c] = q[c]
        row["qc_decision"] = q["decision"]
        row["qc_reason"] = q["reason"]
    return to_arrow("labels", rows)


def summary(qc: pa.Table) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for d in qc.column("decision").to_pylist():
        counts[d] = counts.get(d, 0) + 1
    methods = sorted(set(qc.column("method").to_pylist()))
    return {"decisions": dict(sorted(counts.items())), "method": methods[0] if len(methods) == 1 else methods,
            "training_filter": TRAINING_FILTER}


def release_step(builder: Any) -> None:
    """Fill ``labels``' measurement columns from ``qc`` (tolerates either table being absent)."""
    qc = builder.tables.get("qc")
    if qc is None:
        log.info("release: no qc table; labels keep null measurements")
        return
    builder.extra["qc"] = summary(qc)
    labels = builder.tables.get("labels")
    if labels is None:
        log.info("release: no labels table to join qc measurements into (harmonize not run)")
        return
    builder.tables["labels"] = join_measurements(labels, qc)
