"""``curator export nnunet``: an nnU-Net v2 raw dataset (``DatasetXXX_Name``) from a release.

>>> # export_nnunet("releases/demo/0.1.0", "nnUNet_raw", dataset_id=501, name="DemoLiver",
>>> #               terms=["liver", "spleen"], where="modality = 'CT'")
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from curator.errors import ConfigError, ReleaseError
from curator.export.common import DEFAULT_LAYERS, ExportReport, select_cases, write_case
from curator.io.fsutil import atomic_write_json
from curator.release.query import Release


def export_nnunet(release: str | Path, out_root: str | Path, *, dataset_id: int, name: str, terms: list[str],
                  where: str = "true", partial: bool = False, layers: Sequence[str] = DEFAULT_LAYERS
                  ) -> ExportReport:
    """Write ``<out_root>/Dataset<id>_<name>/`` with imagesTr, labelsTr and dataset.json.

    ``terms`` become labels 1..n (they should be mutually exclusive; overlaps are counted and
    the later term wins). Cases that lack a term are skipped unless ``partial`` (then the
    missing term is background — only sensible when the dataset annotates it as absent).
    """
    if not 1 <= dataset_id <= 999 or not re.fullmatch(r"[A-Za-z0-9_]+", name) or not terms:
        raise ConfigError("config_error", "nnU-Net needs a dataset id 1-999, a name of letters/digits/_ "
                          "and at least one term")
    rel = Release(release)
    cases = select_cases(rel, where)
    modalities = sorted({c.modality for c in cases})
    if len(modalities) > 1:
        raise ConfigError("config_error", f"the selection mixes modalities {modalities}; nnU-Net needs one "
                          "channel meaning", remedy="add e.g. modality = 'CT' to --where")
    folder = Path(out_root) / f"Dataset{dataset_id:03d}_{name}"
    if folder.exists():
        raise ReleaseError("release_error", "the export folder exists", path=str(folder),
                           remedy="choose another dataset id/name or remove the folder")
    report = ExportReport(folder)
    for c in cases:
        write_case(c, terms, partial, folder / "imagesTr" / f"{c.case_id}_0000.nii.gz",
                   folder / "labelsTr" / f"{c.case_id}.nii.gz", report, layers)
    if not report.cases:
        raise ReleaseError("release_error", f"no case holds every term {terms}", path=str(rel.path),
                           remedy="check --terms against `store_terms`, or pass --partial")
    atomic_write_json(folder / "dataset.json", {
        "channel_names": {"0": "CT" if modalities == ["CT"] else modalities[0]},
        "labels": {"background": 0, **{t: i for i, t in enumerate(terms, start=1)}},
        "numTraining": len(report.cases), "file_ending": ".nii.gz",
        "name": name, "description": f"exported by curator from {rel.info.get('collection')} "
                                     f"{rel.info.get('version')} (where: {where})",
        "licence": "see the release's dataset card: each case keeps its source dataset's licence",
    }, indent=1)
    atomic_write_json(folder / "curator_export.json", {"release": rel.info.get("version"), "cases": report.cases,
                                                      "skipped": report.skipped, "overlaps": report.overlaps})
    return report
