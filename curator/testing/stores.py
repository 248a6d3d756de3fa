"""A workspace with phantom case stores (what preprocess and harmonize would leave), for tests of
stages and release steps that read stores: ``cases`` and ``labels`` tables plus one Zarr store per
case, with chosen cases broken, label-only or missing their store.

>>> import tempfile
>>> ws = phantom_workspace(tempfile.mkdtemp(), n_cases=3, broken=(0,))
>>> sorted(p.name for p in ws.stores_dir.iterdir())[:1]
['Phantom__c000.zarr']
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from curator.runner.context import Context
from curator.runner.freshness import tables_read_digest, upstream_runs, write_record
from curator.schema import to_arrow
from curator.store import CaseStore
from curator.testing.labelmaps import add_blob, erase_part
from curator.testing.phantoms import STRUCTURES, Subject, grid, render
from curator.workspace import Workspace

TERMS = {code: name for name, (code, _, _) in STRUCTURES.items()}
NAMES = {"liver": "liver", "spleen": "spleen", "kidney_right": "right kidney", "kidney_left": "left kidney",
         "pancreas": "pancreas", "aorta": "aorta", "vertebrae": "vertebrae", "kidney_tumor": "kidney tumor",
         "kidney_cyst": "kidney cyst"}
SHAPE = (80, 64, 40)
SPACING = (4.5, 4.0, 6.0)


def _case_row(cid: str, dataset: str, has_image: bool) -> dict[str, Any]:
    return {"case_id": cid, "dataset": dataset, "source": dataset, "source_case": cid.split("__")[-1],
            "patient_id": f"p_{cid}", "modality": "CT", "region": "abdomen", "has_image": has_image,
            "has_label": True, "label_only": not has_image, "label_status": "ok"}


def phantom_workspace(root: str | Path, n_cases: int = 24, *, broken: Iterable[int] = (),
                      label_only: Iterable[int] = (), missing: Iterable[int] = (), dataset: str = "Phantom",
                      seed: int = 0, swapped: Iterable[int] = (), mirrored: Iterable[int] = ()) -> Workspace:
    """Write cases/labels tables and stores for ``n_cases`` phantoms; ``broken`` cases get a liver
    label with most of it erased and a distant blob; ``label_only`` stores have no image or body;
    ``missing`` cases have no store; ``swapped`` cases call the left kidney right and vice versa;
    ``mirrored`` cases have their image and label arrays reversed left–right under the same header
    (a flipped header: the whole patient mirrored, the liver on the patient's left)."""
    ws = Workspace(root).init()
    ws.stores_dir.mkdir(parents=True, exist_ok=True)
    g = grid(SHAPE, spacing=SPACING)
    broken, label_only, missing, swapped = set(broken), set(label_only), set(missing), set(swapped)
    mirrored, lr_axis = set(mirrored), next(i for i, c in enumerate(g.orientation) if c in "LR")
    swap = {"kidney_left": "kidney_right", "kidney_right": "kidney_left"}
    cases, labels = [], []
    for i in range(n_cases):
        cid = f"{dataset}__c{i:03d}"
        img, lab = render(Subject.random(seed=seed * 1000 + i), g, modality="CT", seed=i)
        if i in broken:
            rng = np.random.default_rng(i)
            liver = lab == STRUCTURES["liver"][0]
            bad = add_blob(erase_part(liver, rng, (0.6, 0.7)), rng, g.spacing, (0.2, 0.3), 40.0)
            lab[liver & ~bad] = 0
            lab[bad & (lab == 0)] = STRUCTURES["liver"][0]
        if i in mirrored:
            img, lab = np.flip(img, lr_axis).copy(), np.flip(lab, lr_axis).copy()
        has_image = i not in label_only
        cases.append({**_case_row(cid, dataset, has_image), "orientation": g.orientation})
        values = {int(c): [TERMS[int(c)] if i not in swapped else swap.get(TERMS[int(c)], TERMS[int(c)])]
                  for c in np.unique(lab) if c}
        for code, (term,) in values.items():
            n = int(np.count_nonzero(lab == code))
            labels.append({"case_id": cid, "dataset": dataset, "term_id": term, "term": NAMES[term],
                           "origin": "original", "layer": "original", "raw_values": [code], "derived": False,
                           "annotated": True, "present": True, "voxels": n, "modality": "CT",
                           "volume_ml": n * g.voxel_volume_mm3 / 1000.0})
        if i in missing:
            continue
        CaseStore.create(ws.stores_dir / f"{cid}.zarr", geometry=g, attrs={"case_id": cid, "modality": "CT"},
                         image=img.astype(np.int16) if has_image else None,
                         body=(img > -500) if has_image else None, labels=[(lab, values)])
    ws.write_table("cases", to_arrow("cases", cases))
    ws.write_table("labels", to_arrow("labels", labels))
    return ws


def record_runs(ctx: Context, *stages: str) -> None:
    """Record ``stages`` as run under ``ctx``'s pipeline.yaml, in order, as the runner does after a
    run — for a workspace a test wrote itself (:func:`phantom_workspace` writes what ingest,
    harmonize and preprocess would), so a release built from it is not refused as out of date."""
    from curator.stages import stage_class

    for name in stages:
        cls = stage_class(name)
        config = ctx.stage_config(cls.config_class, name)
        write_record(ctx, cls, config, upstream_runs(ctx, name),
                     settings_files=cls.settings_files_digest(ctx, config),
                     tables_read=tables_read_digest(ctx, cls))
