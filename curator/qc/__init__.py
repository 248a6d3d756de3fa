"""Label quality control: SOLF (UKBOB §3.2), an IQR baseline, and per-label measurements.

* :mod:`curator.qc.shape` — physical-unit shape primitives (face/mesh area, sphericity,
  covariance, eccentricity, principal extents);
* :mod:`curator.qc.features` — every term of a case measured in one pass;
* :mod:`curator.qc.cohort` — cohort bounds, the 2-of-3 vote, decisions and overrides;
* :mod:`curator.qc.stage` — the ``qc`` stage; :mod:`curator.qc.release` — measurements
  and decisions joined into the release's ``labels`` table.
"""
