"""A workspace with phantom case stores (standing in for preprocess) and a band-model ensemble."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from curator.config import PipelineConfig
from curator.runner.context import Context
from curator.schema import to_arrow
from curator.testing.segmodels import band_specs, write_phantom_store
from curator.testing.stores import record_runs
from curator.workspace import Workspace

# (case id, dataset, annotated term -> code)
CASES = [
    ("MSD_Spleen__spleen_1", "MSD_Spleen", {"spleen": 1}),
    ("MSD_Spleen__spleen_2", "MSD_Spleen", {"spleen": 1}),
    ("Pancreas__0001", "Pancreas", {"pancreas": 1}),
    ("Pancreas__0002", "Pancreas", {"pancreas": 1}),
]


def case_row(cid: str, dataset: str) -> dict[str, Any]:
    return {"case_id": cid, "dataset": dataset, "source": dataset, "source_case": cid.split("__")[1],
            "patient_id": f"p_{cid}", "modality": "CT", "has_image": True, "has_label": True,
            "label_only": False, "label_status": "ok", "image_sha256": f"img-{cid}", "label_sha256": f"lab-{cid}"}


@pytest.fixture
def phantom_ws(tmp_path: Path):
    """(Context, stage settings) for a workspace of four phantom cases."""

    def make(keep_stores: bool = False, **stage: Any) -> tuple[Context, dict[str, Any]]:
        """``keep_stores``: the same workspace with other stage settings (the stores as an earlier
        run left them), else new phantom stores."""
        ws = Workspace(tmp_path / "ws").init()
        for i, (cid, _, ann) in enumerate(CASES):
            if not (keep_stores and (ws.stores_dir / f"{cid}.zarr").exists()):
                write_phantom_store(ws.stores_dir / f"{cid}.zarr", 100 + i, ann)
        ws.write_table("cases", to_arrow("cases", [case_row(c, d) for c, d, _ in CASES]))
        settings = {"models": band_specs(3), "overlap": 0.5, **stage}
        off = {"enabled": False}  # the workspace is what ingest and preprocess would leave
        cfg = PipelineConfig.from_dict({"workspace": str(ws.root),
                                        "stages": {"pseudolabel": settings, "dedup": off, "harmonize": off, "qc": off},
                                        "executor": {"workers": 1, "progress": False},
                                        "release": {"root": str(tmp_path / "releases"), "collection": "t"}})
        ctx = Context(cfg, ws)
        record_runs(ctx, "ingest", "preprocess")
        return ctx, settings

    return make
