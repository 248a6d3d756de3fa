"""Harmonize: every dataset's raw label values expressed as taxonomy terms (the ``labels`` table).

* :mod:`curator.harmonize.mapping` — a dataset YAML's label map resolved to term ids
  (:func:`~curator.harmonize.mapping.raw_value_terms` is the reusable view);
* :mod:`curator.harmonize.core` — pure per-case rows (annotated, absent, derived terms);
* :mod:`curator.harmonize.stage` — the :class:`HarmonizeStage` runner.
"""

from curator.harmonize.mapping import DatasetMapping, build_mapping, raw_value_terms

__all__ = ["DatasetMapping", "build_mapping", "raw_value_terms"]
