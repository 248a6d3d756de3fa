"""PyTorch access to a release: random 3-D patches with text prompts (:class:`PatchDataset`)
for training, whole cases (:class:`CaseDataset`) for validation and testing, and
:func:`pad_collate` to batch whole cases of different sizes.

>>> # from curator.torch import PatchDataset
>>> # ds = PatchDataset("releases/demo/0.1.0", where="modality = 'CT'", terms=["liver", "spleen"])
>>> # loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
"""

from curator.torch.cases import CaseDataset
from curator.torch.collate import pad_collate
from curator.torch.dataset import PatchDataset
from curator.torch.sampling import case_weights

__all__ = ["CaseDataset", "PatchDataset", "case_weights", "pad_collate"]
