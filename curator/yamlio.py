"""YAML reading that refuses a key given twice in one mapping, and aliases that expand a small
file into a huge document.

PyYAML keeps the last of two equal keys without a word: ``values: {2: left kidney, …, 2: spleen}``
(a typo for ``4: spleen``) loaded as one value, and every left-kidney voxel became spleen; a
``stages:`` section written twice in pipeline.yaml lost the first. Every YAML file curator reads
for its meaning (dataset files, the taxonomy, pipeline.yaml, QC overrides, model ensembles) goes
through :func:`load_yaml`, which raises a ``yaml.YAMLError`` naming the key and both lines —
reported as the file's YAML error.

Aliases (``*a``) are kept — QC overrides merge a shared reason with ``<<: *a`` — but a document
whose aliases would add more than :data:`MAX_ALIAS_NODES` values once expanded (nine levels of nine
aliases: a 1 KB dataset file that is 387 million values, "billion laughs") or make a value hold
itself is refused with a ``yaml.YAMLError`` naming its line: PyYAML shares an aliased value rather
than copying it, so such a file loaded, and exhausted memory later when ingest hashed the spec.

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
from yaml.nodes import CollectionNode, MappingNode, Node

_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available (7x faster)


MAX_ALIAS_NODES = 100_000
"""How many values a document's aliases may add once expanded (each alias counts as the whole
value it names). Hand-written files add a few hundred at most."""


def _check_aliases(root: Node) -> None:
    """Refuse a node graph whose expansion (every alias copied out) exceeds the file's own
    values by more than :data:`MAX_ALIAS_NODES`, or that contains itself, naming the innermost
    collection at fault by its line. Linear in the distinct nodes: sizes are memoised."""
    size: dict[int, int] = {}
    path: set[int] = set()  # the collections being walked: an alias to one of them is a cycle
    distinct = 0

    def children(n: Node) -> list[Node]:
        return [c for kv in n.value for c in kv] if isinstance(n, MappingNode) else n.value

    stack: list[tuple[Node, bool]] = [(root, False)] if isinstance(root, CollectionNode) else []
    while stack:  # iterative post-order: a deeply nested file meets no Python recursion limit
        n, done = stack.pop()
        if done:
            path.discard(id(n))
            total = 1
            for c in children(n):
                total += size[id(c)] if isinstance(c, CollectionNode) else 1
            size[id(n)] = total
            # the values under n are all counted in `distinct` by now: beyond it, only aliases add
            if total > MAX_ALIAS_NODES + distinct:
                raise ConstructorError(None, None, f"its aliases (*name) expand the value here to {total:,} "
                                       f"values, more than {MAX_ALIAS_NODES:,} beyond the file's own (an "
                                       "alias \"bomb\" that would exhaust memory): write the values out, or "
                                       "use fewer levels of aliases", n.start_mark)
            continue
        if id(n) in size:  # an alias to a value already walked
            continue
        path.add(id(n))
        stack.append((n, True))
        for c in children(n):
            distinct += 1  # every value as written in the file: an alias counts as one
            if isinstance(c, CollectionNode):
                if id(c) in path:
                    raise ConstructorError(None, None, "an alias here refers to a value that contains it "
                                           "(the value would hold itself): write the value out instead",
                                           n.start_mark)
                stack.append((c, False))


class _UniqueKeyLoader(_BASE):  # type: ignore[misc]
    def construct_document(self, node: Node) -> Any:
        _check_aliases(node)
        return super().construct_document(node)

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


def key_lines(data: Any, prefix: str = "") -> dict[str, int]:
    """The line of each key (and of each mapping in a list) of a document read with
    ``lines=True``, by its location as validators name it: ``labels.values.1``, ``layout[0]``,
    ``layout[0].lable``.

    >>> key_lines(load_yaml("labels:\\n  encodng: x\\nlayout:\\n  - {image: a}\\n", lines=True))
    {'labels': 1, 'labels.encodng': 2, 'layout': 3, 'layout[0]': 4, 'layout[0].image': 4}
    """
    out: dict[str, int] = {}
    if isinstance(data, Lined):
        for k, v in data.items():
            loc = f"{prefix}.{k}" if prefix else str(k)
            if k in data.lines:
                out[loc] = data.lines[k]
            out.update(key_lines(v, loc))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            if isinstance(v, Lined):
                out[f"{prefix}[{i}]"] = v.line
            out.update(key_lines(v, f"{prefix}[{i}]"))
    return out


def plain(data: Any) -> Any:
    """A document read with ``lines=True`` as plain dicts and lists (a :class:`Lined` mapping is
    no ``dict`` to ``yaml.safe_dump``).

    >>> type(plain(load_yaml("a: {b: 1}", lines=True))["a"])
    <class 'dict'>
    """
    if isinstance(data, dict):
        return {k: plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain(v) for v in data]
    return data
