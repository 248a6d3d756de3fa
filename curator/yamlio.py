"""YAML reading that refuses a key given twice in one mapping.

PyYAML keeps the last of two equal keys without a word: ``values: {2: left kidney, …, 2: spleen}``
(a typo for ``4: spleen``) loaded as one value, and every left-kidney voxel became spleen; a
``stages:`` section written twice in pipeline.yaml lost the first. Every YAML file curator reads
for its meaning (dataset files, the taxonomy, pipeline.yaml, QC overrides, model ensembles) goes
through :func:`load_yaml`, which raises a ``yaml.YAMLError`` naming the key and both lines —
reported as the file's YAML error.

>>> load_yaml("a: 1\\nb: {x: 1, y: 2}")
{'a': 1, 'b': {'x': 1, 'y': 2}}
>>> try:
...     load_yaml("values: {1: liver, 2: left kidney, 2: spleen}")
... except yaml.YAMLError as e:
...     print(str(e).splitlines()[2])
found key 2 a second time (first on line 1)
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode

_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available (7x faster)


class _UniqueKeyLoader(_BASE):  # type: ignore[misc]
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges are overridden on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise ConstructorError("while constructing a mapping", node.start_mark,
                                           f"found key {key!r} a second time (first on line {seen[key] + 1})",
                                           key_node.start_mark)
                seen[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: the base constructor says so
                continue
        return SafeConstructor.construct_mapping(self, node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses a key given twice in one mapping."""
    return yaml.load(text, Loader=_UniqueKeyLoader)
