"""The label taxonomy: one vocabulary for every dataset (``label_system/taxonomy.yaml``).

>>> from curator.taxonomy import load_taxonomy
>>> t = load_taxonomy().resolve("(ct) Left Kidney")
>>> t.id, t.name, t.laterality
('kidney_left', 'left kidney', 'left')
"""

from curator.taxonomy.load import default_path, load_taxonomy, parse_taxonomy, read_taxonomy
from curator.taxonomy.model import Taxonomy, Term
from curator.taxonomy.normalize import bag_key, exact_key

__all__ = ["Taxonomy", "Term", "bag_key", "default_path", "exact_key", "load_taxonomy", "parse_taxonomy",
           "read_taxonomy"]
