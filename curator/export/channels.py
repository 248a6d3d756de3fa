"""Multi-channel exports: the sequences of one study (BraTS t1n/t1c/t2w/t2f, prostate T2 + ADC,
CT + PET) as the channels of one exported case.

Curator ingests each sequence as its own case; the sequences of one study share a ``study_key``.
With ``channels=[a, b, ...]`` the selected cases are grouped by study_key and a study is exported
when it has exactly one selected case of each listed sequence (others are skipped, with a reason).
The exported case is named after the first channel's case id without its ``__<sequence>`` suffix
(``BraTS__00001__t1n`` -> ``BraTS__00001``; the case id itself when it has no such suffix).

The first channel is the reference: its store's grid (shape + affine) is every channel's and the
label's grid, and its labels are exported. Each store was cropped to its own body, so the other
channels are placed on that grid through the stores' affines: an integer voxel shift (the usual
case: same spacing and direction) copies the stored values exactly; any other grid is resampled
linearly (the export notes which). Voxels outside a channel's own store get the value the loader
pads with (:meth:`curator.store.CaseStore.outside_value`: −1000 HU for CT, else the lower bound
of the store's intensity window).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from curator.errors import ConfigError, ReleaseError
from curator.io.volume import Geometry
from curator.release.studies import check_channels, group_studies, voxel_shift

if TYPE_CHECKING:  # common writes the channels with onto()
    from curator.export.common import ExportCase, ExportReport

Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Study:
    """One exported case: ``cases[k]`` is channel ``k`` (``cases[0]`` the reference)."""

    name: str
    cases: tuple[ExportCase, ...]


def studies_of(cases: Sequence[ExportCase], channels: Sequence[str] | None, report: ExportReport,
               release: Path, dropped: Sequence[tuple[ExportCase, str]] = ()) -> tuple[list[Study], dict[str, str]]:
    """The studies to export and their channel names (dataset.json's ``channel_names``); without
    ``channels`` each case is its own single-channel study. ``dropped``: the selected cases left
    out as duplicates, with the member used instead (a study lacking one is told so)."""
    if channels is None:
        modalities = sorted({c.modality for c in cases})
        return [Study(c.case_id, (c,)) for c in cases], {"0": "CT" if modalities == ["CT"] else
                                                         modalities[0] if modalities else "CT"}
    check_channels(channels, cases)
    studies = [Study(name, members) for name, members in group_studies(cases, channels, report.skipped, dropped)]
    if not studies:
        raise ReleaseError("release_error", f"no selected study has a case of each of {', '.join(channels)}",
                           path=str(release), remedy="check --channels and --where against the cases' sequence "
                           "and study_key: " + "; ".join(f"{k}: {v}" for k, v in list(report.skipped.items())[:5]))
    return studies, channel_names(studies, channels)


def note_resampled(report: ExportReport) -> None:
    """Say which channels were interpolated (their grid is no voxel shift of their reference's)."""
    if report.resampled:
        report.notes.append(f"{len(report.resampled)} channels were resampled linearly onto their study's first "
                            f"channel's grid (another spacing or direction, or grids a fraction of a voxel apart: each store is "
                            f"centred on its own scan's extent): {', '.join(report.resampled[:10])}"
                            + (" ..." if len(report.resampled) > 10 else ""))


def preprocess_settings(info: Mapping[str, Any]) -> Mapping[str, Any]:
    """The release's ``stages.preprocess`` settings (release.json's ``pipeline_config``)."""
    return ((info.get("pipeline_config") or {}).get("stages") or {}).get("preprocess") or {}


def pet_window_note(settings: Mapping[str, Any], studies: Sequence[Study], names: Mapping[str, str],
                    tool: str = "nnunet") -> str | None:
    """The export's note when the release's PET stores were normalised with a PET window
    (``settings``: release.json's ``stages.preprocess``): the export writes physical values, so
    ``pet_clip`` / ``pet_percentiles`` are not applied — nnU-Net (``tool="nnunet"``) normalises each
    channel itself, a MONAI pipeline (``"monai"``) only with the transforms it is given."""
    window = next(((k, settings[k]) for k in ("pet_clip", "pet_percentiles") if settings.get(k)), None)
    pet = sorted({names[str(k)] for s in studies for k, c in enumerate(s.cases) if c.modality.upper() in ("PET", "PT")})
    if window is None or not pet:
        return None
    key, value = window
    lo, hi = (float(v) for v in value)
    head = (f"the release's PET stores were normalised with stages.preprocess.{key}: {list(value)} (the torch "
            "loader applies it), but this export writes the PET values unclipped, in their physical units, and ")
    if tool == "monai":
        which = "the PET images" if len(names) == 1 else f"channel {', '.join(pet)}"
        transform = (f"ScaleIntensityRanged(keys, a_min={lo:g}, a_max={hi:g}, b_min={lo:g}, b_max={hi:g}, clip=True)"
                     if key == "pet_clip" else
                     f"ScaleIntensityRangePercentilesd(keys, lower={lo:g}, upper={hi:g}, b_min=0, b_max=1, clip=True)")
        return (head + "MONAI's transforms apply no window of their own, so the window is not applied. To train "
                f"with it, add {transform} for {which}"
                + ("" if len(names) == 1 else " (split that channel out first, e.g. SplitDimd, then concatenate)"))
    how = (f"clip the exported {', '.join(pet)} images to {list(value)}" if key == "pet_clip" else
           f"clip each exported {', '.join(pet)} image to its own {list(value)} percentiles")
    return (head + f"nnU-Net normalises channel {', '.join(pet)} itself (channel_names: a per-image z-score, "
            f"ZScoreNormalization), so the window is not applied. To train with it, {how} before "
            "nnUNetv2_plan_and_preprocess (nnU-Net's z-score then follows the clip), or normalise them yourself "
            "and name the channel \"noNorm\" in dataset.json")


def channel_names(studies: Sequence[Study], channels: Sequence[str]) -> dict[str, str]:
    """dataset.json's ``channel_names``: "CT" for a CT channel (nnU-Net's CTNormalization), the
    sequence name otherwise (per-image z-score). One channel's cases must share a modality."""
    out = {}
    for k, seq in enumerate(channels):
        mods = sorted({s.cases[k].modality for s in studies})
        if len(mods) > 1:
            raise ConfigError("config_error", f"channel {k} ({seq}) mixes modalities {mods}; nnU-Net needs one "
                              "meaning per channel", remedy="narrow --where (e.g. to one dataset)")
        out[str(k)] = "CT" if mods == ["CT"] else seq
    return out


def onto(read: Callable[[Box | None], NDArray[Any]], src: Geometry, ref: Geometry,
         fill: float) -> tuple[NDArray[Any], bool]:
    """The image ``read`` gives on grid ``src`` placed on grid ``ref`` (voxels outside it:
    ``fill``), and whether it was resampled. An integer voxel shift between the grids copies the
    values exactly (reading only the overlap); other grids are interpolated linearly (float32)."""
    shift = voxel_shift(ref.matrix, src.matrix)  # ref voxel i is src voxel i + shift
    if shift is not None:
        lo = [max(0, -int(t)) for t in shift]  # the overlap, in ref indices
        hi = [min(n, s - int(t)) for n, s, t in zip(ref.shape, src.shape, shift, strict=True)]
        box: Box = tuple(slice(a + int(t), b + int(t)) for a, b, t in zip(lo, hi, shift, strict=True))  # type: ignore[assignment]
        got = read(box) if all(b > a for a, b in zip(lo, hi, strict=True)) else None
        dtype = np.dtype(np.float32) if got is None or not _holds(got.dtype, fill) else got.dtype
        out = np.full(ref.shape, fill, dtype=dtype)
        if got is not None:
            out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = got
        return out, False
    from scipy.ndimage import affine_transform

    m = np.linalg.inv(src.matrix) @ ref.matrix  # ref voxel index -> src voxel index
    image = read(None).astype(np.float32)
    return affine_transform(image, m[:3, :3], offset=m[:3, 3], output_shape=ref.shape, order=1,
                            mode="constant", cval=fill, output=np.float32), True


def _holds(dtype: np.dtype[Any], value: float) -> bool:
    """Whether ``dtype`` holds ``value`` exactly."""
    if not np.issubdtype(dtype, np.integer):
        return True
    info = np.iinfo(dtype)
    return value == round(value) and info.min <= value <= info.max
