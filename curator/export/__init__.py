"""Exports of a release to other tools' formats: nnU-Net v2 raw datasets and MONAI datalists."""

from curator.export.monai import export_monai
from curator.export.nnunet import export_nnunet

__all__ = ["export_monai", "export_nnunet"]
