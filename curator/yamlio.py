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

from typing import Any, ClassVar

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


_KEPT = ("tag:yaml.org,2002:null", "tag:yaml.org,2002:merge")  # nothing is None; `<<:` still merges


class _TextLoader(_UniqueKeyLoader):
    """Every plain scalar is text but null (``~``, ``null``, nothing) and the merge key ``<<``:
    YAML 1.1 reads ``Yes``, ``no`` and ``off`` as booleans, ``00012`` as the number 12 and
    ``2024-06-01`` as a date."""

    yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {k: [(tag, rx) for tag, rx in v if tag in _KEPT]
                                                         for k, v in _UniqueKeyLoader.yaml_implicit_resolvers.items()}


class Lined(dict[Any, Any]):
    """A mapping read by ``load_yaml(..., lines=True)``: the line (1-based) it starts on, and
    each key's, for messages about a setting (``(line 5)``)."""

    line: int = 0
    lines: dict[Any, int]


class _LinedLoader(_UniqueKeyLoader):
    def construct_lined_map(self, node: MappingNode) -> Any:
        data = Lined()
        data.line, data.lines = node.start_mark.line + 1, {}
        yield data
        data.update(self.construct_mapping(node))
        for key_node, _ in node.value:
            try:
                data.lines.setdefault(self.construct_object(key_node), key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: refused where it is read
                continue


_LinedLoader.add_constructor("tag:yaml.org,2002:map", _LinedLoader.construct_lined_map)


def load_yaml(text: str, *, text_scalars: bool = False, name: str | None = None, lines: bool = False) -> Any:
    """``yaml.safe_load`` that refuses a key given twice in one mapping. With ``text_scalars``,
    every unquoted value but null stays the text it is written as (a person's free text: a
    reason ``no`` is "no", not False; a case id ``00012`` keeps its zeros). ``name``: the file
    the text is, as a syntax error names it (not ``<unicode string>``). With ``lines``, every
    mapping is a :class:`Lined` dict.

    >>> load_yaml("- {reason: Yes, case_id: 00012, date: 2024-06-01, origin: ~}", text_scalars=True)
    [{'reason': 'Yes', 'case_id': '00012', 'date': '2024-06-01', 'origin': None}]
    >>> load_yaml("- &a {term: liver, reason: ok}\\n- {<<: *a, case_id: c2}", text_scalars=True)[1]
    {'term': 'liver', 'reason': 'ok', 'case_id': 'c2'}
    >>> load_yaml("a: 1\\nb:\\n  c: 2", lines=True)["b"].lines
    {'c': 3}
    """
    loader = _TextLoader if text_scalars else _LinedLoader if lines else _UniqueKeyLoader
    try:
        return yaml.load(text, Loader=loader)
    except yaml.MarkedYAMLError as e:
        if name is None:
            raise

        def named(m: Any) -> Any:  # libyaml's marks are read-only
            return None if m is None else yaml.Mark(name, m.index, m.line, m.column, None, None)

        raise type(e)(e.context, named(e.context_mark), e.problem, named(e.problem_mark), e.note) from None
