"""Preprocess: reorient, resample, crop, body mask, intensity statistics → one Zarr store per case.

Pure per-case maths lives in :mod:`.resample`, :mod:`.body`, :mod:`.intensity` and
:mod:`.labels`; :mod:`.core` chains them; :mod:`.stage` is the thin runner;
:mod:`.release` adds the stores and per-term voxel locations to a release.
"""
