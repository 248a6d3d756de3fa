"""Settings of the qc stage (``stages.qc`` in pipeline.yaml).

>>> cfg = QCConfig.from_dict({"epsilon": 3, "method": "iqr"})
>>> cfg.epsilon, cfg.method, cfg.vote
(3.0, 'iqr', 2)
>>> QCConfig.from_dict({"vote": 4})
Traceback (most recent call last):
...
curator.errors.ConfigError: stages.qc: vote = 4 must be between 1 and 3 (the number of SOLF features)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from curator.config import StageConfig, finalize_only
from curator.errors import ConfigError

FEATURES = ("volume", "sphericity", "eccentricity")  # SOLF's three (UKBOB §3.2)
ALL_FEATURES = (*FEATURES, "detached")  # + share of the voxels outside the largest piece (optional)


@dataclass(frozen=True)
class QCConfig(StageConfig):
    """SOLF (UKBOB §3.2) or an IQR baseline over per-(case, term) shape features.

    * ``method``: ``solf`` — bounds are the ε/2 and 100 − ε/2 percentiles of each feature in
      the (term, modality, volume basis) cohort; a label is flagged when at least ``vote`` of
      the three features fall outside. ``iqr`` — Tukey fences Q1 − k·IQR, Q3 + k·IQR on
      ``iqr_features``; flagged when at least ``iqr_vote`` of them fall outside.
    * ``features``: the features voted on; the paper's three by default. Adding ``detached``
      (1 − largest connected component's share of the voxels; one-sided) makes SOLF see
      spurious distant blobs, which barely move volume and sphericity (see docs/qc.md).
    * ``epsilon``: percent of each cohort treated as extreme (ε/2 per tail); UKBOB found 2 best.
    * ``percentiles``: how the ε/2 and 100 − ε/2 percentiles are estimated. ``empirical``
      (the paper's, fine for UKBOB's 51 k scans), ``normal`` (a robust fit — median and MAD
      of log volume, logit sphericity and logit eccentricity — extrapolating the tails, as far
      out as a cohort of N labels needs for ε/200 of it to lie beyond each bound on average:
      1.19 z at N = 20, 1.10 z at 40, 1.02 z at 200), or ``auto``: empirical when at
      least ``min_tail`` labels of the cohort lie beyond each bound (N·ε/200 ≥ min_tail,
      N ≥ 500 at ε = 2), the fit otherwise.
    * ``volume_norm``: what the volume feature is divided by. ``body`` — the body volume in
      the scan (UKBOB's V_body; right for cohorts scanned with one protocol), ``section`` —
      the body size at the label's level, (mean body cross-section over the label's
      slices)^(3/2), which does not change with the scan's coverage (use it for collections
      mixing abdominal, chest-abdomen-pelvis and whole-body scans), or ``absolute`` —
      millilitres. Cases without an image are always judged in millilitres.
    * ``sphericity``: ``faces`` (exposed voxel faces, as in the paper; a perfect ball scores
      2/3) or ``mesh`` (smoothed marching-cubes surface; a ball scores 1; slower).
    * ``min_cohort``: cohorts with fewer complete (untruncated) labels are not judged
      (decision ``unchecked``).
    * ``border_margin``: a label with fewer than this many empty voxels between it and the
      scan's field-of-view edge is ``truncated``: kept, but out of the bounds and not judged
      (1, the default: touching the edge; 2: also one voxel short of it; 0 turns the check off).
    * ``side_margin_mm``: the laterality check (:mod:`curator.qc.side`) excludes a left/right
      label lying more than this far on the wrong side of its partner (or of the body's
      centre); ``null`` turns it off.
    * ``overrides``: a YAML or CSV file of ``case_id, term, [origin], action, reason,
      [reviewer], [date]`` rows (action ``include`` or ``exclude``; ``date`` an ISO date);
      relative paths are resolved against the folder holding the workspace.
    * ``override_reason``: ``optional`` (the default) or ``required`` — every override row must
      give a reason, else the file is refused naming the rows.
    * ``on_unmatched_override``: ``warn`` (the default: an ``override_unmatched`` warning per row,
      and the stage's summary line says how many rows matched no label) or ``error`` — the run
      stops before the release, listing the rows.

    Only ``sphericity``, ``border_margin`` and ``layers`` change the per-case measurements;
    the others judge the cohort in finalize, so changing them re-judges the cached
    measurements without measuring a store again.
    """

    method: Literal["solf", "iqr"] = finalize_only("solf")
    epsilon: float = finalize_only(2.0)
    features: tuple[str, ...] = finalize_only(FEATURES)
    vote: int = finalize_only(2)
    iqr_k: float = finalize_only(1.5)
    iqr_features: tuple[str, ...] = finalize_only(("volume",))
    iqr_vote: int = finalize_only(1)
    percentiles: Literal["auto", "empirical", "normal"] = finalize_only("auto")
    min_tail: int = finalize_only(5)
    volume_norm: Literal["body", "section", "absolute"] = finalize_only("body")
    sphericity: Literal["faces", "mesh"] = "faces"
    min_cohort: int = finalize_only(20)
    border_margin: int = 1
    layers: tuple[str, ...] = ("original", "revised", "pseudo")
    overrides: str | None = finalize_only(None)
    override_reason: Literal["optional", "required"] = finalize_only("optional", added=True)
    on_unmatched_override: Literal["warn", "error"] = finalize_only("warn", added=True)
    side_margin_mm: float | None = finalize_only(10.0)

    def __post_init__(self) -> None:
        where = "stages.qc"
        if not 0.0 <= self.epsilon < 50.0:
            raise ConfigError("config_error", f"{where}: epsilon = {self.epsilon} must be in [0, 50) (percent)")
        for name in ("features", "iqr_features"):
            chosen = getattr(self, name)
            if not chosen or any(f not in ALL_FEATURES for f in chosen) or len(set(chosen)) != len(chosen):
                raise ConfigError("config_error", f"{where}: {name} {list(chosen)} must be distinct features "
                                  f"from {list(ALL_FEATURES)}")
        if not 1 <= self.vote <= len(self.features):
            raise ConfigError("config_error", f"{where}: vote = {self.vote} must be between 1 and "
                              f"{len(self.features)} (the number of SOLF features)")
        if not 1 <= self.iqr_vote <= len(self.iqr_features):
            raise ConfigError("config_error", f"{where}: iqr_vote = {self.iqr_vote} must be between 1 and "
                              f"{len(self.iqr_features)}")
        if self.iqr_k <= 0:
            raise ConfigError("config_error", f"{where}: iqr_k must be positive")
        if self.min_tail < 1:
            raise ConfigError("config_error", f"{where}: min_tail must be at least 1")
        if self.min_cohort < 2:
            raise ConfigError("config_error", f"{where}: min_cohort must be at least 2")
        if self.side_margin_mm is not None and self.side_margin_mm < 0:
            raise ConfigError("config_error", f"{where}: side_margin_mm must be 0 or more (or null: no check)")
        if self.border_margin < 0:
            raise ConfigError("config_error", f"{where}: border_margin must be 0 or more voxels")
        if self.volume_norm not in ("body", "section", "absolute"):
            raise ConfigError("config_error", f"{where}: volume_norm {self.volume_norm!r} must be body, section "
                              "or absolute")
        unknown = [x for x in self.layers if x not in ("original", "revised", "pseudo")]
        if unknown:
            raise ConfigError("config_error", f"{where}: unknown label layers {unknown}; "
                              "layers are original, revised, pseudo")
