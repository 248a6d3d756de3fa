"""Settings of the preprocess stage (``stages.preprocess`` in pipeline.yaml).

>>> c = PreprocessConfig.from_dict({"target_spacing_mm": [1.5, 1.5, 1.5], "label_interpolation": "smooth"})
>>> c.target_spacing_mm, c.crop
((1.5, 1.5, 1.5), 'body')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from curator.config import StageConfig, payload_setting
from curator.errors import ConfigError


@dataclass(frozen=True)
class PreprocessConfig(StageConfig):
    orientation: str = "RAS"  # axis codes every store is reoriented to (SAT: RAS)
    spacing: Literal["fixed", "median", "isotropic"] = "fixed"
    target_spacing_mm: tuple[float, ...] = (1.0, 1.0, 3.0)  # SAT's 1 × 1 × 3 mm ("fixed")
    isotropic_mm: float = 1.5  # "isotropic"; "median" uses each dataset's median spacing
    image_interpolation: Literal["linear", "cubic", "nearest"] = "linear"
    label_interpolation: Literal["nearest", "smooth"] = "nearest"  # smooth = one-hot linear + argmax
    crop: Literal["body", "nonzero", "none"] = "body"
    crop_margin_mm: float = 5.0
    body_threshold_hu: float = -500.0
    ct_clip: tuple[float, ...] = (-500.0, 1000.0)  # SAT: CT clipped to [-500, 1000], then z-score
    mr_percentiles: tuple[float, ...] = (0.5, 99.5)  # SAT: other modalities clipped to these
    # PET's own window, either percentiles (() = mr_percentiles; 100 = the image's maximum, no
    # upper clip) or a fixed one in the image's units (SUV) like ct_clip; () = as before. In PET
    # cases' payloads (pet_window), not the per-case config: setting one redoes PET cases only
    pet_percentiles: tuple[float, ...] = payload_setting(())
    pet_clip: tuple[float, ...] = payload_setting(())
    inner_chunks: tuple[int, ...] = ()  # store inner chunk shape; () = curator.store.INNER_CHUNKS

    def __post_init__(self) -> None:
        if len(self.target_spacing_mm) != 3 or min(self.target_spacing_mm) <= 0:
            raise ConfigError("config_error", f"stages.preprocess.target_spacing_mm = {self.target_spacing_mm}; "
                              "give three positive numbers in mm, e.g. [1, 1, 3]")
        if self.isotropic_mm <= 0:
            raise ConfigError("config_error", "stages.preprocess.isotropic_mm must be positive")
        if len(self.orientation) != 3 or sorted(_AXIS[c] for c in self.orientation.upper() if c in _AXIS) != [0, 1, 2]:
            raise ConfigError("config_error", f"stages.preprocess.orientation = {self.orientation!r}; "
                              "give three axis codes naming each of L/R, A/P, S/I once, e.g. RAS or LPS")
        if len(self.ct_clip) != 2 or self.ct_clip[0] >= self.ct_clip[1]:
            raise ConfigError("config_error", "stages.preprocess.ct_clip must be [low, high] with low < high")
        for name in ("mr_percentiles", "pet_percentiles"):
            p = getattr(self, name)
            if (p or name == "mr_percentiles") and (len(p) != 2 or not 0 <= p[0] < p[1] <= 100):
                raise ConfigError("config_error", f"stages.preprocess.{name} = {list(p)}; give [low, high] "
                                  "percentiles with 0 <= low < high <= 100 (100: the image's maximum, no upper clip)")
        if self.pet_clip and (len(self.pet_clip) != 2 or self.pet_clip[0] >= self.pet_clip[1]):
            raise ConfigError("config_error", f"stages.preprocess.pet_clip = {list(self.pet_clip)}; give [low, high] "
                              "with low < high in the PET images' units, e.g. [0, 20] for SUV")
        if self.pet_clip and self.pet_percentiles:
            raise ConfigError("config_error", "stages.preprocess sets both pet_clip and pet_percentiles; PET gets "
                              "one window: keep pet_clip for a fixed one, pet_percentiles for each image's own")
        if self.inner_chunks and (len(self.inner_chunks) != 3 or min(self.inner_chunks) < 1):
            raise ConfigError("config_error", "stages.preprocess.inner_chunks must be three positive integers")
        if self.crop_margin_mm < 0:
            raise ConfigError("config_error", "stages.preprocess.crop_margin_mm must not be negative")


_AXIS = {"L": 0, "R": 0, "A": 1, "P": 1, "S": 2, "I": 2}
