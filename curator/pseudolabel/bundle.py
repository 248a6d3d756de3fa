"""What a MONAI bundle may hold before curator parses it: literal values and network classes.

MONAI's ``ConfigParser`` evaluates ``$`` expressions with ``eval`` and calls whatever a
``_target_`` names, so parsing a bundle from elsewhere could run any code; curator parses only
``network_def`` (and what its ``@`` references reach), after :func:`check_network_def`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import nn

from curator.errors import ConfigError

_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def check_network_def(parser: Any, root: Path) -> None:
    """Refuse a bundle whose ``network_def`` would run code of the bundle's choosing when parsed:
    MONAI evaluates ``$`` expressions with ``eval`` and calls whatever ``_target_`` names, so a
    bundle from elsewhere could run a command (``"$__import__('os').system(...)"``, ``_target_:
    subprocess.run``). ``network_def`` and everything its ``@`` references reach may hold only
    literal values and ``_target_`` classes that are networks (``torch.nn.Module`` subclasses)."""
    import pydoc

    from monai.bundle.config_item import ComponentLocator

    where = root / "configs"
    locator = ComponentLocator()

    def refuse(item: str, why: str, remedy: str) -> ConfigError:
        return ConfigError("config_error", f"MONAI bundle {root.name}: {item} {why}", path=str(where), remedy=remedy)

    def check_target(item: str, target: Any) -> None:
        if not (isinstance(target, str) and _DOTTED.fullmatch(target)):
            raise refuse(item, f"has _target_ {str(target)[:80]!r}, not the name of a class",
                         "name the network class, e.g. \"_target_\": \"UNet\" or \"monai.networks.nets.UNet\"")
        module = locator.get_component_module_name(target)
        module = module[0] if isinstance(module, list) else module  # as MONAI takes it
        obj = pydoc.locate(f"{module}.{target}" if module else target)
        if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
            raise refuse(item, f"has _target_ {target!r}, which is not a network class (a subclass of "
                         "torch.nn.Module)", "a bundle's network_def builds networks and their layers only: "
                         "name the class of each (or install the package that defines it)")

    seen: set[str] = set()
    todo = ["network_def"]
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        stack: list[tuple[str, Any]] = [(ref, parser.get(ref))]
        while stack:
            item, node = stack.pop()
            if isinstance(node, dict):
                if "_target_" in node:
                    check_target(item, node["_target_"])
                if node.get("_mode_", "default") != "default":
                    raise refuse(item, f"has _mode_ {str(node['_mode_'])[:40]!r}",
                                 "leave `_mode_` out of network_def: the network is built as its class says")
                stack += [(f"{item}::{k}", v) for k, v in node.items()]
            elif isinstance(node, list):
                stack += [(f"{item}::{i}", v) for i, v in enumerate(node)]
            elif isinstance(node, str) and node.startswith(("$", "%")):
                raise refuse(item, f"is {'an expression' if node[0] == '$' else 'a macro'} ({node[:60]!r}): "
                             "curator does not run code from a model bundle", "write the value in network_def "
                             "literally (numbers, text, lists; `@id` references to such values are fine)")
            elif isinstance(node, str) and node.startswith("@"):
                todo.append(parser.resolve_relative_ids(item, node)[1:])
